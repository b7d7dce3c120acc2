"""Chat completions from OpenAI or any server that speaks its protocol (vLLM, Ollama,
LM Studio, llama.cpp server), through the official SDK.

Retries: connection errors, timeouts, 429, 408/409 and 5xx are retried with exponential
backoff (or the server's Retry-After), `OPENAI_MAX_RETRIES` times, as long as no token has
been sent: that covers a stream whose first chunk never comes or that breaks before it, which
the SDK's own retries (they end when the response headers arrive) do not. A failure after
the first token ends the reply as incomplete. The SDK talks HTTP through `httpx2` (its fork
of httpx), over aiohttp; httpx2's errors surface when a stream breaks mid-way.
"""

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import httpx2
import openai
from openai.types.chat import ChatCompletionMessageParam

from app.assistants.base import (
    AssistantError,
    Reply,
    ReplyEnd,
    ReplyEvent,
    Source,
    TextDelta,
    Turn,
    Usage,
)
from app.assistants.knowledge import KnowledgeBase
from app.assistants.tokens import TokenCounter, fit_history
from app.config import Settings

logger = logging.getLogger(__name__)

_RAG_INSTRUCTIONS = (
    "Answer from the numbered knowledge-base passages below when they are relevant, and cite "
    "them as [n]. If they do not contain the answer, say so."
)


def openai_client(settings: Settings, *, timeout_seconds: float) -> openai.AsyncOpenAI:
    """A client of the configured OpenAI-compatible server, without the SDK's own retries
    (callers retry, or not, themselves)."""
    api_key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
    return openai.AsyncOpenAI(
        base_url=settings.openai_base_url,
        # Local servers ignore the key, but the SDK insists on one.
        api_key=api_key or ("unused" if settings.openai_base_url else None),
        max_retries=0,  # the assistant retries itself, to cover the wait for the first token
        timeout=httpx2.Timeout(timeout_seconds, connect=10.0),
        # The SDK's client settings over aiohttp, as its README recommends for concurrency: a
        # streamed reply is one read per token, and httpx's own transport (h11 and an anyio
        # timeout scope per read) cost 1.3x to 2x aiohttp's CPU per token (docs/performance.md).
        http_client=openai.DefaultAioHttpClient(),
    )


