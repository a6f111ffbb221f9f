"""A fleet's boundary types: the nodes and cameras it places, and the placement it answers.

A fleet is several nodes, each with its own measured cost profile(s) and budget, and cameras,
each with its apps (as in a `Problem`). Placement assigns every camera to one node and plans
each node on its own (`scheduler.fleet_placement`). Apps on different cameras share nothing
on a node but its budget (decode and stems are per camera, DESIGN §3), which is what makes
the placement a packing of cameras into node budgets.

Pure logic: pydantic models only, no I/O.
"""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from scheduler.problem import DEFAULT_FPS_OPTIONS, AppSpec, Objective, Plan, Problem, Profile


class FleetApp(AppSpec):
    """An app as in a `Problem`, plus the package a node deploys it from."""

    package: str | None = Field(
        default=None, description="package name on the nodes (default: the app's name)"
    )


class FleetCamera(BaseModel):
    """A camera and the apps that watch it; it runs on exactly one node."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    url: str | None = Field(default=None, description="stream URL a node opens (for apply)")
    apps: list[FleetApp] = Field(min_length=1)


class FleetNode(BaseModel):
    """A node: where its API answers, its measured profile(s) and its compute budget."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    url: str | None = Field(default=None, description="the node's API (for apply)")
    budget: float = Field(gt=0)
    profile: Profile | None = None
    profiles: list[Profile] | None = None

    @model_validator(mode="after")
    def _one_profile_field(self) -> FleetNode:
        if (self.profile is None) == (self.profiles is None):
            raise ValueError(f"node {self.name!r}: give exactly one of 'profile' or 'profiles'")
        return self

    def all_profiles(self) -> list[Profile]:
        return list(self.profiles) if self.profiles is not None else [self.profile]  # type: ignore[list-item]

    def base_models(self) -> set[str]:
        return {profile.base_model for profile in self.all_profiles()}

    def kind(self) -> str:
        """What makes two nodes interchangeable for placement: budget and profiles."""
        return json.dumps({"budget": self.budget, "profiles": self.profiles_key()})

    def profiles_key(self) -> str:
        """The profiles alone: what the option tables depend on."""
        profiles = sorted(
            (profile.model_dump(mode="json") for profile in self.all_profiles()),
            key=lambda item: str(item["base_model"]),
        )
        return json.dumps(profiles, sort_keys=True)


class Fleet(BaseModel):
    """Nodes and cameras to place (the FLEET.yaml file)."""

    model_config = ConfigDict(extra="forbid")

    camera_fps: float = Field(default=10.0, gt=0)
    objective: Objective = "mean_f1"
    confidence: float | None = Field(default=None, ge=0.5, lt=1)
    fps_options: list[float] = Field(default_factory=lambda: list(DEFAULT_FPS_OPTIONS))
    nodes: list[FleetNode] = Field(min_length=1)
    cameras: list[FleetCamera] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Fleet:
        for kind, names in (
            ("node", [node.name for node in self.nodes]),
            ("camera", [camera.name for camera in self.cameras]),
            ("app", [app.name for camera in self.cameras for app in camera.apps]),
        ):
            repeated = sorted({name for name in names if names.count(name) > 1})
            if repeated:
                raise ValueError(f"{kind} names must be unique across the fleet: {repeated}")
        bases = set().union(*(node.base_models() for node in self.nodes))
        for camera in self.cameras:
            for app in camera.apps:
                if "camera" in app.model_fields_set and app.camera != camera.name:
                    raise ValueError(
                        f"app {app.name!r} is listed under camera {camera.name!r} but names "
                        f"camera {app.camera!r}; leave 'camera' out of a fleet's apps"
                    )
                app.camera = camera.name
                if app.base_model is None:
                    if len(bases) != 1:
                        raise ValueError(
                            f"app {app.name!r} must name its base_model (the nodes' profiles "
                            f"cover several: {sorted(bases)})"
                        )
                    app.base_model = next(iter(bases))
            if not self.eligible_nodes(camera):
                raise ValueError(
                    f"camera {camera.name!r}: no node has a profile for every base model its "
                    f"apps use ({sorted({app.base_model or '' for app in camera.apps})})"
                )
        # Every node's share of the fleet must be a valid Problem (cut points, fps options).
        for node in self.nodes:
            apps = [app for camera in self.cameras if node in self.eligible_nodes(camera)
                    for app in camera.apps]  # fmt: skip
            if apps:
                try:
                    self.node_problem(node, apps)
                except ValidationError as error:
                    reasons = "; ".join(
                        str(detail["msg"]).removeprefix("Value error, ")
                        for detail in error.errors(include_url=False)
                    )
                    raise ValueError(f"node {node.name!r}: {reasons}") from None
        return self

    def eligible_nodes(self, camera: FleetCamera) -> list[FleetNode]:
        """Nodes with a profile for every base model the camera's apps use."""
        needed = {app.base_model for app in camera.apps}
        return [node for node in self.nodes if needed <= node.base_models()]

    def node_problem(self, node: FleetNode, apps: list[FleetApp]) -> Problem:
        """The scheduling problem of `apps` on `node` (its profiles and budget)."""
        profiles = node.all_profiles()
        return Problem(
            camera_fps=self.camera_fps,
            budget=node.budget,
            objective=self.objective,
            confidence=self.confidence,
            fps_options=list(self.fps_options),
            profile=profiles[0] if len(profiles) == 1 else None,
            profiles=profiles if len(profiles) > 1 else None,
            apps=[AppSpec.model_validate(app.model_dump()) for app in apps],
        )

    def total_weight(self) -> float:
        return sum(app.weight for camera in self.cameras for app in camera.apps)


class NodePlacement(BaseModel):
    """One node's share of a fleet plan: its cameras and the plan it runs."""

    node: str
    budget: float
    cameras: list[str]
    total_cost: float = 0.0
    plan: Plan | None = Field(default=None, description="None: no camera placed here")


class PlacementBaseline(BaseModel):
    """A placement made another way (round-robin), each node planned by the node scheduler."""

    value: float
    feasible: bool = True
    nodes: list[NodePlacement] = Field(default_factory=list)


class FleetPlan(BaseModel):
    """Where each camera runs and what each node plans, with a proven bound on the optimum.

    `value` is the fleet's objective over all apps: the weighted mean of their F1 (`mean_f1`)
    or the worst app's F1 (`min_f1`). `upper_bound` bounds what any placement and plans could
    reach; `optimality_gap` = (upper_bound - value) / upper_bound, 0 when proven optimal.
    """

    objective: Objective
    value: float
    upper_bound: float
    optimality_gap: float = Field(ge=0, le=1)
    method: str = Field(description="exact (branch and bound over placements) or heuristic")
    solve_time_s: float
    nodes: list[NodePlacement]
    round_robin: PlacementBaseline | None = None

    def assignment(self) -> dict[str, str]:
        """camera name -> node name."""
        return {camera: node.node for node in self.nodes for camera in node.cameras}
