"""`mainstream serve` runs a node (REST API + runtime in one process); `mainstream token` manages
API tokens.

    mainstream serve --config node.yaml
    mainstream serve --role registry --config registry.yaml    # a fleet's shared registry
    mainstream token create --role admin --name laptop

The config file can also be named by MAINSTREAM_CONFIG. `serve` shuts down cleanly on SIGTERM
or SIGINT: the runtime stops, open events are closed and stored, cameras are released.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import click

from mainstream.core.logs import configure_logging
from mainstream.node.node import Node
from mainstream.node.registry import Registry
from mainstream.node.services import create_token
from mainstream.node.settings import Settings, load_settings

NO_CAMERA_HINT = (
    "no camera yet: add one with `mainstream cameras add door --url rtsp://HOST/PATH` "
    "or under `cameras:` in the config file (`synthetic://` is a test pattern)"
)

_config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="MAINSTREAM_CONFIG",
    default=None,
    help="Node config file (YAML); MAINSTREAM_* environment variables override it.",
)


@click.command()
@_config_option
@click.option("--host", default=None, help="Address to listen on (overrides api.host).")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=None, help="Port (overrides api.port)."
)
@click.option(
    "--role",
    type=click.Choice(["node", "registry"]),
    default=None,
    help="node: cameras, runtime and API; registry: a fleet's shared package registry "
    "(overrides the `role` setting).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    envvar="MAINSTREAM_LOG_FORMAT",
    help="json: one JSON object per line (time, level, logger, message, extra fields).",
)
def serve(
    config_path: Path | None,
    host: str | None,
    port: int | None,
    role: str | None,
    log_level: str,
    log_format: str,
) -> None:
    """Run this node: the REST API, the cameras and the apps, until SIGTERM or Ctrl-C.

    With `--role registry` it is a fleet's shared registry instead: it stores packages and base
    weights and serves them to the edge nodes, with no cameras, runtime or plan.
    """

    api_overrides = {key: value for key, value in (("host", host), ("port", port)) if value}
    role_override: dict[str, Any] = {"role": role} if role else {}
    settings = load_settings(config_path, **role_override)
    if api_overrides:
        settings = settings.model_copy(
            update={"api": settings.api.model_copy(update=api_overrides)}
        )

    configure_logging(log_level, "json" if log_format == "json" else "text")
    # The port first: on a busy port nothing else may start (no broker, no camera, no files).
    listening = _listen(settings.api.host, settings.api.port)
    import uvicorn  # the web server loads only to serve

    from api.app import create_app  # FastAPI loads only to serve

    node = Node(settings)
    what = "shared registry" if settings.role == "registry" else "node"
    base = _reachable_url(settings.api.host, settings.api.port)
    click.echo(f"{what} {settings.node_name!r}: data in {settings.data_dir}", err=True)
    click.echo(f"  dashboard  {base}/ui/", err=True)
    click.echo(f"  API docs   {base}/docs", err=True)
    if settings.admin_token is None and not node.registry.list_tokens():
        config_hint = f" --config {config_path}" if config_path else ""
        click.echo(
            "  no API token yet: create one with "
            f"`mainstream token create --role admin{config_hint}` and sign in with it",
            err=True,
        )
    if needs_a_camera(settings, node.registry):
        click.echo(f"  {NO_CAMERA_HINT}", err=True)
    config = uvicorn.Config(
        create_app(node),
        host=settings.api.host,
        port=settings.api.port,
        log_level=log_level,
        log_config=None,  # configure_logging() has set up every logger
        timeout_graceful_shutdown=10,
    )

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # Live streams never end on their own: end them, so that the graceful shutdown need
            # not wait its whole timeout for open dashboards. (On a thread: a signal handler
            # must not take the hub's locks.)
            threading.Thread(target=node.live.close, name="close-live", daemon=True).start()
            super().handle_exit(sig, frame)

    Server(config).run(sockets=[listening])


def needs_a_camera(settings: Settings, registry: Registry) -> bool:
    """Whether a node will start with no camera at all: none configured, none registered."""
    return (
        settings.role == "node" and not settings.startup_cameras() and not registry.list_cameras()
    )


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port, or a one-line error saying why not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listening = socket.socket(family, socket.SOCK_STREAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((host, port))
    except OSError as error:
        listening.close()
        reason = error.strerror or str(error)
        raise click.ClickException(
            f"cannot listen on {host}:{port}: {reason}; is another `mainstream serve` running? "
            "Choose another port with --port or api.port"
        ) from error
    listening.set_inheritable(True)
    return listening


def _reachable_url(host: str, port: int) -> str:
    """The URL to open in a browser (a wildcard address is reached through this machine)."""
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


@click.group()
def token() -> None:
    """Create, list and revoke API tokens (viewer tokens read, admin tokens change)."""


@token.command("create")
@_config_option
@click.option("--role", type=click.Choice(["admin", "viewer"]), required=True)
@click.option("--name", default=None, help="A label to recognise the token by.")
def create_token_command(config_path: Path | None, role: str, name: str | None) -> None:
    """Create a token and print it once (only its hash is stored)."""

    settings = load_settings(config_path)
    with Registry(settings.registry_path, settings.blobs_dir) as registry:
        record, secret = create_token(registry, role, name)  # type: ignore[arg-type]
    click.echo(
        f"created {record.role} token {record.name!r} (id {record.id}); it is shown once:", err=True
    )
    click.echo(secret)


@token.command("list")
@_config_option
def list_tokens_command(config_path: Path | None) -> None:
    """List tokens (never their secrets)."""

    settings = load_settings(config_path)
    with Registry(settings.registry_path, settings.blobs_dir) as registry:
        tokens = registry.list_tokens()
    click.echo(f"{'id':>4}  {'role':<7} {'name':<32} {'created':<20} last used")
    for item in tokens:
        used = item.last_used_at.strftime("%Y-%m-%d %H:%M:%S") if item.last_used_at else "never"
        click.echo(
            f"{item.id:>4}  {item.role:<7} {item.name:<32} "
            f"{item.created_at.strftime('%Y-%m-%d %H:%M:%S'):<20} {used}"
        )


@token.command("revoke")
@_config_option
@click.argument("token_id", type=int)
def revoke_token_command(config_path: Path | None, token_id: int) -> None:
    """Revoke a token by its id."""

    settings = load_settings(config_path)
    with (
        Registry(settings.registry_path, settings.blobs_dir) as registry,
        registry.transaction() as transaction,
    ):
        transaction.delete_token(token_id)
    click.echo(f"revoked token {token_id}")
