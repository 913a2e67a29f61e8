// Keeping the list in step with the server: the whole (filtered) list loaded a page
// at a time, then the changes as the live socket sends them, in batches.

import { state } from "./state.js";
import { listFlows, liveSocket } from "./api.js";
import { $ } from "./dom.js";
import { empty, removeAll, reset, schedule, upsert } from "./list.js";
import { showFilterError } from "./filter.js";
import { changed, refreshDetail } from "./detail.js";

const PAGE = 10000; // rows per list request

// Loads the whole (filtered) list from the server, a page at a time.
export async function load() {
  const gen = ++state.loading;
  let after = 0;
  let first = true;
  for (;;) {
    const q = new URLSearchParams({ after, limit: PAGE });
    if (state.filter) q.set("filter", state.filter);
    let r, body;
    try {
      r = await listFlows(q);
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
      empty();
      first = false;
    }
    for (const f of body.flows) upsert(f);
    state.count = body.count;
    schedule();
    if (!body.more || !body.flows.length) break;
    after = body.flows[body.flows.length - 1].id;
  }
}

// Opens the live socket (again a second after it closes), then loads the list.
export function connect() {
  const ws = liveSocket();
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

// Tells the live socket the filter the user typed (the list is loaded again apart).
export function sendFilter() {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify({ filter: state.filter }));
}
