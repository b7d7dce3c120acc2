"""Start-up safety: open mode (no verification key) only on loopback unless explicitly allowed,
and a clear warning whenever it is on."""

import asyncio
import logging
import os
import pty
import select
import shutil
import socket
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from app.config import PROJECT_ROOT, Settings
from app.main import (
    UnsafeConfiguration,
    check_exposure,
    create_app,
    warn_about_unused_model_settings,
)
from tests.api.test_header_limit import send_head_slowly
from tests.conftest import POSTGRES_ADMIN_URL, DatabaseFactory, make_settings
from tests.tokens import ISSUER, JWT_SECRET

NETWORK_HOSTS = ["0.0.0.0", "192.168.1.10", "::", "10.0.0.5", "chat.internal", "example.com"]
LOOPBACK_HOSTS = ["127.0.0.1", "127.0.0.2", "::1", "localhost"]


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """A database these tests never connect to."""
    return f"sqlite:///{tmp_path / 'startup.db'}"


def open_mode(database_url: str, **overrides: Any) -> Settings:
    return make_settings(database_url, **overrides)


def auth_mode(database_url: str, **overrides: Any) -> Settings:
    return make_settings(database_url, auth_jwt_secret=JWT_SECRET, auth_issuer=ISSUER, **overrides)


# --- check_exposure / create_app ------------------------------------------------------------


@pytest.mark.parametrize("host", NETWORK_HOSTS)
def test_open_mode_refuses_a_network_address(database_url: str, host: str) -> None:
    settings = open_mode(database_url, host=host)
    assert not settings.auth_enabled

    with pytest.raises(UnsafeConfiguration) as refused:
        check_exposure(settings)
    message = str(refused.value)
    assert "AUTH_JWT_SECRET" in message
    assert "OPEN_MODE_ALLOW_NETWORK" in message
    assert host in message

    with pytest.raises(UnsafeConfiguration):
        create_app(settings)


