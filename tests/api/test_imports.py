"""Import over HTTP (issue 16): ChatGPT exports (.json and .zip) with branches, hidden and
system messages, tools, code and images; this service's own export round trip; dedupe on a
second import; the 4xx cases, with nothing written; one running import per user; on SQLite
and PostgreSQL."""

import asyncio
import io
import json
import struct
import uuid
import zipfile
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, insert, select

from app.domain import FEEDBACK_COMMENT_MAX_CHARS
from app.kit.db.engine import Database
from app.kit.db.tables import chat_imports, chat_sessions
from app.kit.db.types import utc_now
from app.main import create_app
from app.messages import queries as message_queries
from app.replies.liveness import ProcessLiveness
from tests.api.helpers import CHAT, SESSIONS, Json, get_session, send, session_url
from tests.conftest import LiveServer, make_settings, serve
from tests.fakes.chatgpt import T0, ChatGPTConversation, export_bytes, export_zip
from tests.services.helpers import assert_tree_matches_session

IMPORT = "/api/v1/chat/import"
STATUS_KEYS = {
    "import_id",
    "status",
    "format",
    "total",
    "done",
    "imported",
    "skipped",
    "failed",
    "error",
    "created_at",
    "updated_at",
}


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(T0 + seconds, UTC)


def full_conversation() -> ChatGPTConversation:
    """Every shape at once. The tree (times in seconds after T0):

    root (null) - system (hidden by role) - u1 "Plot a sine" (1)
        - a1 code (2, gpt-4o) - tool output (3) - hidden (4) - a2 image reply (5)
        - a1b "Another answer" (6, no model_slug): the newest leaf, not the current one
    current_node: a2, so the current branch is u1, a1, tool, a2 (the hidden one skipped).
    """
    conversation = ChatGPTConversation("conv-full", "Sine plots")
    root = conversation.root()
    system = conversation.add("system", root, "system", "You are ChatGPT.", at=None)
    u1 = conversation.add("u1", system, "user", "Plot a sine", at=T0 + 1)
    a1 = conversation.add(
        "a1",
        u1,
        "assistant",
        {"content_type": "code", "language": "python", "text": "plot(sin)"},
        at=T0 + 2,
        model="gpt-4o",
    )
    tool = conversation.add(
        "tool",
        a1,
        "tool",
        {"content_type": "execution_output", "text": "<Figure 1>"},
        at=T0 + 3,
        author_name="python",
    )
    hidden = conversation.add("hidden", tool, "assistant", "thinking", at=T0 + 4, hidden=True)
    a2 = conversation.add(
        "a2",
        hidden,
        "assistant",
        {
            "content_type": "multimodal_text",
            "parts": [
                {
                    "content_type": "image_asset_pointer",
                    "asset_pointer": "file-service://file-abc",
                    "width": 640,
                    "height": 480,
                    "size_bytes": 1234,
                },
                "Here is the plot.",
            ],
        },
        at=T0 + 5,
        model="gpt-4o",
    )
    conversation.add("a1b", u1, "assistant", "Another answer", at=T0 + 6)
    conversation.current_node = a2
    return conversation


def simple_conversation(conversation_id: str, title: str, start: float) -> ChatGPTConversation:
    conversation = ChatGPTConversation(conversation_id, title, create_time=T0 + start)
    root = conversation.root()
    question = conversation.add("q", root, "user", f"{title}?", at=T0 + start + 1)
    conversation.add("r", question, "assistant", f"{title}!", at=T0 + start + 2, model="gpt-4")
    return conversation


def broken_conversation() -> Json:
    return {"title": "Broken one", "create_time": T0, "conversation_id": "conv-broken"}


def chatgpt_export() -> list[Json]:
    return [
        full_conversation().as_json(),
        broken_conversation(),
        simple_conversation("conv-simple", "Simple", 100).as_json(),
    ]


async def upload(
    client: httpx.AsyncClient,
    content: bytes,
    filename: str = "conversations.json",
    *,
    expect: int = 202,
    **params: str,
) -> Json:
    response = await client.post(IMPORT, files={"file": (filename, content)}, params=params)
    assert response.status_code == expect, response.text
    data: Json = response.json()
    return data


async def finished(client: httpx.AsyncClient, started: Json) -> Json:
    """The import's status once it has ended, polled as the web page does."""
    assert set(started) == STATUS_KEYS
    for _ in range(600):
        response = await client.get(f"/api/v1/chat/imports/{started['import_id']}")
        assert response.status_code == 200, response.text
        status: Json = response.json()
        if status["status"] != "running":
            return status
        await asyncio.sleep(0.05)
    raise AssertionError("the import did not finish")


async def imported_sessions(client: httpx.AsyncClient) -> dict[str, Json]:
    response = await client.get(SESSIONS, params={"page_size": 100})
    assert response.status_code == 200
    return {s["title"]: s for s in response.json()["sessions"]}


