"""SQLite's FTS5 prefix indexes (migration 0018, issue 17): searches, index size and write cost
before and after, on one data set loaded by bench.search_ranking.

The loaded file (at 0017) is the before; `--after` its copy upgraded to 0018 (copied and
upgraded if absent, the upgrade timed; kept for the next run). Then, in rounds that alternate
the two (A, B, A, B: the machine is shared), each kind of search for bench.data's random users
and the biggest user's searches (p50 of 5 after a warm run), a user's list page as the
yardstick, and the part the prefix indexes change alone: the biggest user's FTS5 MATCH within
the ranking window (a count, p50 of 7). The first pages of both must be the same sessions in
the same order. Last, the cost added to a write: messages indexed through the write path's
`index_text`, one transaction each, in blocks that alternate the two; deleted at the end.

    python -m bench.search_ranking --sessions 100000 --database sqlite --keep --keep-dir DIR
    python -m bench.search_prefix --sessions 100000 --loaded-sqlite DIR/search_ranking.db \\
        --after DIR/after.db
"""

import argparse
import asyncio
import random
import shutil
import sqlite3
import statistics
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text

from app.config import Settings
from app.kit.db import migrate
from app.kit.db.engine import Database, create_engine
from app.kit.db.types import utc_now
from app.search import fulltext
from app.search import index as search_index
from app.search import queries as search_queries
from app.sessions import queries as session_queries
from bench.data import DataSpec, _describe, make_plan
from bench.search_ranking import USERS_PER_KIND, list_once, timed
from bench.sidebar import search_first_page
from bench.stream_relay import percentile
from bench.texts import COMMON_WORD, PREFIX, TWO_WORDS, make_texts

BIGGEST_RUNS = 5
# The biggest user's searches: a prefix of 3 letters too (the next keystroke).
BIGGEST_QUERIES = (COMMON_WORD, TWO_WORDS, PREFIX, "ref")
BEFORE_REVISION = "0017_idempotency_keys"
FTS_RUNS = 7
_FTS_COUNT = text(
    f"SELECT count(*) FROM {fulltext.FTS_TABLE} WHERE {fulltext.FTS_TABLE} MATCH :match "
    "AND rowid > :since"
)

Pages = dict[tuple[str, str], list[str]]


def _url(path: Path) -> str:
    return Settings(_env_file=None, database_url=f"sqlite:///{path}").database_url


