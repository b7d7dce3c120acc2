"""The sidebar benchmark's data set: many users' sessions and their messages, loaded fast.

Session-level choices (owner, length, times, pinned, archived, ids) are drawn in Python from a
seeded generator, so both databases get the same data set; titles and previews are made with
the write path's own `make_title` / `make_preview`, so the metadata is exactly what the service
would have stored. The messages themselves (about ten million by default) are generated inside
the database by one set-based `INSERT ... SELECT` each, in the order they were written (by
time), from a staging table of the sessions and a pool of message texts.

Loading keeps the migrated schema but drops its indexes and constraints first and recreates
them afterwards from their own stored definitions (PostgreSQL: `pg_get_indexdef` /
`pg_get_constraintdef`; SQLite: `sqlite_master`), as a restore does. SQLite's inline primary
key and UNIQUE constraints cannot be dropped, so they are maintained during the load.
"""

import asyncio
import random
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from app.services.text import make_preview, make_title

TEXT_POOL = 20_000  # distinct user messages, and as many assistant replies
PINNED_SHARE = 0.005
ARCHIVED_SHARE = 0.05
HISTORY_DAYS = 180  # sessions' activity spreads over about six months
USER_SKEW = 3  # user rank = users * u**3: the busiest user has ~4.6% of all sessions
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Picks a message's text from the pool: SQL and Python must agree, see `_user_text` below.
_USER_PICK = "((p.i * 7919 + m.n * 104729) % {pool})"
_ASSISTANT_PICK = "({pool} + (p.i * 104723 + m.n * 7927) % {pool})"

_WORDS = [
    "account",
    "api",
    "balance",
    "bank",
    "billing",
    "card",
    "charge",
    "checkout",
    "code",
    "connect",
    "currency",
    "customer",
    "dashboard",
    "data",
    "date",
    "default",
    "delete",
    "deposit",
    "dispute",
    "document",
    "email",
    "error",
    "event",
    "export",
    "fee",
    "field",
    "file",
    "fraud",
    "help",
    "id",
    "import",
    "integration",
    "invoice",
    "key",
    "limit",
    "link",
    "log",
    "merchant",
    "method",
    "mobile",
    "money",
    "notification",
    "order",
    "page",
    "password",
    "payment",
    "payout",
    "plan",
    "price",
    "product",
    "profile",
    "receipt",
    "refund",
    "report",
    "request",
    "response",
    "role",
    "sandbox",
    "secret",
    "session",
    "settings",
    "setup",
    "signup",
    "status",
    "subscription",
    "support",
    "tax",
    "team",
    "test",
    "token",
    "transaction",
    "transfer",
    "update",
    "upload",
    "user",
    "verification",
    "wallet",
    "webhook",
    "why",
    "how",
    "what",
    "when",
    "where",
    "which",
    "can",
    "could",
    "should",
    "would",
    "does",
    "do",
    "is",
    "are",
    "was",
    "were",
    "the",
    "a",
    "an",
    "to",
    "of",
    "in",
    "on",
    "for",
    "with",
    "from",
    "by",
    "about",
    "after",
    "before",
    "my",
    "your",
    "our",
    "their",
    "this",
    "that",
    "these",
    "it",
    "they",
    "we",
    "you",
    "i",
    "please",
    "thanks",
    "again",
    "still",
    "not",
    "never",
    "always",
    "only",
    "new",
    "old",
    "first",
    "last",
    "next",
    "same",
    "other",
    "all",
    "some",
    "every",
    "each",
    "any",
    "more",
    "most",
    "less",
    "many",
    "much",
    "monthly",
    "weekly",
    "daily",
    "annual",
    "failed",
    "pending",
    "complete",
    "declined",
    "approved",
    "expired",
    "open",
    "closed",
    "live",
    "stripe",
    "adyen",
    "paypal",
    "euro",
    "dollar",
    "pound",
    "yen",
    "café",
    "résumé",
    "naïve",
    "über",
    "façade",
    "👍",
    "quickly",
    "slowly",
    "correctly",
    "twice",
    "once",
    "already",
    "yet",
    "soon",
    "today",
    "yesterday",
    "tomorrow",
    "morning",
    "evening",
    "night",
    "time",
    "zone",
    "region",
    "country",
    "language",
    "french",
    "german",
    "spanish",
    "japanese",
]


@dataclass(frozen=True)
class DataSpec:
    """What to generate: `sessions` in all, of which `long_sessions` have `long_messages`
    messages and the others about `messages_per_session` (an even number, 2 to 2x-2)."""

    sessions: int
    users: int
    messages_per_session: int = 10
    long_sessions: int = 10
    long_messages: int = 5_000
    seed: int = 5


