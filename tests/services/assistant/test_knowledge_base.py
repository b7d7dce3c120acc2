"""The offline default assistant over the shipped sample knowledge base (knowledge/)."""

from collections.abc import Sequence
from pathlib import Path

import pytest
import regex

from app.assistants import Reply, ReplyEnd, ReplyEvent, Source, TextDelta, Turn
from app.assistants.knowledge import KnowledgeBase, Passage
from app.assistants.knowledge_base import KnowledgeBaseAssistant
from app.config import PROJECT_ROOT

SAMPLE_DIR: Path = PROJECT_ROOT / "knowledge"
PROCESSORS_QUESTION = "What payment processors do you support?"
REFUNDS_QUESTION = "how long do refunds take"
SAMPLE_TOPICS = [
    "Getting started",
    "Payments",
    "Plans and billing",
    "Refunds and disputes",
    "Security and compliance",
]
_SOURCE_LINE = regex.compile(r"^\[(\d+)\] (.+) \(([^()\s]+)\)$")


@pytest.fixture(scope="module")
def knowledge() -> KnowledgeBase:
    return KnowledgeBase.from_directory(SAMPLE_DIR)


@pytest.fixture(scope="module")
def assistant(knowledge: KnowledgeBase) -> KnowledgeBaseAssistant:
    return KnowledgeBaseAssistant(knowledge)


def ask(question: str) -> list[Turn]:
    return [Turn(role="user", content=question)]


async def events_of(assistant: KnowledgeBaseAssistant, history: Sequence[Turn]) -> list[ReplyEvent]:
    return [event async for event in assistant.stream(history)]


def cited(text: str) -> list[tuple[int, str, str]]:
    """The "Sources:" list at the end of an answer: (number, title, path) per line."""
    _, marker, tail = text.partition("\nSources:\n")
    assert marker, text
    lines = tail.split("\n")
    matches = [_SOURCE_LINE.match(line) for line in lines]
    assert all(matches), lines
    return [(int(m.group(1)), m.group(2), m.group(3)) for m in matches if m]


def check_citations(reply: Reply) -> list[Source]:
    """The answer's numbered markers, its "Sources:" list and the reply's sources agree."""
    listed = cited(reply.content)
    sources = list(reply.end.sources)
    assert [n for n, _, _ in listed] == list(range(1, len(sources) + 1))
    assert [(title, path) for _, title, path in listed] == [(s.title, s.path) for s in sources]
    body = reply.content.partition("\nSources:\n")[0]
    assert sorted({int(n) for n in regex.findall(r"\[(\d+)\]", body)}) == [n for n, _, _ in listed]
    return sources


def test_the_sample_knowledge_base_ships_with_the_project(knowledge: KnowledgeBase) -> None:
    assert knowledge.titles == SAMPLE_TOPICS
    assert knowledge.size >= 15


async def test_payment_processors_are_answered_with_stripe_and_cited(
    assistant: KnowledgeBaseAssistant,
) -> None:
    reply = await assistant.reply(ask(PROCESSORS_QUESTION))

    assert reply.content.startswith("Here is what I found in the knowledge base:")
    assert "Stripe" in reply.content
    assert "Acme Pay integrates with Stripe, Adyen and PayPal." in reply.content
    sources = check_citations(reply)
    assert sources[0].path == "payments.md#supported-payment-processors"
    assert sources[0].title == "Payments > Supported payment processors"
    assert (
        "[1] Payments > Supported payment processors (payments.md#supported-payment-processors)"
        in reply.content
    )
    assert all(s.score > 0 for s in sources)
    assert [s.score for s in sources] == sorted((s.score for s in sources), reverse=True)
    assert reply.end.model == "bm25-extractive"
    assert reply.end.finish_reason == "stop"
    assert assistant.provider == "knowledge_base"


async def test_refund_timing_cites_the_refunds_page(assistant: KnowledgeBaseAssistant) -> None:
    reply = await assistant.reply(ask(REFUNDS_QUESTION))

    sources = check_citations(reply)
    assert sources[0].path == "refunds.md#issuing-a-refund"
    assert "5 to 10 business days" in reply.content


