"""A problem built from the original paper's data that once stalled the exact search.

Three apps with nearly flat, near-tied accuracy curves over 16 cut points and 19 rates, budget
50: the old branch-and-bound ran for minutes. It must now answer at once, and exactly.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.planner import make_plan
from scheduler.problem import Problem

CASE = Path(__file__).resolve().parent / "data" / "scheduler-stall.json"


@pytest.mark.timeout(60)  # a hang guard, not a speed target (0.02 s measured)
def test_the_paper_data_problem_that_stalled_is_solved_exactly() -> None:
    problem = Problem.model_validate_json(CASE.read_text(encoding="utf-8"))
    exact = make_plan(problem, solver="exact", with_baselines=False)
    milp = make_plan(problem, solver="milp", with_baselines=False)
    assert exact.value == pytest.approx(milp.value, abs=1e-6)
    assert exact.total_cost <= problem.budget + 1e-9
