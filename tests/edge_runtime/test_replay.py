"""`mainstream replay` runs the whole runtime on a labelled synthetic video."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_runtime.replay import LabelledInterval, measure_event_quality, negative_windows
from mainstream.cli.main import main
from tests.support.nodes import TinyPackages

pytestmark = pytest.mark.slow


def test_window_measurement_follows_the_event_model_definitions() -> None:
    intervals = [LabelledInterval(10, 19, "train"), LabelledInterval(40, 49, "train")]
    # Analysed every other frame; fires inside the first event only, and once in a gap.
    fired = [(frame, 10 <= frame <= 19 or frame == 30) for frame in range(0, 60, 2)]
    recall, precision, f1, false_alarms = measure_event_quality(fired, intervals, 60, x_vote=1)
    assert recall == 0.5
    assert false_alarms == 1 and precision == 0.5 and f1 == 0.5
    # X = 2 needs two consecutive analysed fires: the single stray fire no longer counts.
    assert measure_event_quality(fired, intervals, 60, x_vote=2)[3] == 0
    assert negative_windows(intervals, 60, 10) == [(0, 9), (20, 29), (30, 39), (50, 59)]


def test_replay_cli_plans_runs_and_measures(
    tmp_path: Path, tiny_packages: TinyPackages, capsys: pytest.CaptureFixture[str]
) -> None:
    from trainer.synth import SynthConfig, generate_video

    video, labels = tmp_path / "scene.avi", tmp_path / "scene.csv"
    generate_video(
        video,
        labels,
        SynthConfig(
            duration_s=20,
            fps=10,
            width=96,
            height=96,
            kinds=["train"],
            event_length_s=1.5,
            event_frequency=0.3,
        ),
        show_progress=False,
    )
    # The tiny package's positive class is the app name, "trains".
    labels.write_text(labels.read_text().replace(",train", ",trains"))
    profile = tmp_path / "profile.json"
    # The engine is not what this test is about: Keras, whatever the machine has.
    engine = ["--engine", "keras"]
    main(
        [
            "profile",
            "--alpha",
            "0.25",
            "--input-size",
            "96",
            "--repeats",
            "3",
            *engine,
            "-o",
            str(profile),
        ]
    )
    capsys.readouterr()
    # Each cut point carries the split overhead its branch was measured to pay.
    overheads = [cut["split_overhead"] for cut in json.loads(profile.read_text())["cut_points"]]
    assert all(overhead is not None and overhead >= 0 for overhead in overheads)
    events_out = tmp_path / "events.jsonl"
    main(
        [
            "replay",
            str(video),
            "--package",
            str(tiny_packages.trains),
            "--budget",
            "40",
            "--profile",
            str(profile),
            "--labels",
            str(labels),
            "--events-out",
            str(events_out),
            "--json",
            *engine,
        ]
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["frames"] == 200
    (app,) = summary["apps"]
    assert app["app"] == "trains"
    # The runtime analyses exactly the planned share of frames (nested rate accumulators).
    assert app["analysed_fps"] == pytest.approx(app["planned_fps"], rel=0.05)
    assert app["labelled_events"] >= 2
    assert 0.0 <= app["measured_f1"] <= 1.0
    lines = events_out.read_text().splitlines()
    assert len(lines) == app["events"]
    for line in lines:
        record = json.loads(line)
        assert record["app"] == "trains" and record["end_time"] >= record["start_time"]

    # The table states the prediction (with its interval where the package has counts) beside
    # what was measured on how many labelled events.
    table_args = ["replay", str(video), "--package", str(tiny_packages.trains), "--budget", "40"]
    table_args += ["--profile", str(profile), "--labels", str(labels)]
    main([*table_args, "--events-out", str(tmp_path / "table.jsonl")])
    header, row = capsys.readouterr().out.splitlines()[1:3]
    assert "F1 pred [90 % interval]" in header and "labelled" in header
    assert row.split()[0] == "trains" and row.split()[-1] == str(app["labelled_events"])
