"""`mainstream apps|cameras|events ...`: manage a running node through its REST API.

    mainstream apps add trains --package trains:2 --camera gate --x-vote auto
    mainstream apps list --json
    mainstream cameras add gate --url rtsp://10.0.0.7/stream --fps 10
    mainstream events list --app trains --since 1h
    mainstream events review 3f2a... --false --note "a bus"

Every command takes `--server URL` (env MAINSTREAM_SERVER) and `--token T` (env
MAINSTREAM_TOKEN; viewer tokens read, admin tokens change), prints a table, or with `--json`
the server's JSON answer. The same options serve `mainstream package upload` and
`mainstream schedule show|dry-run`, which import them from here.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import click

from mainstream.cli.api_client import ApiClient
from mainstream.core.errors import AuthError

if TYPE_CHECKING:
    from mainstream.cli.api_client import ApiClient

DEFAULT_SERVER = "http://127.0.0.1:8780"

F = TypeVar("F", bound=Callable[..., Any])

server_option = click.option(
    "--server",
    envvar="MAINSTREAM_SERVER",
    default=DEFAULT_SERVER,
    show_default=True,
    show_envvar=True,
    help="URL of the node's API.",
)
token_option = click.option(
    "--token",
    envvar="MAINSTREAM_TOKEN",
    default=None,
    show_envvar=True,
    help="API token (`mainstream token create`); admin for changes.",
)
json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print the server's JSON answer instead of a table."
)


def remote_options(command: F) -> F:
    """--server, --token and --json, for every command that talks to a node."""
    return server_option(token_option(json_option(command)))


@contextmanager
def open_client(server: str, token: str | None) -> Iterator[ApiClient]:
    """A client for the node; an authentication failure says how to give a token."""

    with ApiClient(server, token) as client:
        try:
            yield client
        except AuthError as error:
            hint = (
                "check --token / MAINSTREAM_TOKEN" if token else "give --token or MAINSTREAM_TOKEN"
            )
            raise AuthError(f"{error} ({hint})") from None


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces, with a header line."""
    widths = [len(header) for header in headers]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = (cell.ljust(width) for cell, width in zip(cells, widths, strict=True))
        return "  ".join(padded).rstrip()

    return "\n".join([line(headers), *(line(row) for row in rows)])


def echo_table(headers: Sequence[str], rows: Sequence[Sequence[str]], empty: str) -> None:
    click.echo(render_table(headers, rows) if rows else empty)


def number(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{round(value, digits):g}"
    return str(value)


MEDIA_TIME_LIMIT = 1e9  # 2001-09-09: smaller stamps are media time (files, synthetic sources)


def when(epoch: float | None) -> str:
    """A UTC date-time, or seconds into the stream for sources stamped with media time."""
    if epoch is None:
        return "-"
    if epoch < MEDIA_TIME_LIMIT:
        return f"{epoch:.1f} s"
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


# ---------------------------------------------------------------------------------------------
# Parameters


class PackageSpec(click.ParamType):
    """APP or APP:VERSION (a number or `latest`)."""

    name = "APP[:VERSION]"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, int | str]:
        if isinstance(value, tuple):
            return value
        app, _, version = str(value).partition(":")
        if not app:
            self.fail(f"{value!r} has no app name (APP[:VERSION])", param, ctx)
        if not version or version == "latest":
            return app, "latest"
        if version.isdigit() and int(version) >= 1:
            return app, int(version)
        self.fail(f"version {version!r} is not a number >= 1 or 'latest'", param, ctx)


class XVote(click.ParamType):
    """A vote X >= 1, or `auto` (the scheduler picks it)."""

    name = "X|auto"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> int | str:
        if value == "auto" or isinstance(value, int):
            return value
        if str(value).isdigit() and int(value) >= 1:
            return int(value)
        self.fail(f"{value!r} is not a whole number >= 1 or 'auto'", param, ctx)


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(value: str | None) -> str | float | None:
    """`30m`, `2h`, `1d` mean that long ago; anything else goes to the server as given
    (epoch seconds or ISO 8601)."""
    if value is None:
        return None
    match = _DURATION.match(value.strip())
    if match:
        return time.time() - float(match.group(1)) * _SECONDS[match.group(2)]
    return value


