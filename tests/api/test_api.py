"""The REST API over a real node (FastAPI's TestClient): auth, every resource, error mapping."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from edge_runtime.detector import EventRecord
from edge_runtime.event_store import EventQuery, StoredClip
from mainstream.node.node import Node
from mainstream.node.retention import RetentionKeeper
from mainstream.node.services import create_token
from mainstream.node.settings import RetentionSettings, Settings
from tests.support.nodes import (
    TinyPackages,
    bad_packages,
    node_config,
    wait_for,
)

pytestmark = pytest.mark.slow


@dataclass
class Api:
    client: TestClient
    node: Node
    admin: dict[str, str]
    viewer: dict[str, str]


def start_api(data_dir: Path, tiny: TinyPackages, **overrides: object) -> tuple[TestClient, Node]:
    tiny.register_base(data_dir)
    node = Node(Settings(**node_config(data_dir, **overrides)))
    return TestClient(create_app(node)), node


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture(scope="module")
def api(
    tiny_packages: TinyPackages,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Api]:
    client, node = start_api(tmp_path_factory.mktemp("api-node"), tiny_packages)
    with client:
        _, admin = create_token(node.registry, "admin", "test admin")
        _, viewer = create_token(node.registry, "viewer", "test viewer")
        yield Api(client, node, bearer(admin), bearer(viewer))


def upload(api: Api, path: Path, raw: bool = False) -> object:
    if raw:
        return api.client.post(
            "/api/packages",
            content=path.read_bytes(),
            headers={**api.admin, "Content-Type": "application/octet-stream"},
        )
    with open(path, "rb") as stream:
        return api.client.post(
            "/api/packages", files={"file": (path.name, stream)}, headers=api.admin
        )


@pytest.fixture(scope="module")
def with_apps(api: Api, tiny_packages: TinyPackages) -> Api:
    """trains (fires on every analysed frame) and buses, both deployed."""
    assert upload(api, tiny_packages.trains).status_code in (200, 201)  # type: ignore[attr-defined]
    assert upload(api, tiny_packages.buses, raw=True).status_code in (200, 201)  # type: ignore[attr-defined]
    for body in ({"name": "trains", "threshold": 0.0}, {"name": "buses", "x_vote": "auto"}):
        if api.client.get(f"/api/apps/{body['name']}", headers=api.viewer).status_code == 404:
            answer = api.client.post("/api/apps", json=body, headers=api.admin)
            assert answer.status_code == 201, answer.text
    return api


# ---------------------------------------------------------------------------------------------
# Auth


def test_tokens_decide_who_may_read_and_change(api: Api) -> None:
    client = api.client
    missing = client.get("/api/apps")
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert missing.json()["error"] == "AuthError"
    assert client.get("/api/apps", headers=bearer("mst_not-a-token")).status_code == 401
    assert client.get("/api/apps", headers=api.viewer).status_code == 200
    forbidden = client.post("/api/apps", json={"name": "x"}, headers=api.viewer)
    assert forbidden.status_code == 403 and "viewer" in forbidden.json()["detail"]
    assert client.delete("/api/packages/trains/1", headers=api.viewer).status_code == 403

    # health is open by default, metrics are not
    assert client.get("/api/health/live").json() == {"status": "ok"}
    assert client.get("/api/health/ready").status_code == 200
    assert client.get("/metrics").status_code == 401
    metrics = client.get("/metrics", headers=api.viewer)
    assert metrics.status_code == 200 and "mainstream_camera_state" in metrics.text


def test_admins_manage_tokens_over_the_api(api: Api) -> None:
    created = api.client.post(
        "/api/tokens", json={"role": "viewer", "name": "wallboard"}, headers=api.admin
    )
    assert created.status_code == 201
    token = created.json()
    headers = bearer(token["token"])
    assert api.client.get("/api/schedule", headers=headers).status_code == 200
    names = [item["name"] for item in api.client.get("/api/tokens", headers=api.admin).json()]
    assert "wallboard" in names and "token" not in str(names)
    removed = api.client.delete(f"/api/tokens/{token['record']['id']}", headers=api.admin)
    assert removed.status_code == 204
    assert api.client.get("/api/schedule", headers=headers).status_code == 401


# ---------------------------------------------------------------------------------------------
# Packages


def test_packages_are_uploaded_listed_and_inspected(
    api: Api,
    tiny_packages: TinyPackages,
    tmp_path: Path,
) -> None:
    first = upload(api, tiny_packages.trains)
    assert first.status_code in (200, 201)  # type: ignore[attr-defined]
    again = upload(api, tiny_packages.trains, raw=True)
    assert again.status_code == 200 and again.json()["created"] is False  # type: ignore[attr-defined]

    listing = api.client.get("/api/packages?app=trains", headers=api.viewer).json()
    assert [item["version"] for item in listing] == [1]
    latest = api.client.get("/api/packages/trains/latest", headers=api.viewer)
    assert latest.status_code == 200
    assert latest.json()["manifest"]["app"]["name"] == "trains"
    assert api.client.get("/api/packages/trains/one", headers=api.viewer).status_code == 422
    assert api.client.get("/api/packages/nope/1", headers=api.viewer).status_code == 404

    before = api.client.get("/api/packages", headers=api.viewer).json()
    for name, (path, reason) in bad_packages(tiny_packages, tmp_path).items():
        answer = upload(api, path)
        assert answer.status_code == 400, name  # type: ignore[attr-defined]
        assert answer.json()["error"] == "PackageError"  # type: ignore[attr-defined]
        assert re.search(reason, answer.json()["detail"]), name  # type: ignore[attr-defined]
    assert api.client.get("/api/packages", headers=api.viewer).json() == before
    no_file = api.client.post("/api/packages", files={"other": ("x", b"x")}, headers=api.admin)
    assert no_file.status_code == 422 and "file" in no_file.json()["detail"]


def test_a_weak_package_needs_force(api: Api, tiny_packages: TinyPackages) -> None:
    refused = upload(api, tiny_packages.weak, raw=True)
    assert refused.status_code == 422  # type: ignore[attr-defined]
    assert refused.json()["error"] == "WeakCandidatesError"  # type: ignore[attr-defined]
    assert api.client.get("/api/packages?app=vans", headers=api.viewer).json() == []
    forced = api.client.post(
        "/api/packages?force=true",
        content=tiny_packages.weak.read_bytes(),
        headers={**api.admin, "Content-Type": "application/octet-stream"},
    )
    assert forced.status_code == 201, forced.text
    assert forced.json()["package"]["app"] == "vans"


def test_uploads_over_the_limit_are_cut_off(
    tiny_packages: TinyPackages,
    tmp_path: Path,
) -> None:
    client, node = start_api(tmp_path / "small", tiny_packages, api={"max_upload_bytes": 200_000})
    with client:
        _, secret = create_token(node.registry, "admin")
        with open(tiny_packages.trains, "rb") as stream:
            multipart = client.post(
                "/api/packages", files={"file": ("trains.mpkg", stream)}, headers=bearer(secret)
            )
        raw = client.post(
            "/api/packages", content=tiny_packages.trains.read_bytes(), headers=bearer(secret)
        )
        chunked = client.post(
            "/api/packages",
            content=iter([tiny_packages.trains.read_bytes()]),
            headers=bearer(secret),
        )
        for answer in (multipart, raw, chunked):
            assert answer.status_code == 413
            assert "200000" in answer.json()["detail"]
        assert node.registry.list_packages() == []
        staging = node.settings.data_dir / "tmp"
        assert not staging.exists() or list(staging.iterdir()) == []


def test_uploads_just_over_the_limit_are_cut_off_while_they_stream(
    tiny_packages: TinyPackages,
    tmp_path: Path,
) -> None:
    """Within the envelope the request limits leave for multipart, the upload itself counts."""
    size = tiny_packages.trains.stat().st_size
    client, node = start_api(tmp_path / "tight", tiny_packages, api={"max_upload_bytes": size - 1})
    with client:
        _, secret = create_token(node.registry, "admin")
        raw = client.post(
            "/api/packages", content=tiny_packages.trains.read_bytes(), headers=bearer(secret)
        )
        assert raw.status_code == 413
        assert f"larger than {size - 1} bytes" in raw.json()["detail"]
        assert node.registry.list_packages() == []
        assert list((node.settings.data_dir / "tmp").iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Apps and the schedule


def test_registering_an_app_replans(api: Api, tiny_packages: TinyPackages) -> None:
    client = api.client
    upload(api, tiny_packages.trains)
    upload(api, tiny_packages.buses)
    client.delete("/api/apps/buses", headers=api.admin)
    client.delete("/api/apps/trains", headers=api.admin)
    before = client.get("/api/schedule", headers=api.viewer).json()

    created = client.post("/api/apps", json={"name": "trains", "threshold": 0.0}, headers=api.admin)
    assert created.status_code == 201, created.text
    assert created.json()["planned"]["name"] == "trains"
    after = client.get("/api/schedule", headers=api.viewer).json()
    assert after["id"] != before["id"] and after["status"] == "ok"
    assert [app["name"] for app in after["plan"]["apps"]] == ["trains"]
    assert set(after["plan"]["baselines"]) == {"max_sharing", "no_sharing"}

    client.post("/api/apps", json={"name": "buses", "x_vote": "auto"}, headers=api.admin)
    both = client.get("/api/schedule", headers=api.viewer).json()
    assert {app["name"] for app in both["plan"]["apps"]} == {"trains", "buses"}
    assert both["measured"] is not None
    history = client.get("/api/schedule/history?limit=3", headers=api.viewer).json()
    assert [plan["id"] for plan in history][:2] == [both["id"], after["id"]]

    patched = client.patch("/api/apps/buses", json={"weight": 2.0}, headers=api.admin)
    assert patched.status_code == 200 and patched.json()["app"]["weight"] == 2.0
    names = [view["app"]["name"] for view in client.get("/api/apps", headers=api.viewer).json()]
    assert names == ["buses", "trains"]

    duplicate = client.post("/api/apps", json={"name": "trains"}, headers=api.admin)
    assert duplicate.status_code == 409
    unknown = client.post("/api/apps", json={"name": "trams"}, headers=api.admin)
    assert unknown.status_code == 404 and "upload it first" in unknown.json()["detail"]
    invalid = client.post("/api/apps", json={"name": "x y", "x_vote": 0}, headers=api.admin)
    assert invalid.status_code == 422
    assert {p.split(":")[0] for p in invalid.json()["problems"]} == {"body.name", "body.x_vote"}
    in_use = client.delete("/api/packages/trains/1", headers=api.admin)
    assert in_use.status_code == 409


def test_an_app_runs_within_its_frame_rate_limits(with_apps: Api) -> None:
    client, admin, viewer = with_apps.client, with_apps.admin, with_apps.viewer
    body = {"name": "slow-trains", "package": "trains", "min_fps": 2.5, "max_fps": 2.9}
    refused = client.post("/api/apps", json=body, headers=admin)
    assert refused.status_code == 422, refused.text
    assert "0.1, 0.2, 0.5, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 fps" in refused.json()["detail"]
    assert client.get("/api/apps/slow-trains", headers=viewer).status_code == 404
    backwards = client.post("/api/apps", json=body | {"min_fps": 3, "max_fps": 1}, headers=admin)
    assert backwards.status_code == 422 and "min_fps 3 is above max_fps 1" in backwards.text

    limits = {"min_fps": 0.1, "max_fps": 0.2}
    narrowed = client.patch("/api/apps/buses", json=limits, headers=admin)
    assert narrowed.status_code == 200, narrowed.text
    view = narrowed.json()
    assert (view["app"]["min_fps"], view["app"]["max_fps"]) == (0.1, 0.2)
    assert view["planned"]["fps"] in (0.1, 0.2)
    empty = client.patch("/api/apps/buses", json={"min_fps": 0.3}, headers=admin)
    assert empty.status_code == 422  # [0.3, 0.2] holds no rate: nothing changed
    assert client.get("/api/apps/buses", headers=viewer).json()["app"]["min_fps"] == 0.1
    lifted = client.patch("/api/apps/buses", json={"min_fps": None, "max_fps": None}, headers=admin)
    assert lifted.status_code == 200
    assert (lifted.json()["app"]["min_fps"], lifted.json()["app"]["max_fps"]) == (None, None)


def test_a_dry_run_answers_without_deploying(with_apps: Api) -> None:
    client = with_apps.client
    in_force = client.get("/api/schedule", headers=with_apps.viewer).json()
    fewer = client.post(
        "/api/schedule/dry-run", json={"remove_apps": ["buses"]}, headers=with_apps.viewer
    )
    assert fewer.status_code == 200
    body = fewer.json()
    assert [app["name"] for app in body["plan"]["apps"]] == ["trains"]
    assert set(body["plan"]["baselines"]) == {"max_sharing", "no_sharing"}
    assert body["current_value"] == pytest.approx(in_force["plan"]["value"])

    infeasible = client.post(
        "/api/schedule/dry-run", json={"budget": 1e-6}, headers=with_apps.viewer
    )
    assert infeasible.status_code == 422 and infeasible.json()["error"] == "InfeasibleError"
    bad = client.post("/api/schedule/dry-run", json={"budget": -1}, headers=with_apps.viewer)
    assert bad.status_code == 422
    assert client.get("/api/schedule", headers=with_apps.viewer).json()["id"] == in_force["id"]


# ---------------------------------------------------------------------------------------------
# Cameras and events


def test_cameras_are_managed_live(with_apps: Api) -> None:
    client, admin, viewer = with_apps.client, with_apps.admin, with_apps.viewer
    created = client.post(
        "/api/cameras", json={"id": "yard", "url": "synthetic://?fps=5&size=64x48"}, headers=admin
    )
    assert created.status_code == 201, created.text

    def latest() -> bool:
        answer = client.get("/api/cameras/yard/latest.jpg", headers=viewer)
        return answer.status_code == 200 and answer.content[:2] == b"\xff\xd8"

    assert wait_for(latest)
    assert client.get("/api/cameras/nowhere/stream.mjpg", headers=viewer).status_code == 404
    slots = client.app.state.live_views  # type: ignore[attr-defined]
    limit, slots.limit = slots.limit, 0
    try:
        busy = client.get("/api/cameras/yard/stream.mjpg", headers=viewer)
        assert busy.status_code == 429 and "api.max_live_views" in busy.json()["detail"]
    finally:
        slots.limit = limit
    listed = {
        view["camera"]["id"]: view for view in client.get("/api/cameras", headers=viewer).json()
    }
    assert listed["yard"]["status"]["state"] == "streaming"
    assert sorted(listed["synthetic"]["apps"]) == ["buses", "trains"]

    bad = client.patch("/api/cameras/yard", json={"url": "nonsense://x"}, headers=admin)
    assert bad.status_code == 422 and "url=" in bad.json()["problems"][0]
    disabled = client.patch("/api/cameras/yard", json={"enabled": False}, headers=admin)
    assert disabled.status_code == 200 and disabled.json()["status"] is None
    not_running = client.get("/api/cameras/yard/latest.jpg", headers=viewer)
    assert not_running.status_code == 503 and "not running" in not_running.json()["detail"]
    assert client.delete("/api/cameras/synthetic", headers=admin).status_code == 409
    assert client.delete("/api/cameras/yard", headers=admin).status_code == 204
    assert client.get("/api/cameras/yard", headers=viewer).status_code == 404


def test_events_are_listed_paginated_and_have_snapshots(with_apps: Api) -> None:
    client, viewer = with_apps.client, with_apps.viewer

    def events() -> list[dict[str, object]]:
        items: list[dict[str, object]] = client.get(
            "/api/events?app=trains", headers=viewer
        ).json()["items"]
        return items

    assert wait_for(lambda: bool(events()), timeout=30)
    event = events()[0]
    assert event["app"] == "trains" and event["camera"] == "synthetic"
    one = client.get(f"/api/events/{event['id']}", headers=viewer)
    assert one.status_code == 200 and one.json()["id"] == event["id"]
    snapshot = client.get(f"/api/events/{event['id']}/snapshot.jpg", headers=viewer)
    assert snapshot.headers["content-type"] == "image/jpeg" and snapshot.content[:2] == b"\xff\xd8"

    page = client.get("/api/events?limit=1", headers=viewer).json()
    assert len(page["items"]) == 1 and page["next_offset"] == 1
    late = client.get("/api/events?since=2999-01-01T00:00:00Z", headers=viewer).json()
    assert late["items"] == []
    assert client.get("/api/events?since=soon", headers=viewer).status_code == 422
    assert client.get("/api/events?limit=0", headers=viewer).status_code == 422
    assert client.get("/api/events/nope", headers=viewer).status_code == 404


def test_a_stored_clip_is_linked_and_served_with_byte_ranges(with_apps: Api) -> None:
    client, viewer, node = with_apps.client, with_apps.viewer, with_apps.node
    event = EventRecord("clip-test", "buses", "synthetic", 5.0, 9.0, 0.9, 3, 4, 4)
    node.events.save(event)
    assert client.get("/api/events/clip-test", headers=viewer).json()["clip"] is None
    assert client.get("/api/events/clip-test/clip.webm", headers=viewer).status_code == 404
    data = bytes(range(256)) * 4
    assert node.events.save_clip(StoredClip("clip-test", "video/webm", 5, 1.0, data))
    assert client.get("/api/events/clip-test", headers=viewer).json()["clip"] == (
        "/api/events/clip-test/clip.webm"
    )
    assert client.get("/api/events/clip-test/clip.webm").status_code == 401
    whole = client.get("/api/events/clip-test/clip.webm", headers=viewer)
    assert whole.status_code == 200 and whole.content == data
    assert (
        whole.headers["content-type"] == "video/webm" and whole.headers["accept-ranges"] == "bytes"
    )
    part = client.get("/api/events/clip-test/clip.webm", headers=viewer | {"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == data[10:20]
    assert part.headers["content-range"] == "bytes 10-19/1024"
    tail = client.get("/api/events/clip-test/clip.webm", headers=viewer | {"Range": "bytes=-4"})
    assert tail.status_code == 206 and tail.content == data[-4:]
    beyond = client.get(
        "/api/events/clip-test/clip.webm", headers=viewer | {"Range": "bytes=2000-"}
    )
    assert beyond.status_code == 416 and beyond.headers["content-range"] == "bytes */1024"


# ---------------------------------------------------------------------------------------------
# System


def test_stats_schema_and_docs(with_apps: Api) -> None:
    client, viewer = with_apps.client, with_apps.viewer
    stats = client.get("/api/stats", headers=viewer).json()
    assert stats["node"] == "test-node" and "synthetic" in stats["cameras"]
    assert stats["plan"]["status"] == "ok"
    schema = client.get("/api/config/schema", headers=viewer).json()
    assert {"data_dir", "api", "runtime", "cameras"} <= set(schema["properties"])
    assert "admin_token" not in schema["properties"]
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/packages", "/api/apps/{name}", "/api/schedule/dry-run", "/metrics"} <= set(paths)
    assert client.get("/docs").status_code == 200
    metrics = client.get("/metrics", headers=viewer).text
    assert 'mainstream_app_planned_fps{app="trains",camera="synthetic"}' in metrics


def test_stats_show_retention_and_pruning_spares_the_open_event(with_apps: Api) -> None:
    """The node prunes at start (figures in /api/stats); a pass that keeps nothing closed, run
    on the live node's store while `trains` (fires on every frame) has an event open, deletes
    every closed event and keeps the open one."""
    client, viewer, node = with_apps.client, with_apps.viewer, with_apps.node

    def retention() -> dict[str, Any]:
        answer: dict[str, Any] = client.get("/api/stats", headers=viewer).json()["retention"]
        return answer

    assert wait_for(lambda: retention()["passes"] >= 1, timeout=10)
    figures = retention()
    assert (figures["days"], figures["max_mb_per_app"], figures["pruned_total"]) == (30, None, 0)
    assert figures["events_kept"] >= 0 and figures["last_prune_at"] is not None

    def stored() -> list[EventRecord]:
        return node.events.query(EventQuery(limit=1000))

    assert wait_for(lambda: any(e.app == "trains" and e.end_time is None for e in stored()), 30)
    before = stored()
    open_before = {e.id for e in before if e.app == "trains" and e.end_time is None}
    closed_before = {e.id for e in before if e.end_time is not None}
    far_future = time.time() + 10 * 365 * 86_400.0
    keeper = RetentionKeeper(node.events, RetentionSettings(days=1), clock=lambda: far_future)
    result = keeper.prune()
    left = {e.id for e in stored()}
    assert open_before and open_before <= left  # trains' event never closes: it is spared
    assert not closed_before & left and result.deleted >= len(closed_before)


def test_server_errors_hide_their_details(api: Api) -> None:
    app = create_app(api.node, manage_node=False)

    @app.get("/api/boom")
    def boom() -> None:
        raise RuntimeError("database password is hunter2")

    with TestClient(app, raise_server_exceptions=False) as client:
        answer = client.get("/api/boom")
    assert answer.status_code == 500
    body = answer.json()
    assert body["error"] == "internal_error" and len(body["error_id"]) == 12
    assert "hunter2" not in answer.text


def test_a_fleet_plan_is_computed_on_request_for_admins(api: Api) -> None:
    """`POST /api/fleet/plan`: the FLEET.yaml shape as JSON in, the fleet plan out."""
    import yaml

    from scheduler.fleet import FleetPlan

    fleet = yaml.safe_load((Path(__file__).parents[2] / "examples" / "fleet.yaml").read_text())
    path = "/api/fleet/plan?time_limit_s=5"
    assert api.client.post(path, json=fleet, headers=api.viewer).status_code == 403
    answer = api.client.post(path, json=fleet, headers=api.admin)
    assert answer.status_code == 200, answer.text
    plan = FleetPlan.model_validate(answer.json())
    assert plan.method == "exact" and sorted(plan.assignment()) == [
        "crossing",
        "depot",
        "platform",
        "school",
    ]
    for node in fleet["nodes"]:
        node["budget"] = 0.01
    infeasible = api.client.post(path, json=fleet, headers=api.admin)
    assert infeasible.status_code == 422 and "fits on no node" in infeasible.text
    fleet["nodes"][0]["budget"] = -1
    refused = api.client.post(path, json=fleet, headers=api.admin)
    assert refused.status_code == 422
    assert "nodes" in refused.text and "budget" in refused.text
