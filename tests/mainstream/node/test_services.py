"""Node services on a real node: uploads, live re-planning, dry runs, cameras, restarts, tokens.

The node runs the synthetic camera and real (untrained) Keras packages; nothing is stubbed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mainstream.core.bases import load_registered_base
from mainstream.core.errors import (
    AuthError,
    ConflictError,
    ForbiddenError,
    InfeasibleError,
    NotFoundError,
    PackageError,
    WeakCandidatesError,
)
from mainstream.node.node import Node, NotReadyError
from mainstream.node.services import (
    AppCreate,
    AppUpdate,
    CameraCreate,
    DryRunRequest,
    InvalidRequestError,
    Services,
    TooLargeError,
    parse_time,
    require_role,
    verify_token,
)
from mainstream.node.settings import Settings
from scheduler.problem import Profile
from tests.support.nodes import (
    CUTS,
    TinyPackages,
    bad_packages,
    hardened_bad_packages,
    node_config,
    wait_for,
)

pytestmark = pytest.mark.slow


def start_node(
    data_dir: Path,
    tiny: TinyPackages,
    profile: Profile | None = None,
    register_base: bool = True,
    **overrides: Any,
) -> Node:
    if register_base:
        tiny.register_base(data_dir)
    node = Node(Settings(**node_config(data_dir, **overrides)))
    if profile is not None:
        with node.registry.transaction() as transaction:
            transaction.save_profile(profile.base_model, "keras", profile)
    node.start()
    return node


@pytest.fixture
def node(
    tmp_path: Path,
    tiny_packages: TinyPackages,
    measured_profile: Profile,
) -> Iterator[Node]:
    node = start_node(tmp_path / "node", tiny_packages, measured_profile)
    yield node
    node.stop()


def snapshot(node: Node) -> dict[str, Any]:
    """Everything an upload may change."""
    data = node.settings.data_dir

    def files(folder: Path) -> list[str]:
        return (
            sorted(str(p.relative_to(data)) for p in folder.rglob("*")) if folder.exists() else []
        )

    return {
        "packages": node.registry.list_packages(),
        "bases": node.registry.list_bases(),
        "plan": node.registry.current_plan(),
        "blobs": files(node.settings.blobs_dir),
        "base files": files(node.settings.bases_dir),
        "cache": files(node.settings.cache_dir),
        "staging": files(data / "tmp"),
    }


# ---------------------------------------------------------------------------------------------
# Packages


def test_an_upload_is_stored_once_and_versioned(node: Node, tiny_packages: TinyPackages) -> None:
    services = Services(node)
    first = services.packages.upload(tiny_packages.trains)
    assert first.created and (first.package.app, first.package.version) == ("trains", 1)
    assert node.registry.blobs.path(first.package.sha256).is_file()
    assert node.registry.get_base(tiny_packages.fingerprint) is not None

    again = services.packages.upload(tiny_packages.trains.read_bytes())
    assert not again.created and again.package.sha256 == first.package.sha256

    second = services.packages.upload(tiny_packages.trains_v2)
    assert second.package.version == 2 and second.package.latest
    summaries = services.packages.list_all("trains")
    assert [(s.version, s.latest) for s in summaries] == [(1, False), (2, True)]
    assert summaries[0].cut_points == list(CUTS)


def test_bad_uploads_are_refused_and_change_nothing(
    node: Node,
    tiny_packages: TinyPackages,
    tmp_path: Path,
) -> None:
    services = Services(node)
    services.packages.upload(tiny_packages.buses)
    before = snapshot(node)
    for name, (path, reason) in bad_packages(tiny_packages, tmp_path / "bad").items():
        with pytest.raises(PackageError, match=reason):
            services.packages.upload(path)
        assert snapshot(node) == before, name
    with pytest.raises(PackageError, match="empty"):
        services.packages.upload(b"")
    node.settings.api.max_upload_bytes = 1000
    with pytest.raises(TooLargeError, match="accepts 1000"):
        services.packages.upload(tiny_packages.trains)
    assert snapshot(node) == before


def test_a_weak_package_is_refused_unless_forced(node: Node, tiny_packages: TinyPackages) -> None:
    services = Services(node)
    before = snapshot(node)
    with pytest.raises(WeakCandidatesError, match=f"{CUTS[-1]}: recall 0") as refused:
        services.packages.upload(tiny_packages.weak)
    assert "upload with force" in str(refused.value)
    assert snapshot(node) == before
    forced = services.packages.upload(tiny_packages.weak, force=True)
    assert forced.created and forced.package.app == "vans"


def test_a_bundled_base_is_checked_and_registered(
    tmp_path: Path,
    tiny_packages: TinyPackages,
    measured_profile: Profile,
) -> None:
    node = start_node(tmp_path / "fresh", tiny_packages, measured_profile, register_base=False)
    try:
        assert node.registry.list_bases() == []
        Services(node).packages.upload(tiny_packages.trains)
        base = node.registry.get_base(tiny_packages.fingerprint)
        assert base is not None and base.info.name == "mobilenet_v1"
        # the stored weights rebuild a base with the very fingerprint (checked on load)
        load_registered_base(tiny_packages.fingerprint, node.settings.bases_dir)
    finally:
        node.stop()


def test_a_package_in_use_cannot_be_deleted(node: Node, tiny_packages: TinyPackages) -> None:
    services = Services(node)
    sha = services.packages.upload(tiny_packages.trains).package.sha256
    services.apps.create(AppCreate(name="trains"))
    with pytest.raises(ConflictError, match="used by app"):
        services.packages.delete("trains", 1)
    assert node.registry.blobs.exists(sha)
    services.apps.delete("trains")
    services.packages.delete("trains", "latest")
    assert not node.registry.blobs.exists(sha)
    assert not (node.settings.cache_dir / "packages" / sha).exists()
    with pytest.raises(NotFoundError):
        services.packages.get("trains", 1)


# ---------------------------------------------------------------------------------------------
# Apps and the plan in force


def test_registering_apps_replans_and_deploys_without_restarting_the_camera(
    node: Node,
    tiny_packages: TinyPackages,
) -> None:
    services = Services(node)
    services.packages.upload(tiny_packages.trains)
    services.packages.upload(tiny_packages.buses)
    camera = node.cameras.get("synthetic")
    empty = services.schedule.current()
    assert empty.status == "empty"

    trains = services.apps.create(AppCreate(name="trains", threshold=0.0))
    assert trains.planned is not None and trains.planned.name == "trains"
    one = services.schedule.current()
    assert one.status == "ok" and one.plan is not None and one.id != empty.id
    assert set(one.plan.baselines) == {"max_sharing", "no_sharing"}
    assert node.runtime.deployment("synthetic") is not None

    services.apps.create(AppCreate(name="buses", x_vote="auto"))
    two = services.schedule.current()
    assert two.plan is not None and {app.name for app in two.plan.apps} == {"trains", "buses"}
    deployment = node.runtime.deployment("synthetic")
    assert deployment is not None and set(deployment.detectors) == {"trains", "buses"}
    assert node.cameras.get("synthetic") is camera  # the same camera kept streaming

    # threshold 0: every analysed frame fires, so the app opens an event (on a slow box the
    # planned rate may leave more than the quiet time between frames, so it may already be closed)
    assert wait_for(lambda: services.events.list_all(app="trains").items != [], timeout=30)
    event = services.events.list_all(app="trains").items[0]
    assert event.frames_fired >= 1 and event.ended_by in (None, "quiet")
    assert services.events.snapshot(event.id)[:2] == b"\xff\xd8"
    assert services.schedule.current().measured is not None

    with pytest.raises(ConflictError, match="already exists"):
        services.apps.create(AppCreate(name="trains"))
    with pytest.raises(NotFoundError, match="upload it first"):
        services.apps.create(AppCreate(name="trams"))


def test_an_app_that_does_not_fit_is_refused_and_nothing_changes(
    tmp_path: Path,
    tiny_packages: TinyPackages,
    measured_profile: Profile,
) -> None:
    node = start_node(
        tmp_path / "small", tiny_packages, measured_profile, runtime={"budget_ms_per_s": 0.01}
    )
    try:
        services = Services(node)
        services.packages.upload(tiny_packages.trains)
        plan_before = node.registry.current_plan()
        with pytest.raises(InfeasibleError):
            services.apps.create(AppCreate(name="trains"))
        assert node.registry.list_apps() == []
        assert node.registry.current_plan() == plan_before
        assert node.runtime.deployment("synthetic") is None
    finally:
        node.stop()


def test_a_dry_run_plans_without_deploying(node: Node, tiny_packages: TinyPackages) -> None:
    services = Services(node)
    services.packages.upload(tiny_packages.trains)
    services.packages.upload(tiny_packages.buses)
    services.apps.create(AppCreate(name="trains"))
    in_force = services.schedule.current()

    both = services.schedule.dry_run(DryRunRequest(add_apps=[AppCreate(name="buses")]))
    assert both.plan is not None and {a.name for a in both.plan.apps} == {"trains", "buses"}
    assert both.plan.baselines["no_sharing"].value <= both.plan.value + 1e-9
    assert both.current_value == pytest.approx(in_force.plan.value if in_force.plan else -1)
    assert both.plan.solver == "auto" and both.plan.optimality_gap == 0.0  # proven optimal
    node.settings.scheduler.solver = "greedy"  # the node plans with its settings' solver
    greedy = services.schedule.dry_run(DryRunRequest(add_apps=[AppCreate(name="buses")]))
    assert greedy.plan is not None and greedy.plan.solver == "greedy"
    node.settings.scheduler.solver = "auto"

    tight_budget = both.plan.total_cost / 2
    tight = services.schedule.dry_run(
        DryRunRequest(add_apps=[AppCreate(name="buses")], budget=tight_budget)
    )
    assert tight.plan is not None and tight.plan.total_cost <= tight_budget
    with pytest.raises(InfeasibleError):
        services.schedule.dry_run(DryRunRequest(budget=1e-6))
    assert services.schedule.dry_run(DryRunRequest(remove_apps=["trains"])).status == "empty"

    assert services.schedule.current().id == in_force.id
    assert [app.name for app in node.registry.list_apps()] == ["trains"]
    deployment = node.runtime.deployment("synthetic")
    assert deployment is not None and set(deployment.detectors) == {"trains"}


def test_changing_and_disabling_an_app_redeploys_it(
    node: Node, tiny_packages: TinyPackages
) -> None:
    services = Services(node)
    services.packages.upload(tiny_packages.trains)
    services.apps.create(AppCreate(name="trains"))
    deployments = node.runtime.stats().deployments

    changed = services.apps.update("trains", AppUpdate(threshold=0.9, quiet_time_s=0.5))
    assert (changed.app.threshold, changed.app.quiet_time_s) == (0.9, 0.5)
    deployment = node.runtime.deployment("synthetic")
    assert deployment is not None and deployment.detectors["trains"].threshold == 0.9
    assert node.runtime.stats().deployments > deployments

    services.packages.upload(tiny_packages.trains_v2)
    assert services.apps.update("trains", AppUpdate(version="latest")).app.package_version == 2

    services.apps.update("trains", AppUpdate(enabled=False))
    assert node.runtime.deployment("synthetic") is None
    assert services.schedule.current().status == "empty"


def test_periodic_event_updates_reach_every_deployed_detector(
    tmp_path: Path, tiny_packages: TinyPackages, measured_profile: Profile
) -> None:
    node = start_node(
        tmp_path / "node",
        tiny_packages,
        measured_profile,
        runtime={"event_update_every_frames": 4},
    )
    try:
        services = Services(node)
        services.packages.upload(tiny_packages.trains)
        services.apps.create(AppCreate(name="trains"))
        services.apps.update("trains", AppUpdate(threshold=0.9))  # new detectors, same DAG
        deployment = node.runtime.deployment("synthetic")
        assert deployment is not None
        detector = deployment.detectors["trains"]
        assert (detector.threshold, detector.update_every_frames) == (0.9, 4)
    finally:
        node.stop()


def test_cameras_can_be_added_changed_and_removed_live(
    node: Node,
    tiny_packages: TinyPackages,
) -> None:
    services = Services(node)
    services.packages.upload(tiny_packages.trains)
    services.cameras.create(CameraCreate(id="yard", url="synthetic://?fps=10&size=64x48&seed=3"))

    def has_frame() -> bool:
        try:
            return services.cameras.latest_jpeg("yard")[:2] == b"\xff\xd8"
        except NotReadyError:
            return False

    assert wait_for(has_frame)
    services.apps.create(AppCreate(name="trains", camera="yard"))
    assert node.runtime.deployment("yard") is not None
    assert node.runtime.deployment("synthetic") is None
    assert services.cameras.get("yard").apps == ["trains"]

    with pytest.raises(ConflictError, match="used by app"):
        services.cameras.delete("yard")
    with pytest.raises(InvalidRequestError, match="url"):
        services.cameras.update("yard", {"url": "nonsense://x"})
    assert services.cameras.get("yard").camera.config.url.startswith("synthetic://")

    services.apps.update("trains", AppUpdate(camera="synthetic"))
    services.cameras.update("yard", {"enabled": False})
    assert "yard" not in node.cameras
    services.cameras.delete("yard")
    assert [view.camera.id for view in services.cameras.list_all()] == ["synthetic"]


def test_a_restarted_node_keeps_its_state_and_closes_open_events(
    tmp_path: Path,
    tiny_packages: TinyPackages,
    measured_profile: Profile,
) -> None:
    data = tmp_path / "restart"
    node = start_node(data, tiny_packages, measured_profile)
    services = Services(node)
    services.packages.upload(tiny_packages.trains)
    services.apps.create(AppCreate(name="trains", threshold=0.0, quiet_time_s=60))
    _, secret = services.tokens.create("viewer", "dashboard")
    plan_id = services.schedule.current().id
    assert wait_for(lambda: services.events.list_all().items != [], timeout=30)
    node.stop()

    again = start_node(data, tiny_packages)
    try:
        services = Services(again)
        events = services.events.list_all().items
        assert events and all(not event.open for event in events)
        assert [app.app.name for app in services.apps.list_all()] == ["trains"]
        assert services.schedule.current().id == plan_id  # same problem: the stored plan is reused
        assert again.runtime.deployment("synthetic") is not None
        assert services.tokens.verify(f"Bearer {secret}").role == "viewer"
    finally:
        again.stop()


# ---------------------------------------------------------------------------------------------
# Tokens and small helpers


def test_tokens_have_roles(node: Node) -> None:
    services = Services(node)
    _, admin_secret = services.tokens.create("admin", "ops")
    _, viewer_secret = services.tokens.create("viewer")
    admin = services.tokens.verify(f"Bearer {admin_secret}")
    viewer = services.tokens.verify(f"bearer {viewer_secret}")
    assert (admin.name, admin.role, viewer.role) == ("ops", "admin", "viewer")
    require_role(admin, "admin")
    with pytest.raises(ForbiddenError, match="viewer token"):
        require_role(viewer, "admin")
    for header in (None, "", "Bearer", "Basic abc", f"Bearer {admin_secret}x"):
        with pytest.raises(AuthError):
            services.tokens.verify(header)
    principal = verify_token(node.registry, "Bearer from-env", admin_secret="from-env")
    assert principal.role == "admin"


def test_times_are_epoch_seconds_or_iso_8601() -> None:
    assert parse_time("since", "12.5") == 12.5
    assert parse_time("since", "1970-01-01T00:01:00Z") == 60.0
    assert parse_time("since", "1970-01-01T01:01:00+01:00") == 60.0
    assert parse_time("since", None) is None
    with pytest.raises(ValueError, match="since='yesterday'"):
        parse_time("since", "yesterday")


HARDENED_CASES = (
    "a pickle as bundled base weights",
    "other weights under a registered fingerprint",
    "a cut point that climbs out",
    "a cut point the base does not have",
)


@pytest.mark.parametrize("case", HARDENED_CASES)
def test_uploads_a_tamperer_made_consistent_are_still_refused_and_change_nothing(
    case: str, node: Node, tiny_packages: TinyPackages, tmp_path: Path
) -> None:
    """Checksums agree, yet: bundled base weights are checked against the fingerprint even
    when that base is registered here already, and every cut point must be one of the base's."""
    services = Services(node)
    services.packages.upload(tiny_packages.buses)  # the base is registered and recorded
    assert node.registry.get_base(tiny_packages.fingerprint) is not None
    before = snapshot(node)
    cases = hardened_bad_packages(tiny_packages, tmp_path / "bad")
    assert set(cases) == set(HARDENED_CASES)
    path, reason = cases[case]
    with pytest.raises(PackageError, match=reason) as refused:
        services.packages.upload(path)
    assert "\n" not in str(refused.value)
    assert snapshot(node) == before


