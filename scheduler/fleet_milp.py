"""The whole fleet as one mixed-integer program: the reference for the placement search.

Each node gets the node scheduler's program (milp.py) over every app it may run, with its
"one option per app" rows turned into "one option per app if its camera is here":
`sum_o x[a, n, o] = z[c(a), n]`, and each camera on exactly one node: `sum_n z[c, n] = 1`.
Nothing else changes, so an app left off a node costs and scores nothing there. `mean_f1`
maximises the weighted F1 sum; `min_f1` first the worst app's F1, then the mean at that floor.

It shares nothing with the placement search (fleet_placement.py) but the option tables, which
is what makes it a reference. Pure logic: numpy/scipy only, no I/O.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix, csr_matrix

from scheduler.deadline import Deadline
from scheduler.fleet import Fleet
from scheduler.milp import OBJECTIVE_SCALE, _build_model, _Model
from scheduler.options import SearchSpace, build_option_tables, build_search_space


@dataclass(frozen=True)
class FleetMilpResult:
    """What HiGHS found: the camera -> node assignment, its value and HiGHS's bound."""

    assignment: dict[str, str]
    value: float
    upper_bound: float
    optimal: bool
    solve_time_s: float


@dataclass
class _Block:
    node: str
    space: SearchSpace
    cameras: list[str]  # per app of the space: its camera
    offset: int = 0


def solve_fleet_milp(fleet: Fleet, time_limit_s: float = 60.0) -> FleetMilpResult | None:
    """The fleet's optimum by HiGHS within `time_limit_s`; None when it found no placement."""
    started = time.perf_counter()
    deadline = Deadline.after(time_limit_s)
    total_weight = fleet.total_weight()
    blocks: list[_Block] = []
    models = []
    for node in fleet.nodes:
        apps = [
            app
            for camera in fleet.cameras
            if node in fleet.eligible_nodes(camera)
            for app in camera.apps
        ]
        if not apps:
            continue
        problem = fleet.node_problem(node, apps)
        space = build_search_space(problem, build_option_tables(problem))
        share = sum(app.weight for app in problem.apps) / total_weight
        space = SearchSpace(
            budget=space.budget,
            tables=space.tables,
            segments=space.segments,
            segment_of=space.segment_of,
            rate=space.rate,
            f1=space.f1,
            score=[score * share for score in space.score],
            cost=space.cost,
            option_index=space.option_index,
        )
        model = _build_model(space, "mean_f1", None, deadline)
        if model is None:
            return None
        apps_here = space.num_apps
        # The node program's first rows are its "one option per app" rows.
        assert np.all(model.lower[:apps_here] == 1.0) and np.all(model.upper[:apps_here] == 1.0)
        blocks.append(_Block(node.name, space, [app.camera for app in problem.apps]))
        models.append(model)

    # Columns: every block's variables, then z[camera, node] for each eligible pair, then t.
    offset = 0
    for block, model in zip(blocks, models, strict=True):
        block.offset = offset
        offset += len(model.objective)
    pairs = [(c, b) for b, block in enumerate(blocks) for c in sorted(set(block.cameras))]
    z_index = {pair: offset + i for i, pair in enumerate(pairs)}
    t_index = offset + len(pairs)
    num_vars = t_index + 1

    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    lower: list[float] = []
    upper: list[float] = []
    row_base = 0
    for b, (block, model) in enumerate(zip(blocks, models, strict=True)):
        coo = model.matrix.tocoo()
        rows.extend((coo.row + row_base).tolist())
        cols.extend((coo.col + block.offset).tolist())
        vals.extend(coo.data.tolist())
        low, high = model.lower.copy(), model.upper.copy()
        for app, camera_of_app in enumerate(block.cameras):
            low[app] = high[app] = 0.0
            rows.append(row_base + app)
            cols.append(z_index[(camera_of_app, b)])
            vals.append(-1.0)
        lower.extend(low.tolist())
        upper.extend(high.tolist())
        row_base += len(low)
    for camera in fleet.cameras:
        for b in range(len(blocks)):
            if (camera.name, b) in z_index:
                rows.append(row_base)
                cols.append(z_index[(camera.name, b)])
                vals.append(1.0)
        lower.append(1.0)
        upper.append(1.0)
        row_base += 1
    bounds_low = np.zeros(num_vars)
    bounds_high = np.ones(num_vars)
    integrality = np.ones(num_vars)
    for block, model in zip(blocks, models, strict=True):
        end = block.offset + len(model.objective)
        bounds_low[block.offset : end] = model.bounds_low
        bounds_high[block.offset : end] = model.bounds_high
        integrality[block.offset : end] = model.integrality
    integrality[t_index] = 0
    bounds_high[t_index] = 0.0  # t only matters for min_f1

    base = (rows, cols, vals, lower, upper, row_base)
    mean_objective = np.zeros(num_vars)
    for block, model in zip(blocks, models, strict=True):
        mean_objective[block.offset : block.offset + len(model.objective)] = model.objective
    if fleet.objective == "min_f1":
        # Stage 1: t <= F1 of every app, wherever it runs.
        t_rows = _floor_rows(blocks, models, t_index, row_base)
        objective = np.zeros(num_vars)
        objective[t_index] = -1.0
        high = bounds_high.copy()
        high[t_index] = 1.0
        found = _run(base, t_rows, objective, integrality, bounds_low, high, deadline)
        if found is None:
            return None
        floor = float(found[0][t_index])
        floor_bound = found[2]
        # Stage 2: the best mean with every chosen option at or above the floor.
        high = bounds_high.copy()
        for block, model in zip(blocks, models, strict=True):
            for start, f1 in zip(model.x_offset, block.space.f1, strict=True):
                too_low = np.nonzero(f1 < floor - 1e-9)[0]
                high[block.offset + start + too_low] = 0.0
        second = _run(base, NO_ROWS, mean_objective, integrality, bounds_low, high, deadline)
        x = second[0] if second is not None else found[0]
        assignment = _assignment(x, z_index, blocks)
        return FleetMilpResult(
            assignment=assignment,
            value=floor,
            upper_bound=max(floor, floor_bound),
            optimal=found[3],
            solve_time_s=time.perf_counter() - started,
        )
    found = _run(base, NO_ROWS, mean_objective, integrality, bounds_low, bounds_high, deadline)
    if found is None:
        return None
    x, value, bound, optimal = found
    return FleetMilpResult(
        assignment=_assignment(x, z_index, blocks),
        value=value,
        upper_bound=max(value, bound),
        optimal=optimal,
        solve_time_s=time.perf_counter() - started,
    )