async def tree(client: httpx.AsyncClient, session_id: str) -> list[Json]:
    response = await client.get(f"{session_url(session_id)}/tree", params={"limit": 500})
    assert response.status_code == 200, response.text
    messages: list[Json] = response.json()["messages"]
    return messages


@pytest.mark.parametrize("as_zip", [False, True], ids=["json", "zip"])
async def test_a_chatgpt_export_is_imported_with_its_branches(
    client: httpx.AsyncClient, database: Database, as_zip: bool
) -> None:
    content = export_zip(chatgpt_export()) if as_zip else export_bytes(chatgpt_export())
    started = await upload(client, content, "export.zip" if as_zip else "conversations.json")
    assert started["status"] == "running"
    assert started["format"] == "chatgpt"
    status = await finished(client, started)
    assert status["status"] == "done", status
    assert (status["total"], status["done"], status["imported"], status["skipped"]) == (3, 3, 2, 0)
    assert status["error"] is None
    [failure] = status["failed"]
    assert failure["title"] == "Broken one"
    assert "mapping" in failure["reason"]

    sessions = await imported_sessions(client)
    assert set(sessions) == {"Sine plots", "Simple"}
    full = sessions["Sine plots"]
    # Real dates: created at the conversation's time, active at its newest message's.
    assert full["created_at"] == at(0).isoformat().replace("+00:00", "Z")
    assert full["updated_at"] == at(6).isoformat().replace("+00:00", "Z")
    assert full["message_count"] == 4
    assert full["title_source"] == "model"
    assert full["last_message"] == "Here is the plot."
    # The sidebar sorts by those dates: the simple one (T0 + 102) is the most recent.
    listed = [s["title"] for s in (await client.get(SESSIONS)).json()["sessions"]]
    assert listed == ["Simple", "Sine plots"]

    detail = await get_session(client, full["session_id"])
    branch = detail["messages"]
    assert [m["role"] for m in branch] == ["user", "assistant", "assistant", "assistant"]
    assert [m["content"] for m in branch] == [
        "Plot a sine",
        "```python\nplot(sin)\n```",
        "```\n<Figure 1>\n```",
        "Here is the plot.",
    ]
    assert [m["created_at"] for m in branch] == [
        at(s).isoformat().replace("+00:00", "Z") for s in (1, 2, 3, 5)
    ]
    # The hidden message's child hangs under its nearest kept ancestor: one chain.
    assert branch[3]["parent_id"] == branch[2]["id"]
    assert branch[0]["parent_id"] is None
    assert branch[1]["metadata"]["model"] == "gpt-4o"
    assert branch[2]["metadata"]["tool"] == "python"
    assert branch[3]["metadata"]["attachments"] == [
        {
            "type": "image",
            "asset_pointer": "file-service://file-abc",
            "width": 640,
            "height": 480,
            "size_bytes": 1234,
        }
    ]
    # The other answer is a sibling of the first, off the current branch; without a
    # model_slug it takes the conversation's default model.
    assert len(branch[1]["sibling_ids"]) == 2
    every = await tree(client, full["session_id"])
    assert len(every) == 5
    other = next(m for m in every if m["content"] == "Another answer")
    assert other["parent_id"] == branch[0]["id"]
    assert other["metadata"]["model"] == "gpt-4o"
    assert "system" not in {m["role"] for m in every}
    assert "thinking" not in {m["content"] for m in every}

    # The sidebar metadata and tree are those the write path keeps.
    for session in sessions.values():
        await assert_tree_matches_session(database, session["session_id"])
    # Searchable, by title and by message, on any branch.
    for query, title in (("sine", "Sine plots"), ("another", "Sine plots"), ("simple", "Simple")):
        found = (await client.get(SESSIONS, params={"q": query})).json()["sessions"]
        assert [s["title"] for s in found] == [title], query


async def test_a_second_import_of_the_same_file_duplicates_nothing(
    client: httpx.AsyncClient,
) -> None:
    first = await finished(client, await upload(client, export_bytes(chatgpt_export())))
    assert first["imported"] == 2
    # The zip of the same export: the same conversation ids.
    second = await finished(client, await upload(client, export_zip(chatgpt_export()), "e.zip"))
    assert (second["status"], second["imported"], second["skipped"]) == ("done", 0, 2)
    assert len(second["failed"]) == 1
    assert len(await imported_sessions(client)) == 2
    # Another user's import of it is theirs: imported again, for them.
    third = await finished(
        client, await upload(client, export_bytes(chatgpt_export()), user_id="bob")
    )
    assert third["imported"] == 2


