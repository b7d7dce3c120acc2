"""Bearer-token verification (no database): the keys, the claims, and the JWKS cache."""

import asyncio
import base64
import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from app.auth.tokens import InvalidToken, SigningKeysUnavailable, TokenVerifier
from app.config import Settings
from app.domain import USER_ID_MAX_CHARS
from tests.tokens import (
    AUDIENCE,
    ISSUER,
    JWT_SECRET,
    JwksServer,
    SigningKey,
    claims_for,
    hs256_token,
    new_signing_key,
    serve_jwks,
)


@pytest.fixture(scope="module")
def es_key() -> SigningKey:
    return new_signing_key("ES256")


@pytest.fixture(scope="module")
def rs_key() -> SigningKey:
    return new_signing_key("RS256")


@pytest.fixture(scope="module")
def jwks(es_key: SigningKey, rs_key: SigningKey) -> Iterator[JwksServer]:
    """One JWKS endpoint publishing both keys (stopping one takes half a second). Each test
    builds its own verifier, so caches are never shared; request counts are compared as
    differences."""
    with serve_jwks(es_key, rs_key) as server:
        yield server


def verifier(
    *,
    secret: str | None = None,
    jwks_url: str | None = None,
    issuer: str | None = None,
    audience: str = AUDIENCE,
) -> TokenVerifier:
    return TokenVerifier(
        Settings(
            _env_file=None,
            auth_jwt_secret=secret,
            auth_jwks_url=jwks_url,
            auth_issuer=issuer,
            auth_audience=audience,
        )
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _segment(value: dict[str, Any]) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode())


def unsigned_token(claims: dict[str, Any]) -> str:
    """An `alg: none` token: no signature at all."""
    return f"{_segment({'alg': 'none', 'typ': 'JWT'})}.{_segment(claims)}."


def hmac_token(
    header: dict[str, Any],
    claims: dict[str, Any],
    secret: bytes,
    digest: Callable[[], Any] = hashlib.sha256,
) -> str:
    """An HMAC-signed token made by hand (PyJWT refuses PEM keys as HMAC secrets)."""
    signing_input = f"{_segment(header)}.{_segment(claims)}"
    signature = hmac.new(secret, signing_input.encode("ascii"), digest).digest()
    return f"{signing_input}.{_b64(signature)}"


def signed_with(key: SigningKey, claims: dict[str, Any], *, kid: str | None = None) -> str:
    return jwt.encode(
        claims, key.private_key, algorithm=key.algorithm, headers={"kid": kid or key.kid}
    )


