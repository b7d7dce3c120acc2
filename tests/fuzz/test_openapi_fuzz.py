"""Property-based fuzzing of the whole API from its own OpenAPI document, with schemathesis.

Each configuration is the real service: uvicorn in a subprocess, configured only through
environment variables, on a fresh database migrated beforehand. Four servers, {open, auth} x
{sqlite, postgresql}. With authentication on, one run sends a valid token for one user on every
request, and another sends none or a made-up one, so that the 401 answers are checked too.

Schemathesis generates requests that fit the schema and requests that break it. Every answer
must be free of 5xx, have a documented status code, content type and headers and a body that fits
its documented schema; a request that breaks the schema must be rejected (4xx), and one that fits
it must not be (400, 413 or 422). The assistant is the default one, the project's knowledge base.

Deterministic (Hypothesis' `derandomize`), so CI is reproducible. Search harder locally with
`FUZZ_EXAMPLES=500 .venv/bin/pytest tests/fuzz` (examples per operation and run; default 25).
The anonymous runs take a fifth of that (at least 5): every request of theirs is refused by
authentication before its parameters are read, so more examples check the same 401 again.

Schemathesis' own pytest integration (`schemathesis.pytest.from_fixture`) fails on pytest 9.2
(`'Function' object has no attribute '_nodeid'`), so Hypothesis is driven here directly, with
`APIOperation.as_strategy()`. That is schemathesis' fuzzing phase (both generation modes); its
`coverage` and `stateful` phases are for the CLI: `schemathesis run URL/openapi.json`.
"""

import asyncio
import contextlib
import hashlib
import json
import os
import re
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import CheckFunction, not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.config import PROJECT_ROOT, Settings
from app.idempotency.keys import KEY_MAX_CHARS, KEY_PATTERN
from app.main import create_app
from tests.conftest import DatabaseFactory, make_settings
from tests.tokens import ISSUER, JWT_SECRET, hs256_token

Operation = schemathesis.APIOperation[Any, Any, Any, Any]
Case = schemathesis.Case[Any]

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
ANONYMOUS_FUZZ_EXAMPLES = max(5, FUZZ_EXAMPLES // 5)
FUZZ_USER = "fuzz-user"
# Generous, for a busy 2-core CI machine; reached only when something is wrong.
READY_TIMEOUT_SECONDS = 60.0
REQUEST_TIMEOUT_SECONDS = 30.0
# Sessions that exist when an operation on `/sessions/{session_id}` is fuzzed, so that the
# generated requests reach more than "404 not found".
SEEDED_SESSIONS = 3

CHECKS: list[CheckFunction] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
    positive_data_acceptance,
]
# The statuses that count as rejecting a request that breaks the schema. Schemathesis' default
# list also accepts 5xx (left to `not_a_server_error` here) and statuses this API never sends;
# 413 is how the body-size limit rejects an oversized body before it is parsed.
REJECTION_STATUSES = [400, 401, 403, 404, 405, 413, 422]


@dataclass(frozen=True)
class ServerConfig:
    auth: bool
    backend: str

    @property
    def name(self) -> str:
        return f"{'auth' if self.auth else 'open'}-{self.backend}"


@dataclass(frozen=True)
class Target:
    """One fuzzing run: a server configuration, and whether requests carry a valid token."""

    server: ServerConfig
    with_token: bool = False

    @property
    def anonymous(self) -> bool:
        """Requests carry no valid token to a server that asks for one."""
        return self.server.auth and not self.with_token

    @property
    def id(self) -> str:
        if not self.server.auth:
            return self.server.name
        return f"{self.server.name}-{'token' if self.with_token else 'anonymous'}"


TARGETS = [
    Target(ServerConfig(auth=False, backend="sqlite")),
    Target(ServerConfig(auth=False, backend="postgresql")),
    Target(ServerConfig(auth=True, backend="sqlite"), with_token=True),
    Target(ServerConfig(auth=True, backend="sqlite"), with_token=False),
    Target(ServerConfig(auth=True, backend="postgresql"), with_token=True),
    Target(ServerConfig(auth=True, backend="postgresql"), with_token=False),
]


