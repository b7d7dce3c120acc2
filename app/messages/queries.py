"""The SQL of a session's messages: appending one (and its session's metadata), and reading
them. Each helper takes the connection of a transaction it does not own."""

import functools
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import (
    Integer,
    String,
    Text,
    Uuid,
    and_,
    bindparam,
    case,
    func,
    insert,
    literal,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import CompoundSelect, Insert, Select, Update

from app.domain import Role
from app.feedback.queries import add_feedback
from app.kit.db.rows import as_dicts
from app.kit.db.tables import NO_OWNER, SEARCH_TITLE_SEQ, chat_messages, chat_sessions
from app.kit.db.types import JSONDocument, UTCDateTime
from app.search import index as search_index
from app.sessions.queries import owned, session_is

MESSAGE_COLUMNS = (
    chat_messages.c.id,
    chat_messages.c.seq,
    chat_messages.c.role,
    chat_messages.c.content,
    chat_messages.c.metadata,
    chat_messages.c.created_at,
    chat_messages.c.parent_id,
)


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: uuid.UUID
    seq: int
    created_at: datetime
    parent_id: uuid.UUID | None = None
    ordinal: int = 0
    # Whether it is the current branch's last message now.
    ends_branch: bool = True
    # Its `user_id`: the session's owner, or NO_OWNER.
    owner: str = NO_OWNER


_INSERTED = ("id", "session_id", "parent_id", "seq", "ordinal", "role", "content", "metadata")
_INSERTED_TOO = ("created_at", "branch_preview", "user_id")


_Source = Literal["first", "leaf", "parent"]

# Named apart from the columns: an INSERT or UPDATE reads execute-time keys that name its
# table's columns as values to write.
_APPEND_ID = bindparam("append_id", type_=Uuid())
_APPEND_SESSION_ID = bindparam("append_session_id", type_=Text())
_APPEND_OWNER = bindparam("append_owner", type_=Text())
_APPEND_PARENT_ID = bindparam("append_parent_id", type_=Uuid())
_APPEND_NOW = bindparam("append_now", type_=UTCDateTime())
_APPEND_PREVIEW = bindparam("append_preview", type_=Text())


@functools.cache
def _append_insert(mode: _Source, *, owned: bool) -> Insert:
    """`append_message`'s INSERT ... SELECT from the locked session row, built once per shape
    (building and compiling it per message was most of an import's time, docs/performance.md)."""
    sessions = chat_sessions
    # The session's owner, read from the locked row like the rest (docs/scaling.md).
    owned_by = func.coalesce(sessions.c.user_id, NO_OWNER)
    fixed = (
        bindparam("append_role", type_=Text()),
        bindparam("append_content", type_=Text()),
        bindparam("append_metadata", type_=JSONDocument),
        # Never move backwards, whatever order concurrent writers' clocks were read in.
        case((sessions.c.updated_at > _APPEND_NOW, sessions.c.updated_at), else_=_APPEND_NOW),
    )
    where = session_is(_APPEND_SESSION_ID, _APPEND_OWNER if owned else None)
    source: Select[Any]
    if mode == "first":
        source = select(
            _APPEND_ID,
            sessions.c.session_id,
            literal(None, type_=Uuid()),
            literal(1, type_=Integer()),
            sessions.c.node_count + 1,
            *fixed,
            _APPEND_PREVIEW,
            owned_by,
        ).where(where)
    elif mode == "leaf":
        source = select(
            _APPEND_ID,
            sessions.c.session_id,
            sessions.c.current_leaf_id,
            sessions.c.message_count + 1,
            sessions.c.node_count + 1,
            *fixed,
            func.coalesce(_APPEND_PREVIEW, sessions.c.last_message),
            owned_by,
        ).where(where)
    else:
        parent = chat_messages.alias("parent")
        source = (
            select(
                _APPEND_ID,
                sessions.c.session_id,
                parent.c.id,
                parent.c.seq + 1,
                sessions.c.node_count + 1,
                *fixed,
                func.coalesce(_APPEND_PREVIEW, parent.c.branch_preview),
                owned_by,
            )
            .join_from(
                sessions,
                parent,
                and_(
                    parent.c.session_id == sessions.c.session_id,
                    parent.c.id == _APPEND_PARENT_ID,
                ),
            )
            .where(where)
        )
    return (
        insert(chat_messages)
        .from_select([*_INSERTED, *_INSERTED_TOO], source.with_for_update(of=chat_sessions))
        .returning(
            chat_messages.c.seq,
            chat_messages.c.ordinal,
            chat_messages.c.parent_id,
            chat_messages.c.created_at,
            chat_messages.c.branch_preview,
            chat_messages.c.user_id,
        )
    )


@functools.cache
def _append_update(*, extends: bool, after_none: bool, titled: bool) -> Update:
    """`append_message`'s UPDATE of the session, built once per shape. Unless `extends`, the
    branch's end moves only if the parent (`after_none`: none) is the current branch's end:
    `current_leaf_id` here is the value before this UPDATE (every SET reads the old row)."""
    sessions = chat_sessions
    values: dict[str, Any] = {
        "node_count": bindparam("append_ordinal", type_=sessions.c.node_count.type),
        "updated_at": bindparam("append_created_at", type_=sessions.c.updated_at.type),
    }
    ends_branch: dict[str, Any] = {
        "current_leaf_id": bindparam("append_leaf", type_=sessions.c.current_leaf_id.type),
        "message_count": bindparam("append_count", type_=sessions.c.message_count.type),
        "last_message": bindparam("append_last", type_=sessions.c.last_message.type),
    }
    if extends:
        values |= ends_branch
    else:
        continues = (
            sessions.c.current_leaf_id.is_(None)
            if after_none
            else sessions.c.current_leaf_id == _APPEND_PARENT_ID
        )
        values |= {
            name: case((continues, value), else_=sessions.c[name])
            for name, value in ends_branch.items()
        }
    if titled:
        values["title"] = func.coalesce(sessions.c.title, bindparam("append_title", type_=String()))
    return (
        update(sessions)
        .where(sessions.c.session_id == _APPEND_SESSION_ID)
        .values(values)
        .returning(sessions.c.user_id, sessions.c.title, sessions.c.current_leaf_id)
    )


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
    parent_id: uuid.UUID | None = None,
    first: bool = False,
    make_current: bool = False,
    indexed: bool = True,
) -> StoredMessage | None:
    """Store a message and update its session's metadata incrementally; None if no session
    (or no message `parent_id` in it). Without `indexed`, its search entries (the message's,
    and the title's if it set the title) are left to the caller.

    Without `parent_id` the message follows the current branch's last message; with it, it
    is that message's child; with `first`, a new first message of the session. One under a
    given parent (or `first`) becomes the current branch's end if `make_current`, or if its
    parent was the end (a reply to a question after which another message was sent meanwhile
    stays beside it); a message made current this way does not update the choices remembered
    at forks (`remember_branch`).

    Two statements, as many as a straight list needed: the INSERT reads the session row,
    locked (FOR UPDATE on PostgreSQL; SQLite's write transactions hold the database lock from
    their start), for the parent, seq (parent's + 1), ordinal (node_count + 1) and preview;
    then the UPDATE moves the session's end. Concurrent writers to one session queue on the
    lock, so counts stay exact and ordinals gap-free. No COUNT, no re-reading of the branch.
    `title` is kept only if the session has none yet; `preview` None (no text) takes the
    preview of the branch so far. With `owner`, a session of anyone else counts as missing.

    The message's time is `now` or the session's `updated_at`, whichever is later, decided
    under the row lock: `now` was read before the lock, and a writer that read its clock
    first may get the lock last. So `created_at` never goes backwards along a branch (nor
    along ordinals), and the session's `updated_at` is its newest message's `created_at`.
    """
    message_id = uuid.uuid4()
    mode: _Source = "first" if first else "leaf" if parent_id is None else "parent"
    parameters = {
        "append_id": message_id,
        "append_session_id": session_id,
        "append_owner": owner,
        "append_parent_id": parent_id,
        "append_role": role,
        "append_content": content,
        "append_metadata": metadata,
        "append_now": now,
        "append_preview": preview,
    }
    message = (
        await conn.execute(_append_insert(mode, owned=owner is not None), parameters)
    ).one_or_none()
    if message is None:
        return None
    created_at: datetime = message.created_at
    extends = (parent_id is None and not first) or make_current
    session = (
        await conn.execute(
            _append_update(extends=extends, after_none=parent_id is None, titled=title is not None),
            {
                "append_session_id": session_id,
                "append_ordinal": message.ordinal,
                "append_created_at": created_at,
                "append_leaf": message_id,
                "append_count": message.seq,
                "append_last": message.branch_preview,
                "append_parent_id": parent_id,
                "append_title": title,
            },
        )
    ).one()
    if indexed:
        # This message set the automatic title, unless the title already read the same (then
        # its entry exists, and the insert is a no-op).
        if title is not None and session.title == title:
            await search_index.index_text(
                conn, session_id, session.user_id, SEARCH_TITLE_SEQ, title, if_absent=True
            )
        await search_index.index_text(conn, session_id, session.user_id, message.ordinal, content)
    return StoredMessage(
        id=message_id,
        seq=message.seq,
        created_at=created_at,
        parent_id=message.parent_id,
        ordinal=message.ordinal,
        ends_branch=session.current_leaf_id == message_id,
        owner=message.user_id,
    )


