"""Who may scrape `/metrics` (`api.metrics_access`, `api.metrics_token`), through the real app
over a real node: API tokens, the metrics-only token, loopback peers and an open endpoint."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from mainstream.node.node import Node
from mainstream.node.services import create_token
from mainstream.node.settings import ConfigError, load_settings
from tests.support.nodes import node_config

METRICS_SECRET = "prometheus-scrape-secret-0123456789"
LAN_PEER = ("192.0.2.10", 40000)
LOOPBACK_PEER = ("127.0.0.1", 40000)


MakeNode = Callable[..., Node]


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def make_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MakeNode]:
    """Build a node (not started: /metrics needs none) with these `api` settings."""
    nodes: list[Node] = []

    def make(access: str, metrics_token: str | None = None) -> Node:
        if metrics_token is not None:
            monkeypatch.setenv("MAINSTREAM_API__METRICS_TOKEN", metrics_token)
        config = node_config(tmp_path / f"data-{len(nodes)}", api={"metrics_access": access})
        node = Node(load_settings(None, **config))
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.stop()


def client(node: Node, peer: tuple[str, int]) -> TestClient:
    return TestClient(create_app(node, manage_node=False), client=peer)


def test_by_default_metrics_need_an_api_token_or_the_metrics_token(make_node: MakeNode) -> None:
    node = make_node("token", METRICS_SECRET)
    _, viewer = create_token(node.registry, "viewer", "viewer")
    for peer in (LAN_PEER, LOOPBACK_PEER):  # loopback is no exception in this mode
        scraper = client(node, peer)
        refused = scraper.get("/metrics")
        assert refused.status_code == 401 and refused.json()["error"] == "AuthError"
        assert scraper.get("/metrics", headers=bearer("mst_wrong")).status_code == 401
        assert scraper.get("/metrics", headers=bearer(METRICS_SECRET + "x")).status_code == 401
        answer = scraper.get("/metrics", headers=bearer(METRICS_SECRET))
        assert answer.status_code == 200 and "mainstream_node_info" in answer.text
        assert scraper.get("/metrics", headers=bearer(viewer)).status_code == 200
    # The metrics token opens /metrics and nothing else.
    scraper = client(node, LAN_PEER)
    assert scraper.get("/api/stats", headers=bearer(METRICS_SECRET)).status_code == 401
    assert scraper.get("/api/stats", headers=bearer(viewer)).status_code == 200


def test_loopback_access_opens_metrics_to_this_machine_only(make_node: MakeNode) -> None:
    node = make_node("loopback")
    for peer in (LOOPBACK_PEER, ("127.8.9.10", 1), ("::1", 1), ("::ffff:127.0.0.1", 1)):
        answer = client(node, peer).get("/metrics")
        assert answer.status_code == 200 and "mainstream_node_info" in answer.text, peer
        assert client(node, peer).get("/api/stats").status_code == 401  # only /metrics opens
    for peer in (LAN_PEER, ("::ffff:192.0.2.10", 1), ("fe80::1", 1), ("localhost", 1)):
        assert client(node, peer).get("/metrics").status_code == 401, peer
    _, viewer = create_token(node.registry, "viewer", "viewer")
    assert client(node, LAN_PEER).get("/metrics", headers=bearer(viewer)).status_code == 200


def test_open_access_needs_no_token_from_anywhere(make_node: MakeNode) -> None:
    node = make_node("open")
    assert client(node, LAN_PEER).get("/metrics").status_code == 200
    assert client(node, LAN_PEER).get("/api/stats").status_code == 401


def test_metrics_token_is_a_secret_from_the_environment_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "node.yaml"
    config.write_text(f"api:\n  metrics_token: {METRICS_SECRET}\n")
    with pytest.raises(ConfigError, match=r"api\.metrics_token: secrets are read from the env"):
        load_settings(config)
    monkeypatch.setenv("MAINSTREAM_API__METRICS_TOKEN", "short")
    with pytest.raises(ConfigError, match=r"api\.metrics_token: .*at least 16 characters"):
        load_settings(None)
    monkeypatch.setenv("MAINSTREAM_API__METRICS_TOKEN", METRICS_SECRET)
    settings = load_settings(None)
    assert METRICS_SECRET not in repr(settings) and METRICS_SECRET not in str(settings.api)
    assert METRICS_SECRET not in settings.model_dump_json()


def test_the_old_open_metrics_switch_still_opens_metrics(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "node.yaml"
    config.write_text("api:\n  open_metrics: true\n")
    assert load_settings(config, environment=False).api.metrics_access == "open"
    assert "api.open_metrics is now api.metrics_access (open)" in caplog.text
    config.write_text("api:\n  open_metrics: false\n")
    assert load_settings(config, environment=False).api.metrics_access == "token"
