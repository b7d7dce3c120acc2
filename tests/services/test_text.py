"""Titles and previews: whitespace collapsed, length capped, grapheme clusters kept whole,
nothing invisible shown."""

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from app.kit.text import (
    LABEL_MAX_CLUSTER_CHARS,
    PREVIEW_MAX_CHARS,
    TITLE_MAX_CHARS,
    UNTITLED,
    make_chosen_title,
    make_preview,
    make_title,
    shorten,
)
from app.kit.text import _shorten_clusters as shorten_by_clusters
from app.search.snippets import make_snippet
from tests.labels import BIDI_CONTROLS, INVISIBLE, has_visible, label_texts, zalgo

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


# --- What does not show: invisible characters, bidi controls, absurd clusters -------------

ZALGO = zalgo(160)


@pytest.mark.parametrize(
    "text",
    [
        *(pytest.param(char, id=f"U+{ord(char):04X}") for char in INVISIBLE),
        pytest.param("".join(INVISIBLE), id="all"),
        pytest.param(" \u200b\n\u202e\t\u0301\u0301 \ufe0f ", id="with-whitespace"),
        pytest.param("\u0301" * 160, id="marks-only"),
        pytest.param("\u200b" * 32_000, id="32000-zero-width-spaces"),
    ],
)
def test_text_with_nothing_visible_makes_no_label(text: str) -> None:
    assert make_title(text) == UNTITLED
    assert make_chosen_title(text) == UNTITLED
    assert make_preview(text) == ""
    assert make_snippet(text, ["x"]) == ""


@pytest.mark.parametrize("control", BIDI_CONTROLS, ids=lambda c: f"U+{ord(c):04X}")
def test_bidi_controls_are_left_out_of_every_label(control: str) -> None:
    text = f"{control}abc{control} \u05e9\u05dc\u05d5\u05dd{control}"

    assert make_title(text) == "abc \u05e9\u05dc\u05d5\u05dd"
    assert make_chosen_title(text) == "abc \u05e9\u05dc\u05d5\u05dd"
    assert make_preview(text) == "abc \u05e9\u05dc\u05d5\u05dd"
    assert make_snippet(text, ["abc"]) == "abc \u05e9\u05dc\u05d5\u05dd"


def test_an_override_cut_open_does_not_leak_past_the_title() -> None:
    # Without the rule, the title would end inside the override, and whatever a client shows
    # after the title would be drawn right to left.
    text = "\u202e" + "gnp.exe " * 20 + "\u202c"

    title = make_title(text)

    assert title == ("gnp.exe " * 6).rstrip() + "..."
    assert not regex.search(r"\p{Bidi_Control}", title)


def test_invisible_characters_between_words_are_dropped() -> None:
    assert make_title("\ufeff\u200bhello\u200b\u200b world\u2060!\u200b ") == "hello world!"


def test_joiners_marks_and_selectors_inside_a_cluster_are_kept() -> None:
    text = f"{FAMILY} {E_ACUTE} \u2764\ufe0f \u0915\u094d\u0937 \u0645\u06cc\u200c\u062e"
    assert make_title(text) == text


def test_a_cluster_of_absurd_length_keeps_its_first_code_points_only() -> None:
    assert make_title(ZALGO) == ZALGO[:LABEL_MAX_CLUSTER_CHARS]
    assert make_title(f"{ZALGO} says hello") == ZALGO[:LABEL_MAX_CLUSTER_CHARS] + " says hello"
    assert make_preview(ZALGO * 20) == ZALGO[:LABEL_MAX_CLUSTER_CHARS] * 8 + "..."


def test_a_chain_of_conjuncts_is_one_cluster_and_is_cut_short_too() -> None:
    # Devanagari consonants joined by viramas form one grapheme cluster, however many.
    chain = "\u0915\u094d" * 100 + "\u0915"
    assert make_title(chain) == chain[:LABEL_MAX_CLUSTER_CHARS]


def test_every_emoji_sequence_fits_the_cluster_limit() -> None:
    # The longest recommended emoji sequences: a kiss with two skin tones (10 code points).
    kiss = "\U0001f469\U0001f3fb\u200d\u2764\ufe0f\u200d\U0001f48b\u200d\U0001f468\U0001f3fc"
    assert len(kiss) <= LABEL_MAX_CLUSTER_CHARS
    assert make_title(f"{kiss} {kiss}") == f"{kiss} {kiss}"


def test_a_chosen_title_follows_the_same_rules_but_is_not_cut() -> None:
    title = "\u202ex" * 100

    assert make_chosen_title(title) == "x" * 100
    assert make_chosen_title("  a\n\tb  ") == "a b"


# --- Properties, over text mixing visible and invisible characters ------------------------


def in_order(label: str, text: str) -> bool:
    """Whether the label's characters, whitespace aside, appear in `text` in the same order."""
    remaining = iter("".join(text.split()))
    return all(char in remaining for char in "".join(label.split()))


@settings(max_examples=400, derandomize=True)
@given(text=label_texts)
def test_labels_show_only_what_is_visible_within_their_length(text: str) -> None:
    title, preview = make_title(text), make_preview(text)

    assert len(title) <= TITLE_MAX_CHARS
    assert len(preview) <= PREVIEW_MAX_CHARS
    for label in (title, preview, make_chosen_title(text), make_snippet(text, ["a"])):
        assert not regex.search(r"\p{Bidi_Control}", label)
        # No cluster's marks take over a label.
        assert not regex.search(rf"\p{{M}}{{{LABEL_MAX_CLUSTER_CHARS}}}", label)
    if has_visible(text):
        # Something of the text shows: never an ellipsis alone, never "New chat" for text.
        assert has_visible(title.removesuffix("...")), title
        assert has_visible(preview.removesuffix("...")), preview
        assert in_order(title.removesuffix("..."), text)
        assert in_order(preview.removesuffix("..."), text)
    else:
        assert (title, preview) == (UNTITLED, "")


# Mostly characters that are each their own cluster (the fast path), with now and then one that
# is not, anywhere, and whitespace runs long enough to push text past the head looked at first.
_MOSTLY_PLAIN = st.text(
    alphabet=st.sampled_from(
        ["a", "Z", "7", "!", " ", "\u00e9", "\u05e9", "\u4e2d", "\U0001f469"] * 6
        + ["\n", "\u00a0", "\u0301", "\u200d", "\U0001f3fd", "\u3164", "\u2800", "\x07"]
    ),
    max_size=400,
) | st.builds(
    lambda text, spaces, rest: text + " " * spaces + rest,
    st.text(alphabet="ab ", max_size=40),
    st.integers(0, 300),
    st.text(alphabet="ab\u0301", max_size=20),
)


@settings(max_examples=600, derandomize=True)
@given(text=_MOSTLY_PLAIN | label_texts, max_chars=st.sampled_from([None, 5, 50, 100, 160]))
def test_plain_text_is_cut_as_the_cluster_walk_cuts_it(text: str, max_chars: int | None) -> None:
    assert shorten(text, max_chars) == shorten_by_clusters(text, max_chars)
