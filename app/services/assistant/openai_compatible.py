"""Chat completions from OpenAI or any server that speaks its protocol (vLLM, Ollama,
LM Studio, llama.cpp server), through the official SDK.

Retries: the SDK retries connection errors, timeouts, 429 and 5xx with exponential backoff
(`OPENAI_MAX_RETRIES`) before a response starts, so a streamed reply is only retried while no
token has been sent. A failure after that ends the reply as incomplete. The SDK talks HTTP
through `httpx2` (its fork of httpx), whose errors surface when a stream breaks mid-way.
"""

import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx2
import openai
from openai.types.chat import ChatCompletionMessageParam

from app.core.config import Settings
from app.services.assistant.base import (
    AssistantError,
    Reply,
    ReplyEnd,
    ReplyEvent,
    Source,
    TextDelta,
    Turn,
    Usage,
)
from app.services.assistant.tokens import TokenCounter, fit_history
from app.services.knowledge import KnowledgeBase

logger = logging.getLogger(__name__)

_RAG_INSTRUCTIONS = (
    "Answer from the numbered knowledge-base passages below when they are relevant, and cite "
    "them as [n]. If they do not contain the answer, say so."
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
        api_key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        self._client = openai.AsyncOpenAI(
            base_url=settings.openai_base_url,
            # Local servers ignore the key, but the SDK insists on one.
            api_key=api_key or ("unused" if settings.openai_base_url else None),
            max_retries=settings.openai_max_retries,
            timeout=httpx2.Timeout(settings.openai_timeout_seconds, connect=10.0),
        )
        self.model = settings.openai_model
        self._temperature = settings.openai_temperature
        self._max_tokens = settings.openai_max_tokens
        self._stream_usage = settings.openai_stream_usage
        self._system_prompt = settings.assistant_system_prompt
        self._context_tokens = settings.assistant_context_tokens
        self._counter = counter
        self._knowledge = knowledge
        self._top_k = settings.knowledge_base_top_k

    async def reply(self, history: Sequence[Turn]) -> Reply:
        messages, sources = self._prompt(history)
        try:
            completion = await self._client.chat.completions.create(
                messages=messages, stream=False, **self._options()
            )
        except openai.APIError as exc:
            raise _as_assistant_error(exc) from exc
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
        extra: dict[str, Any] = (
            {"stream_options": {"include_usage": True}} if self._stream_usage else {}
        )
        try:
            chunks = await self._client.chat.completions.create(
                messages=messages, stream=True, **self._options(), **extra
            )
        except openai.APIError as exc:
            raise _as_assistant_error(exc) from exc
        model, finish_reason, usage = self.model, None, None
        try:
            async for chunk in chunks:
                model = chunk.model or model
                if chunk.usage:
                    usage = Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                for choice in chunk.choices:
                    if choice.delta and choice.delta.content:
                        yield TextDelta(choice.delta.content)
                    finish_reason = choice.finish_reason or finish_reason
        except (openai.APIError, httpx2.HTTPError, ValueError) as exc:
            # Cut connections, read timeouts, error events and malformed chunks alike.
            raise _as_assistant_error(exc) from exc
        finally:
            await chunks.close()
        if finish_reason is None:
            raise AssistantError("the stream ended without a finish reason", kind="unavailable")
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


def _as_assistant_error(exc: Exception) -> AssistantError:
    timed_out = isinstance(exc, openai.APITimeoutError | httpx2.TimeoutException)
    logger.warning("assistant upstream failed: %r", exc)
    return AssistantError(
        str(exc) or type(exc).__name__, kind="timeout" if timed_out else "unavailable"
    )
