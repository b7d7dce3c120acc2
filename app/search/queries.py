"""The SQL of a search: the sessions whose title or messages contain every word, ranked, and
the message of each that matches best. Each helper takes the connection of a transaction it
does not own."""

import functools
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    Integer,
    Text,
    Uuid,
    and_,
    bindparam,
    case,
    cast,
    column,
    func,
    literal_column,
    select,
    table,
    true,
)
from sqlalchemy.dialects.postgresql import TSQUERY
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Select

from app.kit.db.rows import as_dicts
from app.kit.db.tables import SEARCH_TITLE_SEQ, chat_messages, chat_search, chat_sessions
from app.search import fulltext
from app.sessions.queries import (
    LIST_ORDER,
    SUMMARY_COLUMNS,
    FilterShape,
    SessionFilter,
    filter_clauses,
)

_fts = table(fulltext.FTS_TABLE, column("rowid"))

# The search statements are built once per shape and take their values as parameters: made
# afresh, their nested subqueries cost more Python time than the database spends on a typical
# user's search (docs/performance.md).
_USER = bindparam("search_user", type_=Text())
_ACTIVE = bindparam("search_active", type_=Boolean())
_TERMS = bindparam("search_terms", type_=Text())
_OWNED_TERMS = bindparam("search_owned_terms", type_=Text())
_SESSIONS = bindparam("search_sessions", expanding=True, type_=Text())
_LIMIT = bindparam("search_limit", type_=Integer())
_OFFSET = bindparam("search_offset", type_=Integer())
_SINCE = bindparam("search_since", type_=BigInteger())

# Best match first is ranked among a user's newest RANKING_WINDOW_ENTRIES search entries
# (messages and titles, by when they were written): the sessions with a match there come
# first, ranked; the sessions whose matches are all older follow, ranked among themselves.
# A user with fewer entries (nearly everyone: the median user of the benchmark's data has
# about 575) gets the plain ranking of every match. Ranking every match cost the user with
# 28,445 matching sessions half a second on each search (docs/performance.md); within the
# window a search reads at most this many of the user's entries, whoever asks, and a deep
# page past the window's matches pays for the rest only when it is asked for.
RANKING_WINDOW_ENTRIES = 20_000
# The entries a statement ranks: every match; those written after `search_since` (the
# window); or every match of the sessions with none after it (the older ones).
Tier = Literal["all", "recent", "older"]


@dataclass(frozen=True, slots=True)
class OwnerEntries:
    """A user's search entries as a search of theirs starts (`owner_entries`): the block of
    their newest entry (PostgreSQL files the owned words in blocks, app/search/fulltext.py
    `owner_block_key`), and where the ranking window starts if they have more entries than
    it holds: after the entry `since`, in the blocks from `window_first_block` on."""

    last_block: int = 0
    since: int | None = None
    window_first_block: int = 0

    def blocks(self, tier: Tier) -> range:
        """The blocks holding the entries a statement of `tier` ranks."""
        return range(self.window_first_block if tier == "recent" else 0, self.last_block + 1)


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A search as the queries run it: its words (app/search/fulltext.py), the sessions it may
    find, and for one user's search, where their entries stand (`owner_entries`)."""

    words: list[str]
    where: SessionFilter
    entries: OwnerEntries = OwnerEntries()

    @property
    def for_user(self) -> bool:
        return self.where.for_user

    @property
    def shape(self) -> FilterShape:
        return self.where.shape

    def parameters(self, dialect: str, tier: Tier = "all") -> dict[str, Any]:
        """The statements' parameters, for a statement of `tier`."""
        user_id = self.where.user_id
        parameters: dict[str, Any] = {
            "search_user": user_id,
            "search_active": not self.where.archived,
            **self.where.filter_parameters(),
        }
        if dialect == "postgresql":
            parameters["search_terms"] = fulltext.postgres_tsquery(self.words)
            if user_id is not None:
                parameters["search_owned_terms"] = fulltext.postgres_owned_tsquery(
                    self.words, user_id, self.entries.blocks(tier)
                )
        else:
            parameters["search_terms"] = fulltext.fts5_match(self.words, user_id)
        if tier != "all":
            if self.entries.since is None:
                raise ValueError(f"the {tier!r} tier needs a ranking window")
            parameters["search_since"] = self.entries.since
        return parameters


def _read_first(name: str, *conditions: ColumnElement[bool]) -> Any:
    """The search entries that meet `conditions`, read first and on their own (PostgreSQL).
    OFFSET 0 keeps the planner from adding another index to the scan: intersecting with
    idx_chat_search_user reads all of a user's entries (43 ms for the biggest user's rare
    word, against 0.1 ms without), and the plain GIN index reads everyone's matches."""
    return (
        select(
            chat_search.c.id,
            chat_search.c.session_id,
            chat_search.c.seq,
            chat_search.c.user_id,
            chat_search.c.document,
        )
        .where(*conditions)
        .offset(0)
        .subquery(name)
    )


