"""`mainstream synth ...`: labelled synthetic videos and image folders for training and demos.

Only click and light modules are imported at the top; OpenCV loads when a command runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import yaml
from pydantic import ValidationError

from mainstream.core.errors import InvalidParameterError
from mainstream.core.yaml_files import describe_yaml_error
from trainer.datasets import export_video_frames
from trainer.synth import IMAGE_CLASSES, SynthConfig, generate_image_dataset, generate_video


@click.group("synth")
def synth() -> None:
    """Generate labelled synthetic data: videos of objects crossing a scene, image folders."""


def _parse_size(value: str | None) -> tuple[int, int] | None:
    """'160x120' -> (width, height)."""
    if value is None:
        return None
    parts = value.lower().split("x")
    if len(parts) != 2 or not all(part.strip().isdigit() for part in parts):
        raise InvalidParameterError("--size", value, "WIDTHxHEIGHT, e.g. 160x120")
    return int(parts[0]), int(parts[1])


def _parse_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [item.strip() for item in value.split(",") if item.strip()]


def _load_config(path: Path | None, overrides: dict[str, Any]) -> Any:
    """A SynthConfig from an optional YAML file, with the options given on the command line."""

    values: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as error:
            raise InvalidParameterError(
                "--config", str(path), f"valid YAML ({describe_yaml_error(error, path.name)})"
            ) from error
        if not isinstance(loaded, dict):
            raise InvalidParameterError(
                "--config", str(path), "a YAML mapping of SynthConfig fields"
            )
        values.update(loaded)
    values.update({key: value for key, value in overrides.items() if value is not None})
    try:
        return SynthConfig.model_validate(values)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "config"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise InvalidParameterError(field, first.get("input"), message) from None


@synth.command("video")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Video file to write (.avi: MJPG, .mp4: mp4v).",
)
@click.option(
    "--labels",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Label CSV (start_frame,end_frame,label; inclusive ends) [default: OUTPUT with .csv].",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="YAML file of SynthConfig fields; options given here override it.",
)
@click.option("--duration", type=float, default=None, help="Seconds of video [default: 60].")
@click.option("--fps", type=float, default=None, help="Frame rate [default: 10].")
@click.option("--size", default=None, help="WIDTHxHEIGHT [default: 160x120].")
@click.option("--kinds", default=None, help="Event object kinds, comma-separated [default: train].")
@click.option(
    "--distractors", default=None, help="Other object kinds that also cross, comma-separated."
)
@click.option(
    "--distractor-frequency", type=float, default=None, help="Time fraction of distractors."
)
@click.option("--event-length", type=float, default=None, help="Mean event seconds [default: 2].")
@click.option(
    "--event-length-jitter", type=float, default=None, help="Lengths vary ± this fraction."
)
@click.option(
    "--event-frequency", type=float, default=None, help="Time fraction in events [default: 0.3]."
)
@click.option("--noise", type=float, default=None, help="Sensor noise std [default: 0.02].")
@click.option("--drift", type=float, default=None, help="Lighting drift amplitude [default: 0.1].")
@click.option("--seed", type=int, default=None, help="Random seed [default: 0].")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def video(
    output: Path,
    labels: Path | None,
    config_path: Path | None,
    duration: float | None,
    fps: float | None,
    size: str | None,
    kinds: str | None,
    distractors: str | None,
    distractor_frequency: float | None,
    event_length: float | None,
    event_length_jitter: float | None,
    event_frequency: float | None,
    noise: float | None,
    drift: float | None,
    seed: int | None,
    as_json: bool,
) -> None:
    """Render a labelled video of objects crossing a scene, and its label CSV."""

    dimensions = _parse_size(size)
    config = _load_config(
        config_path,
        {
            "duration_s": duration,
            "fps": fps,
            "width": dimensions[0] if dimensions else None,
            "height": dimensions[1] if dimensions else None,
            "kinds": _parse_list(kinds),
            "distractor_kinds": _parse_list(distractors),
            "distractor_frequency": distractor_frequency,
            "event_length_s": event_length,
            "event_length_jitter": event_length_jitter,
            "event_frequency": event_frequency,
            "noise": noise,
            "drift": drift,
            "seed": seed,
        },
    )
    labels_path = labels if labels is not None else output.with_suffix(".csv")
    summary = generate_video(output, labels_path, config, show_progress=not as_json)
    if as_json:
        click.echo(json.dumps(summary.model_dump(), indent=2))
        return
    click.echo(f"wrote {summary.video_path} ({summary.total_frames} frames at {summary.fps:g} fps)")
    click.echo(f"labels {summary.labels_path}")
    click.echo(
        f"{summary.event_count} events, mean length {summary.mean_event_length_s:.2f} s, "
        f"event frequency {summary.realised_event_frequency:.3f}; "
        f"{summary.distractor_count} distractors; by kind {summary.counts_by_kind}"
    )


@synth.command("images")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="New folder; one subfolder per class is written in it.",
)
@click.option(
    "--classes",
    default="10",
    show_default=True,
    help="How many classes (the first N of the catalogue) or a comma-separated list of names.",
)
@click.option("--per-class", default=50, show_default=True, type=click.IntRange(min=1))
@click.option("--size", default=96, show_default=True, type=click.IntRange(16, 1024))
@click.option("--seed", default=0, show_default=True, type=int)
def images(output: Path, classes: str, per_class: int, size: int, seed: int) -> None:
    """Write an image folder of synthetic object classes (for pretraining a base network)."""

    chosen: int | list[str] = (
        int(classes) if classes.strip().isdigit() else (_parse_list(classes) or [])
    )
    counts = generate_image_dataset(output, chosen, per_class, size, seed)
    click.echo(f"wrote {sum(counts.values())} images of {len(counts)} classes to {output}")
    click.echo(f"classes: {', '.join(counts)} (catalogue: {', '.join(IMAGE_CLASSES)})")


@synth.command("frames")
@click.argument("video_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("labels_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Image folder to add the frames to (<class>/<clip>_<frame>.png).",
)
@click.option("--positive", default=None, help="Label of the positive class [default: all events].")
@click.option("--frame-step", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--size", default=None, type=click.IntRange(16, 1024), help="Square size [native].")
def frames(
    video_path: Path,
    labels_path: Path,
    output: Path,
    positive: str | None,
    frame_step: int,
    size: int | None,
) -> None:
    """Export a labelled video's frames into a class-per-folder image dataset."""

    counts = export_video_frames(
        video_path, labels_path, output, positive, frame_step=frame_step, image_size=size
    )
    click.echo(f"wrote {sum(counts.values())} frames to {output}: {counts}")
