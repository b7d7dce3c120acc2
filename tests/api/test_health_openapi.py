"""Probes, and the OpenAPI document: every route, and every status code the suite observes."""

from typing import Any

import httpx
import pytest
from alembic.script import ScriptDirectory
from fastapi.routing import APIRoute, iter_route_contexts

from app.config import PROJECT_ROOT
from app.kit.db import migrate
from app.main import create_app
from tests.api.helpers import CHAT, SESSIONS, STREAM
from tests.conftest import BACKENDS, DatabaseFactory, LiveServer, make_settings, serve

SESSION = SESSIONS + "/{session_id}"
EXPORT = SESSION + "/export"
STOP = SESSION + "/stop"
RESUME = SESSION + "/stream"
REGENERATE = SESSION + "/messages/{message_id}/regenerate"
BRANCH = SESSION + "/branch"
TREE = SESSION + "/tree"
SESSION_SHARES = SESSION + "/shares"
SHARES = "/api/v1/chat/shares"
SHARE = SHARES + "/{share_id}"
SHARED = "/api/v1/shared/{share_id}"
FEEDBACK = SESSION + "/messages/{message_id}/feedback"
FEEDBACK_LIST = "/api/v1/feedback"
TITLE = SESSION + "/title"
FOLDERS = "/api/v1/chat/folders"
FOLDER = FOLDERS + "/{folder_id}"
TAGS = "/api/v1/chat/tags"
TAG = TAGS + "/{tag_id}"
IMPORT = "/api/v1/chat/import"
IMPORT_STATUS = "/api/v1/chat/imports/{import_id}"

# Every status code the tests of this directory get from each route.
OBSERVED_STATUSES: dict[tuple[str, str], set[int]] = {
    ("GET", "/healthz"): {200},
    ("GET", "/readyz"): {200, 503},
    ("POST", CHAT): {200, 400, 422, 502, 503},
    ("POST", STREAM): {200, 400, 422, 503},
    ("GET", SESSIONS): {200, 422, 503},
    ("DELETE", SESSIONS): {200, 400, 403, 422},
    ("GET", SESSION): {200, 404, 422},
    ("PATCH", SESSION): {200, 404, 422},
    ("GET", EXPORT): {200, 404, 422},
    ("DELETE", SESSION): {204, 404, 422},
    ("POST", STOP): {200, 404, 422},
    ("GET", RESUME): {200, 204, 404, 422},
    ("POST", REGENERATE): {200, 404, 422},
    ("PUT", BRANCH): {200, 404, 422},
    ("GET", TREE): {200, 404, 422},
    ("POST", SESSION_SHARES): {201, 400, 404, 422},
    ("GET", SHARES): {200, 403, 422},
    ("DELETE", SHARE): {204, 404, 422},
    ("GET", SHARED): {200, 404, 422, 429},
    ("PUT", FEEDBACK): {200, 404, 409, 422},
    ("DELETE", FEEDBACK): {204, 404, 422},
    ("GET", FEEDBACK_LIST): {200, 403, 422},
    ("POST", TITLE): {200, 404, 409, 422, 429, 502, 504},
    ("POST", FOLDERS): {201, 404, 409, 422},
    ("GET", FOLDERS): {200},
    ("PATCH", FOLDER): {200, 404, 409, 422},
    ("DELETE", FOLDER): {204, 404, 409},
    ("GET", TAGS): {200},
    ("PATCH", TAG): {200, 404},
    ("DELETE", TAG): {204, 404},
    ("POST", IMPORT): {202, 409, 413, 422},
    ("GET", IMPORT_STATUS): {200, 404, 422},
}
# Routes whose services refuse some valid requests with a 422 of their own (`{"detail": str}`):
# an edit of a reply, a regeneration or a rating of a user message, a title for a session
# without a user message.
DOMAIN_422 = {
    ("POST", CHAT),
    ("POST", STREAM),
    ("POST", REGENERATE),
    ("PUT", FEEDBACK),
    ("DELETE", FEEDBACK),
    ("POST", TITLE),
    # A file that is not an export.
    ("POST", IMPORT),
}


