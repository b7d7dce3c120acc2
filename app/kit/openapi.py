"""The OpenAPI schema as this instance really behaves.

In open mode no bearer token is checked, so the schema asks for none; and query parameters
that open mode requires (it cannot tell who the caller is) are marked by their routes with
`openapi_extra={OPEN_MODE_REQUIRED: ["name", ...]}`.
"""

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

OPEN_MODE_REQUIRED = "x-required-in-open-mode"
_HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def describe_mode(app: FastAPI, *, open_mode: bool) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _schema(app, open_mode=open_mode)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _schema(app: FastAPI, *, open_mode: bool) -> dict[str, Any]:
    schema = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
    )
    for path_item in schema.get("paths", {}).values():
        for method, operation in path_item.items():
            if method not in _HTTP_METHODS:
                continue
            required = set(operation.pop(OPEN_MODE_REQUIRED, []))
            if not open_mode:
                continue
            operation.pop("security", None)
            operation.get("responses", {}).pop("401", None)
            for parameter in operation.get("parameters", []):
                if parameter["name"] in required:
                    parameter["required"] = True
                    parameter["schema"] = _not_null(parameter["schema"])
    if open_mode:
        schema.get("components", {}).pop("securitySchemes", None)
    return schema


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """`anyOf: [X, null]` as plain X, for a parameter that must now be given."""
    options = [option for option in schema.get("anyOf", []) if option.get("type") != "null"]
    if len(options) != 1:
        return schema
    rest = {key: value for key, value in schema.items() if key not in ("anyOf", "default")}
    return {**options[0], **rest}
