"""One user's reads go through that user's index, on data shaped so that the planner could
take everyone's index instead (issue 12).

The data is what most users leave: many users, every session unpinned. On it PostgreSQL
estimates the row comparison `(pinned, updated_at, id) < (false, ...)` at about no rows
(from `pinned < false` alone), so idx_chat_sessions_list (everyone's sessions, filtered by
owner row by row) looks as cheap as the user's own index, and was chosen for every second
page. Each statement the service sends is checked as PostgreSQL plans it for these values
(a custom plan) and for any values (the generic plan asyncpg's prepared statements may
switch to after five executions); SQLite's plan from EXPLAIN QUERY PLAN.
"""

import functools
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from app.auth.access import Caller
from app.config import Settings
from app.kit.db import migrate
from app.kit.db.engine import Database, create_engine
from app.sessions import service as session_service
from app.sessions.cursor import SearchPosition, decode_cursor
from app.sessions.queries import NO_FOLDER, ListPosition
from tests.conftest import DatabaseFactory, make_settings
from tests.db.helpers import captured_statements

SESSIONS = 200_000
USERS = 2_000  # 100 sessions each: a second page of 60
PAGE = 60
USER = "user-7"
# Ids of the folders (and tags) of the users: FOLDER_BASE + the user's number.
FOLDER_BASE = 1_000_000
PINNER = "user-8"  # with 3 pinned sessions
OPEN = Caller.open_mode()

