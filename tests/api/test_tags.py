"""Tags over HTTP (issue 16): set on a session by PATCH (replacing its tags, in the user's
order, one tag per name ignoring case, first spelling kept, per user), listed with counts,
renamed (merging) and deleted everywhere, and the sidebar list filtered by all of several tags
together with folders, search and archive, on SQLite and PostgreSQL."""

import asyncio
import uuid
from typing import Any

import httpx

from app.tags.schemas import TAGS_PER_SESSION
from tests.api.helpers import SESSIONS, Json, get_session, send, session_url
from tests.api.test_folders import create, listed

TAGS = "/api/v1/chat/tags"


def tag_url(tag_id: str) -> str:
    return f"{TAGS}/{tag_id}"


async def tag(client: httpx.AsyncClient, session_id: str, tags: list[str]) -> Json:
    response = await client.patch(session_url(session_id), json={"tags": tags})
    assert response.status_code == 200, response.text
    data: Json = response.json()
    return data


async def tags_list(client: httpx.AsyncClient, **params: str) -> list[tuple[str, int]]:
    response = await client.get(TAGS, params=params)
    assert response.status_code == 200, response.text
    for item in response.json()["tags"]:
        assert set(item) == {"tag_id", "name", "session_count"}
    return [(t["name"], t["session_count"]) for t in response.json()["tags"]]


async def tag_id(client: httpx.AsyncClient, name: str) -> str:
    response = await client.get(TAGS)
    [found] = [t["tag_id"] for t in response.json()["tags"] if t["name"] == name]
    return str(found)


async def new_session(client: httpx.AsyncClient, text: str, tags: list[str] | None = None) -> str:
    session_id: str = (await send(client, text))["session_id"]
    if tags is not None:
        await tag(client, session_id, tags)
    return session_id


async def test_tags_replace_in_order_one_per_name_first_spelling_kept(
    client: httpx.AsyncClient,
) -> None:
    first = await new_session(client, "one")
    second = await new_session(client, "two")

    answer = await tag(client, first, ["  Work ", "urgent", "WORK", "Home"])

    assert answer["tags"] == ["Work", "urgent", "Home"]
    assert (await get_session(client, first))["tags"] == ["Work", "urgent", "Home"]
    # Another session's "work" is the same tag, spelled as first written.
    assert (await tag(client, second, ["home", "work"]))["tags"] == ["Home", "Work"]
    assert await tags_list(client) == [("Home", 2), ("urgent", 1), ("Work", 2)]
    # Replacing: tags no session carries any more are gone.
    assert (await tag(client, first, ["Later"]))["tags"] == ["Later"]
    assert await tags_list(client) == [("Home", 1), ("Later", 1), ("Work", 1)]
    assert (await tag(client, first, []))["tags"] == []
    listed_items = (await client.get(SESSIONS)).json()["sessions"]
    assert {s["session_id"]: s["tags"] for s in listed_items} == {
        first: [],
        second: ["Home", "Work"],
    }
    # Other fields are left alone.
    assert (await client.patch(session_url(second), json={"pinned": True})).json()["tags"] == [
        "Home",
        "Work",
    ]


async def test_tag_names_are_validated(client: httpx.AsyncClient) -> None:
    session_id = await new_session(client, "one", ["Keep"])
    for tags in (
        ["x" * 51],
        [" "],
        [""],
        ["ok", 3],
        [f"t{n}" for n in range(TAGS_PER_SESSION + 1)],
        None,
    ):
        response = await client.patch(session_url(session_id), json={"tags": tags})
        assert response.status_code == 422, tags
    assert (await get_session(client, session_id))["tags"] == ["Keep"]
    # Fifty characters once trimmed, and twenty tags, are fine.
    padded = "  " + "x" * 50 + "  "
    assert (await tag(client, session_id, [padded]))["tags"] == ["x" * 50]
    many = [f"t{n}" for n in range(TAGS_PER_SESSION)]
    assert (await tag(client, session_id, many))["tags"] == many


async def test_rename_everywhere_and_merge_into_an_existing_tag(
    client: httpx.AsyncClient,
) -> None:
    a = await new_session(client, "a", ["Work", "Home"])
    b = await new_session(client, "b", ["Office"])
    c = await new_session(client, "c", ["office", "work"])

    renamed = await client.patch(tag_url(await tag_id(client, "Home")), json={"name": "House"})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["name"] == "House"
    assert renamed.json()["session_count"] == 1
    assert (await get_session(client, a))["tags"] == ["Work", "House"]

    work_id = await tag_id(client, "Work")
    merged = await client.patch(tag_url(await tag_id(client, "Office")), json={"name": "WORK"})

    assert merged.status_code == 200, merged.text
    assert merged.json() == {"tag_id": work_id, "name": "WORK", "session_count": 3}
    assert (await get_session(client, a))["tags"] == ["WORK", "House"]
    assert (await get_session(client, b))["tags"] == ["WORK"]
    # c carried both: once, at the merged tag's place.
    assert (await get_session(client, c))["tags"] == ["WORK"]
    assert await tags_list(client) == [("House", 1), ("WORK", 3)]


