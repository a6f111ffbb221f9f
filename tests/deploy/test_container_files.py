"""Static checks of the Dockerfile, .dockerignore, compose file, mosquitto config and systemd unit.

No container engine is needed: the Dockerfile is parsed into instructions, its shell steps are
syntax-checked with `sh -n`, and its health check is run for real against a local HTTP server.
The systemd unit goes through `systemd-analyze verify` and `security --offline` when systemd
is installed.
"""

from __future__ import annotations

import configparser
import fnmatch
import http.server
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.settings_check import load_config_text, load_environment, unknown_setting

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY_DIR = REPO_ROOT / "deploy"
DOCKERFILE = REPO_ROOT / "Dockerfile"
COMPOSE_FILE = DEPLOY_DIR / "compose.yaml"
UNIT_FILE = DEPLOY_DIR / "systemd" / "mainstream.service"
API_PORT = 8780
SERVICE_UID = "10001"


def pyproject() -> dict[str, Any]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    document = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


# --- Dockerfile ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    stage: str


def dockerfile_instructions() -> list[Instruction]:
    """The Dockerfile as instructions: comments dropped, continuation lines joined."""
    logical_lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical_lines.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"

    instructions = []
    stage = ""
    for line in logical_lines:
        keyword, _, arguments = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.search(r"\bAS\s+(\S+)", arguments, flags=re.IGNORECASE)
            stage = match.group(1) if match else ""
        instructions.append(Instruction(keyword, arguments.strip(), stage))
    return instructions


def in_stage(stage: str, keyword: str) -> list[Instruction]:
    return [i for i in dockerfile_instructions() if i.stage == stage and i.keyword == keyword]


def build_arg_defaults() -> dict[str, str]:
    defaults: dict[str, str] = {}
    for instruction in dockerfile_instructions():
        if instruction.keyword == "ARG" and "=" in instruction.arguments:
            name, _, value = instruction.arguments.partition("=")
            defaults.setdefault(name, value)
    return defaults


def image_environment() -> dict[str, str]:
    environment: dict[str, str] = {}
    for instruction in in_stage("runtime", "ENV"):
        for assignment in shlex.split(instruction.arguments):
            name, _, value = assignment.partition("=")
            environment[name] = value
    return environment


def test_dockerfile_has_a_builder_and_a_slim_runtime_stage() -> None:
    froms = [i for i in dockerfile_instructions() if i.keyword == "FROM"]
    assert [i.stage for i in froms] == ["builder", "runtime"]
    defaults = build_arg_defaults()
    for instruction in froms:
        image = instruction.arguments.split()[0]
        resolved = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], image)
        assert resolved == "python:3.11-slim"
    copies = in_stage("runtime", "COPY")
    assert any("--from=builder" in c.arguments and "/opt/mainstream" in c.arguments for c in copies)
    assert not any("pip install" in r.arguments for r in in_stage("runtime", "RUN")), (
        "the runtime stage only copies the virtualenv built in the builder"
    )


def test_dockerfile_variant_selects_the_gpu_extra() -> None:
    assert build_arg_defaults()["VARIANT"] == "cpu"
    (install,) = [r for r in in_stage("builder", "RUN") if "pip wheel --no-deps" in r.arguments]
    assert '"$VARIANT" = "gpu"' in install.arguments
    assert "[gpu]" in install.arguments
    extras = pyproject()["project"]["optional-dependencies"]
    assert "gpu" in extras, "the Dockerfile installs the `gpu` extra"
    assert "--build-arg VARIANT=gpu" in DOCKERFILE.read_text()


def test_dockerfile_copies_every_package_of_the_project() -> None:
    include = pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {
        path.parent.name
        for path in REPO_ROOT.glob("*/__init__.py")
        if any(fnmatch.fnmatch(path.parent.name, pattern) for pattern in include)
    }
    copied = {c.arguments.split()[0] for c in in_stage("builder", "COPY")}
    assert packages, "no packages found"
    assert packages <= copied, f"not copied into the image: {sorted(packages - copied)}"
    assert {"pyproject.toml", "README.md"} <= {
        word for c in in_stage("builder", "COPY") for word in c.arguments.split()
    }


