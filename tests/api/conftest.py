"""The app in authenticated mode: a loopback JWKS endpoint, and the app verifying tokens with
it and with the shared secret, on the same database as the open-mode `live_server`."""

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest

from app.config import Settings
from app.kit.db.engine import Database
from app.main import create_app
from tests.conftest import LiveServer, make_settings, serve
from tests.tokens import ISSUER, JWT_SECRET, JwksServer, SigningKey, new_signing_key, serve_jwks

REJECTED_BODY = {"detail": "Missing or invalid bearer token"}


@dataclass(frozen=True)
class Jwks:
    """The running JWKS endpoint and the two keys it publishes."""

    server: JwksServer
    es256: SigningKey
    rs256: SigningKey

    @property
    def url(self) -> str:
        return self.server.url


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="session")
def jwks() -> Iterator[Jwks]:
    es256, rs256 = new_signing_key("ES256"), new_signing_key("RS256")
    with serve_jwks(es256, rs256) as server:
        yield Jwks(server=server, es256=es256, rs256=rs256)


def auth_settings(migrated_url: str, jwks: Jwks) -> Settings:
    return make_settings(
        migrated_url,
        auth_jwt_secret=JWT_SECRET,
        auth_jwks_url=jwks.url,
        auth_issuer=ISSUER,
        rate_limit_enabled=False,
    )


@pytest.fixture(scope="session")
async def auth_live_server(
    migrated_url: str, settings: Settings, database: Database, jwks: Jwks
) -> AsyncIterator[LiveServer]:
    """The app with authentication on (HS256 secret, and ES256/RS256 keys from `jwks`)."""
    app_settings = auth_settings(migrated_url, jwks)
    assert app_settings.database_url == settings.database_url
    assert app_settings.auth_enabled
    async with serve(create_app(app_settings)) as live:
        yield live


@pytest.fixture
async def auth_client(
    auth_live_server: LiveServer, database: Database
) -> AsyncIterator[httpx.AsyncClient]:
    """HTTP client of the authenticated server (no credentials of its own: pass a header);
    tables are emptied after each test."""
    yield auth_live_server.client
    # Replies still being generated would write into the next test's tables.
    await auth_live_server.app.state.reply_tasks.wait_idle()
