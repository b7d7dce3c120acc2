"""Full-text search: what is indexed, and how a search box's text becomes a query.

Text is split into words here, in Python, before either database sees it, so PostgreSQL's
`to_tsvector('simple', …)` and SQLite's FTS5 `unicode61` tokenizer are handed the same words
and agree on what matches: their own parsers disagree (PostgreSQL keeps `example.com` or
`a@b.c` as one token, FTS5 splits them). A word is a run of letters and digits, NFKC-normalised
and lower-cased; every query word matches as a prefix (search as you type, and a stand-in for
stemming), and all of them must match.
"""

import hashlib
import unicodedata

import regex

# Letters and digits of any script, with the combining marks that follow them (Indic vowel
# signs, Arabic and Hebrew vowel points, accents); everything else separates words. A mark
# never starts a word: PostgreSQL's parser drops one there, and so must the index's words.
_WORD = regex.compile(r"[\p{L}\p{N}][\p{L}\p{N}\p{M}]*")
# Longer words are cut: both indexes then stay within their limits (a PostgreSQL lexeme is
# at most 2 KB), and a query word is cut the same way, so it still matches as a prefix.
WORD_MAX_CHARS = 40
# What is indexed of one text, in characters of words: a tsvector must stay under 1 MB.
DOCUMENT_MAX_CHARS = 200_000
# A search box needs no more; more would only make each query slower.
QUERY_MAX_WORDS = 16

# The SQLite index (see migration 0004): an FTS5 table over chat_search's `document` and
# `user_id`, kept in sync with chat_search by triggers.
FTS_TABLE = "chat_search_fts"
# `user_id` is indexed too, so that a user's search intersects two posting lists instead of
# scanning everyone's matches; these characters keep common ids (UUIDs, e-mail addresses) one
# token. Words of `document` never contain them.
FTS_USER_ID_CHARS = "-_.@:+"


# PostgreSQL indexes every entry's words a second time, each under its owner's key (migration
# 0005): one user's search then reads only that user's matches from the index, not everyone's.
# The key is `_` and the first 8 hex digits of md5(user_id), computed in SQL by the index
# expression and here for the query: `_` never starts a word, so a plain word's prefix never
# reaches an owned word, and the short hash keeps the index small. Two users may share a key;
# the queries still compare user_id exactly, so sharing one only costs time.
OWNER_KEY_HEX_DIGITS = 8


def owner_key(user_id: str) -> str:
    """The key the PostgreSQL index files `user_id`'s words under (see above)."""
    digest = hashlib.md5(user_id.encode(), usedforsecurity=False).hexdigest()
    return "_" + digest[:OWNER_KEY_HEX_DIGITS]


def words(text: str) -> list[str]:
    """The words of `text` as they are indexed and searched."""
    normalized = unicodedata.normalize("NFKC", text).lower()
    found: list[str] = _WORD.findall(normalized)
    return [word[:WORD_MAX_CHARS] for word in found]


def document(text: str) -> str:
    """The indexed form of a title or message: its words, space-separated, capped in size."""
    kept: list[str] = []
    size = 0
    for word in words(text):
        size += len(word) + 1
        if size > DOCUMENT_MAX_CHARS:
            break
        kept.append(word)
    return " ".join(kept)


def query_words(query: str) -> list[str]:
    """The distinct words of a search, in order, at most QUERY_MAX_WORDS."""
    return list(dict.fromkeys(words(query)))[:QUERY_MAX_WORDS]


def postgres_tsquery(query_words: list[str]) -> str:
    """`to_tsquery('simple', …)` input: every word as a prefix, all required. Words hold only
    letters, digits and marks, so quoting them is enough to keep the syntax intact."""
    return " & ".join(f"'{word}':*" for word in query_words)


def postgres_owned_tsquery(query_words: list[str], user_id: str) -> str:
    """A tsquery for `user_id`'s owned words (see `owner_key`), taken as it is (a cast, not
    `to_tsquery`, whose parser would split the key from the word)."""
    key = owner_key(user_id)
    return " & ".join(f"'{key}{word}':*" for word in query_words)


def fts5_match(query_words: list[str], user_id: str | None) -> str:
    """An FTS5 MATCH expression: every word as a prefix of a word in `document`, and, for one
    user's search, their id in `user_id` (a prefilter: the caller still compares ids exactly)."""
    prefixes = " AND ".join(f'"{word}"*' for word in query_words)
    expression = f"document : ({prefixes})"
    if user_id is not None and any(char.isalnum() or char in FTS_USER_ID_CHARS for char in user_id):
        escaped = user_id.replace('"', '""')
        expression += f' AND user_id : "{escaped}"'
    return expression