def _matching_entries(
    dialect: str, *, for_user: bool, in_sessions: bool, recent: bool = False
) -> Select[Any]:
    """Search entries matching every word (`search_terms`), with a relevance score (higher is
    better), of the user `search_user` if `for_user`; if `in_sessions`, only the messages of
    the sessions `search_sessions`; if `recent`, only the entries after `search_since` (one
    user's: the ranking window)."""
    if dialect == "postgresql":
        tsquery = func.to_tsquery(literal_column("'simple'::regconfig"), _TERMS)
        entries: Any = chat_search
        matches: list[ColumnElement[bool]] = []
        if in_sessions:
            # The entries of a page's sessions (the user's own already).
            scope = [chat_search.c.session_id.in_(_SESSIONS), chat_search.c.seq != SEARCH_TITLE_SEQ]
            if recent:
                scope.append(chat_search.c.id > _SINCE)
            entries = _read_first("scoped", *scope)
            matches.append(entries.c.document.op("@@")(tsquery))
        elif for_user:
            # The owner's words in the blocks the terms name (migration 0019): the index
            # yields only this user's matches there (the window's two or three blocks).
            owned_words = func.chat_search_owned_block_words(
                chat_search.c.user_id, chat_search.c.user_ordinal, chat_search.c.document
            )
            entries = _read_first("owned", owned_words.op("@@")(cast(_OWNED_TERMS, TSQUERY)))
            if recent:
                # The window's first block may start before it.
                matches.append(entries.c.id > _SINCE)
            # The owned words have no positions: the order of a phrase's pairs (a run of
            # Chinese, Japanese, Thai) is checked on the plain words of those entries.
            matches.append(entries.c.document.op("@@")(tsquery))
        else:
            matches.append(entries.c.document.op("@@")(tsquery))
        if for_user:
            # Outside the subquery; inside, it would bring in idx_chat_search_user. And the
            # owner key is a hash: two users may share one.
            matches.append(entries.c.user_id == _USER)
        # Ranked on the plain words, which carry the positions and the title's weight.
        return select(
            entries.c.id,
            entries.c.session_id,
            entries.c.seq,
            func.ts_rank(entries.c.document, tsquery).label("score"),
        ).where(*matches)
    # bm25() is lower for better matches; a title match counts ten times a message's, as
    # weight A does against D on PostgreSQL.
    weight = case((chat_search.c.seq == SEARCH_TITLE_SEQ, 10.0), else_=1.0)
    stmt = (
        select(
            chat_search.c.id,
            chat_search.c.session_id,
            chat_search.c.seq,
            (-func.bm25(literal_column(fulltext.FTS_TABLE)) * weight).label("score"),
        )
        .select_from(_fts.join(chat_search, chat_search.c.id == _fts.c.rowid))
        .where(literal_column(fulltext.FTS_TABLE).op("MATCH")(_TERMS))
        # Keeps SQLite from flattening this into an outer query: bm25() works only in the
        # query that runs the MATCH.
        .offset(0)
    )
    if recent:
        # On the FTS5 table's rowid, FTS5 starts reading each word's entries at the window.
        stmt = stmt.where(_fts.c.rowid > _SINCE)
    if in_sessions:
        stmt = stmt.where(
            chat_search.c.session_id.in_(_SESSIONS), chat_search.c.seq != SEARCH_TITLE_SEQ
        )
    if for_user:
        # Unary plus keeps SQLite from driving the join from idx_chat_search_user: it would
        # then rerun the whole MATCH once per entry of the user (seconds at 260k entries).
        # The MATCH already reads only the user's entries (their owned words, fts5_match);
        # the owner key is a hash, which two users may share.
        owner: ColumnElement[Any] = literal_column(
            f"+{chat_search.name}.{chat_search.c.user_id.name}"
        )
        stmt = stmt.where(owner == _USER)
    return stmt


