// The dashboard page: sign-in, then cameras, apps, the plan, events and what-if plans.
// Everything comes from the node's REST API with the token the user signed in with.

import { Api, ApiError, forgetToken, saveToken, savedToken } from "./api.js";
import { comparisonSvg, dagGroups, dagSvg } from "./charts.js";
import { byId, fill, fmt, fmtDuration, fmtF1, fmtFps, fmtMB, fmtTime, h } from "./dom.js";
import { LiveFeed } from "./live.js";

const REFRESH_MS = 5000; // cameras, apps, plan, stats
const SNAPSHOT_MS = 2000; // camera frames
const EVENT_POLL_MS = 3000; // events, only while the live stream is unavailable
const EVENTS_SHOWN = 30;
const EVENTS_KEPT = 200;
const MEDIA_TIME_LIMIT_S = 1e9; // smaller timestamps are media time, not seconds since 1970

const state = {
  api: null,
  role: "viewer",
  stats: null,
  cameras: [],
  apps: [],
  schedule: null,
  packages: [],
  cutOrders: new Map(), // base model -> cut point names in network order
  cutOrdersFor: null, // plan id the cut orders were read for
  events: new Map(), // event id -> EventView
  liveMode: null,
  feed: null,
  timers: [],
  busy: new Set(), // loops with a request in flight
  cameraFrames: new Map(), // camera id -> object URL of its latest frame (polled fallback)
  liveViews: new Map(), // camera id -> <img> playing its live view (MJPEG with app scores)
  eventShots: new Map(), // event id -> {peak, url, fetchedAt}
  clipVideos: new Map(), // event id -> <video> playing its clip (kept across re-renders)
  hypothetical: [], // AppCreate bodies for the what-if form
  whatIfOptions: "", // signature of the choices the what-if form was built from
};

// ---------------------------------------------------------------------------------------
// Messages

const recentToasts = new Map(); // message -> when it was last shown (ms)