@dataclass
class Plan:
    """The data set before it is loaded; index `i` is a session, in the order written."""

    spec: DataSpec
    now: datetime
    users: list[str]
    ids: list[uuid.UUID]
    session_ids: list[str]
    owners: list[int]  # index into `users`
    counts: list[int]  # messages
    created_us: list[int]  # first message, microseconds since the epoch
    gaps_us: list[int]  # between two messages of the session
    pinned: list[bool]
    active: list[bool]
    long: list[int]  # indexes of the long sessions
    texts: list[str]  # TEXT_POOL user messages, then TEXT_POOL assistant replies

    @property
    def messages(self) -> int:
        return sum(self.counts)

    def updated_us(self, i: int) -> int:
        return self.created_us[i] + (self.counts[i] - 1) * self.gaps_us[i]

    def title(self, i: int) -> str:
        """The first message's (a user's) title."""
        return self._titles[(i * 7919 + 1 * 104729) % TEXT_POOL]

    def preview(self, i: int) -> str:
        """The last message's preview: counts are even, so it is an assistant's."""
        return self._previews[(i * 104723 + self.counts[i] * 7927) % TEXT_POOL]

    def __post_init__(self) -> None:
        # A pool text's title and preview never change: shorten each once.
        self._titles = [make_title(text) for text in self.texts[:TEXT_POOL]]
        self._previews = [make_preview(text) for text in self.texts[TEXT_POOL:]]


@dataclass
class Dataset:
    """A loaded data set, and what the benchmark needs to know about it."""

    database: str
    url: str
    sessions: int
    messages: int
    users: int
    active_sessions: int
    long_messages: int
    biggest_user: str
    biggest_user_sessions: int  # active ones: what its sidebar lists
    long_session_ids: list[str]
    short_session_ids: list[str]  # a sample of ordinary active sessions
    user_sample: list[str]  # random users (with at least one session)
    load_seconds: float
    size_bytes: int
    load_steps: list[tuple[str, float]] = field(default_factory=list)


def _sentence(rng: random.Random, low: int, high: int, end: str) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(low, high))]
    return " ".join(words).capitalize() + end


def _texts(rng: random.Random) -> list[str]:
    users = [_sentence(rng, 3, 24, "?") for _ in range(TEXT_POOL)]
    replies = [
        " ".join(_sentence(rng, 6, 16, ".") for _ in range(rng.randint(1, 5)))
        for _ in range(TEXT_POOL)
    ]
    return users + replies


def make_plan(spec: DataSpec, now: datetime | None = None) -> Plan:
    """Draw the data set (a million sessions take a few seconds)."""
    if spec.sessions < spec.long_sessions + 1 or spec.users < 1:
        raise ValueError("need more sessions than long sessions, and at least one user")
    if spec.messages_per_session < 2 or spec.long_messages < 2 or spec.long_messages % 2:
        raise ValueError("sessions need at least two messages, long ones an even number")
    rng = random.Random(spec.seed)
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    now_us = (now - EPOCH) // timedelta(microseconds=1)

    def uuid4() -> uuid.UUID:
        return uuid.UUID(int=rng.getrandbits(128), version=4)

    users = [str(uuid4()) for _ in range(spec.users)]
    pairs_max = max(1, spec.messages_per_session - 1)  # 2..2*mean-2 messages, mean `mean`
    long = set(rng.sample(range(spec.sessions), spec.long_sessions))
    rows: list[tuple[int, int, int, bool, bool, bool]] = []  # created, gap, count, pin, act, long
    for i in range(spec.sessions):
        if i in long:
            count = spec.long_messages
            gap = rng.randint(20, 90) * 1_000_000  # a few days of steady use
            age = rng.randint(0, 6 * 3600) * 1_000_000
            rows.append((now_us - age - (count - 1) * gap, gap, count, False, True, True))
            continue
        count = 2 * rng.randint(1, pairs_max)
        gap = rng.randint(5, 600) * 1_000_000 + rng.randint(0, 999_999)
        age = rng.randint(0, HISTORY_DAYS * 86_400 * 1_000_000)
        rows.append(
            (
                now_us - age - (count - 1) * gap,
                gap,
                count,
                rng.random() < PINNED_SHARE,
                rng.random() >= ARCHIVED_SHARE,
                False,
            )
        )
    rows.sort(key=lambda row: row[0])  # sessions in the order they were started
    owners = [min(spec.users - 1, int(spec.users * rng.random() ** USER_SKEW)) for _ in rows]
    return Plan(
        spec=spec,
        now=now,
        users=users,
        ids=[uuid4() for _ in rows],
        session_ids=[str(uuid4()) for _ in rows],
        owners=owners,
        counts=[row[2] for row in rows],
        created_us=[row[0] for row in rows],
        gaps_us=[row[1] for row in rows],
        pinned=[row[3] for row in rows],
        active=[row[4] for row in rows],
        long=[i for i, row in enumerate(rows) if row[5]],
        texts=_texts(rng),
    )


