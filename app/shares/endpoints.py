"""Share-link endpoints: create a link to a snapshot of a session, list and revoke the
caller's links, and read a link without signing in."""

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response, status

from app.auth.dependencies import CallerDep
from app.deps import DatabaseDep, SettingsDep
from app.kit.error_responses import AUTH_ERRORS, error_responses
from app.kit.schemas import SESSION_ID_PATTERN, SessionIdPath, UserId
from app.ratelimit.dependencies import limit_shared_reads
from app.shares import service
from app.shares.schemas import (
    SHARE_ID_PATTERN,
    ShareCreate,
    ShareCreated,
    SharedConversation,
    SharesList,
)

router = APIRouter(prefix="/api/v1/chat", tags=["shares"])
public_router = APIRouter(prefix="/api/v1/shared", tags=["shares"])

ShareIdPath = Annotated[str, Path(pattern=SHARE_ID_PATTERN, description="The link's id.")]

_NO_SHARE = "No such link, or it was revoked or has expired."


@router.post(
    "/sessions/{session_id}/shares",
    summary="Share a read-only link to a snapshot of the session",
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(400, 404, 413, 500, *AUTH_ERRORS),
)
async def create_share(
    session_id: SessionIdPath,
    caller: CallerDep,
    db: DatabaseDep,
    settings: SettingsDep,
    body: ShareCreate | None = None,
) -> ShareCreated:
    """The link shows the session's title and its current branch as they are now: messages
    sent later, other branches, and the session's and messages' ids are not in it. Only
    finished messages with text are copied (a reply being written or failed without text is
    left out). Anyone with the link can read it, without signing in, until it expires, is
    revoked, or the session is deleted."""
    return await service.create_share(
        db,
        caller,
        session_id,
        expires_in_days=body.expires_in_days if body is not None else None,
        base_url=settings.public_base_url,
    )


@router.get(
    "/shares",
    summary="List the caller's share links, newest first",
    responses=error_responses(403, 500, *AUTH_ERRORS),
)
async def list_shares(
    caller: CallerDep,
    db: DatabaseDep,
    settings: SettingsDep,
    user_id: Annotated[
        UserId | None,
        Query(
            description=(
                "Only this user's links. With authentication on, only service callers may "
                "name another user; everyone else always gets their own links."
            )
        ),
    ] = None,
    session_id: Annotated[
        str | None,
        Query(pattern=SESSION_ID_PATTERN, description="Only the links of this session."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="At most this many links.")] = 100,
) -> SharesList:
    """Expired links are not listed (nor can they be read or revoked)."""
    return await service.list_shares(
        db,
        caller,
        user_id=user_id,
        session_id=session_id,
        limit=limit,
        base_url=settings.public_base_url,
    )


@router.delete(
    "/shares/{share_id}",
    summary="Revoke a share link",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(
        404,
        500,
        *AUTH_ERRORS,
        descriptions={404: "No such link of the caller's, or it has expired."},
    ),
)
async def revoke_share(share_id: ShareIdPath, caller: CallerDep, db: DatabaseDep) -> None:
    """The link answers 404 from now on, as one that never existed."""
    await service.revoke_share(db, caller, share_id)


@public_router.get(
    "/{share_id}",
    summary="Read a shared conversation (no sign-in)",
    dependencies=[Depends(limit_shared_reads)],
    responses=error_responses(
        404,
        429,
        500,
        descriptions={
            404: _NO_SHARE,
            429: "Too many reads from this address (SHARED_RATE_LIMIT); the `Retry-After` "
            "header says how many seconds to wait.",
        },
    ),
)
async def read_shared(
    share_id: ShareIdPath, db: DatabaseDep, response: Response
) -> SharedConversation:
    """Needs no token, also when authentication is on. Revoked, expired and unknown links
    answer the same 404."""
    response.headers["X-Robots-Tag"] = "noindex"
    response.headers["Cache-Control"] = "no-store"
    return await service.read_shared(db, share_id)
