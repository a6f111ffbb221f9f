"""`/api/bases`: the registered base models and their weights (edge nodes pull bases from here
when a package does not bundle its base)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from api.deps import ServicesDep, Viewer
from mainstream.node.registry import BaseRecord

router = APIRouter(prefix="/api/bases", tags=["bases"])

WEIGHTS_MEDIA_TYPE = "application/x-hdf5"


@router.get("", response_model=list[BaseRecord], dependencies=[Viewer])
def list_bases(services: ServicesDep) -> list[BaseRecord]:
    """Every base recorded with a package, by name."""
    return services.packages.list_bases()


@router.get("/{fingerprint}", response_model=BaseRecord, dependencies=[Viewer])
def get_base(fingerprint: str, services: ServicesDep) -> BaseRecord:
    """One base by its weights fingerprint (sha256 of its weights)."""
    record, _ = services.packages.base_weights(fingerprint)
    return record


@router.get(
    "/{fingerprint}/weights",
    response_class=FileResponse,
    responses={200: {"content": {WEIGHTS_MEDIA_TYPE: {}}, "description": "Keras weights"}},
    dependencies=[Viewer],
)
def download_base_weights(fingerprint: str, services: ServicesDep) -> FileResponse:
    """The base's weights file; a node checks their fingerprint before it uses them."""
    record, path = services.packages.base_weights(fingerprint)
    return FileResponse(
        path, media_type=WEIGHTS_MEDIA_TYPE, filename=f"{record.fingerprint}.weights.h5"
    )