function toast(message, kind = "info") {
  // Refresh loops would repeat the same failure every few seconds: show it once a minute.
  const now = Date.now();
  if (now - (recentToasts.get(message) || 0) < 60000) return;
  recentToasts.set(message, now);
  const item = h("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : null }, message);
  byId("toasts").append(item);
  setTimeout(() => item.remove(), kind === "error" ? 8000 : 4000);
}

function handleError(error, what) {
  if (error instanceof ApiError && error.status === 401) {
    signOut("Your token is no longer accepted; sign in again.");
    return;
  }
  toast(`${what}: ${error.message}`, "error");
}

// ---------------------------------------------------------------------------------------
// Sign in and out

async function signIn(token, quiet = false) {
  const api = new Api(token);
  const button = byId("login-button");
  button.disabled = true;
  try {
    const me = await api.get("api/whoami");
    saveToken(token);
    state.api = api;
    state.role = me.role;
    showDashboard(me);
  } catch (error) {
    forgetToken();
    showLogin(
      quiet
        ? ""
        : error instanceof ApiError && error.status === 401
          ? "This token is not accepted by the node."
          : error.message,
    );
  } finally {
    button.disabled = false;
  }
}

function signOut(message = "") {
  for (const timer of state.timers) clearInterval(timer);
  state.timers = [];
  if (state.feed) state.feed.stop();
  state.feed = null;
  for (const url of state.cameraFrames.values()) URL.revokeObjectURL(url);
  for (const image of state.liveViews.values()) image.removeAttribute("src");
  state.liveViews.clear();
  for (const shot of state.eventShots.values()) if (shot.url) URL.revokeObjectURL(shot.url);
  state.cameraFrames.clear();
  state.eventShots.clear();
  state.events.clear();
  state.api = null;
  state.whatIfOptions = "";
  state.hypothetical = [];
  forgetToken();
  showLogin(message);
}

function showLogin(message) {
  byId("app-view").hidden = true;
  byId("login-view").hidden = false;
  byId("login-error").textContent = message || "";
  byId("token-input").focus();
}

function showDashboard(me) {
  byId("login-view").hidden = true;
  byId("app-view").hidden = false;
  byId("token-input").value = "";
  document.body.classList.toggle("is-admin", me.role === "admin");
  const badge = byId("role-badge");
  badge.textContent = me.role;
  badge.className = `badge role-${me.role}`;
  badge.title = `Signed in as ${me.name}`;
  start();
}

function start() {
  refreshAll().then(pollEvents);
  refreshFrames();
  state.timers.push(
    setInterval(() => visible() && refreshAll(), REFRESH_MS),
    setInterval(() => visible() && refreshFrames(), SNAPSHOT_MS),
    setInterval(() => visible() && state.liveMode !== "live" && pollEvents(), EVENT_POLL_MS),
  );
  state.feed = new LiveFeed(state.api, {
    onMode: setLiveMode,
    onEvent: (message) => {
      if (message && message.event) {
        // Live messages carry no mark: keep the one this page knows.
        const known = state.events.get(message.event.id);
        const review = message.event.review || (known ? known.review : null);
        state.events.set(message.event.id, { ...message.event, review });
        trimEvents();
        renderEvents();
      }
    },
    onCamera: () => once("cameras", loadCameras),
    onStatus: (stats) => {
      state.stats = stats;
      renderSummary();
      renderRetention();
    },
  });
  state.feed.start();
}

function visible() {
  return document.visibilityState !== "hidden";
}

function setLiveMode(mode) {
  state.liveMode = mode;
  const indicator = byId("live-indicator");
  indicator.className = `live-indicator ${mode}`;
  indicator.querySelector(".live-text").textContent = mode === "live" ? "live" : "polling";
  indicator.title =
    mode === "live"
      ? "Receiving events as they happen"
      : "The live stream is unavailable; refreshing every few seconds";
  if (mode === "live") pollEvents(); // catch up on what happened before the stream opened
}

/** Run `task` unless the previous run of the loop `name` is still in flight. */
async function once(name, task) {
  if (state.busy.has(name) || !state.api) return;
  state.busy.add(name);
  try {
    await task();
  } finally {
    state.busy.delete(name);
  }
}

// ---------------------------------------------------------------------------------------
// Loading

async function refreshAll() {
  await once("all", async () => {
    const api = state.api;
    const [stats, cameras, apps, schedule, packages] = await Promise.allSettled([
      api.get("api/stats"),
      api.get("api/cameras"),
      api.get("api/apps"),
      api.get("api/schedule"),
      api.get("api/packages"),
    ]);
    const failed = [stats, cameras, apps, schedule].find((answer) => answer.status === "rejected");
    if (failed) handleError(failed.reason, "refresh");
    if (!state.api) return;
    if (stats.status === "fulfilled") state.stats = stats.value;
    if (cameras.status === "fulfilled") state.cameras = cameras.value;
    if (apps.status === "fulfilled") state.apps = apps.value;
    if (packages.status === "fulfilled") state.packages = packages.value;
    if (schedule.status === "fulfilled") {
      state.schedule = schedule.value;
      await loadCutOrders();
    }
    renderAll();
  });
}

async function loadCameras() {
  try {
    state.cameras = await state.api.get("api/cameras");
    renderCameras();
  } catch (error) {
    handleError(error, "cameras");
  }
}

/** The profile's cut-point order, from the stored problem of the plan in force. */
async function loadCutOrders() {
  const schedule = state.schedule;
  if (!schedule || schedule.id === null || schedule.id === state.cutOrdersFor) return;
  try {
    const history = await state.api.get("api/schedule/history?limit=5");
    const record = history.find((item) => item.id === schedule.id);
    const problem = record && record.problem;
    if (!problem) return;
    const profiles = problem.profiles || (problem.profile ? [problem.profile] : []);
    state.cutOrders = new Map(
      profiles.map((profile) => [profile.base_model, profile.cut_points.map((cut) => cut.name)]),
    );
    state.cutOrdersFor = schedule.id;
  } catch (error) {
    // Without the order the DAG falls back to ordering cut names by their numbers.
  }
}

function cutOrder(base) {
  if (state.cutOrders.has(base)) return state.cutOrders.get(base);
  return state.cutOrders.size === 1 ? [...state.cutOrders.values()][0] : null;
}

async function pollEvents() {
  await once("events", async () => {
    try {
      const stored = state.stats ? state.stats.events_stored || 0 : 0;
      const offset = Math.max(0, stored - EVENTS_SHOWN);
      const page = await state.api.get(`api/events?limit=${EVENTS_SHOWN}&offset=${offset}`);
      for (const event of page.items) state.events.set(event.id, event);
      trimEvents();
      renderEvents();
    } catch (error) {
      handleError(error, "events");
    }
  });
}

function trimEvents() {
  if (state.events.size <= EVENTS_KEPT) return;
  const newest = sortedEvents().slice(0, EVENTS_KEPT);
  const keep = new Set(newest.map((event) => event.id));
  for (const id of state.events.keys()) {
    if (!keep.has(id)) {
      const shot = state.eventShots.get(id);
      if (shot && shot.url) URL.revokeObjectURL(shot.url);
      state.eventShots.delete(id);
      state.events.delete(id);
    }
  }
}

function sortedEvents() {
  return [...state.events.values()].sort((a, b) => b.start_time - a.start_time);
}

/**
 * Cameras play their live view (the server's MJPEG stream, the apps' scores drawn on it) in a
 * plain <img>; a camera whose view cannot open or breaks off falls back to polled frames and
 * is tried again on the next round.
 */
async function openLiveView(id) {
  if (state.liveViews.has(id)) return true;
  const url = await state.api.liveViewUrl(id).catch(() => null);
  if (!url) return false;
  const image = h("img", { "data-camera-frame": id, "data-live-view": "", alt: `Live view of camera ${id}` });
  image.addEventListener(
    "error",
    () => {
      if (state.liveViews.get(id) !== image) return;
      state.liveViews.delete(id);
      renderCameras();
    },
    { once: true },
  );
  image.src = url;
  state.liveViews.set(id, image);
  renderCameras();
  return true;
}

function closeLiveViews(running) {
  for (const [id, image] of state.liveViews) {
    if (!running.has(id)) {
      image.removeAttribute("src"); // ends the stream
      state.liveViews.delete(id);
    }
  }
}

async function refreshFrames() {
  await once("frames", async () => {
    const running = state.cameras.filter((view) => view.camera.enabled);
    closeLiveViews(new Set(running.map((view) => view.camera.id)));
    await Promise.all(
      running.map(async (view) => {
        const id = view.camera.id;
        if (state.liveViews.has(id)) return;
        if (cameraState(view) === "streaming" && (await openLiveView(id))) return;
        const url = await state.api.imageUrl(`api/cameras/${encodeURIComponent(id)}/latest.jpg`).catch(() => null);
        if (!url) return;
        const previous = state.cameraFrames.get(id);
        state.cameraFrames.set(id, url);
        const image = document.querySelector(`img[data-camera-frame="${CSS.escape(id)}"]`);
        if (image) {
          image.addEventListener("load", () => previous && URL.revokeObjectURL(previous), { once: true });
          image.src = url;
          const frame = image.closest(".frame");
          frame.classList.remove("empty");
          frame.querySelector(".frame-note")?.remove();
        } else {
          if (previous) URL.revokeObjectURL(previous);
          renderCameras();
        }
      }),
    );
  });
}

async function loadEventShot(event) {
  const known = state.eventShots.get(event.id);
  const now = Date.now();
  if (known && (known.peak === event.peak_score || now - known.fetchedAt < 3000)) return;
  state.eventShots.set(event.id, { ...(known || {}), peak: event.peak_score, fetchedAt: now });
  const url = await state.api
    .imageUrl(`api/events/${encodeURIComponent(event.id)}/snapshot.jpg`)
    .catch(() => null);
  if (!url) return;
  const shot = state.eventShots.get(event.id);
  if (!shot) return URL.revokeObjectURL(url);
  if (shot.url) URL.revokeObjectURL(shot.url);
  shot.url = url;
  const image = document.querySelector(`img[data-event-shot="${CSS.escape(event.id)}"]`);
  if (image) {
    image.src = url;
    image.closest(".thumb").classList.remove("empty");
  }
}

// ---------------------------------------------------------------------------------------
// Rendering

function renderAll() {
  renderSummary();
  renderRetention();
  renderCameras();
  renderApps();
  renderPlan();
  renderAdminForms();
  renderWhatIfOptions();
}

/** How good the plan is proven to be, as the CLI's dry-run table says it ("" when unknown). */
function provenText(gap) {
  if (gap === null || gap === undefined) return "";
  if (gap === 0) return " · proven optimal";
  return ` · within ${(100 * gap).toPrecision(3)} % of optimal`;
}

function renderSummary() {
  const stats = state.stats;
  if (!stats) return;
  byId("node-name").textContent = stats.node || "";
  const plan = stats.plan;
  const schedule = state.schedule;
  const objective = schedule && schedule.plan ? schedule.plan.objective : null;
  byId("m-plan").textContent = plan && plan.value !== null ? fmt(plan.value) : plan ? plan.status : "none";
  byId("m-plan-sub").textContent = plan
    ? `${objective === "min_f1" ? "lowest app F1" : "mean event F1"} · plan #${plan.id} (${plan.status})${provenText(plan.optimality_gap)}`
    : "no plan yet";
  byId("m-budget").textContent = fmt(stats.budget_ms_per_s, 0);
  byId("m-predicted").textContent = plan ? fmt(plan.predicted_cost_ms_per_s, 1) : "—";
  const share = plan && stats.budget_ms_per_s ? (100 * plan.predicted_cost_ms_per_s) / stats.budget_ms_per_s : null;
  byId("m-predicted-sub").textContent = share === null ? "" : `ms per second · ${share.toFixed(0)} % of budget`;
  byId("m-measured").textContent = fmt(stats.measured_cost_ms_per_s, 1);
  byId("m-events").textContent = String(stats.events_stored ?? "—");
  const active = Object.values(stats.apps || {}).filter((app) => app.active).length;
  byId("m-events-sub").textContent = active ? `${active} app(s) see an event now` : "none open";
  byId("m-uptime").textContent = fmtDuration(stats.uptime_s);
  // The engine the node resolved at start-up, and why ("auto: openvino f32").
  const engine = stats.engine_reason || `${stats.engine} ${stats.precision || ""}`.trim();
  byId("m-version").textContent = `version ${stats.version} · engine ${engine}`;
}

function cameraState(view) {
  if (!view.camera.enabled) return "disabled";
  const live = state.stats && state.stats.cameras ? state.stats.cameras[view.camera.id] : null;
  return (live && live.state) || (view.status && view.status.state) || "starting";
}

function renderCameras() {
  const grid = byId("camera-grid");
  if (!state.cameras.length) {
    fill(grid, h("p", { class: "empty-note" }, "No cameras yet."));
    return;
  }
  fill(
    grid,
    state.cameras.map((view) => {
      const camera = view.camera;
      const status = view.status || {};
      const current = cameraState(view);
      const liveView = state.liveViews.get(camera.id);
      const frame = liveView ? liveView.src : state.cameraFrames.get(camera.id);
      return h(
        "article",
        { class: "camera-card", "data-camera": camera.id, "aria-label": `Camera ${camera.id}` },
        h(
          "div",
          { class: `frame${frame ? "" : " empty"}` },
          liveView ||
            h("img", {
              "data-camera-frame": camera.id,
              alt: `Latest frame of camera ${camera.id}`,
              src: frame || null,
            }),
          frame ? null : h("span", { class: "frame-note" }, camera.enabled ? "Waiting for a frame…" : "Camera disabled"),
          h("span", { class: `pill state-${current}`, "data-state": current }, current),
        ),
        h(
          "div",
          { class: "camera-body" },
          h("h3", {}, camera.id),
          h("p", { class: "muted url", title: camera.config.url }, camera.config.url),
          h(
            "dl",
            { class: "kv" },
            h("div", {}, h("dt", {}, "Input"), h("dd", {}, `${fmtFps(status.fps_in)} fps`)),
            h("div", {}, h("dt", {}, "Decode"), h("dd", {}, `${fmt(status.decode_ms_avg, 1)} ms`)),
            h("div", {}, h("dt", {}, "Dropped"), h("dd", {}, String(status.frames_dropped ?? "—"))),
            h("div", { title: "Frames no app or viewer needed, never decoded" }, h("dt", {}, "Not decoded"), h("dd", {}, String(status.frames_not_decoded ?? "—"))),
            h("div", {}, h("dt", {}, "Size"), h("dd", {}, status.frame_size ? status.frame_size.join("×") : "—")),
          ),
          status.last_error ? h("p", { class: "camera-error" }, status.last_error) : null,
          h(
            "div",
            { class: "chips" },
            view.apps.length ? view.apps.map((name) => h("span", { class: "chip" }, name)) : h("span", { class: "muted" }, "no apps"),
          ),
          h(
            "div",
            { class: "card-actions admin-only" },
            h(
              "button",
              {
                class: "btn small",
                type: "button",
                "aria-label": `${camera.enabled ? "Disable" : "Enable"} camera ${camera.id}`,
                onclick: () => changeCamera(camera.id, { enabled: !camera.enabled }),
              },
              camera.enabled ? "Disable" : "Enable",
            ),
            h(
              "button",
              {
                class: "btn small danger",
                type: "button",
                "aria-label": `Remove camera ${camera.id}`,
                onclick: () => removeCamera(camera.id),
              },
              "Remove",
            ),
          ),
        ),
      );
    }),
  );
}

function measuredApp(name) {
  const measured = state.schedule && state.schedule.measured;
  return measured && measured.apps ? measured.apps[name] : null;
}

function appFeedback(name) {
  const apps = state.stats && state.stats.apps ? Object.values(state.stats.apps) : [];
  const found = apps.find((item) => item.app === name);
  return found ? found.feedback : null;
}

function precisionCell(planned, feedback) {
  // The plan's precision, and what operators' marks on the app's events say about it.
  const marked = feedback ? feedback.true + feedback.false : 0;
  if (!marked) return h("td", { class: "num" }, planned ? fmt(planned.precision) : "—");
  const interval = feedback.precision_interval
    ? ` (90 %: ${fmt(feedback.precision_interval[0])}–${fmt(feedback.precision_interval[1])})`
    : "";
  const title =
    `${feedback.true} marked true, ${feedback.false} false, ${feedback.unreviewed} unreviewed` +
    (feedback.precision !== null ? `; precision from the marks ${fmt(feedback.precision)}${interval}` : "") +
    (feedback.in_force ? "; the plan uses it" : "; too few marks for the plan to use it");
  return h(
    "td",
    { class: "num", title, "data-feedback": feedback.in_force ? "in-force" : "counted" },
    planned ? fmt(planned.precision) : "—",
    h("span", { class: "muted small-note" }, ` · ✓${feedback.true} ✗${feedback.false}`),
  );
}

function renderApps() {
  const rows = byId("app-rows");
  if (!state.apps.length) {
    fill(rows, h("tr", {}, h("td", { colspan: 14, class: "empty-note" }, "No apps deployed yet.")));
    return;
  }
  fill(
    rows,
    state.apps.map((view) => {
      const app = view.app;
      const planned = view.planned;
      const runtime = view.runtime || measuredApp(app.name) || {};
      const measuredF1 = runtime.f1 ?? runtime.measured_f1 ?? null;
      const status = !app.enabled ? "disabled" : !planned ? "not planned" : runtime.active ? "event" : "watching";
      return h(
        "tr",
        { "data-app": app.name },
        h("th", { scope: "row" }, app.name),
        h("td", {}, app.camera),
        h("td", {}, `${app.package_app} v${app.package_version}`),
        h("td", { class: "mono" }, planned ? planned.cut_point : "—"),
        h("td", { class: "num" }, planned ? fmtFps(planned.fps) : "—"),
        h("td", { class: "num" }, runtime.fps !== undefined ? fmtFps(runtime.fps) : "—"),
        h("td", { class: "num" }, planned ? String(planned.x_vote) : String(app.x_vote)),
        h("td", { class: "num" }, planned ? fmt(planned.recall) : "—"),
        precisionCell(planned, appFeedback(app.name)),
        h(
          "td",
          { class: "num strong", title: planned && planned.evidence_warning ? `thin evidence: ${planned.evidence_warning}` : null },
          planned ? fmtF1(planned) : "—",
        ),
        h(
          "td",
          {
            class: "num",
            title: measuredF1 === null ? "Needs labelled video: measure it with `mainstream replay`" : null,
          },
          fmt(measuredF1),
        ),
        h("td", { class: "num" }, String(runtime.events ?? 0)),
        h("td", {}, h("span", { class: `pill small app-${status.replace(" ", "-")}` }, status)),
        h(
          "td",
          { class: "admin-only" },
          h(
            "button",
            {
              class: "btn small danger",
              type: "button",
              "aria-label": `Remove app ${app.name}`,
              onclick: () => removeApp(app.name),
            },
            "Remove",
          ),
        ),
      );
    }),
  );
}

function planDags(plan) {
  const groups = dagGroups(plan.apps, cutOrder);
  return groups.map((group) => h("div", { class: "dag-group" }, dagSvg(group)));
}

function renderPlan() {
  const schedule = state.schedule;
  const dag = byId("dag");
  const comparison = byId("comparison");
  const meta = byId("plan-meta");
  if (!schedule || schedule.status !== "ok" || !schedule.plan) {
    const why = !schedule
      ? "Loading…"
      : schedule.status === "empty" || schedule.status === "none"
        ? "No apps to plan yet: deploy an app to see its DAG."
        : `The plan is ${schedule.status}: ${schedule.message || schedule.reason}`;
    fill(dag, h("p", { class: "empty-note" }, why));
    fill(comparison, h("p", { class: "empty-note" }, "—"));
    meta.textContent = schedule && schedule.id ? `plan #${schedule.id} · ${schedule.reason}` : "";
    return;
  }
  const plan = schedule.plan;
  fill(dag, planDags(plan));
  fill(comparison, comparisonSvg(plan));
  const created = schedule.created_at ? new Date(schedule.created_at).toLocaleString() : "";
  meta.textContent = `plan #${schedule.id} · ${schedule.reason} · ${plan.solver} solver, ${fmt(plan.solve_time_s, 3)} s${provenText(plan.optimality_gap)} · ${created}`;
}

function renderEvents() {
  const list = byId("event-list");
  const events = sortedEvents().slice(0, EVENTS_SHOWN);
  byId("events-meta").textContent = state.stats ? `${state.stats.events_stored ?? 0} stored` : "";
  if (!events.length) {
    fill(list, h("li", { class: "empty-note" }, "No events yet."));
    return;
  }
  fill(
    list,
    events.map((event) => {
      const shot = state.eventShots.get(event.id);
      // Files and synthetic cameras stamp frames with media time (seconds into the stream).
      const wallClock = event.start_time > MEDIA_TIME_LIMIT_S;
      const started = wallClock ? fmtTime(event.start_time) : `${fmtDuration(event.start_time)} into the stream`;
      const duration =
        event.end_time !== null
          ? fmtDuration(event.end_time - event.start_time)
          : wallClock
            ? `${fmtDuration(Date.now() / 1000 - event.start_time)} so far`
            : "still open";
      return h(
        "li",
        { class: `event${event.open ? " open" : ""}`, "data-event": event.id },
        h(
          "div",
          { class: `thumb${shot && shot.url ? "" : " empty"}` },
          h("img", {
            "data-event-shot": event.id,
            alt: `Snapshot of ${event.app} on ${event.camera}`,
            src: shot && shot.url ? shot.url : null,
          }),
        ),
        h(
          "div",
          { class: "event-body" },
          h(
            "div",
            { class: "event-title" },
            h("strong", {}, event.app),
            h("span", { class: "muted" }, ` on ${event.camera}`),
            event.open ? h("span", { class: "pill small state-streaming" }, "ongoing") : null,
            event.review
              ? h(
                  "span",
                  {
                    class: `pill small review-${event.review.verdict}`,
                    "data-review": event.review.verdict,
                    title: event.review.note || `marked by ${event.review.reviewed_by || "an operator"}`,
                  },
                  event.review.verdict === "true" ? "real" : "false alarm",
                )
              : null,
          ),
          h(
            "div",
            { class: "event-meta" },
            wallClock
              ? h("time", { datetime: new Date(event.start_time * 1000).toISOString() }, started)
              : started,
            ` · ${duration}`,
            ` · peak ${fmt(event.peak_score)}`,
            ` · ${event.frames_fired}/${event.frames_analysed} frames fired`,
          ),
          clipControls(event),
          reviewButtons(event),
        ),
      );
    }),
  );
  for (const event of events) loadEventShot(event);
}

function clipControls(event) {
  // The clip plays from a blob URL: a <video> cannot send the token, and clips are small.
  const video = state.clipVideos.get(event.id);
  if (video) return h("div", { class: "event-clip" }, video);
  if (!event.clip) {
    // A clip is stored a few seconds after its event ends (the post-roll, then encoding).
    const justEnded = event.end_time !== null && Date.now() / 1000 - event.end_time < 60;
    return justEnded ? h("div", { class: "event-clip muted", "data-clip": "pending" }, "clip: recording…") : null;
  }
  return h(
    "div",
    { class: "event-clip" },
    h(
      "button",
      {
        type: "button",
        class: "btn small",
        "aria-label": `Play the clip of event ${event.id}`,
        onclick: () => playClip(event),
      },
      "▶ Clip",
    ),
  );
}

async function playClip(event) {
  const url = await state.api.imageUrl(event.clip.replace(/^\//, "")).catch(() => null);
  if (!url) {
    toast(`The clip of event ${event.id} could not be loaded`, "error");
    return;
  }
  const video = h("video", {
    "data-clip": event.id,
    controls: true,
    muted: true,
    playsinline: true,
    preload: "auto",
    "aria-label": `Clip of ${event.app} on ${event.camera}`,
  });
  video.src = url;
  state.clipVideos.set(event.id, video);
  renderEvents();
  video.play().catch(() => {}); // autoplay may be refused; the controls remain
}

function renderRetention() {
  const retention = state.stats ? state.stats.retention : null;
  if (!retention) return;
  const kept = retention.days ? `events kept ${fmt(retention.days, 0)} days` : "events kept however old";
  const cap = retention.max_mb_per_app ? `, up to ${fmt(retention.max_mb_per_app, 0)} MB per app` : "";
  byId("retention-meta").textContent = `pruned every ${fmtDuration(retention.interval_s)}`;
  const last = retention.last_prune_at
    ? `last prune ${fmtTime(retention.last_prune_at)}: ${retention.last_pruned} deleted · ${retention.pruned_total} since start`
    : "not pruned yet";
  const summary = byId("retention-summary");
  fill(
    summary,
    h("span", { "data-retention": "days" }, kept + cap),
    " · ",
    h("span", { "data-retention": "last-prune" }, last),
    " · ",
    h("span", { "data-retention": "stored" }, `${fmtMB(retention.bytes)} stored (database file ${fmtMB(retention.file_bytes)})`),
    retention.last_error ? h("span", { class: "form-error" }, ` · ${retention.last_error}`) : null,
  );
  const limit = retention.max_mb_per_app ? `${fmt(retention.max_mb_per_app, 0)} MB` : "no limit";
  const rows = Object.entries(retention.apps || {}).sort(([a], [b]) => a.localeCompare(b));
  fill(
    byId("retention-rows"),
    rows.length
      ? rows.map(([name, app]) =>
          h(
            "tr",
            { "data-retention-app": name },
            h("td", {}, name),
            h("td", {}, String(app.events)),
            h("td", {}, String(app.open)),
            h("td", {}, `${app.clips ?? 0} (${fmtMB(app.clip_bytes ?? 0)})`),
            h("td", { "data-retention": "used" }, `${fmtMB(app.bytes)} / ${limit}`),
          ),
        )
      : h("tr", {}, h("td", { colspan: 5, class: "muted" }, "Nothing stored yet.")),
  );
}

function reviewButtons(event) {
  // Marking an event true or false feeds the app's precision estimate (admin only); pressing
  // the mark an event already has takes it back.
  const current = event.review ? event.review.verdict : null;
  const button = (verdict, label) =>
    h(
      "button",
      {
        type: "button",
        class: `btn small review-button${current === verdict ? " chosen" : ""}`,
        "aria-pressed": current === verdict ? "true" : "false",
        "aria-label": `Mark event ${event.id} ${verdict}`,
        title: verdict === "true" ? "A real event" : "A false alarm",
        onclick: () => reviewEvent(event, current === verdict ? null : verdict),
      },
      label,
    );
  return h(
    "div",
    { class: "event-review admin-only" },
    button("true", "✓ Real"),
    button("false", "✗ False alarm"),
  );
}

function latestPackages() {
  return state.packages.filter((item) => item.latest).sort((a, b) => a.app.localeCompare(b.app));
}

function options(select, items, keepValue = true) {
  const previous = select.value;
  fill(select, items.map(([value, label]) => h("option", { value }, label)));
  if (keepValue && items.some(([value]) => value === previous)) select.value = previous;
}

function renderAdminForms() {
  if (state.role !== "admin") return;
  const form = byId("app-form");
  options(
    form.elements.package,
    latestPackages().map((item) => [item.app, `${item.app} v${item.version} (${item.base_model})`]),
  );
  options(form.elements.camera, [["", "default camera"], ...state.cameras.map((v) => [v.camera.id, v.camera.id])]);
}

function renderWhatIfOptions() {
  const names = state.apps.map((view) => view.app.name);
  const packages = latestPackages().map((item) => item.app);
  const cameras = state.cameras.map((view) => view.camera.id);
  const signature = JSON.stringify([names, packages, cameras]);
  if (signature === state.whatIfOptions) return;
  state.whatIfOptions = signature;

  const keep = byId("keep-apps");
  const unchecked = new Set(
    [...keep.querySelectorAll("input[type=checkbox]")].filter((box) => !box.checked).map((box) => box.value),
  );
  fill(
    keep,
    names.length
      ? names.map((name) =>
          h(
            "label",
            { class: "check" },
            h("input", { type: "checkbox", name: "keep", value: name, checked: !unchecked.has(name) }),
            name,
          ),
        )
      : h("span", { class: "muted" }, "No apps deployed."),
  );
  options(byId("hypo-package"), packages.map((name) => [name, name]));
  options(byId("hypo-camera"), [["", "default camera"], ...cameras.map((id) => [id, id])]);
  const budget = byId("dry-budget");
  if (!budget.value && state.stats) budget.placeholder = `${fmt(state.stats.budget_ms_per_s, 0)} (current)`;
}

function renderHypothetical() {
  fill(
    byId("hypo-list"),
    state.hypothetical.map((app, index) =>
      h(
        "li",
        { class: "chip removable" },
        `${app.name} (${app.package}${app.camera ? ` on ${app.camera}` : ""})`,
        h(
          "button",
          {
            type: "button",
            class: "chip-remove",
            "aria-label": `Remove hypothetical app ${app.name}`,
            onclick: () => {
              state.hypothetical.splice(index, 1);
              renderHypothetical();
            },
          },
          "×",
        ),
      ),
    ),
  );
}

function planTable(plan) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "data", "data-testid": "dry-run-plan" },
      h("caption", { class: "sr-only" }, "What-if plan per app"),
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          ["App", "Camera", "Cut point", "FPS", "X", "Recall", "Precision", "F1", "Cost (ms/s)"].map((title, index) =>
            h("th", { scope: "col", class: index >= 3 ? "num" : null }, title),
          ),
        ),
      ),
      h(
        "tbody",
        {},
        plan.apps.map((app) =>
          h(
            "tr",
            {},
            h("th", { scope: "row" }, app.name),
            h("td", {}, app.camera),
            h("td", { class: "mono" }, app.cut_point),
            h("td", { class: "num" }, fmtFps(app.fps)),
            h("td", { class: "num" }, String(app.x_vote)),
            h("td", { class: "num" }, fmt(app.recall)),
            h("td", { class: "num" }, fmt(app.precision)),
            h(
              "td",
              {
                class: "num strong",
                title: app.evidence_warning ? `thin evidence: ${app.evidence_warning}` : "90 % interval in brackets",
              },
              fmtF1(app),
            ),
            h("td", { class: "num" }, fmt(app.cost, 1)),
          ),
        ),
      ),
    ),
  );
}