def test_dockerfile_runs_as_a_non_root_user_with_data_volume() -> None:
    users = [i.arguments for i in dockerfile_instructions() if i.keyword == "USER"]
    assert users and users[-1].split(":")[0] == SERVICE_UID
    setup = " ".join(r.arguments for r in in_stage("runtime", "RUN"))
    assert f"--uid {SERVICE_UID}" in setup and "chown mainstream:mainstream /data" in setup
    environment = image_environment()
    assert environment["MAINSTREAM_DATA_DIR"] == "/data"
    assert environment["MAINSTREAM_API__HOST"] == "0.0.0.0"
    assert [v.arguments for v in in_stage("runtime", "VOLUME")] == ["/data"]
    assert [e.arguments for e in in_stage("runtime", "EXPOSE")] == [str(API_PORT)]


def test_dockerfile_entrypoint_is_the_cli_serving_by_default() -> None:
    (entrypoint,) = in_stage("runtime", "ENTRYPOINT")
    (command,) = in_stage("runtime", "CMD")
    assert json.loads(entrypoint.arguments) == ["mainstream"]
    assert json.loads(command.arguments) == ["serve"]
    scripts = pyproject()["project"]["scripts"]
    assert "mainstream" in scripts


def test_dockerfile_environment_names_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    environment = {k: v for k, v in image_environment().items() if k.startswith("MAINSTREAM_")}
    problems = [p for p in map(unknown_setting, environment) if p]
    assert not problems, problems
    settings = load_environment(environment, monkeypatch)
    assert str(settings.data_dir) == "/data"


def test_dockerfile_shell_steps_are_valid_shell() -> None:
    sh = shutil.which("sh")
    if sh is None:
        pytest.skip("no POSIX shell to check the RUN steps with")
    runs = [i for i in dockerfile_instructions() if i.keyword == "RUN"]
    assert runs
    for run in runs:
        result = subprocess.run(
            [sh, "-n", "-c", run.arguments], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, f"{run.arguments}\n{result.stderr}"


def healthcheck_command() -> list[str]:
    (healthcheck,) = in_stage("runtime", "HEALTHCHECK")
    exec_form = healthcheck.arguments.split(" CMD ", 1)[1]
    command = json.loads(exec_form)
    assert isinstance(command, list)
    return command


class _HealthHandler(http.server.BaseHTTPRequestHandler):
    status = 200
    paths: list[str]

    def do_GET(self) -> None:
        self.paths.append(self.path)
        self.send_response(self.status)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def health_server(status: int) -> Iterator[tuple[int, list[str]]]:
    """A local server answering every GET with `status`; yields its port and the paths asked."""
    paths: list[str] = []
    handler = type("Handler", (_HealthHandler,), {"status": status, "paths": paths})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], paths
    finally:
        server.shutdown()
        server.server_close()


def run_probe(command: list[str], port: int) -> int:
    assert command[0] == "python"
    environment = {**os.environ, "MAINSTREAM_API__PORT": str(port)}
    result = subprocess.run(
        [sys.executable, *command[1:]], env=environment, capture_output=True, timeout=20
    )
    return result.returncode


def compose_healthcheck_command(service: str) -> list[str]:
    test = compose()["services"][service]["healthcheck"]["test"]
    assert test[0] == "CMD", "exec form: the slim image has no curl and needs no shell"
    return list(test[1:])