@functools.cache
def _on_current_branch() -> Select[Any]:
    """Whether the message `branch_start`, of seq `branch_high - branch_limit + 1`, is on the
    session's current branch: a walk up from its end that stops at that seq."""
    branch = _branch(from_current_leaf=True).subquery("on_branch")
    return select(branch.c.id).where(branch.c.id == _BRANCH_START)


async def move_to_branch_end(
    conn: AsyncConnection, *, session_id: str, message: StoredMessage, after_seq: int
) -> StoredMessage:
    """Move `message`, a leaf just stored as a child of a message of seq `after_seq` that no
    longer ends the current branch, to the end of that branch if its parent is still on it
    (messages were added after the parent meanwhile), as the next message; otherwise leave
    it beside the branch. Called in the transaction that stored it, under its lock."""
    parameters = {
        "session_id": session_id,
        "branch_start": message.parent_id,
        "branch_high": _MAX_SEQ,
        "branch_limit": _MAX_SEQ - after_seq + 1,
    }
    if (await conn.execute(_on_current_branch(), parameters)).first() is None:
        return message
    leaf = (
        await conn.execute(
            select(chat_messages.c.id, chat_messages.c.seq, chat_messages.c.branch_preview)
            .join(chat_sessions, chat_sessions.c.current_leaf_id == chat_messages.c.id)
            .where(chat_sessions.c.session_id == session_id)
        )
    ).one()
    await conn.execute(
        update(chat_messages)
        .where(chat_messages.c.id == message.id)
        .values(parent_id=leaf.id, seq=leaf.seq + 1, branch_preview=leaf.branch_preview)
    )
    await conn.execute(
        update(chat_sessions)
        .where(chat_sessions.c.session_id == session_id)
        .values(current_leaf_id=message.id, message_count=leaf.seq + 1)
    )
    return StoredMessage(
        id=message.id,
        seq=leaf.seq + 1,
        created_at=message.created_at,
        parent_id=leaf.id,
        ordinal=message.ordinal,
        owner=message.owner,
    )


