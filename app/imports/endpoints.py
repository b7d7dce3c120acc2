"""Import endpoints: upload an export (ChatGPT's, or this service's own) to import it in the
background, and follow its progress."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, File, Path, Query, Request, UploadFile, status

from app.auth.dependencies import CallerDep
from app.deps import DatabaseDep, SettingsDep
from app.imports import service
from app.imports.schemas import ImportStatus
from app.imports.service import ImportTasks, Limits
from app.kit.error_responses import AUTH_ERRORS, error_responses
from app.kit.schemas import UserId

router = APIRouter(prefix="/api/v1/chat", tags=["import"])

IMPORT_PATH = "/api/v1/chat/import"

_IMPORT_DESCRIPTION = """Upload (multipart, field `file`) one of:

- a ChatGPT data export: the `.zip` as downloaded, or its `conversations.json`;
- this service's JSON export of one session (`GET /sessions/{session_id}/export`), or a JSON
  array of such exports.

Always answers 202 at once, whatever the file's size, with the import's status: the
conversations are imported in the background, each in its own transaction (one that cannot
be imported fails alone and is listed in `failed`). Follow it with
`GET /api/v1/chat/imports/{import_id}`. A conversation imported before (by the same user,
from the same source id) is skipped, so uploading a file twice duplicates nothing.

One running import per user: another upload meanwhile gets a 409."""


async def get_import_tasks(request: Request) -> ImportTasks:
    tasks: ImportTasks = request.app.state.import_tasks
    return tasks


ImportTasksDep = Annotated[ImportTasks, Depends(get_import_tasks)]


@router.post(
    "/import",
    summary="Import a ChatGPT export or this service's own export",
    description=_IMPORT_DESCRIPTION,
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(
        400,
        403,
        409,
        413,
        422,
        500,
        *AUTH_ERRORS,
        descriptions={
            409: "An import of this user's is still running.",
            413: "The file (or the conversations.json inside the zip) is larger than "
            "IMPORT_MAX_BYTES.",
            422: "The request is invalid, or the file is not an export this service reads "
            "(not JSON, not a zip with a conversations.json, a zip that unpacks suspiciously "
            "large, JSON nested more than 64 levels deep): `detail` says why.",
        },
    ),
)
async def import_chats(
    file: Annotated[UploadFile, File(description="The export: a .zip or a .json file.")],
    caller: CallerDep,
    db: DatabaseDep,
    settings: SettingsDep,
    tasks: ImportTasksDep,
    user_id: Annotated[
        UserId | None,
        Query(description="Whose sessions they become: service callers may name a user."),
    ] = None,
) -> ImportStatus:
    limits = Limits(
        max_bytes=settings.import_max_bytes, message_max_chars=settings.message_max_chars
    )
    return await service.start_import(db, caller, tasks, file.file, user_id=user_id, limits=limits)


@router.get(
    "/imports/{import_id}",
    summary="An import's progress and outcome",
    responses=error_responses(
        404, 500, *AUTH_ERRORS, descriptions={404: "No such import of the caller's."}
    ),
)
async def get_import(
    import_id: Annotated[uuid.UUID, Path(description="The id the upload answered with.")],
    caller: CallerDep,
    db: DatabaseDep,
) -> ImportStatus:
    return await service.get_import(db, caller, import_id)