async def test_delete_removes_a_tag_from_every_session(client: httpx.AsyncClient) -> None:
    a = await new_session(client, "a", ["Work", "Home"])
    b = await new_session(client, "b", ["work"])
    work_id = await tag_id(client, "Work")

    response = await client.delete(tag_url(work_id))

    assert response.status_code == 204, response.text
    assert (await get_session(client, a))["tags"] == ["Home"]
    assert (await get_session(client, b))["tags"] == []
    assert await tags_list(client) == [("Home", 1)]
    assert (await client.delete(tag_url(work_id))).status_code == 404
    missing = await client.patch(tag_url(str(uuid.uuid4())), json={"name": "x"})
    assert missing.status_code == 404
    assert missing.json() == {"detail": "Tag not found"}


async def test_deleting_a_session_removes_its_tags(client: httpx.AsyncClient) -> None:
    a = await new_session(client, "a", ["Work", "Only here"])
    await new_session(client, "b", ["Work"])

    await client.delete(session_url(a))

    assert await tags_list(client) == [("Work", 1)]


# --- Concurrent changes of one user's tags ------------------------------------------------
# Each runs a few rounds: on PostgreSQL the two requests interleave differently each time.


async def test_tagging_a_session_while_the_tag_leaves_its_last_session_keeps_it(
    client: httpx.AsyncClient,
) -> None:
    for attempt in range(20):
        name = f"tag {attempt}"
        leaving = await new_session(client, f"leaving {attempt}", [name])
        joining = await new_session(client, f"joining {attempt}")

        responses = await asyncio.gather(
            client.patch(session_url(leaving), json={"tags": []}),
            client.patch(session_url(joining), json={"tags": [name]}),
        )

        assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
        assert responses[1].json()["tags"] == [name]
        # Not deleted as unused (and taken from the session by cascade) after the answer.
        assert (await get_session(client, joining))["tags"] == [name]


async def test_two_tags_renamed_to_one_name_at_once_merge(client: httpx.AsyncClient) -> None:
    for attempt in range(5):
        a = await new_session(client, f"a {attempt}", [f"one {attempt}"])
        b = await new_session(client, f"b {attempt}", [f"two {attempt}"])
        one, two = await tag_id(client, f"one {attempt}"), await tag_id(client, f"two {attempt}")

        responses = await asyncio.gather(
            client.patch(tag_url(one), json={"name": f"same {attempt}"}),
            client.patch(tag_url(two), json={"name": f"SAME {attempt}"}),
        )

        assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
        # One tag, on both sessions.
        [merged] = {tuple((await get_session(client, s))["tags"]) for s in (a, b)}
        assert merged in {(f"same {attempt}",), (f"SAME {attempt}",)}


async def test_two_tags_renamed_to_each_others_names_at_once_merge(
    client: httpx.AsyncClient,
) -> None:
    for attempt in range(3):
        one, two = f"one {attempt}", f"two {attempt}"
        a = await new_session(client, f"a {attempt}", [one])
        b = await new_session(client, f"b {attempt}", [two])
        one_id, two_id = await tag_id(client, one), await tag_id(client, two)

        responses = await asyncio.gather(
            client.patch(tag_url(one_id), json={"name": two}),
            client.patch(tag_url(two_id), json={"name": one}),
        )

        assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
        [merged] = {tuple((await get_session(client, s))["tags"]) for s in (a, b)}
        assert merged in {(one,), (two,)}


async def test_a_rename_while_the_session_is_retagged(client: httpx.AsyncClient) -> None:
    for attempt in range(5):
        old, other, new = f"old {attempt}", f"other {attempt}", f"new {attempt}"
        session_id = await new_session(client, f"s {attempt}", [old, other])
        old_id = await tag_id(client, old)

        responses = await asyncio.gather(
            client.patch(tag_url(old_id), json={"name": new}),
            client.patch(session_url(session_id), json={"tags": [other, old, new]}),
        )

        assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
        tags = (await get_session(client, session_id))["tags"]
        assert tags in ([other, new], [other, old, new]), tags


