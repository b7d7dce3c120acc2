"""The SQL of idempotency keys (`chat_idempotency_keys`). Each helper takes the connection
of a transaction it does not own."""

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from app.kit.db.tables import chat_idempotency_keys

_keys = chat_idempotency_keys.c


@dataclass(frozen=True, slots=True)
class KeyedRequest:
    """What a request sent under an idempotency key did: the reply it started, in its session."""

    fingerprint: str
    session_id: str
    question_id: uuid.UUID
    reply_id: uuid.UUID


async def record_key(
    conn: AsyncConnection,
    *,
    owner: str,
    key: str,
    request: KeyedRequest,
    now: datetime,
    expired_before: datetime,
) -> bool:
    """Record the request under the owner's key; False if the key is taken (and not expired).

    One statement: the primary key decides between requests with the same key at once (on
    PostgreSQL the second waits for the first to commit, then finds the key taken), and an
    expired row that the sweep has not deleted yet is replaced.
    """
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    values = {
        "fingerprint": request.fingerprint,
        "session_id": request.session_id,
        "question_id": request.question_id,
        "reply_id": request.reply_id,
        "created_at": now,
    }
    stmt = (
        dialect_insert(chat_idempotency_keys)
        .values(user_id=owner, key=key, **values)
        .on_conflict_do_update(
            index_elements=[_keys.user_id, _keys.key],
            set_=values,
            where=_keys.created_at < expired_before,
        )
        .returning(_keys.key)
    )
    return (await conn.execute(stmt)).first() is not None


async def find_key(
    conn: AsyncConnection, *, owner: str, key: str, expired_before: datetime
) -> KeyedRequest | None:
    """The request recorded under the owner's key, unless it has expired."""
    row = (
        await conn.execute(
            select(_keys.fingerprint, _keys.session_id, _keys.question_id, _keys.reply_id).where(
                _keys.user_id == owner, _keys.key == key, _keys.created_at >= expired_before
            )
        )
    ).one_or_none()
    return (
        None
        if row is None
        else KeyedRequest(row.fingerprint, row.session_id, row.question_id, row.reply_id)
    )


async def forget_expired_keys(conn: AsyncConnection, *, expired_before: datetime) -> int:
    """Delete the keys that have expired (a range of the `created_at` index); how many."""
    stmt = delete(chat_idempotency_keys).where(_keys.created_at < expired_before)
    return int((await conn.execute(stmt)).rowcount)
