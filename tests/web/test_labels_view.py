"""Folders and tags in the sidebar, in a real browser (issue 16): create, rename and delete a
folder, move a chat into it by its menu and show the folder's chats; tag a chat by its menu
and filter the list by clicking the tag."""

from playwright.async_api import Dialog, Locator, Page, expect

from tests.web.conftest import WebApp, seed
from tests.web.pages import button, choose_action, session_items, session_link, sidebar


def answer_prompts(page: Page, *answers: str) -> None:
    """Accept the next prompts (and confirmations) with these answers, in order."""
    pending = list(answers)

    async def on_dialog(dialog: Dialog) -> None:
        await dialog.accept(pending.pop(0) if pending else "")

    page.on("dialog", on_dialog)


def folder_button(page: Page, name: str) -> Locator:
    folders = sidebar(page).get_by_role("list", name="Folders")
    return folders.get_by_role("button", name=name, exact=True)


async def test_folders_are_made_filled_shown_renamed_and_deleted(page: Page, web: WebApp) -> None:
    await seed(web.client, "Quarterly report")
    await seed(web.client, "Holiday plans")
    answer_prompts(page, "Work", "Office", "yes")
    await page.goto("/")
    await expect(session_items(page)).to_have_count(2)

    await button(page, "New folder").click()
    await expect(folder_button(page, "Work")).to_be_visible()
    await choose_action(page, "Quarterly report", "Move to folder")
    await page.get_by_role("menu").get_by_role("menuitem", name="Work").click()
    await expect(folder_button(page, "Work").locator(".folder-count")).to_have_text("1")

    await folder_button(page, "Work").click()
    await expect(session_items(page)).to_have_count(1)
    await expect(session_link(page, "Quarterly report")).to_be_visible()
    await expect(
        sidebar(page).get_by_role("status").filter(has_text="Showing folder Work")
    ).to_be_visible()

    await button(page, "Actions for folder Work").click()
    await page.get_by_role("menu").get_by_role("menuitem", name="Rename").click()
    await expect(folder_button(page, "Office")).to_be_visible()

    await button(page, "Actions for folder Office").click()
    await page.get_by_role("menu").get_by_role("menuitem", name="Delete").click()
    await expect(
        sidebar(page).get_by_role("list", name="Folders").get_by_role("button")
    ).to_have_count(0)
    # The folder shown is gone: every chat again, the moved one back at the top level.
    await expect(session_items(page)).to_have_count(2)
    response = await web.client.get("/api/v1/chat/sessions")
    assert {s["folder_id"] for s in response.json()["sessions"]} == {None}


async def test_tags_are_set_by_the_menu_and_filter_the_list(page: Page, web: WebApp) -> None:
    await seed(web.client, "Quarterly report")
    await seed(web.client, "Holiday plans")
    answer_prompts(page, "Work, urgent")
    await page.goto("/")
    await expect(session_items(page)).to_have_count(2)

    await choose_action(page, "Quarterly report", "Edit tags")
    await expect(button(page, "Show chats tagged urgent")).to_be_visible()
    await expect(button(page, "Show chats tagged Work")).to_be_visible()

    await button(page, "Show chats tagged Work").click()
    await expect(session_items(page)).to_have_count(1)
    await expect(session_link(page, "Quarterly report")).to_be_visible()
    await expect(
        sidebar(page).get_by_role("status").filter(has_text="Showing tag Work")
    ).to_be_visible()

    await button(page, "Show all").click()
    await expect(session_items(page)).to_have_count(2)
