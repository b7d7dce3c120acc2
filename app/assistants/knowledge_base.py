"""The offline default: answers from the knowledge base by retrieval, and cites its sources.

No model writes the answer: it quotes the sentences of the best-matching passages that share
the most words with the question, so every statement is traceable to a source.
"""

import asyncio
from collections.abc import AsyncIterator, Sequence

import regex

from app.assistants.base import (
    Reply,
    ReplyEnd,
    ReplyEvent,
    Source,
    TextDelta,
    Turn,
    collect,
)
from app.assistants.echo import WORDS_WITH_TRAILING_SPACE
from app.assistants.knowledge import KnowledgeBase, Passage, query_terms

_SENTENCE = regex.compile(r"(?<=[.!?])\s+(?=[A-Z0-9*])")
# Passages scoring below this share of the best one add noise rather than answers.
_RELATIVE_SCORE_CUTOFF = 0.5
_SENTENCES_PER_PASSAGE = 2


class KnowledgeBaseAssistant:
    provider = "knowledge_base"
    model = "bm25-extractive"

    def __init__(
        self, knowledge: KnowledgeBase, *, top_k: int = 3, chunk_delay_seconds: float = 0.0
    ) -> None:
        self._knowledge = knowledge
        self._top_k = top_k
        self._chunk_delay_seconds = chunk_delay_seconds

    def answer(self, history: Sequence[Turn]) -> tuple[str, tuple[Source, ...]]:
        question = next((t.content for t in reversed(history) if t.role == "user"), "")
        passages = self._relevant(question)
        if not passages:
            topics = ", ".join(self._knowledge.titles) or "nothing yet"
            return (
                f"I couldn't find anything about that in the knowledge base. It covers: {topics}.",
                (),
            )
        terms = query_terms(question)
        lines = ["Here is what I found in the knowledge base:", ""]
        for number, passage in enumerate(passages, start=1):
            lines.append(
                f"- **{passage.title}**: {_best_sentences(passage.text, terms)} [{number}]"
            )
        lines += ["", "Sources:"]
        lines += [f"[{n}] {p.title} ({p.path})" for n, p in enumerate(passages, start=1)]
        sources = tuple(Source(title=p.title, path=p.path, score=p.score) for p in passages)
        return "\n".join(lines), sources

    def _relevant(self, question: str) -> list[Passage]:
        passages = self._knowledge.search(question, self._top_k)
        if not passages:
            return []
        floor = passages[0].score * _RELATIVE_SCORE_CUTOFF
        return [p for p in passages if p.score >= floor]

    async def reply(self, history: Sequence[Turn]) -> Reply:
        return await collect(self.stream(history))

    async def aclose(self) -> None:
        """Nothing to release: it holds no connection."""

    async def stream(self, history: Sequence[Turn]) -> AsyncIterator[ReplyEvent]:
        text, sources = self.answer(history)
        for chunk in WORDS_WITH_TRAILING_SPACE.findall(text):
            if self._chunk_delay_seconds:
                await asyncio.sleep(self._chunk_delay_seconds)
            yield TextDelta(chunk)
        yield ReplyEnd(model=self.model, sources=sources)


def _best_sentences(text: str, terms: list[str]) -> str:
    """The passage's first sentence (under a descriptive heading, usually the direct answer)
    and the other sentence that mentions the most question words, in their own order."""
    plain = regex.sub(r"\s+", " ", regex.sub(r"^[-*]\s+|\*\*", "", text, flags=regex.M)).strip()
    sentences = [s for s in _SENTENCE.split(plain) if s]

    def overlap(sentence: str) -> int:
        words = {w.lower() for w in regex.findall(r"\w+", sentence)}
        return sum(1 for term in terms if any(w.startswith(term[:5]) for w in words))

    ranked = sorted(range(1, len(sentences)), key=lambda i: (-overlap(sentences[i]), i))
    chosen = [0, *sorted(ranked[: _SENTENCES_PER_PASSAGE - 1])]
    return " ".join(sentences[i] for i in chosen)
