"""The knowledge base: Markdown split into passages, and full-text search over them."""

import logging
from pathlib import Path

import pytest

from app.assistants.knowledge import KnowledgeBase, Passage, query_terms, split_markdown

# --- split_markdown -------------------------------------------------------------------------


def test_sections_split_at_headings_with_titles_and_anchors() -> None:
    markdown = (
        "# Payments\n"
        "\n"
        "Everything about payments.\n"
        "\n"
        "## Supported payment processors\n"
        "\n"
        "Stripe and PayPal.\n"
        "\n"
        "### Fees & Limits (2024)\n"
        "Fees are low.\n"
    )

    assert split_markdown(markdown, "payments.md") == [
        Passage(
            title="Payments",
            path="payments.md#payments",
            text="Everything about payments.",
            document="Payments",
        ),
        Passage(
            title="Payments > Supported payment processors",
            path="payments.md#supported-payment-processors",
            text="Stripe and PayPal.",
            heading="Supported payment processors",
            document="Payments",
        ),
        Passage(
            title="Payments > Fees & Limits (2024)",
            path="payments.md#fees-limits-2024",
            text="Fees are low.",
            heading="Fees & Limits (2024)",
            document="Payments",
        ),
    ]


def test_document_title_is_the_first_h1_even_for_text_above_it() -> None:
    markdown = "Intro before any heading.\nSecond line.\n\n# Guide\n\n## Setup\n\nRun it.\n"

    passages = split_markdown(markdown, "docs/guide.md")

    assert passages == [
        Passage(
            title="Guide",
            path="docs/guide.md",
            text="Intro before any heading.\nSecond line.",
            document="Guide",
        ),
        Passage(
            title="Guide > Setup",
            path="docs/guide.md#setup",
            text="Run it.",
            heading="Setup",
            document="Guide",
        ),
    ]


def test_without_h1_the_path_is_the_document_title() -> None:
    passages = split_markdown("## Only a section\n\nBody text.\n", "notes/misc.md")

    assert passages == [
        Passage(
            title="notes/misc.md > Only a section",
            path="notes/misc.md#only-a-section",
            text="Body text.",
            heading="Only a section",
            document="notes/misc.md",
        )
    ]


def test_headings_without_text_make_no_passage_and_closing_hashes_are_dropped() -> None:
    markdown = "# Doc #\n\n## Empty\n\n## Full ##\n\nContent.\n#not-a-heading stays text\n"

    passages = split_markdown(markdown, "d.md")

    assert passages == [
        Passage(
            title="Doc > Full",
            path="d.md#full",
            text="Content.\n#not-a-heading stays text",
            heading="Full",
            document="Doc",
        )
    ]


def test_lines_in_code_blocks_are_not_headings() -> None:
    markdown = "# Doc\n\n## Setup\n\n```sh\n# install it\npip install acme\n```\n"

    passages = split_markdown(markdown, "d.md")

    assert [(p.title, p.path) for p in passages] == [("Doc > Setup", "d.md#setup")]
    assert "# install it\npip install acme" in passages[0].text


def test_long_sections_are_split_at_paragraphs_under_the_maximum() -> None:
    paragraphs = [f"Paragraph {n} " + "word " * 110 for n in range(10)]  # ~560 chars each
    markdown = "# Doc\n\n## Long\n\n" + "\n\n".join(p.strip() for p in paragraphs) + "\n"

    passages = split_markdown(markdown, "long.md")

    assert len(passages) > 1
    assert all(len(p.text) <= 1_500 for p in passages)
    assert {(p.title, p.path) for p in passages} == {("Doc > Long", "long.md#long")}
    # Cut only between paragraphs: every paragraph whole, in order, none lost.
    rejoined = [part for p in passages for part in p.text.split("\n\n")]
    assert rejoined == [p.strip() for p in paragraphs]
    # Paragraphs are packed: two of them fit in one passage.
    assert len(passages) == 5


