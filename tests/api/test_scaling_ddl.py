"""The DDL of docs/scaling.md for the Citus day is the real schema's: its first block runs on a
PostgreSQL database at the head revision with data written through every write path, and
afterwards every primary key, unique key and foreign key of a user's table contains
`user_id` (what Citus requires of a distributed table) and no owner is null."""

import re

import asyncpg
import pytest

from app.config import PROJECT_ROOT
from app.main import create_app
from tests.api.test_user_id_everywhere import NO_USER_ID, write_everything
from tests.conftest import DatabaseFactory, make_settings, serve

SCALING = PROJECT_ROOT / "docs" / "scaling.md"


def schema_ddl() -> str:
    """The first SQL block of docs/scaling.md: the schema changes before Citus."""
    blocks = re.findall(r"```sql\n(.*?)```", SCALING.read_text(), flags=re.DOTALL)
    assert blocks, "docs/scaling.md has no SQL block"
    return str(blocks[0])


async def test_the_citus_ddl_runs_on_the_real_schema(
    backend: str, database_factory: DatabaseFactory
) -> None:
    if backend != "postgresql":
        pytest.skip("PostgreSQL's DDL")
    url = await database_factory.create_migrated(backend)
    settings = make_settings(url)
    async with serve(create_app(settings)) as server:
        for user_id in ("alice", "bob", None):
            await write_everything(server.client, user_id)
        await server.app.state.reply_tasks.wait_idle()

    connection = await asyncpg.connect(url)
    try:
        await connection.execute(schema_ddl())
        keys = await connection.fetch(
            """
            SELECT c.conrelid::regclass::text AS tbl, c.conname, c.contype,
                   bool_or(a.attname = 'user_id') AS has_user_id
            FROM pg_constraint c
            JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
            WHERE c.contype IN ('p', 'u', 'f') AND c.connamespace = 'public'::regnamespace
            GROUP BY 1, 2, 3
            """
        )
        nullable = await connection.fetch(
            "SELECT table_name FROM information_schema.columns"
            " WHERE column_name = 'user_id' AND is_nullable = 'YES'"
        )
        nulls = await connection.fetchval("SELECT count(*) FROM chat_sessions WHERE user_id = ''")
    finally:
        await connection.close()
    without = {
        (row["tbl"], row["conname"])
        for row in keys
        if not row["has_user_id"]
        and row["tbl"] not in {*NO_USER_ID, "alembic_version"}
        # The lookup table of public links: a reference table, keyed by the link alone.
        and row["tbl"] != "chat_share_links"
    }
    assert without == set()
    assert [row["table_name"] for row in nullable] == []
    # The session without a user is `""`'s now.
    assert nulls == 1
