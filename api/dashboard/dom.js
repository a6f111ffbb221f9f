// Small helpers to build DOM and SVG elements without innerHTML (all data is set as text).

const SVG_NS = "http://www.w3.org/2000/svg";

function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

function setAttributes(element, attributes) {
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (name === "dataset") {
      Object.assign(element.dataset, value);
    } else if (value === true) {
      element.setAttribute(name, "");
    } else {
      element.setAttribute(name, String(value));
    }
  }
  return element;
}

/** An HTML element: h("button", {class: "btn", onclick: f}, "Text"). */
export function h(tag, attributes, ...children) {
  return append(setAttributes(document.createElement(tag), attributes), children);
}

/** An SVG element, same calling convention as h(). */
export function s(tag, attributes, ...children) {
  return append(setAttributes(document.createElementNS(SVG_NS, tag), attributes), children);
}

/** Replace the children of `element`. */
export function fill(element, ...children) {
  element.replaceChildren();
  return append(element, children);
}

export function byId(id) {
  return document.getElementById(id);
}

export function fmt(value, digits = 2) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  return Number(value).toFixed(digits);
}

/** Predicted F1 with its 90 % interval when the plan states one: "0.95 (0.90–0.99)". */
export function fmtF1(app) {
  const interval = app.f1_interval;
  return interval ? `${fmt(app.f1)} (${fmt(interval[0])}–${fmt(interval[1])})` : fmt(app.f1);
}

/** Bytes in MB ("0.03 MB", "12.5 MB"), "—" when unknown. */
export function fmtMB(bytes) {
  if (bytes === null || bytes === undefined) return "—";
  const megabytes = bytes / (1024 * 1024);
  return `${megabytes.toFixed(megabytes < 10 ? 2 : 1)} MB`;
}

export function fmtFps(value) {
  if (value === null || value === undefined) return "—";
  return value >= 1 || value === 0 ? Number(value).toFixed(value % 1 === 0 ? 0 : 1) : Number(value).toFixed(2);
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  const hours = Math.floor(m / 60);
  if (hours < 48) return `${hours} h ${m % 60} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

export function fmtTime(epochSeconds) {
  if (!epochSeconds) return "—";
  const date = new Date(epochSeconds * 1000);
  const sameDay = date.toDateString() === new Date().toDateString();
  return sameDay ? date.toLocaleTimeString() : date.toLocaleString();
}

/** Compare cut-point names by their numbers ("conv_pw_5" before "conv_pw_11"). */
export function naturalCompare(a, b) {
  return String(a).localeCompare(String(b), undefined, { numeric: true });
}