def test_a_single_paragraph_longer_than_the_maximum_is_kept_whole() -> None:
    paragraph = "x" * 2_000

    assert [p.text for p in split_markdown(f"# T\n\n{paragraph}\n", "t.md")] == [paragraph]


# --- query_terms ----------------------------------------------------------------------------


def test_query_terms_drop_stopwords_lower_case_dedupe_keep_order() -> None:
    assert query_terms("What payment PROCESSORS do you support? Payment, please!") == [
        "payment",
        "processors",
    ]


def test_query_terms_drop_single_characters_and_punctuation() -> None:
    assert query_terms('a "b" (Refund) * x: NEAR-term') == ["refund", "near", "term"]


def test_query_terms_of_stopwords_only_are_empty() -> None:
    assert query_terms("What is it? How do I ... and you?") == []
    assert query_terms("") == []


# --- KnowledgeBase.from_directory -----------------------------------------------------------


def _write(folder: Path, relative: str, text: str) -> None:
    file = folder / relative
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(text, encoding="utf-8")


def test_from_directory_reads_nested_markdown_and_skips_readme(tmp_path: Path) -> None:
    _write(tmp_path, "README.md", "# About\n\nzebracorn describes the folder.\n")
    _write(tmp_path, "sub/readme.md", "# About too\n\nzebracorn again.\n")
    _write(tmp_path, "top.md", "# Top\n\n## Alpha\n\nalpha zebracorn text.\n")
    _write(tmp_path, "sub/deeper/nested.md", "# Nested\n\n## Beta\n\nbeta zebracorn text.\n")
    _write(tmp_path, "ignored.txt", "zebracorn in a text file.\n")

    knowledge = KnowledgeBase.from_directory(tmp_path)

    assert knowledge.size == 2
    assert knowledge.titles == ["Nested", "Top"]
    found = knowledge.search("zebracorn", 10)
    assert sorted(p.path for p in found) == ["sub/deeper/nested.md#beta", "top.md#alpha"]


def test_missing_folder_is_an_empty_knowledge_base_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "nope"

    with caplog.at_level(logging.WARNING, logger="app.assistants.knowledge"):
        knowledge = KnowledgeBase.from_directory(missing)

    assert knowledge.size == 0
    assert knowledge.titles == []
    assert knowledge.search("anything at all", 5) == []
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(missing) in warnings[0].getMessage()


# --- search ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def knowledge() -> KnowledgeBase:
    return KnowledgeBase(
        [
            Passage(
                "Refunds > Issuing a refund",
                "refunds.md#issuing-a-refund",
                "You can refund a payment within 180 days; the money goes back to the card.",
            ),
            Passage(
                "Payments > Processors",
                "payments.md#processors",
                "We integrate with Stripe, Adyen and PayPal for card payments.",
            ),
            Passage(
                "Careers > Résumé",
                "careers.md#resume",
                "Send your résumé and a cover letter to the hiring team.",
            ),
            Passage(
                "Security > Encryption",
                "security.md#encryption",
                "All traffic uses TLS and stored data is encrypted with AES-256.",
            ),
            Passage(
                "Payouts",
                "payouts.md",
                "Payouts reach your bank account two business days after a payment.",
            ),
        ]
    )


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("How do I refund a payment?", "refunds.md#issuing-a-refund"),
        ("Which processors, like Stripe, do you integrate with?", "payments.md#processors"),
        ("Is my data encrypted?", "security.md#encryption"),
        ("When do payouts reach my bank?", "payouts.md"),
    ],
)
def test_the_passage_about_the_topic_ranks_first(
    knowledge: KnowledgeBase, question: str, expected: str
) -> None:
    found = knowledge.search(question, 5)

    assert found[0].path == expected
    assert [p.score for p in found] == sorted((p.score for p in found), reverse=True)
    assert all(p.score > 0 for p in found)


def test_heading_matches_weigh_more_than_body_matches() -> None:
    filler = "Some unrelated words fill this passage to the same length as the other."
    knowledge = KnowledgeBase(
        [
            Passage("Doc > General", "body.md", f"Webhooks. {filler}", heading="General"),
            Passage("Doc > Webhooks", "title.md", f"General. {filler}", heading="Webhooks"),
        ]
    )

    found = knowledge.search("webhooks", 5)

    assert [p.path for p in found] == ["title.md", "body.md"]
    assert found[0].score > found[1].score


