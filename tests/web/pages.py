"""Locators of the chat page, by role and accessible name as its contract names them."""

from playwright.async_api import Locator, Page


def sidebar(page: Page) -> Locator:
    return page.get_by_role("navigation", name="Chat history")


def session_items(page: Page) -> Locator:
    """Every session listed in the sidebar, in display order."""
    return sidebar(page).locator("li[data-session-id]")


def session_item(page: Page, session_id: str) -> Locator:
    return sidebar(page).locator(f'li[data-session-id="{session_id}"]')


def session_link(page: Page, title: str) -> Locator:
    return sidebar(page).get_by_role("link", name=title, exact=True)


def group(page: Page, heading: str) -> Locator:
    """A group of the sidebar (Pinned, Today, ..., Results) by its heading."""
    return sidebar(page).locator(
        "section", has=page.get_by_role("heading", name=heading, exact=True)
    )


def headings(page: Page) -> Locator:
    return sidebar(page).locator("section").get_by_role("heading")


def search_box(page: Page) -> Locator:
    return page.get_by_role("searchbox", name="Search chats", exact=True)


def messages(page: Page) -> Locator:
    return page.get_by_role("list", name="Messages", exact=True)


def user_messages(page: Page) -> Locator:
    return messages(page).locator('li[data-role="user"]')


def replies(page: Page) -> Locator:
    return messages(page).locator('li[data-role="assistant"]')


def composer(page: Page) -> Locator:
    return page.get_by_role("textbox", name="Message", exact=True)


def button(page: Page, name: str) -> Locator:
    return page.get_by_role("button", name=name, exact=True)


async def send(page: Page, message: str) -> None:
    """Type a message into the composer and send it with Enter."""
    await composer(page).fill(message)
    await composer(page).press("Enter")


async def choose_action(page: Page, title: str, action: str) -> None:
    """Open a session's actions menu and pick one item."""
    await button(page, f"Actions for {title}").click()
    await page.get_by_role("menu").get_by_role("menuitem", name=action, exact=True).click()


def versions(message: Locator) -> Locator:
    """A message's "< 2 / 3 >" control (its text: "2 / 3")."""
    return message.get_by_role("group", name="Versions", exact=True)


def in_message(message: Locator, name: str) -> Locator:
    """A button of one message's toolbar: Edit message, Regenerate reply, Previous version..."""
    return message.get_by_role("button", name=name, exact=True)


def edit_box(page: Page) -> Locator:
    return messages(page).get_by_role("textbox", name="Edited message", exact=True)


def text_of(message: Locator) -> Locator:
    """A message's text alone, without its notes and toolbar."""
    return message.locator(".message-body")
