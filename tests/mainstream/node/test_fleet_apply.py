"""What `fleet apply` sends: only the differences, removals first, other things left alone."""

from __future__ import annotations

from mainstream.node.fleet_apply import NodeState, fleet_actions, missing_urls
from scheduler.fleet import Fleet, FleetPlan, NodePlacement
from scheduler.workload import generate_fleet


def fleet_of_two() -> Fleet:
    fleet = generate_fleet(2, 3, seed=1, apps_per_camera=1, num_cut_points=3)
    for node in fleet.nodes:
        node.url = f"http://{node.name}:8780"
    for camera in fleet.cameras:
        camera.url = f"rtsp://{camera.name}/stream"
    return fleet


def plan_of(assignment: dict[str, list[str]]) -> FleetPlan:
    return FleetPlan(
        objective="mean_f1",
        value=0.5,
        upper_bound=0.5,
        optimality_gap=0.0,
        method="exact",
        solve_time_s=0.0,
        nodes=[
            NodePlacement(node=node, budget=100.0, cameras=cameras)
            for node, cameras in assignment.items()
        ],
    )


def test_a_fresh_fleet_gets_cameras_before_apps() -> None:
    fleet = fleet_of_two()
    plan = plan_of({"node00": ["cam00", "cam02"], "node01": ["cam01"]})
    empty = NodeState(cameras=frozenset(), apps={})
    actions = fleet_actions(fleet, plan, {"node00": empty, "node01": empty})
    assert [action.describe() for action in actions] == [
        "node00: add camera cam00 (rtsp://cam00/stream, 10 fps)",
        "node00: add camera cam02 (rtsp://cam02/stream, 10 fps)",
        "node01: add camera cam01 (rtsp://cam01/stream, 10 fps)",
        "node00: add app cam00-app0 (package cam00-app0, camera cam00)",
        "node00: add app cam02-app0 (package cam02-app0, camera cam02)",
        "node01: add app cam01-app0 (package cam01-app0, camera cam01)",
    ]


def test_a_moved_camera_is_removed_before_it_is_added_and_the_rest_stays() -> None:
    fleet = fleet_of_two()
    plan = plan_of({"node00": ["cam00", "cam01", "cam02"], "node01": []})
    states = {
        "node00": NodeState(
            cameras=frozenset({"cam00", "cam02", "lobby"}),
            apps={"cam00-app0": "cam00", "cam02-app0": "cam00", "own": "lobby"},
        ),
        "node01": NodeState(cameras=frozenset({"cam01"}), apps={"cam01-app0": "cam01"}),
    }
    actions = [action.describe() for action in fleet_actions(fleet, plan, states)]
    assert actions == [
        "node00: remove app cam02-app0",  # it watches the wrong camera
        "node01: remove app cam01-app0",
        "node01: remove camera cam01",
        "node00: add camera cam01 (rtsp://cam01/stream, 10 fps)",
        "node00: add app cam01-app0 (package cam01-app0, camera cam01)",
        "node00: add app cam02-app0 (package cam02-app0, camera cam02)",
    ]
    assert (
        fleet_actions(
            fleet,
            plan,
            {
                "node00": NodeState(
                    frozenset({"cam00", "cam01", "cam02"}),
                    {"cam00-app0": "cam00", "cam01-app0": "cam01", "cam02-app0": "cam02"},
                ),
                "node01": NodeState(frozenset(), {}),
            },
        )
        == []
    )


def test_apply_needs_the_urls_of_the_nodes_it_uses() -> None:
    fleet = fleet_of_two()
    fleet.nodes[1].url = None
    fleet.cameras[0].url = None
    assert missing_urls(fleet, plan_of({"node00": ["cam00", "cam01", "cam02"]})) == [
        "camera 'cam00' has no url"
    ]
    assert missing_urls(fleet, plan_of({"node00": ["cam00"], "node01": ["cam01"]})) == [
        "node 'node01' has no url",
        "camera 'cam00' has no url",
    ]
