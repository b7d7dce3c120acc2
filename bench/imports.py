"""Import benchmark (issue 16): a ChatGPT-shaped export of 10,000 conversations imported
through the real HTTP route, on SQLite and PostgreSQL.

The export is generated to a temporary file, streamed (never held whole in memory here either):
conversations of 2 to 40 messages (12 on average), about one in six with an edited question
(a second branch, `current_node` on the older one half the time), a hidden system message at
the top of each, code blocks and images now and then; user messages of 20 to 600 characters,
replies of 100 to 3,000. The service runs as `python -m app` on a fresh migrated database;
this client uploads the file to `POST /api/v1/chat/import` and polls
`GET /api/v1/chat/imports/{id}` until it ends.

Reported per database: the file's size, the wall time from the upload's start to the end (and
the upload's own time), conversations and messages per second, and the service process's peak
resident memory (VmHWM from /proc: the RSS high-water mark of the whole process, the file's
parsing and the database driver included) beside its resident memory before the upload.

Run: `python -m bench.imports [--conversations 10000] [--database sqlite --database postgresql]`.
"""

import argparse
import asyncio
import json
import os
import random
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import httpx

from bench.loadkit import descendants, machine_line
from bench.stream_relay import DEFAULT_POSTGRES_URL, free_port, fresh_database, run_process

T0 = 1_700_000_000.0  # 2023-11-14
WORDS = [
    "the",
    "a",
    "to",
    "of",
    "and",
    "in",
    "is",
    "it",
    "you",
    "that",
    "for",
    "on",
    "with",
    "as",
    "this",
    "be",
    "are",
    "can",
    "how",
    "what",
    "data",
    "code",
    "model",
    "payment",
    "python",
    "error",
    "list",
    "file",
    "table",
    "query",
    "user",
    "value",
    "time",
    "function",
    "return",
    "test",
    "server",
    "request",
    "page",
    "chart",
    "index",
    "report",
    "plan",
    "week",
    "team",
]


def sentence(rng: random.Random, chars: int) -> str:
    words: list[str] = []
    length = 0
    while length < chars:
        word = rng.choice(WORDS)
        words.append(word)
        length += len(word) + 1
    return " ".join(words).capitalize() + "."


def node(
    node_id: str,
    parent: str | None,
    role: str,
    content: dict[str, Any],
    at: float,
    model: str | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"model_slug": model} if model else {}
    if role == "system":
        metadata["is_visually_hidden_from_conversation"] = True
    return {
        "id": node_id,
        "message": {
            "id": node_id,
            "author": {"role": role, "name": None, "metadata": {}},
            "create_time": at,
            "content": content,
            "status": "finished_successfully",
            "metadata": metadata,
            "recipient": "all",
        },
        "parent": parent,
        "children": [],
    }


def conversation(rng: random.Random, number: int) -> dict[str, Any]:
    """One ChatGPT-shaped conversation: a chain of exchanges, sometimes an edited question."""
    start = T0 + number * 3_600 + rng.random() * 600
    mapping: dict[str, Any] = {
        "root": {"id": "root", "message": None, "parent": None, "children": []}
    }

    def add(item: dict[str, Any]) -> str:
        mapping[item["id"]] = item
        if item["parent"] is not None:
            mapping[item["parent"]]["children"].append(item["id"])
        return str(item["id"])

    at = start
    parent = add(node(f"{number}-s", "root", "system", {"content_type": "text", "parts": [""]}, at))
    exchanges = max(1, min(20, round(rng.expovariate(1 / 6))))
    fork_at = rng.randrange(exchanges) if rng.random() < 1 / 6 else None
    current = parent
    older_leaf = None
    for turn in range(exchanges):
        at += rng.uniform(5, 120)
        text = sentence(rng, rng.randint(20, 600))
        question: dict[str, Any] = {"content_type": "text", "parts": [text]}
        if rng.random() < 0.05:
            image = {"content_type": "image_asset_pointer", "asset_pointer": "file-x"}
            question = {"content_type": "multimodal_text", "parts": [image, text]}
        asked = add(node(f"{number}-u{turn}", current, "user", question, at))
        at += rng.uniform(2, 30)
        answer: dict[str, Any]
        if rng.random() < 0.1:
            answer = {"content_type": "code", "language": "python", "text": sentence(rng, 400)}
        else:
            answer = {"content_type": "text", "parts": [sentence(rng, rng.randint(100, 3_000))]}
        current = add(node(f"{number}-a{turn}", asked, "assistant", answer, at, "gpt-4o"))
        if turn == fork_at:
            # The question asked again: a second branch from the same parent.
            older_leaf = current
            at += rng.uniform(5, 60)
            edited = {"content_type": "text", "parts": [sentence(rng, rng.randint(20, 300))]}
            again = add(node(f"{number}-e{turn}", mapping[asked]["parent"], "user", edited, at))
            at += rng.uniform(2, 30)
            reply = {"content_type": "text", "parts": [sentence(rng, rng.randint(100, 1_500))]}
            current = add(node(f"{number}-r{turn}", again, "assistant", reply, at, "gpt-4o"))
    chosen = older_leaf if older_leaf is not None and rng.random() < 0.5 else current
    return {
        "title": sentence(rng, rng.randint(10, 40))[:-1],
        "create_time": start,
        "update_time": at,
        "mapping": mapping,
        "current_node": chosen,
        "conversation_id": f"bench-{number}",
        "id": f"bench-{number}",
        "default_model_slug": "gpt-4o",
    }


