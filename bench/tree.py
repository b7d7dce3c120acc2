"""Branching sessions (issue 13): appending, switching branch and opening the newest 50 messages
of a 5,000-message session with 100 forks, each against the same operation on a 5,000-message
straight session, on PostgreSQL and SQLite.

For each database: a fresh migrated database (`bench.stream_relay.fresh_database`) gets a
background of ordinary sessions (`bench.data`, so that tables and indexes are not just the two
sessions measured), then two sessions written in bulk (executemany through the service's own
engine, not the service per message) with every tree column as the write path would have
stored it:

* straight: `--messages` messages, user and assistant in turn, one branch;
* forked: `--messages` messages in all, with `--forks` forks spread evenly along the current
  branch. Four in five forks are edits: the original user message, its reply and one more
  exchange (4 messages) were written, then the user edited the original message and went on
  from the edit (the newest child, so no choice is remembered there). One in five is a
  regeneration the user went back from: a reply was regenerated, one exchange followed the new
  reply (3 messages), then the user switched back to the first reply and went on from it (the
  remembered choice points at the older child). The first fork is an edit of the first message
  (two first messages), the last ones a few dozen messages above the current leaf. With the
  defaults the current branch is 4,620 messages long.

The loaded trees are checked (every message's parent, seq, ordinal and branch preview against
the model, the current branch read through the service, the session's counters). Then, in the
same run, alternating straight and forked every repetition (the order swapped each time), with
`--warmup` repetitions first:

* open: `get_session(..., limit=50)`, the newest 50 messages of the current branch;
* switch: `switch_branch(..., limit=50)` alternating between two targets: on the forked
  session, the first message of the off-branch subtree of the two deepest forks; on the
  straight session, the messages as far above its leaf as those are above their branch's end,
  so both walk down the same number of steps (the straight session's walk then ends at its
  leaf); plus the walk alone (`branch_end_below`, `remember_branch`), each timed by itself;
* append: a user message and its reply through the service (`accept_user_message` +
  `save_message`, as `bench.sidebar` records a `POST /chat`), and `POST /api/v1/chat` over
  in-process ASGI (`httpx.ASGITransport`, as `bench.request_overhead`), both onto the current
  branch (the forked session's main branch again, after the switches).

Run: `python -m bench.tree [--database sqlite|postgresql ...] [--messages 5000] [--forks 100]
[--repeat 200]`.
"""

import argparse
import os
import platform
import random
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import uvloop
from sqlalchemy import bindparam, func, insert, literal_column, select, text
from sqlalchemy.engine import make_url

from app.auth.access import Caller
from app.config import Settings
from app.kit.db.engine import Database
from app.kit.db.tables import SEARCH_TITLE_SEQ, chat_messages, chat_search, chat_sessions
from app.kit.text import make_preview, make_title
from app.main import create_app
from app.messages import queries as message_queries
from app.messages import service as message_service
from app.messages.schemas import ChatRequest
from app.messages.tree import switch_branch
from app.replies.metadata import ReplyTimer, reply_metadata
from app.search import fulltext
from app.sessions import queries as session_queries
from app.sessions import service as session_service
from bench.data import TEXT_POOL, DataSpec, Plan, load, make_plan
from bench.sidebar import RawPostgres, RawSqlite, machine
from bench.sqlcapture import Recorder, queries_of
from bench.stream_relay import DEFAULT_POSTGRES_URL, fresh_database, percentile

CHAT = "/api/v1/chat"
PAGE = 50
TARGET = 1.5  # issue 13: each operation within 1.5x of the same on a straight session
USER = "bench-tree-user"
EDIT_SUBTREE = 4  # the original user message, its reply, one more exchange
REGENERATION_SUBTREE = 3  # the regenerated reply, one exchange under it
APPEND_TEXTS = [
    "Can I change the currency of an invoice after it was sent?",
    "Why was this payout delayed until tomorrow morning?",
    "How do I rotate the webhook signing secret without downtime?",
    "Does the sandbox support partial refunds on card payments?",
]


