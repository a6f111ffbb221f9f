"""Soak: a live `mainstream serve` under load, faults and hostile input, one table.

Each row is one fault or input from the hardening review: what was expected, what happened,
and whether it held, with the figures. Everything runs on loopback against a real node
process with one app on a synthetic camera. The app runs a stand-in package (a random
MobileNet α 0.25 base at 96 px and untrained heads): the soak is about the daemon, not the
model.

The API-load row runs the same 50 clients twice in one run, side by side: with
`api.max_concurrent_reads` at 64 (every read at once, as before the read gate) and at its
default. It holds when the analysed rate under load stays within 5 % of the plan.

A central directory that lies about sizes is kept by tests (tests/mainstream/core/
test_package.py, tests/api/test_trainer_worker.py).

Run: `python bench/soak.py` (about 2.5 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# Run as `python bench/soak.py`, this folder comes first on the import path and its sibling
# `scheduler.py` / `trainer.py` would hide the packages of the same name.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]

import httpx  # noqa: E402
import yaml  # noqa: E402

MiB = 1024 * 1024
STORED_EVENTS = 1200  # what `GET /api/events?limit=1000` reads
CLIENTS = 50
DRY_RUN_CLIENTS = 20
LOAD_SECONDS = 10.0
TOLERANCE = 0.05  # analysed rate within 5 % of plan


@dataclass
class Row:
    fault: str
    expected: str
    happened: str
    held: bool


def stand_in_package(folder: Path) -> tuple[Path, Path]:
    """A package with a random base and untrained heads, and the base's folder."""
    import keras

    from mainstream.core.bases import (
        BaseConfig,
        base_info,
        build_base,
        cut_output_shape,
        frozen_layer_count,
        save_base,
        split_model,
    )
    from mainstream.core.manifest import (
        AppInfo,
        CandidateInfo,
        EventStats,
        Manifest,
        TrainingInfo,
    )
    from mainstream.core.package import candidate_archive_name, sha256_file, write_package

    keras.utils.set_random_seed(5)
    config = BaseConfig("mobilenet_v1", input_size=96, alpha=0.25)
    model = build_base(config)
    bases = folder / "bases"
    save_base(model, config, bases)
    candidates, files = [], {}
    for cut, (recall, fpr) in {
        "conv_pw_11_relu": (0.92, 0.04),
        "conv_pw_13_relu": (0.85, 0.08),
    }.items():
        _, suffix = split_model(model, cut)
        pooled = keras.layers.GlobalAveragePooling2D()(suffix.output)
        head = keras.Model(suffix.input, keras.layers.Dense(2, activation="softmax")(pooled))
        path = folder / f"{cut}.keras"
        head.save(path)
        files[candidate_archive_name(cut)] = path
        candidates.append(
            CandidateInfo(
                cut_point=cut,
                frozen_layers=frozen_layer_count(model, cut),
                recall=recall,
                false_positive_rate=fpr,
                accuracy=(recall + 1 - fpr) / 2,
                file=candidate_archive_name(cut),
                sha256=sha256_file(path),
                input_shape=cut_output_shape(model, cut),
            )
        )
    manifest = Manifest(
        app=AppInfo(name="trains", classes=["background", "trains"], positive_class="trains"),
        base_model=base_info(config, model),
        # Short, correlated events: the plan needs a few frames per second.
        event_stats=EventStats(
            event_length_s=0.4,
            event_frequency=0.1,
            correlation=0.95,
            camera_fps=10,
            how_measured="soak stand-in",
        ),
        candidates=candidates,
        training=TrainingInfo(epochs=0, strategy="untrained soak stand-in"),
    )
    return write_package(folder / "trains.mpkg", manifest, files), bases


