"""A small HTTP client for a node's REST API, used by the remote `mainstream` commands.

    client = ApiClient("http://127.0.0.1:8780", token="mst_...")
    client.create_app("trains", package="trains", version=2)
    client.schedule()["plan"]

Answers are the API's JSON as plain dicts and lists (see `/docs` on a running node for their
shapes). An error answer becomes the matching class of :mod:`mainstream.core.errors` carrying the
server's message; a server that cannot be reached raises :class:`ServerUnreachableError`
naming the URL. No TensorFlow, no server-side modules, and httpx is imported only when a
client is made, so commands that work offline stay quick to start.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

import httpx

from mainstream.core.errors import (
    AuthError,
    ConflictError,
    ForbiddenError,
    InfeasibleError,
    MainstreamError,
    ModelError,
    NotFoundError,
    PackageError,
    SourceError,
)

if TYPE_CHECKING:
    import httpx

DEFAULT_SERVER = "http://127.0.0.1:8780"
DEFAULT_TIMEOUT_S = 300.0  # uploads and app changes verify models and re-plan on the node
CONNECT_TIMEOUT_S = 5.0

Version = int | Literal["latest"]
JsonObject = dict[str, Any]


class ServerUnreachableError(MainstreamError):
    """No answer from the server: refused, unknown host, timed out or cut off."""

    http_status = 503
    exit_code = 7


class ApiError(MainstreamError):
    """An error answer with no more specific class (invalid request, upload too large, 5xx)."""

    def __init__(self, status: int, error: str, message: str, problems: list[str]) -> None:
        self.status = status
        self.error = error
        self.problems = problems
        self.http_status = status
        self.exit_code = 2 if 400 <= status < 500 else 1
        super().__init__(message)


# The `error` field of an answer names the server's exception class; these mean the same here.
_ERRORS_BY_NAME: dict[str, type[MainstreamError]] = {
    cls.__name__: cls
    for cls in (
        AuthError,
        ConflictError,
        ForbiddenError,
        InfeasibleError,
        ModelError,
        NotFoundError,
        PackageError,
        SourceError,
    )
}
_ERRORS_BY_STATUS: dict[int, type[MainstreamError]] = {
    401: AuthError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
}


def normalise_server(server: str) -> str:
    """`host:port` or a full URL, as a base URL without a trailing slash."""
    server = server.strip()
    if not server:
        raise ServerUnreachableError("no server given (use --server URL or MAINSTREAM_SERVER)")
    if "://" not in server:
        server = f"http://{server}"
    return server.rstrip("/")


def error_from_response(response: httpx.Response) -> MainstreamError:
    """The exception an error answer stands for, with the server's own message."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        name = str(body.get("error", ""))
        detail = body.get("detail", "")
        message = detail if isinstance(detail, str) else json.dumps(detail)
        problems = [str(item) for item in body.get("problems", []) or []]
        if body.get("error_id"):
            message = f"{message} (error id {body['error_id']})"
    else:
        name, problems = "", []
        message = response.text.strip()[:500] or response.reason_phrase
    message = message or f"HTTP {status}"
    cls = _ERRORS_BY_NAME.get(name) or _ERRORS_BY_STATUS.get(status)
    if cls is not None:
        return cls(message)
    if status >= 500:
        message = f"the server failed (HTTP {status}): {message}"
    return ApiError(status, name or f"HTTP {status}", message, problems)


