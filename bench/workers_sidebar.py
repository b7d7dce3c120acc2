"""The sidebar with 1 and 2 workers (issue 15, "Load it can carry"): requests per second and
p99 of a typical user's first and second sidebar page, with 8 requests in flight and with
one client, on PostgreSQL.

Data: `bench.data` (`--sessions` 100,000 of `--users` 1,000, skewed as the sidebar benchmark's,
`--messages-per-session` 4) loaded into a PostgreSQL database, then VACUUM ANALYZE. With
`--keep NAME` the database of that name is loaded only if it does not exist, and kept.

Requests: what the web page's sidebar asks (app/web/static/js/sidebar.js): `GET
/api/v1/chat/sessions?user_id=U&limit=30&include_total=false`, then the same with the first
page's `cursor`, for up to 200 random users who have a second page (open mode: the user is a
query parameter, as a service caller passes it), alternating first and second pages.

Processes: the service (`python -m app`, `WORKERS=w`, echo assistant, metrics off) and
`--clients` load-generating processes (raw HTTP/1.1 keep-alive on asyncio and uvloop, one
connection per request in flight: far cheaper per request than an HTTP library, so that
they take as little as possible of the two cores the service shares with them and with
PostgreSQL). For each of `--rounds` rounds and each worker count, the service is started
fresh, warmed up (`--warmup` seconds at 8 in flight), then measured for `--duration` seconds
with one client and with `--concurrency` (8) requests in flight. Every figure is the median
over rounds; CPU time of the service, the clients and PostgreSQL is measured alongside (cores
used, and CPU milliseconds per request), since all of them share the machine.

Run: `python -m bench.workers_sidebar [--keep bench_workers] [--rounds 3] [--duration 10]`.
"""

import argparse
import asyncio
import json
import os
import random
import re
import resource
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from urllib.parse import urlencode

import asyncpg
from sqlalchemy.engine import make_url

from app.config import Settings
from app.kit.db import migrate
from bench.data import DataSpec, load, make_plan
from bench.loadkit import (
    ClientProcesses,
    CpuMeter,
    connections_by_process,
    machine_line,
    raise_open_files_limit,
    serve_plans,
)
from bench.stream_relay import free_port, percentile, run_process

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
LIST = "/api/v1/chat/sessions"
PAGE = 30  # the web page's sidebar (sidebar.js, PAGE_SIZE)
USERS = 200
CONNECT_STAGGER = 0.05  # seconds between opening two connections of the load generator


# --- Load-generating client processes --------------------------------------------------------


@dataclass
class ClientPlan:
    port: int
    paths: list[str]
    connections: int
    start_at: float  # wall clock
    seconds: float
    offset: int  # where in `paths` this process starts


