"""Concurrent streams (issue 15, "Load it can carry"): how many replies streamed at a fixed
pace the service carries at once, with 1 and with 2 workers.

Processes on loopback, all started here:

* the paced fake upstream (`python -m bench.upstream --paced`), `--upstream-processes` of them
  sharing one port (SO_REUSEPORT): each reply is `--rate` chunks a second for `--seconds`, and
  each chunk's text carries the time the upstream wrote it (`i@T;`), the last one the count
  and hash of all that was sent (`#N:H`);
* the service (`python -m app`, `WORKERS=w`, `ASSISTANT_PROVIDER=openai` pointed at the fake,
  a fresh migrated database, `DATABASE_POOL_SIZE`, metrics on);
* `--clients` load-generating processes (raw asyncio protocol on uvloop, one HTTP/1.1
  connection per stream, no HTTP library): each opens its share of the streams with
  `POST /api/v1/chat/stream`, and a few (`--direct` in all) straight from the upstream.

For each configuration the number of concurrent streams is ramped (`--steps`, up to
`--max-streams`). In a step every stream is opened within the ramp (`--ramp-rate` a second),
and each lasts `--seconds`. For every chunk a client receives, the delay added after the
upstream is its arrival time (the client's wall clock, read when the bytes arrive) minus the
send time written in it by the upstream (the same machine's clock). Through the service
that is what the service adds (plus two loopback hops and the client's own reaction time);
the direct streams give that floor without the service, and the upstream's own pacing (its
lateness against the nominal schedule, and the intervals the direct clients see). After the
step every reply is read from the database: it must have status `complete` and exactly the
text the upstream sent (its hash, and the text the client received).

A step passes when every stream ended `done`/`complete` with all its chunks and no error,
every reply was saved whole, and the added delay's p99 is under `--max-delay-ms` (100). The
ramp stops after the first step that fails (`--keep-going`: it does not).

Run: `python -m bench.stream_load [--database postgresql] [--workers 1 --workers 2]
[--seconds 30] [--rate 30] [--max-streams N]`.
"""

import argparse
import asyncio
import hashlib
import json
import math
import os
import pstats
import re
import resource
import signal
import sqlite3
import sys
import tempfile
import time
import urllib.request
from array import array
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

import asyncpg

from bench.loadkit import (
    ClientProcesses,
    CpuMeter,
    connections_by_process,
    load_average,
    machine_line,
    raise_open_files_limit,
    serve_plans,
)
from bench.stream_relay import free_port, fresh_database, percentile, run_process
from bench.upstream import TIMESTAMP_MODULUS_US, end_marker, paced_message

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_STEPS = (50, 75, 100, 150, 200, 250, 300, 400, 500, 700, 1000, 1400, 2000)
STREAM = "/api/v1/chat/stream"
COMPLETIONS = "/v1/chat/completions"

_MARKER = re.compile(rb"(\d+)@(\d{9});")
_END = re.compile(rb"#(\d+):([0-9a-f]{16})")
_SESSION = re.compile(rb'event: session\r?\ndata: \{"session_id":"([^"]+)"')
_DONE = re.compile(rb"event: done\r?\ndata: (\{[^\n]*\})")
_ERROR = re.compile(rb"event: error\r?\ndata: ([^\n]*)")
_STATUS = re.compile(rb"HTTP/1\.1 (\d{3})")


# --- The load-generating client (runs in its own processes) ----------------------------------


@dataclass
class StepPlan:
    """One client process's share of a step. Times are wall-clock seconds (time.time())."""

    host: str
    backend_port: int
    upstream_port: int
    relayed_starts: list[float]
    direct_starts: list[float]
    chunks: int
    rate: float
    timeout: float  # a stream that receives nothing for this long has failed
    plateau: tuple[float, float]  # when every stream of the step is open and streaming


@dataclass
class StreamRecord:
    relayed: bool
    opened: float = 0.0  # wall clock, when the request was sent
    first: float = 0.0  # first and last chunk's arrival
    last: float = 0.0
    status: int = 0
    session_id: str = ""
    done: dict[str, Any] | None = None
    error: str = ""
    chunks: int = 0
    in_order: bool = True
    end: str = ""  # the upstream's `#N:H`, as received
    received_sha: str = ""  # of the whole text received (chunks, then the end marker)


@dataclass
class ClientResult:
    streams: list[StreamRecord]
    relayed_delay_ms: array  # type: ignore[type-arg]
    held_delay_ms: array  # type: ignore[type-arg]
    direct_delay_ms: array  # type: ignore[type-arg]
    direct_gap_ms: array  # type: ignore[type-arg]
    upstream_late_ms: array  # type: ignore[type-arg]
    loop_lag_ms: array  # type: ignore[type-arg]
    cpu_seconds: float
    wall_seconds: float


