"""What the load benchmarks share: their load-generating processes, CPU time of processes (from
/proc), the machine's CPU use, the open-files limit, and a description of the machine."""

import asyncio
import multiprocessing
import os
import platform
import re
import resource
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata as package_metadata
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Self

_TICKS = os.sysconf("SC_CLK_TCK")


def raise_open_files_limit() -> tuple[int, int]:
    """Raise this process's soft limit on open files to the hard limit, as a deployment would
    (`ulimit -n`); the processes it starts inherit it. The (soft, hard) limits now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def serve_plans(conn: Connection, run: Callable[[Any], Coroutine[Any, Any, Any]]) -> None:
    """The loop of a load-generating process: runs each plan it is sent on uvloop and sends
    back the result, until it is sent None."""
    import uvloop

    raise_open_files_limit()
    while True:
        plan = conn.recv()
        if plan is None:
            return
        conn.send(uvloop.run(run(plan)))


@dataclass
class ClientProcesses:
    """Load-generating processes (spawned, each running `serve_plans`), and a pipe to each."""

    processes: list[multiprocessing.process.BaseProcess]
    pipes: list[Connection]

    @classmethod
    def start(cls, count: int, target: Callable[[Connection], None]) -> Self:
        context = multiprocessing.get_context("spawn")
        clients = cls([], [])
        for _ in range(count):
            ours, theirs = context.Pipe()
            process = context.Process(target=target, args=(theirs,), daemon=True)
            process.start()
            clients.processes.append(process)
            clients.pipes.append(ours)
        return clients

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.pid is not None]

    async def ask(self, plans: Sequence[Any]) -> list[Any]:
        """Run one plan in each of the first `len(plans)` processes; their results, in order."""
        used = self.pipes[: len(plans)]
        for pipe, plan in zip(used, plans, strict=True):
            pipe.send(plan)
        loop = asyncio.get_running_loop()
        return list(await asyncio.gather(*(loop.run_in_executor(None, p.recv) for p in used)))

    def stop(self) -> None:
        for pipe in self.pipes:
            with suppress(OSError):
                pipe.send(None)
        for process in self.processes:
            process.join(5)
            if process.is_alive():
                process.kill()


def connections_by_process(port: int) -> list[int]:
    """How many of the established connections to `port` each server process holds (ss)."""
    out = subprocess.run(
        ["ss", "-tnpH", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return sorted(Counter(re.findall(r"pid=(\d+)", out)).values(), reverse=True)


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (children read from /proc/*/task/*/children)."""
    found = [pid]
    index = 0
    while index < len(found):
        current = found[index]
        index += 1
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            found.extend(int(child) for child in children)
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes (those that still exist), in seconds."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / _TICKS


@dataclass
class MachineCpu:
    """The whole machine's CPU time, busy and total (all cores), from /proc/stat."""

    busy: float
    total: float

    @staticmethod
    def now() -> "MachineCpu":
        with open("/proc/stat", encoding="ascii") as stat:
            values = [int(v) for v in stat.readline().split()[1:]]
        idle = values[3] + values[4]  # idle, iowait
        return MachineCpu((sum(values) - idle) / _TICKS, sum(values) / _TICKS)

    def busy_cores_since(self, before: "MachineCpu") -> float:
        """Cores busy on average between `before` and this reading."""
        total = self.total - before.total
        return (self.busy - before.busy) / total * (os.cpu_count() or 1) if total else 0.0


class CpuMeter:
    """CPU time of groups of processes (a service and its workers, the upstream, ...) over a
    window, as cores used on average."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self._roots = groups
        self._start: dict[str, float] = {}
        self._machine = MachineCpu.now()
        self._started = time.perf_counter()
        self.restart()

    def restart(self) -> None:
        self._start = {name: cpu_seconds(self._pids(name)) for name in self._roots}
        self._machine = MachineCpu.now()
        self._started = time.perf_counter()

    def _pids(self, name: str) -> list[int]:
        return [pid for root in self._roots[name] for pid in descendants(root)]

    def cores(self) -> dict[str, float]:
        """Cores used by each group since `restart`, and by the whole machine ("machine")."""
        elapsed = time.perf_counter() - self._started
        used = {
            name: (cpu_seconds(self._pids(name)) - start) / elapsed
            for name, start in self._start.items()
        }
        used["machine"] = MachineCpu.now().busy_cores_since(self._machine)
        return used


def load_average() -> str:
    with open("/proc/loadavg", encoding="ascii") as loadavg:
        return " ".join(loadavg.read().split()[:3])


def machine_line() -> str:
    """One line: date, CPUs, platform, Python, the server packages."""
    cpu = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = ", ".join(
        f"{name} {package_metadata.version(name)}"
        for name in ("fastapi", "uvicorn", "uvloop", "httptools", "sqlalchemy", "asyncpg", "openai")
    )
    return (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {os.cpu_count()} CPUs ({cpu}); "
        f"{platform.platform()}; Python {platform.python_version()}; {versions}; "
        f"load average {load_average()}"
    )
