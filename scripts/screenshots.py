"""Screenshots of the web page for the README: `make screenshots` (or
`.venv/bin/python -m scripts.screenshots [DIR]`) writes desktop and phone pictures, light and
dark, the phone's opened history, and a regenerated reply with its "< 2 / 2 >" arrows, into
docs/screenshots/.

It serves the app on a fresh SQLite database in a temporary folder, fills it with a few
sessions spread over several days (replies written by a scripted assistant, so the pictures
are the same from run to run apart from the dates), and drives Debian's Chromium
(/usr/bin/chromium, `make browser`) through Playwright."""

import asyncio
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import uvicorn
from playwright.async_api import Browser, Page, ViewportSize, async_playwright
from sqlalchemy import update

from app.assistants import Reply, ReplyEnd, ReplyEvent, TextDelta, Turn
from app.assistants.base import collect
from app.config import PROJECT_ROOT, Settings
from app.kit.db import migrate
from app.kit.db.engine import Database, create_engine
from app.kit.db.tables import chat_sessions
from app.main import create_app

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SIZES = {
    "desktop": ViewportSize(width=1280, height=800),
    "phone": ViewportSize(width=375, height=740),
}
CHAT = "/api/v1/chat"
SESSIONS = "/api/v1/chat/sessions"

RETRY_ANSWER = """Wrap the call in a loop with **exponential backoff**, and retry only what can \
succeed later (timeouts, 429 and 5xx), never a 4xx:

```python
import time

import httpx


def get_with_retries(url: str, attempts: int = 5) -> httpx.Response:
    for attempt in range(attempts):
        response = httpx.get(url, timeout=10)
        if response.status_code < 500 and response.status_code != 429:
            return response
        time.sleep(min(2**attempt, 30))
    response.raise_for_status()
    return response
```

- Honour `Retry-After` when the server sends it.
- Add jitter so that many clients do not retry in step.
"""

# The second answer to the first question: the reply regenerated in the branches picture.
REGENERATED_ANSWER = """Retry only what can succeed later (timeouts, 429 and 5xx) and wait longer \
each time: **exponential backoff** with jitter. Libraries do it for you:

- `tenacity`: `@retry(wait=wait_random_exponential(max=30), stop=stop_after_attempt(5))`
- `urllib3`: `Retry(total=5, backoff_factor=0.5, status_forcelist=[429, 502, 503])`
"""

# (first message, its reply, days ago, pinned); the first session is the one opened.
SESSIONS_TO_SEED: list[tuple[str, str, float, bool]] = [
    ("How do I retry HTTP requests in Python?", RETRY_ANSWER, 0, False),
    (
        "Which payment processors does Acme Pay support?",
        "Acme Pay integrates with **Stripe**, **Adyen** and **PayPal**. Pick one per "
        "merchant account under *Settings → Payments*.",
        0.1,
        True,
    ),
    (
        "Release checklist for the mobile app",
        "1. Bump the version\n2. Run the UI tests on both platforms\n3. Update the changelog\n"
        "4. Submit for review",
        3,
        True,
    ),
    (
        "Summarise the Q3 support tickets",
        "Most tickets were about **refunds** (38%) and **login problems** (21%).",
        1,
        False,
    ),
    ("Draft a polite reminder about the unpaid invoice", "Here is a short draft: ...", 1.2, False),
    ("What is the difference between a mutex and a semaphore?", "A mutex ...", 4, False),
    ("Ideas for the team offsite in spring", "- A cooking class\n- A day hike", 6, False),
    ("Explain PostgreSQL's MVCC like I'm five", "Every row keeps ...", 12, False),
    ("Regex for ISO 8601 dates", "`^\\d{4}-\\d{2}-\\d{2}$` matches the date part.", 25, False),
    ("Translate the onboarding email into Spanish", "¡Bienvenido a Acme Pay! ...", 40, False),
]


class ScriptedAssistant:
    """Answers each seeded question with its prepared reply, as a model would stream it."""

    def __init__(self, answers: dict[str, str], again: dict[str, str]) -> None:
        self._answers = answers
        self._again = again  # a question asked again (a regeneration) gets this answer
        self._asked: set[str] = set()

    @property
    def provider(self) -> str:
        return "scripted"

    @property
    def model(self) -> str:
        return "screenshots"

    async def reply(self, history: Sequence[Turn]) -> Reply:
        return await collect(self.stream(history))

    async def stream(self, history: Sequence[Turn]) -> AsyncIterator[ReplyEvent]:
        question = history[-1].content
        answer = self._answers.get(question, "Noted.")
        if question in self._asked:
            answer = self._again.get(question, answer)
        self._asked.add(question)
        for line in answer.splitlines(keepends=True):
            yield TextDelta(line)
        yield ReplyEnd(model=self.model)


