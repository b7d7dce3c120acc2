"""Revision 0020_unicode_names on both databases: tag and folder names that are canonically
equivalent (NFC and NFD), ignoring case, become one: colliding tags merge (a session that
carried both keeps one), colliding sibling folders merge with their sessions and subfolders
(and their subfolders that now collide, at every depth); names are stored in NFC, keys as the
service computes them; tags no session carries are deleted. Feedback gains `stored_at`: the
rating's `updated_at`, or the migration's time for ratings of imported sessions. Downgrade
drops `stored_at` and keys names the old way."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.kit.db.tables import (
    chat_feedback,
    chat_folders,
    chat_import_sources,
    chat_session_tags,
    chat_tags,
)
from app.kit.db.types import utc_now
from app.tags.schemas import name_key
from tests.db.helpers import (
    UNICODE_NAMES_REVISION,
    alembic_versions,
    app_database,
    assert_schema_matches_tables,
    column_names,
    down_revision_of,
    downgrade,
    index_names,
    insert_base_session,
    store_text,
    upgrade,
)

T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
NFC_CAFE = "Caf\u00e9"
NFD_CAFE = "CAFE\u0301"
# Case folding decomposes it (j and a combining caron); NFC composes it again.
J_CARON = "\u01f0"

SESSION_FOLDER = sa.table(
    "chat_sessions", sa.column("session_id", sa.Text()), sa.column("folder_id", sa.Uuid())
)
MESSAGES = sa.table(
    "chat_messages",
    sa.column("id", sa.Uuid()),
    sa.column("session_id", sa.Text()),
    sa.column("role", sa.Text()),
)
# chat_feedback as the revision before has it.
OLD_FEEDBACK = sa.table(
    "chat_feedback",
    *(sa.column(c.name, c.type) for c in chat_feedback.c if c.name != "stored_at"),
)


def previous_revision() -> str:
    return down_revision_of(UNICODE_NAMES_REVISION)


def tag_row(name: str, *, user: str = "alice", age: int = 0) -> dict[str, Any]:
    """A tag keyed as before the revision (case folding only); older with a lower `age`."""
    return {
        "id": uuid.uuid4(),
        "user_id": user,
        "name": name,
        "name_key": name.casefold(),
        "created_at": T0 + timedelta(seconds=age),
    }


def folder_row(
    name: str, parent: dict[str, Any] | None = None, *, user: str = "alice", age: int = 0
) -> dict[str, Any]:
    parent_id = None if parent is None else parent["id"]
    return {
        "id": uuid.uuid4(),
        "user_id": user,
        "parent_id": parent_id,
        "parent_key": parent_id.hex if parent_id else "",
        "name": name,
        "name_key": name.casefold(),
        "created_at": T0 + timedelta(seconds=age),
    }


async def tags_by_session(conn: AsyncConnection) -> dict[str, list[uuid.UUID]]:
    rows = await conn.execute(
        sa.select(chat_session_tags.c.session_id, chat_session_tags.c.tag_id).order_by(
            chat_session_tags.c.session_id, chat_session_tags.c.position
        )
    )
    found: dict[str, list[uuid.UUID]] = {}
    for session_id, tag_id in rows:
        found.setdefault(session_id, []).append(tag_id)
    return found


async def rows_of(conn: AsyncConnection, table: sa.Table) -> dict[uuid.UUID, dict[str, Any]]:
    return {row["id"]: dict(row) for row in (await conn.execute(sa.select(table))).mappings()}


async def folder_of_sessions(conn: AsyncConnection) -> dict[str, uuid.UUID | None]:
    rows = await conn.execute(sa.select(SESSION_FOLDER.c.session_id, SESSION_FOLDER.c.folder_id))
    return {row[0]: row[1] for row in rows}


def tree(folders: dict[uuid.UUID, dict[str, Any]], parent: uuid.UUID | None = None) -> list[Any]:
    """(id, name, subfolders) by key."""
    level = sorted(
        (f for f in folders.values() if f["parent_id"] == parent), key=lambda f: f["name_key"]
    )
    return [(f["id"], f["name"], tree(folders, f["id"])) for f in level]


async def test_colliding_names_merge_and_keys_follow_the_service(
    fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    await upgrade(fresh_url, previous_revision())
    cafe = tag_row(NFC_CAFE)
    cafe_nfd = tag_row(NFD_CAFE, age=1)
    plain = tag_row("cafe")
    ghost = tag_row("Ghost")
    jay = tag_row(J_CARON)
    bobs = tag_row("cafe\u0301", user="bob")
    # Folders: two top-level spellings of one name; under each a "work" (no clash before,
    # under different parents), and under those an "x" each: a collision at every depth.
    top = folder_row(NFC_CAFE)
    top_nfd = folder_row(NFD_CAFE, age=1)
    work = folder_row("Work", top)
    work_nfd = folder_row("WORK", top_nfd, age=1)
    other = folder_row("Other", top_nfd)
    x = folder_row("x", work)
    x_nfd = folder_row("X", work_nfd, age=1)
    y = folder_row("y", work_nfd)
    bobs_folder = folder_row("Cre\u0300me", user="bob")
    sessions = {"s1": top_nfd, "s2": work_nfd, "s3": x_nfd, "s4": top, "b": bobs_folder}
    async with app_database(fresh_url) as database, database.write() as conn:
        for session_id in ("s1", "s2", "s3", "s4", "s5"):
            await insert_base_session(conn, session_id, at=T0)
        await insert_base_session(conn, "b", at=T0, user_id="bob")
        await conn.execute(sa.insert(chat_tags), [cafe, cafe_nfd, plain, ghost, jay, bobs])
        links = {
            "s1": [cafe_nfd, cafe],
            "s2": [cafe_nfd],
            "s3": [cafe, plain],
            "s4": [jay],
            "b": [bobs],
        }
        await conn.execute(
            sa.insert(chat_session_tags),
            [
                {
                    "session_id": session_id,
                    "tag_id": tag["id"],
                    "position": position,
                    "user_id": tag["user_id"],
                }
                for session_id, tags in links.items()
                for position, tag in enumerate(tags)
            ],
        )
        await conn.execute(
            sa.insert(chat_folders),
            [top, top_nfd, work, work_nfd, other, x, x_nfd, y, bobs_folder],
        )
        for session_id, folder in sessions.items():
            await conn.execute(
                sa.update(SESSION_FOLDER)
                .where(SESSION_FOLDER.c.session_id == session_id)
                .values(folder_id=folder["id"])
            )

    await upgrade(fresh_url, UNICODE_NAMES_REVISION)

    async with fresh_engine.connect() as conn:
        assert await alembic_versions(conn) == [UNICODE_NAMES_REVISION]
        tags = await rows_of(conn, chat_tags)
        # The older spelling is kept, in NFC; the ghost is gone; `cafe` is another tag.
        assert {t["id"]: t["name"] for t in tags.values()} == {
            cafe["id"]: NFC_CAFE,
            plain["id"]: "cafe",
            jay["id"]: J_CARON,
            bobs["id"]: "caf\u00e9",
        }
        assert all(t["name_key"] == name_key(t["name"]) for t in tags.values())
        assert tags[jay["id"]]["name_key"] != J_CARON.casefold()
        # s1 carried both: once, at the kept tag's position.
        assert await tags_by_session(conn) == {
            "s1": [cafe["id"]],
            "s2": [cafe["id"]],
            "s3": [cafe["id"], plain["id"]],
            "s4": [jay["id"]],
            "b": [bobs["id"]],
        }
        folders = await rows_of(conn, chat_folders)
        assert all(f["name_key"] == name_key(f["name"]) for f in folders.values())
        assert all(
            f["parent_key"] == (f["parent_id"].hex if f["parent_id"] else "")
            for f in folders.values()
        )
        alices = {k: f for k, f in folders.items() if f["user_id"] == "alice"}
        assert tree(alices) == [
            (
                top["id"],
                NFC_CAFE,
                [
                    (other["id"], "Other", []),
                    (work["id"], "Work", [(x["id"], "x", []), (y["id"], "y", [])]),
                ],
            )
        ]
        assert folders[bobs_folder["id"]]["name"] == "Cr\u00e8me"
        assert await folder_of_sessions(conn) == {
            "s1": top["id"],
            "s2": work["id"],
            "s3": x["id"],
            "s4": top["id"],
            "s5": None,
            "b": bobs_folder["id"],
        }

    await upgrade(fresh_url)
    async with fresh_engine.connect() as conn:
        await assert_schema_matches_tables(conn)


async def rated_reply(database: Any, session_id: str) -> uuid.UUID:
    await store_text(database, session_id, "alice", f"question of {session_id}")
    async with database.read() as conn:
        [message_id] = (
            await conn.execute(sa.select(MESSAGES.c.id).where(MESSAGES.c.session_id == session_id))
        ).scalars()
    return uuid.UUID(str(message_id))


async def test_feedback_gets_stored_at_and_imported_ratings_the_migrations_time(
    fresh_url: str, fresh_engine: AsyncEngine
) -> None:
    await upgrade(fresh_url, previous_revision())
    given = datetime(2020, 1, 2, tzinfo=UTC)
    async with app_database(fresh_url) as database:
        rated = {name: await rated_reply(database, name) for name in ("here", "imported")}
        async with database.write() as conn:
            await conn.execute(
                sa.insert(chat_import_sources).values(
                    user_id="alice", source_id="export:x", session_id="imported"
                )
            )
            await conn.execute(
                sa.insert(OLD_FEEDBACK),
                [
                    {
                        "message_id": message_id,
                        "session_id": name,
                        "user_id": "alice",
                        "rating": "up",
                        "comment": None,
                        "created_at": given,
                        "updated_at": given,
                    }
                    for name, message_id in rated.items()
                ],
            )
    before = utc_now()

    await upgrade(fresh_url, UNICODE_NAMES_REVISION)

    async with fresh_engine.connect() as conn:
        assert "stored_at" in await column_names(conn, "chat_feedback")
        assert await index_names(conn, "chat_feedback") == {
            "idx_chat_feedback_stored",
            "idx_chat_feedback_session",
        }
        rows = await conn.execute(sa.select(chat_feedback.c.session_id, chat_feedback.c.stored_at))
        stored = {row[0]: row[1] for row in rows}
    assert stored["here"] == given
    assert before <= stored["imported"] <= utc_now()

    await downgrade(fresh_url, previous_revision())
    async with fresh_engine.connect() as conn:
        assert "stored_at" not in await column_names(conn, "chat_feedback")
        assert await index_names(conn, "chat_feedback") == {
            "idx_chat_feedback_updated",
            "idx_chat_feedback_session",
        }
        assert (
            await conn.execute(sa.select(sa.func.count()).select_from(OLD_FEEDBACK))
        ).scalar() == 2
    await upgrade(fresh_url)
    async with fresh_engine.connect() as conn:
        await assert_schema_matches_tables(conn)


async def test_downgrade_keys_names_the_old_way(fresh_url: str, fresh_engine: AsyncEngine) -> None:
    await upgrade(fresh_url)
    jay = tag_row(J_CARON)
    jay["name_key"] = name_key(J_CARON)
    folder = folder_row(J_CARON)
    folder["name_key"] = name_key(J_CARON)
    async with app_database(fresh_url) as database, database.write() as conn:
        await insert_base_session(conn, "s", at=T0)
        await conn.execute(sa.insert(chat_tags).values(jay))
        await conn.execute(
            sa.insert(chat_session_tags).values(
                session_id="s", tag_id=jay["id"], position=0, user_id="alice"
            )
        )
        await conn.execute(sa.insert(chat_folders).values(folder))

    await downgrade(fresh_url, previous_revision())

    async with fresh_engine.connect() as conn:
        keys = await conn.execute(sa.select(chat_tags.c.name, chat_tags.c.name_key))
        assert [tuple(row) for row in keys] == [(J_CARON, J_CARON.casefold())]
        keys = await conn.execute(sa.select(chat_folders.c.name, chat_folders.c.name_key))
        assert [tuple(row) for row in keys] == [(J_CARON, J_CARON.casefold())]
