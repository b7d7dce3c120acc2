"""The chat view in a real browser: sending, a reply streaming in, Markdown, stop, retry, and
messages that try to inject markup."""

import re
from typing import Any

from playwright.async_api import Page, Route, expect

from tests.fakes.openai_server import Fail, Respond
from tests.web.conftest import CHAT, SESSIONS, Upstream, WebApp, seed
from tests.web.pages import (
    button,
    composer,
    messages,
    replies,
    send,
    session_item,
    session_link,
    sidebar,
    user_messages,
)

XSS_IMG = "<img src=x onerror=window.__xss=1>"
XSS_SCRIPT = "<script>window.__xss=1</script>"
XSS_LINK = "[x](javascript:alert(1))"
XSS_PAYLOAD = f"Look: {XSS_IMG} and {XSS_SCRIPT} and {XSS_LINK}"


async def only_session_id(web: WebApp) -> str:
    listing = (await web.client.get(SESSIONS, params={"limit": 10})).json()
    assert len(listing["sessions"]) == 1
    return str(listing["sessions"][0]["session_id"])


async def stored_reply(web: WebApp, session_id: str) -> dict[str, Any]:
    detail = (await web.client.get(f"{SESSIONS}/{session_id}")).json()
    assistant = [m for m in detail["messages"] if m["role"] == "assistant"]
    assert len(assistant) == 1
    reply: dict[str, Any] = assistant[0]
    return reply


async def test_a_reply_streams_in_as_it_arrives(
    page: Page, web: WebApp, upstream: Upstream
) -> None:
    resume = upstream.gate()
    upstream.fake.queue(
        Respond(chunks=["First part, ", "then the rest."], pause_after=1, resume=resume)
    )
    await page.goto("/")

    await send(page, "Hello there")

    await expect(user_messages(page)).to_have_count(1)
    await expect(user_messages(page)).to_contain_text("Hello there")
    reply = replies(page)
    # The upstream holds the second chunk back: the first one is on the page already.
    await expect(reply).to_contain_text("First part,")
    await expect(reply).to_have_attribute("data-status", "streaming")
    await expect(button(page, "Stop")).to_be_visible()
    await expect(reply).not_to_contain_text("then the rest.")

    resume.set()

    await expect(reply).to_contain_text("First part, then the rest.")
    await expect(reply).to_have_attribute("data-status", "complete")
    await expect(button(page, "Stop")).to_be_hidden()
    # The new session is in the address bar and listed, selected, in the sidebar.
    session_id = await only_session_id(web)
    await expect(page).to_have_url(re.compile(rf"/\?session={session_id}$"))
    await expect(session_link(page, "Hello there")).to_have_attribute("aria-current", "page")


async def test_enter_sends_and_shift_enter_starts_a_new_line(page: Page, web: WebApp) -> None:
    await page.goto("/")
    box = composer(page)
    await box.press_sequentially("Line one")
    await box.press("Shift+Enter")
    await box.press_sequentially("line two")

    await expect(box).to_have_value("Line one\nline two")
    await expect(user_messages(page)).to_have_count(0)

    await box.press("Enter")

    await expect(replies(page)).to_have_attribute("data-status", "complete")
    await expect(box).to_have_value("")
    detail = (await web.client.get(f"{SESSIONS}/{await only_session_id(web)}")).json()
    assert detail["messages"][0]["content"] == "Line one\nline two"


async def test_markdown_is_rendered_with_code_blocks(page: Page, upstream: Upstream) -> None:
    upstream.fake.queue(
        Respond(chunks=["Use **this**:\n\n", "```python\nprint('hi')\n```\n", "Done."])
    )
    await page.goto("/")

    await send(page, "Show me code")

    reply = replies(page)
    await expect(reply).to_have_attribute("data-status", "complete")
    await expect(reply.locator("strong")).to_have_text("this")
    await expect(reply.locator("pre code")).to_have_text(re.compile(r"^print\('hi'\)\n?$"))
    await expect(reply).not_to_contain_text("```")