function renderDryRun(result) {
  const target = byId("dry-run-result");
  if (result.status !== "ok" || !result.plan) {
    fill(target, h("p", { class: "empty-note" }, "No apps left to run: the node would sit idle."));
    return;
  }
  const plan = result.plan;
  const change =
    result.current_value === null || result.current_value === undefined
      ? ""
      : ` (plan in force: ${fmt(result.current_value)})`;
  fill(
    target,
    h(
      "p",
      { class: "dry-run-summary" },
      h("strong", {}, `${plan.objective === "min_f1" ? "Lowest F1" : "Mean F1"} ${fmt(plan.value)}`),
      `${change} · cost ${fmt(plan.total_cost, 1)} of ${fmt(result.budget, 1)} ms/s · ${plan.solver} solver, ${fmt(plan.solve_time_s, 3)} s${provenText(plan.optimality_gap)}`,
    ),
    planTable(plan),
    h(
      "div",
      { class: "plan-grid" },
      h("figure", { class: "figure" }, h("figcaption", {}, "What-if DAG"), h("div", { class: "svg-wrap" }, planDags(plan))),
      h(
        "figure",
        { class: "figure" },
        h("figcaption", {}, "What-if plan versus No-Sharing and Max-Sharing"),
        h("div", { class: "svg-wrap" }, comparisonSvg(plan)),
      ),
    ),
  );
}