@dataclass
class ClientRun:
    latencies: list[float]  # seconds, requests completed within the window
    errors: int
    cpu_seconds: float
    seconds: float


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """One keep-alive GET; the status. The body is read (by Content-Length) and dropped."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


async def _run_client(plan: ClientPlan) -> ClientRun:
    """Connections opened one at a time, CONNECT_STAGGER apart, each sending requests back to
    back as soon as it is open (as users arriving one after another): which server process
    accepts a connection then depends on which is free, as in a deployment, rather than all
    of them going to the first process to wake (what opening them all at once on an idle
    server does). Requests that begin before `start_at` are not counted."""
    head = f"HTTP/1.1\r\nhost: 127.0.0.1:{plan.port}\r\naccept: application/json\r\n\r\n"
    requests = [f"GET {path} {head}".encode() for path in plan.paths]
    latencies: list[float] = []
    errors = 0
    writers: list[asyncio.StreamWriter] = []
    opened = time.time()
    measure_from = time.perf_counter() + max(0.0, plan.start_at - opened)
    stop = measure_from + plan.seconds
    usage: list[resource.struct_rusage] = []

    async def worker(w: int) -> None:
        nonlocal errors
        await asyncio.sleep(w * CONNECT_STAGGER)
        reader, writer = await asyncio.open_connection("127.0.0.1", plan.port)
        writers.append(writer)
        k = plan.offset + w * 7919
        while (begun := time.perf_counter()) < stop:
            status = await _get(reader, writer, requests[k % len(requests)])
            k += 1
            if begun < measure_from:
                continue
            if status != 200:
                errors += 1
            latencies.append(time.perf_counter() - begun)

    async def mark_start() -> None:
        await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
        usage.append(resource.getrusage(resource.RUSAGE_SELF))

    await asyncio.gather(mark_start(), *(worker(w) for w in range(plan.connections)))
    elapsed = time.perf_counter() - measure_from
    after = resource.getrusage(resource.RUSAGE_SELF)
    for writer in writers:
        writer.close()
    return ClientRun(
        latencies,
        errors,
        (after.ru_utime + after.ru_stime) - (usage[0].ru_utime + usage[0].ru_stime),
        elapsed,
    )


def client_process(conn: Connection) -> None:
    serve_plans(conn, _run_client)


class Clients(ClientProcesses):
    async def run(
        self, port: int, paths: list[str], in_flight: int, seconds: float
    ) -> list[ClientRun]:
        """`in_flight` connections spread over the processes (one process for one client)."""
        used = max(1, min(len(self.pipes), in_flight))
        start_at = time.time() + 0.5 + in_flight * CONNECT_STAGGER
        plans = [
            ClientPlan(
                port,
                paths,
                in_flight // used + (index < in_flight % used),
                start_at,
                seconds,
                index * 104729,
            )
            for index in range(used)
        ]
        return await self.ask(plans)


# --- Measuring -------------------------------------------------------------------------------


@dataclass
class Figures:
    rate: float  # requests a second
    p50: float  # seconds
    p99: float
    errors: int
    cores: dict[str, float]  # service, clients, postgres, machine
    requests: int
    split: list[int] = field(default_factory=list)  # connections held by each server process

    def cpu_ms_per_request(self, group: str) -> float:
        return self.cores[group] / self.rate * 1000 if self.rate else float("nan")


@dataclass
class Results:
    by_key: dict[tuple[int, int], list[Figures]] = field(default_factory=dict)  # (workers, c)

    def add(self, workers: int, concurrency: int, figures: Figures) -> None:
        self.by_key.setdefault((workers, concurrency), []).append(figures)

    def median(self, workers: int, concurrency: int, attr: str) -> float:
        values: list[float] = [getattr(f, attr) for f in self.by_key[(workers, concurrency)]]
        return statistics.median(values)

    def median_cores(self, workers: int, concurrency: int, group: str) -> float:
        return statistics.median(f.cores[group] for f in self.by_key[(workers, concurrency)])


def postgres_pids() -> list[int]:
    """The PostgreSQL server's processes (all of them: the machine's only server)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(OSError):
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
    return pids


class PostgresCpu(CpuMeter):
    """CpuMeter whose `postgres` group is found afresh at each reading (backends come and go)."""

    def _pids(self, name: str) -> list[int]:
        if name == "postgres":
            return postgres_pids()
        return super()._pids(name)


async def measure(
    clients: Clients,
    cpu: CpuMeter,
    port: int,
    paths: list[str],
    in_flight: int,
    seconds: float,
) -> Figures:
    cpu.restart()
    running = asyncio.ensure_future(clients.run(port, paths, in_flight, seconds))
    await asyncio.sleep(min(1.5, seconds / 2))
    split = await asyncio.to_thread(connections_by_process, port)
    runs = await running
    cores = cpu.cores()
    wall = max(r.seconds for r in runs)
    cores["clients"] = sum(r.cpu_seconds for r in runs) / wall
    latencies = [latency for r in runs for latency in r.latencies]
    return Figures(
        rate=len(latencies) / wall,
        p50=percentile(latencies, 50),
        p99=percentile(latencies, 99),
        errors=sum(r.errors for r in runs),
        cores=cores,
        requests=len(latencies),
        split=split,
    )


