"""The dependency that counts a message against its sender's rate limit."""

from typing import Annotated

from fastapi import Depends, Request

from app.auth.access import Caller
from app.auth.dependencies import CallerDep
from app.messages.schemas import ChatRequest
from app.ratelimit.limiter import MessageRateLimiter


async def count_message(request: Request, caller: Caller) -> None:
    """Count a request for a reply against the caller's rate limit (when limits are on):
    RateLimited (429) once it is used up. Call it once the request is known to be valid."""
    limiter: MessageRateLimiter | None = request.app.state.message_rate_limiter
    if limiter is not None:
        client_address = request.client.host if request.client else "unknown"
        key = f"user:{caller.user_id}" if caller.user_id else f"address:{client_address}"
        await limiter.hit(key)


async def limit_message_rate(request: Request, caller: CallerDep, body: ChatRequest) -> ChatRequest:
    """The message to send, counted against the caller's rate limit (when limits are on).

    The body is read here, and the route takes it from here, so that FastAPI validates it
    before it is counted (a request refused with a 422 uses no room) and reports its errors
    once.
    """
    await count_message(request, caller)
    return body


RateLimitedChatRequest = Annotated[ChatRequest, Depends(limit_message_rate)]


async def limit_shared_reads(request: Request) -> None:
    """Count a read of a shared link against its client address's limit (when limits are
    on): the reads need no sign-in, so the address is all there is to count by."""
    limiter: MessageRateLimiter | None = request.app.state.shared_read_rate_limiter
    if limiter is not None:
        client_address = request.client.host if request.client else "unknown"
        await limiter.hit(f"address:{client_address}")