def closed_port_url() -> str:
    """A URL nothing listens on: the port was free a moment ago and is closed again."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/auth/v1/.well-known/jwks.json"


@contextmanager
def hooked_jwks(keys: list[SigningKey], before_answer: Callable[[], None]) -> Iterator[str]:
    """A JWKS endpoint that calls `before_answer` (on its own thread) before each answer."""
    body = json.dumps({"keys": [key.public_jwk() for key in keys]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            before_answer()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# --- Valid tokens -------------------------------------------------------------------------


async def test_a_sub_as_long_as_a_user_id_may_be_verifies() -> None:
    subject = "u" * USER_ID_MAX_CHARS

    token = await verifier(secret=JWT_SECRET).verify(hs256_token(subject))

    assert token.subject == subject


async def test_hs256_token_verifies() -> None:
    token = await verifier(secret=JWT_SECRET).verify(hs256_token("alice"))

    assert token.subject == "alice"
    assert token.role == "authenticated"
    assert not token.is_service
    assert token.claims["email"] == "alice@example.com"


@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
async def test_asymmetric_tokens_verify_against_the_jwks(
    jwks: JwksServer, es_key: SigningKey, rs_key: SigningKey, algorithm: str
) -> None:
    key = es_key if algorithm == "ES256" else rs_key

    token = await verifier(jwks_url=jwks.url).verify(key.token("bob"))

    assert token.subject == "bob"
    assert token.role == "authenticated"
    assert not token.is_service


async def test_service_role_marks_a_trusted_caller(jwks: JwksServer, es_key: SigningKey) -> None:
    checker = verifier(secret=JWT_SECRET, jwks_url=jwks.url)

    by_secret = await checker.verify(hs256_token("svc", role="service_role"))
    by_key = await checker.verify(es_key.token("svc", role="service_role"))

    for token in (by_secret, by_key):
        assert token.subject == "svc"
        assert token.role == "service_role"
        assert token.is_service


async def test_a_role_that_is_not_a_string_is_no_role() -> None:
    claims = {**claims_for("alice"), "role": ["service_role"]}

    token = await verifier(secret=JWT_SECRET).verify(jwt.encode(claims, JWT_SECRET, "HS256"))

    assert token.role is None
    assert not token.is_service


async def test_any_issuer_is_accepted_when_none_is_configured() -> None:
    checker = verifier(secret=JWT_SECRET, issuer=None)

    token = await checker.verify(hs256_token("alice", iss="https://elsewhere.example/auth/v1"))

    assert token.subject == "alice"


async def test_the_configured_issuer_is_accepted() -> None:
    token = await verifier(secret=JWT_SECRET, issuer=ISSUER).verify(hs256_token("alice"))

    assert token.subject == "alice"


async def test_the_audience_is_configurable() -> None:
    checker = verifier(secret=JWT_SECRET, audience="my-api")

    assert (await checker.verify(hs256_token("alice", aud="my-api"))).subject == "alice"
    with pytest.raises(InvalidToken):
        await checker.verify(hs256_token("alice"))  # aud "authenticated"


# --- Rejected tokens ----------------------------------------------------------------------


def _without(claim: str) -> dict[str, Any]:
    claims = claims_for("alice")
    del claims[claim]
    return claims


def _tampered(token: str) -> str:
    header, _, signature = token.split(".")
    return f"{header}.{_segment(claims_for('mallory'))}.{signature}"


def _with_header(token: str, header: dict[str, Any]) -> str:
    _, payload, signature = token.split(".")
    return f"{_segment(header)}.{payload}.{signature}"


REJECTED_BY_SECRET_VERIFIER: dict[str, Callable[[], str]] = {
    "expired": lambda: hs256_token("alice", expires_in=-60),
    "wrong secret": lambda: hs256_token("alice", secret="another-secret-of-at-least-32-bytes!!"),
    "wrong audience": lambda: hs256_token("alice", aud="someone-else"),
    "wrong issuer": lambda: hs256_token("alice", iss="https://evil.example/auth/v1"),
    "no issuer": lambda: jwt.encode(_without("iss"), JWT_SECRET, "HS256"),
    "no audience": lambda: jwt.encode(_without("aud"), JWT_SECRET, "HS256"),
    "no exp": lambda: jwt.encode(_without("exp"), JWT_SECRET, "HS256"),
    "no sub": lambda: jwt.encode(_without("sub"), JWT_SECRET, "HS256"),
    "empty sub": lambda: hs256_token(""),
    "sub with NUL": lambda: hs256_token("ali\x00ce"),
    "sub with an unpaired surrogate": lambda: hs256_token("ali\ud800ce"),
    "sub longer than a user id": lambda: hs256_token("u" * (USER_ID_MAX_CHARS + 1)),
    "non-string sub": lambda: jwt.encode({**claims_for("x"), "sub": 42}, JWT_SECRET, "HS256"),
    "alg none": lambda: unsigned_token(claims_for("alice")),
    "alg none with a signature": lambda: unsigned_token(claims_for("alice")) + "c2lnbmF0dXJl",
    "HS384 with the right secret": lambda: hmac_token(
        {"alg": "HS384", "typ": "JWT"}, claims_for("alice"), JWT_SECRET.encode(), hashlib.sha384
    ),
    "tampered payload": lambda: _tampered(hs256_token("alice")),
    "empty string": lambda: "",
    "garbage": lambda: "abc",
    "three garbage segments": lambda: "a.b.c",
    "header only": lambda: _segment({"alg": "HS256", "typ": "JWT"}),
}


@pytest.mark.parametrize(
    "make_token", REJECTED_BY_SECRET_VERIFIER.values(), ids=list(REJECTED_BY_SECRET_VERIFIER)
)
async def test_rejected_tokens(make_token: Callable[[], str]) -> None:
    checker = verifier(secret=JWT_SECRET, issuer=ISSUER)
    assert (await checker.verify(hs256_token("alice"))).subject == "alice"

    with pytest.raises(InvalidToken):
        await checker.verify(make_token())


async def test_hs256_token_is_rejected_when_only_a_jwks_is_configured(
    jwks: JwksServer, es_key: SigningKey
) -> None:
    checker = verifier(jwks_url=jwks.url)
    assert (await checker.verify(es_key.token("alice"))).subject == "alice"

    with pytest.raises(InvalidToken):
        await checker.verify(hs256_token("alice"))


async def test_asymmetric_token_is_rejected_when_only_a_secret_is_configured(
    es_key: SigningKey, rs_key: SigningKey
) -> None:
    checker = verifier(secret=JWT_SECRET)

    for key in (es_key, rs_key):
        with pytest.raises(InvalidToken):
            await checker.verify(key.token("alice"))


async def test_token_signed_by_a_key_not_in_the_jwks_is_rejected(jwks: JwksServer) -> None:
    stranger = new_signing_key("ES256")

    with pytest.raises(InvalidToken):
        await verifier(jwks_url=jwks.url).verify(stranger.token("alice"))


@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
async def test_known_kid_with_a_signature_by_another_key_is_rejected(
    jwks: JwksServer, es_key: SigningKey, rs_key: SigningKey, algorithm: str
) -> None:
    published = es_key if algorithm == "ES256" else rs_key
    impostor = new_signing_key(algorithm)
    forged = signed_with(impostor, claims_for("alice"), kid=published.kid)
    checker = verifier(jwks_url=jwks.url)
    assert (await checker.verify(published.token("alice"))).subject == "alice"

    with pytest.raises(InvalidToken):
        await checker.verify(forged)


@pytest.mark.parametrize(("signer", "named"), [("ES256", "RS256"), ("RS256", "ES256")])
async def test_token_naming_the_kid_of_a_key_of_another_type_is_rejected(
    jwks: JwksServer, es_key: SigningKey, rs_key: SigningKey, signer: str, named: str
) -> None:
    keys = {"ES256": es_key, "RS256": rs_key}
    forged = signed_with(keys[signer], claims_for("alice"), kid=keys[named].kid)

    with pytest.raises(InvalidToken):
        await verifier(jwks_url=jwks.url).verify(forged)


@pytest.mark.parametrize("kid", [None, "", 7], ids=["no-kid", "empty-kid", "int-kid"])
async def test_asymmetric_token_without_a_usable_kid_is_rejected(
    jwks: JwksServer, es_key: SigningKey, kid: object
) -> None:
    header: dict[str, Any] = {"alg": "ES256", "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    token = _with_header(es_key.token("alice"), header)
    checker = verifier(jwks_url=jwks.url)
    assert (await checker.verify(es_key.token("alice"))).subject == "alice"

    with pytest.raises(InvalidToken):
        await checker.verify(token)


@pytest.mark.parametrize("secret", [JWT_SECRET, None], ids=["secret-and-jwks", "jwks-only"])
async def test_algorithm_confusion_with_the_public_key_as_hmac_secret_is_rejected(
    jwks: JwksServer, rs_key: SigningKey, secret: str | None
) -> None:
    public_pem = rs_key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": rs_key.kid}
    forged = hmac_token(header, claims_for("alice", role="service_role"), public_pem)
    checker = verifier(secret=secret, jwks_url=jwks.url)
    if secret is not None:
        # The same construction with the real secret passes: the forgery fails on its key only.
        genuine = hmac_token(header, claims_for("alice"), JWT_SECRET.encode())
        assert (await checker.verify(genuine)).subject == "alice"

    with pytest.raises(InvalidToken):
        await checker.verify(forged)


# --- The JWKS: cached, refreshed for new keys (throttled), fetched off the event loop ------


async def test_many_verifications_fetch_the_jwks_once(
    jwks: JwksServer, es_key: SigningKey, rs_key: SigningKey
) -> None:
    before = jwks.requests
    checker = verifier(jwks_url=jwks.url)

    for index in range(20):
        key = es_key if index % 2 else rs_key
        assert (await checker.verify(key.token(f"user-{index}"))).subject == f"user-{index}"

    assert jwks.requests - before == 1


async def test_a_rotated_in_key_is_picked_up_with_one_refetch(
    jwks: JwksServer, es_key: SigningKey
) -> None:
    new_key = new_signing_key("ES256")
    before = jwks.requests
    checker = verifier(jwks_url=jwks.url)
    await checker.verify(es_key.token("alice"))
    assert jwks.requests - before == 1

    jwks.keys.append(new_key)
    try:
        assert (await checker.verify(new_key.token("bob"))).subject == "bob"
        assert jwks.requests - before == 2

        # Both keys are cached now.
        await checker.verify(new_key.token("bob"))
        await checker.verify(es_key.token("alice"))
        assert jwks.requests - before == 2
    finally:
        jwks.keys.remove(new_key)


async def test_a_burst_of_unknown_kids_refetches_at_most_once(
    jwks: JwksServer, es_key: SigningKey
) -> None:
    before = jwks.requests
    checker = verifier(jwks_url=jwks.url)
    await checker.verify(es_key.token("alice"))
    assert jwks.requests - before == 1
    forged = [signed_with(es_key, claims_for("x"), kid=uuid.uuid4().hex) for _ in range(30)]

    results = await asyncio.gather(
        *(checker.verify(token) for token in forged), return_exceptions=True
    )

    assert all(isinstance(result, InvalidToken) for result in results), results
    assert jwks.requests - before <= 2
    # Known keys still verify, from the cache.
    await checker.verify(es_key.token("alice"))
    assert jwks.requests - before <= 2


async def test_unreachable_jwks_is_a_server_side_failure(es_key: SigningKey) -> None:
    checker = verifier(secret=JWT_SECRET, jwks_url=closed_port_url())

    with pytest.raises(SigningKeysUnavailable):
        await checker.verify(es_key.token("alice"))
    # The shared secret does not need the JWKS.
    assert (await checker.verify(hs256_token("alice"))).subject == "alice"


async def test_the_jwks_is_fetched_off_the_event_loop(es_key: SigningKey) -> None:
    """The JWKS endpoint answers only once the event loop has run while the request is in
    flight. A fetch on the loop thread would block the loop: the endpoint would give up
    waiting (`released` False) before the loop could tell it to answer."""
    loop = asyncio.get_running_loop()
    request_seen = asyncio.Event()
    release = threading.Event()
    released: list[bool] = []

    def before_answer() -> None:
        loop.call_soon_threadsafe(request_seen.set)
        released.append(release.wait(timeout=5))

    with hooked_jwks([es_key], before_answer) as url:
        verification = asyncio.create_task(verifier(jwks_url=url).verify(es_key.token("alice")))
        await asyncio.wait_for(request_seen.wait(), timeout=10)
        release.set()
        token = await verification

    assert token.subject == "alice"
    assert released == [True]


async def test_concurrent_verifications_on_a_cold_cache_fetch_the_jwks_once(
    es_key: SigningKey,
) -> None:
    requests: list[float] = []

    def slow_answer() -> None:
        requests.append(time.monotonic())
        time.sleep(0.3)  # a remote JWKS endpoint, not loopback

    with hooked_jwks([es_key], slow_answer) as url:
        checker = verifier(jwks_url=url)
        tokens = [es_key.token(f"user-{index}") for index in range(8)]
        verified = await asyncio.gather(*(checker.verify(token) for token in tokens))

    assert [token.subject for token in verified] == [f"user-{index}" for index in range(8)]
    assert len(requests) == 1