class OpenAICompatibleAssistant:
    provider = "openai"

    def __init__(
        self,
        settings: Settings,
        *,
        counter: TokenCounter,
        knowledge: KnowledgeBase | None = None,
    ) -> None:
        self._client = openai_client(settings, timeout_seconds=settings.openai_timeout_seconds)
        self.model = settings.openai_model
        self._max_retries = settings.openai_max_retries
        self._temperature = settings.openai_temperature
        self._max_tokens = settings.openai_max_tokens
        self._stream_usage = settings.openai_stream_usage
        self._system_prompt = settings.assistant_system_prompt
        self._context_tokens = settings.assistant_context_tokens
        self._counter = counter
        self._knowledge = knowledge
        self._top_k = settings.knowledge_base_top_k

    async def aclose(self) -> None:
        """Close the client's connections (aiohttp warns of a session left open)."""
        await self._client.close()

    async def reply(self, history: Sequence[Turn]) -> Reply:
        messages, sources = self._prompt(history)
        for attempt in range(self._max_retries + 1):
            try:
                completion = await self._client.chat.completions.create(
                    messages=messages, stream=False, **self._options()
                )
                break
            except openai.APIError as exc:
                if attempt == self._max_retries or not _retryable(exc):
                    raise _as_assistant_error(exc) from exc
                await asyncio.sleep(_retry_delay(exc, attempt))
        if not completion.choices:
            raise AssistantError("the completion has no choices", kind="unavailable")
        choice = completion.choices[0]
        usage = completion.usage
        return Reply(
            content=choice.message.content or "",
            end=ReplyEnd(
                model=completion.model or self.model,
                finish_reason=choice.finish_reason or "stop",
                usage=Usage(usage.prompt_tokens, usage.completion_tokens) if usage else None,
                sources=sources,
            ),
        )

    async def stream(self, history: Sequence[Turn]) -> AsyncIterator[ReplyEvent]:
        messages, sources = self._prompt(history)
        attempt = 0
        while True:
            token_sent = False
            try:
                async for event in self._stream_once(messages, sources):
                    token_sent = token_sent or isinstance(event, TextDelta)
                    yield event
                return
            except Exception as exc:
                if token_sent or attempt == self._max_retries or not _retryable(exc):
                    raise _as_assistant_error(exc) from exc
                await asyncio.sleep(_retry_delay(exc, attempt))
                attempt += 1

    async def _stream_once(
        self, messages: list[ChatCompletionMessageParam], sources: tuple[Source, ...]
    ) -> AsyncIterator[ReplyEvent]:
        extra: dict[str, Any] = (
            {"stream_options": {"include_usage": True}} if self._stream_usage else {}
        )
        # The raw response, read as JSON chunks here: the SDK's own stream (`create(stream=True)`)
        # builds a pydantic model of every chunk, about 65 us of CPU each, the largest single
        # cost of relaying a token (docs/performance.md, "Concurrent streams"). The request,
        # its errors (statuses, connection, timeouts) and its retries are the SDK's as before.
        async with self._client.chat.completions.with_streaming_response.create(
            messages=messages, stream=True, **self._options(), **extra
        ) as response:
            model, finish_reason, usage = self.model, None, None
            async for chunk in _sse_json(response.http_response.aiter_bytes()):
                model = chunk.get("model") or model
                if counts := chunk.get("usage"):
                    usage = _usage(counts)
                for choice in _choices(chunk):
                    delta = choice.get("delta") or {}
                    if content := delta.get("content"):
                        yield TextDelta(str(content))
                    finish_reason = choice.get("finish_reason") or finish_reason
        if finish_reason is None:
            raise _UnfinishedStream("the stream ended without a finish reason")
        yield ReplyEnd(model=model, finish_reason=finish_reason, usage=usage, sources=sources)

    def _options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"model": self.model}
        if self._temperature is not None:
            options["temperature"] = self._temperature
        if self._max_tokens is not None:
            options["max_tokens"] = self._max_tokens
        return options

    def _prompt(
        self, history: Sequence[Turn]
    ) -> tuple[list[ChatCompletionMessageParam], tuple[Source, ...]]:
        """System prompt (with retrieved passages when RAG is on) and the newest history
        that fits the context budget."""
        system_prompt, sources = self._system_prompt, tuple[Source, ...]()
        if self._knowledge is not None and history:
            passages = self._knowledge.search(history[-1].content, self._top_k)
            if passages:
                numbered = "\n\n".join(
                    f"[{n}] {p.title} ({p.path})\n{p.text}" for n, p in enumerate(passages, 1)
                )
                system_prompt = f"{system_prompt}\n\n{_RAG_INSTRUCTIONS}\n\n{numbered}"
                sources = tuple(Source(p.title, p.path, p.score) for p in passages)
        turns = fit_history(
            history,
            counter=self._counter,
            budget=self._context_tokens,
            reserved=self._counter.message_cost(system_prompt),
        )
        messages: list[ChatCompletionMessageParam] = [{"role": "system", "content": system_prompt}]
        messages += [{"role": t.role, "content": t.content} for t in turns]  # type: ignore[misc]
        return messages, sources


class _UnfinishedStream(Exception):
    """The server closed the stream cleanly but never said it was finished."""


class _MalformedChunk(Exception):
    """A chunk that is not what the protocol says, or an error the server sent mid-stream."""


