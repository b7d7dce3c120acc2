"""The OpenAPI schema as this instance really behaves."""

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

_HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def open_mode_schema(app: FastAPI) -> dict[str, Any]:
    """The schema without the bearer-token requirement: in open mode no token is checked."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            description=app.description,
            routes=app.routes,
        )
        for path_item in schema.get("paths", {}).values():
            for method, operation in path_item.items():
                if method in _HTTP_METHODS:
                    operation.pop("security", None)
                    operation.get("responses", {}).pop("401", None)
        schema.get("components", {}).pop("securitySchemes", None)
        app.openapi_schema = schema
    return app.openapi_schema


def describe_open_mode(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        return open_mode_schema(app)

    app.openapi = openapi  # type: ignore[method-assign]
