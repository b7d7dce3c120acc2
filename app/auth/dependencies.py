"""The dependency that verifies a request's bearer token and makes its `Caller`."""

import logging
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.auth.access import Caller
from app.auth.tokens import InvalidToken, SigningKeysUnavailable, TokenVerifier
from app.kit.errors import AuthUnavailable, NotAuthenticated
from app.kit.logging import note_user

logger = logging.getLogger(__name__)


class _BearerCaller(HTTPBearer):
    """The `Caller` of a request, as one dependency: an `HTTPBearer` (the security scheme of
    the OpenAPI document, under the same name) that verifies the token it reads. A separate
    dependency for the token cost FastAPI a second one to solve per request."""

    async def __call__(self, request: Request) -> Caller:  # type: ignore[override]
        return await get_caller(request, await super().__call__(request))


async def get_caller(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Caller:
    """The verified caller; in open mode (no verification key configured) anyone."""
    verifier: TokenVerifier | None = request.app.state.token_verifier
    if verifier is None:
        return Caller.open_mode()
    if credentials is None:
        raise NotAuthenticated()
    try:
        token = await verifier.verify(credentials.credentials)
    except InvalidToken as exc:
        logger.info("rejected bearer token: %s", exc)
        raise NotAuthenticated() from None
    except SigningKeysUnavailable as exc:
        logger.error("cannot fetch the JWKS to verify a token: %s", exc)
        raise AuthUnavailable() from None
    note_user(token.subject)
    if token.is_service:
        return Caller.service(token.subject)
    return Caller.user(token.subject)


CallerDep = Annotated[
    Caller,
    Depends(
        _BearerCaller(
            auto_error=False,
            scheme_name="HTTPBearer",
            description=(
                "A Supabase access token (JWT). Required unless the service runs in open mode."
            ),
        )
    ),
]
