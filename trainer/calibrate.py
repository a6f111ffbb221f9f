"""Calibration on the deployment camera: a package's per-frame figures measured where it runs.

The trainer's held-out frames come from the footage it was trained on; a camera at another
place, angle or light can make a candidate fire far more often (a false-positive rate of 0 in
a few hundred held-out frames says little). `calibrate_package` runs every candidate over
footage of the camera the app will watch and records the counts in the package's manifest
(`CandidateInfo.calibrations`). The models are not touched, so every checksum still holds;
the scheduler then plans on the calibration counts (:func:`mainstream.core.manifest.
frame_evidence`), and several clips add up.

Footage without any event of the app's class is useful too (`labels=None`): every frame is a
negative, so it measures the false-positive rate alone and the recall keeps the trainer's
held-out counts.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from mainstream.core.bases import INPUT_CUT, load_package_base, preprocess
from mainstream.core.errors import InvalidParameterError
from mainstream.core.manifest import CalibrationClip, FrameEvidence, Manifest, frame_evidence
from mainstream.core.package import read_package, sha256_file, write_package
from trainer.datasets import load_labelled_video, write_event_csv
from trainer.event_stats import class_frame_correlations
from trainer.finetune import make_predictor, stem_features

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CandidateCalibration:
    """One candidate's counts on the clip, beside the figures it had before."""

    cut_point: str
    clip: FrameEvidence
    before: FrameEvidence | None  # what the scheduler planned on before this clip
    after: FrameEvidence


@dataclass(frozen=True)
class CalibrationResult:
    output: Path
    app: str
    clip: str
    frames: int
    events: int
    candidates: list[CandidateCalibration]


def calibrate_package(
    package_path: Path,
    video: Path,
    labels: Path | None,
    output: Path,
    bases_dir: Path | None = None,
    threshold: float = 0.5,
    fps: float | None = None,
) -> CalibrationResult:
    """Measure every candidate of a package on a labelled clip and write the package again
    with the counts added (`labels` None: footage with no event of the app's class)."""
    if not 0.0 < threshold < 1.0:
        raise InvalidParameterError("threshold", threshold, "a score in (0, 1)")
    video = Path(video)
    if not video.is_file():
        raise InvalidParameterError("video", str(video), "an existing video file")
    with read_package(package_path) as package:
        manifest = package.manifest
        video_sha256 = sha256_file(video)
        for candidate in manifest.candidates:
            if any(clip.video_sha256 == video_sha256 for clip in candidate.calibrations):
                raise InvalidParameterError(
                    "video", video.name, "a clip this package was not calibrated with yet"
                )
        config, base = load_package_base(manifest, package.root, bases_dir)
        with tempfile.TemporaryDirectory(prefix="mainstream-calibrate-") as scratch:
            data = load_labelled_video(
                video,
                labels if labels is not None else _no_events_csv(video, Path(scratch)),
                config.input_size,
                manifest.app.positive_class,
                fps=fps,
                show_progress=False,
            )
        positive = data.labels == 1
        cuts = [candidate.cut_point for candidate in manifest.candidates]
        features = stem_features(base, cuts, data.images, config)
        positive_index = manifest.app.classes.index(manifest.app.positive_class)
        measured_at = datetime.now(timezone.utc)
        results: list[CandidateCalibration] = []
        updated = []
        for candidate in manifest.candidates:
            inputs = (
                preprocess(config, data.images)
                if candidate.cut_point == INPUT_CUT
                else features[candidate.cut_point]
            )
            scores = make_predictor(package.load_candidate(candidate.cut_point))(inputs)
            fires = scores[:, positive_index] >= threshold
            ordered_fires, events, sampled_fps = data.event_fires(fires)
            # Where the clip's fires do not determine a class's correlation (no false fire at
            # all, say), the app's camera-rate c stands in, as in training.
            fallback = manifest.event_stats.correlation ** (float(data.fps or 1) / sampled_fps)
            positive_correlation, negative_correlation = (
                fallback if rho is None else rho
                for rho in class_frame_correlations(ordered_fires, events)
            )
            counts = FrameEvidence(
                positive_frames=int(positive.sum()),
                positive_fires=int(fires[positive].sum()),
                negative_frames=int((~positive).sum()),
                negative_fires=int(fires[~positive].sum()),
                events=len(data.intervals),
                split=f"calibration clip {video.name}",
                positive_frame_correlation=positive_correlation,
                negative_frame_correlation=negative_correlation,
            )
            clip = CalibrationClip(
                clip=video.name,
                video_sha256=video_sha256,
                measured_at=measured_at,
                threshold=threshold,
                counts=counts,
            )
            calibrated = candidate.model_copy(
                update={"calibrations": [*candidate.calibrations, clip]}
            )
            updated.append(calibrated)
            after = frame_evidence(manifest, calibrated)
            assert after is not None  # a calibrated candidate always has counts
            results.append(
                CandidateCalibration(
                    candidate.cut_point, counts, frame_evidence(manifest, candidate), after
                )
            )
        new_manifest = manifest.model_copy(update={"candidates": updated})
        files = _package_files(new_manifest, package.root)
        written = write_package(output, new_manifest, files)
    logger.info(
        "calibrated %s on %s (%d frames, %d events): %s",
        manifest.app.name,
        video.name,
        len(data.labels),
        len(data.intervals),
        written,
    )
    return CalibrationResult(
        output=written,
        app=manifest.app.name,
        clip=video.name,
        frames=len(data.labels),
        events=len(data.intervals),
        candidates=results,
    )


def _no_events_csv(video: Path, folder: Path) -> Path:
    """An empty label file: footage without any event of the app's class."""
    path = folder / f".{video.stem}.no-events.csv"
    write_event_csv(path, [])
    return path


def _package_files(manifest: Manifest, root: Path) -> dict[str, Path]:
    files = {candidate.file: root / candidate.file for candidate in manifest.candidates}
    if manifest.base_weights is not None:
        files[manifest.base_weights["file"]] = root / manifest.base_weights["file"]
    return files


def rate_summary(counts: FrameEvidence | None) -> tuple[str, str]:
    """("fires/frames", ...) of recall and FP rate, for tables."""
    if counts is None:
        return "—", "—"
    return (
        f"{counts.positive_fires}/{counts.positive_frames}",
        f"{counts.negative_fires}/{counts.negative_frames}",
    )


__all__ = [
    "CalibrationResult",
    "CandidateCalibration",
    "calibrate_package",
    "rate_summary",
]
