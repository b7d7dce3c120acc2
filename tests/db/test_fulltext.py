"""How text becomes words (app/search/fulltext.py), and how a search box's text becomes a query
that neither database can misread, whatever the text: FTS5 and tsquery syntax, huge input,
every script. The last tests hand the words to the real indexes on SQLite and PostgreSQL and
check that both see exactly the words Python split."""

import re
import time
import unicodedata
from typing import Any

import pytest
import regex
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncConnection

from app.kit.db.engine import Database
from app.kit.db.tables import chat_search
from app.search import queries as search_queries
from app.search.fulltext import (
    DOCUMENT_MAX_CHARS,
    FTS_TABLE,
    QUERY_MAX_WORDS,
    WORD_MAX_CHARS,
    document,
    fts5_match,
    is_unspaced,
    owner_block_key,
    owner_key,
    postgres_owned_tsquery,
    postgres_tsquery,
    query_words,
    words,
)
from app.sessions.queries import SessionFilter
from tests.db.helpers import store_text

# Query strings written in the syntax of FTS5 or of to_tsquery, or otherwise meant to break
# a query built from them. Shared with tests/api/test_search.py.
HOSTILE_QUERIES = [
    '"',
    '""',
    '"unterminated',
    "'",
    "''",
    "'quoted':*",
    "*",
    "deploy*",
    "* *",
    ":",
    "document:",
    "document : deploy",
    "user_id : alice",
    "{document user_id} : x",
    "-document : x",
    "AND",
    "OR",
    "NOT",
    "deploy AND",
    "OR deploy",
    "NOT deploy",
    "a AND OR NOT b",
    "NEAR(",
    "NEAR(a b, 3)",
    "NEAR/3",
    "(",
    ")",
    "((((",
    "(a OR b) AND (c",
    "^",
    "^deploy",
    "-",
    "-deploy",
    "deploy -kube",
    "+",
    "!",
    "!deploy",
    "&",
    "|",
    "a & b | !c",
    "<->",
    "a <-> b",
    "a <2> b",
    "\\",
    "\\'",
    "%",
    "_",
    "$1",
    "?",
    ":name",
    "'; DROP TABLE chat_sessions; --",
    "\"'); DELETE FROM chat_search; --",
    "chat_search_fts",
    "rank:",
    "bm25(",
    "\u200b",
    "\ufeff",
    "\u202e",
    "\u0301",
    "\u0301deploy",
    "\U0001f600",
    "\U0001f469\u200d\U0001f4bb",
    "\uff24\uff25\uff30\uff2c\uff2f\uff39",  # full-width DEPLOY
    "x" * 200,
]


def test_words_are_runs_of_letters_and_digits_lower_cased() -> None:
    assert words("Deploying Kubernetes, v1.29 (on-prem)!") == [
        "deploying",
        "kubernetes",
        "v1",
        "29",
        "on",
        "prem",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("example.com", ["example", "com"], id="dot"),
        pytest.param("a@b.c", ["a", "b", "c"], id="email"),
        pytest.param("snake_case kebab-case", ["snake", "case", "kebab", "case"], id="joiners"),
        pytest.param("it's", ["it", "s"], id="apostrophe"),
        pytest.param("C++ C#", ["c", "c"], id="symbols"),
        pytest.param(
            "\uff2b\uff35\uff22\uff25 \uff44\uff45\uff50", ["kube", "dep"], id="full-width"
        ),
        pytest.param("\ufb01nance", ["finance"], id="ligature"),
        pytest.param("x\u00b2 \u2460\u2461", ["x2", "12"], id="superscript-and-circled"),
        pytest.param("\U0001d400\U0001d401\U0001d402", ["abc"], id="math-bold"),
        pytest.param("Stra\u00dfe", ["strasse"], id="sharp-s"),
        pytest.param("\u0130stanbul", ["istanbul"], id="dotted-capital-i"),
        pytest.param("cafe\u0301 Caf\u00e9", ["cafe", "cafe"], id="accents-folded"),
        pytest.param("q\u0303", ["q"], id="accent-without-precomposed-form"),
        pytest.param(
            "\u0939\u093f\u0928\u094d\u0926\u0940",
            ["\u0939\u093f\u0928\u094d\u0926\u0940"],
            id="devanagari",
        ),
        pytest.param(
            "\u0643\u064e\u062a\u064e\u0628\u064e",
            ["\u0643\u064e\u062a\u064e\u0628\u064e"],
            id="arabic-harakat",
        ),
        pytest.param(
            "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8",
            ["\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8"],
            id="cjk-one-run",
        ),
        pytest.param(
            "\u4f60\u597d\uff0c\u4e16\u754c", ["\u4f60\u597d", "\u4e16\u754c"], id="cjk-punctuation"
        ),
        pytest.param("\U0001f389party\U0001f389", ["party"], id="emoji-separate"),
        pytest.param("a\u200db\u00adc", ["a", "b", "c"], id="invisible-separate"),
        pytest.param("\u0661\u0662\u0663", ["\u0661\u0662\u0663"], id="arabic-digits"),
        pytest.param("\u2160\u2161 \u216b", ["iii", "xii"], id="roman-numerals"),
        pytest.param("", [], id="empty"),
        pytest.param(" \t\n!?.,;:()[]{}<>\"'`~@#$%^&*-_=+|\\/", [], id="punctuation-only"),
    ],
)
def test_words_of(text: str, expected: list[str]) -> None:
    assert words(text) == expected


