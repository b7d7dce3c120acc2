"""Search in every language (issue 17): folding of case and accents, scripts written without
spaces indexed as pairs of characters, and SQLite and PostgreSQL matching exactly the same
sessions for the same query, on examples and on generated multilingual text."""

import asyncio
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.auth.access import Caller
from app.kit.db import migrate
from app.kit.db.engine import Database, create_engine
from app.search.fulltext import (
    PAIR_MAX_OCCURRENCES,
    document,
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


@pytest.mark.parametrize(
    ("text", "query"),
    [
        pytest.param("Caf\u00e9", "cafe", id="accent"),
        pytest.param("cafe", "CAF\u00c9", id="accent-in-query"),
        pytest.param("Stra\u00dfe", "strasse", id="sharp-s"),
        pytest.param(
            "\u03c3\u03bf\u03c6\u03af\u03b1", "\u03a3\u039f\u03a6\u0399\u0391", id="greek"
        ),
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
    ],
)
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
