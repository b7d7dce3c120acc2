"""Which `Host` names the service answers to: its defence against DNS rebinding.

A web page cannot read another site's responses, but it can point its own host name at
127.0.0.1 once it has loaded (DNS rebinding) and then read this service's answers as its own,
with the name it came from in `Host`. Open mode authenticates nobody, so by default it answers
only requests for loopback names, which no other site can bring a browser to send. IP addresses
are safe from rebinding too (a page addressed by IP is on that IP); with authentication a page
has no token to send, so any name is accepted unless ALLOWED_HOSTS narrows it.
"""

import ipaddress
from dataclasses import dataclass

from fastapi import status
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from app.config import Settings


@dataclass(frozen=True)
class HostPolicy:
    names: frozenset[str]
    ip_addresses: bool

    def allows(self, host: str) -> bool:
        if host == "localhost" or host in self.names:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return self.ip_addresses or address.is_loopback


def host_policy(settings: Settings) -> HostPolicy | None:
    """The names `settings` accept; None when any is."""
    if "*" in settings.allowed_hosts:
        return None
    if settings.auth_enabled and not settings.allowed_hosts:
        return None
    return HostPolicy(
        names=frozenset(settings.allowed_hosts),
        # The operator has opened open mode to a network, whose clients may use its addresses.
        ip_addresses=not settings.auth_enabled and settings.open_mode_allow_network,
    )


def host_name(header: bytes) -> str | None:
    """The name in a `Host` header without its port, lower case; None if it is malformed."""
    host = header.decode("latin-1").strip().lower()
    if host.startswith("["):
        name, bracket, port = host[1:].partition("]")
        if not bracket or (port and not (port.startswith(":") and port[1:].isdigit())):
            return None
        return name
    name, colon, port = host.partition(":")
    if colon and not port.isdigit():
        return None
    return name.removesuffix(".")


class HostCheckMiddleware:
    def __init__(self, app: ASGIApp, policy: HostPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            header = dict(scope["headers"]).get(b"host")
            # No Host at all comes only from HTTP/1.0 clients, never from a browser.
            name = None if header is None else host_name(header)
            if header is not None and (name is None or not self.policy.allows(name)):
                response = JSONResponse(
                    {
                        "detail": f"Host {header.decode('latin-1')[:100]!r} is not one this "
                        "service answers to (its operator can add it to ALLOWED_HOSTS)"
                    },
                    status_code=status.HTTP_400_BAD_REQUEST,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
