"""Prometheus metrics of a node, read from the node's own statistics at scrape time.

Names follow Prometheus conventions (base units, `_total` on counters) and what Frigate and
Triton users know: per camera `mainstream_camera_fps`, `mainstream_camera_skipped_fps`,
`mainstream_camera_decode_seconds`, `mainstream_camera_up`; per app `mainstream_app_fps`,
`mainstream_app_planned_fps`, `mainstream_app_predicted_f1`, `mainstream_app_events_total` and
`mainstream_app_info{cut_point=...}`; operators' marks per app, `mainstream_app_reviews{verdict=
true|false|unreviewed}`, and what they imply, `mainstream_app_feedback_precision` and
`mainstream_app_feedback_false_positive_rate`; `mainstream_dag_node_latency_seconds{camera,node}`;
retention's `mainstream_events_pruned_total` and `mainstream_events_kept_bytes{app}`; the
scheduler's solve time and re-plans; sink counters `mainstream_sink_*{sink=...}`; and the
standard `process_*` metrics. `mainstream_node_info{node=...}` names the node. /api/stats holds
the same figures as JSON.

Each FastAPI app gets its own collector registry (no process-wide state), so several apps, as in
tests, never share or double-register metrics.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from mainstream.node.node import Node
from mainstream.node.services.health import HealthService

CAMERA_STATES = ("starting", "streaming", "reconnecting", "stopped", "failed")
SINK_GAUGES = frozenset({"queued", "connected"})
"""Sink counters that go up and down; every other sink counter only grows."""

MetricFamily = CounterMetricFamily | GaugeMetricFamily


class NodeCollector(Collector):
    """Turns the node's figures (`HealthService.stats()`) into metric families."""

    def __init__(self, node: Node) -> None:
        self.health = HealthService(node)

    def collect(self) -> Iterator[Metric]:
        stats = self.health.stats()
        yield from _node_metrics(stats)
        yield from _scheduler_metrics(stats["scheduler"])
        yield from _camera_metrics(stats["cameras"], stats["frames_processed"])
        yield from _app_metrics(stats["apps"])
        yield from _dag_metrics(stats["dag_latency_ms"])
        yield from _sink_metrics(stats["sinks"])
        yield from _live_metrics(stats["live"])


def _node_metrics(stats: dict[str, Any]) -> Iterator[Metric]:
    info = GaugeMetricFamily(
        "mainstream_node_info", "Node name and version", labels=["node", "version", "engine"]
    )
    info.add_metric([stats["node"], stats["version"], stats["engine"]], 1.0)
    yield info
    yield GaugeMetricFamily(
        "mainstream_uptime_seconds", "Seconds since the node started", value=stats["uptime_s"]
    )
    yield GaugeMetricFamily(
        "mainstream_budget_ms_per_second",
        "Compute budget the scheduler plans with",
        value=stats["budget_ms_per_s"],
    )
    plan = stats["plan"] or {}
    yield GaugeMetricFamily(
        "mainstream_plan_cost_ms_per_second",
        "Compute the plan in force is predicted to use",
        value=plan.get("predicted_cost_ms_per_s") or 0.0,
    )
    yield GaugeMetricFamily(
        "mainstream_plan_objective_value",
        "Predicted objective (mean or min event F1) of the plan in force",
        value=plan.get("value") or 0.0,
    )
    if plan.get("optimality_gap") is not None:  # plans made before bounds do not say
        yield GaugeMetricFamily(
            "mainstream_plan_optimality_gap",
            "Proven relative gap of the plan in force to the best possible plan (0: optimal)",
            value=plan["optimality_gap"],
        )
    yield GaugeMetricFamily(
        "mainstream_runtime_cost_ms_per_second",
        "Compute the runtime measured since the plan was applied",
        value=stats["measured_cost_ms_per_s"],
    )
    yield CounterMetricFamily(
        "mainstream_deployments", "Deployments applied since start", value=stats["deployments"]
    )
    yield GaugeMetricFamily(
        "mainstream_events_stored", "Events in the event store", value=stats["events_stored"]
    )
    yield from _retention_metrics(stats["retention"])


def _retention_metrics(retention: dict[str, Any]) -> Iterator[Metric]:
    yield CounterMetricFamily(
        "mainstream_events_pruned",
        "Events deleted by retention since start",
        value=retention["pruned_total"],
    )
    if retention["bytes"] is None:  # no pruning pass yet
        return
    kept = GaugeMetricFamily(
        "mainstream_events_kept_bytes",
        "Bytes of events kept per app (snapshots and clips plus an estimate per row), at the "
        "last prune",
        labels=["app"],
    )
    for app, figures in retention["apps"].items():
        kept.add_metric([app], figures["bytes"])
    yield kept
    yield GaugeMetricFamily(
        "mainstream_event_store_file_bytes",
        "Size of the event database on disk, at the last prune",
        value=retention["file_bytes"],
    )