@asynccontextmanager
async def served(settings: Settings) -> AsyncIterator[str]:
    """The app served by uvicorn on a free loopback port; its base URL."""
    app = create_app(settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            (await client.get("/healthz")).raise_for_status()
        app.state.assistant = ScriptedAssistant(
            {q: a for q, a, _, _ in SESSIONS_TO_SEED},
            {SESSIONS_TO_SEED[0][0]: REGENERATED_ANSWER},
        )
        yield base_url
    finally:
        server.should_exit = True
        await task
        sock.close()


async def seed(base_url: str, database: Database) -> str:
    """Create the sessions, move them back in time, pin some; the id of the first."""
    now = datetime.now(UTC)
    ids: list[str] = []
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        for question, _, _, _ in SESSIONS_TO_SEED:
            response = await client.post(CHAT, json={"message": question})
            response.raise_for_status()
            ids.append(response.json()["session_id"])
        for session_id, (_, _, _, pinned) in zip(ids, SESSIONS_TO_SEED, strict=True):
            if pinned:
                patch = await client.patch(f"{SESSIONS}/{session_id}", json={"pinned": True})
                patch.raise_for_status()
    # The API stamps every write with "now"; the day groups need older activity.
    async with database.write() as conn:
        for session_id, (_, _, days_ago, _) in zip(ids, SESSIONS_TO_SEED, strict=True):
            await conn.execute(
                update(chat_sessions)
                .where(chat_sessions.c.session_id == session_id)
                .values(updated_at=now - timedelta(days=days_ago, minutes=5))
            )
    return ids[0]


async def shoot(browser: Browser, base_url: str, session_id: str, target: Path) -> None:
    for size, viewport in SIZES.items():
        for scheme in ("light", "dark"):
            context = await browser.new_context(
                base_url=base_url, viewport=viewport, color_scheme=scheme, device_scale_factor=1
            )
            try:
                page = await context.new_page()
                await page.goto(f"/?session={session_id}")
                await page.locator('li[data-role="assistant"][data-status="complete"]').wait_for()
                await page.locator("nav li[data-session-id]").first.wait_for(state="attached")
                await save(page, target / f"{size}-{scheme}.png")
                if size == "phone" and scheme == "light":
                    # The history, which a narrow screen keeps behind a button.
                    await page.get_by_role("button", name="Show chat history").click()
                    await page.get_by_role("navigation", name="Chat history").wait_for()
                    await save(page, target / "phone-history-light.png")
            finally:
                await context.close()
    await shoot_branches(browser, base_url, session_id, target)


async def shoot_branches(browser: Browser, base_url: str, session_id: str, target: Path) -> None:
    """The reply regenerated: the new version, with the arrows back to the first one."""
    context = await browser.new_context(
        base_url=base_url, viewport=SIZES["desktop"], color_scheme="light", device_scale_factor=1
    )
    try:
        page = await context.new_page()
        await page.goto(f"/?session={session_id}")
        reply = page.locator('li[data-role="assistant"][data-status="complete"]')
        await reply.get_by_role("button", name="Regenerate reply").click()
        await reply.get_by_role("group", name="Versions").wait_for()
        await page.locator("nav li[data-session-id]").first.wait_for(state="attached")
        await page.mouse.move(0, 0)
        await save(page, target / "desktop-branches-light.png")
    finally:
        await context.close()


async def save(page: Page, path: Path) -> None:
    # Transitions (the history sliding in) are taken at their end state.
    await page.screenshot(path=str(path), animations="disabled")
    print(f"wrote {path}")


async def main(target: Path) -> None:
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(
            _env_file=None,
            database_url=f"sqlite:///{folder}/screenshots.db",
            knowledge_base_dir=str(PROJECT_ROOT / "knowledge"),
            assistant_provider="echo",
            assistant_stream_delay_ms=0,
            migrate_on_startup=False,
        )
        await migrate.upgrade_async(settings.database_url)
        database = Database(create_engine(settings))
        try:
            async with served(settings) as base_url, async_playwright() as playwright:
                session_id = await seed(base_url, database)
                browser = await playwright.chromium.launch(
                    executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
                )
                try:
                    await shoot(browser, base_url, session_id, target)
                finally:
                    await browser.close()
        finally:
            await database.dispose()


if __name__ == "__main__":
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else PROJECT_ROOT / "docs" / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    asyncio.run(main(folder))