// ---------------------------------------------------------------------------------------
// Actions

async function changeCamera(id, changes) {
  try {
    await state.api.patch(`api/cameras/${encodeURIComponent(id)}`, changes);
    toast(`Camera ${id} ${changes.enabled ? "enabled" : "disabled"}`);
    await refreshAll();
  } catch (error) {
    handleError(error, `camera ${id}`);
  }
}

async function removeCamera(id) {
  if (!confirm(`Remove camera ${id}?`)) return;
  try {
    await state.api.delete(`api/cameras/${encodeURIComponent(id)}`);
    toast(`Camera ${id} removed`);
    await refreshAll();
  } catch (error) {
    handleError(error, `camera ${id}`);
  }
}

async function reviewEvent(event, verdict) {
  const path = `api/events/${encodeURIComponent(event.id)}/review`;
  try {
    const result = verdict === null ? await state.api.delete(path) : await state.api.put(path, { verdict });
    state.events.set(event.id, result.event);
    renderEvents();
    const feedback = result.feedback;
    if (result.replanned) toast(`Re-planned: ${result.replanned}`);
    else if (feedback)
      toast(`${feedback.app}: ${feedback.true} true, ${feedback.false} false, ${feedback.unreviewed} unreviewed`);
    await refreshAll(); // the app's counts, and the plan when the mark re-planned
  } catch (error) {
    handleError(error, "review");
  }
}

