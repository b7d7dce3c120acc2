"""Folders over HTTP (issue 16): nested, names unique among siblings ignoring case, no cycles,
a depth limit, deletion that moves (or deletes) what they hold, sessions filed by PATCH, and
the sidebar list of one folder in page, cursor and search modes, on SQLite and PostgreSQL."""

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from app.folders.schemas import MAX_FOLDER_DEPTH
from tests.api.helpers import SESSIONS, Json, get_session, send, session_url

FOLDERS = "/api/v1/chat/folders"
FOLDER_KEYS = {"folder_id", "name", "parent_id", "created_at", "session_count", "children"}


def folder_url(folder_id: str) -> str:
    return f"{FOLDERS}/{folder_id}"


async def create(
    client: httpx.AsyncClient, name: str, parent_id: str | None = None, **params: str
) -> Json:
    body: Json = {"name": name}
    if parent_id is not None:
        body["parent_id"] = parent_id
    response = await client.post(FOLDERS, json=body, params=params)
    assert response.status_code == 201, response.text
    data: Json = response.json()
    assert set(data) == FOLDER_KEYS
    return data


async def tree(client: httpx.AsyncClient, **params: str) -> list[Json]:
    response = await client.get(FOLDERS, params=params)
    assert response.status_code == 200, response.text
    folders: list[Json] = response.json()["folders"]
    return folders


def shape(folders: list[Json]) -> list[Any]:
    """The tree as (name, count, children) tuples."""
    return [(f["name"], f["session_count"], shape(f["children"])) for f in folders]


async def file_session(
    client: httpx.AsyncClient, session_id: str, folder_id: str | None
) -> httpx.Response:
    return await client.patch(session_url(session_id), json={"folder_id": folder_id})


async def new_session(client: httpx.AsyncClient, text: str, folder_id: str | None = None) -> str:
    session_id: str = (await send(client, text))["session_id"]
    if folder_id is not None:
        response = await file_session(client, session_id, folder_id)
        assert response.status_code == 200, response.text
    return session_id


async def listed(client: httpx.AsyncClient, **params: Any) -> list[str]:
    response = await client.get(SESSIONS, params=params)
    assert response.status_code == 200, response.text
    return [item["session_id"] for item in response.json()["sessions"]]


async def test_folders_nest_and_list_as_a_tree_with_counts(client: httpx.AsyncClient) -> None:
    work = await create(client, "  Work\n projects ")
    assert work["name"] == "Work projects"
    assert work["parent_id"] is None
    assert work["children"] == []
    assert work["session_count"] == 0
    child = await create(client, "Clients", work["folder_id"])
    await create(client, "Acme", child["folder_id"])
    await create(client, "Archive")
    await new_session(client, "in work", work["folder_id"])
    await new_session(client, "in clients", child["folder_id"])
    await new_session(client, "also in clients", child["folder_id"])
    await new_session(client, "nowhere")

    folders = await tree(client)

    assert shape(folders) == [
        ("Archive", 0, []),
        ("Work projects", 1, [("Clients", 2, [("Acme", 0, [])])]),
    ]
    assert folders[1]["children"][0]["parent_id"] == work["folder_id"]


async def test_names_are_unique_among_siblings_ignoring_case(client: httpx.AsyncClient) -> None:
    work = await create(client, "Work")
    other = await create(client, "Other")
    await create(client, "Notes", work["folder_id"])

    clash = await client.post(FOLDERS, json={"name": "WORK"})
    assert clash.status_code == 409, clash.text
    assert "already" in clash.json()["detail"]
    nested_clash = await client.post(
        FOLDERS, json={"name": "notes", "parent_id": work["folder_id"]}
    )
    assert nested_clash.status_code == 409, nested_clash.text
    # The same name elsewhere is fine.
    await create(client, "Notes", other["folder_id"])
    await create(client, "Notes")
    rename = await client.patch(folder_url(other["folder_id"]), json={"name": "work"})
    assert rename.status_code == 409, rename.text
    # Renaming a folder to another spelling of its own name is not a clash.
    respelled = await client.patch(folder_url(work["folder_id"]), json={"name": "WORK"})
    assert respelled.status_code == 200, respelled.text
    assert respelled.json()["name"] == "WORK"
    # A move into a folder with a sibling of that name.
    notes_top = next(f for f in await tree(client) if f["name"] == "Notes")
    move = await client.patch(
        folder_url(notes_top["folder_id"]), json={"parent_id": work["folder_id"]}
    )
    assert move.status_code == 409, move.text
    assert shape(await tree(client)) == [
        ("Notes", 0, []),
        ("Other", 0, [("Notes", 0, [])]),
        ("WORK", 0, [("Notes", 0, [])]),
    ]


