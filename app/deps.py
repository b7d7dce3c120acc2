"""Request dependencies: the caller's identity, and the shared objects on `app.state`."""

import logging
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.assistants import Assistant
from app.auth.access import Caller
from app.auth.tokens import InvalidToken, SigningKeysUnavailable, TokenVerifier
from app.config import Settings
from app.kit.db.engine import Database
from app.kit.errors import AuthUnavailable, NotAuthenticated
from app.models.chat import ChatRequest
from app.ratelimit.limiter import MessageRateLimiter
from app.replies.streaming import ReplyTasks

logger = logging.getLogger(__name__)

_bearer = HTTPBearer(
    auto_error=False,
    description="A Supabase access token (JWT). Required unless the service runs in open mode.",
)


# These are `async` although they do not await: FastAPI runs a plain `def` dependency in a
# worker thread, a thread hop per dependency per request for reading an attribute.


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


async def get_assistant(request: Request) -> Assistant:
    assistant: Assistant = request.app.state.assistant
    return assistant


async def get_reply_tasks(request: Request) -> ReplyTasks:
    tasks: ReplyTasks = request.app.state.reply_tasks
    return tasks


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]
AssistantDep = Annotated[Assistant, Depends(get_assistant)]
ReplyTasksDep = Annotated[ReplyTasks, Depends(get_reply_tasks)]


async def get_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """The verified caller; in open mode (no verification key configured) anyone."""
    verifier: TokenVerifier | None = request.app.state.token_verifier
    if verifier is None:
        return Caller.open_mode()
    if credentials is None:
        raise NotAuthenticated()
    try:
        token = await verifier.verify(credentials.credentials)
    except InvalidToken as exc:
        logger.info("rejected bearer token: %s", exc)
        raise NotAuthenticated() from None
    except SigningKeysUnavailable as exc:
        logger.error("cannot fetch the JWKS to verify a token: %s", exc)
        raise AuthUnavailable() from None
    if token.is_service:
        return Caller.service(token.subject)
    return Caller.user(token.subject)


CallerDep = Annotated[Caller, Depends(get_caller)]


async def limit_message_rate(request: Request, caller: CallerDep, body: ChatRequest) -> ChatRequest:
    """The message to send, counted against the caller's rate limit (when limits are on).

    The body is read here, and the route takes it from here, so that FastAPI validates it
    before it is counted (a request refused with a 422 uses no room) and reports its errors
    once.
    """
    limiter: MessageRateLimiter | None = request.app.state.message_rate_limiter
    if limiter is not None:
        client_address = request.client.host if request.client else "unknown"
        key = f"user:{caller.user_id}" if caller.user_id else f"address:{client_address}"
        await limiter.hit(key)
    return body


RateLimitedChatRequest = Annotated[ChatRequest, Depends(limit_message_rate)]
