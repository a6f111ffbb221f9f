"""`mainstream profile` and `mainstream replay`: measure this machine, run the runtime offline."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edge_runtime.engines import ENGINE_CHOICES, resolve_engine
from edge_runtime.profiler import default_budget, measure_profile
from edge_runtime.replay import AppReplayFigures, ReplayRequest, run_replay
from mainstream.cli.client import parse_quiet_time
from mainstream.core.bases import BaseConfig
from mainstream.node.settings import Settings

ENGINE_CHOICE = click.Choice(list(ENGINE_CHOICES))
PRECISION_OPTION = click.option(
    "--precision",
    type=click.Choice(["f32", "bf16", "f16"]),
    default="f32",
    show_default=True,
    help="What the openvino engine computes in (Keras always runs f32)",
)


def _resolution(value: str | None) -> tuple[int, int] | None:
    if not value:
        return None
    try:
        width, height = (int(part) for part in value.lower().split("x"))
    except ValueError as error:
        raise click.BadParameter(f"expected WIDTHxHEIGHT, got {value!r}") from error
    return width, height


@click.command()
@click.option(
    "--base", "base_name", default="mobilenet_v1", show_default=True, help="Base model family."
)
@click.option("--alpha", default=1.0, show_default=True, type=float)
@click.option("--input-size", default=224, show_default=True, type=int)
@click.option(
    "--weights", default="none", show_default=True, help="none | imagenet | path to a weights file"
)
@click.option(
    "--engine",
    type=ENGINE_CHOICE,
    default="auto",
    show_default=True,
    help="auto: openvino on x86 when installed, keras otherwise (as the node chooses)",
)
@PRECISION_OPTION
@click.option("--camera-resolution", default=None, help="WIDTHxHEIGHT: also measure decode cost")
@click.option(
    "--repeats", default=15, show_default=True, type=int, help="Timed calls per measurement"
)
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), required=True, help="profile.json to write"
)
def profile(
    base_name: str,
    alpha: float,
    input_size: int,
    weights: str,
    engine: str,
    precision: str,
    camera_resolution: str | None,
    repeats: int,
    output: Path,
) -> None:
    """Measure the cost (ms per frame) from the input to every cut point on this machine."""

    config = BaseConfig(name=base_name, input_size=input_size, alpha=alpha, weights=weights)
    measured = measure_profile(
        config,
        resolve_engine(engine, precision).name,
        camera_resolution=_resolution(camera_resolution),
        repeats=repeats,
        progress=lambda message: click.echo(f"  {message}", err=True),
        precision=precision,  # type: ignore[arg-type]
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(output.name + ".partial")
    temporary.write_text(measured.model_dump_json(indent=2), encoding="utf-8")
    temporary.replace(output)
    extra = measured.model_extra or {}
    click.echo(f"engine {extra.get('engine')}, precision {extra.get('precision')}")
    click.echo(f"{'cut point':<24}{'cumulative ms':>14}")
    for cut in measured.cut_points:
        click.echo(f"{cut.name:<24}{cut.cumulative_cost:>14.2f}")
    click.echo(f"{'total (with head)':<24}{measured.total_cost:>14.2f}")
    click.echo(
        f"split overhead {measured.split_overhead:.2f} ms, decode {measured.decode_cost:.2f} ms"
    )
    click.echo(f"default budget: {default_budget():.0f} ms of compute per second; wrote {output}")


@click.command()
@click.argument("video", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--package",
    "packages",
    multiple=True,
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@click.option("--budget", type=float, default=None, help="Compute budget in ms per second")
@click.option(
    "--plan",
    "plan_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
)
@click.option(
    "--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None
)
@click.option(
    "--profile",
    "profile_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
)
@click.option(
    "--events-out", type=click.Path(path_type=Path), default=Path("events.jsonl"), show_default=True
)
@click.option(
    "--engine",
    type=ENGINE_CHOICE,
    default="auto",
    show_default=True,
    help="auto: openvino on x86 when installed, keras otherwise (as the node chooses)",
)
@PRECISION_OPTION
@click.option(
    "--x-vote", default="1", show_default=True, help="1..5 or 'auto' (the scheduler picks)"
)
@click.option(
    "--quiet-time",
    "quiet_time_s",
    default="auto",
    show_default=True,
    help="Seconds without a fire that end an event; auto: the app's event length (at least "
    "1.5 analysis intervals), which counts events as the event model does",
)
@click.option("--bases-dir", type=click.Path(path_type=Path), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON only")
def replay(
    video: Path,
    packages: tuple[Path, ...],
    budget: float | None,
    plan_path: Path | None,
    labels: Path | None,
    profile_path: Path | None,
    events_out: Path,
    engine: str,
    precision: str,
    x_vote: str,
    quiet_time_s: str,
    bases_dir: Path | None,
    as_json: bool,
) -> None:
    """Run the runtime on a recorded video in video time and compare with the plan's prediction."""

    vote: int | str = x_vote if x_vote == "auto" else int(x_vote)
    request = ReplayRequest(
        video=video,
        packages=list(packages),
        events_out=events_out,
        budget=budget,
        plan=plan_path,
        labels=labels,
        profile=profile_path,
        engine=resolve_engine(engine, precision).name,
        precision=precision,  # type: ignore[arg-type]
        x_vote=vote,
        quiet_time_s=parse_quiet_time(quiet_time_s),
        bases_dir=bases_dir if bases_dir is not None else Settings().bases_dir,
        show_progress=not as_json,
    )
    summary = run_replay(
        request, progress=None if as_json else lambda m: click.echo(f"  {m}", err=True)
    )
    if as_json:
        click.echo(json.dumps(summary.to_json(), indent=2))
        return
    click.echo(
        f"{summary.frames} frames ({summary.video_seconds:.1f} s of video) in {summary.wall_seconds:.1f} s; "
        f"events written to {events_out}"
    )
    header = (
        f"{'app':<16}{'cut point':<18}{'fps plan':>9}{'fps run':>9}{'X':>3}{'events':>8}"
        f"{'F1 pred [90 % interval]':>25}{'F1 meas':>9}{'R meas':>8}{'P meas':>8}{'labelled':>9}"
    )
    click.echo(header)
    for app in summary.apps:
        click.echo(
            f"{app.app:<16}{app.cut_point:<18}{app.planned_fps:>9.2f}{app.analysed_fps:>9.2f}"
            f"{app.x_vote:>3}{app.events:>8}{_predicted(app):>25}{_figure(app.measured_f1):>9}"
            f"{_figure(app.measured_recall):>8}{_figure(app.measured_precision):>8}"
            f"{_figure(app.labelled_events):>9}"
        )
    outside = [
        app.app
        for app in summary.apps
        if app.measured_f1 is not None
        and app.predicted_f1_interval is not None
        and not app.predicted_f1_interval[0] <= app.measured_f1 <= app.predicted_f1_interval[1]
    ]
    if outside:
        click.echo(
            f"measured F1 outside the predicted 90 % interval: {', '.join(outside)} (the "
            "footage may differ from the package's held-out frames: `mainstream calibrate` "
            "measures the per-frame figures on it)"
        )


def _figure(value: float | None) -> str:
    if value is None:
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.3f}"


def _predicted(app: AppReplayFigures) -> str:
    if app.predicted_f1_interval is None:
        return f"{app.predicted_f1:.3f}"
    low, high = app.predicted_f1_interval
    return f"{app.predicted_f1:.3f} [{low:.2f}, {high:.2f}]"
