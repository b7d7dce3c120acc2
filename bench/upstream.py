"""The fake OpenAI-compatible upstream of the benchmarks, served by uvicorn in its own process.

It is the tests' `FakeOpenAI` (one SSE event per chunk, JSON-encoded as OpenAI does), with the
reply's size taken from the last user message: `chunks=N chars=M` streams N chunks of M
characters each. Run: `python -m bench.upstream --port 8001`.
"""

import argparse
import re

import uvicorn
from starlette.requests import Request
from starlette.responses import Response

from tests.fakes.openai_server import FakeOpenAI, Respond

_SIZE = re.compile(r"chunks=(\d+)\s+chars=(\d+)")
_ALPHABET = "abcdefghijklmnopqrstuvwxyz"


def size_message(chunks: int, chars: int) -> str:
    """The user message that asks the upstream for a reply of `chunks` x `chars` characters."""
    return f"chunks={chunks} chars={chars}"


def reply_chunks(chunks: int, chars: int) -> list[str]:
    return [(_ALPHABET[i % len(_ALPHABET)] * chars) for i in range(chunks)]


class SizedFakeOpenAI(FakeOpenAI):
    """Replies as large as the last user message asks (see `size_message`)."""

    async def _complete(self, request: Request) -> Response:
        body = await request.json()  # Starlette caches it: the parent reads it again.
        user_messages = [m for m in body.get("messages", []) if m.get("role") == "user"]
        match = _SIZE.search(str(user_messages[-1].get("content", ""))) if user_messages else None
        chunks, chars = (int(match[1]), int(match[2])) if match else (4, 4)
        self.script.append(Respond(chunks=reply_chunks(chunks, chars), usage=(10, chunks)))
        response = await super()._complete(request)
        self.requests.clear()  # no need to keep every body
        return response


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(SizedFakeOpenAI().app(), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
