"""Search results on message trees (issue 13), over HTTP on SQLite and PostgreSQL: a result
names the message its snippet shows (`match_message_id`) and says whether that message is off
the session's current branch (`match_off_branch`), so that a client can switch to it."""

import random
import uuid
from collections.abc import Iterator

import httpx
import pytest

from app.kit.db.engine import Database
from app.search import service as search_service
from app.search.fulltext import query_words
from app.sessions.queries import SessionFilter
from tests.api.helpers import (
    CHAT,
    NO_MATCH,
    SESSIONS,
    Json,
    ScriptedAssistant,
    get_session,
    list_sessions,
    use_assistant,
)
from tests.conftest import LiveServer
from tests.db.helpers import captured_statements

# Replies without any word the tests search for: each word is then in exactly one message.
REPLY = "noted"
SHARED = ("alpha", "beta", "gamma")


@pytest.fixture
def quiet(live_server: LiveServer) -> Iterator[None]:
    with use_assistant(live_server, ScriptedAssistant([REPLY])):
        yield


async def post(
    client: httpx.AsyncClient, message: str, session_id: str, edit_of: str | None = None
) -> str:
    """Send `message` (as an edit of `edit_of`, if given); the user message's id."""
    body: Json = {"message": message, "session_id": session_id}
    if edit_of is not None:
        body["edit_of"] = edit_of
    response = await client.post(CHAT, json=body)
    assert response.status_code == 200, response.text
    user_message_id: str = response.json()["user_message_id"]
    return user_message_id


async def search(client: httpx.AsyncClient, q: str) -> dict[str, Json]:
    """The results of `q` (one page of up to 100) by session id."""
    response = await client.get(SESSIONS, params={"q": q, "limit": 100})
    assert response.status_code == 200, response.text
    return {item["session_id"]: item for item in response.json()["sessions"]}


async def current_branch(client: httpx.AsyncClient, session_id: str) -> set[str]:
    return {message["id"] for message in (await get_session(client, session_id))["messages"]}


def marker(item: Json) -> tuple[str | None, bool]:
    return item["match_message_id"], item["match_off_branch"]


@pytest.mark.usefixtures("quiet")
async def test_a_match_on_the_current_branch_names_its_message(
    client: httpx.AsyncClient,
) -> None:
    await post(client, "hello there", "s")
    walrus = await post(client, "walrus facts", "s")
    await post(client, "and more", "s")
    # A fork elsewhere in the session: the match is checked by walking the branch.
    first = await post(client, "first", "forked")
    await post(client, "first, edited", "forked", edit_of=first)
    penguin = await post(client, "penguin facts", "forked")

    assert marker((await search(client, "walrus"))["s"]) == (walrus, False)
    assert marker((await search(client, "penguin"))["forked"]) == (penguin, False)


@pytest.mark.usefixtures("quiet")
async def test_a_match_left_on_an_old_branch_by_an_edit_is_off_branch(
    client: httpx.AsyncClient,
) -> None:
    await post(client, "hello there", "s")
    walrus = await post(client, "walrus facts", "s")
    await post(client, "tell me more", "s")
    penguin = await post(client, "penguin facts", "s", edit_of=walrus)

    [(session_id, item)] = (await search(client, "walrus")).items()

    assert session_id == "s"
    assert marker(item) == (walrus, True)
    assert item["snippet"] == "walrus facts"
    assert walrus not in await current_branch(client, "s")
    assert marker((await search(client, "penguin"))["s"]) == (penguin, False)
    # Editing it again, from the new branch, leaves both edits' words off or on as they are.
    again = await post(client, "walrus facts, again", "s", edit_of=penguin)
    found = await search(client, "walrus")
    assert marker(found["s"]) in {(walrus, True), (again, False)}
    assert marker((await search(client, "penguin"))["s"]) == (penguin, True)


@pytest.mark.usefixtures("quiet")
async def test_an_edited_first_message_is_found_off_branch_under_its_unchanged_title(
    client: httpx.AsyncClient,
) -> None:
    first = await post(client, "origami cranes", "s")
    await post(client, "paper planes", "s", edit_of=first)

    item = (await search(client, "origami"))["s"]

    # The title (still the first message's) matches too; the snippet is the message's.
    assert item["title"] == "origami cranes"
    assert (item["snippet"], *marker(item)) == ("origami cranes", first, True)