@pytest.mark.parametrize("source", ["Dockerfile", "compose"])
def test_health_check_passes_only_when_ready(source: str) -> None:
    """The image's probe asks /api/health/ready on the configured port and fails on non-2xx."""
    command = (
        healthcheck_command()
        if source == "Dockerfile"
        else compose_healthcheck_command("mainstream")
    )
    with health_server(200) as (port, paths):
        assert run_probe(command, port) == 0
        assert paths == ["/api/health/ready"]
    with health_server(503) as (port, paths):
        assert run_probe(command, port) != 0
        assert paths == ["/api/health/ready"]
    with health_server(200) as (port, _):
        pass  # closed again: nothing listens on this port now
    assert run_probe(command, port) != 0


def test_dockerignore_keeps_the_context_small_but_complete() -> None:
    patterns = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        return any(
            fnmatch.fnmatch(path, pattern.removeprefix("**/"))
            or fnmatch.fnmatch(path.split("/")[0], pattern)
            for pattern in patterns
        )

    for needed in ("pyproject.toml", "README.md", "mainstream/node/settings.py", "api/__init__.py"):
        assert not ignored(needed), f".dockerignore drops {needed}, which the image needs"
    for unwanted in (".git", "tests/deploy/test_kubernetes.py", "deploy/mainstream.env"):
        assert ignored(unwanted), f".dockerignore should drop {unwanted}"


# --- compose -------------------------------------------------------------------------------

COMPOSE_SERVICE_KEYS = {
    "image", "build", "command", "entrypoint", "init", "restart", "ports", "expose",
    "environment", "env_file", "volumes", "devices", "group_add", "depends_on", "healthcheck",
    "profiles", "deploy", "user", "read_only", "tmpfs", "networks", "labels", "logging",
    "stop_grace_period", "cap_drop", "cap_add", "security_opt", "working_dir", "gpus",
}  # fmt: skip
"""Service keys of the compose specification this file may use; a typo is not among them."""


