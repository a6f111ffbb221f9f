"""`mainstream base ...`: pretrain and list the shared base models.

Only click and light modules are imported at the top; TensorFlow loads when a command runs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click
import yaml
from pydantic import ValidationError

from mainstream.core.bases import (
    BASE_NAMES,
    BaseConfig,
    list_registered_bases,
    save_base,
    save_weights_atomically,
)
from mainstream.core.errors import InvalidParameterError
from mainstream.core.yaml_files import describe_yaml_error
from mainstream.node.settings import Settings
from trainer.pipeline import TrainRequest, train_package
from trainer.pretrain import load_image_folder, pretrain_base


def _default_bases_dir() -> Path:

    return Settings().bases_dir


@click.group("base")
def base() -> None:
    """Base models shared by apps: pretrain one offline, list the registered ones."""


@base.command("pretrain")
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Image folder with one subfolder per class.",
)
@click.option(
    "--base", "base_name", required=True, type=click.Choice(BASE_NAMES), help="Architecture."
)
@click.option("--alpha", default=1.0, show_default=True, help="Width multiplier (MobileNets).")
@click.option("--input-size", default=224, show_default=True, help="Square input size in pixels.")
@click.option("--epochs", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=2))
@click.option("--learning-rate", default=1e-3, show_default=True, type=float)
@click.option(
    "--validation-fraction",
    default=0.1,
    show_default=True,
    type=click.FloatRange(min=0, max=1, max_open=True),
    help="Share of each class held out to report accuracy.",
)
@click.option("--seed", default=0, show_default=True, help="Seed of initialisation and shuffling.")
@click.option(
    "--init-weights",
    default="none",
    show_default=True,
    help="Starting weights: none (from scratch), imagenet, or a weights file.",
)
@click.option(
    "--bases-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Base registry folder [default: <data_dir>/bases from the settings].",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the body's weights to this file.",
)
def pretrain(
    data_dir: Path,
    base_name: str,
    alpha: float,
    input_size: int,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    validation_fraction: float,
    seed: int,
    init_weights: str,
    bases_dir: Path | None,
    output: Path | None,
) -> None:
    """Train a base body from scratch on an image folder and register it.

    A temporary classification head is trained with it and then dropped. Prints the
    registered base's weights fingerprint as the last line of standard output.
    """

    config = BaseConfig(name=base_name, input_size=input_size, alpha=alpha, weights=init_weights)
    registry = bases_dir if bases_dir is not None else _default_bases_dir()
    folder = load_image_folder(data_dir, input_size)
    counts = ", ".join(f"{name}: {count}" for name, count in folder.class_counts().items())
    click.echo(f"{len(folder.labels)} images in {len(folder.classes)} classes ({counts})", err=True)

    body, report = pretrain_base(
        config,
        folder,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        validation_fraction=validation_fraction,
        seed=seed,
    )
    info = save_base(
        body,
        config,
        registry,
        weights_source=f"pretrained:{data_dir.name}",
        provenance=report.as_provenance(data_dir),
    )
    if output is not None:
        save_weights_atomically(body, output)
        click.echo(f"weights written to {output}", err=True)

    validation = (
        "n/a" if report.validation_accuracy is None else f"{report.validation_accuracy:.3f}"
    )
    click.echo(
        f"trained {report.epochs} epoch(s) in {report.wall_time_s:.1f}s: train accuracy "
        f"{report.train_accuracy:.3f}, validation accuracy {validation}",
        err=True,
    )
    click.echo(f"registered base {info.name} in {registry}", err=True)
    click.echo(info.weights_fingerprint)


@base.command("list")
@click.option(
    "--bases-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Base registry folder [default: <data_dir>/bases from the settings].",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_bases(bases_dir: Path | None, as_json: bool) -> None:
    """List the registered bases."""

    registry = bases_dir if bases_dir is not None else _default_bases_dir()
    infos = list_registered_bases(registry)
    if as_json:
        click.echo(json.dumps([info.model_dump(mode="json") for info in infos], indent=2))
        return
    if not infos:
        click.echo(f"no bases registered in {registry}", err=True)
        return
    for info in infos:
        size = "x".join(str(side) for side in info.input_shape)
        alpha = "" if info.alpha is None else f" alpha={info.alpha}"
        click.echo(
            f"{info.weights_fingerprint}  {info.name} {size}{alpha}  ({info.weights_source})"
        )


# ---------------------------------------------------------------------------------------------
# `mainstream train`: fine-tune an app's candidates and write its M-Package.

# Flag name -> TrainRequest field; flags left out on the command line keep the config's value.
_TRAIN_FLAG_FIELDS: dict[str, str] = {
    "data": "data",
    "labels": "labels",
    "positive_class": "positive_class",
    "app_name": "app_name",
    "freeze_points": "freeze_points",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "learning_rate": "learning_rate",
    "strategy": "strategy",
    "beta": "selective_backprop_beta",
    "cache": "cache",
    "augment_copies": "augment_copies",
    "seed": "seed",
    "validation_fraction": "validation_fraction",
    "folds": "folds",
    "frame_step": "frame_step",
    "event_length": "event_length_s",
    "event_frequency": "event_frequency",
    "correlation": "correlation",
    "camera_fps": "camera_fps",
    "mixed_precision": "mixed_precision",
    "bundle_base": "bundle_base_weights",
    "bases_dir": "bases_dir",
    "output": "output",
}
_BASE_FLAG_FIELDS: dict[str, str] = {
    "base_name": "name",
    "weights": "weights",
    "alpha": "alpha",
    "input_size": "input_size",
}


@click.command("train")
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML file with the job's settings (see examples/train_*.yaml); flags override it.",
)
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    help="Image folder (one subfolder per class) or a video file.",
)
@click.option(
    "--labels",
    type=click.Path(path_type=Path),
    help="Label CSV of the video (start_frame,end_frame,label) [default: VIDEO.csv].",
)
@click.option("--positive-class", help="The class whose frames are events.")
@click.option("--app-name", help="App name in the manifest [default: the output file's name].")
@click.option("--base", "base_name", type=click.Choice(BASE_NAMES), help="Base architecture.")
@click.option(
    "--weights", help="none, imagenet, a weights file, or a registered base's fingerprint."
)
@click.option("--alpha", type=float, help="Width multiplier of MobileNets.")
@click.option("--input-size", type=int, help="Square input size in pixels.")
@click.option(
    "--freeze-points",
    help="N (spread-out frozen cut points, first block to head only) or comma-separated "
    "cut-point names ('input' = nothing frozen).",
)
@click.option("--epochs", type=int)
@click.option("--batch-size", type=int)
@click.option("--learning-rate", type=float)
@click.option("--strategy", type=click.Choice(["standard", "selective-backprop"]))
@click.option("--beta", type=float, help="Selective-Backprop selectivity exponent (default 3).")
@click.option(
    "--cache/--no-cache", default=None, help="Train on cached stem features (default: yes)."
)
@click.option("--augment-copies", type=int, help="Augmented copies of each frame (default 0).")
@click.option("--seed", type=int)
@click.option("--validation-fraction", type=float, help="Held-out share, split by time.")
@click.option(
    "--folds",
    type=int,
    help="K >= 2: measure the per-frame figures by K-fold cross-validation over time blocks "
    "(events kept whole), then train the candidates on every frame; costs K + 1 trainings "
    "(default 1: one held-out split).",
)
@click.option("--frame-step", type=int, help="Use every N-th frame of the video.")
@click.option("--event-length", type=float, help="Event length in seconds.")
@click.option("--event-frequency", type=float, help="Fraction of time covered by events.")
@click.option("--correlation", type=float, help="Inter-frame correlation of the detector.")
@click.option("--camera-fps", type=float, help="Camera frame rate.")
@click.option("--mixed-precision/--no-mixed-precision", default=None, help="float16 compute.")
@click.option(
    "--bundle-base/--no-bundle-base",
    default=None,
    help="Put the base weights in the package (default: unless imagenet).",
)
@click.option(
    "--bases-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Base registry folder [default: <data_dir>/bases from the settings].",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def train(config_file: Path | None, as_json: bool, quiet: bool, **flags: object) -> None:
    """Fine-tune one candidate per freeze depth and write the app's M-Package.

    Example: mainstream train --data trains.avi --positive-class train --base mobilenet_v1
    --weights none --alpha 0.25 --input-size 96 --freeze-points 3 --epochs 2 -o trains.mpkg
    """

    settings = _train_settings(config_file, flags, progress=not quiet)
    try:
        request = TrainRequest.model_validate(settings)
    except ValidationError as error:
        first = error.errors()[0]
        field_name = ".".join(str(part) for part in first["loc"]) or "request"
        raise InvalidParameterError(field_name, first.get("input"), first["msg"]) from error
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = train_package(request)
    if as_json:
        click.echo(result.model_dump_json(indent=2))
        return
    event_stats = result.manifest.event_stats
    click.echo(
        f"{'cut point':<24} {'frozen':>6} {'recall':>7} {'fpr':>6} {'accuracy':>8} "
        f"{'steps':>6} {'time s':>7}",
        err=True,
    )
    for candidate in result.candidates:
        click.echo(
            f"{candidate.cut_point:<24} {candidate.frozen_layers:>6} {candidate.recall:>7.3f} "
            f"{candidate.false_positive_rate:>6.3f} {candidate.accuracy:>8.3f} "
            f"{candidate.optimizer_steps:>6} {candidate.wall_time_s:>7.1f}",
            err=True,
        )
    click.echo(
        f"event stats: length {event_stats.event_length_s:.2f} s, frequency "
        f"{event_stats.event_frequency:.3f}, correlation {event_stats.correlation:.3f}, "
        f"camera {event_stats.camera_fps:g} fps",
        err=True,
    )
    click.echo(f"trained on {result.device} in {result.wall_time_s:.1f} s", err=True)
    click.echo(str(result.package_path))


def _train_settings(
    config_file: Path | None, flags: dict[str, object], progress: bool
) -> dict[str, object]:
    """The job's settings: the YAML config (if any), overridden by the flags given."""

    settings: dict[str, object] = {}
    if config_file is not None:
        try:
            loaded = yaml.safe_load(config_file.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            raise InvalidParameterError(
                "config",
                str(config_file),
                f"valid YAML ({describe_yaml_error(error, config_file.name)})",
            ) from error
        if loaded is not None and not isinstance(loaded, dict):
            raise InvalidParameterError("config", str(config_file), "a YAML mapping of settings")
        settings = dict(loaded or {})
    base_settings: dict[str, object] = {}
    configured_base = settings.get("base")
    if isinstance(configured_base, dict):
        base_settings.update(configured_base)
    elif configured_base is not None:
        raise InvalidParameterError("base", configured_base, "a mapping (name, weights, ...)")
    for flag, field_name in _BASE_FLAG_FIELDS.items():
        if flags.get(flag) is not None:
            base_settings[field_name] = flags[flag]
    if base_settings:
        settings["base"] = base_settings
    for flag, field_name in _TRAIN_FLAG_FIELDS.items():
        if flags.get(flag) is not None:
            settings[field_name] = flags[flag]
    if not progress:
        settings["progress"] = False
    if settings.get("bases_dir") in (None, ""):
        settings["bases_dir"] = _default_bases_dir()
    for required, flag in (("data", "--data"), ("positive_class", "--positive-class")):
        if settings.get(required) in (None, ""):
            raise click.UsageError(f"missing {flag} (or `{required}:` in the config file)")
    if settings.get("output") in (None, ""):
        raise click.UsageError("missing -o/--output (or `output:` in the config file)")
    return settings
