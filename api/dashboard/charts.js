// Inline SVG drawings: the shared-stem DAG of a plan and the plan-vs-baselines bar chart.

import { fmt, fmtFps, naturalCompare, s } from "./dom.js";

const INPUT = "input";

function truncate(text, length) {
  const value = String(text);
  return value.length > length ? `${value.slice(0, length - 1)}…` : value;
}

/** "mobilenet_v1@f62cf276…" (name and weights fingerprint) shown as "mobilenet_v1". */
function baseName(base) {
  return base ? String(base).split("@")[0] : "frames";
}

/**
 * The DAGs of a plan, one per (camera, base model): the cut points in use in network order
 * and the apps that branch off at each. `cutOrder(baseModel)` gives the profile's cut names
 * in order, or null when unknown (then names are ordered by their numbers).
 */
export function dagGroups(planApps, cutOrder) {
  const groups = new Map();
  for (const app of planApps) {
    const key = `${app.camera}\u0000${app.base_model}`;
    if (!groups.has(key)) {
      groups.set(key, { camera: app.camera, base: app.base_model, apps: [] });
    }
    groups.get(key).apps.push(app);
  }
  return [...groups.values()].map((group) => {
    const order = cutOrder(group.base) || [];
    const rank = (cut) => (cut === INPUT ? -1 : order.includes(cut) ? order.indexOf(cut) : null);
    const cuts = [...new Set(group.apps.map((app) => app.cut_point))].filter((c) => c !== INPUT);
    cuts.sort((a, b) => {
      const ra = rank(a);
      const rb = rank(b);
      return ra !== null && rb !== null ? ra - rb : naturalCompare(a, b);
    });
    return { ...group, cuts };
  });
}

/** One DAG drawn as a tree: the stem runs left to right, apps hang below their cut. */
export function dagSvg(group) {
  const columnWidth = 220;
  const nodeWidth = 150;
  const nodeHeight = 46;
  const leafWidth = 170;
  const leafHeight = 44;
  const leafGap = 10;
  const pad = 12;
  const columns = [INPUT, ...group.cuts];
  const leaves = columns.map((cut) =>
    group.apps.filter((app) => app.cut_point === cut).sort((a, b) => naturalCompare(a.name, b.name)),
  );
  const deepest = Math.max(1, ...leaves.map((list) => list.length));
  const leafIndent = 34;
  const width = pad * 2 + (columns.length - 1) * columnWidth + Math.max(nodeWidth, leafIndent + leafWidth);
  const leafTop = pad + nodeHeight + 22;
  const height = leafTop + deepest * (leafHeight + leafGap) + pad;
  // A segment runs at the highest rate among the apps at or below its cut.
  const rateFrom = (index) =>
    Math.max(0, ...group.apps.filter((app) => columns.indexOf(app.cut_point) >= index).map((a) => a.fps));

  const svg = s("svg", {
    class: "dag",
    width,
    height,
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-label": `Shared DAG of camera ${group.camera}, base ${group.base}: ${group.apps.length} app(s) branching at ${columns.length} point(s)`,
  });
  svg.append(s("title", {}, `Shared DAG: camera ${group.camera}, base ${group.base}`));

  columns.forEach((cut, index) => {
    const x = pad + index * columnWidth;
    const y = pad;
    if (index > 0) {
      const fromX = x - columnWidth + nodeWidth;
      svg.append(
        s("line", { class: "dag-edge stem", x1: fromX, y1: y + nodeHeight / 2, x2: x, y2: y + nodeHeight / 2 }),
        s(
          "text",
          { class: "dag-rate", x: (fromX + x) / 2, y: y + nodeHeight / 2 - 7, "text-anchor": "middle" },
          `${fmtFps(rateFrom(index))} fps`,
        ),
      );
    }
    const isRoot = index === 0;
    svg.append(
      s("rect", { class: isRoot ? "dag-node root" : "dag-node", x, y, width: nodeWidth, height: nodeHeight, rx: 8 }),
      s(
        "text",
        { class: "dag-title", x: x + 10, y: y + 19 },
        truncate(isRoot ? group.camera : cut, 20),
        s("title", {}, isRoot ? `camera ${group.camera}` : `cut point ${cut}`),
      ),
      s(
        "text",
        { class: "dag-sub", x: x + 10, y: y + 36 },
        isRoot ? truncate(baseName(group.base), 22) : `stem to here · ${fmtFps(rateFrom(index))} fps`,
        isRoot && group.base ? s("title", {}, `base ${group.base}`) : null,
      ),
    );

    leaves[index].forEach((app, row) => {
      const top = leafTop + row * (leafHeight + leafGap);
      const trunkX = x + 16;
      const leafX = x + leafIndent;
      svg.append(
        s("path", {
          class: "dag-edge",
          d: `M ${trunkX} ${y + nodeHeight} V ${top + leafHeight / 2} H ${leafX}`,
          fill: "none",
        }),
        s("rect", { class: "dag-leaf", x: leafX, y: top, width: leafWidth, height: leafHeight, rx: 8 }),
        s("text", { class: "dag-title", x: leafX + 10, y: top + 18 }, truncate(app.name, 22)),
        s(
          "text",
          { class: "dag-sub", x: leafX + 10, y: top + 35 },
          `${fmtFps(app.fps)} fps · X=${app.x_vote} · F1 ${fmt(app.f1)}`,
        ),
      );
    });
  });
  return svg;
}