class _StreamProtocol(asyncio.Protocol):
    """One streamed request on its own connection: the chunks' markers are found in the raw
    bytes (they cannot be split by the HTTP framing: each event is one HTTP chunk), timed at
    the moment the bytes arrive."""

    def __init__(
        self,
        record: StreamRecord,
        request: bytes,
        interval_us: float,
        sink: "_Sink",
        plateau: tuple[float, float],
    ) -> None:
        self.record = record
        self._plateau = plateau
        self._request = request
        self._interval_us = interval_us
        self._sink = sink
        self._head = b""
        self._tail = b""  # bytes after the last marker found (a marker cut by TCP)
        self._control = b""  # the last bytes seen, for the rare control events
        self._digest = hashlib.sha256()
        self._first_sent_us = -1
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.last_data = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.record.opened = time.time()
        self.transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        now_us = time.time_ns() // 1000
        self.last_data = time.monotonic()
        record = self.record
        if not record.status:
            self._head += data
            if (end := self._head.find(b"\r\n\r\n")) < 0:
                return
            match = _STATUS.match(self._head)
            record.status = int(match[1]) if match else -1
            data = self._head[end + 4 :]
            self._head = b""
            if record.status != 200:
                record.error = f"HTTP {record.status}: {data[:200]!r}"
                self._finish()
                return
        buffer = self._tail + data
        last_end = 0
        delays = self._sink.relayed if record.relayed else self._sink.direct
        modulus = TIMESTAMP_MODULUS_US
        for match in _MARKER.finditer(buffer):
            index, sent_us = int(match[1]), int(match[2])
            if index != record.chunks:
                record.in_order = False
            if not record.chunks:
                self._first_sent_us = sent_us
                record.first = now_us / 1e6
            delay = (now_us - sent_us) % modulus
            if delay > modulus // 2:
                delay -= modulus  # (cannot happen with one clock; kept for honesty)
            delays.append(delay / 1000)
            if record.relayed and self._plateau[0] <= now_us / 1e6 <= self._plateau[1]:
                self._sink.held.append(delay / 1000)
            late = ((sent_us - self._first_sent_us) % modulus) - index * self._interval_us
            self._sink.late.append(late / 1000)
            if not record.relayed and record.chunks:
                self._sink.gaps.append((now_us / 1e6 - record.last) * 1000)
            record.last = now_us / 1e6
            record.chunks += 1
            self._digest.update(match[0])
            last_end = match.end()
        self._tail = buffer[last_end:][-64:]
        control = self._control + data
        if not record.end and (end_match := _END.search(control)):
            record.end = end_match[0].decode()
        if record.relayed:
            if not record.session_id and (session := _SESSION.search(control)):
                record.session_id = session[1].decode()
            if done := _DONE.search(control):
                record.done = json.loads(done[1])
                self._finish()
            elif error := _ERROR.search(control):
                record.error = f"error event: {error[1][:200]!r}"
                self._finish()
        elif b"data: [DONE]" in control:
            self._finish()
        self._control = control[-512:]

    def _finish(self) -> None:
        if self.record.end:
            self._digest.update(self.record.end.encode())
        self.record.received_sha = self._digest.hexdigest()
        if not self.finished.done():
            self.finished.set_result(None)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.finished.done():
            if not self.record.error:
                self.record.error = f"connection lost: {exc!r}"
            self._finish()


@dataclass
class _Sink:
    relayed: array = field(default_factory=lambda: array("d"))  # type: ignore[type-arg]
    held: array = field(default_factory=lambda: array("d"))  # type: ignore[type-arg]
    direct: array = field(default_factory=lambda: array("d"))  # type: ignore[type-arg]
    gaps: array = field(default_factory=lambda: array("d"))  # type: ignore[type-arg]
    late: array = field(default_factory=lambda: array("d"))  # type: ignore[type-arg]


def _request(host: str, port: int, path: str, body: dict[str, Any]) -> bytes:
    payload = json.dumps(body).encode()
    return (
        f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
        f"accept: text/event-stream\r\ncontent-length: {len(payload)}\r\n\r\n"
    ).encode() + payload


async def _one_stream(plan: StepPlan, start_at: float, relayed: bool, sink: _Sink) -> StreamRecord:
    record = StreamRecord(relayed=relayed)
    await asyncio.sleep(max(0.0, start_at - time.time()))
    message = paced_message(plan.chunks, plan.rate)
    if relayed:
        port = plan.backend_port
        request = _request(plan.host, port, STREAM, {"message": message})
    else:
        port = plan.upstream_port
        request = _request(
            plan.host,
            port,
            COMPLETIONS,
            {"model": "paced", "stream": True, "messages": [{"role": "user", "content": message}]},
        )
    loop = asyncio.get_running_loop()
    try:
        _, protocol = await asyncio.wait_for(
            loop.create_connection(
                lambda: _StreamProtocol(record, request, 1e6 / plan.rate, sink, plan.plateau),
                plan.host,
                port,
            ),
            plan.timeout,
        )
    except (OSError, TimeoutError) as exc:
        record.error = f"connect: {exc!r}"
        return record
    while not protocol.finished.done():
        idle = time.monotonic() - protocol.last_data
        if idle > plan.timeout:
            record.error = f"nothing received for {plan.timeout:.0f}s"
            if protocol.transport is not None:
                protocol.transport.abort()
            break
        try:
            await asyncio.wait_for(asyncio.shield(protocol.finished), plan.timeout - idle + 0.1)
        except TimeoutError:
            continue
    return record


