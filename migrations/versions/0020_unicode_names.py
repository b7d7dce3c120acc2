"""Names that look the same are one name; the feedback export in the order ratings were stored.

Tags and folders: a name's key (`name_key`, app/tags/schemas.py) was the name case-folded, so
`café` written as one code point and as `e` and a combining accent made two tags, or two
sibling folders, that look the same. The keys are computed again (canonically equivalent and
case-folded: `name_key`) and the names stored in NFC. Owners with a name not in NFC or a key
not in the new form have their tags (or folders) rewritten; where keys now collide:
- tags: merged into the oldest (by `created_at`, then id), which keeps its id and spelling
  (as its first spelling, in NFC); a session that carried both keeps it once, at that tag's
  position, as a rename onto another tag's name merges. Tags no session carries are deleted
  first: nothing lists or finds them (app/tags/service.py), and they would take part in merges;
- sibling folders: merged into the oldest, which keeps its id and spelling: the others'
  sessions and subfolders move into it, and subfolders whose names now collide there are
  merged the same way, at every depth. What a user sees as one folder becomes one, with
  everything that was in either; nothing is deleted but the emptied folders, and nothing goes
  deeper (a merge stays at its level).
Each owner's keys are first set to values of their own (`_PLACEHOLDER` and the row's id), so
that no step meets the unique keys half-way.

Feedback: `stored_at`, when this service last wrote the rating (set, changed or imported), and
the export's order (GET /api/v1/feedback, `since` and its cursor) instead of `updated_at`,
which for an imported rating is the time it was given elsewhere: an export resumed with
`since` skipped ratings imported after its previous run. `idx_chat_feedback_stored`
(stored_at, message_id) replaces idx_chat_feedback_updated. Existing rows get their
`updated_at`, except those of imported sessions (chat_import_sources), which get the
migration's time: when they were stored is not known, and an export resumed with `since` then
lists them once more rather than never (a cursor issued before keeps its place, see
app/feedback/cursor.py).

PostgreSQL: one transaction; the feedback UPDATE rewrites every rating (writes of ratings wait
for it). SQLite: chat_feedback is rebuilt for NOT NULL. `alembic upgrade --sql` (PostgreSQL)
cannot run Python's Unicode rules: it stores names and keys in NFC with SQL's `normalize()`
(which is the new key for every name but the very rare ones whose case folding is not
canonical), and leaves as they are the rows that would collide, unmerged: run the migration
online to merge them.

Downgrade drops `stored_at` and its index (idx_chat_feedback_updated back) and, online,
computes the keys the old way (case folding; names stay in NFC); merges are not undone.

Revision ID: 0020_unicode_names
Revises: 0019_search_owner_blocks
Create Date: 2026-12-08
"""

import unicodedata
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.engine import Connection

from app.kit.db.types import UTCDateTime
from app.tags.schemas import name_key

revision: str = "0020_unicode_names"
down_revision: str | None = "0019_search_owner_blocks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Rows read per query while looking for owners to rewrite.
_BATCH = 5_000
# Starts each row's own key (with its id) while its owner's names are rewritten, so that no
# step meets the unique keys half-way; a name never has it (labels drop control characters).
_PLACEHOLDER = "\x01"

_tags = sa.table(
    "chat_tags",
    sa.column("id", sa.Uuid()),
    sa.column("user_id", sa.Text()),
    sa.column("name", sa.Text()),
    sa.column("name_key", sa.Text()),
    sa.column("created_at", UTCDateTime()),
)
_links = sa.table(
    "chat_session_tags",
    sa.column("session_id", sa.Text()),
    sa.column("tag_id", sa.Uuid()),
)
_folders = sa.table(
    "chat_folders",
    sa.column("id", sa.Uuid()),
    sa.column("user_id", sa.Text()),
    sa.column("parent_id", sa.Uuid()),
    sa.column("parent_key", sa.Text()),
    sa.column("name", sa.Text()),
    sa.column("name_key", sa.Text()),
    sa.column("created_at", UTCDateTime()),
)
_sessions = sa.table(
    "chat_sessions", sa.column("session_id", sa.Text()), sa.column("folder_id", sa.Uuid())
)

