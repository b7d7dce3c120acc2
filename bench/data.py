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

from app.kit.text import make_preview, make_title
from app.search import fulltext
from bench.texts import (
    COMMON_WORD,
    PREFIX,
    TWO_WORDS,
    Documents,
    Search,
    make_texts,
    rare_word,
)

TEXT_POOL = 20_000  # distinct user messages, and as many assistant replies
PINNED_SHARE = 0.005
ARCHIVED_SHARE = 0.05
HISTORY_DAYS = 180  # sessions' activity spreads over about six months
USER_SKEW = 3  # user rank = users * u**3: the busiest user has ~4.6% of all sessions
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Picks a message's text from the pool (`Plan.text_index` in Python): SQL and Python agree.
_USER_PICK = "((p.i * 7919 + m.n * 104729) % {pool})"
_ASSISTANT_PICK = "({pool} + (p.i * 104723 + m.n * 7927) % {pool})"
# The search index's staging keys: the pool texts' documents, then the titles' (title k is
# made from user text k).
_TITLE_DOC = 2 * TEXT_POOL


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

    def text_index(self, i: int, n: int) -> int:
        """The pool text of message `n` (1-based) of session `i`: users write the odd ones."""
        if n % 2:
            return (i * 7919 + n * 104729) % TEXT_POOL
        return TEXT_POOL + (i * 104723 + n * 7927) % TEXT_POOL

    def title(self, i: int) -> str:
        """The first message's (a user's) title."""
        return self._titles[self.text_index(i, 1)]

    def preview(self, i: int) -> str:
        """The last message's preview: counts are even, so it is an assistant's."""
        return self._previews[self.text_index(i, self.counts[i]) - TEXT_POOL]

    def __post_init__(self) -> None:
        # A pool text's title, preview and search documents never change: make each once.
        self._titles = [make_title(text) for text in self.texts[:TEXT_POOL]]
        # Every pool text has words, so each message's branch_preview is its own preview.
        if not all(text.strip() for text in self.texts):
            raise ValueError("a pool text without text: branch previews would carry over")
        self.text_previews = [make_preview(text) for text in self.texts]
        self._previews = self.text_previews[TEXT_POOL:]
        self.documents = [fulltext.document(text) for text in self.texts]
        self.title_documents = [fulltext.document(title) for title in self._titles]
        long = set(self.long)
        self._short_max = max(
            (count for i, count in enumerate(self.counts) if i not in long), default=0
        )

    def search_documents(self) -> list[tuple[int, str]]:
        """(staging key, words) of every non-empty document: texts, then titles."""
        texts = list(enumerate(self.documents))
        titles = [(_TITLE_DOC + k, words) for k, words in enumerate(self.title_documents)]
        return [(k, words) for k, words in texts + titles if words]

    def sessions_using(self, k: int) -> list[int]:
        """The sessions with pool text `k` among their messages. Text k goes to message n of
        session i when i = (k - n * b) / a (mod the pool): for each n, every pool-th session
        from there, rather than all sessions' messages."""
        pool, total = TEXT_POOL, len(self.ids)
        first, a, b = (1, 7919, 104729) if k < pool else (2, 104723, 7927)
        inverse = pow(a, -1, pool)
        found: set[int] = set()
        for n in range(first, self._short_max + 1, 2):
            for i in range((k % pool - n * b) * inverse % pool, total, pool):
                if self.counts[i] >= n:
                    found.add(i)
        for i in self.long:
            for n in range(first, self.counts[i] + 1, 2):
                if self.text_index(i, n) == k:
                    found.add(i)
        return sorted(found)

    def session_matches(self, i: int, text_match: list[bool], title_match: list[bool]) -> bool:
        """Whether session `i`'s title or a message matches, given which documents do."""
        if title_match[self.text_index(i, 1)]:
            return True
        return any(text_match[self.text_index(i, n)] for n in range(1, self.counts[i] + 1))


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
    searches: list[Search]
    load_seconds: float
    size_bytes: int
    load_steps: list[tuple[str, float]] = field(default_factory=list)


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
        texts=make_texts(rng, TEXT_POOL),
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
    sample = rng.choices(with_sessions, k=500)
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
        user_sample=[plan.users[u] for u in sample],
        searches=make_searches(plan, sample, biggest),
        load_seconds=0.0,
        size_bytes=0,
    )


