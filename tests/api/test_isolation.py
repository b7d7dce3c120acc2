"""The access matrix: every route of the app, called by the session's owner, another user, a
service caller and unauthenticated callers, on SQLite and PostgreSQL.

The routes are read from the app itself, and `test_every_route_is_in_the_matrix` fails until a
new route has its entry in MATRIX, which is all it takes to run it through every check here.
"""

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from sqlalchemy import func, select

from app.kit.db.engine import Database
from app.kit.db.tables import (
    chat_folders,
    chat_messages,
    chat_session_tags,
    chat_sessions,
    chat_shares,
    chat_tags,
)
from tests.api.conftest import REJECTED_BODY, Jwks, bearer
from tests.api.helpers import CHAT, SESSIONS, STREAM, Json, parse_sse, session_url
from tests.conftest import LiveServer
from tests.tokens import hs256_token

SESSION = SESSIONS + "/{session_id}"
EXPORT = SESSION + "/export"
STOP = SESSION + "/stop"
RESUME = SESSION + "/stream"
# Routes on a message: `{message_id}` is filled with the current branch's reply.
REGENERATE = SESSION + "/messages/{message_id}/regenerate"
FEEDBACK = SESSION + "/messages/{message_id}/feedback"
FEEDBACK_LIST = "/api/v1/feedback"
BRANCH = SESSION + "/branch"
TREE = SESSION + "/tree"
TITLE = SESSION + "/title"

SESSION_SHARES = SESSION + "/shares"
SHARES = "/api/v1/chat/shares"
SHARE = SHARES + "/{share_id}"
SHARED = "/api/v1/shared/{share_id}"
SHARED_PAGE = "/s/{share_id}"
FOLDERS = "/api/v1/chat/folders"
FOLDER = FOLDERS + "/{folder_id}"
TAGS = "/api/v1/chat/tags"
TAG = TAGS + "/{tag_id}"
IMPORT = "/api/v1/chat/import"
IMPORT_STATUS = "/api/v1/chat/imports/{import_id}"

Scope = Literal[
    "public",
    "session",
    "list",
    "user",
    "everyone",
    "share",
    "shared",
    "share-list",
    "label",
    "label-list",
    "label-create",
    "import",
    "import-create",
]
Effect = Literal[
    "reads", "writes", "renames", "deletes", "regenerates", "switches", "shares", "rates", "unrates"
]


@dataclass(frozen=True)
class Target:
    """What a call on a session names: the session, a text to write, and two of its messages
    (ids a caller that does not own the session could have learnt)."""

    session_id: str
    text: str
    # The current branch's reply: `{message_id}` in paths.
    reply_id: str
    # A message off the current branch (the world's sessions have two branches).
    other_branch_id: str


@dataclass(frozen=True)
class Case:
    """How to call a route, and what a successful call does.

    scope: "public" routes answer everyone; "session" routes act on the session whose id is
    put in the path (`{session_id}`) and/or the body; "list" routes list the caller's sessions;
    "user" routes act on all of one user's sessions (the caller's own, or the `user_id` a
    service caller names); "everyone" routes read every user's data, for the callers that may
    list everyone's sessions only. Share links (issue 14): "share" routes act on the link whose
    id is put in the path (`{share_id}`), a link to one of alice's or bob's sessions made by its
    owner; "shared" routes read such a link, for everyone, signed in or not; "share-list"
    routes list the caller's links. Folders and tags (issue 16): "label" routes act on the folder
    or tag whose id is put in the path (`{folder_id}`, `{tag_id}`), alice's or bob's, holding
    their owner's session; "label-list" routes list the caller's folders or tags;
    "label-create" routes create one for the caller. Imports (issue 16): "import" routes read
    the import whose id is put in the path (`{import_id}`), alice's or bob's; "import-create"
    routes import an uploaded export as the caller's sessions.

    A path with `{message_id}` names the current branch's reply (`World.messages`), which the
    world has rated: effect "rates" replaces that rating, "unrates" clears it.
    """

    scope: Scope
    ok: int = 200
    body: Callable[[Target], Json] | None = None
    effect: Effect = "reads"
    # An unknown session id is created rather than answered with 404 (client-chosen ids).
    creates_missing: bool = False
    # What to call instead of (method, path): for a mount, which has no method of its own and
    # serves the paths under it.
    request: tuple[str, str] | None = None


def message_to(target: Target) -> Json:
    return {"message": target.text, "session_id": target.session_id}


def title_of(target: Target) -> Json:
    return {"title": target.text}


def other_branch_of(target: Target) -> Json:
    return {"message_id": target.other_branch_id}


def name_of(target: Target) -> Json:
    return {"name": target.text[:50]}


def rating_of(target: Target) -> Json:
    return {"rating": "down", "comment": target.text}


