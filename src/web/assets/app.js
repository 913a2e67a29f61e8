// The mitm web UI: a live flow list (only the visible rows are in the DOM), a filter
// box whose filtering the server does, and a detail pane. Plain JS, no build step.
// Captured data only ever reaches the page through textContent, never as HTML.
"use strict";

const ROW = 22; // px, as in app.css
const PAGE = 10000; // rows per list request

const state = {
  byId: new Map(), // id -> summary
  order: [], // ids, in display order
  sort: { key: "id", dir: 1 },
  sortDirty: false,
  selected: null, // id
  detail: null, // the selected flow's detail JSON
  tab: "request",
  filter: "",
  loading: 0, // generation of the running list load
  count: 0,
  frame: 0,
  ws: null,
};

const $ = (id) => document.getElementById(id);

// The token came in the URL: it is in a cookie now, out of the address bar.
if (new URLSearchParams(location.search).has("token")) history.replaceState(null, "", "/");

// Makes an element; strings become text nodes.
function el(tag, props, ...children) {
  const e = document.createElement(tag);
  Object.assign(e, props || {});
  for (const c of children) if (c != null) e.append(c);
  return e;
}

// ---- the list ----

function upsert(f) {
  if (!state.byId.has(f.id)) {
    const last = state.order[state.order.length - 1];
    state.order.push(f.id);
    if (state.sort.key !== "id" || state.sort.dir !== 1 || (last !== undefined && f.id < last)) state.sortDirty = true;
  } else if (state.sort.key !== "id") {
    state.sortDirty = true;
  }
  state.byId.set(f.id, f);
}

function removeAll(ids) {
  if (!ids.length) return;
  for (const id of ids) state.byId.delete(id);
  state.order = state.order.filter((id) => state.byId.has(id));
}

function reset() {
  state.byId.clear();
  state.order = [];
  schedule();
}

// Loads the whole (filtered) list from the server, a page at a time.
async function load() {
  const gen = ++state.loading;
  let after = 0;
  let first = true;
  for (;;) {
    const q = new URLSearchParams({ after, limit: PAGE });
    if (state.filter) q.set("filter", state.filter);
    let r, body;
    try {
      r = await fetch("/api/flows?" + q);
      body = await r.json();
    } catch (e) {
      return;
    }
    if (gen !== state.loading) return; // a newer load took over
    if (!r.ok) {
      showFilterError(body);
      return;
    }
    showFilterError(null);
    if (first) {
      state.byId.clear();
      state.order = [];
      first = false;
    }
    for (const f of body.flows) upsert(f);
    state.count = body.count;
    schedule();
    if (!body.more || !body.flows.length) break;
    after = body.flows[body.flows.length - 1].id;
  }
}

