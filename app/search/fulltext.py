"""Full-text search: what is indexed, and how a search box's text becomes a query.

Text is split into words here, in Python, before either database sees it, so PostgreSQL's
`to_tsvector('simple', …)` and SQLite's FTS5 `unicode61` tokenizer are handed the same tokens
and agree on what matches: their own parsers disagree (PostgreSQL keeps `example.com` or
`a@b.c` as one token, FTS5 splits them). A word is a run of letters and digits, folded (`fold`:
compatibility forms, case and accents), so `cafe` finds `café`, `strasse` `Straße`, `ΣΟΦΙΑ`
`σοφία`. Scripts written without spaces (Chinese, Japanese, Thai, …) are indexed as
overlapping pairs of characters, and a query's run of them becomes the phrase of its pairs, so
any part of a run two characters or longer is found (`東京` in `我住在東京都`). Every query word
matches as a prefix (search as you type, and a stand-in for stemming), and all of them must
match. `first_match` finds where in a text a search matches by the same rules, for a search
result's snippet.
"""

import functools
import hashlib
import re
import unicodedata
from collections import Counter
from collections.abc import Iterator, Sequence
from itertools import pairwise

import regex

# Letters and digits of any script, with the combining marks that follow them (Indic vowel
# signs, Arabic and Hebrew vowel points); everything else separates words. A mark never
# starts a word: PostgreSQL's parser drops one there, and so must the index's words.
_WORD = regex.compile(r"[\p{L}\p{N}][\p{L}\p{N}\p{M}]*")
# The accents folding removes: the combining marks of the blocks shared by Latin, Greek and
# Cyrillic (é, ü, ά, й after decomposition). The marks that belong to one script (Indic vowel
# signs, Thai vowels and tones, the kana voicing marks, Arabic and Hebrew points) change the
# word and are kept.
# (`re`: three times as fast as `regex` here, and the same set.)
_ACCENTS = re.compile(r"[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")
# Scripts written without spaces between words (and the marks shared with them, such as the
# kana prolonged sound mark ー): a run of them is indexed as overlapping pairs of units.
_UNSPACED = (
    r"\p{scx=Han}\p{scx=Hiragana}\p{scx=Katakana}\p{scx=Thai}\p{scx=Lao}\p{scx=Khmer}"
    r"\p{scx=Myanmar}\p{scx=Tai_Tham}\p{scx=Yi}"
)
# A word's pieces: runs of unspaced scripts, and the rest (`東京tower` is `東京` and `tower`).
# Marks stay with the character before them, whatever their script.
_UNSPACED_START = rf"(?=\P{{M}})[{_UNSPACED}]"
_PIECE = regex.compile(rf"{_UNSPACED_START}[{_UNSPACED}\p{{M}}]*|(?:[^{_UNSPACED}]|\p{{M}})+")
_STARTS_UNSPACED = regex.compile(_UNSPACED_START)
_HAS_UNSPACED = regex.compile(f"[{_UNSPACED}]")
# A unit of an unspaced run is a character and the marks after it (a Thai consonant and its
# vowel and tone marks): cut at code points, a pair could start with a mark.
# Longer words are cut: both indexes then stay within their limits (a PostgreSQL lexeme is
# at most 2 KB), and a query word is cut the same way, so it still matches as a prefix.
WORD_MAX_CHARS = 40
# What is indexed of one text, in characters of tokens: a tsvector must stay under 1 MB.
DOCUMENT_MAX_CHARS = 200_000
# A search box needs no more; more would only make each query slower.
QUERY_MAX_WORDS = 16
# Pairs of one query run matched as a phrase: a longer run is matched by its start (a run of
# 17 characters or more is rare in a search box, and a longer phrase only costs time).
QUERY_MAX_PAIRS = 16
# PostgreSQL keeps a token's positions only up to 16,383, and at most 256 positions of one
# token (to_tsvector drops the rest): past either, a phrase would match on SQLite and not on
# PostgreSQL. Pairs are indexed only within both limits, so both find the same phrases; plain
# words are matched without positions and are always indexed.
PAIR_MAX_POSITION = 16_383
PAIR_MAX_OCCURRENCES = 255

