"""Best match first within a user's ranking window (app/search/queries.py,
RANKING_WINDOW_ENTRIES), over HTTP on SQLite and PostgreSQL: a user with more entries than the
window sees the sessions matched among their newest entries first, ranked, then the others,
ranked; a user within it sees every match ranked; every way to page shows each matching session
exactly once, across the boundary too.

The window is made small here (monkeypatched) so that a few sessions cross it.
"""

from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from app.kit.db.engine import Database
from app.search import queries as search_queries
from app.search.fulltext import OWNER_BLOCK_BITS
from tests.api.test_search import ids_of, patch, scroll, search, store

USER = "ranking-user"


@pytest.fixture
def window(monkeypatch: pytest.MonkeyPatch) -> None:
    """A window of six entries: `seed` writes eleven, the last six being those of `new-1` and
    `new-2` (a title and two messages each)."""
    monkeypatch.setattr(search_queries, "RANKING_WINDOW_ENTRIES", 6)


async def seed(database: Database) -> None:
    # Older: a title match (which ranks first when every match is ranked) and a message match.
    await store(database, "old-title", ("user", "Payment overview"), user_id=USER, at=0)
    await store(
        database, "old-body", ("user", "hello"), ("assistant", "payment one"), user_id=USER, at=1
    )
    # Newer: message matches only, ranked below the title match by any relevance.
    await store(
        database,
        "new-1",
        ("user", "nothing here"),
        ("assistant", "one payment among many other words here"),
        user_id=USER,
        at=10,
    )
    await store(
        database, "new-2", ("user", "still nothing"), ("assistant", "payment"), user_id=USER, at=11
    )
    # Another user's entries count neither in this user's window nor in their results.
    await store(database, "other", ("user", "Payment elsewhere"), user_id="someone-else", at=12)


async def all_results(client: httpx.AsyncClient, q: str) -> list[str]:
    page = await search(client, q, user_id=USER, page=1, page_size=100)
    assert page["has_more"] is False
    return ids_of(page)


async def test_a_user_within_the_window_gets_every_match_ranked(
    client: httpx.AsyncClient, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search_queries, "RANKING_WINDOW_ENTRIES", 11)
    await seed(database)

    results = await all_results(client, "payment")

    assert results[0] == "old-title"
    assert set(results) == {"old-title", "old-body", "new-1", "new-2"}


@pytest.mark.usefixtures("window")
async def test_matches_in_the_window_come_first_then_the_older_ones_each_ranked(
    client: httpx.AsyncClient, database: Database
) -> None:
    await seed(database)

    results = await all_results(client, "payment")

    assert set(results[:2]) == {"new-1", "new-2"}
    # The older sessions are ranked among themselves: the title match first.
    assert results[2:] == ["old-title", "old-body"]
    page = await search(client, "payment", user_id=USER, page=1, page_size=100)
    assert page["total"] == 4


@pytest.mark.usefixtures("window")
async def test_a_session_matched_in_both_is_placed_once_with_the_window(
    client: httpx.AsyncClient, database: Database
) -> None:
    await seed(database)
    # A new message in an old session: the newest entry, in the window; the window now
    # starts one entry later, after new-1's title.
    await store(database, "old-body", ("user", "payment again"), user_id=USER, at=20)

    results = await all_results(client, "payment")

    assert set(results[:3]) == {"new-1", "new-2", "old-body"}
    # Ranked with every match, the title match would come first.
    assert results[3:] == ["old-title"]


@pytest.mark.usefixtures("window")
async def test_a_word_found_only_before_the_window_is_still_found(
    client: httpx.AsyncClient, database: Database
) -> None:
    await seed(database)

    assert await all_results(client, "overview") == ["old-title"]
    assert await all_results(client, "hello") == ["old-body"]


@pytest.mark.usefixtures("window")
@pytest.mark.parametrize("size", [1, 2, 3])
async def test_every_way_to_page_shows_each_session_once_across_the_boundary(
    client: httpx.AsyncClient, database: Database, size: int
) -> None:
    await seed(database)
    expected = await all_results(client, "payment")

    pages = [
        await search(client, "payment", user_id=USER, page=n, page_size=size) for n in range(1, 6)
    ]
    scrolled = await scroll(client, "payment", limit=size, user_id=USER)

    by_page = [session_id for page in pages for session_id in ids_of(page)]
    assert by_page == expected
    assert [session_id for page in scrolled for session_id in ids_of(page)] == expected
    # Pages wholly past the window's sessions are found by counting them.
    assert {page["total"] for page in pages} == {4}
    assert ids_of(pages[-1]) == []


