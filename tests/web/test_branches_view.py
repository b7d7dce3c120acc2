"""Branches in a real browser: editing a message in place, regenerating a reply, the
"< 2 / 3 >" arrows between versions, and the server remembering the choice across reloads."""

from playwright.async_api import Page, expect

from tests.fakes.openai_server import Respond
from tests.web.conftest import CHAT, PHONE, SESSIONS, Upstream, WebApp, seed
from tests.web.pages import (
    button,
    composer,
    edit_box,
    in_message,
    replies,
    search_box,
    session_item,
    text_of,
    user_messages,
    versions,
)


async def seed_exchanges(web: WebApp, upstream: Upstream, *turns: tuple[str, str]) -> str:
    """A session of (question, answer) exchanges, written through the API."""
    upstream.fake.queue(*(Respond(chunks=[answer]) for _, answer in turns))
    session_id = await seed(web.client, turns[0][0])
    for question, _ in turns[1:]:
        response = await web.client.post(CHAT, json={"message": question, "session_id": session_id})
        response.raise_for_status()
    return session_id


async def test_editing_a_message_in_place_makes_a_version_the_server_remembers(
    page: Page, web: WebApp, upstream: Upstream
) -> None:
    session_id = await seed_exchanges(web, upstream, ("First question", "Original answer."))
    await page.goto(f"/?session={session_id}")
    question = user_messages(page)
    await expect(text_of(replies(page))).to_have_text("Original answer.")
    await expect(versions(question)).to_have_count(0)

    # Escape gives up: the message is back as it was, focus on its pencil.
    await in_message(question, "Edit message").click()
    await expect(edit_box(page)).to_be_focused()
    await expect(edit_box(page)).to_have_value("First question")
    await edit_box(page).press("Escape")
    await expect(edit_box(page)).to_have_count(0)
    await expect(question).to_contain_text("First question")
    await expect(in_message(question, "Edit message")).to_be_focused()

    resume = upstream.gate()
    upstream.fake.queue(Respond(chunks=["Edited ", "answer."], pause_after=1, resume=resume))
    await in_message(question, "Edit message").click()
    await edit_box(page).fill("Second thoughts")
    await edit_box(page).press("Shift+Enter")
    await edit_box(page).press_sequentially("on two lines")
    await expect(edit_box(page)).to_have_value("Second thoughts\non two lines")
    await edit_box(page).press("Enter")

    # The new message takes the old one's place; the reply streams below it.
    await expect(question).to_have_count(1)
    await expect(question).to_contain_text("Second thoughts")
    await expect(replies(page)).to_have_count(1)
    await expect(replies(page)).to_contain_text("Edited")
    await expect(in_message(question, "Edit message")).to_be_disabled()
    resume.set()
    await expect(replies(page)).to_have_attribute("data-status", "complete")
    await expect(replies(page)).to_contain_text("Edited answer.")
    await expect(versions(question)).to_have_text("2 / 2")
    await expect(in_message(question, "Next version")).to_be_disabled()
    await expect(in_message(question, "Edit message")).to_be_enabled()
    # The model saw the edited message, not the original one.
    assert upstream.fake.requests[-1]["messages"][-1]["content"] == "Second thoughts\non two lines"

    await in_message(question, "Previous version").click()

    await expect(question).to_contain_text("First question")
    await expect(text_of(replies(page))).to_have_text("Original answer.")
    await expect(versions(question)).to_have_text("1 / 2")
    await expect(in_message(question, "Next version")).to_be_focused()
    # The sidebar follows the branch.
    await expect(session_item(page, session_id)).to_be_visible()

    await page.reload()

    await expect(question).to_contain_text("First question")
    await expect(text_of(replies(page))).to_have_text("Original answer.")
    await expect(versions(question)).to_have_text("1 / 2")


