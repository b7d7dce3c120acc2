"""Folders and tags in the sidebar, in a real browser (issue 16): create, rename and delete a
folder in the page's own dialogs, move a chat into it by its menu and show the folder's chats;
tag a chat in the tags dialog and filter the list by clicking the tag."""

import re

from playwright.async_api import Locator, Page, expect

from tests.web.conftest import WebApp, seed
from tests.web.pages import button, choose_action, session_items, session_link, sidebar


def dialog(page: Page, title: str) -> Locator:
    return page.get_by_role("dialog", name=title)


async def name_folder(page: Page, title: str, name: str, submit: str) -> None:
    """Types `name` into the folder-name dialog titled `title` and submits it."""
    asking = dialog(page, title)
    await expect(asking).to_be_visible()
    await asking.get_by_role("textbox", name="Name").fill(name)
    await asking.get_by_role("button", name=submit, exact=True).click()


def folder_button(page: Page, name: str) -> Locator:
    folders = sidebar(page).get_by_role("list", name="Folders")
    return folders.get_by_role("button", name=name, exact=True)


async def test_folders_are_made_filled_shown_renamed_and_deleted(page: Page, web: WebApp) -> None:
    await seed(web.client, "Quarterly report")
    await seed(web.client, "Holiday plans")
    await page.goto("/")
    await expect(session_items(page)).to_have_count(2)

    await button(page, "New folder").click()
    await name_folder(page, "New folder", "Work", "Create")
    await expect(dialog(page, "New folder")).to_be_hidden()
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
    await expect(dialog(page, "Rename folder Work").get_by_role("textbox")).to_have_value("Work")
    await name_folder(page, "Rename folder Work", "Office", "Rename")
    await expect(folder_button(page, "Office")).to_be_visible()

    await button(page, "Actions for folder Office").click()
    await page.get_by_role("menu").get_by_role("menuitem", name="Delete").click()
    deleting = dialog(page, 'Delete folder "Office"?')
    await expect(deleting.get_by_role("checkbox", name="Delete its 1 chat too")).not_to_be_checked()
    await deleting.get_by_role("button", name="Delete folder").click()
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
    await page.goto("/")
    await expect(session_items(page)).to_have_count(2)

    await choose_action(page, "Quarterly report", "Edit tags")
    tags = dialog(page, "Tags")
    field = tags.get_by_role("combobox", name="Add a tag")
    await field.fill("Work")
    await field.press("Enter")
    await field.fill("urgent, later")
    await field.press("Enter")
    chips = tags.get_by_role("list", name="Tags of this chat").get_by_role("listitem")
    await expect(chips).to_have_text(["Work", "urgent", "later"])
    await tags.get_by_role("button", name="Remove tag later").click()
    await field.fill("work")  # the same tag as Work: not added twice
    await field.press("Enter")
    await expect(chips).to_have_text(["Work", "urgent"])
    await tags.get_by_role("button", name="Save tags").click()
    await expect(tags).to_be_hidden()
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


async def test_a_folder_name_taken_is_said_in_the_dialog(page: Page, web: WebApp) -> None:
    await web.client.post("/api/v1/chat/folders", json={"name": "Work"})
    await page.goto("/")
    await expect(folder_button(page, "Work")).to_be_visible()

    await button(page, "New folder").click()
    await name_folder(page, "New folder", "work", "Create")
    asking = dialog(page, "New folder")
    await expect(asking.get_by_role("alert")).to_contain_text("already there")
    await expect(asking.get_by_role("textbox", name="Name")).to_have_value("work")
    await name_folder(page, "New folder", "Play", "Create")
    await expect(asking).to_be_hidden()
    await expect(folder_button(page, "Play")).to_be_visible()


async def test_deleting_a_folder_can_delete_its_chats(page: Page, web: WebApp) -> None:
    kept = await seed(web.client, "Holiday plans")
    filed = await seed(web.client, "Quarterly report")
    folder = (await web.client.post("/api/v1/chat/folders", json={"name": "Work"})).json()
    moved = await web.client.patch(
        f"/api/v1/chat/sessions/{filed}", json={"folder_id": folder["folder_id"]}
    )
    assert moved.status_code == 200
    await page.goto(f"/?session={filed}")  # the chat open is the one filed in the folder
    await expect(session_items(page)).to_have_count(2)

    await button(page, "Actions for folder Work").click()
    await page.get_by_role("menu").get_by_role("menuitem", name="Delete").click()
    deleting = dialog(page, 'Delete folder "Work"?')
    await deleting.get_by_role("checkbox", name="Delete its 1 chat too").check()
    await deleting.get_by_role("button", name="Delete folder").click()

    await expect(session_items(page)).to_have_count(1)
    await expect(session_link(page, "Holiday plans")).to_be_visible()
    await expect(page).to_have_url(re.compile(r"/$"))  # the open chat went with the folder
    listed = (await web.client.get("/api/v1/chat/sessions")).json()["sessions"]
    assert [s["session_id"] for s in listed] == [kept]