def test_a_word_starts_with_a_letter_or_digit_and_marks_only_continue_it() -> None:
    """PostgreSQL's parser drops a combining mark that starts a word (and FTS5 with marks as
    word characters would keep it): stray marks must not change what a word is."""
    assert words("\u0301alone x \u0301\u0302") == ["alone", "x"]
    assert words("\U0001f600\u0301smile") == ["smile"]
    assert words("1\u0301") == ["1"]
    assert words("\u0915\u093f") == ["\u0915\u093f"]


def test_long_words_are_cut_to_the_same_length_in_text_and_query() -> None:
    long = "Supercalifragilistic" * 10
    [indexed] = words(long)
    assert len(indexed) == WORD_MAX_CHARS
    assert query_words(long) == [indexed]
    assert indexed == long.lower()[:WORD_MAX_CHARS]


def test_document_is_the_words_space_separated() -> None:
    assert document("  How do I   DEPLOY\nKubernetes?  ") == "how do i deploy kubernetes"
    assert document("!!! \U0001f600 ...") == ""


def test_document_is_capped_at_a_whole_word() -> None:
    text = "word " * 60_000
    capped = document(text)
    assert len(capped) <= DOCUMENT_MAX_CHARS
    assert len(capped) > DOCUMENT_MAX_CHARS - WORD_MAX_CHARS - 1
    assert set(capped.split(" ")) == {"word"}


def test_query_words_are_distinct_in_order_and_capped() -> None:
    assert query_words("Kube kube DEP kube dep x") == ["kube", "dep", "x"]
    many = " ".join(f"w{n}" for n in range(100))
    assert query_words(many) == [f"w{n}" for n in range(QUERY_MAX_WORDS)]


def test_a_ten_thousand_word_query_is_cut_quickly() -> None:
    query = " ".join(f"word{n}" for n in range(10_000))
    started = time.perf_counter()
    found = query_words(query)
    elapsed = time.perf_counter() - started
    assert found == [f"word{n}" for n in range(QUERY_MAX_WORDS)]
    # Generous: a linear pass over 90 KB; quadratic work would take seconds.
    assert elapsed < 2


def test_postgres_tsquery_requires_every_word_as_a_prefix() -> None:
    assert postgres_tsquery(["kube", "dep"]) == "'kube':* & 'dep':*"
    assert postgres_tsquery(["x"]) == "'x':*"


def test_fts5_match_requires_every_word_as_a_prefix_in_the_document() -> None:
    assert fts5_match(["kube", "dep"], None) == 'document : ("kube"* AND "dep"*)'


