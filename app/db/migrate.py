"""Apply Alembic migrations from code (start-up, tests) as `alembic upgrade` would."""

import asyncio

from alembic import command
from alembic.config import Config

from app.core.config import PROJECT_ROOT


def alembic_config(database_url: str) -> Config:
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    # Read by migrations/env.py; ConfigParser interpolation needs % doubled.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    # The application has configured logging already; alembic.ini's set-up is for the CLI.
    config.attributes["skip_logging_config"] = True
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


async def upgrade_async(database_url: str, revision: str = "head") -> None:
    """Alembic's async env runs its own event loop, so it must run off the current one."""
    await asyncio.to_thread(upgrade, database_url, revision)
