"""`mainstream demo`: train a small synthetic scene's apps, serve them, watch events, measure.

    mainstream demo                  # until Ctrl-C
    mainstream demo --duration 120   # stop by itself and print the summary table

Only click is imported at the top; the demo loads TensorFlow, OpenCV and uvicorn as it goes.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click

from mainstream.cli.demo_run import DemoConfig, DemoOptions, default_demo_dir, run_demo
from mainstream.node.settings import Settings


@click.command("demo")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where assets and node state go [default: <user data dir>/mainstream/demo].",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=1),
    default=None,
    help="Seconds to stream before stopping and printing the summary [default: until Ctrl-C].",
)
@click.option(
    "--port", type=click.IntRange(1, 65535), default=None, help="API port [default: a free one]."
)
@click.option(
    "--apps",
    type=click.IntRange(1, 4),
    default=3,
    show_default=True,
    help="How many apps (object kinds in the scene).",
)
@click.option(
    "--budget",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Compute budget in ms per second [default: a share of what No-Sharing needs, see "
    "--budget-share].",
)
@click.option(
    "--budget-share",
    type=click.FloatRange(min=0, max=4, min_open=True),
    default=None,
    help="Budget as a share of what No-Sharing needs at the rate the events need "
    "[default: the share, of 0.3-0.7, where the plan's predicted lead is largest].",
)
@click.option("--fast", is_flag=True, help="Tiny settings: short videos, few epochs (for tests).")
@click.option("--fresh", is_flag=True, help="Rebuild the cached scene, base and packages.")
@click.option("--quiet", is_flag=True, help="No progress bars (step lines and events still show).")
@click.option(
    "--summary-json",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the final summary as JSON to this file.",
)
def demo(
    data_dir: Path | None,
    duration: float | None,
    port: int | None,
    apps: int,
    budget: float | None,
    budget_share: float | None,
    fast: bool,
    fresh: bool,
    quiet: bool,
    summary_json: Path | None,
) -> None:
    """Run the whole product on synthetic data: train, profile, plan, serve, detect, measure.

    The first run builds a labelled synthetic scene, pretrains a small base and trains one
    app per object kind (cached for later runs); then a node serves them on 127.0.0.1 with the
    held-out video as a looping camera. Events are printed as they happen; at the end a table
    sets each app's predicted event F1 against the one measured on the video's labels.
    """

    # TensorFlow's start-up notes and tracing warnings would drown the demo's own lines.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)

    def echo(line: str) -> None:
        click.echo(line)

    options = DemoOptions(
        config=DemoConfig.preset(apps=apps, fast=fast),
        data_dir=data_dir if data_dir is not None else default_demo_dir(),
        duration_s=duration,
        port=port,
        budget_ms_per_s=budget,
        budget_share=budget_share,
        fresh=fresh,
        progress=not quiet,
        summary_json=summary_json,
        shared_bases_dir=Settings().bases_dir,
    )
    run_demo(options, echo)
