"""OpenAICompatibleAssistant against the fake OpenAI-compatible server over real HTTP on
loopback: replies, what is sent, retries, timeouts, broken streams, the context budget, RAG."""

import asyncio
import socket
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

import aiohttp
import httpx2
import openai
import pytest
from aiohttp.client_reqrep import ConnectionKey
from openai._vendor.httpx_aiohttp.transport import map_aiohttp_exceptions

from app.assistants import (
    AssistantError,
    Reply,
    ReplyEnd,
    ReplyEvent,
    TextDelta,
    Turn,
    Usage,
)
from app.assistants.base import collect
from app.assistants.knowledge import KnowledgeBase, Passage
from app.assistants.openai_compatible import OpenAICompatibleAssistant, timed_out
from app.assistants.tokens import counter_for_model
from app.config import PROJECT_ROOT, Settings
from tests.fakes.fixtures import RunningFake, release, running_fake
from tests.fakes.openai_server import Fail, Respond

MODEL = "gpt-4"
SYSTEM_PROMPT = "Be brief."
COUNTER = counter_for_model(MODEL)
FAKE_CHUNKS = ["Hello ", "from ", "the ", "fake."]
FAKE_END = ReplyEnd(model="fake-model-1", finish_reason="stop", usage=Usage(11, 4))
ASK = [Turn("user", "Hi")]
# Small enough for tests, and far above what a loopback reply takes.
SHORT_TIMEOUT = 0.3

Mode = Literal["plain", "stream"]
MODES: list[Mode] = ["plain", "stream"]


@pytest.fixture(scope="module")
async def fake_server() -> AsyncIterator[RunningFake]:
    async with running_fake() as running:
        yield running


@pytest.fixture
def upstream(fake_server: RunningFake) -> RunningFake:
    """The module's fake, reset: nothing scripted, nothing recorded."""
    fake_server.fake.reset()
    return fake_server


# The assistants a test made, closed after it (aiohttp warns of a client session left open).
_made: list[OpenAICompatibleAssistant] = []


@pytest.fixture(autouse=True)
async def close_assistants() -> AsyncIterator[None]:
    yield
    while _made:
        await _made.pop().aclose()


def make_assistant(
    upstream: RunningFake, *, knowledge: KnowledgeBase | None = None, **overrides: Any
) -> OpenAICompatibleAssistant:
    values: dict[str, Any] = {
        "assistant_provider": "openai",
        "openai_base_url": upstream.api_url,
        "openai_model": MODEL,
        "openai_timeout_seconds": 5,
        "openai_max_retries": 0,
        "assistant_system_prompt": SYSTEM_PROMPT,
        # Explicit, so that no OPENAI_* variable of the environment leaks in.
        "openai_api_key": None,
        "openai_temperature": None,
        "openai_max_tokens": None,
        "openai_stream_usage": True,
        "assistant_context_tokens": 8_000,
        "knowledge_base_top_k": 3,
    }
    values.update(overrides)
    assistant = OpenAICompatibleAssistant(
        Settings(_env_file=None, **values), counter=COUNTER, knowledge=knowledge
    )
    _made.append(assistant)
    return assistant


async def answer(
    assistant: OpenAICompatibleAssistant, history: Sequence[Turn], mode: Mode
) -> Reply:
    if mode == "plain":
        return await assistant.reply(history)
    return await collect(assistant.stream(history))


async def drain(
    assistant: OpenAICompatibleAssistant, history: Sequence[Turn] = ASK
) -> tuple[list[ReplyEvent], AssistantError | None]:
    """The events a stream yielded, and the AssistantError that ended it, if any."""
    events: list[ReplyEvent] = []
    try:
        async for event in assistant.stream(history):
            events.append(event)
    except AssistantError as exc:
        return events, exc
    return events, None


async def fail(assistant: OpenAICompatibleAssistant, mode: Mode) -> AssistantError:
    with pytest.raises(AssistantError) as raised:
        await answer(assistant, ASK, mode)
    return raised.value


def system(content: str = SYSTEM_PROMPT) -> tuple[str, str]:
    return ("system", content)


# --- Replies and requests -----------------------------------------------------------------


