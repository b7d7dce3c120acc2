"""Request ids: every response carries one, and an unexpected error is logged once, under the
id its 500 carries. Over the real server, since uvicorn's own logging is part of the question."""

import logging
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from app.deps import get_database
from app.kit import logging as app_logging
from app.main import create_app
from tests.api.helpers import SESSIONS
from tests.conftest import LiveServer, make_settings, serve

GENERATED_ID = re.compile(r"[0-9a-f]{32}")


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def collected_logs() -> Iterator[list[logging.LogRecord]]:
    """Every record logged meanwhile, the app's and uvicorn's (whose logger does not propagate
    to the root logger)."""
    collector = _Collector()
    loggers = [logging.getLogger(), logging.getLogger("uvicorn")]
    for logger in loggers:
        logger.addHandler(collector)
    try:
        yield collector.records
    finally:
        for logger in loggers:
            logger.removeHandler(collector)


@pytest.fixture(scope="module")
async def broken(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveServer]:
    """The app served with a database dependency that fails, and records the request id it
    was called under (`app.state.seen_request_ids`)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('request-id') / 'unused.db'}"
    app = create_app(make_settings(url))
    seen: list[str | None] = []

    async def failing_database() -> None:
        seen.append(app_logging.current_request_id())
        raise RuntimeError("the database dependency broke")

    app.dependency_overrides[get_database] = failing_database
    app.state.seen_request_ids = seen
    async with serve(app) as live:
        yield live


def tracebacks(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [record for record in records if record.exc_info or record.levelno >= logging.ERROR]


async def test_an_unexpected_error_is_logged_once_under_the_id_the_response_carries(
    broken: LiveServer,
) -> None:
    with collected_logs() as records:
        response = await broken.client.get(
            SESSIONS, params={"user_id": "u"}, headers={"X-Request-ID": "req-42.a:b"}
        )

    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error", "request_id": "req-42.a:b"}
    assert response.headers["x-request-id"] == "req-42.a:b"
    errors = tracebacks(records)
    assert len(errors) == 1, [record.getMessage() for record in errors]
    assert "req-42.a:b" in errors[0].getMessage()
    assert errors[0].exc_info is not None
    assert "the database dependency broke" in str(errors[0].exc_info[1])
    # Code running for the request (log formatters too) sees the same id.
    assert broken.app.state.seen_request_ids[-1] == "req-42.a:b"


async def test_a_500_without_a_request_id_gets_a_new_one(broken: LiveServer) -> None:
    with collected_logs() as records:
        response = await broken.client.get(SESSIONS, params={"user_id": "u"})

    request_id = response.json()["request_id"]
    assert GENERATED_ID.fullmatch(request_id)
    assert response.headers["x-request-id"] == request_id
    errors = tracebacks(records)
    assert len(errors) == 1
    assert request_id in errors[0].getMessage()


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The app in process; these requests need no database."""
    app = create_app(make_settings(f"sqlite:///{tmp_path / 'unused.db'}"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        yield client


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/healthz", 200), ("GET", "/nowhere", 404), ("DELETE", "/healthz", 405)],
)
async def test_every_response_carries_a_new_id(
    client: httpx.AsyncClient, method: str, path: str, status: int
) -> None:
    first, second = await client.request(method, path), await client.request(method, path)

    assert first.status_code == second.status_code == status
    assert GENERATED_ID.fullmatch(first.headers["x-request-id"])
    assert GENERATED_ID.fullmatch(second.headers["x-request-id"])
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


@pytest.mark.parametrize(
    "given", ["0f8e1c2a-9b7d-4c3e-a1f0-123456789abc", "Root=1-5759e988-bd862e3fe1be46a994272793"]
)
async def test_a_sane_request_id_is_kept(client: httpx.AsyncClient, given: str) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": given})

    assert response.headers["x-request-id"] == given


@pytest.mark.parametrize(
    "given", ["", "a" * 129, "two words", 'quote"d', "semi;colon", "caf\u00e9"]
)
async def test_an_unusable_request_id_is_replaced(client: httpx.AsyncClient, given: str) -> None:
    response = await client.get("/healthz", headers={b"X-Request-ID": given.encode()})

    assert response.status_code == 200
    assert GENERATED_ID.fullmatch(response.headers["x-request-id"])