@functools.cache
def _matching_sessions(dialect: str, shape: FilterShape, tier: Tier = "all") -> Select[Any]:
    """The sessions with a matching entry, best first; `search_user`'s if `for_user`, active
    or archived as `search_active` says, in the folder and with the tags the shape asks for;
    of the `tier` (see RANKING_WINDOW_ENTRIES; a tier other than "all" is one user's)."""
    for_user = shape.for_user
    entries = _matching_entries(
        dialect, for_user=for_user, in_sessions=False, recent=tier == "recent"
    ).subquery("entries")
    grouped = select(
        entries.c.session_id,
        # Title matches first, whatever the scores: a weight only scales a score, and a
        # prefix that many different words of a message start with (search as you type:
        # "p") adds up past any title's score on PostgreSQL (ts_rank sums them).
        func.max(case((entries.c.seq == SEARCH_TITLE_SEQ, 1), else_=0)).label("in_title"),
        func.max(entries.c.score).label("rank"),
    ).group_by(entries.c.session_id)
    if tier == "older":
        # The sessions the window's ranking has already placed are not placed again.
        grouped = grouped.having(func.max(entries.c.id) <= _SINCE)
    ranked = grouped.subquery("ranked")
    stmt = (
        select(*SUMMARY_COLUMNS)
        .join_from(chat_sessions, ranked, ranked.c.session_id == chat_sessions.c.session_id)
        .where(chat_sessions.c.active == _ACTIVE)
        .order_by(
            ranked.c.in_title.desc(),
            ranked.c.rank.desc(),
            *(column.desc() for column in LIST_ORDER[1:]),
        )
    )
    if for_user:
        stmt = stmt.where(chat_sessions.c.user_id == _USER)
    return stmt.where(*filter_clauses(shape))


@functools.cache
def _search_page(dialect: str, shape: FilterShape, tier: Tier) -> Select[Any]:
    return _matching_sessions(dialect, shape, tier).limit(_LIMIT).offset(_OFFSET)


@functools.cache
def _search_count(dialect: str, shape: FilterShape, tier: Tier) -> Select[Any]:
    matching = _matching_sessions(dialect, shape, tier)
    return select(func.count()).select_from(matching.order_by(None).subquery())


async def search_session_summaries(
    conn: AsyncConnection, search: SearchQuery, *, limit: int, offset: int = 0, tier: Tier = "all"
) -> list[dict[str, Any]]:
    """Sessions whose title or messages contain every word (as prefixes), best match first,
    then newest activity first; of `tier` (the ranking window's, `search.entries`)."""
    dialect = conn.dialect.name
    stmt = _search_page(dialect, search.shape, tier)
    parameters = search.parameters(dialect, tier) | {"search_limit": limit, "search_offset": offset}
    return as_dicts(await conn.execute(stmt, parameters))


async def count_search_results(
    conn: AsyncConnection, search: SearchQuery, *, tier: Tier = "all"
) -> int:
    dialect = conn.dialect.name
    stmt = _search_count(dialect, search.shape, tier)
    return int((await conn.execute(stmt, search.parameters(dialect, tier))).scalar_one())


_WINDOW_OFFSET = bindparam("search_window_offset", type_=Integer())


@functools.cache
def _owner_entries() -> Select[Any]:
    # Walks of idx_chat_search_user (user_id, id) from the user's newest entry: one step, and
    # the window's length.
    newest = (
        select(chat_search.c.user_ordinal)
        .where(chat_search.c.user_id == _USER)
        .order_by(chat_search.c.id.desc())
        .limit(1)
        .subquery("newest")
    )
    start = (
        select(chat_search.c.id, chat_search.c.user_ordinal)
        .where(chat_search.c.user_id == _USER)
        .order_by(chat_search.c.id.desc())
        .limit(1)
        .offset(_WINDOW_OFFSET)
        .subquery("start")
    )
    return select(
        newest.c.user_ordinal.label("newest"),
        start.c.id.label("since"),
        start.c.user_ordinal.label("since_ordinal"),
    ).select_from(newest.outerjoin(start, true()))


async def owner_entries(conn: AsyncConnection, user_id: str) -> OwnerEntries:
    """Where `user_id`'s entries stand, in the transaction's snapshot: the newest's block, and
    the entry just before the ranking window (RANKING_WINDOW_ENTRIES) unless all fit in it.

    One user's entries are numbered in the order of their ids (the trigger of migration
    0019), so the window's entries, those after `since`, are numbered after it: its blocks are
    the one after `since`'s number and those up to the newest's."""
    parameters = {"search_user": user_id, "search_window_offset": RANKING_WINDOW_ENTRIES}
    row = (await conn.execute(_owner_entries(), parameters)).first()
    if row is None:
        return OwnerEntries()
    last_block = (row.newest or 0) >> fulltext.OWNER_BLOCK_BITS
    if row.since is None:
        return OwnerEntries(last_block)
    first_block = ((row.since_ordinal or 0) + 1) >> fulltext.OWNER_BLOCK_BITS
    return OwnerEntries(last_block, int(row.since), min(first_block, last_block))