async def test_regenerating_a_reply_streams_a_new_version_in_its_place(
    page: Page, web: WebApp, upstream: Upstream
) -> None:
    session_id = await seed_exchanges(web, upstream, ("Tell me a joke", "First joke."))
    await page.goto(f"/?session={session_id}")
    reply = replies(page)
    await expect(text_of(reply)).to_have_text("First joke.")

    resume = upstream.gate()
    upstream.fake.queue(Respond(chunks=["Second ", "joke."], pause_after=1, resume=resume))
    await in_message(reply, "Regenerate reply").click()

    await expect(reply).to_have_count(1)
    await expect(reply).to_contain_text("Second")
    await expect(reply).to_have_attribute("data-status", "streaming")
    await expect(button(page, "Stop")).to_be_visible()
    await expect(in_message(user_messages(page), "Edit message")).to_be_disabled()
    resume.set()
    await expect(reply).to_have_attribute("data-status", "complete")
    await expect(reply).to_contain_text("Second joke.")
    await expect(versions(reply)).to_have_text("2 / 2")
    await expect(user_messages(page)).to_have_count(1)

    await in_message(reply, "Previous version").click()

    await expect(reply).to_contain_text("First joke.")
    await expect(versions(reply)).to_have_text("1 / 2")
    await page.reload()
    await expect(reply).to_contain_text("First joke.")
    await expect(versions(reply)).to_have_text("1 / 2")
    await in_message(reply, "Next version").click()
    await expect(reply).to_contain_text("Second joke.")
    await expect(versions(reply)).to_have_text("2 / 2")


async def test_a_choice_below_a_fork_survives_switching_at_the_fork_above(
    page: Page, web: WebApp, upstream: Upstream
) -> None:
    session_id = await seed_exchanges(web, upstream, ("Q1", "A1."), ("Q2", "A2."))
    await page.goto(f"/?session={session_id}")
    q2 = user_messages(page).nth(1)
    a2 = replies(page).nth(1)
    await expect(text_of(a2)).to_have_text("A2.")

    upstream.fake.queue(Respond(chunks=["B1."]), Respond(chunks=["B2."]))
    await in_message(q2, "Edit message").click()
    await edit_box(page).fill("Q2 edited")
    await button(page, "Save & send").click()
    await expect(text_of(a2)).to_have_text("B1.")
    await expect(a2).to_have_attribute("data-status", "complete")
    await in_message(a2, "Regenerate reply").click()
    await expect(text_of(a2)).to_have_text("B2.")
    await expect(versions(a2)).to_have_text("2 / 2")
    await in_message(a2, "Previous version").click()
    await expect(text_of(a2)).to_have_text("B1.")
    await expect(versions(a2)).to_have_text("1 / 2")

    # Up at the edited message: to the original and back.
    await in_message(q2, "Previous version").click()
    await expect(text_of(q2)).to_have_text("Q2")
    await expect(versions(q2)).to_have_text("1 / 2")
    await expect(text_of(a2)).to_have_text("A2.")
    await expect(versions(a2)).to_have_count(0)
    await in_message(q2, "Next version").click()

    await expect(text_of(q2)).to_have_text("Q2 edited")
    await expect(text_of(a2)).to_have_text("B1.")
    await expect(versions(a2)).to_have_text("1 / 2")
    await expect(user_messages(page).first).to_contain_text("Q1")
    await expect(replies(page)).to_have_count(2)


async def test_stopping_a_regenerated_reply_keeps_what_it_had(
    page: Page, web: WebApp, upstream: Upstream
) -> None:
    session_id = await seed_exchanges(web, upstream, ("Write a poem", "A short poem."))
    await page.goto(f"/?session={session_id}")
    reply = replies(page)
    await expect(text_of(reply)).to_have_text("A short poem.")
    resume = upstream.gate()
    upstream.fake.queue(
        Respond(chunks=["A longer poem", " that never ends."], pause_after=1, resume=resume)
    )
    await in_message(reply, "Regenerate reply").click()
    await expect(reply).to_contain_text("A longer poem")

    await button(page, "Stop").click()

    await expect(button(page, "Stop")).to_be_hidden()
    await expect(reply).to_have_attribute("data-status", "incomplete")
    await expect(reply.locator(".message-note")).to_have_text("Stopped")
    await expect(versions(reply)).to_have_text("2 / 2")
    resume.set()
    await web.settle()
    await page.reload()
    await expect(reply).to_contain_text("A longer poem")
    await expect(reply).not_to_contain_text("never ends")
    await expect(reply).to_have_attribute("data-status", "incomplete")
    await expect(versions(reply)).to_have_text("2 / 2")


