"""The FastAPI application: wiring of settings, database, assistant, security and routes."""

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app.assistants import build_assistant
from app.auth.tokens import TokenVerifier
from app.config import Settings, get_settings
from app.feedback import endpoints as feedback
from app.folders import endpoints as folders
from app.health import endpoints as health
from app.imports import endpoints as imports
from app.imports.service import ImportTasks
from app.kit.db import migrate
from app.kit.db.engine import Database, open_database
from app.kit.errors import SharedReadsLimited, install_error_handlers
from app.kit.http.body_limit import BodySizeLimitMiddleware
from app.kit.http.header_limit import HeaderSizeLimitMiddleware
from app.kit.http.host_check import HostCheckMiddleware, host_policy
from app.kit.http.request_context import RequestContextMiddleware
from app.kit.openapi import describe_mode
from app.messages import endpoints as messages
from app.ratelimit.limiter import MessageRateLimiter
from app.replies import endpoints as replies
from app.replies.bus import Bus, PostgresBus, RedisBus
from app.replies.generation import ReplyTasks
from app.replies.liveness import ProcessLiveness
from app.replies.relay import ReplyRelay
from app.sessions import endpoints as sessions
from app.shares import endpoints as shares
from app.tags import endpoints as tags
from app.titles import endpoints as titles
from app.titles.service import TitleTasks
from app.titles.writer import TitleWriter
from app.web import docs
from app.web import routes as web

logger = logging.getLogger(__name__)

# In open mode with no origins configured, a frontend dev server on this machine may call in.
_LOCAL_ORIGINS = r"https?://(localhost|127\.0\.0\.1|\[::1\])(:\d+)?"