MATRIX: dict[tuple[str, str], Case] = {
    ("GET", "/healthz"): Case("public"),
    ("GET", "/readyz"): Case("public"),
    ("GET", "/openapi.json"): Case("public"),
    ("GET", "/docs"): Case("public"),
    ("GET", "/redoc"): Case("public"),
    ("GET", "/"): Case("public"),  # the web page
    ("*", "/static"): Case("public", request=("GET", "/static/js/app.js")),
    ("*", "/docs/assets"): Case("public", request=("GET", "/docs/assets/swagger-ui.css")),
    ("POST", CHAT): Case("session", body=message_to, effect="writes", creates_missing=True),
    ("POST", STREAM): Case("session", body=message_to, effect="writes", creates_missing=True),
    ("GET", SESSIONS): Case("list"),
    ("DELETE", SESSIONS): Case("user", effect="deletes"),
    ("GET", SESSION): Case("session"),
    ("PATCH", SESSION): Case("session", body=title_of, effect="renames"),
    ("GET", EXPORT): Case("session"),
    ("DELETE", SESSION): Case("session", ok=204, effect="deletes"),
    # Nothing is being generated here: {"stopped": false}, and the session is as it was.
    ("POST", STOP): Case("session"),
    # Nothing is being generated here either: nothing to resume.
    ("GET", RESUME): Case("session", ok=204),
    ("POST", REGENERATE): Case("session", effect="regenerates"),
    ("PUT", BRANCH): Case("session", body=other_branch_of, effect="switches"),
    ("GET", TREE): Case("session"),
    # The session is unchanged; a link to it is stored.
    ("POST", SESSION_SHARES): Case("session", ok=201, effect="shares"),
    ("GET", SHARES): Case("share-list"),
    ("DELETE", SHARE): Case("share", ok=204, effect="deletes"),
    ("GET", SHARED): Case("shared"),
    # The same page for every link (its script asks the API whether the link exists).
    ("GET", SHARED_PAGE): Case("public", request=("GET", "/s/any-link-id")),
    ("PUT", FEEDBACK): Case("session", body=rating_of, effect="rates"),
    ("DELETE", FEEDBACK): Case("session", ok=204, effect="unrates"),
    ("GET", FEEDBACK_LIST): Case("everyone"),
    # No model writes titles here (the echo assistant): the owner gets a 409 and the session
    # is as it was; the others still get the 404 or 401 of any session route.
    ("POST", TITLE): Case("session", ok=409),
    ("POST", FOLDERS): Case("label-create", ok=201, body=name_of),
    ("GET", FOLDERS): Case("label-list"),
    ("PATCH", FOLDER): Case("label", body=name_of, effect="renames"),
    ("DELETE", FOLDER): Case("label", ok=204, effect="deletes"),
    ("GET", TAGS): Case("label-list"),
    ("PATCH", TAG): Case("label", body=name_of, effect="renames"),
    ("DELETE", TAG): Case("label", ok=204, effect="deletes"),
    ("POST", IMPORT): Case("import-create", ok=202, effect="writes"),
    ("GET", IMPORT_STATUS): Case("import"),
}

# The message a route on a message names in a session the world does not have.
NO_SUCH_MESSAGE = "00000000-0000-4000-8000-000000000000"

# Where the 404 for a session that does not exist is read from, for routes that create
# unknown sessions instead of answering 404.
NOT_FOUND_PROBE = ("GET", SESSION)


def app_routes(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path) of every route the app serves, of any kind (API routes, the docs pages,
    and anything else): a route with no methods (a mount, a websocket) is listed as "*"."""
    routes: set[tuple[str, str]] = set()
    for context in iter_route_contexts(app.routes):
        methods = set(context.methods or ()) or {"*"}
        if "GET" in methods:
            methods.discard("HEAD")  # Starlette answers HEAD on GET routes with the GET handler
        routes.update((method, str(context.path)) for method in methods)
    return routes


def keys(scope: Scope) -> list[tuple[str, str]]:
    return [key for key, case in MATRIX.items() if case.scope == scope]


def ids(routes: list[tuple[str, str]]) -> list[str]:
    return [f"{method} {path}" for method, path in routes]


# --- Callers ------------------------------------------------------------------------------

ALICE, BOB, SERVICE = "alice", "bob", "backend"
Outcome = Literal["ok", "hidden", "rejected"]


@dataclass(frozen=True)
class Caller:
    headers: Callable[[Jwks], dict[str, str]]
    # What this caller gets on alice's session: served, 404 as if missing, or 401.
    on_alices_session: Outcome
    # Whose sessions the list shows this caller (None: 401).
    lists: frozenset[str] | None


CALLERS: dict[str, Caller] = {
    "owner": Caller(lambda jwks: bearer(hs256_token(ALICE)), "ok", frozenset({ALICE})),
    "other-user": Caller(lambda jwks: bearer(jwks.es256.token(BOB)), "hidden", frozenset({BOB})),
    "service": Caller(
        lambda jwks: bearer(jwks.rs256.token(SERVICE, role="service_role")),
        "ok",
        frozenset({ALICE, BOB}),
    ),
    "anonymous": Caller(lambda jwks: {}, "rejected", None),
    "forged-as-owner": Caller(
        lambda jwks: bearer(hs256_token(ALICE, secret="guessed-secret-guessed-secret-guessed")),
        "rejected",
        None,
    ),
}


# --- The world each test starts from: one session of alice's, one of bob's ----------------


@dataclass(frozen=True)
class World:
    client: httpx.AsyncClient
    live: LiveServer
    database: Database
    jwks: Jwks
    sessions: dict[str, str]  # owner -> session id
    # session id -> (current reply, a message off the current branch)
    messages: dict[str, tuple[str, str]]
    shares: dict[str, str] = field(default_factory=dict)  # owner -> share id of their session
    # owner -> the id of their folder and of their tag (`labelled_world`)
    folders: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    # owner -> the id of their finished import (`imported_world`)
    imports: dict[str, str] = field(default_factory=dict)

    def headers(self, caller: str) -> dict[str, str]:
        return CALLERS[caller].headers(self.jwks)

    async def call(
        self,
        key: tuple[str, str],
        caller: str,
        session_id: str,
        text: str,
        params: dict[str, str] | None = None,
        *,
        share_id: str = "",
        label_id: str = "",
        import_id: str = "",
    ) -> httpx.Response:
        method, path = key
        case = MATRIX[key]
        # A session the world did not make: ids nobody has.
        reply_id, other_id = self.messages.get(session_id, (NO_SUCH_MESSAGE, NO_SUCH_MESSAGE))
        target = Target(session_id, text, reply_id, other_id)
        body = case.body(target) if case.body is not None else None
        return await self.client.request(
            method,
            path.format(
                session_id=session_id,
                message_id=reply_id,
                share_id=share_id,
                folder_id=label_id,
                tag_id=label_id,
                import_id=import_id,
            ),
            json=body,
            params=params,
            headers=self.headers(caller),
        )

    async def detail(self, session_id: str) -> httpx.Response:
        return await self.client.get(session_url(session_id), headers=self.headers("owner"))

    async def settled(self) -> None:
        await self.live.app.state.reply_tasks.wait_idle()


@pytest.fixture
async def world(
    auth_client: httpx.AsyncClient,
    auth_live_server: LiveServer,
    database: Database,
    jwks: Jwks,
) -> World:
    world = World(auth_client, auth_live_server, database, jwks, sessions={}, messages={})
    for owner, caller in ((ALICE, "owner"), (BOB, "other-user")):
        response = await auth_client.post(
            CHAT, json={"message": f"{owner}'s first message"}, headers=world.headers(caller)
        )
        assert response.status_code == 200, response.text
        first = response.json()
        # An edit of it: two branches, the edit's current.
        response = await auth_client.post(
            CHAT,
            json={
                "message": f"{owner}'s first message, edited",
                "session_id": first["session_id"],
                "edit_of": first["user_message_id"],
            },
            headers=world.headers(caller),
        )
        assert response.status_code == 200, response.text
        world.sessions[owner] = first["session_id"]
        reply_id = response.json()["message_id"]
        world.messages[first["session_id"]] = (reply_id, first["user_message_id"])
        rated = await auth_client.put(
            FEEDBACK.format(session_id=first["session_id"], message_id=reply_id),
            json={"rating": "up", "comment": f"{owner}'s rating"},
            headers=world.headers(caller),
        )
        assert rated.status_code == 200, rated.text
    return world


@pytest.fixture
async def shared_world(world: World) -> World:
    """The world, with a link to each session made by its owner."""
    for owner, caller in ((ALICE, "owner"), (BOB, "other-user")):
        response = await world.call(
            ("POST", SESSION_SHARES), caller, world.sessions[owner], "", share_id=""
        )
        assert response.status_code == 201, response.text
        world.shares[owner] = response.json()["share_id"]
    return world


async def stored_shares(database: Database) -> list[dict[str, Any]]:
    """Every link row."""
    async with database.read() as conn:
        rows = await conn.execute(select(chat_shares).order_by(chat_shares.c.share_id))
        return [dict(row) for row in rows.mappings()]


async def stored_state(database: Database) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every session row and every message row."""
    async with database.read() as conn:
        sessions = await conn.execute(select(chat_sessions).order_by(chat_sessions.c.session_id))
        messages = await conn.execute(
            select(chat_messages).order_by(chat_messages.c.session_id, chat_messages.c.ordinal)
        )
        return [dict(row) for row in sessions.mappings()], [
            dict(row) for row in messages.mappings()
        ]


