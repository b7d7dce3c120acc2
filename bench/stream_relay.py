"""Streaming relay benchmark: what the backend adds to a streamed reply, against the fake
upstream alone, measured in one run.

Three processes on loopback: the fake OpenAI-compatible upstream (`bench.upstream`, uvicorn),
the real service (`python -m app`, ASSISTANT_PROVIDER=openai pointed at the fake, on a fresh
migrated database), and this client (httpx). Measured:

* time to first token (TTFT): sequential requests, each streamed directly from the fake and
  through POST /api/v1/chat/stream (interleaved), to the first content chunk / `delta` event;
* relay rate of a long stream: chunks/s and content bytes/s from the first to the last content
  chunk, directly and through the backend.

Run: `python -m bench.stream_relay [--requests 200] [--chunks 5000] [--database sqlite]`.
"""

import argparse
import asyncio
import json
import math
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from app.config import PROJECT_ROOT, Settings
from app.kit.db import migrate
from bench.upstream import size_message

STREAM = "/api/v1/chat/stream"
COMPLETIONS = "/v1/chat/completions"
MODEL = "gpt-4"
START_TIMEOUT = 90.0  # seconds; 2 workers on PostgreSQL took over 30 s on a saturated machine
REQUEST_TIMEOUT = 60.0
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


# --- Processes -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Process:
    name: str
    process: asyncio.subprocess.Process
    base_url: str
    log: Path

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@asynccontextmanager
async def run_process(
    name: str, args: Sequence[str], env: dict[str, str], workdir: Path, port: int, ready: str
) -> AsyncIterator[Process]:
    """Start `python args...`, poll `ready` until 200 (bounded), stop it on the way out."""
    log = workdir / f"{name}.log"
    with log.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *args,
            cwd=workdir,
            env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(PROJECT_ROOT), **env},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
        )
    running = Process(name, process, f"http://127.0.0.1:{port}", log)
    try:
        await wait_ready(running, ready)
        yield running
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                async with asyncio.timeout(10):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()


