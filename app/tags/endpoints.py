"""Tag endpoints: list the caller's tags, rename and delete one. A session's tags are set by
`PATCH /api/v1/chat/sessions/{session_id}`."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from app.auth.dependencies import CallerDep
from app.deps import DatabaseDep
from app.kit.error_responses import AUTH_ERRORS, error_responses
from app.kit.schemas import UserId
from app.tags import service
from app.tags.schemas import TagRename, TagsList, TagSummary

router = APIRouter(prefix="/api/v1/chat", tags=["tags"])

TagIdPath = Annotated[uuid.UUID, Path(description="The tag's id (`tag_id` in the list).")]
_NO_TAG = {
    404: "No such tag of the caller's: none by that id, or one no session carries any more "
    "(not listed either)."
}


@router.get(
    "/tags",
    summary="List the caller's tags, with how many sessions carry each",
    responses=error_responses(403, 500, *AUTH_ERRORS),
)
async def list_tags(
    caller: CallerDep,
    db: DatabaseDep,
    user_id: Annotated[
        UserId | None,
        Query(
            description=(
                "Only this user's tags. With authentication on, only service callers may "
                "name another user; everyone else always gets their own tags."
            )
        ),
    ] = None,
) -> TagsList:
    """By name, ignoring case. A tag that no session carries any more is not listed."""
    return await service.list_tags(db, caller, user_id=user_id)


@router.patch(
    "/tags/{tag_id}",
    summary="Rename a tag on every session",
    responses=error_responses(400, 404, 413, 500, *AUTH_ERRORS, descriptions=_NO_TAG),
)
async def rename_tag(
    tag_id: TagIdPath, body: TagRename, caller: CallerDep, db: DatabaseDep
) -> TagSummary:
    """A name that another of the user's tags has (ignoring case) merges the two: every
    session that carried either carries that tag, spelled as given here, and the answer has
    its id."""
    return await service.rename_tag(db, caller, tag_id, body.name)


@router.delete(
    "/tags/{tag_id}",
    summary="Remove a tag from every session",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(404, 500, *AUTH_ERRORS, descriptions=_NO_TAG),
)
async def delete_tag(tag_id: TagIdPath, caller: CallerDep, db: DatabaseDep) -> None:
    await service.delete_tag(db, caller, tag_id)
