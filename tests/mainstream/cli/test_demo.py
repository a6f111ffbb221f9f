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

from mainstream.cli.demo_run import derived_budget, free_port, quiet_time_for
from mainstream.core.errors import InvalidParameterError
from scheduler.problem import CutPoint, Profile

DEMO_SECONDS = 15  # streamed; three apps raise events within seconds


def test_quiet_time_outlasts_the_gap_between_analysed_frames() -> None:
    assert quiet_time_for(10.0) == 1.0
    assert quiet_time_for(1.0) == 1.5
    assert quiet_time_for(0.5) == 3.0  # two fires 2 s apart stay one event


def test_derived_budget_is_a_share_of_no_sharing_at_full_rate() -> None:
    profile = Profile(
        base_model="mobilenet_v1",
        cut_points=[CutPoint(name="input", cumulative_cost=0.0)],
        total_cost=4.0,
    )
    # Three apps, each running the whole 4 ms network on every frame of a 10 fps camera: 120.
    assert derived_budget(profile, apps=3, camera_fps=10.0, share=0.5) == 60.0
    with pytest.raises(InvalidParameterError, match="budget_share"):
        derived_budget(profile, apps=3, camera_fps=10.0, share=0.0)


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
    assert "predicted F1" in text and "measured F1" in text and "No-Sharing F1" in text
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
