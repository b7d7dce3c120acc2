"""Issue 12's planner traps on a moderate PostgreSQL data set: typical users' second sidebar
page against their first, and a common-word search with and without JIT.

Loads `bench.data` (240,000 sessions of 3,600 users by default, 4 messages each on average)
into a database, then makes every session active and unpinned, as most users leave them (the
shape on which the planner read everyone's sessions for a user's second page), and runs
ANALYZE. For up to 150 random users with a second page (pages of 60, no total, as the sidebar
scrolls), the statements the service sends for each page are recorded (`bench.sqlcapture`)
and timed three ways: EXPLAIN ANALYZE through the service's own engine; through asyncpg with
PostgreSQL's custom plans, then its generic plan, forced; and the service function itself,
in-process. Then a common word searched by 100 users who have it: EXPLAIN ANALYZE (and how
many statements JIT compiled) and the service function.

Run: `python -m bench.planner_traps [--sessions N] [--users N] [--database NAME]`. With
`--database`, a database of that name is loaded if it does not exist and kept afterwards, so
that the code before and after a change can be measured on the same data (run the older code
with `PYTHONPATH` pointing at its checkout); otherwise a scratch database is dropped at the
end. `--jit-above-cost N` sets it for the database while measuring: JIT triggers on a search
at a million sessions, whose cost estimate passes the default 100,000, but not on a data set
this size, so a lower threshold stands in for that estimate.
"""

import argparse
import asyncio
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from app.auth.access import Caller
from app.config import Settings
from app.kit.db import migrate
from app.kit.db.engine import Database, create_engine
from app.sessions import service as session_service
from app.sessions.cursor import decode_cursor
from bench.data import DataSpec, load, make_plan
from bench.sqlcapture import Recorder, Statement, queries_of
from bench.stream_relay import percentile

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
PAGE = 60  # as the sidebar asks while scrolling
SEARCH_WORD = "payment"  # in about one message in ten (bench/texts.py)
OPEN = Caller.open_mode()
Call = Callable[[], Awaitable[Any]]


@asynccontextmanager
async def database(args: argparse.Namespace) -> AsyncIterator[str]:
    """The URL of the data set: loaded now (and dropped at the end, unless named)."""
    name = args.database or f"bench_traps_{os.getpid()}"
    admin = await asyncpg.connect(args.postgres_url)
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = make_url(args.postgres_url).set(database=name).render_as_string(hide_password=False)
    try:
        if not exists:
            await migrate.upgrade_async(Settings(_env_file=None, database_url=url).database_url)
            spec = DataSpec(args.sessions, args.users, args.messages_per_session, 2, 1_000)
            started = time.perf_counter()
            await load("postgresql", url, None, make_plan(spec))
            conn = await asyncpg.connect(url)
            try:
                await conn.execute("UPDATE chat_sessions SET pinned = false, active = true")
                await conn.execute("VACUUM ANALYZE")
            finally:
                await conn.close()
            print(f"loaded {name} in {time.perf_counter() - started:.0f} s", flush=True)
        yield url
    finally:
        if args.database is None:
            admin = await asyncpg.connect(args.postgres_url)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await admin.close()


def _ms(values: list[float]) -> str:
    return f"p50 {percentile(values, 50):.3f} ms, p99 {percentile(values, 99):.3f} ms"


def _plan_line(node: dict[str, Any]) -> str:
    """A plan on one line: node (index) [rows, rows removed by filter] > child > ..."""
    name = node["Node Type"] + (f" using {node['Index Name']}" if "Index Name" in node else "")
    removed = node.get("Rows Removed by Filter")
    details = f"rows {node.get('Actual Rows', 0):,}" + (f", removed {removed:,}" if removed else "")
    children = node.get("Plans", [])
    tail = " > " + " + ".join(_plan_line(child) for child in children) if children else ""
    return f"{name} [{details}]{tail}"


