// The flow list: the rows kept in `state`, sorted on demand, and drawn virtually
// (only the rows in view are in the DOM, so 100 000 flows scroll).

import { state } from "./state.js";
import { $, el } from "./dom.js";
import { bytes, clock, millis } from "./format.js";

export const ROW = 22; // px, as in app.css

// Adds the summary `f`, or replaces the one with its id.
export function upsert(f) {
  if (!state.byId.has(f.id)) {
    const last = state.order[state.order.length - 1];
    state.order.push(f.id);
    if (state.sort.key !== "id" || state.sort.dir !== 1 || (last !== undefined && f.id < last)) state.sortDirty = true;
  } else if (state.sort.key !== "id") {
    state.sortDirty = true;
  }
  state.byId.set(f.id, f);
}

export function removeAll(ids) {
  if (!ids.length) return;
  for (const id of ids) state.byId.delete(id);
  state.order = state.order.filter((id) => state.byId.has(id));
}

export function empty() {
  state.byId.clear();
  state.order = [];
}

export function reset() {
  empty();
  schedule();
}

// Sorts by the column `key`; again on the same column, the other way.
export function sortBy(key) {
  state.sort = { key, dir: state.sort.key === key ? -state.sort.dir : 1 };
  state.sortDirty = true;
  schedule();
}

function compare(a, b) {
  const { key, dir } = state.sort;
  const x = state.byId.get(a)[key];
  const y = state.byId.get(b)[key];
  if (x === y || (x == null && y == null)) return (a - b) * dir;
  if (x == null) return 1;
  if (y == null) return -1;
  return (x < y ? -1 : 1) * dir;
}

// Draws the list at the next frame (once, however often it is asked).
export function schedule() {
  if (!state.frame) state.frame = requestAnimationFrame(render);
}

function render() {
  state.frame = 0;
  if (state.sortDirty) {
    state.order.sort(compare);
    state.sortDirty = false;
  }
  const list = $("list");
  const spacer = $("spacer");
  // Following the newest flows when scrolled to the bottom, as a log would.
  const follow = list.scrollTop + list.clientHeight >= spacer.offsetHeight - ROW;
  spacer.style.height = state.order.length * ROW + "px";
  if (follow && state.sort.key === "id" && state.sort.dir === 1) list.scrollTop = list.scrollHeight;
  const first = Math.max(0, Math.floor(list.scrollTop / ROW) - 10);
  const last = Math.min(state.order.length, Math.ceil((list.scrollTop + list.clientHeight) / ROW) + 10);
  const rows = document.createDocumentFragment();
  for (let i = first; i < last; i++) rows.append(rowOf(state.byId.get(state.order[i]), i));
  spacer.replaceChildren(rows);
  const shown = state.order.length;
  // "N of M" while filtered, or while the list is still loading.
  $("count").textContent = shown === state.count ? `${shown} flows` : `${shown} of ${state.count} flows`;
  for (const span of $("columns").children) {
    span.className = span.dataset.key === state.sort.key ? (state.sort.dir > 0 ? "asc" : "desc") : "";
  }
}

function rowOf(f, i) {
  const status = f.intercepted ? "⏸ " + f.intercepted : f.status == null ? (f.error ? "ERR" : "…") : String(f.status);
  const cells = [
    [String(f.id), "num"],
    [clock(f.time), ""],
    [f.method, ""],
    [f.host + (f.port === (f.scheme === "https" ? 443 : 80) ? "" : ":" + f.port), ""],
    [(f.marked ? markOf(f.marked) + " " : "") + f.path, ""],
    [status, "status s" + status[0]],
    [f.websocket ? "websocket" : f.content_type, ""],
    [f.status == null ? "" : bytes(f.size), "num"],
    [millis(f.duration), "num"],
  ];
  const row = el("div", { className: "row" });
  for (const [text, cls] of cells) row.append(el("span", { className: cls, textContent: text, title: text }));
  row.dataset.id = f.id;
  row.style.top = i * ROW + "px";
  if (f.pending) row.classList.add("pending");
  if (f.intercepted) row.classList.add("intercepted");
  if (f.error) row.classList.add("failed");
  if (f.marked) row.classList.add("marked");
  if (f.comment) row.title = f.comment;
  if (f.id === state.selected) row.classList.add("selected");
  return row;
}

// A mark as the list shows it: mitmproxy's emoji names as a few glyphs, other text as is.
const MARKS = { ":default:": "●", ":star:": "★", ":heart:": "♥", ":red_circle:": "●", ":check_mark:": "✔", ":x:": "✘" };
export function markOf(marked) {
  return MARKS[marked] || marked;
}

// The id of the flow `by` rows from the selected one (the first or last without
// one), scrolled into view; undefined for an empty list.
export function step(by) {
  if (!state.order.length) return undefined;
  let i = state.order.indexOf(state.selected);
  i = i < 0 ? (by > 0 ? 0 : state.order.length - 1) : Math.min(state.order.length - 1, Math.max(0, i + by));
  const list = $("list");
  if (i * ROW < list.scrollTop) list.scrollTop = i * ROW;
  else if ((i + 1) * ROW > list.scrollTop + list.clientHeight) list.scrollTop = (i + 1) * ROW - list.clientHeight;
  return state.order[i];
}
