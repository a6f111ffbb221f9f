"""`mainstream demo` end to end: a real process builds tiny assets, serves, streams, measures."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from edge_runtime.replay import AppReplayFigures
from mainstream.cli.demo_run import (
    DemoAssets,
    DemoConfig,
    DemoOptions,
    demo_budget,
    derived_budget,
    free_port,
    needed_fps,
    quiet_time_for,
    scheme_plans,
    summarise,
)
from mainstream.core.errors import InvalidParameterError
from scheduler.problem import AppPlan, BaselinePlan, CutPoint, Plan, Profile

DEMO_SECONDS = 10  # streamed; three apps raise events within seconds


def test_quiet_time_outlasts_the_gap_between_analysed_frames() -> None:
    assert quiet_time_for(10.0) == 1.0
    assert quiet_time_for(1.0) == 1.5
    assert quiet_time_for(0.5) == 3.0  # two fires 2 s apart stay one event


def test_derived_budget_is_a_share_of_no_sharing_at_a_rate() -> None:
    profile = Profile(
        base_model="mobilenet_v1",
        cut_points=[CutPoint(name="input", cumulative_cost=0.0)],
        total_cost=4.0,
    )
    # Three apps, each running the whole 4 ms network on every frame of a 10 fps camera: 120.
    assert derived_budget(profile, apps=3, rate_fps=10.0, share=0.5) == 60.0
    with pytest.raises(InvalidParameterError, match="budget_share"):
        derived_budget(profile, apps=3, rate_fps=10.0, share=0.0)


def test_demo_budget_is_relative_to_the_machine_and_the_events() -> None:
    """Twice as slow a machine gets twice the budget: the scenario, not the speed, decides."""
    assert needed_fps(event_length_s=2.0, camera_fps=10.0) == 1.0
    assert needed_fps(event_length_s=0.1, camera_fps=10.0) == 10.0  # never above the camera
    options = DemoOptions(config=DemoConfig(apps=3, event_length_s=2.0), budget_share=0.5)
    budgets = []
    for total_cost in (2.0, 4.0):
        profile = Profile(
            base_model="mobilenet_v1",
            cut_points=[CutPoint(name="input", cumulative_cost=0.0)],
            total_cost=total_cost,
        )
        budget, basis = demo_budget(options, profile)
        budgets.append(budget)
        assert f"{budget:g} ms/s = 0.5 x what No-Sharing needs" in basis
        assert "at 1 fps" in basis and "of one core" in basis
    assert budgets == [3.0, 6.0]
    given = DemoOptions(budget_ms_per_s=25.0)
    assert demo_budget(given, profile) == (25.0, "25 ms/s as given, 2.5 % of one core")


def _app_plan(name: str, cut_point: str, fps: float, f1: float) -> AppPlan:
    return AppPlan(
        name=name,
        cut_point=cut_point,
        fps=fps,
        x_vote=1,
        recall=f1,
        precision=f1,
        f1=f1,
        cost=1.0,
    )


def _figures(app: AppPlan, measured_f1: float) -> AppReplayFigures:
    return AppReplayFigures(
        app=app.name,
        cut_point=app.cut_point,
        planned_fps=app.fps,
        analysed_fps=app.fps,
        x_vote=app.x_vote,
        events=3,
        predicted_recall=app.recall,
        predicted_precision=app.precision,
        predicted_f1=app.f1,
        measured_recall=measured_f1,
        measured_precision=measured_f1,
        measured_f1=measured_f1,
        labelled_events=10,
        false_alarms=1,
    )


def test_summary_measures_the_plan_against_both_baselines(tmp_path: Path) -> None:
    plan_apps = [
        _app_plan("trains", "conv_pw_7_relu", 1.0, 0.9),
        _app_plan("buses", "conv_pw_7_relu", 1.0, 0.8),
    ]
    no_sharing = [
        _app_plan("trains", "conv_pw_1_relu", 0.2, 0.5),
        _app_plan("buses", "conv_pw_1_relu", 0.5, 0.7),
    ]
    max_sharing = [
        _app_plan("trains", "conv_pw_13_relu", 2.0, 0.3),
        _app_plan("buses", "conv_pw_13_relu", 2.0, 0.4),
    ]
    plan = Plan(
        objective="mean_f1",
        value=0.85,
        budget=10.0,
        total_cost=9.5,
        solver="auto",
        solve_time_s=0.01,
        apps=plan_apps,
        baselines={
            "no_sharing": BaselinePlan(value=0.6, total_cost=9.0, apps=no_sharing),
            "max_sharing": BaselinePlan(value=0.35, total_cost=8.0, apps=max_sharing),
        },
    )
    plans = scheme_plans(plan)
    assert set(plans) == {"plan", "no_sharing", "max_sharing"}
    assert [app.cut_point for app in plans["no_sharing"].apps] == ["conv_pw_1_relu"] * 2
    assert plans["max_sharing"].value == 0.35 and plans["max_sharing"].baselines == {}
    measured = {"plan": (0.9, 0.5), "no_sharing": (0.4, 0.6), "max_sharing": (0.2, 0.3)}
    replayed = {
        key: {
            app.name: _figures(app, f1)
            for app, f1 in zip(plans[key].apps, measured[key], strict=True)
        }
        for key in plans
    }
    assets = DemoAssets(
        config=DemoConfig(apps=2),
        train_video=tmp_path / "train.avi",
        train_labels=tmp_path / "train.csv",
        held_out_video=tmp_path / "held_out.avi",
        held_out_labels=tmp_path / "held_out.csv",
        bases_dir=tmp_path,
        base_fingerprint="0" * 64,
        packages={"trains": tmp_path / "t.mpkg", "buses": tmp_path / "b.mpkg"},
        positive_class={"trains": "train", "buses": "bus"},
    )
    summary = summarise(
        DemoOptions(data_dir=tmp_path),
        assets,
        plans,
        [],
        replayed,
        streamed_seconds=10.0,
        setup_seconds=1.0,
        url="http://127.0.0.1:1",
        budget_basis="10 ms/s as given",
    )
    assert summary.measured_value == pytest.approx(0.7)
    assert summary.margins == pytest.approx({"no_sharing": 0.2, "max_sharing": 0.45})
    assert summary.schemes["no_sharing"].measured_f1 == pytest.approx(0.5)
    trains, buses = summary.apps
    assert trains.no_sharing_measured_f1 == 0.4 and trains.max_sharing_measured_f1 == 0.2
    assert buses.schemes["no_sharing"].cut_point == "conv_pw_1_relu"
    # buses: predicted 0.8, measured 0.5 -> flagged; trains (0.9 both) is not.
    assert len(summary.flagged) == 1 and summary.flagged[0].startswith("buses: measured F1 0.50")
    text = summary.table()
    assert "Mainstream beats No-Sharing by +0.20 (0.70 vs 0.50)" in text
    assert "beats Max-Sharing by +0.45 (0.70 vs 0.25)" in text
    assert "  ! buses: measured F1 0.50 is far below its predicted 0.80" in text
    assert "  No-Sharing: trains conv_pw_1 @ 0.2 fps, buses conv_pw_1 @ 0.5 fps (9 ms/s)" in text
    mean_line = next(line for line in text.splitlines() if line.startswith("mean"))
    assert mean_line.split()[-6:] == ["0.85", "0.70", "0.60", "0.50", "0.35", "0.25"]

    # A baseline that does not fit the budget is said so, and is beaten by the whole F1.
    plan.baselines["max_sharing"] = BaselinePlan(value=0.0, feasible=False)
    plans = scheme_plans(plan)
    assert "max_sharing" not in plans
    del replayed["max_sharing"]
    summary = summarise(
        DemoOptions(data_dir=tmp_path),
        assets,
        plans,
        [],
        replayed,
        10.0,
        1.0,
        "http://127.0.0.1:1",
        "10 ms/s as given",
    )
    assert "Max-Sharing does not fit the budget" in summary.verdict()
    assert summary.margins["max_sharing"] == pytest.approx(0.7)
    assert summary.apps[0].max_sharing_measured_f1 is None


@pytest.mark.slow
@pytest.mark.timeout(900)  # about 3 minutes on 2 idle cores; room for busy runners
def test_demo_trains_serves_streams_and_summarises(tmp_path: Path) -> None:
    port = free_port()
    data_dir = tmp_path / "demo"
    summary_path = tmp_path / "summary.json"
    command = [
        sys.executable,
        "-m",
        "mainstream.cli.main",
        "demo",
        "--fast",
        "--quiet",
        "--duration",
        str(DEMO_SECONDS),
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--summary-json",
        str(summary_path),
    ]
    user_data = tmp_path / "user-data"  # the default base registry of `base list` / `train`
    environment = dict(
        os.environ,
        PYTHONUNBUFFERED="1",
        TF_CPP_MIN_LOG_LEVEL="2",
        MAINSTREAM_DATA_DIR=str(user_data),
    )
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment,
    )
    lines: queue.Queue[str] = queue.Queue()
    output: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put("")

    threading.Thread(target=read, daemon=True).start()
    try:
        dashboard_status = None
        while True:
            line = lines.get(timeout=850)
            if line == "":
                break
            output.append(line)
            if line.startswith("dashboard:") and dashboard_status is None:
                url = line.split(":", 1)[1].strip()
                assert url == f"http://127.0.0.1:{port}/ui/"
                dashboard_status = _dashboard_answers(url)
        assert process.wait(timeout=60) == 0, "".join(output)
    finally:
        if process.poll() is None:
            process.kill()
    text = "".join(output)
    assert dashboard_status == 200, text
    assert f"demo data directory: {data_dir}" in text
    assert "admin token: mst_" in text
    for step in range(1, 8):
        assert f"[{step}/7]" in text

    summary = json.loads(summary_path.read_text())
    assert [app["app"] for app in summary["apps"]] == ["trains", "buses", "cars"]
    assert summary["events"] > 0, text
    assert summary["streamed_seconds"] >= DEMO_SECONDS - 1
    assert sum(app["live_events"] for app in summary["apps"]) == summary["events"]
    for app in summary["apps"]:
        assert 0.0 <= app["predicted_f1"] <= 1.0
        # Replay scored every app against the held-out video's labels.
        assert app["labelled_events"] >= 1
        assert 0.0 <= app["measured_f1"] <= 1.0
    # The plan and both baselines were replayed on the labelled video and compared.
    assert "budget: " in text and "x what No-Sharing needs to run the 3 apps" in text
    schemes = summary["schemes"]
    assert set(schemes) == {"plan", "no_sharing", "max_sharing"}
    assert schemes["plan"]["measured_f1"] == pytest.approx(
        sum(app["measured_f1"] for app in summary["apps"]) / 3
    )
    assert set(summary["margins"]) == {"no_sharing", "max_sharing"}
    for key, scheme in schemes.items():
        if scheme["feasible"]:
            assert 0.0 <= scheme["measured_f1"] <= 1.0
            assert summary["margins"].get(key, 0.0) == pytest.approx(
                schemes["plan"]["measured_f1"] - scheme["measured_f1"], abs=1e-3
            )
            assert all(app["schemes"][key]["measured_f1"] is not None for app in summary["apps"])
    assert "Measured mean event F1: Mainstream" in text
    assert "-- No-Sharing --" in text and "-- Max-Sharing --" in text
    for app in summary["apps"]:
        assert any(line.split()[:1] == [app["app"]] for line in text.splitlines())

    # The events were stored by the node, not only printed.
    from edge_runtime.event_store import EventStore

    store = EventStore(data_dir / "node" / "events.db")
    try:
        assert store.count() == summary["events"]
    finally:
        store.close()

    # The demo's base is registered where `base list` and `train` look by default, and the
    # short fingerprint it prints names it.
    listed = subprocess.run(
        [sys.executable, "-m", "mainstream.cli.main", "base", "list", "--json"],
        capture_output=True,
        text=True,
        env=environment,
        check=True,
    )
    (registered,) = json.loads(listed.stdout)
    short = registered["weights_fingerprint"][:12]
    assert f"mainstream train --weights {short}" in text
    from mainstream.core.bases import resolve_fingerprint

    assert resolve_fingerprint(short, user_data / "bases") == registered["weights_fingerprint"]


def _dashboard_answers(url: str) -> int:
    """The dashboard page's status (the static page needs no token)."""
    response = httpx.get(url, timeout=10, follow_redirects=True)
    assert "<html" in response.text.lower()
    return response.status_code