@pytest.mark.parametrize("host", NETWORK_HOSTS)
def test_open_mode_on_the_network_when_explicitly_allowed(
    database_url: str, host: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = open_mode(database_url, host=host, open_mode_allow_network=True)

    with caplog.at_level(logging.WARNING, logger="app.main"):
        check_exposure(settings)
        create_app(settings)

    assert any(
        record.levelno == logging.WARNING and "OPEN MODE" in record.getMessage()
        for record in caplog.records
    ), caplog.text


@pytest.mark.parametrize("host", NETWORK_HOSTS)
def test_authenticated_mode_may_serve_on_the_network(database_url: str, host: str) -> None:
    settings = auth_mode(database_url, host=host)
    check_exposure(settings)
    create_app(settings)


def test_authenticated_mode_with_a_jwks_url_may_serve_on_the_network(database_url: str) -> None:
    settings = make_settings(
        database_url, host="0.0.0.0", auth_jwks_url="http://127.0.0.1:1/jwks.json"
    )
    check_exposure(settings)
    create_app(settings)


@pytest.mark.parametrize("host", LOOPBACK_HOSTS)
def test_open_mode_may_serve_on_loopback(database_url: str, host: str) -> None:
    settings = open_mode(database_url, host=host)
    check_exposure(settings)
    create_app(settings)


def test_open_mode_network_permission_is_read_from_the_environment(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AUTH_JWT_SECRET", "AUTH_JWKS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOST", "0.0.0.0")
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("OPEN_MODE_ALLOW_NETWORK", "false")
    with pytest.raises(UnsafeConfiguration):
        check_exposure(Settings(_env_file=None))

    monkeypatch.setenv("OPEN_MODE_ALLOW_NETWORK", "true")
    check_exposure(Settings(_env_file=None))


@pytest.mark.parametrize(
    ("provider", "key", "base_url", "warned"),
    [
        ("knowledge_base", "sk-test", None, "OPENAI_API_KEY is set, but ASSISTANT_PROVIDER="),
        ("echo", None, "http://127.0.0.1:8001/v1", "OPENAI_BASE_URL is set"),
        ("openai", "sk-test", None, None),
        ("knowledge_base", None, None, None),
    ],
)
def test_model_settings_without_the_model_provider_log_a_warning(
    database_url: str,
    caplog: pytest.LogCaptureFixture,
    provider: str,
    key: str | None,
    base_url: str | None,
    warned: str | None,
) -> None:
    settings = make_settings(
        database_url, assistant_provider=provider, openai_api_key=key, openai_base_url=base_url
    )
    with caplog.at_level(logging.WARNING, logger="app.main"):
        warn_about_unused_model_settings(settings)
    messages = [record.getMessage() for record in caplog.records]
    if warned is None:
        assert messages == []
    else:
        [message] = messages
        assert warned in message
        assert "ASSISTANT_PROVIDER=openai" in message
        assert "sk-test" not in message


# --- python -m app --------------------------------------------------------------------------


def run_cli(
    tmp_path: Path, *, prefix: tuple[str, ...] = (), **env: str
) -> subprocess.CompletedProcess[str]:
    """`python -m app` (after `prefix`) with only `env` configured (run outside the repository
    so that no `.env` file is read)."""
    process_env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(PROJECT_ROOT),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        **env,
    }
    return subprocess.run(
        [*prefix, sys.executable, "-m", "app"],
        cwd=tmp_path,
        env=process_env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_cli_refuses_to_serve_open_mode_on_the_network(tmp_path: Path, host: str) -> None:
    result = run_cli(tmp_path, HOST=host, PORT="1")

    assert result.returncode != 0
    assert "refusing to serve" in result.stderr
    assert "AUTH_JWT_SECRET" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    # It stopped before start-up: no migration created the database.
    assert not (tmp_path / "cli.db").exists()


async def test_cli_serves_with_the_request_head_limit(tmp_path: Path) -> None:
    """`python -m app` runs uvicorn with the protocol that stops reading an oversized head."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(PROJECT_ROOT),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "PORT": str(port),
        "MAX_REQUEST_HEADER_BYTES": "4096",
        "LOG_LEVEL": "WARNING",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app", cwd=tmp_path, env=env, stderr=asyncio.subprocess.DEVNULL
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        async with asyncio.timeout(30), httpx.AsyncClient(base_url=base_url) as client:
            # A subprocess has nothing to await: poll until it serves.
            while True:
                assert process.returncode is None
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            sent, answer = await send_head_slowly(base_url, 8 * 1024 * 1024)
    finally:
        process.kill()
        await process.wait()

    assert answer.startswith(b"HTTP/1.1 431 ")
    assert b"limit 4096 bytes" in answer
    assert sent < 8 * 1024 * 1024


def test_ctrl_c_in_a_terminal_stops_the_service_cleanly(tmp_path: Path) -> None:
    """Ctrl-C in the terminal `make run` was started from: a clean shutdown, status 0 (so make
    prints no error line), no traceback."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(PROJECT_ROOT),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "PORT": str(port),
    }
    pid, terminal = pty.fork()
    if pid == 0:  # the child: the service, on the terminal's side
        os.chdir(tmp_path)
        os.execve(sys.executable, [sys.executable, "-m", "app"], env)
    output = read_terminal_until(terminal, b"CTRL+C to quit")
    os.write(terminal, b"\x03")  # the terminal sends SIGINT to its foreground process
    output += read_terminal_until(terminal, None)
    _, status = os.waitpid(pid, 0)
    os.close(terminal)

    text = output.decode(errors="replace")
    assert "Finished server process" in text, text
    assert "Traceback" not in text, text
    assert os.waitstatus_to_exitcode(status) == 0, text


def read_terminal_until(terminal: int, marker: bytes | None, timeout: float = 30.0) -> bytes:
    """What the terminal shows until `marker` appears (None: until the process closes it)."""
    output = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([terminal], [], [], deadline - time.monotonic())
        if not ready:
            break
        try:
            chunk = os.read(terminal, 4096)
        except OSError:  # the other side closed: the process ended
            return output
        if not chunk:
            return output
        output += chunk
        if marker is not None and marker in output:
            return output
    pytest.fail(f"timed out waiting for {marker!r} on the terminal:\n{output.decode()}")


# --- A database that cannot be used ---------------------------------------------------------

SECRET = "secret-pw-9f3"


def assert_one_line_error(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    """The process said what is wrong in one line, with none of the password, and failed."""
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for text in expected:
        assert text in lines[0]
    assert SECRET not in result.stderr
    return lines[0]


@pytest.fixture
async def postgres_url() -> str:
    """The test server's URL, once it is known to answer (skipped, or failed in CI, if not)."""
    admin = await DatabaseFactory._connect_admin()
    await admin.close()
    return POSTGRES_ADMIN_URL


def test_cli_names_an_unreachable_postgresql(tmp_path: Path) -> None:
    result = run_cli(tmp_path, DATABASE_URL=f"postgresql://chat:{SECRET}@127.0.0.1:1/chat")

    assert_one_line_error(
        result, "cannot connect to PostgreSQL at 127.0.0.1:1", "is PostgreSQL running"
    )


def test_cli_names_a_missing_database(tmp_path: Path, postgres_url: str) -> None:
    name = f"chat_missing_{uuid.uuid4().hex[:8]}"
    url = make_url(postgres_url).set(database=name, password=SECRET)

    result = run_cli(tmp_path, DATABASE_URL=url.render_as_string(hide_password=False))

    assert_one_line_error(result, f'database "{name}" does not exist', f"createdb {name}")


def test_cli_names_a_user_the_server_refuses(tmp_path: Path, postgres_url: str) -> None:
    user = f"no_such_role_{uuid.uuid4().hex[:8]}"
    url = make_url(postgres_url).set(username=user, password=SECRET)

    result = run_cli(tmp_path, DATABASE_URL=url.render_as_string(hide_password=False))

    line = assert_one_line_error(result, f'user "{user}"', "DATABASE_URL")
    assert "refused" in line or "authentication failed" in line


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://chat:{SECRET}@db:not-a-port/chat",
        f"mysql://chat:{SECRET}@db/chat",
        f"chat:{SECRET}@db/chat",
    ],
)
def test_cli_names_a_malformed_database_url(tmp_path: Path, url: str) -> None:
    result = run_cli(tmp_path, DATABASE_URL=url)

    assert_one_line_error(result, "invalid setting DATABASE_URL")


