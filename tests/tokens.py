"""Supabase-style access tokens for tests: HS256 with a shared secret, or ES256/RS256 signed by
keys published from a real JWKS endpoint served on loopback."""

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

JWT_SECRET = "test-secret-that-is-at-least-32-bytes-long!"
AUDIENCE = "authenticated"
ISSUER = "http://127.0.0.1/auth/v1"


def claims_for(
    user_id: str, *, role: str = "authenticated", expires_in: int = 3600, **extra: Any
) -> dict[str, Any]:
    """The claims Supabase puts in an access token."""
    now = int(time.time())
    return {
        "sub": user_id,
        "role": role,
        "aud": AUDIENCE,
        "iss": ISSUER,
        "iat": now,
        "exp": now + expires_in,
        "session_id": str(uuid.uuid4()),
        "email": f"{user_id}@example.com",
        **extra,
    }


def hs256_token(user_id: str, *, secret: str = JWT_SECRET, **claims: Any) -> str:
    """A token signed with the project's legacy shared secret."""
    return jwt.encode(claims_for(user_id, **claims), secret, algorithm="HS256")


@dataclass
class SigningKey:
    kid: str
    algorithm: str
    private_key: Any

    def public_jwk(self) -> dict[str, Any]:
        algorithm = ECAlgorithm if self.algorithm == "ES256" else RSAAlgorithm
        jwk: dict[str, Any] = json.loads(algorithm.to_jwk(self.private_key.public_key()))
        return {**jwk, "kid": self.kid, "alg": self.algorithm, "use": "sig"}

    def token(self, user_id: str, **claims: Any) -> str:
        return jwt.encode(
            claims_for(user_id, **claims),
            self.private_key,
            algorithm=self.algorithm,
            headers={"kid": self.kid},
        )


def new_signing_key(algorithm: str = "ES256") -> SigningKey:
    if algorithm == "ES256":
        private_key: Any = ec.generate_private_key(ec.SECP256R1())
    else:
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return SigningKey(kid=uuid.uuid4().hex, algorithm=algorithm, private_key=private_key)


@dataclass
class JwksServer:
    """A JWKS endpoint on loopback; `keys` can be changed (rotated) while it runs."""

    keys: list[SigningKey] = field(default_factory=list)
    url: str = ""
    requests: int = 0


@contextmanager
def serve_jwks(*keys: SigningKey) -> Iterator[JwksServer]:
    state = JwksServer(keys=list(keys))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests += 1
            body = json.dumps({"keys": [key.public_jwk() for key in state.keys]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/auth/v1/.well-known/jwks.json"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
