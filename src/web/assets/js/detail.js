// The detail pane: the selected flow, fetched again when it changes, in four tabs
// (request, response, WebSocket messages, timing), with replay and curl for every
// flow and the intercept form for a waiting one.

import { state } from "./state.js";
import { flowDetail, replayFlow } from "./api.js";
import { $, el } from "./dom.js";
import { bytes, clock } from "./format.js";
import { markOf, schedule } from "./list.js";
import { editForm } from "./edit.js";
import { interceptForm } from "./intercept.js";
import { bodyView, headTable, waterfall } from "./views.js";

// Whether the live summary `f` of the selected flow differs from the one shown (a
// flow whose form is being edited is not redrawn for nothing).
export function changed(f) {
  const shown = state.detail && state.detail.summary;
  if (!shown) return true;
  const { matches, ...now } = f;
  return JSON.stringify(now) !== JSON.stringify(shown);
}

let refreshing = null;
export function refreshDetail() {
  // At most a few times a second, however often the flow changes.
  if (refreshing) return;
  refreshing = setTimeout(() => {
    refreshing = null;
    if (state.selected != null) select(state.selected, true);
  }, 250);
}

export async function select(id, keepScroll) {
  state.selected = id;
  schedule();
  const r = await flowDetail(id);
  if (state.selected !== id) return;
  const detail = await r.json();
  if (!r.ok) {
    state.detail = null;
    $("detail").hidden = false;
    $("pane").replaceChildren(el("p", { className: "error", textContent: detail.error }));
    return;
  }
  const pane = $("pane");
  const top = pane.scrollTop;
  state.detail = detail;
  $("detail").hidden = false;
  showTab(state.tab);
  if (keepScroll) pane.scrollTop = top;
}

export function close() {
  $("detail").hidden = true;
  state.selected = null;
  schedule();
}

export function showTab(tab) {
  state.tab = tab;
  for (const b of $("tabs").querySelectorAll("[data-tab]")) b.classList.toggle("on", b.dataset.tab === tab);
  const d = state.detail;
  if (!d) return;
  const pane = $("pane");
  const parts = [];
  if (d.error) parts.push(el("p", { className: "error", textContent: "error: " + d.error }));
  if (d.summary.marked) parts.push(el("p", { className: "mark", textContent: "marked: " + markOf(d.summary.marked) + " " + d.summary.marked }));
  if (d.summary.comment) parts.push(el("p", { className: "comment", textContent: "comment: " + d.summary.comment }));
  state.form = null;
  if (tab === "request") {
    const q = d.request;
    parts.push(actions(d));
    if (d.summary.intercepted === "request") parts.push(interceptForm(d, "request"));
    parts.push(el("p", { className: "first", textContent: `${q.method} ${d.url} ${q.version}` }));
    parts.push(headTable(q.headers), bodyView(d.summary.id, "request", q.body));
  } else if (tab === "response") {
    const s = d.response;
    if (s && d.summary.intercepted === "response") parts.push(interceptForm(d, "response"));
    if (!s) {
      parts.push(el("p", { className: "note", textContent: d.summary.pending ? "waiting for the response…" : "no response" }));
    } else {
      parts.push(el("p", { className: "first", textContent: `${s.version} ${s.status} ${s.reason}` }));
      parts.push(headTable(s.headers), bodyView(d.summary.id, "response", s.body));
    }
  } else if (tab === "messages") {
    if (!d.websocket) parts.push(el("p", { className: "note", textContent: "not a WebSocket" }));
    else if (!d.websocket.length) parts.push(el("p", { className: "note", textContent: "no messages yet" }));
    else for (const m of d.websocket) {
      const meta = `${clock(m.at)} ${m.text ? "text" : "binary"} ${bytes(m.size)}: `;
      parts.push(el("div", { className: "msg " + (m.from_client ? "client" : "server"), textContent: meta + m.data }));
    }
  } else if (tab === "timing") {
    parts.push(waterfall(d.timings));
    const facts = [`client: ${d.client || "?"}`, `server: ${d.server || "?"}`, `client TLS: ${d.client_tls ? "yes" : "no"}`];
    const tls = d.tls || {};
    if (d.client_tls) {
      facts.push(`SNI: ${tls.sni || "(none)"}`, `ALPN: ${tls.alpn || "(none)"}`, `TLS version: ${tls.version || "?"}`);
    }
    for (const f of facts) parts.push(el("div", { className: "note", textContent: f }));
  }
  pane.replaceChildren(...parts);
}

// Replay, edit and replay, curl: for every flow.
function actions(d) {
  const bar = el("div", { className: "actions" });
  const out = el("div", {});
  const say = (text) => out.replaceChildren(el("p", { className: "error", textContent: text }));
  bar.append(
    el("button", { type: "button", className: "replay", textContent: "Replay (r)", onclick: () => replay(d.summary.id).then((e) => e && say(e)) }),
    el("button", {
      type: "button",
      className: "edit-replay",
      textContent: "Edit and replay",
      onclick: () => {
        const form = editForm(d, "request");
        form.querySelector(".buttons").append(
          el("button", {
            type: "button",
            className: "send",
            textContent: "Send",
            onclick: async () => {
              const r = await replayFlow(d.summary.id, form.editOf());
              if (!r.ok) return form.say(r.error);
              select(r.body.id);
            },
          }),
        );
        out.replaceChildren(form);
      },
    }),
    el("button", { type: "button", className: "curl", textContent: "curl", onclick: () => out.replaceChildren(el("pre", { className: "curl", textContent: d.curl })) }),
  );
  return el("div", {}, bar, out);
}

// Replays flow `id`; selects the new flow, or returns the error.
export async function replay(id) {
  const r = await replayFlow(id);
  if (!r.ok) return r.error;
  if (r.body.error) return "replay failed: " + r.body.error;
  select(r.body.id);
  return null;
}