async def _sse_json(body: AsyncIterator[bytes]) -> AsyncIterator[dict[str, Any]]:
    """The JSON objects of a chat-completions event stream, up to `[DONE]`; the rest of the
    body is read (and ignored) so that the connection can be reused. Server-Sent Events as the
    SDK reads them: `data:` lines joined by newlines, dispatched at a blank line; comments and
    other fields ignored. Read from the body's bytes as they come, without a text decoder and
    a line iterator per read: lines end with LF or CRLF, and JSON is parsed from UTF-8 bytes."""
    data: list[bytes] = []
    done = False
    rest = b""
    async for block in body:
        lines = (rest + block).split(b"\n") if rest else block.split(b"\n")
        rest = lines.pop()  # the part after the last newline: a line still coming
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if line:
                if not done and line.startswith(b"data:"):
                    value = line[5:]
                    data.append(value[1:] if value.startswith(b" ") else value)
                continue
            if not data:
                continue
            text = b"\n".join(data) if len(data) > 1 else data[0]
            data = []
            if text.startswith(b"[DONE]"):
                done = True
                continue
            yield _chunk(text)


def _chunk(text: bytes) -> dict[str, Any]:
    chunk = json.loads(text)
    if not isinstance(chunk, dict):
        raise _MalformedChunk(f"a chunk that is not an object: {text[:200]!r}")
    if error := chunk.get("error"):
        message = error.get("message") if isinstance(error, dict) else None
        raise _MalformedChunk(message or "an error occurred during streaming")
    return chunk


def _choices(chunk: dict[str, Any]) -> list[dict[str, Any]]:
    choices = chunk.get("choices") or []
    if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
        raise _MalformedChunk(f"malformed choices: {str(choices)[:200]}")
    return choices


def _usage(counts: Any) -> Usage:
    if not isinstance(counts, dict):
        raise _MalformedChunk(f"malformed usage: {str(counts)[:200]}")
    return Usage(int(counts.get("prompt_tokens") or 0), int(counts.get("completion_tokens") or 0))


_BASE_DELAY_SECONDS = 0.5
_MAX_DELAY_SECONDS = 8.0
_MAX_RETRY_AFTER_SECONDS = 60.0


def _retryable(exc: Exception) -> bool:
    """Failures worth another try: the network, the server's load, its hiccups."""
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 409, 429) or exc.status_code >= 500
    return isinstance(exc, openai.APIConnectionError | httpx2.TransportError | _UnfinishedStream)


def timed_out(exc: BaseException) -> bool:
    """Whether a failure of an `openai_client` is a timeout (else the server is unavailable)."""
    return isinstance(
        exc, openai.APITimeoutError | httpx2.TimeoutException
    ) and not _refused_connection(exc)


def _refused_connection(exc: BaseException) -> bool:
    """Whether a connection that could not be made (refused, no such host) is behind `exc`.

    The SDK's aiohttp adapter (openai/_vendor/httpx_aiohttp/transport.py, `AIOHTTP_EXC_MAP`)
    maps aiohttp's ClientConnectorError to httpx's ConnectTimeout, through its entry for the
    parent ClientConnectionError, so the SDK reports a refused connection as a timeout. A
    real connect timeout in aiohttp is ConnectionTimeoutError, a ServerTimeoutError.
    """
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, aiohttp.ClientConnectorError) and not isinstance(
            cause, aiohttp.ServerTimeoutError
        ):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def _retry_delay(exc: Exception, attempt: int) -> float:
    """The server's Retry-After when it gives one, else exponential backoff with jitter."""
    if isinstance(exc, openai.APIStatusError):
        headers = exc.response.headers
        try:
            if "retry-after-ms" in headers:
                return min(float(headers["retry-after-ms"]) / 1000, _MAX_RETRY_AFTER_SECONDS)
            if "retry-after" in headers:
                return min(float(headers["retry-after"]), _MAX_RETRY_AFTER_SECONDS)
        except ValueError:
            pass  # an HTTP date or garbage: fall back to backoff
    backoff: float = min(_BASE_DELAY_SECONDS * 2.0**attempt, _MAX_DELAY_SECONDS)
    return backoff * random.uniform(0.75, 1.0)


def _as_assistant_error(exc: Exception) -> AssistantError:
    """Any failure of the upstream, including chunks of the wrong shape, as the reply's error."""
    logger.warning("assistant upstream failed: %r", exc)
    return AssistantError(
        str(exc) or type(exc).__name__, kind="timeout" if timed_out(exc) else "unavailable"
    )