def test_stemming_finds_other_forms_of_a_word(knowledge: KnowledgeBase) -> None:
    assert knowledge.search("refunding", 1)[0].path == "refunds.md#issuing-a-refund"
    assert knowledge.search("integrating", 1)[0].path == "payments.md#processors"


def test_diacritics_are_ignored_both_ways(knowledge: KnowledgeBase) -> None:
    assert [p.path for p in knowledge.search("resume", 5)] == ["careers.md#resume"]
    assert [p.path for p in knowledge.search("RÉSUMÉ", 5)] == ["careers.md#resume"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ('"refund', "refunds.md#issuing-a-refund"),
        ('refund"', "refunds.md#issuing-a-refund"),
        ("(refund", "refunds.md#issuing-a-refund"),
        ("refund)", "refunds.md#issuing-a-refund"),
        ("refund*", "refunds.md#issuing-a-refund"),
        ("*refund", "refunds.md#issuing-a-refund"),
        ("NEAR(refund payment)", "refunds.md#issuing-a-refund"),
        ("refund AND", "refunds.md#issuing-a-refund"),
        ("AND refund OR NOT", "refunds.md#issuing-a-refund"),
        ("-refund", "refunds.md#issuing-a-refund"),
        ("refund:", "refunds.md#issuing-a-refund"),
        ("title:refund", "refunds.md#issuing-a-refund"),
        ("body:stripe", "payments.md#processors"),
        ("path:payouts.md", "payouts.md"),
        ("{title body}: encrypted", "security.md#encryption"),
        ("^stripe + paypal", "payments.md#processors"),
        ('"""stripe""" \'paypal\'', "payments.md#processors"),
    ],
)
def test_fts5_syntax_in_queries_is_searched_as_plain_words(
    knowledge: KnowledgeBase, query: str, expected: str
) -> None:
    found = knowledge.search(query, 5)

    assert found
    assert found[0].path == expected


@pytest.mark.parametrize(
    "query",
    ['"', "()", "*", "NEAR", "AND OR NOT", "-", ":", "title:", '"" ()* : -', "__", "\x00", "²³"],
)
def test_queries_of_only_fts5_syntax_never_raise(knowledge: KnowledgeBase, query: str) -> None:
    assert isinstance(knowledge.search(query, 5), list)
    # Operators and syntax alone match nothing in these passages.
    assert knowledge.search(query, 5) == []


@pytest.mark.parametrize("query", ["", "   ", "?!", "what is it", "How do I do that for you?"])
def test_empty_or_stopword_only_queries_find_nothing(knowledge: KnowledgeBase, query: str) -> None:
    assert knowledge.search(query, 5) == []


def test_words_in_no_passage_find_nothing(knowledge: KnowledgeBase) -> None:
    assert knowledge.search("meaning of life", 5) == []


def test_limit_is_respected(knowledge: KnowledgeBase) -> None:
    # "payment" / "payments" / "payouts" appear in several passages.
    query = "payment payouts card"
    assert len(knowledge.search(query, 10)) >= 3
    assert len(knowledge.search(query, 2)) == 2
    assert len(knowledge.search(query, 1)) == 1
    assert knowledge.search(query, 0) == []
    assert [p.path for p in knowledge.search(query, 2)] == [
        p.path for p in knowledge.search(query, 10)[:2]
    ]


def test_a_closing_hash_needs_a_space_and_repeated_headings_get_distinct_anchors() -> None:
    markdown = "# Learn C#\n\n## FAQ\n\nOne.\n\n## FAQ\n\nTwo.\n"

    passages = split_markdown(markdown, "c.md")

    assert [(p.title, p.path) for p in passages] == [
        ("Learn C# > FAQ", "c.md#faq"),
        ("Learn C# > FAQ", "c.md#faq-1"),
    ]
