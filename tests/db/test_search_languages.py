"""Search in every language (issue 17): folding of case and accents, scripts written without
spaces indexed as pairs of characters, and SQLite and PostgreSQL matching exactly the same
sessions for the same query, on examples and on generated multilingual text."""

import asyncio
from collections.abc import AsyncIterator
from unittest.mock import patch

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.auth.access import Caller
from app.kit.db import migrate
from app.kit.db.engine import Database, create_engine
from app.search import fulltext
from app.search.fulltext import (
    MATCH_BLOCK_CHARS,
    PAIR_MAX_OCCURRENCES,
    _pairs,
    document,
    first_match,
    fold,
    query_words,
    tokens,
    words,
)
from app.sessions.service import get_sessions_list
from tests.conftest import BACKENDS, DatabaseFactory, make_settings
from tests.db.helpers import store_text

THAI = "\u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22"  # ภาษาไทย, "Thai language"
THAI_WORD = "\u0e44\u0e17\u0e22"  # ไทย
TOKYO_SENTENCE = "\u6211\u4f4f\u5728\u6771\u4eac\u90fd"  # 我住在東京都
TOKYO = "\u6771\u4eac"  # 東京


# Text and a query that finds it only once both are folded. Shared with
# tests/services/test_snippet.py.
FOLDED = [
    pytest.param("Caf\u00e9", "cafe", id="accent"),
    pytest.param("cafe", "CAF\u00c9", id="accent-in-query"),
    pytest.param("Stra\u00dfe", "strasse", id="sharp-s"),
    pytest.param("\u03c3\u03bf\u03c6\u03af\u03b1", "\u03a3\u039f\u03a6\u0399\u0391", id="greek"),
    pytest.param(
        "\u03a3\u039f\u03a6\u0399\u0391\u03a3",
        "\u03c3\u03bf\u03c6\u03b9\u03b1\u03c2",
        id="final-sigma",
    ),
    pytest.param("\u0130stanbul", "istanbul", id="dotted-i"),
    pytest.param("\uff2b\uff35\uff22\uff25", "kube", id="full-width"),
    pytest.param(
        "\u0416\u0401\u041b\u0422\u042b\u0419",
        "\u0436\u0435\u043b\u0442\u044b\u0438",
        id="cyrillic",
    ),
]


@pytest.mark.parametrize(("text", "query"), FOLDED)
def test_folded_text_and_query_give_the_same_words(text: str, query: str) -> None:
    assert query_words(query) == words(text)


def test_marks_that_make_a_letter_of_a_script_are_kept() -> None:
    """Only the accents shared by Latin, Greek and Cyrillic go: a Devanagari vowel sign, a
    Thai tone mark or the kana voicing mark change the word."""
    for text in ("\u0915\u093f", "\u0e01\u0e48", "\u304c", "\u0643\u064e"):
        assert fold(text) == text or fold(text) == text.lower()
    assert fold("\u304b\u3099") == "\u304c"  # か + voicing mark composes to が


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        pytest.param(TOKYO_SENTENCE, ["我住", "住在", "在東", "東京", "京都", "都"], id="chinese"),
        pytest.param(
            "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8",
            ["日本", "本語", "語の", "のテ", "テキ", "キス", "スト", "ト"],
            id="japanese-kanji-kana",
        ),
        # Thai vowel and tone marks stay with their consonant: a pair never starts with one.
        pytest.param(
            "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35",
            ["\u0e2a\u0e27\u0e31", "\u0e27\u0e31\u0e2a", "\u0e2a\u0e14\u0e35", "\u0e14\u0e35"],
            id="thai-marks",
        ),
        pytest.param("\u6771", ["\u6771"], id="one-character"),
        pytest.param("\ud55c\uad6d\uc5b4", ["\ud55c\uad6d\uc5b4"], id="korean-is-spaced"),
        pytest.param("kubernetes", ["kubernetes"], id="latin"),
    ],
)
def test_tokens_of_a_word(word: str, expected: list[str]) -> None:
    assert tokens(word) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8", ["한국어", "텍스트"], id="korean-words"
        ),
        pytest.param("\U0001f680deploy\U0001f389 \U0001f600", ["deploy"], id="emoji"),
        pytest.param("Tokyo\u6771\u4eac2024", ["tokyo", "東京", "2024"], id="mixed-scripts"),
        pytest.param("\u30ab\u30d5\u30a7 caf\u00e9", ["カフェ", "cafe"], id="katakana-latin"),
    ],
)
def test_words_of_mixed_text(text: str, expected: list[str]) -> None:
    assert words(text) == expected


