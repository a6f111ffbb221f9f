"""Scheduler benchmark: F1 against both baselines, exact solve time, greedy time and gap.

Generated workloads (`scheduler.workload.generate_problem`: MobileNet-v1-like costs, 16 cut
points, 13 rates, 10 fps camera, accuracy falling gently with depth then a cliff at the
deepest cuts, event length 0.2-1 s, frequency 0.1-0.9, correlation 0.1-0.9) for N apps at
three budgets, over several seeds. Budgets are fractions of running every app's whole network
unshared on every camera frame (0.25 is the generator's default).

Times are whole `make_plan` calls without baselines: option tables, greedy and search.

Run: `python bench/scheduler.py [--quick] [--seeds N]`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

# Run as `python bench/scheduler.py`, this folder comes first on the import path and the file's
# name would hide the `scheduler` package; measure the checkout this file belongs to.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [
    entry for entry in sys.path if Path(entry or ".").resolve() != _HERE
]

from scheduler.planner import make_plan  # noqa: E402
from scheduler.workload import generate_problem, no_sharing_full_rate_cost  # noqa: E402

BUDGET_FRACTIONS = (0.02, 0.05, 0.25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer sizes and seeds")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per point (default 5)")
    arguments = parser.parse_args()
    sizes = (1, 3, 10, 30) if arguments.quick else (1, 2, 3, 5, 10, 20, 30)
    seeds = range(arguments.seeds or (2 if arguments.quick else 5))

    header = (
        f"{'apps':>4} {'budget':>6} | {'Mainstr':>7} {'Max-Sh':>7} {'No-Sh':>7} | "
        f"{'exact med s':>11} {'exact max s':>11} | {'greedy med s':>12} "
        f"{'gap mean':>8} {'gap max':>8}"
    )
    print(header)
    print("-" * len(header))
    all_exact: dict[int, list[float]] = {}
    for size in sizes:
        for fraction in BUDGET_FRACTIONS:
            exact_times, greedy_times, gaps = [], [], []
            values: dict[str, list[float]] = {"main": [], "max": [], "no": []}
            for seed in seeds:
                problem = generate_problem(size, seed=seed)
                assert problem.profile is not None
                problem.budget = fraction * no_sharing_full_rate_cost(
                    problem.profile, size, problem.camera_fps
                )
                started = time.perf_counter()
                exact = make_plan(problem, with_baselines=False)
                exact_times.append(time.perf_counter() - started)
                started = time.perf_counter()
                greedy = make_plan(problem, solver="greedy", with_baselines=False)
                greedy_times.append(time.perf_counter() - started)
                gaps.append(exact.value - greedy.value)
                baselines = make_plan(problem).baselines
                values["main"].append(exact.value)
                values["max"].append(baselines["max_sharing"].value)
                values["no"].append(baselines["no_sharing"].value)
            all_exact.setdefault(size, []).extend(exact_times)
            main_f1, max_f1, no_f1 = (statistics.mean(values[key]) for key in ("main", "max", "no"))
            print(
                f"{size:>4} {fraction:>6.2f} | {main_f1:7.3f} {max_f1:7.3f} {no_f1:7.3f} | "
                f"{statistics.median(exact_times):11.3f} {max(exact_times):11.3f} | "
                f"{statistics.median(greedy_times):12.3f} "
                f"{statistics.mean(gaps):8.4f} {max(gaps):8.4f}",
                flush=True,
            )
    print()
    for size, times in all_exact.items():
        print(
            f"{size:>3} apps: exact make_plan median {statistics.median(times):.3f} s, "
            f"max {max(times):.3f} s over {len(times)} problems"
        )
    print(
        "\nF1 columns: mean event F1 (mean over seeds of each plan's mean over apps);"
        "\ngap: exact F1 - greedy F1 (never negative)."
    )


if __name__ == "__main__":
    main()
