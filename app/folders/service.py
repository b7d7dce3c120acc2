"""Folder use cases: the caller's folders as a tree, creating, renaming, moving and deleting
one. Each use case is one transaction; the SQL helpers below it take its connection.

A folder belongs to one owner: the user a request acts for, or `NO_OWNER` for the sessions
without a user (open mode). Sessions go only into their owner's folders.
"""

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError

from app.auth.access import Caller
from app.folders import queries
from app.folders.schemas import (
    MAX_FOLDER_DEPTH,
    Folder,
    FolderCreate,
    FoldersList,
    FolderUpdate,
)
from app.kit.db.engine import Database
from app.kit.db.tables import NO_OWNER
from app.kit.db.types import utc_now
from app.kit.errors import FolderConflict, FolderNotFound
from app.tags import queries as tag_queries
from app.tags.schemas import name_key

Clock = Callable[[], datetime]

NAME_TAKEN = (
    "A folder of that name is already there (names are unique among siblings, ignoring case)"
)
TOO_DEEP = f"Folders nest at most {MAX_FOLDER_DEPTH} deep"
INTO_ITSELF = "A folder cannot be moved into itself or one of its subfolders"


def owner_of(caller: Caller, user_id: str | None) -> str:
    """Whose folders a request creates: the user it acts for, or nobody's (open mode)."""
    return caller.acting_for(user_id) or NO_OWNER


class _Tree:
    """One owner's folders, read (and locked) at the start of a change."""

    def __init__(self, folders: list[dict[str, Any]]) -> None:
        self.by_id = {folder["id"]: folder for folder in folders}
        self.children: dict[uuid.UUID | None, list[dict[str, Any]]] = {}
        for folder in folders:
            self.children.setdefault(folder["parent_id"], []).append(folder)

    def depth(self, folder_id: uuid.UUID | None) -> int:
        """1 for a top-level folder; 0 for the top itself."""
        depth = 0
        while folder_id is not None:
            depth += 1
            folder_id = self.by_id[folder_id]["parent_id"]
        return depth

    def height(self, folder_id: uuid.UUID) -> int:
        """1 for a folder without subfolders."""
        below = [self.height(child["id"]) for child in self.children.get(folder_id, [])]
        return 1 + max(below, default=0)

    def within(self, folder_id: uuid.UUID, ancestor: uuid.UUID) -> bool:
        """`folder_id` is `ancestor` or one of its subfolders, at any depth."""
        current: uuid.UUID | None = folder_id
        while current is not None:
            if current == ancestor:
                return True
            current = self.by_id[current]["parent_id"]
        return False

    def name_taken(
        self, parent_id: uuid.UUID | None, name: str, *, besides: uuid.UUID | None = None
    ) -> bool:
        key = name_key(name)
        return any(
            sibling["name_key"] == key and sibling["id"] != besides
            for sibling in self.children.get(parent_id, [])
        )


async def _locked_tree(conn: Any, owner: str) -> _Tree:
    """The owner's folders, read once their locks are held. The locking read waits for the
    owner's other changes but (on PostgreSQL) does not return the folders they created:
    without the second read, a subfolder made meanwhile was missed by the checks (a folder
    one level too deep, a subfolder's name clash on deletion: a 500)."""
    await queries.folders_of(conn, owner=owner, lock=True)
    return _Tree(await queries.folders_of(conn, owner=owner))


def _node(
    folder: dict[str, Any],
    children: dict[uuid.UUID | None, list[dict[str, Any]]],
    counts: dict[uuid.UUID, int],
) -> dict[str, Any]:
    return {
        "folder_id": folder["id"],
        "name": folder["name"],
        "parent_id": folder["parent_id"],
        "created_at": folder["created_at"],
        "session_count": counts.get(folder["id"], 0),
        "children": [_node(child, children, counts) for child in children.get(folder["id"], [])],
    }


async def list_folders(db: Database, caller: Caller, *, user_id: str | None) -> FoldersList:
    """The folders of the user the request acts for (trusted callers naming nobody:
    everyone's), as a tree, siblings by name."""
    owner = caller.acting_for(user_id)
    async with db.read() as conn:
        folders = await queries.folders_of(conn, owner=owner)
        counts = await queries.session_counts(conn, owner=owner)
    children: dict[uuid.UUID | None, list[dict[str, Any]]] = {}
    for folder in folders:
        children.setdefault(folder["parent_id"], []).append(folder)
    tops = children.get(None, [])
    return FoldersList.model_validate({"folders": [_node(top, children, counts) for top in tops]})


