"""The fake OpenAI-compatible server running on loopback (no pytest fixtures here: test
modules wrap `running_fake` in fixtures of their own, and `reset` it between tests)."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import cast

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests.conftest import serve
from tests.fakes.openai_server import FakeOpenAI, Respond


class FakeUpstream(FakeOpenAI):
    """`FakeOpenAI` that also records each request's Authorization header, and whose
    `Respond.before_first_chunk` also delays a non-streamed reply (the base fake only delays
    streams), so a plain request can time out too."""

    def __init__(self) -> None:
        super().__init__()
        self.authorizations: list[str | None] = []

    def reset(self) -> None:
        """Back to a fresh fake: no script, default replies, nothing recorded."""
        self.script.clear()
        self.default = Respond()
        self.requests.clear()
        self.authorizations.clear()
        self.title_script.clear()
        self.title_default = Respond(chunks=[])
        self.title_requests.clear()
        self.title_arrived.clear()
        self.title_abandoned.clear()

    async def _complete(self, request: Request) -> Response:
        body = await request.json()
        if self.is_title_request(body):
            return await super()._complete(request)
        self.authorizations.append(request.headers.get("authorization"))
        upcoming = self.script[0] if self.script else self.default
        if (
            body.get("stream")
            or not isinstance(upcoming, Respond)
            or upcoming.before_first_chunk is None
        ):
            return await super()._complete(request)
        # Recorded and taken off the script on arrival, like the base class does.
        self.requests.append(body)
        if self.script:
            self.script.popleft()
        await upcoming.before_first_chunk.wait()
        return JSONResponse(self._completion(upcoming))


@dataclass(frozen=True)
class RunningFake:
    fake: FakeUpstream
    base_url: str

    @property
    def api_url(self) -> str:
        """What OPENAI_BASE_URL is set to."""
        return f"{self.base_url}/v1"

    def sent_messages(self, index: int = -1) -> list[tuple[str, str]]:
        """(role, content) of the messages of one recorded request (the last by default)."""
        return [(m["role"], m["content"]) for m in self.fake.requests[index]["messages"]]


@asynccontextmanager
async def running_fake() -> AsyncIterator[RunningFake]:
    """A fresh fake served with uvicorn on a free loopback port, for the block."""
    fake = FakeUpstream()
    # `serve` is typed for FastAPI but serves any ASGI app with a GET /healthz.
    async with serve(cast(FastAPI, fake.app())) as live:
        yield RunningFake(fake=fake, base_url=live.base_url)


def release(*events: asyncio.Event) -> None:
    """Let gated upstream replies go, so nothing waits forever once a test is over."""
    for event in events:
        event.set()
