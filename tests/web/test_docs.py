"""The API docs pages (/docs, /redoc): only local files, a strict Content-Security-Policy, and,
in Chromium with every other origin unreachable, every operation of the schema rendered."""

import base64
import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, Route

from app.main import create_app
from app.web.docs import ASSETS_DIR
from tests.conftest import make_settings
from tests.web.conftest import WebApp, open_context

REFERENCE = re.compile(r"""(?:src|href|spec-url)="([^"]*)"|url: '([^']*)'""")
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    # The docs pages need neither the database nor the app's start-up state.
    app = create_app(make_settings(f"sqlite:///{tmp_path / 'unused.db'}", web_ui_enabled=False))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        yield client


def references(html: str) -> list[str]:
    return [src or url for src, url in REFERENCE.findall(html)]


def directives(policy: str) -> dict[str, list[str]]:
    parsed = {}
    for directive in policy.split(";"):
        name, *values = directive.split()
        parsed[name] = values
    return parsed


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
async def test_the_docs_pages_reference_only_local_files_that_are_served(
    client: httpx.AsyncClient, path: str
) -> None:
    page = await client.get(path)

    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    urls = references(page.text)
    assert "/openapi.json" in urls
    assert len(urls) >= 3
    for url in urls:
        assert re.match(r"/[^/]", url), url
        asset = await client.get(url)
        assert asset.status_code == 200, url
    assert {url for url in urls if url.startswith("/docs/assets/")}
    assert "googleapis" not in page.text
    assert "cdn." not in page.text


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
        ("swagger-ui.css", "text/css; charset=utf-8"),
        ("redoc.standalone.js", "text/javascript; charset=utf-8"),
        ("favicon.png", "image/png"),
    ],
)
async def test_the_docs_assets_are_served_with_their_types(
    client: httpx.AsyncClient, name: str, content_type: str
) -> None:
    response = await client.get(f"/docs/assets/{name}")

    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.content == (ASSETS_DIR / name).read_bytes()


async def test_swagger_ui_runs_only_its_own_files_and_its_inline_start_by_hash(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/docs")

    policy = directives(page.headers["content-security-policy"])
    inline = re.findall(r"<script>(.*?)</script>", page.text, re.DOTALL)
    assert len(inline) == 1
    digest = base64.b64encode(hashlib.sha256(inline[0].encode()).digest()).decode()
    assert policy["script-src"] == ["'self'", f"'sha256-{digest}'"]
    assert policy["default-src"] == ["'none'"]
    assert policy["connect-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert "validatorUrl" in inline[0]


async def test_redoc_runs_only_its_own_files(client: httpx.AsyncClient) -> None:
    page = await client.get("/redoc")

    policy = directives(page.headers["content-security-policy"])
    assert re.findall(r"<script>", page.text) == []
    assert policy["script-src"] == ["'self'"]
    assert policy["default-src"] == ["'none'"]
    assert policy["connect-src"] == ["'self'"]


# --- In Chromium, offline ---------------------------------------------------------------------


async def open_offline(
    browser: Browser, web: WebApp, path: str
) -> AsyncIterator[tuple[Page, list[str], list[str]]]:
    """`path` in a new page that can reach nothing but the app; the requests it tried to make
    elsewhere, and the console's errors (CSP violations are reported there)."""
    async with open_context(browser, web.base_url) as (context, errors):
        elsewhere: list[str] = []

        async def only_the_app(route: Route) -> None:
            if route.request.url.startswith(web.base_url + "/"):
                await route.continue_()
            else:
                elsewhere.append(route.request.url)
                await route.abort()

        await context.route("**/*", only_the_app)
        page = await context.new_page()
        console: list[str] = []

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                console.append(message.text)

        page.on("console", on_console)
        await page.goto(path)
        yield page, elsewhere, console + errors


async def operation_count(web: WebApp) -> int:
    schema = (await web.client.get("/openapi.json")).json()
    return sum(1 for item in schema["paths"].values() for method in item if method in HTTP_METHODS)


async def test_swagger_ui_renders_every_operation_offline(browser: Browser, web: WebApp) -> None:
    expected = await operation_count(web)
    async for page, elsewhere, console in open_offline(browser, web, "/docs"):
        operations = page.locator(".opblock")
        await operations.nth(expected - 1).wait_for()
        assert await operations.count() == expected
        assert await page.locator(".opblock-summary-path", has_text="/api/v1/chat/stream").count()
        assert elsewhere == []
        assert console == []


async def test_redoc_renders_every_operation_offline(browser: Browser, web: WebApp) -> None:
    expected = await operation_count(web)
    async for page, elsewhere, console in open_offline(browser, web, "/redoc"):
        operations = page.locator('[data-section-id^="operation/"]')
        await operations.nth(expected - 1).wait_for()
        assert await operations.count() == expected
        assert elsewhere == []
        assert console == []