async def test_canonically_equivalent_names_clash_and_are_stored_in_nfc(
    client: httpx.AsyncClient,
) -> None:
    nfc = await create(client, "Caf\u00e9")
    # `e` and a combining accent: the same name, ignoring case too.
    clash = await client.post(FOLDERS, json={"name": "CAFE\u0301"})
    assert clash.status_code == 409, clash.text
    rename = await client.patch(
        folder_url((await create(client, "Other"))["folder_id"]), json={"name": "cafe\u0301"}
    )
    assert rename.status_code == 409, rename.text
    # Without the accent it is another name; one given in NFD is stored in NFC.
    await create(client, "Cafe")
    child = await create(client, "Cre\u0300me", nfc["folder_id"])
    assert child["name"] == "Cr\u00e8me"
    assert shape(await tree(client)) == [
        ("Cafe", 0, []),
        ("Caf\u00e9", 0, [("Cr\u00e8me", 0, [])]),
        ("Other", 0, []),
    ]


async def test_moves_refuse_cycles_and_the_depth_limit(client: httpx.AsyncClient) -> None:
    top = await create(client, "Top")
    middle = await create(client, "Middle", top["folder_id"])
    bottom = await create(client, "Bottom", middle["folder_id"])

    for target in (top, bottom):
        response = await client.patch(
            folder_url(top["folder_id"]), json={"parent_id": target["folder_id"]}
        )
        assert response.status_code == 409, response.text
        assert "itself" in response.json()["detail"]

    # Up to the top, and back under another folder.
    moved = await client.patch(folder_url(bottom["folder_id"]), json={"parent_id": None})
    assert moved.status_code == 200, moved.text
    assert moved.json()["parent_id"] is None
    moved = await client.patch(
        folder_url(middle["folder_id"]), json={"parent_id": bottom["folder_id"]}
    )
    assert moved.status_code == 200, moved.text
    assert shape(await tree(client)) == [("Bottom", 0, [("Middle", 0, [])]), ("Top", 0, [])]

    # A chain MAX_FOLDER_DEPTH deep, then one more is refused.
    parent: str | None = None
    chain = []
    for depth in range(MAX_FOLDER_DEPTH):
        parent = (await create(client, f"level {depth + 1}", parent))["folder_id"]
        chain.append(parent)
    too_deep = await client.post(FOLDERS, json={"name": "one more", "parent_id": parent})
    assert too_deep.status_code == 409, too_deep.text
    assert str(MAX_FOLDER_DEPTH) in too_deep.json()["detail"]
    # Moving a two-level folder under the chain's second-to-last is too deep as well.
    too_deep = await client.patch(folder_url(bottom["folder_id"]), json={"parent_id": chain[-2]})
    assert too_deep.status_code == 409, too_deep.text


async def test_unknown_folders_and_parents_are_404(client: httpx.AsyncClient) -> None:
    missing = str(uuid.uuid4())
    session_id = await new_session(client, "hello")
    before = await get_session(client, session_id)

    assert (await client.post(FOLDERS, json={"name": "x", "parent_id": missing})).status_code == 404
    assert (await client.patch(folder_url(missing), json={"name": "x"})).status_code == 404
    assert (await client.delete(folder_url(missing))).status_code == 404
    response = await file_session(client, session_id, missing)
    assert response.status_code == 404, response.text
    assert response.json() == {"detail": "Folder not found"}
    assert await get_session(client, session_id) == before
    assert (await client.patch(folder_url("not-a-uuid"), json={"name": "x"})).status_code == 422
    assert (await client.patch(folder_url(missing), json={})).status_code == 422
    assert (await client.post(FOLDERS, json={"name": " \n "})).status_code == 422


