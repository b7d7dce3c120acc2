"""Domain errors, and the one place they become HTTP responses."""

import json
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


class ChatError(Exception):
    """Base of the errors services raise; each maps to one HTTP status."""

    status_code = status.HTTP_500_INTERNAL_SERVER_ERROR
    detail = "Internal server error"
    headers: dict[str, str] | None = None

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or self.detail)
        if detail:
            self.detail = detail


class SessionNotFound(ChatError):
    status_code = status.HTTP_404_NOT_FOUND
    detail = "Session not found"


class MessageNotFound(ChatError):
    status_code = status.HTTP_404_NOT_FOUND
    detail = "Message not found in this session"


class NotAUserMessage(ChatError):
    """`edit_of` names a message the user did not write."""

    status_code = status.HTTP_422_UNPROCESSABLE_CONTENT
    detail = "Only a user message can be edited (edit_of)"


class NotAnAssistantMessage(ChatError):
    """A message to regenerate that the assistant did not write, or one that answers nothing."""

    status_code = status.HTTP_422_UNPROCESSABLE_CONTENT
    detail = "Only an assistant reply can be regenerated"


class NotARatedMessage(ChatError):
    """Feedback names a message the assistant did not write."""

    status_code = status.HTTP_422_UNPROCESSABLE_CONTENT
    detail = "Only an assistant message can be rated"


class ReplyNotFinished(ChatError):
    """Feedback on a reply that is still being generated."""

    status_code = status.HTTP_409_CONFLICT
    detail = "This reply is still being written; rate it once it has finished"


class IdempotencyKeyReused(ChatError):
    """An `Idempotency-Key` sent before with another request (body, route or path)."""

    status_code = status.HTTP_422_UNPROCESSABLE_CONTENT
    detail = (
        "This Idempotency-Key was used for a different request; use a new key for each new message"
    )


class IdempotencyKeyBusy(ChatError):
    """A request whose `Idempotency-Key` was recorded by another request at the same moment,
    and gone again before it could be read (expired, or its session deleted)."""

    status_code = status.HTTP_409_CONFLICT
    detail = "Another request with this Idempotency-Key was being processed; send it again"


class ReplyInProgress(ChatError):
    """A plain request sent again under its `Idempotency-Key` while its reply is generated."""

    status_code = status.HTTP_409_CONFLICT

    def __init__(self, session_id: str) -> None:
        super().__init__(
            "The request sent earlier with this Idempotency-Key is still being answered; send "
            "it again later, or follow its reply: GET "
            f"/api/v1/chat/sessions/{session_id}/stream"
        )


class UserRequired(ChatError):
    """An operation on a user's sessions by a caller who is not one user (service, open mode)."""

    status_code = status.HTTP_400_BAD_REQUEST
    detail = "Name the user (user_id)"


class Forbidden(ChatError):
    status_code = status.HTTP_403_FORBIDDEN
    detail = "Not allowed"


class NotAuthenticated(ChatError):
    """No valid bearer token. Clients learn nothing about why a token was refused."""

    status_code = status.HTTP_401_UNAUTHORIZED
    detail = "Missing or invalid bearer token"

    def __init__(self) -> None:
        super().__init__()
        self.headers = {"WWW-Authenticate": 'Bearer realm="chat"'}


class AuthUnavailable(ChatError):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    detail = "Token verification is temporarily unavailable"


class RateLimited(ChatError):
    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    detail = "Too many messages; try again later"

    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__()
        self.headers = {"Retry-After": str(max(retry_after_seconds, 1))}


class SharedReadsLimited(RateLimited):
    """Too many reads of shared links from one client address."""

    detail = "Too many requests; try again later"


class ShareNotFound(ChatError):
    """No such share link, or a revoked or expired one, or (revoking) one of someone else's:
    all answered alike, so that a link's fate cannot be told from outside."""

    status_code = status.HTTP_404_NOT_FOUND
    detail = "Share link not found"


