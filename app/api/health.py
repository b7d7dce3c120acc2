"""Liveness and readiness probes for orchestrators and load balancers."""

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from app.api.deps import DatabaseDep
from app.api.errors import error_responses

logger = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


class HealthStatus(BaseModel):
    status: str


@router.get("/healthz", summary="The process is up")
async def healthz() -> HealthStatus:
    return HealthStatus(status="ok")


@router.get(
    "/readyz",
    summary="The database is reachable",
    response_model=HealthStatus,
    responses=error_responses(503, descriptions={503: "The database cannot be reached."}),
)
async def readyz(db: DatabaseDep) -> HealthStatus | JSONResponse:
    try:
        await db.ping()
    except Exception:
        logger.warning("readiness check failed: database unreachable", exc_info=True)
        return JSONResponse({"detail": "Database unreachable"}, status_code=503)
    return HealthStatus(status="ok")