def test_pairs_past_postgresql_limits_are_left_out_on_both() -> None:
    """PostgreSQL keeps at most 256 positions of one token: pairs past that are not indexed,
    so that a phrase matches on neither database rather than on SQLite only."""
    indexed = document("\u6771\u4eac " * (PAIR_MAX_OCCURRENCES + 10)).split(" ")
    assert indexed.count("\u6771\u4eac") == PAIR_MAX_OCCURRENCES
    assert indexed.count("\u4eac") == PAIR_MAX_OCCURRENCES


# --- Where a text matches (the snippet's centre) --------------------------------------------


def index_finds(text: str, word: str) -> bool:
    """Whether the index finds one query word in `text`, as both databases are asked to: the
    word's phrase of tokens (`_pairs`) among the text's tokens in a row, the last as a prefix."""
    found = [token for text_word in words(text) for token in tokens(text_word)]
    phrase = _pairs(word)
    last = len(phrase) - 1
    return any(
        found[start : start + last] == phrase[:last]
        and found[start + last].startswith(phrase[last])
        for start in range(len(found) - last)
    )


@pytest.mark.parametrize(
    ("text", "query", "expected"),
    [
        pytest.param("Un Caf\u00e9 \u00e0 Paris", "cafe", "Caf\u00e9", id="accent"),
        pytest.param("Un cafe\u0301 noir", "caf\u00e9", "cafe\u0301", id="combining-accent"),
        pytest.param("Die Stra\u00dfe ist lang", "strasse", "Stra\u00dfe", id="sharp-s"),
        pytest.param(
            "\u0397 \u03c3\u03bf\u03c6\u03af\u03b1\u03c2",
            "\u03a3\u039f\u03a6\u0399\u0391\u03a3",
            "\u03c3\u03bf\u03c6",
            id="final-sigma",
        ),
        pytest.param(
            "a \uff44\uff45\uff50\uff4c\uff4f\uff59", "deploy", "\uff44\uff45", id="full-width"
        ),
        pytest.param("a \ufb01nance", "finance", "\ufb01n", id="ligature"),
        pytest.param("gro\u00df\u00df\u00df bass", "bass", "bass", id="after-expansions"),
        pytest.param("x " + TOKYO_SENTENCE, TOKYO, TOKYO, id="inside-a-run"),
        pytest.param("x " + TOKYO_SENTENCE, "\u90fd", "\u90fd", id="last-character-of-a-run"),
        pytest.param("x \u0e44\u0e17\u0e22" + THAI, THAI[4:], THAI[4:], id="thai-inside-a-run"),
        pytest.param("x \u6771\u4eactower", "tower", "tower", id="spaced-after-a-run"),
        pytest.param("redeploy DEPLOYMENT", "deploy", "DEPLOY", id="at-a-word-start"),
    ],
)
def test_first_match_is_where_the_index_matches_in_the_text_as_written(
    text: str, query: str, expected: str
) -> None:
    found = first_match(text, query_words(query))
    assert found is not None
    assert text[found:].startswith(expected)


# Text and a query that does not find it. Shared with tests/services/test_snippet.py.
NOT_FOUND = [
    pytest.param("redeploy", "deploy", id="inside-a-word"),
    pytest.param("\u6771\u4eactower", "wer", id="inside-a-spaced-piece"),
    pytest.param(TOKYO_SENTENCE, "\u6771\u90fd", id="pairs-must-be-adjacent"),
    pytest.param("Stra\u00dfe", "strassen", id="longer-than-the-word"),
    pytest.param("some text", "", id="no-words"),
]