def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def interpolate(value: str) -> str:
    """Compose's `${NAME:-default}` with nothing set: the default."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def test_compose_has_the_daemon_broker_and_optional_trainer() -> None:
    document = compose()
    services = document["services"]
    assert set(services) == {"mainstream", "mosquitto", "trainer"}
    for name, service in services.items():
        unknown = set(service) - COMPOSE_SERVICE_KEYS
        assert not unknown, f"{name}: unknown keys {unknown}"
        assert "profiles" in service or name != "trainer"
    assert "profiles" not in services["mainstream"] and "profiles" not in services["mosquitto"]
    assert services["trainer"]["profiles"] == ["gpu"]
    assert services["mosquitto"]["image"].startswith("eclipse-mosquitto:")
    daemon = services["mainstream"]
    assert daemon["depends_on"]["mosquitto"]["condition"] == "service_healthy"
    assert "healthcheck" in services["mosquitto"]
    assert f"{API_PORT}:{API_PORT}" in daemon["ports"]


def test_compose_builds_both_variants_from_the_repository() -> None:
    services = compose()["services"]
    for name, variant in (("mainstream", "cpu"), ("trainer", "gpu")):
        build = services[name]["build"]
        context = (COMPOSE_FILE.parent / build["context"]).resolve()
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE
        assert build["args"]["VARIANT"] == variant


def test_compose_trainer_reserves_an_nvidia_gpu() -> None:
    trainer = compose()["services"]["trainer"]
    (device,) = trainer["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert device["capabilities"] == ["gpu"]
    assert device["count"] == 1
    assert trainer["command"][:3] == ["trainer", "worker", "--listen"]


def test_compose_volumes_and_bind_mounts_exist() -> None:
    document = compose()
    declared = set(document["volumes"])
    used = set()
    for name, service in document["services"].items():
        for mount in service.get("volumes", []):
            source, _target = mount.split(":")[:2]
            if source.startswith("."):
                assert (COMPOSE_FILE.parent / source).is_file(), f"{name}: missing {source}"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
                used.add(source)
        for env_file in service.get("env_file", []):
            assert env_file["required"] is False, "the secrets file is optional"
            example = COMPOSE_FILE.parent / (env_file["path"] + ".example")
            assert example.is_file(), f"{name}: no {example.name} to start from"
    assert used == declared
    daemon = document["services"]["mainstream"]
    data_mount = next(m for m in daemon["volumes"] if m.endswith(":/data"))
    assert data_mount.split(":")[0] in declared
    ignored = (DEPLOY_DIR / ".gitignore").read_text().split()
    assert "mainstream.env" in ignored


def test_compose_environment_is_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("mainstream", "trainer"):
        environment = {
            key: interpolate(str(value))
            for key, value in compose()["services"][name]["environment"].items()
        }
        problems = [p for p in map(unknown_setting, environment) if p]
        assert not problems, problems
        settings = load_environment(environment, monkeypatch)
        assert str(settings.data_dir) == "/data"
    daemon_env = compose()["services"]["mainstream"]["environment"]
    assert daemon_env["MAINSTREAM_MQTT__HOST"] == "mosquitto", "the broker's service name"


def test_mosquitto_config_matches_the_compose_mounts() -> None:
    lines = [
        line.split()
        for line in (DEPLOY_DIR / "mosquitto" / "mosquitto.conf").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    options = {words[0]: words[1:] for words in lines}
    assert options["listener"] == ["1883"]
    assert options["persistence"] == ["true"]
    mosquitto = compose()["services"]["mosquitto"]
    targets = {mount.split(":")[1] for mount in mosquitto["volumes"]}
    assert options["persistence_location"][0].rstrip("/") in targets
    assert "/mosquitto/config/mosquitto.conf" in targets
    assert "1883:1883" in mosquitto["ports"]


MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def running_broker(config_text: str, directory: Path) -> Iterator[int]:
    """mosquitto on a loopback port with `config_text`, data kept in `directory`."""
    if not Path(MOSQUITTO).is_file():
        pytest.skip("the mosquitto broker is not installed (Debian package 'mosquitto')")
    port = free_port()
    lines = []
    for line in config_text.splitlines():
        if line.startswith("listener "):
            line = f"listener {port} 127.0.0.1"
        elif line.startswith("persistence_location "):
            line = f"persistence_location {directory}/"
        lines.append(line)
    if os.geteuid() == 0:
        lines.append("user root")  # otherwise it drops to 'mosquitto', who cannot write here
    config_path = directory / "mosquitto.conf"
    config_path.write_text("\n".join(lines) + "\n")
    log_path = directory / "broker.log"
    with log_path.open("w") as log:
        broker = subprocess.Popen([MOSQUITTO, "-c", str(config_path)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 10
        while True:
            assert broker.poll() is None, f"mosquitto exited: {log_path.read_text()}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"not listening: {log_path.read_text()}"
                time.sleep(0.05)
        yield port
    finally:
        broker.terminate()
        broker.wait(timeout=10)
    problems = [line for line in log_path.read_text().splitlines() if "Error" in line]
    assert not problems, problems


def first_message(port: int, topic: str, timeout_s: float = 5.0) -> bytes | None:
    """What a fresh subscriber to `topic` receives first, as `mosquitto_sub -C 1 -W` would."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    received: list[bytes] = []
    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.on_connect = lambda client, userdata, flags, reason, props: client.subscribe(topic)

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        received.append(message.payload)
        done.set()

    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        done.wait(timeout_s)
    finally:
        client.loop_stop()
        client.disconnect()
    return received[0] if received else None


def kubernetes_mosquitto_config() -> str:
    manifests = yaml.safe_load_all((DEPLOY_DIR / "kubernetes" / "mosquitto.yaml").read_text())
    (config_map,) = [m for m in manifests if m["kind"] == "ConfigMap"]
    text: str = config_map["data"]["mosquitto.conf"]
    return text