async def _loop_lag(stop: asyncio.Event, lags: "array[float]") -> None:
    """How late this process's event loop wakes a 10 ms sleep (the client's own delay)."""
    while not stop.is_set():
        asked = time.perf_counter()
        await asyncio.sleep(0.01)
        lags.append((time.perf_counter() - asked - 0.01) * 1000)


async def _run_client_step(plan: StepPlan) -> ClientResult:
    sink = _Sink()
    lags: array[float] = array("d")
    stop = asyncio.Event()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    lag_task = asyncio.create_task(_loop_lag(stop, lags))
    records = await asyncio.gather(
        *(_one_stream(plan, at, True, sink) for at in plan.relayed_starts),
        *(_one_stream(plan, at, False, sink) for at in plan.direct_starts),
    )
    stop.set()
    await lag_task
    after = resource.getrusage(resource.RUSAGE_SELF)
    return ClientResult(
        streams=list(records),
        relayed_delay_ms=sink.relayed,
        held_delay_ms=sink.held,
        direct_delay_ms=sink.direct,
        direct_gap_ms=sink.gaps,
        upstream_late_ms=sink.late,
        loop_lag_ms=lags,
        cpu_seconds=(after.ru_utime + after.ru_stime) - (usage.ru_utime + usage.ru_stime),
        wall_seconds=time.perf_counter() - started,
    )


def client_process(conn: Connection) -> None:
    """A load-generating process: runs each StepPlan it is sent, sends back its result."""
    serve_plans(conn, _run_client_step)


# --- Figures ---------------------------------------------------------------------------------


@dataclass
class StepResult:
    workers: int
    streams: int
    held: int  # most streams open at once, all receiving (client side)
    server_streams: float | None  # chat_streams_in_progress at mid-step (the service's view)
    relayed_delay_ms: list[float]  # every chunk of the step, ramp included
    held_delay_ms: list[float]  # the chunks that arrived while every stream was open
    direct_delay_ms: list[float]
    direct_gap_ms: list[float]
    upstream_late_ms: list[float]
    loop_lag_ms: list[float]
    errors: dict[str, int]
    saved_whole: int
    checked: int
    save_problems: dict[str, int]
    cores: dict[str, float]
    client_cpu_seconds: float
    seconds: float
    max_delay_ms: float
    split: list[int] = field(default_factory=list)  # streams held by each service process

    @property
    def service_us_per_chunk(self) -> float:
        """The service's CPU time per chunk relayed, in microseconds."""
        chunks = len(self.relayed_delay_ms)
        return self.cores.get("service", 0) * self.seconds / chunks * 1e6 if chunks else math.nan

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def p(self, values: Sequence[float], q: float) -> float:
        return percentile(values, q) if values else math.nan

    @property
    def passed(self) -> bool:
        return (
            self.error_count == 0
            and self.saved_whole == self.streams
            and self.p(self.held_delay_ms, 99) < self.max_delay_ms
        )


def most_at_once(records: Sequence[StreamRecord]) -> int:
    """The most streams that were receiving chunks at the same moment."""
    edges = sorted(
        [(r.first, 1) for r in records if r.chunks] + [(r.last, -1) for r in records if r.chunks]
    )
    best = current = 0
    for _, change in edges:
        current += change
        best = max(best, current)
    return best


def classify(record: StreamRecord, chunks: int) -> str | None:
    """Why a relayed stream failed, or None."""
    if record.error:
        return record.error.split(":", 1)[0]
    if record.done is None:
        return "no done event"
    if record.done.get("status") != "complete":
        return f"done {record.done.get('status')}"
    if record.chunks != chunks or not record.in_order:
        return "chunks missing or out of order"
    if not record.end:
        return "no end marker"
    return None


def check_saved(record: StreamRecord, content: str | None, meta: Any) -> str | None:
    """Why the stored reply is not the one the upstream sent whole, or None."""
    if content is None:
        return "not stored"
    metadata = json.loads(meta) if isinstance(meta, str) else meta
    if metadata.get("status") != "complete":
        return f"status {metadata.get('status')}"
    sent, _, end = content.rpartition("#")
    if not end or end_marker(int(end.split(":")[0]), sent) != "#" + end:
        return "text differs from what the upstream sent"
    if hashlib.sha256(content.encode()).hexdigest() != record.received_sha:
        return "text differs from what the client received"
    return None


