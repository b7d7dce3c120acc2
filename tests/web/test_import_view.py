"""Import in a real browser (issue 16): the sidebar's Import button uploads a ChatGPT export,
a progress bar follows the import to its end, and the sidebar then shows the imported chats."""

import json
from pathlib import Path

from playwright.async_api import Page, expect

from tests.fakes.chatgpt import ChatGPTConversation, export_zip
from tests.web.conftest import WebApp, seed
from tests.web.pages import button, session_items, session_link, sidebar


def conversation(conversation_id: str, title: str, start: float) -> ChatGPTConversation:
    chat = ChatGPTConversation(conversation_id, title)
    root = chat.root()
    question = chat.add("q", root, "user", f"About {title}", at=chat.create_time + start)
    chat.add("r", question, "assistant", f"{title}, answered", at=chat.create_time + start + 1)
    return chat


async def test_an_export_is_imported_from_the_sidebar(
    page: Page, web: WebApp, tmp_path: Path
) -> None:
    await seed(web.client, "Written here")
    export = tmp_path / "chatgpt-export.zip"
    chats = [conversation(f"c{n}", f"Imported {n}", n * 60).as_json() for n in range(3)]
    broken = {"title": "Broken", "create_time": 1.0, "conversation_id": "broken"}
    export.write_bytes(export_zip([*chats, broken]))
    await page.goto("/")
    await expect(session_items(page)).to_have_count(1)

    async with page.expect_file_chooser() as chooser:
        await button(page, "Import chats").click()
    await (await chooser.value).set_files(export)

    status = sidebar(page).get_by_role("status").filter(has_text="Import done")
    await expect(status).to_have_text(
        "Import done: 3 imported, 1 failed (Broken: no `mapping` of messages)."
    )
    progress = sidebar(page).get_by_role("progressbar", name="Import progress")
    await expect(progress).to_have_attribute("value", "4")
    await expect(progress).to_have_attribute("max", "4")
    # The sidebar shows them, among the chat written here (which is newer).
    await expect(session_items(page)).to_have_count(4)
    await expect(session_link(page, "Imported 2")).to_be_visible()

    # Again: nothing new.
    async with page.expect_file_chooser() as chooser:
        await button(page, "Import chats").click()
    await (await chooser.value).set_files(export)
    await expect(
        sidebar(page).get_by_role("status").filter(has_text="3 already there")
    ).to_be_visible()
    await expect(session_items(page)).to_have_count(4)


async def test_a_file_that_is_not_an_export_says_why(
    page: Page, web: WebApp, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.json"
    notes.write_text(json.dumps({"notes": []}))
    await page.goto("/")

    async with page.expect_file_chooser() as chooser:
        await button(page, "Import chats").click()
    await (await chooser.value).set_files(notes)

    await expect(
        sidebar(page).get_by_role("status").filter(has_text="Import failed")
    ).to_contain_text("not an export")
    await expect(button(page, "Import chats")).to_be_enabled()