_SESSION_ID = bindparam("session_id", type_=Text())


_BRANCH_START = bindparam("branch_start", type_=Uuid())
_MAX_SEQ = 2_147_483_647  # 32-bit integers
_BRANCH_HIGH = bindparam("branch_high", type_=Integer())
_BRANCH_LIMIT = bindparam("branch_limit", type_=Integer())


@functools.cache
def _branch(*, from_current_leaf: bool) -> Select[Any]:
    """The `branch_limit` messages of a branch up to seq `branch_high`, oldest first: walked up
    from the session's current leaf or from the message `branch_start`, by primary key, one
    message per step, stopping at the lowest seq wanted (a page costs its own size plus the
    messages below it, never the session's other branches)."""
    if from_current_leaf:
        start: Any = (
            select(chat_sessions.c.current_leaf_id)
            .where(chat_sessions.c.session_id == _SESSION_ID)
            .scalar_subquery()
        )
    else:
        start = _BRANCH_START
    branch = (
        select(*MESSAGE_COLUMNS).where(chat_messages.c.id == start).cte("branch", recursive=True)
    )
    parent = chat_messages.alias("parent")
    branch = branch.union_all(
        select(*(parent.c[column.name] for column in MESSAGE_COLUMNS))
        .join(branch, parent.c.id == branch.c.parent_id)
        .where(branch.c.seq > _BRANCH_HIGH - _BRANCH_LIMIT + 1)
    )
    return select(branch).where(branch.c.seq <= _BRANCH_HIGH).order_by(branch.c.seq)


