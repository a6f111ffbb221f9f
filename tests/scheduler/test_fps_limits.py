"""Per-app frame-rate limits: the planner considers only the rates within an app's
[min_fps, max_fps], the baselines too, and a range with no rate in it is refused."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from mainstream.core.errors import InfeasibleError
from scheduler.options import build_app_options
from scheduler.planner import make_plan
from scheduler.problem import Problem
from tests.scheduler.instances import random_problem


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(min_value=0, max_value=10_000),
    low_share=st.floats(min_value=0.0, max_value=1.0),
    width=st.floats(min_value=0.0, max_value=1.0),
)
def test_plans_and_options_keep_each_app_within_its_rates(
    seed: int, low_share: float, width: float
) -> None:
    problem = random_problem(seed, max_apps=3, max_rates=4)
    rates = problem.fps_options
    low = rates[int(low_share * (len(rates) - 1))]
    high = rates[min(len(rates) - 1, int((low_share + width) * (len(rates) - 1)))]
    limited = problem.apps[0].model_copy(update={"min_fps": low, "max_fps": high})
    problem = Problem.model_validate(
        problem.model_dump()
        | {"apps": [limited.model_dump(), *(a.model_dump() for a in problem.apps[1:])]}
    )
    app = problem.apps[0]
    for sharing in ("shared", "no_sharing", "max_sharing"):
        options = build_app_options(problem, app, sharing)  # type: ignore[arg-type]
        assert {option.fps for option in options.options} == {f for f in rates if low <= f <= high}
    problem.budget *= 4  # the cheapest rate in range may cost more than the random budget
    try:
        plan = make_plan(problem, with_baselines=True, time_limit_s=2.0)
    except InfeasibleError:
        problem.budget = 1e9
        plan = make_plan(problem, with_baselines=True, time_limit_s=2.0)
    [planned] = [entry for entry in plan.apps if entry.name == app.name]
    assert low <= planned.fps <= high
    for baseline in plan.baselines.values():
        for entry in baseline.apps:
            if entry.name == app.name:
                assert low <= entry.fps <= high


def test_a_range_without_a_rate_is_refused_with_the_rates_there_are() -> None:
    problem = random_problem(3)
    data = problem.model_dump()
    data["fps_options"] = [1.0, 2.0, 5.0]
    data["camera_fps"] = 10.0
    data["apps"][0] |= {"min_fps": 2.5, "max_fps": 4.0}
    with pytest.raises(
        ValidationError, match=r"no frame rate in its range \[2.5, 4\] fps.*1, 2, 5"
    ):
        Problem.model_validate(data)
    data["apps"][0] |= {"min_fps": 4.0, "max_fps": 2.0}
    with pytest.raises(ValidationError, match="min_fps 4 is above max_fps 2"):
        Problem.model_validate(data)
