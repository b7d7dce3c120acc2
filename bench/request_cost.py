"""Instructions the service spends per sidebar request, counted by valgrind: a measure of CPU
per request that the machine's other load does not disturb (wall and CPU times here vary by
2x on a shared machine; instruction counts by well under 1 %).

The app (`create_app`, open mode) runs with its lifespan in this process against a kept,
loaded PostgreSQL database (`bench.data`, e.g. the one `bench.workers_sidebar --keep` leaves)
and is called through `httpx.ASGITransport`: no sockets, no uvicorn. The requests are the web
page's sidebar (`sidebar.js`): a user's first page (`limit=30&include_total=false`), then that
user's second page with the first page's `next_cursor`, over random users who have one.

`python -m bench.request_cost --database bench_workers15` runs this module twice under
`valgrind --tool=callgrind` (in parallel), once with `--warmup` requests then 20 measured and
once with 20 + `--requests`; the difference of their totals over `--requests` is the cost of
one request, start-up and warm-up cancelling out. The client's share (httpx) is in it, a
constant of the set-up. `--callgrind-out DIR` keeps the two profiles for `callgrind_annotate`.
`--run N` is the inner run (N measured requests), also usable alone for a CPU-time figure.
"""

import argparse
import compileall
import gc
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import httpx
import uvloop

import app
import bench
from app.config import Settings
from app.main import create_app

LIST = "/api/v1/chat/sessions"
PAGE = 30
BASE = 20


def _urls(database: str) -> tuple[str, str]:
    return (
        f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}",
        f"postgresql://postgres@127.0.0.1:5432/{database}",
    )


async def _users(dsn: str, count: int) -> list[str]:
    """Users with a second sidebar page, in a fixed order."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT user_id FROM chat_sessions WHERE user_id IS NOT NULL AND active "
            "GROUP BY user_id HAVING count(*) > $1 ORDER BY user_id LIMIT $2",
            PAGE,
            count,
        )
    finally:
        await conn.close()
    return [row[0] for row in rows]


async def run(database: str, warmup: int, requests: int) -> None:
    """`warmup` sidebar requests, then `requests` more, timed (CPU and wall)."""
    sqlalchemy_url, dsn = _urls(database)
    users = await _users(dsn, 200)
    settings = Settings(
        database_url=sqlalchemy_url,
        rate_limit_enabled=False,
        migrate_on_startup=False,
        reply_bus="off",
        # No heartbeat write during the run: under valgrind a run lasts minutes, and beats
        # counted by wall time would differ between the short and the long run.
        process_heartbeat_seconds=3600,
        process_stale_seconds=3 * 3600,
    )
    app = create_app(settings)
    rnd = random.Random(1)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
        ) as client,
    ):
        gc.collect()
        gc.freeze()  # as `python -m app` does once the app is up

        async def sidebar() -> None:
            params: dict[str, str | int] = {
                "user_id": rnd.choice(users),
                "limit": PAGE,
                "include_total": "false",
            }
            first = await client.get(LIST, params=params)
            assert first.status_code == 200, first.text
            second = await client.get(
                LIST, params={**params, "cursor": first.json()["next_cursor"]}
            )
            assert second.status_code == 200, second.text

        for _ in range(warmup // 2):
            await sidebar()
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(requests // 2):
            await sidebar()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(
        f"{requests} requests: CPU {cpu / requests * 1e3:.3f} ms, "
        f"wall {wall / requests * 1e3:.3f} ms per request"
    )


def _callgrind(args: argparse.Namespace, requests: int, out: Path) -> subprocess.Popen[str]:
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        sys.executable,
        "-m",
        "bench.request_cost",
        "--database",
        args.database,
        "--warmup",
        str(args.warmup),
        "--run",
        str(requests),
    ]
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )


def _total(output: str) -> int:
    match = re.search(r"Collected : (\d+)", output)
    if match is None:
        raise SystemExit(f"no instruction count in valgrind's output:\n{output[-2000:]}")
    return int(match.group(1))


def measure(args: argparse.Namespace) -> None:
    # Byte code first: otherwise the two runs race to compile the same modules, and the one
    # that finds the other's .pyc skips tens of millions of instructions of start-up that
    # then no longer cancel out (seen: +-150,000 per request).
    for package in (app, bench):
        compileall.compile_dir(Path(package.__path__[0]), quiet=1)
    out = Path(args.callgrind_out or tempfile.mkdtemp(prefix="request_cost_"))
    out.mkdir(parents=True, exist_ok=True)
    short = _callgrind(args, BASE, out / f"callgrind.{BASE}.out")
    long = _callgrind(args, BASE + args.requests, out / f"callgrind.{BASE + args.requests}.out")
    totals = [_total(process.communicate()[0]) for process in (short, long)]
    print(f"Ir at {BASE} requests: {totals[0]:,}; at {BASE + args.requests}: {totals[1]:,}")
    print(f"instructions per request: {(totals[1] - totals[0]) / args.requests:,.0f}")
    print(f"profiles in {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", required=True, help="a kept database loaded by bench.data")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--requests", type=int, default=200, help="the runs' difference")
    parser.add_argument("--callgrind-out", help="directory for the two callgrind profiles")
    parser.add_argument("--run", type=int, help="inner run: this many measured requests")
    args = parser.parse_args()
    if args.run is not None:
        uvloop.run(run(args.database, args.warmup, args.run))
    else:
        measure(args)


if __name__ == "__main__":
    main()
