"""An app package whose score moves from frame to frame, for tests that need event updates.

The tiny packages of fixtures.py score exactly 0.5 on every frame: the untrained stem's
activations are around 1e-13, so their heads see zeros. Event updates (a better peak) need a
score that moves, so this package's heads scale the pooled features up and normalise them
before the softmax layer; the score then follows the picture (by a few hundredths). The
package uses the base that `TinyPackages.register_base` installs.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.nodes import ALPHA, CUTS, INPUT_SIZE, QUALITY, TinyPackages, _manifest

MOVING_APP = "movers"


def build_moving_package(tiny: TinyPackages, folder: Path) -> Path:
    import keras

    from mainstream.core.bases import BaseConfig, build_base, cut_output_shape
    from mainstream.core.package import candidate_archive_name, write_package

    keras.utils.set_random_seed(5)
    config = BaseConfig("mobilenet_v1", input_size=INPUT_SIZE, alpha=ALPHA)
    base = build_base(config)
    base.load_weights(tiny.base_files[0])
    folder.mkdir(parents=True, exist_ok=True)
    heads: dict[str, Path] = {}
    for cut in CUTS:
        features = keras.Input(cut_output_shape(base, cut))
        pooled = keras.layers.GlobalAveragePooling2D()(features)
        scaled = keras.layers.Rescaling(1e12)(pooled)
        normalised = keras.layers.UnitNormalization()(scaled)
        scores = keras.layers.Dense(2, activation="softmax")(normalised)
        heads[cut] = folder / f"{MOVING_APP}-{cut}.keras"
        keras.Model(features, scores).save(heads[cut])
    manifest = _manifest(MOVING_APP, base, config, heads, QUALITY["trains"], None)
    assert manifest.base_model.weights_fingerprint == tiny.fingerprint
    files = {candidate_archive_name(cut): path for cut, path in heads.items()}
    return write_package(folder / f"{MOVING_APP}.mpkg", manifest, files)