# --- The two trees ---------------------------------------------------------------------------


@dataclass
class Node:
    id: uuid.UUID
    parent_id: uuid.UUID | None
    seq: int
    ordinal: int
    role: str
    content: str
    chosen_child_id: uuid.UUID | None = None


@dataclass
class Tree:
    """A session's messages in the order they were written (index = ordinal - 1)."""

    session_id: str
    nodes: list[Node] = field(default_factory=list)
    branch: list[Node] = field(default_factory=list)  # the current branch, first to leaf
    # Switch targets: (message, steps from it down to its branch's end).
    targets: list[tuple[Node, int]] = field(default_factory=list)
    forks: int = 0

    @property
    def leaf(self) -> Node:
        return self.branch[-1]


class TreeWriter:
    def __init__(self, session_id: str, rng: random.Random, texts: list[str]) -> None:
        self.tree = Tree(session_id)
        self.rng = rng
        self.texts = texts

    def add(self, parent: Node | None, role: str) -> Node:
        pick = self.rng.randrange(TEXT_POOL)
        node = Node(
            id=uuid.UUID(int=self.rng.getrandbits(128), version=4),
            parent_id=parent.id if parent else None,
            seq=parent.seq + 1 if parent else 1,
            ordinal=len(self.tree.nodes) + 1,
            role=role,
            content=self.texts[pick if role == "user" else TEXT_POOL + pick],
        )
        self.tree.nodes.append(node)
        return node


def straight_tree(session_id: str, messages: int, rng: random.Random, texts: list[str]) -> Tree:
    writer = TreeWriter(session_id, rng, texts)
    parent: Node | None = None
    for depth in range(1, messages + 1):
        parent = writer.add(parent, "user" if depth % 2 else "assistant")
        writer.tree.branch.append(parent)
    return writer.tree


def fork_plan(messages: int, forks: int) -> tuple[int, dict[int, str]]:
    """The current branch's length and the depth of each fork on it ('edit' at a user message,
    'regenerate' at a reply): spread evenly from the first message to a few dozen messages
    above the leaf."""
    kinds = ["regenerate" if j % 5 == 4 else "edit" for j in range(forks)]
    off = sum(EDIT_SUBTREE if kind == "edit" else REGENERATION_SUBTREE for kind in kinds)
    length = messages - off
    if forks < 2 or length < 4 * forks:
        raise ValueError("too many forks for the messages")
    if length % 2:
        raise ValueError("the current branch would end on a user message: change --messages")
    span = length - length // (2 * forks)  # the last fork half a spacing above the leaf
    depths: dict[int, str] = {}
    for j, kind in enumerate(kinds):
        depth = 1 + j * (span - 1) // (forks - 1)
        if kind == "edit" and depth % 2 == 0:
            depth -= 1
        if kind == "regenerate" and depth % 2 == 1:
            depth += 1
        if depth in depths:
            raise ValueError("forks too close together")
        depths[depth] = kind
    return length, depths


def forked_tree(
    session_id: str, messages: int, forks: int, rng: random.Random, texts: list[str]
) -> Tree:
    length, depths = fork_plan(messages, forks)
    writer = TreeWriter(session_id, rng, texts)
    tree = writer.tree
    tree.forks = len(depths)
    parent: Node | None = None
    fork_tops: list[tuple[Node, int]] = []
    for depth in range(1, length + 1):
        kind = depths.get(depth)
        if kind == "edit":
            # The original message and what followed it, then the edit, which is current.
            top = writer.add(parent, "user")
            below = writer.add(top, "assistant")
            below = writer.add(below, "user")
            writer.add(below, "assistant")
            fork_tops.append((top, EDIT_SUBTREE - 1))
            node = writer.add(parent, "user")
        elif kind == "regenerate":
            assert parent is not None
            # The first reply (current again), a regenerated one with an exchange under it,
            # then the user went back to the first: the choice remembered at the question.
            node = writer.add(parent, "assistant")
            top = writer.add(parent, "assistant")
            below = writer.add(top, "user")
            writer.add(below, "assistant")
            parent.chosen_child_id = node.id
            fork_tops.append((top, REGENERATION_SUBTREE - 1))
        else:
            node = writer.add(parent, "user" if depth % 2 else "assistant")
        tree.branch.append(node)
        parent = node
    if len(tree.nodes) != messages:
        raise ValueError(f"the forked tree has {len(tree.nodes)} messages, not {messages}")
    tree.targets = fork_tops[-2:]
    return tree


