"""Text round-trips unchanged on both databases; titles and previews never split a character
and show only what is visible."""

import asyncio
import uuid
from collections.abc import Coroutine
from typing import Any, TypeVar

import httpx
import pytest
import regex
from hypothesis import HealthCheck, given, settings

from app.kit.db.engine import Database
from app.kit.text import LABEL_MAX_CLUSTER_CHARS, UNTITLED, make_preview, make_title
from tests.api.helpers import (
    CHAT,
    assert_stream_succeeded,
    get_session,
    list_sessions,
    send,
    send_stream,
    session_url,
    stored_messages,
)
from tests.labels import INVISIBLE, has_visible, label_texts, zalgo

T = TypeVar("T")

FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466"  # 7 code points
WOMAN_TECHNOLOGIST = "\U0001f469\u200d\U0001f4bb"
FLAG_FR = "\U0001f1eb\U0001f1f7"
E_ACUTE_COMBINING = "e\u0301"
SHALOM = "\u05e9\u05dc\u05d5\u05dd"

TEXTS = [
    pytest.param("Emoji \U0001f600\U0001f389\U0001f680 and \U00010348 (Gothic)", id="4-byte"),
    pytest.param(f"ZWJ {FAMILY} {WOMAN_TECHNOLOGIST} flag {FLAG_FR}", id="zwj"),
    pytest.param(
        f"caf{E_ACUTE_COMBINING} Z\u0364\u0311\u0313\u0324\u0354 \u0915\u094d\u0937", id="combining"
    ),
    pytest.param("'; DROP TABLE chat_sessions; --", id="sql-injection"),
    pytest.param("100% _done_ C:\\path\\to\\file \\' \\\" $1 ? :name", id="sql-metachars"),
    pytest.param("\u0645\u0631\u062d\u0628\u0627 \u05e9\u05dc\u05d5\u05dd \u202eevil", id="rtl"),
    pytest.param("  leading and trailing whitespace\t\n", id="outer-whitespace"),
    pytest.param("line 1\r\nline 2\n\n\tindented", id="newlines"),
    pytest.param("\ufeffBOM, \u200bzero width, \ufffd replacement", id="invisible"),
    pytest.param("\U0001f600" * 10 + "x" * 31_990, id="32000-chars"),
]


@pytest.mark.parametrize("text", TEXTS)
async def test_plain_message_round_trips_exactly(
    client: httpx.AsyncClient, database: Database, text: str
) -> None:
    data = await send(client, text, session_id="s")

    session = await get_session(client, "s")
    user, assistant = session["messages"]
    assert user["content"].encode() == text.encode()
    assert assistant["content"] == data["response"]
    assert f'You said: "{text.strip()}"' in assistant["content"]
    assert session["title"] == make_title(text)
    [row, _] = await stored_messages(database, "s")
    assert row["content"].encode() == text.encode()


@pytest.mark.parametrize("text", TEXTS)
async def test_streamed_message_round_trips_exactly(client: httpx.AsyncClient, text: str) -> None:
    result = await send_stream(client, {"message": text, "session_id": "s"})

    assert_stream_succeeded(result)
    session = await get_session(client, "s")
    user, assistant = session["messages"]
    assert user["content"].encode() == text.encode()
    assert assistant["content"].encode() == result.text.encode()
    assert f'You said: "{text.strip()}"' in result.text


async def test_json_escapes_are_decoded_before_storing(client: httpx.AsyncClient) -> None:
    body = b'{"message": "\\ud83d\\ude00 caf\\u00e9 \\u0645", "session_id": "s"}'

    response = await client.post(CHAT, content=body, headers={"content-type": "application/json"})

    assert response.status_code == 200, response.text
    content = (await get_session(client, "s"))["messages"][0]["content"]
    assert content == "\U0001f600 caf\u00e9 \u0645"


async def test_user_id_with_sql_metacharacters_round_trips(client: httpx.AsyncClient) -> None:
    user_id = "o'brien\\%_\U0001f600"
    data = await send(client, "hi", user_id=user_id)

    listed = await list_sessions(client, user_id=user_id)

    assert [s["session_id"] for s in listed["sessions"]] == [data["session_id"]]
    assert (await list_sessions(client, user_id="o'brien\\%_"))["total"] == 0


def _assert_cut_between_graphemes(original: str, shortened: str) -> None:
    """`shortened` is a prefix of the collapsed text ending on a grapheme cluster boundary."""
    collapsed = regex.sub(r"\s+", " ", original).strip()
    body = shortened.removesuffix("...")
    assert collapsed.startswith(body)
    boundaries = {0}
    position = 0
    for cluster in regex.findall(r"\X", collapsed):
        position += len(cluster)
        boundaries.add(position)
    assert len(body) in boundaries, (body, collapsed)


