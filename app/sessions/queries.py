"""The SQL of sessions: creating one, the sidebar's list (cursor and page modes), reading,
organising and deleting. Each helper takes the connection of a transaction it does not own."""

import functools
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from sqlalchemy import (
    BindParameter,
    Boolean,
    ColumnElement,
    Integer,
    RowMapping,
    Table,
    Text,
    and_,
    bindparam,
    delete,
    false,
    func,
    select,
    true,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Select
from sqlalchemy.types import Uuid

from app.kit.db.rows import as_dicts
from app.kit.db.tables import chat_sessions
from app.kit.db.types import UTCDateTime
from app.kit.text import UNTITLED
from app.search import index as search_index
from app.tags.queries import has_tag, is_tagged

SUMMARY_COLUMNS = (
    chat_sessions.c.session_id,
    func.coalesce(chat_sessions.c.title, UNTITLED).label("title"),
    chat_sessions.c.title_source,
    func.coalesce(chat_sessions.c.last_message, "").label("last_message"),
    chat_sessions.c.message_count,
    chat_sessions.c.created_at,
    chat_sessions.c.updated_at,
    chat_sessions.c.pinned,
    (~chat_sessions.c.active).label("archived"),
    chat_sessions.c.folder_id,
    chat_sessions.c.id,
    is_tagged().label("tagged"),
)
# The sidebar's order, all descending; `id` makes it total, so pages neither overlap nor skip.
LIST_ORDER = (chat_sessions.c.pinned, chat_sessions.c.updated_at, chat_sessions.c.id)


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


def session_is(
    session_id: str | BindParameter[str], owner: str | BindParameter[str] | None
) -> ColumnElement[bool]:
    """The session with this id, if `owner` (when given) owns it."""
    condition = chat_sessions.c.session_id == session_id
    if owner is not None:
        condition = and_(condition, chat_sessions.c.user_id == owner)
    return condition


def owned(table: Table, owner: str | None) -> list[ColumnElement[bool]]:
    """`table`'s rows of `owner` (when given): for a table joined to the session of
    `session_is`, so that the statement names the user for each table it reads (what Citus
    routes to one node, docs/scaling.md)."""
    return [] if owner is None else [table.c.user_id == owner]


_SESSION_ID = bindparam("session_id", type_=Text())
_OWNER = bindparam("owner", type_=Text())


@functools.cache
def _session_summary(*, owned: bool) -> Select[Any]:
    return select(
        *SUMMARY_COLUMNS, chat_sessions.c.current_leaf_id.label("current_message_id")
    ).where(session_is(_SESSION_ID, _OWNER if owned else None))


async def get_session_summary(
    conn: AsyncConnection, session_id: str, *, owner: str | None = None
) -> RowMapping | None:
    stmt = _session_summary(owned=owner is not None)
    result = await conn.execute(stmt, {"session_id": session_id, "owner": owner})
    summary: RowMapping | None = result.mappings().one_or_none()
    return summary


async def lock_session(conn: AsyncConnection, session_id: str, *, owner: str | None) -> bool:
    """Take the session's row lock for the rest of the transaction (SQLite's write
    transactions hold the database's from their start); False if there is no such session
    (of `owner`, when given). Writers of one session's tree queue on it."""
    stmt = select(chat_sessions.c.session_id).where(session_is(session_id, owner))
    return (await conn.execute(stmt.with_for_update())).first() is not None


async def get_session_owner(conn: AsyncConnection, session_id: str) -> str | None:
    """The user the session belongs to (None: nobody's, or no such session)."""
    stmt = select(chat_sessions.c.user_id).where(session_is(_SESSION_ID, None))
    owner: str | None = (await conn.execute(stmt, {"session_id": session_id})).scalar()
    return owner


@dataclass(frozen=True, slots=True)
class ListPosition:
    """Where a page of the sidebar ends: the sort key of its last session, and the
    fingerprint of the listing's folder and tag filters (None without them)."""

    pinned: bool
    updated_at: datetime
    id: uuid.UUID
    filters: str | None = None


# `folder` of a SessionFilter for the sessions in no folder (`folder_id=none`).
NO_FOLDER: Final = "none"
FolderMode = Literal["any", "in", "none"]


@dataclass(frozen=True, slots=True)
class FilterShape:
    """What a listing's statement depends on (its values are parameters)."""

    for_user: bool
    folder: FolderMode = "any"
    tags: int = 0


@dataclass(frozen=True, slots=True)
class SessionFilter:
    """Which sessions a listing (or a search) shows: whose, archived or not, in which folder
    (None: any; NO_FOLDER: none), carrying which tags (all of them; case-folded names)."""

    user_id: str | None
    archived: bool
    folder: uuid.UUID | Literal["none"] | None = None
    tags: tuple[str, ...] = ()

    @property
    def for_user(self) -> bool:
        return self.user_id is not None

    @property
    def shape(self) -> FilterShape:
        folder: FolderMode = (
            "any" if self.folder is None else "none" if self.folder == NO_FOLDER else "in"
        )
        return FilterShape(for_user=self.for_user, folder=folder, tags=len(self.tags))

    @property
    def narrowed(self) -> bool:
        """Filtered by folder or tag."""
        return self.folder is not None or bool(self.tags)

    def filter_parameters(self) -> dict[str, Any]:
        """The values of the folder and tag conditions (`filter_clauses`)."""
        parameters: dict[str, Any] = {f"list_tag_{n}": key for n, key in enumerate(self.tags)}
        if self.tags and self.user_id is not None:
            parameters["list_tag_owner"] = self.user_id
        if isinstance(self.folder, uuid.UUID):
            parameters["list_folder"] = self.folder
        return parameters

    def parameters(self) -> dict[str, Any]:
        return {
            "list_user": self.user_id,
            "list_active": not self.archived,
            **self.filter_parameters(),
        }


_LIST_FOLDER = bindparam("list_folder", type_=Uuid())
_TAG_OWNER = bindparam("list_tag_owner", type_=Text())


def filter_clauses(shape: FilterShape) -> list[ColumnElement[bool]]:
    """The folder and tag conditions of a listing or search of this shape, on chat_sessions.
    A folder is a column of the user's folder index (idx_chat_sessions_user_folder_list: one
    folder's page, or the page of those in none, is one range of it); each tag is a semi-join
    (app/tags/queries.py)."""
    clauses: list[ColumnElement[bool]] = []
    if shape.folder == "in":
        clauses.append(chat_sessions.c.folder_id == _LIST_FOLDER)
    elif shape.folder == "none":
        clauses.append(chat_sessions.c.folder_id.is_(None))
    owner = _TAG_OWNER if shape.for_user else None
    for n in range(shape.tags):
        clauses.append(has_tag(bindparam(f"list_tag_{n}", type_=Text()), owner))
    return clauses


# The sidebar's reads, like the search's (app/search/queries.py), are built once per shape
# and take their values as parameters: built per request, constructing and hashing the
# statement cost more Python time than the database spent answering it (docs/performance.md).
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


def _sessions_where(shape: FilterShape) -> list[ColumnElement[bool]]:
    clauses = [chat_sessions.c.active == _LIST_ACTIVE]
    if shape.for_user:
        clauses.append(chat_sessions.c.user_id == _LIST_USER)
    return clauses + filter_clauses(shape)


@functools.cache
def _list_page(shape: FilterShape, *, start: ListStart) -> Select[Any]:
    order = [column.desc() for column in LIST_ORDER]
    if shape.folder == "none":
        # The same order (folder_id is NULL on every row), asked so that only the folder index
        # gives it: `folder_id IS NULL`, unlike `folder_id = ...`, does not make the column a
        # constant of the order for PostgreSQL, and without it the planner read the user's
        # index, filtering out the sessions in folders one by one (on a user whose sessions
        # are nearly all filed, nearly all of them).
        order.insert(0, chat_sessions.c.folder_id.asc())
    stmt = select(*SUMMARY_COLUMNS).where(*_sessions_where(shape)).order_by(*order)
    stmt = stmt.limit(_LIST_LIMIT)
    match start:
        case "after_pinned" | "after_unpinned":
            return stmt.where(_after(pinned=start == "after_pinned"))
        case "offset":
            return stmt.offset(_LIST_OFFSET)
        case "first":
            return stmt


@functools.cache
def _list_count(shape: FilterShape) -> Select[Any]:
    return select(func.count()).select_from(chat_sessions).where(*_sessions_where(shape))


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
        stmt = _list_page(where.shape, start=start)
        parameters |= {"after_updated_at": after.updated_at, "after_id": after.id}
    elif offset:
        stmt = _list_page(where.shape, start="offset")
        parameters["list_offset"] = offset
    else:
        stmt = _list_page(where.shape, start="first")
    return as_dicts(await conn.execute(stmt, parameters))


async def count_sessions(conn: AsyncConnection, *, where: SessionFilter) -> int:
    stmt = _list_count(where.shape)
    return int((await conn.execute(stmt, where.parameters())).scalar_one())


async def update_session(
    conn: AsyncConnection,
    session_id: str,
    *,
    owner: str | None,
    title: str | None,
    pinned: bool | None,
    archived: bool | None,
    folder: uuid.UUID | Literal["keep"] | None = "keep",
) -> bool:
    """Rename, pin, archive or file; True when the session exists (and is the owner's).

    Activity time is left alone: organising a session is not talking in it.
    """
    values: dict[str, Any] = {}
    if folder != "keep":
        values["folder_id"] = folder
    if title is not None:
        # Never null again, so the seed's title (set only while null) cannot replace it, and
        # the user's: a model's title is written only over the seed's (app/titles/queries.py).
        values["title"] = title
        values["title_source"] = "user"
    if pinned is not None:
        values["pinned"] = pinned
    if archived is not None:
        values["active"] = not archived
    stmt = (
        update(chat_sessions)
        .where(session_is(session_id, owner))
        .values(values)
        .returning(chat_sessions.c.user_id)
    )
    session = (await conn.execute(stmt)).one_or_none()
    if session is None:
        return False
    if title is not None:
        await search_index.replace_title(conn, session_id, session.user_id, title)
    return True


async def lock_session_owner(
    conn: AsyncConnection, session_id: str, *, owner: str | None
) -> tuple[str | None] | None:
    """Lock the session (of `owner`, when given) for the rest of the transaction; its owner,
    in a tuple, or None if there is no such session."""
    stmt = select(chat_sessions.c.user_id).where(session_is(session_id, owner))
    row = (await conn.execute(stmt.with_for_update())).first()
    return None if row is None else (row.user_id,)


async def delete_sessions_of(conn: AsyncConnection, user_id: str) -> int:
    """Delete every session of `user_id` (messages go by cascade); how many there were."""
    stmt = delete(chat_sessions).where(chat_sessions.c.user_id == user_id)
    return int((await conn.execute(stmt)).rowcount)


async def delete_session(
    conn: AsyncConnection, session_id: str, *, owner: str | None = None
) -> bool:
    """Delete the session (its messages go by cascade); True when it existed."""
    stmt = delete(chat_sessions).where(session_is(session_id, owner))
    return bool((await conn.execute(stmt)).rowcount)
