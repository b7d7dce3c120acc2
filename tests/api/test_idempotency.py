"""The `Idempotency-Key` header on the routes that start a reply: a request sent again with
its key stores nothing twice and answers what the first answered; the same key with another
request is a 422; requests with the same key at once store one message; keys expire."""

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from app.assistants import AssistantError
from app.kit.db.engine import Database
from app.kit.db.tables import chat_idempotency_keys
from app.kit.db.types import utc_now
from app.replies.liveness import ProcessLiveness
from tests.api.helpers import (
    CHAT,
    STREAM,
    ScriptedAssistant,
    StreamResult,
    assert_stream_succeeded,
    count_rows,
    open_stream,
    parse_sse,
    session_url,
    stored_messages,
    use_assistant,
)
from tests.conftest import LiveServer

Json = dict[str, Any]


def keyed(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


def regenerate_url(session_id: str, message_id: str) -> str:
    return f"{session_url(session_id)}/messages/{message_id}/regenerate"


async def stored_keys(database: Database) -> int:
    async with database.read() as conn:
        found = await conn.execute(select(func.count()).select_from(chat_idempotency_keys))
        return int(found.scalar_one())


async def test_a_chat_sent_again_answers_its_stored_reply_and_stores_nothing(
    client: httpx.AsyncClient, database: Database
) -> None:
    key = str(uuid.uuid4())
    first = await client.post(CHAT, json={"message": "Hello"}, headers=keyed(key))
    assert first.status_code == 200, first.text

    # Formatting and ignored fields are not part of the request.
    again = await client.post(
        CHAT,
        content=b'{ "unknown": 1,  "message": "Hello" }',
        headers={**keyed(key), "content-type": "application/json"},
    )

    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    assert await count_rows(database) == (1, 2)
    assert await stored_keys(database) == 1
    # Without a key, the same message is a new one.
    fresh = await client.post(CHAT, json={"message": "Hello"})
    assert fresh.json()["session_id"] != first.json()["session_id"]
    assert await count_rows(database) == (2, 4)


async def test_an_edit_sent_again_stores_one_sibling(
    client: httpx.AsyncClient, database: Database
) -> None:
    sent = (await client.post(CHAT, json={"message": "one", "session_id": "s"})).json()
    edit = {"message": "one, edited", "session_id": "s", "edit_of": sent["user_message_id"]}

    first = await client.post(CHAT, json=edit, headers=keyed("edit-1"))
    again = await client.post(CHAT, json=edit, headers=keyed("edit-1"))

    assert first.status_code == again.status_code == 200, again.text
    assert again.json() == first.json()
    assert len(await stored_messages(database, "s")) == 4


async def test_the_same_key_with_another_request_is_a_422(
    client: httpx.AsyncClient, database: Database
) -> None:
    first = await client.post(CHAT, json={"message": "Hello"}, headers=keyed("k1"))
    assert first.status_code == 200, first.text
    session_id = first.json()["session_id"]

    other_text = await client.post(CHAT, json={"message": "Bye"}, headers=keyed("k1"))
    other_session = await client.post(
        CHAT, json={"message": "Hello", "session_id": session_id}, headers=keyed("k1")
    )
    other_route = await client.post(STREAM, json={"message": "Hello"}, headers=keyed("k1"))

    for response in (other_text, other_session, other_route):
        assert response.status_code == 422, response.text
        assert "Idempotency-Key was used for a different request" in response.json()["detail"]
    assert await count_rows(database) == (1, 2)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (b"", "1 to 255"),
        (b"x" * 256, "1 to 255"),
        ("clé".encode(), "printable ASCII"),
        (b"tab\tinside", "printable ASCII"),
    ],
    ids=["empty", "too-long", "not-ascii", "control-character"],
)
async def test_a_malformed_key_is_a_422_that_says_why(
    client: httpx.AsyncClient, database: Database, value: bytes, problem: str
) -> None:
    for url in (CHAT, STREAM):
        # As bytes: a header's value as it is on the wire (the server reads it as Latin-1).
        headers = {b"Idempotency-Key": value}
        response = await client.post(url, json={"message": "Hello"}, headers=headers)

        assert response.status_code == 422, response.text
        [error] = response.json()["detail"]
        assert error["loc"] == ["header", "Idempotency-Key"]
        assert problem in error["msg"]
    assert await count_rows(database) == (0, 0)