# Where a search matches a text (a search result's snippet, `first_match`) is found by folding
# the text a block at a time from its start, and stops at the first match: folding 200 KB of
# text that is not ASCII takes 5 to 10 ms, and the match is usually near the start.
MATCH_BLOCK_CHARS = 2_048
# Where a block may end (see `_blocks`).
_BLOCK_END = regex.compile(r"[\p{P}\s]")
_LAST_BLOCK_END = regex.compile(_BLOCK_END.pattern, flags=regex.REVERSE)
# What ends a word (`_WORD`), searched from a position backwards.
_LAST_SEPARATOR = regex.compile(r"[^\p{L}\p{N}\p{M}]", flags=regex.REVERSE)
# Not just after a letter or digit of a spaced script: where a word's piece may start (a
# word's start, or a spaced piece after an unspaced run, `東京tower`).
_NOT_AFTER_SPACED_LETTER = rf"(?<![[\p{{L}}\p{{N}}]--[{_UNSPACED}]])"

# The SQLite index (migrations 0004 and 0015): an FTS5 table over chat_search's `document`,
# kept in sync with chat_search by triggers.
FTS_TABLE = "chat_search_fts"


# Both databases index every entry's words a second time, each under its owner's key
# (PostgreSQL: migration 0005, an expression index; SQLite: migration 0015, the owned words
# follow the plain ones in the document): one user's search then reads only that user's
# matches from the index, not everyone's. The key is `_` and the first 8 hex digits of
# md5(user_id), computed in SQL by PostgreSQL's index expression and here for SQLite's
# documents and for the query: `_` never starts a word, so a plain word's prefix never
# reaches an owned word, and the short hash keeps the index small. Two users may share a key;
# the queries still compare user_id exactly, so sharing one only costs time. SQLite's prefix
# indexes (migration 0018) are sized on the key's length: another length needs a migration.
OWNER_KEY_HEX_DIGITS = 8


def owner_key(user_id: str) -> str:
    """The key the index files `user_id`'s words under (see above)."""
    digest = hashlib.md5(user_id.encode(), usedforsecurity=False).hexdigest()
    return "_" + digest[:OWNER_KEY_HEX_DIGITS]


# PostgreSQL files the owned words in blocks of their owner's entries (migration 0019): each
# entry is numbered among its owner's entries in the order they were written (`user_ordinal`,
# given by the database), and its owned words carry the block of that number as well,
# `_<key><ordinal >> OWNER_BLOCK_BITS>.word`. A search then names the blocks it reads: a
# typical user's entries are all in block 0, so the index has the keys it had without blocks,
# and the heaviest user's ranking window (app/search/queries.py) is two or three blocks of
# their entries, not all of their matches. The index is built on this size: another needs a
# migration.
OWNER_BLOCK_BITS = 14


def owner_block_key(user_id: str, block: int) -> str:
    """The key PostgreSQL files the owned words of `user_id`'s entries in `block` under."""
    return f"{owner_key(user_id)}{block}."


def fold(text: str) -> str:
    """`text` as it is compared: compatibility forms unified (full-width letters, ligatures),
    case folded (`ß` is `ss`, a final sigma a sigma), accents removed (`_ACCENTS`), recomposed."""
    # ASCII has nothing to decompose or remove, and casefold() is lower() there: 200 KB in
    # 0.1 ms instead of 7.
    if text.isascii():
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", text).casefold())
    # lower(): casefold gives upper case for a few scripts (Cherokee), and PostgreSQL's
    # 'simple' dictionary lower-cases what it indexes.
    return unicodedata.normalize("NFC", _ACCENTS.sub("", decomposed)).lower()


def is_unspaced(piece: str) -> bool:
    """A piece of a word in a script written without spaces (indexed as pairs)."""
    return not piece.isascii() and _STARTS_UNSPACED.match(piece) is not None


def words(text: str) -> list[str]:
    """The words of `text` as they are indexed and searched: folded, a run of an unspaced
    script a word of its own (whole), other words cut at WORD_MAX_CHARS."""
    found: list[str] = []
    for word in _WORD.findall(fold(text)):
        # Most words hold no unspaced script: one test, not a split (a tenth of the time).
        if word.isascii() or _HAS_UNSPACED.search(word) is None:
            found.append(word[:WORD_MAX_CHARS])
            continue
        for piece in _PIECE.findall(word):
            found.append(piece if is_unspaced(piece) else piece[:WORD_MAX_CHARS])
    return found


def _units(run: str) -> list[str]:
    """The units of a run (a character and its marks), each cut at WORD_MAX_CHARS. A loop over
    characters: the regular expression took ten times longer."""
    units: list[str] = []
    for char in run:
        if units and unicodedata.category(char)[0] == "M":
            units[-1] += char
        else:
            units.append(char)
    return [unit[:WORD_MAX_CHARS] for unit in units]