async def _summary(conn: Any, folder_id: uuid.UUID) -> Folder:
    """A folder as answered after a change: with its subfolders and count."""
    folder = await queries.find_folder(conn, folder_id, owner=None)
    assert folder is not None
    folders = await queries.folders_of(conn, owner=folder["user_id"])
    counts = await queries.session_counts(conn, owner=folder["user_id"])
    children: dict[uuid.UUID | None, list[dict[str, Any]]] = {}
    for row in folders:
        children.setdefault(row["parent_id"], []).append(row)
    [row] = [row for row in folders if row["id"] == folder_id]
    return Folder.model_validate(_node(row, children, counts))


async def create_folder(
    db: Database,
    caller: Caller,
    body: FolderCreate,
    *,
    user_id: str | None,
    clock: Clock = utc_now,
) -> Folder:
    """A new folder at the top or in one of the owner's folders."""
    owner = owner_of(caller, user_id)
    folder_id = uuid.uuid4()
    try:
        async with db.write() as conn:
            tree = await _locked_tree(conn, owner)
            if body.parent_id is not None and body.parent_id not in tree.by_id:
                raise FolderNotFound("Parent folder not found")
            if tree.name_taken(body.parent_id, body.name):
                raise FolderConflict(NAME_TAKEN)
            if tree.depth(body.parent_id) + 1 > MAX_FOLDER_DEPTH:
                raise FolderConflict(TOO_DEEP)
            await queries.insert_folder(
                conn,
                folder_id=folder_id,
                owner=owner,
                parent_id=body.parent_id,
                name=body.name,
                now=clock(),
            )
            return await _summary(conn, folder_id)
    except IntegrityError:
        # A folder of that name made meanwhile (the unique key of chat_folders).
        raise FolderConflict(NAME_TAKEN) from None


async def update_folder(
    db: Database, caller: Caller, folder_id: uuid.UUID, changes: FolderUpdate
) -> Folder:
    """Rename a folder, or move it (with its subfolders and sessions) into another of the
    owner's folders or to the top (`parent_id` null)."""
    move = "parent_id" in changes.model_fields_set
    try:
        async with db.write() as conn:
            found = await queries.find_folder(conn, folder_id, owner=caller.owner_filter)
            if found is None:
                raise FolderNotFound()
            tree = await _locked_tree(conn, found["user_id"])
            folder = tree.by_id.get(folder_id)
            if folder is None:  # deleted meanwhile
                raise FolderNotFound()
            parent_id = changes.parent_id if move else folder["parent_id"]
            name = changes.name if changes.name is not None else folder["name"]
            if move and parent_id is not None:
                if parent_id not in tree.by_id:
                    raise FolderNotFound("Parent folder not found")
                if tree.within(parent_id, folder_id):
                    raise FolderConflict(INTO_ITSELF)
                if tree.depth(parent_id) + tree.height(folder_id) > MAX_FOLDER_DEPTH:
                    raise FolderConflict(TOO_DEEP)
            if tree.name_taken(parent_id, name, besides=folder_id):
                raise FolderConflict(NAME_TAKEN)
            await queries.update_folder(
                conn, folder_id, name=changes.name, move=move, parent_id=parent_id
            )
            return await _summary(conn, folder_id)
    except IntegrityError:
        raise FolderConflict(NAME_TAKEN) from None


async def delete_folder(
    db: Database, caller: Caller, folder_id: uuid.UUID, *, delete_sessions: bool
) -> None:
    """Delete a folder. Its subfolders move to its parent (the top, for a top-level folder)
    with everything in them; its own sessions move there too, or with `delete_sessions` are
    deleted (only the folder's own: its subfolders' sessions move up with their folders)."""
    async with db.write() as conn:
        found = await queries.find_folder(conn, folder_id, owner=caller.owner_filter)
        if found is None:
            raise FolderNotFound()
        owner = found["user_id"]
        tree = await _locked_tree(conn, owner)
        folder = tree.by_id.get(folder_id)
        if folder is None:
            raise FolderNotFound()
        parent_id = folder["parent_id"]
        for child in tree.children.get(folder_id, []):
            if tree.name_taken(parent_id, child["name"], besides=folder_id):
                raise FolderConflict(
                    f"The subfolder {child['name']!r} cannot move up: its parent has a folder "
                    "of that name; rename or move one of them first"
                )
        await queries.delete_folder(
            conn,
            folder_id,
            parent_id=parent_id,
            sessions="delete" if delete_sessions else "move",
        )
        if delete_sessions:
            await tag_queries.lock_owner_tags(conn, owner)
            await tag_queries.delete_unused_tags(conn, owner)
