"""What the service adds per request, measured in-process: for tuning the per-request overhead
(engine settings, serialisation, dependencies) without the full sidebar benchmark.

The app (`create_app`, open mode, echo assistant) runs with its lifespan in this process and is
called through `httpx.ASGITransport`: no sockets, no uvicorn, so what is timed is the app's own
work plus a constant client cost (`GET /healthz` shows that floor). On a fresh migrated
database with `--sessions` sessions of one user, it measures, in `--rounds` interleaved rounds:

* `GET /healthz` (framework floor) and `GET /api/v1/chat/sessions` (first page of 50, with
  total, as the sidebar asks), one request at a time;
* `GET /api/v1/chat/sessions/{id}` of a session of `--long-messages` messages (all of them):
  the request that leaves the most objects for the garbage collector;
* an empty read transaction (`Database.read()`: pool checkout, BEGIN, COMMIT);
* `POST /api/v1/chat` from `--writers` concurrent clients into their own sessions (2 messages
  per request): the write path under contention.

Each figure is the median over rounds of that round's p50 / p99 / rate, so a round disturbed
by other work on the machine does not decide it; "CPU" is this process's CPU time per request
(server and client), which other processes disturb less than wall time. As `python -m app`
does, the start-up heap is frozen (`gc.freeze()`) once the app is up; `--no-gc-freeze` leaves
it to the collector. `--profile N` prints a cProfile of N list requests.

Run: `python -m bench.request_overhead [--database sqlite] [--database postgresql]`.
"""

import argparse
import asyncio
import cProfile
import gc
import io
import os
import platform
import pstats
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvloop

from app.config import Settings
from app.kit.db.engine import Database
from app.main import create_app
from bench.stream_relay import DEFAULT_POSTGRES_URL, fresh_database, percentile

USER = "bench-user"
LIST = f"/api/v1/chat/sessions?user_id={USER}&page=1&page_size=50"
CHAT = "/api/v1/chat"


@dataclass
class Figures:
    """Per-round p50 and p99 (seconds) of one kind of request."""

    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    rate: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def add(self, run: "Run", per_request: int = 1) -> None:
        self.p50.append(percentile(run.samples, 50))
        self.p99.append(percentile(run.samples, 99))
        self.rate.append(len(run.samples) * per_request / run.elapsed)
        self.cpu.append(run.cpu / len(run.samples))

    def row(self, name: str) -> str:
        return (
            f"  {name:<42} p50 {statistics.median(self.p50) * 1000:8.3f}"
            f"  p99 {statistics.median(self.p99) * 1000:8.3f}"
            f"  CPU {statistics.median(self.cpu) * 1000:7.3f}"
            f"  {statistics.median(self.rate):7,.0f}/s"
            f"   (p50s: {', '.join(f'{v * 1000:.2f}' for v in self.p50)})"
        )


@dataclass
class Run:
    samples: list[float]
    elapsed: float
    cpu: float


async def timed(op: Callable[[], Awaitable[None]], count: int) -> Run:
    samples = []
    started, cpu_started = time.perf_counter(), time.process_time()
    for _ in range(count):
        before = time.perf_counter()
        await op()
        samples.append(time.perf_counter() - before)
    return Run(samples, time.perf_counter() - started, time.process_time() - cpu_started)