async def stored_replies(
    database: str, url: str, session_ids: list[str]
) -> dict[str, tuple[str, Any]]:
    """The assistant reply of each session: (content, metadata)."""
    query = (
        "SELECT session_id, content, metadata FROM chat_messages "
        "WHERE role = 'assistant' AND session_id = ANY($1::text[])"
    )
    if database == "postgresql":
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
        try:
            rows = await conn.fetch(query, session_ids)
        finally:
            await conn.close()
        return {row["session_id"]: (row["content"], row["metadata"]) for row in rows}
    path = url.split("///", 1)[1]
    with sqlite3.connect(path) as sqlite:
        found: dict[str, tuple[str, Any]] = {}
        for start in range(0, len(session_ids), 500):
            batch = session_ids[start : start + 500]
            marks = ",".join("?" * len(batch))
            for session_id, content, meta in sqlite.execute(
                "SELECT session_id, content, metadata FROM chat_messages "
                f"WHERE role = 'assistant' AND session_id IN ({marks})",
                batch,
            ):
                found[session_id] = (content, meta)
        return found


def scrape_streams(base_url: str) -> float | None:
    """chat_streams_in_progress from /metrics (all workers added up)."""
    try:
        with urllib.request.urlopen(f"{base_url}/metrics", timeout=10) as response:
            text = response.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("chat_streams_in_progress "):
            return float(line.split()[1])
    return None


def _ms(values: Sequence[float], q: float) -> str:
    return f"{percentile(values, q):7.1f}" if values else "      -"


def step_header() -> str:
    return (
        "  streams  held server | added delay ms, all held | whole step | direct ms     | "
        "upstream | errors  saved       | cores: service upstream clients machine | client "
        "| service       streams per\n"
        "                       |     p50      p99         |  p99       |  p50     p99  | "
        "late p99 |         whole       |                                         | lag p99"
        "| us/chunk       process"
    )


def step_row(step: StepResult) -> str:
    server = f"{step.server_streams:6.0f}" if step.server_streams is not None else "     -"
    cores = step.cores
    return (
        f"  {step.streams:7d} {step.held:5d} {server} |  {_ms(step.held_delay_ms, 50)}  "
        f"{_ms(step.held_delay_ms, 99)}         | {_ms(step.relayed_delay_ms, 99)}    | "
        f"{_ms(step.direct_delay_ms, 50)} {_ms(step.direct_delay_ms, 99)} | "
        f"{_ms(step.upstream_late_ms, 99)}  | {step.error_count:6d} {step.saved_whole:5d}/"
        f"{step.checked:<5d} |   {cores.get('service', 0):5.2f}   {cores.get('upstream', 0):5.2f}"
        f"    {cores.get('clients', 0):5.2f}   {cores.get('machine', 0):5.2f}        |"
        f"{_ms(step.loop_lag_ms, 99)}| {step.service_us_per_chunk:6.0f}  "
        f"{'PASS' if step.passed else 'FAIL'}  {'/'.join(map(str, step.split))}"
    )


# --- Running ---------------------------------------------------------------------------------


async def run_step(
    args: argparse.Namespace,
    clients: ClientProcesses,
    cpu: CpuMeter,
    *,
    workers: int,
    streams: int,
    backend_url: str,
    backend_port: int,
    upstream_port: int,
    database: str,
    database_url: str,
) -> StepResult:
    chunks = max(2, round(args.seconds * args.rate))
    ramp = streams / args.ramp_rate
    begin = time.time() + 1.0  # time for the plans to reach the clients
    relayed = [begin + ramp * k / streams for k in range(streams)]
    # Every stream open (the last one a second into its reply) until the first one ends.
    plateau = (relayed[-1] + 1.0, relayed[0] + args.seconds)
    direct = [begin + ramp * (k + 0.5) / max(1, args.direct) for k in range(args.direct)]
    count = len(clients.pipes)
    plans = [
        StepPlan(
            host="127.0.0.1",
            backend_port=backend_port,
            upstream_port=upstream_port,
            relayed_starts=relayed[c::count],
            direct_starts=direct[c::count],
            chunks=chunks,
            rate=args.rate,
            timeout=args.stream_timeout,
            plateau=plateau,
        )
        for c in range(count)
    ]
    cpu.restart()
    running = asyncio.ensure_future(clients.ask(plans))
    # The service's own count of open streams, once every stream is open.
    await asyncio.sleep(1.0 + ramp + min(args.seconds / 2, 10))
    loop = asyncio.get_running_loop()
    server_streams = await loop.run_in_executor(None, scrape_streams, backend_url)
    # Which worker holds how many of the streams (accept imbalance shows here).
    split = await loop.run_in_executor(None, connections_by_process, backend_port)
    results = await running
    cores = cpu.cores()
    cores["clients"] = sum(r.cpu_seconds for r in results) / max(r.wall_seconds for r in results)
    records = [record for result in results for record in result.streams]
    relayed_records = [r for r in records if r.relayed]
    errors: dict[str, int] = {}
    for record in relayed_records:
        if (why := classify(record, chunks + 0)) is not None:
            errors[why] = errors.get(why, 0) + 1
    for record in (r for r in records if not r.relayed):
        if record.error or record.chunks != chunks:
            errors["direct stream failed"] = errors.get("direct stream failed", 0) + 1
    sessions = [r.session_id for r in relayed_records if r.session_id]
    stored = await stored_replies(database, database_url, sessions)
    saved = 0
    problems: dict[str, int] = {}
    for record in relayed_records:
        content, meta = stored.get(record.session_id, (None, None))
        why = check_saved(record, content, meta) if record.session_id else "no session"
        if why is None:
            saved += 1
        else:
            problems[why] = problems.get(why, 0) + 1

    def merged(name: str) -> list[float]:
        return [value for result in results for value in getattr(result, name)]

    return StepResult(
        workers=workers,
        streams=streams,
        held=most_at_once(relayed_records),
        server_streams=server_streams,
        relayed_delay_ms=merged("relayed_delay_ms"),
        held_delay_ms=merged("held_delay_ms"),
        direct_delay_ms=merged("direct_delay_ms"),
        direct_gap_ms=merged("direct_gap_ms"),
        upstream_late_ms=merged("upstream_late_ms"),
        loop_lag_ms=merged("loop_lag_ms"),
        errors=errors,
        saved_whole=saved,
        checked=len(relayed_records),
        save_problems=problems,
        cores=cores,
        client_cpu_seconds=sum(r.cpu_seconds for r in results),
        seconds=max(r.wall_seconds for r in results),
        max_delay_ms=args.max_delay_ms,
        split=split,
    )


