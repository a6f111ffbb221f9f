"""Dry runs on a real node: they are capped in size and never hold up a change while planning.

The node runs the synthetic camera and real (untrained) Keras packages; only the plan search
of the dry run is slowed down (wrapped, not replaced) so that the test can act while it runs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

import mainstream.node.node as node_module
from mainstream.core.errors import InvalidParameterError
from mainstream.node.node import Node
from mainstream.node.services import (
    AppCreate,
    CameraCreate,
    DryRunRequest,
    DryRunResult,
    Services,
)
from mainstream.node.settings import Settings
from tests.support.nodes import TinyPackages, node_config

pytestmark = pytest.mark.slow

DRY_RUN_THREAD = "dry-run-under-test"


@pytest.fixture(scope="module")
def node(tiny_packages: TinyPackages, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """A started node running app `trains`, with `buses` uploaded but not deployed."""
    data_dir = tmp_path_factory.mktemp("dry-run-node")
    tiny_packages.register_base(data_dir)
    node = Node(Settings(**node_config(data_dir, scheduler={"max_dry_run_apps": 3})))
    node.start()
    try:
        services = Services(node)
        services.packages.upload(tiny_packages.trains)
        services.packages.upload(tiny_packages.buses)
        services.apps.create(AppCreate(name="trains"))
        yield node
    finally:
        node.stop()


def test_a_change_goes_through_while_a_dry_run_plans(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = Services(node)
    planning, release = threading.Event(), threading.Event()
    real_make_plan = node_module.make_plan

    def held_make_plan(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread().name == DRY_RUN_THREAD:
            planning.set()
            assert release.wait(30), "the test never let the dry run finish"
        return real_make_plan(*args, **kwargs)

    monkeypatch.setattr(node_module, "make_plan", held_make_plan)
    results: list[DryRunResult] = []
    dry_run = threading.Thread(
        target=lambda: results.append(
            services.schedule.dry_run(DryRunRequest(add_apps=[AppCreate(name="buses")]))
        ),
        name=DRY_RUN_THREAD,
    )
    added = threading.Event()

    def add_camera() -> None:
        services.cameras.create(CameraCreate(id="yard", url="synthetic://?fps=5&size=64x48"))
        added.set()

    change = threading.Thread(target=add_camera)
    dry_run.start()
    try:
        assert planning.wait(30), "the dry run never reached its plan search"
        change.start()
        # The dry run is in its plan search and stays there until released: the change must
        # not wait for it (under the change lock it would wait forever).
        assert added.wait(15), "the camera add waited for the dry run's plan search"
    finally:
        release.set()
        dry_run.join(30)
        change.join(30)
    assert len(results) == 1 and results[0].plan is not None
    assert {app.name for app in results[0].plan.apps} == {"trains", "buses"}
    assert node.registry.has_camera("yard")
    assert [app.name for app in node.registry.list_apps()] == ["trains"]  # nothing deployed
    services.cameras.delete("yard")


def test_a_dry_run_adds_at_most_the_configured_number_of_apps(node: Node) -> None:
    services = Services(node)
    solves = node.scheduler.solves
    too_many = DryRunRequest(
        add_apps=[AppCreate(name=f"buses-{n}", package="buses") for n in range(4)]
    )
    with pytest.raises(
        InvalidParameterError, match=r"at most 3 apps .*scheduler\.max_dry_run_apps"
    ):
        services.schedule.dry_run(too_many)
    assert node.scheduler.solves == solves  # refused before any planning
    allowed = DryRunRequest(
        add_apps=[AppCreate(name=f"buses-{n}", package="buses") for n in range(3)]
    )
    result = services.schedule.dry_run(allowed)
    assert result.plan is not None and len(result.plan.apps) == 4


def test_a_dry_run_reports_what_it_cannot_plan(node: Node) -> None:
    """Errors found while reading the node's state still reach the caller (and free the lock)."""
    services = Services(node)
    with pytest.raises(Exception, match="no app 'nope' to remove"):
        services.schedule.dry_run(DryRunRequest(remove_apps=["nope"]))
    with pytest.raises(Exception, match="already exists"):
        services.schedule.dry_run(DryRunRequest(add_apps=[AppCreate(name="trains")]))
    acquired = threading.Event()

    def change() -> None:
        with node.changes():
            acquired.set()

    waiter = threading.Thread(target=change)
    waiter.start()
    waiter.join(5)
    assert acquired.is_set()