async def test_plain_reply_and_what_is_sent(upstream: RunningFake) -> None:
    reply = await make_assistant(upstream).reply(ASK)

    assert reply == Reply(content="Hello from the fake.", end=FAKE_END)
    [body] = upstream.fake.requests
    assert body["model"] == MODEL
    assert body["messages"] == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "Hi"},
    ]
    assert not body.get("stream")
    for unset in ("temperature", "max_tokens", "stream_options"):
        assert unset not in body, unset


async def test_plain_reply_passes_on_finish_reason_and_missing_usage(
    upstream: RunningFake,
) -> None:
    upstream.fake.queue(Respond(chunks=["Trunc"], finish_reason="length", usage=None))

    reply = await make_assistant(upstream).reply(ASK)

    assert reply == Reply(
        content="Trunc", end=ReplyEnd(model="fake-model-1", finish_reason="length", usage=None)
    )


async def test_streamed_reply_yields_each_chunk_then_the_end(upstream: RunningFake) -> None:
    events, error = await drain(make_assistant(upstream))

    assert error is None
    assert events == [*(TextDelta(chunk) for chunk in FAKE_CHUNKS), FAKE_END]
    [body] = upstream.fake.requests
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["model"] == MODEL
    assert [m["role"] for m in body["messages"]] == ["system", "user"]


async def test_stream_usage_is_not_asked_for_when_disabled(upstream: RunningFake) -> None:
    events, error = await drain(make_assistant(upstream, openai_stream_usage=False))

    assert error is None
    assert events[-1] == ReplyEnd(model="fake-model-1", finish_reason="stop", usage=None)
    [body] = upstream.fake.requests
    assert "stream_options" not in body


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("temperature", [0.0, 0.7])
async def test_temperature_and_max_tokens_are_sent_when_set(
    upstream: RunningFake, mode: Mode, temperature: float
) -> None:
    assistant = make_assistant(upstream, openai_temperature=temperature, openai_max_tokens=64)

    await answer(assistant, ASK, mode)

    [body] = upstream.fake.requests
    assert body["temperature"] == temperature
    assert body["max_tokens"] == 64


@pytest.mark.parametrize("mode", MODES)
async def test_system_prompt_comes_first_then_the_history_in_order(
    upstream: RunningFake, mode: Mode
) -> None:
    history = [
        Turn("user", "first question"),
        Turn("assistant", "first answer"),
        Turn("user", "second question"),
    ]

    await answer(
        make_assistant(upstream, assistant_system_prompt="You are Acme's bot."), history, mode
    )

    assert upstream.sent_messages() == [
        system("You are Acme's bot."),
        ("user", "first question"),
        ("assistant", "first answer"),
        ("user", "second question"),
    ]


@pytest.mark.parametrize(
    ("api_key", "expected"), [("sk-test-123", "Bearer sk-test-123"), (None, "Bearer unused")]
)
async def test_the_api_key_is_sent_as_a_bearer_token(
    upstream: RunningFake, api_key: str | None, expected: str
) -> None:
    await make_assistant(upstream, openai_api_key=api_key).reply(ASK)

    assert upstream.fake.authorizations == [expected]


# --- Retries --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("status", [429, 500, 503])
async def test_rate_limits_and_server_errors_are_retried(
    upstream: RunningFake, mode: Mode, status: int
) -> None:
    upstream.fake.queue(Fail(status), Fail(status))

    reply = await answer(make_assistant(upstream, openai_max_retries=2), ASK, mode)

    assert reply == Reply(content="Hello from the fake.", end=FAKE_END)
    assert len(upstream.fake.requests) == 3
    assert upstream.fake.requests[0] == upstream.fake.requests[2]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("status", [429, 500])
async def test_exhausted_retries_make_the_assistant_unavailable(
    upstream: RunningFake, mode: Mode, status: int
) -> None:
    upstream.fake.default = Fail(status)

    error = await fail(make_assistant(upstream, openai_max_retries=2), mode)

    assert error.kind == "unavailable"
    assert len(upstream.fake.requests) == 3


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("status", [400, 401, 404])
async def test_client_errors_are_not_retried(
    upstream: RunningFake, mode: Mode, status: int
) -> None:
    upstream.fake.queue(Fail(status))

    error = await fail(make_assistant(upstream, openai_max_retries=2), mode)

    assert error.kind == "unavailable"
    assert len(upstream.fake.requests) == 1


