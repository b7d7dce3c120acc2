"""Session endpoints: the sidebar's list (and search), open, rename, pin, archive, export and
delete sessions."""

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response, status
from fastapi.exceptions import RequestValidationError

from app.auth.dependencies import CallerDep
from app.deps import DatabaseDep
from app.kit.error_responses import AUTH_ERRORS, error_responses
from app.kit.openapi import OPEN_MODE_REQUIRED
from app.kit.schemas import NO_NUL_PATTERN, SessionIdPath, UserId
from app.sessions import export as export_service
from app.sessions import service
from app.sessions.cursor import InvalidCursor, SearchPosition, decode_cursor
from app.sessions.export import ExportFormat
from app.sessions.queries import NO_FOLDER, ListPosition
from app.sessions.schemas import (
    DeletedSessions,
    SessionDetail,
    SessionsListResponse,
    SessionSummary,
    SessionUpdate,
)
from app.tags.schemas import TAG_MAX_CHARS, TAGS_PER_FILTER, TagName

router = APIRouter(prefix="/api/v1/chat", tags=["chat"])


CursorQuery = Annotated[
    str | None,
    Query(
        max_length=512,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="`next_cursor` of the previous page: the sessions after it (cursor mode).",
    ),
]


def _invalid_cursor(cursor: str, reason: str) -> RequestValidationError:
    return RequestValidationError(
        [
            {
                "type": "value_error",
                "loc": ("query", "cursor"),
                "msg": f"Value error, invalid cursor: {reason}",
                "input": cursor,
            }
        ]
    )


_UUID = r"[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}"
FolderQuery = Annotated[
    str | None,
    Query(
        pattern=rf"^(none|{_UUID})$",
        description=(
            "Only the sessions in this folder (not in its subfolders); `none`: those in no folder."
        ),
    ),
]


def _folder_filter(folder_id: str | None) -> uuid.UUID | Literal["none"] | None:
    if folder_id is None:
        return None
    if folder_id == NO_FOLDER:
        return "none"
    return uuid.UUID(folder_id)


def _list_position(cursor: str | None) -> ListPosition | SearchPosition | None:
    """The cursor decoded; one this service did not issue is a validation error (422)."""
    if cursor is None:
        return None
    try:
        return decode_cursor(cursor)
    except InvalidCursor as exc:
        raise _invalid_cursor(cursor, str(exc)) from None


@router.get(
    "/sessions",
    summary="List chat sessions: pinned first, then most recent activity first",
    responses=error_responses(403, 500, *AUTH_ERRORS),
)
async def list_sessions(
    caller: CallerDep,
    db: DatabaseDep,
    page: Annotated[int, Query(ge=1, le=10_000_000, description="1-based page number.")] = 1,
    page_size: Annotated[int, Query(ge=1, le=100, description="Sessions per page.")] = 50,
    user_id: Annotated[
        UserId | None,
        Query(
            description=(
                "Only this user's sessions. With authentication on, only service callers may "
                "name another user; everyone else always gets their own sessions."
            )
        ),
    ] = None,
    limit: Annotated[
        int | None,
        Query(ge=1, le=100, description="Cursor mode: sessions per page (default 50)."),
    ] = None,
    cursor: CursorQuery = None,
    archived: Annotated[
        bool, Query(description="List archived sessions instead of the others.")
    ] = False,
    include_total: Annotated[
        bool,
        Query(description="Count all matching sessions (`total`); false skips the count."),
    ] = True,
    q: Annotated[
        str | None,
        Query(
            max_length=200,
            pattern=NO_NUL_PATTERN,
            description=(
                "Search: sessions whose title or messages contain every word of `q`, each as "
                "the start of a word (case-insensitive), best match first. Empty: no search."
            ),
        ),
    ] = None,
    folder_id: FolderQuery = None,
    tag: Annotated[
        list[TagName] | None,
        Query(
            max_length=TAGS_PER_FILTER,
            description=(
                f"Only the sessions that carry this tag (ignoring case; 1 to {TAG_MAX_CHARS} "
                f"characters). Repeat it (up to {TAGS_PER_FILTER} times) for the sessions that "
                "carry all of them."
            ),
        ),
    ] = None,
) -> SessionsListResponse:
    """Two ways to page. **Page mode** (`page`, `page_size`), as the seed: simple, but deep
    pages get slower, and while sessions move (a new message lifts one to the top) a scroll
    can show a session twice or skip one. **Cursor mode** (`limit`, then `cursor` =
    `next_cursor`): as fast at any depth, and a scroll never shows a session twice nor skips
    one that was not written to meanwhile (one that was moves to the top). The one exception:
    a session unpinned during the scroll moves down past the cursor and shows again.

    **Search** (`q`): the same pages and cursors over the matching sessions, ranked; each
    result's `snippet` shows the message that matched, on any branch: `match_message_id`
    names it, and `match_off_branch` says it is off the current branch (make its branch
    current with `PUT /sessions/{session_id}/branch` to show it). A search cursor works only
    with the same `q` and filters.

    **Folders and tags** (`folder_id`, `tag`) narrow the listing or the search, in both
    modes. A cursor of a listing filtered by folder or tag works only with the same filters
    (`folder_id`, `tag`, `archived`, `user_id`), and those of other listings not with it."""
    try:
        return await service.get_sessions_list(
            db,
            caller,
            user_id=user_id,
            archived=archived,
            page=page,
            page_size=page_size,
            cursor=_list_position(cursor),
            limit=limit,
            include_total=include_total,
            query=q,
            folder=_folder_filter(folder_id),
            tags=tag or (),
        )
    except InvalidCursor as exc:
        # Only a well-formed cursor gets here: one that belongs to another listing.
        raise _invalid_cursor(cursor or "", str(exc)) from None


