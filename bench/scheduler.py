"""Scheduler benchmark: exact solve time, greedy gap, and F1 against both baselines.

For N apps (generated workloads: accuracy flat with depth then a cliff, event length 0.2-1 s,
frequency 0.1-0.9, correlation 0.1-0.9, 10 fps camera, 16 cut points x 13 rates) at three
budgets, over several seeds. Run: `python bench/scheduler.py [--quick]`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

# Run as `python bench/scheduler.py`, this folder comes first on the import path and the file's
# name would hide the `scheduler` package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]

from mainstream.errors import InfeasibleError  # noqa: E402
from scheduler.planner import make_plan  # noqa: E402
from scheduler.workload import generate_problem  # noqa: E402

BUDGET_SCALES = (0.5, 1.0, 2.0)  # times the generator's default budget


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer sizes and seeds")
    parser.add_argument("--seeds", type=int, default=5)
    arguments = parser.parse_args()
    sizes = (1, 3, 10, 30) if arguments.quick else (1, 2, 3, 5, 10, 20, 30)
    seeds = range(2 if arguments.quick else arguments.seeds)

    header = (
        f"{'apps':>4} {'budget':>7} | {'F1 main':>7} {'max-sh':>7} {'no-sh':>7} {'x max':>6} {'x no':>6} | "
        f"{'exact med s':>11} {'exact max s':>11} | {'greedy s':>8} {'gap mean':>8} {'gap max':>8}"
    )
    print(header)
    print("-" * len(header))
    for size in sizes:
        for scale in BUDGET_SCALES:
            exact_times, greedy_times, gaps = [], [], []
            values: dict[str, list[float]] = {"main": [], "max": [], "no": []}
            for seed in seeds:
                problem = generate_problem(size, seed=seed)
                problem = problem.model_copy(update={"budget": problem.budget * scale})
                try:
                    started = time.perf_counter()
                    exact = make_plan(problem, with_baselines=False)
                    exact_times.append(time.perf_counter() - started)
                except InfeasibleError:
                    continue
                started = time.perf_counter()
                greedy = make_plan(problem, solver="greedy", with_baselines=False)
                greedy_times.append(time.perf_counter() - started)
                gaps.append(exact.value - greedy.value)
                baselines = make_plan(problem).baselines
                values["main"].append(exact.value)
                values["max"].append(baselines["max_sharing"].value)
                values["no"].append(baselines["no_sharing"].value)
            if not exact_times:
                print(f"{size:>4} {scale:>6.1f}x | infeasible")
                continue
            main_f1, max_f1, no_f1 = (statistics.mean(values[key]) for key in ("main", "max", "no"))
            print(
                f"{size:>4} {scale:>6.1f}x | {main_f1:7.3f} {max_f1:7.3f} {no_f1:7.3f} "
                f"{main_f1 / max(max_f1, 1e-9):6.2f} {main_f1 / max(no_f1, 1e-9):6.2f} | "
                f"{statistics.median(exact_times):11.3f} {max(exact_times):11.3f} | "
                f"{statistics.median(greedy_times):8.3f} {statistics.mean(gaps):8.4f} {max(gaps):8.4f}",
                flush=True,
            )
    print(
        "\nbudget: times the generator's default (0.25 x all apps end to end at the camera rate);"
    )
    print(
        "x max / x no: mean F1 of Mainstream divided by Max-Sharing / No-Sharing; gap: exact - greedy F1."
    )


if __name__ == "__main__":
    main()