# Session g (1-based) belongs to user-(g % USERS), was last active g seconds after the start,
# and is archived if g % 19 == 3 (5 %, of every user); none is pinned. Ids follow g, so
# that a test can compute the order. Every ninth session has a title entry in the search
# index, and one in fifty (USER's all) has 20 messages.
_FILL_POSTGRESQL = [
    f"""INSERT INTO chat_sessions (id, session_id, user_id, active, metadata, created_at,
        updated_at, title, message_count, pinned)
    SELECT lpad(to_hex(g), 32, '0')::uuid, 's-' || g, 'user-' || (g % {USERS}), g % 19 <> 3,
        '{{}}', TIMESTAMPTZ '2026-01-01 00:00:00+00' + g * INTERVAL '1 second',
        TIMESTAMPTZ '2026-01-01 00:00:00+00' + g * INTERVAL '1 second', 'report ' || g, 0, false
    FROM generate_series(1, {SESSIONS}) AS g""",
    # Numbered here, as migration 0019's trigger numbers entries (off meanwhile: in one
    # transaction, with no statistics yet, its lookup of the newest entry scanned the table,
    # 28 s for these 22,222).
    "ALTER TABLE chat_search DISABLE TRIGGER chat_search_number",
    f"""INSERT INTO chat_search (session_id, user_id, seq, document, user_ordinal)
    SELECT 's-' || g, 'user-' || (g % {USERS}), 0, setweight(to_tsvector('simple',
        'payment report ' || g), 'A'),
        row_number() OVER (PARTITION BY g % {USERS} ORDER BY g) - 1
    FROM generate_series(9, {SESSIONS}, 9) AS g ORDER BY g""",
    "ALTER TABLE chat_search ENABLE TRIGGER chat_search_number",
    f"""INSERT INTO chat_messages (id, session_id, seq, role, content, metadata, created_at,
        parent_id, ordinal, user_id)
    SELECT md5(g || '-' || n)::uuid, 's-' || g, n, 'user', 'message ' || n, '{{}}',
        TIMESTAMPTZ '2026-01-01 00:00:00+00' + g * INTERVAL '1 second',
        CASE WHEN n > 1 THEN md5(g || '-' || (n - 1))::uuid END, n, 'user-' || (g % {USERS})
    FROM generate_series(7, {SESSIONS}, 50) AS g, generate_series(1, 20) AS n""",
    # Those sessions' messages are one branch of 20, ending at the 20th.
    """UPDATE chat_sessions SET message_count = 20, node_count = 20,
        current_leaf_id = md5(substr(session_id, 3) || '-20')::uuid
    WHERE session_id IN (SELECT session_id FROM chat_messages)""",
    # Folders and tags (issue 16): a folder and a tag per user; every third session in its
    # owner's folder, every fifth tagged.
    f"""INSERT INTO chat_folders (id, user_id, parent_id, parent_key, name, name_key,
        created_at)
    SELECT lpad(to_hex({FOLDER_BASE} + u), 32, '0')::uuid, 'user-' || u, NULL, '', 'Folder',
        'folder', TIMESTAMPTZ '2026-01-01 00:00:00+00'
    FROM generate_series(0, {USERS - 1}) AS u""",
    f"""UPDATE chat_sessions
    SET folder_id = lpad(to_hex({FOLDER_BASE} + substr(session_id, 3)::int % {USERS}), 32,
        '0')::uuid
    WHERE substr(session_id, 3)::int % 3 = 0""",
    f"""INSERT INTO chat_tags (id, user_id, name, name_key, created_at)
    SELECT lpad(to_hex({FOLDER_BASE} + u), 32, '0')::uuid, 'user-' || u, 'Work', 'work',
        TIMESTAMPTZ '2026-01-01 00:00:00+00'
    FROM generate_series(0, {USERS - 1}) AS u""",
    f"""INSERT INTO chat_session_tags (session_id, tag_id, position, user_id)
    SELECT 's-' || g, lpad(to_hex({FOLDER_BASE} + g % {USERS}), 32, '0')::uuid, 0,
        'user-' || (g % {USERS})
    FROM generate_series(5, {SESSIONS}, 5) AS g""",
]
_SQLITE_SERIES = (
    f"WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {SESSIONS})"
)
_SQLITE_TIME = (
    "strftime('%Y-%m-%d %H:%M:%S', '2026-01-01 00:00:00', '+' || n || ' seconds') || '.000000'"
)
_FILL_SQLITE = [
    f"""{_SQLITE_SERIES}
    INSERT INTO chat_sessions (id, session_id, user_id, active, metadata, created_at,
        updated_at, title, message_count, pinned)
    SELECT printf('%032x', n), 's-' || n, 'user-' || (n % {USERS}), n % 19 <> 3, '{{}}',
        {_SQLITE_TIME}, {_SQLITE_TIME}, 'report ' || n, 0, 0
    FROM g""",
    f"""{_SQLITE_SERIES}
    INSERT INTO chat_search (session_id, user_id, seq, document)
    SELECT 's-' || n, 'user-' || (n % {USERS}), 0, 'payment report ' || n FROM g
    WHERE n % 9 = 0""",
    f"""{_SQLITE_SERIES}, m(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM m WHERE k < 20)
    INSERT INTO chat_messages (id, session_id, seq, role, content, metadata, created_at,
        parent_id, ordinal, user_id)
    SELECT printf('%016x%016x', n, k), 's-' || n, k, 'user', 'message ' || k, '{{}}',
        {_SQLITE_TIME}, CASE WHEN k > 1 THEN printf('%016x%016x', n, k - 1) END, k,
        'user-' || (n % {USERS})
    FROM g, m WHERE n % 50 = 7""",
    """UPDATE chat_sessions SET message_count = 20, node_count = 20,
        current_leaf_id = printf('%016x%016x', CAST(substr(session_id, 3) AS INTEGER), 20)
    WHERE session_id IN (SELECT session_id FROM chat_messages)""",
    f"""WITH RECURSIVE u(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM u WHERE n < {USERS - 1})
    INSERT INTO chat_folders (id, user_id, parent_id, parent_key, name, name_key, created_at)
    SELECT printf('%032x', {FOLDER_BASE} + n), 'user-' || n, NULL, '', 'Folder', 'folder',
        '2026-01-01 00:00:00.000000'
    FROM u""",
    f"""UPDATE chat_sessions
    SET folder_id = printf('%032x', {FOLDER_BASE} + CAST(substr(session_id, 3) AS INTEGER)
        % {USERS})
    WHERE CAST(substr(session_id, 3) AS INTEGER) % 3 = 0""",
    f"""WITH RECURSIVE u(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM u WHERE n < {USERS - 1})
    INSERT INTO chat_tags (id, user_id, name, name_key, created_at)
    SELECT printf('%032x', {FOLDER_BASE} + n), 'user-' || n, 'Work', 'work',
        '2026-01-01 00:00:00.000000'
    FROM u""",
    f"""{_SQLITE_SERIES}
    INSERT INTO chat_session_tags (session_id, tag_id, position, user_id)
    SELECT 's-' || n, printf('%032x', {FOLDER_BASE} + n % {USERS}), 0, 'user-' || (n % {USERS})
    FROM g WHERE n % 5 = 0""",
]


