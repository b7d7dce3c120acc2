"""The chat-history sidebar in a real browser: order and groups, infinite scroll, organising
sessions, search, the selection in the URL, and the narrow-screen layout."""

import re
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

from playwright.async_api import Page, Request, expect

from tests.web.conftest import CHAT, PHONE, SESSIONS, WebApp, seed
from tests.web.pages import (
    button,
    choose_action,
    group,
    headings,
    replies,
    search_box,
    send,
    session_item,
    session_items,
    session_link,
    sidebar,
    user_messages,
)

ITEMS = 'nav[aria-label="Chat history"] li[data-session-id]'
# More than two pages of the sidebar's 30, and not a multiple of it.
MANY = 80


async def test_sending_to_an_older_session_moves_it_to_the_top(page: Page, web: WebApp) -> None:
    older = await seed(web.client, "Older chat")
    newer = await seed(web.client, "Newer chat")
    await page.goto("/")
    items = session_items(page)
    await expect(items).to_have_count(2)
    assert await ids_in_order(page) == [newer, older]

    await session_link(page, "Older chat").click()
    await expect(page).to_have_url(re.compile(rf"/\?session={older}$"))
    await expect(user_messages(page)).to_contain_text("Older chat")
    await send(page, "A follow-up")
    await expect(replies(page).last).to_have_attribute("data-status", "complete")

    await expect(items.first).to_have_attribute("data-session-id", older)
    await expect(items).to_have_count(2)
    await expect(session_link(page, "Older chat")).to_have_attribute("aria-current", "page")


async def test_a_new_chat_appears_at_the_top_and_selected(page: Page, web: WebApp) -> None:
    existing = await seed(web.client, "Existing chat")
    await page.goto(f"/?session={existing}")
    await expect(user_messages(page)).to_have_count(1)

    await button(page, "New chat").click()

    await expect(user_messages(page)).to_have_count(0)
    await expect(session_link(page, "Existing chat")).not_to_have_attribute("aria-current", "page")
    await send(page, "A brand new question")
    await expect(replies(page)).to_have_attribute("data-status", "complete")
    items = session_items(page)
    await expect(items).to_have_count(2)
    await expect(items.first).to_contain_text("A brand new question")
    await expect(session_link(page, "A brand new question")).to_have_attribute(
        "aria-current", "page"
    )
    listing = (await web.client.get(SESSIONS, params={"limit": 10})).json()
    newest = listing["sessions"][0]["session_id"]
    await expect(page).to_have_url(re.compile(rf"/\?session={newest}$"))


async def test_sessions_are_grouped_by_day_with_pinned_first(page: Page, web: WebApp) -> None:
    now = datetime.now(UTC)
    older = await seed(web.client, "A month ago")
    week = await seed(web.client, "Three days ago")
    yesterday = await seed(web.client, "Yesterday's chat")
    await seed(web.client, "Today's chat")
    pinned = await seed(web.client, "Pinned chat")
    await web.set_updated_at(older, now - timedelta(days=30))
    await web.set_updated_at(week, now - timedelta(days=3))
    await web.set_updated_at(yesterday, now - timedelta(days=1))
    await web.set_updated_at(pinned, now - timedelta(days=60))
    (await web.client.patch(f"{SESSIONS}/{pinned}", json={"pinned": True})).raise_for_status()

    await page.goto("/")

    await expect(headings(page)).to_have_text(
        ["Pinned", "Today", "Yesterday", "Previous 7 days", "Older"]
    )
    expected = {
        "Pinned": "Pinned chat",
        "Today": "Today's chat",
        "Yesterday": "Yesterday's chat",
        "Previous 7 days": "Three days ago",
        "Older": "A month ago",
    }
    for heading, title in expected.items():
        await expect(group(page, heading).get_by_role("link")).to_have_text([title])


async def test_infinite_scroll_lists_every_session_exactly_once(page: Page, web: WebApp) -> None:
    seeded = [await seed(web.client, f"Chat number {n:03d}") for n in range(MANY)]
    cursors: list[str | None] = []

    def record(request: Request) -> None:
        url = urlsplit(request.url)
        if url.path == SESSIONS and request.method == "GET":
            cursors.append(parse_qs(url.query).get("cursor", [None])[0])

    page.on("request", record)
    await page.goto("/")
    items = session_items(page)
    await expect(items.first).to_be_visible()

    sentinel = page.get_by_test_id("sidebar-sentinel")
    for _ in range(MANY):
        shown = await items.count()
        if shown >= MANY:
            break
        await sentinel.scroll_into_view_if_needed()
        await page.wait_for_function(
            "([selector, shown]) => document.querySelectorAll(selector).length > shown",
            arg=[ITEMS, shown],
        )

    ids = await ids_in_order(page)
    assert len(ids) == MANY
    assert len(set(ids)) == MANY
    # Newest first: the reverse of the order they were written in.
    assert ids == seeded[::-1]
    # Each page was asked for once.
    assert cursors[0] is None
    assert len(set(cursors)) == len(cursors)


