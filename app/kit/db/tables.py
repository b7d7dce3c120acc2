"""The database schema as SQLAlchemy Core tables. Migrations under `migrations/` create it."""

import uuid

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)

from app.domain import IMPORT_STATES, MESSAGE_ROLES, RATINGS, TITLE_SOURCES
from app.kit.db.types import JSONDocument, SearchDocument, UTCDateTime, empty_json, utc_now

# The owner of rows that have no user (open mode without `user_id`) where `user_id` is NOT NULL:
# user ids are never empty (app/domain.py). Folders and tags (migration 0012) and every table
# that gained `user_id` in migration 0013; chat_sessions, chat_search, chat_shares and
# chat_feedback still store NULL for them (docs/scaling.md).
NO_OWNER = ""

# Every table but chat_processes carries its rows' owner, `user_id`: the distribution column
# of docs/scaling.md (Citus), copied from the session when the row is written (a session never
# changes owner). tests/api/test_user_id_everywhere.py holds every table to it.

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

chat_sessions = Table(
    "chat_sessions",
    metadata,
    Column("id", Uuid, primary_key=True, default=uuid.uuid4),
    Column("session_id", Text, nullable=False, unique=True),
    Column("user_id", Text, nullable=True),
    Column("active", Boolean, nullable=False, default=True),
    Column("metadata", JSONDocument, nullable=False, default=empty_json),
    Column("created_at", UTCDateTime, nullable=False, default=utc_now),
    Column("updated_at", UTCDateTime, nullable=False, default=utc_now),
    Column("title", Text, nullable=True),
    # Who wrote the title (migration 0008): the seed (the first user message), the model or
    # the user. A model's title is written only over the seed's (app/titles/queries.py).
    Column("title_source", Text, nullable=False, server_default="message"),
    Column("last_message", Text, nullable=True),
    # The current branch's length (= its last message's seq) and preview (= that message's
    # branch_preview): a branch switch sets them from one message row, without counting.
    Column("message_count", Integer, nullable=False, default=0),
    Column("pinned", Boolean, nullable=False, default=False),
    # The message tree (migration 0007). The current branch's last message (null: none yet);
    # the first message chosen among several first messages (null: the newest); how many
    # messages were ever written (the last ordinal).
    Column("current_leaf_id", Uuid, nullable=True),
    Column("chosen_root_id", Uuid, nullable=True),
    Column("node_count", Integer, nullable=False, default=0),
    # The folder the session is in (migration 0012; null: none). Deleting a folder moves its
    # sessions to its parent first (app/folders/service.py); the foreign key only guarantees
    # that a session never names a folder that is gone.
    Column("folder_id", Uuid, ForeignKey("chat_folders.id"), nullable=True),
    CheckConstraint(f"title_source IN {TITLE_SOURCES!r}", name="title_source"),
    # The sidebar's sort key is (pinned, updated_at, id), all descending; these indexes
    # lead with the filters (owner, archive state) and end with it (migration 0003).
    Index(
        "idx_chat_sessions_user_list",
        "user_id",
        "active",
        text("pinned DESC"),
        text("updated_at DESC"),
        text("id DESC"),
    ),
    Index(
        "idx_chat_sessions_list",
        "active",
        text("pinned DESC"),
        text("updated_at DESC"),
        text("id DESC"),
    ),
    # One folder's sessions (or those in none: folder_id IS NULL is an index condition on both
    # databases), in the sidebar's order: a range of it at any depth (migration 0012).
    Index(
        "idx_chat_sessions_user_folder_list",
        "user_id",
        "active",
        "folder_id",
        text("pinned DESC"),
        text("updated_at DESC"),
        text("id DESC"),
    ),
)