async def test_the_longest_key_and_a_quoted_one_are_keys(client: httpx.AsyncClient) -> None:
    for key in ("~" * 255, '"8e03978e-40d5-43e8-bc93-6894a57f9324"'):
        first = await client.post(CHAT, json={"message": "Hello"}, headers=keyed(key))
        again = await client.post(CHAT, json={"message": "Hello"}, headers=keyed(key))
        assert first.status_code == 200, first.text
        assert again.json() == first.json()


async def test_requests_with_the_same_key_at_once_store_one_message(
    live_server: LiveServer, client: httpx.AsyncClient, database: Database
) -> None:
    gate = asyncio.Event()
    assistant = ScriptedAssistant(["the reply"], gate=gate, hold_reply=True)
    body = {"message": "Once only", "session_id": "s"}
    with use_assistant(live_server, assistant):
        sent = [
            asyncio.create_task(client.post(CHAT, json=body, headers=keyed("same")))
            for _ in range(4)
        ]
        async with asyncio.timeout(60):
            await assistant.asked.wait()
            # The others answer while the reply is still held: it is being generated.
            pending = set(sent)
            while len(pending) > 1:
                _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        gate.set()
        responses = await asyncio.gather(*sent)

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200, 409, 409, 409], [r.text for r in responses]
    for response in responses:
        if response.status_code == 409:
            assert "still being answered" in response.json()["detail"]
            assert "/api/v1/chat/sessions/s/stream" in response.json()["detail"]
    assert assistant.calls == 1
    assert len(await stored_messages(database, "s")) == 2
    # Once the reply is saved, the same request answers it.
    [done] = [response for response in responses if response.status_code == 200]
    again = await client.post(CHAT, json=body, headers=keyed("same"))
    assert again.status_code == 200, again.text
    assert again.json() == done.json()


async def test_streams_with_the_same_key_at_once_follow_one_reply(
    client: httpx.AsyncClient, database: Database
) -> None:
    body = {"message": "Stream once", "session_id": "s"}

    responses = await asyncio.gather(
        *(client.post(STREAM, json=body, headers=keyed("same")) for _ in range(4))
    )

    replies = set()
    for response in responses:
        assert response.status_code == 200, response.text
        events = parse_sse(response.text)
        assert events[0].event == "session"
        assert events[-1].event == "done"
        assert events[-1].data["status"] == "complete"
        replies.add(
            (events[0].data["message_id"], "".join(e.data.get("content", "") for e in events))
        )
    assert len(replies) == 1, replies
    assert len(await stored_messages(database, "s")) == 2


async def test_a_stream_sent_again_follows_the_reply_then_replays_it(
    live_server: LiveServer, client: httpx.AsyncClient, database: Database
) -> None:
    gate = asyncio.Event()
    body = {"message": "Tell me", "session_id": "s"}
    with use_assistant(live_server, ScriptedAssistant(["first ", "second"], gate=gate)):
        async with open_stream(live_server, body, keyed("stream-1")) as first:
            await first.read_until("delta")
            # The response was lost: the client sends the request again, while it is generated.
            async with open_stream(live_server, body, keyed("stream-1")) as again:
                [started] = await again.read_until("session")
                assert started.data == first.events[0].data
                assert started.id == first.events[0].id
                gate.set()
                await again.read_until("done")
            await first.read_until("done")

    assert again.text == first.text == "first second"
    assert again.events[-1].data == first.events[-1].data
    assert again.events[-1].data["status"] == "complete"
    # Once it has ended: replayed from what is stored.
    replayed = await client.post(STREAM, json=body, headers=keyed("stream-1"))
    events = parse_sse(replayed.text)
    assert [e.event for e in events] == ["session", "delta", "done"]
    assert events[0].data == first.events[0].data
    assert events[1].data == {"content": "first second"}
    assert events[2].data == first.events[-1].data
    assert len(await stored_messages(database, "s")) == 2


