"""Scheduler benchmark: bounded time on every input, and how close to optimal the answers are.

Suites (`--suite`, default `paper,fleet`):

- `paper`: problems shaped like the original Mainstream experiments
  (`scheduler.workload.generate_paper_problem`: per-frame quality nearly flat with many
  near-ties until late cut points, then a cliff; 19 rates 0.1-10 fps; event frequency
  0.1-0.9, length 0.2-1 s, correlation 0.1-0.9; the paper's MobileNets-224 cost profile)
  for N = 1..10 apps at budgets 50, 150 and 300, several seeds each.
- `fleet`: 100 apps on 10 cameras and 300 apps on 30 cameras, two base models, 16 cut points
  x 13 rates, decode cost per camera (`generate_fleet_problem`).
- `classic`: the earlier table: Mainstream against both baselines on the MobileNet-v1-like
  workload, exact and greedy times.

Every plan is one `make_plan` call (option tables included) with the default `auto` solver
and a time limit (`--time-limit`, default 1 s). Columns: median and max wall time, stalls
(answers that came back later than the limit), how many were proven optimal, the relative
optimality gap each plan reports, and the value against HiGHS (`solve_milp` with a generous
limit, `--milp-limit`): the largest amount by which HiGHS's schedule beats ours (never
positive when ours is proven optimal), and how often HiGHS's proven optimum lies above our
bound (must be 0).

Run: `python bench/scheduler.py [--suite paper,fleet,classic] [--quick] [--seeds N]`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

# Run as `python bench/scheduler.py`, this folder comes first on the import path and the file's
# name would hide the `scheduler` package; measure the checkout this file belongs to.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [
    entry for entry in sys.path if Path(entry or ".").resolve() != _HERE
]

from scheduler.milp import solve_milp  # noqa: E402
from scheduler.options import build_option_tables, build_search_space  # noqa: E402
from scheduler.planner import make_plan  # noqa: E402
from scheduler.problem import Problem  # noqa: E402
from scheduler.workload import (  # noqa: E402
    generate_fleet_problem,
    generate_paper_problem,
    generate_problem,
    no_sharing_full_rate_cost,
)

PAPER_BUDGETS = (50.0, 150.0, 300.0)
FLEETS = ((100, 10), (300, 30))
CLASSIC_BUDGET_FRACTIONS = (0.02, 0.05, 0.25)
STALL_GRACE = 1.02  # a plan is late when it took longer than this times its limit
BOUND_TOLERANCE = 1e-7


@dataclass
class Row:
    """Measurements of one group of problems."""

    label: str
    times: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    milp_ahead: list[float] = field(default_factory=list)  # HiGHS value - ours
    bound_violations: int = 0
    milp_proven: int = 0

    def add(self, problem: Problem, time_limit_s: float, milp_limit_s: float | None) -> None:
        started = time.perf_counter()
        plan = make_plan(problem, with_baselines=False, time_limit_s=time_limit_s)
        self.times.append(time.perf_counter() - started)
        assert plan.optimality_gap is not None and plan.upper_bound is not None
        self.gaps.append(plan.optimality_gap)
        if milp_limit_s is None:
            return
        space = build_search_space(problem, build_option_tables(problem))
        reference = solve_milp(space, problem.objective, time_limit_s=milp_limit_s)
        if reference is None:
            return
        value = reference.value(problem.objective)
        self.milp_ahead.append(value - plan.value)
        if reference.upper_bound == value:
            self.milp_proven += 1
            if value > plan.upper_bound + BOUND_TOLERANCE:
                self.bound_violations += 1

    def line(self, time_limit_s: float) -> str:
        late = sum(elapsed > STALL_GRACE * time_limit_s for elapsed in self.times)
        proven = sum(gap == 0.0 for gap in self.gaps)
        ahead = f"{max(self.milp_ahead):+10.2e}" if self.milp_ahead else f"{'n/a':>10}"
        milp = (
            f"{self.milp_proven:>3}/{len(self.milp_ahead):<3}" if self.milp_ahead else f"{'-':>7}"
        )
        return (
            f"{self.label:<18} {len(self.times):>3} | {statistics.median(self.times):8.3f} "
            f"{max(self.times):7.3f} {late:>6} | {proven:>3}/{len(self.times):<3} "
            f"{statistics.median(self.gaps):9.1e} {max(self.gaps):9.1e} | {ahead} {milp} "
            f"{self.bound_violations:>5}"
        )


HEADER = (
    f"{'problems':<18} {'n':>3} | {'median s':>8} {'max s':>7} {'stalls':>6} | "
    f"{'proven':>7} {'med gap':>9} {'max gap':>9} | {'HiGHS-ours':>10} {'HiGHS':>7} "
    f"{'viol':>5}"
)


def paper_suite(seeds: range, sizes: range, time_limit_s: float, milp_limit_s: float) -> None:
    print("\nPaper-shaped problems (one camera, flat curves with near-ties, late cliff, 19 rates)")
    _table_head()
    total = Row("all paper")
    for size in sizes:
        for budget in PAPER_BUDGETS:
            row = Row(f"N={size:<2} budget {budget:g}")
            for seed in seeds:
                row.add(generate_paper_problem(size, seed, budget), time_limit_s, milp_limit_s)
            print(row.line(time_limit_s), flush=True)
            _merge(total, row)
    print("-" * len(HEADER))
    print(total.line(time_limit_s))


def fleet_suite(seeds: range, time_limit_s: float, milp_limit_s: float | None) -> None:
    print("\nMulti-camera fleets (two base models, 16 cuts x 13 rates, decode per camera)")
    _table_head()
    for apps, cameras in FLEETS:
        row = Row(f"{apps} apps {cameras} cams")
        for seed in seeds:
            problem = generate_fleet_problem(apps, num_cameras=cameras, seed=seed)
            row.add(problem, time_limit_s, milp_limit_s)
        print(row.line(time_limit_s), flush=True)


def classic_suite(seeds: range, sizes: tuple[int, ...], time_limit_s: float) -> None:
    print("\nMobileNet-v1-like workload, one camera: Mainstream vs baselines (mean event F1)")
    header = (
        f"{'apps':>4} {'budget':>6} | {'Mainstr':>7} {'Max-Sh':>7} {'No-Sh':>7} | "
        f"{'auto med s':>10} {'gap max':>8} | {'greedy med s':>12} {'F1 lost max':>11}"
    )
    print(header)
    print("-" * len(header))
    for size in sizes:
        for fraction in CLASSIC_BUDGET_FRACTIONS:
            times, greedy_times, gaps, lost = [], [], [], []
            values: dict[str, list[float]] = {"main": [], "max": [], "no": []}
            for seed in seeds:
                problem = generate_problem(size, seed=seed)
                assert problem.profile is not None
                problem.budget = fraction * no_sharing_full_rate_cost(
                    problem.profile, size, problem.camera_fps
                )
                started = time.perf_counter()
                plan = make_plan(problem, time_limit_s=time_limit_s)
                times.append(time.perf_counter() - started)
                assert plan.optimality_gap is not None
                gaps.append(plan.optimality_gap)
                started = time.perf_counter()
                greedy = make_plan(
                    problem, solver="greedy", with_baselines=False, time_limit_s=time_limit_s
                )
                greedy_times.append(time.perf_counter() - started)
                lost.append(plan.value - greedy.value)
                values["main"].append(plan.value)
                values["max"].append(plan.baselines["max_sharing"].value)
                values["no"].append(plan.baselines["no_sharing"].value)
            main_f1, max_f1, no_f1 = (statistics.mean(values[key]) for key in ("main", "max", "no"))
            print(
                f"{size:>4} {fraction:>6.2f} | {main_f1:7.3f} {max_f1:7.3f} {no_f1:7.3f} | "
                f"{statistics.median(times):10.3f} {max(gaps):8.1e} | "
                f"{statistics.median(greedy_times):12.3f} {max(lost):11.4f}",
                flush=True,
            )
    print("auto med s: whole make_plan with both baselines; F1 lost: auto F1 - greedy F1.")


def _table_head() -> None:
    print(HEADER)
    print("-" * len(HEADER))


def _merge(total: Row, row: Row) -> None:
    total.times += row.times
    total.gaps += row.gaps
    total.milp_ahead += row.milp_ahead
    total.milp_proven += row.milp_proven
    total.bound_violations += row.bound_violations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--suite", default="paper,fleet", help="paper, fleet, classic (comma list)")
    parser.add_argument("--quick", action="store_true", help="fewer seeds and sizes")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per point (default 3)")
    parser.add_argument("--time-limit", type=float, default=1.0, help="seconds per plan")
    parser.add_argument("--milp-limit", type=float, default=20.0, help="seconds for HiGHS")
    parser.add_argument(
        "--fleet-milp", action="store_true", help="also run HiGHS on the fleets (minutes)"
    )
    arguments = parser.parse_args()
    suites = {name.strip() for name in arguments.suite.split(",")}
    seeds = range(arguments.seeds or (2 if arguments.quick else 3))
    started = time.perf_counter()
    print(
        f"time limit {arguments.time_limit:g} s per plan; HiGHS reference up to "
        f"{arguments.milp_limit:g} s; seeds {len(seeds)}"
    )
    if "paper" in suites:
        sizes = range(1, 11, 3) if arguments.quick else range(1, 11)
        paper_suite(seeds, sizes, arguments.time_limit, arguments.milp_limit)
    if "fleet" in suites:
        milp = arguments.milp_limit if arguments.fleet_milp else None
        fleet_suite(seeds, arguments.time_limit, milp)
    if "classic" in suites:
        sizes = (1, 3, 10, 30) if arguments.quick else (1, 2, 3, 5, 10, 20, 30)
        classic_suite(seeds, sizes, arguments.time_limit)
    print(
        "\nstalls: plans later than the limit; proven: gap 0 (optimal within 1e-9); gap: "
        "(bound - value) / bound as the plan reports it; HiGHS-ours: largest (HiGHS value - "
        "our value), positive only if HiGHS found better; HiGHS: problems it proved optimal / "
        "ran; viol: HiGHS optima above our proven bound (must be 0)."
    )
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
