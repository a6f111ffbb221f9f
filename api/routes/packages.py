"""`/api/packages`: upload, list, inspect and delete M-Packages."""

from __future__ import annotations

import uuid
from functools import partial
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from api.deps import Admin, ServicesDep, Viewer
from api.uploads import receive_upload
from mainstream.core.errors import InvalidParameterError
from mainstream.node.registry import PackageRecord
from mainstream.node.services import MAX_ROW_NUMBER, PackageSummary, PackageVersion, UploadResult

router = APIRouter(prefix="/api/packages", tags=["packages"])

ARCHIVE_MEDIA_TYPE = "application/zip"


def parse_version(version: str) -> int | Literal["latest"]:
    if version == "latest":
        return "latest"
    # isascii: str.isdigit() also accepts digits such as '²' that int() refuses
    if version.isascii() and version.isdigit() and 1 <= int(version) <= MAX_ROW_NUMBER:
        return int(version)
    raise InvalidParameterError("version", version, "a version number >= 1 or 'latest'")


@router.post(
    "",
    response_model=UploadResult,
    status_code=status.HTTP_201_CREATED,
    dependencies=[Admin],
    openapi_extra={
        "requestBody": {
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}},
                        "required": ["file"],
                    }
                },
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
            "required": True,
        }
    },
)
async def upload_package(
    request: Request,
    response: Response,
    services: ServicesDep,
    force: Annotated[
        bool,
        Query(description="Store it even if a candidate is no better than the majority class"),
    ] = False,
) -> UploadResult:
    """Upload an `.mpkg` (multipart field `file`, or the archive as the body).

    The package is verified completely before anything is stored; uploading the same archive
    again answers 200 with the stored version. A package whose candidates are no better than
    the majority class is refused (422) unless `force=true`.
    """
    staging = services.packages.staging_dir() / f"upload-{uuid.uuid4().hex}.mpkg"
    try:
        await receive_upload(request, staging, services.settings.api.max_upload_bytes)
        result = await run_in_threadpool(partial(services.packages.upload, staging, force=force))
    finally:
        staging.unlink(missing_ok=True)
    if not result.created:
        response.status_code = status.HTTP_200_OK
    return result


class PullRequest(BaseModel):
    """A package version to fetch from the fleet's shared registry (`registry_url`)."""

    model_config = ConfigDict(extra="forbid")

    app: str = Field(description="App name of the package")
    version: PackageVersion = Field(default="latest", description="Version, or latest")


@router.post(
    "/pull",
    response_model=UploadResult,
    status_code=status.HTTP_201_CREATED,
    dependencies=[Admin],
)
async def pull_package(
    request: PullRequest, response: Response, services: ServicesDep
) -> UploadResult:
    """Fetch a package version from the shared registry now (apps pull what they need anyway).

    Validated exactly like an upload; 200 when the node already holds that archive, 409 when no
    shared registry is configured, 502 when it cannot be reached.
    """
    result = await run_in_threadpool(services.packages.pull, request.app, request.version)
    if not result.created:
        response.status_code = status.HTTP_200_OK
    return result


@router.get("", response_model=list[PackageSummary], dependencies=[Viewer])
def list_packages(
    services: ServicesDep, app: str | None = Query(default=None)
) -> list[PackageSummary]:
    """Every stored package version, optionally of one app."""
    return services.packages.list_all(app)


@router.get("/{app}/{version}", response_model=PackageRecord, dependencies=[Viewer])
def get_package(app: str, version: str, services: ServicesDep) -> PackageRecord:
    """One package version (a number or `latest`) with its manifest."""
    return services.packages.get(app, parse_version(version))


@router.get(
    "/{app}/{version}/archive",
    response_class=FileResponse,
    responses={200: {"content": {ARCHIVE_MEDIA_TYPE: {}}, "description": "The .mpkg archive"}},
    dependencies=[Viewer],
)
def download_package(app: str, version: str, services: ServicesDep) -> FileResponse:
    """The package's `.mpkg` archive, as uploaded (edge nodes pull packages from here).

    The `X-Mainstream-Sha256` header carries the archive's sha256; a node checks the archive
    against it and validates it completely before storing it.
    """
    record, path = services.packages.archive(app, parse_version(version))
    return FileResponse(
        path,
        media_type=ARCHIVE_MEDIA_TYPE,
        filename=f"{record.app}-v{record.version}.mpkg",
        headers={"X-Mainstream-Sha256": record.sha256},
    )


@router.delete("/{app}/{version}", status_code=status.HTTP_204_NO_CONTENT, dependencies=[Admin])
def delete_package(app: str, version: str, services: ServicesDep) -> Response:
    """Delete a package version; refused (409) while an app uses it."""
    services.packages.delete(app, parse_version(version))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