class FolderNotFound(ChatError):
    """No such folder, or one of another user's (answered alike)."""

    status_code = status.HTTP_404_NOT_FOUND
    detail = "Folder not found"


class FolderConflict(ChatError):
    """A folder change the folders' rules refuse: a name taken among the siblings, a move under
    itself, or past the depth limit."""

    status_code = status.HTTP_409_CONFLICT
    detail = "A folder of that name is already there"


class TagNotFound(ChatError):
    """No such tag, or one of another user's (answered alike)."""

    status_code = status.HTTP_404_NOT_FOUND
    detail = "Tag not found"


class ImportNotFound(ChatError):
    """No such import, or one of another user's (answered alike)."""

    status_code = status.HTTP_404_NOT_FOUND
    detail = "Import not found"


class ImportRunning(ChatError):
    """An import while another of the same user's is still running."""

    status_code = status.HTTP_409_CONFLICT
    detail = "An import of yours is still running; wait for it to finish (GET its status)"


class NotAnImport(ChatError):
    """An upload that is not an export this service reads (`detail` says why)."""

    status_code = status.HTTP_422_UNPROCESSABLE_CONTENT
    detail = "The file is not an export this service can import"


class ExportTooLarge(ChatError):
    """An upload, or the export inside a zip, over IMPORT_MAX_BYTES."""

    status_code = status.HTTP_413_CONTENT_TOO_LARGE

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"The export is larger than the limit of {max_bytes} bytes")


class AssistantUnavailable(ChatError):
    """The assistant failed to answer; the user's message is kept."""

    status_code = status.HTTP_502_BAD_GATEWAY
    detail = "The assistant could not answer; your message was saved, try again"


class AssistantTimedOut(ChatError):
    """The assistant did not answer in time; the user's message is kept."""

    status_code = status.HTTP_504_GATEWAY_TIMEOUT
    detail = "The assistant did not answer in time; your message was saved, try again"


class TitlesNotWritten(ChatError):
    """A title was asked of the model on a server where no model writes titles."""

    status_code = status.HTTP_409_CONFLICT
    detail = "Titles are not written by a model on this server"


class NothingToTitle(ChatError):
    """A title was asked for a session without a user message on its current branch."""

    status_code = status.HTTP_422_UNPROCESSABLE_CONTENT
    detail = "The session has no message to write a title from"


class TitleUnavailable(ChatError):
    """The model failed to write a title, or wrote nothing usable; the title is unchanged."""

    status_code = status.HTTP_502_BAD_GATEWAY
    detail = "The model could not write a title; the title is unchanged"


class TitleTimedOut(ChatError):
    """The model did not write a title in TITLE_TIMEOUT_SECONDS; the title is unchanged."""

    status_code = status.HTTP_504_GATEWAY_TIMEOUT
    detail = "The model did not write a title in time; the title is unchanged"


class ShuttingDown(ChatError):
    """The service stopped before the reply was done; the user's message and what came of the
    reply are kept."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    detail = "The service is restarting; your message was saved, try again"


class ReplyLost(ChatError):
    """The reply could not be saved: its session was deleted meanwhile (or another process
    took it for interrupted)."""

    status_code = status.HTTP_404_NOT_FOUND
    detail = "The session was deleted while the reply was written"


def _error_body(detail: str) -> dict[str, str]:
    return {"detail": detail}


async def _handle_chat_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ChatError)
    return JSONResponse(_error_body(exc.detail), status_code=exc.status_code, headers=exc.headers)


class _ASCIIJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: a validation error echoes the client's input, which may
    hold unpaired surrogates that cannot be encoded as UTF-8 but can be escaped."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


async def _handle_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return _ASCIIJSONResponse(
        {"detail": jsonable_encoder(exc.errors())},
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ChatError, _handle_chat_error)
    app.add_exception_handler(RequestValidationError, _handle_validation_error)
    # Other exceptions are logged and answered by `app.kit.http.request_context`, once.