async def _spec(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    spec: dict[str, Any] = response.json()
    return spec


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    name = ref.removeprefix("#/components/schemas/")
    resolved: dict[str, Any] = spec["components"]["schemas"][name]
    return resolved


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize("backend", BACKENDS)
async def test_readyz_refuses_a_database_behind_this_versions_migrations(
    backend: str, database_factory: DatabaseFactory
) -> None:
    """A replica deployed before the migrations ran (MIGRATE_ON_STARTUP off) says so, rather
    than taking traffic it would fail on; once migrated, it is ready."""
    url = await database_factory.create(backend)
    database_url = make_settings(url).database_url
    head = migrate.head_revision()
    previous = ScriptDirectory(str(PROJECT_ROOT / "migrations")).get_revision(head).down_revision
    assert isinstance(previous, str)

    async with serve(create_app(make_settings(url))) as live:
        unmigrated = await live.client.get("/readyz")
        await migrate.upgrade_async(database_url, previous)
        behind = await live.client.get("/readyz")
        await migrate.upgrade_async(database_url)
        ready = await live.client.get("/readyz")

    assert unmigrated.status_code == 503
    assert unmigrated.json() == {
        "detail": f"Database schema is at no revision; this version needs {head}: "
        "apply the migrations (make migrate)"
    }
    assert behind.status_code == 503
    assert behind.json()["detail"].startswith(f"Database schema is at {previous};")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok"}


async def test_every_route_is_in_the_openapi_document(
    client: httpx.AsyncClient, live_server: LiveServer
) -> None:
    spec = await _spec(client)

    # FastAPI keeps included routers as wrappers in `app.routes`: walk their effective routes.
    routes = {
        (method, str(context.path))
        for context in iter_route_contexts(live_server.app.routes)
        if isinstance(context.original_route, APIRoute) and context.original_route.include_in_schema
        for method in context.methods or ()
    }
    documented = {
        (method.upper(), path)
        for path, operations in spec["paths"].items()
        for method in operations
    }
    assert documented == routes
    assert routes == set(OBSERVED_STATUSES)


async def test_every_observed_status_code_is_documented(client: httpx.AsyncClient) -> None:
    spec = await _spec(client)

    for (method, path), statuses in OBSERVED_STATUSES.items():
        documented = spec["paths"][path][method.lower()]["responses"]
        missing = {str(status) for status in statuses} - set(documented)
        assert not missing, (method, path, missing)


# The API routes (under /api/v1), for the checks every one of them must pass.
CHAT_ROUTES = [
    pytest.param("POST", CHAT, id="chat"),
    pytest.param("POST", STREAM, id="stream"),
    pytest.param("GET", SESSIONS, id="list"),
    pytest.param("DELETE", SESSIONS, id="delete-all"),
    pytest.param("GET", SESSION, id="get"),
    pytest.param("PATCH", SESSION, id="update"),
    pytest.param("GET", EXPORT, id="export"),
    pytest.param("DELETE", SESSION, id="delete"),
    pytest.param("POST", STOP, id="stop"),
    pytest.param("GET", RESUME, id="resume"),
    pytest.param("POST", REGENERATE, id="regenerate"),
    pytest.param("PUT", BRANCH, id="branch"),
    pytest.param("GET", TREE, id="tree"),
    pytest.param("POST", SESSION_SHARES, id="share"),
    pytest.param("GET", SHARES, id="list-shares"),
    pytest.param("DELETE", SHARE, id="revoke-share"),
    pytest.param("PUT", FEEDBACK, id="rate"),
    pytest.param("DELETE", FEEDBACK, id="unrate"),
    pytest.param("GET", FEEDBACK_LIST, id="feedback-list"),
    pytest.param("POST", TITLE, id="title"),
    pytest.param("POST", FOLDERS, id="create-folder"),
    pytest.param("GET", FOLDERS, id="list-folders"),
    pytest.param("PATCH", FOLDER, id="update-folder"),
    pytest.param("DELETE", FOLDER, id="delete-folder"),
    pytest.param("GET", TAGS, id="list-tags"),
    pytest.param("PATCH", TAG, id="rename-tag"),
    pytest.param("DELETE", TAG, id="delete-tag"),
    pytest.param("POST", IMPORT, id="import"),
    pytest.param("GET", IMPORT_STATUS, id="import-status"),
]


@pytest.mark.parametrize(
    ("method", "path"),
    CHAT_ROUTES,
)
async def test_error_responses_are_documented_as_json(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    spec = await _spec(client)

    responses = spec["paths"][path][method.lower()]["responses"]
    errors = {status: r for status, r in responses.items() if int(status) >= 400}
    assert errors
    for status, documented in errors.items():
        assert set(documented["content"]) == {"application/json"}, (status, documented)


@pytest.mark.parametrize(
    ("method", "path"),
    CHAT_ROUTES,
)
async def test_every_route_that_reads_the_database_documents_its_503(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    """An overloaded or unreachable database is a 503 with `Retry-After`, not a 500
    (tests/api/test_db_unavailable.py)."""
    spec = await _spec(client)

    responses = spec["paths"][path][method.lower()]["responses"]
    assert "500" in responses
    documented = responses["503"]
    assert "database" in documented["description"]
    assert documented["headers"]["Retry-After"]["schema"] == {"type": "integer", "minimum": 1}


async def test_non_validation_errors_are_documented_as_detail_strings(
    client: httpx.AsyncClient,
) -> None:
    spec = await _spec(client)

    for (method, path), statuses in OBSERVED_STATUSES.items():
        responses = spec["paths"][path][method.lower()]["responses"]
        for status in statuses & {400, 404, 502}:
            [content] = responses[str(status)]["content"].values()
            schema = _resolve(spec, content["schema"])
            assert schema["properties"]["detail"]["type"] == "string", (method, path, status)
            assert schema["required"] == ["detail"]


@pytest.mark.parametrize(
    ("method", "path"),
    CHAT_ROUTES,
)
async def test_422_is_documented_as_the_validation_error_list_it_sends(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    spec = await _spec(client)

    [content] = spec["paths"][path][method.lower()]["responses"]["422"]["content"].values()
    schemas = [_resolve(spec, s) for s in content["schema"].get("anyOf", [content["schema"]])]
    detail_types = [schema["properties"]["detail"]["type"] for schema in schemas]
    assert detail_types == (["array", "string"] if (method, path) in DOMAIN_422 else ["array"])


async def test_export_success_is_documented_as_json_or_markdown(
    client: httpx.AsyncClient,
) -> None:
    spec = await _spec(client)

    content = spec["paths"][EXPORT]["get"]["responses"]["200"]["content"]
    assert set(content) == {"application/json", "text/markdown"}
    assert _resolve(spec, content["application/json"]["schema"]) == _resolve(
        spec, {"$ref": "#/components/schemas/SessionDetail"}
    )


async def test_delete_all_documents_why_it_answers_400(client: httpx.AsyncClient) -> None:
    spec = await _spec(client)

    description = spec["paths"][SESSIONS]["delete"]["responses"]["400"]["description"]
    assert "user_id" in description


async def test_stream_success_is_documented_as_an_event_stream(client: httpx.AsyncClient) -> None:
    spec = await _spec(client)

    assert set(spec["paths"][STREAM]["post"]["responses"]["200"]["content"]) == {
        "text/event-stream"
    }


async def test_regenerate_success_is_documented_as_an_event_stream_or_json(
    client: httpx.AsyncClient,
) -> None:
    spec = await _spec(client)

    content = spec["paths"][REGENERATE]["post"]["responses"]["200"]["content"]
    assert (
        content["text/event-stream"]
        == (spec["paths"][STREAM]["post"]["responses"]["200"]["content"]["text/event-stream"])
    )
    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/ChatResponse"}


async def test_import_is_documented_as_an_upload_answered_202(client: httpx.AsyncClient) -> None:
    spec = await _spec(client)

    operation = spec["paths"][IMPORT]["post"]
    assert set(operation["requestBody"]["content"]) == {"multipart/form-data"}
    assert set(operation["responses"]) >= {"202", "409", "413", "422"}
    assert "200" not in operation["responses"]


@pytest.mark.parametrize(("path", "marker"), [("/docs", "swagger-ui"), ("/redoc", "redoc")])
async def test_docs_pages(client: httpx.AsyncClient, path: str, marker: str) -> None:
    response = await client.get(path)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert marker in response.text
    assert "/openapi.json" in response.text