async def wait_ready(running: Process, path: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    async with httpx.AsyncClient(base_url=running.base_url, timeout=2) as client:
        while True:
            if running.process.returncode is not None:
                raise RuntimeError(f"{running.name} exited at start-up:\n{running.log_tail()}")
            with suppress(httpx.TransportError):
                if (await client.get(path)).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{running.name} not ready in {START_TIMEOUT}s")
            await asyncio.sleep(0.05)


@asynccontextmanager
async def fresh_database(kind: str, workdir: Path, postgres_url: str) -> AsyncIterator[str]:
    """A new database with every migration applied; PostgreSQL ones are dropped afterwards."""
    if kind == "sqlite":
        url = f"sqlite:///{workdir / 'bench.db'}"
        await migrate.upgrade_async(Settings(_env_file=None, database_url=url).database_url)
        yield url
        return
    name = f"bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_url, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    try:
        await migrate.upgrade_async(Settings(_env_file=None, database_url=url).database_url)
        yield url
    finally:
        admin = await asyncpg.connect(postgres_url, timeout=10)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


# --- One streamed reply, timed ---------------------------------------------------------------


@dataclass
class Timing:
    """One streamed reply, seen by the client. Times in seconds from sending the request."""

    first_token: float
    last_token: float
    chunks: int
    content_bytes: int
    session_event: float | None = None  # through the backend: the `session` event


async def stream_direct(client: httpx.AsyncClient, message: str) -> Timing:
    """The fake upstream alone: the request the OpenAI SDK would send, read as SSE."""
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": message},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first = last = 0.0
    chunks = size = 0
    async with client.stream("POST", COMPLETIONS, json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            for choice in chunk["choices"]:
                if content := choice["delta"].get("content"):
                    last = time.perf_counter() - started
                    if not chunks:
                        first = last
                    chunks += 1
                    size += len(content.encode())
    return Timing(first, last, chunks, size)


async def stream_backend(client: httpx.AsyncClient, message: str) -> tuple[Timing, str]:
    """Through the backend: POST /api/v1/chat/stream; the timing and the session id."""
    started = time.perf_counter()
    first = last = 0.0
    session_at: float | None = None
    chunks = size = 0
    event, session_id, done = "message", "", False
    async with client.stream("POST", STREAM, json={"message": message}) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data = json.loads(line[5:])
                if event == "delta":
                    last = time.perf_counter() - started
                    if not chunks:
                        first = last
                    chunks += 1
                    size += len(data["content"].encode())
                elif event == "session":
                    session_at = time.perf_counter() - started
                    session_id = data["session_id"]
                elif event == "done":
                    done = True
                else:
                    raise RuntimeError(f"the backend sent {event}: {data}")
            elif not line:
                event = "message"
    if not done:
        raise RuntimeError("the backend's stream ended without `done`")
    return Timing(first, last, chunks, size, session_at), session_id


# --- Figures ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


@dataclass
class TtftResult:
    direct: list[float]
    backend: list[float]
    session: list[float]  # through the backend, to the `session` event
    health: list[float]  # a GET /healthz round trip to the backend (no database)


@dataclass
class RelayResult:
    chunks: int
    content_bytes: int
    direct: list[float]  # durations first -> last content chunk, per run
    backend: list[float]
    backend_chunks: int


async def measure_ttft(
    direct: httpx.AsyncClient, backend: httpx.AsyncClient, requests: int, warmup: int
) -> TtftResult:
    message = size_message(8, 4)
    result = TtftResult([], [], [], [])
    for index in range(warmup + requests):
        # Interleaved, so that drift (caches, the database growing) affects both alike.
        upstream = await stream_direct(direct, message)
        relayed, _ = await stream_backend(backend, message)
        started = time.perf_counter()
        (await backend.get("/healthz")).raise_for_status()
        health = time.perf_counter() - started
        if index >= warmup:
            result.health.append(health)
            result.direct.append(upstream.first_token)
            result.backend.append(relayed.first_token)
            assert relayed.session_event is not None
            result.session.append(relayed.session_event)
    return result


async def measure_relay(
    direct: httpx.AsyncClient, backend: httpx.AsyncClient, chunks: int, chars: int, runs: int
) -> RelayResult:
    message = size_message(chunks, chars)
    result = RelayResult(chunks, chunks * chars, [], [], 0)
    for run in range(runs + 1):  # the first run of each is a warm-up
        upstream = await stream_direct(direct, message)
        relayed, session_id = await stream_backend(backend, message)
        for timing in (upstream, relayed):
            if timing.chunks != chunks or timing.content_bytes != chunks * chars:
                raise RuntimeError(f"expected {chunks} chunks, got {timing}")
        if run:
            result.direct.append(upstream.last_token - upstream.first_token)
            result.backend.append(relayed.last_token - relayed.first_token)
            result.backend_chunks = relayed.chunks
    # The relayed reply was also saved, whole and complete.
    stored = (await backend.get(f"/api/v1/chat/sessions/{session_id}")).json()["messages"][-1]
    if len(stored["content"]) != chunks * chars or stored["metadata"]["status"] != "complete":
        raise RuntimeError("the long reply was not saved complete")
    return result


def report(database: str, ttft: TtftResult, relay: RelayResult, args: argparse.Namespace) -> str:
    ms = 1000.0
    lines = [
        f"Streaming relay: database {database}, {args.requests} TTFT requests "
        f"(+{args.warmup} warm-up, 8 x 4-char chunks each), long stream {relay.chunks} x "
        f"{args.chunk_chars}-char chunks ({relay.content_bytes:,} content bytes), "
        f"{args.runs} runs (+1 warm-up)",
        "",
        "Time to first token (ms)             p50       p99      mean",
    ]

    def row(label: str, values: Sequence[float]) -> str:
        return (
            f"  {label:<32} {percentile(values, 50) * ms:>7.2f}   "
            f"{percentile(values, 99) * ms:>7.2f}   {statistics.fmean(values) * ms:>7.2f}"
        )

    after_session = [b - s for b, s in zip(ttft.backend, ttft.session, strict=True)]
    ratio50 = percentile(ttft.backend, 50) / percentile(ttft.direct, 50)
    ratio99 = percentile(ttft.backend, 99) / percentile(ttft.direct, 99)
    added50 = (percentile(ttft.backend, 50) - percentile(ttft.direct, 50)) * ms
    added99 = (percentile(ttft.backend, 99) - percentile(ttft.direct, 99)) * ms
    lines += [
        row("upstream alone", ttft.direct),
        row("through the backend", ttft.backend),
        f"  {'ratio backend / upstream':<32} {ratio50:>6.2f}x   {ratio99:>6.2f}x",
        f"  {'added by the backend':<32} {added50:>7.2f}   {added99:>7.2f}",
        "  breakdown (through the backend):",
        row("  to the `session` event", ttft.session),
        row("  from `session` to first delta", after_session),
        row("  GET /healthz (no database)", ttft.health),
        "",
        "Long stream relay (median of runs)   chunks/s   content KB/s   seconds",
    ]
    rates: dict[str, float] = {}
    for label, durations in (
        ("upstream alone", relay.direct),
        ("through the backend", relay.backend),
    ):
        seconds = statistics.median(durations)
        # n chunks span n - 1 intervals from the first to the last.
        rates[label] = (relay.chunks - 1) / seconds
        kbps = relay.content_bytes / seconds / 1000
        lines.append(f"  {label:<32} {rates[label]:>9,.0f}   {kbps:>12,.1f}   {seconds:>7.3f}")
    ratio = rates["through the backend"] / rates["upstream alone"]
    lines += [
        f"  {'ratio backend / upstream':<32} {ratio:>8.2f}x",
        f"  delta events relayed: {relay.backend_chunks} of {relay.chunks} upstream chunks",
    ]
    return "\n".join(lines)


# --- Main ------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> None:
    print(
        f"python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.platform()}",
        flush=True,
    )
    for database in args.database:
        with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
            workdir = Path(tmp)
            upstream_port, backend_port = free_port(), free_port()
            async with (
                fresh_database(database, workdir, args.postgres_url) as database_url,
                run_process(
                    "upstream",
                    ["-m", "bench.upstream", "--port", str(upstream_port)],
                    {},
                    workdir,
                    upstream_port,
                    "/healthz",
                ) as upstream,
                run_process(
                    "backend",
                    ["-m", "app"],
                    {
                        "HOST": "127.0.0.1",
                        "PORT": str(backend_port),
                        "DATABASE_URL": database_url,
                        "MIGRATE_ON_STARTUP": "false",
                        "ASSISTANT_PROVIDER": "openai",
                        "OPENAI_BASE_URL": f"{upstream.base_url}/v1",
                        "OPENAI_MODEL": MODEL,
                        "OPENAI_MAX_RETRIES": "0",
                        "SHUTDOWN_GRACE_SECONDS": "5",
                        "LOG_LEVEL": "WARNING",
                    },
                    workdir,
                    backend_port,
                    "/readyz",
                ) as backend,
                httpx.AsyncClient(base_url=upstream.base_url, timeout=REQUEST_TIMEOUT) as direct,
                httpx.AsyncClient(base_url=backend.base_url, timeout=REQUEST_TIMEOUT) as relayed,
            ):
                started = time.perf_counter()
                ttft = await measure_ttft(direct, relayed, args.requests, args.warmup)
                relay = await measure_relay(
                    direct, relayed, args.chunks, args.chunk_chars, args.runs
                )
                elapsed = time.perf_counter() - started
            print()
            print(report(database, ttft, relay, args))
            print(f"(measured in {elapsed:.1f}s)", flush=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.stream_relay",
        description="Time to first token and relay rate of the streaming endpoint, each "
        "against the fake upstream alone.",
    )
    parser.add_argument("--requests", type=int, default=200, help="TTFT requests (default 200)")
    parser.add_argument("--warmup", type=int, default=20, help="TTFT warm-up requests")
    parser.add_argument("--chunks", type=int, default=5000, help="chunks of the long stream")
    parser.add_argument("--chunk-chars", type=int, default=4, help="characters per chunk")
    parser.add_argument("--runs", type=int, default=5, help="long-stream runs (median)")
    parser.add_argument(
        "--database",
        choices=["sqlite", "postgresql"],
        action="append",
        help="database of the backend; repeat for both (default sqlite)",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="PostgreSQL server to create the scratch database on (env BENCH_POSTGRES_URL)",
    )
    args = parser.parse_args(argv)
    args.database = args.database or ["sqlite"]
    if args.requests < 1 or args.chunks < 2 or args.runs < 1:
        parser.error("--requests and --runs must be >= 1, --chunks >= 2")
    return args


def main() -> None:
    asyncio.run(run(parse_args()))


if __name__ == "__main__":
    main()
