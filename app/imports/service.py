"""Importing an export: the upload checked and recorded as a running import, then read in the
background, one conversation per transaction, through the write path that sending uses.

The import's row in `chat_imports` is its only state: any process answers `GET
/imports/{id}` from it, and a process that stops (or dies: app/replies/liveness.py) leaves
its imports `failed` with a reason, never `running`. Each conversation is written in one
transaction with the import's counters: it is imported whole or not at all, and the counters
say exactly what is in the database.
"""

import asyncio
import logging
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import IO, Any

from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from app.auth.access import Caller
from app.domain import ExportKind
from app.feedback import queries as feedback_queries
from app.imports import formats, queries, upload
from app.imports.formats import BrokenConversation, Conversation, Node, NotAnExport
from app.imports.schemas import ImportStatus
from app.kit.db.engine import Database
from app.kit.db.tables import NO_OWNER
from app.kit.db.types import utc_now
from app.kit.errors import ImportNotFound, ImportRunning, NotAnImport
from app.kit.text import make_preview, make_title, shorten
from app.messages import queries as message_queries
from app.messages.queries import StoredMessage
from app.search import index as search_index
from app.sessions import queries as session_queries
from app.sessions.schemas import TITLE_MAX_CHARS

logger = logging.getLogger(__name__)

# The failures an import lists (its row holds them); the others are counted in `done`.
FAILURES_LISTED = 1_000
STOPPED = (
    "The service stopped during the import. Import the file again: the conversations "
    "already imported are skipped."
)
INTERRUPTED = (
    "The process that read the upload stopped during the import. Import the file again: "
    "the conversations already imported are skipped."
)


# How long shutdown waits for the imports to stop between two conversations before it
# cancels them: one conversation's transaction takes milliseconds, reading the next one from
# the file a little more. Cancelling a write midway is the fallback only: on SQLite the
# cancelled transaction can hold the database's lock past shutdown's own write.
STOP_WAIT_SECONDS = 5.0


class ImportTasks:
    """The imports this process is running: strong references (the event loop keeps only
    weak ones), and at shutdown, stopped between two conversations and recorded as failed."""

    def __init__(self, process_id: uuid.UUID) -> None:
        self.process_id = process_id
        self._tasks: set[asyncio.Task[None]] = set()
        # Set at shutdown: each import stops before its next conversation.
        self.stopping = asyncio.Event()

    def start(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait(self) -> None:
        """Until the imports running now have ended (tests, benchmarks)."""
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def shutdown(self, db: Database) -> None:
        self.stopping.set()
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=STOP_WAIT_SECONDS)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        try:
            async with db.write() as conn:
                await queries.fail_imports_of(conn, self.process_id, error=STOPPED, now=utc_now())
        except Exception as exc:
            # Its process row goes stale, and another process marks them failed.
            logger.warning("could not mark this process's imports failed: %r", exc)


@dataclass(frozen=True, slots=True)
class Limits:
    max_bytes: int
    message_max_chars: int


async def start_import(
    db: Database,
    caller: Caller,
    tasks: ImportTasks,
    uploaded: IO[bytes],
    *,
    user_id: str | None,
    limits: Limits,
) -> ImportStatus:
    """Check the upload (its size, that it is an export) and start importing it as the
    caller's (or, for trusted callers, `user_id`'s) sessions; the running import's status.

    Nothing is written for a file that is refused (413, 422), nor while the owner has an
    import running (409)."""
    owner = caller.acting_for(user_id)
    owner_key = owner or NO_OWNER
    async with db.read() as conn:
        if await queries.running_import_of(conn, owner_key):
            raise ImportRunning()
    export, kind = await asyncio.to_thread(_prepare, uploaded, limits.max_bytes)
    import_id = uuid.uuid4()
    try:
        async with db.write() as conn:
            await queries.create_import(
                conn,
                import_id=import_id,
                user_id=owner,
                owner_key=owner_key,
                export_format=kind,
                process_id=tasks.process_id,
                now=utc_now(),
            )
            row = await queries.get_import(conn, import_id, owner=None)
    except IntegrityError:
        export.close()
        raise ImportRunning() from None
    tasks.start(
        _run(
            db,
            import_id,
            export,
            kind,
            owner=owner,
            message_max_chars=limits.message_max_chars,
            stopping=tasks.stopping,
        )
    )
    return _status(row)