@pytest.mark.usefixtures("quiet")
async def test_title_matches_and_plain_lists_carry_no_marker(client: httpx.AsyncClient) -> None:
    first = await post(client, "first question", "s")
    await post(client, "second question", "s", edit_of=first)
    renamed = await client.patch(f"{SESSIONS}/s", json={"title": "Marmalade recipes"})
    assert renamed.status_code == 200, renamed.text

    by_title = (await search(client, "marmalade"))["s"]
    [listed] = (await list_sessions(client))["sessions"]

    assert {key: by_title[key] for key in NO_MATCH} == NO_MATCH
    assert {key: listed[key] for key in NO_MATCH} == NO_MATCH


@pytest.mark.usefixtures("quiet")
async def test_a_page_of_straight_sessions_walks_no_branch(
    client: httpx.AsyncClient, database: Database
) -> None:
    """Without forks every message is on the current branch: the page is answered without the
    walk (the one recursive statement of a search); with a fork, the walk runs, once."""
    ids = {f"s{n}": [await post(client, f"kiwi {n}", f"s{n}")] for n in range(3)}
    ids["s0"].append(await post(client, "more kiwi", "s0"))

    async def run() -> tuple[dict[str, tuple[uuid.UUID | None, bool]], int]:
        async with captured_statements(database.engine) as statements:
            page = await search_service.search_sessions(
                database,
                SessionFilter(user_id=None, archived=False),
                query_words=query_words("kiwi"),
                size=20,
                page=1,
                cursor=None,
                include_total=True,
            )
        walks = sum("RECURSIVE" in sql.upper() for sql, _ in statements)
        markers = {s.session_id: (s.match_message_id, s.match_off_branch) for s in page.sessions}
        return markers, walks

    markers, walks = await run()
    assert walks == 0
    assert markers == {
        "s0": (uuid.UUID(ids["s0"][1]), False),
        "s1": (uuid.UUID(ids["s1"][0]), False),
        "s2": (uuid.UUID(ids["s2"][0]), False),
    }

    await post(client, "no fruit here", "s1", edit_of=ids["s1"][0])
    markers, walks = await run()
    assert walks == 1
    assert markers["s1"] == (uuid.UUID(ids["s1"][0]), True)
    assert markers["s2"] == (uuid.UUID(ids["s2"][0]), False)


@pytest.mark.usefixtures("quiet")
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
async def test_markers_agree_with_the_current_branch_on_random_trees(
    client: httpx.AsyncClient, seed: int
) -> None:
    """Random sessions of appends and edits (of any user message, on any branch): for each
    user message's own word, the one result names that message, off the branch exactly when
    the session's current branch (its detail's messages) does not hold it; and a word common
    to several sessions gives each session's marker consistently in one page."""
    rng = random.Random(seed)
    words: dict[str, tuple[str, str]] = {}  # word -> (session, message id)
    texts: dict[str, str] = {}  # message id -> text
    for s in range(3):
        session_id = f"t{seed}-{s}"
        for _ in range(rng.randint(3, 9)):
            # Fixed width, so that no word is a prefix of another.
            word = f"zq{len(words):04d}x"
            mine = [message_id for sid, message_id in words.values() if sid == session_id]
            edit_of = rng.choice(mine) if mine and rng.random() < 0.5 else None
            text = f"{rng.choice(SHARED)} {word}"
            message_id = await post(client, text, session_id, edit_of)
            words[word] = (session_id, message_id)
            texts[message_id] = text

    branches = {sid: await current_branch(client, sid) for sid, _ in words.values()}
    off = [message_id for sid, message_id in words.values() if message_id not in branches[sid]]
    # Each seed's trees have messages on both sides (the seeds are fixed).
    assert 0 < len(off) < len(words)
    for word, (session_id, message_id) in words.items():
        [(found, item)] = (await search(client, word)).items()
        assert found == session_id
        assert marker(item) == (message_id, message_id not in branches[session_id]), word
        assert item["snippet"] == texts[message_id]

    # A shared word: several sessions' matches in one page, each session's best (the newest
    # of equals) on or off its branch.
    ours = {message_id: session_id for session_id, message_id in words.values()}
    off_in_pages = 0
    for shared in SHARED:
        page = await search(client, shared)
        assert page
        for session_id, item in page.items():
            matched, off_branch = marker(item)
            assert matched is not None
            assert ours[matched] == session_id
            assert shared in texts[matched]
            assert off_branch == (matched not in branches[session_id])
            off_in_pages += off_branch
    # Pages of several walks hold off-branch matches too (the seeds are fixed).
    assert off_in_pages > 0