async def test_rename_saves_on_enter_cancels_on_escape_and_persists(
    page: Page, web: WebApp
) -> None:
    first = await seed(web.client, "First topic")
    await seed(web.client, "Second topic")
    await page.goto("/")

    await choose_action(page, "First topic", "Rename")
    title = sidebar(page).get_by_role("textbox", name="Title", exact=True)
    await title.fill("Renamed topic")
    await title.press("Enter")
    await expect(session_link(page, "Renamed topic")).to_be_visible()

    await choose_action(page, "Second topic", "Rename")
    await title.fill("Not saved")
    await title.press("Escape")
    await expect(title).to_have_count(0)
    await expect(session_link(page, "Second topic")).to_be_visible()

    await page.reload()
    await expect(session_link(page, "Renamed topic")).to_be_visible()
    await expect(session_link(page, "Second topic")).to_be_visible()
    await expect(session_link(page, "Not saved")).to_have_count(0)
    detail = (await web.client.get(f"{SESSIONS}/{first}")).json()
    assert detail["title"] == "Renamed topic"


async def test_pin_and_unpin_persist(page: Page, web: WebApp) -> None:
    bottom = await seed(web.client, "Bottom chat")
    await seed(web.client, "Top chat")
    await page.goto("/")

    await choose_action(page, "Bottom chat", "Pin")

    await expect(group(page, "Pinned").get_by_role("link")).to_have_text(["Bottom chat"])
    await expect(session_items(page).first).to_have_attribute("data-session-id", bottom)
    await page.reload()
    await expect(group(page, "Pinned").get_by_role("link")).to_have_text(["Bottom chat"])

    await choose_action(page, "Bottom chat", "Unpin")

    await expect(group(page, "Pinned")).to_have_count(0)
    await expect(session_items(page).last).to_have_attribute("data-session-id", bottom)
    await page.reload()
    await expect(group(page, "Pinned")).to_have_count(0)
    assert (await web.client.get(f"{SESSIONS}/{bottom}")).json()["pinned"] is False


async def test_archive_and_unarchive_persist(page: Page, web: WebApp) -> None:
    archived = await seed(web.client, "Chat to archive")
    await seed(web.client, "Chat to keep")
    await page.goto("/")
    archived_toggle = button(page, "Archived")
    await expect(archived_toggle).to_have_attribute("aria-pressed", "false")

    await choose_action(page, "Chat to archive", "Archive")

    await expect(session_link(page, "Chat to archive")).to_have_count(0)
    await page.reload()
    await expect(session_link(page, "Chat to keep")).to_be_visible()
    await expect(session_link(page, "Chat to archive")).to_have_count(0)

    await archived_toggle.click()

    await expect(archived_toggle).to_have_attribute("aria-pressed", "true")
    await expect(session_items(page)).to_have_count(1)
    await expect(session_link(page, "Chat to archive")).to_be_visible()

    await choose_action(page, "Chat to archive", "Unarchive")

    await expect(session_link(page, "Chat to archive")).to_have_count(0)
    await archived_toggle.click()
    await expect(archived_toggle).to_have_attribute("aria-pressed", "false")
    await expect(session_items(page)).to_have_count(2)
    await page.reload()
    await expect(session_link(page, "Chat to archive")).to_be_visible()
    assert (await web.client.get(f"{SESSIONS}/{archived}")).json()["archived"] is False


async def test_delete_asks_first_and_persists(page: Page, web: WebApp) -> None:
    doomed = await seed(web.client, "Chat to delete")
    await seed(web.client, "Chat to keep")
    await page.goto(f"/?session={doomed}")
    await expect(user_messages(page)).to_contain_text("Chat to delete")

    await choose_action(page, "Chat to delete", "Delete")
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_be_visible()
    await dialog.get_by_role("button", name="Cancel", exact=True).click()
    await expect(dialog).to_be_hidden()
    await expect(session_link(page, "Chat to delete")).to_be_visible()

    await choose_action(page, "Chat to delete", "Delete")
    await dialog.get_by_role("button", name="Delete", exact=True).click()

    await expect(session_link(page, "Chat to delete")).to_have_count(0)
    # The open session was the deleted one: the page leaves it.
    await expect(user_messages(page)).to_have_count(0)
    await expect(page).not_to_have_url(re.compile(doomed))
    await page.reload()
    await expect(session_link(page, "Chat to keep")).to_be_visible()
    await expect(session_items(page)).to_have_count(1)
    assert (await web.client.get(f"{SESSIONS}/{doomed}")).status_code == 404


