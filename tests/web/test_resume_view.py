"""Resumed streams in a real browser: a session opened while its reply is being written shows
the rest live, and a stream cut by the network goes on from its last event."""

from playwright.async_api import Page, expect

from tests.fakes.openai_server import Respond
from tests.web.conftest import CHAT, SESSIONS, Upstream, WebApp
from tests.web.pages import button, replies, send, text_of


async def stored_reply_text(web: WebApp, session_id: str) -> str:
    detail = (await web.client.get(f"{SESSIONS}/{session_id}")).json()
    [reply] = [m for m in detail["messages"] if m["role"] == "assistant"]
    assert reply["metadata"]["status"] == "complete"
    return str(reply["content"])


async def test_a_reply_still_being_written_when_the_chat_opens_shows_the_rest_live(
    page: Page, web: WebApp, upstream: Upstream
) -> None:
    resume = upstream.gate()
    upstream.fake.queue(
        Respond(chunks=["Half way there, ", "and the rest."], pause_after=1, resume=resume)
    )
    # Another tab sent it, read the first piece and went away.
    body = {"message": "Write slowly", "session_id": "elsewhere"}
    async with web.client.stream("POST", f"{CHAT}/stream", json=body) as response:
        async for line in response.aiter_lines():
            if line.startswith("event: delta"):
                break

    await page.goto("/?session=elsewhere")

    reply = replies(page)
    await expect(text_of(reply)).to_have_text("Half way there,")
    await expect(reply).to_have_attribute("data-status", "streaming")
    await expect(button(page, "Stop")).to_be_visible()
    await expect(reply).not_to_contain_text("still being written")

    resume.set()

    await expect(reply).to_have_attribute("data-status", "complete")
    await expect(text_of(reply)).to_have_text("Half way there, and the rest.")
    await expect(button(page, "Stop")).to_be_hidden()
    assert await stored_reply_text(web, "elsewhere") == "Half way there, and the rest."


async def test_a_stream_cut_by_the_network_resumes_where_it_was(
    page: Page, web: WebApp, upstream: Upstream
) -> None:
    resume = upstream.gate()
    upstream.fake.queue(
        Respond(chunks=["Before the cut, ", "after the cut."], pause_after=1, resume=resume)
    )
    await page.goto("/")
    await send(page, "Cut me off")
    reply = replies(page)
    await expect(text_of(reply)).to_have_text("Before the cut,")

    # The network drops every connection of the page, the stream's included; the page asks
    # for the rest.
    async with page.expect_request(lambda r: r.method == "GET" and r.url.endswith("/stream")):
        for connection in list(web.live.server.server_state.connections):
            connection.transport.close()
    resume.set()

    await expect(reply).to_have_attribute("data-status", "complete")
    await expect(text_of(reply)).to_have_text("Before the cut, after the cut.")
    await expect(page.get_by_role("alert")).to_have_count(0)
    listing = (await web.client.get(SESSIONS)).json()
    [session] = listing["sessions"]
    assert await stored_reply_text(web, session["session_id"]) == "Before the cut, after the cut."
