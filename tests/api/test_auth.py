"""Authentication over HTTP: who gets in, what a refused client learns (nothing), and which
`user_id` a caller may name."""

import base64
import json
import socket
from collections.abc import Callable

import httpx
import jwt
import pytest
from sqlalchemy import select

from app.domain import USER_ID_MAX_CHARS
from app.kit.db.engine import Database
from app.kit.db.tables import chat_sessions
from app.main import create_app
from tests.api.conftest import REJECTED_BODY, Jwks, bearer
from tests.api.helpers import CHAT, SESSIONS, STREAM, Json, count_rows, session_url
from tests.conftest import LiveServer, make_settings, serve
from tests.tokens import ISSUER, JWT_SECRET, claims_for, hs256_token, new_signing_key

Headers = dict[str, str]


def _unsigned(user_id: str) -> str:
    def segment(value: Json) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{segment({'alg': 'none', 'typ': 'JWT'})}.{segment(claims_for(user_id))}."


# Every way to not be authenticated; each must get the very same answer.
UNAUTHENTICATED: dict[str, Callable[[Jwks], Headers]] = {
    "no header": lambda jwks: {},
    "expired": lambda jwks: bearer(hs256_token("alice", expires_in=-60)),
    "expired service": lambda jwks: bearer(
        jwks.rs256.token("svc", role="service_role", expires_in=-60)
    ),
    "bad signature": lambda jwks: bearer(
        hs256_token("alice", secret="not-the-secret-but-just-as-long-as-it!!")
    ),
    "wrong audience": lambda jwks: bearer(jwks.es256.token("alice", aud="another-api")),
    "wrong issuer": lambda jwks: bearer(hs256_token("alice", iss="https://evil.example/auth/v1")),
    "unknown signing key": lambda jwks: bearer(new_signing_key("ES256").token("alice")),
    "alg none": lambda jwks: bearer(_unsigned("alice")),
    "malformed": lambda jwks: bearer("not-a-jwt"),
    "three garbage segments": lambda jwks: bearer("a.b.c"),
    "basic scheme": lambda jwks: {"Authorization": "Basic xyz"},
    # (h11 refuses to send "Bearer " with its trailing space.)
    "empty bearer": lambda jwks: {"Authorization": "Bearer"},
    "token without scheme": lambda jwks: {"Authorization": hs256_token("alice")},
    # Valid in every other way, but no user id can be that long.
    "sub over 255 characters": lambda jwks: bearer(hs256_token("u" * (USER_ID_MAX_CHARS + 1))),
    "service sub over 255": lambda jwks: bearer(
        jwks.rs256.token("s" * (USER_ID_MAX_CHARS + 1), role="service_role")
    ),
}


