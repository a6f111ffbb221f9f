"""Fleet placement benchmark: our placement against the whole fleet's MILP and round-robin.

Fleets come from `scheduler.workload.generate_fleet`: nodes of four speeds (1, 0.6, 1.5 and
0.8 times the first's cost per frame) with budgets of `--budget-fraction` (default 0.2) of
their even share run unshared at the camera rate, varied by up to 30 % per node; cameras
with `--apps` apps each (default 2), candidates at 8 cut points, 13 rates.

Columns: fleet size; mean event F1 of our placement (`place_fleet`, `auto`: exact branch and
bound while the assignments are few, the heuristic beyond); of the heuristic alone where the
exact search ran (with the gap it would report: its bound, not its distance to the optimum,
which the exact value shows); of the whole fleet as one MILP
(HiGHS, `solve_fleet_milp`, small fleets only, `--milp-limit` seconds; `*` when HiGHS did not
prove it) and of round-robin placement (each node planned the same way); our proven gap;
wall times. Round-robin may be infeasible (a node cannot fit its share): shown as `-`.

Run: `python bench/fleet.py [--quick] [--time-limit S] [--milp-limit S]`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

# Run as `python bench/fleet.py`, this folder comes first on the import path: measure the
# checkout this file belongs to.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [
    entry for entry in sys.path if Path(entry or ".").resolve() != _HERE
]

from mainstream.core.errors import InfeasibleError  # noqa: E402
from scheduler.fleet_milp import solve_fleet_milp  # noqa: E402
from scheduler.fleet_placement import count_assignments, place_fleet  # noqa: E402
from scheduler.report import text_table  # noqa: E402
from scheduler.workload import generate_fleet  # noqa: E402

# (nodes, cameras, with the MILP)
SIZES = (
    (2, 3, True),
    (3, 4, True),
    (3, 6, True),
    (3, 8, False),
    (4, 7, False),
    (4, 12, False),
    (8, 32, False),
    (16, 64, False),
)
QUICK_SIZES = ((2, 3, True), (3, 4, True), (4, 12, False), (8, 32, False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer and smaller fleets")
    parser.add_argument("--seeds", type=int, default=2, help="fleets per size")
    parser.add_argument("--apps", type=int, default=2, help="apps per camera")
    parser.add_argument("--budget-fraction", type=float, default=0.2)
    parser.add_argument("--time-limit", type=float, default=10.0, help="our placement (s)")
    parser.add_argument("--milp-limit", type=float, default=60.0, help="HiGHS (s)")
    parser.add_argument("--objective", choices=("mean_f1", "min_f1"), default="mean_f1")
    args = parser.parse_args()

    headers = [
        "Nodes",
        "Cameras",
        "Apps",
        "Seed",
        "Method",
        "Ours",
        "Heuristic",
        "MILP",
        "Round-robin",
        "Ours - RR",
        "Gap",
        "Ours (s)",
        "MILP (s)",
    ]
    rows = []
    for nodes, cameras, with_milp in QUICK_SIZES if args.quick else SIZES:
        for seed in range(args.seeds):
            fleet = generate_fleet(
                nodes,
                cameras,
                seed=seed,
                apps_per_camera=args.apps,
                budget_fraction=args.budget_fraction,
                objective=args.objective,
            )
            started = time.perf_counter()
            try:
                plan = place_fleet(fleet, "auto", args.time_limit)
            except InfeasibleError as error:
                print(f"{nodes} nodes, {cameras} cameras, seed {seed}: {error}", file=sys.stderr)
                continue
            ours_s = time.perf_counter() - started
            heuristic_text = "-"
            if plan.method != "heuristic":  # how far the heuristic alone is from the optimum
                heuristic = place_fleet(fleet, "heuristic", args.time_limit, with_round_robin=False)
                heuristic_text = f"{heuristic.value:.4f} ({100 * heuristic.optimality_gap:.1f}%)"
            milp_text, milp_s = "", ""
            if with_milp:
                started = time.perf_counter()
                milp = solve_fleet_milp(fleet, args.milp_limit)
                milp_s = f"{time.perf_counter() - started:.2f}"
                if milp is not None:
                    milp_text = f"{milp.value:.4f}" + ("" if milp.optimal else "*")
            baseline = plan.round_robin
            feasible = baseline is not None and baseline.feasible
            rows.append(
                [
                    str(nodes),
                    str(cameras),
                    str(cameras * args.apps),
                    str(seed),
                    plan.method + f" ({count_assignments(fleet):.3g} placements)",
                    f"{plan.value:.4f}",
                    heuristic_text,
                    milp_text or "-",
                    f"{baseline.value:.4f}" if feasible and baseline else "-",
                    f"{plan.value - baseline.value:+.4f}" if feasible and baseline else "-",
                    f"{100 * plan.optimality_gap:.2f}%",
                    f"{ours_s:.2f}",
                    milp_s or "-",
                ]
            )
            print("\n".join(text_table(headers, rows[-1:], right_from=5)[2:]), file=sys.stderr)
    print(f"Fleet placement, {args.objective}, budget fraction {args.budget_fraction}:")
    print("\n".join(text_table(headers, rows, right_from=5)))
    print("* HiGHS's best within its limit, not proven optimal.")


if __name__ == "__main__":
    main()