class ApiClient:
    """One node's API. Use as a context manager, or call :meth:`close` when done."""

    def __init__(
        self,
        server: str = DEFAULT_SERVER,
        token: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:

        self.server = normalise_server(server)
        self.token = token or None
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        self._http = httpx.Client(
            base_url=self.server,
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=CONNECT_TIMEOUT_S),
        )

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- transport -----------------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send one request; raise the matching MainstreamError for anything but 2xx."""

        url = f"{self.server}{path}"
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError as error:
            raise ServerUnreachableError(
                f"cannot reach the Mainstream server at {self.server} ({_reason(error)}); "
                "is `mainstream serve` running there? Set --server or MAINSTREAM_SERVER"
            ) from None
        except httpx.TimeoutException:
            raise ServerUnreachableError(f"no answer from {url} in time") from None
        except httpx.HTTPError as error:
            raise ServerUnreachableError(f"request to {url} failed: {_reason(error)}") from None
        if response.is_error:
            raise error_from_response(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    # -- system --------------------------------------------------------------------------------

    def health(self) -> JsonObject:
        result: JsonObject = self._json("GET", "/api/health/live")
        return result

    # -- packages ------------------------------------------------------------------------------

    def upload_package(self, path: Path, force: bool = False) -> JsonObject:
        """Upload an `.mpkg`; `created` is False when the same archive was stored before.

        `force`: store it even if a candidate is no better than the majority class."""
        path = Path(path)
        if not path.is_file():
            raise PackageError(f"{str(path)!r} is not a file")
        with open(path, "rb") as stream:
            result: JsonObject = self._json(
                "POST",
                "/api/packages",
                params=_params(force="true") if force else None,
                content=stream,
                headers={"Content-Type": "application/octet-stream"},
            )
        return result

    def list_packages(self, app: str | None = None) -> list[JsonObject]:
        result: list[JsonObject] = self._json("GET", "/api/packages", params=_params(app=app))
        return result

    # -- apps ----------------------------------------------------------------------------------

    def list_apps(self) -> list[JsonObject]:
        result: list[JsonObject] = self._json("GET", "/api/apps")
        return result

    def get_app(self, name: str) -> JsonObject:
        result: JsonObject = self._json("GET", f"/api/apps/{_segment(name)}")
        return result

    def create_app(
        self,
        name: str,
        *,
        package: str | None = None,
        version: Version | None = None,
        camera: str | None = None,
        weight: float | None = None,
        x_vote: int | Literal["auto"] | None = None,
        threshold: float | None = None,
        quiet_time_s: float | Literal["auto"] | None = None,
        event_overrides: Mapping[str, float] | None = None,
        enabled: bool | None = None,
        min_fps: float | None = None,
        max_fps: float | None = None,
    ) -> JsonObject:
        """Deploy a stored package as an app; the node re-plans. None: the server's default."""
        body = app_request(
            name,
            package=package,
            version=version,
            camera=camera,
            weight=weight,
            x_vote=x_vote,
            threshold=threshold,
            quiet_time_s=quiet_time_s,
            event_overrides=event_overrides,
            enabled=enabled,
            min_fps=min_fps,
            max_fps=max_fps,
        )
        result: JsonObject = self._json("POST", "/api/apps", json=body)
        return result

    def delete_app(self, name: str) -> None:
        self.request("DELETE", f"/api/apps/{_segment(name)}")

    # -- cameras -------------------------------------------------------------------------------

    def list_cameras(self) -> list[JsonObject]:
        result: list[JsonObject] = self._json("GET", "/api/cameras")
        return result

    def create_camera(
        self,
        camera_id: str,
        url: str,
        *,
        fps: float | None = None,
        resolution: tuple[int, int] | None = None,
        enabled: bool | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> JsonObject:
        """Register a camera; `options` carries any other camera field (loop, paced, ...)."""
        body: JsonObject = {**(options or {}), "id": camera_id, "url": url}
        body |= _params(fps=fps, resolution=list(resolution) if resolution else None)
        body |= _params(enabled=enabled)
        result: JsonObject = self._json("POST", "/api/cameras", json=body)
        return result

    def delete_camera(self, camera_id: str) -> None:
        self.request("DELETE", f"/api/cameras/{_segment(camera_id)}")

    # -- fleet ---------------------------------------------------------------------------------

    def fleet_plan(self, fleet: JsonObject, time_limit_s: float, method: str) -> JsonObject:
        """The fleet plan this daemon (a fleet's shared registry) computes; nothing deployed."""
        result: JsonObject = self._json(
            "POST",
            "/api/fleet/plan",
            json=fleet,
            params={"time_limit_s": time_limit_s, "method": method},
            timeout=time_limit_s + 60.0,
        )
        return result

    # -- schedule ------------------------------------------------------------------------------

    def schedule(self) -> JsonObject:
        """The plan in force (`status` ok / empty / infeasible / error / none)."""
        result: JsonObject = self._json("GET", "/api/schedule")
        return result

    def dry_run(
        self,
        add_apps: Sequence[Mapping[str, Any]] = (),
        remove_apps: Sequence[str] = (),
        budget: float | None = None,
        objective: Literal["mean_f1", "min_f1"] | None = None,
    ) -> JsonObject:
        """The plan the node would run after the change; nothing is deployed.

        `add_apps` items have the shape of :meth:`create_app`'s body (see :func:`app_request`).
        Raises InfeasibleError when nothing fits the budget.
        """
        body: JsonObject = {"add_apps": [dict(app) for app in add_apps]}
        body["remove_apps"] = list(remove_apps)
        body |= _params(budget=budget, objective=objective)
        result: JsonObject = self._json("POST", "/api/schedule/dry-run", json=body)
        return result

    # -- events --------------------------------------------------------------------------------

    def events(
        self,
        app: str | None = None,
        camera: str | None = None,
        since: str | float | None = None,
        until: str | float | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> JsonObject:
        """One page of events (`items`, `next_offset`); times: epoch seconds or ISO 8601."""
        params = _params(app=app, camera=camera, since=since, until=until)
        params |= {"limit": limit, "offset": offset}
        result: JsonObject = self._json("GET", "/api/events", params=params)
        return result

    def review_event(self, event_id: str, verdict: bool | None, note: str = "") -> JsonObject:
        """Mark an event true (a real event) or false (a false alarm); None clears the mark.

        The answer holds the event, the app's feedback estimate and, when the mark re-planned
        the node, the new plan's reason (`replanned`)."""
        path = f"/api/events/{_segment(event_id)}/review"
        if verdict is None:
            cleared: JsonObject = self._json("DELETE", path)
            return cleared
        body = {"verdict": "true" if verdict else "false", "note": note}
        result: JsonObject = self._json("PUT", path, json=body)
        return result

    def feedback(self) -> list[JsonObject]:
        """Per app: events marked true, false and not marked, and the precision estimate."""
        result: list[JsonObject] = self._json("GET", "/api/events/feedback")
        return result


def app_request(
    name: str,
    *,
    package: str | None = None,
    version: Version | None = None,
    camera: str | None = None,
    weight: float | None = None,
    x_vote: int | Literal["auto"] | None = None,
    threshold: float | None = None,
    quiet_time_s: float | Literal["auto"] | None = None,
    event_overrides: Mapping[str, float] | None = None,
    enabled: bool | None = None,
    min_fps: float | None = None,
    max_fps: float | None = None,
) -> JsonObject:
    """The JSON body that registers an app; fields left None are the server's defaults."""
    body: JsonObject = {"name": name}
    body |= _params(
        package=package,
        version=version,
        camera=camera,
        weight=weight,
        x_vote=x_vote,
        threshold=threshold,
        quiet_time_s=quiet_time_s,
        event_overrides=dict(event_overrides) if event_overrides else None,
        enabled=enabled,
        min_fps=min_fps,
        max_fps=max_fps,
    )
    return body


def _params(**values: Any) -> JsonObject:
    return {key: value for key, value in values.items() if value is not None}


def _segment(value: str) -> str:
    """A path segment with '/', '?', '#' and friends escaped."""

    return quote(value, safe="")


def _reason(error: httpx.HTTPError) -> str:
    text = str(error).strip()
    if "refused" in text.lower():
        return "connection refused"
    return text or type(error).__name__
