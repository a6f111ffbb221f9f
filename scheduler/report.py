"""Human-readable views of a plan and of a sweep: aligned text tables and a one-file HTML report.

Everything here builds strings; the caller decides where they go. The HTML report is fully
self-contained (inline CSS and SVG charts drawn by the small helpers below, no scripts, no
external resources) so it can be mailed or archived as a single file.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

from mainstream import __version__
from scheduler.event_model import event_quality_for_rates
from scheduler.problem import AppPlan, AppSpec, BaselinePlan, Candidate, Plan, Problem
from scheduler.sweep import (
    STRATEGIES,
    STRATEGY_LABELS,
    Strategy,
    SweepPoint,
    SweepResult,
)
from scheduler.sweep import budget_unit as sweep_budget_unit

STRATEGY_COLORS: dict[Strategy, str] = {
    "mainstream": "#2563eb",
    "max_sharing": "#ea8a1a",
    "no_sharing": "#8b5cf6",
}
# Distinct, colour-blind-friendly hues for per-app series (Tableau 10).
APP_COLORS = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)
STEM_COLOR = "#94a3b8"
OBJECTIVE_LABELS = {"mean_f1": "mean event F1", "min_f1": "minimum event F1"}
BASELINE_KEYS: tuple[Strategy, ...] = ("max_sharing", "no_sharing")


# --------------------------------------------------------------------------------------------
# Plain-text views


def _proof_note(plan: Plan) -> str:
    """How good the plan is proven to be, when the plan says (plans before bounds do not)."""
    if plan.optimality_gap is None:
        return ""
    if plan.optimality_gap == 0.0:
        return ", proven optimal"
    return f", within {100 * plan.optimality_gap:.3g} % of optimal"


def format_plan(plan: Plan, problem: Problem | None = None) -> str:
    """The plan as aligned text: a summary, one row per app, and the baselines beside it."""
    unit = budget_unit(problem)
    objective = OBJECTIVE_LABELS.get(plan.objective, plan.objective)
    lines: list[str] = []
    if problem is not None:
        lines.append(f"Mainstream schedule: {describe_problem(problem)}")
        lines.append("")
    lines.append(f"  Objective  {objective} = {plan.value:.3f}{_baseline_summary(plan)}")
    lines.append(
        f"  Cost       {_num(plan.total_cost)} of {_num(plan.budget)} {unit} budget "
        f"({_percent(plan.total_cost, plan.budget)})"
    )
    lines.append(f"  Solver     {plan.solver}, {plan.solve_time_s:.3f} s{_proof_note(plan)}")
    if plan.confidence is not None or any(app.f1_interval is not None for app in plan.apps):
        lines.append(f"  Planned on {planned_on(plan.confidence)}")
    lines.append("")

    show_camera = len({app.camera for app in plan.apps}) > 1
    show_base = len({app.base_model for app in plan.apps}) > 1
    show_interval = any(app.f1_interval is not None for app in plan.apps)
    headers = ["App"]
    headers += ["Camera"] if show_camera else []
    headers += ["Base"] if show_base else []
    headers += ["Cut point", "FPS", "X", "Recall", "Precision", "F1"]
    headers += ["F1 90% interval"] if show_interval else []
    headers += ["Cost", "Share"]
    rows: list[list[str]] = []
    for app in plan.apps:
        row = [app.name]
        row += [app.camera] if show_camera else []
        row += [app.base_model] if show_base else []
        row += [
            app.cut_point,
            _fps(app.fps),
            str(app.x_vote),
            f"{app.recall:.3f}",
            f"{app.precision:.3f}",
            f"{app.f1:.3f}",
        ]
        row += [f1_interval_text(app)] if show_interval else []
        row += [_num(app.cost), _percent(app.cost, plan.total_cost)]
        rows.append(row)
    stem_cost = shared_stem_cost(plan)
    if stem_cost is not None:
        padding = [""] * (len(headers) - 3)
        rows.append(
            ["shared stem", *padding, _num(stem_cost), _percent(stem_cost, plan.total_cost)]
        )
    first_numeric = 2 + int(show_camera) + int(show_base)
    lines += text_table(headers, rows, right_from=first_numeric)
    lines += [
        f"  warning: {app.name}: thin evidence, {app.evidence_warning}"
        for app in plan.apps
        if app.evidence_warning
    ]

    if plan.baselines:
        lines.append("")
        lines.append("Compared with the baselines (same budget, same event model):")
        lines += text_table(*_baseline_rows(plan, unit), right_from=1)

    lines.append("")
    lines += _plan_legend(problem)
    if show_interval:
        lines += [
            "F1 90% interval: the event model at the ends of the 90 % intervals of each app's",
            "     per-frame recall, false-positive rate (from their held-out counts) and correlation.",
        ]
    return "\n".join(lines) + "\n"


def format_sweep(sweep: SweepResult) -> str:
    """One row per (workload size, budget): each strategy's objective value and the gain."""
    unit = sweep.budget_unit
    objective = OBJECTIVE_LABELS.get(sweep.objective, sweep.objective)
    source = {
        "problem": "the given problem",
        "problem_subsets": "the first N apps of the given problem",
        "generated": f"generated workloads (seed {sweep.seed})",
    }[sweep.source]
    lines = [
        f"Mainstream vs baselines on {source}: {objective}, {sweep.solver} solver",
        "",
    ]
    budget_header = f"Budget ({unit})" if unit else "Budget"
    headers = ["Apps", budget_header, *(STRATEGY_LABELS[s] for s in STRATEGIES), "Gain"]
    rows = []
    for num_apps in sweep.app_counts():
        for point in sweep.points_for(num_apps):
            gain = point.gain_over_best_baseline()
            rows.append(
                [
                    str(point.num_apps),
                    _num(point.budget),
                    *(_value_or_infeasible(point.outcome(s).value) for s in STRATEGIES),
                    "-" if gain is None else _signed(gain),
                ]
            )
    lines += text_table(headers, rows, right_from=0)
    lines.append("")
    lines.append(
        "Gain: Mainstream minus the better baseline. 'infeasible': nothing fits that budget."
    )
    return "\n".join(lines) + "\n"