@router.delete(
    "/sessions",
    summary="Delete all of a user's sessions",
    responses=error_responses(
        400,
        403,
        500,
        *AUTH_ERRORS,
        descriptions={400: "No user named: service callers and open mode must give user_id."},
    ),
    openapi_extra={OPEN_MODE_REQUIRED: ["user_id"]},
)
async def delete_all_sessions(
    caller: CallerDep,
    db: DatabaseDep,
    user_id: Annotated[
        UserId | None,
        Query(description="Whose sessions: required for service callers and in open mode."),
    ] = None,
) -> DeletedSessions:
    deleted = await service.delete_all_sessions(db, caller, user_id=user_id)
    return DeletedSessions(deleted=deleted)


@router.get(
    "/sessions/{session_id}",
    summary="Open a session: its summary and messages, oldest first",
    responses=error_responses(404, 500, *AUTH_ERRORS),
)
async def get_session(
    session_id: SessionIdPath,
    caller: CallerDep,
    db: DatabaseDep,
    limit: Annotated[
        int | None,
        Query(ge=1, le=500, description="Only the newest `limit` messages (before `before`)."),
    ] = None,
    before: Annotated[
        int | None,
        Query(
            ge=1,
            le=2_147_483_647,  # sequence numbers are 32-bit integers
            description="`messages_before` of the previous page: older messages.",
        ),
    ] = None,
) -> SessionDetail:
    """Without `limit`, every message. With it, the newest page first (oldest first inside
    it); `messages_before` then asks for the page before."""
    return await service.get_session(db, caller, session_id, before=before, limit=limit)


@router.patch(
    "/sessions/{session_id}",
    summary="Rename, pin, archive, file or tag a session",
    responses=error_responses(400, 404, 413, 500, *AUTH_ERRORS),
)
async def update_session(
    session_id: SessionIdPath, changes: SessionUpdate, caller: CallerDep, db: DatabaseDep
) -> SessionSummary:
    """A title set here is kept: the automatic title (the first message) never replaces it.
    `folder_id` must name a folder of the session's owner (404 otherwise, and nothing
    changes); `tags` replaces the session's tags."""
    return await service.update_session(db, caller, session_id, changes)


@router.get(
    "/sessions/{session_id}/export",
    summary="Download a session as JSON or Markdown",
    response_class=Response,
    responses={
        200: {
            "description": "The session as a file.",
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/SessionDetail"}},
                "text/markdown": {"schema": {"type": "string"}},
            },
        },
        **error_responses(404, 500, *AUTH_ERRORS),
    },
)
async def export_session(
    session_id: SessionIdPath,
    caller: CallerDep,
    db: DatabaseDep,
    export_format: Annotated[ExportFormat, Query(alias="format")] = "json",
) -> Response:
    exported = await export_service.export_session(
        db, caller, session_id, export_format=export_format
    )
    return Response(
        content=exported.content,
        media_type=exported.media_type,
        headers={"Content-Disposition": f'attachment; filename="{exported.filename}"'},
    )


@router.delete(
    "/sessions/{session_id}",
    summary="Delete a session and its messages",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(404, 500, *AUTH_ERRORS),
)
async def delete_session(session_id: SessionIdPath, caller: CallerDep, db: DatabaseDep) -> None:
    await service.delete_session(db, caller, session_id)
