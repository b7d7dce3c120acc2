"""Sidebar at scale: the sessions list, opening a session and appending messages, on a million
sessions, against their floors, on PostgreSQL and SQLite.

For each database: load a realistic data set into a fresh migrated database (`bench.data`),
start the real service on it (`python -m app`, open mode, echo assistant), and drive it over
HTTP with concurrent httpx clients. Each request kind is measured beside its floor, in the same
run and at the same concurrency: the very statements the service sends for it (recorded from
the service's own code, `bench.sqlcapture`) replayed through the bare driver (asyncpg or
sqlite3), plus `GET /healthz` (the same framework and server, no database). The ratio is
API / (raw SQL + healthz).

Then, one client at a time: latency against page depth (offset vs cursor), and against data
size (smaller loads of the same shape); and, in-process, the seed's write algorithm beside
ours (`bench.writes`). Charts go to docs/ (matplotlib, PNG).

Run: `python -m bench.sidebar [--sessions 1000000] [--database postgresql] ...` (see --help).
"""

import argparse
import asyncio
import contextlib
import functools
import json
import math
import os
import platform
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx
from pydantic import TypeAdapter
from sqlalchemy import Text, cast, func, literal_column, select
from sqlalchemy.engine import make_url

from app.assistants.echo import EchoAssistant
from app.auth.access import Caller
from app.config import PROJECT_ROOT, Settings
from app.kit.db.engine import Database, create_engine
from app.kit.db.tables import SEARCH_TITLE_SEQ, chat_messages, chat_search, chat_sessions
from app.kit.text import make_preview, make_title
from app.messages import service as message_service
from app.messages.schemas import ChatRequest
from app.replies.metadata import ReplyTimer, reply_metadata
from app.search import fulltext
from app.search import queries as search_queries
from app.search import service as search_service
from app.sessions import queries as session_queries
from app.sessions import service as session_service
from app.sessions.cursor import decode_cursor, encode_cursor
from app.sessions.queries import ListPosition, SessionFilter
from app.sessions.schemas import SessionDetail, SessionsListResponse
from bench import writes
from bench.data import Dataset, DataSpec, Plan, load, make_plan
from bench.sqlcapture import (
    Recorder,
    Statement,
    WriteTemplate,
    queries_of,
    read_postgresql,
    read_sqlite,
    write_postgresql,
    write_sqlite,
)
from bench.stream_relay import free_port, fresh_database, percentile, run_process
from bench.texts import COMMON_WORD, PREFIX, TWO_WORDS, Search
from bench.writes import WriteRun

LIST = "/api/v1/chat/sessions"
CHAT = "/api/v1/chat"
PAGE = 50
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
REQUEST_TIMEOUT = 300.0
# A request kind whose first request takes longer is reported with that one figure and not
# measured further: at 8 clients it would hold up the run for minutes (or hours).
SLOW_REQUEST = 5.0
PROBE_TIMEOUT = 60.0  # no answer by then: the kind is reported as such (the server may still
# be working on it, which then slows what is measured after it: the report says so)
CAPTURE_SECONDS = 10.0  # recording a kind's statements (one service call per request) stops here
APPEND_TEXTS = [
    "Can I change the currency of an invoice after it was sent?",
    "Why was this payout delayed until tomorrow morning?",
    "How do I rotate the webhook signing secret without downtime?",
    "Does the sandbox support partial refunds on card payments?",
]
SEARCH_PAGE = 20  # what a search box shows at once
# Scrolling typical users' lists: random users with more than one page, and each one's pages
# after the first, by cursor, up to TYPICAL_PAGES (the biggest user's deep pages are cases of
# their own). Their second page once took 25x their first (issue 12).
TYPICAL_USERS = 200
TYPICAL_PAGES = 10


# --- Measuring -------------------------------------------------------------------------------


@dataclass
class Measurement:
    """Latencies (seconds) of the requests that started in the measured window."""

    latencies: list[float]
    seconds: float  # the measured window, to the last completion

    @property
    def n(self) -> int:
        return len(self.latencies)

    @property
    def p50(self) -> float:
        return percentile(self.latencies, 50) if self.latencies else math.nan

    @property
    def p99(self) -> float:
        return percentile(self.latencies, 99) if self.latencies else math.nan

    @property
    def rate(self) -> float:
        return self.n / self.seconds if self.seconds > 0 else math.nan

    def summary(self) -> dict[str, float]:
        return {
            "n": self.n,
            "p50_ms": self.p50 * 1000,
            "p99_ms": self.p99 * 1000,
            "mean_ms": statistics.fmean(self.latencies) * 1000 if self.latencies else math.nan,
            "per_second": self.rate,
        }


@dataclass(frozen=True)
class Load:
    """How hard and how long to drive one measurement."""

    concurrency: int
    duration: float  # seconds measured, after `warmup`
    warmup: float
    max_requests: int | None = None  # stop early after this many measured requests


async def drive(op: Callable[[int, int], Awaitable[None]], load_: Load) -> Measurement:
    """`concurrency` tasks calling op(worker, k) back to back; requests started during the
    warm-up are not counted, and each task makes at least one counted request (slow ones)."""
    started = time.perf_counter()
    measure_from = started + load_.warmup
    stop = measure_from + load_.duration
    latencies: list[float] = []

    async def worker(w: int) -> None:
        k = counted = 0
        while True:
            begun = time.perf_counter()
            if counted and (
                begun >= stop or (load_.max_requests and len(latencies) >= load_.max_requests)
            ):
                return
            await op(w, k)
            k += 1
            if begun >= measure_from:
                latencies.append(time.perf_counter() - begun)
                counted += 1

    await asyncio.gather(*(worker(w) for w in range(load_.concurrency)))
    return Measurement(latencies, time.perf_counter() - measure_from)