SEARCH_USERS = 200  # users per kind of search, as many as the list's random users


def make_searches(plan: Plan, sample: list[int], biggest: int) -> list[Search]:
    """The kinds of search the benchmark runs, each with users who have matches (from `sample`,
    the random users, or for the rare word, the owners of its sessions) and how many of their
    listed sessions match, counted from the plan."""
    by_owner: dict[int, list[int]] = {}
    for i, owner in enumerate(plan.owners):
        if plan.active[i]:
            by_owner.setdefault(owner, []).append(i)
    random_users = list(dict.fromkeys(sample))
    rare_skip = 0
    while True:  # a rare word someone still lists (its sessions might all be archived)
        rare = rare_word(plan.documents, rare_skip)
        text = next(k for k, words in enumerate(plan.documents) if rare in words.split())
        owners = sorted({plan.owners[i] for i in plan.sessions_using(text) if plan.active[i]})
        if owners:
            break
        rare_skip += 1
    rng = random.Random(plan.spec.seed + 2)
    rng.shuffle(owners)
    kinds = [
        ("search_common", f"a common word ({COMMON_WORD!r}), random user", COMMON_WORD, None),
        ("search_common_big", f"{COMMON_WORD!r}, the biggest user", COMMON_WORD, [biggest]),
        ("search_rare", f"a rare word ({rare!r}), a user who has it", rare, owners),
        ("search_two_words", f"two words ({TWO_WORDS!r}), random user", TWO_WORDS, None),
        ("search_prefix", f"a prefix ({PREFIX!r}), random user", PREFIX, None),
    ]
    texts, titles = Documents(plan.documents), Documents(plan.title_documents)
    searches = []
    for key, label, query, candidates in kinds:
        text_match, title_match = texts.matching(query), titles.matching(query)
        expected: dict[str, set[str]] = {}
        for owner in candidates or random_users:
            found = {
                plan.session_ids[i]
                for i in by_owner.get(owner, [])
                if plan.session_matches(i, text_match, title_match)
            }
            if found:
                expected[plan.users[owner]] = found
            if len(expected) == SEARCH_USERS:
                break
        if not expected:
            raise ValueError(f"no user has a match for {query!r}: the data set is too small")
        searches.append(Search(key, f"search: {label}", query, list(expected), expected))
    return searches


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


# Messages are loaded as single branches (parent = the message before, ordinal = seq, the
# current leaf the last). `branch_preview` is what the write path stores: the preview of the
# last message with text on the path ending at the message, here always its own (every pool
# text has words), taken from the staging table of texts (`Plan.text_previews`).
def message_id(i: int, n: int) -> uuid.UUID:
    """The id of session i's n-th message: made from both numbers, so that the loader's SQL
    writes each message's parent (n - 1) and each session's current leaf without a lookup."""
    return uuid.UUID(int=(i << 64) | n)