@pytest.mark.parametrize("mode", MODES)
async def test_an_unreachable_server_makes_the_assistant_unavailable(
    upstream: RunningFake, mode: Mode
) -> None:
    with socket.socket() as probe:  # a loopback port nothing listens on once it is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    error = await fail(
        make_assistant(upstream, openai_base_url=f"http://127.0.0.1:{port}/v1"), mode
    )

    assert error.kind == "unavailable"
    assert upstream.fake.requests == []


def through_the_sdk(cause: Exception) -> Exception:
    """`cause`, raised by aiohttp, as the SDK raises it: mapped by its aiohttp adapter, then
    wrapped in an APIError."""
    try:
        try:
            with map_aiohttp_exceptions():
                raise cause
        except httpx2.TimeoutException as mapped:
            raise openai.APITimeoutError(request=httpx2.Request("POST", "http://x")) from mapped
    except openai.APITimeoutError as exc:
        return exc
    raise AssertionError("the adapter no longer maps it to a timeout")


def test_a_refused_connection_is_unavailable_and_a_connect_timeout_a_timeout() -> None:
    key = ConnectionKey("127.0.0.1", 9, False, True, None, None, None)
    refused = aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "refused"))
    connect_timeout = aiohttp.ConnectionTimeoutError("Connection timeout to host")

    assert not timed_out(through_the_sdk(refused))
    assert timed_out(through_the_sdk(connect_timeout))


# --- Timeouts -------------------------------------------------------------------------------


async def test_a_slow_first_token_times_out(upstream: RunningFake) -> None:
    gate = asyncio.Event()
    upstream.fake.queue(Respond(before_first_chunk=gate))
    assistant = make_assistant(upstream, openai_timeout_seconds=SHORT_TIMEOUT)
    try:
        events, error = await drain(assistant)
    finally:
        release(gate)

    assert events == []
    assert error is not None
    assert error.kind == "timeout"
    assert len(upstream.fake.requests) == 1


async def test_a_slow_plain_reply_times_out_after_its_retries(upstream: RunningFake) -> None:
    gate = asyncio.Event()
    upstream.fake.default = Respond(before_first_chunk=gate)
    assistant = make_assistant(upstream, openai_timeout_seconds=SHORT_TIMEOUT, openai_max_retries=1)
    try:
        error = await fail(assistant, "plain")
    finally:
        release(gate)

    assert error.kind == "timeout"
    assert len(upstream.fake.requests) == 2


async def test_a_slow_plain_reply_is_retried(upstream: RunningFake) -> None:
    gate = asyncio.Event()
    upstream.fake.queue(Respond(before_first_chunk=gate))
    assistant = make_assistant(upstream, openai_timeout_seconds=SHORT_TIMEOUT, openai_max_retries=1)
    try:
        reply = await assistant.reply(ASK)
    finally:
        release(gate)

    assert reply.content == "Hello from the fake."
    assert len(upstream.fake.requests) == 2


async def test_a_slow_first_token_is_retried_while_no_token_was_sent(
    upstream: RunningFake,
) -> None:
    gate = asyncio.Event()
    upstream.fake.queue(Respond(before_first_chunk=gate))
    assistant = make_assistant(upstream, openai_timeout_seconds=SHORT_TIMEOUT, openai_max_retries=1)
    try:
        events, error = await drain(assistant)
    finally:
        release(gate)

    assert error is None
    assert events == [*(TextDelta(chunk) for chunk in FAKE_CHUNKS), FAKE_END]
    assert len(upstream.fake.requests) == 2


async def test_a_stream_cut_before_any_token_is_retried(upstream: RunningFake) -> None:
    upstream.fake.queue(Respond(cut_after=0))

    events, error = await drain(make_assistant(upstream, openai_max_retries=1))

    assert error is None
    assert events == [*(TextDelta(chunk) for chunk in FAKE_CHUNKS), FAKE_END]
    assert len(upstream.fake.requests) == 2


# --- Broken streams -------------------------------------------------------------------------