async def test_a_deleted_imported_session_is_imported_again(client: httpx.AsyncClient) -> None:
    export = export_bytes([simple_conversation("conv-1", "Once", 0).as_json()])
    await finished(client, await upload(client, export))
    [session] = (await imported_sessions(client)).values()
    assert (await client.delete(session_url(session["session_id"]))).status_code == 204
    again = await finished(client, await upload(client, export))
    assert (again["imported"], again["skipped"]) == (1, 0)


def without_ids(detail: Json) -> Json:
    """A session export with its ids replaced by their position (the tree's shape stays)."""
    position = {m["id"]: n for n, m in enumerate(detail["messages"])}

    def message(m: Json) -> Json:
        return {
            **m,
            "id": position[m["id"]],
            "parent_id": position.get(m["parent_id"]),
            "sibling_ids": [position[s] for s in m["sibling_ids"]],
        }

    return {
        **detail,
        "session_id": None,
        "current_message_id": position.get(detail["current_message_id"]),
        "messages": [message(m) for m in detail["messages"]],
    }


async def export_of(client: httpx.AsyncClient, session_id: str) -> Json:
    response = await client.get(f"{session_url(session_id)}/export", params={"format": "json"})
    assert response.status_code == 200, response.text
    exported: Json = response.json()
    return exported


async def branched_session(client: httpx.AsyncClient, session_id: str) -> None:
    """Three exchanges, an edit of the second question (a branch), a switch back to the
    first branch, feedback on two replies, a pin and a rename."""
    await send(client, "first question", session_id=session_id)
    second = await send(client, "second question", session_id=session_id)
    await send(client, "third question", session_id=session_id)
    edited = await client.post(
        CHAT,
        json={
            "message": "second, edited",
            "session_id": session_id,
            "edit_of": second["user_message_id"],
        },
    )
    assert edited.status_code == 200, edited.text
    feedback = f"{session_url(session_id)}/messages/{{}}/feedback"
    for reply, body in (
        (second["message_id"], {"rating": "down", "comment": "too short"}),
        (edited.json()["message_id"], {"rating": "up"}),
    ):
        assert (await client.put(feedback.format(reply), json=body)).status_code == 200
    switched = await client.put(
        f"{session_url(session_id)}/branch", json={"message_id": second["message_id"]}
    )
    assert switched.status_code == 200, switched.text
    renamed = await client.patch(session_url(session_id), json={"title": "Kept", "pinned": True})
    assert renamed.status_code == 200


async def test_the_round_trip_of_an_export_loses_nothing(
    client: httpx.AsyncClient, database: Database
) -> None:
    await branched_session(client, "original")
    exported = await export_of(client, "original")
    status = await finished(client, await upload(client, json.dumps(exported).encode()))
    assert (status["format"], status["imported"]) == ("session", 1)
    listed = (await client.get(SESSIONS)).json()["sessions"]
    # Both are titled "Kept": told apart by id.
    [copy_id] = [s["session_id"] for s in listed if s["session_id"] != "original"]
    copy = await export_of(client, copy_id)
    assert without_ids(copy) == without_ids(exported)
    assert copy["current_message_id"] != exported["current_message_id"]
    await assert_tree_matches_session(database, copy_id)
    # The current branch too, as the session opens.
    original_branch = (await get_session(client, "original"))["messages"]
    copy_branch = (await get_session(client, copy_id))["messages"]
    assert [m["content"] for m in copy_branch] == [m["content"] for m in original_branch]
    # Again: skipped. A list of exports (several sessions) imports each.
    again = await finished(client, await upload(client, json.dumps(exported).encode()))
    assert (again["imported"], again["skipped"]) == (0, 1)
    await send(client, "another", session_id="other")
    many = [exported, await export_of(client, "other")]
    status = await finished(client, await upload(client, json.dumps(many).encode()))
    assert (status["format"], status["imported"], status["skipped"]) == ("sessions", 1, 1)


def zip_of(files: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("content", "status", "detail"),
    [
        (b"not json at all", 422, "not valid JSON"),
        (b"", 422, "not valid JSON"),
        (b'{"hello": "world"}', 422, "not an export"),
        (b"[1, 2, 3]", 422, "not an export"),
        (b'[{"title": "x"}]', 422, "neither `mapping`"),
        (zip_of({"readme.txt": b"hi"}), 422, "no conversations.json"),
        # 50 MB of spaces packs into about 50 KB: refused before unpacking.
        (zip_of({"conversations.json": b" " * 50_000_000}), 422, "zip bomb"),
        (b"PK\x03\x04 broken", 422, "not a readable zip"),
    ],
    ids=["text", "empty", "object", "numbers", "no-mapping", "zip-without", "zip-bomb", "bad-zip"],
)
async def test_what_is_not_an_export_is_refused_before_anything_is_written(
    client: httpx.AsyncClient, database: Database, content: bytes, status: int, detail: str
) -> None:
    response = await client.post(IMPORT, files={"file": ("x.json", content)})
    assert response.status_code == status, response.text
    assert detail in response.json()["detail"]
    async with database.read() as conn:
        assert (await conn.execute(select(func.count()).select_from(chat_imports))).scalar() == 0
        assert (await conn.execute(select(func.count()).select_from(chat_sessions))).scalar() == 0