function showFilterError(err) {
  const input = $("filter");
  const out = $("filter-error");
  if (!err) {
    input.classList.remove("bad");
    out.textContent = "";
    return;
  }
  input.classList.add("bad");
  out.textContent = err.position != null ? `${err.error} (at ${err.position})` : err.error;
  if (err.position != null && document.activeElement !== input) input.setSelectionRange(err.position, err.position + 1);
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

function schedule() {
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

function clock(ms) {
  const d = new Date(ms);
  const p = (n, w = 2) => String(n).padStart(w, "0");
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

function bytes(n) {
  if (n == null) return "";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

function millis(ms) {
  if (ms == null) return "";
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

function rowOf(f, i) {
  const status = f.intercepted ? "⏸ " + f.intercepted : f.status == null ? (f.error ? "ERR" : "…") : String(f.status);
  const cells = [
    [String(f.id), "num"],
    [clock(f.time), ""],
    [f.method, ""],
    [f.host + (f.port === (f.scheme === "https" ? 443 : 80) ? "" : ":" + f.port), ""],
    [f.path, ""],
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
  if (f.id === state.selected) row.classList.add("selected");
  return row;
}

// ---- live updates ----

function connect() {
  const ws = new WebSocket(`ws://${location.host}/api/live`);
  state.ws = ws;
  ws.onopen = () => {
    $("live").classList.add("on");
    ws.send(JSON.stringify({ filter: state.filter }));
    load(); // after the socket is open, so nothing falls between the two
  };
  ws.onmessage = (e) => {
    const m = JSON.parse(e.data);
    if (m.type === "flows") {
      const gone = [];
      for (const row of m.rows) {
        const f = Object.fromEntries(m.columns.map((name, i) => [name, row[i]]));
        if (f.matches) upsert(f);
        else if (state.byId.has(f.id)) gone.push(f.id);
        if (f.id === state.selected && changed(f)) refreshDetail();
      }
      removeAll(gone);
      state.count = m.count;
      schedule();
    } else if (m.type === "clear") {
      state.count = 0;
      reset();
    } else if (m.type === "reload") {
      load();
    }
  };
  ws.onclose = () => {
    $("live").classList.remove("on");
    if (state.ws === ws) setTimeout(connect, 1000);
  };
}

// ---- the detail pane ----

// Whether the live summary `f` of the selected flow differs from the one shown (a
// flow whose form is being edited is not redrawn for nothing).
function changed(f) {
  const shown = state.detail && state.detail.summary;
  if (!shown) return true;
  const { matches, ...now } = f;
  return JSON.stringify(now) !== JSON.stringify(shown);
}

let refreshing = null;
function refreshDetail() {
  // At most a few times a second, however often the flow changes.
  if (refreshing) return;
  refreshing = setTimeout(() => {
    refreshing = null;
    if (state.selected != null) select(state.selected, true);
  }, 250);
}

async function select(id, keepScroll) {
  state.selected = id;
  schedule();
  const r = await fetch(`/api/flows/${id}`);
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

function showTab(tab) {
  state.tab = tab;
  for (const b of $("tabs").querySelectorAll("[data-tab]")) b.classList.toggle("on", b.dataset.tab === tab);
  const d = state.detail;
  if (!d) return;
  const pane = $("pane");
  const parts = [];
  if (d.error) parts.push(el("p", { className: "error", textContent: "error: " + d.error }));
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

// ---- intercept, replay, export ----

async function post(url, body) {
  const r = await fetch(url, {
    method: "POST",
    headers: body === undefined ? {} : { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (r.ok) return { ok: true, body: r.status === 204 ? null : await r.json() };
  let error = `${r.status}`;
  try {
    error = (await r.json()).error;
  } catch (e) {}
  return { ok: false, error };
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
              const r = await post(`/api/flows/${d.summary.id}/replay`, form.editOf());
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
async function replay(id) {
  const r = await post(`/api/flows/${id}/replay`);
  if (!r.ok) return r.error;
  if (r.body.error) return "replay failed: " + r.body.error;
  select(r.body.id);
  return null;
}

// The form of an intercepted flow: its message, editable, with Resume and Kill.
function interceptForm(d, phase) {
  const form = editForm(d, phase);
  const id = d.summary.id;
  form.querySelector(".buttons").append(
    el("button", { type: "button", className: "resume", textContent: "Resume (a)", onclick: () => resume(id, form) }),
    el("button", {
      type: "button",
      className: "kill",
      textContent: "Kill",
      onclick: async () => {
        const r = await post(`/api/flows/${id}/kill`);
        if (!r.ok) form.say(r.error);
      },
    }),
  );
  state.form = form;
  return form;
}

async function resume(id, form) {
  const r = await post(`/api/flows/${id}/resume`, form ? form.editOf() : undefined);
  if (!r.ok && form) form.say(r.error);
}

// A form with the message of `phase`; form.editOf() gives the fields changed.
function editForm(d, phase) {
  const isRequest = phase === "request";
  const m = isRequest ? d.request : d.response;
  const form = el("form", { className: "edit" });
  form.addEventListener("submit", (e) => e.preventDefault());
  const input = (name, label, value, tag = "input") => {
    const field = el(tag, { name, value });
    form.append(el("label", { textContent: label }), field);
    return field;
  };
  const heads = m.headers.map(([n, v]) => `${n}: ${v}`).join("\n");
  const original = isRequest ? { method: m.method, url: d.url } : { status: String(m.status), reason: m.reason };
  const first = isRequest
    ? [input("method", "method", m.method), input("url", "URL", d.url)]
    : [input("status", "status", String(m.status)), input("reason", "reason", m.reason)];
  const headers = input("headers", "headers", heads, "textarea");
  const body = input("body", "body", "", "textarea");
  let bodyText = "";
  if (m.body.kept) {
    body.disabled = true;
    body.placeholder = "loading…";
    fetch(`/api/flows/${d.summary.id}/${phase}/body`)
      .then((r) => r.arrayBuffer())
      .then((buf) => {
        const text = utf8(new Uint8Array(buf));
        if (text == null || m.body.truncated) {
          body.placeholder = "(binary or cut body: not editable here)";
          return;
        }
        body.value = bodyText = text;
        body.disabled = false;
      });
  }
  const error = el("p", { className: "error" });
  form.append(el("div", { className: "buttons" }), error);
  form.say = (text) => (error.textContent = text);
  form.editOf = () => {
    const edit = {};
    for (const field of first) if (field.value !== original[field.name]) edit[field.name] = field.name === "status" ? Number(field.value) : field.value;
    if (headers.value !== heads) {
      edit.headers = headers.value
        .split("\n")
        .filter((l) => l.trim())
        .map((l) => {
          const i = l.indexOf(":");
          return i < 0 ? [l.trim(), ""] : [l.slice(0, i).trim(), l.slice(i + 1).trim()];
        });
    }
    if (!body.disabled && body.value !== bodyText) edit.body = body.value;
    return edit;
  };
  return form;
}

async function resumeAll() {
  const r = await fetch("/api/intercept");
  if (!r.ok) return;
  for (const id of (await r.json()).waiting) await post(`/api/flows/${id}/resume`);
}

function exportShown() {
  const q = new URLSearchParams({ format: $("export-format").value });
  if (state.filter) q.set("filter", state.filter);
  location.href = "/api/export?" + q;
}

async function setIntercept(text) {
  const r = await post("/api/intercept", { filter: text });
  const input = $("intercept");
  input.classList.toggle("bad", !r.ok);
  input.classList.toggle("on", r.ok && !!text);
  $("intercept-error").textContent = r.ok ? "" : r.error;
}

function headTable(headers) {
  const table = el("table", { className: "heads" });
  for (const [name, value] of headers) table.append(el("tr", {}, el("td", { textContent: name }), el("td", { textContent: value })));
  return table;
}

function waterfall(t) {
  const end = t.response_end ?? t.response_first_byte ?? t.request_end ?? 0;
  const box = el("div", {});
  const steps = [
    ["request sent", 0, t.request_end],
    ["waiting", t.request_end, t.response_first_byte],
    ["response", t.response_first_byte, t.response_end],
  ];
  for (const [name, from, to] of steps) {
    if (from == null || to == null) continue;
    const fill = el("div", { className: "fill" });
    fill.style.left = (end ? (100 * from) / end : 0) + "%";
    fill.style.width = Math.max(0.5, end ? (100 * (to - from)) / end : 0) + "%";
    box.append(el("div", { className: "bar" }, el("span", { textContent: name }), el("div", { className: "track" }, fill), el("span", { className: "num", textContent: millis(to - from) })));
  }
  if (!box.children.length) box.append(el("p", { className: "note", textContent: "no timings yet" }));
  return box;
}

// A body: what is known of it, then a view chosen from its type (switchable).
function bodyView(id, side, b) {
  const box = el("div", { className: "bodybox" });
  let note = `${bytes(b.size)} on the wire`;
  if (b.encoding) note += `, ${b.encoding}`;
  if (b.decoded != null) note += `, ${bytes(b.decoded)} decoded`;
  if (b.truncated) note += `, ${bytes(b.kept)} kept (cut)`;
  box.append(el("h3", { textContent: side === "request" ? "Request body" : "Response body" }));
  box.append(el("p", { className: "note body-note", textContent: note }));
  if (b.decode_error) box.append(el("p", { className: "error", textContent: "cannot decode: " + b.decode_error + " (shown raw)" }));
  if (!b.kept) return box;
  const url = `/api/flows/${id}/${side}/body`;
  const views = el("div", { className: "views" });
  const out = el("div", {});
  box.append(views, out);
  fetch(url).then((r) => r.arrayBuffer()).then((buf) => {
    const data = new Uint8Array(buf);
    const text = utf8(data);
    const type = (b.content_type || "").toLowerCase();
    const kinds = ["text", "json", "hex"];
    if (type.startsWith("image/")) kinds.push("image");
    let kind = type.startsWith("image/") && !type.includes("svg") ? "image" : text == null ? "hex" : looksJson(type, text) ? "json" : "text";
    const show = (k) => {
      for (const bt of views.children) bt.classList.toggle("on", bt.textContent === k);
      if (k === "image") out.replaceChildren(el("img", { className: "body", src: url, alt: "response image" }));
      else if (k === "json") out.replaceChildren(el("pre", { className: "body", textContent: pretty(text) }));
      else if (k === "text") out.replaceChildren(el("pre", { className: "body", textContent: text ?? new TextDecoder().decode(data) }));
      else out.replaceChildren(el("pre", { className: "body", textContent: hex(data) }));
    };
    for (const k of kinds) views.append(el("button", { type: "button", textContent: k, onclick: () => show(k) }));
    show(kind);
  });
  return box;
}

function utf8(data) {
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(data);
  } catch (e) {
    return null;
  }
}

function looksJson(type, text) {
  if (!type.includes("json") && !/^\s*[[{]/.test(text)) return false;
  try {
    JSON.parse(text);
    return true;
  } catch (e) {
    return false;
  }
}

function pretty(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch (e) {
    return text;
  }
}

function hex(data) {
  const lines = [];
  const n = Math.min(data.length, 64 * 1024);
  for (let i = 0; i < n; i += 16) {
    const row = data.subarray(i, Math.min(i + 16, n));
    const h = Array.from(row, (x) => x.toString(16).padStart(2, "0")).join(" ");
    const a = Array.from(row, (x) => (x >= 32 && x < 127 ? String.fromCharCode(x) : ".")).join("");
    lines.push(`${i.toString(16).padStart(8, "0")}  ${h.padEnd(47)}  ${a}`);
  }
  if (n < data.length) lines.push(`… ${data.length - n} more bytes`);
  return lines.join("\n");
}

// ---- wiring ----

function move(by) {
  if (!state.order.length) return;
  let i = state.order.indexOf(state.selected);
  i = i < 0 ? (by > 0 ? 0 : state.order.length - 1) : Math.min(state.order.length - 1, Math.max(0, i + by));
  const list = $("list");
  if (i * ROW < list.scrollTop) list.scrollTop = i * ROW;
  else if ((i + 1) * ROW > list.scrollTop + list.clientHeight) list.scrollTop = (i + 1) * ROW - list.clientHeight;
  select(state.order[i]);
}

function start() {
  $("list").addEventListener("scroll", schedule);
  window.addEventListener("resize", schedule);
  $("list").addEventListener("click", (e) => {
    const row = e.target.closest(".row");
    if (row) select(Number(row.dataset.id));
  });
  $("columns").addEventListener("click", (e) => {
    const key = e.target.dataset.key;
    if (!key) return;
    state.sort = { key, dir: state.sort.key === key ? -state.sort.dir : 1 };
    state.sortDirty = true;
    schedule();
  });
  let typing = null;
  $("filter").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => {
      state.filter = $("filter").value.trim();
      if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify({ filter: state.filter }));
      load();
    }, 200);
  });
  $("clear").addEventListener("click", () => fetch("/api/clear", { method: "POST" }));
  let typingIntercept = null;
  $("intercept").addEventListener("input", () => {
    clearTimeout(typingIntercept);
    typingIntercept = setTimeout(() => setIntercept($("intercept").value.trim()), 200);
  });
  $("resume-all").addEventListener("click", resumeAll);
  $("export").addEventListener("click", exportShown);
  $("tabs").addEventListener("click", (e) => {
    if (e.target.id === "close") {
      $("detail").hidden = true;
      state.selected = null;
      schedule();
    } else if (e.target.dataset.tab) showTab(e.target.dataset.tab);
  });
  document.addEventListener("keydown", (e) => {
    if (["INPUT", "TEXTAREA", "SELECT"].includes(e.target.tagName)) {
      if (e.key === "Escape") e.target.blur();
      return;
    }
    if (e.key === "j" || e.key === "ArrowDown") move(1);
    else if (e.key === "k" || e.key === "ArrowUp") move(-1);
    else if (e.key === "Enter" && state.selected != null) select(state.selected);
    else if (e.key === "r" && state.selected != null) replay(state.selected);
    else if (e.key === "a" && state.selected != null) resume(state.selected, state.form);
    else if (e.key === "A") resumeAll();
    else if (e.key === "Escape") $("tabs").querySelector("#close").click();
    else if (e.key === "/") {
      e.preventDefault();
      $("filter").focus();
    } else return;
    e.preventDefault();
  });
  connect();
}

start();
