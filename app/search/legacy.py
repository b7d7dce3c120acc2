"""The search index's words as revisions 0004 to 0012 wrote them, for the migrations only:
0004's backfill, and 0015's downgrade, which restores that index. The service's words are
app/search/fulltext.py's."""

import unicodedata

import regex

from app.search.fulltext import DOCUMENT_MAX_CHARS, WORD_MAX_CHARS

_WORD = regex.compile(r"[\p{L}\p{N}][\p{L}\p{N}\p{M}]*")
# The tokenizer of 0004's FTS5 table kept these in a token (for its `user_id` column).
FTS_USER_ID_CHARS = "-_.@:+"


def document(text: str) -> str:
    """Runs of letters and digits, NFKC-normalised and lower-cased, cut at WORD_MAX_CHARS,
    space-separated, capped at DOCUMENT_MAX_CHARS."""
    normalized = unicodedata.normalize("NFKC", text).lower()
    kept: list[str] = []
    size = 0
    for word in _WORD.findall(normalized):
        word = word[:WORD_MAX_CHARS]
        size += len(word) + 1
        if size > DOCUMENT_MAX_CHARS:
            break
        kept.append(word)
    return " ".join(kept)
