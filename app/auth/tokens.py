"""Bearer-token verification, as a Supabase backend does it.

Two kinds of signing key, either or both configured:
- the project's legacy shared secret (HS256), `AUTH_JWT_SECRET`;
- asymmetric signing keys (ES256, RS256) published as a JWKS, `AUTH_JWKS_URL`, fetched
  off the event loop and cached.
"""

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import jwt

from app.config import Settings
from app.domain import user_id_problem

logger = logging.getLogger(__name__)

SERVICE_ROLE = "service_role"
_ASYMMETRIC_ALGORITHMS = ("ES256", "RS256")
_SHARED_SECRET_ALGORITHMS = ("HS256",)
_REFETCH_INTERVAL_SECONDS = 30.0


class InvalidToken(Exception):
    """The token is missing, malformed, expired, for someone else, or wrongly signed.

    The message is for the logs; clients are told only that the token was rejected.
    """


class SigningKeysUnavailable(Exception):
    """The JWKS could not be fetched: a server-side problem, not the client's."""


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    subject: str
    role: str | None
    claims: dict[str, Any]

    @property
    def is_service(self) -> bool:
        return self.role == SERVICE_ROLE


class TokenVerifier:
    def __init__(self, settings: Settings) -> None:
        self._secret = (
            settings.auth_jwt_secret.get_secret_value() if settings.auth_jwt_secret else None
        )
        self._jwks = (
            jwt.PyJWKClient(
                settings.auth_jwks_url,
                cache_keys=True,
                lifespan=max(settings.auth_jwks_cache_seconds, 1),
                timeout=10,
            )
            if settings.auth_jwks_url
            else None
        )
        self._last_refetch = -_REFETCH_INTERVAL_SECONDS
        self._jwks_lock = threading.Lock()
        self._audience = settings.auth_audience
        self._issuer = settings.auth_issuer

    async def verify(self, token: str) -> VerifiedToken:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"malformed token: {exc}") from exc
        algorithm = header.get("alg")
        if algorithm in _SHARED_SECRET_ALGORITHMS and self._secret is not None:
            key: Any = self._secret
            algorithms = list(_SHARED_SECRET_ALGORITHMS)
        elif algorithm in _ASYMMETRIC_ALGORITHMS and self._jwks is not None:
            key = await self._signing_key(header.get("kid"), algorithm)
            algorithms = [algorithm]
        else:
            raise InvalidToken(f"no verification key configured for alg {algorithm!r}")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "sub"]},
            )
        except (jwt.PyJWTError, TypeError, ValueError) as exc:
            # TypeError/ValueError: key material that does not fit the algorithm.
            raise InvalidToken(f"rejected token: {exc!r}") from exc
        subject = claims.get("sub")
        if not isinstance(subject, str):
            raise InvalidToken("the sub claim is not a string")
        # It becomes the caller's user_id: a sub that could not be one is no identity here.
        problem = user_id_problem(subject)
        if problem is not None:
            raise InvalidToken(f"the sub claim {problem}")
        role = claims.get("role")
        return VerifiedToken(
            subject=subject, role=role if isinstance(role, str) else None, claims=claims
        )

    async def _signing_key(self, kid: object, algorithm: str) -> Any:
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("the token names no signing key (kid)")
        try:
            # PyJWKClient fetches with blocking urllib: keep it off the event loop.
            key = await asyncio.to_thread(self._find_signing_key, kid)
        except jwt.PyJWKClientConnectionError as exc:
            raise SigningKeysUnavailable(str(exc)) from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"no usable signing key: {exc}") from exc
        # A key is only good for its own algorithm (kids are public: anyone can name one).
        if key.algorithm_name != algorithm:
            raise InvalidToken(f"key {kid!r} is for {key.algorithm_name}, not {algorithm}")
        return key.key

    def _find_signing_key(self, kid: str) -> jwt.PyJWK:
        """The key for `kid`. An unknown kid refetches the JWKS (keys rotate), but at most
        once per `_REFETCH_INTERVAL`, so tokens with made-up kids cannot flood the issuer."""
        assert self._jwks is not None
        # One fetch at a time: requests arriving on a cold cache wait for it, not refetch.
        with self._jwks_lock:
            key = self._jwks.match_kid(self._jwks.get_signing_keys(), kid)
            now = time.monotonic()
            if key is None and now - self._last_refetch >= _REFETCH_INTERVAL_SECONDS:
                self._last_refetch = now
                key = self._jwks.match_kid(self._jwks.get_signing_keys(refresh=True), kid)
        if key is None:
            raise InvalidToken(f"unknown signing key {kid!r}")
        return key
