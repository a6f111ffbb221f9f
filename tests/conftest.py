"""Session fixtures every test package shares (helpers live in tests/support/)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduler.problem import Profile
from tests.support.live_packages import build_moving_package
from tests.support.mqtt import Broker
from tests.support.nodes import TinyPackages, build_tiny_packages, measure_tiny_profile


@pytest.fixture(scope="session")
def tiny_packages(tmp_path_factory: pytest.TempPathFactory) -> TinyPackages:
    """Real tiny packages on one registered base (tests/support/nodes.py), built once."""
    return build_tiny_packages(tmp_path_factory.mktemp("tiny-packages"))


@pytest.fixture(scope="session")
def measured_profile(
    tiny_packages: TinyPackages, tmp_path_factory: pytest.TempPathFactory
) -> Profile:
    """The tiny base's cost profile on this machine, measured once by a real node; nodes that
    start with it stored skip measuring it (as after a restart)."""
    return measure_tiny_profile(tiny_packages, tmp_path_factory.mktemp("profile-node"))


@pytest.fixture(scope="session")
def moving_package(tmp_path_factory: pytest.TempPathFactory, tiny_packages: TinyPackages) -> Path:
    """A package whose app fires on the synthetic camera's moving shapes, built once."""
    return build_moving_package(tiny_packages, tmp_path_factory.mktemp("moving-package"))


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A real mosquitto on a free loopback port, for this test only (tests that use it are
    marked `needs_mosquitto`)."""
    folder = tmp_path / "broker"
    folder.mkdir()
    server = Broker(folder)
    server.start()
    yield server
    server.stop(kill=True)