def match_targets(straight: Tree, forked: Tree) -> None:
    """The straight session's switch targets: as far above its leaf as the forked ones are
    above the end of their branch."""
    straight.targets = [
        (straight.branch[len(straight.branch) - 1 - steps], steps) for _, steps in forked.targets
    ]


# --- Loading ---------------------------------------------------------------------------------


def _stored(tree: Tree, start: datetime) -> list[dict[str, Any]]:
    metadata = reply_metadata(
        provider="echo", model="echo-1", status="complete", timer=ReplyTimer()
    )
    return [
        {
            "id": node.id,
            "session_id": tree.session_id,
            "user_id": USER,
            "parent_id": node.parent_id,
            "seq": node.seq,
            "ordinal": node.ordinal,
            "role": node.role,
            "content": node.content,
            "metadata": metadata if node.role == "assistant" else {},
            "created_at": start + timedelta(seconds=30 * node.ordinal),
            "chosen_child_id": node.chosen_child_id,
            # Every text has words: the preview of the last message with text is its own.
            "branch_preview": make_preview(node.content),
        }
        for node in tree.nodes
    ]


async def load_tree(db: Database, tree: Tree, start: datetime) -> float:
    """Write `tree` (session row, messages, search entries) in one transaction, in bulk.
    Messages are inserted parents first (in ordinal order), as the foreign key needs."""
    started = time.perf_counter()
    rows = _stored(tree, start)
    first = rows[0]
    title = make_title(first["content"])
    search_rows = [
        {"s": tree.session_id, "u": USER, "q": SEARCH_TITLE_SEQ, "w": fulltext.document(title)}
    ] + [
        {
            "s": tree.session_id,
            "u": USER,
            "q": row["ordinal"],
            "w": fulltext.document(row["content"]),
        }
        for row in rows
    ]
    search_rows = [row for row in search_rows if row["w"]]
    async with db.write() as conn:
        document: Any = bindparam("w")
        title_document: Any = bindparam("w")
        if conn.dialect.name == "postgresql":
            document = func.to_tsvector(literal_column("'simple'::regconfig"), bindparam("w"))
            title_document = func.setweight(document, literal_column("'A'"))
        else:
            # SQLite's documents carry the owner's words too, as the write path stores them.
            for row in search_rows:
                row["w"] = fulltext.owned_document(row["w"], USER)
        await conn.execute(
            insert(chat_sessions).values(
                session_id=tree.session_id,
                user_id=USER,
                active=True,
                metadata={},
                created_at=first["created_at"],
                updated_at=rows[-1]["created_at"],
                title=title,
                last_message=make_preview(tree.leaf.content),
                message_count=tree.leaf.seq,
                pinned=False,
                current_leaf_id=tree.leaf.id,
                chosen_root_id=None,
                node_count=len(rows),
            )
        )
        await conn.execute(insert(chat_messages), rows)
        for entries, words in (
            ([r for r in search_rows if r["q"] == SEARCH_TITLE_SEQ], title_document),
            ([r for r in search_rows if r["q"] != SEARCH_TITLE_SEQ], document),
        ):
            await conn.execute(
                insert(chat_search).values(
                    session_id=bindparam("s"),
                    user_id=bindparam("u"),
                    seq=bindparam("q"),
                    document=words,
                ),
                entries,
            )
    return time.perf_counter() - started


