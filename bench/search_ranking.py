"""Search with the ranking window (issue 17, migration 0016) against ranking every match, on
bench.sidebar's data set: each kind of search for its random users, then the biggest user's
common word, two words and prefix both ways (p50 of 5 after a cold run) and their first pages
side by side (bench.sidebar's `compare_ranking`, which `make bench` runs too).

The service's search runs in this process (app.search.service, through a pooled Database, as
a request would run it minus HTTP): once as it runs now, and once with the window turned off
(`owner_entries` answering without a window, as for a user whose entries all fit in it), which is
how every search ran before. A user's list page (first page, 20) is measured in the same run,
the yardstick of the issue's target ("within 3x the same run's list-page p99").

Loading a million sessions takes 15 to 30 minutes; `--keep` leaves the loaded databases in
place and prints how to point a later run at them (`--loaded-postgresql URL`,
`--loaded-sqlite PATH`, with the same `--sessions`, `--users` and `--seed`).

    python -m bench.search_ranking --sessions 1000000 --keep
"""

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import asyncpg
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from app.config import Settings
from app.kit.db import migrate
from app.kit.db.engine import Database, create_engine
from app.kit.db.tables import chat_sessions
from app.search import queries as search_queries
from app.sessions import queries as session_queries
from app.sessions.queries import SessionFilter
from bench.data import Dataset, DataSpec, _describe, load, make_plan
from bench.sidebar import SEARCH_PAGE, compare_ranking, search_first_page
from bench.stream_relay import DEFAULT_POSTGRES_URL, percentile

USERS_PER_KIND = 100


async def timed(op: Awaitable[Any]) -> float:
    started = time.perf_counter()
    await op
    return time.perf_counter() - started


async def list_once(db: Database, user_id: str) -> None:
    async with db.read() as conn:
        await session_queries.list_session_summaries(
            conn, where=SessionFilter(user_id, archived=False), limit=SEARCH_PAGE + 1
        )


def _row(label: str, values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return (
        f"  {label:<58} n={len(ms):>4}  p50 {statistics.median(ms):8.2f}  "
        f"p99 {percentile(ms, 99):8.2f} ms"
    )


async def measure(database: str, data: Dataset, url: str) -> None:
    db = Database(create_engine(Settings(_env_file=None, database_url=url)))
    try:
        async with db.read() as conn:
            sessions = await conn.scalar(select(func.count()).select_from(chat_sessions))
        if sessions != data.sessions:
            raise SystemExit(f"{url} holds {sessions} sessions, the plan {data.sessions}")
        print(f"\n[{database}] {data.sessions:,} sessions, {data.messages:,} messages", flush=True)
        users = data.user_sample[:USERS_PER_KIND]
        # The list first: it warms nothing the searches read (other tables, other indexes).
        lists = [await timed(list_once(db, u)) for u in users]
        print(_row("list: first page, random users", lists), flush=True)
        for search in data.searches:
            if search.key == "search_common_big":
                continue
            kind_users = search.users[:USERS_PER_KIND]
            now = [(await search_first_page(db, u, search.query))[0] for u in kind_users]
            print(_row(search.label, now), flush=True)
        result = SimpleNamespace(ranking=[])
        await compare_ranking(SimpleNamespace(db=db, data=data), result)  # type: ignore[arg-type]
    finally:
        await db.dispose()


async def load_fresh(database: str, plan: Any, postgres_url: str, workdir: Path) -> str:
    if database == "sqlite":
        path = workdir / "search_ranking.db"
        url = f"sqlite:///{path}"
    else:
        name = f"bench_ranking_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(postgres_url, timeout=10)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        url = make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
        path = None
    await migrate.upgrade_async(Settings(_env_file=None, database_url=url).database_url)
    print(f"[{database}] loading {len(plan.ids):,} sessions", flush=True)
    started = time.perf_counter()
    await load(database, url, path, plan)
    print(f"[{database}] loaded in {time.perf_counter() - started:.0f} s: {url}", flush=True)
    return url


async def drop(database: str, url: str, postgres_url: str) -> None:
    if database == "sqlite":
        await asyncio.to_thread(Path(str(make_url(url).database)).unlink, missing_ok=True)
        return
    admin = await asyncpg.connect(postgres_url, timeout=10)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')
    finally:
        await admin.close()


async def run(args: argparse.Namespace) -> None:
    plan = make_plan(DataSpec(args.sessions, args.users, seed=args.seed))
    print(
        f"ranking window {search_queries.RANKING_WINDOW_ENTRIES:,} entries; "
        f"{args.sessions:,} sessions of {args.users:,} users (seed {args.seed})",
        flush=True,
    )
    workdir = Path(args.keep_dir or tempfile.mkdtemp(prefix="bench-ranking-"))
    for database in args.database:
        loaded = args.loaded_postgresql if database == "postgresql" else args.loaded_sqlite
        if loaded:
            url = loaded if database == "postgresql" else f"sqlite:///{loaded}"
            await measure(database, _describe(plan, database, url), url)
            continue
        url = await load_fresh(database, plan, args.postgres_url, workdir)
        try:
            await measure(database, _describe(plan, database, url), url)
        finally:
            if not args.keep:
                await drop(database, url, args.postgres_url)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.search_ranking", description=__doc__)
    add = parser.add_argument
    add("--sessions", type=int, default=1_000_000)
    add("--users", type=int, default=10_000)
    add("--seed", type=int, default=5)
    add("--database", action="append", choices=["postgresql", "sqlite"])
    add("--postgres-url", default=DEFAULT_POSTGRES_URL, help="server for a fresh database")
    add("--loaded-postgresql", help="URL of a database this data set was loaded into")
    add("--loaded-sqlite", help="path of a SQLite file this data set was loaded into")
    add("--keep", action="store_true", help="keep what is loaded (see --keep-dir)")
    add("--keep-dir", help="where a loaded SQLite file is kept (default: a temporary folder)")
    args = parser.parse_args()
    args.database = args.database or ["postgresql", "sqlite"]
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