def write_export(target: IO[str], conversations: int, seed: int) -> int:
    """The export, one conversation at a time; how many messages it holds (system excluded)."""
    rng = random.Random(seed)
    messages = 0
    target.write("[")
    for number in range(conversations):
        item = conversation(rng, number)
        messages += sum(1 for n in item["mapping"].values() if n["message"]) - 1
        target.write(("," if number else "") + json.dumps(item))
    target.write("]")
    return messages


def memory_kib(pid: int, field: str) -> int:
    """A /proc/<pid>/status field in KiB, the largest over the process and its children."""
    values = []
    for each in [pid, *descendants(pid)]:
        try:
            with open(f"/proc/{each}/status", encoding="ascii") as status:
                for line in status:
                    if line.startswith(f"{field}:"):
                        values.append(int(line.split()[1]))
        except FileNotFoundError:
            continue
    return max(values, default=0)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of the process and its children, from /proc/<pid>/stat."""
    total = 0
    for each in [pid, *descendants(pid)]:
        try:
            with open(f"/proc/{each}/stat", encoding="ascii") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / os.sysconf("SC_CLK_TCK")


async def import_once(client: httpx.AsyncClient, path: Path) -> tuple[dict[str, Any], float, float]:
    """Upload and poll to the end: (final status, upload seconds, total seconds)."""
    started = time.perf_counter()
    with path.open("rb") as export:
        response = await client.post(
            "/api/v1/chat/import", files={"file": ("conversations.json", export)}
        )
    response.raise_for_status()
    uploaded = time.perf_counter() - started
    status: dict[str, Any] = response.json()
    while status["status"] == "running":
        await asyncio.sleep(0.5)
        polled = await client.get(f"/api/v1/chat/imports/{status['import_id']}")
        polled.raise_for_status()
        status = polled.json()
    return status, uploaded, time.perf_counter() - started


async def run(args: argparse.Namespace) -> None:
    print(machine_line(), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        export = Path(tmp) / "conversations.json"
        began = time.perf_counter()
        with export.open("w", encoding="utf-8") as target:
            messages = write_export(target, args.conversations, args.seed)
        size = export.stat().st_size
        print(
            f"export: {args.conversations:,} conversations, {messages:,} messages, "
            f"{size / 1e6:.1f} MB (written in {time.perf_counter() - began:.1f}s)",
            flush=True,
        )
        for database in args.database:
            workdir = Path(tmp) / database
            workdir.mkdir()
            port = free_port()
            async with (
                fresh_database(database, workdir, args.postgres_url) as database_url,
                run_process(
                    "backend",
                    ["-m", "app"],
                    {
                        "HOST": "127.0.0.1",
                        "PORT": str(port),
                        "DATABASE_URL": database_url,
                        "MIGRATE_ON_STARTUP": "false",
                        "IMPORT_MAX_BYTES": str(max(size + 1, 512 * 1024 * 1024)),
                        "LOG_LEVEL": "WARNING",
                    },
                    workdir,
                    port,
                    "/readyz",
                ) as backend,
                httpx.AsyncClient(base_url=backend.base_url, timeout=600) as client,
            ):
                pid = backend.process.pid
                before = memory_kib(pid, "VmRSS")
                cpu_before = cpu_seconds(pid)
                status, uploaded, total = await import_once(client, export)
                cpu = cpu_seconds(pid) - cpu_before
                peak = memory_kib(pid, "VmHWM")
            assert status["status"] == "done", status
            assert status["imported"] == args.conversations, status
            print(
                f"{database}: {status['imported']:,} imported in {total:.1f}s "
                f"(upload {uploaded:.1f}s): {status['imported'] / total:,.0f} conversations/s, "
                f"{messages / total:,.0f} messages/s; service CPU {cpu:.1f}s "
                f"({cpu / messages * 1000:.2f} ms per message); "
                f"service RSS {before / 1024:.0f} MiB before, peak (VmHWM) {peak / 1024:.0f} MiB; "
                f"load {os.getloadavg()[0]:.2f}",
                flush=True,
            )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.imports",
        description="Import a generated ChatGPT-shaped export through POST /api/v1/chat/import.",
    )
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument(
        "--database",
        choices=["sqlite", "postgresql"],
        action="append",
        help="database of the service; repeat for both (default both)",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="PostgreSQL server to create the scratch database on (env BENCH_POSTGRES_URL)",
    )
    args = parser.parse_args(argv)
    args.database = args.database or ["sqlite", "postgresql"]
    if args.conversations < 1:
        parser.error("--conversations must be >= 1")
    return args


def main() -> None:
    asyncio.run(run(parse_args()))


if __name__ == "__main__":
    main()
