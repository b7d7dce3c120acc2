"""Which database errors mean "unavailable for now" (overloaded, starting, down) rather than a
bug: those are answered 503 with `Retry-After` (app/kit/http/request_context.py).

SQLAlchemy wraps the driver's exception (`DBAPIError.orig`), and its asyncpg adapter wraps
asyncpg's in turn (`__cause__`, with the SQLSTATE as `sqlstate`); the whole chain is walked.
SQLite's "database is locked", after SQLITE_BUSY_TIMEOUT_MS of waiting for another process's
write, is the same overload as a pool wait timing out, and is answered alike. So are
PostgreSQL's deadlock and serialization failures: two writes that crossed, of which the server
undid one; the same request again succeeds.
"""

import sqlite3
from types import TracebackType
from typing import Literal

import sqlalchemy.exc

# Seconds a client should wait after a 503 for an unavailable database: a pool wait that timed
# out or a refused connection usually clears within a second or two (requests finish, a
# restart completes); longer would idle clients that a retry would serve.
RETRY_AFTER_SECONDS = 2
DETAIL = "The database is busy or unavailable; try again shortly"

Reason = Literal[
    "pool_timeout",
    "too_many_connections",
    "starting",
    "unreachable",
    "locked",
    "deadlock",
    "serialization",
]

# SQLSTATEs of a server refusing new connections: too_many_connections (max_connections or a
# role's CONNECTION LIMIT), cannot_connect_now (starting up or shutting down); and of a
# transaction it undid because it crossed another: deadlock_detected (each waited for a row
# the other held), serialization_failure (a snapshot's row changed under it). The writes
# lock rows in one order where they can; a crossing left is rare, and its 500 would be wrong.
_SQLSTATES: dict[str, Reason] = {
    "53300": "too_many_connections",
    "57P03": "starting",
    "40P01": "deadlock",
    "40001": "serialization",
}


def unavailable_reason(exc: BaseException) -> Reason | None:
    """Why the database could not serve `exc`'s request for now; None: not that kind of error."""
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return unavailable_reason(exc.exceptions[0])
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sqlalchemy.exc.TimeoutError):  # QueuePool limit ... timed out
            return "pool_timeout"
        sqlstate = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if sqlstate in _SQLSTATES:
            return _SQLSTATES[sqlstate]
        if isinstance(current, sqlite3.OperationalError) and "database is locked" in str(current):
            return "locked"
        # Connection refused or reset while connecting: the server is down or unreachable.
        # SQLAlchemy lets asyncpg's OSError through unwrapped, so it is told from the app's own
        # (a file, a socket to the model) by where it was raised.
        if isinstance(current, OSError) and _raised_by_the_driver(current):
            return "unreachable"
        current = (
            current.orig
            if isinstance(current, sqlalchemy.exc.DBAPIError) and current.orig is not None
            else current.__cause__ or current.__context__
        )
    return None


_DRIVER_MODULES = ("asyncpg.", "sqlalchemy.")


def _raised_by_the_driver(exc: BaseException) -> bool:
    traceback: TracebackType | None = exc.__traceback__
    while traceback is not None:
        module = str(traceback.tb_frame.f_globals.get("__name__", ""))
        if module.startswith(_DRIVER_MODULES):
            return True
        traceback = traceback.tb_next
    return False