async def get_ok(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    if response.status_code != 200:
        raise RuntimeError(f"GET {path} -> {response.status_code}: {response.text}")


async def post_chat(client: httpx.AsyncClient, body: dict[str, str]) -> None:
    response = await client.post(CHAT, json=body)
    if response.status_code != 200:
        raise RuntimeError(f"POST {CHAT} -> {response.status_code}: {response.text}")


async def concurrent_writes(
    client: httpx.AsyncClient, writers: int, per_writer: int, round_: int
) -> Run:
    """`writers` clients, each appending `per_writer` messages to a session of its own."""
    samples: list[float] = []

    async def writer(w: int) -> None:
        body = {"message": "one more message", "session_id": f"w{round_}-{w}", "user_id": USER}
        for _ in range(per_writer):
            before = time.perf_counter()
            await post_chat(client, body)
            samples.append(time.perf_counter() - before)

    started, cpu_started = time.perf_counter(), time.process_time()
    await asyncio.gather(*(writer(w) for w in range(writers)))
    return Run(samples, time.perf_counter() - started, time.process_time() - cpu_started)


async def run_database(kind: str, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        async with fresh_database(kind, Path(tmp), args.postgres_url) as url:
            settings = Settings(
                _env_file=None,
                database_url=url,
                migrate_on_startup=False,
                assistant_provider="echo",
                assistant_stream_delay_ms=0,
                log_level="WARNING",
            )
            app = create_app(settings)
            transport = httpx.ASGITransport(app=app)
            async with (
                app.router.lifespan_context(app),
                httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client,
            ):
                db: Database = app.state.database
                for i in range(args.sessions):
                    await post_chat(client, {"message": f"session {i}", "user_id": USER})
                long_session = "long-session"
                for _ in range(args.long_messages // 2):
                    body = {"message": "a message", "session_id": long_session, "user_id": USER}
                    await post_chat(client, body)
                if args.gc_freeze:
                    gc.collect()
                    gc.freeze()
                await measure(kind, client, db, f"/api/v1/chat/sessions/{long_session}", args)


async def measure(
    kind: str, client: httpx.AsyncClient, db: Database, open_long: str, args: argparse.Namespace
) -> None:
    async def empty_read() -> None:
        async with db.read():
            pass

    health, listing, opening, empty, writes = Figures(), Figures(), Figures(), Figures(), Figures()
    for _ in range(args.requests // 10):  # warm-up: pool, caches, code paths
        await get_ok(client, LIST)
    for round_ in range(args.rounds):
        health.add(await timed(lambda: get_ok(client, "/healthz"), args.requests))
        listing.add(await timed(lambda: get_ok(client, LIST), args.requests))
        opening.add(await timed(lambda: get_ok(client, open_long), args.requests // 10))
        empty.add(await timed(empty_read, args.requests))
        if args.writers:
            run = await concurrent_writes(client, args.writers, args.writes // args.writers, round_)
            writes.add(run, per_request=2)
    print(
        f"{kind}: median of {args.rounds} rounds, {args.requests} requests each "
        f"({args.requests // 10} for the long session); ms per request, requests/s"
    )
    print(health.row("GET /healthz"))
    print(listing.row("GET /sessions (first page of 50, total)"))
    print(opening.row(f"GET /sessions/{{id}} ({args.long_messages:,} messages)"))
    print(empty.row("empty read transaction"))
    if args.writers:
        print(writes.row(f"POST /chat, {args.writers} concurrent (msg/s)"))
    if args.profile:
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(args.profile):
            await get_ok(client, LIST)
        profile.disable()
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(args.profile_lines)
        print(out.getvalue())


async def run(args: argparse.Namespace) -> None:
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.platform()}")
    for kind in args.database:
        await run_database(kind, args)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.request_overhead",
        description="Per-request cost of the service in-process: healthz, a list page, an "
        "empty read transaction, concurrent appends.",
    )
    parser.add_argument(
        "--database",
        choices=["sqlite", "postgresql"],
        action="append",
        help="repeat for both (default: postgresql, then sqlite)",
    )
    parser.add_argument("--requests", type=int, default=1000, help="per kind and round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (median of them)")
    parser.add_argument("--sessions", type=int, default=100, help="sessions of the user")
    parser.add_argument(
        "--long-messages", type=int, default=1000, help="messages of the long session"
    )
    parser.add_argument("--writers", type=int, default=8, help="concurrent appenders (0: none)")
    parser.add_argument("--writes", type=int, default=400, help="POST /chat per round")
    parser.add_argument(
        "--no-gc-freeze",
        dest="gc_freeze",
        action="store_false",
        help="leave the start-up heap to the collector (python -m app freezes it)",
    )
    parser.add_argument("--profile", type=int, default=0, help="cProfile this many list requests")
    parser.add_argument("--profile-lines", type=int, default=30, help="functions to print")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="PostgreSQL server to create the scratch database on (env BENCH_POSTGRES_URL)",
    )
    args = parser.parse_args(argv)
    args.database = args.database or ["postgresql", "sqlite"]
    if args.requests < 10 or args.rounds < 1 or args.writers < 0 or args.long_messages < 2:
        parser.error("--requests >= 10, --rounds >= 1, --writers >= 0, --long-messages >= 2")
    if args.writers and args.writes < args.writers:
        parser.error("--writes must be at least --writers")
    return args


def main() -> None:
    # The loop `python -m app` gets from uvicorn (uvloop), so the figures are comparable.
    uvloop.run(run(parse_args()))


if __name__ == "__main__":
    main()
