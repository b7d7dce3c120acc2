"""OpenAPI descriptions of the error responses routes can give.

422 is left to FastAPI, which documents its own validation-error body (HTTPValidationError).
"""

from typing import Any

from pydantic import BaseModel, Field

from app.kit.schemas import ErrorResponse


class InternalErrorResponse(ErrorResponse):
    """Body of a 500: the id the error was logged under (also in `X-Request-ID`)."""

    request_id: str = Field(examples=["5f0c3e9a1b7d4c2e8a6f0b1c2d3e4f50"])


_DESCRIPTIONS = {
    400: "The request body could not be read.",
    401: "Missing or invalid bearer token (only when authentication is on).",
    403: "`user_id` names another user; only service callers may do that.",
    404: "No such session, or not one of the caller's.",
    409: "The request conflicts with the data (a reply still being generated) or with how "
    "this server is configured (`detail` says which).",
    413: "The request body is larger than MAX_REQUEST_BODY_BYTES.",
    429: "Too many messages; the `Retry-After` header says how many seconds to wait.",
    422: "The request is invalid: its fields (`detail` lists each problem), or what it asks "
    "of the data it names (`detail` says what).",
    500: "Unexpected server error; `request_id` names its log line.",
    502: "The assistant failed to answer; the user's message was saved.",
    503: "Temporarily unavailable, worth retrying: the database is overloaded (no free "
    "pooled connection within DATABASE_POOL_TIMEOUT_SECONDS, or too many connections), starting "
    "or down (then `Retry-After` says how many seconds to wait), or the token signing keys "
    "(AUTH_JWKS_URL) cannot be fetched.",
    504: "The assistant did not answer in time; the user's message was saved.",
}
# Always sent with these statuses: required, so that a response without them breaks the schema.
_HEADERS = {
    401: {
        "WWW-Authenticate": {
            "schema": {"type": "string"},
            "required": True,
            "description": "`Bearer ...`",
        }
    },
    429: {
        "Retry-After": {
            "schema": {"type": "integer", "minimum": 1},
            "required": True,
            "description": "Seconds to wait.",
        }
    },
    503: {
        "Retry-After": {
            "schema": {"type": "integer", "minimum": 1},
            "required": False,
            "description": "Seconds to wait (sent when the database is unavailable).",
        }
    },
    500: {
        "X-Request-ID": {
            "schema": {"type": "string"},
            "required": True,
            "description": "The request's id, as in the body (every response carries it).",
        }
    },
}
# Statuses whose body says more than `detail`.
_MODELS: dict[int, type[BaseModel]] = {500: InternalErrorResponse}

# What every route that identifies the caller can answer.
AUTH_ERRORS = (401, 503)


# A 422 is FastAPI's validation error, or a domain rule's (app/kit/errors.py): a route whose
# service can refuse what a valid request asks for lists 422 itself, with both bodies.
_EITHER_422 = {
    "content": {
        "application/json": {
            "schema": {
                "anyOf": [
                    {"$ref": "#/components/schemas/HTTPValidationError"},
                    {"$ref": "#/components/schemas/ErrorResponse"},
                ]
            }
        }
    }
}


def error_responses(
    *statuses: int, descriptions: dict[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """`descriptions` replaces the shared description of a status for this route."""
    return {
        status: _response(
            status,
            _EITHER_422 if status == 422 else {"model": _MODELS.get(status, ErrorResponse)},
            descriptions,
        )
        for status in _with_503(statuses)
    }


def json_error_responses(
    *statuses: int, descriptions: dict[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """The same, for routes whose success response is not JSON (Server-Sent Events):
    FastAPI would otherwise document the error bodies under the route's own media type."""
    return {
        status: _response(
            status,
            _EITHER_422
            if status == 422
            else {"content": {"application/json": {"schema": _ref(status)}}},
            descriptions,
        )
        for status in _with_503(statuses)
    }


def _with_503(statuses: tuple[int, ...]) -> tuple[int, ...]:
    """A route that can fail with a 500 reads the database, so it can also find it
    unavailable (app/kit/db/unavailable.py): 503 goes with 500, documented in this one place."""
    return (*statuses, 503) if 500 in statuses and 503 not in statuses else statuses


def _ref(status: int) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{_MODELS.get(status, ErrorResponse).__name__}"}


def _response(
    status: int, body: dict[str, Any], descriptions: dict[int, str] | None = None
) -> dict[str, Any]:
    description = (descriptions or {}).get(status, _DESCRIPTIONS[status])
    response = {"description": description, **body}
    if status in _HEADERS:
        response["headers"] = _HEADERS[status]
    return response