def service_env(
    args: argparse.Namespace, workers: int, port: int, database_url: str, upstream_url: str
) -> dict[str, str]:
    return {
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WORKERS": str(workers),
        "DATABASE_URL": database_url,
        "DATABASE_POOL_SIZE": str(args.pool_size),
        "MIGRATE_ON_STARTUP": "false",
        "ASSISTANT_PROVIDER": "openai",
        "OPENAI_BASE_URL": f"{upstream_url}/v1",
        "OPENAI_MODEL": "paced",
        "OPENAI_MAX_RETRIES": "0",
        "OPENAI_TIMEOUT_SECONDS": str(args.stream_timeout),
        "METRICS_ENABLED": "true",
        "SHUTDOWN_GRACE_SECONDS": "5",
        "LOG_LEVEL": "WARNING",
        **dict(setting.split("=", 1) for setting in args.service_env),
    }


async def run_configuration(
    args: argparse.Namespace, workers: int, workdir: Path, clients: ClientProcesses
) -> list[StepResult]:
    upstream_port, backend_port = free_port(), free_port()
    async with AsyncExitStack() as stack:
        database_url = await stack.enter_async_context(
            fresh_database(args.database, workdir, args.postgres_url)
        )
        upstreams = [
            await stack.enter_async_context(
                run_process(
                    f"upstream{index}",
                    [
                        "-m",
                        "bench.upstream",
                        "--paced",
                        "--reuse-port",
                        "--port",
                        str(upstream_port),
                    ],
                    {},
                    workdir,
                    upstream_port,
                    "/healthz",
                )
            )
            for index in range(args.upstream_processes)
        ]
        service_args = ["-m", "app"]
        if args.profile and workers == 1:
            service_args = ["-m", "cProfile", "-o", args.profile, "-m", "app"]
        backend = await stack.enter_async_context(
            run_process(
                "service",
                service_args,
                service_env(args, workers, backend_port, database_url, upstreams[0].base_url),
                workdir,
                backend_port,
                "/readyz",
            )
        )
        cpu = CpuMeter(
            {
                "service": [backend.process.pid],
                "upstream": [u.process.pid for u in upstreams],
                "clients": clients.pids(),
            }
        )
        common = {
            "workers": workers,
            "backend_url": backend.base_url,
            "backend_port": backend_port,
            "upstream_port": upstream_port,
            "database": args.database,
            "database_url": database_url,
        }
        # Warm-up (not reported): connections to the database and the upstream, code paths.
        warm = argparse.Namespace(**{**vars(args), "seconds": 1.0, "ramp_rate": 100.0})
        await run_step(warm, clients, cpu, streams=min(20, args.steps[0]), **common)
        print(
            f"\n{workers} worker{'s' if workers > 1 else ''}: database {args.database}, "
            f"DATABASE_POOL_SIZE={args.pool_size}, {args.upstream_processes} upstream "
            f"processes, {len(clients.pipes)} client processes; load average {load_average()}",
            flush=True,
        )
        print(step_header(), flush=True)
        results: list[StepResult] = []
        for streams in args.steps:
            await asyncio.sleep(args.pause)
            step = await run_step(args, clients, cpu, streams=streams, **common)
            results.append(step)
            print(step_row(step), flush=True)
            if step.errors or step.save_problems:
                print(f"      errors: {step.errors}; not saved whole: {step.save_problems}")
                # Each different line once: a frequent harmless one hides no rare one.
                problems = list(
                    dict.fromkeys(
                        line
                        for line in backend.log.read_text(errors="replace").splitlines()
                        if "ERROR" in line or "Error" in line
                    )
                )
                if problems:
                    print(
                        "      the service's log says:\n        "
                        + "\n        ".join(problems[-12:])
                    )
            if not step.passed and not args.keep_going:
                break
        if args.profile and workers == 1 and backend.process.returncode is None:
            # SIGINT: uvicorn shuts down, `python -m app` returns, cProfile writes its file.
            backend.process.send_signal(signal.SIGINT)
            await backend.process.wait()
            print_profile(args.profile, args.profile_lines)
    return results


