"""`/api/cameras`: register cameras, change them live, look at their latest frame."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from api.deps import Admin, ServicesDep, Viewer
from api.live_views import MEDIA_TYPE, LiveViewSlots, frames
from api.routes.live import live_viewer
from mainstream.node.services import CameraCreate, CameraView

router = APIRouter(prefix="/api/cameras", tags=["cameras"])


@router.get("", response_model=list[CameraView], dependencies=[Viewer])
def list_cameras(services: ServicesDep) -> list[CameraView]:
    return services.cameras.list_all()


@router.post(
    "", response_model=CameraView, status_code=status.HTTP_201_CREATED, dependencies=[Admin]
)
def create_camera(request: CameraCreate, services: ServicesDep) -> CameraView:
    return services.cameras.create(request)


@router.get("/{camera_id}", response_model=CameraView, dependencies=[Viewer])
def get_camera(camera_id: str, services: ServicesDep) -> CameraView:
    return services.cameras.get(camera_id)


@router.put("/{camera_id}", response_model=CameraView, dependencies=[Admin])
def replace_camera(camera_id: str, request: CameraCreate, services: ServicesDep) -> CameraView:
    return services.cameras.replace(camera_id, request)


@router.patch("/{camera_id}", response_model=CameraView, dependencies=[Admin])
def update_camera(
    camera_id: str,
    services: ServicesDep,
    changes: dict[str, Any] = Body(  # noqa: B008 - FastAPI's way to declare a body
        description="Any camera field to change, or `enabled`", examples=[{"enabled": False}]
    ),
) -> CameraView:
    return services.cameras.update(camera_id, changes)


@router.delete("/{camera_id}", status_code=status.HTTP_204_NO_CONTENT, dependencies=[Admin])
def delete_camera(camera_id: str, services: ServicesDep) -> Response:
    """Remove a camera; refused (409) while an app uses it."""
    services.cameras.delete(camera_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{camera_id}/latest.jpg",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}},
    dependencies=[Viewer],
)
def latest_frame(camera_id: str, services: ServicesDep) -> Response:
    """The camera's most recent frame as JPEG (503 until it has delivered one)."""
    return Response(
        services.cameras.latest_jpeg(camera_id),
        media_type="image/jpeg",
        headers={"Cache-Control": "no-store"},
    )


@router.get(
    "/{camera_id}/stream.mjpg",
    response_class=StreamingResponse,
    responses={200: {"content": {MEDIA_TYPE: {}}}},
    dependencies=[Depends(live_viewer)],
)
async def live_view(
    camera_id: str,
    request: Request,
    services: ServicesDep,
    fps: float = Query(default=4.0, gt=0, le=15, description="Most frames a second sent"),
) -> StreamingResponse:
    """The camera live, with each app's latest score drawn on the frames (MJPEG: show it in
    an `<img>`). Authenticate with the Authorization header or a ticket from
    `POST /api/live/ticket` (`?ticket=`), as for `/api/live`. 503 until the camera has
    delivered a frame; 429 beyond `api.max_live_views` open views."""
    first = await run_in_threadpool(services.cameras.live_view_jpeg, camera_id)
    slots: LiveViewSlots = request.app.state.live_views
    slots.take()
    return StreamingResponse(
        frames(request, first, lambda: services.cameras.live_view_jpeg(camera_id), fps, slots),
        media_type=MEDIA_TYPE,
        headers={"Cache-Control": "no-store"},
    )
