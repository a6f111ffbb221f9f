"""The camera policy at the API: a refused camera is a 422 naming the rule, and changes nothing.

A node with no packages and no apps: it needs no TensorFlow, so this runs in seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from edge_runtime.camera import CameraConfig
from mainstream.node.node import Node
from mainstream.node.services import create_token
from mainstream.node.settings import Settings
from tests.support.nodes import node_config


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, Node, dict[str, str]]]:
    node = Node(Settings(**node_config(tmp_path, runtime={"replan": False})))
    with TestClient(create_app(node)) as client:
        _, admin = create_token(node.registry, "admin", "test admin")
        yield client, node, {"Authorization": f"Bearer {admin}"}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"url": "http://169.254.169.254/latest/meta-data/"}, "blocked network"),
        ({"url": "http://metadata.google.internal/computeMetadata/v1/"}, "metadata"),
        ({"url": "/etc/passwd"}, "allowed folder"),
        (
            {"url": "rtsp://10.0.0.5/s", "ffmpeg_options": {"protocol_whitelist": "file"}},
            "'protocol_whitelist' is not allowed",
        ),
    ],
)
def test_a_refused_camera_is_a_422_and_registers_nothing(
    api: tuple[TestClient, Node, dict[str, str]], body: dict[str, object], reason: str
) -> None:
    client, node, admin = api
    answer = client.post("/api/cameras", json={"id": "evil", **body}, headers=admin)
    assert answer.status_code == 422, answer.text
    assert reason in answer.json()["detail"]
    assert client.get("/api/cameras/evil", headers=admin).status_code == 404
    assert not node.registry.has_camera("evil") and "evil" not in node.cameras


def test_a_refused_change_leaves_the_camera_as_it_was(
    api: tuple[TestClient, Node, dict[str, str]], tmp_path: Path
) -> None:
    client, node, admin = api
    before = client.get("/api/cameras/synthetic", headers=admin).json()["camera"]
    for change in (
        {"url": "http://[fd00:ec2::254]/latest/meta-data/"},
        {"ffmpeg_options": {"headers": "X-Evil: 1"}},
    ):
        answer = client.patch("/api/cameras/synthetic", json=change, headers=admin)
        assert answer.status_code == 422, answer.text
    replaced = client.put(
        "/api/cameras/synthetic",
        json={"id": "synthetic", "url": str(tmp_path / "elsewhere.mp4")},
        headers=admin,
    )
    assert replaced.status_code == 422 and "allowed folder" in replaced.json()["detail"]
    assert client.get("/api/cameras/synthetic", headers=admin).json()["camera"] == before
    assert node.cameras.get("synthetic").config.url == before["config"]["url"]


def test_a_file_in_the_data_dirs_media_folder_is_accepted(
    api: tuple[TestClient, Node, dict[str, str]], tmp_path: Path
) -> None:
    client, _, admin = api
    video = tmp_path / "media" / "yard.mp4"
    answer = client.post(
        "/api/cameras", json={"id": "yard", "url": str(video), "enabled": False}, headers=admin
    )
    assert answer.status_code == 201, answer.text


def test_a_registered_camera_the_policy_now_refuses_is_not_started(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    node = Node(Settings(**node_config(tmp_path, runtime={"replan": False})))
    legacy = CameraConfig(id="legacy", url="http://169.254.169.254/latest/meta-data/")
    with node.registry.transaction() as transaction:  # as an older version stored it
        transaction.add_camera(legacy)
    with TestClient(create_app(node)):
        assert "synthetic" in node.cameras and "legacy" not in node.cameras
    assert any(
        "legacy is refused by camera_policy" in record.getMessage() for record in caplog.records
    )
