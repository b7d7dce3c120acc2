"""Invalid input is refused with a 4xx before anything is written; limits are inclusive."""

import json
from typing import Any

import httpx
import pytest

from app.kit.db.engine import Database
from tests.api.helpers import (
    CHAT,
    SESSIONS,
    STREAM,
    count_rows,
    get_session,
    send,
    session_url,
)

ENDPOINTS = [pytest.param(CHAT, id="chat"), pytest.param(STREAM, id="stream")]


def _json(body: Any) -> bytes:
    # ensure_ascii keeps escapes such as \u0000 as escapes in the JSON text.
    return json.dumps(body, ensure_ascii=True).encode()


# (raw body, field the error is about: None when the body as a whole is refused)
INVALID_BODIES = [
    pytest.param(_json({}), "message", id="missing-message"),
    pytest.param(_json({"message": None}), "message", id="null-message"),
    pytest.param(_json({"message": 123}), "message", id="number-message"),
    pytest.param(_json({"message": ["hi"]}), "message", id="list-message"),
    pytest.param(_json({"message": ""}), "message", id="empty-message"),
    pytest.param(_json({"message": "   \n\t"}), "message", id="whitespace-message"),
    pytest.param(_json({"message": "\u3000\u00a0"}), "message", id="unicode-space-message"),
    pytest.param(_json({"message": "x" * 32_001}), "message", id="32001-chars"),
    pytest.param(_json({"message": "a\u0000b"}), "message", id="nul-message"),
    pytest.param(b'{"message": "\\ud800"}', "message", id="lone-surrogate"),
    pytest.param(b'{"message": "a\\udc00b"}', "message", id="lone-low-surrogate"),
    pytest.param(
        b'{"message": "hi", "session_id": "\\ud800"}',
        "session_id",
        id="surrogate-sid",
    ),
    pytest.param(
        b'{"message": "hi", "user_id": "\\ud800"}',
        "user_id",
        id="surrogate-uid",
    ),
    pytest.param(_json({"message": "hi", "session_id": ""}), "session_id", id="empty-sid"),
    pytest.param(_json({"message": "hi", "session_id": "has space"}), "session_id", id="space-sid"),
    pytest.param(_json({"message": "hi", "session_id": "a" * 129}), "session_id", id="129-sid"),
    pytest.param(_json({"message": "hi", "session_id": "a/b"}), "session_id", id="slash-sid"),
    pytest.param(_json({"message": "hi", "session_id": "a.b"}), "session_id", id="dot-sid"),
    pytest.param(_json({"message": "hi", "session_id": "ab\n"}), "session_id", id="newline-sid"),
    pytest.param(_json({"message": "hi", "session_id": 5}), "session_id", id="number-sid"),
    pytest.param(_json({"message": "hi", "user_id": "u" * 256}), "user_id", id="256-uid"),
    pytest.param(_json({"message": "hi", "user_id": ""}), "user_id", id="empty-uid"),
    pytest.param(_json({"message": "hi", "user_id": "a\u0000"}), "user_id", id="nul-uid"),
    pytest.param(_json({"message": "hi", "user_id": 7}), "user_id", id="number-uid"),
    pytest.param(_json({"message": True}), "message", id="boolean-message"),
    pytest.param(_json({"message": "hi", "session_id": False}), "session_id", id="boolean-sid"),
    pytest.param(_json(["message", "hi"]), None, id="list-body"),
    pytest.param(_json("hi"), None, id="string-body"),
    pytest.param(b"null", None, id="null-body"),
]


@pytest.mark.parametrize(("body", "field"), INVALID_BODIES)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_invalid_body_is_422_and_stores_nothing(
    client: httpx.AsyncClient, database: Database, endpoint: str, body: bytes, field: str | None
) -> None:
    response = await client.post(
        endpoint, content=body, headers={"content-type": "application/json"}
    )

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/json"
    errors = response.json()["detail"]
    assert isinstance(errors, list)
    assert errors
    if field is None:
        assert [e["loc"] for e in errors] == [["body"]]
    else:
        assert {tuple(e["loc"]) for e in errors} == {("body", field)}
    assert await count_rows(database) == (0, 0)


# FastAPI answers 422 when the body is not JSON, but 400 when it is not even UTF-8.
MALFORMED_BODIES = [
    pytest.param(b'{"message": "hi"', "application/json", 422, id="truncated-json"),
    pytest.param(b"{'message': 'hi'}", "application/json", 422, id="single-quotes"),
    pytest.param(b"", "application/json", 422, id="empty-body"),
    pytest.param(b'{"message": "\xff\xfe"}', "application/json", 400, id="invalid-utf8"),
    pytest.param(b'{"message": "hi"}', "text/plain", 422, id="text-plain"),
    pytest.param(b"message=hi", "application/x-www-form-urlencoded", 422, id="form"),
]


