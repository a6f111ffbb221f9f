"""A real `mainstream serve` process with JSON logs: the `/api/live` Server-Sent Events stream
read by a real HTTP client, Prometheus `/metrics` against `/api/stats`, and the log lines."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.live_packages import (
    MOVING_APP,
)
from tests.support.nodes import (
    Daemon,
    TinyPackages,
    create_token,
    free_port,
    node_config,
    upload,
    wait_for,
)

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class ServerSentEvent:
    kind: str
    data: dict[str, Any]
    at: float


@dataclass
class LiveReader:
    """Reads `/api/live` on a thread, as a browser's EventSource would."""

    url: str
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    received: list[ServerSentEvent] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    status_code: int | None = None
    content_type: str = ""
    ended: threading.Event = field(default_factory=threading.Event)
    stopping: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._client = httpx.Client(timeout=httpx.Timeout(10, read=30))
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            with self._client.stream(
                "GET", f"{self.url}/api/live", params=self.params, headers=self.headers
            ) as response:
                self.status_code = response.status_code
                self.content_type = response.headers.get("content-type", "")
                kind, data = "message", ""
                for line in response.iter_lines():
                    if self.stopping.is_set():
                        break  # leaving the block closes the connection, as a browser tab does
                    if line.startswith(":"):
                        self.comments.append(line[1:].strip())
                    elif line.startswith("event:"):
                        kind = line.split(":", 1)[1].strip()
                    elif line.startswith("data:"):
                        data += line.split(":", 1)[1].strip()
                    elif not line and data:
                        self.received.append(ServerSentEvent(kind, json.loads(data), time.time()))
                        kind, data = "message", ""
        except httpx.HTTPError:
            pass
        finally:
            self.ended.set()

    def of(self, kind: str) -> list[ServerSentEvent]:
        return [message for message in list(self.received) if message.kind == kind]

    def close(self) -> None:
        """Hang up: the reader leaves at the next line (a status comes every 2 s)."""
        self.stopping.set()
        self._thread.join(timeout=10)
        self._client.close()


@pytest.fixture
def daemon(
    tmp_path: Path, tiny_packages: TinyPackages, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Daemon]:
    data = tmp_path / "data"
    tiny_packages.register_base(data)
    port = free_port()
    config = tmp_path / "node.yaml"
    settings = node_config(
        data,
        api={"host": "127.0.0.1", "port": port},
        runtime={"event_update_every_frames": 3},  # updates whatever the scores do
    )
    config.write_text(yaml.safe_dump(settings))
    monkeypatch.setenv("MAINSTREAM_LOG_FORMAT", "json")  # the daemon inherits it
    server = Daemon(config=config, log=tmp_path / "serve.log", port=port)
    yield server
    if server.process is not None and server.process.poll() is None:
        server.process.kill()


def read_live_view(url: str, params: dict[str, str], count: int) -> list[bytes]:
    """The first `count` JPEGs of an MJPEG stream, read part by part as a browser does."""
    found: list[bytes] = []
    with httpx.stream("GET", url, params=params, timeout=httpx.Timeout(10, read=30)) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"] == "multipart/x-mixed-replace; boundary=frame"
        buffer = b""
        for chunk in response.iter_bytes():
            buffer += chunk
            while b"\r\n\r\n" in buffer:
                head, rest = buffer.split(b"\r\n\r\n", 1)
                length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                if len(rest) < length + 2:
                    break
                found.append(rest[:length])
                buffer = rest[length + 2 :]
                if len(found) == count:
                    return found
    return found


def metric_samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)] of a Prometheus text exposition."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def one(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    matching = [value for found, value in samples[name] if labels.items() <= found.items()]
    assert len(matching) == 1, (name, labels, samples.get(name))
    return matching[0]