def stored_events(data_dir: Path) -> None:
    from edge_runtime.detector import EventRecord
    from edge_runtime.event_store import EventStore

    store = EventStore(data_dir / "events.db")
    start = time.time() - 2 * STORED_EVENTS
    try:
        for number in range(STORED_EVENTS):
            begin = start + number
            store.save(
                EventRecord(
                    id=f"soak{number:05d}",
                    app="trains",
                    camera="synthetic",
                    start_time=begin,
                    end_time=begin + 1,
                    peak_score=0.9,
                    peak_frame=number,
                    frames_analysed=10,
                    frames_fired=5,
                    last_time=begin + 1,
                    ended_by="quiet",
                )
            )
    finally:
        store.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Node:
    """One `mainstream serve` with the stand-in app deployed."""

    def __init__(self, folder: Path, package: Path, bases: Path, reads: int) -> None:
        self.folder = folder
        self.data = folder / "data"
        shutil.copytree(bases, self.data / "bases")
        stored_events(self.data)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "data_dir": str(self.data),
            "node_name": "soak",
            "api": {"port": self.port, "max_concurrent_reads": reads},
            "runtime": {"budget_ms_per_s": 400.0, "profile_repeats": 3},
            "default_camera": {"id": "synthetic", "url": "synthetic://?fps=10&size=320x240"},
        }
        self.config = folder / "node.yaml"
        self.config.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.log = folder / "serve.log"
        self.started = time.time()
        self.process = self._start()
        self.token = self._cli("token", "create", "--role", "admin").strip()
        self.headers = {"Authorization": f"Bearer {self.token}"}
        self.client = httpx.Client(base_url=self.url, headers=self.headers, timeout=60)
        uploaded = self.client.post(
            "/api/packages", files={"file": ("trains.mpkg", package.read_bytes())}
        )
        uploaded.raise_for_status()
        self.client.post("/api/apps", json={"name": "trains"}).raise_for_status()

    def _start(self) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "mainstream.cli.main", "serve", "--config"]
        with open(self.log, "ab") as log:
            process = subprocess.Popen(
                [*command, str(self.config)], stdout=log, stderr=subprocess.STDOUT
            )
        self.process = process
        self._wait_live()
        return process

    def kill_and_restart(self) -> None:
        """SIGKILL, as a power cut or the OOM killer would, then start again."""
        self.process.kill()
        self.process.wait(timeout=30)
        self._start()

    def _cli(self, *args: str) -> str:
        completed = subprocess.run(
            [sys.executable, "-m", "mainstream.cli.main", *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            check=True,
        )
        return completed.stdout

    def _wait_live(self) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"serve exited:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/api/health/live", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise SystemExit("serve did not come up in 120 s")

    def analysed(self) -> tuple[int, float]:
        """Frames the app analysed so far, and its planned rate."""
        stats = self.client.get("/api/stats").json()
        app = next(iter(stats["apps"].values()))
        return int(app["frames_analysed"]), float(app["planned_fps"] or 0.0)

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def rate_over(node: Node, seconds: float) -> float:
    first, _ = node.analysed()
    started = time.monotonic()
    time.sleep(seconds)
    last, _ = node.analysed()
    return (last - first) / (time.monotonic() - started)


Request = Callable[[httpx.Client], httpx.Response]


def read_events(client: httpx.Client) -> httpx.Response:
    return client.get("/api/events", params={"limit": 1000})


def dry_run(client: httpx.Client) -> httpx.Response:
    return client.post(
        "/api/schedule/dry-run", json={"add_apps": [{"name": "what-if", "package": "trains"}]}
    )


def under_load(node: Node, request: Request, clients: int) -> dict[str, float]:
    """The app's analysed rate idle and while `clients` send `request` in a loop."""
    _, planned = node.analysed()
    idle = rate_over(node, LOAD_SECONDS)
    stop = threading.Event()
    latencies: list[float] = []

    def client_loop() -> None:
        with httpx.Client(base_url=node.url, headers=node.headers, timeout=120) as client:
            while not stop.is_set():
                started = time.monotonic()
                request(client).raise_for_status()
                latencies.append(time.monotonic() - started)

    threads = [threading.Thread(target=client_loop, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    loaded = rate_over(node, LOAD_SECONDS)
    stop.set()
    for thread in threads:
        thread.join(timeout=120)
    return {
        "planned": planned,
        "idle": idle,
        "loaded": loaded,
        "requests": float(len(latencies)),
        "p50": statistics.median(latencies) if latencies else float("nan"),
    }


def raw_request(node: Node, head: bytes, body: bytes) -> tuple[int, float]:
    """Send a request head and a few body bytes; the status and seconds until the answer."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", node.port), timeout=30) as connection:
        connection.sendall(head + body)
        answer = connection.recv(65536)
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
    return status, time.monotonic() - started


def hostile_rows(node: Node) -> list[Row]:
    rows = []
    head = (
        b"POST /api/packages HTTP/1.1\r\nHost: soak\r\nContent-Type: application/octet-stream\r\n"
        + f"Content-Length: {200 * MiB}\r\n\r\n".encode()
    )
    status, seconds = raw_request(node, head, b"PK")
    rows.append(
        Row(
            "200 MB body, no token",
            "refused before the body is read",
            f"{status} after {seconds * 1000:.0f} ms, 2 bytes of the body sent",
            status in (401, 413) and seconds < 2,
        )
    )
    ticket_secret = node.token
    with httpx.stream("GET", f"{node.url}/api/live", params={"token": ticket_secret}, timeout=5):
        pass  # opened and closed: the access log has the line
    time.sleep(0.5)
    leaked = ticket_secret in node.log.read_text(errors="replace")
    rows.append(
        Row(
            "`?token=` on the live stream",
            "no secret in any log line",
            "token found in the log" if leaked else "token absent from the log",
            not leaked,
        )
    )
    many = [{"name": f"w{number}"} for number in range(2000)]
    started = time.monotonic()
    answer = node.client.post("/api/schedule/dry-run", json={"add_apps": many})
    seconds = time.monotonic() - started
    rows.append(
        Row(
            "dry run adding 2,000 apps",
            "bounded size, no change lock held",
            f"{answer.status_code} after {seconds * 1000:.0f} ms",
            answer.status_code == 422 and seconds < 2,
        )
    )
    before = len(node.client.get("/api/cameras").json())
    answer = node.client.post(
        "/api/cameras", json={"id": "meta", "url": "http://169.254.169.254/latest/meta-data"}
    )
    after = len(node.client.get("/api/cameras").json())
    rows.append(
        Row(
            "camera URL http://169.254.169.254/...",
            "refused, nothing registered",
            f"{answer.status_code}, cameras {before} -> {after}",
            answer.status_code == 422 and before == after,
        )
    )
    answer = node.client.post(
        "/api/schedule/dry-run",
        content=b'{"budget": Infinity}',
        headers={"Content-Type": "application/json"},
    )
    rows.append(
        Row(
            "budget Infinity",
            "refused (422)",
            str(answer.status_code),
            answer.status_code == 422,
        )
    )
    return rows


def hostile_package(source: Path, target: Path, kind: str) -> Path:
    """The stand-in package made hostile: a cut point that climbs out of the extraction
    folder, or a zip bomb (20 MiB of zeros that deflate about a thousandfold)."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as copy:
        for info in original.infolist():
            data = original.read(info)
            if kind == "climbing cut point" and info.filename == "manifest.json":
                document = json.loads(data)
                document["candidates"][0]["cut_point"] = "../../x"
                data = json.dumps(document).encode()
            copy.writestr(info, data)
        if kind == "zip bomb":
            copy.writestr("candidates/bomb.keras", bytes(20 * MiB), zipfile.ZIP_DEFLATED)
    return target


def tampered_package(source: Path, target: Path, kind: str) -> Path:
    """The stand-in package rebuilt by a tamperer who also rewrites the manifest's checksums,
    so that only the node's own checks can catch it."""
    import pickle

    from mainstream.core.package import inspect_package, write_package

    manifest = inspect_package(source).manifest
    folder = target.with_suffix("")
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    with zipfile.ZipFile(source) as archive:
        for name in archive.namelist():
            if name.endswith(".keras"):
                data = archive.read(name)
                if kind != "a pickle as the bundled base weights":
                    data = _edit_keras_config(data, kind)
                local = folder / Path(name).name
                local.write_bytes(data)
                files[name] = local
    candidates = [
        candidate.model_copy(update={"sha256": sha256_of(files[candidate.file])})
        for candidate in manifest.candidates
    ]
    update: dict[str, object] = {"checksums": {}, "candidates": candidates}
    if kind == "a pickle as the bundled base weights":
        pickled = folder / "weights.h5"
        pickled.write_bytes(pickle.dumps({"weights": [0.0] * 16}))
        files["base/weights.h5"] = pickled
        update["base_weights"] = {"file": "base/weights.h5", "sha256": sha256_of(pickled)}
    return write_package(target, manifest.model_copy(update=update), files)


def _edit_keras_config(data: bytes, kind: str) -> bytes:
    """A .keras archive whose head layer declares two million units, or a Lambda layer."""
    source = zipfile.ZipFile(io.BytesIO(data))
    config = json.loads(source.read("config.json"))
    head = config["config"]["layers"][-1]
    if kind == "a head declaring Dense(units=2e6)":
        head["config"]["units"] = 2_000_000
    else:  # a layer class outside the allow-list, with code in its config
        head["class_name"] = "Lambda"
        head["config"]["function"] = {"class_name": "__lambda__", "config": {"code": "x"}}
    output = io.BytesIO()
    with zipfile.ZipFile(output, "w") as copy:
        for name in source.namelist():
            copy.writestr(name, json.dumps(config) if name == "config.json" else source.read(name))
    return output.getvalue()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def package_rows(node: Node, package: Path) -> list[Row]:
    rows = []
    kinds = [
        "climbing cut point",
        "zip bomb",
        "a pickle as the bundled base weights",
        "a head declaring Dense(units=2e6)",
        "a Lambda layer",
    ]
    for number, kind in enumerate(kinds):
        target = node.folder / f"hostile-{number}.mpkg"
        if kind in ("climbing cut point", "zip bomb"):
            bad = hostile_package(package, target, kind)
        else:
            bad = tampered_package(package, target, kind)
        listed = node.client.get("/api/packages").json()
        started = time.monotonic()
        answer = node.client.post("/api/packages", files={"file": (bad.name, bad.read_bytes())})
        seconds = time.monotonic() - started
        unchanged = node.client.get("/api/packages").json() == listed
        reason = answer.json().get("detail", "") if answer.status_code >= 400 else ""
        rows.append(
            Row(
                f"package upload: {kind}",
                "refused at upload, nothing stored",
                f"{answer.status_code} after {seconds * 1000:.0f} ms ({reason[:70]}); "
                f"packages unchanged: {unchanged}",
                400 <= answer.status_code < 500 and unchanged,
            )
        )
    # A client that goes away mid-upload: a 4xx-class log line, no traceback, nothing kept.
    staging = node.data / "tmp"
    before = sorted(staging.rglob("*")) if staging.exists() else []
    head = (
        b"POST /api/packages HTTP/1.1\r\nHost: soak\r\n"
        + f"Authorization: Bearer {node.token}\r\n".encode()
        + b"Content-Type: application/octet-stream\r\n"
        + f"Content-Length: {4 * MiB}\r\n\r\n".encode()
    )
    with socket.create_connection(("127.0.0.1", node.port), timeout=30) as connection:
        connection.sendall(head + bytes(MiB))
    time.sleep(1.0)
    log = node.log.read_text(errors="replace")
    after = sorted(staging.rglob("*")) if staging.exists() else []
    logged = "client disconnected" in log and "Traceback" not in log
    rows.append(
        Row(
            "client disconnects mid-upload",
            "a 4xx-class log line, staging cleaned",
            f"{'logged as a client disconnect' if logged else 'no such log line'}; "
            f"staging {'clean' if after == before else 'left files'}",
            logged and after == before,
        )
    )
    return rows


def crash_row(node: Node) -> Row:
    """An event open when the node is SIGKILLed is closed on the next start, nothing lost."""
    node.client.patch("/api/apps/trains", json={"threshold": 0.0, "quiet_time_s": 600})
    since = node.started  # the stored history is older; an event may be open already
    deadline = time.monotonic() + 60
    opened = None
    while opened is None and time.monotonic() < deadline:
        page = node.client.get("/api/events", params={"app": "trains", "since": since}).json()
        opened = next((event for event in page["items"] if event["end_time"] is None), None)
        time.sleep(0.5)
    if opened is None:
        return Row("SIGKILL during an open event", "closed on restart", "no event opened", False)
    stored_before = node.client.get("/api/stats").json()["events_stored"]
    node.kill_and_restart()
    after = node.client.get(f"/api/events/{opened['id']}").json()
    stored_after = node.client.get("/api/stats").json()["events_stored"]
    closed = after.get("end_time") is not None and after.get("ended_by") == "restart"
    return Row(
        "SIGKILL during an open event",
        "closed on restart (`ended_by: restart`), nothing lost",
        f"ended_by {after.get('ended_by')!r}, end time "
        f"{'set' if after.get('end_time') else 'missing'}, events stored {stored_before} -> "
        f"{stored_after}",
        closed and stored_after >= stored_before,
    )


def load_row(what: str, before: dict[str, float], after: dict[str, float]) -> Row:
    def describe(figures: dict[str, float]) -> str:
        return (
            f"{figures['loaded']:.2f} fps under load (idle {figures['idle']:.2f}, plan "
            f"{figures['planned']:.2f}), {figures['requests']:.0f} requests, p50 "
            f"{figures['p50']:.2f} s"
        )

    held = (
        after["requests"] > 0
        and after["planned"] > 0
        and after["loaded"] >= (1 - TOLERANCE) * after["planned"]
    )
    return Row(
        what,
        "detection keeps its planned rate",
        f"all at once: {describe(before)}; read gate (default): {describe(after)}",
        held,
    )


def print_table(rows: list[Row]) -> None:
    print("| fault or input | expected | happened | held |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row.fault} | {row.expected} | {row.happened} | {'yes' if row.held else 'NO'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="Print the rows as JSON too.")
    arguments = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="mainstream-soak-"))
    try:
        package, bases = stand_in_package(folder / "package")
        figures = {}
        rows: list[Row] = []
        for reads in (64, 2):
            node = Node(folder / f"node-{reads}", package, bases, reads)
            try:
                time.sleep(6)  # past the first plan and the warm-up
                figures[reads] = under_load(node, read_events, CLIENTS)
                figures[-reads] = under_load(node, dry_run, DRY_RUN_CLIENTS)
                if reads == 2:
                    rows.extend(hostile_rows(node))
                    rows.extend(package_rows(node, package))
                    rows.append(crash_row(node))
            finally:
                node.stop()
        rows.insert(
            0,
            load_row(
                f"{CLIENTS} clients on GET /api/events?limit=1000 for {LOAD_SECONDS:g} s",
                figures[64],
                figures[2],
            ),
        )
        rows.insert(
            1,
            load_row(
                f"{DRY_RUN_CLIENTS} clients on POST /api/schedule/dry-run for {LOAD_SECONDS:g} s",
                figures[-64],
                figures[-2],
            ),
        )
        print_table(rows)
        if arguments.json:
            print(json.dumps([row.__dict__ for row in rows], indent=2))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
