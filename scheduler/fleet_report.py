"""A fleet plan as text: per node its cameras, cost and F1; per app its option; the baseline.

Pure logic: builds strings, no I/O.
"""

from __future__ import annotations

from scheduler.fleet import Fleet, FleetPlan, NodePlacement
from scheduler.report import OBJECTIVE_LABELS, text_table


def format_fleet_plan(plan: FleetPlan, fleet: Fleet) -> str:
    """The placement as aligned text, like `schedule dry-run`'s table, one row per node."""
    apps = sum(len(camera.apps) for camera in fleet.cameras)
    objective = OBJECTIVE_LABELS.get(plan.objective, plan.objective)
    unit = fleet.nodes[0].all_profiles()[0].cost_unit
    lines = [
        f"Mainstream fleet plan: {len(fleet.cameras)} cameras, {apps} apps on "
        f"{len(fleet.nodes)} nodes at {fleet.camera_fps:g} fps",
        "",
        f"  Objective  {objective} = {plan.value:.3f}{_round_robin_summary(plan)}",
        f"  Bound      {plan.upper_bound:.3f} (gap {100 * plan.optimality_gap:.2f}%)",
        f"  Method     {plan.method}, {plan.solve_time_s:.3f} s",
        "",
    ]
    headers = ["Node", "Cameras", "Apps", f"Cost ({unit}/s)", "Budget", "Used", "Mean F1", "Min F1"]
    rows = [_node_row(node) for node in plan.nodes]
    lines += text_table(headers, rows, right_from=2)
    lines.append("")
    headers = ["App", "Camera", "Node", "Cut point", "FPS", "X", "F1", "Cost"]
    app_rows = []
    for node in plan.nodes:
        if node.plan is None:
            continue
        for app in node.plan.apps:
            app_rows.append(
                [
                    app.name,
                    app.camera,
                    node.node,
                    app.cut_point,
                    f"{app.fps:g}",
                    str(app.x_vote),
                    f"{app.f1:.3f}",
                    f"{app.cost:.1f}",
                ]
            )
    lines += text_table(headers, app_rows, right_from=4)
    if plan.round_robin is not None:
        lines.append("")
        baseline = plan.round_robin
        if baseline.feasible:
            lines.append(
                f"Round-robin placement (camera i on node i mod {len(fleet.nodes)}), each node "
                f"planned the same way: {objective} = {baseline.value:.3f}"
            )
            lines += text_table(["Node", "Cameras"], _placement_rows(baseline.nodes), 2)
        else:
            lines.append("Round-robin placement: some node cannot fit its cameras (infeasible).")
    lines += [
        "",
        "Cameras share nothing on a node but its budget; each node's plan is the node",
        "scheduler's for its cameras. Bound: no placement and plans can beat it (gap 0: optimal).",
    ]
    return "\n".join(lines) + "\n"


def _node_row(node: NodePlacement) -> list[str]:
    if node.plan is None:
        return [node.node, "-", "0", "0", f"{node.budget:.1f}", "0.0%", "-", "-"]
    f1 = [app.f1 for app in node.plan.apps]
    return [
        node.node,
        ", ".join(node.cameras),
        str(len(f1)),
        f"{node.total_cost:.1f}",
        f"{node.budget:.1f}",
        f"{100 * node.total_cost / node.budget:.1f}%",
        f"{sum(f1) / len(f1):.3f}",
        f"{min(f1):.3f}",
    ]


def _placement_rows(nodes: list[NodePlacement]) -> list[list[str]]:
    return [[node.node, ", ".join(node.cameras) or "-"] for node in nodes]


def _round_robin_summary(plan: FleetPlan) -> str:
    baseline = plan.round_robin
    if baseline is None:
        return ""
    if not baseline.feasible:
        return "   (round-robin placement: infeasible)"
    return f"   (round-robin placement: {baseline.value:.3f}, {plan.value - baseline.value:+.3f})"
