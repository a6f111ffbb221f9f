"""Prometheus metrics of a node, read from the node's own statistics at scrape time.

Each app gets its own collector registry (no process-wide state), so several apps, as in tests,
never share or double-register metrics.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mainstream.node import Node

CAMERA_STATES = ("starting", "streaming", "reconnecting", "stopped", "failed")


class NodeCollector(Collector):
    """Turns `Node.stats()` and the plan in force into metric families."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        stats = self.node.stats()
        yield from self._node_metrics(stats)
        yield from self._camera_metrics(stats["cameras"])
        yield from self._app_metrics(stats["apps"])

    def _node_metrics(self, stats: dict[str, Any]) -> Iterator[Metric]:
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

    def _camera_metrics(self, cameras: dict[str, dict[str, Any]]) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "mainstream_camera_state",
            "1 for the camera's current state",
            labels=["camera", "state"],
        )
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {
            "frames_decoded": CounterMetricFamily(
                "mainstream_camera_frames_decoded",
                "Frames grabbed from the source",
                labels=["camera"],
            ),
            "frames_delivered": CounterMetricFamily(
                "mainstream_camera_frames_delivered", "Frames handed to analysis", labels=["camera"]
            ),
            "frames_dropped": CounterMetricFamily(
                "mainstream_camera_frames_dropped",
                "Oldest frames dropped because analysis fell behind",
                labels=["camera"],
            ),
            "reconnects": CounterMetricFamily(
                "mainstream_camera_reconnects", "Reconnection attempts", labels=["camera"]
            ),
            "fps_in": GaugeMetricFamily(
                "mainstream_camera_fps", "Frames per second from the source", labels=["camera"]
            ),
            "decode_ms_avg": GaugeMetricFamily(
                "mainstream_camera_decode_ms",
                "Recent mean decode time per frame",
                labels=["camera"],
            ),
        }
        for camera_id, camera in sorted(cameras.items()):
            for name in CAMERA_STATES:
                state.add_metric([camera_id, name], 1.0 if camera["state"] == name else 0.0)
            for key, family in families.items():
                family.add_metric([camera_id], float(camera[key]))
        yield state
        yield from families.values()

    def _app_metrics(self, apps: dict[str, dict[str, Any]]) -> Iterator[Metric]:
        labels = ["app", "camera"]
        analysed = CounterMetricFamily(
            "mainstream_app_frames_analysed", "Frames analysed by the app", labels=labels
        )
        events = CounterMetricFamily("mainstream_app_events", "Events ended", labels=labels)
        active = GaugeMetricFamily(
            "mainstream_app_event_active", "1 while an event is open", labels=labels
        )
        planned_fps = GaugeMetricFamily(
            "mainstream_app_planned_fps", "Planned analysis rate", labels=labels
        )
        predicted_f1 = GaugeMetricFamily(
            "mainstream_app_predicted_f1", "Event F1 the plan predicts", labels=labels
        )
        plan = self.node.plan_in_force
        planned = {app.name: app for app in plan.plan.apps} if plan and plan.plan else {}
        for app in sorted(apps.values(), key=lambda item: (item["camera"], item["app"])):
            key = [app["app"], app["camera"]]
            analysed.add_metric(key, app["frames_analysed"])
            events.add_metric(key, app["events"])
            active.add_metric(key, 1.0 if app["active"] else 0.0)
            if app["app"] in planned:
                planned_fps.add_metric(key, planned[app["app"]].fps)
                predicted_f1.add_metric(key, planned[app["app"]].f1)
        yield from (analysed, events, active, planned_fps, predicted_f1)


def metrics_registry(node: Node) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