async def test_a_stream_cut_mid_way_yields_what_arrived_then_fails(
    upstream: RunningFake,
) -> None:
    upstream.fake.queue(Respond(cut_after=2))

    # Retries are allowed, but not once tokens were sent.
    events, error = await drain(make_assistant(upstream, openai_max_retries=2))

    assert events == [TextDelta("Hello "), TextDelta("from ")]
    assert error is not None
    assert error.kind == "unavailable"
    assert len(upstream.fake.requests) == 1


@pytest.mark.parametrize(
    "line",
    [
        "{not json",
        '{"error": {"message": "overloaded"}}',
        '{"choices": "oops"}',
        "null",
        "[1, 2]",
    ],
)
async def test_a_malformed_chunk_fails_the_stream_after_what_arrived(
    upstream: RunningFake, line: str
) -> None:
    upstream.fake.queue(Respond(malformed_line=line))

    events, error = await drain(make_assistant(upstream, openai_max_retries=2))

    assert events == [TextDelta("Hello ")]
    assert error is not None
    assert error.kind == "unavailable"
    assert len(upstream.fake.requests) == 1


async def test_a_stream_without_a_finish_reason_fails(upstream: RunningFake) -> None:
    upstream.fake.queue(Respond(finish_reason=None))

    events, error = await drain(make_assistant(upstream))

    assert events == [TextDelta(chunk) for chunk in FAKE_CHUNKS]
    assert error is not None
    assert error.kind == "unavailable"


# --- Context budget -------------------------------------------------------------------------


def words(word: str, count: int) -> str:
    return " ".join([word] * count)


def cost(text: str) -> int:
    return COUNTER.message_cost(text)


def test_the_counter_is_the_models_real_tokenizer() -> None:
    assert COUNTER.description == "tiktoken cl100k_base"
    assert COUNTER.count("Hello from the fake.") == 5


@pytest.mark.parametrize("mode", MODES)
async def test_history_is_trimmed_newest_first_by_whole_messages(
    upstream: RunningFake, mode: Mode
) -> None:
    # Budget 256: the system prompt and the question cost 7 each, leaving 242; the next three
    # turns leave 48, so the fourth (64) does not fit, nor anything older, though "hi" would.
    assert (cost(SYSTEM_PROMPT), cost("What now?"), cost(words("apple", 60))) == (7, 7, 64)
    history = [
        Turn("user", "hi"),
        Turn("assistant", words("fig", 60)),
        Turn("user", words("pear", 60)),
        Turn("assistant", words("apple", 60)),
        Turn("user", words("pear", 60) + " again"),
        Turn("assistant", words("fig", 60) + " again"),
        Turn("user", "What now?"),
    ]
    assert [cost(t.content) for t in history[3:6]] == [64, 65, 65]

    await answer(make_assistant(upstream, assistant_context_tokens=256), history, mode)

    assert upstream.sent_messages() == [
        system(),
        ("assistant", words("apple", 60)),
        ("user", words("pear", 60) + " again"),
        ("assistant", words("fig", 60) + " again"),
        ("user", "What now?"),
    ]


@pytest.mark.parametrize(("figs", "fits"), [(238, True), (239, False)])
async def test_a_message_that_exactly_fills_the_budget_is_sent(
    upstream: RunningFake, figs: int, fits: bool
) -> None:
    # 256 - 7 (system) - 7 (question) = 242 = 4 + 238 tokens of "fig".
    assert cost(words("fig", figs)) == 4 + figs
    history = [Turn("user", "hi"), Turn("assistant", words("fig", figs)), Turn("user", "What now?")]

    await make_assistant(upstream, assistant_context_tokens=256).reply(history)

    expected = [system(), ("assistant", words("fig", figs)), ("user", "What now?")]
    assert upstream.sent_messages() == (expected if fits else [system(), ("user", "What now?")])


@pytest.mark.parametrize("mode", MODES)
async def test_the_newest_message_is_sent_even_alone_over_budget(
    upstream: RunningFake, mode: Mode
) -> None:
    question = words("pear", 300)
    assert cost(question) > 256
    history = [Turn("user", "hi"), Turn("assistant", "hello"), Turn("user", question)]

    await answer(make_assistant(upstream, assistant_context_tokens=256), history, mode)

    assert upstream.sent_messages() == [system(), ("user", question)]