# wrk's script: the paths in turn, and the figures on one line at the end (latencies in us).
_WRK_SCRIPT = """
local paths = {%s}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i %% #paths) + 1], {["accept"] = "application/json"})
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK %%d %%d %%d %%f %%f\\n", summary.requests, e.status,
    e.connect + e.read + e.write + e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


async def measure_wrk(
    cpu: CpuMeter, port: int, paths: list[str], in_flight: int, seconds: float, workdir: Path
) -> Figures:
    """As `measure`, with Debian's wrk (C, one thread) as the load generator: its CPU is what
    this process's children used meanwhile. wrk opens its connections all at once."""
    script = workdir / "sidebar.lua"
    script.write_text(_WRK_SCRIPT % ", ".join(json.dumps(path) for path in paths))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu.restart()
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        "wrk",
        "-t1",
        f"-c{in_flight}",
        f"-d{seconds:g}s",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}",
        stdout=asyncio.subprocess.PIPE,
    )
    await asyncio.sleep(min(1.5, seconds / 2))
    split = await asyncio.to_thread(connections_by_process, port)
    out, _ = await process.communicate()
    wall = time.perf_counter() - started
    cores = cpu.cores()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cores["clients"] = (
        (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    ) / wall
    found = re.search(rb"WRK (\d+) (\d+) (\d+) ([\d.]+) ([\d.]+)", out)
    if found is None:
        raise RuntimeError(f"wrk said: {out.decode(errors='replace')}")
    requests, bad, failed = (int(found[i]) for i in (1, 2, 3))
    return Figures(
        rate=requests / seconds,
        p50=float(found[4]) / 1e6,
        p99=float(found[5]) / 1e6,
        errors=bad + failed,
        cores=cores,
        requests=requests,
        split=split,
    )


async def sidebar_paths(base_url: str, users: list[str]) -> list[str]:
    """First and second pages of up to USERS users who have a second page, interleaved."""
    import httpx

    paths: list[str] = []
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        for user in users:
            if len(paths) == 2 * USERS:
                break
            query = {"user_id": user, "limit": str(PAGE), "include_total": "false"}
            first = f"{LIST}?{urlencode(query)}"
            page = (await client.get(first)).raise_for_status().json()
            if not page.get("next_cursor"):
                continue
            paths += [first, f"{LIST}?{urlencode({**query, 'cursor': page['next_cursor']})}"]
    if not paths:
        raise RuntimeError("no user has a second page: load more sessions per user")
    return paths


def service_env(port: int, url: str, workers: int, pool_size: int) -> dict[str, str]:
    return {
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WORKERS": str(workers),
        "DATABASE_URL": url,
        "DATABASE_POOL_SIZE": str(pool_size),
        "MIGRATE_ON_STARTUP": "false",
        "ASSISTANT_PROVIDER": "echo",
        "LOG_LEVEL": "WARNING",
        "SHUTDOWN_GRACE_SECONDS": "5",
    }


@asynccontextmanager
async def dataset(args: argparse.Namespace) -> AsyncIterator[tuple[str, list[str]]]:
    """The data set's URL and a sample of its users, in random order."""
    name = args.keep or f"bench_workers_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(args.postgres_url)
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = make_url(args.postgres_url).set(database=name).render_as_string(hide_password=False)
    spec = DataSpec(args.sessions, args.users, args.messages_per_session, 2, 1_000)
    plan = make_plan(spec)
    try:
        if not exists:
            started = time.perf_counter()
            await migrate.upgrade_async(Settings(_env_file=None, database_url=url).database_url)
            await load("postgresql", url, None, plan)
            conn = await asyncpg.connect(url)
            try:
                await conn.execute("VACUUM ANALYZE")
            finally:
                await conn.close()
            print(f"loaded {name} in {time.perf_counter() - started:.0f} s", flush=True)
        else:
            print(f"using the data set already loaded in {name}", flush=True)
        users = list(dict.fromkeys(plan.users[i] for i in plan.owners))
        random.Random(15).shuffle(users)
        yield url, users
    finally:
        if args.keep is None:
            admin = await asyncpg.connect(args.postgres_url)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await admin.close()


def _cores(cores: dict[str, float]) -> str:
    return json.dumps({name: round(value, 2) for name, value in cores.items()})


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:7.2f}"