@pytest.mark.parametrize(
    ("question", "first_source"),
    [
        ("Do you support PayPal?", "payments.md#supported-payment-processors"),
        ("How do I cancel my plan?", "plans.md#changing-or-cancelling-a-plan"),
        ("Is my card data safe?", "security.md#card-data"),
        ("Do you support SSO?", "security.md#single-sign-on-sso-and-two-factor-authentication-2fa"),
        ("What is the test card number?", "getting-started.md#test-mode"),
        ("How do I get my API key?", "getting-started.md#api-keys"),
        ("Which payment methods can customers use?", "payments.md#payment-methods"),
        ("How do disputes work?", "refunds.md#disputes-and-chargebacks"),
        ("And refunds?", "refunds.md#issuing-a-refund"),
        ("What currencies do you support?", "payments.md#currencies"),
        ("How much does the Business plan cost?", "plans.md#plans-and-prices"),
    ],
)
async def test_sample_questions_cite_the_passage_that_answers_them_first(
    assistant: KnowledgeBaseAssistant, question: str, first_source: str
) -> None:
    reply = await assistant.reply(ask(question))

    assert check_citations(reply)[0].path == first_source


@pytest.mark.parametrize(
    ("question", "off_topic"),
    [
        (REFUNDS_QUESTION, "plans.md"),
        ("When do I get paid?", "getting-started.md"),
        ("Can I get a refund?", "getting-started.md"),
        ("How do I cancel my plan?", "security.md"),
        ("Do you support PayPal?", "plans.md"),
    ],
)
async def test_sample_questions_cite_no_off_topic_page(
    assistant: KnowledgeBaseAssistant, question: str, off_topic: str
) -> None:
    reply = await assistant.reply(ask(question))

    paths = [s.path for s in check_citations(reply)]
    assert not [p for p in paths if p.startswith(off_topic)], reply.content


@pytest.mark.parametrize(
    "question", ["what is the meaning of life", "Who won the football world cup in 1998?"]
)
async def test_unrelated_questions_are_answered_plainly_with_no_sources(
    assistant: KnowledgeBaseAssistant, question: str
) -> None:
    reply = await assistant.reply(ask(question))

    assert reply.content == (
        "I couldn't find anything about that in the knowledge base. It covers: "
        + ", ".join(SAMPLE_TOPICS)
        + "."
    )
    assert reply.end.sources == ()
    assert "Sources:" not in reply.content
    assert "[1]" not in reply.content


async def test_an_empty_knowledge_base_says_so(tmp_path: Path) -> None:
    assistant = KnowledgeBaseAssistant(KnowledgeBase.from_directory(tmp_path / "missing"))

    reply = await assistant.reply(ask(PROCESSORS_QUESTION))

    assert reply.content == (
        "I couldn't find anything about that in the knowledge base. It covers: nothing yet."
    )
    assert reply.end.sources == ()


async def test_the_question_is_the_last_user_turn(assistant: KnowledgeBaseAssistant) -> None:
    earlier_refunds = [
        Turn(role="user", content=REFUNDS_QUESTION),
        Turn(role="assistant", content="Refunds take 5 to 10 business days."),
        Turn(role="user", content=PROCESSORS_QUESTION),
    ]
    earlier_processors = [
        Turn(role="user", content=PROCESSORS_QUESTION),
        Turn(role="assistant", content="Stripe, Adyen and PayPal; refunds are possible too."),
        Turn(role="user", content=REFUNDS_QUESTION),
    ]

    processors = await assistant.reply(earlier_refunds)
    refunds = await assistant.reply(earlier_processors)

    assert processors.end.sources[0].path == "payments.md#supported-payment-processors"
    assert not [s for s in processors.end.sources if s.path.startswith("refunds.md")]
    assert refunds.end.sources[0].path == "refunds.md#issuing-a-refund"
    assert not [s for s in refunds.end.sources if s.path.startswith("payments.md")]


