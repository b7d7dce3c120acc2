"""OpenAPI descriptions of the error responses routes can give."""

from typing import Any

from app.models.chat import ErrorResponse


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        400: "The request body is not valid JSON.",
        404: "No such session.",
        413: "The request body is too large.",
        422: "A parameter or body field is invalid.",
        500: "Unexpected server error.",
        502: "The assistant failed to answer; the user's message was saved.",
        503: "The database is unreachable.",
    }
    return {
        status: {"model": ErrorResponse, "description": descriptions[status]} for status in statuses
    }
