"""Browser tests of the web page: Debian's Chromium driven by Playwright (async API, on the
suite's session event loop) against the real app served in-process on a fresh SQLite database,
with replies written by the fake OpenAI-compatible server so a test decides when they arrive.

One browser for the whole run, a new browser context (cookies, storage) per test. Chromium is
Debian's (`make browser`); Playwright's own browser download is never used."""

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    Page,
    ViewportSize,
    async_playwright,
    expect,
)
from playwright.async_api import Error as PlaywrightError
from sqlalchemy import text, update

from app.config import PROJECT_ROOT, Settings
from app.kit.db.engine import Database, create_engine
from app.kit.db.tables import chat_sessions
from app.main import create_app
from tests.conftest import IN_CI, DatabaseFactory, LiveServer, make_settings, serve
from tests.fakes.fixtures import FakeUpstream, RunningFake, running_fake
from tests.fakes.openai_server import TITLE_MODEL

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps calling Google's hosts, which a
# machine with a closed network refuses (slowly). Playwright adds --no-sandbox as root.
CHROMIUM_ARGS = [
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
DESKTOP = ViewportSize(width=1280, height=800)
PHONE = ViewportSize(width=375, height=740)
# Generous for a loaded 2-core machine: a timeout only decides how long a failure takes.
TIMEOUT_MS = 10_000
CHAT = "/api/v1/chat"
SESSIONS = "/api/v1/chat/sessions"

expect.set_options(timeout=TIMEOUT_MS)


def web_settings(database_url: str, upstream: RunningFake, **overrides: Any) -> Settings:
    """The app answering through the fake upstream, with no retries (a failure shows at once)."""
    values: dict[str, Any] = {
        "assistant_provider": "openai",
        "openai_base_url": upstream.api_url,
        "openai_model": "gpt-4",
        # Title requests go to the fake's own script (by default: no title).
        "title_model": TITLE_MODEL,
        "openai_max_retries": 0,
        "openai_timeout_seconds": 30,
        "assistant_rag": False,
        "knowledge_base_dir": str(PROJECT_ROOT / "knowledge"),
        # Explicit, so that no OPENAI_* variable of the environment leaks in.
        "openai_api_key": None,
        "openai_temperature": None,
        "openai_max_tokens": None,
        "rate_limit_enabled": False,
    }
    values.update(overrides)
    return make_settings(database_url, **values)


@dataclass
class Upstream:
    """The fake OpenAI server of the run, and the gates a test holds replies back with."""

    running: RunningFake
    gates: list[asyncio.Event] = field(default_factory=list)

    @property
    def fake(self) -> FakeUpstream:
        return self.running.fake

    def gate(self) -> asyncio.Event:
        """An event a scripted reply waits on; released at the end of the test anyway."""
        event = asyncio.Event()
        self.gates.append(event)
        return event

    def release_all(self) -> None:
        for event in self.gates:
            event.set()
        self.gates.clear()


@dataclass
class WebApp:
    """The served app, its database, and an HTTP client for arranging through the API."""

    live: LiveServer
    database: Database

    @property
    def base_url(self) -> str:
        return self.live.base_url

    @property
    def client(self) -> httpx.AsyncClient:
        return self.live.client

    async def settle(self) -> None:
        """Wait until no reply (nor title) is being generated, so none writes after the test."""
        async with asyncio.timeout(10):
            await self.live.app.state.reply_tasks.wait_idle()
            await self.live.app.state.title_tasks.wait_idle()
            await self.live.app.state.import_tasks.wait()

    async def empty(self) -> None:
        await self.settle()
        async with self.database.write() as conn:
            await conn.execute(text("DELETE FROM chat_import_sources"))
            await conn.execute(text("DELETE FROM chat_imports"))
            await conn.execute(text("DELETE FROM chat_messages"))
            await conn.execute(text("DELETE FROM chat_sessions"))
            await conn.execute(text("DELETE FROM chat_tags"))
            await conn.execute(text("DELETE FROM chat_folders"))

    async def set_updated_at(self, session_id: str, when: datetime) -> None:
        """Move a session's last activity in time (the API always writes "now")."""
        async with self.database.write() as conn:
            await conn.execute(
                update(chat_sessions)
                .where(chat_sessions.c.session_id == session_id)
                .values(updated_at=when)
            )


async def fresh_sqlite(factory: DatabaseFactory) -> tuple[str, Database]:
    url = await factory.create_migrated("sqlite")
    return url, Database(create_engine(make_settings(url)))


@asynccontextmanager
async def web_app(
    factory: DatabaseFactory, upstream: RunningFake, **overrides: Any
) -> AsyncIterator[WebApp]:
    """The app on a fresh SQLite database of its own, served on loopback for the block."""
    url, database = await fresh_sqlite(factory)
    try:
        async with serve(create_app(web_settings(url, upstream, **overrides))) as live:
            yield WebApp(live=live, database=database)
    finally:
        await database.dispose()


@pytest.fixture(scope="session")
async def fake_upstream() -> AsyncIterator[RunningFake]:
    async with running_fake() as running:
        yield running


@pytest.fixture
def upstream(fake_upstream: RunningFake) -> Iterator[Upstream]:
    """The fake, reset: default replies, nothing scripted or recorded; gates released after."""
    fake_upstream.fake.reset()
    held = Upstream(running=fake_upstream)
    yield held
    held.release_all()


@pytest.fixture(scope="session")
async def web(
    database_factory: DatabaseFactory, fake_upstream: RunningFake
) -> AsyncIterator[WebApp]:
    """The app in open mode, as `make run` serves it."""
    async with web_app(database_factory, fake_upstream) as app:
        yield app


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        try:
            launched = await playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
        except PlaywrightError as exc:
            message = f"Chromium at {CHROMIUM} cannot be started (run `make browser`): {exc}"
            if IN_CI:
                pytest.fail(message + " (CI=true: the browser tests must run)")
            pytest.skip(message)
        try:
            yield launched
        finally:
            await launched.close()


@asynccontextmanager
async def open_context(
    browser: Browser, base_url: str, **options: Any
) -> AsyncIterator[tuple[BrowserContext, list[str]]]:
    """A new browser context, and the uncaught page errors seen in it."""
    options.setdefault("viewport", DESKTOP)
    context = await browser.new_context(base_url=base_url, **options)
    context.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    context.on("weberror", lambda error: errors.append(str(error.error)))
    try:
        yield context, errors
    finally:
        await context.close()


@pytest.fixture
async def page(browser: Browser, web: WebApp, upstream: Upstream) -> AsyncIterator[Page]:
    """A desktop-sized page of a new context on the open-mode app; the tables are emptied
    after the test. Fails the test if the page threw an uncaught error."""
    try:
        async with open_context(browser, web.base_url) as (context, errors):
            yield await context.new_page()
        # The context is closed: no stream is read any more, so gated replies may finish.
        upstream.release_all()
        assert errors == [], f"uncaught errors in the page: {errors}"
    finally:
        upstream.release_all()
        await web.empty()


async def seed(client: httpx.AsyncClient, message: str, **body: Any) -> str:
    """Start a session with `message` through the API (the fake answers); its id."""
    response = await client.post(CHAT, json={"message": message, **body})
    response.raise_for_status()
    return str(response.json()["session_id"])