# (name) -> the key to store.
Key = Callable[[str], str]


def _nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def _casefold(name: str) -> str:
    """The key before this revision."""
    return name.casefold()


def _parent_key(parent_id: uuid.UUID | None) -> str:
    """As app/folders/queries.py `parent_key`."""
    return parent_id.hex if parent_id is not None else ""


def _new_key(name: str, key: Key) -> str:
    """The key of a name once in NFC."""
    return key(_nfc(name))


def _oldest_first(row: dict[str, Any]) -> tuple[datetime, str]:
    return row["created_at"], str(row["id"])


def _owners_to_rewrite(connection: Connection, table: sa.TableClause, key: Key) -> list[str]:
    """The owners with a row of `table` whose name is not in NFC or whose key is not
    `key(name)`, reading the table by id in batches."""
    owners: set[str] = set()
    after: uuid.UUID | None = None
    columns = table.c
    while True:
        stmt = sa.select(columns.id, columns.user_id, columns.name, columns.name_key)
        if after is not None:
            stmt = stmt.where(columns.id > after)
        rows = connection.execute(stmt.order_by(columns.id).limit(_BATCH)).all()
        if not rows:
            return sorted(owners)
        after = rows[-1].id
        owners.update(
            row.user_id
            for row in rows
            if _nfc(row.name) != row.name or _new_key(row.name, key) != row.name_key
        )


def _rows_of(connection: Connection, table: sa.TableClause, owner: str) -> list[dict[str, Any]]:
    """The owner's rows, their keys set to placeholders of their own."""
    rows = [
        dict(row._mapping)
        for row in connection.execute(sa.select(table).where(table.c.user_id == owner))
    ]
    if not rows:
        return rows
    connection.execute(
        table.update().where(table.c.id == sa.bindparam("row_id")),
        [{"row_id": row["id"], "name_key": _PLACEHOLDER + row["id"].hex} for row in rows],
    )
    return rows


def _store_names(
    connection: Connection, table: sa.TableClause, rows: list[dict[str, Any]], key: Key
) -> None:
    if rows:
        connection.execute(
            table.update().where(table.c.id == sa.bindparam("row_id")),
            [
                {
                    "row_id": row["id"],
                    "name": _nfc(row["name"]),
                    "name_key": _new_key(row["name"], key),
                }
                for row in rows
            ],
        )


def _group(rows: list[dict[str, Any]], key: Key) -> list[list[dict[str, Any]]]:
    """The rows by key, each group oldest first."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(_new_key(row["name"], key), []).append(row)
    return [sorted(group, key=_oldest_first) for group in groups.values()]


def _unify_tags(connection: Connection, key: Key) -> None:
    connection.execute(_tags.delete().where(~sa.exists().where(_links.c.tag_id == _tags.c.id)))
    for owner in _owners_to_rewrite(connection, _tags, key):
        kept_tags = []
        for kept, *others in _group(_rows_of(connection, _tags, owner), key):
            kept_tags.append(kept)
            for other in others:
                carried = sa.select(_links.c.session_id).where(_links.c.tag_id == kept["id"])
                connection.execute(
                    _links.delete().where(
                        _links.c.tag_id == other["id"], _links.c.session_id.in_(carried)
                    )
                )
                connection.execute(
                    _links.update().where(_links.c.tag_id == other["id"]).values(tag_id=kept["id"])
                )
                connection.execute(_tags.delete().where(_tags.c.id == other["id"]))
        _store_names(connection, _tags, kept_tags, key)


def _unify_folders(connection: Connection, key: Key) -> None:
    for owner in _owners_to_rewrite(connection, _folders, key):
        children: dict[uuid.UUID | None, list[dict[str, Any]]] = {}
        for row in _rows_of(connection, _folders, owner):
            children.setdefault(row["parent_id"], []).append(row)
        kept_folders = []
        # Top down: a folder's children are grouped once every folder merged into it has
        # brought its own.
        parents: list[uuid.UUID | None] = [None]
        while parents:
            parent = parents.pop()
            for kept, *others in _group(children.get(parent, []), key):
                kept_folders.append(kept)
                for other in others:
                    _merge_folder(connection, other["id"], kept["id"])
                    for child in children.pop(other["id"], []):
                        child["parent_id"] = kept["id"]
                        children.setdefault(kept["id"], []).append(child)
                parents.append(kept["id"])
        _store_names(connection, _folders, kept_folders, key)


def _merge_folder(connection: Connection, other: uuid.UUID, kept: uuid.UUID) -> None:
    """`other`'s sessions and subfolders into `kept`, then `other` deleted."""
    connection.execute(
        _sessions.update().where(_sessions.c.folder_id == other).values(folder_id=kept)
    )
    connection.execute(
        _folders.update()
        .where(_folders.c.parent_id == other)
        .values(parent_id=kept, parent_key=_parent_key(kept))
    )
    connection.execute(_folders.delete().where(_folders.c.id == other))


