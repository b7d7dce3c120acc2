"""Share links in a real browser (issue 14): the Share dialog of a session's menu creates a
link, the link's page shows the conversation read-only, and revoking it turns the page into
the not-found message."""

from playwright.async_api import Page, expect

from tests.web.conftest import SESSIONS, WebApp, seed
from tests.web.pages import choose_action, composer, messages, replies, sidebar, user_messages

MISSING = "This link does not exist or has expired"


async def test_a_link_from_the_menu_shows_the_chat_read_only_until_revoked(
    page: Page, web: WebApp
) -> None:
    session_id = await seed(web.client, "Plans for **the trip**")
    await page.goto(f"/?session={session_id}")
    await expect(replies(page)).to_have_count(1)

    await choose_action(page, "Plans for **the trip**", "Share")
    dialog = page.get_by_role("dialog", name="Share chat")
    await expect(dialog).to_be_visible()
    await expect(dialog.get_by_text("No links to this chat.")).to_be_visible()
    await dialog.get_by_role("button", name="Create link", exact=True).click()
    link_field = dialog.get_by_role("textbox", name="New link", exact=True)
    await expect(link_field).to_be_visible()
    url = await link_field.input_value()
    assert url.startswith(f"{web.base_url}/s/"), url
    links = dialog.get_by_role("list", name="Links to this chat")
    await expect(links.get_by_role("listitem")).to_have_count(1)
    await expect(dialog.get_by_role("button", name="Copy", exact=True)).to_be_visible()

    # A message sent afterwards is not in the link.
    later = await web.client.post(
        "/api/v1/chat", json={"message": "Sent after sharing", "session_id": session_id}
    )
    assert later.status_code == 200, later.text

    shared = await page.context.new_page()
    await shared.goto(url)
    await expect(shared.get_by_role("heading", name="Plans for **the trip**")).to_be_visible()
    await expect(user_messages(shared)).to_have_count(1)
    # Markdown rendered as the chat page renders it.
    await expect(user_messages(shared).locator("strong")).to_have_text("the trip")
    await expect(replies(shared)).to_have_count(1)
    await expect(replies(shared)).to_contain_text("Hello from the fake.")
    await expect(messages(shared)).not_to_contain_text("Sent after sharing")
    await expect(composer(shared)).to_have_count(0)
    await expect(sidebar(shared)).to_have_count(0)
    robots = shared.locator('meta[name="robots"]')
    await expect(robots).to_have_attribute("content", "noindex")

    share_id = url.rsplit("/", 1)[1]
    await links.get_by_role("button", name=f"Revoke {url}", exact=True).click()
    await expect(links.get_by_role("listitem")).to_have_count(0)
    await expect(dialog.get_by_text("No links to this chat.")).to_be_visible()
    assert (await web.client.get(f"/api/v1/shared/{share_id}")).status_code == 404

    await shared.reload()
    await expect(shared.get_by_role("heading", name=MISSING)).to_be_visible()
    await expect(user_messages(shared)).to_have_count(0)
    # The session itself is untouched.
    assert (await web.client.get(f"{SESSIONS}/{session_id}")).status_code == 200


async def test_an_unknown_link_shows_the_not_found_message(page: Page) -> None:
    await page.goto("/s/no-such-link-no-such-link-000000")

    await expect(page.get_by_role("heading", name=MISSING)).to_be_visible()
    await expect(composer(page)).to_have_count(0)
    await expect(page).to_have_title("Link not found · Chat")