class Traps:
    def __init__(self, url: str) -> None:
        self.db = Database(create_engine(Settings(_env_file=None, database_url=url)))
        self.recorder = Recorder(self.db.engine)
        self.url = url

    async def statements(self, call: Call) -> list[Statement]:
        with self.recorder.capture() as log:
            await call()
        return queries_of(log)

    async def explain(self, calls: list[Call], kind: str) -> None:
        """EXPLAIN ANALYZE of each call's statements, in the service's own connections."""
        times: list[float] = []
        compiled: list[float] = []
        shapes: dict[str, list[str]] = {}  # plan without its figures: its plans
        for call in calls:
            for statement in await self.statements(call):
                async with self.db.read() as conn:
                    result = await conn.exec_driver_sql(
                        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement.sql,
                        tuple(statement.params),
                    )
                    plan = result.scalar_one()[0]
                times.append(plan["Execution Time"])
                if "JIT" in plan:
                    compiled.append(plan["JIT"]["Timing"]["Total"])
                line = _plan_line(plan["Plan"])
                shapes.setdefault(re.sub(r" \[[^]]*\]", "", line), []).append(line)
        jit = f"; JIT compiled {len(compiled)} of {len(times)}" + (
            f" (JIT {_ms(compiled)})" if compiled else ""
        )
        print(f"  {kind}: EXPLAIN ANALYZE {_ms(times)}{jit}")
        for plans in sorted(shapes.values(), key=len, reverse=True):
            print(f"    {len(plans):>4} x {plans[0]}")

    async def raw(self, calls: list[Call], kind: str) -> None:
        """The same statements through asyncpg (prepared), custom then generic plans forced."""
        recorded = [await self.statements(call) for call in calls]
        conn = await asyncpg.connect(self.url)
        try:
            for mode in ("force_custom_plan", "force_generic_plan"):
                await conn.execute(f"SET plan_cache_mode = {mode}")
                times: list[float] = []
                for _ in range(3):
                    for statements in recorded:
                        started = time.perf_counter()
                        for statement in statements:
                            await conn.fetch(statement.sql, *statement.params)
                        times.append((time.perf_counter() - started) * 1000)
                print(f"  {kind}: raw SQL, {mode}: {_ms(times)}")
        finally:
            await conn.close()

    async def service(self, calls: list[Call], kind: str) -> None:
        times: list[float] = []
        for _ in range(3):
            for call in calls:
                started = time.perf_counter()
                await call()
                times.append((time.perf_counter() - started) * 1000)
        print(f"  {kind}: service function: {_ms(times)}")

    def page(self, user: str, cursor: str | None = None) -> Call:
        position = decode_cursor(cursor) if cursor else None
        return lambda: session_service.get_sessions_list(
            self.db, OPEN, user_id=user, limit=PAGE, cursor=position, include_total=False
        )

    def search(self, user: str) -> Call:
        return lambda: session_service.get_sessions_list(
            self.db, OPEN, user_id=user, limit=20, include_total=False, query=SEARCH_WORD
        )


async def run(args: argparse.Namespace) -> None:
    async with database(args) as url:
        conn = await asyncpg.connect(url)
        try:
            shape = await conn.fetchrow(
                "SELECT count(*) AS sessions, count(DISTINCT user_id) AS users, "
                "count(*) FILTER (WHERE pinned) AS pinned, "
                "count(*) FILTER (WHERE NOT active) AS archived FROM chat_sessions"
            )
            # Random users (a fixed order) with a second page; and users with the word.
            users = [
                row[0]
                for row in await conn.fetch(
                    "SELECT user_id FROM chat_sessions WHERE active GROUP BY user_id "
                    "HAVING count(*) > $1 ORDER BY md5(user_id) LIMIT 150",
                    PAGE,
                )
            ]
            searchers = [
                row[0]
                for row in await conn.fetch(
                    "SELECT user_id FROM (SELECT DISTINCT user_id FROM chat_search WHERE "
                    "document @@ to_tsquery('simple', $1)) AS found ORDER BY md5(user_id) "
                    "LIMIT 100",
                    f"{SEARCH_WORD}:*",
                )
            ]
            if args.jit_above_cost is not None:
                name = make_url(url).database
                await conn.execute(
                    f'ALTER DATABASE "{name}" SET jit_above_cost = {int(args.jit_above_cost)}'
                )
        finally:
            await conn.close()
        print(
            f"{shape['sessions']:,} sessions of {shape['users']:,} users ({shape['pinned']} "
            f"pinned, {shape['archived']} archived); {len(users)} users with a second page "
            f"of {PAGE}; jit_above_cost {args.jit_above_cost or 'as configured'}",
            flush=True,
        )
        traps = Traps(url)
        try:
            firsts = [traps.page(user) for user in users]
            seconds: list[Call] = []
            for user in users:
                body = await traps.page(user)()
                seconds.append(traps.page(user, body.next_cursor))
            print("Sidebar pages (limit 60, no total):")
            for kind, calls in (("first page", firsts), ("second page", seconds)):
                await traps.explain(calls, kind)
                await traps.raw(calls, kind)
                await traps.service(calls, kind)
            print(f"Search {SEARCH_WORD!r} (limit 20, no total), {len(searchers)} users:")
            searches = [traps.search(user) for user in searchers]
            await traps.explain(searches, "search")
            await traps.service(searches, "search")
        finally:
            await traps.db.dispose()
            if args.jit_above_cost is not None:
                admin = await asyncpg.connect(url)
                try:
                    name = make_url(url).database
                    await admin.execute(f'ALTER DATABASE "{name}" RESET jit_above_cost')
                finally:
                    await admin.close()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.planner_traps", description=__doc__)
    add = parser.add_argument
    add("--sessions", type=int, default=240_000, help="sessions (default 240,000)")
    add("--users", type=int, default=3_600, help="users (default 3,600; skewed)")
    add("--messages-per-session", type=int, default=4, help="mean messages per session (4)")
    add("--database", default=None, help="load into / reuse this database, and keep it")
    add("--jit-above-cost", type=float, default=None, help="for the database, while measuring")
    add(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="PostgreSQL server (env BENCH_POSTGRES_URL)",
    )
    return parser.parse_args()


def main() -> None:
    asyncio.run(run(parse_args()))


if __name__ == "__main__":
    main()