# The same ids in SQL: 16 hex digits of i, then 16 of n.
_PG_MESSAGE_ID = "(lpad(to_hex(p.i), 16, '0') || lpad(to_hex({n}), 16, '0'))::uuid"
_SQLITE_MESSAGE_ID = "printf('%016x%016x', p.i, {n})"


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
            "user_id text NOT NULL, n int NOT NULL, created_us bigint NOT NULL, "
            "gap_us bigint NOT NULL); "
            "CREATE UNLOGGED TABLE bench_text (k int PRIMARY KEY, body text NOT NULL, "
            "preview text NOT NULL)"
        )
        await conn.copy_records_to_table(
            "bench_text",
            records=[(k, text, plan.text_previews[k]) for k, text in enumerate(plan.texts)],
            columns=["k", "body", "preview"],
        )
        await conn.copy_records_to_table(
            "bench_plan",
            records=[
                (
                    i,
                    plan.session_ids[i],
                    plan.users[plan.owners[i]],
                    plan.counts[i],
                    plan.created_us[i],
                    plan.gaps_us[i],
                )
                for i in range(len(plan.ids))
            ],
            columns=["i", "session_id", "user_id", "n", "created_us", "gap_us"],
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
                    message_id(i, count) if count else None,
                    count,
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
                "current_leaf_id",
                "node_count",
            ],
        )
        dataset.load_steps.append(("sessions and staging (COPY)", time.perf_counter() - step))
        step = time.perf_counter()
        created = "p.created_us + (m.n - 1) * p.gap_us"
        await conn.execute(
            f"""
            INSERT INTO chat_messages
                (id, session_id, seq, role, content, metadata, created_at, parent_id, ordinal,
                 branch_preview, user_id)
            SELECT {_PG_MESSAGE_ID.format(n="m.n")}, p.session_id, m.n,
                   CASE WHEN m.n % 2 = 1 THEN 'user' ELSE 'assistant' END,
                   t.body,
                   CASE WHEN m.n % 2 = 1 THEN '{{}}'
                        ELSE {_assistant_metadata_sql("postgresql")} END::jsonb,
                   timestamptz 'epoch' + ({created}) * interval '1 microsecond',
                   CASE WHEN m.n > 1 THEN {_PG_MESSAGE_ID.format(n="m.n - 1")} END, m.n,
                   t.preview, p.user_id
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
        await _pg_search_entries(conn, plan)
        dataset.load_steps.append(
            ("search entries (INSERT ... SELECT)", time.perf_counter() - step)
        )
        step = time.perf_counter()
        await conn.execute("DROP TABLE bench_plan, bench_text, bench_words, bench_document")
        search_seconds = 0.0
        for statement in restore:
            started_statement = time.perf_counter()
            await conn.execute(statement)
            if "chat_search" in statement:
                search_seconds += time.perf_counter() - started_statement
        dataset.load_steps.append(
            ("indexes and constraints", time.perf_counter() - step - search_seconds)
        )
        dataset.load_steps.append(("search: keys, GIN index, foreign key", search_seconds))
        step = time.perf_counter()
        # What autovacuum would have done by now (it is off on some servers): statistics,
        # and the visibility map that index-only scans (the COUNTs) rely on.
        await conn.execute("VACUUM (ANALYZE) chat_sessions")
        await conn.execute("VACUUM (ANALYZE) chat_messages")
        await conn.execute("VACUUM (ANALYZE) chat_search")
        await conn.execute("CHECKPOINT")
        dataset.load_steps.append(("VACUUM ANALYZE, CHECKPOINT", time.perf_counter() - step))
        dataset.size_bytes = int(await conn.fetchval("SELECT pg_database_size(current_database())"))
    finally:
        await conn.close()
    dataset.load_seconds = time.perf_counter() - started
    return dataset


def _search_entries_sql(series: str, document: str = "d.document") -> str:
    """Every search entry, in the order the write path adds them (by time; a session's title
    just before its first message), with its document from the staging table
    `bench_document` (k, document) of the pool's (`Plan.search_documents`). Text without words
    has no staging row, so it gets no entry, as on the write path. `series` joins message
    numbers `m.n` 1 to `p.n` to each session `p`; `document` is the stored value, of the
    staging row `d` and the entry `e`."""
    created = "p.created_us + (m.n - 1) * p.gap_us"
    pick = (
        f"CASE WHEN m.n % 2 = 1 THEN {_USER_PICK.format(pool=TEXT_POOL)} "
        f"ELSE {_ASSISTANT_PICK.format(pool=TEXT_POOL)} END"
    )
    title_pick = f"{_TITLE_DOC} + " + _USER_PICK.format(pool=TEXT_POOL).replace("m.n", "1")
    # Each owner's entries numbered in that order, as the trigger of migration 0019 numbers
    # them (the loaders turn it off: one lock and lookup per entry).
    return f"""
        INSERT INTO chat_search (session_id, user_id, seq, document, user_ordinal)
        SELECT e.session_id, e.user_id, e.seq, {document},
               row_number() OVER (PARTITION BY e.user_id ORDER BY e.at, e.seq) - 1
        FROM (
            SELECT p.session_id, p.user_id, m.n AS seq, {pick} AS k, {created} AS at
            FROM bench_plan p {series}
            UNION ALL
            SELECT p.session_id, p.user_id, 0, {title_pick}, p.created_us
            FROM bench_plan p
        ) AS e
        JOIN bench_document d ON d.k = e.k
        ORDER BY e.at, e.seq
        """


async def _pg_search_entries(conn: asyncpg.Connection, plan: Plan) -> None:
    """The search index's entries: each distinct document made into a tsvector once (titles
    with weight A, as the write path does), then copied into every entry that has it."""
    await conn.execute("CREATE UNLOGGED TABLE bench_words (k int PRIMARY KEY, words text NOT NULL)")
    await conn.copy_records_to_table(
        "bench_words", records=plan.search_documents(), columns=["k", "words"]
    )
    await conn.execute(
        "CREATE UNLOGGED TABLE bench_document AS "
        "SELECT k, CASE WHEN k >= $1 THEN setweight(to_tsvector('simple'::regconfig, words), 'A') "
        "ELSE to_tsvector('simple'::regconfig, words) END AS document FROM bench_words",
        _TITLE_DOC,
    )
    await conn.execute("ALTER TABLE bench_document ADD PRIMARY KEY (k); ANALYZE bench_document")
    await conn.execute("ALTER TABLE chat_search DISABLE TRIGGER chat_search_number")
    await conn.execute(_search_entries_sql("CROSS JOIN LATERAL generate_series(1, p.n) AS m(n)"))
    await conn.execute("ALTER TABLE chat_search ENABLE TRIGGER chat_search_number")


_LOADED_TABLES = ["chat_sessions", "chat_messages", "chat_search"]


async def _pg_drop_keys(conn: asyncpg.Connection) -> list[str]:
    """Drop the tables' indexes and key constraints; the statements that recreate them."""
    constraints = await conn.fetch(
        """
        SELECT c.conrelid::regclass::text AS tab, c.conname, c.contype::text AS contype,
               pg_get_constraintdef(c.oid) AS def
        FROM pg_constraint c
        WHERE (c.conrelid = ANY($1::text[]::regclass[]) AND c.contype IN ('p', 'u', 'f'))
           -- and other tables' foreign keys to them (chat_replies_generating, 0006), which
           -- depend on the primary keys dropped
           OR (c.confrelid = ANY($1::text[]::regclass[]) AND c.contype = 'f')
        """,
        _LOADED_TABLES,
    )
    indexes = await conn.fetch(
        """
        SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS def
        FROM pg_index i
        WHERE i.indrelid = ANY($1::text[]::regclass[])
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
        """,
        _LOADED_TABLES,
    )
    order = {"f": 0, "u": 1, "p": 2}  # drop foreign keys first, recreate them last
    drops = [
        f'ALTER TABLE {row["tab"]} DROP CONSTRAINT "{row["conname"]}"'
        for row in sorted(constraints, key=lambda row: order[row["contype"]])
    ] + [f'DROP INDEX "{row["name"]}"' for row in indexes]
    for statement in drops:
        await conn.execute(statement)

    def add(row: asyncpg.Record) -> str:
        return f'ALTER TABLE {row["tab"]} ADD CONSTRAINT "{row["conname"]}" {row["def"]}'

    keys = [add(row) for row in constraints if row["contype"] != "f"]
    foreign = [add(row) for row in constraints if row["contype"] == "f"]
    # Keys, then plain indexes, then the foreign keys (which check every row).
    return keys + [row["def"] for row in indexes] + foreign


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
        # Indexes, and the triggers that keep the FTS5 index in step with chat_search.
        indexes = [
            (kind, name, sql)
            for kind, name, sql in conn.execute(
                "SELECT type, name, sql FROM sqlite_master WHERE type IN ('index', 'trigger') "
                "AND sql IS NOT NULL AND tbl_name IN ('chat_sessions', 'chat_messages', "
                "'chat_search')"
            )
        ]
        step = time.perf_counter()
        conn.execute("BEGIN")
        for kind, name, _ in indexes:
            conn.execute(f'DROP {kind.upper()} "{name}"')
        conn.execute(
            "CREATE TEMP TABLE bench_plan (i INTEGER PRIMARY KEY, session_id TEXT NOT NULL, "
            "user_id TEXT NOT NULL, n INTEGER NOT NULL, created_us INTEGER NOT NULL, "
            "gap_us INTEGER NOT NULL)"
        )
        conn.execute(
            "CREATE TEMP TABLE bench_text (k INTEGER PRIMARY KEY, body TEXT NOT NULL, "
            "preview TEXT NOT NULL)"
        )
        conn.execute("CREATE TEMP TABLE bench_n (n INTEGER PRIMARY KEY)")
        conn.executemany(
            "INSERT INTO bench_text VALUES (?, ?, ?)",
            ((k, text, plan.text_previews[k]) for k, text in enumerate(plan.texts)),
        )
        conn.executemany(
            "INSERT INTO bench_n VALUES (?)", ((n,) for n in range(1, max(plan.counts) + 1))
        )
        conn.executemany(
            "INSERT INTO bench_plan VALUES (?, ?, ?, ?, ?, ?)",
            (
                (
                    i,
                    plan.session_ids[i],
                    plan.users[plan.owners[i]],
                    plan.counts[i],
                    plan.created_us[i],
                    plan.gaps_us[i],
                )
                for i in range(len(plan.ids))
            ),
        )
        conn.executemany(
            "INSERT INTO chat_sessions (id, session_id, user_id, active, metadata, created_at, "
            "updated_at, title, last_message, message_count, pinned, current_leaf_id, "
            "node_count) VALUES (?, ?, ?, ?, '{}', ?, ?, ?, ?, ?, ?, ?, ?)",
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
                    message_id(i, count).hex if count else None,
                    count,
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
            INSERT INTO chat_messages
                (id, session_id, seq, role, content, metadata, created_at, parent_id, ordinal,
                 branch_preview, user_id)
            SELECT {_SQLITE_MESSAGE_ID.format(n="m.n")}, p.session_id, m.n,
                   CASE WHEN m.n % 2 = 1 THEN 'user' ELSE 'assistant' END,
                   t.body,
                   CASE WHEN m.n % 2 = 1 THEN '{{}}'
                        ELSE {_assistant_metadata_sql("sqlite")} END,
                   strftime('%Y-%m-%d %H:%M:%S', ({created}) / 1000000, 'unixepoch')
                     || printf('.%06d', ({created}) % 1000000),
                   CASE WHEN m.n > 1 THEN {_SQLITE_MESSAGE_ID.format(n="m.n - 1")} END, m.n,
                   t.preview, p.user_id
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
        conn.execute(
            "CREATE TEMP TABLE bench_document (k INTEGER PRIMARY KEY, document TEXT NOT NULL)"
        )
        conn.executemany("INSERT INTO bench_document VALUES (?, ?)", plan.search_documents())
        # SQLite's documents carry the owner's words too, as the write path stores them.
        conn.create_function("owned_document", 2, fulltext.owned_document, deterministic=True)
        conn.execute(
            _search_entries_sql(
                "JOIN bench_n m ON m.n <= p.n", "owned_document(d.document, e.user_id)"
            )
        )
        dataset.load_steps.append(
            ("search entries (INSERT ... SELECT)", time.perf_counter() - step)
        )
        step = time.perf_counter()
        for _, _, sql in indexes:
            conn.execute(sql)
        for table in ("bench_plan", "bench_text", "bench_n", "bench_document"):
            conn.execute(f"DROP TABLE {table}")
        dataset.load_steps.append(("indexes, triggers", time.perf_counter() - step))
        step = time.perf_counter()
        # What the migration does once chat_search is filled: build the FTS5 index from it.
        conn.execute(f"INSERT INTO {fulltext.FTS_TABLE}({fulltext.FTS_TABLE}) VALUES ('rebuild')")
        conn.execute("COMMIT")
        dataset.load_steps.append(("search index (FTS5 rebuild)", time.perf_counter() - step))
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
