"""Request dependencies: the node's services and who is calling (bearer tokens).

Viewer tokens may read, admin tokens may also change. Health and metrics can be opened to
callers without a token in the settings (`api.open_health`, `api.metrics_access`), and
`/metrics` also takes its own token (`api.metrics_token`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from mainstream.node.services import Principal, Services, require_role

_bearer = HTTPBearer(auto_error=False, description="A token from `mainstream token create`")

Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]

ANONYMOUS = Principal(name="anonymous", role="viewer")


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def _authorization(credentials: HTTPAuthorizationCredentials | None) -> str | None:
    if credentials is None:
        return None
    return f"{credentials.scheme} {credentials.credentials}"


def viewer(services: ServicesDep, credentials: Credentials) -> Principal:
    return services.tokens.verify(_authorization(credentials))


def admin(services: ServicesDep, credentials: Credentials) -> Principal:
    principal = services.tokens.verify(_authorization(credentials))
    require_role(principal, "admin")
    return principal


def health_reader(services: ServicesDep, credentials: Credentials) -> Principal:
    if services.settings.api.open_health:
        return ANONYMOUS
    return services.tokens.verify(_authorization(credentials))


def metrics_reader(request: Request, services: ServicesDep, credentials: Credentials) -> Principal:
    peer = request.client.host if request.client else None
    return services.tokens.verify_metrics_reader(_authorization(credentials), peer)


Viewer = Depends(viewer)
Admin = Depends(admin)
