"""A fake OpenAI-compatible chat-completions server, served over real HTTP on loopback.

Each request takes the next behaviour from `FakeOpenAI.script` (or `default` when the script
is empty): a reply streamed in chunks or returned whole, an HTTP error, a slow first token,
a connection cut mid-stream, or a malformed chunk. Every request body is recorded.

Title requests (those for `title_model`: tests set TITLE_MODEL to it) have a script, a default
and a record of their own, so that the chat requests' are what they were before titles. By
default a title request gets an empty answer, which leaves the seed's title: tests that are not
about titles see the titles they always saw.
"""

import asyncio
import json
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class Respond:
    """Answer with `chunks` (joined for a non-streamed request)."""

    chunks: list[str] = field(default_factory=lambda: ["Hello ", "from ", "the ", "fake."])
    finish_reason: str | None = "stop"
    usage: tuple[int, int] | None = (11, 4)
    # Streaming only: wait for this before the first chunk (a slow first token).
    before_first_chunk: asyncio.Event | None = None
    # Streaming only: after this many chunks drop the connection (an upstream cut).
    cut_after: int | None = None
    # Streaming only: send this raw line as a chunk after the first one.
    malformed_line: str | None = None
    # Streaming only: after `pause_after` chunks wait for `resume` (a reply caught mid-way).
    pause_after: int | None = None
    resume: asyncio.Event | None = None


@dataclass
class Fail:
    status: int = 500
    body: dict[str, Any] = field(
        default_factory=lambda: {"error": {"message": "upstream broke", "type": "server_error"}}
    )


Behaviour = Respond | Fail


# What tests set TITLE_MODEL to.
TITLE_MODEL = "fake-title-model"


class UpstreamCut(Exception):
    """Raised inside a streaming body: the server drops the connection mid-response."""


@dataclass
class FakeOpenAI:
    script: deque[Behaviour] = field(default_factory=deque)
    default: Behaviour = field(default_factory=Respond)
    requests: list[dict[str, Any]] = field(default_factory=list)
    model: str = "fake-model-1"
    # Title requests: answered whole; `Respond.before_first_chunk` holds the answer back.
    title_model: str = TITLE_MODEL
    title_script: deque[Behaviour] = field(default_factory=deque)
    title_default: Behaviour = field(default_factory=lambda: Respond(chunks=[]))
    title_requests: list[dict[str, Any]] = field(default_factory=list)
    # Set when a title request arrives, and when one held back is abandoned by the client.
    title_arrived: asyncio.Event = field(default_factory=asyncio.Event)
    title_abandoned: asyncio.Event = field(default_factory=asyncio.Event)

    def queue(self, *behaviours: Behaviour) -> None:
        self.script.extend(behaviours)

    def queue_titles(self, *behaviours: Behaviour) -> None:
        self.title_script.extend(behaviours)

    def is_title_request(self, body: dict[str, Any]) -> bool:
        return body.get("model") == self.title_model

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self._complete, methods=["POST"]),
                Route("/healthz", _healthz),
            ]
        )

    async def _complete(self, request: Request) -> Response:
        body = await request.json()
        if self.is_title_request(body):
            return await self._title(request, body)
        self.requests.append(body)
        behaviour = self.script.popleft() if self.script else self.default
        if isinstance(behaviour, Fail):
            # A tiny Retry-After keeps the SDK's backoff between retries short in tests.
            return JSONResponse(
                behaviour.body, status_code=behaviour.status, headers={"retry-after-ms": "5"}
            )
        if body.get("stream"):
            return StreamingResponse(
                self._chunks(behaviour, include_usage=_wants_usage(body)),
                media_type="text/event-stream",
            )
        return JSONResponse(self._completion(behaviour))

    async def _title(self, request: Request, body: dict[str, Any]) -> Response:
        self.title_requests.append(body)
        self.title_arrived.set()
        behaviour = self.title_script.popleft() if self.title_script else self.title_default
        if isinstance(behaviour, Fail):
            return JSONResponse(
                behaviour.body, status_code=behaviour.status, headers={"retry-after-ms": "5"}
            )
        if behaviour.before_first_chunk is not None and not await _released_while_connected(
            request, behaviour.before_first_chunk
        ):
            self.title_abandoned.set()
            return Response(status_code=499)
        return JSONResponse(self._completion(behaviour))

    def _completion(self, behaviour: Respond) -> dict[str, Any]:
        completion: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(behaviour.chunks)},
                    "finish_reason": behaviour.finish_reason,
                }
            ],
        }
        if behaviour.usage:
            completion["usage"] = _usage(behaviour.usage)
        return completion

    async def _chunks(self, behaviour: Respond, *, include_usage: bool) -> AsyncIterator[bytes]:
        if behaviour.before_first_chunk is not None:
            await behaviour.before_first_chunk.wait()
        for index, text in enumerate(behaviour.chunks):
            if index == behaviour.pause_after and behaviour.resume is not None:
                await behaviour.resume.wait()
            if behaviour.cut_after is not None and index >= behaviour.cut_after:
                raise UpstreamCut()
            yield self._event({"index": 0, "delta": {"content": text}, "finish_reason": None})
            if index == 0 and behaviour.malformed_line is not None:
                yield f"data: {behaviour.malformed_line}\n\n".encode()
        if behaviour.cut_after is not None:
            raise UpstreamCut()
        if behaviour.finish_reason is not None:
            yield self._event({"index": 0, "delta": {}, "finish_reason": behaviour.finish_reason})
        if include_usage and behaviour.usage:
            yield self._event(None, usage=_usage(behaviour.usage))
        yield b"data: [DONE]\n\n"

    def _event(self, choice: dict[str, Any] | None, usage: dict[str, int] | None = None) -> bytes:
        chunk = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.model,
            "choices": [choice] if choice else [],
            "usage": usage,
        }
        return f"data: {json.dumps(chunk)}\n\n".encode()


async def _released_while_connected(request: Request, gate: asyncio.Event) -> bool:
    """Wait for `gate`; False if the client went away first."""

    async def disconnected() -> None:
        # The body was read: what the server receives next is the end of the connection.
        while (await request.receive())["type"] != "http.disconnect":
            pass

    waits = {asyncio.ensure_future(gate.wait()), asyncio.ensure_future(disconnected())}
    _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    return gate.is_set()


async def _healthz(_request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def _wants_usage(body: dict[str, Any]) -> bool:
    return bool((body.get("stream_options") or {}).get("include_usage"))


def _usage(usage: tuple[int, int]) -> dict[str, int]:
    prompt, completion = usage
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": sum(usage)}