async def test_sessions_are_filed_and_taken_out(client: httpx.AsyncClient) -> None:
    folder = await create(client, "Work")
    session_id = await new_session(client, "hello")

    filed = await file_session(client, session_id, folder["folder_id"])

    assert filed.status_code == 200, filed.text
    assert filed.json()["folder_id"] == folder["folder_id"]
    assert (await get_session(client, session_id))["folder_id"] == folder["folder_id"]
    out = await file_session(client, session_id, None)
    assert out.json()["folder_id"] is None
    # Other fields are left alone, and a change of something else keeps the folder.
    await file_session(client, session_id, folder["folder_id"])
    renamed = await client.patch(session_url(session_id), json={"title": "Renamed"})
    assert renamed.json()["folder_id"] == folder["folder_id"]


async def test_deleting_a_folder_moves_its_sessions_and_subfolders_to_its_parent(
    client: httpx.AsyncClient,
) -> None:
    top = await create(client, "Top")
    doomed = await create(client, "Doomed", top["folder_id"])
    child = await create(client, "Child", doomed["folder_id"])
    own = await new_session(client, "own", doomed["folder_id"])
    nested = await new_session(client, "nested", child["folder_id"])

    response = await client.delete(folder_url(doomed["folder_id"]))

    assert response.status_code == 204, response.text
    assert shape(await tree(client)) == [("Top", 1, [("Child", 1, [])])]
    assert (await get_session(client, own))["folder_id"] == top["folder_id"]
    assert (await get_session(client, nested))["folder_id"] == child["folder_id"]
    # A top-level folder's go to the top.
    await client.delete(folder_url(top["folder_id"]))
    assert shape(await tree(client)) == [("Child", 1, [])]
    assert (await get_session(client, own))["folder_id"] is None
    assert (await client.delete(folder_url(top["folder_id"]))).status_code == 404


async def test_delete_sessions_deletes_the_folders_own_sessions_only(
    client: httpx.AsyncClient,
) -> None:
    doomed = await create(client, "Doomed")
    child = await create(client, "Child", doomed["folder_id"])
    own = await new_session(client, "own", doomed["folder_id"])
    nested = await new_session(client, "nested", child["folder_id"])
    outside = await new_session(client, "outside")

    response = await client.delete(
        folder_url(doomed["folder_id"]), params={"delete_sessions": "true"}
    )

    assert response.status_code == 204, response.text
    assert (await client.get(session_url(own))).status_code == 404
    assert (await get_session(client, nested))["folder_id"] == child["folder_id"]
    assert (await get_session(client, outside))["folder_id"] is None
    assert shape(await tree(client)) == [("Child", 1, [])]


async def test_a_subfolder_that_cannot_move_up_keeps_the_folder(
    client: httpx.AsyncClient,
) -> None:
    doomed = await create(client, "Doomed")
    await create(client, "Notes", doomed["folder_id"])
    await create(client, "notes")

    response = await client.delete(folder_url(doomed["folder_id"]))

    assert response.status_code == 409, response.text
    assert shape(await tree(client)) == [("Doomed", 0, [("Notes", 0, [])]), ("notes", 0, [])]


async def test_a_subfolder_made_while_its_parent_is_deleted_is_kept_or_refused(
    client: httpx.AsyncClient,
) -> None:
    for attempt in range(5):
        top = await create(client, f"Top {attempt}")
        await create(client, "Notes", top["folder_id"])
        doomed = await create(client, "Doomed", top["folder_id"])

        created, deleted = await asyncio.gather(
            client.post(FOLDERS, json={"name": "notes", "parent_id": doomed["folder_id"]}),
            client.delete(folder_url(doomed["folder_id"])),
        )

        # The subfolder came first, and cannot move up beside "Notes" (409, nothing
        # changes); or the deletion came first, and its parent is gone (404).
        statuses = (created.status_code, deleted.status_code)
        assert statuses in {(201, 409), (404, 204)}, [created.text, deleted.text]


async def test_a_subfolder_made_while_its_parent_moves_keeps_the_depth_limit(
    client: httpx.AsyncClient,
) -> None:
    deepest = None
    for level in range(MAX_FOLDER_DEPTH - 1):
        deepest = (await create(client, f"Level {level + 1}", deepest))["folder_id"]
    for attempt in range(6):
        moving = await create(client, f"Moving {attempt}")

        created, moved = await asyncio.gather(
            client.post(FOLDERS, json={"name": "Child", "parent_id": moving["folder_id"]}),
            client.patch(folder_url(moving["folder_id"]), json={"parent_id": deepest}),
        )

        # Under the deepest folder, with a subfolder, it would be one level too deep.
        statuses = sorted([created.status_code, moved.status_code])
        assert statuses in ([200, 409], [201, 409]), [created.text, moved.text]
        if moved.status_code == 200:
            back = await client.patch(folder_url(moving["folder_id"]), json={"parent_id": None})
            assert back.status_code == 200, back.text