def print_profile(path: str, lines: int) -> None:
    if not os.path.exists(path):
        print(f"\n(no profile was written to {path})")
        return
    print(f"\ncProfile of the 1-worker service over the whole run ({path}):")
    stats = pstats.Stats(path, stream=sys.stdout)
    stats.sort_stats("tottime").print_stats(lines)
    stats.sort_stats("cumulative").print_stats(lines)


def summary(all_results: dict[int, list[StepResult]], args: argparse.Namespace) -> str:
    lines = [
        "",
        f"The most concurrent streams held with the added inter-chunk delay under "
        f"{args.max_delay_ms:.0f} ms at p99 and every reply saved whole "
        f"({args.rate:g} chunks/s for {args.seconds:g} s each, database {args.database}):",
    ]
    best: dict[int, int] = {}
    for workers, steps in all_results.items():
        passing = [s.streams for s in steps if s.passed]
        best[workers] = max(passing, default=0)
        tried = ", ".join(f"{s.streams}{'' if s.passed else ' (fail)'}" for s in steps)
        lines.append(f"  {workers} worker(s): {best[workers]}   (steps: {tried})")
    if 1 in best and 2 in best and best[1]:
        lines.append(f"  ratio 2 workers / 1 worker: {best[2] / best[1]:.2f}x")
    if 2 in best:
        met = "met" if best[2] >= 1000 else "missed"
        lines.append(f"  target >= 1,000 streams with 2 workers: {met} ({best[2]})")
    return "\n".join(lines)


def print_medians(heading: str, results: dict[str, list[float]]) -> None:
    """Each variant's median over its rounds, and the rounds."""
    rounds = max(len(values) for values in results.values())
    print(f"\n{heading} (median of {rounds}):")
    width = max(len(label) for label in results)
    for label, values in results.items():
        print(f"  {label:<{width}} {sorted(values)[len(values) // 2]:7.1f}   rounds {values}")


