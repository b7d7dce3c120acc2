"""The serving side of the web page: the page and its files, their headers, the setting that
turns them off, and their absence from the API schema. No browser and no database needed."""

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.main import create_app
from app.web.routes import STATIC_DIR
from tests.conftest import make_settings

# The policy the page is written for (inline scripts and styles would be blocked by it).
EXPECTED_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'self'"
)


async def client_for(**overrides: Any) -> httpx.AsyncClient:
    # The page's routes do not touch the database, so the app's lifespan is not needed.
    app = create_app(make_settings("sqlite:///unused-by-these-tests.db", **overrides))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with await client_for() as client:
        yield client


async def test_the_page_is_served_with_a_strict_content_security_policy(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/")

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"] == EXPECTED_CSP
    assert response.headers["x-content-type-options"] == "nosniff"
    assert re.search(r'<nav [^>]*aria-label="Chat history"', response.text)
    assert '<script type="module" src="/static/js/app.js"></script>' in response.text


async def test_the_shared_page_has_the_same_headers_and_is_not_indexed(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/s/any-link-id")

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"] == EXPECTED_CSP
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "same-origin"
    assert response.headers["x-robots-tag"] == "noindex"
    assert '<meta name="robots" content="noindex">' in response.text
    assert '<script type="module" src="/static/js/shared.js"></script>' in response.text
    # Read-only: no chat history, no composer.
    assert "Chat history" not in response.text
    assert "<textarea" not in response.text
    assert "<form" not in response.text


async def test_the_shared_page_is_off_with_sharing() -> None:
    async with await client_for(sharing_enabled=False) as client:
        assert (await client.get("/s/any-link-id")).status_code == 404
        assert (await client.get("/")).status_code == 200


@pytest.mark.parametrize("page", ["index.html", "shared.html"])
def test_the_page_has_no_inline_script_or_style(page: str) -> None:
    """The CSP would block them: everything is in files under /static."""
    html = (STATIC_DIR / page).read_text()

    assert re.findall(r"<script(?![^>]*\ssrc=)[^>]*>", html) == []
    assert "<style" not in html
    assert re.findall(r"\sstyle=", html) == []
    assert re.findall(r"\son[a-z]+=", html) == []


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/static/app.css", "text/css; charset=utf-8"),
        ("/static/js/app.js", "text/javascript; charset=utf-8"),
        ("/static/vendor/marked.esm.js", "text/javascript; charset=utf-8"),
        # Module scripts must come with a JavaScript type, whatever the system's mime.types says.
        ("/static/vendor/purify.es.mjs", "text/javascript; charset=utf-8"),
        ("/static/favicon.svg", "image/svg+xml"),
    ],
)
async def test_static_files_have_their_content_types(
    client: httpx.AsyncClient, path: str, content_type: str
) -> None:
    response = await client.get(path)

    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.content == (STATIC_DIR / path.removeprefix("/static/")).read_bytes()


IMPORT = re.compile(r"^import .* from '(\.{1,2}/[^']+)';$", re.MULTILINE)


def referenced_files() -> set[str]:
    """Every /static URL in the pages, and every module the scripts import."""
    urls = set()
    for page in ("index.html", "shared.html"):
        html = (STATIC_DIR / page).read_text()
        urls |= set(re.findall(r"""(?:src|href)="(/static/[^"]+)\"""", html))
    for script in STATIC_DIR.rglob("*.js"):
        if "vendor" in script.parts:
            continue
        for target in IMPORT.findall(script.read_text()):
            resolved = (script.parent / target).resolve().relative_to(STATIC_DIR.resolve())
            urls.add(f"/static/{resolved.as_posix()}")
    return urls


async def test_every_file_the_page_loads_is_served(client: httpx.AsyncClient) -> None:
    urls = referenced_files()
    # The discovery itself finds the entry module, the modules it imports, and the libraries.
    assert {
        "/static/app.css",
        "/static/js/app.js",
        "/static/js/sidebar.js",
        "/static/js/shared.js",
        "/static/vendor/marked.esm.js",
        "/static/vendor/purify.es.mjs",
    } <= urls

    for url in sorted(urls):
        response = await client.get(url)
        assert response.status_code == 200, url


def test_vendored_libraries_are_the_versions_named_with_their_licenses() -> None:
    vendor = STATIC_DIR / "vendor"
    readme = (vendor / "README.md").read_text()

    marked = (vendor / "marked.esm.js").read_text()
    purify = (vendor / "purify.es.mjs").read_text()
    marked_version = re.search(r"marked v(\d+\.\d+\.\d+)", marked)
    purify_version = re.search(r"DOMPurify (\d+\.\d+\.\d+)", purify)
    assert marked_version is not None
    assert purify_version is not None
    assert f"package/marked) {marked_version[1]} |" in readme
    assert f"package/dompurify) {purify_version[1]} |" in readme
    for license_file in ("LICENSE.marked.md", "LICENSE.dompurify.txt", "LICENSE-MPL.dompurify.txt"):
        assert (vendor / license_file).stat().st_size > 1000, license_file
        assert license_file in readme


@pytest.mark.parametrize(
    "path",
    [
        "/static/missing.js",
        "/static/",
        # Files beside the static folder exist (app/web/routes.py), and stay unreachable.
        "/static/%2e%2e/routes.py",
        "/static/..%2froutes.py",
    ],
)
async def test_nothing_but_the_static_files_is_served_under_static(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)

    assert response.status_code == 404


async def test_the_page_is_not_part_of_the_api_schema(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]

    assert paths  # the API is documented
    assert [path for path in paths if not path.startswith(("/api/", "/healthz", "/readyz"))] == []


async def test_web_ui_enabled_false_serves_no_page() -> None:
    async with await client_for(web_ui_enabled=False) as client:
        page = await client.get("/")
        asset = await client.get("/static/app.css")
        api_schema = await client.get("/openapi.json")

    assert page.status_code == 404
    assert asset.status_code == 404
    assert api_schema.status_code == 200  # the API itself is still there
