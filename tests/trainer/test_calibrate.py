"""Calibration on the deployment camera: real tiny packages measured on a real labelled clip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mainstream.cli.main import main
from mainstream.core.errors import InvalidParameterError
from mainstream.core.manifest import (
    FrameEvidence,
    calibrated_evidence,
    design_effect,
    frame_evidence,
)
from mainstream.core.package import read_package, verify_package
from scheduler.problem import Candidate
from tests.support.nodes import TinyPackages
from tests.support.training import make_labelled_clip
from trainer.calibrate import calibrate_package
from trainer.datasets import read_event_csv


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """8 s of a street where trains pass, labelled with the app's class name."""
    return make_labelled_clip(tmp_path_factory.mktemp("clip"), "trains")


def test_counts_are_recorded_and_planned_on_while_the_models_stay(
    tmp_path: Path, tiny_packages: TinyPackages, clip: tuple[Path, Path]
) -> None:
    tiny_packages.register_base(tmp_path)
    video, labels = clip
    events = len(read_event_csv(labels))
    out = tmp_path / "calibrated.mpkg"
    result = calibrate_package(tiny_packages.trains, video, labels, out, tmp_path / "bases")
    assert result.frames == 80 and result.events == events > 0
    calibrated = verify_package(out).manifest  # checksums and models still hold
    with read_package(tiny_packages.trains) as original:
        for before, after, row in zip(
            original.manifest.candidates, calibrated.candidates, result.candidates, strict=True
        ):
            assert after.sha256 == before.sha256 and after.file == before.file
            (clip_counts,) = [c.counts for c in after.calibrations]
            assert clip_counts == row.clip
            assert clip_counts.positive_frames + clip_counts.negative_frames == 80
            assert clip_counts.events == events
            planned = frame_evidence(calibrated, after)
            assert planned is not None and planned.negative_frames == clip_counts.negative_frames
            assert planned.negative_fires == clip_counts.negative_fires
            assert "calibration on the deployment camera (1 clip(s): street.avi)" in planned.split

    # The same clip twice would count its frames twice: refused, nothing written.
    with pytest.raises(InvalidParameterError, match="not calibrated with yet"):
        calibrate_package(out, video, labels, tmp_path / "again.mpkg", tmp_path / "bases")
    assert not (tmp_path / "again.mpkg").exists()


def test_footage_without_events_measures_the_false_positive_rate_only(
    tmp_path: Path, tiny_packages: TinyPackages, clip: tuple[Path, Path], capsys
) -> None:
    tiny_packages.register_base(tmp_path)
    video, _ = clip
    out = tmp_path / "quiet.mpkg"
    main(
        [
            "calibrate",
            str(tiny_packages.trains),
            "--video",
            str(video),
            "--no-events",
            "--bases-dir",
            str(tmp_path / "bases"),
            "-o",
            str(out),
            "--json",
        ]
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed["frames"] == 80 and printed["events"] == 0
    manifest = verify_package(out).manifest
    for candidate in manifest.candidates:
        planned = frame_evidence(manifest, candidate)
        assert planned is not None and planned.negative_frames == 80  # every frame a negative
        # The tiny packages carry no held-out counts: the recall is the ratio as given.
        assert planned.positive_frames == 0
        spec = Candidate.from_manifest(manifest, candidate)
        recall, fpr = spec.planned_rates(None)
        assert recall == candidate.recall == spec.planned_rates(0.9)[0]
        # The Jeffreys mean over the clip's effective frames: runs of fires weigh less.
        assert planned.negative_frame_correlation is not None
        frames_per_frame = design_effect(planned.negative_frame_correlation)
        assert fpr == pytest.approx(
            (planned.negative_fires / frames_per_frame + 0.5) / (80 / frames_per_frame + 1)
        )

    # With held-out counts, the recall keeps them.
    trained = FrameEvidence(
        positive_frames=50,
        positive_fires=45,
        negative_frames=300,
        negative_fires=0,
        events=4,
        split="last 25 % by time",
    )
    merged = calibrated_evidence(manifest.candidates[0].calibrations, trained)
    assert (merged.positive_frames, merged.positive_fires, merged.events) == (50, 45, 4)
    assert merged.positive_frame_correlation is None  # the trainer's counts, unmeasured
    clip_counts = manifest.candidates[0].calibrations[0].counts
    assert merged.negative_frame_correlation == pytest.approx(
        clip_counts.negative_frame_correlation
    )
    assert merged.negative_frames == 80
    assert "recall from the trainer's held-out frames (last 25 % by time)" in merged.split