async function removeApp(name) {
  if (!confirm(`Remove app ${name}? The node re-plans the remaining apps.`)) return;
  try {
    await state.api.delete(`api/apps/${encodeURIComponent(name)}`);
    toast(`App ${name} removed`);
    await refreshAll();
  } catch (error) {
    handleError(error, `app ${name}`);
  }
}

async function submitForm(form, task) {
  const button = form.querySelector("button[type=submit]");
  const label = button.textContent;
  button.disabled = true;
  button.textContent = "Working…";
  try {
    await task();
  } finally {
    button.disabled = false;
    button.textContent = label;
  }
}

function onAddCamera(submit) {
  submit.preventDefault();
  const form = submit.target;
  const body = { id: form.elements.id.value.trim(), url: form.elements.url.value.trim() };
  if (form.elements.fps.value) body.fps = Number(form.elements.fps.value);
  submitForm(form, async () => {
    try {
      await state.api.post("api/cameras", body);
      toast(`Camera ${body.id} added`);
      form.reset();
      form.closest("details").open = false;
      await refreshAll();
    } catch (error) {
      handleError(error, "add camera");
    }
  });
}

function parseVote(text) {
  const value = text.trim();
  return value === "auto" ? "auto" : Number.parseInt(value || "1", 10);
}

function onAddApp(submit) {
  submit.preventDefault();
  const form = submit.target;
  const packageName = form.elements.package.value;
  const body = {
    name: form.elements.name.value.trim() || packageName,
    package: packageName,
    threshold: Number(form.elements.threshold.value || 0.5),
    x_vote: parseVote(form.elements.x_vote.value),
  };
  if (form.elements.camera.value) body.camera = form.elements.camera.value;
  submitForm(form, async () => {
    try {
      await state.api.post("api/apps", body);
      toast(`App ${body.name} deployed`);
      form.reset();
      form.closest("details").open = false;
      await refreshAll();
    } catch (error) {
      handleError(error, "deploy app");
    }
  });
}