@pytest.fixture(scope="module")
async def trap(backend: str, database_factory: DatabaseFactory) -> AsyncIterator[Database]:
    """The data set, with fresh statistics; then PINNER pins three sessions (after the
    statistics: they still say that nothing is pinned)."""
    settings: Settings = make_settings(await database_factory.create(backend))
    await migrate.upgrade_async(settings.database_url)
    database = Database(create_engine(settings))
    async with database.write() as conn:
        for statement in _FILL_POSTGRESQL if backend == "postgresql" else _FILL_SQLITE:
            await conn.exec_driver_sql(statement)
    async with database.write() as conn:
        await conn.exec_driver_sql("ANALYZE")
    async with database.write() as conn:
        await conn.execute(
            sa.text(
                "UPDATE chat_sessions SET pinned = :pinned WHERE session_id IN (SELECT "
                "session_id FROM chat_sessions WHERE user_id = :user_id AND active = :active "
                "ORDER BY updated_at DESC LIMIT 3)"
            ),
            {"pinned": True, "user_id": PINNER, "active": True},
        )
    yield database
    await database.dispose()


def _literal(value: Any) -> str:
    """A parameter as PostgreSQL SQL text (the values these tests use)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool | int):
        return str(value).lower()
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    return "'" + text.replace("'", "''") + "'"


async def _plans(conn: AsyncConnection, statement: str, parameters: Any) -> list[str]:
    """The plans of a statement as the service sent it: SQLite's; PostgreSQL's custom plan
    (for these values) and generic plan (for any values)."""
    if conn.dialect.name == "sqlite":
        rows = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
        return ["\n".join(str(row[-1]) for row in rows)]
    custom = await conn.exec_driver_sql(f"EXPLAIN {statement}", parameters)
    plans = ["\n".join(custom.scalars())]
    await conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
    await conn.exec_driver_sql(f"PREPARE planned AS {statement}")
    # EXECUTE takes no bound parameters: its arguments are written out.
    arguments = ", ".join(_literal(value) for value in parameters)
    generic = await conn.exec_driver_sql(f"EXPLAIN EXECUTE planned({arguments})")
    plans.append("\n".join(generic.scalars()))
    await conn.exec_driver_sql("DEALLOCATE planned")
    return plans


@dataclass(frozen=True)
class Read:
    """What the service answered, and the plans of the statements it sent for it."""

    answer: Any
    plans: list[str]

    @property
    def list_plans(self) -> list[str]:
        """The plans of the statements that read sessions (not the page's tags, which are
        read by the page's session ids)."""
        return [plan for plan in self.plans if "chat_sessions" in plan]


async def read(database: Database, call: Callable[[], Awaitable[Any]]) -> Read:
    async with captured_statements(database.engine) as statements:
        answer = await call()
    plans: list[str] = []
    for statement, parameters in statements:
        if statement.lstrip().upper().startswith("SELECT"):
            async with database.read() as conn:  # SET LOCAL ends with the transaction
                plans += await _plans(conn, statement, parameters)
    return Read(answer, plans)


def assert_only_own_index(plan: str, backend: str) -> None:
    """Never everyone's sessions: neither their index nor a scan of the table."""
    assert "idx_chat_sessions_list" not in plan, plan
    if backend == "postgresql":
        assert "Seq Scan on chat_sessions" not in plan, plan
    else:
        assert not re.search(r"\bSCAN chat_sessions\b", plan), plan


def assert_cursor_in_own_index(plan: str, backend: str) -> None:
    """The user's index, bounded by the cursor: a range of it, not a filter after it."""
    assert_only_own_index(plan, backend)
    if backend == "postgresql":
        assert re.search(r"Index Scan (using|on) idx_chat_sessions_user_list", plan), plan
        assert re.search(r"Index Cond: \(\(user_id = .*ROW\(.*updated_at, id\) < ROW\(", plan), plan
    else:
        assert "USING INDEX idx_chat_sessions_user_list (user_id=? AND active=?" in plan, plan
        assert "updated_at,id)<(" in plan, plan


def _expected_list(user: int, *, archived: bool = False) -> list[str]:
    """user-`user`'s sessions, newest activity first (as listed, if the newest are pinned)."""
    numbers = range(SESSIONS - (SESSIONS - user) % USERS, 0, -USERS)
    return [f"s-{g}" for g in numbers if (g % 19 == 3) == archived]


async def _pages(
    database: Database, user_id: str, limit: int, *, most: int = 10, **options: Any
) -> list[Read]:
    """The pages of a user's list in cursor mode (up to `most`), as the sidebar scrolls it."""
    reads: list[Read] = []
    cursor: ListPosition | SearchPosition | None = None
    while len(reads) < most:
        page = await read(
            database,
            functools.partial(
                session_service.get_sessions_list,
                database,
                OPEN,
                user_id=user_id,
                limit=limit,
                cursor=cursor,
                include_total=False,
                **options,
            ),
        )
        reads.append(page)
        if page.answer.next_cursor is None:
            break
        cursor = decode_cursor(page.answer.next_cursor)
    return reads


async def test_later_pages_of_one_user_read_only_that_users_index(
    backend: str, trap: Database
) -> None:
    pages = await _pages(trap, USER, PAGE)

    listed = [s.session_id for page in pages for s in page.answer.sessions]
    assert listed == _expected_list(7)
    assert len(pages) == 2
    assert pages[1].list_plans
    for plan in pages[1].list_plans:
        assert_cursor_in_own_index(plan, backend)


async def test_a_cursor_among_the_pinned_sessions_reads_the_users_index(
    backend: str, trap: Database
) -> None:
    """Pages of two: the first page's cursor is a pinned session, the second page crosses
    from the pinned sessions into the others."""
    pages = await _pages(trap, PINNER, 2, most=3)

    assert [s.pinned for s in pages[0].answer.sessions] == [True, True]
    assert [s.pinned for s in pages[1].answer.sessions] == [True, False]
    listed = [s.session_id for page in pages for s in page.answer.sessions]
    assert listed == _expected_list(8)[:6]
    for page in pages[1:]:
        assert page.list_plans
        for plan in page.list_plans:
            assert_cursor_in_own_index(plan, backend)


async def test_archived_pages_read_only_the_users_index(backend: str, trap: Database) -> None:
    pages = await _pages(trap, USER, 2, archived=True)

    listed = [s.session_id for page in pages for s in page.answer.sessions]
    assert listed == _expected_list(7, archived=True)
    for page in pages[1:]:
        assert page.list_plans
        for plan in page.list_plans:
            assert_cursor_in_own_index(plan, backend)


def folder_of(user: int) -> uuid.UUID:
    return uuid.UUID(int=FOLDER_BASE + user)


def assert_range_of_folder_index(plan: str, backend: str, *, cursor: bool) -> None:
    """One range of the user's folder index (idx_chat_sessions_user_folder_list): the folder
    (or no folder) in its condition, and a cursor's position too."""
    assert_only_own_index(plan, backend)
    if backend == "postgresql":
        assert re.search(r"Index Scan (using|on) idx_chat_sessions_user_folder_list", plan), plan
        assert re.search(r"Index Cond: \(\(user_id = .*folder_id (=|IS NULL)", plan), plan
        if cursor:
            assert re.search(r"Index Cond: .*ROW\(.*updated_at, id\) < ROW\(", plan), plan
    else:
        assert re.search(
            r"USING INDEX idx_chat_sessions_user_folder_list \(user_id=\? AND active=\? AND "
            r"folder_id(=\?| IS NULL)",
            plan,
        ), plan
        if cursor:
            assert "updated_at,id)<(" in plan, plan


@pytest.mark.parametrize("in_folder", [True, False], ids=["one folder", "in no folder"])
async def test_a_folders_pages_are_ranges_of_the_folder_index(
    backend: str, trap: Database, in_folder: bool
) -> None:
    folder = folder_of(7) if in_folder else NO_FOLDER
    pages = await _pages(trap, USER, 10, folder=folder)

    listed = [s.session_id for page in pages for s in page.answer.sessions]
    assert listed == [
        g for g in _expected_list(7) if (int(g.removeprefix("s-")) % 3 == 0) == in_folder
    ]
    assert len(pages) > 2
    for number, page in enumerate(pages):
        assert page.list_plans
        for plan in page.list_plans:
            assert_range_of_folder_index(plan, backend, cursor=number > 0)


PER_USER_READS: dict[str, Callable[[Database], Awaitable[Any]]] = {
    "first page with total": lambda db: session_service.get_sessions_list(db, OPEN, user_id=USER),
    "page 2 by offset": lambda db: session_service.get_sessions_list(
        db, OPEN, user_id=USER, page=2, page_size=20
    ),
    "archived, first page with total": lambda db: session_service.get_sessions_list(
        db, OPEN, user_id=USER, archived=True
    ),
    "search with total": lambda db: session_service.get_sessions_list(
        db, OPEN, user_id=USER, query="payment", limit=20
    ),
    "search page 2": lambda db: session_service.get_sessions_list(
        db, OPEN, user_id=USER, query="payment", page=2, page_size=2, include_total=False
    ),
    "one folder, first page with total": lambda db: session_service.get_sessions_list(
        db, OPEN, user_id=USER, folder=folder_of(7)
    ),
    "in no folder, first page with total": lambda db: session_service.get_sessions_list(
        db, OPEN, user_id=USER, folder=NO_FOLDER
    ),
    "tagged, first page with total": lambda db: session_service.get_sessions_list(
        db, OPEN, user_id=USER, tags=["work"]
    ),
    "tagged in a folder, cursor mode": lambda db: session_service.get_sessions_list(
        db, OPEN, user_id=USER, tags=["Work"], folder=folder_of(7), limit=2
    ),
    "search in a folder, with a tag": lambda db: session_service.get_sessions_list(
        db, OPEN, user_id=USER, query="payment", tags=["work"], folder=NO_FOLDER
    ),
    "newest messages": lambda db: session_service.get_session(db, OPEN, "s-2007", limit=5),
    "older messages": lambda db: session_service.get_session(
        db, OPEN, "s-2007", limit=5, before=10
    ),
}


@pytest.mark.parametrize("kind", list(PER_USER_READS))
async def test_every_per_user_read_avoids_everyones_sessions(
    backend: str, trap: Database, kind: str
) -> None:
    result = await read(trap, lambda: PER_USER_READS[kind](trap))

    assert result.plans
    for plan in result.plans:
        assert_only_own_index(plan, backend)
