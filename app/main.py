"""The FastAPI application: wiring of settings, database, assistant and routes."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.api import health
from app.api.v1 import chat
from app.core.config import Settings, get_settings
from app.core.errors import install_error_handlers
from app.db import migrate
from app.db.engine import Database, create_engine
from app.services.assistant import build_assistant
from app.services.streaming import ReplyTasks

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.migrate_on_startup:
            logger.info("applying pending database migrations")
            await migrate.upgrade_async(settings.database_url)
        database = Database(create_engine(settings))
        reply_tasks = ReplyTasks()
        app.state.settings = settings
        app.state.database = database
        app.state.assistant = build_assistant(settings)
        app.state.reply_tasks = reply_tasks
        try:
            yield
        finally:
            await reply_tasks.shutdown(settings.shutdown_grace_seconds)
            await database.dispose()

    app = FastAPI(
        title="Chat backend",
        version="0.1.0",
        summary="Assistant chat with persisted sessions and a paginated chat-history sidebar.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(chat.router)
    return app
