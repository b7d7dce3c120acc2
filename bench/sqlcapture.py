"""The SQL the service runs, recorded from its own code and replayed through the bare drivers.

A `Recorder` listens on an engine made by `app.kit.db.engine.create_engine` (so with the service's
settings, dialect and type processing) and records every statement with the parameters the
driver received, plus transaction boundaries. Calling a service function with it captures
exactly what a request would run; replaying that through asyncpg or sqlite3 is the raw-SQL
floor: the same statements with no SQLAlchemy, no Pydantic, no HTTP.

Writes can be replayed many times: each replay gets fresh ids (the same fresh id wherever the
captured one appeared: a message's id is also its session's current leaf), timestamps, its own
target session, and the sequence numbers its own message INSERT returned.
"""

import re
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

Params = tuple[Any, ...]
BEGIN = "<begin>"
COMMIT = "<commit>"

_SQLITE_UUID = re.compile(r"[0-9a-f]{32}")
_SQLITE_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}")


@dataclass(frozen=True)
class Statement:
    sql: str
    params: Params

    @property
    def is_marker(self) -> bool:
        return self.sql in (BEGIN, COMMIT) or self.sql.startswith("BEGIN")


class Recorder:
    """Records what an engine sends to its driver while `capture()` is open."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._log: list[Statement] | None = None
        sync = engine.sync_engine
        event.listen(sync, "before_cursor_execute", self._on_execute)
        event.listen(sync, "begin", self._on_begin)
        event.listen(sync, "commit", self._on_commit)

    def _on_execute(
        self,
        _conn: Connection,
        _cursor: Any,
        statement: str,
        parameters: Any,
        _context: Any,
        _executemany: bool,
    ) -> None:
        if self._log is not None:
            self._log.append(Statement(statement, tuple(parameters or ())))

    def _on_begin(self, _conn: Connection) -> None:
        if self._log is not None:
            self._log.append(Statement(BEGIN, ()))

    def _on_commit(self, _conn: Connection) -> None:
        if self._log is not None:
            self._log.append(Statement(COMMIT, ()))

    @contextmanager
    def capture(self) -> Iterator[list[Statement]]:
        self._log = []
        try:
            yield self._log
        finally:
            self._log = None


def queries_of(log: list[Statement]) -> list[Statement]:
    """The statements alone, without transaction control: what a read floor replays."""
    return [statement for statement in log if not statement.is_marker]


# --- Reads -----------------------------------------------------------------------------------


async def read_postgresql(conn: Any, statements: list[Statement]) -> None:
    """Run the statements on an asyncpg connection, fetching every row."""
    for statement in statements:
        await conn.fetch(statement.sql, *statement.params)


def read_sqlite(conn: sqlite3.Connection, statements: list[Statement]) -> None:
    for statement in statements:
        conn.execute(statement.sql, statement.params).fetchall()


# --- Writes ----------------------------------------------------------------------------------


@dataclass
class WriteTemplate:
    """A captured write sequence: `returning` are the values its message INSERTs returned when
    captured (the new messages' sequence numbers), in order. Captured on a straight session,
    where a message's seq and ordinal are the same number."""

    log: list[Statement]
    session_id: str
    returning: list[int]
    sql: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.sql = [s.sql for s in self.log if not s.is_marker]

    def params(
        self,
        statement: Statement,
        session_id: str,
        seqs: dict[int, int],
        now: datetime,
        ids: dict[Any, Any],
    ) -> Params:
        """The captured parameters, with this replay's session, sequence numbers and time
        (one `now` per replay, as the service takes one per transaction), and fresh ids."""
        return tuple(
            _fresh(value, self.session_id, session_id, seqs, now, ids) for value in statement.params
        )


def gives_seq(sql: str) -> bool:
    """The message INSERT (`INSERT INTO chat_messages ... SELECT ... RETURNING seq, ...`): the
    new message's sequence number, first. (Other INSERTs' `RETURNING` is a new row's key, as
    SQLAlchemy asks for it, and the session's UPDATE returns no number: nothing to map.)"""
    head = sql.lstrip().upper()
    return head.startswith("INSERT INTO CHAT_MESSAGES") and " RETURNING " in head


def _fresh(
    value: Any,
    captured_session: str,
    session_id: str,
    seqs: dict[int, int],
    now: datetime,
    ids: dict[Any, Any],
) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return seqs.get(value, value)
    if isinstance(value, uuid.UUID):
        return ids.setdefault(value, uuid.uuid4())
    if isinstance(value, datetime):
        return now
    if isinstance(value, str):
        if value == captured_session:
            return session_id
        if _SQLITE_UUID.fullmatch(value):
            return ids.setdefault(value, uuid.uuid4().hex)
        if _SQLITE_TIMESTAMP.fullmatch(value):
            return now.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


async def write_postgresql(conn: Any, template: WriteTemplate, session_id: str) -> None:
    """Replay a write sequence into `session_id` on an asyncpg connection."""
    seqs: dict[int, int] = {}
    ids: dict[Any, Any] = {}
    captured = iter(template.returning)
    now = datetime.now(UTC)
    transaction: Any = None
    try:
        for statement in template.log:
            if statement.sql == BEGIN:
                transaction = conn.transaction()
                await transaction.start()
            elif statement.sql == COMMIT:
                await transaction.commit()
                transaction = None
            else:
                params = template.params(statement, session_id, seqs, now, ids)
                if gives_seq(statement.sql):
                    seqs[next(captured)] = await conn.fetchval(statement.sql, *params)
                else:
                    await conn.fetch(statement.sql, *params)
    except BaseException:
        if transaction is not None:
            await transaction.rollback()
        raise


def write_sqlite(conn: sqlite3.Connection, template: WriteTemplate, session_id: str) -> None:
    """Replay a write sequence into `session_id` on a sqlite3 connection (autocommit mode)."""
    seqs: dict[int, int] = {}
    ids: dict[Any, Any] = {}
    captured = iter(template.returning)
    now = datetime.now(UTC)
    try:
        for statement in template.log:
            if statement.sql == BEGIN:
                continue  # the BEGIN [IMMEDIATE] the service issued was recorded just before
            if statement.sql == COMMIT:
                conn.execute("COMMIT")
                continue
            params = template.params(statement, session_id, seqs, now, ids)
            cursor = conn.execute(statement.sql, params)
            if gives_seq(statement.sql):
                seqs[next(captured)] = cursor.fetchone()[0]
            else:
                cursor.fetchall()
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