async def check_tree(db: Database, tree: Tree) -> str:
    """Every stored message against the model; the current branch through the service."""
    async with db.read() as conn:
        stored = await message_queries.list_tree(conn, tree.session_id)
        previews = {
            row.id: row.branch_preview
            for row in await conn.execute(
                select(chat_messages.c.id, chat_messages.c.branch_preview).where(
                    chat_messages.c.session_id == tree.session_id
                )
            )
        }
        session = (
            await conn.execute(
                select(chat_sessions).where(chat_sessions.c.session_id == tree.session_id)
            )
        ).one()
    problems = []
    if [row["id"] for row in stored] != [node.id for node in tree.nodes]:
        problems.append("messages or their order")
    for row, node in zip(stored, tree.nodes, strict=False):
        if (row["parent_id"], row["seq"], row["ordinal"]) != (
            node.parent_id,
            node.seq,
            node.ordinal,
        ):
            problems.append(f"message {node.ordinal}: parent, seq or ordinal")
            break
        if previews[node.id] != make_preview(node.content):
            problems.append(f"message {node.ordinal}: branch_preview")
            break
    if (session.node_count, session.message_count, session.current_leaf_id) != (
        len(tree.nodes),
        tree.leaf.seq,
        tree.leaf.id,
    ):
        problems.append("session counters or current leaf")
    detail = await session_service.get_session(db, Caller.open_mode(), tree.session_id)
    if [m.id for m in detail.messages] != [node.id for node in tree.branch]:
        problems.append("current branch read through the service")
    if detail.last_message != make_preview(tree.leaf.content):
        problems.append("last_message")
    if problems:
        raise RuntimeError(f"session {tree.session_id}: " + "; ".join(problems))
    forks = sum(1 for row in stored if len(row["sibling_ids"]) > 1) // 2
    return (
        f"{len(stored):,} messages, current branch {len(detail.messages):,} "
        f"(message_count {detail.message_count:,}), {forks} forks: checked"
    )


async def check_background(db: Database, session_ids: list[str]) -> int:
    """Background sessions (`bench.data`): each message's branch preview is its own preview,
    and the current branch read through the service is the session's count."""
    checked = 0
    for session_id in session_ids:
        detail = await session_service.get_session(db, Caller.open_mode(), session_id)
        async with db.read() as conn:
            rows = list(
                await conn.execute(
                    select(chat_messages.c.content, chat_messages.c.branch_preview).where(
                        chat_messages.c.session_id == session_id
                    )
                )
            )
        if len(detail.messages) != detail.message_count or any(
            row.branch_preview != make_preview(row.content) for row in rows
        ):
            raise RuntimeError(f"background session {session_id}: branch or branch_preview")
        checked += 1
    return checked


# --- Measuring -------------------------------------------------------------------------------


@dataclass
class Pair:
    """One operation's latencies (seconds) on both sessions."""

    label: str
    straight: list[float] = field(default_factory=list)
    forked: list[float] = field(default_factory=list)
    target: bool = True  # one of issue 13's three operations

    def ratio(self, p: float) -> float:
        return percentile(self.forked, p) / percentile(self.straight, p)


Op = Callable[[Tree, int], Awaitable[None]]


async def alternate(
    pair: Pair, op: Op, straight: Tree, forked: Tree, *, repeat: int, warmup: int
) -> Pair:
    """`op` on each session in turn, the order swapped every repetition, after `warmup`."""
    for k in range(warmup + repeat):
        order = [(straight, pair.straight), (forked, pair.forked)]
        if k % 2:
            order.reverse()
        for tree, samples in order:
            before = time.perf_counter()
            await op(tree, k)
            elapsed = time.perf_counter() - before
            if k >= warmup:
                samples.append(elapsed)
    return pair


@dataclass
class WalkParts:
    """The switch's walk, its statements timed one by one (same transaction)."""

    down: Pair
    remember: Pair