async def test_the_list_of_one_folder_in_page_cursor_and_search_modes(
    client: httpx.AsyncClient,
) -> None:
    work = await create(client, "Work")
    home = await create(client, "Home")
    in_work = [await new_session(client, f"report {n}", work["folder_id"]) for n in range(5)]
    in_home = await new_session(client, "report at home", home["folder_id"])
    loose = await new_session(client, "report loose")
    archived = await new_session(client, "report archived", work["folder_id"])
    await client.patch(session_url(archived), json={"archived": True})
    newest_first = in_work[::-1]

    assert await listed(client, folder_id=work["folder_id"]) == newest_first
    assert await listed(client, folder_id="none") == [loose]
    assert await listed(client, folder_id=home["folder_id"]) == [in_home]
    assert await listed(client, folder_id=work["folder_id"], archived="true") == [archived]
    page = (
        await client.get(SESSIONS, params={"folder_id": work["folder_id"], "page_size": 2})
    ).json()
    assert page["total"] == 5
    assert page["total_pages"] == 3
    assert [s["session_id"] for s in page["sessions"]] == newest_first[:2]
    # Cursor mode: every session once, in order.
    seen: list[str] = []
    params: dict[str, Any] = {"folder_id": work["folder_id"], "limit": 2}
    while True:
        data = (await client.get(SESSIONS, params=params)).json()
        seen += [s["session_id"] for s in data["sessions"]]
        if not data["has_more"]:
            break
        params["cursor"] = data["next_cursor"]
    assert seen == newest_first
    # Search inside a folder, in both modes.
    assert set(await listed(client, q="report", folder_id=work["folder_id"])) == set(in_work)
    assert await listed(client, q="report", folder_id="none") == [loose]
    first = (
        await client.get(
            SESSIONS, params={"q": "report", "folder_id": work["folder_id"], "limit": 3}
        )
    ).json()
    rest = (
        await client.get(
            SESSIONS,
            params={
                "q": "report",
                "folder_id": work["folder_id"],
                "limit": 3,
                "cursor": first["next_cursor"],
            },
        )
    ).json()
    found = [s["session_id"] for s in first["sessions"] + rest["sessions"]]
    assert sorted(found) == sorted(in_work)
    assert len(found) == 5


@pytest.mark.parametrize(
    "other",
    [
        {"folder_id": "none"},
        {},
        {"archived": "true"},
        {"tag": "x"},
    ],
)
async def test_a_cursor_works_only_with_the_same_filters(
    client: httpx.AsyncClient, other: dict[str, str]
) -> None:
    work = await create(client, "Work")
    for n in range(3):
        await new_session(client, f"report {n}", work["folder_id"])
    first = (await client.get(SESSIONS, params={"folder_id": work["folder_id"], "limit": 1})).json()
    search = (
        await client.get(
            SESSIONS, params={"q": "report", "folder_id": work["folder_id"], "limit": 1}
        )
    ).json()

    refused = await client.get(
        SESSIONS, params={**other, "limit": 1, "cursor": first["next_cursor"]}
    )
    refused_search = await client.get(
        SESSIONS, params={**other, "q": "report", "limit": 1, "cursor": search["next_cursor"]}
    )

    assert refused.status_code == 422, refused.text
    assert "cursor" in refused.text
    assert refused_search.status_code == 422, refused_search.text
    # The plain listing's cursor is refused by a folder's listing too.
    plain = (await client.get(SESSIONS, params={"limit": 1})).json()
    response = await client.get(
        SESSIONS, params={"folder_id": work["folder_id"], "cursor": plain["next_cursor"]}
    )
    assert response.status_code == 422, response.text


async def test_folder_query_is_validated(client: httpx.AsyncClient) -> None:
    for value in ("None", "12", "x" * 32):
        response = await client.get(SESSIONS, params={"folder_id": value})
        assert response.status_code == 422, value
    assert await listed(client, folder_id=str(uuid.uuid4())) == []