async def test_the_list_filtered_by_tags_with_folders_search_and_archive(
    client: httpx.AsyncClient,
) -> None:
    folder = await create(client, "Projects")
    both = await new_session(client, "report both", ["Work", "Urgent"])
    work = await new_session(client, "report work", ["work"])
    urgent_in_folder = await new_session(client, "report urgent", ["Urgent"])
    await client.patch(session_url(urgent_in_folder), json={"folder_id": folder["folder_id"]})
    both_in_folder = await new_session(client, "report both filed", ["urgent", "WORK"])
    await client.patch(session_url(both_in_folder), json={"folder_id": folder["folder_id"]})
    archived = await new_session(client, "report archived", ["Work"])
    await client.patch(session_url(archived), json={"archived": True})
    await new_session(client, "report untagged")

    assert await listed(client, tag="work") == [both_in_folder, work, both]
    assert await listed(client, tag=["Work", "URGENT"]) == [both_in_folder, both]
    assert await listed(client, tag=["Work", "nope"]) == []
    assert await listed(client, tag="Work", archived="true") == [archived]
    assert await listed(client, tag="urgent", folder_id=folder["folder_id"]) == [
        both_in_folder,
        urgent_in_folder,
    ]
    assert await listed(client, tag=["urgent", "work"], folder_id="none") == [both]
    assert set(await listed(client, q="report", tag="work")) == {both_in_folder, work, both}
    assert await listed(client, q="filed", tag="urgent", folder_id=folder["folder_id"]) == [
        both_in_folder
    ]
    page = (await client.get(SESSIONS, params={"tag": "work", "page_size": 2})).json()
    assert page["total"] == 3
    assert page["total_pages"] == 2
    # Cursor mode: every one once, and the cursor only with the same tags.
    seen: list[str] = []
    params: dict[str, Any] = {"tag": "work", "limit": 1}
    while True:
        data = (await client.get(SESSIONS, params=params)).json()
        seen += [s["session_id"] for s in data["sessions"]]
        if not data["has_more"]:
            break
        other = await client.get(
            SESSIONS, params={"tag": ["work", "urgent"], "limit": 1, "cursor": data["next_cursor"]}
        )
        assert other.status_code == 422, other.text
        # The same tags in another spelling are the same filter.
        same = await client.get(
            SESSIONS, params={"tag": "WORK", "limit": 1, "cursor": data["next_cursor"]}
        )
        assert same.status_code == 200, same.text
        params["cursor"] = data["next_cursor"]
    assert seen == [both_in_folder, work, both]
    # The same tags in another order are the same filter too.
    first = (await client.get(SESSIONS, params={"tag": ["work", "urgent"], "limit": 1})).json()
    reordered = await client.get(
        SESSIONS, params={"tag": ["URGENT", "work"], "limit": 1, "cursor": first["next_cursor"]}
    )
    assert reordered.status_code == 200, reordered.text
    assert [s["session_id"] for s in first["sessions"] + reordered.json()["sessions"]] == [
        both_in_folder,
        both,
    ]


async def test_tag_query_is_validated(client: httpx.AsyncClient) -> None:
    for params in ({"tag": ""}, {"tag": "x" * 51}, {"tag": [f"t{n}" for n in range(11)]}):
        response = await client.get(SESSIONS, params=params)
        assert response.status_code == 422, params


# --- Names that look the same, and tags no session carries -------------------------------

NFC_CAFE = "caf\u00e9"  # é as one code point
NFD_CAFE = "cafe\u0301"  # e, then a combining acute accent


async def test_canonically_equivalent_names_are_one_tag_spelled_in_nfc(
    client: httpx.AsyncClient,
) -> None:
    a = await new_session(client, "a", [NFC_CAFE])
    b = await new_session(client, "b", [NFD_CAFE.upper()])
    c = await new_session(client, "c", ["cafe"])

    # The same tag (its first spelling), and `cafe` without the accent is another one.
    assert (await get_session(client, b))["tags"] == [NFC_CAFE]
    assert await tags_list(client) == [("cafe", 1), (NFC_CAFE, 2)]
    # Both spellings in one request are one tag.
    assert (await tag(client, a, [NFD_CAFE, NFC_CAFE]))["tags"] == [NFC_CAFE]
    # A name given in NFD is stored in NFC.
    assert (await tag(client, c, ["Cre\u0300me"]))["tags"] == ["Cr\u00e8me"]
    renamed = await client.patch(
        tag_url(await tag_id(client, NFC_CAFE)), json={"name": "Cafe\u0301"}
    )
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["name"] == "Caf\u00e9"
    # The filter finds it in either form.
    assert set(await listed(client, tag=NFD_CAFE)) == {a, b}


async def test_a_tag_no_session_carries_is_not_found_as_it_is_not_listed(
    client: httpx.AsyncClient,
) -> None:
    gone = await new_session(client, "gone", ["Ghost", "Other ghost"])
    await new_session(client, "kept", ["Kept"])
    ghost_id = await tag_id(client, "Ghost")
    kept_id = await tag_id(client, "Kept")

    # Deleting its last session leaves no tag that anything lists.
    assert (await client.delete(session_url(gone))).status_code == 204
    assert await tags_list(client) == [("Kept", 1)]

    renamed = await client.patch(tag_url(ghost_id), json={"name": "Back"})
    assert renamed.status_code == 404, renamed.text
    assert renamed.json() == {"detail": "Tag not found"}
    assert (await client.delete(tag_url(ghost_id))).status_code == 404
    assert await tags_list(client) == [("Kept", 1)]
    # A rename onto a name only a gone tag had is a plain rename: the tag keeps its id.
    onto = await client.patch(tag_url(kept_id), json={"name": "OTHER GHOST"})
    assert onto.json() == {"tag_id": kept_id, "name": "OTHER GHOST", "session_count": 1}
    # Tagging with the gone tag's name makes a new tag, spelled as given now.
    await new_session(client, "again", ["ghost"])
    assert await tags_list(client) == [("ghost", 1), ("OTHER GHOST", 1)]
    assert await tag_id(client, "ghost") != ghost_id