def drive_threads(
    connect: Callable[[], sqlite3.Connection],
    op: Callable[[sqlite3.Connection, int, int], None],
    load_: Load,
) -> Measurement:
    """As `drive`, with threads, each with its own connection (sqlite3 is synchronous)."""
    connections = [connect() for _ in range(load_.concurrency)]
    started = time.perf_counter()
    measure_from = started + load_.warmup
    stop = measure_from + load_.duration
    latencies: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(w: int) -> None:
        k = counted = 0
        try:
            while True:
                begun = time.perf_counter()
                if counted and (
                    begun >= stop or (load_.max_requests and len(latencies) >= load_.max_requests)
                ):
                    return
                op(connections[w], w, k)
                k += 1
                if begun >= measure_from:
                    counted += 1
                    with lock:
                        latencies.append(time.perf_counter() - begun)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(load_.concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - measure_from
    for conn in connections:
        conn.close()
    if errors:
        raise errors[0]
    return Measurement(latencies, elapsed)


# --- Raw drivers: the floor ------------------------------------------------------------------


class RawPostgres:
    """The floor on PostgreSQL: asyncpg connections, one per concurrent client."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._connections: list[Any] = []

    async def connections(self, count: int) -> list[Any]:
        while len(self._connections) < count:
            self._connections.append(await asyncpg.connect(self.url, timeout=30))
        return self._connections[:count]

    async def close(self) -> None:
        for conn in self._connections:
            await conn.close()
        self._connections = []

    async def reads(self, pick: Callable[[int, int], list[Statement]], load_: Load) -> Measurement:
        conns = await self.connections(load_.concurrency)

        async def op(w: int, k: int) -> None:
            await read_postgresql(conns[w], pick(w, k))

        return await drive(op, load_)

    async def writes(
        self, template: WriteTemplate, session_for: Callable[[int, int], str], load_: Load
    ) -> Measurement:
        conns = await self.connections(load_.concurrency)

        async def op(w: int, k: int) -> None:
            await write_postgresql(conns[w], template, session_for(w, k))

        return await drive(op, load_)

    async def explain(self, statement: Statement) -> str:
        conns = await self.connections(1)
        raw = await conns[0].fetchval(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement.sql, *statement.params
        )
        plan = json.loads(raw)[0]
        return f"{plan['Execution Time']:.2f} ms: {_plan_nodes(plan['Plan'])}"


def _plan_nodes(node: dict[str, Any]) -> str:
    """A PostgreSQL plan, one line: node (index) [rows, buffers] > child > ..."""
    name = node["Node Type"]
    if "Index Name" in node:
        name += f" using {node['Index Name']}"
    details = [f"rows {node.get('Actual Rows', 0):,}"]
    if node.get("Heap Fetches"):
        details.append(f"heap fetches {node['Heap Fetches']:,}")
    blocks = node.get("Shared Hit Blocks", 0) + node.get("Shared Read Blocks", 0)
    if blocks:
        details.append(f"buffers {blocks:,}")
    if "Sort Method" in node:
        details.append(node["Sort Method"])
    text = f"{name} [{', '.join(details)}]"
    children = node.get("Plans", [])
    if children:
        text += " > " + " + ".join(_plan_nodes(child) for child in children)
    return text


class RawSqlite:
    """The floor on SQLite: sqlite3 connections in threads, set up as the service's are."""

    def __init__(self, path: str) -> None:
        self.path = path

    def connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    async def close(self) -> None:
        return None

    async def reads(self, pick: Callable[[int, int], list[Statement]], load_: Load) -> Measurement:
        def op(conn: sqlite3.Connection, w: int, k: int) -> None:
            read_sqlite(conn, pick(w, k))

        return await asyncio.to_thread(drive_threads, self.connect, op, load_)

    async def writes(
        self, template: WriteTemplate, session_for: Callable[[int, int], str], load_: Load
    ) -> Measurement:
        def op(conn: sqlite3.Connection, w: int, k: int) -> None:
            write_sqlite(conn, template, session_for(w, k))

        return await asyncio.to_thread(drive_threads, self.connect, op, load_)

    async def explain(self, statement: Statement) -> str:
        def run() -> str:
            conn = self.connect()
            try:
                plan = conn.execute("EXPLAIN QUERY PLAN " + statement.sql, statement.params)
                details = " / ".join(row[3] for row in plan.fetchall())
                best = math.inf
                for _ in range(3):
                    started = time.perf_counter()
                    conn.execute(statement.sql, statement.params).fetchall()
                    best = min(best, time.perf_counter() - started)
                    if best > 1:  # slow enough to be seen in one run
                        break
            finally:
                conn.close()
            return f"{best * 1000:.2f} ms: {details}"

        return await asyncio.to_thread(run)


Raw = RawPostgres | RawSqlite


# --- Requests, as HTTP and as the service call behind it -------------------------------------


@dataclass(frozen=True)
class ListRequest:
    user_id: str | None = None
    page: int = 1
    limit: int | None = None  # cursor mode
    cursor: str | None = None
    include_total: bool = True
    q: str | None = None  # search

    def path(self) -> str:
        query: dict[str, str] = {}
        if self.user_id is not None:
            query["user_id"] = self.user_id
        if self.limit is None:
            query["page"] = str(self.page)
            query["page_size"] = str(PAGE)
        else:
            query["limit"] = str(self.limit)
            if self.cursor is not None:
                query["cursor"] = self.cursor
        if not self.include_total:
            query["include_total"] = "false"
        if self.q is not None:
            query["q"] = self.q
        return f"{LIST}?{urlencode(query)}"

    async def call(self, db: Database) -> Any:
        return await session_service.get_sessions_list(
            db,
            Caller.open_mode(),
            user_id=self.user_id,
            page=self.page,
            page_size=PAGE,
            cursor=decode_cursor(self.cursor) if self.cursor else None,
            limit=self.limit,
            include_total=self.include_total,
            query=self.q,
        )


@dataclass(frozen=True)
class OpenRequest:
    session_id: str
    limit: int | None = None

    def path(self) -> str:
        suffix = f"?limit={self.limit}" if self.limit is not None else ""
        return f"{LIST}/{self.session_id}{suffix}"

    async def call(self, db: Database) -> Any:
        return await session_service.get_session(
            db, Caller.open_mode(), self.session_id, limit=self.limit
        )


Request = ListRequest | OpenRequest


@dataclass
class CaseResult:
    concurrency: int
    key: str
    label: str
    api: Measurement
    floor: Measurement | None
    health: Measurement | None  # GET /healthz at the same concurrency
    messages_per_request: int = 0  # appends: messages stored per request
    note: str = ""

    def ratio(self, p: int) -> float:
        if self.floor is None or self.health is None:
            return math.nan
        floor = percentile(self.floor.latencies, p) + percentile(self.health.latencies, p)
        return percentile(self.api.latencies, p) / floor

    def as_json(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "key": self.key,
            "label": self.label,
            "api": self.api.summary(),
            "floor_sql": self.floor.summary() if self.floor else None,
            "ratio_p50": self.ratio(50),
            "ratio_p99": self.ratio(99),
            "messages_per_request": self.messages_per_request,
            "note": self.note,
        }


@dataclass
class Bench:
    """One database under test: the loaded data, the running service, the floor."""

    database: str
    data: Dataset
    db: Database  # in-process, for recording the service's SQL and the write comparison
    recorder: Recorder
    client: httpx.AsyncClient
    raw: Raw
    _scroll: "Scroll | None" = None

    async def scroll(self) -> "Scroll":
        """Typical users' scrolling (computed once: it costs a query per page)."""
        if self._scroll is None:
            self._scroll = await typical_scroll(self.db, self.data)
        return self._scroll

    async def capture(self, request: Request) -> list[Statement]:
        with self.recorder.capture() as log:
            await request.call(self.db)
        return queries_of(log)

    async def http_get(self, paths: Sequence[str], load_: Load) -> Measurement:
        async def op(w: int, k: int) -> None:
            response = await self.client.get(paths[(w + k * load_.concurrency) % len(paths)])
            if response.status_code != 200:
                raise RuntimeError(f"GET {response.url} -> {response.status_code}")
            await response.aread()

        return await drive(op, load_)

    async def read_case(
        self,
        key: str,
        label: str,
        requests: Sequence[Request],
        load_: Load,
        health: Measurement | None,
    ) -> CaseResult:
        paths = [request.path() for request in requests]
        probe = await self.probe(paths[0])
        if probe > SLOW_REQUEST:
            took = (
                f"took {probe:.1f} s (> {SLOW_REQUEST:g} s)"
                if probe < PROBE_TIMEOUT
                else f"had no answer in {PROBE_TIMEOUT:g} s: what follows may be slowed by it"
            )
            result = CaseResult(
                load_.concurrency,
                key,
                label,
                Measurement([probe], probe),
                None,
                health,
                note=f"not measured: one request {took}",
            )
            print(f"  {_row(result)}\n    {result.note}", flush=True)
            return result
        statements = await self.capture_some(requests)
        paths = paths[: len(statements)]  # API and floor over the same requests
        api = await self.http_get(paths, load_)
        floor = await self.raw.reads(
            lambda w, k: statements[(w + k * load_.concurrency) % len(statements)], load_
        )
        note = ""
        if len(statements) < len(requests):
            note = f"only the first {len(statements)} of {len(requests)} requests (slow to record)"
        result = CaseResult(load_.concurrency, key, label, api, floor, health, note=note)
        print(f"  {_row(result)}" + (f"\n    {note}" if note else ""), flush=True)
        return result

    async def capture_some(self, requests: Sequence[Request]) -> list[list[Statement]]:
        """The statements of each request, or of the first ones recorded in CAPTURE_SECONDS
        (each takes one call of the service function)."""
        statements: list[list[Statement]] = []
        deadline = time.perf_counter() + CAPTURE_SECONDS
        for request in requests:
            if statements and time.perf_counter() > deadline:
                break
            statements.append(await self.capture(request))
        return statements

    async def probe(self, path: str) -> float:
        """One request, timed (seconds); PROBE_TIMEOUT if it had no answer by then."""
        started = time.perf_counter()
        try:
            response = await self.client.get(path, timeout=PROBE_TIMEOUT)
        except httpx.TimeoutException:
            return PROBE_TIMEOUT
        if response.status_code != 200:
            raise RuntimeError(f"GET {response.url} -> {response.status_code}")
        return time.perf_counter() - started


async def cursor_at(db: Database, user_id: str | None, depth: int) -> str:
    """The cursor of the session at position `depth` (1-based) of a list, from SQL."""
    async with db.read() as conn:
        rows = await session_queries.list_session_summaries(
            conn, where=SessionFilter(user_id, False), limit=1, offset=depth - 1
        )
    row = rows[0]
    return encode_cursor(ListPosition(row["pinned"], row["updated_at"], row["id"]))


def offset_page(user_id: str | None, depth: int) -> ListRequest:
    return ListRequest(user_id=user_id, page=depth // PAGE + 1, include_total=False)


async def cursor_page(db: Database, user_id: str | None, depth: int) -> ListRequest:
    if depth == 0:
        return ListRequest(user_id=user_id, limit=PAGE, include_total=False)
    cursor = await cursor_at(db, user_id, depth)
    return ListRequest(user_id=user_id, limit=PAGE, cursor=cursor, include_total=False)


@dataclass(frozen=True)
class Scroll:
    """Random users with more than one page of sessions, as the sidebar scrolls them: each
    one's first page, and its later pages (2..n) by cursor."""

    users: list[str]
    listed: list[int]  # each user's active sessions
    first: list[ListRequest]
    later: list[ListRequest]


async def typical_scroll(db: Database, data: Dataset) -> Scroll:
    """Up to TYPICAL_USERS of the random users who have a second page, with their pages."""
    users: list[str] = []
    counts: list[int] = []
    first: list[ListRequest] = []
    later: list[ListRequest] = []
    for user in dict.fromkeys(data.user_sample):
        if len(users) == TYPICAL_USERS:
            break
        async with db.read() as conn:
            listed = await session_queries.count_sessions(conn, where=SessionFilter(user, False))
        if listed <= PAGE:
            continue
        users.append(user)
        counts.append(listed)
        first.append(await cursor_page(db, user, 0))
        for depth in range(PAGE, min(listed, PAGE * (TYPICAL_PAGES + 1)), PAGE):
            later.append(await cursor_page(db, user, depth))
    return Scroll(users, counts, first, later)


def round_depth(value: float) -> int:
    return max(0, int(value) // PAGE * PAGE)


def deep_depth(active: int) -> int:
    """~500,000 on a million sessions; half the list on smaller ones."""
    return 500_000 if active > 550_000 else round_depth(active / 2)


# --- One database ----------------------------------------------------------------------------


@dataclass
class DatabaseResult:
    database: str
    data: Dataset
    server: str = ""
    cases: list[CaseResult] = field(default_factory=list)
    same_pages: dict[str, bool] = field(default_factory=dict)
    search_totals: dict[str, bool] = field(default_factory=dict)  # as counted from the plan
    search_entries_checked: int = 0
    depth: dict[str, dict[str, list[tuple[int, float]]]] = field(default_factory=dict)
    size: dict[str, tuple[float, float]] = field(default_factory=dict)  # metric: (api, sql) s
    plans: list[tuple[str, str]] = field(default_factory=list)
    breakdown: list[str] = field(default_factory=list)
    ranking: list[str] = field(default_factory=list)  # the ranking window, before and after
    writes: dict[str, WriteRun] = field(default_factory=dict)
    metadata_checked: int = 0
    seconds: float = 0.0


async def run_database(
    database: str, plan: Plan, args: argparse.Namespace, *, full: bool
) -> DatabaseResult:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-sidebar-") as tmp:
        workdir = Path(tmp)
        async with fresh_database(database, workdir, args.postgres_url) as url:
            sqlite_path = Path(str(make_url(url).database)) if database == "sqlite" else None
            print(
                f"\n[{database}] loading {len(plan.ids):,} sessions, {plan.messages:,} messages",
                flush=True,
            )
            data = await load(database, url, sqlite_path, plan)
            for step, seconds in data.load_steps:
                print(f"  {step:<40} {seconds:7.1f} s", flush=True)
            print(
                f"  loaded in {data.load_seconds:.1f} s; database {data.size_bytes / 1e9:.2f} GB",
                flush=True,
            )
            result = DatabaseResult(database, data)
            db = Database(create_engine(Settings(_env_file=None, database_url=url)))
            raw: Raw = RawPostgres(url) if database == "postgresql" else RawSqlite(str(sqlite_path))
            try:
                recorder = Recorder(db.engine)
                await db.ping()
                result.metadata_checked = await verify_metadata(
                    db, data.long_session_ids + data.short_session_ids[:50]
                )
                result.search_entries_checked = await verify_search_index(
                    db, data.short_session_ids[:100]
                )
                if isinstance(raw, RawPostgres):
                    conn = (await raw.connections(1))[0]
                    result.server = f"PostgreSQL {await conn.fetchval('SHOW server_version')}"
                else:
                    result.server = f"SQLite {sqlite3.sqlite_version}"
                await run_service(result, url, workdir, db, recorder, raw, args, full=full)
                if full:
                    await run_writes(result, db, recorder, raw, args)
                    touched = data.long_session_ids + data.short_session_ids
                    result.metadata_checked = await verify_metadata(db, touched)
                    print(
                        f"  metadata exact after the writes ({result.metadata_checked} sessions "
                        "checked: count, sequence, title, preview, last activity)",
                        flush=True,
                    )
            finally:
                await raw.close()
                await db.dispose()
    result.seconds = time.perf_counter() - started
    return result


async def run_service(
    result: DatabaseResult,
    url: str,
    workdir: Path,
    db: Database,
    recorder: Recorder,
    raw: Raw,
    args: argparse.Namespace,
    *,
    full: bool,
) -> None:
    port = free_port()
    env = {
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "DATABASE_URL": url,
        "MIGRATE_ON_STARTUP": "false",
        "ASSISTANT_PROVIDER": "echo",
        "ASSISTANT_STREAM_DELAY_MS": "0",
        "LOG_LEVEL": "WARNING",
        "SHUTDOWN_GRACE_SECONDS": "5",
    }
    most = max(args.concurrency)
    limits = httpx.Limits(max_connections=most, max_keepalive_connections=most)
    async with (
        run_process("service", ["-m", "app"], env, workdir, port, "/readyz") as service,
        httpx.AsyncClient(
            base_url=service.base_url, timeout=REQUEST_TIMEOUT, limits=limits
        ) as client,
    ):
        bench = Bench(result.database, result.data, db, recorder, client, raw)
        try:
            if full:
                levels = [Load(c, args.duration, args.warmup) for c in args.concurrency]
                health: dict[int, Measurement] = {}
                for load_ in levels:
                    health[load_.concurrency] = await measure_reads(
                        bench, result, load_, with_total=load_ is levels[0]
                    )
                await check_pages(bench, result)
                await check_search(bench, result)
                await compare_ranking(bench, result)
                await explain_plans(bench, result)
                await measure_breakdown(bench, result, args)
                await measure_profile(bench, result, args, depth_series=True)
                for load_ in levels:  # last: they change the data
                    await measure_appends(bench, result, load_, health[load_.concurrency])
            else:
                await measure_profile(bench, result, args, depth_series=False)
        except BaseException:
            code = service.process.returncode
            print(f"service exit status: {code}; its log ends:\n{service.log_tail()}", flush=True)
            raise


async def measure_reads(
    bench: Bench, result: DatabaseResult, load_: Load, *, with_total: bool
) -> Measurement:
    """Every read at one concurrency, beside its floor; returns the healthz measurement. The
    search with `total` only `with_total` (once per run is enough)."""
    data, db = bench.data, bench.db
    print(
        f"  measuring at concurrency {load_.concurrency}, {load_.duration:g} s each "
        f"(+{load_.warmup:g} s warm-up)",
        flush=True,
    )
    print(f"  {_header()}", flush=True)
    health = await bench.http_get(["/healthz"], load_)
    result.cases.append(
        CaseResult(
            load_.concurrency, "healthz", "GET /healthz (framework floor)", health, None, None
        )
    )
    print(f"  {_row(result.cases[-1])}", flush=True)

    big, big_n = data.biggest_user, data.biggest_user_sessions
    big_depth = round_depth(big_n * 0.9)
    deep = deep_depth(data.active_sessions)
    users = data.user_sample[:200]
    scroll = await bench.scroll()
    cases: list[tuple[str, str, list[Request]]] = [
        (
            "first_page_user",
            "list: first page, random user (with total)",
            [ListRequest(user_id=user) for user in users],
        ),
    ]
    if scroll.users:
        cases += [
            (
                "typical_first",
                f"list: {len(scroll.users)} users with pages 2+: first page",
                list(scroll.first),
            ),
            (
                "typical_cursor",
                f"list: the same: pages 2..n by cursor ({len(scroll.later)})",
                list(scroll.later),
            ),
        ]
    cases += [
        (
            "big_first",
            f"list: biggest user ({big_n:,}): first page",
            [ListRequest(user_id=big, include_total=False)],
        ),
        (
            "big_offset",
            f"list: biggest user: offset page at {big_depth:,}",
            [offset_page(big, big_depth)],
        ),
        (
            "big_cursor",
            f"list: biggest user: cursor page at {big_depth:,}",
            [await cursor_page(db, big, big_depth)],
        ),
        (
            "all_first",
            f"list: all users ({data.active_sessions:,}): first page",
            [ListRequest(include_total=False)],
        ),
        (
            "all_first_total",
            "list: all users: first page with total",
            [ListRequest()],
        ),
        (
            "all_offset",
            f"list: all users: offset page at {deep:,}",
            [offset_page(None, deep)],
        ),
        (
            "all_cursor",
            f"list: all users: cursor page at {deep:,}",
            [await cursor_page(db, None, deep)],
        ),
    ]
    for key, label, requests in cases + search_cases(data, with_total=with_total):
        result.cases.append(await bench.read_case(key, label, requests, load_, health))
    long_id = data.long_session_ids[0]
    for key, label, limit in (
        ("open_long_50", f"open a {bench_long(data)}-message session: newest 50", 50),
        ("open_long_all", f"open a {bench_long(data)}-message session: all messages", None),
    ):
        opens: list[Request] = [OpenRequest(sid, limit) for sid in data.long_session_ids]
        if limit is None:
            opens = [OpenRequest(long_id)]
        result.cases.append(await bench.read_case(key, label, opens, load_, health))
    return health


async def check_pages(bench: Bench, result: DatabaseResult) -> None:
    """Offset and cursor must return the very same page at the same depth."""
    data, db = bench.data, bench.db
    big, big_depth = data.biggest_user, round_depth(data.biggest_user_sessions * 0.9)
    deep = deep_depth(data.active_sessions)
    pages: list[tuple[str, str | None, int, int]] = [  # name, user, depth, sessions on the page
        ("biggest user", big, big_depth, PAGE),
        ("all users", None, deep, PAGE),
    ]
    scroll = await bench.scroll()
    if scroll.users:
        second = min(PAGE, scroll.listed[0] - PAGE)
        pages.append(("typical user, page 2", scroll.users[0], PAGE, second))
    for name, user, depth, size in pages:
        by_offset = (await bench.client.get(offset_page(user, depth).path())).json()
        by_cursor = (await bench.client.get((await cursor_page(db, user, depth)).path())).json()
        same = [s["session_id"] for s in by_offset["sessions"]] == [
            s["session_id"] for s in by_cursor["sessions"]
        ]
        result.same_pages[name] = same and len(by_offset["sessions"]) == size


def bench_long(data: Dataset) -> str:
    return f"{data.long_messages:,}"


def search_request(user_id: str, search: Search, *, include_total: bool = False) -> ListRequest:
    """A search as the sidebar's search box runs it: the first 20 results, no total."""
    return ListRequest(
        user_id=user_id, limit=SEARCH_PAGE, include_total=include_total, q=search.query
    )


def search_cases(data: Dataset, *, with_total: bool) -> list[tuple[str, str, list[Request]]]:
    """Each kind of search, over its users (who all have matches); with `with_total`, the
    common word also with `total`."""
    cases: list[tuple[str, str, list[Request]]] = []
    for search in data.searches:
        label = search.label
        if search.key == "search_common_big":
            label += f" ({len(search.expected[data.biggest_user]):,} matches)"
        cases.append((search.key, label, [search_request(user, search) for user in search.users]))
        if search.key == "search_common" and with_total:
            requests: list[Request] = [
                search_request(user, search, include_total=True) for user in search.users
            ]
            cases.append(("search_common_total", f"{label}, with total", requests))
    return cases


def slow_kinds(result: DatabaseResult) -> set[str]:
    """The request kinds not measured because one request took too long."""
    return {case.key for case in result.cases if case.note.startswith("not measured")}


async def check_search(bench: Bench, result: DatabaseResult) -> None:
    """Each search's `total`, for a few of its users, is what the plan says it must be, and
    its first page holds only sessions that the plan says match."""
    slow = slow_kinds(result)
    for search in bench.data.searches:
        if search.key in slow:
            continue  # one request of this kind took too long already
        same = True
        for user in search.users[:3]:
            request = search_request(user, search, include_total=True)
            response = await bench.client.get(request.path())
            body = response.json()
            found = {session["session_id"] for session in body["sessions"]}
            expected = search.expected[user]
            same = same and body["total"] == len(expected) and bool(found) and found <= expected
        result.search_totals[search.key] = same


RANKING_RUNS = 5


async def search_first_page(db: Database, user_id: str, q: str) -> tuple[float, list[Any]]:
    started = time.perf_counter()
    page = await search_service.search_sessions(
        db,
        SessionFilter(user_id, archived=False),
        query_words=fulltext.query_words(q),
        size=SEARCH_PAGE,
        page=1,
        cursor=None,
        include_total=False,
    )
    return time.perf_counter() - started, page.sessions


async def compare_ranking(bench: Bench, result: DatabaseResult) -> None:
    """The biggest user's first page of each search, ranked within the ranking window (as the
    service ranks, app/search/queries.py RANKING_WINDOW_ENTRIES) and over every match (as it
    ranked before): what the user sees, and what each costs (in process, one client, p50 of
    RANKING_RUNS after one run to warm the cache)."""
    db, user = bench.db, bench.data.biggest_user
    lines = result.ranking
    lines.append(
        f"Ranking window ({search_queries.RANKING_WINDOW_ENTRIES:,} entries), the biggest "
        "user's first page: within the "
        "window (now) | every match ranked (before)"
    )
    for q in (COMMON_WORD, TWO_WORDS, PREFIX):
        timings: dict[str, list[float]] = {"window": [], "every": []}
        pages: dict[str, list[Any]] = {}
        for _run in range(RANKING_RUNS + 1):
            for mode in ("window", "every"):
                if mode == "window":
                    seconds, pages[mode] = await search_first_page(db, user, q)
                else:
                    # Ranking every match: as for a user whose entries all fit in the window.
                    with _every_match_ranked():
                        seconds, pages[mode] = await search_first_page(db, user, q)
                timings[mode].append(seconds)
        now, before = pages["window"], pages["every"]
        shared = len({s.session_id for s in now} & {s.session_id for s in before})
        lines.append(
            f"  {q!r}: within the window {_ms(statistics.median(timings['window'][1:]))} ms, "
            f"every match {_ms(statistics.median(timings['every'][1:]))} ms (p50); "
            f"{shared} of {len(now)} sessions on both first pages"
        )
        for n, (a, b) in enumerate(zip(now[:10], before[:10], strict=False), start=1):
            lines.append(f"    {n:>2} {_ranked(a):<58} | {_ranked(b)}")
    print("\n".join(lines), flush=True)


@contextlib.contextmanager
def _every_match_ranked() -> Iterator[None]:
    """The search service as it was before the ranking window (migration 0016)."""
    owner_entries = search_queries.owner_entries

    async def no_window(conn: Any, user_id: str) -> search_queries.OwnerEntries:
        # Every block of the user's, no window.
        return search_queries.OwnerEntries((await owner_entries(conn, user_id)).last_block)

    search_queries.owner_entries = no_window
    try:
        yield
    finally:
        search_queries.owner_entries = owner_entries


def _ranked(summary: Any) -> str:
    """A result as the comparison prints it: last activity, title, where it matched."""
    where = "title" if summary.snippet is None else "message"
    return f"{summary.updated_at:%Y-%m-%d} {summary.title[:32]!r} ({where})"


async def verify_search_index(db: Database, session_ids: list[str]) -> int:
    """Each session's search entries are what the write path would have added: its title's
    and its messages' documents (`app.search.fulltext.document`; titles with weight A on
    PostgreSQL, the owner's words too on SQLite), one per text with words. Raises on the
    first difference."""
    postgres = db.engine.dialect.name == "postgresql"
    s, m = chat_search.c, chat_messages.c
    async with db.read() as conn:
        for session_id in session_ids:
            title = await conn.scalar(
                select(chat_sessions.c.title).where(chat_sessions.c.session_id == session_id)
            )
            texts = [(SEARCH_TITLE_SEQ, title or "")]
            texts += [
                (row.seq, row.content)
                for row in await conn.execute(
                    select(m.seq, m.content).where(m.session_id == session_id).order_by(m.seq)
                )
            ]
            owner = await conn.scalar(
                select(chat_sessions.c.user_id).where(chat_sessions.c.session_id == session_id)
            )
            expected: dict[int, str] = {}
            for seq, text in texts:
                words = fulltext.document(text)
                if not words:
                    continue
                if not postgres:
                    words = fulltext.owned_document(words, owner)
                if postgres:
                    vector: Any = func.to_tsvector(literal_column("'simple'::regconfig"), words)
                    if seq == SEARCH_TITLE_SEQ:
                        vector = func.setweight(vector, literal_column("'A'"))
                    words = str(await conn.scalar(select(cast(vector, Text))))
                expected[seq] = words
            document = cast(s.document, Text) if postgres else s.document
            rows = await conn.execute(
                select(s.seq, document).where(s.session_id == session_id).order_by(s.seq)
            )
            actual = {row[0]: row[1] for row in rows}
            if actual != expected:
                raise RuntimeError(f"session {session_id}: search entries {actual} != {expected}")
    return len(session_ids)


async def capture_chat(bench: Bench, session_id: str, text: str) -> WriteTemplate:
    """What POST /api/v1/chat sends to the database (echo assistant), recorded once."""
    caller = Caller.open_mode()
    with bench.recorder.capture() as log:
        accepted = await message_service.accept_user_message(
            bench.db,
            caller,
            ChatRequest(message=text, session_id=session_id),
            history_max_messages=50,
        )
        reply = EchoAssistant().compose(accepted.history)
        stored = await message_service.save_message(
            bench.db,
            session_id=session_id,
            role="assistant",
            content=reply,
            metadata=reply_metadata(
                provider="echo", model="echo-1", status="complete", timer=ReplyTimer()
            ),
        )
    return WriteTemplate(list(log), session_id, [accepted.message.seq, stored.seq])


async def measure_appends(
    bench: Bench, result: DatabaseResult, load_: Load, health: Measurement
) -> None:
    """POST /api/v1/chat into existing sessions: two messages stored per request."""
    data = bench.data
    print(f"  appends at concurrency {load_.concurrency}", flush=True)
    # Captured on a long session, so that its sequence numbers are unlike any other number
    # in the statements (the replay maps them to the numbers its own UPDATE returns).
    template = await capture_chat(bench, data.long_session_ids[-1], APPEND_TEXTS[0])
    for key, label, sessions in (
        ("append_short", "append: POST /chat to ~10-message sessions", data.short_session_ids),
        (
            "append_long",
            f"append: POST /chat to {bench_long(data)}-message sessions",
            data.long_session_ids[:-1],
        ),
    ):

        def session_for(w: int, k: int, sessions: list[str] = sessions) -> str:
            if len(sessions) >= load_.concurrency * 4:
                return sessions[(w + k * load_.concurrency) % len(sessions)]
            return sessions[w % len(sessions)]  # one long session per client

        async def op(w: int, k: int, session_for: Callable[[int, int], str] = session_for) -> None:
            body = {"message": APPEND_TEXTS[k % len(APPEND_TEXTS)], "session_id": session_for(w, k)}
            response = await bench.client.post(CHAT, json=body)
            if response.status_code != 200:
                raise RuntimeError(f"POST {CHAT} -> {response.status_code}: {response.text}")

        api = await drive(op, load_)
        floor = await bench.raw.writes(template, session_for, load_)
        case = CaseResult(load_.concurrency, key, label, api, floor, health, messages_per_request=2)
        result.cases.append(case)
        print(f"  {_row(case)}", flush=True)


async def measure_breakdown(bench: Bench, result: DatabaseResult, args: argparse.Namespace) -> None:
    """Where one request's time goes (one client, p50): over HTTP; and in this process, the
    service function (SQLAlchemy, rows to models), an empty read transaction (pool checkout,
    ping, BEGIN, COMMIT), the raw SQL, and the response's validation and JSON encoding as
    FastAPI does it (a TypeAdapter of the return type)."""
    data = bench.data
    requests: list[tuple[str, Request, Any]] = [
        (
            "biggest user, first page",
            ListRequest(user_id=data.biggest_user, include_total=False),
            SessionsListResponse,
        ),
        ("long session, newest 50", OpenRequest(data.long_session_ids[0], 50), SessionDetail),
        ("long session, all messages", OpenRequest(data.long_session_ids[0]), SessionDetail),
    ]
    if "search_common" not in slow_kinds(result):
        common = data.searches[0]
        requests.append(
            ("search, common word", search_request(common.users[0], common), SessionsListResponse)
        )
    one = Load(1, min(args.profile_seconds, 2.0), 0.2, args.profile_requests)
    health = (await bench.http_get(["/healthz"], one)).p50
    result.breakdown.append(
        "Where the time goes (one client, p50 ms): HTTP = the request over HTTP; healthz = HTTP "
        "and framework alone; service = the service function in-process; tx = an empty read "
        "transaction; SQL = the raw statements; encode = response validation + JSON"
    )
    for name, request, model in requests:
        adapter: TypeAdapter[Any] = TypeAdapter(model)
        statements = await bench.capture(request)
        api = (await bench.http_get([request.path()], one)).p50
        sql = (await bench.raw.reads(functools.partial(_same, statements), one)).p50
        service: list[float] = []
        empty: list[float] = []
        encode: list[float] = []
        deadline = time.perf_counter() + one.duration
        while len(service) < 2 or (
            len(service) < args.profile_requests and time.perf_counter() < deadline
        ):
            started = time.perf_counter()
            response = await request.call(bench.db)
            called = time.perf_counter()
            async with bench.db.read():
                pass
            emptied = time.perf_counter()
            adapter.dump_json(adapter.validate_python(response))
            service.append(called - started)
            empty.append(emptied - called)
            encode.append(time.perf_counter() - emptied)
        values = {
            "HTTP": api,
            "healthz": health,
            "service": statistics.median(service),
            "tx": statistics.median(empty),
            "SQL": sql,
            "encode": statistics.median(encode),
        }
        rest = api - health - values["service"] - values["encode"]
        result.breakdown.append(
            f"  {name:<28} "
            + "  ".join(f"{key} {value * 1000:.2f}" for key, value in values.items())
            + f"  (HTTP - healthz - service - encode: {rest * 1000:.2f})"
        )
    for line in result.breakdown:
        print(f"  {line}", flush=True)


def _same(statements: list[Statement], _w: int, _k: int) -> list[Statement]:
    return statements


async def explain_plans(bench: Bench, result: DatabaseResult) -> None:
    """The database's own account of the main statements (EXPLAIN ANALYZE / QUERY PLAN)."""
    data, db = bench.data, bench.db
    big, deep = data.biggest_user, deep_depth(data.active_sessions)
    big_depth = round_depth(data.biggest_user_sessions * 0.9)
    named: list[tuple[str, Request]] = [
        ("first page, random user", ListRequest(user_id=data.user_sample[0])),
        ("biggest user, first page", ListRequest(user_id=big, include_total=False)),
        (f"biggest user, offset {big_depth:,}", offset_page(big, big_depth)),
        (f"biggest user, cursor {big_depth:,}", await cursor_page(db, big, big_depth)),
        ("all users, first page with total", ListRequest()),
        (f"all users, offset {deep:,}", offset_page(None, deep)),
        (f"all users, cursor {deep:,}", await cursor_page(db, None, deep)),
        ("long session, newest 50", OpenRequest(data.long_session_ids[0], 50)),
        ("long session, all", OpenRequest(data.long_session_ids[0])),
    ]
    scroll = await bench.scroll()
    if scroll.users:
        named += [
            ("typical user, first page", scroll.first[0]),
            ("typical user, page 2 by cursor", scroll.later[0]),
        ]
    slow = slow_kinds(result)
    for search in data.searches:
        if search.key not in slow:
            named.append((search.label, search_request(search.users[0], search)))
    common = data.searches[0]
    if "search_common_total" not in slow:
        named.append(
            (
                f"{common.label}, with total",
                search_request(common.users[0], common, include_total=True),
            )
        )
    for name, request in named:
        for statement in await bench.capture(request):
            sql = statement.sql.lower()
            kind = "count" if "count(" in sql else "snippets" if "row_number(" in sql else "rows"
            result.plans.append((f"{name} ({kind})", await bench.raw.explain(statement)))


async def measure_profile(
    bench: Bench, result: DatabaseResult, args: argparse.Namespace, *, depth_series: bool
) -> None:
    """One client: latency against page depth, and the data-size metrics."""
    data, db = bench.data, bench.db
    one = Load(1, args.profile_seconds, 0.2, args.profile_requests)

    async def pair(requests: Sequence[Request]) -> tuple[float, float]:
        statements = await bench.capture_some(requests)
        paths = [request.path() for request in requests[: len(statements)]]
        api = await bench.http_get(paths, one)
        floor = await bench.raw.reads(lambda w, k: statements[k % len(statements)], one)
        return api.p50, floor.p50

    if depth_series:
        print(
            "  latency against depth (one client, p50 ms: offset API / cursor API / "
            "offset SQL / cursor SQL)",
            flush=True,
        )
        lists = {
            "all users": (None, data.active_sessions, args.depths),
            "biggest user": (data.biggest_user, data.biggest_user_sessions, args.user_depths),
        }
        for name, (user, size, depths) in lists.items():
            series: dict[str, list[tuple[int, float]]] = {
                "offset, API": [],
                "cursor, API": [],
                "offset, raw SQL": [],
                "cursor, raw SQL": [],
            }
            points = sorted({d for d in depths if d <= size - PAGE} | {round_depth(size - PAGE)})
            for depth in points:
                offset_api, offset_sql = await pair([offset_page(user, depth)])
                cursor_api, cursor_sql = await pair([await cursor_page(db, user, depth)])
                series["offset, API"].append((depth, offset_api * 1000))
                series["cursor, API"].append((depth, cursor_api * 1000))
                series["offset, raw SQL"].append((depth, offset_sql * 1000))
                series["cursor, raw SQL"].append((depth, cursor_sql * 1000))
                print(
                    f"    {name:<13} depth {depth:>9,}: {offset_api * 1000:8.2f} "
                    f"{cursor_api * 1000:8.2f} {offset_sql * 1000:8.2f} {cursor_sql * 1000:8.2f}",
                    flush=True,
                )
            result.depth[name] = series

    half = round_depth(data.active_sessions / 2)
    metrics: dict[str, list[Request]] = {
        "first page, random user (with total)": [
            ListRequest(user_id=user) for user in data.user_sample[:100]
        ],
        "all users, first page": [ListRequest(include_total=False)],
        "all users, offset page at half depth": [offset_page(None, half)],
        "all users, cursor page at half depth": [await cursor_page(db, None, half)],
        "open long session, newest 50": [OpenRequest(sid, 50) for sid in data.long_session_ids],
        "search, common word, random user": [
            search_request(user, data.searches[0]) for user in data.searches[0].users[:100]
        ],
    }
    print(f"  size metrics at {data.sessions:,} sessions (one client, p50 ms: API / SQL)")
    for metric, requests in metrics.items():
        result.size[metric] = await pair(requests)
        api, sql = result.size[metric]
        print(f"    {metric:<40} {api * 1000:8.2f} {sql * 1000:8.2f}", flush=True)


async def run_writes(
    result: DatabaseResult, db: Database, recorder: Recorder, raw: Raw, args: argparse.Namespace
) -> None:
    """The seed's write algorithm beside ours, in-process, one transaction per message."""
    data = result.data
    groups = {
        "long": data.long_session_ids,
        "short": data.short_session_ids[100:110],
    }
    for name, sessions in groups.items():
        if isinstance(raw, RawPostgres):
            conn: Any = (await raw.connections(1))[0]
        else:
            conn = raw.connect()
        try:
            run = await writes.compare(
                result.database, db, recorder, conn, sessions, args.write_messages, args.rounds
            )
        finally:
            if isinstance(conn, sqlite3.Connection):
                conn.close()
        result.writes[name] = run
        rates = write_rates(run)
        print(
            f"  writes, {name} sessions (>= {run.messages_before:,} messages): "
            + ", ".join(f"{key} {rate:,.0f} msg/s" for key, rate in rates.items()),
            flush=True,
        )


async def verify_metadata(db: Database, session_ids: list[str]) -> int:
    """Each session's metadata is what its messages say (count, last seq, title, preview,
    activity time). Raises on the first difference; returns how many were checked."""
    m = chat_messages.c
    async with db.read() as conn:
        for session_id in session_ids:
            session = (
                await conn.execute(
                    select(chat_sessions).where(chat_sessions.c.session_id == session_id)
                )
            ).one()
            count, last_seq, last_at = (
                await conn.execute(
                    select(func.count(), func.max(m.seq), func.max(m.created_at)).where(
                        m.session_id == session_id
                    )
                )
            ).one()
            first_user = await conn.scalar(
                select(m.content)
                .where(m.session_id == session_id, m.role == "user")
                .order_by(m.seq)
                .limit(1)
            )
            last = await conn.scalar(
                select(m.content).where(m.session_id == session_id).order_by(m.seq.desc()).limit(1)
            )
            title = make_title(first_user) if first_user is not None else None
            preview = make_preview(last) if last is not None else None
            expected = (count, count, title, preview)
            actual = (session.message_count, last_seq, session.title, session.last_message)
            if expected != actual:
                raise RuntimeError(f"session {session_id}: metadata {actual} != {expected}")
            last_at = last_at if isinstance(last_at, datetime) else None
            if last_at is not None and session.updated_at.replace(tzinfo=UTC) < last_at.replace(
                tzinfo=UTC
            ):
                raise RuntimeError(f"session {session_id}: updated_at before its last message")
    return len(session_ids)


# --- Report ----------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f}"


def _header() -> str:
    return (
        f"{'request':<50} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'per s':>8} | "
        f"{'SQL p50':>8} {'SQL p99':>8} {'per s':>8} | {'x p50':>6} {'x p99':>6}"
    )


def _row(case: CaseResult) -> str:
    api = case.api
    rate = api.rate * (case.messages_per_request or 1)
    text = f"{case.label:<50} {api.n:>6} {_ms(api.p50)} {_ms(api.p99)} {rate:>8,.0f} |"
    if case.floor is not None:
        floor_rate = case.floor.rate * (case.messages_per_request or 1)
        text += (
            f" {_ms(case.floor.p50)} {_ms(case.floor.p99)} {floor_rate:>8,.0f} |"
            f" {case.ratio(50):>5.2f}x {case.ratio(99):>5.2f}x"
        )
    return text


def report_database(result: DatabaseResult, args: argparse.Namespace) -> str:
    data = result.data
    lines = [
        f"Sidebar at scale: {result.server}, {data.sessions:,} sessions "
        f"({data.active_sessions:,} active) of {data.users:,} users, {data.messages:,} "
        f"messages ({len(data.long_session_ids)} sessions of {data.long_messages:,}); "
        f"loaded in {data.load_seconds:.0f} s ({data.size_bytes / 1e9:.1f} GB)",
        f"{args.duration:g} s per measurement (+{args.warmup:g} s warm-up). 'per s': "
        "requests/s (appends: messages/s). SQL: the same statements through the bare driver, "
        "same concurrency. x: API / (SQL + healthz).",
    ]
    for level in args.concurrency:
        lines += ["", f"Concurrency {level}:", _header()]
        for case in result.cases:
            if case.concurrency != level:
                continue
            lines.append(_row(case))
            if case.note:
                lines.append(f"    {case.note}")
    same = ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in result.same_pages.items())
    lines += ["", f"Offset and cursor pages at the same depth hold the same sessions: {same}"]
    if result.search_totals:
        totals = ", ".join(
            f"{k.removeprefix('search_')}: {'yes' if v else 'NO'}"
            for k, v in result.search_totals.items()
        )
        lines.append(
            f"Search totals as counted from the data set (3 users each): {totals}; search "
            f"entries as the write path makes them: {result.search_entries_checked} sessions"
        )
    for name, series in result.depth.items():
        lines += [
            "",
            f"Depth, {name} (one client, p50 ms):   depth   offset API   cursor API   "
            "offset SQL   cursor SQL",
        ]
        for index, (depth, offset_api) in enumerate(series["offset, API"]):
            row = [series[label][index][1] for label in list(series)[1:]]
            lines.append(
                f"{'':>36}{depth:>9,} {offset_api:>12.2f}"
                + "".join(f" {value:>12.2f}" for value in row)
            )
    if result.writes:
        lines += ["", *report_writes(result)]
    if result.metadata_checked:
        lines.append(
            f"Metadata exact after all writes: {result.metadata_checked} sessions checked "
            "(message_count = COUNT, last seq, title, preview, updated_at)."
        )
    if result.breakdown:
        lines += ["", *result.breakdown]
    if result.ranking:
        lines += ["", *result.ranking]
    if result.plans:
        lines += ["", "Plans (one execution, server-side time):"]
        lines += [f"  {name}: {plan}" for name, plan in result.plans]
    return "\n".join(lines)


def write_rates(run: WriteRun) -> dict[str, float]:
    return {key: len(values) / sum(values) for key, values in run.latencies.items()}


def report_writes(result: DatabaseResult) -> list[str]:
    lines = [
        "Appending messages in-process, one transaction per message (msg/s, p50 ms, p99 ms):",
        f"  {'variant':<40} {'long sessions':>26}   {'~10-message sessions':>26}",
    ]
    for key, label in writes.VARIANTS.items():
        cells = []
        for group in ("long", "short"):
            values = result.writes[group].latencies[key]
            cells.append(
                f"{len(values) / sum(values):>8,.0f} {percentile(values, 50) * 1000:>8.2f} "
                f"{percentile(values, 99) * 1000:>8.2f}"
            )
        lines.append(f"  {label:<40} {cells[0]:>26}   {cells[1]:>26}")
    for group in ("long", "short"):
        run = result.writes[group]
        rates = write_rates(run)
        lines.append(
            f"  ours / seed, {group} sessions (>= {run.messages_before:,} messages, "
            f"{len(run.sessions)} of them): service stack "
            f"{rates['ours_service'] / rates['seed_service']:.2f}x, raw driver "
            f"{rates['ours_raw'] / rates['seed_created_at']:.2f}x (seed on the ordinal index: "
            f"{rates['ours_raw'] / rates['seed_seq']:.2f}x); service code / seed raw "
            f"{rates['ours_service'] / rates['seed_created_at']:.2f}x"
        )
    return lines


def evaluate_targets(result: DatabaseResult, levels: Sequence[int], at_scale: bool) -> list[str]:
    """Each target of issue 5, with the figures it is judged on, and whether it is met."""
    lines = [f"Targets ({result.database}):"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    def at(level: int) -> dict[str, CaseResult]:
        return {case.key: case for case in result.cases if case.concurrency == level}

    # 1. Cursor pages at any depth within 1.5x of the first page.
    ratios: list[tuple[str, float]] = []
    for level in levels:
        cases = at(level)
        for first, deep, name in (
            ("typical_first", "typical_cursor", "typical users, pages 2..n"),
            ("big_first", "big_cursor", "biggest user"),
            ("all_first", "all_cursor", "all users"),
        ):
            if first in cases and deep in cases:
                for p in (50, 99):
                    value = percentile(cases[deep].api.latencies, p) / percentile(
                        cases[first].api.latencies, p
                    )
                    ratios.append((f"{name} p{p} at concurrency {level}", value))
    for name, series in result.depth.items():
        cursor = series["cursor, API"]
        if cursor:
            depth, slowest = max(cursor[1:] or cursor, key=lambda point: point[1])
            ratios.append((f"{name} p50, worst of all depths ({depth:,})", slowest / cursor[0][1]))
    if ratios:
        ok = all(value <= 1.5 for name, value in ratios if " p50" in name)
        lines.append(f"  cursor page / first page <= 1.5x (judged at p50): {verdict(ok)}")
        lines += [f"    {name}: {value:.2f}x" for name, value in ratios]

    # 2. List and search p99 under 20 ms (judged at 1M sessions on PostgreSQL).
    sidebar = [
        "first_page_user",
        "typical_first",
        "typical_cursor",
        "big_first",
        "big_cursor",
        "all_first",
        "all_cursor",
    ]
    scope = (
        "judged here"
        if at_scale and result.database == "postgresql"
        else "the target is for 1M sessions on PostgreSQL"
    )
    for level in levels:
        cases = at(level)
        p99s = [(cases[key].label, cases[key].api.p99 * 1000) for key in sidebar if key in cases]
        if not p99s:
            continue
        label, worst = max(p99s, key=lambda item: item[1])
        lines.append(
            f"  list p99 < 20 ms at concurrency {level} ({scope}): "
            f"{verdict(worst < 20)}; worst {worst:.1f} ms ({label}) of {len(p99s)} sidebar requests"
        )
        searches = [
            (case.label, case.api.p99 * 1000)
            for key, case in cases.items()
            if key.startswith("search_") and key != "search_common_total"
        ]
        if searches:
            label, worst = max(searches, key=lambda item: item[1])
            lines.append(
                f"  search p99 < 20 ms at concurrency {level} ({scope}): "
                f"{verdict(worst < 20)}; worst {worst:.1f} ms ({label}) of {len(searches)} "
                "kinds of search (without total)"
            )

    # 3. The API within 3x of its floor.
    for level in levels:
        floored = [case for case in at(level).values() if case.floor is not None]
        if not floored:
            continue
        over = [case for case in floored if case.ratio(50) > 3]
        lines.append(
            f"  API / (SQL + healthz) <= 3x at p50, concurrency {level}: {verdict(not over)} "
            f"({len(floored) - len(over)} of {len(floored)} request kinds within)"
        )
        lines += [f"    over: {case.label} {case.ratio(50):.2f}x" for case in over]

    # 4. Appends at least 3x the seed's algorithm on long sessions, stack for stack.
    if "long" in result.writes:
        run = result.writes["long"]
        rates = write_rates(run)
        stack = rates["ours_service"] / rates["seed_service"]
        raw = rates["ours_raw"] / rates["seed_created_at"]
        lines.append(
            f"  appends >= 3x the seed on {run.messages_before:,}-message sessions: "
            f"{verdict(min(stack, raw) >= 3)} (service stack {stack:.2f}x, raw driver "
            f"{raw:.2f}x; seed on the ordinal index {rates['ours_raw'] / rates['seed_seq']:.2f}x; "
            f"service code against the raw seed "
            f"{rates['ours_service'] / rates['seed_created_at']:.2f}x)"
        )
    return lines


# --- Sweep, charts, machine ------------------------------------------------------------------


SizePoints = dict[str, dict[str, list[tuple[int, float, float]]]]  # db: metric: (n, api, sql)


def add_size_points(points: SizePoints, result: DatabaseResult) -> None:
    for metric, (api, sql) in result.size.items():
        series = points.setdefault(result.database, {}).setdefault(metric, [])
        series.append((result.data.sessions, api * 1000, sql * 1000))


def report_sizes(points: SizePoints) -> str:
    lines = ["Latency against data size (one client, p50 ms, API / raw SQL):"]
    for database, metrics in points.items():
        sizes = sorted({n for series in metrics.values() for n, _, _ in series})
        lines.append(f"  {database:<40}" + "".join(f"{n:>20,}" for n in sizes))
        for metric, series in metrics.items():
            by_size = {n: (api, sql) for n, api, sql in series}
            cells = "".join(
                f"{by_size[n][0]:>11.2f} /{by_size[n][1]:>6.2f}" if n in by_size else " " * 20
                for n in sizes
            )
            lines.append(f"    {metric:<38}{cells}")
    return "\n".join(lines)


def write_charts(
    directory: Path, results: list[DatabaseResult], sizes: SizePoints, subtitle: str
) -> list[Path]:
    from bench import charts  # matplotlib is only needed here

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    depth_panels: dict[str, charts.Series] = {}
    for result in results:
        for name, series in result.depth.items():
            size = (
                result.data.active_sessions
                if name == "all users"
                else result.data.biggest_user_sessions
            )
            title = f"{result.server.split(' (')[0]}: {name} ({size:,} sessions)"
            depth_panels[title] = {
                label: [(float(d), ms) for d, ms in points] for label, points in series.items()
            }
    if depth_panels:
        path = directory / "sidebar_depth.png"
        charts.depth_chart(path, depth_panels, subtitle)
        written.append(path)
    size_panels: dict[str, charts.Series] = {}
    servers = {result.database: result.server.split(" (")[0] for result in results}
    for database, metrics in sizes.items():
        panel: charts.Series = {}
        for metric, points in metrics.items():
            ordered = sorted(points)
            panel[f"{metric}, API"] = [(float(n), api) for n, api, _ in ordered]
            panel[f"{metric}, raw SQL"] = [(float(n), sql) for n, _, sql in ordered]
        size_panels[servers.get(database, database)] = panel
    if size_panels and any(len(s) > 1 for m in sizes.values() for s in m.values()):
        path = directory / "sidebar_size.png"
        charts.size_chart(path, size_panels, subtitle)
        written.append(path)
    return written


def machine() -> dict[str, str]:
    cpu = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {
        name: package_metadata.version(name)
        for name in ("fastapi", "uvicorn", "sqlalchemy", "asyncpg", "aiosqlite", "httpx")
    }
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": str(os.cpu_count()),
        "cpu": cpu,
        "system": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "packages": ", ".join(f"{k} {v}" for k, v in versions.items()),
    }


# --- Main ------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    host = machine()
    print(
        f"{host['date']}; {host['cpus']} CPUs ({host['cpu']}); {host['system']}; "
        f"Python {host['python']}; SQLite {host['sqlite']}; {host['packages']}",
        flush=True,
    )
    spec = DataSpec(
        args.sessions,
        args.users,
        args.messages_per_session,
        args.long_sessions,
        args.long_messages,
        args.seed,
    )
    step = time.perf_counter()
    plan = make_plan(spec)
    print(
        f"data set drawn in {time.perf_counter() - step:.1f} s: {len(plan.ids):,} sessions, "
        f"{plan.messages:,} messages, {args.users:,} users",
        flush=True,
    )
    results: list[DatabaseResult] = []
    reports: list[str] = []
    sizes: SizePoints = {}
    for database in args.database:
        result = await run_database(database, plan, args, full=True)
        results.append(result)
        add_size_points(sizes, result)
        at_scale = args.sessions >= 1_000_000
        report = "\n".join(
            [
                report_database(result, args),
                "",
                *evaluate_targets(result, args.concurrency, at_scale),
            ]
        )
        reports.append(report)
        print(f"\n{report}\n[{database}] done in {result.seconds:.0f} s", flush=True)
    del plan

    sweep: list[DatabaseResult] = []
    for size in sorted(n for n in args.sizes if n < args.sessions):
        users = max(1, round(size * args.users / args.sessions))
        small = make_plan(
            DataSpec(
                size,
                users,
                args.messages_per_session,
                args.long_sessions,
                args.long_messages,
                args.seed,
            )
        )
        for database in args.database:
            result = await run_database(database, small, args, full=False)
            sweep.append(result)
            add_size_points(sizes, result)
            print(f"[{database}] {size:,} sessions done in {result.seconds:.0f} s", flush=True)

    elapsed = time.perf_counter() - started
    print("\n" + "=" * 100)
    for report in reports:
        print(f"\n{report}")
    print(f"\n{report_sizes(sizes)}")
    if args.sizes:
        print(
            "  (smaller sizes: users scaled with sessions, "
            f"{args.sessions // max(1, args.users)} sessions per user; same long sessions)"
        )
    subtitle = f"{host['cpus']} cores, {datetime.now(UTC):%Y-%m-%d}"
    if args.charts is not None:
        for path in write_charts(args.charts, results, sizes, subtitle):
            print(f"chart: {path}")
    print(f"\nwhole run: {elapsed / 60:.1f} min ({elapsed:.0f} s)", flush=True)
    if args.results is not None:
        payload = {
            "machine": host,
            "args": {k: str(v) for k, v in vars(args).items()},
            "seconds": elapsed,
            "databases": [
                {
                    "database": r.database,
                    "server": r.server,
                    "data": {
                        k: v
                        for k, v in asdict(r.data).items()
                        if "ids" not in k and k not in ("user_sample", "searches")
                    },
                    "searches": [
                        {"key": x.key, "label": x.label, "query": x.query, "users": len(x.users)}
                        for x in r.data.searches
                    ],
                    "search_totals": r.search_totals,
                    "cases": [case.as_json() for case in r.cases],
                    "same_pages": r.same_pages,
                    "depth": r.depth,
                    "plans": r.plans,
                    "writes": {
                        group: {
                            key: {
                                "per_second": len(v) / sum(v),
                                "p50_ms": percentile(v, 50) * 1000,
                                "p99_ms": percentile(v, 99) * 1000,
                            }
                            for key, v in run.latencies.items()
                        }
                        for group, run in r.writes.items()
                    },
                    "seconds": r.seconds,
                }
                for r in results
            ],
            "sizes": sizes,
            "reports": reports,
        }
        args.results.write_text(json.dumps(payload, indent=1, default=str))
        print(f"results: {args.results}")


def _sizes(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sidebar",
        description="The sidebar at scale: list, open and append over HTTP against their raw-SQL "
        "and framework floors; offset vs cursor depth; data size; the seed's write algorithm.",
    )
    add = parser.add_argument
    add("--sessions", type=int, default=1_000_000, help="sessions (default 1,000,000)")
    add("--users", type=int, default=10_000, help="users (default 10,000; skewed)")
    add("--messages-per-session", type=int, default=10, help="mean messages per session")
    add("--long-sessions", type=int, default=10, help="sessions with --long-messages (10)")
    add("--long-messages", type=int, default=5_000, help="messages of a long session (5,000)")
    add(
        "--database",
        choices=["sqlite", "postgresql"],
        action="append",
        help="repeat for both (default: postgresql and sqlite)",
    )
    add(
        "--concurrency",
        type=_sizes,
        default=[1, 8],
        help="concurrent clients, one run per level, comma-separated (default 1,8)",
    )
    add("--duration", type=float, default=3.0, help="seconds per measurement (default 3)")
    add("--warmup", type=float, default=0.5, help="warm-up seconds per measurement (0.5)")
    add("--profile-requests", type=int, default=200, help="requests per one-client point (200)")
    add("--profile-seconds", type=float, default=3.0, help="at most this long per point (3)")
    add("--write-messages", type=int, default=400, help="messages per write variant (400)")
    add("--rounds", type=int, default=4, help="write variants interleave in this many rounds")
    add(
        "--sizes",
        type=_sizes,
        default=[10_000, 100_000],
        help="smaller data sizes for the size sweep, comma-separated (default 10000,100000; "
        "'' for none)",
    )
    add(
        "--depths",
        type=_sizes,
        default=[0, 1_000, 10_000, 100_000, 250_000, 500_000, 750_000],
        help="page depths of the all-users list (plus the last page)",
    )
    add(
        "--user-depths",
        type=_sizes,
        default=[0, 1_000, 5_000, 10_000, 20_000, 40_000],
        help="page depths of the biggest user's list (plus the last page)",
    )
    add("--charts", type=Path, default=PROJECT_ROOT / "docs", help="PNG directory (docs/)")
    add("--no-charts", dest="charts", action="store_const", const=None, help="no charts")
    add("--results", type=Path, default=None, help="also write every figure as JSON here")
    add("--seed", type=int, default=5, help="random seed of the data set")
    add(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="PostgreSQL server to create the scratch databases on (env BENCH_POSTGRES_URL)",
    )
    args = parser.parse_args(argv)
    args.database = args.database or ["postgresql", "sqlite"]
    if args.sessions < 1_000 or args.users < 1 or not args.concurrency or min(args.concurrency) < 1:
        parser.error("--sessions must be >= 1000, --users and --concurrency >= 1")
    return args


def main() -> None:
    asyncio.run(run(parse_args()))


if __name__ == "__main__":
    main()