async def test_search_as_you_type_finds_sessions_by_message_text(page: Page, web: WebApp) -> None:
    trip = await seed(web.client, "Trip planning")
    response = await web.client.post(
        CHAT, json={"message": "What about the aquarium in Lisbon?", "session_id": trip}
    )
    response.raise_for_status()
    budget = await seed(web.client, "Quarterly budget review")
    await page.goto("/")
    await expect(session_items(page)).to_have_count(2)

    await search_box(page).press_sequentially("aquar")

    await expect(headings(page)).to_have_text(["Results"])
    results = group(page, "Results").locator("li[data-session-id]")
    await expect(results).to_have_count(1)
    await expect(results).to_have_attribute("data-session-id", trip)
    await expect(results).to_contain_text("aquarium")

    await search_box(page).fill("budg")
    await expect(results).to_have_count(1)
    await expect(results).to_have_attribute("data-session-id", budget)

    await search_box(page).fill("zzqxv")
    await expect(sidebar(page).get_by_role("status")).to_have_text("No results")
    await expect(session_items(page)).to_have_count(0)

    await search_box(page).fill("")
    await expect(headings(page)).to_have_text(["Today"])
    await expect(session_items(page)).to_have_count(2)


async def test_the_selected_session_survives_a_reload(page: Page, web: WebApp) -> None:
    chosen = await seed(web.client, "The chosen one")
    other = await seed(web.client, "Another chat")
    await page.goto("/")

    await session_link(page, "The chosen one").click()
    await expect(page).to_have_url(re.compile(rf"/\?session={chosen}$"))
    await expect(user_messages(page)).to_contain_text("The chosen one")

    await page.reload()

    await expect(session_link(page, "The chosen one")).to_have_attribute("aria-current", "page")
    await expect(session_item(page, other).get_by_role("link")).not_to_have_attribute(
        "aria-current", "page"
    )
    await expect(user_messages(page)).to_have_count(1)
    await expect(user_messages(page)).to_contain_text("The chosen one")
    await expect(replies(page)).to_contain_text("Hello from the fake.")


async def test_empty_history_says_so(page: Page) -> None:
    await page.goto("/")
    await expect(sidebar(page).get_by_role("status")).to_have_text("No chats yet")


async def test_a_phone_sized_screen_hides_the_history_behind_a_toggle(
    page: Page, web: WebApp
) -> None:
    await seed(web.client, "Chat on the phone")
    await page.set_viewport_size(PHONE)
    await page.goto("/")
    toggle = button(page, "Show chat history")
    await expect(toggle).to_be_visible()
    await expect(toggle).to_have_attribute("aria-expanded", "false")
    await expect(session_link(page, "Chat on the phone")).to_be_hidden()
    await expect(page.get_by_role("textbox", name="Message", exact=True)).to_be_visible()
    # Nothing wider than the screen (no sideways scrolling).
    assert await page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]

    await toggle.click()

    await expect(toggle).to_have_attribute("aria-expanded", "true")
    await expect(session_link(page, "Chat on the phone")).to_be_visible()
    await session_link(page, "Chat on the phone").click()
    await expect(user_messages(page)).to_contain_text("Chat on the phone")


async def test_a_desktop_screen_shows_the_history_without_a_toggle(page: Page, web: WebApp) -> None:
    await seed(web.client, "Chat on the desktop")
    await page.goto("/")
    await expect(session_link(page, "Chat on the desktop")).to_be_visible()
    await expect(button(page, "Show chat history")).to_be_hidden()


async def ids_in_order(page: Page) -> list[str]:
    ids: list[str] = await session_items(page).evaluate_all(
        "items => items.map(item => item.dataset.sessionId)"
    )
    return ids


async def test_a_right_to_left_title_is_isolated_and_shows_no_controls(
    page: Page, web: WebApp
) -> None:
    await page.goto("/")
    # An override that would flip the rest of the line if it leaked out of the title.
    await send(page, "\u202eexe.png invoice")
    await expect(replies(page)).to_have_attribute("data-status", "complete")
    title = session_items(page).first.locator(".session-title")
    await expect(title).to_have_attribute("dir", "auto")
    await expect(title).to_have_text("exe.png invoice")