/** Objective value of the plan next to the No-Sharing and Max-Sharing baselines. */
export function comparisonSvg(plan) {
  const rows = [
    { name: "Mainstream", cls: "ours", value: plan.value, cost: plan.total_cost, feasible: true },
  ];
  for (const [key, name] of [
    ["max_sharing", "Max-Sharing"],
    ["no_sharing", "No-Sharing"],
  ]) {
    const baseline = (plan.baselines || {})[key];
    if (baseline) {
      rows.push({
        name,
        cls: key.replace("_", "-"),
        value: baseline.value,
        cost: baseline.total_cost,
        feasible: baseline.feasible !== false,
      });
    }
  }
  const labelWidth = 104;
  const barArea = 220;
  const rowHeight = 40;
  const top = 10;
  const width = labelWidth + barArea + 136;
  const height = top + rows.length * rowHeight + 34;
  const scale = Math.max(1, ...rows.map((row) => row.value || 0));
  const objective = plan.objective === "min_f1" ? "lowest app F1" : "mean event F1";

  const svg = s("svg", {
    class: "bars",
    width,
    height,
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-label": `${objective}: ${rows
      .map((row) => `${row.name} ${row.feasible ? fmt(row.value) : "does not fit"}`)
      .join(", ")}`,
  });
  svg.append(s("title", {}, `Plan versus baselines (${objective})`));
  for (const tick of [0, 0.25, 0.5, 0.75, 1]) {
    const x = labelWidth + (tick / scale) * barArea;
    svg.append(
      s("line", { class: "grid", x1: x, y1: top - 4, x2: x, y2: top + rows.length * rowHeight }),
      s("text", { class: "tick", x, y: top + rows.length * rowHeight + 14, "text-anchor": "middle" }, tick.toFixed(2)),
    );
  }
  rows.forEach((row, index) => {
    const y = top + index * rowHeight;
    const barWidth = row.feasible ? Math.max(2, ((row.value || 0) / scale) * barArea) : 0;
    svg.append(
      s("text", { class: "bar-label", x: labelWidth - 10, y: y + rowHeight / 2 + 4, "text-anchor": "end" }, row.name),
      s("rect", { class: `bar ${row.cls}`, x: labelWidth, y: y + 8, width: barWidth, height: rowHeight - 16, rx: 4 }),
      s(
        "text",
        { class: "bar-value", x: labelWidth + barWidth + 8, y: y + rowHeight / 2 + 4 },
        row.feasible ? `${fmt(row.value)}  ·  ${fmt(row.cost, 1)} ms/s` : "does not fit the budget",
      ),
    );
  });
  svg.append(
    s("text", { class: "axis", x: labelWidth + barArea / 2, y: height - 4, "text-anchor": "middle" }, objective),
  );
  return svg;
}