# For `--sql`: rows whose NFC key no other row of their owner (and parent) has, in NFC.
_NORMALIZE_IN_SQL = """
UPDATE {table} AS t SET name = normalize(t.name, NFC), name_key = normalize(t.name_key, NFC)
WHERE (t.name IS NOT NFC NORMALIZED OR t.name_key IS NOT NFC NORMALIZED)
  AND NOT EXISTS (
    SELECT 1 FROM {table} AS o
    WHERE o.user_id = t.user_id {siblings} AND o.id <> t.id
      AND normalize(o.name_key, NFC) = normalize(t.name_key, NFC))
"""


def _unify_names_in_sql() -> None:
    op.execute(_NORMALIZE_IN_SQL.format(table="chat_tags", siblings=""))
    op.execute(
        _NORMALIZE_IN_SQL.format(table="chat_folders", siblings="AND o.parent_key = t.parent_key")
    )


_STORED_AT = "stored_at"
_OLD_INDEX = ("idx_chat_feedback_updated", ["updated_at", "message_id"])
_NEW_INDEX = ("idx_chat_feedback_stored", ["stored_at", "message_id"])
_IMPORTED = "session_id IN (SELECT session_id FROM chat_import_sources)"


def _add_stored_at(sqlite: bool, script: bool) -> None:
    op.drop_index(_OLD_INDEX[0], table_name="chat_feedback")
    op.add_column("chat_feedback", sa.Column(_STORED_AT, UTCDateTime(), nullable=True))
    backfill = (
        f"UPDATE chat_feedback SET stored_at = CASE WHEN {_IMPORTED} THEN {{now}} "
        "ELSE updated_at END"
    )
    if script:
        op.execute(backfill.format(now="now()"))
    else:
        # Bound with the column's type: on SQLite, in the text format it compares.
        now = sa.bindparam("now", datetime.now(UTC), type_=UTCDateTime())
        op.get_bind().execute(sa.text(backfill.format(now=":now")).bindparams(now))
    if sqlite:
        with op.batch_alter_table("chat_feedback", recreate="always") as batch:
            batch.alter_column(_STORED_AT, existing_type=UTCDateTime(), nullable=False)
    else:
        op.alter_column("chat_feedback", _STORED_AT, existing_type=UTCDateTime(), nullable=False)
    op.create_index(_NEW_INDEX[0], "chat_feedback", _NEW_INDEX[1])


def upgrade() -> None:
    context = op.get_context()
    sqlite = context.dialect.name == "sqlite"
    if context.as_sql:
        _unify_names_in_sql()
    else:
        _unify_tags(op.get_bind(), name_key)
        _unify_folders(op.get_bind(), name_key)
    _add_stored_at(sqlite, context.as_sql)


def downgrade() -> None:
    context = op.get_context()
    op.drop_index(_NEW_INDEX[0], table_name="chat_feedback")
    if context.dialect.name == "sqlite":
        with op.batch_alter_table("chat_feedback", recreate="always") as batch:
            batch.drop_column(_STORED_AT)
    else:
        op.drop_column("chat_feedback", _STORED_AT)
    op.create_index(_OLD_INDEX[0], "chat_feedback", _OLD_INDEX[1])
    if not context.as_sql:
        _unify_tags(op.get_bind(), _casefold)
        _unify_folders(op.get_bind(), _casefold)
