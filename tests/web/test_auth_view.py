"""The page with authentication on: the sign-in dialog, and the three ways a token arrives
(pasted once, a `#token=` fragment, the host page's `window.chatConfig.getToken`)."""

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from tests.conftest import DatabaseFactory
from tests.fakes.fixtures import RunningFake
from tests.tokens import JWT_SECRET, hs256_token
from tests.web.conftest import CHAT, Upstream, WebApp, open_context, web_app
from tests.web.pages import replies, send, session_items, session_link

ALICE = "alice-web"
BOB = "bob-web"


@pytest.fixture(scope="module")
async def auth_web(
    database_factory: DatabaseFactory, fake_upstream: RunningFake
) -> AsyncIterator[WebApp]:
    """The app verifying HS256 tokens with the shared secret, on a database of its own."""
    async with web_app(database_factory, fake_upstream, auth_jwt_secret=JWT_SECRET) as app:
        yield app


@pytest.fixture
async def auth_page(browser: Browser, auth_web: WebApp, upstream: Upstream) -> AsyncIterator[Page]:
    """A page on the authenticated app with Alice's and Bob's sessions in it."""
    await seed_as(auth_web.client, ALICE, "Alice's question")
    await seed_as(auth_web.client, BOB, "Bob's secret")
    try:
        async with open_context(browser, auth_web.base_url) as (context, errors):
            yield await context.new_page()
        assert errors == [], f"uncaught errors in the page: {errors}"
    finally:
        upstream.release_all()
        await auth_web.empty()


async def seed_as(client: httpx.AsyncClient, user: str, message: str) -> None:
    response = await client.post(
        CHAT, json={"message": message}, headers={"Authorization": f"Bearer {hs256_token(user)}"}
    )
    response.raise_for_status()


async def test_without_a_token_the_page_asks_for_one_then_shows_the_users_sessions(
    auth_page: Page,
) -> None:
    page = auth_page
    await page.goto("/")
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_be_visible()

    await dialog.get_by_label("Access token", exact=True).fill(hs256_token(ALICE))
    await dialog.get_by_role("button", name="Sign in", exact=True).click()

    await expect(dialog).to_be_hidden()
    await expect(session_link(page, "Alice's question")).to_be_visible()
    await expect(session_items(page)).to_have_count(1)
    # Kept: a reload needs no second sign-in, and sending works with the token.
    await page.reload()
    await expect(session_link(page, "Alice's question")).to_be_visible()
    await expect(page.get_by_role("dialog")).to_be_hidden()
    await send(page, "Another question from Alice")
    await expect(replies(page)).to_have_attribute("data-status", "complete")
    await expect(session_items(page)).to_have_count(2)


async def test_a_rejected_token_keeps_the_sign_in_dialog_open(auth_page: Page) -> None:
    page = auth_page
    await page.goto("/")
    dialog = page.get_by_role("dialog")
    await dialog.get_by_label("Access token", exact=True).fill(
        hs256_token(ALICE, secret="another-secret-that-is-32-bytes-long!")
    )
    await dialog.get_by_role("button", name="Sign in", exact=True).click()

    await expect(page.get_by_role("dialog")).to_be_visible()
    await expect(session_link(page, "Alice's question")).to_have_count(0)


async def test_a_token_in_the_url_fragment_is_used_and_removed(
    auth_page: Page, auth_web: WebApp
) -> None:
    page = auth_page
    await page.goto(f"/#token={hs256_token(ALICE)}")

    await expect(session_link(page, "Alice's question")).to_be_visible()
    await expect(session_items(page)).to_have_count(1)
    assert "token" not in page.url
    assert page.url.rstrip("/") == auth_web.base_url


async def test_a_host_page_supplies_the_token(auth_page: Page) -> None:
    page = auth_page
    token = json.dumps(hs256_token(BOB))
    await page.add_init_script(f"window.chatConfig = {{ getToken: async () => {token} }};")

    await page.goto("/")

    await expect(session_link(page, "Bob's secret")).to_be_visible()
    await expect(session_items(page)).to_have_count(1)
    await expect(page.get_by_role("dialog")).to_be_hidden()