def test_a_users_fts5_match_reads_only_words_under_their_key() -> None:
    key = owner_key("alice")
    assert fts5_match(["kube", "\u6771\u4eac\u90fd"], "alice") == (
        f'document : ("{key}kube"* AND "{key}\u6771\u4eac {key}\u4eac\u90fd"*)'
    )
    # Whatever the id holds: the key is hex.
    assert regex.fullmatch(r"_[0-9a-f]{8}", owner_key('a" OR "b'))


def test_a_run_without_spaces_is_a_phrase_of_its_pairs() -> None:
    assert postgres_tsquery(["\u6771\u4eac\u90fd", "x"]) == (
        "('\u6771\u4eac' <-> '\u4eac\u90fd':*) & 'x':*"
    )
    assert postgres_tsquery(["\u6771"]) == "'\u6771':*"
    key = owner_block_key("bob", 0)
    # The owned words have no positions: all pairs required, the order checked on the plain.
    assert postgres_owned_tsquery(["\u6771\u4eac\u90fd"], "bob", range(1)) == (
        f"'{key}\u6771\u4eac' & '{key}\u4eac\u90fd':*"
    )


def test_owned_words_are_looked_for_in_each_block_named() -> None:
    one, two = owner_block_key("bob", 1), owner_block_key("bob", 2)
    assert one == owner_key("bob") + "1."
    # An entry is in one block: each word in any of them.
    assert postgres_owned_tsquery(["pay", "\u6771\u4eac\u90fd"], "bob", range(1, 3)) == (
        f"('{one}pay':* | '{two}pay':*) & ('{one}\u6771\u4eac' | '{two}\u6771\u4eac') & "
        f"('{one}\u4eac\u90fd':* | '{two}\u4eac\u90fd':*)"
    )


# What may appear in a query built from words: quoted words, phrases of them, and the
# operators put between.
_LEXEME = r"'[^'\\\s]+'"
_TERM = rf"(?:{_LEXEME}:\*|\({_LEXEME}(?: <-> {_LEXEME})*:\*\))"
_TSQUERY = re.compile(rf"{_TERM}( & {_TERM})*")
_FTS5 = re.compile(r'document : \("[^"\s]+( [^"\s]+)*"\*( AND "[^"\s]+( [^"\s]+)*"\*)*\)')


@pytest.mark.parametrize("query", HOSTILE_QUERIES)
def test_hostile_queries_become_quoted_words_only(query: str) -> None:
    found = query_words(query)
    for word in found:
        assert regex.fullmatch(r"[\p{L}\p{N}][\p{L}\p{N}\p{M}]*", word), word
    if found:
        assert _TSQUERY.fullmatch(postgres_tsquery(found)), postgres_tsquery(found)
        assert _FTS5.fullmatch(fts5_match(found, None)), fts5_match(found, None)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_becomes_well_formed_queries(query: str) -> None:
    found = query_words(query)
    assert len(found) <= QUERY_MAX_WORDS
    assert len(set(found)) == len(found)
    for word in found:
        assert len(word) > 0
        assert len(word) <= WORD_MAX_CHARS or is_unspaced(word)
        assert unicodedata.is_normalized("NFKC", word) or len(word) == WORD_MAX_CHARS
        assert not {"'", '"', " ", "*", ":", "&", "(", ")"} & set(word)
    if found:
        assert _TSQUERY.fullmatch(postgres_tsquery(found))
        assert _FTS5.fullmatch(fts5_match(found, None))


# --- The words as the databases index them ------------------------------------------------