def parse_assignment(text: str) -> tuple[str, Any]:
    """KEY=VALUE, the value read as JSON when it is JSON (numbers, true, lists), else text."""
    key, sign, raw = text.partition("=")
    if not sign or not key.strip():
        raise click.BadParameter(f"{text!r} is not KEY=VALUE", param_hint="--set")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key.strip(), value


def parse_resolution(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", value)
    if not match or int(match.group(1)) < 1 or int(match.group(2)) < 1:
        raise click.BadParameter(f"{value!r} is not WIDTHxHEIGHT", param_hint="--resolution")
    return int(match.group(1)), int(match.group(2))


# ---------------------------------------------------------------------------------------------
# apps


@click.group()
def apps() -> None:
    """List, add and remove the apps a node runs; every change re-plans the node."""


@apps.command("list")
@remote_options
def apps_list(server: str, token: str | None, as_json: bool) -> None:
    """The node's apps with the cut point, rate and predicted F1 the plan gives them, and who
    sets them: the config file (`apps:`) or the API."""
    with open_client(server, token) as client:
        views = client.list_apps()
    if as_json:
        echo_json(views)
        return
    rows = []
    for view in views:
        app, planned = view["app"], view.get("planned") or {}
        rows.append(
            [
                app["name"],
                f"{app['package_app']} v{app['package_version']}",
                app["camera"],
                "yes" if app["enabled"] else "no",
                str(app["x_vote"]),
                number(app["weight"]),
                planned.get("cut_point", "-"),
                number(planned.get("fps")),
                number(planned.get("f1")),
                "config" if view.get("declared") else "api",
            ]
        )
    headers = [
        "App",
        "Package",
        "Camera",
        "Enabled",
        "X",
        "Weight",
        "Cut point",
        "FPS",
        "F1",
        "Set by",
    ]
    echo_table(headers, rows, "no apps")


@apps.command("add")
@click.argument("name")
@click.option(
    "--package",
    "package_spec",
    type=PackageSpec(),
    default=None,
    help="Package to run, APP[:VERSION]; default: the package named NAME, latest version.",
)
@click.option("--camera", default=None, help="Camera id; default: the node's default camera.")
@click.option("--x-vote", type=XVote(), default=None, help="Consecutive fires that open an event.")
@click.option(
    "--weight",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Weight in the plan.",
)
@click.option(
    "--threshold", type=click.FloatRange(0, 1), default=None, help="Score that counts as a fire."
)
@click.option(
    "--quiet-time",
    "quiet_time_s",
    default=None,
    help="Seconds without a fire that end an event, or auto (the default: the app's event "
    "length, at least 1.5 analysis intervals).",
)
@click.option(
    "--event-length",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Override the package's event length (s).",
)
@click.option(
    "--event-frequency",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=None,
    help="Override the share of time covered by events.",
)
@click.option(
    "--correlation",
    type=click.FloatRange(0, 1),
    default=None,
    help="Override the inter-frame correlation.",
)
@click.option(
    "--min-fps",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Lowest analysis rate the plan may give the app.",
)
@click.option(
    "--max-fps",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Highest analysis rate the plan may give the app.",
)
@click.option("--disabled", is_flag=True, help="Register the app without running it.")
@remote_options
def apps_add(
    name: str,
    package_spec: tuple[str, int | str] | None,
    camera: str | None,
    x_vote: int | str | None,
    weight: float | None,
    threshold: float | None,
    quiet_time_s: str | None,
    event_length: float | None,
    event_frequency: float | None,
    correlation: float | None,
    min_fps: float | None,
    max_fps: float | None,
    disabled: bool,
    server: str,
    token: str | None,
    as_json: bool,
) -> None:
    """Deploy a stored package as app NAME; refused when the apps would no longer fit."""
    overrides = {
        key: value
        for key, value in (
            ("event_length_s", event_length),
            ("event_frequency", event_frequency),
            ("correlation", correlation),
        )
        if value is not None
    }
    package, version = package_spec if package_spec else (None, None)
    with open_client(server, token) as client:
        view = client.create_app(
            name,
            package=package,
            version=version,  # type: ignore[arg-type]
            camera=camera,
            weight=weight,
            x_vote=x_vote,  # type: ignore[arg-type]
            threshold=threshold,
            quiet_time_s=None if quiet_time_s is None else parse_quiet_time(quiet_time_s),
            event_overrides=overrides,
            enabled=False if disabled else None,
            min_fps=min_fps,
            max_fps=max_fps,
        )
    if as_json:
        echo_json(view)
        return
    app, planned = view["app"], view.get("planned")
    click.echo(
        f"added app {app['name']}: package {app['package_app']} v{app['package_version']} "
        f"on camera {app['camera']}"
    )
    if planned:
        click.echo(
            f"planned: cut point {planned['cut_point']}, {number(planned['fps'])} fps, "
            f"X={planned['x_vote']}, predicted F1 {planned['f1']:.3f}"
        )


@apps.command("remove")
@click.argument("name")
@remote_options
def apps_remove(name: str, server: str, token: str | None, as_json: bool) -> None:
    """Stop and remove app NAME (its package stays stored); the node re-plans."""
    with open_client(server, token) as client:
        client.delete_app(name)
    if as_json:
        echo_json({"removed": name})
    else:
        click.echo(f"removed app {name}")


# ---------------------------------------------------------------------------------------------
# cameras


@click.group()
def cameras() -> None:
    """List, add and remove a node's cameras."""


@cameras.command("list")
@remote_options
def cameras_list(server: str, token: str | None, as_json: bool) -> None:
    """The node's cameras, their state and the apps that watch them."""
    with open_client(server, token) as client:
        views = client.list_cameras()
    if as_json:
        echo_json(views)
        return
    rows = []
    for view in views:
        camera, status = view["camera"], view.get("status") or {}
        config = camera["config"]
        rows.append(
            [
                camera["id"],
                config["url"],
                "yes" if camera["enabled"] else "no",
                number(config.get("fps")),
                str(status.get("state", "-")),
                number(status.get("fps_in"), 1),
                ", ".join(view.get("apps", [])) or "-",
            ]
        )
    headers = ["Camera", "URL", "Enabled", "FPS", "State", "FPS in", "Apps"]
    echo_table(headers, rows, "no cameras")


@cameras.command("add")
@click.argument("camera_id", metavar="ID")
@click.option("--url", required=True, help="File, rtsp://, http(s)://, usb:N, synthetic://...")
@click.option(
    "--fps",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Camera rate the plan assumes; faster sources are thinned to it.",
)
@click.option("--resolution", default=None, help="Resize frames to WIDTHxHEIGHT.")
@click.option("--loop/--no-loop", default=None, help="Files: start again at the end.")
@click.option("--disabled", is_flag=True, help="Register the camera without opening it.")
@click.option(
    "--set",
    "assignments",
    multiple=True,
    metavar="KEY=VALUE",
    help="Any other camera field, e.g. --set queue_size=16 --set rtsp_transport=udp.",
)
@remote_options
def cameras_add(
    camera_id: str,
    url: str,
    fps: float | None,
    resolution: str | None,
    loop: bool | None,
    disabled: bool,
    assignments: tuple[str, ...],
    server: str,
    token: str | None,
    as_json: bool,
) -> None:
    """Register camera ID; the node opens it and re-plans."""
    options = dict(parse_assignment(text) for text in assignments)
    if loop is not None:
        options["loop"] = loop
    size = parse_resolution(resolution)
    with open_client(server, token) as client:
        view = client.create_camera(
            camera_id,
            url,
            fps=fps,
            resolution=size,
            enabled=False if disabled else None,
            options=options,
        )
    if as_json:
        echo_json(view)
    else:
        camera = view["camera"]
        state = "disabled" if not camera["enabled"] else "enabled"
        click.echo(f"added camera {camera['id']} ({camera['config']['url']}, {state})")


@cameras.command("remove")
@click.argument("camera_id", metavar="ID")
@remote_options
def cameras_remove(camera_id: str, server: str, token: str | None, as_json: bool) -> None:
    """Remove camera ID; refused while an app uses it."""
    with open_client(server, token) as client:
        client.delete_camera(camera_id)
    if as_json:
        echo_json({"removed": camera_id})
    else:
        click.echo(f"removed camera {camera_id}")


# ---------------------------------------------------------------------------------------------
# events


@click.group()
def events() -> None:
    """Look at the events a node detected."""


@events.command("list")
@click.option("--app", default=None, help="Only this app's events.")
@click.option("--camera", default=None, help="Only events on this camera.")
@click.option(
    "--since", default=None, help="Started at or after: epoch seconds, ISO 8601, or 30m/2h/1d ago."
)
@click.option("--until", default=None, help="Started before this (same forms as --since).")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True)
@remote_options
def events_list(
    app: str | None,
    camera: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    offset: int,
    server: str,
    token: str | None,
    as_json: bool,
) -> None:
    """Events in order of start time, one page at a time."""
    with open_client(server, token) as client:
        page = client.events(app, camera, parse_since(since), parse_since(until), limit, offset)
    if as_json:
        echo_json(page)
        return
    rows = [
        [
            event["id"],
            event["app"],
            event["camera"],
            when(event["start_time"]),
            "open" if event["open"] else when(event["end_time"]),
            f"{event['peak_score']:.3f}",
            f"{event['frames_fired']}/{event['frames_analysed']}",
            (event.get("review") or {}).get("verdict", "-"),
        ]
        for event in page["items"]
    ]
    headers = ["Event", "App", "Camera", "Start", "End", "Peak", "Fired/analysed", "Review"]
    echo_table(headers, rows, "no events")
    if page.get("next_offset") is not None:
        click.echo(f"more: --offset {page['next_offset']}", err=True)