@pytest.mark.parametrize("source", ["compose", "kubernetes"])
def test_mosquitto_configs_run_and_pass_the_health_check(source: str, tmp_path: Path) -> None:
    """The broker accepts the shipped config; the compose health check's topic answers at once."""
    text = (
        (DEPLOY_DIR / "mosquitto" / "mosquitto.conf").read_text()
        if source == "compose"
        else kubernetes_mosquitto_config()
    )
    test = compose()["services"]["mosquitto"]["healthcheck"]["test"]
    topic = test[test.index("-t") + 1].replace("$$", "$")  # compose escapes $ as $$
    with running_broker(text, tmp_path) as port:
        assert first_message(port, topic) is not None, f"no retained message on {topic}"


def test_env_example_holds_no_live_secret() -> None:
    for line in (DEPLOY_DIR / "mainstream.env.example").read_text().splitlines():
        assert not re.match(r"\s*MAINSTREAM_\w+=\S", line), f"a value is set: {line}"


# --- systemd -------------------------------------------------------------------------------


def read_unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(
        strict=False, interpolation=None, empty_lines_in_values=False
    )
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT_FILE.read_text(encoding="utf-8"))
    return parser


def test_unit_runs_the_daemon_with_its_config() -> None:
    unit = read_unit()
    service = unit["Service"]
    executable, *arguments = shlex.split(service["ExecStart"])
    assert executable == "/opt/mainstream/bin/mainstream"
    assert arguments == ["serve", "--config", "/etc/mainstream/mainstream.yaml"]
    assert service["Restart"] == "on-failure"
    assert service["User"] not in ("root", "0")
    assert service["EnvironmentFile"].lstrip("-") == "/etc/mainstream/mainstream.env"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert "network-online.target" in unit["Unit"]["After"]


def test_unit_is_sandboxed() -> None:
    service = read_unit()["Service"]
    required = {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
        "RestrictSUIDSGID": "yes",
        "ProtectKernelModules": "yes",
    }
    for key, value in required.items():
        assert service.get(key) == value, f"{key}={service.get(key)!r}, expected {value!r}"
    families = set(service["RestrictAddressFamilies"].split())
    assert families == {"AF_UNIX", "AF_INET", "AF_INET6"}
    data_dir = next(
        line.split("=", 2)[2]
        for line in UNIT_FILE.read_text().splitlines()
        if line.startswith("Environment=MAINSTREAM_DATA_DIR=")
    )
    assert data_dir in service["ReadWritePaths"].split()
    assert data_dir == "/var/lib/" + service["StateDirectory"]
    text = UNIT_FILE.read_text()
    assert re.search(r"^# ?MemoryMax=", text, flags=re.MULTILINE), "MemoryMax is offered, commented"


def unit_for_this_machine(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this environment's `mainstream`, for systemd-analyze."""
    executable = shutil.which("mainstream") or sys.executable
    text = UNIT_FILE.read_text().replace("/opt/mainstream/bin/mainstream", executable)
    path = tmp_path / UNIT_FILE.name
    path.write_text(text)
    return path


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = unit_for_this_machine(tmp_path)
    result = subprocess.run(
        [analyze, "verify", unit.name], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "Unknown key" not in result.stderr and "Unknown section" not in result.stderr


def test_unit_exposure_stays_low(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = unit_for_this_machine(tmp_path)
    # --threshold counts tenths: 20 means an overall exposure of at most 2.0 ("OK").
    result = subprocess.run(
        [analyze, "security", "--offline=yes", "--threshold=20", "--no-pager", unit.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if "--offline" in result.stderr and "unrecognized" in result.stderr:
        pytest.skip("this systemd-analyze has no offline security review")
    summary = [line for line in result.stdout.splitlines() if "Overall exposure" in line]
    assert result.returncode == 0, summary or result.stderr


def test_sample_config_is_accepted_by_the_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (DEPLOY_DIR / "systemd" / "mainstream.yaml").read_text()
    settings = load_config_text(text, tmp_path, monkeypatch)
    assert str(settings.data_dir) == "/var/lib/mainstream"
    assert settings.api.port == API_PORT
    assert settings.default_camera is None and settings.cameras, "a production box: real cameras"