def sizes(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        fts = conn.execute(
            "SELECT sum(pgsize) FROM dbstat WHERE name LIKE 'chat_search_fts%'"
        ).fetchone()[0]
    return {"file": path.stat().st_size, "fts5": int(fts)}


async def searches(db: Database, data: Any, pages: Pages) -> dict[str, list[float]]:
    """One round: every kind of search and the list page; the first pages into `pages`."""
    timings: dict[str, list[float]] = {}
    users = data.user_sample[:USERS_PER_KIND]
    timings["list: first page, random users"] = [await timed(list_once(db, u)) for u in users]
    for search in data.searches:
        if search.key == "search_common_big":
            continue
        times = []
        for user in search.users[:USERS_PER_KIND]:
            seconds, page = await search_first_page(db, user, search.query)
            times.append(seconds)
            pages[(user, search.query)] = [s.session_id for s in page]
        timings[search.label] = times
    user = data.biggest_user
    for query in BIGGEST_QUERIES:
        times = []
        for _ in range(BIGGEST_RUNS + 1):
            seconds, page = await search_first_page(db, user, query)
            times.append(seconds)
        pages[(user, query)] = [s.session_id for s in page]
        timings[f"biggest user: {query!r} (p50 of {BIGGEST_RUNS})"] = times[1:]
    async with db.read() as conn:
        since = (await search_queries.owner_entries(conn, user)).since
        for query in BIGGEST_QUERIES:
            match = fulltext.fts5_match(fulltext.query_words(query), user)
            times = []
            for _ in range(FTS_RUNS + 1):
                started = time.perf_counter()
                await conn.execute(_FTS_COUNT, {"match": match, "since": since or 0})
                times.append(time.perf_counter() - started)
            timings[f"  FTS5 alone, window: {query!r} (p50 of {FTS_RUNS})"] = times[1:]
    return timings


async def writes(db: Database, user_ids: list[str], texts: list[str], start: int) -> list[float]:
    """Index `texts` as messages of new sessions, one transaction each (as a message is)."""
    times = []
    async with db.write() as conn:
        for n, user in enumerate(user_ids):
            await session_queries.create_session_if_absent(
                conn, session_id=f"prefix-bench-{start + n}", user_id=user, now=utc_now()
            )
    for n, message in enumerate(texts):
        session = start + n % len(user_ids)
        started = time.perf_counter()
        async with db.write() as conn:
            await search_index.index_text(
                conn, f"prefix-bench-{session}", user_ids[n % len(user_ids)], n + 1, message
            )
        times.append(time.perf_counter() - started)
    return times


def _ms(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return f"p50 {statistics.median(ms):7.2f}  p99 {percentile(ms, 99):7.2f}"


def _revision(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return str(conn.execute("SELECT version_num FROM alembic_version").fetchone()[0])


def _forget_writes(path: Path) -> None:
    """Delete what `writes` added, leaving the data set as it was loaded."""
    with sqlite3.connect(path) as conn:
        for table in ("chat_search", "chat_sessions"):
            conn.execute(f"DELETE FROM {table} WHERE session_id LIKE 'prefix-bench-%'")


async def run(args: argparse.Namespace) -> None:
    plan = make_plan(DataSpec(args.sessions, args.users, seed=args.seed))
    copies = {"before": Path(args.loaded_sqlite), "after": Path(args.after)}
    if _revision(copies["before"]) != BEFORE_REVISION:
        raise SystemExit(f"{copies['before']} is not at {BEFORE_REVISION}")
    if not copies["after"].exists():
        await asyncio.to_thread(shutil.copyfile, copies["before"], copies["after"])
        started = time.perf_counter()
        await migrate.upgrade_async(_url(copies["after"]))
        print(f"upgrade to 0018: {time.perf_counter() - started:.1f} s", flush=True)
    for name, path in copies.items():
        print(
            f"{name}: {_revision(path)}, "
            + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in sizes(path).items())
        )
    dbs = {
        name: Database(create_engine(Settings(_env_file=None, database_url=f"sqlite:///{path}")))
        for name, path in copies.items()
    }
    try:
        data = _describe(plan, "sqlite", f"sqlite:///{copies['before']}")
        results: dict[str, list[dict[str, list[float]]]] = {name: [] for name in dbs}
        pages: dict[str, Pages] = {name: {} for name in dbs}
        for round_ in range(args.rounds):
            for name, db in dbs.items():
                results[name].append(await searches(db, data, pages[name]))
                print(f"round {round_ + 1} {name} done", flush=True)
        for round_ in range(args.rounds):
            print(
                f"\nround {round_ + 1} (ms)"
                + " " * 46
                + "before                  after             after/before p50"
            )
            for label, before in results["before"][round_].items():
                after = results["after"][round_][label]
                ratio = statistics.median(after) / statistics.median(before)
                print(f"  {label:<52} {_ms(before)} | {_ms(after)} | {ratio:5.2f}")
        same = sum(pages["before"][key] == pages["after"].get(key) for key in pages["before"])
        print(f"\nfirst pages identical (sessions and order): {same} of {len(pages['before'])}")
        for key in pages["before"]:
            if pages["before"][key] != pages["after"].get(key):
                print(f"  differs: {key}")
        if args.writes:
            rng = random.Random(args.seed)
            texts = make_texts(rng, args.writes)
            users = data.user_sample[: args.write_users]
            write_times: dict[str, list[float]] = {name: [] for name in dbs}
            block = args.writes // args.write_blocks
            for b in range(args.write_blocks):
                for name, db in dbs.items():
                    write_times[name] += await writes(
                        db, users, texts[b * block : (b + 1) * block], b * len(users)
                    )
            print(
                f"\nwrites: {len(write_times['before'])} messages per copy, "
                f"in {args.write_blocks} blocks"
            )
            for name, times in write_times.items():
                ms = [t * 1000 for t in times]
                print(f"  {name:<7} {_ms(times)}  mean {sum(ms) / len(ms):7.2f} ms")
    finally:
        for db in dbs.values():
            await db.dispose()
        for path in copies.values():
            await asyncio.to_thread(_forget_writes, path)


def heavier(args: argparse.Namespace) -> None:
    """The FTS5 part alone for a user `--heavier` times as heavy as the loaded biggest user:
    their documents written that many times over (rowids in order), into a scratch FTS5 table
    (contentless: the index alone) as 0017 made it and one as 0018 makes it, and each query's
    MATCH within the ranking window (the newest RANKING_WINDOW_ENTRIES rowids) timed on both,
    alternating (p50 of 9)."""
    plan = make_plan(DataSpec(args.sessions, args.users, seed=args.seed))
    user = _describe(plan, "sqlite", "").biggest_user
    with sqlite3.connect(args.loaded_sqlite) as conn:
        documents = [
            row[0]
            for row in conn.execute(
                "SELECT document FROM chat_search WHERE user_id = ? ORDER BY id", (user,)
            )
        ]
    entries = len(documents) * args.heavier
    print(f"biggest user: {len(documents):,} entries, written {args.heavier} times: {entries:,}")
    scratch = Path(args.loaded_sqlite).with_name("heavier.db")
    scratch.unlink(missing_ok=True)
    conn = sqlite3.connect(scratch, isolation_level=None)
    try:
        tokenize = "unicode61 remove_diacritics 0 categories 'L* N* Co M*' tokenchars '_'"
        for name, options in (("before", ""), ("after", ", prefix='11 12'")):
            started = time.perf_counter()
            conn.execute(
                f"CREATE VIRTUAL TABLE {name} USING fts5(document, content='', "
                f'tokenize="{tokenize}"{options})'
            )
            conn.execute("BEGIN")
            for _ in range(args.heavier):
                conn.executemany(
                    f"INSERT INTO {name}(document) VALUES (?)", ((d,) for d in documents)
                )
            conn.execute("COMMIT")
            size = conn.execute(
                "SELECT sum(pgsize) FROM dbstat WHERE name LIKE ?", (f"{name}%",)
            ).fetchone()[0]
            print(f"{name}: written in {time.perf_counter() - started:.0f} s, {size / 1e6:.1f} MB")
        since = entries - search_queries.RANKING_WINDOW_ENTRIES
        for query in (*BIGGEST_QUERIES, "r"):
            match = fulltext.fts5_match(fulltext.query_words(query), user)
            times: dict[str, list[float]] = {"before": [], "after": []}
            counts = set()
            for _ in range(10):
                for name in times:
                    started = time.perf_counter()
                    counts.add(
                        conn.execute(
                            f"SELECT count(*) FROM {name} WHERE {name} MATCH ? AND rowid > ?",
                            (match, since),
                        ).fetchone()[0]
                    )
                    times[name].append(time.perf_counter() - started)
            before, after = (statistics.median(t[1:]) * 1000 for t in times.values())
            print(
                f"  {query!r:14} window matches {counts}: before {before:7.2f} ms, "
                f"after {after:7.2f} ms ({before / after:.1f}x)"
            )
    finally:
        conn.close()
        scratch.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.search_prefix", description=__doc__)
    add = parser.add_argument
    add("--loaded-sqlite", required=True, help="a SQLite file bench.search_ranking loaded")
    add("--sessions", type=int, default=1_000_000)
    add("--users", type=int, default=10_000)
    add("--seed", type=int, default=5)
    add("--rounds", type=int, default=2)
    add("--writes", type=int, default=2_000, help="messages indexed per copy")
    add("--write-blocks", type=int, default=10)
    add("--write-users", type=int, default=20)
    add("--after", help="its copy at 0018: made (upgraded) if absent, kept")
    add("--heavier", type=int, help="only the FTS5 part, for a user this many times as heavy")
    args = parser.parse_args()
    if args.heavier:
        heavier(args)
    elif args.after:
        asyncio.run(run(args))
    else:
        parser.error("--after or --heavier")


if __name__ == "__main__":
    main()