async def measure(
    db: Database,
    client: httpx.AsyncClient,
    straight: Tree,
    forked: Tree,
    args: argparse.Namespace,
) -> list[Pair]:
    caller = Caller.open_mode()
    repeat, warmup = args.repeat, args.warmup
    pairs: list[Pair] = []

    async def open_newest(tree: Tree, _k: int) -> None:
        detail = await session_service.get_session(db, caller, tree.session_id, limit=PAGE)
        assert len(detail.messages) == PAGE

    print("  open: newest 50 of the current branch", flush=True)
    pairs.append(
        await alternate(
            Pair("open newest 50 (get_session)"),
            open_newest,
            straight,
            forked,
            repeat=repeat,
            warmup=warmup,
        )
    )

    async def switch(tree: Tree, k: int) -> None:
        target, steps = tree.targets[k % 2]
        detail = await switch_branch(db, caller, tree.session_id, target.id, limit=PAGE)
        assert detail.message_count == target.seq + steps, (detail.message_count, target.seq)

    print("  switch: two deep targets in turn", flush=True)
    pairs.append(
        await alternate(
            Pair("switch branch (switch_branch, limit 50)"),
            switch,
            straight,
            forked,
            repeat=repeat,
            warmup=warmup,
        )
    )

    walk = WalkParts(
        Pair("  walk down (branch_end_below)", target=False),
        Pair("  remember the path (remember_branch)", target=False),
    )

    async def walk_only(tree: Tree, k: int) -> None:
        target, _ = tree.targets[k % 2]
        async with db.write() as conn:
            await session_queries.lock_session(conn, tree.session_id, owner=None)
            before = time.perf_counter()
            leaf = await message_queries.branch_end_below(
                conn, session_id=tree.session_id, message_id=target.id
            )
            middle = time.perf_counter()
            await message_queries.remember_branch(conn, session_id=tree.session_id, leaf_id=leaf.id)
            after = time.perf_counter()
            await message_queries.end_current_branch_at(conn, session_id=tree.session_id, leaf=leaf)
        if k >= warmup:
            side = "straight" if tree is straight else "forked"
            getattr(walk.down, side).append(middle - before)
            getattr(walk.remember, side).append(after - middle)

    print("  switch: the walk alone, statement by statement", flush=True)
    await alternate(Pair("walk"), walk_only, straight, forked, repeat=repeat, warmup=warmup)
    pairs += [walk.down, walk.remember]

    # Back to the main branch (the forks left as they were remembered), for the appends.
    for tree in (straight, forked):
        detail = await switch_branch(db, caller, tree.session_id, tree.leaf.id, limit=PAGE)
        assert detail.messages[-1].id == tree.leaf.id

    async def append_service(tree: Tree, k: int) -> None:
        accepted = await message_service.accept_user_message(
            db,
            caller,
            ChatRequest(message=APPEND_TEXTS[k % len(APPEND_TEXTS)], session_id=tree.session_id),
            history_max_messages=PAGE,
        )
        await message_service.save_message(
            db,
            session_id=tree.session_id,
            role="assistant",
            content="An answer to " + APPEND_TEXTS[k % len(APPEND_TEXTS)],
            metadata=reply_metadata(
                provider="echo", model="echo-1", status="complete", timer=ReplyTimer()
            ),
        )
        assert accepted.message.parent_id is not None

    print("  append: service (a message and its reply)", flush=True)
    pairs.append(
        await alternate(
            Pair("append, service (message + reply)"),
            append_service,
            straight,
            forked,
            repeat=repeat,
            warmup=warmup,
        )
    )

    async def append_http(tree: Tree, k: int) -> None:
        body = {"message": APPEND_TEXTS[k % len(APPEND_TEXTS)], "session_id": tree.session_id}
        response = await client.post(CHAT, json=body)
        if response.status_code != 200:
            raise RuntimeError(f"POST {CHAT} -> {response.status_code}: {response.text}")

    print("  append: POST /api/v1/chat (in-process ASGI)", flush=True)
    pairs.append(
        await alternate(
            Pair("append, POST /api/v1/chat (ASGI)"),
            append_http,
            straight,
            forked,
            repeat=repeat,
            warmup=warmup,
        )
    )
    return pairs


