"""Real, tiny M-Packages for the registry, services and API tests.

One MobileNet (alpha 0.25, 96 px, random weights) is registered as a base with
`mainstream.core.bases.save_base`; each app's candidates are real Keras suffixes of it
(`split_model` + global average pooling + a softmax layer), untrained, written with
`write_package` with the base weights bundled. The session fixture `tiny_packages`
(tests/conftest.py) builds them once; the helpers here start and drive real nodes.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from mainstream.core.manifest import (
    AppInfo,
    CandidateInfo,
    EventStats,
    Manifest,
    TrainingInfo,
)
from mainstream.core.package import candidate_archive_name, sha256_file, write_package
from scheduler.problem import Profile

INPUT_SIZE = 96
ALPHA = 0.25
CUTS = ("conv_pw_11_relu", "conv_pw_13_relu")
BASE_FILE = "base/weights.h5"
# (recall, false positive rate) per cut: deeper cuts are a little worse, as after training.
QUALITY = {
    "trains": {"conv_pw_11_relu": (0.92, 0.04), "conv_pw_13_relu": (0.85, 0.08)},
    "buses": {"conv_pw_11_relu": (0.88, 0.05), "conv_pw_13_relu": (0.80, 0.10)},
}
UNKNOWN_FINGERPRINT = "ab" * 32


@dataclass(frozen=True)
class TinyPackages:
    """Package files and the base they were trained from."""

    folder: Path
    fingerprint: str
    base_files: tuple[Path, Path]  # <fingerprint>.weights.h5 and <fingerprint>.json
    trains: Path
    trains_v2: Path  # same app, other figures: a second version
    buses: Path
    unknown_base: Path  # its base is neither registered nor bundled
    wrong_bundle: Path  # bundles weights whose fingerprint is not the one it claims
    weak: Path  # sound, but its deep candidate never fires (recall 0)

    def register_base(self, data_dir: Path) -> None:
        """Put the base into `<data_dir>/bases` as `save_base` wrote it."""
        bases = data_dir / "bases"
        bases.mkdir(parents=True, exist_ok=True)
        for path in self.base_files:
            shutil.copy2(path, bases / path.name)


def _manifest(
    app: str,
    model: Any,
    config: Any,
    suffixes: dict[str, Path],
    quality: dict[str, tuple[float, float]],
    base_weights: Path | None,
    fingerprint: str | None = None,
) -> Manifest:
    from mainstream.core.bases import base_info, cut_output_shape, frozen_layer_count

    info = base_info(config, model)
    if fingerprint is not None:
        info = info.model_copy(update={"weights_fingerprint": fingerprint})
    candidates = []
    for cut, path in suffixes.items():
        recall, false_positive_rate = quality[cut]
        candidates.append(
            CandidateInfo(
                cut_point=cut,
                frozen_layers=frozen_layer_count(model, cut),
                recall=recall,
                false_positive_rate=false_positive_rate,
                accuracy=(recall + 1 - false_positive_rate) / 2,
                file=candidate_archive_name(cut),
                sha256=sha256_file(path),
                input_shape=cut_output_shape(model, cut),
            )
        )
    return Manifest(
        app=AppInfo(name=app, classes=["background", app], positive_class=app),
        base_model=info,
        event_stats=EventStats(
            event_length_s=2.0,
            event_frequency=0.1,
            correlation=0.5,
            camera_fps=10,
            how_measured="test fixture",
        ),
        candidates=candidates,
        training=TrainingInfo(epochs=0, strategy="untrained test fixture"),
        base_weights=None
        if base_weights is None
        else {"file": BASE_FILE, "sha256": sha256_file(base_weights)},
    )


def build_tiny_packages(folder: Path) -> TinyPackages:
    import keras

    from mainstream.core.bases import BaseConfig, build_base, save_base, split_model

    keras.utils.set_random_seed(11)
    config = BaseConfig("mobilenet_v1", input_size=INPUT_SIZE, alpha=ALPHA)
    model = build_base(config)
    bases_dir = folder / "bases"
    info = save_base(model, config, bases_dir)
    fingerprint = info.weights_fingerprint
    weights = bases_dir / f"{fingerprint}.weights.h5"

    suffixes: dict[str, Path] = {}
    for cut in CUTS:
        _, suffix = split_model(model, cut)
        pooled = keras.layers.GlobalAveragePooling2D()(suffix.output)
        scores = keras.layers.Dense(2, activation="softmax")(pooled)
        path = folder / f"{cut}.keras"
        keras.Model(suffix.input, scores).save(path)
        suffixes[cut] = path

    def package(
        name: str,
        app: str,
        quality: dict[str, tuple[float, float]],
        bundle: Path | None = weights,
        fingerprint_claim: str | None = None,
    ) -> Path:
        manifest = _manifest(app, model, config, suffixes, quality, bundle, fingerprint_claim)
        files: dict[str, Path] = {candidate_archive_name(c): p for c, p in suffixes.items()}
        if bundle is not None:
            files[BASE_FILE] = bundle
        return write_package(folder / f"{name}.mpkg", manifest, files)

    better = {cut: (min(1.0, r + 0.03), f) for cut, (r, f) in QUALITY["trains"].items()}
    other_weights = folder / "other.weights.h5"
    other = build_base(config)  # fresh random weights: another fingerprint
    other.save_weights(other_weights)
    return TinyPackages(
        folder=folder,
        fingerprint=fingerprint,
        base_files=(weights, bases_dir / f"{fingerprint}.json"),
        trains=package("trains", "trains", QUALITY["trains"]),
        trains_v2=package("trains-v2", "trains", better),
        buses=package("buses", "buses", QUALITY["buses"]),
        unknown_base=package("unknown-base", "trams", QUALITY["trains"], None, UNKNOWN_FINGERPRINT),
        wrong_bundle=package(
            "wrong-bundle", "trams", QUALITY["trains"], other_weights, UNKNOWN_FINGERPRINT
        ),
        weak=package("weak", "vans", {**QUALITY["trains"], CUTS[-1]: (0.0, 0.0)}),
    )


def measure_tiny_profile(tiny: TinyPackages, data_dir: Path) -> Profile:
    """The cost profile of the tiny packages' base, measured by a real node on this machine
    (planning an app measures it); other nodes may start with it stored, as after a restart."""
    from mainstream.node.node import Node
    from mainstream.node.services import AppCreate, Services
    from mainstream.node.settings import Settings

    tiny.register_base(data_dir)
    node = Node(Settings(**node_config(data_dir)))
    node.start()
    try:
        services = Services(node)
        services.packages.upload(tiny.trains)
        services.apps.create(AppCreate(name="trains"))
        profile = node.registry.get_profile(f"mobilenet_v1@{tiny.fingerprint[:12]}", "keras")
        assert profile is not None
        assert {cut.name for cut in profile.cut_points} == {"input", *CUTS}
        return profile
    finally:
        node.stop()


def node_config(data_dir: Path, **overrides: Any) -> dict[str, Any]:
    """A node config for tests: quick profiles, a fixed budget, the synthetic camera."""
    config: dict[str, Any] = {
        "data_dir": str(data_dir),
        "node_name": "test-node",
        # Keras: the engine is not what these tests are about, and OpenVINO (the `auto` choice
        # where it is installed) converts every model first.
        "runtime": {"budget_ms_per_s": 400.0, "profile_repeats": 3, "engine": "keras"},
        "default_camera": {"id": "synthetic", "url": "synthetic://?fps=10&size=160x120"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


WaitCondition = Callable[[], bool]


def wait_for(condition: WaitCondition, timeout: float = 20.0, poll: float = 0.1) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll)
    return condition()


def _rewrite(
    source: Path,
    target: Path,
    replace: dict[str, bytes] | None = None,
    add: dict[str, bytes] | None = None,
) -> Path:
    """A copy of a zip archive with members replaced or added."""
    import zipfile

    replace, add = replace or {}, add or {}
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as copy:
        for info in original.infolist():
            copy.writestr(info, replace.get(info.filename, original.read(info)))
        for name, data in add.items():
            copy.writestr(name, data)
    return target


def bad_packages(tiny: TinyPackages, folder: Path) -> dict[str, tuple[Path, str]]:
    """Uploads a node must refuse, with a pattern of the reason it must give."""
    import zipfile

    folder.mkdir(parents=True, exist_ok=True)
    not_a_zip = folder / "not-a-zip.mpkg"
    not_a_zip.write_bytes(b"this is plain text, not an archive")
    with zipfile.ZipFile(tiny.trains) as archive:
        other_model = archive.read("candidates/conv_pw_11_relu.keras")
    return {
        "not a zip": (not_a_zip, "not a zip archive"),
        "zip slip": (
            _rewrite(tiny.trains, folder / "zip-slip.mpkg", add={"../../evil.sh": b"rm -rf /"}),
            "unsafe member name",
        ),
        "wrong checksum": (
            _rewrite(
                tiny.trains,
                folder / "wrong-checksum.mpkg",
                replace={"candidates/conv_pw_13_relu.keras": other_model},
            ),
            "checksum mismatch",
        ),
        "unknown base": (tiny.unknown_base, "unknown base"),
        "bundled base does not match": (tiny.wrong_bundle, "bundled base weights have"),
    }


def hardened_bad_packages(tiny: TinyPackages, folder: Path) -> dict[str, tuple[Path, str]]:
    """Uploads that pass the checksum checks (a tamperer rewrites the manifest's checksums too)
    but that a node must still refuse, with a pattern of the reason it must give."""
    import json
    import pickle
    import zipfile

    from mainstream.core.package import inspect_package

    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(tiny.trains) as archive:
        candidates = {name: archive.read(name) for name in archive.namelist() if ".keras" in name}
        document = json.loads(archive.read("manifest.json"))

    def rebundled(name: str, weights: Path) -> Path:
        """`trains` as app `trams`, bundling `weights` under the registered base's fingerprint."""
        manifest = inspect_package(tiny.trains).manifest
        manifest = manifest.model_copy(
            update={
                "app": manifest.app.model_copy(update={"name": "trams"}),
                "base_weights": {"file": BASE_FILE, "sha256": sha256_file(weights)},
                "checksums": {},
            }
        )
        files: dict[str, Path] = {BASE_FILE: weights}
        for member, data in candidates.items():
            local = folder / f"{name}-{Path(member).name}"
            local.write_bytes(data)
            files[member] = local
        return write_package(folder / f"{name}.mpkg", manifest, files)

    def with_cut_point(name: str, cut_point: str) -> Path:
        edited = json.loads(json.dumps(document))
        edited["candidates"][0]["cut_point"] = cut_point
        return _rewrite(
            tiny.trains,
            folder / f"{name}.mpkg",
            replace={"manifest.json": json.dumps(edited).encode()},
        )

    pickled = folder / "pickled.h5"
    pickled.write_bytes(pickle.dumps({"weights": [0.0] * 16}))
    return {
        "a pickle as bundled base weights": (
            rebundled("pickled-base", pickled),
            r"bundled base weights 'weights\.h5' are not an HDF5 weights file",
        ),
        "other weights under a registered fingerprint": (
            rebundled("other-base", tiny.folder / "other.weights.h5"),
            r"bundled base weights have fingerprint .* but the manifest says",
        ),
        "a cut point that climbs out": (
            with_cut_point("climbing-cut", "../../x"),
            r"candidates\[0\]\.cut_point: String should match pattern",
        ),
        "a cut point the base does not have": (
            with_cut_point("unknown-cut", "block_1_add"),
            r"cut point 'block_1_add' is not a cut point of the base mobilenet_v1",
        ),
    }


# ---------------------------------------------------------------------------------------------
# A real `mainstream serve` process (end-to-end tests)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def mainstream(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mainstream.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@dataclass
class Daemon:
    """One `mainstream serve` process and a client for it."""

    config: Path
    log: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "mainstream.cli.main",
                    "serve",
                    "--config",
                    str(self.config),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        def live() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited early:\n{self.log_tail()}")
            try:
                return httpx.get(f"{self.url}/api/health/live", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_for(live, timeout=90, poll=0.25), self.log_tail()

    def stop(self) -> bool:
        """SIGTERM, then True when the node shut down cleanly (uvicorn re-raises the signal
        after its graceful shutdown, so the exit status is 0 or -SIGTERM)."""
        assert self.process is not None
        shutdowns = self.log_tail().count("Application shutdown complete")
        self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(timeout=30)
        finally:
            if self.process.poll() is None:
                self.process.kill()
        clean = self.log_tail().count("Application shutdown complete") == shutdowns + 1
        return clean and status in (0, -signal.SIGTERM)

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


@contextmanager
def served_in_thread(app: Any) -> Iterator[str]:
    """Serve an ASGI app over real HTTP from a thread of this process; yields its base URL.

    Cheaper than a `mainstream serve` process where the test does not need one (the models
    this process has loaded are reused); the app's lifespan runs as in `serve`."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    )
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: server.started or not thread.is_alive(), timeout=60)
        assert server.started, "the server did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def cli_token(config: Path, role: str) -> str:
    """A new token made by `mainstream token create` against the node's config."""
    created = mainstream("token", "create", "--role", role, "--config", str(config))
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert secret.startswith("mst_") and "\n" not in secret
    return secret


def create_token(config: Path, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {cli_token(config, role)}"}


def upload(client: httpx.Client, headers: dict[str, str], content: bytes) -> httpx.Response:
    return client.post(
        "/api/packages", files={"file": ("app.mpkg", content)}, headers=headers, timeout=120
    )