function onAddHypothetical() {
  const packageName = byId("hypo-package").value;
  if (!packageName) return toast("Upload a package first: what-if apps run a stored package", "error");
  const taken = new Set([...state.apps.map((view) => view.app.name), ...state.hypothetical.map((app) => app.name)]);
  let name = byId("hypo-name").value.trim();
  if (!name) {
    name = packageName;
    for (let index = 2; taken.has(name); index += 1) name = `${packageName}-${index}`;
  }
  if (taken.has(name)) return toast(`An app called ${name} already exists`, "error");
  const app = { name, package: packageName };
  if (byId("hypo-camera").value) app.camera = byId("hypo-camera").value;
  state.hypothetical.push(app);
  byId("hypo-name").value = "";
  renderHypothetical();
}

function onDryRun(submit) {
  submit.preventDefault();
  const form = submit.target;
  const removed = [...form.querySelectorAll("input[name=keep]")].filter((box) => !box.checked).map((box) => box.value);
  const body = { remove_apps: removed, add_apps: state.hypothetical };
  const budget = byId("dry-budget").value;
  if (budget) body.budget = Number(budget);
  const objective = byId("dry-objective").value;
  if (objective) body.objective = objective;
  submitForm(form, async () => {
    try {
      renderDryRun(await state.api.post("api/schedule/dry-run", body));
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) return handleError(error, "what-if");
      fill(byId("dry-run-result"), h("p", { class: "form-error", role: "alert" }, error.message));
    }
  });
}

// ---------------------------------------------------------------------------------------
// Start

function main() {
  byId("login-form").addEventListener("submit", (submit) => {
    submit.preventDefault();
    const token = byId("token-input").value.trim();
    if (token) signIn(token);
  });
  byId("logout-button").addEventListener("click", () => signOut());
  byId("camera-form").addEventListener("submit", onAddCamera);
  byId("app-form").addEventListener("submit", onAddApp);
  byId("hypo-add").addEventListener("click", onAddHypothetical);
  byId("dry-run-form").addEventListener("submit", onDryRun);
  document.addEventListener("visibilitychange", () => visible() && state.api && refreshAll());
  const token = savedToken();
  if (token) signIn(token, true);
  else showLogin("");
}

main();
