"""Thumbs on replies in a real browser: rating with a comment, what a reload shows, clearing,
and a reply that just streamed in."""

from typing import Any

from playwright.async_api import Locator, Page, expect

from tests.web.conftest import SESSIONS, Upstream, WebApp, seed
from tests.web.pages import replies, send, user_messages


def rating(reply: Locator) -> Locator:
    return reply.get_by_role("group", name="Rate this reply", exact=True)


def thumb(reply: Locator, name: str) -> Locator:
    return rating(reply).get_by_role("button", name=name, exact=True)


def comment_box(reply: Locator) -> Locator:
    return rating(reply).get_by_role("textbox", name="Comment on this reply (optional)")


async def stored_feedback(web: WebApp, session_id: str) -> Any:
    detail = (await web.client.get(f"{SESSIONS}/{session_id}")).json()
    [reply] = [m for m in detail["messages"] if m["role"] == "assistant"]
    return reply["feedback"]


async def test_thumbs_up_with_a_comment_stays_after_a_reload_and_clears(
    page: Page, web: WebApp, upstream: Upstream
) -> None:
    session_id = await seed(web.client, "How do I reset my password?")
    await page.goto(f"/?session={session_id}")
    reply = replies(page)
    await expect(reply).to_have_count(1)
    # Only replies are rated.
    await expect(rating(user_messages(page))).to_have_count(0)
    await expect(thumb(reply, "Good reply")).to_have_attribute("aria-pressed", "false")

    await thumb(reply, "Good reply").click()

    await expect(thumb(reply, "Good reply")).to_have_attribute("aria-pressed", "true")
    await expect(thumb(reply, "Bad reply")).to_have_attribute("aria-pressed", "false")
    await expect(comment_box(reply)).to_be_focused()
    await comment_box(reply).fill("Clear steps, <b>thanks</b>")
    await rating(reply).get_by_role("button", name="Save comment", exact=True).click()
    comment = rating(reply).locator(".feedback-comment")
    await expect(comment).to_have_text("Clear steps, <b>thanks</b>")
    await expect(comment_box(reply)).to_be_hidden()
    stored = await stored_feedback(web, session_id)
    assert (stored["rating"], stored["comment"]) == ("up", "Clear steps, <b>thanks</b>")

    await page.reload()

    await expect(thumb(reply, "Good reply")).to_have_attribute("aria-pressed", "true")
    await expect(thumb(reply, "Bad reply")).to_have_attribute("aria-pressed", "false")
    await expect(comment).to_have_text("Clear steps, <b>thanks</b>")

    # The active thumb again takes the rating back.
    await thumb(reply, "Good reply").click()

    await expect(thumb(reply, "Good reply")).to_have_attribute("aria-pressed", "false")
    await expect(comment).to_be_hidden()
    assert await stored_feedback(web, session_id) is None
    await page.reload()
    await expect(thumb(reply, "Good reply")).to_have_attribute("aria-pressed", "false")
    await expect(thumb(reply, "Bad reply")).to_have_attribute("aria-pressed", "false")
    await expect(comment).to_be_hidden()


async def test_a_reply_that_just_streamed_in_can_be_rated(
    page: Page, web: WebApp, upstream: Upstream
) -> None:
    await page.goto("/")
    await send(page, "Hello there")
    reply = replies(page)
    await expect(reply).to_have_attribute("data-status", "complete")

    await thumb(reply, "Good reply").click()
    await expect(thumb(reply, "Good reply")).to_have_attribute("aria-pressed", "true")
    await comment_box(reply).press("Escape")
    await expect(comment_box(reply)).to_be_hidden()
    # The other thumb replaces the rating.
    await thumb(reply, "Bad reply").click()

    await expect(thumb(reply, "Bad reply")).to_have_attribute("aria-pressed", "true")
    await expect(thumb(reply, "Good reply")).to_have_attribute("aria-pressed", "false")
    listing = (await web.client.get(SESSIONS, params={"limit": 10})).json()
    [session] = listing["sessions"]
    stored = await stored_feedback(web, session["session_id"])
    assert (stored["rating"], stored["comment"]) == ("down", None)
