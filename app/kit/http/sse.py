"""The service's Server-Sent Events responses: the same wire format, headers and keep-alive
comments as FastAPI's generator routes (`response_class=EventSourceResponse` with `yield`), for
a route that answers either JSON or a stream (by a query parameter), and for the streamed
replies, where it costs less per event than a generator route (one queue, rather than two
memory streams, a task group and a timeout scope per event: docs/performance.md, "Concurrent
streams")."""

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import suppress

from fastapi.sse import KEEPALIVE_COMMENT, ServerSentEvent, format_sse_event
from pydantic import BaseModel
from starlette.responses import StreamingResponse

# OpenAPI content of a route that documents its stream itself: the `data` of each event is
# JSON; `event` names it (see the route's description).
SSE_CONTENT = {
    "text/event-stream": {
        "itemSchema": {
            "type": "object",
            "properties": {
                "data": {"type": "string"},
                "event": {"type": "string"},
                "id": {"type": "string"},
                "retry": {"type": "integer", "minimum": 0},
            },
        }
    }
}

# FastAPI's interval for its generator routes: proxies drop connections idle for longer.
KEEPALIVE_SECONDS = 15.0


def encoded(event: ServerSentEvent) -> bytes:
    data = event.data.model_dump_json() if isinstance(event.data, BaseModel) else event.raw_data
    return format_sse_event(data_str=data, event=event.event, id=event.id)


class Keepalive:
    """Calls `wake` when nothing was written for KEEPALIVE_SECONDS. One timer per stream,
    moved at most every KEEPALIVE_SECONDS, for a stream that waits on its events itself:
    cheaper than a timeout around every wait for an event (a timer made and cancelled per
    event)."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        self._loop = asyncio.get_running_loop()
        self._written_at = self._loop.time()
        self._timer = self._loop.call_at(self._written_at + KEEPALIVE_SECONDS, self._check)

    def written(self) -> None:
        self._written_at = self._loop.time()

    def cancel(self) -> None:
        self._timer.cancel()

    def _check(self) -> None:
        due = self._written_at + KEEPALIVE_SECONDS
        if self._loop.time() >= due:
            self._wake()
            self._written_at = self._loop.time()
            due = self._written_at + KEEPALIVE_SECONDS
        self._timer = self._loop.call_at(due, self._check)


async def keepalive_frames(events: AsyncIterator[ServerSentEvent]) -> AsyncIterator[bytes]:
    """The events as sent, with a keep-alive comment after KEEPALIVE_SECONDS without one."""
    # A producer task reads the events, so that waiting for the next one can time out without
    # cancelling the iterator that produces them.
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=1)

    async def produce() -> None:
        try:
            async for event in events:
                await queue.put(encoded(event))
        finally:
            await queue.put(None)

    producer = asyncio.create_task(produce())
    try:
        while True:
            try:
                async with asyncio.timeout(KEEPALIVE_SECONDS):
                    chunk = await queue.get()
            except TimeoutError:
                yield KEEPALIVE_COMMENT
                continue
            if chunk is None:
                break
            yield chunk
    finally:
        producer.cancel()
        with suppress(asyncio.CancelledError):
            await producer
        # A producer cancelled between two events leaves the events' generator open: close it
        # now (its `finally` blocks run), not at garbage collection.
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


def event_stream_response(events: AsyncIterator[ServerSentEvent]) -> StreamingResponse:
    return frames_response(keepalive_frames(events))


def frames_response(frames: AsyncIterator[bytes]) -> StreamingResponse:
    """A stream of events already encoded, keep-alive comments included."""
    return StreamingResponse(
        frames,
        media_type="text/event-stream",
        # As FastAPI's own SSE routes: no caching, and no buffering by nginx.
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