def _prepare(uploaded: IO[bytes], max_bytes: int) -> tuple[IO[bytes], ExportKind]:
    """The upload on disk, out of its zip, with its kind (in a worker thread: it reads the
    whole upload)."""
    export = upload.unpacked(upload.spool(uploaded, max_bytes=max_bytes), max_bytes=max_bytes)
    try:
        return export, formats.sniff(export)
    except NotAnExport as exc:
        export.close()
        raise NotAnImport(str(exc)) from None
    except BaseException:
        export.close()
        raise


async def get_import(db: Database, caller: Caller, import_id: uuid.UUID) -> ImportStatus:
    """An import of the caller's; another user's is as missing as one that never was."""
    async with db.read() as conn:
        row = await queries.get_import(conn, import_id, owner=caller.owner_filter)
    if row is None:
        raise ImportNotFound()
    return _status(row)


def _status(row: dict[str, Any] | None) -> ImportStatus:
    assert row is not None
    return ImportStatus.model_validate({**row, "import_id": row["id"]})


@dataclass(slots=True)
class _Progress:
    total: int | None = None
    done: int = 0
    imported: int = 0
    skipped: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    # Whether `failed` changed since it was last written (it is written only then).
    failures_changed: bool = False

    def values(self, *, imported: int = 0, skipped: int = 0) -> dict[str, Any]:
        """The counters to write, with `imported` and `skipped` more conversations."""
        values: dict[str, Any] = {
            "total": self.total,
            "done": self.done + imported + skipped,
            "imported": self.imported + imported,
            "skipped": self.skipped + skipped,
        }
        if self.failures_changed:
            values["failed"] = list(self.failed)
        return values

    def written(self, *, imported: int = 0, skipped: int = 0) -> None:
        """The counters of `values` were committed."""
        self.done += imported + skipped
        self.imported += imported
        self.skipped += skipped
        self.failures_changed = False

    def fail(self, title: str, reason: str) -> None:
        self.done += 1
        if len(self.failed) < FAILURES_LISTED:
            self.failed.append({"title": title, "reason": reason})
            self.failures_changed = True


_END = object()


async def _run(
    db: Database,
    import_id: uuid.UUID,
    export: IO[bytes],
    kind: ExportKind,
    *,
    owner: str | None,
    message_max_chars: int,
    stopping: asyncio.Event,
) -> None:
    progress = _Progress()
    with export:
        try:
            error = await _import_all(
                db, import_id, export, kind, progress, owner, message_max_chars, stopping
            )
        except Exception as exc:
            logger.error("import %s stopped by an unexpected error", import_id, exc_info=exc)
            error = "The import stopped on an unexpected error; the conversations it imported stay"
    await _finish(db, import_id, progress, error=error)


async def _import_all(
    db: Database,
    import_id: uuid.UUID,
    export: IO[bytes],
    kind: ExportKind,
    progress: _Progress,
    owner: str | None,
    message_max_chars: int,
    stopping: asyncio.Event,
) -> str | None:
    """Read the file through once (count it; a file whose JSON breaks off fails before
    anything is written), then import its conversations one by one, until the end or
    `stopping`; why it stopped, if it did."""
    try:
        progress.total = await asyncio.to_thread(formats.count, export, kind)
    except NotAnExport as exc:
        return str(exc)
    await _save_progress(db, import_id, progress)
    conversations = formats.items(export, kind)
    while (item := await asyncio.to_thread(next, conversations, _END)) is not _END:
        if stopping.is_set():
            return STOPPED
        await _import_one(db, import_id, item, kind, progress, owner, message_max_chars)
    return None


async def _import_one(
    db: Database,
    import_id: uuid.UUID,
    item: Any,
    kind: ExportKind,
    progress: _Progress,
    owner: str | None,
    message_max_chars: int,
) -> None:
    title = formats.title_of(item)
    try:
        conversation = formats.read(item, kind)
        formats.check_storable(conversation)
        async with db.write() as conn:
            imported = await _write(conn, conversation, owner, message_max_chars)
            counted = {"imported": 1} if imported else {"skipped": 1}
            await queries.record_progress(
                conn, import_id, now=utc_now(), **progress.values(**counted)
            )
        progress.written(**counted)
        return
    except BrokenConversation as exc:
        reason = str(exc)
    except SQLAlchemyError as exc:
        # The transaction rolled back: nothing of this conversation is stored.
        logger.warning("import %s: conversation %r not stored: %r", import_id, title, exc)
        reason = "the database refused it"
    progress.fail(title, reason)
    await _save_progress(db, import_id, progress)


