"""Search result snippets: the text as written around the first place the search matches it,
by the index's rules (folded words, parts of unspaced runs), cut between grapheme clusters,
with ellipses where text was left out."""

import pytest
import regex

from app.kit.text import ELLIPSIS, LABEL_MAX_CLUSTER_CHARS
from app.search.fulltext import query_words
from app.search.snippets import SNIPPET_LEAD_CHARS, SNIPPET_MAX_CHARS, make_snippet
from tests.db.test_search_languages import (
    FOLDED,
    NOT_FOUND,
    THAI,
    THAI_WORD,
    TOKYO,
    TOKYO_SENTENCE,
)

FAMILY = "\U0001f469\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466"  # one cluster, 7 code points
FLAG = "\U0001f1eb\U0001f1f7"
E_ACUTE = "e\u0301"
ZALGO = "z" + "\u0301\u0302\u0303\u0304" * 6  # one cluster of 25 code points


def clusters(text: str) -> list[str]:
    found: list[str] = regex.findall(r"\X", text)
    return found


def label_clusters(text: str) -> list[str]:
    """The clusters of `text` as a label shows them (a long one cut short); for text with
    nothing invisible in it."""
    return [cluster[:LABEL_MAX_CLUSTER_CHARS] for cluster in clusters(text)]


def body(snippet: str) -> str:
    """The snippet without the ellipses it starts or ends with."""
    return snippet.removeprefix(ELLIPSIS).removesuffix(ELLIPSIS)


def test_a_short_text_is_the_whole_snippet() -> None:
    assert make_snippet("How do I deploy Kubernetes?", ["deploy"]) == "How do I deploy Kubernetes?"


def test_whitespace_runs_collapse_and_ends_are_trimmed() -> None:
    assert make_snippet("  a\n\n b\t\tdeploy  \r\n", ["deploy"]) == "a b deploy"


