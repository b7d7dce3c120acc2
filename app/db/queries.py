"""The SQL the services run. Each helper takes the connection of a transaction it does not own."""

import functools
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import (
    BindParameter,
    Boolean,
    ColumnElement,
    Integer,
    RowMapping,
    Text,
    and_,
    bindparam,
    case,
    cast,
    column,
    delete,
    false,
    func,
    insert,
    literal,
    literal_column,
    select,
    table,
    true,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import TSQUERY
from sqlalchemy.engine import Result
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Select
from sqlalchemy.types import Uuid

from app.domain import Role
from app.kit.db.tables import SEARCH_TITLE_SEQ, chat_messages, chat_search, chat_sessions
from app.kit.db.types import UTCDateTime
from app.search import fulltext

UNTITLED = "New chat"

SUMMARY_COLUMNS = (
    chat_sessions.c.session_id,
    func.coalesce(chat_sessions.c.title, UNTITLED).label("title"),
    func.coalesce(chat_sessions.c.last_message, "").label("last_message"),
    chat_sessions.c.message_count,
    chat_sessions.c.created_at,
    chat_sessions.c.updated_at,
    chat_sessions.c.pinned,
    (~chat_sessions.c.active).label("archived"),
    chat_sessions.c.id,
)
# The sidebar's order, all descending; `id` makes it total, so pages neither overlap nor skip.
LIST_ORDER = (chat_sessions.c.pinned, chat_sessions.c.updated_at, chat_sessions.c.id)
MESSAGE_COLUMNS = (
    chat_messages.c.id,
    chat_messages.c.seq,
    chat_messages.c.role,
    chat_messages.c.content,
    chat_messages.c.metadata,
    chat_messages.c.created_at,
)


def _as_dicts(result: Result[Any]) -> list[dict[str, Any]]:
    """The rows as plain dicts: Pydantic reads a dict in C, and a `RowMapping` key by key
    through Python (three times slower for a page of summaries, docs/performance.md)."""
    keys = list(result.keys())
    return [dict(zip(keys, row, strict=True)) for row in result]


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: uuid.UUID
    seq: int
    created_at: datetime


async def create_session_if_absent(
    conn: AsyncConnection, *, session_id: str, user_id: str | None, now: datetime
) -> bool:
    """Insert the session unless one with this id exists; True when this call created it."""
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = (
        dialect_insert(chat_sessions)
        .values(
            id=uuid.uuid4(),
            session_id=session_id,
            user_id=user_id,
            active=True,
            metadata={},
            created_at=now,
            updated_at=now,
            message_count=0,
        )
        .on_conflict_do_nothing(index_elements=[chat_sessions.c.session_id])
    )
    result = await conn.execute(stmt)
    return bool(result.rowcount)


async def append_message(
    conn: AsyncConnection,
    *,
    session_id: str,
    role: Role,
    content: str,
    metadata: dict[str, Any],
    title: str | None,
    preview: str | None,
    now: datetime,
    owner: str | None = None,
) -> StoredMessage | None:
    """Store a message and update its session's metadata incrementally; None if no session.

    The UPDATE comes first: it locks the session row (PostgreSQL) inside a transaction that
    already holds the write lock (SQLite), so concurrent writers to one session queue here and
    each gets the next sequence number. No COUNT, no re-reading of other messages.
    `title` is kept only if the session has none yet; `preview` None leaves last_message as
    it is. With `owner`, a session of anyone else counts as missing.

    The message's time is `now` or the session's `updated_at`, whichever is later, decided
    under the row lock: `now` was read before the lock, and a writer that read its clock
    first may get the lock last. So `created_at` never goes backwards along `seq`, and the
    session's `updated_at` is its newest message's `created_at`.
    """
    now_value = literal(now, type_=UTCDateTime())
    values: dict[str, Any] = {
        "message_count": chat_sessions.c.message_count + 1,
        # Never move backwards, whatever order concurrent writers' clocks were read in.
        "updated_at": case(
            (chat_sessions.c.updated_at > now_value, chat_sessions.c.updated_at),
            else_=now_value,
        ),
    }
    if title is not None:
        values["title"] = func.coalesce(chat_sessions.c.title, title)
    if preview is not None:
        values["last_message"] = preview
    stmt = (
        update(chat_sessions)
        .where(_session_is(session_id, owner))
        .values(values)
        .returning(
            chat_sessions.c.message_count,
            chat_sessions.c.user_id,
            chat_sessions.c.title,
            chat_sessions.c.updated_at,
        )
    )
    session = (await conn.execute(stmt)).one_or_none()
    if session is None:
        return None
    seq = session.message_count
    created_at: datetime = session.updated_at
    message_id = uuid.uuid4()
    await conn.execute(
        insert(chat_messages).values(
            id=message_id,
            session_id=session_id,
            seq=seq,
            role=role,
            content=content,
            metadata=metadata,
            created_at=created_at,
        )
    )
    # This message set the automatic title, unless the title already read the same (then
    # its entry exists, and the insert is a no-op).
    if title is not None and session.title == title:
        await _index(conn, session_id, session.user_id, SEARCH_TITLE_SEQ, title, if_absent=True)
    await _index(conn, session_id, session.user_id, seq, content)
    return StoredMessage(id=message_id, seq=seq, created_at=created_at)


async def _index(
    conn: AsyncConnection,
    session_id: str,
    user_id: str | None,
    seq: int,
    text: str,
    *,
    if_absent: bool = False,
) -> None:
    """Add a title or message to the search index (app/search/fulltext.py); text without words
    is left out. SQLite's FTS5 table follows chat_search by triggers (migration 0004)."""
    words = fulltext.document(text)
    if not words:
        return
    document: Any = words
    if conn.dialect.name == "postgresql":
        document = func.to_tsvector(literal_column("'simple'::regconfig"), words)
        if seq == SEARCH_TITLE_SEQ:
            # Weight A against the default D: a match in the title ranks above one in a message.
            document = func.setweight(document, literal_column("'A'"))
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = dialect_insert(chat_search).values(
        session_id=session_id, user_id=user_id, seq=seq, document=document
    )
    if if_absent:
        stmt = stmt.on_conflict_do_nothing(
            index_elements=[chat_search.c.session_id, chat_search.c.seq]
        )
    await conn.execute(stmt)


async def index_message(
    conn: AsyncConnection, session_id: str, user_id: str | None, seq: int, text: str
) -> None:
    """Add a message that was stored without its text (a reply finished later) to the index."""
    await _index(conn, session_id, user_id, seq, text)


def _session_is(
    session_id: str | BindParameter[str], owner: str | BindParameter[str] | None
) -> ColumnElement[bool]:
    """The session with this id, if `owner` (when given) owns it."""
    condition = chat_sessions.c.session_id == session_id
    if owner is not None:
        condition = and_(condition, chat_sessions.c.user_id == owner)
    return condition


_SESSION_ID = bindparam("session_id", type_=Text())
_OWNER = bindparam("owner", type_=Text())


@functools.cache
def _session_summary(*, owned: bool) -> Select[Any]:
    return select(*SUMMARY_COLUMNS).where(_session_is(_SESSION_ID, _OWNER if owned else None))


async def get_session_summary(
    conn: AsyncConnection, session_id: str, *, owner: str | None = None
) -> RowMapping | None:
    stmt = _session_summary(owned=owner is not None)
    result = await conn.execute(stmt, {"session_id": session_id, "owner": owner})
    summary: RowMapping | None = result.mappings().one_or_none()
    return summary


@dataclass(frozen=True, slots=True)
class ListPosition:
    """Where a page of the sidebar ends: the sort key of its last session."""

    pinned: bool
    updated_at: datetime
    id: uuid.UUID


@dataclass(frozen=True, slots=True)
class SessionFilter:
    user_id: str | None
    archived: bool

    @property
    def for_user(self) -> bool:
        return self.user_id is not None

    def parameters(self) -> dict[str, Any]:
        return {"list_user": self.user_id, "list_active": not self.archived}


# The sidebar's reads, like the search's (below), are built once per shape and take their
# values as parameters: built per request, constructing and hashing the statement cost more
# Python time than the database spent answering it (docs/performance.md).
_LIST_USER = bindparam("list_user", type_=Text())
_LIST_ACTIVE = bindparam("list_active", type_=Boolean())
_LIST_LIMIT = bindparam("list_limit", type_=Integer())
_LIST_OFFSET = bindparam("list_offset", type_=Integer())
_AFTER_UPDATED_AT = bindparam("after_updated_at", type_=UTCDateTime())
_AFTER_ID = bindparam("after_id", type_=Uuid())
ListStart = Literal["first", "offset", "after_pinned", "after_unpinned"]


def _after(*, pinned: bool) -> ColumnElement[bool]:
    """Strictly after the session (`pinned`, `after_updated_at`, `after_id`) in LIST_ORDER.

    PostgreSQL estimates a row comparison from its first column alone: past the pinned
    sessions, `(pinned, updated_at, id) < (false, ...)` reads as `pinned < false`, about no
    rows, so everyone's index (idx_chat_sessions_list, filtering user_id row by row) looked
    as cheap as the user's own. It chose it on data where no session is pinned, as most users
    leave it: a second page in 132 ms p50 at 1M sessions (454,436 rows removed by filter)
    where the user's index answers in 0.14 ms (issue 12). Since `pinned` is boolean, a cursor
    among the unpinned sessions is `pinned = false AND (updated_at, id) < (...)`: estimated
    from updated_at's histogram, and still one range of either index. Only a cursor among the
    pinned keeps all three columns, estimated as `pinned < true`: the unpinned share, which
    is small only where nearly every session is pinned.
    """
    if pinned:
        return tuple_(*LIST_ORDER) < tuple_(true(), _AFTER_UPDATED_AT, _AFTER_ID)
    return and_(
        chat_sessions.c.pinned == false(),
        tuple_(*LIST_ORDER[1:]) < tuple_(_AFTER_UPDATED_AT, _AFTER_ID),
    )


def _sessions_where(*, for_user: bool) -> list[ColumnElement[bool]]:
    clauses = [chat_sessions.c.active == _LIST_ACTIVE]
    if for_user:
        clauses.append(chat_sessions.c.user_id == _LIST_USER)
    return clauses


@functools.cache
def _list_page(*, for_user: bool, start: ListStart) -> Select[Any]:
    stmt = (
        select(*SUMMARY_COLUMNS)
        .where(*_sessions_where(for_user=for_user))
        .order_by(*(column.desc() for column in LIST_ORDER))
        .limit(_LIST_LIMIT)
    )
    match start:
        case "after_pinned" | "after_unpinned":
            return stmt.where(_after(pinned=start == "after_pinned"))
        case "offset":
            return stmt.offset(_LIST_OFFSET)
        case "first":
            return stmt


@functools.cache
def _list_count(*, for_user: bool) -> Select[Any]:
    return (
        select(func.count()).select_from(chat_sessions).where(*_sessions_where(for_user=for_user))
    )


async def list_session_summaries(
    conn: AsyncConnection,
    *,
    where: SessionFilter,
    limit: int,
    offset: int = 0,
    after: ListPosition | None = None,
) -> list[dict[str, Any]]:
    """Pinned first, then newest activity first; from `offset`, or strictly after `after`
    (keyset: an index range scan at any depth)."""
    parameters = where.parameters() | {"list_limit": limit}
    if after is not None:
        start: ListStart = "after_pinned" if after.pinned else "after_unpinned"
        stmt = _list_page(for_user=where.for_user, start=start)
        parameters |= {"after_updated_at": after.updated_at, "after_id": after.id}
    elif offset:
        stmt = _list_page(for_user=where.for_user, start="offset")
        parameters["list_offset"] = offset
    else:
        stmt = _list_page(for_user=where.for_user, start="first")
    return _as_dicts(await conn.execute(stmt, parameters))


async def count_sessions(conn: AsyncConnection, *, where: SessionFilter) -> int:
    stmt = _list_count(for_user=where.for_user)
    return int((await conn.execute(stmt, where.parameters())).scalar_one())


async def update_session(
    conn: AsyncConnection,
    session_id: str,
    *,
    owner: str | None,
    title: str | None,
    pinned: bool | None,
    archived: bool | None,
) -> bool:
    """Rename, pin or archive; True when the session exists (and is the owner's).

    Activity time is left alone: organising a session is not talking in it.
    """
    values: dict[str, Any] = {}
    if title is not None:
        # Never null again, so the automatic title (set only while null) cannot replace it.
        values["title"] = title
    if pinned is not None:
        values["pinned"] = pinned
    if archived is not None:
        values["active"] = not archived
    stmt = (
        update(chat_sessions)
        .where(_session_is(session_id, owner))
        .values(values)
        .returning(chat_sessions.c.user_id)
    )
    session = (await conn.execute(stmt)).one_or_none()
    if session is None:
        return False
    if title is not None:
        await conn.execute(
            delete(chat_search).where(
                chat_search.c.session_id == session_id, chat_search.c.seq == SEARCH_TITLE_SEQ
            )
        )
        await _index(conn, session_id, session.user_id, SEARCH_TITLE_SEQ, title)
    return True


async def delete_sessions_of(conn: AsyncConnection, user_id: str) -> int:
    """Delete every session of `user_id` (messages go by cascade); how many there were."""
    stmt = delete(chat_sessions).where(chat_sessions.c.user_id == user_id)
    return int((await conn.execute(stmt)).rowcount)


_MESSAGES_BEFORE = bindparam("messages_before", type_=Integer())
_MESSAGES_LIMIT = bindparam("messages_limit", type_=Integer())


@functools.cache
def _messages(*, before: bool, newest: bool) -> Select[Any]:
    stmt = select(*MESSAGE_COLUMNS).where(chat_messages.c.session_id == _SESSION_ID)
    if before:
        stmt = stmt.where(chat_messages.c.seq < _MESSAGES_BEFORE)
    if newest:
        return stmt.order_by(chat_messages.c.seq.desc()).limit(_MESSAGES_LIMIT)
    return stmt.order_by(chat_messages.c.seq)


async def list_messages(
    conn: AsyncConnection, session_id: str, *, before: int | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """A session's messages, oldest first: all of them, or the newest `limit` before the
    sequence number `before`."""
    stmt = _messages(before=before is not None, newest=limit is not None)
    parameters = {"session_id": session_id, "messages_before": before, "messages_limit": limit}
    rows = _as_dicts(await conn.execute(stmt, parameters))
    if limit is not None:
        rows.reverse()
    return rows


async def list_recent_messages(
    conn: AsyncConnection, *, session_id: str, up_to_seq: int, limit: int
) -> list[RowMapping]:
    """The last `limit` messages up to and including `up_to_seq`, oldest first."""
    stmt = (
        select(*MESSAGE_COLUMNS)
        .where(chat_messages.c.session_id == session_id, chat_messages.c.seq <= up_to_seq)
        .order_by(chat_messages.c.seq.desc())
        .limit(limit)
    )
    rows = list((await conn.execute(stmt)).mappings())
    rows.reverse()
    return rows


async def delete_session(
    conn: AsyncConnection, session_id: str, *, owner: str | None = None
) -> bool:
    """Delete the session (its messages go by cascade); True when it existed."""
    stmt = delete(chat_sessions).where(_session_is(session_id, owner))
    return bool((await conn.execute(stmt)).rowcount)


_fts = table(fulltext.FTS_TABLE, column("rowid"))

# The search statements are built once per shape and take their values as parameters: made
# afresh, their nested subqueries cost more Python time than the database spends on a typical
# user's search (docs/performance.md).
_USER = bindparam("search_user", type_=Text())
_ACTIVE = bindparam("search_active", type_=Boolean())
_TERMS = bindparam("search_terms", type_=Text())
_OWNED_TERMS = bindparam("search_owned_terms", type_=Text())
_SESSIONS = bindparam("search_sessions", expanding=True, type_=Text())
_LIMIT = bindparam("search_limit", type_=Integer())
_OFFSET = bindparam("search_offset", type_=Integer())


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A search as the queries run it: its words (app/search/fulltext.py) and the sessions it may
    find."""

    words: list[str]
    where: SessionFilter

    @property
    def for_user(self) -> bool:
        return self.where.for_user

    def parameters(self, dialect: str) -> dict[str, Any]:
        user_id = self.where.user_id
        parameters: dict[str, Any] = {
            "search_user": user_id,
            "search_active": not self.where.archived,
        }
        if dialect == "postgresql":
            parameters["search_terms"] = fulltext.postgres_tsquery(self.words)
            if user_id is not None:
                parameters["search_owned_terms"] = fulltext.postgres_owned_tsquery(
                    self.words, user_id
                )
        else:
            parameters["search_terms"] = fulltext.fts5_match(self.words, user_id)
        return parameters


def _read_first(name: str, *conditions: ColumnElement[bool]) -> Any:
    """The search entries that meet `conditions`, read first and on their own (PostgreSQL).
    OFFSET 0 keeps the planner from adding another index to the scan: intersecting with
    idx_chat_search_user reads all of a user's entries (43 ms for the biggest user's rare
    word, against 0.1 ms without), and the plain GIN index reads everyone's matches."""
    return (
        select(
            chat_search.c.session_id,
            chat_search.c.seq,
            chat_search.c.user_id,
            chat_search.c.document,
        )
        .where(*conditions)
        .offset(0)
        .subquery(name)
    )


def _matching_entries(dialect: str, *, for_user: bool, in_sessions: bool) -> Select[Any]:
    """Search entries matching every word (`search_terms`), with a relevance score (higher is
    better), of the user `search_user` if `for_user`; if `in_sessions`, only the messages of
    the sessions `search_sessions`."""
    if dialect == "postgresql":
        tsquery = func.to_tsquery(literal_column("'simple'::regconfig"), _TERMS)
        entries: Any = chat_search
        matches: list[ColumnElement[bool]] = []
        if in_sessions:
            # The entries of a page's sessions (the user's own already).
            entries = _read_first(
                "scoped",
                chat_search.c.session_id.in_(_SESSIONS),
                chat_search.c.seq != SEARCH_TITLE_SEQ,
            )
            matches.append(entries.c.document.op("@@")(tsquery))
        elif for_user:
            # The owner's words (migration 0005): the index yields only this user's matches.
            owned_words = func.chat_search_owned_words(
                chat_search.c.user_id, chat_search.c.document
            )
            entries = _read_first("owned", owned_words.op("@@")(cast(_OWNED_TERMS, TSQUERY)))
        else:
            matches.append(entries.c.document.op("@@")(tsquery))
        if for_user:
            # Outside the subquery; inside, it would bring in idx_chat_search_user. And the
            # owner key is a hash: two users may share one.
            matches.append(entries.c.user_id == _USER)
        # Ranked on the plain words, which carry the positions and the title's weight.
        return select(
            entries.c.session_id,
            entries.c.seq,
            func.ts_rank(entries.c.document, tsquery).label("score"),
        ).where(*matches)
    # bm25() is lower for better matches; a title match counts ten times a message's, as
    # weight A does against D on PostgreSQL.
    weight = case((chat_search.c.seq == SEARCH_TITLE_SEQ, 10.0), else_=1.0)
    stmt = (
        select(
            chat_search.c.session_id,
            chat_search.c.seq,
            (-func.bm25(literal_column(fulltext.FTS_TABLE)) * weight).label("score"),
        )
        .select_from(_fts.join(chat_search, chat_search.c.id == _fts.c.rowid))
        .where(literal_column(fulltext.FTS_TABLE).op("MATCH")(_TERMS))
        # Keeps SQLite from flattening this into an outer query: bm25() works only in the
        # query that runs the MATCH.
        .offset(0)
    )
    if in_sessions:
        stmt = stmt.where(
            chat_search.c.session_id.in_(_SESSIONS), chat_search.c.seq != SEARCH_TITLE_SEQ
        )
    if for_user:
        # Unary plus keeps SQLite from driving the join from idx_chat_search_user: it would
        # then rerun the whole MATCH once per entry of the user (seconds at 260k entries).
        # The MATCH already narrows to the user's entries (fts5_match).
        owner: ColumnElement[Any] = literal_column(
            f"+{chat_search.name}.{chat_search.c.user_id.name}"
        )
        stmt = stmt.where(owner == _USER)
    return stmt


@functools.cache
def _matching_sessions(dialect: str, *, for_user: bool) -> Select[Any]:
    """The sessions with a matching entry, best first; `search_user`'s if `for_user`, active
    or archived as `search_active` says."""
    entries = _matching_entries(dialect, for_user=for_user, in_sessions=False).subquery("entries")
    ranked = (
        select(
            entries.c.session_id,
            # Title matches first, whatever the scores: a weight only scales a score, and a
            # prefix that many different words of a message start with (search as you type:
            # "p") adds up past any title's score on PostgreSQL (ts_rank sums them).
            func.max(case((entries.c.seq == SEARCH_TITLE_SEQ, 1), else_=0)).label("in_title"),
            func.max(entries.c.score).label("rank"),
        )
        .group_by(entries.c.session_id)
        .subquery("ranked")
    )
    stmt = (
        select(*SUMMARY_COLUMNS)
        .join_from(chat_sessions, ranked, ranked.c.session_id == chat_sessions.c.session_id)
        .where(chat_sessions.c.active == _ACTIVE)
        .order_by(
            ranked.c.in_title.desc(),
            ranked.c.rank.desc(),
            *(column.desc() for column in LIST_ORDER[1:]),
        )
    )
    if for_user:
        stmt = stmt.where(chat_sessions.c.user_id == _USER)
    return stmt


@functools.cache
def _search_page(dialect: str, *, for_user: bool) -> Select[Any]:
    return _matching_sessions(dialect, for_user=for_user).limit(_LIMIT).offset(_OFFSET)


@functools.cache
def _search_count(dialect: str, *, for_user: bool) -> Select[Any]:
    matching = _matching_sessions(dialect, for_user=for_user)
    return select(func.count()).select_from(matching.order_by(None).subquery())


async def search_session_summaries(
    conn: AsyncConnection, search: SearchQuery, *, limit: int, offset: int = 0
) -> list[dict[str, Any]]:
    """Sessions whose title or messages contain every word (as prefixes), best match first,
    then newest activity first."""
    dialect = conn.dialect.name
    stmt = _search_page(dialect, for_user=search.for_user)
    parameters = search.parameters(dialect) | {"search_limit": limit, "search_offset": offset}
    return _as_dicts(await conn.execute(stmt, parameters))


async def count_search_results(conn: AsyncConnection, search: SearchQuery) -> int:
    dialect = conn.dialect.name
    stmt = _search_count(dialect, for_user=search.for_user)
    return int((await conn.execute(stmt, search.parameters(dialect))).scalar_one())


@functools.cache
def _best_messages(dialect: str, *, for_user: bool) -> Select[Any]:
    entries = _matching_entries(dialect, for_user=for_user, in_sessions=True).subquery("entries")
    best = select(
        entries.c.session_id,
        entries.c.seq,
        func.row_number()
        .over(
            partition_by=entries.c.session_id,
            order_by=(entries.c.score.desc(), entries.c.seq.desc()),
        )
        .label("place"),
    ).subquery("best")
    return (
        select(chat_messages.c.session_id, chat_messages.c.content)
        .join(
            best,
            and_(
                best.c.session_id == chat_messages.c.session_id,
                best.c.seq == chat_messages.c.seq,
            ),
        )
        .where(best.c.place == 1)
    )


async def best_matching_messages(
    conn: AsyncConnection, search: SearchQuery, session_ids: list[str]
) -> dict[str, str]:
    """For each of `session_ids`, the text of its message that matches best (the newest of
    equals); sessions that match only by title are left out."""
    if not session_ids:
        return {}
    dialect = conn.dialect.name
    stmt = _best_messages(dialect, for_user=search.for_user)
    parameters = search.parameters(dialect) | {"search_sessions": session_ids}
    return {row.session_id: row.content for row in await conn.execute(stmt, parameters)}
