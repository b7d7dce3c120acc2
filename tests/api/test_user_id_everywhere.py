"""Every table carries its rows' owner (migration 0013, docs/scaling.md): declared NOT NULL,
and written by every write path as the session's owner, on both databases."""

import uuid

import httpx
import sqlalchemy as sa

from app.kit.db.engine import Database
from app.kit.db.tables import NO_OWNER, metadata
from app.kit.db.types import utc_now
from app.replies.queries import start_reply
from tests.api.helpers import CHAT, assert_stream_succeeded, send, send_stream, session_url

# Tables allowed to differ from "a NOT NULL user_id", and why. Anything else is held to it.
NO_USER_ID = {
    # One row per server process (the reply liveness sweep): nobody's data.
    "chat_processes",
}
# NULL for sessions without a user (open mode), where the tables of migration 0012 and 0013
# store NO_OWNER: making these NOT NULL too is left for the Citus step (docs/scaling.md).
# chat_imports likewise: its user_id is the session owner's to be (NULL without one); its
# owner_key column stands in for NO_OWNER in the one-running-import index.
NULLABLE_USER_ID = {"chat_sessions", "chat_search", "chat_shares", "chat_feedback", "chat_imports"}


def test_every_table_carries_user_id() -> None:
    for table in metadata.tables.values():
        if table.name in NO_USER_ID:
            assert "user_id" not in table.c, table.name
            continue
        assert "user_id" in table.c, table.name
        assert table.c.user_id.nullable == (table.name in NULLABLE_USER_ID), table.name


# Each table's rows whose user_id is not their session's owner (NO_OWNER for a session
# without one), and how many rows it has: a row's session through its own `session_id`, or
# its message's, share's.
_OWNER = "coalesce(s.user_id, '')"
_MISMATCHES = {
    table: (
        f"SELECT count(*), sum(CASE WHEN coalesce(t.user_id, '') = {_OWNER} THEN 0 ELSE 1 END)"
        f" FROM {table} t {join}"
    )
    for table, join in {
        "chat_messages": "JOIN chat_sessions s ON s.session_id = t.session_id",
        "chat_search": "JOIN chat_sessions s ON s.session_id = t.session_id",
        "chat_feedback": "JOIN chat_sessions s ON s.session_id = t.session_id",
        "chat_shares": "JOIN chat_sessions s ON s.session_id = t.session_id",
        "chat_session_tags": "JOIN chat_sessions s ON s.session_id = t.session_id",
        "chat_idempotency_keys": "JOIN chat_sessions s ON s.session_id = t.session_id",
        "chat_share_messages": "JOIN chat_shares h ON h.share_id = t.share_id"
        " JOIN chat_sessions s ON s.session_id = h.session_id",
        "chat_replies_generating": "JOIN chat_messages m ON m.id = t.message_id"
        " JOIN chat_sessions s ON s.session_id = m.session_id",
    }.items()
}


async def owner_mismatches(database: Database) -> dict[str, tuple[int, int]]:
    """Per table: (rows, rows whose user_id is not their session's owner)."""
    found = {}
    async with database.read() as conn:
        for table, query in _MISMATCHES.items():
            rows, wrong = (await conn.execute(sa.text(query))).one()
            found[table] = (int(rows), int(wrong or 0))
    return found


async def write_everything(client: httpx.AsyncClient, user_id: str | None) -> str:
    """A session written through every write path there is, for `user_id` (None: nobody)."""
    owner = {} if user_id is None else {"user_id": user_id}
    first = await send(client, "Hello there", user_id=user_id)
    session_id = first["session_id"]
    assert_stream_succeeded(
        await send_stream(client, {"message": "And then?", "session_id": session_id, **owner})
    )
    # With an Idempotency-Key: a key's owner is the session's, whoever sends it.
    regenerated = await client.post(
        f"{session_url(session_id)}/messages/{first['message_id']}/regenerate",
        params={"stream": "false"},
        headers={"Idempotency-Key": f"regenerate-{session_id}"},
    )
    assert regenerated.status_code == 200, regenerated.text
    edited = await client.post(
        CHAT,
        json={
            "message": "Hello again",
            "session_id": session_id,
            "edit_of": first["user_message_id"],
            **owner,
        },
        headers={"Idempotency-Key": "edit"},
    )
    assert edited.status_code == 200, edited.text
    switched = await client.put(
        f"{session_url(session_id)}/branch", json={"message_id": first["message_id"]}
    )
    assert switched.status_code == 200, switched.text
    rated = await client.put(
        f"{session_url(session_id)}/messages/{first['message_id']}/feedback",
        json={"rating": "up"},
    )
    assert rated.status_code == 200, rated.text
    shared = await client.post(f"{session_url(session_id)}/shares", json={})
    assert shared.status_code == 201, shared.text
    folder = await client.post("/api/v1/chat/folders", json={"name": "Work"}, params=owner)
    assert folder.status_code == 201, folder.text
    filed = await client.patch(
        session_url(session_id),
        json={"tags": ["Planning"], "folder_id": folder.json()["folder_id"], "title": "Renamed"},
    )
    assert filed.status_code == 200, filed.text
    return str(session_id)


async def test_every_write_path_copies_the_sessions_owner(
    client: httpx.AsyncClient, database: Database
) -> None:
    await write_everything(client, "alice")
    await write_everything(client, "bob")
    # A session without a user (open mode): its rows' owner is NO_OWNER.
    nobodys = await write_everything(client, None)
    # A reply in progress: stored and registered by the start of a generation.
    async with database.write() as conn:
        last = await conn.execute(
            sa.text("SELECT current_leaf_id FROM chat_sessions WHERE session_id = :s"),
            {"s": nobodys},
        )
        started = await start_reply(
            conn,
            session_id=nobodys,
            question_id=uuid.UUID(str(last.scalar_one())),
            process_id=uuid.uuid4(),
            metadata={},
            now=utc_now(),
        )
    assert started is not None
    assert started.owner == NO_OWNER

    found = await owner_mismatches(database)
    assert {table: wrong for table, (_rows, wrong) in found.items()} == dict.fromkeys(found, 0)
    # Each table had rows to check.
    assert all(rows > 0 for rows, _wrong in found.values()), found
    async with database.read() as conn:
        owners = await conn.execute(sa.text("SELECT DISTINCT user_id FROM chat_messages"))
        assert set(owners.scalars()) == {"alice", "bob", NO_OWNER}