def _scheduler_metrics(scheduler: dict[str, Any]) -> Iterator[Metric]:
    yield SummaryMetricFamily(
        "mainstream_scheduler_solve_seconds",
        "Time spent solving scheduling problems (dry runs included)",
        count_value=scheduler["solves"],
        sum_value=scheduler["solve_seconds_total"],
    )
    yield GaugeMetricFamily(
        "mainstream_scheduler_last_solve_seconds",
        "Time the last scheduling problem took to solve",
        value=scheduler["last_solve_seconds"],
    )
    yield CounterMetricFamily(
        "mainstream_scheduler_replans",
        "New plans put in force since start (the first one included)",
        value=scheduler["replans"],
    )


def _camera_metrics(
    cameras: dict[str, dict[str, Any]], frames_processed: dict[str, int]
) -> Iterator[Metric]:
    labels = ["camera"]
    state = GaugeMetricFamily(
        "mainstream_camera_state", "1 for the camera's current state", labels=["camera", "state"]
    )
    up = GaugeMetricFamily("mainstream_camera_up", "1 while the camera streams", labels=labels)
    processed = CounterMetricFamily(
        "mainstream_camera_frames_processed",
        "Frames the runtime ran through the camera's DAG",
        labels=labels,
    )
    families: dict[str, tuple[MetricFamily, float]] = {
        "fps_in": (
            GaugeMetricFamily(
                "mainstream_camera_fps", "Frames per second from the source", labels=labels
            ),
            1.0,
        ),
        "fps_out": (
            GaugeMetricFamily(
                "mainstream_camera_delivered_fps",
                "Frames per second handed to analysis",
                labels=labels,
            ),
            1.0,
        ),
        "skipped_fps": (
            GaugeMetricFamily(
                "mainstream_camera_skipped_fps",
                "Frames per second thinned out to hold the configured rate",
                labels=labels,
            ),
            1.0,
        ),
        "not_needed_fps": (
            GaugeMetricFamily(
                "mainstream_camera_not_needed_fps",
                "Frames per second analysis does not use (not queued; decoded only for a viewer or clips)",
                labels=labels,
            ),
            1.0,
        ),
        "dropped_fps": (
            GaugeMetricFamily(
                "mainstream_camera_dropped_fps",
                "Frames per second dropped because analysis fell behind",
                labels=labels,
            ),
            1.0,
        ),
        "decode_ms_avg": (
            GaugeMetricFamily(
                "mainstream_camera_decode_seconds",
                "Recent mean time to decode one frame",
                labels=labels,
            ),
            1e-3,
        ),
        "queue_depth": (
            GaugeMetricFamily(
                "mainstream_camera_queue_depth", "Frames waiting for analysis", labels=labels
            ),
            1.0,
        ),
        "frames_decoded": (
            CounterMetricFamily(
                "mainstream_camera_frames_decoded",
                "Frames grabbed from the source",
                labels=labels,
            ),
            1.0,
        ),
        "frames_delivered": (
            CounterMetricFamily(
                "mainstream_camera_frames_delivered", "Frames handed to analysis", labels=labels
            ),
            1.0,
        ),
        "frames_skipped": (
            CounterMetricFamily(
                "mainstream_camera_frames_skipped",
                "Frames thinned out to hold the configured rate",
                labels=labels,
            ),
            1.0,
        ),
        "frames_not_needed": (
            CounterMetricFamily(
                "mainstream_camera_frames_not_needed",
                "Frames analysis does not use (not queued; decoded only for a viewer or clips)",
                labels=labels,
            ),
            1.0,
        ),
        "frames_not_decoded": (
            CounterMetricFamily(
                "mainstream_camera_frames_not_decoded",
                "Grabbed frames never decoded (the source decodes only frames asked for)",
                labels=labels,
            ),
            1.0,
        ),
        "frames_dropped": (
            CounterMetricFamily(
                "mainstream_camera_frames_dropped",
                "Oldest frames dropped because analysis fell behind",
                labels=labels,
            ),
            1.0,
        ),
        "reconnects": (
            CounterMetricFamily(
                "mainstream_camera_reconnects", "Reconnection attempts", labels=labels
            ),
            1.0,
        ),
    }
    for camera_id, camera in sorted(cameras.items()):
        for name in CAMERA_STATES:
            state.add_metric([camera_id, name], 1.0 if camera["state"] == name else 0.0)
        up.add_metric([camera_id], 1.0 if camera["state"] == "streaming" else 0.0)
        processed.add_metric([camera_id], float(frames_processed.get(camera_id, 0)))
        for key, (family, scale) in families.items():
            family.add_metric([camera_id], float(camera[key]) * scale)
    yield state
    yield up
    yield processed
    yield from (family for family, _ in families.values())


