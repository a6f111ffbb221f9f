"""The remote `mainstream` commands against a real `mainstream serve` on a loopback port.

The daemon is a separate process; the CLI runs in the test process through its real entry
point (`mainstream.cli.main.main`), so exit codes and messages are the ones users see.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from mainstream.cli.main import main
from mainstream.node.registry import Registry
from mainstream.node.services import create_token
from mainstream.node.settings import load_settings
from tests.support.nodes import (
    Daemon,
    TinyPackages,
    free_port,
    node_config,
    wait_for,
)

pytestmark = pytest.mark.slow


@dataclass
class Outcome:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        assert self.code == 0, self.err
        return json.loads(self.out)


@dataclass
class Node:
    daemon: Daemon
    admin: str
    viewer: str

    @property
    def url(self) -> str:
        return self.daemon.url


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Any:
    """Run `mainstream ARGS...` in this process; the exit code, stdout and stderr."""

    def run(*args: str) -> Outcome:
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        captured = capsys.readouterr()
        return Outcome(code, captured.out, captured.err)

    return run


@pytest.fixture
def node(tmp_path: Path, tiny_packages: TinyPackages) -> Iterator[Node]:
    data = tmp_path / "data"
    tiny_packages.register_base(data)
    config = tmp_path / "node.yaml"
    config.write_text(
        yaml.safe_dump(node_config(data, api={"host": "127.0.0.1", "port": free_port()}))
    )
    settings = load_settings(config)
    with Registry(settings.registry_path, settings.blobs_dir) as registry:
        _, admin = create_token(registry, "admin", "cli admin")
        _, viewer = create_token(registry, "viewer", "cli viewer")
    daemon = Daemon(config=config, log=tmp_path / "serve.log", port=settings.api.port)
    daemon.start()
    try:
        yield Node(daemon, admin, viewer)
    finally:
        assert daemon.process is not None
        if daemon.process.poll() is None:
            assert daemon.stop(), daemon.log_tail()


def test_cli_drives_a_running_node(
    node: Node,
    cli: Any,
    tiny_packages: TinyPackages,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    admin = ("--server", node.url, "--token", node.admin)
    viewer = ("--server", node.url, "--token", node.viewer)

    # -- tokens: reading needs one, changing needs an admin one --------------------------------
    anonymous = cli("apps", "list", "--server", node.url)
    assert anonymous.code != 0
    assert "bearer token" in anonymous.err and "MAINSTREAM_TOKEN" in anonymous.err
    wrong = cli("apps", "list", "--server", node.url, "--token", "mst_wrong")
    assert wrong.code != 0 and "unknown or revoked token" in wrong.err
    refused = cli("package", "upload", str(tiny_packages.trains), *viewer)
    assert refused.code != 0 and "viewer token" in refused.err
    refused = cli("apps", "add", "trains", *viewer)
    assert refused.code != 0 and "viewer token" in refused.err
    assert cli("apps", "list", *viewer).out.strip() == "no apps"
    assert cli("package", "list", *viewer).out.strip() == "no packages stored"

    # -- upload through the CLI; the same archive again stores nothing new ---------------------
    uploaded = cli("package", "upload", str(tiny_packages.trains), *admin)
    assert uploaded.code == 0, uploaded.err
    assert uploaded.out.startswith("stored trains v1 (sha256 ")
    again = cli("package", "upload", str(tiny_packages.trains), *admin, "--json").json()
    assert again["created"] is False and again["package"]["version"] == 1
    listed = cli("package", "list", *viewer)
    assert listed.code == 0, listed.err
    [header, row] = listed.out.splitlines()
    assert header.split()[:3] == ["app", "ver", "sha256"]
    assert row.split()[:3] == ["trains", "1*", again["package"]["sha256"][:12]]
    assert cli("package", "list", "--app", "buses", *viewer).out.strip() == (
        "no packages stored for app 'buses'"
    )
    assert [p["version"] for p in cli("package", "list", *viewer, "--json").json()] == [1]

    # -- registering an app re-plans the node --------------------------------------------------
    empty = cli("schedule", "show", *viewer, "--json").json()
    assert empty["status"] == "empty"
    added = cli(
        "apps", "add", "trains", "--package", "trains:1", "--threshold", "0",
        "--quiet-time", "120", "--min-fps", "0.5", "--max-fps", "5", *admin,
    )  # fmt: skip
    assert added.code == 0, added.err
    assert "added app trains: package trains v1 on camera synthetic" in added.out
    planned = cli("schedule", "show", *viewer, "--json").json()
    assert planned["status"] == "ok" and planned["id"] != empty["id"]
    assert [app["name"] for app in planned["plan"]["apps"]] == ["trains"]
    assert 0.5 <= planned["plan"]["apps"][0]["fps"] <= 5  # within --min-fps / --max-fps
    shown = cli("schedule", "show", *viewer)
    assert shown.code == 0 and f"Plan {planned['id']} (ok)" in shown.out
    assert planned["plan"]["apps"][0]["cut_point"] in shown.out

    # server and token from the environment, as a deployment would set them
    monkeypatch.setenv("MAINSTREAM_SERVER", node.url)
    monkeypatch.setenv("MAINSTREAM_TOKEN", node.viewer)
    listed = cli("apps", "list", "--json").json()
    assert [view["app"]["name"] for view in listed] == ["trains"]
    assert listed[0]["planned"]["cut_point"] == planned["plan"]["apps"][0]["cut_point"]
    table = cli("apps", "list").out.splitlines()
    assert table[0].split()[:3] == ["App", "Package", "Camera"]
    assert table[1].split()[:4] == ["trains", "trains", "v1", "synthetic"]
    assert table[0].split()[-2:] == ["Set", "by"] and table[1].split()[-1] == "api"
    monkeypatch.delenv("MAINSTREAM_SERVER")
    monkeypatch.delenv("MAINSTREAM_TOKEN")

    # -- dry runs answer without deploying -----------------------------------------------------
    removed = cli("schedule", "dry-run", "--remove-app", "trains", *viewer, "--json").json()
    assert removed["status"] == "empty" and removed["plan"] is None
    more = cli("schedule", "dry-run", "--add-app", "trams=trains", *viewer, "--json").json()
    assert more["status"] == "ok"
    assert sorted(app["name"] for app in more["plan"]["apps"]) == ["trains", "trams"]
    assert more["current_value"] == pytest.approx(planned["plan"]["value"])
    table = cli("schedule", "dry-run", "--add-app", "trams=trains:1", *viewer)
    assert table.code == 0 and "(+trams)" in table.out and "trams" in table.out
    tight = cli("schedule", "dry-run", "--budget", "1e-6", *viewer)
    assert tight.code == 3 and "budget" in tight.err.lower()
    assert cli("schedule", "show", *viewer, "--json").json()["id"] == planned["id"]

    # -- events (threshold 0: every analysed frame fires) --------------------------------------
    def has_events() -> bool:
        return bool(cli("events", "list", *viewer, "--json").json()["items"])

    assert wait_for(has_events, timeout=60), node.daemon.log_tail()
    # (a synthetic camera stamps frames with media time, seconds since it started)
    page = cli("events", "list", "--app", "trains", "--since", "0", *viewer, "--json").json()
    assert page["items"][0]["app"] == "trains" and page["items"][0]["open"] is True
    before = cli("events", "list", "--until", "0", "--limit", "5", *viewer, "--json").json()
    assert before["items"] == [] and before["limit"] == 5
    table = cli("events", "list", "--camera", "synthetic", *viewer)
    assert page["items"][0]["id"] in table.out and "open" in table.out
    other = cli("events", "list", "--app", "buses", *viewer, "--json").json()
    assert other["items"] == []
    bad_time = cli("events", "list", "--since", "yesterday-ish", *viewer)
    assert bad_time.code != 0 and "since" in bad_time.err

    # -- marking an event: admin only; shown in the listing and the app's feedback ------------
    event_id = page["items"][0]["id"]
    refused = cli("events", "review", event_id, "--true", *viewer)
    assert refused.code != 0 and "viewer token" in refused.err
    unclear = cli("events", "review", event_id, *admin)
    assert unclear.code == 2 and "give one of --true, --false or --clear" in unclear.err
    marked = cli("events", "review", event_id, "--true", "--note", "a train", *admin)
    assert marked.code == 0, marked.err
    said, estimate = marked.out.splitlines()[:2]
    assert said == f"event {event_id}: marked true"
    assert estimate.startswith("trains on synthetic: 1 true, 0 false, 0 unreviewed; precision ")
    assert estimate.endswith("(not yet used: too few marks)")
    table = cli("events", "list", *viewer).out.splitlines()
    assert table[0].split()[-1] == "Review" and table[1].split()[-1] == "true"
    feedback = cli("events", "feedback", *viewer).out.splitlines()
    assert feedback[1].split()[:5] == ["trains", "synthetic", "1", "0", "0"]
    cleared = cli("events", "review", event_id, "--clear", *admin)
    assert cleared.out.startswith(f"event {event_id}: mark cleared")
    assert cli("events", "list", *viewer, "--json").json()["items"][0]["review"] is None

    # -- cameras -------------------------------------------------------------------------------
    added = cli(
        "cameras", "add", "gate", "--url", "synthetic://?fps=5&size=64x48", "--fps", "5",
        "--set", "queue_size=4", *admin, "--json",
    )  # fmt: skip
    camera = added.json()["camera"]
    assert camera["id"] == "gate" and camera["config"]["queue_size"] == 4
    cameras = cli("cameras", "list", *viewer, "--json").json()
    assert sorted(view["camera"]["id"] for view in cameras) == ["gate", "synthetic"]
    in_use = cli("cameras", "remove", "synthetic", *admin)
    assert in_use.code != 0 and "used by app(s) trains" in in_use.err
    assert cli("cameras", "remove", "gate", *admin).out.strip() == "removed camera gate"
    table = cli("cameras", "list", *viewer).out
    assert "synthetic" in table and "gate" not in table
    missing = cli("cameras", "remove", "gate", *admin)
    assert missing.code != 0 and "gate" in missing.err

    # -- removing the app re-plans again -------------------------------------------------------
    assert cli("apps", "remove", "trains", *admin).out.strip() == "removed app trains"
    after = cli("schedule", "show", *viewer, "--json").json()
    assert after["status"] == "empty" and after["id"] != planned["id"]


def test_unreachable_server_is_one_clear_line(cli: Any, tiny_packages: TinyPackages) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    installed = subprocess.run(  # once through the real executable entry point
        [sys.executable, "-m", "mainstream.cli.main", "apps", "list", "--server", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    answers = [Outcome(installed.returncode, installed.stdout, installed.stderr)]
    answers += [
        cli("schedule", "show", "--server", url),
        cli("schedule", "dry-run", "--remove-app", "trains", "--server", url, "--json"),
        cli("events", "list", "--json", "--server", url),
        cli("cameras", "remove", "gate", "--server", url, "--token", "mst_x"),
        cli("package", "upload", str(tiny_packages.trains), "--server", url),
    ]
    for answer in answers:
        assert answer.code == 7 and answer.out == ""
        lines = answer.err.strip().splitlines()
        assert len(lines) == 1 and url in lines[0] and "connection refused" in lines[0], lines