@pytest.mark.parametrize(("body", "content_type", "status"), MALFORMED_BODIES)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_malformed_body_is_refused_and_stores_nothing(
    client: httpx.AsyncClient,
    database: Database,
    endpoint: str,
    body: bytes,
    content_type: str,
    status: int,
) -> None:
    response = await client.post(endpoint, content=body, headers={"content-type": content_type})

    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    detail = response.json()["detail"]
    if status == 400:
        assert detail == "There was an error parsing the body"
    else:
        assert [e["loc"][0] for e in detail] == ["body"]
    assert await count_rows(database) == (0, 0)


@pytest.mark.parametrize(
    "message",
    [
        pytest.param("x" * 32_000, id="32000-chars"),
        pytest.param("  " + "x" * 32_000 + "\n\n", id="32000-chars-plus-outer-whitespace"),
        pytest.param("\U0001f600" * 32_000, id="32000-emoji"),
    ],
)
async def test_longest_message_is_accepted(client: httpx.AsyncClient, message: str) -> None:
    data = await send(client, message, session_id="long")

    session = await get_session(client, "long")
    assert session["messages"][0]["content"] == message
    assert data["response"].startswith('You said: "' + message.strip() + '"')


async def test_limits_of_ids_are_inclusive(client: httpx.AsyncClient) -> None:
    data = await send(client, "hi", session_id="S" * 128, user_id="U" * 255)

    assert data["session_id"] == "S" * 128
    listed = (await client.get(SESSIONS, params={"user_id": "U" * 255})).json()
    assert [s["session_id"] for s in listed["sessions"]] == ["S" * 128]


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        pytest.param({"page": "0"}, "page", id="page-0"),
        pytest.param({"page": "-1"}, "page", id="page-negative"),
        pytest.param({"page": "x"}, "page", id="page-text"),
        pytest.param({"page": "1.5"}, "page", id="page-fraction"),
        pytest.param({"page": "10000001"}, "page", id="page-huge"),
        pytest.param({"page_size": "0"}, "page_size", id="page-size-0"),
        pytest.param({"page_size": "101"}, "page_size", id="page-size-101"),
        pytest.param({"page_size": "-5"}, "page_size", id="page-size-negative"),
        pytest.param({"user_id": "a\u0000b"}, "user_id", id="user-id-nul"),
        pytest.param({"user_id": "u" * 256}, "user_id", id="user-id-256"),
        pytest.param({"user_id": ""}, "user_id", id="user-id-empty"),
    ],
)
async def test_invalid_list_query_is_422(
    client: httpx.AsyncClient, params: dict[str, str], loc: str
) -> None:
    response = await client.get(SESSIONS, params=params)

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/json"
    [error] = response.json()["detail"]
    assert error["loc"] == ["query", loc]


async def test_largest_page_size_and_page_are_accepted(client: httpx.AsyncClient) -> None:
    await send(client, "hi", session_id="s")

    first = (await client.get(SESSIONS, params={"page_size": 100})).json()
    last = (await client.get(SESSIONS, params={"page": 10_000_000, "page_size": 100})).json()

    assert [s["session_id"] for s in first["sessions"]] == ["s"]
    assert (first["page_size"], first["total"], first["total_pages"]) == (100, 1, 1)
    assert last["sessions"] == []
    assert (last["page"], last["total"], last["total_pages"]) == (10_000_000, 1, 1)


async def test_unknown_body_fields_are_ignored(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json={"message": "hi", "session_id": "s", "extra": 1})

    assert response.status_code == 200
    assert (await get_session(client, "s"))["message_count"] == 2


# Values a lax parser would turn into a boolean (Pydantic's lax mode takes all of these).
COERCIBLE_TO_BOOL = ["yes", "no", "true", "false", "on", "off", "1", "0", 1, 0, 1.0, 0.0]
BOOLEAN_BODY_FIELDS = ["pinned", "archived"]


@pytest.mark.parametrize("value", COERCIBLE_TO_BOOL, ids=repr)
@pytest.mark.parametrize("field", BOOLEAN_BODY_FIELDS)
async def test_a_boolean_body_field_takes_only_json_booleans(
    client: httpx.AsyncClient, field: str, value: object
) -> None:
    await send(client, "hi", session_id="s")
    before = await get_session(client, "s")

    response = await client.patch(session_url("s"), json={field: value})

    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", field]
    assert error["msg"] == "Input should be a valid boolean"
    assert await get_session(client, "s") == before


@pytest.mark.parametrize("field", BOOLEAN_BODY_FIELDS)
async def test_a_boolean_body_field_takes_true_and_false(
    client: httpx.AsyncClient, field: str
) -> None:
    await send(client, "hi", session_id="s")

    on = await client.patch(session_url("s"), json={field: True})
    off = await client.patch(session_url("s"), json={field: False})

    assert (on.status_code, off.status_code) == (200, 200), (on.text, off.text)
    assert (on.json()[field], off.json()[field]) == (True, False)
