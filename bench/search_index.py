"""The search index's size and the time it adds to a write (issue 17), on a fresh database.

Each database gets `--sessions` sessions of `--users` users and `--messages` messages each,
written one transaction per message through the write path's `index_text` alone (what the
search index adds to storing a message), with the texts of bench.sidebar's pool
(`bench.texts`, English-like) or, with `--script chinese`, Chinese text without spaces. It
prints the time per entry (p50, p99, mean) and the bytes of the index: chat_search (table and
its B-tree indexes) and, on PostgreSQL, its GIN indexes; on SQLite the FTS5 tables. Run it on
two checkouts for a before and after: `cd <checkout> && python -m bench.search_index`.
"""

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path

from sqlalchemy import text

from app.config import Settings
from app.kit.db.engine import Database, create_engine
from app.kit.db.types import utc_now
from app.search import index as search_index
from app.sessions import queries as session_queries
from bench.stream_relay import DEFAULT_POSTGRES_URL, fresh_database, percentile
from bench.texts import make_texts

# A paragraph of Chinese (no spaces), cut into messages of 20 to 120 characters.
_CHINESE = (
    "我住在东京都已经三年了每天早上坐地铁去公司上班工作很忙但是周末可以和朋友一起去公园散步"
    "或者在咖啡馆里看书最近我在学习日语因为想和同事们更好地交流语言学习需要很多时间和耐心"
    "如果你有什么问题可以随时问我我们的客服团队会在二十四小时内回复你的邮件谢谢你的支持"
)


def chinese_texts(rng: random.Random, count: int) -> list[str]:
    texts = []
    for _ in range(count):
        length = rng.randint(20, 120)
        start = rng.randrange(len(_CHINESE))
        texts.append((_CHINESE * 3)[start : start + length])
    return texts


_SIZES = {
    "postgresql": """
        SELECT c.relname, pg_relation_size(c.oid) FROM pg_class c
        WHERE c.relname LIKE 'chat_search%' OR c.relname LIKE 'idx_chat_search%'
           OR c.relname = 'uq_chat_search_session_seq' OR c.relname = 'pk_chat_search'
        ORDER BY 1
    """,
    "sqlite": """
        SELECT name, sum(pgsize) FROM dbstat
        WHERE name LIKE 'chat_search%' OR name LIKE 'idx_chat_search%'
           OR name LIKE 'sqlite_autoindex_chat_search%'
        GROUP BY name ORDER BY 1
    """,
}


async def measure(args: argparse.Namespace, kind: str, workdir: Path) -> None:
    rng = random.Random(args.seed)
    total = args.sessions * args.messages
    texts = (
        chinese_texts(rng, total) if args.script == "chinese" else make_texts(rng, total // 2 + 1)
    )
    async with fresh_database(kind, workdir, args.postgres_url) as url:
        db = Database(create_engine(Settings(_env_file=None, database_url=url)))
        try:
            now = utc_now()
            async with db.write() as conn:
                for s in range(args.sessions):
                    await session_queries.create_session_if_absent(
                        conn, session_id=f"s{s}", user_id=f"user-{s % args.users}", now=now
                    )
            times: list[float] = []
            n = 0
            for s in range(args.sessions):
                for seq in range(1, args.messages + 1):
                    started = time.perf_counter()
                    async with db.write() as conn:
                        await search_index.index_text(
                            conn, f"s{s}", f"user-{s % args.users}", seq, texts[n % len(texts)]
                        )
                    times.append(time.perf_counter() - started)
                    n += 1
            async with db.write() as conn:
                await conn.execute(text("ANALYZE"))
            async with db.read() as conn:
                sizes = [(str(r[0]), int(r[1])) for r in await conn.execute(text(_SIZES[kind]))]
        finally:
            await db.dispose()
    ms = [t * 1000 for t in times]
    print(
        f"[{kind}] {len(ms):,} entries ({args.script}): per entry p50 {percentile(ms, 50):.2f} ms, "
        f"p99 {percentile(ms, 99):.2f} ms, mean {sum(ms) / len(ms):.2f} ms"
    )
    for name, size in sizes:
        print(f"  {name:40} {size / 1e6:9.2f} MB")
    print(f"  {'total':40} {sum(size for _, size in sizes) / 1e6:9.2f} MB")


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.database:
            await measure(args, kind, Path(tmp))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.search_index", description=__doc__)
    add = parser.add_argument
    add("--sessions", type=int, default=2_000)
    add("--users", type=int, default=50)
    add("--messages", type=int, default=10, help="messages per session (10)")
    add("--script", choices=["pool", "chinese"], default="pool")
    add("--seed", type=int, default=5)
    add("--database", choices=["sqlite", "postgresql"], action="append")
    add("--postgres-url", default=DEFAULT_POSTGRES_URL)
    args = parser.parse_args()
    args.database = args.database or ["sqlite", "postgresql"]
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