async def explain_switch(
    database: str, url: str, db: Database, recorder: Recorder, trees: Sequence[Tree]
) -> list[str]:
    """The statements of one switch on each session (to its first target), recorded from the
    service's own code, each with its plan: `EXPLAIN (ANALYZE, BUFFERS)` on PostgreSQL (reads
    only: an UPDATE would be run), `EXPLAIN QUERY PLAN` and the best of three runs on SQLite.
    The session is switched back to its leaf afterwards."""
    raw: RawPostgres | RawSqlite = (
        RawPostgres(url) if database == "postgresql" else RawSqlite(str(make_url(url).database))
    )
    lines: list[str] = []
    try:
        for tree in trees:
            target, _ = tree.targets[0]
            with recorder.capture() as log:
                await switch_branch(db, Caller.open_mode(), tree.session_id, target.id, limit=PAGE)
            lines.append(f"  {tree.session_id}: switch to seq {target.seq}")
            # Explained on the switched session (the page walks up from its current leaf).
            for statement in queries_of(log):
                words = " ".join(statement.sql.split())
                if words.upper().startswith(("SELECT", "WITH")):
                    plan = await raw.explain(statement)
                else:
                    plan = "(a write: not explained)"
                lines.append(f"    {words[:110]}")
                lines.append(f"      {plan}")
            await switch_branch(db, Caller.open_mode(), tree.session_id, tree.leaf.id, limit=PAGE)
    finally:
        await raw.close()
    return lines


# --- Report ----------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:7.2f}"


def report(database: str, pairs: Sequence[Pair], repeat: int) -> list[str]:
    high = 99 if repeat >= 100 else 95
    lines = [
        f"[{database}] ms over {repeat} repetitions each; x = forked / straight",
        f"  {'operation':<42} {'straight p50':>12} {'p95':>7} {'p' + str(high):>7} | "
        f"{'forked p50':>10} {'p95':>7} {'p' + str(high):>7} | {'x p50':>6} {'x p95':>6}",
    ]
    for pair in pairs:
        verdict = ""
        if pair.target:
            verdict = "PASS" if pair.ratio(50) <= TARGET else "FAIL"
            verdict = f"  {verdict} (p50 within {TARGET}x)"
        lines.append(
            f"  {pair.label:<42} {_ms(percentile(pair.straight, 50)):>12} "
            f"{_ms(percentile(pair.straight, 95))} {_ms(percentile(pair.straight, high))} | "
            f"{_ms(percentile(pair.forked, 50)):>10} {_ms(percentile(pair.forked, 95))} "
            f"{_ms(percentile(pair.forked, high))} | {pair.ratio(50):5.2f}x {pair.ratio(95):5.2f}x"
            f"{verdict}"
        )
    return lines


# --- Main ------------------------------------------------------------------------------------


async def run_database(database: str, plan: Plan, args: argparse.Namespace) -> list[str]:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-tree-") as tmp:
        async with fresh_database(database, Path(tmp), args.postgres_url) as url:
            sqlite_path = Path(str(make_url(url).database)) if database == "sqlite" else None
            print(
                f"\n[{database}] background: {len(plan.ids):,} sessions, "
                f"{plan.messages:,} messages (bench.data)",
                flush=True,
            )
            data = await load(database, url, sqlite_path, plan)
            print(f"  loaded in {data.load_seconds:.1f} s", flush=True)
            settings = Settings(
                _env_file=None,
                database_url=url,
                migrate_on_startup=False,
                assistant_provider="echo",
                assistant_stream_delay_ms=0,
                log_level="WARNING",
            )
            app = create_app(settings)
            transport = httpx.ASGITransport(app=app)
            async with (
                app.router.lifespan_context(app),
                httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client,
            ):
                db: Database = app.state.database
                rng = random.Random(args.seed)
                straight = straight_tree("bench-tree-straight", args.messages, rng, plan.texts)
                forked = forked_tree(
                    "bench-tree-forked", args.messages, args.forks, rng, plan.texts
                )
                match_targets(straight, forked)
                start = plan.now - timedelta(days=3)
                for tree in (straight, forked):
                    seconds = await load_tree(db, tree, start)
                    print(f"  {tree.session_id}: written in {seconds:.1f} s", flush=True)
                if database == "postgresql":
                    async with db.write() as conn:
                        for table in ("chat_sessions", "chat_messages", "chat_search"):
                            await conn.execute(text(f"ANALYZE {table}"))
                for tree in (straight, forked):
                    print(f"  {tree.session_id}: {await check_tree(db, tree)}", flush=True)
                checked = await check_background(db, data.short_session_ids[:50])
                print(
                    f"  {checked} background sessions checked (branch, branch_preview)", flush=True
                )
                for tree in (straight, forked):
                    where = ", ".join(
                        f"seq {node.seq} ({steps} steps down)" for node, steps in tree.targets
                    )
                    print(f"  {tree.session_id}: switch targets at {where}", flush=True)
                if args.explain:
                    recorder = Recorder(db.engine)
                    plans = await explain_switch(database, url, db, recorder, [straight, forked])
                    print("\n".join(plans), flush=True)
                pairs = await measure(db, client, straight, forked, args)
    lines = report(database, pairs, args.repeat)
    print("\n".join(lines), flush=True)
    print(f"[{database}] done in {time.perf_counter() - started:.0f} s", flush=True)
    return lines