@events.command("review")
@click.argument("event_id", metavar="ID")
@click.option(
    "--true/--false",
    "verdict",
    default=None,
    help="A real event (--true) or a false alarm (--false).",
)
@click.option("--clear", is_flag=True, help="Remove the event's mark instead.")
@click.option("--note", default="", help="Why, for the record.")
@remote_options
def events_review(
    event_id: str,
    verdict: bool | None,
    clear: bool,
    note: str,
    server: str,
    token: str | None,
    as_json: bool,
) -> None:
    """Mark event ID true or false (admin); the node updates the app's precision estimate
    and re-plans when its predicted F1 moves by `feedback.replan_delta` or more."""
    if clear == (verdict is not None):
        raise click.UsageError("give one of --true, --false or --clear")
    with open_client(server, token) as client:
        result = client.review_event(event_id, None if clear else verdict, note)
    if as_json:
        echo_json(result)
        return
    review = result["event"].get("review")
    click.echo(
        f"event {event_id}: " + (f"marked {review['verdict']}" if review else "mark cleared")
    )
    feedback = result.get("feedback")
    if feedback:
        click.echo(feedback_line(feedback))
    if result.get("replanned"):
        click.echo(f"re-planned: {result['replanned']}")


@events.command("feedback")
@remote_options
def events_feedback(server: str, token: str | None, as_json: bool) -> None:
    """Per app: events marked true, false and not marked, and what the marks imply."""
    with open_client(server, token) as client:
        items = client.feedback()
    if as_json:
        echo_json(items)
        return
    rows = [
        [
            item["app"],
            item["camera"],
            str(item["true"]),
            str(item["false"]),
            str(item["unreviewed"]),
            number(item["predicted_precision"]),
            number(item["precision"]),
            number(item["false_positive_rate"], 4),
            number(item["planned_f1"]),
            number(item["adjusted_f1"]),
            "yes" if item["in_force"] else "no",
        ]
        for item in items
    ]
    headers = [
        "App",
        "Camera",
        "True",
        "False",
        "Unreviewed",
        "Predicted precision",
        "Feedback precision",
        "Implied FPR",
        "Planned F1",
        "Feedback F1",
        "In force",
    ]
    echo_table(headers, rows, "no apps")


def feedback_line(feedback: dict[str, Any]) -> str:
    """One line about an app's marks and what they imply."""
    line = (
        f"{feedback['app']} on {feedback['camera']}: {feedback['true']} true, "
        f"{feedback['false']} false, {feedback['unreviewed']} unreviewed"
    )
    if feedback.get("precision") is not None:
        line += (
            f"; precision {feedback['precision']:.2f} (predicted "
            f"{feedback['predicted_precision']:.2f}), implied FPR "
            f"{number(feedback['false_positive_rate'], 4)}"
        )
        if not feedback["in_force"]:
            line += " (not yet used: too few marks)"
    return line


def parse_quiet_time(text: str) -> float | Literal["auto"]:
    """`auto` or seconds >= 0 (a one-line usage error otherwise)."""
    if text == "auto":
        return "auto"
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not (seconds >= 0 and seconds != float("inf")):
        raise click.BadParameter(
            f"{text!r}: expected seconds >= 0 or 'auto'", param_hint="--quiet-time"
        )
    return seconds