def test_apps_declared_in_the_config_file_win_over_the_api(
    tmp_path: Path, tiny_packages: TinyPackages, measured_profile: Profile
) -> None:
    """The file's apps are registered at start, refused to the API, brought back to the file's
    values at the next start; one whose package is missing runs once it is uploaded. (Apps
    added over the API beside them: tests/api/test_ha_discovery_e2e.py.)"""
    data = tmp_path / "declared"
    tiny_packages.register_base(data)
    declared = [
        {
            "name": "trains",
            "camera": "synthetic",
            "weight": 2.0,
            "threshold": 0.3,
            "x_vote": 2,
            "max_fps": 2.0,
        },
        {"name": "buses", "quiet_time_s": 5.0},  # its package is not on the node yet
    ]

    def services_of_a_new_node() -> Services:
        node = Node(Settings(**node_config(data, apps=declared)))
        with node.registry.transaction() as transaction:
            transaction.save_profile(measured_profile.base_model, "keras", measured_profile)
        return Services(node)

    def planned(services: Services) -> list[str]:
        plan = services.node.plan_in_force
        return sorted(app.name for app in plan.plan.apps) if plan and plan.plan else []

    services = services_of_a_new_node()
    services.packages.upload(tiny_packages.trains)
    try:
        assert services.start() == [
            "app 'buses' in the config file: no package for app 'buses' version latest on "
            "this node; upload it first"
        ]
        trains = services.apps.get("trains")
        assert trains.declared and planned(services) == ["trains"]
        app = trains.app
        assert (app.weight, app.threshold, app.x_vote, app.camera) == (2.0, 0.3, 2, "synthetic")
        assert (app.min_fps, app.max_fps) == (None, 2.0)
        assert trains.planned is not None and trains.planned.fps <= 2.0
        with pytest.raises(ConflictError, match=r"declared in the config file \(apps:\); change"):
            services.apps.update("trains", AppUpdate(weight=1.0))
        with pytest.raises(ConflictError, match=r"; remove it there and restart the node"):
            services.apps.delete("trains")
        with pytest.raises(ConflictError, match=r"declared in the config file \(apps:\); set it"):
            services.apps.create(AppCreate(name="buses", package="trains"))  # waits for its own
        assert services.apps.get("trains").app.weight == 2.0

        services.packages.upload(tiny_packages.buses)  # the waiting app runs at once
        buses = services.apps.get("buses")
        assert buses.declared and buses.app.quiet_time_s == 5.0
        assert planned(services) == ["buses", "trains"]
    finally:
        services.node.stop()

    # Changed behind the file's back while stopped: the next start restores the file's values.
    services = services_of_a_new_node()
    trains_record = services.registry.get_app("trains")
    with services.registry.transaction() as transaction:
        transaction.update_app(
            trains_record.model_copy(update={"weight": 7.0, "enabled": False, "max_fps": None})
        )
    try:
        assert services.start() == []
        restored = services.apps.get("trains").app
        assert (restored.weight, restored.enabled, restored.max_fps) == (2.0, True, 2.0)
        assert planned(services) == ["buses", "trains"]
    finally:
        services.node.stop()