# Each text's words must be exactly what the database indexes (scripts whose words carry
# combining marks included: FTS5's default tokenizer splits words at every mark).
INDEXED_TEXTS = [
    pytest.param("Deploying Kubernetes at example.com, v1.29", id="ascii"),
    pytest.param("\uff2b\uff35\uff22\uff25 \ufb01nance x\u00b2", id="compatibility"),
    pytest.param("na\u00efve caf\u00e9 cafe\u0301 q\u0303 \u0301alone", id="latin-marks"),
    pytest.param("\u0939\u093f\u0928\u094d\u0926\u0940 \u092d\u093e\u0937\u093e", id="devanagari"),
    pytest.param(
        "\u0643\u064e\u062a\u064e\u0628\u064e \u0645\u0631\u062d\u0628\u0627", id="arabic"
    ),
    pytest.param("\u05e9\u05c1\u05b8\u05dc\u05d5\u05b9\u05dd", id="hebrew-niqqud"),
    pytest.param(
        "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35 \u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22", id="thai"
    ),
    pytest.param("\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8 \ud55c\uad6d\uc5b4", id="cjk"),
    pytest.param(
        "\u0416\u0438\u0437\u043d\u044c \u0394\u03ad\u03bb\u03c4\u03b1", id="cyrillic-greek"
    ),
    pytest.param("\U0001f469\u200d\U0001f4bb dev \U0001f1eb\U0001f1f7 ops", id="emoji"),
]


async def _indexed_words(conn: AsyncConnection, entry_id: int) -> list[str]:
    """The words the database's index holds for one chat_search entry, sorted."""
    if conn.dialect.name == "postgresql":
        lexemes = await conn.execute(
            sa.select(sa.func.tsvector_to_array(chat_search.c.document)).where(
                chat_search.c.id == entry_id
            )
        )
        return sorted(set(lexemes.scalar_one()))
    await conn.exec_driver_sql(
        "CREATE VIRTUAL TABLE IF NOT EXISTS temp.search_terms "
        f"USING fts5vocab(main, {FTS_TABLE}, instance)"
    )
    terms = await conn.execute(
        sa.text("SELECT term FROM temp.search_terms WHERE doc = :id AND col = 'document'"),
        {"id": entry_id},
    )
    return sorted({str(term) for term in terms.scalars()})


async def _store(database: Database, session_id: str, text: str) -> None:
    await store_text(database, session_id, None, text)


@pytest.mark.parametrize("text", INDEXED_TEXTS)
async def test_the_database_indexes_exactly_the_words(database: Database, text: str) -> None:
    await _store(database, "s", text)
    async with database.read() as conn:
        entry_id = (
            await conn.execute(
                sa.select(chat_search.c.id).where(
                    chat_search.c.session_id == "s", chat_search.c.seq == 1
                )
            )
        ).scalar_one()
        indexed = await _indexed_words(conn, entry_id)
    assert indexed == sorted(set(document(text).split(" ")))


async def _search(database: Database, query: str, user_id: str | None = None) -> list[Any]:
    if not query_words(query):
        # The service answers a search without words itself (tests/api/test_search.py).
        return []
    async with database.read() as conn:
        return [
            row["session_id"]
            for row in await search_queries.search_session_summaries(
                conn,
                search_queries.SearchQuery(
                    query_words(query), SessionFilter(user_id=user_id, archived=False)
                ),
                limit=10,
            )
        ]


@pytest.mark.parametrize("text", INDEXED_TEXTS)
async def test_every_word_and_its_prefixes_find_the_text_and_nothing_else_does(
    database: Database, text: str
) -> None:
    """Prefixes of words, cut between grapheme clusters, match; a piece from inside a word
    does not (FTS5's default tokenizer made each syllable of Indic text a word of its own)."""
    await _store(database, "s", text)
    for word in words(text):
        clusters: list[str] = regex.findall(r"\X", word)
        for end in range(1, len(clusters) + 1):
            prefix = "".join(clusters[:end])
            assert await _search(database, prefix) == ["s"], (word, prefix)
        inside = "".join(clusters[1:])
        if (
            not is_unspaced(word)
            and inside
            and regex.match(r"[\p{L}\p{N}]", inside)
            and not any(other.startswith(query_words(inside)[0]) for other in words(text))
        ):
            assert await _search(database, inside) == [], (word, inside)


@pytest.mark.parametrize("query", HOSTILE_QUERIES)
async def test_hostile_queries_run_on_the_database(database: Database, query: str) -> None:
    await _store(database, "s", "deploy kube alice " + "x" * 200)
    for user_id in (None, 'al"ice', "NEAR( a*"):
        found = await _search(database, query, user_id)
        assert found in ([], ["s"])