async def test_on_a_phone_the_arrows_fit_and_a_failed_switch_shows_the_alert(
    page: Page, web: WebApp, upstream: Upstream
) -> None:
    session_id = await seed_exchanges(web, upstream, ("Hello", "Hi."))
    upstream.fake.queue(Respond(chunks=["Hi again."]))
    listing = (await web.client.get(f"{SESSIONS}/{session_id}")).json()
    reply_id = listing["messages"][-1]["id"]
    response = await web.client.post(
        f"{SESSIONS}/{session_id}/messages/{reply_id}/regenerate", params={"stream": "false"}
    )
    response.raise_for_status()
    await page.set_viewport_size(PHONE)
    await page.goto(f"/?session={session_id}")
    reply = replies(page)
    await expect(text_of(reply)).to_have_text("Hi again.")
    await expect(versions(reply)).to_have_text("2 / 2")
    await expect(in_message(reply, "Previous version")).to_be_in_viewport()
    assert await page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]

    # The session is deleted elsewhere: the switch is refused, and the page says so.
    (await web.client.delete(f"{SESSIONS}/{session_id}")).raise_for_status()
    await in_message(reply, "Previous version").click()

    alert = page.get_by_role("alert")
    await expect(alert).to_be_visible()
    await expect(alert).not_to_be_empty()
    await expect(text_of(reply)).to_have_text("Hi again.")
    await expect(composer(page)).to_be_enabled()


async def test_a_switch_keeps_the_message_where_it_was_on_screen(
    page: Page, web: WebApp, upstream: Upstream
) -> None:
    long = "A long paragraph. " * 40
    turns = [(f"Question {n}", f"Answer {n}.\n\n{long}") for n in range(8)]
    session_id = await seed_exchanges(web, upstream, *turns)
    await page.goto(f"/?session={session_id}")
    reply = replies(page).nth(3)
    await reply.scroll_into_view_if_needed()
    upstream.fake.queue(Respond(chunks=["Regenerated."]))
    await in_message(reply, "Regenerate reply").click()
    await expect(versions(reply)).to_have_text("2 / 2")
    # The branch below the old reply went with it.
    await expect(replies(page)).to_have_count(4)
    before = await reply.bounding_box()

    await in_message(reply, "Previous version").click()

    await expect(text_of(reply)).to_contain_text("Answer 3.")
    await expect(replies(page)).to_have_count(8)
    await expect(in_message(reply, "Next version")).to_be_focused()
    after = await reply.bounding_box()
    assert before is not None
    assert after is not None
    assert abs(after["y"] - before["y"]) < 2


async def test_a_search_match_on_another_version_opens_that_version(
    page: Page, web: WebApp, upstream: Upstream
) -> None:
    session_id = await seed_exchanges(
        web, upstream, ("Plan the aquarium trip", "Saturday works."), ("Who drives?", "Sam.")
    )
    detail = (await web.client.get(f"{SESSIONS}/{session_id}")).json()
    question = detail["messages"][2]["id"]
    upstream.fake.queue(Respond(chunks=["Tomorrow."]))
    edited = await web.client.post(
        CHAT, json={"message": "When do we leave?", "session_id": session_id, "edit_of": question}
    )
    edited.raise_for_status()
    await page.goto("/")

    await search_box(page).fill("drives")
    result = session_item(page, session_id)
    await expect(result).to_contain_text("In another version")
    await result.get_by_role("link").click()

    # The branch with the match is shown, and it is the one the server now remembers.
    await expect(user_messages(page).nth(1)).to_contain_text("Who drives?")
    await expect(versions(user_messages(page).nth(1))).to_have_text("1 / 2")
    await page.reload()
    await expect(user_messages(page).nth(1)).to_contain_text("Who drives?")
