"""`/api/apps`: deploy packages as apps; every change re-plans the node."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from api.deps import Admin, ServicesDep, Viewer
from mainstream.node.services import AppCreate, AppUpdate, AppView

router = APIRouter(prefix="/api/apps", tags=["apps"])


@router.get("", response_model=list[AppView], dependencies=[Viewer])
def list_apps(services: ServicesDep) -> list[AppView]:
    return services.apps.list_all()


@router.post("", response_model=AppView, status_code=status.HTTP_201_CREATED, dependencies=[Admin])
def create_app(request: AppCreate, services: ServicesDep) -> AppView:
    """Register an app; refused (422) when the apps would no longer fit the budget."""
    return services.apps.create(request)


@router.get("/{name}", response_model=AppView, dependencies=[Viewer])
def get_app(name: str, services: ServicesDep) -> AppView:
    return services.apps.get(name)


@router.patch("/{name}", response_model=AppView, dependencies=[Admin])
def update_app(name: str, request: AppUpdate, services: ServicesDep) -> AppView:
    return services.apps.update(name, request)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT, dependencies=[Admin])
def delete_app(name: str, services: ServicesDep) -> Response:
    services.apps.delete(name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
