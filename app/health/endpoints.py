"""Liveness and readiness probes for orchestrators and load balancers, and the metrics a
Prometheus server scrapes (METRICS_ENABLED)."""

import logging

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncEngine

from app.deps import DatabaseDep
from app.kit import metrics
from app.kit.db import migrate
from app.kit.error_responses import error_responses

logger = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


class HealthStatus(BaseModel):
    status: str


@router.get("/healthz", summary="The process is up")
async def healthz() -> HealthStatus:
    return HealthStatus(status="ok")


@router.get(
    "/readyz",
    summary="The database is reachable and its schema is this version's",
    response_model=HealthStatus,
    responses=error_responses(
        503,
        descriptions={
            503: "The database (or the read replica, DATABASE_READ_URL) cannot be reached, or "
            "its migrations are behind this version's (then `detail` names both revisions)."
        },
    ),
)
async def readyz(db: DatabaseDep) -> HealthStatus | JSONResponse:
    engines = [("Database", db.engine)]
    if db.read_engine is not None:
        engines.append(("Read replica (DATABASE_READ_URL)", db.read_engine))
    for name, engine in engines:
        problem = await _schema_problem(engine)
        if problem is not None:
            logger.warning("readiness check failed: %s", f"{name} {problem}")
            return JSONResponse({"detail": f"{name} {problem}"}, status_code=503)
    return HealthStatus(status="ok")


async def _schema_problem(engine: AsyncEngine) -> str | None:
    """Why this database cannot serve this version (None: it can)."""
    try:
        revision = await migrate.schema_revision(engine)
    except Exception:
        logger.warning("database unreachable", exc_info=True)
        return "unreachable"
    head = migrate.head_revision()
    if revision != head:
        # Serving would fail on what the missing migrations add (a replica deployed before
        # `make migrate` ran, with MIGRATE_ON_STARTUP off; a read replica behind on them).
        return (
            f"schema is at {revision or 'no revision'}; this version needs {head}: "
            "apply the migrations (make migrate)"
        )
    return None


# Installed only when METRICS_ENABLED is true: otherwise /metrics is a 404 like any unknown path.
metrics_router = APIRouter(tags=["health"])


@metrics_router.get(
    "/metrics",
    summary="Metrics in Prometheus' text format",
    response_class=Response,
    responses={
        200: {
            "description": "Requests by route and status with latency histograms, streams and "
            "replies in progress, time to first token, upstream errors by kind, tokens in and "
            "out, database pool use, rate-limit refusals.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
async def prometheus_metrics(db: DatabaseDep) -> Response:
    body, content_type = metrics.exposition(db.pool_use(), db.pool_use(replica=True))
    return Response(body, media_type=content_type)
