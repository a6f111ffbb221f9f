"""Cost profiles: stored per base and engine, measured again when the precision differs."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_runtime.deployer import BaseProvider, profile_key
from edge_runtime.engines import openvino_available
from mainstream.core.package import read_package
from mainstream.node.profiles import ProfileStore
from mainstream.node.registry import Registry
from scheduler.problem import CutPoint, Profile
from tests.support.nodes import TinyPackages

pytestmark = pytest.mark.slow


def test_a_profile_measured_in_one_precision_is_not_used_for_another(
    tmp_path: Path, tiny_packages: TinyPackages
) -> None:
    """OpenVINO in bf16 is another machine as far as costs go: the store measures again."""
    if not openvino_available():
        pytest.skip("openvino is not installed")
    from edge_runtime.profiler import machine_description

    tiny_packages.register_base(tmp_path)
    registry = Registry(tmp_path / "registry.db", tmp_path / "blobs")
    package = read_package(tiny_packages.trains, extract_to=tmp_path / "trains")
    # One candidate is enough to tell a re-measurement from the stored profile, and each cut
    # point costs OpenVINO conversions of its own.
    manifest = package.manifest.model_copy(update={"candidates": package.manifest.candidates[:1]})
    key = profile_key(manifest)
    cuts = ["input", *(c.cut_point for c in manifest.candidates)]
    stored_f32 = Profile(
        base_model=key,
        cut_points=[CutPoint(name=cut, cumulative_cost=float(i)) for i, cut in enumerate(cuts)],
        total_cost=10.0,
        engine="openvino",
        precision="f32",
        machine=machine_description(),
    )

    def store(precision: str) -> ProfileStore:
        bases = BaseProvider(tmp_path / "bases")
        return ProfileStore(registry, bases, "openvino", precision, repeats=1)  # type: ignore[arg-type]

    try:
        store("f32").save({key: stored_f32})
        assert store("f32").profile(key, [manifest], package.root) == stored_f32
        measured = store("bf16").profile(key, [manifest], package.root)
        assert (measured.model_extra or {})["precision"] == "bf16"
        assert measured.total_cost != stored_f32.total_cost  # a real measurement
        assert {cut.name for cut in measured.cut_points} == set(cuts)
        assert store("bf16").stored([key])[key] == measured
    finally:
        registry.close()