async def test_stream_deltas_join_to_the_reply_then_one_end(
    assistant: KnowledgeBaseAssistant,
) -> None:
    history = ask(PROCESSORS_QUESTION)

    events = await events_of(assistant, history)
    reply = await assistant.reply(history)

    *deltas, last = events
    assert len(deltas) > 10
    assert all(isinstance(event, TextDelta) for event in deltas)
    assert all(event.text for event in deltas if isinstance(event, TextDelta))
    assert "".join(e.text for e in deltas if isinstance(e, TextDelta)) == reply.content
    assert isinstance(last, ReplyEnd)
    assert last.model == "bm25-extractive"
    assert last == reply.end
    assert last.sources[0].path == "payments.md#supported-payment-processors"


async def test_stream_of_an_unrelated_question_also_ends_once(
    assistant: KnowledgeBaseAssistant,
) -> None:
    events = await events_of(assistant, ask("what is the meaning of life"))

    assert [type(e) for e in events[:-1]] == [TextDelta] * (len(events) - 1)
    assert events[-1] == ReplyEnd(model="bm25-extractive", sources=())


async def test_answers_are_deterministic(assistant: KnowledgeBaseAssistant) -> None:
    fresh = KnowledgeBaseAssistant(KnowledgeBase.from_directory(SAMPLE_DIR))

    for question in (PROCESSORS_QUESTION, REFUNDS_QUESTION, "Is my card data safe?"):
        first = await assistant.reply(ask(question))
        assert await assistant.reply(ask(question)) == first
        assert await fresh.reply(ask(question)) == first
        assert await events_of(assistant, ask(question)) == await events_of(fresh, ask(question))


@pytest.mark.parametrize(
    "question",
    [
        PROCESSORS_QUESTION,
        REFUNDS_QUESTION,
        "How do I cancel my plan?",
        "Is my card data safe?",
        "Do you support SSO?",
        "What is the test card number?",
    ],
)
async def test_passages_below_half_the_best_score_are_left_out(
    knowledge: KnowledgeBase, assistant: KnowledgeBaseAssistant, question: str
) -> None:
    found = knowledge.search(question, 3)
    best = found[0].score
    weak = [p for p in found if p.score < best / 2]
    strong = [p for p in found if p.score >= best / 2]

    reply = await assistant.reply(ask(question))

    assert [s.path for s in reply.end.sources] == [p.path for p in strong]
    for passage in weak:
        assert passage.path not in reply.content
        assert f"**{passage.title}**" not in reply.content
        first_sentence = passage.text.split(". ")[0].lstrip("- *")
        assert first_sentence not in reply.content


async def test_a_weak_match_adds_nothing_to_the_answer() -> None:
    strong_text = "Webhooks notify your server of every payment. Configure webhooks per account."
    weak_text = (
        "Zebras live on the savannah in large herds. They walk long distances to find grass "
        "and water, and their stripes confuse flies. One of them once ate a webhook."
    )
    knowledge = KnowledgeBase(
        [
            Passage("Webhooks", "webhooks.md", strong_text),
            Passage("Animals", "animals.md", weak_text),
            # Unrelated passages, so that "webhooks" is a rare word (BM25's IDF).
            *(Passage(f"Other {n}", f"other-{n}.md", f"Filler text number {n}.") for n in range(8)),
        ]
    )
    found = knowledge.search("webhooks", 3)
    assert [p.path for p in found] == ["webhooks.md", "animals.md"]
    assert found[1].score < found[0].score / 2

    reply = await KnowledgeBaseAssistant(knowledge).reply(ask("webhooks"))

    assert [s.path for s in reply.end.sources] == ["webhooks.md"]
    assert "Zebras" not in reply.content
    assert "animals.md" not in reply.content
    assert "Webhooks notify your server of every payment." in reply.content


async def test_top_k_limits_the_sources(knowledge: KnowledgeBase) -> None:
    reply = await KnowledgeBaseAssistant(knowledge, top_k=1).reply(ask(REFUNDS_QUESTION))

    assert [s.path for s in check_citations(reply)] == ["refunds.md#issuing-a-refund"]
