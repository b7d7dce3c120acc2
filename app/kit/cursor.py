"""Opaque cursors: a listing's position as base64url-encoded JSON, and the one rule for what a
cursor this service did not issue is (`InvalidCursor`, a 422 at the route)."""

import base64
import binascii
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any


class InvalidCursor(ValueError):
    pass


def encode_payload(payload: dict[str, Any]) -> str:
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@contextmanager
def reading_cursor() -> Iterator[None]:
    """Whatever goes wrong while a cursor is read means it is not one of ours."""
    try:
        yield
    except InvalidCursor:
        raise
    except (
        binascii.Error,
        UnicodeDecodeError,
        ValueError,
        TypeError,
        KeyError,
        AttributeError,
        OverflowError,  # a time that cannot be expressed in UTC
        RecursionError,  # absurdly nested JSON
    ):
        raise InvalidCursor("not a cursor from this service") from None


def decode_payload(cursor: str) -> dict[str, Any]:
    """The JSON object a cursor holds; call inside `reading_cursor()`."""
    payload = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    if not isinstance(payload, dict):
        raise InvalidCursor("not a cursor from this service")
    return payload


def utc_time(value: str) -> datetime:
    """A cursor's ISO 8601 time, which must name its zone, in UTC."""
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise InvalidCursor("cursor time without a time zone")
    return moment.astimezone(UTC)