@dataclass
class Server:
    """The service in a subprocess, serving a loopback socket this process bound."""

    config: ServerConfig
    base_url: str
    log_path: Path
    process: asyncio.subprocess.Process
    sock: socket.socket

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def log_since(self, offset: int) -> str:
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode("utf-8", "replace")

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), timeout=15)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        self.sock.close()


def server_environment(database_url: str, *, auth: bool) -> dict[str, str]:
    """The settings this test chooses, and none inherited from the caller's environment."""
    setting_names = {name.upper() for name in Settings.model_fields}
    env = {key: value for key, value in os.environ.items() if key.upper() not in setting_names}
    env.update(
        HOST="127.0.0.1",
        DATABASE_URL=database_url,
        MIGRATE_ON_STARTUP="false",
        # The default assistant (answers from the project's knowledge base), without delays.
        ASSISTANT_PROVIDER="knowledge_base",
        KNOWLEDGE_BASE_DIR=str(PROJECT_ROOT / "knowledge"),
        ASSISTANT_STREAM_DELAY_MS="0",
        LOG_LEVEL="WARNING",
        SHUTDOWN_GRACE_SECONDS="5",
    )
    if auth:
        env.update(AUTH_JWT_SECRET=JWT_SECRET, AUTH_ISSUER=ISSUER, RATE_LIMIT_ENABLED="false")
    return env


async def start_server(config: ServerConfig, database_url: str, workdir: Path) -> Server:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    # Listening before the server starts: early requests wait in the backlog, no polling needed.
    sock.listen(128)
    log_path = workdir / f"{config.name}.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "app.main:create_app",
            "--app-dir",
            str(PROJECT_ROOT),
            "--fd",
            str(sock.fileno()),
            "--log-level",
            "warning",
            "--timeout-graceful-shutdown",
            "5",
            pass_fds=[sock.fileno()],
            # Not the project directory, so that no `.env` file is read.
            cwd=workdir,
            env=server_environment(database_url, auth=config.auth),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    server = Server(config, f"http://127.0.0.1:{sock.getsockname()[1]}", log_path, process, sock)
    try:
        await _wait_ready(server)
    except BaseException:
        await server.stop()
        raise
    return server