def report(results: Results, args: argparse.Namespace) -> str:
    c = args.concurrency
    lines = [
        "",
        f"Median of {args.rounds} rounds ({args.duration:g} s each measurement):",
        "                          req/s      p50 ms   p99 ms  | cores: service clients "
        "postgres machine | CPU ms/req: service clients postgres",
    ]
    for workers in args.workers:
        for concurrency in (1, c):
            key = (workers, concurrency)
            if key not in results.by_key:
                continue
            rate = results.median(workers, concurrency, "rate")
            cores = {
                g: results.median_cores(workers, concurrency, g)
                for g in ("service", "clients", "postgres", "machine")
            }
            per = {g: cores[g] / rate * 1000 for g in ("service", "clients", "postgres")}
            label = f"{workers} worker{'s' if workers > 1 else ' '}, {concurrency} in flight"
            lines.append(
                f"  {label:<22} {rate:8.0f}   {_ms(results.median(workers, concurrency, 'p50'))} "
                f"{_ms(results.median(workers, concurrency, 'p99'))}  |"
                f"     {cores['service']:5.2f}   {cores['clients']:5.2f}    "
                f"{cores['postgres']:5.2f}   {cores['machine']:5.2f} |"
                f"           {per['service']:5.2f}   {per['clients']:5.2f}    "
                f"{per['postgres']:5.2f}"
            )
    errors = sum(f.errors for figures in results.by_key.values() for f in figures)
    lines.append(f"  errors (non-200 answers): {errors}")
    if {(1, c), (2, c), (2, 1)} <= results.by_key.keys():
        ratio = results.median(2, c, "rate") / results.median(1, c, "rate")
        p99_ratio = results.median(2, c, "p99") / results.median(2, 1, "p99")
        p99_ratio_1 = results.median(2, c, "p99") / results.median(1, 1, "p99")
        lines += [
            "",
            f"  rps(2 workers) / rps(1 worker), {c} in flight: {ratio:.2f}x   "
            f"(target >= 1.7x: {'met' if ratio >= 1.7 else 'missed'})",
            f"  p99({c} in flight, 2 workers) / p99(one client, 2 workers): {p99_ratio:.2f}x   "
            f"(target <= 3x: {'met' if p99_ratio <= 3 else 'missed'}); "
            f"against one client on 1 worker: {p99_ratio_1:.2f}x",
        ]
        per_round = [
            b.rate / a.rate
            for a, b in zip(results.by_key[(1, c)], results.by_key[(2, c)], strict=True)
        ]
        lines.append("  rps ratio per round: " + ", ".join(f"{value:.2f}x" for value in per_round))
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> None:
    raise_open_files_limit()
    print(machine_line(), flush=True)
    clients = Clients.start(args.clients, client_process)
    results = Results()
    try:
        async with dataset(args) as (url, users):
            print(
                f"data: {args.sessions:,} sessions of {args.users:,} users, "
                f"{args.messages_per_session} messages per session on average",
                flush=True,
            )
            paths: list[str] | None = None
            for round_ in range(args.rounds):
                for workers in args.workers:
                    port = free_port()
                    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
                        async with run_process(
                            "service",
                            ["-m", "app"],
                            service_env(port, url, workers, args.pool_size),
                            Path(tmp),
                            port,
                            "/readyz",
                        ) as service:
                            if paths is None:
                                paths = await sidebar_paths(service.base_url, users)
                                print(
                                    f"requests: {len(paths) // 2} users' first and second "
                                    f"pages ({PAGE} sessions each)",
                                    flush=True,
                                )
                            cpu = PostgresCpu(
                                {
                                    "service": [service.process.pid],
                                    "clients": clients.pids(),
                                    "postgres": [],
                                }
                            )
                            await measure(clients, cpu, port, paths, args.concurrency, args.warmup)
                            for concurrency in (1, args.concurrency):
                                if args.wrk:
                                    figures = await measure_wrk(
                                        cpu, port, paths, concurrency, args.duration, Path(tmp)
                                    )
                                else:
                                    figures = await measure(
                                        clients, cpu, port, paths, concurrency, args.duration
                                    )
                                results.add(workers, concurrency, figures)
                                print(
                                    f"  round {round_ + 1}, {workers} worker(s), "
                                    f"{concurrency} in flight: {figures.rate:7.0f} req/s, "
                                    f"p50 {_ms(figures.p50)} ms, p99 {_ms(figures.p99)} ms, "
                                    f"cores {_cores(figures.cores)}, connections per "
                                    f"process {'/'.join(map(str, figures.split)) or '?'}",
                                    flush=True,
                                )
    finally:
        clients.stop()
    print(report(results, args), flush=True)
    if args.results:
        write_results(Path(args.results), results)


def write_results(path: Path, results: Results) -> None:
    path.write_text(
        json.dumps(
            {
                f"{workers} {concurrency}": [
                    {
                        "rate": f.rate,
                        "p50_ms": f.p50 * 1000,
                        "p99_ms": f.p99 * 1000,
                        "errors": f.errors,
                        "requests": f.requests,
                        "cores": f.cores,
                        "connections_per_process": f.split,
                    }
                    for f in figures
                ]
                for (workers, concurrency), figures in results.by_key.items()
            },
            indent=1,
        )
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.workers_sidebar",
        description="The sidebar's first and second pages with 1 and 2 workers.",
    )
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--messages-per-session", type=int, default=4)
    parser.add_argument("--keep", help="load into this database if absent, and keep it")
    parser.add_argument("--workers", type=int, action="append", help="default 1 and 2")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=1, help="load-generating processes")
    parser.add_argument("--pool-size", type=int, default=10, help="DATABASE_POOL_SIZE")
    parser.add_argument("--results", help="also write the figures to this JSON file")
    parser.add_argument(
        "--wrk",
        action="store_true",
        help="measure with Debian's wrk (make wrk) instead of the Python client (the "
        "warm-up stays the Python client's)",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="PostgreSQL server (env BENCH_POSTGRES_URL)",
    )
    args = parser.parse_args(argv)
    args.workers = args.workers or [1, 2]
    return args


def main() -> None:
    asyncio.run(run(parse_args()))


if __name__ == "__main__":
    main()
