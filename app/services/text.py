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
    graphemes: list[str] = _GRAPHEME.findall(collapsed)
    for grapheme in graphemes:
        if kept_length + len(grapheme) > budget:
            break
        kept_length += len(grapheme)
    return collapsed[:kept_length].rstrip() + ELLIPSIS


def make_title(first_user_message: str) -> str:
    return shorten(first_user_message, TITLE_MAX_CHARS)


def make_preview(message: str) -> str:
    return shorten(message, PREVIEW_MAX_CHARS)
