"""A live reply's stream as written: events that queued up go out together, each its own
event with its own id; a delta is written as the model's own encoding would write it."""

import asyncio
import uuid

import pytest
from fastapi.sse import KEEPALIVE_COMMENT, ServerSentEvent

from app.kit.http import sse
from app.kit.http.sse import encoded
from app.replies.live import LiveReply, Sent
from app.replies.schemas import StreamDelta, StreamDone
from app.replies.streaming import live_frames, sent_frame

REPLY = uuid.UUID("12345678-1234-5678-1234-567812345678")


def _events(frames: bytes) -> list[dict[str, str]]:
    events = []
    for block in frames.decode().split("\n\n"):
        if block:
            events.append(dict(line.split(": ", 1) for line in block.split("\n")))
    return events


@pytest.mark.parametrize(
    "text",
    [
        "plain",
        "héllo 日本 😀",
        'quote " backslash \\ slash /',
        "\n\t\r\x00\x1f\x7f",
        "\u2028\u2029",
    ],
)
def test_a_delta_frame_is_the_models_encoding(text: str) -> None:
    sent = Sent(StreamDelta(content=text), 42)
    expected = encoded(ServerSentEvent(event="delta", data=sent.event, id=f"{REPLY}:42"))
    assert sent_frame(REPLY, sent) == expected


async def test_deltas_queued_while_the_stream_waits_are_written_together() -> None:
    live = LiveReply("s", REPLY, uuid.uuid4())
    frames = live_frames(REPLY, live.follow())
    live.add("one ")
    live.add("two ")
    live.add("three")
    first = await anext(frames)
    assert _events(first) == [
        {"event": "delta", "data": '{"content":"one "}', "id": f"{REPLY}:4"},
        {"event": "delta", "data": '{"content":"two "}', "id": f"{REPLY}:8"},
        {"event": "delta", "data": '{"content":"three"}', "id": f"{REPLY}:13"},
    ]
    live.finish(StreamDone(session_id="s", message_id=REPLY))
    [done] = _events(await anext(frames))
    assert (done["event"], done["id"]) == ("done", f"{REPLY}:13")
    with pytest.raises(StopAsyncIteration):
        await anext(frames)


async def test_following_from_an_offset_cuts_the_text_there_and_sends_none_twice() -> None:
    live = LiveReply("s", REPLY, uuid.uuid4())
    live.add("abcdef")
    follower = live.follow(4)
    live.add("gh")
    assert [(s.event, s.offset) for s in await follower.batch()] == [
        (StreamDelta(content="ef"), 6),
        (StreamDelta(content="gh"), 8),
    ]
    follower.close()
    live.add("ij")
    assert await follower.batch() == []


async def test_an_idle_stream_writes_keepalive_comments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse, "KEEPALIVE_SECONDS", 0.01)
    live = LiveReply("s", REPLY, uuid.uuid4())
    frames = live_frames(REPLY, live.follow())
    assert await asyncio.wait_for(anext(frames), 5) == KEEPALIVE_COMMENT
    live.add("x")
    [delta] = _events(await anext(frames))
    assert delta["id"] == f"{REPLY}:1"
    await frames.aclose()
    assert not live._followers  # the stream that went away follows no more


async def test_a_stream_closed_after_its_first_event_follows_no_more() -> None:
    live = LiveReply("s", REPLY, uuid.uuid4())
    first = ServerSentEvent(event="session", data={"a": 1}, id=f"{REPLY}:0")
    frames = live_frames(REPLY, live.follow(), first)
    assert await anext(frames) == encoded(first)
    await frames.aclose()
    assert not live._followers
