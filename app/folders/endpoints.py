"""Folder endpoints: the caller's folders as a tree, create, rename or move, and delete one.
A session is put into a folder by `PATCH /api/v1/chat/sessions/{session_id}`."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from app.auth.dependencies import CallerDep
from app.deps import DatabaseDep
from app.folders import service
from app.folders.schemas import MAX_FOLDER_DEPTH, Folder, FolderCreate, FoldersList, FolderUpdate
from app.kit.error_responses import AUTH_ERRORS, error_responses
from app.kit.schemas import UserId

router = APIRouter(prefix="/api/v1/chat", tags=["folders"])

FolderIdPath = Annotated[uuid.UUID, Path(description="The folder's id.")]
_NOT_FOUND = "No such folder of the caller's (or, for `parent_id`, no such parent)."
_CONFLICT = (
    "A folder of that name is already among the siblings (ignoring case), the folder would go "
    f"into itself or one of its subfolders, or deeper than {MAX_FOLDER_DEPTH} levels."
)


@router.post(
    "/folders",
    summary="Create a folder",
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(
        400, 403, 404, 409, 413, 500, *AUTH_ERRORS, descriptions={404: _NOT_FOUND, 409: _CONFLICT}
    ),
)
async def create_folder(
    body: FolderCreate,
    caller: CallerDep,
    db: DatabaseDep,
    user_id: Annotated[
        UserId | None,
        Query(description="Whose folder: service callers may name a user (default: nobody's)."),
    ] = None,
) -> Folder:
    return await service.create_folder(db, caller, body, user_id=user_id)


@router.get(
    "/folders",
    summary="List the caller's folders as a tree",
    responses=error_responses(403, 500, *AUTH_ERRORS),
)
async def list_folders(
    caller: CallerDep,
    db: DatabaseDep,
    user_id: Annotated[
        UserId | None,
        Query(
            description=(
                "Only this user's folders. With authentication on, only service callers may "
                "name another user; everyone else always gets their own folders."
            )
        ),
    ] = None,
) -> FoldersList:
    """Top-level folders, each with its subfolders in `children`, siblings by name."""
    return await service.list_folders(db, caller, user_id=user_id)


@router.patch(
    "/folders/{folder_id}",
    summary="Rename a folder, or move it into another folder or to the top",
    responses=error_responses(
        400, 404, 409, 413, 500, *AUTH_ERRORS, descriptions={404: _NOT_FOUND, 409: _CONFLICT}
    ),
)
async def update_folder(
    folder_id: FolderIdPath, changes: FolderUpdate, caller: CallerDep, db: DatabaseDep
) -> Folder:
    """`parent_id` null moves it to the top; its subfolders and sessions go with it."""
    return await service.update_folder(db, caller, folder_id, changes)


@router.delete(
    "/folders/{folder_id}",
    summary="Delete a folder",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(
        404,
        409,
        500,
        *AUTH_ERRORS,
        descriptions={
            404: "No such folder of the caller's.",
            409: "A subfolder cannot move up: the parent has a folder of its name.",
        },
    ),
)
async def delete_folder(
    folder_id: FolderIdPath,
    caller: CallerDep,
    db: DatabaseDep,
    delete_sessions: Annotated[
        bool,
        Query(
            description=(
                "Delete the folder's own sessions instead of moving them to its parent. Its "
                "subfolders always move to its parent, with their sessions."
            )
        ),
    ] = False,
) -> None:
    """Its subfolders (with everything in them) and its sessions move to its parent, or to
    the top for a top-level folder; with `delete_sessions=true` its own sessions are deleted
    instead."""
    await service.delete_folder(db, caller, folder_id, delete_sessions=delete_sessions)