Rows = tuple[list[int], list[int], list[float], list[float], list[float]]
"""(row, column, value) entries and each row's lower and upper limit."""

NO_ROWS: Rows = ([], [], [], [], [])


def _floor_rows(blocks: list[_Block], models: list[_Model], t_index: int, row_base: int) -> Rows:
    """Rows `t - sum over nodes and options of F1 * x <= 0`, one per app."""
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    lower: list[float] = []
    upper: list[float] = []
    entries: dict[str, list[tuple[int, float]]] = {}
    for block, model in zip(blocks, models, strict=True):
        for app, (start, f1) in enumerate(zip(model.x_offset, block.space.f1, strict=True)):
            name = block.space.tables[app].name
            entries.setdefault(name, []).extend(
                (block.offset + start + o, -float(v)) for o, v in enumerate(f1.tolist())
            )
    for row, (_, items) in enumerate(sorted(entries.items())):
        rows.append(row_base + row)
        cols.append(t_index)
        vals.append(1.0)
        for col, value in items:
            rows.append(row_base + row)
            cols.append(col)
            vals.append(value)
        lower.append(-np.inf)
        upper.append(0.0)
    return rows, cols, vals, lower, upper


def _run(
    base: tuple[list[int], list[int], list[float], list[float], list[float], int],
    extra: Rows,
    objective: np.ndarray,
    integrality: np.ndarray,
    bounds_low: np.ndarray,
    bounds_high: np.ndarray,
    deadline: Deadline,
) -> tuple[np.ndarray, float, float, bool] | None:
    """HiGHS on the base rows plus `extra`: (x, value, dual bound, optimal) or None."""
    rows, cols, vals, lower, upper, num_rows = base
    extra_rows, extra_cols, extra_vals, extra_lower, extra_upper = extra
    shape = (num_rows + len(extra_lower), len(objective))
    matrix: csr_matrix = coo_matrix(
        (vals + extra_vals, (rows + extra_rows, cols + extra_cols)), shape=shape
    ).tocsr()
    result = milp(
        OBJECTIVE_SCALE * objective,
        constraints=LinearConstraint(
            matrix, np.array(lower + extra_lower), np.array(upper + extra_upper)
        ),
        integrality=integrality,
        bounds=Bounds(bounds_low, bounds_high),
        options={"time_limit": max(1e-3, deadline.remaining()), "mip_rel_gap": 0.0},
    )
    if result.x is None:
        return None
    value = -float(result.fun) / OBJECTIVE_SCALE
    dual = getattr(result, "mip_dual_bound", None)
    bound = -float(dual) / OBJECTIVE_SCALE if dual is not None and np.isfinite(dual) else np.inf
    return result.x, value, bound, result.status == 0


def _assignment(
    x: np.ndarray, z_index: dict[tuple[str, int], int], blocks: list[_Block]
) -> dict[str, str]:
    return {camera: blocks[b].node for (camera, b), col in z_index.items() if x[col] > 0.5}
