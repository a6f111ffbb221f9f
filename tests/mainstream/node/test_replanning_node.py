"""Live re-planning on a real node: a profile far too cheap overloads the budget, and the node
re-plans with what it measured, keeping the camera and the open events.

The node runs the synthetic camera and real (untrained) Keras packages; nothing is stubbed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_runtime.detector import EventRecord
from edge_runtime.event_store import EventQuery
from mainstream.node.node import Node
from mainstream.node.services import AppCreate, Services
from mainstream.node.settings import Settings
from scheduler.planner import evaluate_assignment, make_plan
from scheduler.problem import CutPoint, Profile
from tests.support.nodes import (
    TinyPackages,
    node_config,
    wait_for,
)

pytestmark = pytest.mark.slow

APPS = ("trains", "buses")
TOO_CHEAP = 10.0  # the stored profile claims everything costs this many times less


def scaled(profile: Profile, factor: float) -> Profile:
    return profile.model_copy(
        update={
            "cut_points": [
                CutPoint(name=cut.name, cumulative_cost=cut.cumulative_cost * factor)
                for cut in profile.cut_points
            ],
            "total_cost": profile.total_cost * factor,
            "split_overhead": profile.split_overhead * factor,
            "decode_cost": profile.decode_cost * factor,
        }
    )


def test_an_overloaded_node_replans_with_the_measured_profile(
    tmp_path: Path, tiny_packages: TinyPackages
) -> None:
    data_dir = tmp_path / "node"
    tiny_packages.register_base(data_dir)
    key = f"mobilenet_v1@{tiny_packages.fingerprint[:12]}"

    # 1. Measure the real profile and register both apps. Every frame fires (threshold 0), and
    #    with votes chosen by the plan, a higher rate means a better F1 as long as it fits.
    node = Node(Settings(**node_config(data_dir, runtime={"replan": False})))
    node.start()
    try:
        services = Services(node)
        for app in APPS:
            services.packages.upload(getattr(tiny_packages, app))
            services.apps.create(
                AppCreate(name=app, threshold=0.0, quiet_time_s=600.0, x_vote="auto")
            )
        record = node.registry.current_plan()
        assert record is not None and record.problem is not None
        real_problem = record.problem
    finally:
        node.stop()
    real = real_problem.profile_for(key)
    unbounded = real_problem.model_copy(update={"budget": 1e9})
    best_cost = make_plan(unbounded, with_baselines=False).total_cost

    # 2. Restart with a profile 10x too cheap and a budget a quarter of what the best plan
    #    really costs: the plan is the best one, and the runtime goes far over the budget.
    budget = best_cost / 4
    node = Node(
        Settings(
            **node_config(
                data_dir,
                runtime={
                    "budget_ms_per_s": budget,
                    "replan_interval_s": 1.0,
                    "replan_windows": 2,
                    "replan_min_interval_s": 600.0,
                },
            )
        )
    )
    with node.registry.transaction() as transaction:
        transaction.save_profile(key, "keras", scaled(real, 1 / TOO_CHEAP))
    # The first node may already have stored (and closed) an event; only new ones count here.
    earlier = {event.id for event in node.events.query(EventQuery(app="trains"))}

    def new_events() -> list[EventRecord]:
        return [e for e in node.events.query(EventQuery(app="trains")) if e.id not in earlier]

    node.start()
    try:
        first = node.plan_in_force
        assert first is not None and first.plan is not None and first.problem is not None
        assert first.problem.profile_for(key).total_cost == pytest.approx(
            real.total_cost / TOO_CHEAP
        )
        camera = node.cameras.get("synthetic")
        assert wait_for(lambda: len(new_events()) == 1, 60)
        (opened,) = new_events()

        assert wait_for(lambda: node.replanner.replans >= 1, 120), Services(node).health.stats()[
            "replans"
        ]
        replanned = node.plan_in_force
        assert replanned is not None and replanned.plan is not None
        assert replanned.problem is not None and replanned.id != first.id
        assert replanned.reason.startswith("over budget: measured ")
        assert f"> budget {budget:g}" in replanned.reason
        stats = Services(node).health.stats()["replans"]
        assert stats["count"] == 1 and stats["last_reason"] == replanned.reason

        # The corrected profile is stored and much dearer than the one the first plan used.
        corrected = node.registry.get_profile(key, "keras")
        assert corrected is not None and "runtime_correction" in (corrected.model_extra or {})
        assert replanned.problem.profile_for(key).total_cost == pytest.approx(corrected.total_cost)
        assert corrected.total_cost > 3 * first.problem.profile_for(key).total_cost
        # With it, the first plan does not fit the budget, and the new plan does.
        first_assignment = {a.name: (a.cut_point, a.fps, a.x_vote) for a in first.plan.apps}
        assert evaluate_assignment(replanned.problem, first_assignment).total_cost > budget
        assert replanned.plan.total_cost <= budget * (1 + 1e-9)
        assert sum(a.fps for a in replanned.plan.apps) < sum(a.fps for a in first.plan.apps)

        # The camera kept streaming and the open event survived the new DAGs.
        assert node.cameras.get("synthetic") is camera
        before = node.runtime.stats().apps["synthetic/trains"].frames_analysed
        assert wait_for(
            lambda: node.runtime.stats().apps["synthetic/trains"].frames_analysed > before, 30
        )
        assert [(e.id, e.end_time) for e in new_events()] == [(opened.id, None)]
    finally:
        node.stop()