def test_a_match_near_the_start_keeps_the_start() -> None:
    text = "x " * (SNIPPET_LEAD_CHARS // 2) + "deploy " + "y " * 200
    snippet = make_snippet(text, ["deploy"])
    assert snippet.startswith("x x ")
    assert snippet.endswith(ELLIPSIS)
    assert len(snippet) <= SNIPPET_MAX_CHARS


def test_a_late_match_shows_a_window_around_it_with_ellipses() -> None:
    before = " ".join(f"word{n}" for n in range(100))
    after = " ".join(f"more{n}" for n in range(100))
    snippet = make_snippet(f"{before} Deploying the cluster {after}", ["deploy"])

    assert snippet.startswith(ELLIPSIS)
    assert snippet.endswith(ELLIPSIS)
    assert len(snippet) <= SNIPPET_MAX_CHARS
    text = body(snippet)
    # At most the lead before the match, starting at a whole word, and the match itself.
    lead = text.index("Deploying")
    assert 0 < lead <= SNIPPET_LEAD_CHARS
    assert text.split(" ")[0] in before.split(" ")
    assert "Deploying the cluster more0" in text


def test_a_late_match_at_the_end_has_no_trailing_ellipsis() -> None:
    text = "a" * 300 + " the end deploy"
    snippet = make_snippet(text, ["deploy"])
    assert snippet.startswith(ELLIPSIS)
    assert snippet.endswith("the end deploy")


def test_the_first_match_of_any_word_decides_the_window() -> None:
    text = "x" * 100 + " kube " + "y" * 200 + " deploy " + "z" * 100
    snippet = make_snippet(text, ["deploy", "kube"])
    assert "kube" in snippet
    assert "deploy" not in snippet


def test_matching_is_case_insensitive_and_at_the_start_of_a_word() -> None:
    text = "a" * 100 + " redeploy " + "b" * 100 + " DEPLOYMENT " + "c" * 100
    snippet = make_snippet(text, ["deploy"])
    # "redeploy" contains the word but does not start with it.
    assert "DEPLOYMENT" in snippet
    assert "redeploy" not in snippet


def test_no_match_gives_the_start_of_the_text() -> None:
    text = "First words here. " + "filler " * 100
    snippet = make_snippet(text, ["absent"])
    assert snippet.startswith("First words here.")
    assert snippet.endswith(ELLIPSIS)
    assert len(snippet) <= SNIPPET_MAX_CHARS


FILLER = " ".join(f"word{n}" for n in range(100))


@pytest.mark.parametrize(
    ("written", "query"),
    [
        *FOLDED,
        pytest.param("cafe\u0301", "CAF\u00c9", id="combining-accent"),
        pytest.param(
            "\u03c3\u03bf\u03c6\u03af\u03b1\u03c2",
            "\u03a3\u039f\u03a6\u0399\u0391\u03a3",
            id="final-sigma-in-text",
        ),
        pytest.param("\ufb01nance", "finance", id="ligature"),
        pytest.param(TOKYO, TOKYO, id="cjk-inside-a-run"),
        pytest.param(THAI_WORD, THAI_WORD, id="thai-inside-a-run"),
    ],
)
def test_a_folded_or_unspaced_match_centres_the_snippet_on_the_text_as_written(
    written: str, query: str
) -> None:
    """As the index matches: folded, and anywhere inside a run of an unspaced script (the
    match is glued to the text before it, `...我住在東京都`). Folding before the match
    (ß, ligatures) does not shift the window."""
    glued = "\u6211\u4f4f\u5728" if written in (TOKYO, THAI_WORD) else "The "
    text = f"Ma\u00dfe \ufb03 {FILLER} {glued}{written} and then {FILLER}"
    snippet = make_snippet(text, query_words(query))

    assert snippet.startswith(ELLIPSIS)
    assert snippet.endswith(ELLIPSIS)
    assert len(snippet) <= SNIPPET_MAX_CHARS
    shown = body(snippet)
    assert f"{glued}{written} and then word0" in shown
    assert 0 < shown.index(written) <= SNIPPET_LEAD_CHARS


@pytest.mark.parametrize(
    ("filler", "written", "query"),
    [
        pytest.param("Stra\u00dfe und \ufb01sh, ", "Zw\u00f6lf", "zwolf", id="folded"),
        pytest.param(
            "\u6211\u4f4f\u5728\u5317\u4eac\u3002", TOKYO_SENTENCE, "\u6771\u4eac", id="cjk"
        ),
        pytest.param(
            "\u6211\u4f4f\u5728\u5317\u4eac", TOKYO_SENTENCE, "\u6771\u4eac", id="cjk-one-run"
        ),
        pytest.param(
            "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35 ", THAI, "\u0e44\u0e17\u0e22", id="thai"
        ),
    ],
)
def test_a_match_far_into_a_long_message(filler: str, written: str, query: str) -> None:
    """200 KB before the match: the window is around it, not at the start."""
    text = filler * (200_000 // len(filler)) + written + filler * 20
    snippet = make_snippet(text, query_words(query))

    assert snippet.startswith(ELLIPSIS)
    assert len(snippet) <= SNIPPET_MAX_CHARS
    shown = body(snippet)
    assert written in shown
    assert shown.index(written) <= SNIPPET_LEAD_CHARS


@pytest.mark.parametrize(
    ("written", "query"),
    [*NOT_FOUND, pytest.param("caf\u00e9", "cafes", id="accent-then-more")],
)
def test_text_the_query_does_not_match_gives_the_start(written: str, query: str) -> None:
    text = f"First words here. {FILLER} {written} {FILLER}"
    snippet = make_snippet(text, query_words(query))
    assert snippet.startswith("First words here.")
    assert snippet.endswith(ELLIPSIS)


@pytest.mark.parametrize("gap", [" ", "\n\n", " \n\t " * 60, "\u3000" * 2_000])
@pytest.mark.parametrize("words_before", [0, 3, 30, 300])
def test_a_whitespace_run_counts_as_one_space_however_long(gap: str, words_before: int) -> None:
    """Only what comes just before the match is collapsed, with the same result."""
    text = f"{gap}intro{gap}" + f"word{gap}" * words_before + f"deploy{gap}" + "tail " * 40
    collapsed = regex.sub(r"\s+", " ", text).strip()
    assert make_snippet(text, ["deploy"]) == make_snippet(collapsed, ["deploy"])
    assert "deploy" in make_snippet(text, ["deploy"])


def test_query_words_are_taken_literally() -> None:
    text = "a" * 100 + " (a+b)* c.d " + "e" * 100
    assert make_snippet(text, ["a+b", ".*", "c.d"]).startswith(ELLIPSIS)
    assert make_snippet("x" * 300, [".*"]).startswith("xxx")


def test_no_words_gives_the_start() -> None:
    assert make_snippet("some text", []) == "some text"


def test_empty_text() -> None:
    assert make_snippet("", ["x"]) == ""


@pytest.mark.parametrize("cluster", [FAMILY, FLAG, E_ACUTE, ZALGO, "\u0915\u094d\u0937"])
@pytest.mark.parametrize("gap", range(0, 30))
def test_the_window_never_starts_inside_a_grapheme_cluster(cluster: str, gap: int) -> None:
    # No spaces before the match: the window starts where the lead runs out, in the clusters.
    text = cluster * 20 + "-" * gap + "-deploy " + "tail " * 50
    snippet = make_snippet(text, ["deploy"])
    assert snippet.startswith(ELLIPSIS)
    shown = body(snippet)
    labelled = label_clusters(text)
    starts = [sum(map(len, labelled[:n])) for n in range(len(labelled))]
    start = "".join(labelled).index(shown)
    assert start in starts, (start, shown[:10])
    assert "deploy" in shown


@pytest.mark.parametrize("cluster", [FAMILY, FLAG, E_ACUTE, ZALGO])
def test_the_end_is_cut_between_grapheme_clusters(cluster: str) -> None:
    text = "deploy " + cluster * 200
    snippet = make_snippet(text, ["deploy"])
    assert snippet.endswith(ELLIPSIS)
    assert len(snippet) <= SNIPPET_MAX_CHARS
    kept = body(snippet)
    assert clusters(kept) == label_clusters(text)[: len(clusters(kept))]


def test_the_snippet_never_exceeds_its_length() -> None:
    for lead in range(0, 200, 7):
        snippet = make_snippet("w" * lead + " deploy " + "v" * 500, ["deploy"])
        assert len(snippet) <= SNIPPET_MAX_CHARS
        assert "deploy" in snippet