async def messages_containing(database: Database, text: str) -> int:
    async with database.read() as conn:
        result = await conn.execute(
            select(func.count())
            .select_from(chat_messages)
            .where(chat_messages.c.content.contains(text))
        )
        return int(result.scalar_one())


def assert_rejected(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.json() == REJECTED_BODY


def served_session_id(response: httpx.Response) -> str | None:
    """The session a successful response is about, if its body names one."""
    if not response.content:
        return None
    if response.headers["content-type"].startswith("text/event-stream"):
        events = parse_sse(response.text)
        assert events[0].event == "session", events
        assert events[-1].event == "done", events
        session_id: str = events[0].data["session_id"]
        assert events[-1].data["session_id"] == session_id
        return session_id
    data = response.json()
    return data.get("session_id") if isinstance(data, dict) else None


# --- The matrix is complete ---------------------------------------------------------------


async def test_every_route_is_in_the_matrix(auth_live_server: LiveServer) -> None:
    routes = app_routes(auth_live_server.app)

    missing = sorted(routes - set(MATRIX))
    stale = sorted(set(MATRIX) - routes)
    assert not missing, (
        f"routes without an entry in MATRIX of {__name__}: {missing}. Add each with a Case "
        "saying whether it is public, acts on a session, or lists sessions; it then runs "
        "through every caller of the access matrix."
    )
    assert not stale, f"MATRIX entries for routes the app does not serve: {stale}"
    # The route discovery itself sees what it must: the API routes and the docs pages.
    assert {("GET", "/docs"), ("POST", CHAT), ("DELETE", SESSION)} <= routes


# --- Session routes, on alice's session ---------------------------------------------------


@pytest.mark.parametrize("caller", list(CALLERS))
@pytest.mark.parametrize("key", keys("session"), ids=ids(keys("session")))
async def test_session_routes_on_alices_session(
    world: World, key: tuple[str, str], caller: str
) -> None:
    case = MATRIX[key]
    alices = world.sessions[ALICE]
    text = f"{caller} was here"
    before_detail = await world.detail(alices)
    before_rows = await stored_state(world.database)
    before_shares = await stored_shares(world.database)

    response = await world.call(key, caller, alices, text)
    await world.settled()

    outcome = CALLERS[caller].on_alices_session
    if outcome == "ok":
        assert response.status_code == case.ok, response.text
        assert served_session_id(response) in (None, alices)
        await assert_effect(world, case.effect, alices, text, before_detail.json())
        return
    if outcome == "hidden":
        reference = await not_found_reference(world, key, caller, text)
        assert response.status_code == 404, response.text
        assert reference.status_code == 404, reference.text
        assert response.json() == reference.json()
        assert response.headers["content-type"] == reference.headers["content-type"]
    else:
        assert_rejected(response)
    after_detail = await world.detail(alices)
    assert after_detail.status_code == 200, after_detail.text
    assert after_detail.json() == before_detail.json()
    assert await stored_state(world.database) == before_rows
    assert await stored_shares(world.database) == before_shares
    assert await messages_containing(world.database, text) == 0


async def not_found_reference(
    world: World, key: tuple[str, str], caller: str, text: str
) -> httpx.Response:
    """What `caller` gets from the route for a session that does not exist."""
    probe = NOT_FOUND_PROBE if MATRIX[key].creates_missing else key
    return await world.call(probe, caller, "no-such-session", text)


async def assert_effect(
    world: World, effect: Effect, session_id: str, text: str, before: Json
) -> None:
    after = await world.detail(session_id)
    if effect == "deletes":
        assert after.status_code == 404, after.text
        return
    assert after.status_code == 200, after.text
    detail = after.json()
    if effect == "reads":
        assert detail == before
        return
    if effect == "shares":
        assert detail == before
        links = await stored_shares(world.database)
        assert [row["session_id"] for row in links] == [session_id]
        assert links[0]["user_id"] == ALICE  # the owner's link, whoever made it
        return
    if effect == "renames":
        assert detail == {**before, "title": text, "title_source": "user"}
        return
    reply_id, other_branch_id = world.messages[session_id]
    if effect in ("rates", "unrates"):
        [rated] = [m for m in detail["messages"] if m["id"] == reply_id]
        if effect == "rates":
            assert (rated["feedback"]["rating"], rated["feedback"]["comment"]) == ("down", text)
        else:
            assert rated["feedback"] is None
        # Nothing else changed.
        unrated = [{**m, "feedback": None} for m in detail["messages"]]
        assert {**detail, "messages": unrated} == {
            **before,
            "messages": [{**m, "feedback": None} for m in before["messages"]],
        }
        return
    if effect == "regenerates":
        new_reply = detail["messages"][-1]
        assert detail["messages"][:-1] == before["messages"][:-1]
        assert new_reply["sibling_ids"] == [reply_id, new_reply["id"]]
        assert detail["current_message_id"] == new_reply["id"]
        return
    if effect == "switches":
        assert detail["messages"][0]["id"] == other_branch_id
        assert detail["current_message_id"] != before["current_message_id"]
        assert detail["message_count"] == before["message_count"]
        return
    assert detail["message_count"] == before["message_count"] + 2
    assert [m["role"] for m in detail["messages"][-2:]] == ["user", "assistant"]
    assert detail["messages"][-2]["content"] == text
    assert detail["messages"][: len(before["messages"])] == before["messages"]
    # Whoever wrote, the session is still alice's.
    async with world.database.read() as conn:
        owner = await conn.execute(
            select(chat_sessions.c.user_id).where(chat_sessions.c.session_id == session_id)
        )
        assert owner.scalar_one() == ALICE


@pytest.mark.parametrize("key", keys("session"), ids=ids(keys("session")))
async def test_session_routes_on_bobs_session_serve_bob_and_hide_it_from_alice(
    world: World, key: tuple[str, str]
) -> None:
    bobs = world.sessions[BOB]

    as_alice = await world.call(key, "owner", bobs, "alice was here")
    as_bob = await world.call(key, "other-user", bobs, "bob was here")
    await world.settled()

    assert as_alice.status_code == 404, as_alice.text
    assert as_bob.status_code == MATRIX[key].ok, as_bob.text
    assert served_session_id(as_bob) in (None, bobs)
    assert await messages_containing(world.database, "alice was here") == 0


@pytest.mark.parametrize("key", [k for k in keys("session") if MATRIX[k].creates_missing])
async def test_bob_cannot_create_a_session_under_an_id_alice_chose(
    world: World, key: tuple[str, str]
) -> None:
    chosen = "alices-chosen-id"
    created = await world.client.post(
        CHAT,
        json={"message": "alice's plans", "session_id": chosen},
        headers=world.headers("owner"),
    )
    assert created.status_code == 200, created.text
    before_detail = await world.detail(chosen)
    before_rows = await stored_state(world.database)

    response = await world.call(key, "other-user", chosen, "bob takes over")
    await world.settled()

    assert response.status_code == 404, response.text
    assert response.json() == {"detail": "Session not found"}
    after_detail = (await world.detail(chosen)).json()
    assert after_detail["message_count"] == before_detail.json()["message_count"] == 2
    assert after_detail["last_message"] == before_detail.json()["last_message"]
    assert after_detail == before_detail.json()
    assert await stored_state(world.database) == before_rows
    assert await messages_containing(world.database, "bob takes over") == 0


@pytest.mark.parametrize("key", [k for k in keys("session") if MATRIX[k].creates_missing])
async def test_sending_to_a_chosen_id_tells_whether_another_user_has_it(
    world: World, key: tuple[str, str]
) -> None:
    """What the README states under Security: sending is the one way to tell a session id
    someone else uses (404, nothing written) from a free one (200, a new session of the
    sender's), which is why client-chosen ids should be random. Reading cannot tell them apart."""
    await world.client.post(
        CHAT,
        json={"message": "alice's plans", "session_id": "guessable-1"},
        headers=world.headers("owner"),
    )

    taken = await world.call(key, "other-user", "guessable-1", "bob probes")
    free = await world.call(key, "other-user", "guessable-2", "bob probes")
    await world.settled()

    assert taken.status_code == 404, taken.text
    assert free.status_code == 200, free.text
    assert served_session_id(free) == "guessable-2"
    as_bob = await world.client.get(session_url("guessable-2"), headers=world.headers("other-user"))
    assert as_bob.json()["messages"][0]["content"] == "bob probes"
    alices = (await world.detail("guessable-1")).json()
    assert alices["messages"][0]["content"] == "alice's plans"
    assert alices["message_count"] == 2
    # Reading the taken id and a never-used one answers the same.
    read_taken = await world.client.get(
        session_url("guessable-1"), headers=world.headers("other-user")
    )
    read_unused = await world.client.get(
        session_url("guessable-3"), headers=world.headers("other-user")
    )
    assert read_taken.status_code == read_unused.status_code == 404
    assert read_taken.content == read_unused.content


async def test_after_all_of_bobs_attempts_alices_session_is_unchanged(world: World) -> None:
    alices = world.sessions[ALICE]
    before = await world.detail(alices)
    before_rows = await stored_state(world.database)

    for key in keys("session"):
        response = await world.call(key, "other-user", alices, "bob was here")
        assert response.status_code == 404, (key, response.text)
    await world.settled()

    after = await world.detail(alices)
    assert after.status_code == 200, after.text  # not deleted
    assert after.json() == before.json()
    assert await stored_state(world.database) == before_rows
    assert await messages_containing(world.database, "bob was here") == 0
    listed = await world.client.get(SESSIONS, headers=world.headers("owner"))
    assert [s["session_id"] for s in listed.json()["sessions"]] == [alices]


async def test_an_idempotency_key_is_its_users_own(world: World) -> None:
    """Bob sending the key alice sent gets neither her reply (nothing of hers shows) nor a
    422 for a different request: his key is another key. Each replays only their own."""
    key = {"Idempotency-Key": "the-same-key"}
    alice, bob = {**world.headers("owner"), **key}, {**world.headers("other-user"), **key}
    alices = await world.client.post(CHAT, json={"message": "alice's plans"}, headers=alice)
    bobs = await world.client.post(CHAT, json={"message": "bob's plans"}, headers=bob)
    bobs_stream = await world.client.post(
        STREAM, json={"message": "alice's plans"}, headers={**bob, "Idempotency-Key": "k2"}
    )
    alices_stream = await world.client.post(
        STREAM, json={"message": "alice's plans"}, headers={**alice, "Idempotency-Key": "k2"}
    )
    await world.settled()

    assert alices.status_code == bobs.status_code == 200, bobs.text
    assert bobs.json()["session_id"] != alices.json()["session_id"]
    assert served_session_id(bobs_stream) != served_session_id(alices_stream)
    for response in (bobs_stream, alices_stream):
        assert response.status_code == 200, response.text
    for headers, first in ((alice, alices), (bob, bobs)):
        again = await world.client.post(
            CHAT, json=json.loads(first.request.content), headers=headers
        )
        assert again.status_code == 200, again.text
        assert again.json() == first.json()
    as_bob = await world.client.get(
        session_url(bobs.json()["session_id"]), headers=world.headers("other-user")
    )
    assert as_bob.json()["messages"][0]["content"] == "bob's plans"


# --- Lists --------------------------------------------------------------------------------


@pytest.mark.parametrize("caller", list(CALLERS))
@pytest.mark.parametrize("key", keys("list"), ids=ids(keys("list")))
async def test_lists_show_each_caller_their_own_sessions(
    world: World, key: tuple[str, str], caller: str
) -> None:
    response = await world.call(key, caller, "", "")

    owners = CALLERS[caller].lists
    if owners is None:
        assert_rejected(response)
        return
    assert response.status_code == MATRIX[key].ok, response.text
    listed = {summary["session_id"] for summary in response.json()["sessions"]}
    assert listed == {world.sessions[owner] for owner in owners}
    assert response.json()["total"] == len(owners)


# --- User routes: all of one user's sessions ----------------------------------------------

# Whose sessions a user route acts on when the caller names nobody, or the status it answers.
OWN_SESSIONS: dict[str, frozenset[str] | int] = {
    "owner": frozenset({ALICE}),
    "other-user": frozenset({BOB}),
    "service": 400,  # a service caller is nobody in particular: it must name the user
    "anonymous": 401,
    "forged-as-owner": 401,
}
# (caller, user named in `user_id`) -> whose sessions it acts on, or the status it answers.
NAMED_SESSIONS: dict[tuple[str, str], frozenset[str] | int] = {
    ("owner", ALICE): frozenset({ALICE}),
    ("owner", BOB): 403,
    ("other-user", BOB): frozenset({BOB}),
    ("other-user", ALICE): 403,
    ("service", ALICE): frozenset({ALICE}),
    ("service", BOB): frozenset({BOB}),
    ("anonymous", ALICE): 401,
    ("forged-as-owner", ALICE): 401,
}


async def assert_user_route_outcome(
    world: World,
    key: tuple[str, str],
    response: httpx.Response,
    expected: frozenset[str] | int,
    before: tuple[list[dict[str, Any]], list[dict[str, Any]]],
) -> None:
    """`expected` users' sessions (and their messages) are gone and nobody else's changed; or
    the call was refused and nothing changed at all."""
    before_sessions, before_messages = before
    after_sessions, after_messages = await stored_state(world.database)
    if isinstance(expected, int):
        if expected == 401:
            assert_rejected(response)
        else:
            assert response.status_code == expected, response.text
            assert set(response.json()) == {"detail"}
            assert isinstance(response.json()["detail"], str)
        assert (after_sessions, after_messages) == before
        return
    assert response.status_code == MATRIX[key].ok, response.text
    gone = {row["session_id"] for row in before_sessions if row["user_id"] in expected}
    assert gone == {world.sessions[owner] for owner in expected}
    assert response.json() == {"deleted": len(gone)}
    assert after_sessions == [row for row in before_sessions if row["session_id"] not in gone]
    assert after_messages == [row for row in before_messages if row["session_id"] not in gone]
    assert after_sessions, "the other user's session must survive"


@pytest.mark.parametrize("caller", list(CALLERS))
@pytest.mark.parametrize("key", keys("user"), ids=ids(keys("user")))
async def test_user_routes_act_on_the_callers_own_sessions(
    world: World, key: tuple[str, str], caller: str
) -> None:
    before = await stored_state(world.database)

    response = await world.call(key, caller, "", "")

    await assert_user_route_outcome(world, key, response, OWN_SESSIONS[caller], before)


@pytest.mark.parametrize(
    ("caller", "named"),
    list(NAMED_SESSIONS),
    ids=[f"{caller}-names-{named}" for caller, named in NAMED_SESSIONS],
)
@pytest.mark.parametrize("key", keys("user"), ids=ids(keys("user")))
async def test_user_routes_with_a_named_user(
    world: World, key: tuple[str, str], caller: str, named: str
) -> None:
    before = await stored_state(world.database)

    response = await world.call(key, caller, "", "", params={"user_id": named})

    await assert_user_route_outcome(world, key, response, NAMED_SESSIONS[(caller, named)], before)


def test_user_route_expectations_cover_every_caller() -> None:
    assert set(OWN_SESSIONS) == set(CALLERS)
    assert {caller for caller, _ in NAMED_SESSIONS} == set(CALLERS)


# --- Routes over every user's data --------------------------------------------------------

# What each caller gets from a route that reads every user's data: the users whose data it
# shows, or the status it answers. The rule is the one for listing everyone's sessions.
EVERYONE: dict[str, frozenset[str] | int] = {
    "owner": 403,
    "other-user": 403,
    "service": frozenset({ALICE, BOB}),
    "anonymous": 401,
    "forged-as-owner": 401,
}


def test_everyone_expectations_cover_every_caller() -> None:
    assert set(EVERYONE) == set(CALLERS)


@pytest.mark.parametrize("caller", list(CALLERS))
@pytest.mark.parametrize("key", keys("everyone"), ids=ids(keys("everyone")))
async def test_routes_over_everyones_data_serve_only_service_callers(
    world: World, key: tuple[str, str], caller: str
) -> None:
    before = await stored_state(world.database)

    response = await world.call(key, caller, "", "")

    expected = EVERYONE[caller]
    if expected == 401:
        assert_rejected(response)
    elif isinstance(expected, int):
        assert response.status_code == expected, response.text
        assert set(response.json()) == {"detail"}
    else:
        assert response.status_code == MATRIX[key].ok, response.text
        [entries] = [value for value in response.json().values() if isinstance(value, list)]
        assert {entry["user_id"] for entry in entries} == expected
        assert {entry["session_id"] for entry in entries} == set(world.sessions.values())
    assert await stored_state(world.database) == before


# --- Public routes ------------------------------------------------------------------------


@pytest.mark.parametrize("caller", list(CALLERS))
@pytest.mark.parametrize("key", keys("public"), ids=ids(keys("public")))
async def test_public_routes_answer_everyone(
    auth_client: httpx.AsyncClient, jwks: Jwks, key: tuple[str, str], caller: str
) -> None:
    method, path = MATRIX[key].request or key

    response = await auth_client.request(method, path, headers=CALLERS[caller].headers(jwks))

    assert response.status_code == MATRIX[key].ok, response.text
    assert "WWW-Authenticate" not in response.headers


# --- Share links --------------------------------------------------------------------------


async def link_is_readable(world: World, share_id: str) -> bool:
    response = await world.client.get(SHARED.format(share_id=share_id))
    assert response.status_code in (200, 404), response.text
    return response.status_code == 200


@pytest.mark.parametrize("caller", list(CALLERS))
@pytest.mark.parametrize("key", keys("share"), ids=ids(keys("share")))
async def test_share_routes_on_alices_link(
    shared_world: World, key: tuple[str, str], caller: str
) -> None:
    world = shared_world
    alices = world.shares[ALICE]
    before = await stored_shares(world.database)

    response = await world.call(key, caller, "", "", share_id=alices)

    outcome = CALLERS[caller].on_alices_session
    if outcome == "ok":
        assert response.status_code == MATRIX[key].ok, response.text
        assert MATRIX[key].effect == "deletes"
        assert not await link_is_readable(world, alices)
        assert await link_is_readable(world, world.shares[BOB])
        return
    if outcome == "hidden":
        missing = await world.call(key, caller, "", "", share_id="no-such-link")
        assert response.status_code == missing.status_code == 404, response.text
        assert response.json() == missing.json()
    else:
        assert_rejected(response)
    assert await stored_shares(world.database) == before
    assert await link_is_readable(world, alices)


@pytest.mark.parametrize("key", keys("share"), ids=ids(keys("share")))
async def test_share_routes_on_bobs_link_serve_bob_and_hide_it_from_alice(
    shared_world: World, key: tuple[str, str]
) -> None:
    bobs = shared_world.shares[BOB]

    as_alice = await shared_world.call(key, "owner", "", "", share_id=bobs)
    assert as_alice.status_code == 404, as_alice.text
    assert await link_is_readable(shared_world, bobs)
    as_bob = await shared_world.call(key, "other-user", "", "", share_id=bobs)
    assert as_bob.status_code == MATRIX[key].ok, as_bob.text


@pytest.mark.parametrize("caller", list(CALLERS))
@pytest.mark.parametrize("key", keys("shared"), ids=ids(keys("shared")))
async def test_shared_routes_answer_everyone_for_an_existing_link_only(
    shared_world: World, key: tuple[str, str], caller: str
) -> None:
    world = shared_world
    before = await stored_shares(world.database)

    response = await world.call(key, caller, "", "", share_id=world.shares[ALICE])
    missing = await world.call(key, caller, "", "", share_id="no-such-link")

    assert response.status_code == MATRIX[key].ok, response.text
    assert "WWW-Authenticate" not in response.headers
    # The current branch's: the world's sessions are on the edit of their first message.
    assert response.json()["messages"][0]["content"] == f"{ALICE}'s first message, edited"
    assert missing.status_code == 404, missing.text
    assert await stored_shares(world.database) == before


@pytest.mark.parametrize("caller", list(CALLERS))
@pytest.mark.parametrize("key", keys("share-list"), ids=ids(keys("share-list")))
async def test_share_lists_show_each_caller_their_own_links(
    shared_world: World, key: tuple[str, str], caller: str
) -> None:
    response = await shared_world.call(key, caller, "", "")

    owners = CALLERS[caller].lists
    if owners is None:
        assert_rejected(response)
        return
    assert response.status_code == MATRIX[key].ok, response.text
    listed = {link["share_id"] for link in response.json()["shares"]}
    assert listed == {shared_world.shares[owner] for owner in owners}


# --- Folders and tags ---------------------------------------------------------------------


@pytest.fixture
async def labelled_world(world: World) -> World:
    """The world, with a folder and a tag of each owner's holding their session."""
    for owner, caller in ((ALICE, "owner"), (BOB, "other-user")):
        headers = world.headers(caller)
        folder = await world.client.post(
            FOLDERS, json={"name": f"{owner}'s folder"}, headers=headers
        )
        assert folder.status_code == 201, folder.text
        world.folders[owner] = folder.json()["folder_id"]
        filed = await world.client.patch(
            session_url(world.sessions[owner]),
            json={"folder_id": world.folders[owner], "tags": [f"{owner}'s tag"]},
            headers=headers,
        )
        assert filed.status_code == 200, filed.text
        tags = await world.client.get(TAGS, headers=headers)
        [tag] = tags.json()["tags"]
        world.tags[owner] = tag["tag_id"]
    return world


def label_ids(world: World, key: tuple[str, str], owner: str) -> str:
    return world.folders[owner] if "{folder_id}" in key[1] else world.tags[owner]


async def stored_labels(database: Database) -> list[list[dict[str, Any]]]:
    """Every folder, tag and tag link row, and each session's folder."""
    async with database.read() as conn:
        tables = []
        for table, order in (
            (chat_folders, chat_folders.c.id),
            (chat_tags, chat_tags.c.id),
            (chat_session_tags, chat_session_tags.c.session_id),
        ):
            rows = await conn.execute(select(table).order_by(order))
            tables.append([dict(row) for row in rows.mappings()])
        filed = await conn.execute(
            select(chat_sessions.c.session_id, chat_sessions.c.folder_id).order_by(
                chat_sessions.c.session_id
            )
        )
        tables.append([dict(row) for row in filed.mappings()])
        return tables


@pytest.mark.parametrize("caller", list(CALLERS))
@pytest.mark.parametrize("key", keys("label"), ids=ids(keys("label")))
async def test_label_routes_on_alices_folder_or_tag(
    labelled_world: World, key: tuple[str, str], caller: str
) -> None:
    world = labelled_world
    alices = label_ids(world, key, ALICE)
    before = await stored_labels(world.database)
    text = f"{caller} was here"

    response = await world.call(key, caller, "", text, label_id=alices)

    outcome = CALLERS[caller].on_alices_session
    after = await stored_labels(world.database)
    if outcome == "ok":
        assert response.status_code == MATRIX[key].ok, response.text
        assert after != before
        # Bob's folder and tag are untouched.
        bobs = {world.folders[BOB], world.tags[BOB]}
        assert [[row for row in rows if str(row.get("id")) in bobs] for rows in after[:2]] == [
            [row for row in rows if str(row.get("id")) in bobs] for rows in before[:2]
        ]
        return
    if outcome == "hidden":
        missing = await world.call(key, caller, "", text, label_id=NO_SUCH_MESSAGE)
        assert response.status_code == missing.status_code == 404, response.text
        assert response.json() == missing.json()
    else:
        assert_rejected(response)
    assert after == before


@pytest.mark.parametrize("key", keys("label"), ids=ids(keys("label")))
async def test_label_routes_on_bobs_serve_bob_and_hide_them_from_alice(
    labelled_world: World, key: tuple[str, str]
) -> None:
    world = labelled_world
    bobs = label_ids(world, key, BOB)
    before = await stored_labels(world.database)

    as_alice = await world.call(key, "owner", "", "alice was here", label_id=bobs)
    assert as_alice.status_code == 404, as_alice.text
    assert await stored_labels(world.database) == before
    as_bob = await world.call(key, "other-user", "", "bob was here", label_id=bobs)
    assert as_bob.status_code == MATRIX[key].ok, as_bob.text


@pytest.mark.parametrize("caller", list(CALLERS))
@pytest.mark.parametrize("key", keys("label-list"), ids=ids(keys("label-list")))
async def test_label_lists_show_each_caller_their_own(
    labelled_world: World, key: tuple[str, str], caller: str
) -> None:
    world = labelled_world
    response = await world.call(key, caller, "", "")

    owners = CALLERS[caller].lists
    if owners is None:
        assert_rejected(response)
        return
    assert response.status_code == MATRIX[key].ok, response.text
    [items] = response.json().values()
    listed = {item.get("folder_id") or item.get("tag_id") for item in items}
    expected = world.folders if key[1] == FOLDERS else world.tags
    assert listed == {expected[owner] for owner in owners}


# Whose folder each caller creates (None: nobody's, a service caller naming no user).
CREATES_FOR: dict[str, str | int | None] = {
    "owner": ALICE,
    "other-user": BOB,
    "service": None,
    "anonymous": 401,
    "forged-as-owner": 401,
}


@pytest.mark.parametrize("caller", list(CALLERS))
@pytest.mark.parametrize("key", keys("label-create"), ids=ids(keys("label-create")))
async def test_label_creation_is_for_the_caller(
    labelled_world: World, key: tuple[str, str], caller: str
) -> None:
    world = labelled_world
    before = await stored_labels(world.database)

    response = await world.call(key, caller, "", f"{caller}'s new one")

    expected = CREATES_FOR[caller]
    if expected == 401:
        assert_rejected(response)
        assert await stored_labels(world.database) == before
        return
    assert response.status_code == MATRIX[key].ok, response.text
    async with world.database.read() as conn:
        owner = await conn.scalar(
            select(chat_folders.c.user_id).where(
                chat_folders.c.id == uuid.UUID(response.json()["folder_id"])
            )
        )
    assert owner == (expected or "")


@pytest.mark.parametrize("caller", ["owner", "service"])
async def test_a_session_goes_only_into_its_owners_folders(
    labelled_world: World, caller: str
) -> None:
    world = labelled_world
    before = await stored_labels(world.database)

    response = await world.client.patch(
        session_url(world.sessions[ALICE]),
        json={"folder_id": world.folders[BOB], "tags": ["sneaky"]},
        headers=world.headers(caller),
    )

    assert response.status_code == 404, response.text
    assert response.json() == {"detail": "Folder not found"}
    assert await stored_labels(world.database) == before


# --- Imports ------------------------------------------------------------------------------


def an_export(text: str) -> bytes:
    """This service's export of one session: what a caller's import brings in."""
    message: Json = {
        "id": str(uuid.uuid4()),
        "role": "user",
        "content": text,
        "metadata": {},
        "created_at": "2026-12-01T10:00:00Z",
        "parent_id": None,
    }
    session = {
        "session_id": str(uuid.uuid4()),
        "title": text,
        "created_at": "2026-12-01T10:00:00Z",
        "updated_at": "2026-12-01T10:00:00Z",
        "current_message_id": message["id"],
        "messages": [message],
    }
    return json.dumps(session).encode()


async def upload_as(world: World, caller: str, text: str) -> httpx.Response:
    return await world.client.post(
        IMPORT, files={"file": ("chat.json", an_export(text))}, headers=world.headers(caller)
    )


@pytest.fixture
async def imported_world(world: World) -> World:
    """The world, with a finished import of alice's and one of bob's."""
    for owner, caller in ((ALICE, "owner"), (BOB, "other-user")):
        response = await upload_as(world, caller, f"{owner}'s import")
        assert response.status_code == 202, response.text
        world.imports[owner] = response.json()["import_id"]
    await world.live.app.state.import_tasks.wait()
    return world


async def owners_of_text(database: Database, text: str) -> list[str | None]:
    async with database.read() as conn:
        rows = await conn.execute(
            select(chat_sessions.c.user_id)
            .join(chat_messages, chat_messages.c.session_id == chat_sessions.c.session_id)
            .where(chat_messages.c.content == text)
        )
        return [row.user_id for row in rows]


@pytest.mark.parametrize("caller", list(CALLERS))
@pytest.mark.parametrize("key", keys("import-create"), ids=ids(keys("import-create")))
async def test_an_import_is_the_callers(world: World, key: tuple[str, str], caller: str) -> None:
    text = f"{caller}'s imported chat"
    response = await upload_as(world, caller, text)
    await world.live.app.state.import_tasks.wait()

    expected = CREATES_FOR[caller]
    if expected == 401:
        assert_rejected(response)
        assert await owners_of_text(world.database, text) == []
        return
    assert response.status_code == MATRIX[key].ok, response.text
    assert await owners_of_text(world.database, text) == [expected]


@pytest.mark.parametrize("caller", list(CALLERS))
@pytest.mark.parametrize("key", keys("import"), ids=ids(keys("import")))
async def test_import_routes_on_alices_import(
    imported_world: World, key: tuple[str, str], caller: str
) -> None:
    world = imported_world
    response = await world.call(key, caller, "", "", import_id=world.imports[ALICE])

    outcome = CALLERS[caller].on_alices_session
    if outcome == "ok":
        assert response.status_code == MATRIX[key].ok, response.text
        assert response.json()["import_id"] == world.imports[ALICE]
    elif outcome == "hidden":
        missing = await world.call(key, caller, "", "", import_id=NO_SUCH_MESSAGE)
        assert response.status_code == missing.status_code == 404, response.text
        assert response.json() == missing.json()
    else:
        assert_rejected(response)


@pytest.mark.parametrize("key", keys("import"), ids=ids(keys("import")))
async def test_import_routes_on_bobs_serve_bob_and_hide_it_from_alice(
    imported_world: World, key: tuple[str, str]
) -> None:
    world = imported_world
    as_alice = await world.call(key, "owner", "", "", import_id=world.imports[BOB])
    assert as_alice.status_code == 404, as_alice.text
    as_bob = await world.call(key, "other-user", "", "", import_id=world.imports[BOB])
    assert as_bob.status_code == MATRIX[key].ok, as_bob.text