def test_cli_names_a_sqlite_folder_it_cannot_write(tmp_path: Path) -> None:
    folder = tmp_path / "read-only"
    folder.mkdir(mode=stat.S_IRUSR | stat.S_IXUSR)
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:
        # root writes anywhere; without this capability it obeys the folder's permissions.
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv to drop CAP_DAC_OVERRIDE")
        prefix = (setpriv, "--bounding-set=-dac_override,-dac_read_search")

    result = run_cli(tmp_path, prefix=prefix, DATABASE_URL=f"sqlite:///{folder / 'chat.db'}")

    assert_one_line_error(result, f"SQLite database {folder / 'chat.db'}", "writable")
    assert list(folder.iterdir()) == []


def test_cli_names_a_sqlite_folder_it_cannot_create(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")

    result = run_cli(tmp_path, DATABASE_URL=f"sqlite:///{tmp_path / 'a-file' / 'chat.db'}")

    assert_one_line_error(result, "SQLite database", "folder")


# --- The open-mode warning at start-up ------------------------------------------------------


async def run_lifespan(settings: Settings) -> None:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        pass


def open_mode_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.levelno == logging.WARNING and "OPEN MODE" in record.getMessage()
    ]


async def test_open_mode_start_up_logs_a_warning(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="app.main"):
        await run_lifespan(open_mode(database_url))

    warnings = open_mode_warnings(caplog)
    assert len(warnings) == 1, caplog.text
    assert warnings[0].name == "app.main"
    assert "AUTH_JWT_SECRET" in warnings[0].getMessage()


async def test_authenticated_start_up_logs_no_open_mode_warning(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        await run_lifespan(auth_mode(database_url, host="0.0.0.0"))

    assert open_mode_warnings(caplog) == []
