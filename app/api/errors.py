"""OpenAPI descriptions of the error responses routes can give.

422 is left to FastAPI, which documents its own validation-error body (HTTPValidationError).
"""

from typing import Any

from app.models.chat import ErrorResponse

_DESCRIPTIONS = {
    400: "The request body could not be read.",
    404: "No such session.",
    413: "The request body is too large.",
    500: "Unexpected server error.",
    502: "The assistant failed to answer; the user's message was saved.",
    503: "The database is unreachable.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        status: {"model": ErrorResponse, "description": _DESCRIPTIONS[status]}
        for status in statuses
    }


def json_error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The same, for routes whose success response is not JSON (Server-Sent Events):
    FastAPI would otherwise document the error bodies under the route's own media type."""
    schema = {"$ref": f"#/components/schemas/{ErrorResponse.__name__}"}
    return {
        status: {
            "description": _DESCRIPTIONS[status],
            "content": {"application/json": {"schema": schema}},
        }
        for status in statuses
    }
