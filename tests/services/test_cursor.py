"""The sidebar's opaque cursors: what `encode_cursor` writes `decode_cursor` reads back
exactly, and anything else is refused with `InvalidCursor` (never another exception)."""

import base64
import json
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from app.sessions.cursor import (
    SEARCH_MAX_OFFSET,
    InvalidCursor,
    SearchPosition,
    decode_cursor,
    encode_cursor,
    encode_search_cursor,
    search_fingerprint,
)
from app.sessions.queries import ListPosition

# What the list route accepts as `cursor` (app/sessions/endpoints.py: CursorQuery).
ROUTE_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")
ROUTE_MAX_LENGTH = 512

# Deterministic, like tests/fuzz, so that CI is reproducible.
FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)

A_TIME = datetime(2025, 11, 3, 10, 45, 23, 512345, tzinfo=UTC)
AN_ID = uuid.UUID("3f0c9a52-6d1e-4f7b-9f6a-2c8e5b7d1a90")


def b64(raw: bytes) -> str:
    """base64url without padding, as the service writes cursors."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def payload_cursor(payload: Any) -> str:
    return b64(json.dumps(payload).encode())


def valid_payload(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"v": 1, "p": True, "u": A_TIME.isoformat(), "i": AN_ID.hex}
    payload.update(changes)
    return payload


def assert_refused(cursor: str) -> None:
    with pytest.raises(InvalidCursor):
        decode_cursor(cursor)


def decode_or_refuse(cursor: str) -> ListPosition | SearchPosition | None:
    """The decoded position, or None when refused with InvalidCursor; anything else raises."""
    try:
        return decode_cursor(cursor)
    except InvalidCursor:
        return None


# --- Round trip ---------------------------------------------------------------------------


@pytest.mark.parametrize("pinned", [True, False])
def test_round_trip_keeps_every_field_exactly(pinned: bool) -> None:
    position = ListPosition(pinned=pinned, updated_at=A_TIME, id=AN_ID)

    decoded = decode_cursor(encode_cursor(position))

    assert decoded == position
    assert decoded.pinned is pinned
    assert decoded.updated_at.microsecond == 512345
    assert decoded.updated_at.utcoffset() == timedelta(0)
    assert isinstance(decoded.id, uuid.UUID)


def test_a_cursor_is_opaque_url_safe_text_the_route_accepts() -> None:
    cursor = encode_cursor(ListPosition(pinned=False, updated_at=A_TIME, id=AN_ID))

    assert ROUTE_PATTERN.fullmatch(cursor), cursor
    assert "=" not in cursor
    assert len(cursor) <= ROUTE_MAX_LENGTH


def test_different_positions_have_different_cursors() -> None:
    positions = [
        ListPosition(pinned=True, updated_at=A_TIME, id=AN_ID),
        ListPosition(pinned=False, updated_at=A_TIME, id=AN_ID),
        ListPosition(pinned=True, updated_at=A_TIME + timedelta(microseconds=1), id=AN_ID),
        ListPosition(pinned=True, updated_at=A_TIME, id=uuid.UUID(int=AN_ID.int + 1)),
    ]

    assert len({encode_cursor(position) for position in positions}) == len(positions)


@FUZZ
@given(
    pinned=st.booleans(),
    updated_at=st.datetimes(timezones=st.just(UTC)),
    session_id=st.uuids(),
)
def test_round_trip_of_any_utc_position(
    pinned: bool, updated_at: datetime, session_id: uuid.UUID
) -> None:
    position = ListPosition(pinned=pinned, updated_at=updated_at, id=session_id)

    cursor = encode_cursor(position)
    decoded = decode_cursor(cursor)

    assert decoded == position
    assert decoded.updated_at.utcoffset() == timedelta(0)
    assert ROUTE_PATTERN.fullmatch(cursor)
    assert len(cursor) <= ROUTE_MAX_LENGTH


# Whole-minute offsets, as real time zones have (the database hands out UTC anyway).
OFFSETS = st.integers(min_value=-23 * 60, max_value=23 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)


@FUZZ
@given(
    updated_at=st.datetimes(
        min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30), timezones=OFFSETS
    )
)
def test_round_trip_keeps_the_instant_of_other_offsets(updated_at: datetime) -> None:
    position = ListPosition(pinned=False, updated_at=updated_at, id=AN_ID)

    decoded = decode_cursor(encode_cursor(position))

    assert isinstance(decoded, ListPosition)
    assert decoded.updated_at == updated_at
    assert decoded.updated_at.utcoffset() is not None


# --- Refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param("", id="empty"),
        pytest.param("not-a-cursor", id="garbage"),
        pytest.param("a", id="impossible-base64-length"),
        pytest.param("!!!!", id="not-base64"),
        pytest.param("é", id="non-ascii"),
        pytest.param(b64(b"\xff\xfe\x00garbage"), id="not-utf8"),
        pytest.param(b64(b"hello world"), id="not-json"),
        pytest.param(b64(b'{"v":1,"p":true'), id="truncated-json"),
        pytest.param(b64(b"[" * 300), id="unclosed-arrays"),
        pytest.param(b64(b'{"v":' + b"1" * 5000 + b"}"), id="huge-number"),
        pytest.param(payload_cursor(None), id="json-null"),
        pytest.param(payload_cursor(1), id="json-number"),
        pytest.param(payload_cursor("v"), id="json-string"),
        pytest.param(payload_cursor([1, True, "u", "i"]), id="json-list"),
        pytest.param(payload_cursor({}), id="empty-object"),
        pytest.param(payload_cursor(valid_payload(v=2)), id="version-2"),
        pytest.param(payload_cursor(valid_payload(v=0)), id="version-0"),
        pytest.param(payload_cursor(valid_payload(v="1")), id="version-as-text"),
        pytest.param(payload_cursor(valid_payload(v=None)), id="version-null"),
        pytest.param(payload_cursor(valid_payload(p=1)), id="pinned-as-number"),
        pytest.param(payload_cursor(valid_payload(p="true")), id="pinned-as-text"),
        pytest.param(payload_cursor(valid_payload(p=None)), id="pinned-null"),
        pytest.param(
            payload_cursor(valid_payload(u=A_TIME.replace(tzinfo=None).isoformat())),
            id="naive-time",
        ),
        pytest.param(payload_cursor(valid_payload(u="2025-11-03")), id="date-only"),
        pytest.param(payload_cursor(valid_payload(u="yesterday")), id="time-not-iso"),
        pytest.param(payload_cursor(valid_payload(u=1762166723)), id="time-as-number"),
        pytest.param(payload_cursor(valid_payload(u=None)), id="time-null"),
        pytest.param(payload_cursor(valid_payload(i="not-hex")), id="id-not-hex"),
        pytest.param(payload_cursor(valid_payload(i=AN_ID.hex[:-1])), id="id-too-short"),
        pytest.param(payload_cursor(valid_payload(i=7)), id="id-as-number"),
        pytest.param(payload_cursor(valid_payload(i=None)), id="id-null"),
        pytest.param(
            payload_cursor({k: v for k, v in valid_payload().items() if k != "u"}),
            id="time-missing",
        ),
        pytest.param(
            payload_cursor({k: v for k, v in valid_payload().items() if k != "i"}), id="id-missing"
        ),
        pytest.param(
            payload_cursor({k: v for k, v in valid_payload().items() if k != "p"}),
            id="pinned-missing",
        ),
    ],
)
def test_decode_refuses_what_the_service_did_not_issue(cursor: str) -> None:
    assert_refused(cursor)


def test_the_unmodified_payload_of_those_refusals_is_accepted() -> None:
    # The refusals above each change one thing of this payload: it is itself valid.
    assert decode_cursor(payload_cursor(valid_payload())) == ListPosition(
        pinned=True, updated_at=A_TIME, id=AN_ID
    )


def test_a_tampered_cursor_is_refused() -> None:
    cursor = encode_cursor(ListPosition(pinned=False, updated_at=A_TIME, id=AN_ID))
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))

    assert_refused(b64(raw[:-1]))  # the closing brace cut off
    assert_refused(b64(raw.replace(b'"v":1', b'"v":9')))
    assert_refused(cursor[: len(cursor) // 2])


def test_deeply_nested_json_is_refused() -> None:
    assert_refused(b64(b"[" * 100_000))


@FUZZ
@given(st.text())
@example("")
@example("e30")  # {}
@example("bnVsbA")  # null
def test_any_text_is_decoded_or_refused_with_invalid_cursor(cursor: str) -> None:
    decode_or_refuse(cursor)


@FUZZ
@given(st.from_regex(ROUTE_PATTERN, fullmatch=True))
def test_any_text_the_route_lets_through_is_decoded_or_refused(cursor: str) -> None:
    decode_or_refuse(cursor)


@FUZZ
@given(st.binary(max_size=600))
def test_any_bytes_are_decoded_or_refused_with_invalid_cursor(raw: bytes) -> None:
    decode_or_refuse(b64(raw))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=3), children, max_size=4)
    ),
    max_leaves=12,
)
# Anything else a field could hold: other versions, types, times and ids.
OTHER_VALUES = {
    "v": st.sampled_from([2, 0, -1, 1.5, "1", None]) | JSON_VALUES,
    "p": JSON_VALUES,
    "u": st.datetimes().map(datetime.isoformat) | st.text(max_size=40) | JSON_VALUES,
    "i": st.text(max_size=40) | JSON_VALUES,
}


@st.composite
def payloads(draw: st.DrawFn) -> tuple[dict[str, Any], ListPosition, set[str]]:
    """A valid payload with some of its fields removed or replaced: (payload, the position
    the valid payload names, the fields changed)."""
    position = ListPosition(
        pinned=draw(st.booleans()),
        updated_at=draw(st.datetimes(timezones=st.just(UTC))),
        id=draw(st.uuids()),
    )
    payload: dict[str, Any] = {
        "v": 1,
        "p": position.pinned,
        "u": position.updated_at.isoformat(),
        "i": position.id.hex,
    }
    changed = draw(st.sets(st.sampled_from(sorted(payload))))
    for key in changed:
        if draw(st.booleans()):
            del payload[key]
        else:
            payload[key] = draw(OTHER_VALUES[key])
    return payload, position, changed


@FUZZ
@given(payloads())
def test_any_json_payload_is_decoded_or_refused_with_invalid_cursor(
    case: tuple[dict[str, Any], ListPosition, set[str]],
) -> None:
    payload, position, changed = case

    decoded = decode_or_refuse(payload_cursor(payload))

    if not changed:
        assert decoded == position
    elif decoded is not None:
        # Only a complete, well-typed payload of version 1 with an aware time is accepted.
        assert isinstance(decoded, ListPosition)
        assert payload["v"] == 1
        assert isinstance(payload["p"], bool)
        assert decoded.pinned is payload["p"]
        assert decoded.updated_at.utcoffset() is not None
        assert decoded.id == uuid.UUID(hex=payload["i"])


# --- Search cursors ------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [1, 20, SEARCH_MAX_OFFSET])
def test_search_cursor_round_trip(offset: int) -> None:
    position = SearchPosition(offset=offset, fingerprint=search_fingerprint(["kube"], "u", False))

    cursor = encode_search_cursor(position)

    assert ROUTE_PATTERN.fullmatch(cursor)
    assert decode_cursor(cursor) == position


def test_search_fingerprint_tells_searches_apart() -> None:
    one = search_fingerprint(["kube"], "alice", False)

    assert one == search_fingerprint(["kube"], "alice", False)
    assert one != search_fingerprint(["kube"], "bob", False)
    assert one != search_fingerprint(["kube"], "alice", True)
    assert one != search_fingerprint(["kube", "dep"], "alice", False)


@pytest.mark.parametrize(
    "payload",
    [
        {"v": 1, "o": 0, "f": "abc"},
        {"v": 1, "o": -20, "f": "abc"},
        {"v": 1, "o": SEARCH_MAX_OFFSET + 1, "f": "abc"},
        {"v": 1, "o": True, "f": "abc"},
        {"v": 1, "o": 20.0, "f": "abc"},
        {"v": 1, "o": "20", "f": "abc"},
        {"v": 1, "o": 20, "f": 7},
        {"v": 1, "o": 20},
        {"v": 2, "o": 20, "f": "abc"},
    ],
)
def test_malformed_search_cursors_are_refused(payload: dict[str, Any]) -> None:
    assert_refused(payload_cursor(payload))
