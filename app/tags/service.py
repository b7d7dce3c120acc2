"""Tag use cases: the caller's tags with their counts, renaming (merging) and deleting one.
Setting a session's tags is part of changing the session (app/sessions/service.py).

Each use case is one transaction; the SQL helpers below it take its connection.
"""

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from app.auth.access import Caller
from app.kit.db.engine import Database
from app.kit.db.types import utc_now
from app.kit.errors import TagNotFound
from app.tags import queries
from app.tags.schemas import TagsList, TagSummary, name_key


def distinct_names(names: list[str]) -> list[str]:
    """The names without repeats (ignoring case), each at its first place."""
    seen: set[str] = set()
    kept = []
    for name in names:
        key = name_key(name)
        if key not in seen:
            seen.add(key)
            kept.append(name)
    return kept


async def set_session_tags(
    conn: AsyncConnection, session_id: str, owner: str, names: list[str]
) -> None:
    """The session carries these tags (in this order) and no others; a name the owner already
    has in another spelling is that tag, spelled as it is."""
    await _lock_tags(conn, owner)
    tag_ids = await queries.ensure_tags(conn, owner, distinct_names(names), now=utc_now())
    await queries.replace_session_tags(conn, session_id, owner, tag_ids)


async def _lock_tags(conn: AsyncConnection, owner: str) -> None:
    """Lock the owner's tags, and delete those no session carries. A tag exists while a
    session carries it, as the listing shows: one whose last session was deleted (the
    deletion takes only the link) is not found by a rename or a deletion (404), not merged
    into by a rename, and not brought back, in its old spelling, by tagging with its name."""
    await queries.lock_owner_tags(conn, owner)
    await queries.delete_unused_tags(conn, owner)


async def _locked_tag(conn: AsyncConnection, caller: Caller, tag_id: uuid.UUID) -> dict[str, Any]:
    """The caller's tag, read again once the owner's tags are locked (`_lock_tags`): another
    change may have merged or deleted it meanwhile. `TagNotFound` if there is none."""
    tag = await queries.find_tag(conn, tag_id, owner=caller.owner_filter)
    if tag is not None:
        await _lock_tags(conn, tag["user_id"])
        tag = await queries.find_tag(conn, tag_id, owner=caller.owner_filter)
    if tag is None:
        raise TagNotFound()
    return tag


async def list_tags(db: Database, caller: Caller, *, user_id: str | None) -> TagsList:
    """The tags of the user the request acts for (trusted callers naming nobody: everyone's)
    that some session carries, with how many."""
    owner = caller.acting_for(user_id)
    async with db.read() as conn:
        tags = await queries.list_tags(conn, owner=owner)
    return TagsList.model_validate({"tags": tags})


async def rename_tag(db: Database, caller: Caller, tag_id: uuid.UUID, name: str) -> TagSummary:
    """Rename a tag on every session; onto another of the owner's tags' names (ignoring case)
    the two become one, under that tag's id."""
    async with db.write() as conn:
        tag = await _locked_tag(conn, caller, tag_id)
        kept = await queries.rename_tag(conn, tag, name)
        summary = await queries.tag_summary(conn, kept)
    assert summary is not None  # some session carried the tag, and carries the one kept
    return TagSummary.model_validate(summary)


async def delete_tag(db: Database, caller: Caller, tag_id: uuid.UUID) -> None:
    """Remove a tag from every session."""
    async with db.write() as conn:
        await _locked_tag(conn, caller, tag_id)
        await queries.delete_tag(conn, tag_id)
