"""How the node compiles a camera's DAG for each engine."""

from __future__ import annotations

import pytest

from edge_runtime.dag import segment_model
from edge_runtime.deployer import segment_fusion

keras = pytest.importorskip("keras")
bases = pytest.importorskip("mainstream.core.bases")

CONFIG = bases.BaseConfig("mobilenet_v1", input_size=96, alpha=0.25)


def test_openvino_fuses_the_last_segment_only_with_light_heads() -> None:
    """An OpenVINO model copies its weights: a fused segment may copy at most a base's worth."""
    base = bases.build_base(CONFIG)
    cuts = bases.default_cut_points(CONFIG, base)
    fuse = segment_fusion("openvino", base)

    deep = segment_model(base, "input", cuts[-1])
    light = [bases.untrained_head(base, cuts[-1], seed) for seed in range(4)]
    assert fuse(deep, light) is not None

    assert fuse(deep, light[:1]) is None  # one call saved does not pay for a copy

    shallow = segment_model(base, "input", cuts[1])
    heavy = [bases.untrained_head(base, cuts[1], seed) for seed in range(2)]
    assert fuse(shallow, heavy) is None  # a second copy of the base and more

    # Keras models share their weights: always fused.
    assert segment_fusion("keras", base)(shallow, heavy) is not None
