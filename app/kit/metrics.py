"""Prometheus metrics: one definition of each, and the `/metrics` exposition.

The metrics live in the client library's process-wide registry, as its instrumentation
pattern expects (a counter is incremented where the event happens, whichever app instance
sees it). With several worker processes (`PROMETHEUS_MULTIPROC_DIR` set, as `python -m app`
does for `WORKERS` > 1) each process writes its values to files there and a scrape of any
of them adds them up; gauges say how (`multiprocess_mode`).

Labels are bounded: routes are templates (`/api/v1/chat/sessions/{session_id}`), never raw
paths; statuses, kinds and directions are small fixed sets. No user id is ever a label.
"""

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

# Seconds; the default buckets stop at 10 s, and a streamed reply's request lasts longer.
_REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_FIRST_TOKEN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20, 30, 60)

HTTP_REQUESTS = Counter(
    "chat_http_requests",
    "HTTP requests answered, by route template, method and status.",
    ["method", "route", "status"],
)
HTTP_REQUEST_DURATION = Histogram(
    "chat_http_request_duration_seconds",
    "Time from a request's arrival to the end of its response (a stream: to its last event).",
    ["method", "route"],
    buckets=_REQUEST_BUCKETS,
)
STREAMS_IN_PROGRESS = Gauge(
    "chat_streams_in_progress",
    "Reply streams (Server-Sent Events) open to clients.",
    multiprocess_mode="livesum",
)
REPLIES_IN_PROGRESS = Gauge(
    "chat_replies_in_progress",
    "Replies being generated (streamed or plain), whether or not a client still listens.",
    multiprocess_mode="livesum",
)
REPLY_ENDS_UNSAVED = Gauge(
    "chat_reply_ends_unsaved",
    "Replies whose end could not be saved (the database was unavailable), kept in memory and "
    "written again at each heartbeat: generating in the database until then.",
    multiprocess_mode="livesum",
)
TIME_TO_FIRST_TOKEN = Histogram(
    "chat_time_to_first_token_seconds",
    "Time from the start of a reply's generation to its first token from the model.",
    buckets=_FIRST_TOKEN_BUCKETS,
)
UPSTREAM_ERRORS = Counter(
    "chat_upstream_errors",
    "Replies the model provider failed, by kind (unavailable, timeout).",
    ["kind"],
)
TOKENS = Counter(
    "chat_tokens",
    "Tokens the model provider reported, by direction (prompt: in, completion: out).",
    ["direction"],
)
RATE_LIMITED = Counter(
    "chat_rate_limit_refusals",
    "Requests refused by a rate limit (429), by limit.",
    ["limit"],
)
DB_UNAVAILABLE = Counter(
    "chat_db_unavailable",
    "Requests answered 503 because the database was unavailable, by reason (pool_timeout, "
    "too_many_connections, starting, unreachable, locked).",
    ["reason"],
)
DB_POOL_CONNECTIONS = Gauge(
    "chat_db_pool_connections",
    "Database connections of the pool, by state (in_use, idle), read at each scrape.",
    ["state"],
    multiprocess_mode="livesum",
)
DB_READ_POOL_CONNECTIONS = Gauge(
    "chat_db_read_pool_connections",
    "Read replica (DATABASE_READ_URL) connections of its pool, by state (in_use, idle), read "
    "at each scrape; absent without a replica.",
    ["state"],
    multiprocess_mode="livesum",
)

# (connections in use, idle connections) of a pool; None: a pool that does not count them.
PoolUse = tuple[int | None, int | None]


def exposition(pool: PoolUse, read_pool: PoolUse = (None, None)) -> tuple[bytes, str]:
    """The metrics as Prometheus' text format, and its content type. The pools' numbers
    are read by the caller at scrape time."""
    for gauge, (in_use, idle) in (
        (DB_POOL_CONNECTIONS, pool),
        (DB_READ_POOL_CONNECTIONS, read_pool),
    ):
        if in_use is not None and idle is not None:
            gauge.labels("in_use").set(in_use)
            gauge.labels("idle").set(idle)
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