@pytest.mark.usefixtures("window")
async def test_a_page_places_each_session_once_while_its_window_match_is_renamed_away(
    client: httpx.AsyncClient, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page past the window's sessions is read by two statements (the window's tier, then
    the older one). A session whose only match in the window goes away between them (renamed)
    is then an older one: on PostgreSQL, where each statement saw the database as of its own
    start, the page listed it twice."""
    # Its message is the user's oldest entry.
    await store(database, "both", ("user", "payment plans"), user_id=USER, at=0)
    await seed(database)
    # Renamed: its title is the newest entry, in the window; its message is older.
    await patch(client, "both", {"title": "Payment terms"})
    read_tier = search_queries.search_session_summaries

    async def renamed_between(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        rows = await read_tier(*args, **kwargs)
        if kwargs.get("tier") == "recent":
            monkeypatch.setattr(search_queries, "search_session_summaries", read_tier)
            await patch(client, "both", {"title": "Nothing to see"})
        return rows

    monkeypatch.setattr(search_queries, "search_session_summaries", renamed_between)
    page = await search(client, "payment", user_id=USER, page=1, page_size=100)

    results = ids_of(page)
    assert sorted(results) == ["both", "new-1", "new-2", "old-body", "old-title"]
    # Read as one snapshot: as before the rename, its title match in the window placed it.
    assert set(results[:3]) == {"both", "new-1", "new-2"}
    assert page["total"] == 5


@pytest.mark.usefixtures("window")
async def test_a_session_placed_by_its_title_in_the_window_has_its_older_message_as_snippet(
    client: httpx.AsyncClient, database: Database
) -> None:
    """Renamed lately, a session is placed in the window by its title; its matching message
    is older. It had no snippet (null is for a session that matches by its title only),
    where a user with fewer entries sees that message."""
    await seed(database)
    await patch(client, "old-body", {"title": "Payment memo"})

    page = await search(client, "payment", user_id=USER, page=1, page_size=100)

    [placed] = [item for item in page["sessions"] if item["session_id"] == "old-body"]
    assert ids_of(page).index("old-body") < ids_of(page).index("old-title")
    assert placed["snippet"] == "payment one"
    assert placed["match_message_id"] is not None


async def spread_into_blocks(database: Database) -> None:
    """Each entry in a block of its own, as if 16,383 more entries of its owner came between
    each two (the order kept): PostgreSQL reads a user's owned words by block (migration
    0019), and the heaviest user's span thirty blocks."""
    async with database.write() as conn:
        await conn.execute(
            sa.text("UPDATE chat_search SET user_ordinal = user_ordinal * :size"),
            {"size": 1 << OWNER_BLOCK_BITS},
        )


@pytest.mark.usefixtures("window")
async def test_a_user_whose_entries_span_many_blocks_finds_what_one_block_found(
    client: httpx.AsyncClient, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The window's blocks (from the one after its start's to the newest's) and every block
    for the older tier and for a user within the window: the same sessions in the same order
    as when all of them were in block 0; a session written next is numbered after the
    newest, in the newest's block, and found."""
    await seed(database)
    queries = ["payment", "pay", "one payment", "overview", "hello"]
    in_one_block = {q: await all_results(client, q) for q in queries}
    monkeypatch.setattr(search_queries, "RANKING_WINDOW_ENTRIES", 100)
    every_match = await all_results(client, "payment")
    monkeypatch.setattr(search_queries, "RANKING_WINDOW_ENTRIES", 6)

    await spread_into_blocks(database)

    assert {q: await all_results(client, q) for q in queries} == in_one_block
    monkeypatch.setattr(search_queries, "RANKING_WINDOW_ENTRIES", 100)
    assert await all_results(client, "payment") == every_match
    monkeypatch.setattr(search_queries, "RANKING_WINDOW_ENTRIES", 6)
    await store(database, "newest", ("user", "payment today"), user_id=USER, at=20)
    assert "newest" in await all_results(client, "payment today")
    assert set((await all_results(client, "payment"))[:3]) == {"newest", "new-1", "new-2"}