def test_live_stream_metrics_and_json_logs(daemon: Daemon, moving_package: Path) -> None:
    admin = create_token(daemon.config, "admin")
    viewer = create_token(daemon.config, "viewer")
    viewer_secret = viewer["Authorization"].removeprefix("Bearer ")
    daemon.start()
    client = httpx.Client(base_url=daemon.url, timeout=60)

    # -- the stream needs a viewer token, from the header or from ?token= -----------------------
    assert client.get("/api/live").status_code == 401
    assert client.get("/api/live", params={"token": "mst_wrong"}).status_code == 401
    by_header = LiveReader(daemon.url, headers=viewer)
    live = LiveReader(daemon.url, params={"token": viewer_secret})
    assert wait_for(lambda: bool(by_header.of("status")), timeout=10)
    assert by_header.status_code == 200
    assert by_header.content_type.startswith("text/event-stream")
    by_header.close()

    # -- events (new, updates, end) and camera states arrive as they happen --------------------
    assert upload(client, admin, moving_package.read_bytes()).status_code == 201
    app = {"name": MOVING_APP, "threshold": 0.0, "quiet_time_s": 120}
    assert client.post("/api/apps", json=app, headers=admin).status_code == 201
    assert wait_for(lambda: any(m.data["type"] == "update" for m in live.of("event")), timeout=60)
    door = {"id": "door", "url": "synthetic://?fps=5&size=96x96"}
    assert client.post("/api/cameras", json=door, headers=admin).status_code == 201
    assert wait_for(lambda: len(live.of("camera")) >= 2, timeout=20)
    door_states = live.of("camera")[:2]
    assert [(m.data["camera"], m.data["previous"], m.data["state"]) for m in door_states] == [
        ("door", "stopped", "starting"),
        ("door", "starting", "streaming"),
    ]
    assert set(door_states[0].data) == {"camera", "state", "previous", "reason"}
    assert door_states[0].data["reason"] == "start requested"

    # Metrics while the app runs, before it ends (/api/stats read at the same moment).
    def app_stats() -> dict[str, Any]:
        apps = client.get("/api/stats", headers=viewer).json()["apps"]
        return next(a for a in apps.values() if a["app"] == MOVING_APP)

    assert wait_for(lambda: app_stats()["fps"] > 0, timeout=10)

    # -- the live view: new frames, with the app's score drawn on them -------------------------
    view_url = f"{daemon.url}/api/cameras/synthetic/stream.mjpg"
    assert client.get(view_url).status_code == 401
    ticket = client.post("/api/live/ticket", headers=viewer).json()["ticket"]
    frames = read_live_view(view_url, {"ticket": ticket, "fps": "10"}, count=3)
    assert len(frames) == 3 and len(set(frames)) == 3  # each part a new frame
    image = cv2.imdecode(np.frombuffer(frames[-1], np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[0] > 0
    assert client.get(view_url, params={"ticket": ticket}).status_code == 401  # used once

    stats = client.get("/api/stats", headers=viewer).json()
    samples = metric_samples(client.get("/metrics", headers=viewer).text)

    assert client.delete(f"/api/apps/{MOVING_APP}", headers=admin).status_code == 204
    assert wait_for(lambda: any(m.data["type"] == "end" for m in live.of("event")), timeout=30)
    events = [m.data for m in live.of("event")]
    kinds = [message["type"] for message in events]
    assert kinds[0] == "new" and kinds[-1] == "end" and set(kinds[1:-1]) == {"update"}
    event_id = events[0]["event"]["id"]
    assert {message["event"]["id"] for message in events} == {event_id}
    stored = client.get(f"/api/events/{event_id}", headers=viewer).json()
    assert events[-1]["event"] == stored  # the same JSON as /api/events
    peaks = [message["event"]["peak_score"] for message in events[:-1]]
    assert peaks == sorted(peaks)  # an update never lowers the peak

    # -- a status message every 2 s: the /api/stats JSON ---------------------------------------
    statuses = live.of("status")
    assert len(statuses) >= 3
    gaps = [later.at - earlier.at for earlier, later in pairwise(statuses)]
    assert all(1.5 < gap < 4.0 for gap in gaps), gaps
    assert set(statuses[-1].data) == set(stats) and statuses[-1].data["node"] == "test-node"

    # -- /metrics carries the figures of /api/stats --------------------------------------------
    assert one(samples, "mainstream_node_info", node="test-node") == 1.0
    planned = next(a for a in stats["apps"].values() if a["app"] == MOVING_APP)
    labels = {"app": MOVING_APP, "camera": "synthetic"}
    assert one(samples, "mainstream_app_info", **labels, cut_point=planned["cut_point"]) == 1.0
    assert one(samples, "mainstream_app_planned_fps", **labels) == planned["planned_fps"]
    assert one(samples, "mainstream_app_predicted_f1", **labels) == planned["predicted_f1"]
    assert 0.0 < planned["predicted_f1"] <= 1.0 and planned["planned_fps"] > 0
    assert one(samples, "mainstream_app_fps", **labels) > 0
    assert one(samples, "mainstream_app_frames_analysed_total", **labels) > 0
    assert one(samples, "mainstream_app_events_total", **labels) == 0.0  # its event is open
    assert one(samples, "mainstream_app_event_active", **labels) == 1.0
    camera = stats["cameras"]["synthetic"]
    assert 5.0 < one(samples, "mainstream_camera_fps", camera="synthetic") < 20.0
    assert one(samples, "mainstream_camera_up", camera="synthetic") == 1.0
    assert one(samples, "mainstream_camera_state", camera="synthetic", state="streaming") == 1.0
    assert one(samples, "mainstream_camera_skipped_fps", camera="synthetic") >= 0.0
    # The camera decodes for its DAG's rate: the plan's (only) app's.
    assert camera["analysis_fps"] == planned["planned_fps"]
    not_needed = one(samples, "mainstream_camera_frames_not_needed_total", camera="synthetic")
    assert not_needed >= 0.0 and camera["frames_not_decoded"] >= 0
    decode = one(samples, "mainstream_camera_decode_seconds", camera="synthetic")
    assert 0.0 < decode < 0.5 and camera["decode_ms_avg"] > 0
    latencies = {
        found["node"]: value
        for found, value in samples["mainstream_dag_node_latency_seconds"]
        if found["camera"] == "synthetic"
    }
    assert set(latencies) == set(stats["dag_latency_ms"]["synthetic"])
    assert MOVING_APP in latencies and all(value > 0 for value in latencies.values())
    assert one(samples, "mainstream_scheduler_solve_seconds_count") == stats["scheduler"]["solves"]
    # One app: the search proves its plan optimal, and the metric says so.
    assert stats["plan"]["optimality_gap"] == 0.0 and stats["plan"]["solver"] == "auto"
    assert one(samples, "mainstream_plan_optimality_gap") == 0.0
    assert stats["scheduler"]["solves"] >= 1  # the app's plan (an empty node needs none)
    assert one(samples, "mainstream_scheduler_solve_seconds_sum") > 0
    assert one(samples, "mainstream_scheduler_replans_total") == stats["scheduler"]["replans"]
    assert stats["scheduler"]["replans"] >= 2  # the empty plan at start, then the app's
    # The closed stream is gone once the server has noticed the disconnect (asynchronously).
    assert wait_for(
        lambda: (
            one(
                metric_samples(client.get("/metrics", headers=viewer).text),
                "mainstream_live_subscribers",
            )
            == 1
        ),
        timeout=10,
    )
    rss = one(samples, "process_resident_memory_bytes")
    assert 0.5 < rss / stats["process"]["rss_bytes"] < 2.0
    assert one(samples, "process_cpu_seconds_total") > 0
    assert stats["process"]["cpu_seconds"] > 0

    # -- SIGTERM ends the open stream at once instead of waiting out the graceful timeout ------
    assert not live.ended.is_set()
    started = time.monotonic()
    assert daemon.stop(), daemon.log_tail()
    assert time.monotonic() - started < 8.0
    assert live.ended.wait(5)
    live.close()

    # -- every log record is one JSON object with time, level, logger and message --------------
    records = [
        json.loads(line)
        for line in daemon.log.read_text().splitlines()
        if line.startswith("{") and line.endswith("}")
    ]
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    messages = {(record["logger"], record["message"]) for record in records}
    assert ("uvicorn.error", "Application startup complete.") in messages
    assert any(
        logger == "edge_runtime.camera" and message.startswith("camera door: starting -> streaming")
        for logger, message in messages
    )