@pytest.mark.parametrize(("text", "query"), NOT_FOUND)
def test_first_match_is_none_where_the_index_finds_nothing(text: str, query: str) -> None:
    assert not any(index_finds(text, word) for word in query_words(query))
    assert first_match(text, query_words(query)) is None


def test_first_match_finds_the_first_of_any_word() -> None:
    text = "beta alpha beta"
    assert first_match(text, query_words("alpha beta")) == 0
    assert first_match(text, query_words("alpha")) == 5


@pytest.mark.parametrize(
    "filler",
    [
        pytest.param("Stra\u00dfe and caf\u00e9, ", id="spaced"),
        pytest.param("\u6211\u4f4f\u5728\u5317\u4eac\u3002", id="unspaced-with-punctuation"),
        pytest.param("\u6211\u4f4f\u5728\u5317\u4eac", id="one-run"),
    ],
)
def test_first_match_far_into_a_long_text(filler: str) -> None:
    """Past many blocks: the offset is in the text as written, whatever folding did before."""
    before = filler * (3 * MATCH_BLOCK_CHARS // len(filler) + 7)
    text = before + "\u6771\u4eac\u90fd Zw\u00f6lf"
    assert first_match(text, query_words("\u4eac\u90fd")) == len(before) + 1
    assert first_match(text, query_words("zwolf")) == len(before) + 4


# --- Both databases, the same sessions ------------------------------------------------------

OPEN = Caller.open_mode()


@pytest.fixture(scope="module")
async def both(database_factory: DatabaseFactory) -> AsyncIterator[dict[str, Database]]:
    """A migrated database of each kind, for this module."""
    databases: dict[str, Database] = {}
    for backend in BACKENDS:
        url = await database_factory.create(backend)
        await migrate.upgrade_async(make_settings(url).database_url)
        databases[backend] = Database(create_engine(make_settings(url)))
    yield databases
    for database in databases.values():
        await database.dispose()


async def _clear(database: Database) -> None:
    async with database.write() as conn:
        # Messages and search entries go with their session (ON DELETE CASCADE).
        await conn.exec_driver_sql("DELETE FROM chat_sessions")


async def _found(database: Database, query: str, user_id: str | None) -> set[str]:
    page = await get_sessions_list(database, OPEN, user_id=user_id, query=query, page_size=100)
    return {summary.session_id for summary in page.sessions}


# Texts of the examples: what each query must find, on both databases.
EXAMPLES = {
    "tokyo": TOKYO_SENTENCE,
    "kyoto": "\u4eac\u90fd\u306b\u884c\u304f",  # 京都に行く
    "thai": THAI,
    "cafe": "Un caf\u00e9 \u00e0 Paris",
    "strasse": "Die Stra\u00dfe ist lang",
    "greek": "\u0397 \u03c3\u03bf\u03c6\u03af\u03b1",
    "japanese": "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3092\u66f8\u304f",
    "korean": "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8",
}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param(TOKYO, {"tokyo"}, id="tokyo-inside-a-run"),
        pytest.param("\u4eac\u90fd", {"tokyo", "kyoto"}, id="kyoto-in-both"),
        pytest.param("\u6771\u90fd", set(), id="pairs-must-be-adjacent"),
        pytest.param("\u4f4f\u5728\u6771\u4eac", {"tokyo"}, id="longer-phrase"),
        pytest.param("\u6771", {"tokyo"}, id="one-character-as-prefix"),
        pytest.param("\u90fd", {"tokyo", "kyoto"}, id="last-character-of-a-run"),
        pytest.param(THAI_WORD, {"thai"}, id="thai-word-inside"),
        pytest.param("cafe", {"cafe"}, id="accent"),
        pytest.param("STRASSE", {"strasse"}, id="sharp-s"),
        pytest.param("\u03a3\u039f\u03a6\u0399\u0391", {"greek"}, id="greek-capitals"),
        pytest.param("\u30c6\u30ad\u30b9\u30c8", {"japanese"}, id="katakana-inside"),
        pytest.param("\u66f8\u304f", {"japanese"}, id="end-of-run"),
        pytest.param("\ud55c\uad6d", {"korean"}, id="korean-prefix"),
        pytest.param("\uad6d\uc5b4", set(), id="korean-is-not-paired"),
        pytest.param("paris caf", {"cafe"}, id="two-words"),
    ],
)
async def test_both_databases_find_the_examples(
    both: dict[str, Database], query: str, expected: set[str]
) -> None:
    for database in both.values():
        await _clear(database)
        for session_id, text in EXAMPLES.items():
            await store_text(database, session_id, "ana", text)
    for backend, database in both.items():
        assert await _found(database, query, "ana") == expected, backend
        assert await _found(database, query, None) == expected, backend
        assert await _found(database, query, "someone-else") == set(), backend


