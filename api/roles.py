"""What a daemon serves in each role (`role: node | registry`).

A daemon in the registry role is a fleet's shared registry: it stores packages and base weights
and serves them to the edge nodes, and runs no cameras, apps, plan or events. The routes of
those stay mounted so that a caller gets a clear answer (409, naming the role) instead of a bare
404, and are left out of the registry's OpenAPI document.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Request

from mainstream.core.errors import ConflictError

RUNTIME_ROUTES = ("/api/apps", "/api/cameras", "/api/schedule", "/api/events", "/api/live")
"""Route prefixes that need cameras and a runtime (answered 409 in the registry role)."""

NODE_DESCRIPTION = (
    "Edge video analytics with shared CNN stems. Send `Authorization: Bearer <token>`; "
    "viewer tokens read, admin tokens change."
)
REGISTRY_DESCRIPTION = (
    "A Mainstream fleet's shared registry (`mainstream serve --role registry`): it stores "
    "M-Packages and base weights and serves them to the edge nodes, which pull the packages of "
    "their apps from `GET /api/packages/{app}/{version}/archive`, and computes fleet plans "
    "(`POST /api/fleet/plan`: which node runs which camera). It runs no cameras, apps, "
    "plan or events: " + ", ".join(f"`{path}`" for path in RUNTIME_ROUTES) + " answer 409 here "
    "(ask an edge node). `/api/health/ready` is ready when the registry database answers. "
    "Send `Authorization: Bearer <token>`; viewer tokens read, admin tokens change."
)


class RegistryRoleError(ConflictError):
    """A route that needs cameras and a runtime was called on the shared registry."""


def needs_runtime(request: Request) -> None:
    """Refuse the request (409) on a daemon in the registry role."""
    if request.app.state.services.settings.role == "registry":
        raise RegistryRoleError(
            f"{request.url.path} needs cameras and a runtime, and this daemon is a fleet's "
            "shared registry (role 'registry'): it only stores and serves packages and base "
            "weights; ask an edge node"
        )


def runtime_router_options(role: str) -> dict[str, Any]:
    """`include_router` keywords for a router in RUNTIME_ROUTES, for a daemon in `role`."""
    if role != "registry":
        return {}
    return {"dependencies": [Depends(needs_runtime)], "include_in_schema": False}


def api_description(role: str) -> str:
    return REGISTRY_DESCRIPTION if role == "registry" else NODE_DESCRIPTION
