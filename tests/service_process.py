"""The real service as a subprocess (`python -m app`), as it is deployed, configured only by
environment variables given by the test.

tests/test_graceful_shutdown.py has its own copy specialised for a fake upstream; it can move
onto this one.
"""

import asyncio
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.core.config import PROJECT_ROOT

START_TIMEOUT = 20.0  # seconds for the subprocess to answer /readyz
STOP_TIMEOUT = 10.0


@dataclass
class Service:
    process: asyncio.subprocess.Process
    base_url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _wait_ready(service: Service) -> None:
    """Poll GET /readyz until it answers 200 (a subprocess has nothing to await), bounded."""
    deadline = time.monotonic() + START_TIMEOUT
    async with httpx.AsyncClient(base_url=service.base_url, timeout=2) as client:
        while True:
            if service.process.returncode is not None:
                pytest.fail(f"the service exited at start-up:\n{service.output()}")
            with suppress(httpx.TransportError):
                if (await client.get("/readyz")).status_code == 200:
                    return
            if time.monotonic() > deadline:
                pytest.fail(f"the service was not ready in {START_TIMEOUT}s:\n{service.output()}")
            await asyncio.sleep(0.05)


@asynccontextmanager
async def run_service(
    log_dir: Path, name: str, database_url: str, env: Mapping[str, str]
) -> AsyncIterator[Service]:
    """`python -m app` from a directory without `.env`, on `database_url` (already migrated),
    with `env` on top of a minimal environment; ready when yielded, always killed on the way
    out. Its output goes to `log_dir/<name>.log`."""
    port = free_port()
    full_env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(PROJECT_ROOT),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "DATABASE_URL": database_url,
        "MIGRATE_ON_STARTUP": "false",
        "LOG_LEVEL": "WARNING",
        **env,
    }
    log = log_dir / f"{name}.log"
    with log.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "app",
            cwd=log_dir,
            env=full_env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
        )
    service = Service(process=process, base_url=f"http://127.0.0.1:{port}", log=log)
    try:
        await _wait_ready(service)
        yield service
    finally:
        if process.returncode is None:
            process.kill()
            with suppress(TimeoutError):
                async with asyncio.timeout(STOP_TIMEOUT):
                    await process.wait()