def _app_metrics(apps: dict[str, dict[str, Any]]) -> Iterator[Metric]:
    labels = ["app", "camera"]
    info = GaugeMetricFamily(
        "mainstream_app_info",
        "The plan's choice for the app: cut point of the shared stem",
        labels=[*labels, "cut_point"],
    )
    fps = GaugeMetricFamily(
        "mainstream_app_fps", "Frames analysed per second since the plan", labels=labels
    )
    planned_fps = GaugeMetricFamily(
        "mainstream_app_planned_fps", "Planned analysis rate", labels=labels
    )
    predicted_f1 = GaugeMetricFamily(
        "mainstream_app_predicted_f1", "Event F1 the plan predicts", labels=labels
    )
    analysed = CounterMetricFamily(
        "mainstream_app_frames_analysed", "Frames analysed by the app", labels=labels
    )
    events = CounterMetricFamily("mainstream_app_events", "Events ended", labels=labels)
    active = GaugeMetricFamily(
        "mainstream_app_event_active", "1 while an event is open", labels=labels
    )
    for app in sorted(apps.values(), key=lambda item: (item["camera"], item["app"])):
        key = [app["app"], app["camera"]]
        fps.add_metric(key, app["fps"])
        analysed.add_metric(key, app["frames_analysed"])
        events.add_metric(key, app["events"])
        active.add_metric(key, 1.0 if app["active"] else 0.0)
        if app["cut_point"] is not None:
            info.add_metric([*key, app["cut_point"]], 1.0)
            planned_fps.add_metric(key, app["planned_fps"])
            predicted_f1.add_metric(key, app["predicted_f1"])
    yield from (info, fps, planned_fps, predicted_f1, analysed, events, active)
    yield from _feedback_metrics(apps)


def _feedback_metrics(apps: dict[str, dict[str, Any]]) -> Iterator[Metric]:
    labels = ["app", "camera"]
    reviews = GaugeMetricFamily(
        "mainstream_app_reviews",
        "The app's events by operator mark (true, false, unreviewed)",
        labels=[*labels, "verdict"],
    )
    precision = GaugeMetricFamily(
        "mainstream_app_feedback_precision",
        "Event precision the operators' marks imply (posterior mean)",
        labels=labels,
    )
    false_positive_rate = GaugeMetricFamily(
        "mainstream_app_feedback_false_positive_rate",
        "Per-frame false-positive rate the marks imply at the cut point in force",
        labels=labels,
    )
    for app in sorted(apps.values(), key=lambda item: (item["camera"], item["app"])):
        feedback = app.get("feedback")
        if not feedback:
            continue
        key = [app["app"], app["camera"]]
        for verdict in ("true", "false", "unreviewed"):
            reviews.add_metric([*key, verdict], float(feedback[verdict]))
        if feedback["precision"] is not None:
            precision.add_metric(key, feedback["precision"])
        if feedback["false_positive_rate"] is not None:
            false_positive_rate.add_metric(key, feedback["false_positive_rate"])
    yield from (reviews, precision, false_positive_rate)


def _dag_metrics(latency_ms: dict[str, dict[str, float]]) -> Iterator[Metric]:
    latency = GaugeMetricFamily(
        "mainstream_dag_node_latency_seconds",
        "Recent mean time per frame of each DAG node (shared stem segments and app heads)",
        labels=["camera", "node"],
    )
    for camera, nodes in sorted(latency_ms.items()):
        for dag_node, ms in sorted(nodes.items()):
            latency.add_metric([camera, dag_node], ms / 1000.0)
    yield latency


def _sink_metrics(sinks: dict[str, dict[str, Any]]) -> Iterator[Metric]:
    """`mainstream_sink_<counter>{sink=...}` for every counter any sink reports."""
    families: dict[str, MetricFamily] = {}
    for sink, counters in sorted(sinks.items()):
        for key, value in sorted(counters.items()):
            family = families.get(key)
            if family is None:
                name = f"mainstream_sink_{key}"
                description = f"Event sink counter '{key}'"
                family = (
                    GaugeMetricFamily(name, description, labels=["sink"])
                    if key in SINK_GAUGES
                    else CounterMetricFamily(name, description, labels=["sink"])
                )
                families[key] = family
            family.add_metric([sink], float(value))
    yield from families.values()


def _live_metrics(live: dict[str, Any]) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "mainstream_live_subscribers", "Open /api/live streams", value=live["subscribers"]
    )
    yield CounterMetricFamily(
        "mainstream_live_messages", "Messages sent to the live hub", value=live["published"]
    )
    yield CounterMetricFamily(
        "mainstream_live_dropped",
        "Messages slow /api/live clients lost",
        value=live["dropped"],
    )


def metrics_registry(node: Node) -> CollectorRegistry:
    """The node's metrics plus the standard process (CPU, memory) and Python ones."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