@pytest.mark.parametrize(
    ("message", "title"),
    [
        # The cluster does not fit in the 47 characters before "...": dropped whole.
        pytest.param("a" * 46 + FAMILY + " and more text", "a" * 46 + "...", id="zwj-dropped"),
        # It fits exactly: kept whole.
        pytest.param(
            "a" * 40 + FAMILY + " and more text", "a" * 40 + FAMILY + "...", id="zwj-kept"
        ),
        pytest.param(
            "a" * 46 + E_ACUTE_COMBINING + " more text", "a" * 46 + "...", id="combining-dropped"
        ),
        pytest.param(
            "a" * 45 + E_ACUTE_COMBINING + " more text",
            "a" * 45 + E_ACUTE_COMBINING + "...",
            id="combining-kept",
        ),
        pytest.param("a" * 46 + FLAG_FR + " more text", "a" * 46 + "...", id="flag-dropped"),
        pytest.param("\U0001f600" * 60, "\U0001f600" * 47 + "...", id="single-code-point-emoji"),
    ],
)
async def test_title_never_splits_a_grapheme_cluster(
    client: httpx.AsyncClient, message: str, title: str
) -> None:
    await send(client, message, session_id="s")

    session = await get_session(client, "s")

    assert session["title"] == title
    assert len(session["title"]) <= 50
    _assert_cut_between_graphemes(message, session["title"])


async def test_last_message_never_splits_a_grapheme_cluster(client: httpx.AsyncClient) -> None:
    # The reply starts 'You said: "' (11 characters): the family would end at 102 > 97.
    message = "b" * 84 + FAMILY + " tail"
    data = await send(client, message, session_id="s")

    last = (await get_session(client, "s"))["last_message"]

    assert last == 'You said: "' + "b" * 84 + "..."
    assert last == make_preview(data["response"])
    _assert_cut_between_graphemes(data["response"], last)


# --- Labels show only what is visible (app/kit/text.py) ------------------------------


@pytest.mark.parametrize(
    ("message", "title"),
    [
        pytest.param(zalgo(160), zalgo(160)[:LABEL_MAX_CLUSTER_CHARS], id="zalgo"),
        pytest.param(
            zalgo(160) + " and the question",
            zalgo(160)[:LABEL_MAX_CLUSTER_CHARS] + " and the question",
            id="zalgo-then-words",
        ),
        pytest.param("\u202eevil.exe " * 10, ("evil.exe " * 6)[:47] + "...", id="rlo-cut"),
        pytest.param(
            "\u2067\u05e9\u05dc\u05d5\u05dd\u2069 hi", "\u05e9\u05dc\u05d5\u05dd hi", id="rli"
        ),
        pytest.param("\u200b\u202e \u0301\ufe0f\u2800\u3164", UNTITLED, id="nothing-visible"),
        pytest.param("".join(INVISIBLE), UNTITLED, id="every-invisible-kind"),
    ],
)
async def test_title_and_last_message_show_only_what_is_visible(
    client: httpx.AsyncClient, database: Database, message: str, title: str
) -> None:
    data = await send(client, message, session_id="s")

    session = await get_session(client, "s")
    [listed] = (await list_sessions(client))["sessions"]
    assert session["title"] == listed["title"] == title
    # The echo reply quotes the message, controls and all: the preview leaves them out.
    assert session["last_message"] == listed["last_message"] == make_preview(data["response"])
    assert not regex.search(r"\p{Bidi_Control}", session["last_message"])
    [row, _] = await stored_messages(database, "s")
    assert row["content"] == session["messages"][0]["content"] == message


@pytest.mark.parametrize(
    ("chosen", "title"),
    [
        pytest.param("\u202eevil.exe", "evil.exe", id="rlo"),
        pytest.param(
            "Plans \u2067\u05e9\u05dc\u05d5\u05dd\u2069", "Plans \u05e9\u05dc\u05d5\u05dd", id="rli"
        ),
        pytest.param("\u200b\u0301", UNTITLED, id="nothing-visible"),
        pytest.param(zalgo(190), zalgo(190)[:LABEL_MAX_CLUSTER_CHARS], id="zalgo"),
    ],
)
async def test_a_title_set_by_hand_follows_the_same_rules(
    client: httpx.AsyncClient, chosen: str, title: str
) -> None:
    await send(client, "hello", session_id="s")

    response = await client.patch(session_url("s"), json={"title": chosen})

    assert response.status_code == 200, response.text
    assert response.json()["title"] == title
    assert (await get_session(client, "s"))["title"] == title


async def test_any_first_message_round_trips_and_labels_as_the_service_makes_them(
    client: httpx.AsyncClient,
) -> None:
    """Through the API, on both databases: the message is stored as sent, and its labels are
    what make_title and make_preview give, which show what is visible and no bidi control."""
    loop = asyncio.get_running_loop()

    def call(request: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(request, loop).result()

    @settings(
        max_examples=30,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(message=label_texts.filter(lambda text: text.strip()))
    def check(message: str) -> None:
        session_id = uuid.uuid4().hex
        data = call(send(client, message, session_id=session_id))
        session = call(get_session(client, session_id))

        assert session["messages"][0]["content"] == message
        assert session["title"] == make_title(message)
        assert session["last_message"] == make_preview(data["response"])
        assert not regex.search(r"\p{Bidi_Control}", session["title"] + session["last_message"])
        assert (session["title"] == UNTITLED) == (not has_visible(message))

    await asyncio.to_thread(check)
