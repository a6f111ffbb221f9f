"""`mainstream package ...`: look inside, verify, upload and list M-Packages.

`inspect` reads only the archive's directory and manifest; `verify` extracts the package to a
temp directory, checks every sha256 and loads every candidate in Keras safe mode (TensorFlow
is imported only then); `upload` sends the package to a running node, which verifies it the
same way before storing it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mainstream.cli.client import echo_json, open_client, remote_options
from mainstream.core.errors import PackageError, WeakCandidatesError
from mainstream.core.manifest import WEAK_CANDIDATE_ADVICE, Manifest, weak_candidates
from mainstream.core.package import PackageListing, describe_size, inspect_package, verify_package
from mainstream.node.settings import Settings
from scheduler.estimates import RateEstimate, rate_estimate
from scheduler.planner import predicted_f1
from scheduler.problem import AppSpec
from trainer.calibrate import calibrate_package, rate_summary

WEAK_CANDIDATES_EXIT = WeakCandidatesError.exit_code  # `--strict` with a weak candidate

_PACKAGE_ARGUMENT = click.argument(
    "package_path", metavar="PKG", type=click.Path(dir_okay=False, path_type=Path)
)


@click.group()
def package() -> None:
    """Inspect, verify, upload and list M-Packages (.mpkg)."""


@package.command("inspect")
@_PACKAGE_ARGUMENT
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON only.")
@click.option(
    "--strict", is_flag=True, help=f"Exit {WEAK_CANDIDATES_EXIT} when a candidate is weak."
)
def inspect_command(package_path: Path, as_json: bool, strict: bool) -> None:
    """Show what a package holds: app, base model, event statistics and candidates.

    Each candidate's per-frame recall and false-positive rate are shown as counted and as
    estimated (posterior mean and 90 % interval, from the held-out counts), with the event
    F1 predicted at the camera rate and its interval. Thin evidence (fewer than 10 held-out
    events or 1,000 negative frames) and candidates no better than the majority class are
    flagged on standard error. The structure and manifest are checked; checksums and models
    are not (use `verify`).
    """
    listing = inspect_package(package_path)
    if as_json:
        click.echo(listing.manifest.model_dump_json(indent=2))
    else:
        for line in _summary_lines(listing):
            click.echo(line)
        for warning in _evidence_warnings(listing.manifest):
            click.echo(f"WARNING {warning}", err=True)
    _warn_weak(listing.manifest, strict)


@package.command("verify")
@_PACKAGE_ARGUMENT
@click.option(
    "--no-load",
    is_flag=True,
    help="Skip loading the models (checks structure, manifest and checksums only).",
)
@click.option(
    "--strict", is_flag=True, help=f"Exit {WEAK_CANDIDATES_EXIT} when a candidate is weak."
)
def verify_command(package_path: Path, no_load: bool, strict: bool) -> None:
    """Check a package completely; exit 0 when it is sound, non-zero with the reason if not.

    A sound package whose candidates are no better than the majority class gets a warning
    (and exit status 3 under `--strict`): a node refuses it unless the upload is forced.
    """
    try:
        report = verify_package(package_path, load_models=not no_load)
    except PackageError as error:
        click.echo(f"REJECTED {package_path}: {error}", err=True)
        # SystemExit rather than ctx.exit: the root CLI runs click with standalone_mode=False,
        # where ctx.exit's code would be returned and lost instead of becoming the exit status.
        sys.exit(error.exit_code)
    click.echo(report.summary())
    _warn_weak(report.manifest, strict)


def _warn_weak(manifest: Manifest, strict: bool) -> None:
    """One warning line per weak candidate on standard error; exit 3 under `strict`."""
    weak = weak_candidates(manifest)
    for candidate in weak:
        click.echo(f"WARNING candidate {candidate.cut_point}: {candidate.reason}", err=True)
    if weak:
        click.echo(
            f"WARNING {len(weak)} of {len(manifest.candidates)} candidate(s) are no better than "
            f"the majority class; {WEAK_CANDIDATE_ADVICE}",
            err=True,
        )
        if strict:
            sys.exit(WEAK_CANDIDATES_EXIT)


@package.command("upload")
@_PACKAGE_ARGUMENT
@click.option(
    "--force", is_flag=True, help="Store it even if a candidate is no better than the majority."
)
@remote_options
def upload_command(
    package_path: Path, force: bool, server: str, token: str | None, as_json: bool
) -> None:
    """Upload a package to a node (admin token); it becomes the app's next version.

    The node verifies the package completely before storing anything; uploading the same
    archive again changes nothing and names the version already stored. A package with a
    candidate no better than the majority class is refused unless `--force`.
    """
    with open_client(server, token) as client:
        result = client.upload_package(package_path, force=force)
    if as_json:
        echo_json(result)
        return
    record = result["package"]
    verb = "stored" if result["created"] else "already stored as"
    click.echo(f"{verb} {record['app']} v{record['version']} (sha256 {record['sha256'][:12]})")


@package.command("list")
@click.option("--app", default=None, help="Only this app's versions.")
@remote_options
def list_command(app: str | None, server: str, token: str | None, as_json: bool) -> None:
    """The packages a node stores, newest version of each app marked `*` (viewer token)."""
    with open_client(server, token) as client:
        packages = client.list_packages(app)
    if as_json:
        echo_json(packages)
        return
    if not packages:
        click.echo("no packages stored" + (f" for app {app!r}" if app else ""))
        return
    click.echo(f"{'app':<24} {'ver':>4}  {'sha256':<12}  {'size':>9}  {'base':<22} cut points")
    for item in packages:
        marker = "*" if item["latest"] else " "
        click.echo(
            f"{item['app']:<24} {item['version']:>3}{marker}  {item['sha256'][:12]:<12}  "
            f"{describe_size(item['size_bytes']):>9}  {item['base_model']:<22} "
            f"{len(item['cut_points'])}"
        )


def _summary_lines(listing: PackageListing) -> list[str]:
    manifest = listing.manifest
    app, base, stats = manifest.app, manifest.base_model, manifest.event_stats
    spec = AppSpec.from_manifest(manifest)
    lines = [
        f"package      {listing.path} ({describe_size(listing.archive_bytes)})",
        f"format       version {manifest.format_version}",
        f"app          {app.name}",
        f"classes      {', '.join(app.classes)} (positive: {app.positive_class})",
        f"base model   {base.name} input {'x'.join(str(size) for size in base.input_shape)}, "
        f"preprocessing {base.preprocessing}",
        f"fingerprint  {base.weights_fingerprint}",
        f"base weights {_bundled(listing)}",
        f"events       length {stats.event_length_s:g} s, frequency {stats.event_frequency:g}, "
        f"correlation {stats.correlation:g}, camera {stats.camera_fps:g} fps"
        + (f" ({stats.how_measured})" if stats.how_measured else ""),
        f"correlation  {_correlation_text(manifest)}",
        f"held out     {_held_out_text(spec)}",
        f"created      {manifest.created_at.isoformat()}",
        "",
    ]
    header = (
        "cut point",
        "frozen",
        "recall",
        "recall 90%",
        "FPR",
        "FPR 90%",
        "pos fired",
        "neg fired",
        f"F1@{stats.camera_fps:g}fps 90%",
        "accuracy",
        "size",
    )
    rows = []
    for info, candidate in zip(manifest.candidates, spec.candidates, strict=True):
        estimates = candidate.estimates()
        counts = candidate.evidence
        f1, interval = predicted_f1(stats.camera_fps, spec, candidate, stats.camera_fps, 1)
        rows.append(
            (
                info.cut_point,
                str(info.frozen_layers),
                f"{info.recall:.3f}",
                "-" if estimates is None else _estimate_text(estimates[0]),
                f"{info.false_positive_rate:.3f}",
                "-" if estimates is None else _estimate_text(estimates[1]),
                "-" if counts is None else f"{counts.positive_fires}/{counts.positive_frames}",
                "-" if counts is None else f"{counts.negative_fires}/{counts.negative_frames}",
                f"{f1:.3f}"
                + ("" if interval is None else f" [{interval[0]:.3f}, {interval[1]:.3f}]"),
                f"{info.accuracy:.3f}",
                describe_size(listing.member_sizes.get(info.file, 0)),
            )
        )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def render(row: tuple[str, ...]) -> str:
        first = row[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    lines.append(render(header))
    lines.extend(render(row) for row in rows)
    lines.append("")
    lines.append(
        "recall/FPR: counted on the held-out frames; 90%: Jeffreys posterior mean [90 % "
        "interval], what the scheduler plans on. F1: event F1 predicted at the camera rate, X 1."
    )
    return lines


def _estimate_text(estimate: RateEstimate) -> str:
    return f"{estimate.mean:.3f} [{estimate.low:.3f}, {estimate.high:.3f}]"


def _correlation_text(manifest: Manifest) -> str:
    stats = manifest.event_stats
    evidence = stats.correlation_evidence
    if evidence is None:
        return (
            f"{stats.correlation:g}, no interval (given explicitly, or measured by a version-1 "
            "trainer, whose stride fit was biased towards 0)"
        )
    low, high = evidence.interval
    pairs = evidence.fire_fire + evidence.fire_miss + evidence.miss_fire + evidence.miss_miss
    return (
        f"{stats.correlation:.3f} per camera frame, {evidence.level:.0%} interval "
        f"[{low:.3f}, {high:.3f}], from {pairs} consecutive {evidence.source} pairs"
        if evidence.source != "fallback"
        else f"{stats.correlation:g} (fallback: the held-out fires do not determine it), "
        f"interval [{low:g}, {high:g}]"
    )


def _held_out_text(spec: AppSpec) -> str:
    counts = spec.candidates[0].evidence
    if counts is None:
        return "counts unknown: the figures are ratios without the frames they were counted on"
    events = "an unknown number of" if counts.events is None else str(counts.events)
    origin = (
        " (derived from a version-1 package's ratios and held-out class counts)"
        if counts.derived
        else ""
    )
    split = f", split {counts.split}" if counts.split else ""
    return (
        f"{events} events, {counts.positive_frames} positive and {counts.negative_frames} "
        f"negative frames{split}{origin}"
    )


def _evidence_warnings(manifest: Manifest) -> list[str]:
    """One line per distinct reason the held-out evidence is thin (or missing)."""
    spec = AppSpec.from_manifest(manifest)
    if all(candidate.evidence is None for candidate in spec.candidates):
        return [
            "no held-out counts: recall and FPR are taken as exact, with no interval; "
            "retrain with this version of Mainstream"
        ]
    reasons = dict.fromkeys(
        reason for candidate in spec.candidates if (reason := candidate.thin_evidence())
    )
    calibrated = any(candidate.calibrations for candidate in manifest.candidates)
    advice = (
        "label more footage"
        if calibrated
        else "calibrate on footage of the deployment camera: `mainstream calibrate PKG "
        "--video V --labels L`, or `--no-events` for footage without labels (every frame "
        "counts as a negative, so its fire rate bounds the FP rate from above)"
    )
    return [
        f"thin evidence: {reason}; the intervals are wide and the plan may be wrong, {advice}"
        for reason in reasons
    ]


def _bundled(listing: PackageListing) -> str:
    weights = listing.manifest.base_weights
    if weights is None:
        return "not bundled"
    return f"bundled ({weights['file']}, {describe_size(listing.member_sizes[weights['file']])})"


@package.command("calibrate")
@_PACKAGE_ARGUMENT
@click.option(
    "--video",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Footage from the camera the app will watch.",
)
@click.option(
    "--labels",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Its label CSV (start_frame,end_frame[,label]); see --no-events.",
)
@click.option(
    "--no-events",
    is_flag=True,
    help="Footage without labels: every frame counts as a negative, so the fire rate measured "
    "bounds the false-positive rate from above (exact when no event of the class is in view).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the calibrated package [default: replace PKG, atomically].",
)
@click.option(
    "--threshold", type=float, default=0.5, show_default=True, help="Fire from this score."
)
@click.option("--fps", type=float, help="The footage's frame rate, if its container is wrong.")
@click.option(
    "--bases-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Registered bases [default: <data_dir>/bases]; else the package's bundled weights.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def calibrate_command(
    package_path: Path,
    video: Path,
    labels: Path | None,
    no_events: bool,
    output: Path | None,
    threshold: float,
    fps: float | None,
    bases_dir: Path | None,
    as_json: bool,
) -> None:
    """Measure every candidate on footage of the deployment camera and record the counts.

    The package's models are unchanged (their checksums still hold); the manifest gains the
    clip's counts, which the scheduler plans on from then on instead of the trainer's
    held-out frames. Clips add up: calibrate again with more footage. Upload the result to
    the node as the app's new package version.
    """
    if (labels is None) == (not no_events):
        raise click.UsageError(
            "give --labels for labelled footage, or --no-events for footage without labels "
            "(every frame counts as a negative: its fire rate is an upper bound on the FP rate)"
        )
    result = calibrate_package(
        package_path,
        video,
        labels,
        output or package_path,
        bases_dir=bases_dir if bases_dir is not None else Settings().bases_dir,
        threshold=threshold,
        fps=fps,
    )
    if as_json:
        echo_json(
            {
                "output": str(result.output),
                "app": result.app,
                "clip": result.clip,
                "frames": result.frames,
                "events": result.events,
                "candidates": [
                    {
                        "cut_point": row.cut_point,
                        "clip": row.clip.model_dump(),
                        "before": row.before.model_dump() if row.before else None,
                        "after": row.after.model_dump(),
                    }
                    for row in result.candidates
                ],
            }
        )
        return
    click.echo(
        f"calibrated app {result.app!r} on {result.clip}: {result.frames} frames, "
        f"{result.events} event(s)"
    )
    header = ("cut point", "recall before", "FPR before", "recall clip", "FPR clip", "FPR now")
    rows = [header]
    for row in result.candidates:
        before = rate_summary(row.before)
        clip = rate_summary(row.clip)
        estimate = rate_estimate(row.after.negative_fires, row.after.negative_frames)
        now = f"{estimate.mean:.4f} [{estimate.low:.4f}, {estimate.high:.4f}]"
        rows.append((row.cut_point, *before, *clip, now))
    widths = [max(len(cells[i]) for cells in rows) for i in range(len(header))]
    for cells in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)))
    click.echo(f"wrote {result.output}")