async def test_a_failed_reply_sent_again_answers_the_same_error_and_stores_nothing(
    live_server: LiveServer, client: httpx.AsyncClient, database: Database
) -> None:
    failing = ScriptedAssistant([], fail_with=AssistantError("slow", kind="timeout"))
    body = {"message": "Hello", "session_id": "s"}
    with use_assistant(live_server, failing):
        first = await client.post(CHAT, json=body, headers=keyed("k"))
        again = await client.post(CHAT, json=body, headers=keyed("k"))

    assert first.status_code == again.status_code == 504, again.text
    assert again.json() == first.json()
    assert failing.calls == 1
    rows = await stored_messages(database, "s")
    assert [row["role"] for row in rows] == ["user", "assistant"]
    assert rows[1]["metadata"]["status"] == "failed"


async def test_a_regeneration_sent_again_makes_one_new_reply(
    client: httpx.AsyncClient, database: Database
) -> None:
    sent = (await client.post(CHAT, json={"message": "one", "session_id": "s"})).json()
    url = regenerate_url("s", sent["message_id"])

    plain = await client.post(url, params={"stream": "false"}, headers=keyed("r1"))
    plain_again = await client.post(url, params={"stream": "false"}, headers=keyed("r1"))
    streamed = await client.post(url, headers=keyed("r2"))
    streamed_again = await client.post(url, headers=keyed("r2"))
    # `stream` is part of the request.
    other = await client.post(url, headers=keyed("r1"))

    assert plain.status_code == plain_again.status_code == 200, plain_again.text
    assert plain_again.json() == plain.json()
    assert plain.json()["user_message_id"] == sent["user_message_id"]
    first_started, first_done = assert_stream_succeeded(_result(streamed))
    again_started, again_done = assert_stream_succeeded(_result(streamed_again))
    assert again_started.data == first_started.data
    assert again_done.data == first_done.data
    assert other.status_code == 422, other.text
    # The first reply and two regenerated ones, no more.
    assert len(await stored_messages(database, "s")) == 4


def _result(response: httpx.Response) -> StreamResult:
    assert response.status_code == 200, response.text
    return StreamResult(response=response, events=parse_sse(response.text))


async def test_each_users_keys_are_their_own(client: httpx.AsyncClient, database: Database) -> None:
    alices = await client.post(
        CHAT, json={"message": "alice", "user_id": "alice"}, headers=keyed("k")
    )
    bobs = await client.post(CHAT, json={"message": "bob", "user_id": "bob"}, headers=keyed("k"))
    nobodys = await client.post(CHAT, json={"message": "alice"}, headers=keyed("k"))

    for response in (alices, bobs, nobodys):
        assert response.status_code == 200, response.text
    assert len({r.json()["session_id"] for r in (alices, bobs, nobodys)}) == 3
    assert await count_rows(database) == (3, 6)
    assert await stored_keys(database) == 3


async def test_an_expired_key_is_a_new_key_and_the_sweep_deletes_it(
    client: httpx.AsyncClient, database: Database
) -> None:
    body = {"message": "Hello"}
    first = await client.post(CHAT, json=body, headers=keyed("old"))
    await client.post(CHAT, json=body, headers=keyed("fresh"))
    async with database.write() as conn:
        await conn.execute(
            update(chat_idempotency_keys)
            .where(chat_idempotency_keys.c.key == "old")
            .values(created_at=utc_now() - timedelta(hours=24, minutes=1))
        )

    again = await client.post(CHAT, json=body, headers=keyed("old"))

    assert again.status_code == 200, again.text
    assert again.json()["session_id"] != first.json()["session_id"]
    assert await count_rows(database) == (3, 6)
    # The key now names the new request; an expired one is deleted by the sweep.
    async with database.write() as conn:
        await conn.execute(
            update(chat_idempotency_keys)
            .where(chat_idempotency_keys.c.key == "fresh")
            .values(created_at=utc_now() - timedelta(hours=25))
        )
    liveness = ProcessLiveness(
        database,
        uuid.uuid4(),
        heartbeat_seconds=1,
        stale_seconds=30,
        idempotency_key_ttl=timedelta(hours=24),
    )
    await liveness.sweep()
    async with database.read() as conn:
        left = await conn.execute(select(chat_idempotency_keys.c.key))
        assert left.scalars().all() == ["old"]
    renewed = await client.post(CHAT, json=body, headers=keyed("old"))
    assert renewed.json() == again.json()


async def test_a_key_goes_with_its_session(client: httpx.AsyncClient, database: Database) -> None:
    first = await client.post(
        CHAT, json={"message": "Hello", "session_id": "s"}, headers=keyed("k")
    )
    assert first.status_code == 200, first.text

    deleted = await client.delete(session_url("s"))

    assert deleted.status_code == 204, deleted.text
    assert await stored_keys(database) == 0