chat_messages = Table(
    "chat_messages",
    metadata,
    Column("id", Uuid, primary_key=True, default=uuid.uuid4),
    Column(
        "session_id",
        Text,
        ForeignKey("chat_sessions.session_id", ondelete="CASCADE"),
        nullable=False,
    ),
    # Position on its branch, from 1: its parent's seq + 1. Siblings share it.
    Column("seq", Integer, nullable=False),
    Column("role", Text, nullable=False),
    Column("content", Text, nullable=False),
    Column("metadata", JSONDocument, nullable=False, default=empty_json),
    Column("created_at", UTCDateTime, nullable=False, default=utc_now),
    # The message tree (migration 0007). The message this one follows (null: a first message).
    Column(
        "parent_id",
        Uuid,
        ForeignKey("chat_messages.id", ondelete="CASCADE"),
        nullable=True,
    ),
    # Insertion order in the session, 1-based and gap-free (from chat_sessions.node_count):
    # the exact order of siblings, and the key of the message's search entry.
    Column("ordinal", Integer, nullable=False),
    # The child last chosen at this fork (null: the newest child).
    Column("chosen_child_id", Uuid, nullable=True),
    # The preview of the last message with text on the path ending here (its own if it has
    # text): what last_message becomes when the branch ending here is made current.
    Column("branch_preview", Text, nullable=True),
    # The session's owner (or NO_OWNER), copied when the message is written (migration 0013).
    Column("user_id", Text, nullable=False),
    UniqueConstraint("session_id", "ordinal", name="uq_chat_messages_session_ordinal"),
    CheckConstraint(f"role IN {MESSAGE_ROLES!r}", name="role"),
    # A fork's children; the first messages of a session are those with parent_id null.
    Index("idx_chat_messages_session_parent", "session_id", "parent_id"),
)

# Search index entries (migration 0004): one per session title (seq 0) and one per message with
# text (since migration 0007 `seq` holds the message's ordinal, which is its seq on data
# written before the tree), written in the same transaction as the text they index. `user_id` is the
# session's owner, copied so that one user's search reads only their own entries.
SEARCH_TITLE_SEQ = 0

