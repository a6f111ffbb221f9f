"""`mainstream config`: check a node's config file, print its JSON schema and reference.

mainstream config validate node.yaml
mainstream config schema > node.schema.json
mainstream config reference          # the Markdown table in the README
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from mainstream.node.settings import ConfigError, load_settings, settings_json_schema
from mainstream.node.settings_reference import config_reference_markdown


@click.group()
def config() -> None:
    """Check node configuration files."""


@config.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--with-env",
    is_flag=True,
    help="Also apply the MAINSTREAM_* environment variables, as `mainstream serve` would.",
)
@click.pass_context
def validate(context: click.Context, file: Path, with_env: bool) -> None:
    """Check FILE as `mainstream serve --config FILE` reads it: print OK, or one line per
    problem, `FILE: key.path: what is wrong` (exit code 2)."""

    try:
        settings = load_settings(file, environment=with_env)
    except ConfigError as error:
        for problem in error.problems:
            click.echo(f"{error.source}: {problem}", err=True)
        context.exit(error.exit_code)
    cameras = ", ".join(camera.id for camera in settings.startup_cameras()) or "none"
    click.echo(
        f"OK {file}: node {settings.node_name!r}, role {settings.role}, "
        f"data in {settings.data_dir}, cameras: {cameras}"
    )


@config.command()
def schema() -> None:
    """Print the JSON schema of the config file."""

    click.echo(json.dumps(settings_json_schema(), indent=2))


@config.command()
def reference() -> None:
    """Print the configuration reference (Markdown table) that the README embeds."""

    click.echo(config_reference_markdown(), nl=False)