def tokens(word: str) -> list[str]:
    """The tokens a word is indexed as: itself, or for a run of an unspaced script its
    overlapping pairs of units and its last unit (`東京都`: `東京 京都 都`), so that any part of
    the run starts a token (a single character too, as a prefix)."""
    if not is_unspaced(word):
        return [word]
    units = _units(word)
    return [a + b for a, b in pairwise(units)] + units[-1:]


def _pairs(word: str) -> list[str]:
    """A query word as the phrase of tokens it must match: a run of an unspaced script by
    its pairs (a single unit alone), any other word by itself."""
    if not is_unspaced(word):
        return [word]
    units = _units(word)
    pairs = [a + b for a, b in pairwise(units)] or units
    return pairs[:QUERY_MAX_PAIRS]


def first_match(text: str, query_words: list[str]) -> int | None:
    """Where a search for `query_words` first matches `text`, by the index's rules: the offset
    in `text` of the first word that starts with a query word once folded, or of the first
    place in a run of an unspaced script that holds a query's run (its first
    QUERY_MAX_PAIRS + 1 units); None when nothing matches."""
    candidates = _candidates(tuple(query_words))
    if candidates is None:
        return None
    for start, end in _blocks(text):
        block = text[start:end]
        folded = fold(block)
        for candidate in candidates.finditer(folded, overlapped=True):
            if candidate.lastgroup == "run" or _starts_a_word(folded, candidate.start()):
                return start + _original_offset(block, folded, candidate.start())
    return None


# A page of results asks for the same query's pattern up to 100 times.
@functools.lru_cache(maxsize=64)
def _candidates(query_words: tuple[str, ...]) -> regex.Pattern[str] | None:
    """Where in folded text a query word may match: a word (group `word`) where no letter or
    digit of a spaced script is just before it, which `_starts_a_word` then checks; a run's
    units (group `run`), which match wherever they are found (see below)."""
    spaced = [regex.escape(word) for word in query_words if not is_unspaced(word)]
    # A query's run matches wherever its units are found: they are letters of unspaced
    # scripts and marks, so they are found only inside a run, starting a unit (the first is
    # not a mark), and the text's units there are the query's but for the last, which may
    # carry more marks: the phrase of the run's pairs, the last as a prefix.
    runs = [
        regex.escape("".join(_units(word)[: QUERY_MAX_PAIRS + 1]))
        for word in query_words
        if is_unspaced(word)
    ]
    alternatives = []
    if spaced:
        alternatives.append(rf"{_NOT_AFTER_SPACED_LETTER}(?P<word>{'|'.join(spaced)})")
    if runs:
        alternatives.append(f"(?P<run>{'|'.join(runs)})")
    return regex.compile("(?V1)" + "|".join(alternatives)) if alternatives else None


def _starts_a_word(folded: str, position: int) -> bool:
    """Whether a word of the index (see `words`) starts at `position` of folded text, a
    letter or digit: a word's start, or a piece's start after a run (`tower` in
    `東京tower`)."""
    separator = _LAST_SEPARATOR.search(folded, 0, position)
    # The word holding `position`: only letters, digits and marks come between.
    word = _WORD.search(folded, separator.end() if separator is not None else 0)
    if word is None:
        return False
    offset: int = position - word.start()
    # A word's pieces follow each other, from its start to its end.
    for piece in _PIECE.findall(word.group()):
        if offset <= 0:
            return offset == 0
        offset -= len(piece)
    return False


def _blocks(text: str) -> Iterator[tuple[int, int]]:
    """`text` as (start, end) blocks of about MATCH_BLOCK_CHARS, cut before whitespace or
    punctuation: each is folded and split into words as it would be within the whole text
    (those fold to characters of their kind, join no neighbour, and end any word). A longer
    stretch without either is one block."""
    start = 0
    while start < len(text):
        end = len(text)
        if start + MATCH_BLOCK_CHARS < end:
            limit = start + MATCH_BLOCK_CHARS
            cut = _LAST_BLOCK_END.search(text, start + 1, limit) or _BLOCK_END.search(text, limit)
            if cut is not None:
                end = cut.start()
        yield start, end
        start = end