def text_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right_from: int) -> list[str]:
    """Aligned columns; columns at index >= `right_from` are right-aligned (numbers)."""
    widths = [len(header) for header in headers]
    for row in rows:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], len(cell))

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.rjust(widths[index]) if index >= right_from else cell.ljust(widths[index])
            for index, cell in enumerate(cells)
        ]
        return "  ".join(padded).rstrip()

    separator = "  ".join("-" * width for width in widths)
    return [line(headers), separator, *(line(row) for row in rows)]


def f1_interval_text(app: AppPlan) -> str:
    """`[0.612, 0.874]`, or `-` when the app's figures carry no held-out counts."""
    if app.f1_interval is None:
        return "-"
    low, high = app.f1_interval
    return f"[{low:.3f}, {high:.3f}]"


def planned_on(confidence: float | None) -> str:
    """What a plan took for the per-frame figures, in words."""
    if confidence is None:
        return "the posterior means of the per-frame recall and false-positive rate"
    return (
        f"pessimistic quantiles at confidence {confidence:g} (recall's "
        f"{1 - confidence:.0%} quantile, false-positive rate's {confidence:.0%})"
    )


def _baseline_summary(plan: Plan) -> str:
    parts = []
    for key in BASELINE_KEYS:
        baseline = plan.baselines.get(key)
        if baseline is not None:
            value = f"{baseline.value:.3f}" if baseline.feasible else "does not fit"
            parts.append(f"{STRATEGY_LABELS[key]} {value}")
    return f"   (baselines: {', '.join(parts)})" if parts else ""


def _baseline_rows(plan: Plan, unit: str) -> tuple[list[str], list[list[str]]]:
    keys = [key for key in BASELINE_KEYS if key in plan.baselines]
    headers = ["", STRATEGY_LABELS["mainstream"], *(STRATEGY_LABELS[key] for key in keys)]
    baselines = [plan.baselines[key] for key in keys]
    objective = OBJECTIVE_LABELS.get(plan.objective, plan.objective)
    rows = [
        [objective, f"{plan.value:.3f}", *(_baseline_value(b) for b in baselines)],
        [
            f"cost ({unit})",
            _num(plan.total_cost),
            *(_num(b.total_cost) if b.feasible else "-" for b in baselines),
        ],
    ]
    for app in plan.apps:
        cells = [f"F1 {app.name}", _f1_at_rate(app)]
        for baseline in baselines:
            match = _app_in(baseline, app.name)
            cells.append(_f1_at_rate(match) if match is not None and baseline.feasible else "-")
        rows.append(cells)
    return headers, rows


def _plan_legend(problem: Problem | None) -> list[str]:
    camera = f" (camera: {_fps(problem.camera_fps)} fps)" if problem is not None else ""
    return [
        "Cut point: layers up to it are frozen and computed once for every app that shares them;",
        "           'input' shares nothing, the deepest cut shares the whole body (Max-Sharing).",
        f"FPS: frames each app analyses per second{camera}. X: consecutive positive frames",
        "     needed to report an event. Recall/Precision/F1 are per event, not per frame.",
        "Cost: the app's own layers plus an even part of each shared stem frame it uses;",
        "      Share: that cost as a fraction of the whole schedule's.",
        "Max-Sharing puts every app on the deepest cut; No-Sharing runs each app's most accurate",
        "model end to end. Both are searched with the same budget and event model.",
    ]


# --------------------------------------------------------------------------------------------
# Shared helpers


def describe_problem(problem: Problem) -> str:
    bases = ", ".join(profile.base_model for profile in problem.all_profiles())
    cameras = sorted({app.camera for app in problem.apps})
    camera_text = "1 camera" if len(cameras) == 1 else f"{len(cameras)} cameras"
    return (
        f"{_apps(len(problem.apps))} on {bases}, {camera_text} at {_fps(problem.camera_fps)} fps, "
        f"budget {_num(problem.budget)} {budget_unit(problem)}"
    )


def budget_unit(problem: Problem | None) -> str:
    """The budget's unit, e.g. 'ms/s' (cost per frame times frames per second)."""
    return "cost/s" if problem is None else sweep_budget_unit(problem)


def shared_stem_cost(plan: Plan) -> float | None:
    """Cost not attributed to any app (shared stem, decoding); None when there is none."""
    remainder = plan.total_cost - sum(app.cost for app in plan.apps)
    return remainder if remainder > 1e-9 * max(1.0, plan.total_cost) else None


def _app_in(baseline: BaselinePlan, name: str) -> AppPlan | None:
    return next((app for app in baseline.apps if app.name == name), None)


def _baseline_value(baseline: BaselinePlan) -> str:
    return f"{baseline.value:.3f}" if baseline.feasible else "does not fit"


def _f1_at_rate(app: AppPlan) -> str:
    return f"{app.f1:.3f} @ {_fps(app.fps)} fps"


def _signed(value: float) -> str:
    """'+0.123'; a rounding-level negative prints as +0.000, not -0.000."""
    return f"{round(value, 3) + 0.0:+.3f}"


def _value_or_infeasible(value: float | None) -> str:
    return "infeasible" if value is None else f"{value:.3f}"


def _num(value: float) -> str:
    """Costs and budgets: one decimal from 10 up, two from 1, three significant digits below."""
    magnitude = abs(value)
    if magnitude >= 1000:
        text = f"{value:.0f}"
    elif magnitude >= 10:
        text = f"{value:.1f}"
    elif magnitude >= 1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3g}"
    if "." in text and "e" not in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _fps(value: float) -> str:
    return f"{value:g}"