async def _write(
    conn: AsyncConnection,
    conversation: Conversation,
    owner: str | None,
    message_max_chars: int,
) -> bool:
    """One conversation as a new session, through the write path (append_message: tree
    columns, sidebar metadata, search index; remember_branch); False (nothing written) if
    it was imported before."""
    owner_key = owner or NO_OWNER
    if await queries.is_imported(conn, owner_key=owner_key, source_id=conversation.source_id):
        return False
    session_id = str(uuid.uuid4())
    await session_queries.create_session_if_absent(
        conn, session_id=session_id, user_id=owner, now=conversation.created_at
    )
    stored: dict[str, StoredMessage] = {}
    texts: list[tuple[int, str]] = []
    for node in conversation.nodes:
        stored[node.key], text = await _append(conn, session_id, node, stored, message_max_chars)
        texts.append((stored[node.key].ordinal, text))
        if node.feedback is not None and node.role == "assistant":
            await feedback_queries.put_feedback(
                conn,
                message_id=stored[node.key].id,
                session_id=session_id,
                user_id=owner,
                rating=node.feedback.rating,
                comment=node.feedback.comment,
                # Stored now: an export resumed with `since` finds it (stored_at).
                now=utc_now(),
                given_at=node.feedback.updated_at,
            )
    current = stored.get(conversation.current or "")
    if current is not None:
        # As a branch switch does: the branch through it, its choices remembered.
        leaf = await message_queries.branch_end_below(
            conn, session_id=session_id, message_id=current.id
        )
        await message_queries.remember_branch(conn, session_id=session_id, leaf_id=leaf.id)
        await message_queries.end_current_branch_at(conn, session_id=session_id, leaf=leaf)
    title = None if conversation.title is None else shorten(conversation.title, TITLE_MAX_CHARS)
    # The search entries last: one user's entry writes take turns until their transaction
    # ends (migration 0019), so the user's other writes wait for these inserts, not for the
    # whole conversation.
    for ordinal, text in texts:
        await search_index.index_text(conn, session_id, owner, ordinal, text)
    await queries.set_imported_session(
        conn,
        session_id,
        title=title or None,
        title_source=conversation.title_source,
        pinned=conversation.pinned,
        archived=conversation.archived,
        metadata={"imported": {**conversation.origin, "source_id": conversation.source_id}},
        # With messages, the newest one's time (the write path's rule); without, the file's,
        # never before the session's creation.
        updated_at=None if stored else max(conversation.updated_at, conversation.created_at),
    )
    await queries.remember_source(
        conn, owner_key=owner_key, source_id=conversation.source_id, session_id=session_id
    )
    return True


async def _append(
    conn: AsyncConnection,
    session_id: str,
    node: Node,
    stored: dict[str, StoredMessage],
    message_max_chars: int,
) -> tuple[StoredMessage, str]:
    """`node` stored under the message `stored` holds for its parent, without its search
    entries: the message, and the text stored."""
    content, metadata = node.content, node.metadata
    if node.role == "user" and len(content.strip()) > message_max_chars:
        # The limit a user's message has when sent: kept up to it, and the cut recorded.
        metadata = {**metadata, "import_truncated_from_chars": len(content)}
        content = content.strip()[:message_max_chars]
    has_text = bool(content.strip())
    placement: dict[str, Any] = (
        {"first": True} if node.parent is None else {"parent_id": stored[node.parent].id}
    )
    message = await message_queries.append_message(
        conn,
        session_id=session_id,
        role=node.role,
        content=content,
        metadata=metadata,
        title=make_title(content) if node.role == "user" and has_text else None,
        preview=make_preview(content) if has_text else None,
        now=node.created_at,
        indexed=False,
        **placement,
    )
    assert message is not None  # the session was created in this transaction
    return message, content


async def _save_progress(db: Database, import_id: uuid.UUID, progress: _Progress) -> None:
    async with db.write() as conn:
        await queries.record_progress(conn, import_id, now=utc_now(), **progress.values())
    progress.written()


async def _finish(
    db: Database, import_id: uuid.UUID, progress: _Progress, *, error: str | None
) -> None:
    async with db.write() as conn:
        await queries.record_progress(conn, import_id, now=utc_now(), **progress.values())
        await queries.finish_import(
            conn,
            import_id,
            status="failed" if error else "done",
            error=error,
            now=utc_now(),
        )