_SIBLING_PARENTS = bindparam("sibling_parents", expanding=True, type_=Uuid())


@functools.cache
def _siblings() -> CompoundSelect[Any]:
    """The children of `sibling_parents`, and the first messages (parent null) always: a
    handful of rows, one statement shape. A UNION rather than an OR, and unordered (sorted
    by the caller), so that each half is a range of the (session_id, parent_id) index on both
    databases: SQLite scanned the whole session for the OR, or walked its ordinal index for an
    ORDER BY (1.2 of the 2.7 ms an open of a 5,000-message session took)."""
    columns = (chat_messages.c.id, chat_messages.c.parent_id, chat_messages.c.ordinal)
    in_session = chat_messages.c.session_id == _SESSION_ID
    children = select(*columns).where(in_session, chat_messages.c.parent_id.in_(_SIBLING_PARENTS))
    firsts = select(*columns).where(in_session, chat_messages.c.parent_id.is_(None))
    return union_all(children, firsts)


async def add_sibling_ids(
    conn: AsyncConnection, session_id: str, messages: list[dict[str, Any]]
) -> None:
    """Set each message's `sibling_ids`: the messages with its parent (for a first message,
    the session's first messages), itself included, oldest first; one query for them all."""
    if not messages:
        return
    parents = list({m["parent_id"] for m in messages if m["parent_id"] is not None})
    rows = await conn.execute(_siblings(), {"session_id": session_id, "sibling_parents": parents})
    children: dict[uuid.UUID | None, list[uuid.UUID]] = {}
    for row in sorted(rows, key=lambda row: row.ordinal):
        children.setdefault(row.parent_id, []).append(row.id)
    for message in messages:
        message["sibling_ids"] = children.get(message["parent_id"], [message["id"]])


