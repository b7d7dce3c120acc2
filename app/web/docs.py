"""The interactive API docs, `/docs` (Swagger UI) and `/redoc` (ReDoc), from files shipped with
the service, under a Content-Security-Policy.

FastAPI's own pages load their scripts from a CDN (blank without internet) and come with no
CSP. Here the same pages (FastAPI's `get_swagger_ui_html` / `get_redoc_html`) point at the
Swagger UI and ReDoc bundles of the `fastapi-offline` package, served under `/docs/assets`.
Swagger UI is started by an inline script, which the policy allows by its hash alone.
"""

import base64
import hashlib
import re
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

from app.web.routes import COMMON_HEADERS, HeaderedStaticFiles

ASSETS_DIR = Path(str(files("fastapi_offline") / "static"))
ASSETS_URL = "/docs/assets"

_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)
_POLICY = (
    "default-src 'none'; script-src {scripts}; style-src {styles}; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'self'"
)


def swagger_ui_policy(inline_script: str) -> str:
    digest = base64.b64encode(hashlib.sha256(inline_script.encode()).digest()).decode()
    return _POLICY.format(scripts=f"'self' 'sha256-{digest}'", styles="'self'")


# ReDoc styles its components with generated <style> elements (styled-components): without
# 'unsafe-inline' for styles it renders nothing (checked in Chromium).
REDOC_POLICY = _POLICY.format(scripts="'self'", styles="'self' 'unsafe-inline'")


def install(app: FastAPI) -> None:
    """Serve the docs pages and their files; create `app` with `docs_url=None, redoc_url=None`
    so that FastAPI does not add its own."""
    openapi_url = app.openapi_url
    assert openapi_url is not None
    app.mount(ASSETS_URL, HeaderedStaticFiles(directory=ASSETS_DIR), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        page = get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            # Its default sends the schema's URL to validator.swagger.io for a badge.
            swagger_ui_parameters={"validatorUrl": None},
        )
        inline = _INLINE_SCRIPT.search(bytes(page.body).decode())
        assert inline is not None
        page.headers.update(COMMON_HEADERS)
        page.headers["Content-Security-Policy"] = swagger_ui_policy(inline.group(1))
        return page

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        page = get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )
        page.headers.update(COMMON_HEADERS)
        page.headers["Content-Security-Policy"] = REDOC_POLICY
        return page