def _original_offset(text: str, folded: str, offset: int) -> int:
    """The offset in `text` of the character that `folded[offset]` comes from (`folded` is
    `fold(text)`): folding changes lengths (`ß` is `ss`, `e` and a combining accent `e`)."""
    start = 0
    # A space folds to itself, and folding adds one only for another space (no-break, en) or
    # a spacing accent (`¨`): when the counts agree, the segments between spaces are those
    # of `text`, folded, and only the one holding `offset` is looked at.
    if text.count(" ") == folded.count(" "):
        segment = folded.count(" ", 0, offset)
        start = len(text) - len(text.split(" ", segment)[-1])
        offset -= folded.rfind(" ", 0, offset) + 1
        end = text.find(" ", start)
        text = text[start:] if end == -1 else text[start:end]
    # The longest prefix that folds to at most `offset` characters ends where that character
    # starts (`e` + accent and `e` fold alike, so the accent's end, not the `e`'s). Most text
    # folds character for character, which two folds confirm.
    low, high = 0, len(text)
    if len(fold(text[:offset])) <= offset:
        low = min(offset, high)
        if len(fold(text[: offset + 1])) > offset:
            high = low
    while low < high:
        middle = (low + high + 1) // 2
        if len(fold(text[:middle])) <= offset:
            low = middle
        else:
            high = middle - 1
    return start + low


def document(text: str) -> str:
    """The indexed form of a title or message: its tokens, space-separated, capped in size."""
    kept: list[str] = []
    size = 0
    seen: Counter[str] = Counter()
    for word in words(text):
        paired = is_unspaced(word)
        for token in tokens(word):
            if paired:
                # Within PostgreSQL's limits on positions (see PAIR_MAX_POSITION).
                if len(kept) >= PAIR_MAX_POSITION or seen[token] >= PAIR_MAX_OCCURRENCES:
                    continue
                seen[token] += 1
            size += len(token) + 1
            if size > DOCUMENT_MAX_CHARS:
                return " ".join(kept)
            kept.append(token)
    return " ".join(kept)


def owned_document(document: str, user_id: str | None) -> str:
    """SQLite's document of an entry: its tokens, then the same under its owner's key (see
    `owner_key`); an entry without an owner has only its tokens."""
    if user_id is None or not document:
        return document
    key = owner_key(user_id)
    return document + " " + " ".join(key + token for token in document.split(" "))


def query_words(query: str) -> list[str]:
    """The distinct words of a search, in order, at most QUERY_MAX_WORDS."""
    return list(dict.fromkeys(words(query)))[:QUERY_MAX_WORDS]


def postgres_tsquery(query_words: list[str]) -> str:
    """`to_tsquery('simple', …)` input: every word as a prefix, all required; a run of an
    unspaced script as the phrase of its pairs, its last pair as a prefix. Tokens hold only
    letters, digits and marks, so quoting them is enough to keep the syntax intact."""
    terms = []
    for word in query_words:
        pairs = [f"'{token}'" for token in _pairs(word)]
        pairs[-1] += ":*"
        terms.append(pairs[0] if len(pairs) == 1 else "(" + " <-> ".join(pairs) + ")")
    return " & ".join(terms)


def postgres_owned_tsquery(query_words: list[str], user_id: str, blocks: Sequence[int]) -> str:
    """A tsquery for `user_id`'s owned words in `blocks` (see `owner_block_key`), taken as it
    is (a cast, not `to_tsquery`, whose parser would split the key from the word). The owned
    words have no positions: a phrase's pairs are all required here, and their order is
    checked on the plain words (`postgres_tsquery`). An entry is in one block, so each token
    may be in any of them."""
    keys = [owner_block_key(user_id, block) for block in blocks]
    terms = []
    for word in query_words:
        pairs = _pairs(word)
        for place, token in enumerate(pairs):
            prefix = ":*" if place == len(pairs) - 1 else ""
            alternatives = [f"'{key}{token}'{prefix}" for key in keys]
            terms.append(
                alternatives[0] if len(alternatives) == 1 else "(" + " | ".join(alternatives) + ")"
            )
    return " & ".join(terms)


def fts5_match(query_words: list[str], user_id: str | None) -> str:
    """An FTS5 MATCH expression: every word as a prefix of a token of `document`, a run of an
    unspaced script as the phrase of its pairs; for one user's search, among the tokens under
    their key (a prefilter: the caller still compares ids exactly)."""
    key = "" if user_id is None else owner_key(user_id)
    phrases = (" ".join(key + token for token in _pairs(word)) for word in query_words)
    return "document : (" + " AND ".join(f'"{phrase}"*' for phrase in phrases) + ")"
