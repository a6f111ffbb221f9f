"""The web dashboard: static files under `/ui/`, `/` sends browsers there, and `/api/whoami`.

The page itself needs no token; it asks for one and sends it with every API call. `whoami`
lets the page show admin controls only to admin tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from api.deps import viewer
from mainstream.node.registry import Role
from mainstream.node.services import Principal

DASHBOARD_DIR = Path(__file__).resolve().parent.parent / "dashboard"

router = APIRouter(tags=["dashboard"])
router.mount("/ui", StaticFiles(directory=DASHBOARD_DIR, html=True), name="dashboard")


class WhoAmI(BaseModel):
    name: str
    role: Role


@router.get("/", include_in_schema=False)
def root() -> RedirectResponse:
    # relative, so that the redirect also works behind a reverse proxy under a sub-path
    return RedirectResponse("ui/")


@router.get("/api/whoami", response_model=WhoAmI)
def whoami(principal: Annotated[Principal, Depends(viewer)]) -> WhoAmI:
    """The name and role of the calling token."""
    return WhoAmI(name=principal.name, role=principal.role)
