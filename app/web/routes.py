"""Serves the chat page at `/`, the read-only page of a share link at `/s/{share_id}`, and
their files under `/static`.

The page is plain ES modules and CSS with vendored libraries (no build step); it talks to the
API on the same origin, so its Content-Security-Policy allows nothing else.
"""

import mimetypes
import os
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.staticfiles import PathLike
from starlette.types import Scope

STATIC_DIR = Path(__file__).parent / "static"

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'self'"
)
# no-cache: files keep their names across releases (no build step hashes them), so the browser
# revalidates (ETag) and picks up a new release at once.
COMMON_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
PAGE_HEADERS = {
    **COMMON_HEADERS,
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    # Session ids are in the page's URL; links in messages lead to other sites.
    "Referrer-Policy": "same-origin",
}

# Module scripts load only with a JavaScript type (nosniff too), and Python's own table has no
# `.mjs` when the system's mime.types is missing.
mimetypes.add_type("text/javascript", ".js")
mimetypes.add_type("text/javascript", ".mjs")
mimetypes.add_type("text/css", ".css")
mimetypes.add_type("image/svg+xml", ".svg")

# A shared conversation is for the people it was sent to, not for search engines (the page
# says so too, in a meta tag, for crawlers that read only the HTML).
SHARED_PAGE_HEADERS = {**PAGE_HEADERS, "X-Robots-Tag": "noindex"}

router = APIRouter(include_in_schema=False)
shared_router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)


@shared_router.get("/s/{share_id}")
async def shared_page(share_id: str) -> FileResponse:
    """The same file for every link: its script reads the id from the address and asks the
    API, which says whether the link exists (the page then shows that it does not)."""
    return FileResponse(STATIC_DIR / "shared.html", headers=SHARED_PAGE_HEADERS)


class HeaderedStaticFiles(StaticFiles):
    """Static files with `COMMON_HEADERS`."""

    def file_response(
        self,
        full_path: PathLike,
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(COMMON_HEADERS)
        return response


def install(app: FastAPI, *, sharing: bool = True) -> None:
    """Add the page (and with `sharing` the shared-link page) and their static files to
    `app`."""
    app.include_router(router)
    if sharing:
        app.include_router(shared_router)
    app.mount("/static", HeaderedStaticFiles(directory=STATIC_DIR), name="static")