async def test_json_that_breaks_off_late_fails_the_import_with_nothing_written(
    client: httpx.AsyncClient,
) -> None:
    whole = export_bytes([simple_conversation(f"c{n}", f"Chat {n}", n).as_json() for n in (1, 2)])
    status = await finished(client, await upload(client, whole[:-30]))
    assert status["status"] == "failed"
    assert "not valid JSON" in status["error"]
    assert (status["imported"], status["total"]) == (0, None)
    assert await imported_sessions(client) == {}


async def test_a_request_without_a_file_is_a_422(client: httpx.AsyncClient) -> None:
    response = await client.post(IMPORT, data={"other": "x"})
    assert response.status_code == 422


async def test_an_import_over_the_limit_is_a_413_with_nothing_written(
    settings: Any, database: Database
) -> None:
    small = make_settings(settings.database_url, import_max_bytes=4096)
    async with serve(create_app(small)) as live:
        big = export_bytes([simple_conversation("c", "x" * 5000, 0).as_json()])
        response = await live.client.post(IMPORT, files={"file": ("c.json", big)})
        assert response.status_code == 413, response.text
        assert "4096" in response.json()["detail"]
        # Zipped it is small, but unpacks past the limit: refused from its declared size.
        response = await live.client.post(IMPORT, files={"file": ("c.zip", export_zip([]))})
        assert response.status_code == 202
        await live.app.state.import_tasks.wait()
        packed = zip_of({"conversations.json": big + b" " * 2000})
        assert len(packed) < 4096
        response = await live.client.post(IMPORT, files={"file": ("c.zip", packed)})
        assert response.status_code == 413, response.text
    async with database.read() as conn:
        assert (await conn.execute(select(func.count()).select_from(chat_sessions))).scalar() == 0


async def test_one_running_import_per_user(
    client: httpx.AsyncClient, live_server: LiveServer, database: Database
) -> None:
    async with database.write() as conn:
        await conn.execute(insert(chat_imports).values(running_row(owner="", process_id=None)))
    response = await client.post(IMPORT, files={"file": ("c.json", b"[]")})
    assert response.status_code == 409, response.text
    assert "still running" in response.json()["detail"]
    # Another user's import is not held up by it.
    started = await upload(client, b"[]", user_id="bob")
    assert (await finished(client, started))["status"] == "done"


def running_row(*, owner: str, process_id: uuid.UUID | None, age: timedelta = timedelta(0)) -> Json:
    now = utc_now() - age
    return {
        "id": uuid.uuid4(),
        "user_id": owner or None,
        "owner_key": owner,
        "status": "running",
        "format": "chatgpt",
        "total": 10,
        "done": 3,
        "imported": 3,
        "skipped": 0,
        "failed": [],
        "error": None,
        "process_id": process_id or uuid.uuid4(),
        "created_at": now,
        "updated_at": now,
    }


async def test_an_import_whose_process_died_is_marked_failed(
    client: httpx.AsyncClient, database: Database
) -> None:
    """A process that stopped reporting (a crash, a restart) left its import running: the
    other processes' sweep marks it failed with a reason, and a running import of a live
    process stays running."""
    dead = running_row(owner="alice", process_id=None, age=timedelta(minutes=10))
    alive_process = uuid.uuid4()
    alive = running_row(owner="bob", process_id=alive_process)
    async with database.write() as conn:
        await conn.execute(insert(chat_imports).values([dead, alive]))
    liveness = ProcessLiveness(database, alive_process, heartbeat_seconds=1, stale_seconds=30)
    await liveness._report()
    await liveness.sweep()
    for row, expected in ((dead, "failed"), (alive, "running")):
        response = await client.get(f"/api/v1/chat/imports/{row['id']}")
        assert response.json()["status"] == expected
    failed = (await client.get(f"/api/v1/chat/imports/{dead['id']}")).json()
    assert "Import the file again" in failed["error"]
    assert failed["imported"] == 3