async def test_retrieved_passages_count_against_the_budget(upstream: RunningFake) -> None:
    knowledge = KnowledgeBase(
        [
            Passage(
                title="Payouts",
                path="payouts.md",
                text=f"Payouts happen daily. {words('fig', 150)}",
            )
        ]
    )
    history = [
        Turn("user", words("pear", 60)),
        Turn("assistant", words("apple", 60)),
        Turn("user", "When are payouts made?"),
    ]
    plain = make_assistant(upstream, assistant_context_tokens=300)
    rag = make_assistant(upstream, assistant_context_tokens=300, knowledge=knowledge)

    await plain.reply(history)
    await rag.reply(history)

    without_passages, with_passages = upstream.fake.requests
    assert len(without_passages["messages"]) == 4
    assert [m["content"] for m in with_passages["messages"][1:]] == [
        words("apple", 60),
        "When are payouts made?",
    ]


# --- Retrieval-augmented answers ------------------------------------------------------------

PROCESSORS = Passage(
    title="Payments > Supported processors",
    path="payments.md#supported-processors",
    text="Acme Pay integrates with the payment processors Stripe, Adyen and PayPal.",
)
REFUNDS = Passage(
    title="Refunds", path="refunds.md", text="Refunds reach the customer within five days."
)


@pytest.mark.parametrize("mode", MODES)
async def test_rag_puts_the_matching_passages_in_the_system_prompt_and_returns_sources(
    upstream: RunningFake, mode: Mode
) -> None:
    assistant = make_assistant(upstream, knowledge=KnowledgeBase([PROCESSORS, REFUNDS]))
    history = [
        Turn("user", "How long do refunds take?"),
        Turn("assistant", "Five days."),
        Turn("user", "Which payment processors do you support?"),
    ]

    reply = await answer(assistant, history, mode)

    [source] = reply.end.sources
    assert (source.title, source.path) == (PROCESSORS.title, PROCESSORS.path)
    assert source.score > 0
    assert reply.content == "Hello from the fake."
    messages = upstream.sent_messages()
    role, prompt = messages[0]
    assert role == "system"
    assert prompt.startswith(SYSTEM_PROMPT + "\n\n")
    assert prompt.endswith(
        "\n\n[1] Payments > Supported processors (payments.md#supported-processors)\n"
        "Acme Pay integrates with the payment processors Stripe, Adyen and PayPal."
    )
    assert "[2]" not in prompt
    assert "Refunds reach" not in prompt
    assert messages[1:] == [(t.role, t.content) for t in history]


async def test_rag_from_the_sample_knowledge_folder(upstream: RunningFake) -> None:
    knowledge = KnowledgeBase.from_directory(PROJECT_ROOT / "knowledge")
    assistant = make_assistant(upstream, knowledge=knowledge, knowledge_base_top_k=2)

    reply = await assistant.reply([Turn("user", "Which payment processors are supported?")])

    assert 1 <= len(reply.end.sources) <= 2
    best = reply.end.sources[0]
    assert (best.title, best.path) == (
        "Payments > Supported payment processors",
        "payments.md#supported-payment-processors",
    )
    [(_, prompt), _question] = upstream.sent_messages()
    assert "[1] Payments > Supported payment processors" in prompt
    assert "Acme Pay integrates with Stripe, Adyen and PayPal." in prompt
    for number, source in enumerate(reply.end.sources, start=1):
        assert f"[{number}] {source.title} ({source.path})\n" in prompt
    assert f"[{len(reply.end.sources) + 1}]" not in prompt


@pytest.mark.parametrize("mode", MODES)
async def test_rag_without_a_match_adds_no_passages(upstream: RunningFake, mode: Mode) -> None:
    assistant = make_assistant(upstream, knowledge=KnowledgeBase([PROCESSORS, REFUNDS]))

    reply = await answer(assistant, [Turn("user", "Zebras and xylophones?")], mode)

    assert reply.end.sources == ()
    assert upstream.sent_messages() == [system(), ("user", "Zebras and xylophones?")]


async def test_without_rag_no_passages_are_added_even_when_they_would_match(
    upstream: RunningFake,
) -> None:
    reply = await make_assistant(upstream).reply(
        [Turn("user", "Which payment processors do you support?")]
    )

    assert reply.end.sources == ()
    assert upstream.sent_messages()[0] == system()