async def test_the_stop_button_stops_a_streaming_reply(
    page: Page, web: WebApp, upstream: Upstream
) -> None:
    resume = upstream.gate()
    upstream.fake.queue(
        Respond(chunks=["Partial answer", " that never ends."], pause_after=1, resume=resume)
    )
    await page.goto("/")
    await send(page, "Tell me a long story")
    reply = replies(page)
    await expect(reply).to_contain_text("Partial answer")

    await button(page, "Stop").click()

    await expect(button(page, "Stop")).to_be_hidden()
    await expect(button(page, "Send")).to_be_visible()
    await expect(reply).to_have_attribute("data-status", "incomplete")
    # Let the upstream go on: the stopped reply must not go on with it.
    resume.set()
    await web.settle()
    session_id = await only_session_id(web)
    stored = await stored_reply(web, session_id)
    assert stored["content"] == "Partial answer"
    assert stored["metadata"]["status"] == "incomplete"
    await page.reload()
    await expect(replies(page)).to_have_text(re.compile(r"Partial answer"))
    await expect(replies(page)).not_to_contain_text("never ends")
    await expect(replies(page)).to_have_attribute("data-status", "incomplete")


async def test_a_failed_reply_shows_an_alert_whose_retry_works(
    page: Page, upstream: Upstream
) -> None:
    upstream.fake.queue(Fail(status=500), Respond(chunks=["Recovered ", "answer."]))
    await page.goto("/")

    await send(page, "Will this work?")

    alert = page.get_by_role("alert")
    await expect(alert).to_be_visible()
    await expect(alert).not_to_be_empty()

    await alert.get_by_role("button", name="Retry", exact=True).click()

    await expect(replies(page).last).to_contain_text("Recovered answer.")
    await expect(replies(page).last).to_have_attribute("data-status", "complete")
    await expect(page.get_by_role("alert")).to_have_count(0)
    assert len(upstream.fake.requests) == 2


async def test_a_send_whose_answer_was_lost_is_retried_under_its_key(
    page: Page, web: WebApp, upstream: Upstream
) -> None:
    """The server stored the message, but its answer never reached the page: the retry sends
    the same Idempotency-Key, so the server answers the stored reply and stores nothing."""
    upstream.fake.queue(Respond(chunks=["Stored ", "once."]))
    keys: list[str | None] = []

    async def lose_the_first_answer(route: Route) -> None:
        keys.append(await route.request.header_value("Idempotency-Key"))
        if len(keys) == 1:
            await route.fetch()  # the server answers in full
            await route.abort("connectionreset")
        else:
            await route.continue_()

    await page.route("**/api/v1/chat/stream", lose_the_first_answer)
    await page.goto("/")

    await send(page, "Only once, please")
    alert = page.get_by_role("alert")
    await expect(alert).to_be_visible()
    await alert.get_by_role("button", name="Retry", exact=True).click()

    await expect(replies(page).last).to_contain_text("Stored once.")
    await expect(replies(page).last).to_have_attribute("data-status", "complete")
    assert len(keys) == 2
    assert keys[0] is not None
    assert keys[1] == keys[0]
    assert len(upstream.fake.requests) == 1
    stored = (await web.client.get(f"{SESSIONS}/{await only_session_id(web)}")).json()
    assert [m["role"] for m in stored["messages"]] == ["user", "assistant"]
    # The next message gets a key of its own.
    upstream.fake.queue(Respond(chunks=["Another."]))
    await send(page, "And another")
    await expect(replies(page).last).to_contain_text("Another.")
    assert len(keys) == 3
    assert keys[2] not in (None, keys[0])


