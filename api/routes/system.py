"""Health, statistics, metrics, configuration schema and API tokens."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field

from api.deps import Admin, ServicesDep, Viewer, health_reader, metrics_reader
from api.metrics import render
from mainstream.node.registry import TokenRecord
from mainstream.node.settings import settings_json_schema

router = APIRouter(tags=["system"])


class TokenCreate(BaseModel):
    role: Literal["admin", "viewer"]
    name: str | None = Field(default=None, max_length=128)


class CreatedToken(BaseModel):
    token: str = Field(description="The secret; shown once, only its hash is stored")
    record: TokenRecord


@router.get("/api/health/live", dependencies=[Depends(health_reader)])
def live() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get("/api/health/ready", dependencies=[Depends(health_reader)])
def ready(services: ServicesDep) -> JSONResponse:
    """The node is started, its registry answers and its apps are deployed (else 503)."""
    is_ready, checks = services.health.readiness()
    return JSONResponse(
        {"status": "ready" if is_ready else "not ready", "checks": checks},
        status_code=status.HTTP_200_OK if is_ready else status.HTTP_503_SERVICE_UNAVAILABLE,
    )


@router.get("/api/stats", dependencies=[Viewer])
def stats(services: ServicesDep) -> dict[str, Any]:
    """Cameras, apps, plan and runtime measurements as JSON."""
    return services.health.stats()


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
    dependencies=[Depends(metrics_reader)],
)
def metrics(request: Request) -> Response:
    """Prometheus text exposition format."""

    return Response(render(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)


@router.get("/api/config/schema", dependencies=[Viewer])
def config_schema() -> dict[str, Any]:
    """JSON schema of the node's config file."""
    return settings_json_schema()


@router.get("/api/tokens", response_model=list[TokenRecord], dependencies=[Admin])
def list_tokens(services: ServicesDep) -> list[TokenRecord]:
    return services.tokens.list_all()


@router.post(
    "/api/tokens",
    response_model=CreatedToken,
    status_code=status.HTTP_201_CREATED,
    dependencies=[Admin],
)
def create_token(request: TokenCreate, services: ServicesDep) -> CreatedToken:
    record, secret = services.tokens.create(request.role, request.name)
    return CreatedToken(token=secret, record=record)


@router.delete(
    "/api/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT, dependencies=[Admin]
)
def delete_token(token_id: int, services: ServicesDep) -> Response:
    services.tokens.delete(token_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