async def _wait_ready(server: Server) -> None:
    """Until /readyz answers 200, or the server exits (then its log says why)."""

    async def ready() -> httpx.Response:
        async with httpx.AsyncClient(timeout=READY_TIMEOUT_SECONDS) as client:
            return await client.get(f"{server.base_url}/readyz")

    probe = asyncio.ensure_future(ready())
    exited = asyncio.ensure_future(server.process.wait())
    done, pending = await asyncio.wait({probe, exited}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    if probe in done and probe.exception() is None and probe.result().status_code == 200:
        return
    if probe in done:
        error = probe.exception()
        reason = f"is not ready: {error!r}" if error else f"answered {probe.result().text}"
    else:
        reason = f"exited with status {server.process.returncode}"
    pytest.fail(f"the {server.config.name} server {reason}\n{server.log_since(0)}")


@dataclass
class ServerPool:
    """Servers started on first use and kept for the session."""

    databases: DatabaseFactory
    workdir: Path
    servers: dict[ServerConfig, Server] = field(default_factory=dict)

    async def get(self, config: ServerConfig) -> Server:
        if config not in self.servers:
            url = await self.databases.create_migrated(config.backend)
            self.servers[config] = await start_server(config, url, self.workdir)
        return self.servers[config]

    async def stop(self) -> None:
        await asyncio.gather(*(server.stop() for server in self.servers.values()))


@dataclass
class FuzzTarget:
    target: Target
    server: Server
    http: requests.Session
    # Sent with every generated request.
    headers: dict[str, str]
    # What a client that may write needs (the valid token when authentication is on).
    owner_headers: dict[str, str]


@pytest.fixture(scope="session")
async def fuzz_servers(
    database_factory: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ServerPool]:
    pool = ServerPool(database_factory, tmp_path_factory.mktemp("fuzz"))
    yield pool
    await pool.stop()


@pytest.fixture(params=TARGETS, ids=[target.id for target in TARGETS])
async def fuzz_target(
    request: pytest.FixtureRequest, fuzz_servers: ServerPool
) -> AsyncIterator[FuzzTarget]:
    target: Target = request.param
    server = await fuzz_servers.get(target.server)
    token = {"Authorization": f"Bearer {hs256_token(FUZZ_USER)}"}
    with requests.Session() as http:
        yield FuzzTarget(
            target=target,
            server=server,
            http=http,
            headers=token if target.with_token else {},
            owner_headers=token if target.server.auth else {},
        )


@pytest.fixture
def fuzz_schema(fuzz_target: FuzzTarget) -> schemathesis.BaseSchema:
    """The schema as the server under test serves it."""
    config = schemathesis.Config.from_dict(
        {
            "generation": {
                # The schema declares bearer authentication; schemathesis then generates the
                # Authorization header itself (made up, or left out in invalid requests). Only
                # the anonymous runs want that: the others send a valid token, or none in open
                # mode, where a token is optional (the schema cannot say so per mode).
                "with-security-parameters": fuzz_target.target.anonymous,
            },
            "checks": {"negative_data_rejection": {"expected-statuses": REJECTION_STATUSES}},
        }
    )
    return schemathesis.openapi.from_url(
        f"{fuzz_target.server.base_url}/openapi.json", config=config
    )


def _documented_operations() -> list[tuple[str, str]]:
    """(method, path) of every operation, from the application itself (no server needed)."""
    spec = create_app(make_settings("sqlite:///unused.db")).openapi()
    return [
        (method.upper(), path)
        for path, operations in spec["paths"].items()
        for method in operations
    ]


OPERATIONS = _documented_operations()


def _seed_sessions(target: FuzzTarget) -> list[tuple[str, str]]:
    """Sessions of the fuzzing user (in open mode, of nobody), with a message and a reply:
    (session id, reply id)."""
    seeded = []
    for _ in range(SEEDED_SESSIONS):
        session_id = f"fuzz-{uuid.uuid4().hex}"
        response = target.http.post(
            f"{target.server.base_url}/api/v1/chat",
            json={"message": "Hello", "session_id": session_id},
            headers=target.owner_headers,
            timeout=REQUEST_TIMEOUT_SECONDS,
        )
        assert response.status_code == 200, response.text
        seeded.append((session_id, response.json()["message_id"]))
    return seeded


# The feedback export: its cursors are its own, issued once there is feedback to list.
FEEDBACK_LIST = "/api/v1/feedback"
# Routes whose `cursor` is opaque (any cursor the server did not issue is a 422). The message
# tree's cursor is a number: every value its pattern allows is valid.
OPAQUE_CURSORS = {"/api/v1/chat/sessions", FEEDBACK_LIST}


def _seed_shares(target: FuzzTarget) -> list[str]:
    """Links to seeded sessions, so that operations on `{share_id}` reach more than 404."""
    share_ids = []
    for session_id, _ in _seed_sessions(target):
        response = target.http.post(
            f"{target.server.base_url}/api/v1/chat/sessions/{session_id}/shares",
            headers=target.owner_headers,
            timeout=REQUEST_TIMEOUT_SECONDS,
        )
        assert response.status_code == 201, response.text
        share_ids.append(response.json()["share_id"])
    return share_ids


def _seed_labels(target: FuzzTarget, path: str) -> list[str]:
    """Folders (or tags, on `{tag_id}` routes) holding seeded sessions, so that operations on
    them reach more than 404: their ids."""
    ids = []
    for n, (session_id, _) in enumerate(_seed_sessions(target)):
        base = target.server.base_url
        folder = target.http.post(
            f"{base}/api/v1/chat/folders",
            json={"name": f"fuzz {uuid.uuid4().hex}"},
            headers=target.owner_headers,
            timeout=REQUEST_TIMEOUT_SECONDS,
        )
        assert folder.status_code == 201, folder.text
        tag = f"fuzz {uuid.uuid4().hex[:8]} {n}"
        filed = target.http.patch(
            f"{base}/api/v1/chat/sessions/{session_id}",
            json={"folder_id": folder.json()["folder_id"], "tags": [tag]},
            headers=target.owner_headers,
            timeout=REQUEST_TIMEOUT_SECONDS,
        )
        assert filed.status_code == 200, filed.text
        if "{tag_id}" not in path:
            ids.append(folder.json()["folder_id"])
            continue
        tags = target.http.get(
            f"{base}/api/v1/chat/tags",
            headers=target.owner_headers,
            timeout=REQUEST_TIMEOUT_SECONDS,
        )
        ids += [t["tag_id"] for t in tags.json()["tags"] if t["name"] == tag]
    return ids


# The upload's bytes are a file that the schema cannot describe (an export): a request that fits
# the schema is still refused (422) when its file is not an export, so that route is checked
# without `positive_data_acceptance`.
IMPORT = "/api/v1/chat/import"


def _seed_imports(target: FuzzTarget) -> list[str]:
    """Finished imports of the fuzzing user, so that operations on `{import_id}` reach more
    than 404: their ids."""
    export = {
        "session_id": "exported",
        "title": "Imported",
        "created_at": "2026-12-01T10:00:00Z",
        "updated_at": "2026-12-01T10:00:00Z",
        "messages": [],
    }
    response = target.http.post(
        f"{target.server.base_url}{IMPORT}",
        files={"file": ("chat.json", json.dumps(export).encode())},
        headers=target.owner_headers,
        timeout=REQUEST_TIMEOUT_SECONDS,
    )
    assert response.status_code == 202, response.text
    import_id: str = response.json()["import_id"]
    for _ in range(200):  # until it has ended: another import would get a 409 meanwhile
        status = target.http.get(
            f"{target.server.base_url}/api/v1/chat/imports/{import_id}",
            headers=target.owner_headers,
            timeout=REQUEST_TIMEOUT_SECONDS,
        )
        if status.json()["status"] != "running":
            break
        time.sleep(0.05)
    return [import_id]


def _issued_cursors(target: FuzzTarget, path: str) -> list[str]:
    """Cursors the server really issued for the listing at `path`: a cursor is opaque, so a
    made-up one that matches the documented pattern is still refused (422), and valid requests
    need real ones."""
    seeded = _seed_sessions(target)
    headers = target.owner_headers
    params = {"limit": "1", "include_total": "false"}
    if path == FEEDBACK_LIST:
        for session_id, reply_id in seeded:
            rated = target.http.put(
                f"{target.server.base_url}/api/v1/chat/sessions/{session_id}/messages/"
                f"{reply_id}/feedback",
                json={"rating": "up"},
                headers=headers,
                timeout=REQUEST_TIMEOUT_SECONDS,
            )
            assert rated.status_code == 200, rated.text
        # Only service callers may list everyone's feedback (anyone in open mode).
        if target.target.server.auth:
            headers = {"Authorization": f"Bearer {hs256_token(FUZZ_USER, role='service_role')}"}
        params = {"limit": "1"}
    response = target.http.get(
        f"{target.server.base_url}{path}",
        params=params,
        headers=headers,
        timeout=REQUEST_TIMEOUT_SECONDS,
    )
    assert response.status_code == 200, response.text
    cursor = response.json()["next_cursor"]
    assert isinstance(cursor, str), response.text
    return [cursor]


def _with_issued_cursor(cursors: list[str], case: Case) -> Case:
    if case.query and "cursor" in case.query:
        case.query["cursor"] = cursors[len(str(case.query["cursor"])) % len(cursors)]
        # The issued cursors are the plain listing's; a search (`q`), a folder's or a tag's
        # listing refuses them, as it refuses any cursor but its own.
        for narrowing in ("q", "folder_id", "tag"):
            case.query.pop(narrowing, None)
    return case


def _strategy(
    operation: Operation,
    seeded: list[tuple[str, str]],
    cursors: list[str],
    share_ids: list[str],
    label_ids: list[str],
    import_ids: list[str],
) -> st.SearchStrategy[Case]:
    """Valid and invalid requests; some of the valid ones name an existing session (and on a
    route on a message, its reply) or share link, and the valid ones that page by cursor use
    cursors the server issued."""
    strategies = [
        operation.as_strategy(generation_mode=mode) for mode in schemathesis.GenerationMode
    ]
    if cursors:
        positive = schemathesis.GenerationMode.POSITIVE
        strategies[0] = operation.as_strategy(generation_mode=positive).map(
            partial(_with_issued_cursor, cursors)
        )
    if "{session_id}" in operation.path:
        strategies += [
            operation.as_strategy(path_parameters={"session_id": session_id})
            for session_id, _ in seeded
        ]
    if "{message_id}" in operation.path:
        strategies += [
            operation.as_strategy(
                path_parameters={"session_id": session_id, "message_id": reply_id}
            )
            for session_id, reply_id in seeded
        ]
    if "{share_id}" in operation.path:
        strategies += [
            operation.as_strategy(path_parameters={"share_id": share_id}) for share_id in share_ids
        ]
    for name in ("folder_id", "tag_id"):
        if f"{{{name}}}" in operation.path:
            strategies += [
                operation.as_strategy(path_parameters={name: label_id}) for label_id in label_ids
            ]
    if "{import_id}" in operation.path:
        strategies += [
            operation.as_strategy(path_parameters={"import_id": import_id})
            for import_id in import_ids
        ]
    return st.one_of(strategies).map(_with_request_key)


# The routes that start a reply take an `Idempotency-Key`: one sent before with another request
# is refused (422) whatever its shape, as a cursor the server did not issue is. So a valid key
# is replaced by one derived from the request: the same request (sent again) has the same key.
IDEMPOTENCY_KEY = "Idempotency-Key"


def _with_request_key(case: Case) -> Case:
    key = case.headers.get(IDEMPOTENCY_KEY) if case.headers else None
    if isinstance(key, str) and len(key) <= KEY_MAX_CHARS and re.fullmatch(KEY_PATTERN, key):
        asked = [case.method, case.path, case.path_parameters, case.query, case.body]
        request = json.dumps(asked, sort_keys=True, default=repr).encode()
        case.headers[IDEMPOTENCY_KEY] = hashlib.sha256(request).hexdigest()
    return case


def test_every_operation_is_fuzzed(fuzz_schema: schemathesis.BaseSchema) -> None:
    """The live schema has the operations the tests were collected for, all of them valid."""
    served = set()
    for result in fuzz_schema.get_all_operations():
        assert isinstance(result, Ok), result.err()
        served.add((result.ok().method.upper(), result.ok().path))
    assert served == set(OPERATIONS)


def test_requests_are_authenticated_as_intended(fuzz_target: FuzzTarget) -> None:
    """The runs with a token get past authentication, the anonymous runs do not."""
    response = fuzz_target.http.get(
        f"{fuzz_target.server.base_url}/api/v1/chat/sessions",
        headers=fuzz_target.headers,
        timeout=REQUEST_TIMEOUT_SECONDS,
    )
    assert response.status_code == (401 if fuzz_target.target.anonymous else 200), response.text


@pytest.mark.parametrize(
    ("method", "path"), OPERATIONS, ids=[f"{method} {path}" for method, path in OPERATIONS]
)
def test_operation_conforms_to_its_schema(
    fuzz_target: FuzzTarget, fuzz_schema: schemathesis.BaseSchema, method: str, path: str
) -> None:
    operation = fuzz_schema[path][method]
    seeded = _seed_sessions(fuzz_target) if "{session_id}" in path else []
    share_ids = _seed_shares(fuzz_target) if "{share_id}" in path else []
    labelled = "{folder_id}" in path or "{tag_id}" in path
    label_ids = _seed_labels(fuzz_target, path) if labelled else []
    cursors = _issued_cursors(fuzz_target, path) if path in OPAQUE_CURSORS else []
    import_ids = _seed_imports(fuzz_target) if "{import_id}" in path else []
    checks = [c for c in CHECKS if path != IMPORT or c is not positive_data_acceptance]
    server = fuzz_target.server

    @settings(
        max_examples=ANONYMOUS_FUZZ_EXAMPLES if fuzz_target.target.anonymous else FUZZ_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
            HealthCheck.data_too_large,
        ],
    )
    @given(case=_strategy(operation, seeded, cursors, share_ids, label_ids, import_ids))
    def fuzz(case: Case) -> None:
        log_offset = server.log_size()
        try:
            case.call_and_validate(
                base_url=server.base_url,
                session=fuzz_target.http,
                headers=fuzz_target.headers,
                checks=checks,
                timeout=REQUEST_TIMEOUT_SECONDS,
            )
        except Exception as exc:
            with contextlib.suppress(OSError):
                server_log = server.log_since(log_offset)
                if server_log:
                    exc.add_note(f"Server log ({fuzz_target.target.id}):\n{server_log}")
            raise

    fuzz()