async def run(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    cpu = machine()["cpu"]
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M UTC}; {os.cpu_count()} CPUs ({cpu}); "
        f"Python {platform.python_version()}; SQLite {sqlite3.sqlite_version}",
        flush=True,
    )
    length, depths = fork_plan(args.messages, args.forks)
    edits = sum(1 for kind in depths.values() if kind == "edit")
    print(
        f"straight session: {args.messages:,} messages; forked session: {args.messages:,} "
        f"messages, {len(depths)} forks ({edits} edits with {EDIT_SUBTREE}-message subtrees, "
        f"{len(depths) - edits} regenerations with {REGENERATION_SUBTREE}), current branch "
        f"{length:,}, forks at seq {min(depths)} to {max(depths)}",
        flush=True,
    )
    plan = make_plan(
        DataSpec(
            sessions=args.background_sessions,
            users=max(1, args.background_sessions // 25),
            messages_per_session=10,
            long_sessions=0,
            seed=args.seed,
        )
    )
    reports: list[str] = []
    for database in args.database:
        reports += ["", *await run_database(database, plan, args)]
    print("\n" + "=" * 100 + "\n" + "\n".join(reports))
    print(f"\nwhole run: {time.perf_counter() - started:.0f} s", flush=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.tree",
        description="Issue 13: appending, switching branch and opening the newest 50 messages "
        "of a session with forks, against the same on a straight session.",
    )
    add = parser.add_argument
    add(
        "--database",
        choices=["sqlite", "postgresql"],
        action="append",
        help="repeat for both (default: postgresql, then sqlite)",
    )
    add("--messages", type=int, default=5_000, help="messages of each session (5,000)")
    add("--forks", type=int, default=100, help="forks of the forked session (100)")
    add("--repeat", type=int, default=200, help="measured repetitions per operation (200)")
    add("--warmup", type=int, default=20, help="unmeasured repetitions first (20)")
    add(
        "--background-sessions",
        type=int,
        default=5_000,
        help="ordinary sessions around them (bench.data, ~10 messages each; 5,000)",
    )
    add("--seed", type=int, default=13, help="random seed")
    add(
        "--explain",
        action="store_true",
        help="print the plans of one switch's statements on each session before measuring",
    )
    add(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="PostgreSQL server to create the scratch database on (env BENCH_POSTGRES_URL)",
    )
    args = parser.parse_args(argv)
    args.database = args.database or ["postgresql", "sqlite"]
    if args.repeat < 20 or args.warmup < 0 or args.background_sessions < 1_000:
        parser.error("--repeat >= 20, --warmup >= 0, --background-sessions >= 1000")
    try:
        fork_plan(args.messages, args.forks)
    except ValueError as error:
        parser.error(str(error))
    return args


def main() -> None:
    # The loop `python -m app` gets from uvicorn (uvloop), as bench.request_overhead.
    uvloop.run(run(parse_args()))


if __name__ == "__main__":
    main()
