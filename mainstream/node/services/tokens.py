"""Bearer tokens: create, verify, list, revoke. The functions need only a registry, so
`mainstream token create` works without starting a node."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import secrets
from typing import TYPE_CHECKING

from mainstream.core.errors import (
    AuthError,
    ForbiddenError,
    NotFoundError,
)
from mainstream.node.registry import (
    Registry,
    Role,
    TokenRecord,
    utc_now,
)

if TYPE_CHECKING:
    pass

from mainstream.node.services.base import NodeService
from mainstream.node.services.models import (
    MAX_ROW_NUMBER,
    TOKEN_PREFIX,
    Principal,
)

logger = logging.getLogger(__name__)

METRICS_READER = Principal(name="metrics reader", role="viewer")


# ---------------------------------------------------------------------------------------------
# Tokens (registry only)


def create_token(
    registry: Registry, role: Role, name: str | None = None
) -> tuple[TokenRecord, str]:
    """A new bearer token; the secret is returned once and only its hash is stored."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    label = name or f"{role}-{utc_now().strftime('%Y%m%d%H%M%S')}"
    with registry.transaction() as transaction:
        record = transaction.add_token(label, role, secret)
    return record, secret


def verify_token(
    registry: Registry, authorization: str | None, admin_secret: str | None = None
) -> Principal:
    """The principal of an `Authorization: Bearer ...` header; AuthError when missing or wrong."""
    if not authorization:
        raise AuthError("this endpoint needs a bearer token (Authorization: Bearer <token>)")
    scheme, _, secret = authorization.strip().partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        raise AuthError("the Authorization header must be 'Bearer <token>'")
    if admin_secret and hmac.compare_digest(secret.encode(), admin_secret.encode()):
        return Principal(name="environment admin token", role="admin")
    token = registry.token_for_secret(secret)
    if token is None:
        raise AuthError("unknown or revoked token")
    return Principal(name=token.name, role=token.role)


def is_loopback(host: str | None) -> bool:
    """Whether a peer address is this machine (127.0.0.0/8, ::1, ::ffff:127.x); names are not."""
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def require_role(principal: Principal, role: Role) -> None:
    if role == "admin" and not principal.is_admin:
        raise ForbiddenError(f"token {principal.name!r} is a viewer token; this needs an admin")


class TokenService(NodeService):
    """Bearer tokens: create, verify, list, revoke."""

    def create(self, role: Role, name: str | None = None) -> tuple[TokenRecord, str]:
        return create_token(self.registry, role, name)

    def verify(self, authorization: str | None) -> Principal:
        admin = self.settings.admin_token
        return verify_token(
            self.registry, authorization, admin.get_secret_value() if admin else None
        )

    def verify_metrics_reader(self, authorization: str | None, peer: str | None) -> Principal:
        """Who may scrape /metrics under `api.metrics_access`: without a token when it is
        `open`, or `loopback` and the peer is this machine; else the metrics token or any API
        token. The metrics token opens /metrics only: :meth:`verify` does not know it."""
        access = self.settings.api.metrics_access
        if access == "open" or (access == "loopback" and is_loopback(peer)):
            return METRICS_READER
        metrics_token = self.settings.api.metrics_token
        if authorization and metrics_token is not None:
            scheme, _, secret = authorization.strip().partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(
                secret.strip().encode(), metrics_token.get_secret_value().encode()
            ):
                return METRICS_READER
        return self.verify(authorization)

    def list_all(self) -> list[TokenRecord]:
        return self.registry.list_tokens()

    def delete(self, token_id: int) -> None:
        if not 1 <= token_id <= MAX_ROW_NUMBER:
            raise NotFoundError(f"no token with id {token_id}")
        with self.registry.transaction() as transaction:
            transaction.delete_token(token_id)
