"""Readiness and the figures /api/stats and /metrics report."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from mainstream import __version__
from mainstream.node.node import process_usage
from mainstream.node.services.base import NodeService

logger = logging.getLogger(__name__)


class HealthService(NodeService):
    """Readiness and the figures /api/stats and /metrics report."""

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready when started, the registry answers and the registered apps are deployed.

        A node in the registry role has no apps nor plan: it is ready when its database answers.
        """
        checks: dict[str, Any] = {"started": self.node.running, "role": self.node.settings.role}
        try:
            self.node.registry.schema_version()
            checks["registry"] = "ok"
        except Exception as error:  # a broken database must show up here, whatever it raises
            logger.error("registry check failed: %s", error)
            checks["registry"] = "unavailable"
        plan = self.node.plan_in_force
        checks["plan"] = plan.status if plan is not None else "none"
        if self.node.last_error:
            checks["error"] = self.node.last_error
        ready = (
            self.node.running
            and checks["registry"] == "ok"
            and not self.node.last_error
            and checks["plan"] not in ("infeasible", "error")
        )
        return ready, checks

    def stats(self) -> dict[str, Any]:
        """Everything /api/stats, /metrics and the live stream report, as one JSON-ready dict."""
        runtime = self.node.runtime.stats()
        plan = self.node.plan_in_force
        planned = {app.name: app for app in plan.plan.apps} if plan and plan.plan else {}
        measured = self.node.measured()
        measured_apps = measured["apps"] if measured else {}
        feedback = {
            name: dataclasses.asdict(item) for name, item in self.node.feedback.estimates().items()
        }
        dag_latency_ms: dict[str, dict[str, float]] = {}
        for key, ms in runtime.node_ms_per_frame.items():
            camera, dag_node = key.split(":", 1)
            dag_latency_ms.setdefault(camera, {})[dag_node] = ms
        return {
            "node": self.node.settings.node_name,
            "version": __version__,
            "role": self.node.settings.role,
            "uptime_s": time.time() - self.node.started_at if self.node.started_at else 0.0,
            "budget_ms_per_s": self.node.budget(),
            "engine": self.node.engine.name,
            "precision": self.node.engine.precision,
            "engine_reason": self.node.engine.reason,
            "plan": None
            if plan is None
            else {
                "id": plan.id,
                "status": plan.status,
                "value": plan.plan.value if plan.plan else None,
                "predicted_cost_ms_per_s": plan.plan.total_cost if plan.plan else 0.0,
                "solve_time_s": plan.plan.solve_time_s if plan.plan else 0.0,
                "solver": plan.plan.solver if plan.plan else None,
                "optimality_gap": plan.plan.optimality_gap if plan.plan else None,
            },
            "measured_cost_ms_per_s": runtime.measured_cost_ms_per_s,
            "cameras": {
                camera_id: s.to_dict() for camera_id, s in self.node.cameras.stats().items()
            },
            "apps": {
                name: {
                    "app": s.app,
                    "camera": s.camera,
                    "frames_analysed": s.frames_analysed,
                    "events": s.events,
                    "active": s.active,
                    "last_score": s.last_score,
                    "fps": measured_apps.get(s.app, {}).get("fps", 0.0),
                    "planned_fps": planned[s.app].fps if s.app in planned else None,
                    "cut_point": planned[s.app].cut_point if s.app in planned else None,
                    "predicted_f1": planned[s.app].f1 if s.app in planned else None,
                    "feedback": feedback.get(s.app),
                }
                for name, s in runtime.apps.items()
            },
            "frames_processed": dict(runtime.cameras),
            "node_ms_per_frame": dict(runtime.node_ms_per_frame),
            "dag_latency_ms": dag_latency_ms,
            "deployments": runtime.deployments,
            "events_stored": self.node.events.count(),
            "retention": self.node.retention.stats(),
            "replans": self.node.replanner.stats(),
            "feedback": self.node.feedback.stats(),
            "scheduler": dataclasses.asdict(self.node.scheduler),
            "process": process_usage(),
            "sinks": {sink.name: sink.stats() for sink in self.node.sinks.sinks},
            "live": self.node.live.stats(),
            "clips": None if self.node.clips is None else self.node.clips.stats(),
        }
