"""Entry point of the `mainstream` CLI.

Each sub-command lives in its own module and is imported only when it is invoked, so that
`mainstream schedule ...` never pays for (or needs) TensorFlow or OpenCV.
"""

from __future__ import annotations

import importlib
import sys

import click

from mainstream import __version__
from mainstream.cli.quiet_tensorflow import import_tensorflow_quietly
from mainstream.core.errors import MainstreamError

# name -> "module:attribute" of a click command or group.
SUBCOMMANDS: dict[str, str] = {
    "schedule": "mainstream.cli.schedule:schedule",
    "fleet": "mainstream.cli.fleet:fleet",
    "synth": "mainstream.cli.synth:synth",
    "train": "mainstream.cli.train:train",
    "base": "mainstream.cli.train:base",
    "package": "mainstream.cli.package:package",
    "calibrate": "mainstream.cli.package:calibrate_command",
    "profile": "mainstream.cli.runtime:profile",
    "replay": "mainstream.cli.runtime:replay",
    "serve": "mainstream.cli.daemon:serve",
    "token": "mainstream.cli.daemon:token",
    "config": "mainstream.cli.config:config",
    "demo": "mainstream.cli.demo:demo",
    "apps": "mainstream.cli.client:apps",
    "cameras": "mainstream.cli.client:cameras",
    "events": "mainstream.cli.client:events",
    "trainer": "mainstream.cli.trainer:trainer",
    "jobs": "mainstream.cli.trainer:jobs",
}

# Commands that load models in this process; TensorFlow is imported up front for them, without
# its start-up banner. (`serve` and `trainer serve` load it only when a model arrives.)
TENSORFLOW_COMMANDS = frozenset(
    {
        ("train",),
        ("base", "pretrain"),
        ("package", "inspect"),
        ("package", "verify"),
        ("package", "calibrate"),
        ("calibrate",),
        ("profile",),
        ("replay",),
        ("demo",),
    }
)


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported on first use."""

    def __init__(self, *args: object, lazy_subcommands: dict[str, str], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy_subcommands = lazy_subcommands

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy_subcommands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_subcommands:
            module_name, attribute = self.lazy_subcommands[cmd_name].split(":")
            command = getattr(importlib.import_module(module_name), attribute)
            if not isinstance(command, click.Command):
                raise TypeError(f"{module_name}:{attribute} is not a click command")
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, lazy_subcommands=SUBCOMMANDS)
@click.version_option(__version__, prog_name="mainstream")
def cli() -> None:
    """Mainstream: shared-stem edge video analytics with an event-F1 scheduler."""


def needs_tensorflow(arguments: list[str]) -> bool:
    """True when the invoked command loads models (and is not only asked for its help)."""
    if any(word in ("--help", "-h") for word in arguments):
        return False
    words = tuple(word for word in arguments if not word.startswith("-"))
    return any(words[: len(command)] == command for command in TENSORFLOW_COMMANDS)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; turn Mainstream errors into a one-line message and a non-zero exit code."""
    arguments = sys.argv[1:] if argv is None else argv
    if needs_tensorflow(arguments):
        import_tensorflow_quietly()
    try:
        exit_code = cli.main(args=argv, prog_name="mainstream", standalone_mode=False)
    except MainstreamError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(error.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except click.exceptions.Exit as error:
        sys.exit(error.exit_code)
    if isinstance(exit_code, int) and exit_code:
        sys.exit(exit_code)


if __name__ == "__main__":
    main()