async def list_messages(
    conn: AsyncConnection,
    session_id: str,
    *,
    branch_length: int,
    before: int | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """The current branch's messages, oldest first, with their sibling ids: all of them, or
    the newest `limit` before the seq `before`. `branch_length` is the session's
    message_count, read in the same transaction."""
    high = branch_length if before is None else min(before - 1, branch_length)
    parameters = {
        "session_id": session_id,
        "branch_high": high,
        "branch_limit": high if limit is None else limit,
    }
    rows = as_dicts(await conn.execute(_branch(from_current_leaf=True), parameters))
    await add_sibling_ids(conn, session_id, rows)
    await add_feedback(conn, session_id, rows)
    return rows


async def list_ancestors(
    conn: AsyncConnection, *, message_id: uuid.UUID, seq: int, limit: int
) -> list[dict[str, Any]]:
    """The last `limit` messages of the branch ending at the message `message_id` of seq `seq`
    (included), oldest first: what the assistant sees, never a sibling branch."""
    parameters = {"branch_start": message_id, "branch_high": seq, "branch_limit": limit}
    return as_dicts(await conn.execute(_branch(from_current_leaf=False), parameters))


_AFTER_ORDINAL = bindparam("after_ordinal", type_=Integer())
_TREE_LIMIT = bindparam("tree_limit", type_=Integer())


@functools.cache
def _tree(*, paged: bool) -> Select[Any]:
    stmt = (
        select(*MESSAGE_COLUMNS, chat_messages.c.ordinal)
        .where(chat_messages.c.session_id == _SESSION_ID)
        .order_by(chat_messages.c.ordinal)
    )
    if paged:
        # The unique (session_id, ordinal) index: a page costs its own size at any depth.
        stmt = stmt.where(chat_messages.c.ordinal > _AFTER_ORDINAL).limit(_TREE_LIMIT)
    return stmt


async def list_tree(conn: AsyncConnection, session_id: str) -> list[dict[str, Any]]:
    """Every message of the session, in the order they were written, with sibling ids."""
    rows = as_dicts(await conn.execute(_tree(paged=False), {"session_id": session_id}))
    children: dict[uuid.UUID | None, list[uuid.UUID]] = {}
    for row in rows:
        children.setdefault(row["parent_id"], []).append(row["id"])
    for row in rows:
        row["sibling_ids"] = children[row["parent_id"]]
    await add_feedback(conn, session_id, rows)
    return rows


async def list_tree_page(
    conn: AsyncConnection, session_id: str, *, after_ordinal: int, limit: int
) -> list[dict[str, Any]]:
    """The first `limit` messages written after the one of ordinal `after_ordinal` (0: from the
    first), in the order they were written, with sibling ids, feedback and their `ordinal`."""
    parameters = {"session_id": session_id, "after_ordinal": after_ordinal, "tree_limit": limit}
    rows = as_dicts(await conn.execute(_tree(paged=True), parameters))
    await add_sibling_ids(conn, session_id, rows)
    await add_feedback(conn, session_id, rows)
    return rows


@dataclass(frozen=True, slots=True)
class MessageRef:
    id: uuid.UUID
    parent_id: uuid.UUID | None
    role: str
    seq: int
    created_at: datetime


async def find_message(
    conn: AsyncConnection, *, session_id: str, message_id: uuid.UUID, owner: str | None
) -> MessageRef | None:
    """A message of the session (of `owner`, when given); None if there is no such message."""
    row = (
        await conn.execute(
            select(
                chat_messages.c.id,
                chat_messages.c.parent_id,
                chat_messages.c.role,
                chat_messages.c.seq,
                chat_messages.c.created_at,
            )
            .join(chat_sessions, chat_sessions.c.session_id == chat_messages.c.session_id)
            .where(
                chat_messages.c.id == message_id,
                *owned(chat_messages, owner),
                session_is(session_id, owner),
            )
        )
    ).one_or_none()
    if row is None:
        return None
    return MessageRef(row.id, row.parent_id, row.role, row.seq, row.created_at)


def _newest_first(ordinal: Any) -> Any:
    """Order a fork's children newest first, read through the index (session_id, parent_id)
    and sorted (a fork has a handful of children). `ordinal + 0` rather than `ordinal`: SQLite
    (without ANALYZE statistics) otherwise walks the unique (session_id, ordinal) index
    backwards from the session's newest message to avoid the sort, testing each message's
    parent, so one child lookup cost the messages written after it, and `remember_branch` over
    a 5,000-message path took seconds. PostgreSQL plans both the same way."""
    return (ordinal + 0).desc()


@dataclass(frozen=True, slots=True)
class BranchEnd:
    id: uuid.UUID
    seq: int
    branch_preview: str | None


@functools.cache
def _branch_end_below() -> Select[Any]:
    """The last message of the branch that runs from `branch_start` downward by the choice
    remembered at each fork (none remembered: the newest child): one primary-key step per
    message below it."""
    down = (
        select(
            chat_messages.c.id,
            chat_messages.c.seq,
            chat_messages.c.branch_preview,
            chat_messages.c.chosen_child_id,
        )
        .where(chat_messages.c.id == _BRANCH_START)
        .cte("down", recursive=True)
    )
    newest = chat_messages.alias("newest")
    newest_child = (
        select(newest.c.id)
        .where(newest.c.session_id == _SESSION_ID, newest.c.parent_id == down.c.id)
        .order_by(_newest_first(newest.c.ordinal))
        .limit(1)
        .scalar_subquery()
    )
    child = chat_messages.alias("child")
    down = down.union_all(
        select(child.c.id, child.c.seq, child.c.branch_preview, child.c.chosen_child_id).join(
            down, child.c.id == func.coalesce(down.c.chosen_child_id, newest_child)
        )
    )
    return select(down.c.id, down.c.seq, down.c.branch_preview).order_by(down.c.seq.desc()).limit(1)


async def branch_end_below(
    conn: AsyncConnection, *, session_id: str, message_id: uuid.UUID
) -> BranchEnd:
    """Where the branch through `message_id` ends, following the remembered choices."""
    parameters = {"session_id": session_id, "branch_start": message_id}
    row = (await conn.execute(_branch_end_below(), parameters)).one()
    return BranchEnd(row.id, row.seq, row.branch_preview)


async def end_current_branch_at(conn: AsyncConnection, *, session_id: str, leaf: BranchEnd) -> None:
    """Make the branch ending at `leaf` the current one: the session's count and preview are
    the leaf's seq and branch preview (O(1), nothing counted). `updated_at` stays the time of
    the newest message written."""
    parameters = {
        "end_session_id": session_id,
        "end_leaf_id": leaf.id,
        "end_seq": leaf.seq,
        "end_preview": leaf.branch_preview,
    }
    await conn.execute(_end_current_branch(), parameters)


@functools.cache
def _end_current_branch() -> Update:
    # Parameters named apart from the columns, which an UPDATE would read as values to write.
    sessions = chat_sessions
    return (
        update(sessions)
        .where(sessions.c.session_id == bindparam("end_session_id", type_=Text()))
        .values(
            current_leaf_id=bindparam("end_leaf_id", type_=sessions.c.current_leaf_id.type),
            message_count=bindparam("end_seq", type_=sessions.c.message_count.type),
            last_message=bindparam("end_preview", type_=sessions.c.last_message.type),
        )
    )


@functools.cache
def _choices_to_change() -> Select[Any]:
    """Walking up from the message `branch_start` (by primary key, one step per ancestor):
    each fork on the way whose remembered choice (null: its newest child) is not the child on
    the path, with that child; and the first message of the path (fork null). One statement
    that returns a handful of rows, however deep the path: neither the path nor its forks'
    choices go to Python."""
    path = (
        select(chat_messages.c.id, chat_messages.c.parent_id)
        .where(chat_messages.c.id == _BRANCH_START)
        .cte("path", recursive=True)
    )
    parent = chat_messages.alias("parent")
    path = path.union_all(
        select(parent.c.id, parent.c.parent_id).join(path, parent.c.id == path.c.parent_id)
    )
    fork = chat_messages.alias("fork")
    child = chat_messages.alias("child")
    newest = (
        select(child.c.id)
        .where(child.c.session_id == fork.c.session_id, child.c.parent_id == fork.c.id)
        .order_by(_newest_first(child.c.ordinal))
        .limit(1)
        .scalar_subquery()
    )
    return (
        select(path.c.parent_id.label("fork"), path.c.id.label("wanted"))
        .select_from(path.outerjoin(fork, fork.c.id == path.c.parent_id))
        .where(
            or_(
                path.c.parent_id.is_(None),
                func.coalesce(fork.c.chosen_child_id, newest) != path.c.id,
            )
        )
    )


@functools.cache
def _root_choice() -> Select[Any]:
    newest = (
        select(chat_messages.c.id)
        .where(chat_messages.c.session_id == _SESSION_ID, chat_messages.c.parent_id.is_(None))
        .order_by(_newest_first(chat_messages.c.ordinal))
        .limit(1)
        .scalar_subquery()
    )
    return select(chat_sessions.c.chosen_root_id, newest.label("newest")).where(
        chat_sessions.c.session_id == _SESSION_ID
    )


async def remember_branch(conn: AsyncConnection, *, session_id: str, leaf_id: uuid.UUID) -> None:
    """Make the choice remembered at every fork above `leaf_id` (and among the first messages)
    the one that leads to it, writing only the forks where it was another. A fork without a
    remembered choice follows its newest child."""
    first: uuid.UUID | None = None
    for row in list(await conn.execute(_choices_to_change(), {"branch_start": leaf_id})):
        if row.fork is None:
            first = row.wanted
            continue
        await conn.execute(
            update(chat_messages)
            .where(chat_messages.c.id == row.fork)
            .values(chosen_child_id=row.wanted)
        )
    root = (await conn.execute(_root_choice(), {"session_id": session_id})).one()
    if (root.chosen_root_id or root.newest) != first:
        await conn.execute(
            update(chat_sessions)
            .where(chat_sessions.c.session_id == session_id)
            .values(chosen_root_id=first)
        )