def _timestamp(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def _sqlite_timestamp(us: int) -> str:
    """As SQLAlchemy stores a UTCDateTime on SQLite: naive UTC, always with microseconds."""
    return _timestamp(us).strftime("%Y-%m-%d %H:%M:%S.%f")


def _describe(plan: Plan, database: str, url: str) -> Dataset:
    active_by_user = Counter(plan.owners[i] for i in range(len(plan.ids)) if plan.active[i])
    biggest, biggest_count = active_by_user.most_common(1)[0]
    rng = random.Random(plan.spec.seed + 1)
    with_sessions = sorted(set(plan.owners))
    long = set(plan.long)
    ordinary = [i for i in range(len(plan.ids)) if plan.active[i] and i not in long]
    return Dataset(
        database=database,
        url=url,
        sessions=len(plan.ids),
        messages=plan.messages,
        users=len(with_sessions),
        active_sessions=sum(plan.active),
        long_messages=plan.spec.long_messages,
        biggest_user=plan.users[biggest],
        biggest_user_sessions=biggest_count,
        long_session_ids=[plan.session_ids[i] for i in plan.long],
        short_session_ids=[plan.session_ids[i] for i in rng.sample(ordinary, 200)],
        user_sample=[plan.users[u] for u in rng.choices(with_sessions, k=500)],
        load_seconds=0.0,
        size_bytes=0,
    )


def _session_rows(plan: Plan) -> Iterator[tuple[int, str, str, bool, bool, int, int, str, str]]:
    """(i, id hex, session_id, active, pinned, created µs, count, title, preview)."""
    for i in range(len(plan.ids)):
        yield (
            i,
            plan.ids[i].hex,
            plan.session_ids[i],
            plan.active[i],
            plan.pinned[i],
            plan.created_us[i],
            plan.counts[i],
            plan.title(i),
            plan.preview(i),
        )


def _assistant_metadata_sql(dialect: str) -> str:
    """A realistic assistant-message `metadata`, as the write path stores it (json.dumps)."""
    pieces = [
        '\'{"provider": "openai", "model": "gpt-4o-mini", "status": "complete", '
        '"finish_reason": "stop", "usage": {"prompt_tokens": \'',
        "(40 + (p.i * 31 + m.n * 17) % 3000)",
        "', \"completion_tokens\": '",
        "(20 + (p.i * 13 + m.n * 7) % 600)",
        "', \"total_tokens\": '",
        "(60 + (p.i * 31 + m.n * 17) % 3000 + (p.i * 13 + m.n * 7) % 600)",
        '\'}, "latency": {"first_token_ms": \'',
        "(150 + (p.i * 11 + m.n * 3) % 900)",
        "', \"total_ms\": '",
        "(900 + (p.i * 29 + m.n * 5) % 9000)",
        "'}, \"sources\": []}'",
    ]
    cast = "::text" if dialect == "postgresql" else ""
    return " || ".join(piece if piece.startswith("'") else piece + cast for piece in pieces)


# --- PostgreSQL ------------------------------------------------------------------------------


async def load_postgresql(url: str, plan: Plan) -> Dataset:
    """Load `plan` into the freshly migrated PostgreSQL database at `url`."""
    dataset = _describe(plan, "postgresql", url)
    started = time.perf_counter()
    conn = await asyncpg.connect(url, timeout=30)
    try:
        await conn.execute(
            "SET maintenance_work_mem = '1GB'; SET work_mem = '1GB'; "
            "SET synchronous_commit = off; SET max_parallel_maintenance_workers = 2"
        )
        restore = await _pg_drop_keys(conn)
        step = time.perf_counter()
        await conn.execute(
            "CREATE UNLOGGED TABLE bench_plan (i bigint PRIMARY KEY, session_id text NOT NULL, "
            "n int NOT NULL, created_us bigint NOT NULL, gap_us bigint NOT NULL); "
            "CREATE UNLOGGED TABLE bench_text (k int PRIMARY KEY, body text NOT NULL)"
        )
        await conn.copy_records_to_table(
            "bench_text", records=list(enumerate(plan.texts)), columns=["k", "body"]
        )
        await conn.copy_records_to_table(
            "bench_plan",
            records=[
                (i, plan.session_ids[i], plan.counts[i], plan.created_us[i], plan.gaps_us[i])
                for i in range(len(plan.ids))
            ],
            columns=["i", "session_id", "n", "created_us", "gap_us"],
        )
        await conn.copy_records_to_table(
            "chat_sessions",
            records=[
                (
                    plan.ids[i],
                    session_id,
                    plan.users[plan.owners[i]],
                    active,
                    "{}",
                    _timestamp(created),
                    _timestamp(plan.updated_us(i)),
                    title,
                    preview,
                    count,
                    pinned,
                )
                for i, _, session_id, active, pinned, created, count, title, preview in (
                    _session_rows(plan)
                )
            ],
            columns=[
                "id",
                "session_id",
                "user_id",
                "active",
                "metadata",
                "created_at",
                "updated_at",
                "title",
                "last_message",
                "message_count",
                "pinned",
            ],
        )
        dataset.load_steps.append(("sessions and staging (COPY)", time.perf_counter() - step))
        step = time.perf_counter()
        created = "p.created_us + (m.n - 1) * p.gap_us"
        await conn.execute(
            f"""
            INSERT INTO chat_messages (id, session_id, seq, role, content, metadata, created_at)
            SELECT gen_random_uuid(), p.session_id, m.n,
                   CASE WHEN m.n % 2 = 1 THEN 'user' ELSE 'assistant' END,
                   t.body,
                   CASE WHEN m.n % 2 = 1 THEN '{{}}'
                        ELSE {_assistant_metadata_sql("postgresql")} END::jsonb,
                   timestamptz 'epoch' + ({created}) * interval '1 microsecond'
            FROM bench_plan p
            CROSS JOIN LATERAL generate_series(1, p.n) AS m(n)
            JOIN bench_text t ON t.k = CASE WHEN m.n % 2 = 1
                THEN {_USER_PICK.format(pool=TEXT_POOL)}
                ELSE {_ASSISTANT_PICK.format(pool=TEXT_POOL)} END
            ORDER BY {created}
            """
        )
        dataset.load_steps.append(("messages (INSERT ... SELECT)", time.perf_counter() - step))
        step = time.perf_counter()
        await conn.execute("DROP TABLE bench_plan, bench_text")
        for statement in restore:
            await conn.execute(statement)
        dataset.load_steps.append(("indexes and constraints", time.perf_counter() - step))
        step = time.perf_counter()
        # What autovacuum would have done by now (it is off on some servers): statistics,
        # and the visibility map that index-only scans (the COUNTs) rely on.
        await conn.execute("VACUUM (ANALYZE) chat_sessions")
        await conn.execute("VACUUM (ANALYZE) chat_messages")
        await conn.execute("CHECKPOINT")
        dataset.load_steps.append(("VACUUM ANALYZE, CHECKPOINT", time.perf_counter() - step))
        dataset.size_bytes = int(await conn.fetchval("SELECT pg_database_size(current_database())"))
    finally:
        await conn.close()
    dataset.load_seconds = time.perf_counter() - started
    return dataset


async def _pg_drop_keys(conn: asyncpg.Connection) -> list[str]:
    """Drop the tables' indexes and key constraints; the statements that recreate them."""
    constraints = await conn.fetch(
        """
        SELECT c.conrelid::regclass::text AS tab, c.conname, c.contype::text AS contype,
               pg_get_constraintdef(c.oid) AS def
        FROM pg_constraint c
        WHERE c.conrelid IN ('chat_sessions'::regclass, 'chat_messages'::regclass)
          AND c.contype IN ('p', 'u', 'f')
        """
    )
    indexes = await conn.fetch(
        """
        SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS def
        FROM pg_index i
        WHERE i.indrelid IN ('chat_sessions'::regclass, 'chat_messages'::regclass)
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
        """
    )
    order = {"f": 0, "u": 1, "p": 2}  # drop foreign keys first, recreate them last
    drops = [
        f'ALTER TABLE {row["tab"]} DROP CONSTRAINT "{row["conname"]}"'
        for row in sorted(constraints, key=lambda row: order[row["contype"]])
    ] + [f'DROP INDEX "{row["name"]}"' for row in indexes]
    for statement in drops:
        await conn.execute(statement)
    keys = [
        f'ALTER TABLE {row["tab"]} ADD CONSTRAINT "{row["conname"]}" {row["def"]}'
        for row in sorted(constraints, key=lambda row: -order[row["contype"]])
    ]
    # Keys, then plain indexes, then the foreign key (which checks every message).
    return keys[:-1] + [row["def"] for row in indexes] + keys[-1:]


# --- SQLite ----------------------------------------------------------------------------------


def load_sqlite(path: Path, url: str, plan: Plan) -> Dataset:
    """Load `plan` into the freshly migrated SQLite database at `path`."""
    dataset = _describe(plan, "sqlite", url)
    started = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        # Fast and unsafe while loading a scratch file; the service's own settings after.
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-2000000")  # 2 GB
        conn.execute("PRAGMA temp_store=MEMORY")
        indexes = [
            (name, sql)
            for name, sql in conn.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
                "AND tbl_name IN ('chat_sessions', 'chat_messages')"
            )
        ]
        step = time.perf_counter()
        conn.execute("BEGIN")
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        conn.execute(
            "CREATE TEMP TABLE bench_plan (i INTEGER PRIMARY KEY, session_id TEXT NOT NULL, "
            "n INTEGER NOT NULL, created_us INTEGER NOT NULL, gap_us INTEGER NOT NULL)"
        )
        conn.execute("CREATE TEMP TABLE bench_text (k INTEGER PRIMARY KEY, body TEXT NOT NULL)")
        conn.execute("CREATE TEMP TABLE bench_n (n INTEGER PRIMARY KEY)")
        conn.executemany("INSERT INTO bench_text VALUES (?, ?)", enumerate(plan.texts))
        conn.executemany(
            "INSERT INTO bench_n VALUES (?)", ((n,) for n in range(1, max(plan.counts) + 1))
        )
        conn.executemany(
            "INSERT INTO bench_plan VALUES (?, ?, ?, ?, ?)",
            (
                (i, plan.session_ids[i], plan.counts[i], plan.created_us[i], plan.gaps_us[i])
                for i in range(len(plan.ids))
            ),
        )
        conn.executemany(
            "INSERT INTO chat_sessions (id, session_id, user_id, active, metadata, created_at, "
            "updated_at, title, last_message, message_count, pinned) "
            "VALUES (?, ?, ?, ?, '{}', ?, ?, ?, ?, ?, ?)",
            (
                (
                    id_hex,
                    session_id,
                    plan.users[plan.owners[i]],
                    active,
                    _sqlite_timestamp(created),
                    _sqlite_timestamp(plan.updated_us(i)),
                    title,
                    preview,
                    count,
                    pinned,
                )
                for i, id_hex, session_id, active, pinned, created, count, title, preview in (
                    _session_rows(plan)
                )
            ),
        )
        dataset.load_steps.append(
            ("sessions and staging (executemany)", time.perf_counter() - step)
        )
        step = time.perf_counter()
        created = "p.created_us + (m.n - 1) * p.gap_us"
        conn.execute(
            f"""
            INSERT INTO chat_messages (id, session_id, seq, role, content, metadata, created_at)
            SELECT lower(hex(randomblob(16))), p.session_id, m.n,
                   CASE WHEN m.n % 2 = 1 THEN 'user' ELSE 'assistant' END,
                   t.body,
                   CASE WHEN m.n % 2 = 1 THEN '{{}}'
                        ELSE {_assistant_metadata_sql("sqlite")} END,
                   strftime('%Y-%m-%d %H:%M:%S', ({created}) / 1000000, 'unixepoch')
                     || printf('.%06d', ({created}) % 1000000)
            FROM bench_plan p
            JOIN bench_n m ON m.n <= p.n
            JOIN bench_text t ON t.k = CASE WHEN m.n % 2 = 1
                THEN {_USER_PICK.format(pool=TEXT_POOL)}
                ELSE {_ASSISTANT_PICK.format(pool=TEXT_POOL)} END
            ORDER BY {created}
            """
        )
        dataset.load_steps.append(("messages (INSERT ... SELECT)", time.perf_counter() - step))
        step = time.perf_counter()
        for _, sql in indexes:
            conn.execute(sql)
        conn.execute("DROP TABLE bench_plan")
        conn.execute("DROP TABLE bench_text")
        conn.execute("DROP TABLE bench_n")
        conn.execute("COMMIT")
        dataset.load_steps.append(("indexes", time.perf_counter() - step))
        conn.execute("PRAGMA journal_mode=WAL")  # as the service runs it
    finally:
        conn.close()
    dataset.load_seconds = time.perf_counter() - started
    dataset.size_bytes = path.stat().st_size
    return dataset


async def load(database: str, url: str, sqlite_path: Path | None, plan: Plan) -> Dataset:
    if database == "postgresql":
        return await load_postgresql(url, plan)
    assert sqlite_path is not None
    return await asyncio.to_thread(load_sqlite, sqlite_path, url, plan)
