"""Idempotency keys: the client's `Idempotency-Key` header on the requests that start a reply
(`POST /api/v1/chat`, `/chat/stream`, `.../regenerate`), after the IETF draft "The
Idempotency-Key HTTP Header Field" and Stripe's keys, so that a request sent again after a
lost response, a 503 or a 502 stores nothing twice (docs/api.md, "Idempotency keys").

The key is recorded with what the request asked (its fingerprint) and the reply it started,
in the transaction that stores the message (`ReplyStart.store`): the request and its record
commit together or not at all. The primary key (owner, key) decides between requests with
the same key at once, across processes: the one whose record commits first wins, the other
is rolled back whole and answered as a request sent again. Keys are scoped by the session's
owner (another user's same key is another key) and kept IDEMPOTENCY_KEY_TTL_HOURS.
"""

import hashlib
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, TypeVar

from fastapi import Header
from pydantic import AfterValidator, WithJsonSchema
from sqlalchemy.ext.asyncio import AsyncConnection

from app.idempotency import queries
from app.idempotency.queries import KeyedRequest
from app.kit.db.engine import Database
from app.kit.db.tables import NO_OWNER
from app.kit.db.types import utc_now
from app.kit.errors import IdempotencyKeyBusy, IdempotencyKeyReused

KEY_MAX_CHARS = 255
# Printable ASCII, without a space at either end (HTTP drops those from a header's value).
KEY_PATTERN = r"^[!-~](?:[ -~]*[!-~])?$"
_KEY = re.compile(KEY_PATTERN)


def _valid_key(value: str | None) -> str | None:
    """The schema's rule (KEY_PATTERN, KEY_MAX_CHARS), with a message that says which part
    a key breaks."""
    if value is None:
        return None
    if not 1 <= len(value) <= KEY_MAX_CHARS:
        raise ValueError(f"must be 1 to {KEY_MAX_CHARS} characters (got {len(value)})")
    if not _KEY.fullmatch(value):
        raise ValueError("must be printable ASCII characters (a UUID will do)")
    return value


IdempotencyKeyHeader = Annotated[
    str | None,
    AfterValidator(_valid_key),
    # A header is a string or absent, never null: the schema says so.
    WithJsonSchema(
        {"type": "string", "minLength": 1, "maxLength": KEY_MAX_CHARS, "pattern": KEY_PATTERN}
    ),
    Header(
        alias="Idempotency-Key",
        description=(
            'Makes the request safe to send again (docs/api.md, "Idempotency keys"): a new '
            "random value (a UUID) for each message sent, the same one when the same request "
            "is sent again. 1 to 255 printable ASCII characters. Sent again as it was within "
            "IDEMPOTENCY_KEY_TTL_HOURS (24 by default), the request stores nothing new and "
            "answers what the first one did; the key with another request: 422."
        ),
    ),
]


class KeyTaken(Exception):
    """Raised inside the write transaction when the key is recorded already (the request is
    sent again, or another with the key committed first): the transaction is rolled back, and
    the request answered as sent again."""

    def __init__(self, owner: str) -> None:
        super().__init__(owner)
        self.owner = owner


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """A request's key, what the request asks (its fingerprint), and how long keys are kept."""

    key: str
    fingerprint: str
    ttl: timedelta

    @classmethod
    def of(
        cls, key: str | None, ttl_hours: int, operation: str, request: dict[str, Any]
    ) -> "IdempotencyKey | None":
        """The key of a request to `operation` (the route), which asks `request` (its body
        and path as JSON values); None without a key. Two requests are the same when both
        are: not the bytes sent, so formatting and ignored fields do not count."""
        if key is None:
            return None
        asked = json.dumps([operation, request], sort_keys=True, separators=(",", ":"))
        fingerprint = hashlib.sha256(asked.encode()).hexdigest()
        return cls(key, fingerprint, timedelta(hours=ttl_hours))

    async def record(
        self,
        conn: AsyncConnection,
        *,
        owner: str | None,
        session_id: str,
        question_id: uuid.UUID,
        reply_id: uuid.UUID,
    ) -> None:
        """Record the request under `owner`'s key, in the transaction that stored its
        message; `KeyTaken` (which rolls that transaction back) if the key is taken."""
        now = utc_now()
        scope = owner or NO_OWNER
        recorded = await queries.record_key(
            conn,
            owner=scope,
            key=self.key,
            request=KeyedRequest(self.fingerprint, session_id, question_id, reply_id),
            now=now,
            expired_before=now - self.ttl,
        )
        if not recorded:
            raise KeyTaken(scope)

    async def earlier(self, db: Database, owner: str) -> KeyedRequest | None:
        """The request recorded under `owner`'s key, if any (and not expired);
        IdempotencyKeyReused if it asked something else."""
        async with db.read() as conn:
            found = await queries.find_key(
                conn, owner=owner, key=self.key, expired_before=utc_now() - self.ttl
            )
        if found is not None and found.fingerprint != self.fingerprint:
            raise IdempotencyKeyReused()
        return found


T = TypeVar("T")


async def once(
    key: IdempotencyKey | None, db: Database, perform: Callable[[], Awaitable[T]]
) -> T | KeyedRequest:
    """`perform()`, which records `key` as it writes; or, when the key is taken (`KeyTaken`:
    `perform`'s transaction was rolled back), the request recorded under it. No lookup comes
    first: a request sent again is rare, and a first request would pay for it (a read
    transaction, 0.7 ms on PostgreSQL); the primary key decides, sent again or at once."""
    try:
        return await perform()
    except KeyTaken as taken:
        if key is None:
            raise
        earlier = await key.earlier(db, taken.owner)
    if earlier is None:  # taken, then gone at once: expired or its session deleted
        raise IdempotencyKeyBusy()
    return earlier
