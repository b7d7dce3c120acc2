"""What an operator sees (issue 15): Prometheus metrics at /metrics (off by default), and
JSON log lines with the request id, route, status, duration and a hashed user."""

import io
import json
import logging
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.kit.logging import JsonFormatter, user_hash
from app.main import create_app
from tests.api.conftest import bearer
from tests.api.helpers import CHAT, SESSIONS, STREAM, send
from tests.conftest import LiveServer, make_settings, serve
from tests.fakes.fixtures import running_fake
from tests.fakes.openai_server import Fail, Respond
from tests.service_process import run_service
from tests.tokens import JWT_SECRET, hs256_token

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
async def metrics_server(migrated_url: str) -> AsyncIterator[LiveServer]:
    settings = make_settings(
        migrated_url, metrics_enabled=True, rate_limit_enabled=True, rate_limit_messages="2/minute"
    )
    async with serve(create_app(settings)) as live:
        yield live


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_are_off_unless_enabled(client: httpx.AsyncClient) -> None:
    assert (await client.get("/metrics")).status_code == 404
    assert "/metrics" not in (await client.get("/openapi.json")).json()["paths"]


async def test_metrics_count_requests_by_route_template_replies_and_refusals(
    metrics_server: LiveServer,
) -> None:
    client = metrics_server.client
    before = await scrape(client)

    sent = await send(client, "hello", session_id="observed")
    await client.get(f"{SESSIONS}/{sent['session_id']}")
    await client.get(f"{SESSIONS}/no-such-session")
    async with client.stream("POST", STREAM, json={"message": "again", "session_id": "observed"}):
        pass
    await client.get("/no/such/path")
    refused = await client.post(CHAT, json={"message": "a third"})
    await metrics_server.app.state.reply_tasks.wait_idle()
    after = await scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    session = "/api/v1/chat/sessions/{session_id}"
    assert delta("chat_http_requests_total", method="POST", route=CHAT, status="200") == 1
    assert delta("chat_http_requests_total", method="GET", route=session, status="200") == 1
    assert delta("chat_http_requests_total", method="GET", route=session, status="404") == 1
    assert delta("chat_http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert delta("chat_http_request_duration_seconds_count", method="POST", route=STREAM) == 1
    assert refused.status_code == 429
    assert delta("chat_rate_limit_refusals_total", limit="messages") == 1
    # Two replies (plain and streamed) were generated, each with a first token.
    assert delta("chat_time_to_first_token_seconds_count") == 2
    assert value(after, "chat_streams_in_progress") == 0
    assert value(after, "chat_replies_in_progress") == 0
    # No raw path is ever a label.
    assert not any("observed" in label_value for _, labels in after for _, label_value in labels)
    assert value(after, "chat_db_pool_connections", state="in_use") >= 0
    assert ("chat_db_pool_connections", frozenset({("state", "idle")})) in after


async def test_metrics_count_upstream_errors_and_tokens(migrated_url: str) -> None:
    """Through the fake OpenAI-compatible server: tokens it reports, and a failure by kind."""
    async with running_fake() as upstream:
        settings = make_settings(
            migrated_url,
            metrics_enabled=True,
            assistant_provider="openai",
            openai_base_url=upstream.api_url,
            openai_max_retries=0,
            # Only the replies' requests: a title request would take the scripted failure.
            title_generation=False,
        )
        async with serve(create_app(settings)) as live:
            before = await scrape(live.client)
            await send(live.client, "count my tokens")
            upstream.fake.queue(Fail(status=500))
            failed = await live.client.post(CHAT, json={"message": "fail, please"})
            after = await scrape(live.client)

    assert failed.status_code == 502
    assert isinstance(upstream.fake.default, Respond)
    assert upstream.fake.default.usage is not None
    prompt, completion = upstream.fake.default.usage

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("chat_tokens_total", direction="prompt") == prompt
    assert delta("chat_tokens_total", direction="completion") == completion
    assert delta("chat_upstream_errors_total", kind="unavailable") == 1


@contextmanager
def json_log_lines(logger_name: str = "") -> Iterator[io.StringIO]:
    """Log records of `logger_name` (and below), formatted as JSON lines, into a buffer."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    target = logging.getLogger(logger_name)
    previous = target.level
    target.addHandler(handler)
    target.setLevel(logging.INFO)
    try:
        yield buffer
    finally:
        target.removeHandler(handler)
        target.setLevel(previous)


async def test_json_access_lines_name_the_request_route_status_duration_and_hashed_user(
    migrated_url: str,
) -> None:
    settings = make_settings(migrated_url, log_format="json", auth_jwt_secret=JWT_SECRET)
    async with serve(create_app(settings)) as live:
        with json_log_lines("app.access") as buffer:
            response = await live.client.get(
                f"{SESSIONS}/missing",
                headers={**bearer(hs256_token("alice@example.com")), "X-Request-ID": "req-42"},
            )
    assert response.status_code == 404
    assert response.headers["X-Request-ID"] == "req-42"
    [line] = [json.loads(text) for text in buffer.getvalue().splitlines()]
    assert line["request_id"] == "req-42"
    assert line["route"] == "/api/v1/chat/sessions/{session_id}"
    assert line["method"] == "GET"
    assert line["status"] == 404
    assert isinstance(line["duration_ms"], float)
    assert line["level"] == "INFO"
    assert line["user"] == user_hash("alice@example.com")
    assert "alice" not in buffer.getvalue()
    assert line["time"].endswith("+00:00")


async def test_text_logs_have_no_access_lines_of_the_app(client: httpx.AsyncClient) -> None:
    """Text logs keep uvicorn's access lines; the app's own are for JSON logs only."""
    with json_log_lines("app.access") as buffer:
        await client.get("/healthz")
    assert buffer.getvalue() == ""


def test_json_lines_carry_extra_fields_and_tracebacks() -> None:
    record = logging.LogRecord("app.x", logging.ERROR, __file__, 1, "broke: %s", ("why",), None)
    try:
        raise ValueError("inner")
    except ValueError:
        record.exc_info = sys.exc_info()
    record.session_count = 3
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "broke: why"
    assert line["logger"] == "app.x"
    assert line["level"] == "ERROR"
    assert line["session_count"] == 3
    assert "ValueError: inner" in line["exception"]
    assert "request_id" not in line


async def test_the_service_logs_json_lines_only(tmp_path: Path, migrated_url: str) -> None:
    """`python -m app` with LOG_FORMAT=json: uvicorn's own lines are JSON too."""
    env = {"LOG_FORMAT": "json", "LOG_LEVEL": "INFO"}
    async with (
        run_service(tmp_path, migrated_url, env) as service,
        httpx.AsyncClient(base_url=service.base_url) as client,
    ):
        await client.get("/healthz", headers={"X-Request-ID": "probe-1"})
        service.process.terminate()
        await service.process.wait()
    lines = [json.loads(text) for text in service.log.read_text().splitlines() if text]
    assert any(line["logger"].startswith("uvicorn") for line in lines), lines
    [access] = [line for line in lines if line.get("request_id") == "probe-1"]
    assert (access["route"], access["status"]) == ("/healthz", 200)
