"""Titles and previews: whitespace collapsed, length capped, grapheme clusters kept whole."""

import pytest
import regex

from app.services.text import PREVIEW_MAX_CHARS, TITLE_MAX_CHARS, make_preview, make_title, shorten

FAMILY = "\U0001f469\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466"  # one grapheme, 7 code points
FLAG = "\U0001f1eb\U0001f1f7"  # regional indicator pair
E_ACUTE = "e\u0301"  # e + combining acute accent


def graphemes(text: str) -> list[str]:
    found: list[str] = regex.findall(r"\X", text)
    return found


def test_short_text_is_kept_whole() -> None:
    assert make_title("What payment processors do you support?") == (
        "What payment processors do you support?"
    )


def test_whitespace_runs_and_newlines_collapse_and_ends_are_trimmed() -> None:
    assert make_title("  Hello\n\n  world\t\tagain \r\n") == "Hello world again"


def test_exactly_at_the_limit_is_not_cut() -> None:
    text = "x" * TITLE_MAX_CHARS
    assert make_title(text) == text


def test_over_the_limit_is_cut_with_an_ellipsis_within_the_limit() -> None:
    title = make_title("y" * (TITLE_MAX_CHARS + 1))
    assert title == "y" * (TITLE_MAX_CHARS - 3) + "..."
    assert len(title) == TITLE_MAX_CHARS


def test_the_cut_does_not_leave_trailing_space_before_the_ellipsis() -> None:
    assert make_title("x" * 46 + " " + "y" * 10) == "x" * 46 + "..."


def test_preview_uses_its_own_limit() -> None:
    preview = make_preview("z" * 500)
    assert len(preview) == PREVIEW_MAX_CHARS
    assert preview.endswith("...")


@pytest.mark.parametrize("cluster", [FAMILY, FLAG, E_ACUTE, "\u0915\u094d\u0937"])
@pytest.mark.parametrize("offset", range(40, 50))
def test_a_grapheme_cluster_is_never_split(cluster: str, offset: int) -> None:
    text = "a" * offset + cluster + "b" * 60
    title = make_title(text)
    assert len(title) <= TITLE_MAX_CHARS
    assert title.endswith("...")
    body = title.removesuffix("...")
    # Every cluster of the kept text is a cluster of the original, in the same place.
    assert graphemes(body) == graphemes(text)[: len(graphemes(body))]


def test_a_single_cluster_longer_than_the_budget_is_dropped_whole() -> None:
    zalgo = "a" + "\u0301" * 80
    assert shorten(zalgo + " tail", 10) == "..."


def test_only_whitespace_collapses_to_empty() -> None:
    assert make_preview(" \n\t ") == ""