chat_search = Table(
    "chat_search",
    metadata,
    # An integer key that VACUUM never renumbers: SQLite's FTS5 index refers to entries by it.
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column(
        "session_id",
        Text,
        ForeignKey("chat_sessions.session_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("user_id", Text, nullable=True),
    Column("seq", Integer, nullable=False),
    Column("document", SearchDocument, nullable=False),
    # The entry's place among its owner's entries, in the order they were written (0, 1, …;
    # NULL without an owner): given by the database, a trigger of migration 0019, never by
    # the application. PostgreSQL files the owned words in blocks of it (app/search/fulltext.py
    # `owner_block_key`).
    Column("user_ordinal", BigInteger, nullable=True),
    UniqueConstraint("session_id", "seq", name="uq_chat_search_session_seq"),
    # One user's entries, newest first: a search's ranking window (app/search/queries.py,
    # migration 0016).
    Index("idx_chat_search_user", "user_id", "id"),
    Index("idx_chat_search_document", "document", postgresql_using="gin").ddl_if(
        dialect="postgresql"
    ),
    # Each entry's words again, under its owner's key and block (migration 0019, 0005 before
    # it, app/search/fulltext.py): what one user's search reads.
    Index(
        "idx_chat_search_owned_blocks",
        text("chat_search_owned_block_words(user_id, user_ordinal, document)"),
        postgresql_using="gin",
    ).ddl_if(dialect="postgresql"),
)

# The reply lifecycle (migration 0006). A reply is stored as soon as its generation starts
# (status "generating" in its metadata, content saved as it grows) and finished in one
# transaction at its end. Each process that generates replies registers here and reports
# every few seconds; a reply whose process stopped reporting is finished by another process
# (or the next one to start) as interrupted.
chat_processes = Table(
    "chat_processes",
    metadata,
    Column("id", Uuid, primary_key=True),
    # Where it runs: a process that starts on the same host knows at once whether the pid is
    # alive, rather than waiting for the heartbeat to go stale.
    Column("host", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("heartbeat_at", UTCDateTime, nullable=False),
)

# The replies being generated right now, and by which process. No foreign key to
# chat_processes: a reply whose process row is gone counts as abandoned.
chat_replies_generating = Table(
    "chat_replies_generating",
    metadata,
    Column(
        "message_id",
        Uuid,
        ForeignKey("chat_messages.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("process_id", Uuid, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    # A stop asked through another process (migration 0008).
    Column("stop_requested_at", UTCDateTime, nullable=True),
    # The reply's owner, as its message's (migration 0013).
    Column("user_id", Text, nullable=False),
    Index("idx_chat_replies_generating_process", "process_id"),
)

# Read-only share links (migration 0008): a snapshot of a session's current branch at the
# moment it was shared, under an unguessable id. Revoking deletes the row; deleting the
# session deletes its links (cascade). `user_id` is the session's owner, copied so that a
# user's links are listed without a join.
chat_shares = Table(
    "chat_shares",
    metadata,
    Column("share_id", Text, primary_key=True),
    Column(
        "session_id",
        Text,
        ForeignKey("chat_sessions.session_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("user_id", Text, nullable=True),
    # The session's title when it was shared: a later rename does not change the link.
    Column("title", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # Null: never expires.
    Column("expires_at", UTCDateTime, nullable=True),
    Index("idx_chat_shares_user_created", "user_id", "created_at"),
    Index("idx_chat_shares_session", "session_id"),
)

# The snapshot's messages: copies (role, text, time), never ids, in branch order.
chat_share_messages = Table(
    "chat_share_messages",
    metadata,
    Column(
        "share_id",
        Text,
        ForeignKey("chat_shares.share_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("position", Integer, primary_key=True, autoincrement=False),
    Column("role", Text, nullable=False),
    Column("content", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # The link's owner (or NO_OWNER), as its chat_shares row's (migration 0013).
    Column("user_id", Text, nullable=False),
    CheckConstraint(f"role IN {MESSAGE_ROLES!r}", name="role"),
)

# Thumbs on replies (migration 0009): at most one rating per assistant message, by the session's
# owner, replaced when set again. It refers to the message and never copies the conversation;
# it goes with its message, and with its session.

chat_feedback = Table(
    "chat_feedback",
    metadata,
    Column(
        "message_id",
        Uuid,
        ForeignKey("chat_messages.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column(
        "session_id",
        Text,
        ForeignKey("chat_sessions.session_id", ondelete="CASCADE"),
        nullable=False,
    ),
    # The session's owner when the rating was given (null in open mode, like the session's).
    Column("user_id", Text, nullable=True),
    Column("rating", Text, nullable=False),
    Column("comment", Text, nullable=True),
    # When the rating was first and last given: by the user here, or as an imported export
    # says (shown to clients).
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # When this service last wrote the row (migration 0020): a rating set, changed or
    # imported. The export's order, so that `since` finds a rating imported after an export
    # although it was given long before.
    Column("stored_at", UTCDateTime, nullable=False),
    CheckConstraint(f"rating IN {RATINGS!r}", name="rating"),
    # The export's order (GET /api/v1/feedback): keyset pages and `since` are one range of it.
    Index("idx_chat_feedback_stored", "stored_at", "message_id"),
    # Deleting a session deletes its feedback by cascade: found by this index.
    Index("idx_chat_feedback_session", "session_id"),
)

# Folders and tags (migration 0012). Both belong to one owner: `user_id`, or NO_OWNER for
# sessions that have no user, so that the unique keys below hold for them too (NULLs are
# distinct in unique indexes).

# Folders nest (`parent_id`; null: at the top). A name is unique among its siblings ignoring
# case: `name_key` is the name case-folded (by Python, the same on both databases), and
# `parent_key` the parent's id in hex, or "" at the top, since a NULL parent would never clash.
chat_folders = Table(
    "chat_folders",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("user_id", Text, nullable=False),
    Column("parent_id", Uuid, ForeignKey("chat_folders.id"), nullable=True),
    Column("parent_key", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("name_key", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("user_id", "parent_key", "name_key", name="uq_chat_folders_sibling_name"),
    Index("idx_chat_folders_parent", "parent_id"),
)

# A user's tags: one row per tag, its first spelling in `name`, `name_key` case-folded.
chat_tags = Table(
    "chat_tags",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("user_id", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("name_key", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("user_id", "name_key", name="uq_chat_tags_user_name"),
)

# Which session carries which tag, and in which position (the order the user gave them).
# The primary key answers "does this session carry this tag" (the list's tag filter), the
# index "which sessions carry this tag" (counts, renames, and a rare tag's filter).
chat_session_tags = Table(
    "chat_session_tags",
    metadata,
    Column(
        "session_id",
        Text,
        ForeignKey("chat_sessions.session_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("tag_id", Uuid, ForeignKey("chat_tags.id", ondelete="CASCADE"), primary_key=True),
    Column("position", Integer, nullable=False),
    # The session's and the tag's owner (migration 0013).
    Column("user_id", Text, nullable=False),
    Index("idx_chat_session_tags_tag", "tag_id", "session_id"),
)

# Imports (migration 0014, app/imports): one row per upload, its progress and outcome, so that
# any process can answer for it and a dead process's import is marked failed by the others.

chat_imports = Table(
    "chat_imports",
    metadata,
    Column("id", Uuid, primary_key=True),
    # The importing user (null in open mode without one), and the same as a key ("" for none)
    # for the one-running-import-per-user index below (NULLs never clash).
    Column("user_id", Text, nullable=True),
    Column("owner_key", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("format", Text, nullable=False),
    # Conversations in the file: null until the file has been read through once.
    Column("total", Integer, nullable=True),
    Column("done", Integer, nullable=False),
    Column("imported", Integer, nullable=False),
    Column("skipped", Integer, nullable=False),
    # [{title, reason}] of the conversations that could not be imported.
    Column("failed", JSONDocument, nullable=False),
    # Why the import as a whole stopped (status failed).
    Column("error", Text, nullable=True),
    # The process that reads the upload (its temporary file is on that process's disk).
    Column("process_id", Uuid, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint(f"status IN {IMPORT_STATES!r}", name="status"),
    Index(
        "uq_chat_imports_running",
        "owner_key",
        unique=True,
        sqlite_where=text("status = 'running'"),
        postgresql_where=text("status = 'running'"),
    ),
    Index("idx_chat_imports_process", "process_id", "status"),
)

# Which conversation of an export each imported session came from, per owner: a second
# import of the same file skips them. Deleting the session forgets it (cascade).
chat_import_sources = Table(
    "chat_import_sources",
    metadata,
    # The importing user, or NO_OWNER (as the tables of migration 0013 store it).
    Column("user_id", Text, primary_key=True),
    Column("source_id", Text, primary_key=True),
    Column(
        "session_id",
        Text,
        ForeignKey("chat_sessions.session_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Index("idx_chat_import_sources_session", "session_id"),
)

# Idempotency keys (migration 0017, app/idempotency): a request that started a reply under the
# client's `Idempotency-Key` header, written in the transaction that stored its message, so
# that the same request sent again answers what was stored instead of storing it twice. One
# row per owner and key (the primary key: of two requests with the same key at once, one
# commits and the other finds its row). Kept IDEMPOTENCY_KEY_TTL_HOURS after `created_at`,
# then deleted by the liveness sweep (app/replies/liveness.py); deleting the session deletes
# them (cascade).
chat_idempotency_keys = Table(
    "chat_idempotency_keys",
    metadata,
    # The session's owner, or NO_OWNER: the key's scope.
    Column("user_id", Text, primary_key=True),
    Column("key", Text, primary_key=True),
    # What the request asked (app/idempotency/keys.py): the same key with another request is
    # refused.
    Column("fingerprint", Text, nullable=False),
    Column(
        "session_id",
        Text,
        ForeignKey("chat_sessions.session_id", ondelete="CASCADE"),
        nullable=False,
    ),
    # The message answered (the user's message the request stored, or the one a regeneration
    # answers again) and the reply the request started.
    Column("question_id", Uuid, nullable=False),
    Column("reply_id", Uuid, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index("idx_chat_idempotency_keys_session", "session_id"),
    Index("idx_chat_idempotency_keys_created", "created_at"),
)