async def test_a_stream_sent_again_after_its_stop_replays_what_was_kept(
    live_server: LiveServer, client: httpx.AsyncClient, database: Database
) -> None:
    """Stopped, then sent again with its key: the part kept and `done` (incomplete), with the
    first stream's event ids; resumed after the replay's last delta, only the end."""
    gate = asyncio.Event()
    assistant = ScriptedAssistant(["first ", "second"], gate=gate)
    body = {"message": "Tell me", "session_id": "s"}
    with use_assistant(live_server, assistant):
        async with open_stream(live_server, body, keyed("stop-1")) as first:
            await first.read_until("delta")
            stopped = await client.post(f"{session_url('s')}/stop")
            assert stopped.json() == {"stopped": True}, stopped.text
            await first.read_until("done")
        again = await client.post(STREAM, json=body, headers=keyed("stop-1"))

    events = parse_sse(again.text)
    assert [e.event for e in events] == ["session", "delta", "done"]
    assert [e.data for e in events] == [e.data for e in first.events]
    assert [e.id for e in events] == [e.id for e in first.events]
    assert events[-1].data["status"] == "incomplete"
    assert assistant.calls == 1
    rows = await stored_messages(database, "s")
    assert [(row["role"], row["content"]) for row in rows] == [
        ("user", "Tell me"),
        ("assistant", "first "),
    ]
    resumed = await client.get(
        f"{session_url('s')}/stream", headers={"Last-Event-ID": str(events[1].id)}
    )
    assert [(e.event, e.data) for e in parse_sse(resumed.text)] == [("done", events[-1].data)]


async def test_a_failed_stream_sent_again_asks_nothing_and_ends_failed(
    live_server: LiveServer, client: httpx.AsyncClient, database: Database
) -> None:
    failing = ScriptedAssistant([], fail_with=AssistantError("down", kind="unavailable"))
    body = {"message": "Hello", "session_id": "s"}
    with use_assistant(live_server, failing):
        first = parse_sse((await client.post(STREAM, json=body, headers=keyed("f"))).text)
        again = parse_sse((await client.post(STREAM, json=body, headers=keyed("f"))).text)

    assert [e.event for e in first] == ["session", "error"]
    # As documented: the stored status, `failed`, for a reply that came to nothing.
    assert [e.event for e in again] == ["session", "done"]
    assert again[0].data == first[0].data
    assert again[1].data == {
        "session_id": "s",
        "message_id": first[0].data["message_id"],
        "status": "failed",
    }
    assert failing.calls == 1
    assert len(await stored_messages(database, "s")) == 2
    # Another route with the key is another request; the same key from a regeneration too.
    regenerate = await client.post(
        regenerate_url("s", first[0].data["message_id"]), headers=keyed("f")
    )
    assert regenerate.status_code == 422, regenerate.text
    assert len(await stored_messages(database, "s")) == 2


async def test_ten_regenerations_with_the_same_key_at_once_make_one_reply(
    live_server: LiveServer, client: httpx.AsyncClient, database: Database
) -> None:
    sent = (await client.post(CHAT, json={"message": "one", "session_id": "s"})).json()
    url = regenerate_url("s", sent["message_id"])
    gate = asyncio.Event()
    assistant = ScriptedAssistant(["again"], gate=gate, hold_reply=True)
    with use_assistant(live_server, assistant):
        racing = [
            asyncio.create_task(
                client.post(url, params={"stream": "false"}, headers=keyed("regen"))
            )
            for _ in range(10)
        ]
        async with asyncio.timeout(60):
            await assistant.asked.wait()
            pending = set(racing)
            while len(pending) > 1:
                _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        gate.set()
        responses = await asyncio.gather(*racing)

    assert sorted(r.status_code for r in responses) == [200] + [409] * 9, [
        r.text for r in responses
    ]
    assert assistant.calls == 1
    [done] = [r.json() for r in responses if r.status_code == 200]
    rows = await stored_messages(database, "s")
    assert [row["content"] for row in rows] == ["one", sent["response"], "again"]
    detail = (await client.get(session_url("s"))).json()
    assert (detail["message_count"], detail["last_message"]) == (2, "again")
    assert detail["current_message_id"] == done["message_id"]