@asynccontextmanager
async def one_paced_upstream() -> AsyncIterator[Any]:
    """One paced upstream process, for the measurements made in this process."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-upstream-") as tmp:
        async with run_process(
            "upstream",
            ["-m", "bench.upstream", "--paced", "--port", str(port)],
            {},
            Path(tmp),
            port,
            "/healthz",
        ) as upstream:
            yield upstream


async def sdk_chunk_cost(chunks: int, rounds: int = 3) -> None:
    """CPU time per chunk of reading a stream through the OpenAI SDK's own stream (a pydantic
    model per chunk), against the same response's lines parsed as JSON (what the service does
    since this benchmark measured it): in this process, from the paced upstream at full speed."""
    import openai

    async with one_paced_upstream() as upstream:
        client = openai.AsyncOpenAI(
            base_url=f"{upstream.base_url}/v1", api_key="unused", max_retries=0
        )
        messages: Any = [{"role": "user", "content": paced_message(chunks, 1e6)}]
        results: dict[str, list[float]] = {"SDK models": [], "raw lines + json": []}
        for _ in range(rounds):
            for label in results:
                before, seen = time.process_time(), 0
                if label == "SDK models":
                    stream = await client.chat.completions.create(
                        model="paced", messages=messages, stream=True
                    )
                    async for chunk in stream:
                        seen += sum(1 for c in chunk.choices if c.delta.content)
                else:
                    async with client.chat.completions.with_streaming_response.create(
                        model="paced", messages=messages, stream=True
                    ) as response:
                        async for line in response.iter_lines():
                            if line.startswith("data: {"):
                                data = json.loads(line[6:])
                                seen += sum(1 for c in data["choices"] if c["delta"].get("content"))
                results[label].append((time.process_time() - before) / seen * 1e6)
        await client.close()
    print(f"\nReading {chunks} chunks in this process, CPU us per chunk (median of {rounds}):")
    for label, values in results.items():
        print(f"  {label:<20} {sorted(values)[len(values) // 2]:7.1f}")


async def reader_chunk_cost(streams: int, seconds: float, rate: float, rounds: int = 3) -> None:
    """CPU time per chunk of reading paced streams as the service reads the model's: `streams`
    at once, each `rate` chunks a second for `seconds`, so that each chunk is a read of its
    own (at full speed many chunks share a read, and the cost per read is hidden). Through
    httpx's own transport with its line iterator (before), httpx's transport read as bytes,
    and the aiohttp transport the service now uses (`openai.DefaultAioHttpClient`) read as
    bytes (now)."""
    import httpx2
    from openai._vendor.httpx_aiohttp.transport import AiohttpTransport

    from app.assistants.openai_compatible import _sse_json

    async def by_lines(response: Any) -> int:
        seen = 0
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                data = json.loads(line[6:])
                seen += sum(1 for c in data["choices"] if c["delta"].get("content"))
        return seen

    async def by_bytes(response: Any) -> int:
        seen = 0
        async for data in _sse_json(response.aiter_bytes()):
            seen += sum(1 for c in data["choices"] if c["delta"].get("content"))
        return seen

    variants = {
        "httpx transport, lines": (None, by_lines),
        "httpx transport, bytes": (None, by_bytes),
        "aiohttp transport, bytes": (AiohttpTransport, by_bytes),
    }
    chunks = max(1, int(seconds * rate))
    results: dict[str, list[float]] = {label: [] for label in variants}
    async with one_paced_upstream() as upstream:
        body = {
            "model": "paced",
            "stream": True,
            "messages": [{"role": "user", "content": paced_message(chunks, rate)}],
        }
        for _ in range(rounds):
            for label, (transport, read) in variants.items():
                client = httpx2.AsyncClient(
                    transport=transport() if transport else None,
                    timeout=60.0,
                    limits=httpx2.Limits(max_connections=None),
                )

                async def one(client: Any = client, read: Any = read) -> int:
                    async with client.stream(
                        "POST", f"{upstream.base_url}{COMPLETIONS}", json=body
                    ) as response:
                        return int(await read(response))

                before = time.process_time()
                seen = sum(await asyncio.gather(*(one() for _ in range(streams))))
                results[label].append((time.process_time() - before) / seen * 1e6)
                await client.aclose()
    print_medians(
        f"Reading {streams} paced streams at once ({rate:g} chunks/s for {seconds:g} s) in "
        f"this process, CPU us per chunk",
        results,
    )


async def save_cost(saves: int, database: str, postgres_url: str, rounds: int = 3) -> None:
    """CPU time (this process: SQLAlchemy, the driver) per save of a growing reply, the way
    the service saved before (a write transaction: BEGIN, the UPDATE built anew, COMMIT) and
    now (`save_draft`: one prebuilt UPDATE sent by the driver, committed as it runs)."""
    from sqlalchemy import select, update

    from app.assistants.echo import EchoAssistant
    from app.auth.access import Caller
    from app.config import Settings
    from app.kit.db.engine import Database, create_engine
    from app.kit.db.tables import chat_messages, chat_replies_generating
    from app.messages.schemas import ChatRequest
    from app.messages.service import accept_user_message
    from app.replies import queries as reply_queries
    from app.replies.generation import ReplyStart, ReplyTasks

    async def before(db: Database, message_id: Any, process_id: Any, text: str) -> None:
        generating = chat_replies_generating.c
        unasked = (
            select(generating.message_id)
            .where(
                generating.message_id == message_id,
                generating.process_id == process_id,
                generating.stop_requested_at.is_(None),
            )
            .exists()
        )
        save = update(chat_messages).where(chat_messages.c.id == message_id)
        async with db.write() as conn:
            await conn.execute(save.where(unasked).values(content=text))

    async def now(db: Database, message_id: Any, process_id: Any, text: str) -> None:
        async with db.single_statements() as conn:
            await reply_queries.save_draft(
                conn, message_id=message_id, process_id=process_id, content=text
            )

    with tempfile.TemporaryDirectory(prefix="bench-save-") as tmp:
        async with fresh_database(database, Path(tmp), postgres_url) as url:
            settings = Settings(_env_file=None, database_url=url)
            db = Database(create_engine(settings))
            tasks = ReplyTasks()
            accepted = await accept_user_message(
                db,
                Caller.open_mode(),
                ChatRequest(message="hi", session_id="bench-save"),
                history_max_messages=5,
                reply_start=ReplyStart.of(EchoAssistant(), tasks),
            )
            assert accepted.reply is not None
            ids = (accepted.reply.id, tasks.process_id)
            results: dict[str, list[float]] = {"before": [], "now": []}
            for _ in range(rounds):
                for label, save in (("before", before), ("now", now)):
                    started = time.process_time()
                    for index in range(saves):
                        await save(db, *ids, f"text so far {index}")
                    results[label].append((time.process_time() - started) / saves * 1e6)
            await db.dispose()
    print_medians(f"Saving a growing reply {saves} times ({database}), CPU us per save", results)


async def run(args: argparse.Namespace) -> None:
    soft, hard = raise_open_files_limit()
    print(machine_line(), flush=True)
    print(f"open files limit (ulimit -n) raised to {soft} (hard {hard})", flush=True)
    if args.sdk_cost:
        await sdk_chunk_cost(args.sdk_cost)
        return
    if args.save_cost:
        await save_cost(args.save_cost, args.database, args.postgres_url)
        return
    if args.reader_cost:
        await reader_chunk_cost(args.reader_cost, args.seconds, args.rate)
        return
    clients = ClientProcesses.start(args.clients, client_process)
    all_results: dict[int, list[StepResult]] = {}
    try:
        for workers in args.workers:
            with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
                all_results[workers] = await run_configuration(args, workers, Path(tmp), clients)
    finally:
        clients.stop()
    print(summary(all_results, args), flush=True)
    if args.results:
        write_results(Path(args.results), all_results)


def write_results(path: Path, all_results: dict[int, list[StepResult]]) -> None:
    path.write_text(
        json.dumps(
            {
                str(w): [
                    {
                        "streams": s.streams,
                        "held": s.held,
                        "server_streams": s.server_streams,
                        "held_delay_p50_ms": s.p(s.held_delay_ms, 50),
                        "held_delay_p99_ms": s.p(s.held_delay_ms, 99),
                        "step_delay_p50_ms": s.p(s.relayed_delay_ms, 50),
                        "step_delay_p99_ms": s.p(s.relayed_delay_ms, 99),
                        "service_us_per_chunk": s.service_us_per_chunk,
                        "direct_p50_ms": s.p(s.direct_delay_ms, 50),
                        "direct_p99_ms": s.p(s.direct_delay_ms, 99),
                        "upstream_late_p99_ms": s.p(s.upstream_late_ms, 99),
                        "direct_gap_p50_ms": s.p(s.direct_gap_ms, 50),
                        "direct_gap_p99_ms": s.p(s.direct_gap_ms, 99),
                        "client_lag_p99_ms": s.p(s.loop_lag_ms, 99),
                        "errors": s.errors,
                        "saved_whole": s.saved_whole,
                        "checked": s.checked,
                        "cores": s.cores,
                        "streams_per_process": s.split,
                        "passed": s.passed,
                    }
                    for s in steps
                ]
                for w, steps in all_results.items()
            },
            indent=1,
        )
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.stream_load",
        description="Concurrent paced streams through the service, ramped, with 1 and 2 workers.",
    )
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument(
        "--workers", type=int, action="append", help="repeat for several (default 1 and 2)"
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each reply")
    parser.add_argument("--rate", type=float, default=30.0, help="chunks a second")
    parser.add_argument(
        "--max-streams",
        type=int,
        help="the last step: steps above it are left out, and it is added if it is above them all",
    )
    parser.add_argument(
        "--steps",
        default=",".join(map(str, DEFAULT_STEPS)),
        help="concurrent streams per step, comma-separated (those up to --max-streams)",
    )
    parser.add_argument("--ramp-rate", type=float, default=200.0, help="streams opened a second")
    parser.add_argument("--max-delay-ms", type=float, default=100.0)
    parser.add_argument("--clients", type=int, default=2, help="load-generating processes")
    parser.add_argument("--direct", type=int, default=4, help="streams straight from upstream")
    parser.add_argument("--upstream-processes", type=int, default=2)
    parser.add_argument("--pool-size", type=int, default=10, help="DATABASE_POOL_SIZE")
    parser.add_argument("--stream-timeout", type=float, default=60.0)
    parser.add_argument("--pause", type=float, default=3.0, help="seconds between steps")
    parser.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="another setting of the service (e.g. REPLY_SAVE_INTERVAL_MS=2000); repeatable",
    )
    parser.add_argument("--keep-going", action="store_true", help="past a failed step")
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="run the 1-worker service under cProfile, write its stats to FILE (pstats) and "
        "print where its time went",
    )
    parser.add_argument("--profile-lines", type=int, default=40)
    parser.add_argument("--results", help="also write the figures to this JSON file")
    parser.add_argument(
        "--sdk-cost",
        type=int,
        metavar="CHUNKS",
        help="only measure the CPU per chunk of the OpenAI SDK's stream against raw lines",
    )
    parser.add_argument(
        "--save-cost",
        type=int,
        metavar="SAVES",
        help="only measure the CPU per save of a growing reply, before and now (--database)",
    )
    parser.add_argument(
        "--reader-cost",
        type=int,
        metavar="STREAMS",
        help="only measure the CPU per chunk of reading STREAMS paced streams at once "
        "(--seconds, --rate), through httpx's transport and through the service's",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="PostgreSQL server for the scratch database (env BENCH_POSTGRES_URL)",
    )
    args = parser.parse_args(argv)
    args.workers = args.workers or [1, 2]
    args.profile = os.path.abspath(args.profile) if args.profile else None
    args.steps = [int(s) for s in args.steps.split(",") if s]
    if args.max_streams is not None:
        args.steps = [s for s in args.steps if s <= args.max_streams]
        if not args.steps or args.max_streams > args.steps[-1]:
            args.steps.append(args.max_streams)
    if args.clients < 1 or args.rate <= 0 or args.seconds <= 0:
        parser.error("--clients, --rate and --seconds must be positive")
    return args


def main() -> None:
    asyncio.run(run(parse_args()))


if __name__ == "__main__":
    main()