# Generated text: words of several scripts, runs without spaces, accents, punctuation.
_ALPHABET = st.sampled_from(
    [
        *"abcé ßΣσςá東京都住在日本語のテキスト",
        *("\u0e20", "\u0e32", "\u0e29", "\u0e44", "\u0e17", "\u0e22", "\u0e48", "\u0e31"),
        *("\ud55c", "\uad6d", "\u0301", " ", " ", ".", "\U0001f600"),
    ]
)
_TEXT = st.text(_ALPHABET, min_size=1, max_size=24)


# And what folding changes the length of or splits: ligatures, full-width and half-width
# forms, a parenthesised letter, a spacing accent, kana with a separate voicing mark, Thai
# SARA AM, Hangul jamo that compose; punctuation and whitespace, which end a block.
_FOLDING_ALPHABET = st.one_of(
    _ALPHABET,
    st.sampled_from(
        [
            *"\ufb01\ufb03\uff44\uff24\u249c\u00a8\u01c5\u338f\u00c5",
            *"\uff76\uff9e\u304b\u3099\u0e33\u1100\u1161",
            *",\u3001\u3002\n\t\u00a0",
        ]
    ),
)


@settings(max_examples=400, derandomize=True)
@given(text=st.text(_FOLDING_ALPHABET, min_size=1, max_size=40), query=_TEXT)
def test_first_match_finds_what_the_index_finds_where_it_is(text: str, query: str) -> None:
    """The text's own pieces as queries too: most generated queries would match nothing.
    Blocks of 8 characters: matches next to a block's end are common."""
    with patch.object(fulltext, "MATCH_BLOCK_CHARS", 8):
        for word in query_words(" ".join([query, text[:3], text[1:4], text[3:6], text[5:9]])):
            found = first_match(text, [word])
            assert (found is not None) == index_finds(text, word), (text, word)
            if found is not None:
                # It starts a match, and no match comes before it.
                assert first_match(text[found:], [word]) == 0, (text, word)
                assert first_match(text[:found], [word]) is None, (text, word)


async def test_sqlite_and_postgresql_match_the_same_sessions(
    both: dict[str, Database],
) -> None:
    loop = asyncio.get_running_loop()

    async def compare(texts: list[str], queries: list[str]) -> None:
        for database in both.values():
            await _clear(database)
            for n, text in enumerate(texts):
                await store_text(database, f"s{n}", "ana", text)
        # The texts' own pieces too: most generated queries would match nothing.
        for query in queries + [text[n : n + 3] for text in texts for n in (0, 1, 3)]:
            if not query_words(query):
                continue
            found = {backend: await _found(db, query, "ana") for backend, db in both.items()}
            assert found["sqlite"] == found["postgresql"], (query, texts)

    @settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        texts=st.lists(_TEXT, min_size=1, max_size=4),
        queries=st.lists(_TEXT, min_size=1, max_size=3),
    )
    def check(texts: list[str], queries: list[str]) -> None:
        asyncio.run_coroutine_threadsafe(compare(texts, queries), loop).result()

    await asyncio.to_thread(check)