@functools.cache
def _best_messages(dialect: str, *, for_user: bool, recent: bool) -> Select[Any]:
    entries = _matching_entries(
        dialect, for_user=for_user, in_sessions=True, recent=recent
    ).subquery("entries")
    best = select(
        entries.c.session_id,
        entries.c.seq,
        func.row_number()
        .over(
            partition_by=entries.c.session_id,
            order_by=(entries.c.score.desc(), entries.c.seq.desc()),
        )
        .label("place"),
    ).subquery("best")
    # Every message written is on the current branch exactly when the branch holds them all
    # (see messages_on_current_branch). Read in the statement that finds the message, so that
    # the two agree (PostgreSQL reads each statement as of its own start), and as a subquery
    # per result row: one lookup by unique key each, whatever the planner thinks of the rest.
    straight = (
        select(chat_sessions.c.node_count == chat_sessions.c.message_count)
        .where(chat_sessions.c.session_id == chat_messages.c.session_id)
        .scalar_subquery()
    )
    return (
        select(
            chat_messages.c.session_id,
            chat_messages.c.id,
            chat_messages.c.content,
            straight.label("straight"),
        )
        .join(
            best,
            and_(
                best.c.session_id == chat_messages.c.session_id,
                # A message's entry is keyed by its ordinal (migration 0007).
                best.c.seq == chat_messages.c.ordinal,
            ),
        )
        .where(best.c.place == 1)
    )


@dataclass(frozen=True, slots=True)
class BestMatch:
    """The message of a session that matches a search best."""

    id: uuid.UUID
    content: str
    # The session has no forks: every message of it is on its current branch.
    straight: bool


async def best_matching_messages(
    conn: AsyncConnection, search: SearchQuery, session_ids: list[str], *, recent: bool = False
) -> dict[str, BestMatch]:
    """For each of `session_ids`, its message that matches best (the newest of equals), among
    those in the ranking window if `recent` (the match that placed it); sessions that match
    only by title are left out."""
    if not session_ids:
        return {}
    dialect = conn.dialect.name
    stmt = _best_messages(dialect, for_user=search.for_user, recent=recent)
    # With `recent`, SQLite's FTS5 reads each word's entries from the window on, not all of
    # the user's matches.
    tier: Tier = "recent" if recent else "all"
    parameters = search.parameters(dialect, tier) | {"search_sessions": session_ids}
    return {
        row.session_id: BestMatch(row.id, row.content, bool(row.straight))
        for row in await conn.execute(stmt, parameters)
    }


_MATCHES = bindparam("search_matches", expanding=True, type_=Uuid())


@functools.cache
def _on_current_branch() -> Select[Any]:
    """Which of the messages `search_matches` are on their session's current branch: one walk
    per message, up from the session's current leaf by primary key, that stops at the
    message's seq; the message is on the branch if the walk's last step is the message.

    A message is on the current branch exactly when it is an ancestor of the current leaf (or
    the leaf). Walking up from the message instead would cost its own seq in steps and still
    not decide: its path says nothing of which of its descendants the branch goes through.
    (The choices remembered at forks do not decide it either: a reply stored beside the
    branch is its parent's newest child without becoming current.) So the walk is the
    leaf's, and it costs leaf.seq - message.seq + 1 primary-key lookups: at most one branch's
    length per result, the length of the branch below the match; a message deeper than the
    leaf is off the branch without a step. Only the page's results in sessions with forks
    come here (at most 100; most sessions have none), so a page costs at most 100 walks
    down from their leaves to their matches: about 2 µs a step, nothing for the usual
    session of tens of messages, and the worst case measured, 20 results each matched at the
    top of a 5,000-message current branch, adds 160 ms on SQLite and 245 ms on PostgreSQL to
    a search page (100 such results: five times that).
    """
    matched = chat_messages.alias("matched")
    leaf = chat_messages.alias("leaf")
    walk = (
        select(
            leaf.c.id,
            leaf.c.parent_id,
            leaf.c.seq,
            matched.c.id.label("match_id"),
            matched.c.seq.label("match_seq"),
        )
        .select_from(matched)
        .join(chat_sessions, chat_sessions.c.session_id == matched.c.session_id)
        .join(leaf, leaf.c.id == chat_sessions.c.current_leaf_id)
        .where(matched.c.id.in_(_MATCHES), leaf.c.seq >= matched.c.seq)
        .cte("walk", recursive=True)
    )
    parent = chat_messages.alias("parent")
    walk = walk.union_all(
        select(parent.c.id, parent.c.parent_id, parent.c.seq, walk.c.match_id, walk.c.match_seq)
        .join(walk, parent.c.id == walk.c.parent_id)
        .where(walk.c.seq > walk.c.match_seq)
    )
    return select(walk.c.match_id).where(walk.c.id == walk.c.match_id)


async def messages_on_current_branch(
    conn: AsyncConnection, message_ids: list[uuid.UUID]
) -> set[uuid.UUID]:
    """Those of `message_ids` that are on their session's current branch (see above)."""
    if not message_ids:
        return set()
    rows = await conn.execute(_on_current_branch(), {"search_matches": message_ids})
    return {row.match_id for row in rows}