class UnsafeConfiguration(RuntimeError):
    """The settings would expose unauthenticated data to the network."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    check_exposure(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not settings.auth_enabled:
            logger.warning(
                "OPEN MODE: no AUTH_JWT_SECRET or AUTH_JWKS_URL is set, so requests are not "
                "authenticated and any caller can read and delete every session. "
                "Serve on a loopback address only, or configure authentication."
            )
        warn_about_unused_model_settings(settings)
        if settings.migrate_on_startup:
            logger.info("applying pending database migrations")
            await migrate.upgrade_async(settings.database_url)
        database = open_database(settings)
        # First: a prompt file that cannot be read stops the start-up before anything runs.
        title_tasks = TitleTasks(TitleWriter.from_settings(settings))
        reply_tasks = ReplyTasks(save_interval_seconds=settings.reply_save_interval_ms / 1000)
        relay = build_relay(settings, database, reply_tasks)
        await relay.start()
        liveness = ProcessLiveness(
            database,
            reply_tasks.process_id,
            heartbeat_seconds=settings.process_heartbeat_seconds,
            stale_seconds=settings.process_stale_seconds,
            on_stop_requested=relay.stop_requested,
            on_ended=relay.announce_ended,
            idempotency_key_ttl=timedelta(hours=settings.idempotency_key_ttl_hours),
            replies=reply_tasks,
        )
        liveness.start()
        app.state.liveness = liveness
        import_tasks = ImportTasks(reply_tasks.process_id)
        app.state.import_tasks = import_tasks
        app.state.settings = settings
        app.state.database = database
        app.state.assistant = assistant = await build_assistant(settings)
        app.state.reply_tasks = reply_tasks
        app.state.title_tasks = title_tasks
        app.state.reply_relay = relay
        app.state.token_verifier = TokenVerifier(settings) if settings.auth_enabled else None
        rate_limiter = (
            MessageRateLimiter(
                settings.rate_limit_messages,
                settings.redis_url,
                redis_retry_seconds=settings.rate_limit_redis_retry_seconds,
            )
            if settings.rate_limit_active
            else None
        )
        app.state.message_rate_limiter = rate_limiter
        shared_read_limiter = (
            MessageRateLimiter(
                settings.shared_rate_limit,
                settings.redis_url,
                redis_retry_seconds=settings.rate_limit_redis_retry_seconds,
                namespace="shared-reads",
                refusal=SharedReadsLimited,
            )
            if settings.rate_limit_active and settings.sharing_enabled
            else None
        )
        app.state.shared_read_rate_limiter = shared_read_limiter
        try:
            yield
        finally:
            # Titles are not worth waiting for: those still being asked for are cancelled.
            await title_tasks.shutdown()
            await reply_tasks.shutdown(_remaining_grace(app, settings.shutdown_grace_seconds))
            # An import is not waited for: it is marked failed, and a new upload of the file
            # skips what it imported.
            await import_tasks.shutdown(database)
            await liveness.stop()
            await relay.close()
            await database.dispose()
            # The HTTP clients of the models, once no reply or title uses them.
            await assistant.aclose()
            if title_tasks.writer is not None:
                await title_tasks.writer.aclose()
            for limiter in (rate_limiter, shared_read_limiter):
                if limiter is not None:
                    await limiter.aclose()

    app = FastAPI(
        title="Chat backend",
        version="0.1.0",
        summary="Assistant chat with persisted sessions and a paginated chat-history sidebar.",
        lifespan=lifespan,
        # Served by app.web.docs, from local files.
        docs_url=None,
        redoc_url=None,
    )
    # Added first, so they run inside CORS: their 413s and 431s are readable from allowed
    # origins.
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.max_request_body_bytes,
        # The multipart envelope around the file: its headers and boundaries.
        path_limits={imports.IMPORT_PATH: settings.import_max_bytes + 64 * 1024},
    )
    app.add_middleware(HeaderSizeLimitMiddleware, max_bytes=settings.max_request_header_bytes)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_allow_origins,
        allow_origin_regex=(
            _LOCAL_ORIGINS
            if not settings.auth_enabled and not settings.cors_allow_origins
            else None
        ),
        allow_methods=["GET", "POST", "PUT", "DELETE", "PATCH"],
        allow_headers=[
            "Authorization",
            "Content-Type",
            "Idempotency-Key",
            "Last-Event-ID",
            "X-Request-ID",
        ],
        expose_headers=["Retry-After", "X-Request-ID"],
        max_age=600,
    )
    if (policy := host_policy(settings)) is not None:
        app.add_middleware(HostCheckMiddleware, policy=policy)
    # Outermost, so that every response carries the request id and nothing escapes its
    # handling of unexpected errors.
    app.add_middleware(RequestContextMiddleware, access_log=settings.log_format == "json")
    install_error_handlers(app)
    app.include_router(health.router)
    if settings.metrics_enabled:
        app.include_router(health.metrics_router)
    # In this order, which is the OpenAPI document's.
    app.include_router(messages.router)
    app.include_router(sessions.router)
    app.include_router(folders.router)
    app.include_router(tags.router)
    app.include_router(imports.router)
    app.include_router(replies.router)
    # Sharing off: the routes are not there at all (404 as any unknown path, and absent
    # from the OpenAPI document).
    if settings.sharing_enabled:
        app.include_router(shares.router)
        app.include_router(shares.public_router)
    app.include_router(feedback.router)
    app.include_router(titles.router)
    docs.install(app)
    if settings.web_ui_enabled:
        web.install(app, sharing=settings.sharing_enabled)
    describe_mode(app, open_mode=not settings.auth_enabled)
    return app


def build_relay(settings: Settings, database: Database, tasks: ReplyTasks) -> ReplyRelay:
    """Replies across processes, over Redis pub/sub (REPLY_BUS=redis, or auto with REDIS_URL)
    or PostgreSQL's LISTEN/NOTIFY (postgres, or auto on PostgreSQL); with no bus (SQLite, or
    off), through the database alone."""
    choice = settings.reply_bus
    if choice == "auto":
        postgres = settings.database_url.startswith("postgresql")
        choice = "redis" if settings.redis_url else "postgres" if postgres else "off"
    bus: Bus | None = None
    if choice == "redis" and settings.redis_url:
        bus = RedisBus(settings.redis_url)
    elif choice == "postgres":
        bus = PostgresBus(settings.database_url)
    return ReplyRelay(
        database,
        tasks,
        bus,
        # With a bus, the stored reply is read when nothing came for a heartbeat's time;
        # without, it is how a reply of another process is followed: at its saving pace.
        poll_seconds=(
            settings.process_heartbeat_seconds
            if bus is not None
            else max(settings.reply_save_interval_ms / 1000, 0.05)
        ),
        stop_wait_seconds=settings.reply_stop_wait_seconds,
    )


def _remaining_grace(app: FastAPI, grace_seconds: float) -> float:
    """What is left of the grace period that began with the server's shutdown (see
    `app/__main__.py`); the whole of it under servers that do not say when that was."""
    deadline: float | None = getattr(app.state, "shutdown_deadline", None)
    if deadline is None:
        return grace_seconds
    return max(0.0, deadline - time.monotonic())


def warn_about_unused_model_settings(settings: Settings) -> None:
    """A model provider configured while the assistant is still an offline one: the likely
    intent is to talk to the model, which needs ASSISTANT_PROVIDER=openai too."""
    if settings.assistant_provider == "openai":
        return
    given = [
        name
        for name, value in (
            ("OPENAI_API_KEY", settings.openai_api_key),
            ("OPENAI_BASE_URL", settings.openai_base_url),
        )
        if value
    ]
    if given:
        logger.warning(
            "%s is set, but ASSISTANT_PROVIDER=%s answers offline and ignores it: set "
            "ASSISTANT_PROVIDER=openai to have the model answer",
            " and ".join(given),
            settings.assistant_provider,
        )


def check_exposure(settings: Settings) -> None:
    """Refuse to serve open mode beyond this machine unless explicitly allowed."""
    if settings.auth_enabled or settings.binds_loopback_only:
        return
    if settings.open_mode_allow_network:
        logger.warning("OPEN MODE on %s: allowed by OPEN_MODE_ALLOW_NETWORK", settings.host)
        return
    raise UnsafeConfiguration(
        f"refusing to serve without authentication on HOST={settings.host}: set "
        "AUTH_JWT_SECRET or AUTH_JWKS_URL, serve on 127.0.0.1, or set "
        "OPEN_MODE_ALLOW_NETWORK=true if the network in front of it is trusted"
    )