async def test_an_unknown_import_is_a_404(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/api/v1/chat/imports/{uuid.uuid4()}")
    assert response.status_code == 404
    assert response.json() == {"detail": "Import not found"}
    assert (await client.get("/api/v1/chat/imports/not-an-id")).status_code == 422


async def test_a_long_user_message_is_cut_and_a_nul_fails_its_conversation(
    client: httpx.AsyncClient, live_server: LiveServer
) -> None:
    limit = live_server.app.state.settings.message_max_chars
    long = ChatGPTConversation("long", "Long")
    long.add("q", None, "user", "x" * (limit + 10), at=T0 + 1)
    long.add("r", "q", "assistant", "y" * (limit + 10), at=T0 + 2)
    nul = simple_conversation("nul", "With NUL", 5)
    nul.mapping["q"]["message"]["content"]["parts"] = ["a\u0000b"]
    status = await finished(
        client, await upload(client, export_bytes([long.as_json(), nul.as_json()]))
    )
    assert status["imported"] == 1
    assert status["failed"] == [
        {"title": "With NUL", "reason": "a user message must not contain NUL (\\u0000) characters"}
    ]
    session = (await imported_sessions(client))["Long"]
    question, reply = (await get_session(client, session["session_id"]))["messages"]
    assert len(question["content"]) == limit
    assert question["metadata"]["import_truncated_from_chars"] == limit + 10
    # Replies have no such limit when written: kept whole.
    assert len(reply["content"]) == limit + 10


async def test_an_import_running_when_the_service_stops_is_marked_failed(
    settings: Any, database: Database
) -> None:
    """Shutdown cancels it (the conversation being written rolls back) and records why; what
    it imported stays, and a new upload of the file skips that."""
    chats = [simple_conversation(f"c{n}", f"Chat {n}", n).as_json() for n in range(500)]
    async with serve(create_app(settings)) as live:
        started = await upload(live.client, export_bytes(chats))
    async with database.read() as conn:
        row = (
            await conn.execute(
                select(chat_imports).where(chat_imports.c.id == uuid.UUID(started["import_id"]))
            )
        ).one()
        sessions = (
            await conn.execute(select(func.count()).select_from(chat_sessions))
        ).scalar_one()
    assert row.status == "failed"
    assert "The service stopped during the import" in row.error
    assert row.imported == sessions < 500


# --- Hostile input: each malformed conversation fails alone, nothing is lost silently ----------


def with_part(conversation: ChatGPTConversation, node: str, part: Json) -> Json:
    exported = conversation.as_json()
    exported["mapping"][node]["message"]["content"]["parts"].append(part)
    return exported


@pytest.mark.parametrize(
    "content_type",
    [None, 7, ["text"], {"kind": "text"}],
    ids=["null", "number", "list", "object"],
)
async def test_a_content_type_of_the_wrong_type_stops_nothing(
    client: httpx.AsyncClient, database: Database, content_type: Any
) -> None:
    """A `content_type` that is not a string, on a message or on one of its parts, is read as
    absent (as every other field of the wrong type is): the text is imported, and the
    conversations after it too (it stopped the whole import: an AttributeError, a TypeError)."""
    on_message = simple_conversation("c1", "On the message", 0).as_json()
    on_message["mapping"]["q"]["message"]["content"]["content_type"] = content_type
    on_part = with_part(
        simple_conversation("c2", "On a part", 10), "r", {"content_type": content_type}
    )
    after = simple_conversation("c3", "After them", 20).as_json()

    status = await finished(
        client, await upload(client, export_bytes([on_message, on_part, after]))
    )

    assert (status["status"], status["error"], status["failed"]) == ("done", None, [])
    assert (status["imported"], status["done"]) == (3, 3)
    sessions = await imported_sessions(client)
    assert set(sessions) == {"On the message", "On a part", "After them"}
    assert sessions["On the message"]["message_count"] == 2
    assert sessions["On a part"]["last_message"] == "On a part!"
    for session in sessions.values():
        await assert_tree_matches_session(database, session["session_id"])


async def test_a_nul_in_a_source_id_or_a_comment_fails_its_conversation_on_both_databases(
    client: httpx.AsyncClient, database: Database
) -> None:
    """The conversation's id (kept as its source and in the session's metadata) and a reply's
    feedback comment are stored text too: with a NUL, SQLite stored them and PostgreSQL
    refused the conversation as "the database refused it"."""
    await branched_session(client, "original")
    exported = await export_of(client, "original")
    commented = {
        **exported,
        "session_id": "with a bad comment",
        "messages": [
            {**m, "feedback": {**m["feedback"], "comment": "bad\u0000comment"}}
            if m["feedback"]
            else m
            for m in exported["messages"]
        ],
    }
    renamed = {**exported, "session_id": "bad\u0000id", "title": "Bad id"}
    bad_id = simple_conversation("conv\u0000nul", "Bad ChatGPT id", 0).as_json()

    sessions = await finished(
        client, await upload(client, json.dumps([commented, renamed]).encode())
    )
    chatgpt = await finished(client, await upload(client, export_bytes([bad_id])))

    assert (sessions["status"], sessions["imported"], sessions["done"]) == ("done", 0, 2)
    [comment_failure, id_failure] = [f["reason"] for f in sessions["failed"]]
    assert comment_failure.endswith(".feedback.comment: Value error, " + NO_NUL)
    assert id_failure == f"the conversation's id {NO_NUL}"
    assert (chatgpt["status"], chatgpt["imported"]) == ("done", 0)
    assert [f["reason"] for f in chatgpt["failed"]] == [f"the conversation's id {NO_NUL}"]
    assert [s["session_id"] for s in (await client.get(SESSIONS)).json()["sessions"]] == [
        "original"
    ]


NO_NUL = "must not contain NUL (\\u0000) characters"


async def test_an_imported_comment_follows_the_rules_of_a_rating_given_here(
    client: httpx.AsyncClient,
) -> None:
    """A feedback comment in a session export is taken as a PUT takes it: blank as none, and
    at most FEEDBACK_COMMENT_MAX_CHARS (a longer one fails its conversation). Both were
    stored as given, and exported again."""
    await branched_session(client, "original")
    exported = await export_of(client, "original")

    def with_comment(session_id: str, comment: str) -> Json:
        messages = [
            {**m, "feedback": {**m["feedback"], "comment": comment}} if m["feedback"] else m
            for m in exported["messages"]
        ]
        return {**exported, "session_id": session_id, "messages": messages}

    too_long = "x" * (FEEDBACK_COMMENT_MAX_CHARS + 1)
    export = [with_comment("blank", "   "), with_comment("too long", too_long)]
    status = await finished(client, await upload(client, json.dumps(export).encode()))

    assert (status["status"], status["imported"], status["done"]) == ("done", 1, 2)
    [failure] = status["failed"]
    assert f"at most {FEEDBACK_COMMENT_MAX_CHARS} characters" in failure["reason"]
    listed = (await client.get(SESSIONS)).json()["sessions"]
    [copy_id] = [s["session_id"] for s in listed if s["session_id"] != "original"]
    reimported = await export_of(client, copy_id)
    rated = [m["feedback"] for m in reimported["messages"] if m["feedback"]]
    assert rated
    assert all(feedback["comment"] is None for feedback in rated)


def with_cycle_aside(conversation_id: str, title: str) -> Json:
    """A conversation whose two last messages name each other as `parent` (and child): no
    walk from its start reaches them."""
    conversation = simple_conversation(conversation_id, title, 0)
    conversation.add("x", None, "user", "lost question", at=T0 + 3)
    conversation.add("y", "x", "assistant", "lost answer", at=T0 + 4)
    exported = conversation.as_json()
    exported["mapping"]["x"]["parent"] = "y"
    exported["mapping"]["y"]["children"] = ["x"]
    return exported


def with_orphan(conversation_id: str, title: str) -> Json:
    """A conversation with a reply whose parent does not list it among its `children`."""
    exported = simple_conversation(conversation_id, title, 0).as_json()
    exported["mapping"]["q"]["children"] = []
    return exported


@pytest.mark.parametrize("broken", [with_cycle_aside, with_orphan], ids=["cycle-aside", "orphan"])
async def test_messages_out_of_the_tree_fail_their_conversation_rather_than_vanish(
    client: httpx.AsyncClient, broken: Any
) -> None:
    """Messages that the walk down from the conversation's start cannot reach were left out
    without a word: the session was imported without them (a cycle of every message: an
    empty session)."""
    everything_in_a_cycle = with_cycle_aside("c2", "All in a cycle")
    everything_in_a_cycle["mapping"] = {
        key: node for key, node in everything_in_a_cycle["mapping"].items() if key in ("x", "y")
    }
    export = [broken("c1", "Broken tree")]
    export += [everything_in_a_cycle, simple_conversation("c3", "Whole", 10).as_json()]

    status = await finished(client, await upload(client, export_bytes(export)))

    assert (status["status"], status["imported"], status["done"]) == ("done", 1, 3)
    assert [f["title"] for f in status["failed"]] == ["Broken tree", "All in a cycle"]
    for failure in status["failed"]:
        assert "`parent` and `children`" in failure["reason"], failure
    assert set(await imported_sessions(client)) == {"Whole"}


def nested(conversation: Json, levels: int) -> bytes:
    """The conversation as JSON, with a value `levels` lists deep in its first question's
    metadata (built as text: json.dumps stops at about 1,000 levels)."""
    conversation["mapping"]["q"]["message"]["metadata"]["x"] = "here"
    return json.dumps(conversation).replace('"here"', "[" * levels + "]" * levels).encode()


async def test_json_nested_too_deep_is_refused_before_it_is_read_into_memory(
    client: httpx.AsyncClient, database: Database
) -> None:
    """Reading N levels of nesting with ijson's paths costs N² memory: a 200 KB file of
    100,000 levels got the process killed; it is refused (MAX_DEPTH), whichever conversation
    holds it. Nesting an export really has is imported."""
    deep = nested(simple_conversation("c1", "Deep", 0).as_json(), 3_000)
    refused = await upload(client, b"[" + deep + b"]", expect=422)
    assert "nested more than 64 levels deep" in refused["detail"]

    fine = nested(simple_conversation("c2", "Fine", 0).as_json(), 40)
    status = await finished(client, await upload(client, b"[" + fine + b"," + deep + b"]"))
    assert status["status"] == "failed"
    assert "nested more than 64 levels deep" in status["error"]
    assert (status["done"], status["imported"]) == (0, 0)
    assert await imported_sessions(client) == {}

    status = await finished(client, await upload(client, b"[" + fine + b"]"))
    assert (status["status"], status["imported"]) == ("done", 1)


async def test_an_unpaired_low_surrogate_escape_is_bad_json_not_a_500(
    client: httpx.AsyncClient, database: Database
) -> None:
    """`\\udc00` alone in a JSON string: ijson's C parser raises UnicodeDecodeError, which was
    not read as bad JSON: a 500 in the first conversation, "an unexpected error" later."""
    marked = simple_conversation("c2", "Surrogate", 10).as_json()
    marked["mapping"]["q"]["message"]["content"]["parts"] = ["before here after"]
    bad = export_bytes([marked]).replace(b"here", b"\\udc00")
    first = export_bytes([simple_conversation("c1", "First", 0).as_json()])

    refused = await upload(client, bad, expect=422)
    status = await finished(client, await upload(client, first[:-1] + b"," + bad[1:]))

    assert "unpaired surrogate" in refused["detail"]
    assert status["status"] == "failed"
    assert "unpaired surrogate" in status["error"]
    assert (status["done"], status["imported"]) == (0, 0)
    assert await imported_sessions(client) == {}


async def test_total_counts_every_item_of_the_array_not_only_the_objects(
    client: httpx.AsyncClient,
) -> None:
    """Items that are not objects are tried (and fail) as conversations: the counting pass
    left them out, and `done` ended above `total`."""
    export = [simple_conversation("c1", "Kept", 0).as_json(), [1, 2], "text", 7, None]

    status = await finished(client, await upload(client, json.dumps(export).encode()))

    assert (status["status"], status["total"], status["done"]) == ("done", 5, 5)
    assert status["imported"] == 1
    assert [f["reason"] for f in status["failed"]] == [
        "not a conversation (a JSON object was expected)"
    ] * 4


def with_headers_patched(archive: bytes, *, flag: int = 0, method: int | None = None) -> bytes:
    """The zip with `flag` set in its members' general purpose flags and, if given, their
    compression method replaced, in the local and the central headers (what another zip tool
    writes: zipfile writes neither encryption nor Deflate64)."""
    patched = bytearray(archive)
    for signature, flag_at, method_at in ((b"PK\x03\x04", 6, 8), (b"PK\x01\x02", 8, 10)):
        start = 0
        while (start := patched.find(signature, start)) != -1:
            flags = struct.unpack_from("<H", patched, start + flag_at)[0]
            struct.pack_into("<H", patched, start + flag_at, flags | flag)
            if method is not None:
                struct.pack_into("<H", patched, start + method_at, method)
            start += len(signature)
    return bytes(patched)


@pytest.mark.parametrize(
    ("patch", "detail"),
    [
        ({"flag": 0x1}, "is encrypted"),
        ({"method": 9}, "compressed with a method this service cannot unpack"),
        ({"method": 99}, "compressed with a method this service cannot unpack"),
    ],
    ids=["encrypted", "deflate64", "aes"],
)
async def test_a_zip_member_zipfile_cannot_open_is_a_422_not_a_500(
    client: httpx.AsyncClient, database: Database, patch: dict[str, int], detail: str
) -> None:
    """zipfile raises RuntimeError (encrypted) and NotImplementedError (Deflate64, which some
    zip tools write; AES) when opening such a member: a 500."""
    archive = with_headers_patched(export_zip(chatgpt_export()), **patch)

    refused = await upload(client, archive, "export.zip", expect=422)

    assert detail in refused["detail"]
    async with database.read() as conn:
        assert (await conn.execute(select(func.count()).select_from(chat_imports))).scalar() == 0


async def test_an_empty_conversation_is_never_updated_before_it_was_created(
    client: httpx.AsyncClient,
) -> None:
    """A conversation without a message to import takes its time of last activity from the
    file: an `update_time` before its `create_time` made a session updated before it was
    created."""
    empty = ChatGPTConversation("c1", "Empty", create_time=T0 + 100)
    empty.root()
    exported = {**empty.as_json(), "update_time": T0}

    status = await finished(client, await upload(client, export_bytes([exported])))

    assert status["imported"] == 1, status
    session = (await imported_sessions(client))["Empty"]
    assert (
        session["created_at"] == session["updated_at"] == at(100).isoformat().replace("+00:00", "Z")
    )
    assert (session["message_count"], session["last_message"]) == (0, "")


@pytest.mark.parametrize(
    "moment", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"], ids=["late", "early"]
)
async def test_a_date_that_is_out_of_range_in_utc_fails_its_conversation(
    client: httpx.AsyncClient, moment: str
) -> None:
    """A valid date whose UTC time falls outside years 1 to 9999: converting it raised
    OverflowError, which stopped the whole import on "an unexpected error"."""
    await send(client, "hello", session_id="original")
    exported = await export_of(client, "original")
    out_of_range = {**exported, "session_id": "out of range", "created_at": moment}
    message_out_of_range = {
        **exported,
        "session_id": "message out of range",
        "messages": [{**exported["messages"][0], "created_at": moment}, *exported["messages"][1:]],
    }
    fine = {**exported, "session_id": "fine"}

    status = await finished(
        client,
        await upload(client, json.dumps([out_of_range, message_out_of_range, fine]).encode()),
    )

    assert (status["status"], status["error"]) == ("done", None)
    assert (status["imported"], status["done"]) == (1, 3)
    assert [f["reason"] for f in status["failed"]] == [
        f"created_at: Value error, {moment} is out of range in UTC",
        f"messages.0.created_at: Value error, {moment} is out of range in UTC",
    ]


async def test_of_several_conversations_json_in_a_zip_the_top_one_is_read_and_none_unpacked(
    client: httpx.AsyncClient,
) -> None:
    """Names with `..` or a leading `/` are never paths (the member is read into a temporary
    file of its own, never extracted by name); the one nearest the top is the export (a
    probe that held)."""
    top = export_bytes([simple_conversation("c1", "Top", 0).as_json()])
    other = export_bytes([simple_conversation("c2", "Elsewhere", 0).as_json()])
    archive = zip_of(
        {
            "../../deeper/conversations.json": other,
            "/abs/path/conversations.json": other,
            "folder/conversations.json": other,
            "conversations.json": top,
        }
    )

    status = await finished(client, await upload(client, archive, "export.zip"))

    assert (status["status"], status["imported"]) == ("done", 1)
    assert set(await imported_sessions(client)) == {"Top"}


async def test_a_rating_imported_after_a_feedback_export_is_in_the_next_one_since_then(
    client: httpx.AsyncClient,
) -> None:
    """A client exports feedback with `since` = the time of its previous export. An imported
    rating keeps the time it was given (long before), and still is in the export after its
    import: `since` is on the time the service stored it (`stored_at`)."""
    await branched_session(client, "original")
    exported = await export_of(client, "original")
    given = datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)
    for message in exported["messages"]:
        if message["feedback"]:
            message["feedback"]["updated_at"] = given.isoformat()
    first_export_at = utc_now()
    first = await client.get("/api/v1/feedback", params={"limit": 500})
    assert first.status_code == 200, first.text
    assert len(first.json()["feedback"]) == 2

    status = await finished(client, await upload(client, json.dumps(exported).encode()))
    assert status["imported"] == 1

    since = await client.get(
        "/api/v1/feedback", params={"since": first_export_at.isoformat(), "limit": 500}
    )
    assert since.status_code == 200, since.text
    listed = since.json()["feedback"]
    assert {item["session_id"] for item in listed} - {"original"}, "imported ratings missing"
    [copy_id] = {item["session_id"] for item in listed}
    assert len(listed) == 2
    for item in listed:
        # The rating keeps the time it was given; the export's order is the time it was stored.
        assert parse_time(item["updated_at"]) == given
        assert parse_time(item["stored_at"]) >= first_export_at
    assert copy_id != "original"


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_a_users_message_is_stored_while_their_import_writes_a_conversation(
    backend: str, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An import writes each conversation in one transaction, and one user's search entries
    are written one transaction at a time (PostgreSQL, migration 0019: the numbering's lock
    lasts until the writer's commit). Written with each message, the conversation's entries
    held the user's message in another tab until the whole conversation was written; written
    last, only for their own inserts. Here the import stops after two of its messages until
    the user's message is stored."""
    if backend != "postgresql":
        pytest.skip("SQLite's write transactions take turns whoever writes")
    paused, go_on = asyncio.Event(), asyncio.Event()
    append = message_queries.append_message
    imported = 0

    async def appending_slowly(*args: Any, **kwargs: Any) -> Any:
        nonlocal imported
        if kwargs["session_id"] != "tab":
            imported += 1
            if imported == 3:
                paused.set()
                await go_on.wait()
        return await append(*args, **kwargs)

    monkeypatch.setattr(message_queries, "append_message", appending_slowly)
    started = await upload(
        client, export_bytes([full_conversation().as_json()]), user_id="importer"
    )
    await asyncio.wait_for(paused.wait(), 10)

    try:
        sent = await asyncio.wait_for(
            send(client, "Still here", session_id="tab", user_id="importer"), 10
        )
    finally:
        go_on.set()

    assert sent["session_id"] == "tab"
    assert (await finished(client, started))["imported"] == 1
