"""What to change on each node so that it runs the cameras and apps a fleet plan gives it.

A fleet plan (scheduler.fleet_placement) says which node runs which camera. Applying it goes
through each node's own REST API (cameras and apps routes), like an operator would: no
agent, no cluster manager. This module only decides the changes from what each node runs
now; the caller sends them (the CLI's `fleet apply`). Cameras and apps the fleet file does
not name are left alone, so a node can run its own things beside the fleet's.

Order: every removal on every node first (apps, then their cameras: a camera is refused
while an app uses it), then additions (cameras, then apps), so that a camera moving from
one node to another never runs twice for long, and app names stay unique across the fleet.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from scheduler.fleet import Fleet, FleetPlan

ActionKind = Literal["remove_app", "remove_camera", "add_camera", "add_app"]
_ORDER: dict[ActionKind, int] = {"remove_app": 0, "remove_camera": 1, "add_camera": 2, "add_app": 3}


@dataclass(frozen=True)
class NodeState:
    """What a node runs now: camera ids and app names (with the camera each app watches)."""

    cameras: frozenset[str]
    apps: Mapping[str, str]  # app name -> camera id


@dataclass(frozen=True)
class FleetAction:
    """One API call on one node."""

    node: str
    kind: ActionKind
    name: str  # camera id or app name
    url: str | None = None  # add_camera: the stream
    fps: float | None = None  # add_camera: the camera rate the plan assumes
    camera: str | None = None  # add_app: the camera it watches
    package: str | None = None  # add_app: the package it deploys

    def describe(self) -> str:
        if self.kind == "add_camera":
            return f"{self.node}: add camera {self.name} ({self.url}, {self.fps:g} fps)"
        if self.kind == "add_app":
            return (
                f"{self.node}: add app {self.name} (package {self.package}, camera {self.camera})"
            )
        what = "camera" if self.kind == "remove_camera" else "app"
        return f"{self.node}: remove {what} {self.name}"


def fleet_actions(
    fleet: Fleet, plan: FleetPlan, states: Mapping[str, NodeState]
) -> list[FleetAction]:
    """The calls that make every node in `states` run what `plan` gives it, in a safe order.

    An app or camera already on the right node (same camera for an app) is left as it is;
    one of the fleet's that runs on another node is removed there; a fleet app that watches
    another camera than planned is removed and added again.
    """
    wanted = plan.assignment()
    fleet_cameras = {camera.name: camera for camera in fleet.cameras}
    fleet_apps = {app.name: (camera.name, app) for camera in fleet.cameras for app in camera.apps}
    actions: list[FleetAction] = []
    for node, state in states.items():
        keep_apps: set[str] = set()
        for app_name, watched in state.apps.items():
            if app_name not in fleet_apps:
                continue
            planned_camera = fleet_apps[app_name][0]
            if watched == planned_camera and wanted.get(planned_camera) == node:
                keep_apps.add(app_name)
            else:
                actions.append(FleetAction(node, "remove_app", app_name))
        for running in sorted(state.cameras):
            if running in fleet_cameras and wanted.get(running) != node:
                actions.append(FleetAction(node, "remove_camera", running))
        for camera_name in sorted(c for c, n in wanted.items() if n == node):
            placed = fleet_cameras[camera_name]
            if camera_name not in state.cameras:
                actions.append(
                    FleetAction(
                        node, "add_camera", camera_name, url=placed.url, fps=fleet.camera_fps
                    )
                )
            for app in placed.apps:
                if app.name not in keep_apps:
                    actions.append(
                        FleetAction(
                            node,
                            "add_app",
                            app.name,
                            camera=camera_name,
                            package=app.package or app.name,
                        )
                    )
    return sorted(actions, key=lambda action: _ORDER[action.kind])


def missing_urls(fleet: Fleet, plan: FleetPlan) -> list[str]:
    """Why the plan cannot be applied as given: nodes without `url`, cameras without `url`."""
    used = {node.node for node in plan.nodes if node.cameras}
    problems = [
        f"node {node.name!r} has no url"
        for node in fleet.nodes
        if node.name in used and not node.url
    ]
    problems += [f"camera {camera.name!r} has no url" for camera in fleet.cameras if not camera.url]
    return problems
