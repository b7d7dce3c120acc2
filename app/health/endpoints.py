"""Liveness and readiness probes for orchestrators and load balancers, and the metrics a
Prometheus server scrapes (METRICS_ENABLED)."""

import logging

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

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
            503: "The database cannot be reached, or its migrations are behind this version's "
            "(then `detail` names both revisions)."
        },
    ),
)
async def readyz(db: DatabaseDep) -> HealthStatus | JSONResponse:
    try:
        revision = await migrate.schema_revision(db.engine)
    except Exception:
        logger.warning("readiness check failed: database unreachable", exc_info=True)
        return JSONResponse({"detail": "Database unreachable"}, status_code=503)
    head = migrate.head_revision()
    if revision != head:
        # Serving would fail on what the missing migrations add (a replica deployed before
        # `make migrate` ran, with MIGRATE_ON_STARTUP off).
        detail = (
            f"Database schema is at {revision or 'no revision'}; this version needs {head}: "
            "apply the migrations (make migrate)"
        )
        logger.warning("readiness check failed: %s", detail)
        return JSONResponse({"detail": detail}, status_code=503)
    return HealthStatus(status="ok")


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
    in_use, idle = db.pool_use()
    body, content_type = metrics.exposition(in_use, idle)
    return Response(body, media_type=content_type)
