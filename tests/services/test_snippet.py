"""Search result snippets: the text around the first matching word, cut between grapheme
clusters, with ellipses where text was left out."""

import pytest
import regex

from app.kit.text import (
    ELLIPSIS,
    LABEL_MAX_CLUSTER_CHARS,
    SNIPPET_LEAD_CHARS,
    SNIPPET_MAX_CHARS,
    make_snippet,
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


def test_a_match_in_another_normal_form_gives_the_start() -> None:
    """Query words are NFKC-normalised; the text is shown as written, so full-width text
    matched by its ASCII form falls back to the start rather than failing."""
    text = "intro " * 40 + "\uff44\uff45\uff50\uff4c\uff4f\uff59"
    assert make_snippet(text, ["deploy"]).startswith("intro intro")


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
