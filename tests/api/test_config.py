"""Node configuration: file + environment, secrets from the environment only, the config CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from mainstream.cli.main import cli
from mainstream.node.settings import ConfigError, Settings, load_settings, settings_json_schema


def write(path: Path, document: object) -> Path:
    path.write_text(yaml.safe_dump(document))
    return path


def test_the_environment_overrides_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(
        tmp_path / "node.yaml",
        {
            "data_dir": str(tmp_path / "data"),
            "api": {"port": 9000, "metrics_access": "loopback"},
            "cameras": [{"id": "door", "url": "synthetic://?fps=5"}],
        },
    )
    monkeypatch.setenv("MAINSTREAM_API__HOST", "0.0.0.0")
    monkeypatch.setenv("MAINSTREAM_API__PORT", "9100")
    monkeypatch.setenv("MAINSTREAM_ADMIN_TOKEN", "from-the-environment")
    settings = load_settings(config)
    assert (settings.api.host, settings.api.port, settings.api.metrics_access) == (
        "0.0.0.0",
        9100,
        "loopback",
    )
    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == "from-the-environment"
    assert "from-the-environment" not in repr(settings)
    assert [camera.id for camera in settings.startup_cameras()] == ["door"]
    assert settings.bases_dir == tmp_path / "data" / "bases"

    alone = load_settings(config, environment=False)
    assert (alone.api.port, alone.admin_token) == (9000, None)


def test_defaults_keep_working_without_a_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    monkeypatch.delenv("MAINSTREAM_DATA_DIR", raising=False)
    settings = Settings()
    assert settings.data_dir == tmp_path / "mainstream"
    assert settings.api.port == 8780 and settings.api.max_upload_bytes == 256 * 1024 * 1024
    assert settings.runtime.budget_ms_per_s is None and settings.runtime.utilisation == 0.8
    assert settings.default_camera is None and settings.startup_cameras() == []


def test_errors_name_every_bad_field(tmp_path: Path) -> None:
    config = write(
        tmp_path / "bad.yaml",
        {
            "api": {"port": 70000, "colour": "blue"},
            "runtime": {"engine": "tpu", "utilisation": 1.5},
            "cameras": [{"id": "a", "url": "synthetic://"}, {"id": "a", "url": "synthetic://"}],
        },
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environment=False)
    fields = {problem.split(":")[0] for problem in caught.value.problems}
    assert fields == {
        "api.port",
        "api.colour",
        "runtime.engine",
        "runtime.utilisation",
        "cameras",
    }
    assert caught.value.exit_code == 2


def test_cameras_in_the_file_must_pass_the_camera_policy(tmp_path: Path) -> None:
    config = write(
        tmp_path / "node.yaml",
        {
            "data_dir": str(tmp_path / "data"),
            "cameras": [
                {"id": "meta", "url": "http://169.254.169.254/latest/meta-data/"},
                {"id": "yard", "url": str(tmp_path / "data" / "media" / "yard.mp4")},
            ],
            "default_camera": {"id": "passwd", "url": "/etc/passwd"},
        },
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environment=False)
    assert [problem.split(":")[0] for problem in caught.value.problems] == [
        "cameras",
        "default_camera",
    ]
    assert "'meta'" in caught.value.problems[0] and "'yard'" not in caught.value.problems[0]
    assert "allowed folder" in caught.value.problems[1]

    allowed = write(
        tmp_path / "allowed.yaml",
        {
            "data_dir": str(tmp_path / "data"),
            "camera_policy": {"file_dirs": ["/etc"], "allowed_networks": ["169.254.0.0/16"]},
            "cameras": [{"id": "meta", "url": "http://169.254.169.254/"}],
            "default_camera": {"id": "passwd", "url": "/etc/passwd"},
        },
    )
    settings = load_settings(allowed, environment=False)
    assert settings.camera_policy_in_force().file_dirs == [Path("/etc")]


def test_secrets_in_the_file_are_refused(tmp_path: Path) -> None:
    config = write(tmp_path / "node.yaml", {"admin_token": "oops"})
    with pytest.raises(ConfigError, match=r"environment only.*MAINSTREAM_ADMIN_TOKEN"):
        load_settings(config)
    assert "admin_token" not in settings_json_schema()["properties"]


def test_config_cli_validates_and_prints_the_schema(tmp_path: Path) -> None:
    runner = CliRunner()
    good = write(tmp_path / "good.yaml", {"data_dir": str(tmp_path), "node_name": "edge-1"})
    result = runner.invoke(cli, ["config", "validate", str(good)])
    assert result.exit_code == 0 and result.output.startswith("OK")

    bad = write(tmp_path / "bad.yaml", {"api": {"port": "eighty"}})
    result = runner.invoke(cli, ["config", "validate", str(bad)])
    assert result.exit_code == ConfigError.exit_code == 2
    assert result.stderr.splitlines() == [
        f"{bad}: api.port: Input should be a valid integer, unable to parse string as an integer"
    ]

    not_yaml = tmp_path / "broken.yaml"
    not_yaml.write_text("api: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML") as refused:
        load_settings(not_yaml)
    assert f"{not_yaml}, line 1, column 15: expected ',' or ']'" in str(refused.value)
    assert "<unicode string>" not in str(refused.value)

    schema = json.loads(runner.invoke(cli, ["config", "schema"]).output)
    assert schema["properties"]["api"]["$ref"].endswith("ApiSettings")
    assert schema["$defs"]["ApiSettings"]["properties"]["port"]["default"] == 8780


def test_scheduler_settings_and_the_old_solver_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    defaults = load_settings(environment=False)
    assert defaults.scheduler.solver == "auto" and defaults.scheduler.time_limit_s == 1.0
    config = tmp_path / "node.yaml"
    config.write_text(yaml.safe_dump({"runtime": {"solver": "greedy"}}), encoding="utf-8")
    with caplog.at_level("WARNING"):
        moved = load_settings(config, environment=False)
    assert moved.scheduler.solver == "greedy"  # a 0.1 config keeps meaning what it said
    assert "runtime.solver is now scheduler.solver" in caplog.text
    config.write_text(
        yaml.safe_dump({"runtime": {"solver": "greedy"}, "scheduler": {"solver": "milp"}}),
        encoding="utf-8",
    )
    assert load_settings(config, environment=False).scheduler.solver == "milp"
    config.write_text(yaml.safe_dump({"scheduler": {"time_limit_s": 0}}), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"scheduler\.time_limit_s"):
        load_settings(config, environment=False)


def test_config_validate_reads_the_file_as_serve_does_and_names_every_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One line per problem, `FILE: key.path: what`, through the command's real entry point
    (exit codes from the error tree); the environment counts only with --with-env."""
    import subprocess
    import sys

    config = write(
        tmp_path / "node.yaml",
        {
            "data_dir": str(tmp_path / "data"),
            "api": {"port": 99999, "metrics_access": "maybe"},
            "mqtt": {"enabled": True, "bogus": 1},
            "cameras": [
                {"id": "door", "url": "synthetic://?fps=5"},
                {"id": "yard", "url": "ftp://10.0.0.5/x"},
            ],
        },
    )
    checked = subprocess.run(
        [sys.executable, "-m", "mainstream.cli.main", "config", "validate", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 2 and checked.stdout == ""
    assert sorted(checked.stderr.splitlines()) == sorted(
        [
            f"{config}: api.port: Input should be less than or equal to 65535",
            f"{config}: api.metrics_access: Input should be 'token', 'loopback' or 'open'",
            f"{config}: mqtt.bogus: Extra inputs are not permitted",
            f"{config}: cameras[1]: url='ftp://10.0.0.5/x' is invalid: expected a supported "
            "scheme (a file path or file:// URL, rtsp://, http(s)://, usb:N, /dev/videoN, "
            "or synthetic://)",
        ]
    )

    good = write(
        tmp_path / "good.yaml",
        {
            "data_dir": str(tmp_path / "data"),
            "node_name": "edge-1",
            "default_camera": None,
            "cameras": [{"id": "door", "url": "synthetic://?fps=5"}],
        },
    )
    runner = CliRunner()
    result = runner.invoke(cli, ["config", "validate", str(good)])
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"OK {good}: node 'edge-1', role node, data in {tmp_path / 'data'}, cameras: door\n"
    )
    monkeypatch.setenv("MAINSTREAM_API__PORT", "0")  # what serve would read, and refuse
    assert runner.invoke(cli, ["config", "validate", str(good)]).exit_code == 0
    with_env = runner.invoke(cli, ["config", "validate", "--with-env", str(good)])
    assert with_env.exit_code == 2
    assert with_env.stderr == f"{good}: api.port: Input should be greater than or equal to 1\n"
    missing = runner.invoke(cli, ["config", "validate", str(tmp_path / "nothing.yaml")])
    assert (missing.exit_code, missing.stderr) == (
        2,
        f"{tmp_path / 'nothing.yaml'}: (file): no such file\n",
    )