def _percent(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole > 0 else "-"


# --------------------------------------------------------------------------------------------
# SVG charts


@dataclass(frozen=True)
class ChartSeries:
    """One line of a line chart; a None y breaks the line (e.g. an infeasible budget)."""

    label: str
    points: Sequence[tuple[float, float | None]]
    color: str
    dashed: bool = False
    markers: bool = True
    highlight: tuple[float, float] | None = None
    highlight_label: str = ""


@dataclass(frozen=True)
class _Frame:
    """Plot area and the mapping from data to pixels."""

    left: float
    top: float
    width: float
    height: float
    x_min: float
    x_max: float
    y_min: float
    y_max: float
    x_log: bool

    def x(self, value: float) -> float:
        if self.x_log:
            low, high, value = math.log10(self.x_min), math.log10(self.x_max), math.log10(value)
        else:
            low, high = self.x_min, self.x_max
        return self.left + (value - low) / (high - low) * self.width

    def y(self, value: float) -> float:
        clamped = min(max(value, self.y_min), self.y_max)
        return self.top + (1.0 - (clamped - self.y_min) / (self.y_max - self.y_min)) * self.height

    @property
    def bottom(self) -> float:
        return self.top + self.height

    @property
    def right(self) -> float:
        return self.left + self.width


def line_chart_svg(
    series: Sequence[ChartSeries],
    *,
    x_label: str,
    y_label: str,
    x_log: bool = False,
    y_range: tuple[float, float] = (0.0, 1.0),
    marker_x: float | None = None,
    marker_label: str = "",
    width: int = 720,
    height: int = 380,
    description: str = "",
) -> str:
    """A line chart with grid, ticks, axis labels, a legend and hover titles on the points."""
    xs = [x for one in series for x, y in one.points if y is not None]
    if marker_x is not None:
        xs.append(marker_x)
    if not xs:
        return _empty_chart(width, height, "no feasible points to plot")
    x_min, x_max = min(xs), max(xs)
    if x_log:
        x_ticks = log_ticks(x_min, x_max)
    else:
        x_ticks = nice_ticks(x_min, x_max)
        x_min, x_max = x_ticks[0], x_ticks[-1]
    if x_max <= x_min:
        x_min, x_max = (x_min / 2, x_min * 2) if x_log else (x_min - 1, x_max + 1)
        x_ticks = log_ticks(x_min, x_max) if x_log else nice_ticks(x_min, x_max)
    y_ticks = nice_ticks(*y_range, target=5)

    legend_rows = _legend_layout([(one.label, one.color, one.dashed) for one in series], width - 80)
    top = 20 + 22 * len(legend_rows)
    frame = _Frame(
        left=64,
        top=top,
        width=width - 64 - 24,
        height=height - top - 56,
        x_min=x_min,
        x_max=x_max,
        y_min=y_ticks[0],
        y_max=y_ticks[-1],
        x_log=x_log,
    )
    parts = [_svg_open(width, height, description or f"{y_label} vs {x_label}")]
    parts += _axes(frame, x_ticks, y_ticks, x_label, y_label)
    if marker_x is not None and frame.x_min <= marker_x <= frame.x_max:
        px = frame.x(marker_x)
        parts.append(
            f'<line x1="{px:.1f}" y1="{frame.top:.1f}" x2="{px:.1f}" y2="{frame.bottom:.1f}" '
            'stroke="#64748b" stroke-width="1.2" stroke-dasharray="2 4"/>'
        )
        if marker_label:
            anchor = "end" if px > frame.left + frame.width * 0.8 else "start"
            offset = -6 if anchor == "end" else 6
            parts.append(
                f'<text x="{px + offset:.1f}" y="{frame.top + 14:.1f}" class="note" '
                f'text-anchor="{anchor}">{_esc(marker_label)}</text>'
            )
    for one in series:
        parts += _series_shapes(frame, one)
    parts += _legend_shapes(legend_rows, left=frame.left, top=14)
    parts.append("</svg>")
    return "\n".join(parts)


def bar_chart_svg(
    categories: Sequence[str],
    groups: Sequence[tuple[str, Sequence[float | None], str]],
    *,
    y_label: str,
    y_range: tuple[float, float] = (0.0, 1.0),
    width: int = 720,
    height: int = 340,
    description: str = "",
) -> str:
    """Grouped vertical bars: one group per category, one bar per (label, values, colour)."""
    if not categories or not groups:
        return _empty_chart(width, height, "nothing to plot")
    y_ticks = nice_ticks(*y_range, target=5)
    legend_rows = _legend_layout([(label, color, False) for label, _, color in groups], width - 80)
    longest = max(len(name) for name in categories)
    rotate = longest * 7 > (width - 100) / len(categories)
    bottom_space = 40 + (min(longest, 24) * 5 if rotate else 0)
    top = 20 + 22 * len(legend_rows)
    frame = _Frame(
        left=64,
        top=top,
        width=width - 64 - 24,
        height=height - top - bottom_space,
        x_min=0.0,
        x_max=float(len(categories)),
        y_min=y_ticks[0],
        y_max=y_ticks[-1],
        x_log=False,
    )
    parts = [_svg_open(width, height, description or f"{y_label} per category")]
    parts += _axes(frame, [], y_ticks, "", y_label)
    slot = frame.width / len(categories)
    bar_width = min(28.0, slot * 0.8 / len(groups))
    for index, name in enumerate(categories):
        center = frame.left + slot * (index + 0.5)
        first = center - bar_width * len(groups) / 2
        for group_index, (label, values, color) in enumerate(groups):
            value = values[index] if index < len(values) else None
            x = first + group_index * bar_width
            if value is None:
                parts.append(
                    f'<text x="{x + bar_width / 2:.1f}" y="{frame.bottom - 4:.1f}" class="na" '
                    f'text-anchor="middle">–<title>{_esc(label)}: {_esc(name)} not scheduled</title></text>'
                )
                continue
            y = frame.y(value)
            parts.append(
                f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{bar_width - 2:.1f}" '
                f'height="{max(frame.bottom - y, 0.5):.1f}" fill="{color}" rx="2">'
                f"<title>{_esc(label)} · {_esc(name)}: {value:.3f}</title></rect>"
            )
        label_y = frame.bottom + 16
        if rotate:
            parts.append(
                f'<text x="{center:.1f}" y="{label_y:.1f}" class="tick" text-anchor="end" '
                f'transform="rotate(-35 {center:.1f} {label_y:.1f})">{_esc(name)}</text>'
            )
        else:
            parts.append(
                f'<text x="{center:.1f}" y="{label_y:.1f}" class="tick" '
                f'text-anchor="middle">{_esc(name)}</text>'
            )
    parts += _legend_shapes(legend_rows, left=frame.left, top=14, boxes=True)
    parts.append("</svg>")
    return "\n".join(parts)


def budget_use_svg(
    segments: Sequence[tuple[str, float, str]], budget: float, unit: str, width: int = 720
) -> str:
    """One horizontal bar as wide as the budget, split into the parts that spend it."""
    shown = [(label, cost, color) for label, cost, color in segments if cost > 0]
    legend_rows = _legend_layout([(label, color, False) for label, _, color in shown], width - 16)
    height = 70 + 22 * len(legend_rows)
    left, right = 8.0, width - 8.0
    spent = sum(cost for _, cost, _ in shown)
    scale = (right - left) / max(budget, spent, 1e-12)
    parts = [_svg_open(width, height, f"use of the {_num(budget)} {unit} budget")]
    parts.append(
        f'<rect x="{left}" y="8" width="{budget * scale:.1f}" height="28" rx="4" '
        'fill="#f1f5f9" stroke="#cbd5e1"/>'
    )
    x = left
    for label, cost, color in shown:
        parts.append(
            f'<rect x="{x:.1f}" y="8" width="{cost * scale:.1f}" height="28" fill="{color}" '
            f'stroke="#fff" stroke-width="1"><title>{_esc(label)}: {_num(cost)} {_esc(unit)} '
            f"({_percent(cost, budget)} of the budget)</title></rect>"
        )
        x += cost * scale
    parts.append(
        f'<text x="{left}" y="54" class="tick">0</text>'
        f'<text x="{left + budget * scale:.1f}" y="54" class="tick" text-anchor="end">'
        f"budget {_num(budget)} {_esc(unit)} · used {_num(spent)} ({_percent(spent, budget)})</text>"
    )
    parts += _legend_shapes(legend_rows, left=left, top=78, boxes=True)
    parts.append("</svg>")
    return "\n".join(parts)


def nice_ticks(low: float, high: float, target: int = 6) -> list[float]:
    """Round tick values covering [low, high] with about `target` intervals (1-2-2.5-5 steps)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"tick range must be finite: {low}, {high}")
    if high < low:
        low, high = high, low
    if high == low:
        pad = abs(low) * 0.1 or 1.0
        low, high = low - pad, high + pad
    raw_step = (high - low) / max(target, 1)
    magnitude = 10 ** math.floor(math.log10(raw_step))
    step = next(
        factor * magnitude for factor in (1, 2, 2.5, 5, 10) if factor * magnitude >= raw_step
    )
    start = math.floor(low / step + 1e-9) * step
    stop = math.ceil(high / step - 1e-9) * step
    count = round((stop - start) / step)
    return [_clean(start + index * step) for index in range(count + 1)]


def log_ticks(low: float, high: float) -> list[float]:
    """1-2-5 ticks inside [low, high] for a log axis (always at least the two ends)."""
    if low <= 0 or high <= 0:
        raise ValueError(f"log axis needs positive values: {low}, {high}")
    ticks = []
    for exponent in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1):
        for mantissa in (1, 2, 5):
            value = _clean(mantissa * 10.0**exponent)
            if low * (1 - 1e-9) <= value <= high * (1 + 1e-9):
                ticks.append(value)
    return ticks if len(ticks) >= 2 else sorted({_clean(low), _clean(high)})


def _clean(value: float) -> float:
    return float(f"{value:.10g}")


def _svg_open(width: int, height: int, description: str) -> str:
    # Each chart carries its own styles, so it also renders right when saved on its own.
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{_esc(description)}" '
        f'class="chart"><style>{_SVG_CSS}</style>'
    )


_SVG_CSS = (
    "text{font-family:system-ui,-apple-system,'Segoe UI',Roboto,Arial,sans-serif}"
    ".grid{stroke:#e5e9f0;stroke-width:1}"
    ".axis{stroke:#94a3b8;stroke-width:1.2;fill:none}"
    ".tick{fill:#475569;font-size:12px}"
    ".label{fill:#334155;font-size:13px;font-weight:600}"
    ".legend{fill:#1e293b;font-size:13px}"
    ".note{fill:#64748b;font-size:12px;font-style:italic}"
    ".na{fill:#94a3b8;font-size:14px}"
)


def _axes(
    frame: _Frame, x_ticks: Sequence[float], y_ticks: Sequence[float], x_label: str, y_label: str
) -> list[str]:
    parts = [
        f'<rect x="{frame.left:.1f}" y="{frame.top:.1f}" width="{frame.width:.1f}" '
        f'height="{frame.height:.1f}" fill="#fbfcfe"/>'
    ]
    for tick in y_ticks:
        y = frame.y(tick)
        parts.append(
            f'<line x1="{frame.left:.1f}" y1="{y:.1f}" x2="{frame.right:.1f}" y2="{y:.1f}" '
            'class="grid"/>'
        )
        parts.append(
            f'<text x="{frame.left - 8:.1f}" y="{y + 4:.1f}" class="tick" '
            f'text-anchor="end">{_tick_label(tick)}</text>'
        )
    for tick in x_ticks:
        x = frame.x(tick)
        parts.append(
            f'<line x1="{x:.1f}" y1="{frame.top:.1f}" x2="{x:.1f}" y2="{frame.bottom:.1f}" '
            'class="grid"/>'
        )
        parts.append(
            f'<text x="{x:.1f}" y="{frame.bottom + 18:.1f}" class="tick" '
            f'text-anchor="middle">{_tick_label(tick)}</text>'
        )
    parts.append(
        f'<path d="M{frame.left:.1f},{frame.top:.1f} V{frame.bottom:.1f} H{frame.right:.1f}" '
        'class="axis"/>'
    )
    if x_label:
        parts.append(
            f'<text x="{frame.left + frame.width / 2:.1f}" y="{frame.bottom + 42:.1f}" '
            f'class="label" text-anchor="middle">{_esc(x_label)}</text>'
        )
    if y_label:
        cy = frame.top + frame.height / 2
        parts.append(
            f'<text x="16" y="{cy:.1f}" class="label" text-anchor="middle" '
            f'transform="rotate(-90 16 {cy:.1f})">{_esc(y_label)}</text>'
        )
    return parts


def _series_shapes(frame: _Frame, series: ChartSeries) -> list[str]:
    parts = []
    dash = ' stroke-dasharray="6 4"' if series.dashed else ""
    for run in _runs(series.points):
        path = " ".join(
            f"{'M' if index == 0 else 'L'}{frame.x(x):.1f},{frame.y(y):.1f}"
            for index, (x, y) in enumerate(run)
        )
        parts.append(
            f'<path d="{path}" fill="none" stroke="{series.color}" stroke-width="2.4" '
            f'stroke-linejoin="round" stroke-linecap="round"{dash}/>'
        )
        if series.markers:
            for x, y in run:
                parts.append(
                    f'<circle cx="{frame.x(x):.1f}" cy="{frame.y(y):.1f}" r="3.6" '
                    f'fill="#fff" stroke="{series.color}" stroke-width="2">'
                    f"<title>{_esc(series.label)}: {_tick_label(x)} → {y:.3f}</title></circle>"
                )
    if series.highlight is not None:
        x, y = series.highlight
        label = series.highlight_label or f"{series.label}: {_tick_label(x)} → {y:.3f}"
        parts.append(
            f'<circle cx="{frame.x(x):.1f}" cy="{frame.y(y):.1f}" r="6.5" fill="{series.color}" '
            f'stroke="#fff" stroke-width="2"><title>{_esc(label)}</title></circle>'
        )
    return parts


def _runs(points: Sequence[tuple[float, float | None]]) -> list[list[tuple[float, float]]]:
    """Split a polyline at missing values."""
    runs: list[list[tuple[float, float]]] = [[]]
    for x, y in sorted(points, key=lambda point: point[0]):
        if y is None or not math.isfinite(y):
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append((x, y))
    return [run for run in runs if run]


def _legend_layout(
    items: Sequence[tuple[str, str, bool]], max_width: float
) -> list[list[tuple[str, str, bool, float]]]:
    """Place legend items left to right, wrapping rows; each item gets its x offset."""
    rows: list[list[tuple[str, str, bool, float]]] = [[]]
    x = 0.0
    for label, color, dashed in items:
        item_width = 34 + 7.2 * len(label)
        if x > 0 and x + item_width > max_width:
            rows.append([])
            x = 0.0
        rows[-1].append((label, color, dashed, x))
        x += item_width + 14
    return [row for row in rows if row]


def _legend_shapes(
    rows: Sequence[Sequence[tuple[str, str, bool, float]]],
    left: float,
    top: float,
    boxes: bool = False,
) -> list[str]:
    """Legend entries: a line swatch (line charts) or a square (bars), then the label."""
    parts = []
    for row_index, row in enumerate(rows):
        y = top + 22 * row_index
        for label, color, dashed, offset in row:
            x = left + offset
            if boxes:
                swatch = (
                    f'<rect x="{x + 10:.1f}" y="{y - 6:.1f}" width="12" height="12" rx="2" '
                    f'fill="{color}"/>'
                )
            else:
                dash = ' stroke-dasharray="6 4"' if dashed else ""
                swatch = (
                    f'<line x1="{x:.1f}" y1="{y:.1f}" x2="{x + 24:.1f}" y2="{y:.1f}" '
                    f'stroke="{color}" stroke-width="3" stroke-linecap="round"{dash}/>'
                )
            parts.append(
                f'{swatch}<text x="{x + 30:.1f}" y="{y + 4:.1f}" class="legend">{_esc(label)}</text>'
            )
    return parts


def _empty_chart(width: int, height: int, message: str) -> str:
    return (
        f"{_svg_open(width, 80, message)}"
        f'<text x="{width / 2}" y="44" class="label" text-anchor="middle">{_esc(message)}</text>'
        "</svg>"
    )


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


def _apps(count: int) -> str:
    return "1 app" if count == 1 else f"{count} apps"


def _tick_label(value: float) -> str:
    return f"{value:g}"


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


# --------------------------------------------------------------------------------------------
# Chart data from plans and sweeps


def budget_chart_svg(
    sweep: SweepResult,
    num_apps: int | None = None,
    marker_budget: float | None = None,
) -> str:
    """Objective value vs budget for Mainstream and both baselines."""
    unit = sweep.budget_unit
    objective = OBJECTIVE_LABELS.get(sweep.objective, sweep.objective)
    series = [
        ChartSeries(
            label=STRATEGY_LABELS[strategy],
            points=sweep.series(strategy, num_apps),
            color=STRATEGY_COLORS[strategy],
            dashed=strategy != "mainstream",
        )
        for strategy in STRATEGIES
    ]
    return line_chart_svg(
        series,
        x_label=f"compute budget ({unit})" if unit else "compute budget",
        y_label=objective,
        marker_x=marker_budget,
        marker_label="this problem's budget" if marker_budget is not None else "",
        description=f"{objective} vs compute budget",
    )


def app_count_chart_svg(points: Sequence[SweepPoint], objective: str, subtitle: str) -> str:
    """Objective value vs number of apps, one point per workload size."""
    ordered = sorted(points, key=lambda point: point.num_apps)
    series = [
        ChartSeries(
            label=STRATEGY_LABELS[strategy],
            points=[(float(point.num_apps), point.outcome(strategy).value) for point in ordered],
            color=STRATEGY_COLORS[strategy],
            dashed=strategy != "mainstream",
        )
        for strategy in STRATEGIES
    ]
    label = OBJECTIVE_LABELS.get(objective, objective)
    return line_chart_svg(
        series,
        x_label="number of apps",
        y_label=label,
        description=f"{label} vs number of apps ({subtitle})",
    )


def fps_curves(
    plan: Plan, problem: Problem, samples: int = 60
) -> list[tuple[AppPlan, list[tuple[float, float]]]]:
    """Per app: event F1 over analysis rates at the plan's cut point and vote.

    The rates span the problem's fps options densely (log-spaced), so the saw-tooth the
    random sampling phase causes is visible, not just the values at the options.
    """
    low = min(problem.fps_options)
    high = problem.camera_fps
    grid = sorted(
        {_clean(low * (high / low) ** (index / (samples - 1))) for index in range(samples)}
        | {float(value) for value in problem.fps_options}
    )
    grid = [value for value in grid if 0 < value <= high]
    curves = []
    for app_plan in plan.apps:
        app = _spec(problem, app_plan.name)
        candidate = _candidate(app, app_plan.cut_point) if app is not None else None
        if app is None or candidate is None:
            continue
        planned = candidate.planned_rates(problem.confidence)
        qualities = event_quality_for_rates(
            grid,
            camera_fps=problem.camera_fps,
            event_length_s=app.event_length_s,
            event_frequency=app.event_frequency,
            correlation=app.correlation,
            recall=planned[0],
            false_positive_rate=planned[1],
            x_vote=app_plan.x_vote,
        )
        curves.append(
            (app_plan, [(fps, quality.f1) for fps, quality in zip(grid, qualities, strict=True)])
        )
    return curves


def fps_chart_svg(plan: Plan, problem: Problem) -> str:
    series = []
    for index, (app_plan, curve) in enumerate(fps_curves(plan, problem)):
        chosen = next((f1 for fps, f1 in curve if math.isclose(fps, app_plan.fps)), app_plan.f1)
        series.append(
            ChartSeries(
                label=f"{app_plan.name} @ {app_plan.cut_point}",
                points=curve,
                color=APP_COLORS[index % len(APP_COLORS)],
                markers=False,
                highlight=(app_plan.fps, chosen),
                highlight_label=(
                    f"{app_plan.name}: chosen {_fps(app_plan.fps)} fps, X={app_plan.x_vote} "
                    f"→ F1 {chosen:.3f}"
                ),
            )
        )
    return line_chart_svg(
        series,
        x_label="analysed frames per second (log scale)",
        y_label="event F1",
        x_log=True,
        description="per-app event F1 vs frame rate at the chosen cut point",
    )


def _spec(problem: Problem, name: str) -> AppSpec | None:
    return next((app for app in problem.apps if app.name == name), None)


def _candidate(app: AppSpec, cut_point: str) -> Candidate | None:
    return next((c for c in app.candidates if c.cut_point == cut_point), None)


# --------------------------------------------------------------------------------------------
# HTML


def html_report(
    plan: Plan,
    problem: Problem,
    sweep: SweepResult | None = None,
    *,
    title: str = "Mainstream schedule",
) -> str:
    """A self-contained HTML page: headline figures, charts, the plan, baselines and inputs."""
    unit = budget_unit(problem)
    objective = OBJECTIVE_LABELS.get(plan.objective, plan.objective)
    sections = [_cards(plan, unit)]

    if sweep is not None and sweep.points:
        sections.append(
            _section(
                f"{_capitalised(objective)} vs compute budget",
                "Each budget is planned from scratch for Mainstream and for both baselines; "
                "gaps mark budgets where nothing fits.",
                budget_chart_svg(sweep, num_apps=len(problem.apps), marker_budget=plan.budget),
            )
        )
    sections.append(
        _section(
            "Event F1 vs frame rate",
            "Each app at its chosen cut point and vote X; the filled dot is the rate the "
            "schedule picked. More frames catch more events until the budget runs out.",
            fps_chart_svg(plan, problem),
        )
    )
    if plan.baselines:
        names = [app.name for app in plan.apps]
        groups: list[tuple[str, Sequence[float | None], str]] = [
            (
                STRATEGY_LABELS["mainstream"],
                [app.f1 for app in plan.apps],
                STRATEGY_COLORS["mainstream"],
            )
        ]
        for key in BASELINE_KEYS:
            baseline = plan.baselines.get(key)
            if baseline is None:
                continue
            values = [
                (match.f1 if (match := _app_in(baseline, name)) and baseline.feasible else None)
                for name in names
            ]
            groups.append((STRATEGY_LABELS[key], values, STRATEGY_COLORS[key]))
        sections.append(
            _section(
                "Per-app event F1 by strategy",
                "Same budget, same event model; only the choice of cut points and rates differs.",
                bar_chart_svg(names, groups, y_label="event F1"),
            )
        )
    sections.append(_plan_section(plan, unit))
    if plan.baselines:
        headers, rows = _baseline_rows(plan, unit)
        sections.append(
            _section(
                "Baselines",
                "Max-Sharing puts every app on the deepest cut point (only the head is "
                "specialised); No-Sharing runs each app's most accurate model end to end.",
                _html_table(headers, rows, numeric_from=1),
            )
        )
    if sweep is not None and sweep.points:
        sections.append(_sweep_table_section(sweep))
    sections.append(_inputs_section(problem))
    subtitle = f"{_esc(describe_problem(problem))} · objective: {_esc(objective)}"
    return _page(title, subtitle, sections)


def sweep_html_report(sweep: SweepResult, *, title: str = "Mainstream sweep") -> str:
    """A self-contained HTML page for a sweep: charts per workload size and the full table."""
    unit = sweep.budget_unit
    objective = OBJECTIVE_LABELS.get(sweep.objective, sweep.objective)
    sections = []
    counts = sweep.app_counts()
    for count in counts:
        if len(sweep.points_for(count)) > 1:
            sections.append(
                _section(
                    f"{_capitalised(objective)} vs compute budget — {_apps(count)}",
                    "Gaps mark budgets where nothing fits.",
                    budget_chart_svg(sweep, num_apps=count),
                )
            )
    if len(counts) > 1:
        budget_sets = {tuple(point.budget for point in sweep.points_for(count)) for count in counts}
        if len(budget_sets) == 1:
            for budget in next(iter(budget_sets)):
                points = [point for point in sweep.points if point.budget == budget]
                sections.append(
                    _section(
                        f"{_capitalised(objective)} vs number of apps — budget {_num(budget)} {unit}",
                        "More apps compete for the same budget.",
                        app_count_chart_svg(points, sweep.objective, f"budget {_num(budget)}"),
                    )
                )
        elif all(len(sweep.points_for(count)) == 1 for count in counts):
            sections.append(
                _section(
                    f"{_capitalised(objective)} vs number of apps",
                    "Each workload at its own budget.",
                    app_count_chart_svg(sweep.points, sweep.objective, "own budgets"),
                )
            )
    sections.append(_sweep_table_section(sweep))
    source = {
        "problem": "one problem over several budgets",
        "problem_subsets": "the first N apps of one problem",
        "generated": f"generated workloads (seed {sweep.seed})",
    }[sweep.source]
    subtitle = f"{_esc(source)} · objective: {_esc(objective)} · solver: {_esc(sweep.solver)}"
    return _page(title, subtitle, sections)


def _cards(plan: Plan, unit: str) -> str:
    objective = OBJECTIVE_LABELS.get(plan.objective, plan.objective)
    cards = [
        ("Mainstream", f"{plan.value:.3f}", objective, STRATEGY_COLORS["mainstream"]),
    ]
    for key in BASELINE_KEYS:
        baseline = plan.baselines.get(key)
        if baseline is not None:
            value = f"{baseline.value:.3f}" if baseline.feasible else "—"
            note = objective if baseline.feasible else "does not fit the budget"
            cards.append((STRATEGY_LABELS[key], value, note, STRATEGY_COLORS[key]))
    cards.append(
        (
            "Compute used",
            _percent(plan.total_cost, plan.budget),
            f"{_num(plan.total_cost)} of {_num(plan.budget)} {unit}",
            STEM_COLOR,
        )
    )
    cards.append(
        ("Solver", plan.solver, f"{plan.solve_time_s:.3f} s{_proof_note(plan)}", STEM_COLOR)
    )
    items = "".join(
        f'<div class="card" style="border-top-color:{color}"><div class="card-title">{_esc(name)}'
        f'</div><div class="card-value">{_esc(value)}</div><div class="card-note">{_esc(note)}'
        "</div></div>"
        for name, value, note, color in cards
    )
    return f'<section class="cards">{items}</section>'


def _plan_section(plan: Plan, unit: str) -> str:
    headers = [
        "App",
        "Camera",
        "Base",
        "Cut point",
        "FPS",
        "X",
        "Recall",
        "Precision",
        "F1",
        f"Cost ({unit})",
        "Share",
    ]
    rows = [
        [
            app.name,
            app.camera,
            app.base_model,
            app.cut_point,
            _fps(app.fps),
            str(app.x_vote),
            f"{app.recall:.3f}",
            f"{app.precision:.3f}",
            f"{app.f1:.3f}",
            _num(app.cost),
            _percent(app.cost, plan.total_cost),
        ]
        for app in plan.apps
    ]
    stem_cost = shared_stem_cost(plan)
    segments = []
    if stem_cost is not None:
        padding = [""] * (len(headers) - 3)
        rows.append(
            ["shared stem", *padding, _num(stem_cost), _percent(stem_cost, plan.total_cost)]
        )
        segments.append(("shared stem (and decoding)", stem_cost, STEM_COLOR))
    segments += [
        (app.name, app.cost, APP_COLORS[index % len(APP_COLORS)])
        for index, app in enumerate(plan.apps)
    ]
    body = (
        _html_table(headers, rows, numeric_from=4)
        + "<h3>Use of the budget</h3>"
        + budget_use_svg(segments, plan.budget, unit)
    )
    return _section(
        "Plan",
        "Cut point: layers up to it are frozen and computed once for every app sharing them. "
        "X: consecutive positive frames needed to report an event.",
        body,
    )


def _sweep_table_section(sweep: SweepResult) -> str:
    unit = sweep.budget_unit
    headers = [
        "Apps",
        f"Budget ({unit})" if unit else "Budget",
        *(STRATEGY_LABELS[s] for s in STRATEGIES),
        "Gain",
    ]
    rows = []
    for count in sweep.app_counts():
        for point in sweep.points_for(count):
            gain = point.gain_over_best_baseline()
            rows.append(
                [
                    str(point.num_apps),
                    _num(point.budget),
                    *(_value_or_infeasible(point.outcome(s).value) for s in STRATEGIES),
                    "–" if gain is None else _signed(gain),
                ]
            )
    return _section(
        "Sweep",
        "Gain: Mainstream minus the better baseline at the same budget.",
        _html_table(headers, rows, numeric_from=0),
    )


def _inputs_section(problem: Problem) -> str:
    settings = [
        ["Camera rate", f"{_fps(problem.camera_fps)} fps"],
        ["Budget", f"{_num(problem.budget)} {budget_unit(problem)}"],
        ["Objective", OBJECTIVE_LABELS.get(problem.objective, problem.objective)],
        ["Frame-rate options", ", ".join(_fps(value) for value in problem.fps_options)],
    ]
    parts = [_html_table(["Setting", "Value"], settings, numeric_from=99)]
    for profile in problem.all_profiles():
        rows = [[cut.name, _num(cut.cumulative_cost)] for cut in profile.cut_points]
        rows.append(["(whole network with head)", _num(profile.total_cost)])
        parts.append(
            f"<h3>Profile: {_esc(profile.base_model)} (cost per frame, {_esc(profile.cost_unit)})</h3>"
            + _html_table(["Cut point", "Cumulative cost"], rows, numeric_from=1)
        )
    app_rows = [
        [
            app.name,
            app.camera,
            app.base_model or "",
            f"{app.event_length_s:g} s",
            f"{app.event_frequency:g}",
            f"{app.correlation:g}",
            str(app.x_vote),
            "; ".join(
                f"{c.cut_point}: recall {c.recall:g}, FPR {c.false_positive_rate:g}"
                for c in app.candidates
            ),
        ]
        for app in problem.apps
    ]
    parts.append(
        "<h3>Apps</h3>"
        + _html_table(
            [
                "App",
                "Camera",
                "Base",
                "Event length",
                "Event frequency",
                "Correlation",
                "X",
                "Candidates (per-frame)",
            ],
            app_rows,
            numeric_from=3,
            numeric_to=7,
        )
    )
    parts.append(
        "<details><summary>Problem as JSON</summary><pre>"
        + _esc(problem.model_dump_json(indent=2, exclude_none=True))
        + "</pre></details>"
    )
    return _section("Inputs", "", "".join(parts))


def _html_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    numeric_from: int,
    numeric_to: int | None = None,
) -> str:
    def cls(index: int) -> str:
        numeric = index >= numeric_from and (numeric_to is None or index < numeric_to)
        return ' class="num"' if numeric else ""

    head = "".join(f"<th{cls(i)}>{_esc(h)}</th>" for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f"<td{cls(i)}>{_esc(cell)}</td>" for i, cell in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _section(heading: str, note: str, body: str) -> str:
    note_html = f'<p class="section-note">{_esc(note)}</p>' if note else ""
    return f"<section><h2>{_esc(heading)}</h2>{note_html}{body}</section>"


def _page(title: str, subtitle_html: str, sections: Sequence[str]) -> str:
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
        f'<header><h1>{_esc(title)}</h1><p class="subtitle">{subtitle_html}</p></header>\n'
        + "\n".join(sections)
        + f"\n<footer>Generated by Mainstream {_esc(__version__)}. Predictions use the "
        "analytical event model; measured results depend on the video.</footer>\n"
        "</main>\n</body>\n</html>\n"
    )


_CSS = """
:root { --ink:#0f172a; --muted:#64748b; --line:#e2e8f0; --bg:#f8fafc; --card:#ffffff; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
  font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif; }
main { max-width:1040px; margin:0 auto; padding:32px 24px 48px; }
header h1 { margin:0 0 4px; font-size:28px; letter-spacing:-0.01em; }
.subtitle { margin:0 0 24px; color:var(--muted); }
section { background:var(--card); border:1px solid var(--line); border-radius:12px;
  padding:20px 24px; margin:0 0 20px; box-shadow:0 1px 2px rgba(15,23,42,.04); }
section h2 { margin:0 0 4px; font-size:18px; }
section h3 { margin:20px 0 8px; font-size:15px; color:#334155; }
.section-note { margin:0 0 14px; color:var(--muted); font-size:14px; }
.cards { display:grid; grid-template-columns:repeat(auto-fit,minmax(150px,1fr)); gap:14px;
  background:none; border:none; box-shadow:none; padding:0; }
.card { background:var(--card); border:1px solid var(--line); border-top:4px solid;
  border-radius:10px; padding:12px 16px; }
.card-title { font-size:13px; color:var(--muted); text-transform:uppercase; letter-spacing:.04em; }
.card-value { font-size:28px; font-weight:650; font-variant-numeric:tabular-nums; }
.card-note { font-size:13px; color:var(--muted); }
.table-wrap { overflow-x:auto; }
table { border-collapse:collapse; width:100%; font-size:14px; }
th, td { padding:6px 10px; border-bottom:1px solid var(--line); text-align:left; white-space:nowrap; }
th { font-weight:600; color:#334155; background:#f1f5f9; }
tbody tr:nth-child(even) td { background:#fafbfd; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
svg.chart { display:block; max-width:100%; height:auto; margin:4px 0; }
details { margin-top:16px; }
summary { cursor:pointer; color:#334155; font-weight:600; }
pre { background:#0f172a; color:#e2e8f0; padding:14px; border-radius:8px; overflow:auto;
  font-size:12.5px; }
footer { color:var(--muted); font-size:13px; margin-top:8px; }
"""
