"""Migration 0013 (user_id on four tables) on a large PostgreSQL database, with traffic.

Loads `--sessions` sessions of `--users` users with `--messages` messages each (plain SQL) at
the revision before 0013, then upgrades to 0013 while a probe reads a page of one session's
messages and updates one of its messages every 20 ms. Prints how long the upgrade took and the
probe's slowest read and write during it: a step that held a long lock would show as a probe
that long.

Run: `python -m bench.user_id_backfill [--sessions N] [--users N] [--messages N]`; a scratch
database on `--postgres-url` (env BENCH_POSTGRES_URL), dropped at the end.
"""

import argparse
import asyncio
import os
import time

import asyncpg
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url

from app.config import Settings
from app.kit.db import migrate

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
REVISION = "0013_user_id_everywhere"


async def load(url: str, sessions: int, users: int, messages: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            f"""
            INSERT INTO chat_sessions (id, session_id, user_id, active, metadata, created_at,
                updated_at, message_count, node_count, pinned)
            SELECT md5('s' || g)::uuid, 's-' || g, 'user-' || (g % {users}), true, '{{}}',
                now(), now(), {messages}, {messages}, false
            FROM generate_series(1, {sessions}) AS g;
            INSERT INTO chat_messages (id, session_id, seq, ordinal, role, content, metadata,
                created_at)
            SELECT md5(g || '-' || n)::uuid, 's-' || g, n, n,
                CASE WHEN n % 2 = 1 THEN 'user' ELSE 'assistant' END,
                'message ' || n || ' of session ' || g, '{{}}', now()
            FROM generate_series(1, {sessions}) AS g, generate_series(1, {messages}) AS n;
            """
        )
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


async def probe(url: str, sessions: int, stop: asyncio.Event) -> tuple[float, float, int]:
    """(slowest read, slowest write, probes) until `stop`."""
    conn = await asyncpg.connect(url)
    slowest_read = slowest_write = 0.0
    count = 0
    try:
        while not stop.is_set():
            session_id = f"s-{count % sessions + 1}"
            started = time.perf_counter()
            await conn.fetch(
                "SELECT id, content FROM chat_messages WHERE session_id = $1"
                " ORDER BY ordinal DESC LIMIT 50",
                session_id,
            )
            slowest_read = max(slowest_read, time.perf_counter() - started)
            started = time.perf_counter()
            # As a branch switch remembers a choice at a fork: a write to a message row.
            await conn.execute(
                "UPDATE chat_messages SET chosen_child_id = NULL"
                " WHERE session_id = $1 AND ordinal = 1",
                session_id,
            )
            slowest_write = max(slowest_write, time.perf_counter() - started)
            count += 1
            await asyncio.sleep(0.02)
    finally:
        await conn.close()
    return slowest_read, slowest_write, count


async def main(args: argparse.Namespace) -> None:
    name = f"bench_user_id_{os.getpid()}"
    admin = await asyncpg.connect(args.postgres_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(args.postgres_url).set(database=name).render_as_string(hide_password=False)
    database_url = Settings(_env_file=None, database_url=url).database_url
    try:
        script = ScriptDirectory.from_config(migrate.alembic_config(database_url))
        before = script.get_revision(REVISION)
        assert before is not None
        assert isinstance(before.down_revision, str)
        await migrate.upgrade_async(database_url, before.down_revision)
        started = time.perf_counter()
        await load(url, args.sessions, args.users, args.messages)
        rows = args.sessions * args.messages
        print(f"loaded {args.sessions:,} sessions, {rows:,} messages", end="")
        print(f" in {time.perf_counter() - started:.1f} s")
        stop = asyncio.Event()
        probing = asyncio.create_task(probe(url, args.sessions, stop))
        started = time.perf_counter()
        await migrate.upgrade_async(database_url, REVISION)
        took = time.perf_counter() - started
        stop.set()
        slowest_read, slowest_write, count = await probing
        print(f"upgrade to {REVISION}: {took:.1f} s")
        print(
            f"probe during it ({count} reads and writes, every 20 ms): slowest read"
            f" {slowest_read * 1000:.0f} ms, slowest write {slowest_write * 1000:.0f} ms"
        )
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="PostgreSQL server for the scratch database (env BENCH_POSTGRES_URL)",
    )
    asyncio.run(main(parser.parse_args()))
