"""How message text is shortened for the sidebar: titles and last-message previews."""

import regex

TITLE_MAX_CHARS = 50
PREVIEW_MAX_CHARS = 100
ELLIPSIS = "..."

_WHITESPACE_RUN = regex.compile(r"\s+")
_GRAPHEME = regex.compile(r"\X")


def shorten(text: str, max_chars: int) -> str:
    """Collapse whitespace runs and cut to `max_chars` code points, ending in "..." when cut.

    The cut falls between grapheme clusters, never inside one, so an emoji ZWJ sequence or a
    letter with combining marks is kept whole or dropped whole.
    """
    collapsed: str = _WHITESPACE_RUN.sub(" ", text).strip()
    if len(collapsed) <= max_chars:
        return collapsed
    budget = max_chars - len(ELLIPSIS)
    kept_length = 0
    for grapheme in _GRAPHEME.finditer(collapsed):
        if grapheme.end() > budget:
            break
        kept_length = grapheme.end()
    return collapsed[:kept_length].rstrip() + ELLIPSIS


def make_title(first_user_message: str) -> str:
    return shorten(first_user_message, TITLE_MAX_CHARS)


def make_preview(message: str) -> str:
    return shorten(message, PREVIEW_MAX_CHARS)


SNIPPET_MAX_CHARS = 160
# How much text a snippet shows before the first matching word.
SNIPPET_LEAD_CHARS = 40
_WORD_CHARS = r"\p{L}\p{N}\p{M}"


def make_snippet(text: str, query_words: list[str]) -> str:
    """An excerpt of `text` around its first word that starts with one of `query_words`
    (from the start when none is found as written, e.g. in a different normal form): what a
    search result shows of the message that matched."""
    collapsed: str = _WHITESPACE_RUN.sub(" ", text).strip()
    pattern = "|".join(regex.escape(word) for word in query_words)
    match = regex.search(rf"(?<![{_WORD_CHARS}])(?:{pattern})", collapsed, flags=regex.IGNORECASE)
    start = 0
    if match is not None and match.start() > SNIPPET_LEAD_CHARS:
        start = _cluster_boundary(collapsed, match.start() - SNIPPET_LEAD_CHARS)
        space = collapsed.find(" ", start, match.start())
        if space != -1:
            start = space + 1
    if start == 0:
        return shorten(collapsed, SNIPPET_MAX_CHARS)
    return ELLIPSIS + shorten(collapsed[start:], SNIPPET_MAX_CHARS - len(ELLIPSIS))


def _cluster_boundary(text: str, position: int) -> int:
    """The first grapheme cluster boundary at or after `position`."""
    # Segmenting from a little earlier: a start inside a cluster resynchronises within it.
    for cluster in _GRAPHEME.finditer(text, max(0, position - 16)):
        if cluster.start() >= position:
            return int(cluster.start())
    return len(text)