def assert_rejected(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.headers["content-type"] == "application/json"
    assert response.json() == REJECTED_BODY


@pytest.mark.parametrize("headers_for", UNAUTHENTICATED.values(), ids=list(UNAUTHENTICATED))
async def test_unauthenticated_requests_get_the_same_401(
    auth_client: httpx.AsyncClient,
    database: Database,
    jwks: Jwks,
    headers_for: Callable[[Jwks], Headers],
) -> None:
    headers = headers_for(jwks)
    baseline = await auth_client.get(SESSIONS)

    listed = await auth_client.get(SESSIONS, headers=headers)
    sent = await auth_client.post(CHAT, json={"message": "hello"}, headers=headers)

    assert_rejected(baseline)
    for response in (listed, sent):
        assert_rejected(response)
        assert response.content == baseline.content
        assert response.headers["WWW-Authenticate"] == baseline.headers["WWW-Authenticate"]
    assert await count_rows(database) == (0, 0)


async def test_a_token_naming_a_key_of_another_type_gets_the_same_401(
    auth_client: httpx.AsyncClient, jwks: Jwks
) -> None:
    # Signed with the EC key, but naming the published RSA key.
    forged = jwt.encode(
        claims_for("alice"), jwks.es256.private_key, "ES256", headers={"kid": jwks.rs256.kid}
    )

    response = await auth_client.get(SESSIONS, headers=bearer(forged))

    assert_rejected(response)


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
async def test_probes_need_no_token(auth_client: httpx.AsyncClient, path: str) -> None:
    response = await auth_client.get(path)

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


TOKENS: dict[str, Callable[[Jwks, str], str]] = {
    "HS256": lambda jwks, user: hs256_token(user),
    "ES256": lambda jwks, user: jwks.es256.token(user),
    "RS256": lambda jwks, user: jwks.rs256.token(user),
}


async def owner_of(database: Database, session_id: str) -> str | None:
    async with database.read() as conn:
        result = await conn.execute(
            select(chat_sessions.c.user_id).where(chat_sessions.c.session_id == session_id)
        )
        owner: str | None = result.scalar_one()
    return owner


@pytest.mark.parametrize("algorithm", list(TOKENS))
async def test_each_kind_of_token_works_end_to_end(
    auth_client: httpx.AsyncClient, database: Database, jwks: Jwks, algorithm: str
) -> None:
    user = f"user-{algorithm.lower()}"
    headers = bearer(TOKENS[algorithm](jwks, user))

    sent = await auth_client.post(CHAT, json={"message": "hello there"}, headers=headers)
    assert sent.status_code == 200, sent.text
    session_id = sent.json()["session_id"]
    streamed = await auth_client.post(
        STREAM, json={"message": "and again", "session_id": session_id}, headers=headers
    )
    assert streamed.status_code == 200, streamed.text
    listed = await auth_client.get(SESSIONS, headers=headers)
    detail = await auth_client.get(session_url(session_id), headers=headers)

    assert listed.status_code == 200, listed.text
    assert [s["session_id"] for s in listed.json()["sessions"]] == [session_id]
    assert detail.status_code == 200, detail.text
    assert [m["content"] for m in detail.json()["messages"] if m["role"] == "user"] == [
        "hello there",
        "and again",
    ]
    assert await owner_of(database, session_id) == user


@pytest.mark.parametrize("path", [CHAT, STREAM])
async def test_a_user_naming_another_user_in_the_body_is_forbidden(
    auth_client: httpx.AsyncClient, database: Database, path: str
) -> None:
    response = await auth_client.post(
        path,
        json={"message": "as alice", "user_id": "alice"},
        headers=bearer(hs256_token("bob")),
    )

    assert response.status_code == 403, response.text
    assert response.json() == {"detail": "user_id may only name yourself"}
    assert await count_rows(database) == (0, 0)


@pytest.mark.parametrize("path", [CHAT, STREAM])
async def test_a_user_naming_themselves_in_the_body_is_fine(
    auth_client: httpx.AsyncClient, database: Database, path: str
) -> None:
    response = await auth_client.post(
        path,
        json={"message": "as myself", "user_id": "bob", "session_id": "bobs-own"},
        headers=bearer(hs256_token("bob")),
    )

    assert response.status_code == 200, response.text
    assert await owner_of(database, "bobs-own") == "bob"


async def test_only_the_service_may_list_another_users_sessions(
    auth_client: httpx.AsyncClient, jwks: Jwks
) -> None:
    alice, bob = bearer(hs256_token("alice")), bearer(jwks.es256.token("bob"))
    service = bearer(jwks.rs256.token("backend", role="service_role"))
    for headers, session_id in ((alice, "alices"), (bob, "bobs")):
        sent = await auth_client.post(
            CHAT, json={"message": "hi", "session_id": session_id}, headers=headers
        )
        assert sent.status_code == 200, sent.text

    bob_for_alice = await auth_client.get(SESSIONS, params={"user_id": "alice"}, headers=bob)
    bob_for_bob = await auth_client.get(SESSIONS, params={"user_id": "bob"}, headers=bob)
    service_for_alice = await auth_client.get(
        SESSIONS, params={"user_id": "alice"}, headers=service
    )

    assert bob_for_alice.status_code == 403, bob_for_alice.text
    assert bob_for_alice.json() == {"detail": "user_id may only name yourself"}
    assert bob_for_bob.status_code == 200, bob_for_bob.text
    assert [s["session_id"] for s in bob_for_bob.json()["sessions"]] == ["bobs"]
    assert service_for_alice.status_code == 200, service_for_alice.text
    assert [s["session_id"] for s in service_for_alice.json()["sessions"]] == ["alices"]


async def test_open_mode_needs_no_token_and_ignores_one(
    client: httpx.AsyncClient, live_server: LiveServer
) -> None:
    assert live_server.app.state.token_verifier is None
    garbage = bearer("not-a-jwt")

    plain = await client.post(CHAT, json={"message": "no token", "user_id": "alice"})
    with_token = await client.post(
        CHAT, json={"message": "a bad token", "user_id": "bob"}, headers=garbage
    )
    streamed = await client.post(STREAM, json={"message": "streamed"}, headers=garbage)
    listed = await client.get(SESSIONS, headers=garbage)
    only_bob = await client.get(SESSIONS, params={"user_id": "bob"})

    for response in (plain, with_token, streamed, listed, only_bob):
        assert response.status_code == 200, response.text
    ids = {plain.json()["session_id"], with_token.json()["session_id"]}
    assert ids <= {s["session_id"] for s in listed.json()["sessions"]}
    assert listed.json()["total"] == 3
    assert [s["session_id"] for s in only_bob.json()["sessions"]] == [
        with_token.json()["session_id"]
    ]
    for session_id in ids:
        detail = await client.get(session_url(session_id), headers=garbage)
        assert detail.status_code == 200, detail.text
        deleted = await client.delete(session_url(session_id))
        assert deleted.status_code == 204, deleted.text


async def test_an_unreachable_jwks_is_a_503_not_a_401(
    migrated_url: str, database: Database, jwks: Jwks
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/jwks.json"
    settings = make_settings(
        migrated_url,
        auth_jwt_secret=JWT_SECRET,
        auth_jwks_url=closed,
        auth_issuer=ISSUER,
        rate_limit_enabled=False,
    )
    async with serve(create_app(settings)) as live:
        by_key = await live.client.get(SESSIONS, headers=bearer(jwks.es256.token("alice")))
        by_secret = await live.client.get(SESSIONS, headers=bearer(hs256_token("alice")))

    assert by_key.status_code == 503, by_key.text
    assert by_key.json() == {"detail": "Token verification is temporarily unavailable"}
    assert "WWW-Authenticate" not in by_key.headers
    assert by_secret.status_code == 200, by_secret.text
