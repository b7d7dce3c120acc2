"""Search in the sidebar: a page of the sessions whose title or messages contain every word
of a query, ranked, each with a snippet of the message that matched best."""

import math
import uuid
from typing import Any

from app.kit.db.engine import Database
from app.kit.text import make_snippet
from app.search import queries
from app.search.queries import SearchQuery
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
        # On the read replica if any, as the sidebar's list (docs/scaling.md).
        async with db.replica_read() as conn:
            search = SearchQuery(query_words, where)
            if include_total:
                total = await queries.count_search_results(conn, search)
            if shown:
                rows = await queries.search_session_summaries(
                    conn, search, limit=shown + 1, offset=offset
                )
                matches = await queries.best_matching_messages(
                    conn, search, [row["session_id"] for row in rows[:shown]]
                )
                # Only sessions with forks need the walk; in the others every message is on
                # the current branch.
                forked = [match.id for match in matches.values() if not match.straight]
                on_branch = await queries.messages_on_current_branch(conn, forked)
                tags = await tag_queries.tags_of_sessions(
                    conn, [row["session_id"] for row in rows[:shown]]
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