async def test_markup_in_messages_renders_as_inert_text(
    page: Page, web: WebApp, upstream: Upstream
) -> None:
    resume = upstream.gate()
    upstream.fake.queue(
        Respond(
            chunks=[f"Echo: {XSS_IMG} {XSS_SCRIPT}", f" and {XSS_LINK}"],
            pause_after=1,
            resume=resume,
        )
    )
    await page.goto("/")

    await send(page, XSS_PAYLOAD)

    # Mid-stream (a renderer's partial-Markdown path), when complete, and reloaded from history.
    await expect(replies(page)).to_contain_text(XSS_IMG)
    await assert_inert(page)
    resume.set()
    await expect(replies(page)).to_have_attribute("data-status", "complete")
    await assert_inert(page)
    session_id = await only_session_id(web)
    await page.reload()
    await expect(replies(page)).to_have_attribute("data-status", "complete")
    await expect(sidebar(page).locator("li[data-session-id]")).to_have_count(1)
    await assert_inert(page)
    await expect(user_messages(page)).to_contain_text(XSS_IMG)
    await expect(user_messages(page)).to_contain_text(XSS_SCRIPT)
    await expect(replies(page)).to_contain_text(XSS_SCRIPT)
    await expect(session_item(page, session_id)).to_contain_text("<img src=x")


async def test_markup_in_a_stored_session_renders_as_inert_text(
    page: Page, web: WebApp, upstream: Upstream
) -> None:
    upstream.fake.default = Respond(chunks=[XSS_PAYLOAD])
    session_id = await seed(web.client, XSS_PAYLOAD)

    await page.goto(f"/?session={session_id}")

    await expect(user_messages(page)).to_contain_text(XSS_IMG)
    await expect(replies(page)).to_contain_text(XSS_IMG)
    await assert_inert(page)


async def assert_inert(page: Page) -> None:
    """No element came out of a message's text, no script ran, no javascript: link exists."""
    assert await page.evaluate("() => window.__xss") is None
    await expect(messages(page).locator("img, script, iframe, object, embed")).to_have_count(0)
    await expect(sidebar(page).locator("img, script")).to_have_count(0)
    hrefs = await page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)")
    assert not [href for href in hrefs if href.strip().lower().startswith("javascript:")]


async def test_scrolling_up_loads_older_messages_once_each(page: Page, web: WebApp) -> None:
    turns = 55  # 110 messages: more than two pages of the page's 50
    session_id = await seed(web.client, "Message 000")
    for n in range(1, turns):
        response = await web.client.post(
            CHAT, json={"message": f"Message {n:03d}", "session_id": session_id}
        )
        response.raise_for_status()
    await page.goto(f"/?session={session_id}")
    items = messages(page).locator("li[data-role]")
    await expect(user_messages(page).last).to_contain_text(f"Message {turns - 1:03d}")

    for _ in range(turns):
        shown = await items.count()
        if shown >= 2 * turns:
            break
        await items.first.scroll_into_view_if_needed()
        await page.wait_for_function(
            "([selector, shown]) => document.querySelectorAll(selector).length > shown",
            arg=['ol[aria-label="Messages"] li[data-role]', shown],
        )

    await expect(items).to_have_count(2 * turns)
    texts = await user_messages(page).all_inner_texts()
    numbered = [found.group(0) for text in texts if (found := re.search(r"Message \d{3}", text))]
    assert numbered == [f"Message {n:03d}" for n in range(turns)]


async def test_the_models_title_appears_live_while_the_reply_streams(
    page: Page, web: WebApp, upstream: Upstream
) -> None:
    resume = upstream.gate()
    upstream.fake.queue(
        Respond(chunks=["First part, ", "then the rest."], pause_after=1, resume=resume)
    )
    upstream.fake.title_default = Respond(chunks=["Title: «Greetings exchanged» 👋"])
    await page.goto("/")

    await send(page, "Hello there, how are you?")

    # The reply is held back; the title came beside it, into the sidebar and the header.
    reply = replies(page)
    await expect(reply).to_contain_text("First part,")
    await expect(session_link(page, "Greetings exchanged")).to_have_attribute(
        "aria-current", "page"
    )
    await expect(page.locator("#chat-title")).to_have_text("Greetings exchanged")
    await expect(page).to_have_title("Greetings exchanged · Chat")
    await expect(reply).to_have_attribute("data-status", "streaming")
    resume.set()
    await expect(reply).to_have_attribute("data-status", "complete")
    await expect(session_link(page, "Greetings exchanged")).to_be_visible()
    await expect(page.locator("#chat-title")).to_have_text("Greetings exchanged")
