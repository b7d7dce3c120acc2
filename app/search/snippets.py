"""Search result snippets: the message as written around the first place the search matches
it, by the index's own rules, made a one-line label as titles and previews are
(app/kit/text.py)."""

from app.kit.text import ELLIPSIS, GRAPHEME_CLUSTER, WHITESPACE_RUN, shorten
from app.search.fulltext import first_match

SNIPPET_MAX_CHARS = 160
# How much text a snippet shows before the first match.
SNIPPET_LEAD_CHARS = 40


def make_snippet(text: str, query_words: list[str]) -> str:
    """An excerpt of `text` around the first place a search for `query_words` (folded, as
    `query_words` makes them) matches it, by the index's rules (`first_match`: `cafe` in
    `Café`, `東京` inside `我住在東京都`), from the start when nothing does: what a search
    result shows of the message that matched. The text is shown as written. A label like a
    preview: "" when nothing in it is visible."""
    match = first_match(text, query_words)
    if match is not None:
        before = _shown_before(text, match)
        if len(before) > SNIPPET_LEAD_CHARS:
            start = _cluster_boundary(before, len(before) - SNIPPET_LEAD_CHARS)
            space = before.find(" ", start)
            if space != -1:
                start = space + 1
            shown = before[start:] + text[match:]
            return ELLIPSIS + shorten(shown, SNIPPET_MAX_CHARS - len(ELLIPSIS))
    return shorten(text, SNIPPET_MAX_CHARS)


def _shown_before(text: str, position: int) -> str:
    """What comes before `position` in `text` as a label shows it (whitespace runs one space,
    none leading), or when that is longer, at least its last 2 * SNIPPET_LEAD_CHARS
    characters: only what the snippet may show is collapsed, not a long message's start."""
    window = 4 * SNIPPET_LEAD_CHARS
    while True:
        start = max(0, position - window)
        before: str = WHITESPACE_RUN.sub(" ", text[start:position])
        if start == 0:
            return before.lstrip()
        if len(before) > 2 * SNIPPET_LEAD_CHARS:
            return before
        window *= 4


def _cluster_boundary(text: str, position: int) -> int:
    """The first grapheme cluster boundary at or after `position`."""
    # Segmenting from a little earlier: a start inside a cluster resynchronises within it.
    for cluster in GRAPHEME_CLUSTER.finditer(text, max(0, position - 16)):
        if cluster.start() >= position:
            return int(cluster.start())
    return len(text)
