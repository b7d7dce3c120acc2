"""Search in the sidebar: a page of the sessions whose title or messages contain every word
of a query, ranked, each with a snippet of the message that matched best."""

import math
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from app.kit.db.engine import Database
from app.search import queries
from app.search.queries import OwnerEntries, SearchQuery
from app.search.snippets import make_snippet
from app.sessions.cursor import (
    SEARCH_MAX_OFFSET,
    InvalidCursor,
    SearchPosition,
    encode_search_cursor,
    filters_fingerprint,
    search_fingerprint,
)
from app.sessions.queries import ListPosition, SessionFilter
from app.sessions.schemas import SessionsListResponse
from app.tags import queries as tag_queries


@dataclass(frozen=True, slots=True)
class RankedPage:
    """A page of results; its first `recent` rows were placed by their matches in the ranking
    window (none without one: every match was ranked)."""

    rows: list[dict[str, Any]]
    recent: int = 0


async def _ranked_page(
    conn: AsyncConnection, search: SearchQuery, *, limit: int, offset: int
) -> RankedPage:
    """`limit` results from `offset`, best match first: for a user with more entries than
    the ranking window (queries.RANKING_WINDOW_ENTRIES), the sessions matched within it,
    ranked, then the others, ranked; for everyone else, every match ranked."""
    if search.entries.since is None:
        rows = await queries.search_session_summaries(conn, search, limit=limit, offset=offset)
        return RankedPage(rows)
    rows = await queries.search_session_summaries(
        conn, search, limit=limit, offset=offset, tier="recent"
    )
    recent = len(rows)
    if recent == limit:
        return RankedPage(rows, recent)
    # The page reaches past the window's sessions: how many there are is known from this
    # page unless it starts past them all.
    if rows or offset == 0:
        in_window = offset + recent
    else:
        in_window = await queries.count_search_results(conn, search, tier="recent")
    rows += await queries.search_session_summaries(
        conn, search, limit=limit - recent, offset=max(0, offset - in_window), tier="older"
    )
    return RankedPage(rows, recent)


async def search_sessions(
    db: Database,
    where: SessionFilter,
    *,
    query_words: list[str],
    size: int,
    page: int | None,
    cursor: ListPosition | SearchPosition | None,
    include_total: bool,
) -> SessionsListResponse:
    """A page of search results, in page mode (`page`) or cursor mode (an offset cursor)."""
    fingerprint = search_fingerprint(
        query_words, where.user_id, where.archived, *filters_fingerprint(where)
    )
    if isinstance(cursor, ListPosition):
        raise InvalidCursor("this cursor belongs to the plain listing, not a search")
    if cursor is not None and cursor.fingerprint != fingerprint:
        raise InvalidCursor("this cursor belongs to another search")
    offset = (page - 1) * size if page is not None else (cursor.offset if cursor else 0)
    # Results stop at SEARCH_MAX_OFFSET: nobody pages that far through a search, and deeper
    # offsets would only cost more.
    shown = max(0, min(size, SEARCH_MAX_OFFSET - offset))
    rows: list[dict[str, Any]] = []
    total: int | None = 0 if include_total else None
    matches: dict[str, queries.BestMatch] = {}
    tags: dict[str, list[str]] = {}
    on_branch: set[uuid.UUID] = set()
    # A search without a single word (only punctuation, say) matches nothing.
    if query_words:
        # On the read replica if any, as the sidebar's list (docs/scaling.md). One snapshot:
        # a page past the window's sessions takes two statements (its tiers), and a session
        # whose window match went away between them would be placed by both.
        async with db.replica_read(snapshot=True) as conn:
            entries = (
                OwnerEntries()
                if where.user_id is None
                else await queries.owner_entries(conn, where.user_id)
            )
            search = SearchQuery(query_words, where, entries)
            if include_total:
                total = await queries.count_search_results(conn, search)
            if shown:
                ranked = await _ranked_page(conn, search, limit=shown + 1, offset=offset)
                rows = ranked.rows
                page_ids = [row["session_id"] for row in rows[:shown]]
                # Each snippet is of the match that placed its session: in the window for
                # those it placed, unless its title did (its message matches are older).
                placed = page_ids[: ranked.recent]
                matches = await queries.best_matching_messages(
                    conn, search, placed, recent=search.entries.since is not None
                )
                by_title = [session_id for session_id in placed if session_id not in matches]
                matches |= await queries.best_matching_messages(
                    conn, search, by_title + page_ids[ranked.recent :]
                )
                # Only sessions with forks need the walk; in the others every message is on
                # the current branch.
                forked = [match.id for match in matches.values() if not match.straight]
                on_branch = await queries.messages_on_current_branch(conn, forked)
                tags = await tag_queries.tags_of_sessions(
                    conn, [row["session_id"] for row in rows[:shown] if row["tagged"]]
                )
    next_offset = offset + shown
    has_more = len(rows) > shown and next_offset < SEARCH_MAX_OFFSET
    rows = rows[:shown]
    for row in rows:
        row["tags"] = tags.get(row["session_id"], [])
        match = matches.get(row["session_id"])
        if match is not None:
            row["snippet"] = make_snippet(match.content, query_words)
            row["match_message_id"] = match.id
            row["match_off_branch"] = not match.straight and match.id not in on_branch
    return SessionsListResponse.model_validate(
        {
            "sessions": rows,
            "total": total,
            "page": page,
            "page_size": size,
            "total_pages": None if page is None or total is None else math.ceil(total / size),
            "next_cursor": (
                encode_search_cursor(SearchPosition(next_offset, fingerprint)) if has_more else None
            ),
            "has_more": has_more,
        }
    )
