// The UI's server: its endpoints, and the live socket. A GET gives the fetch Response
// (its JSON, or an error's `{error}`, read by the caller); a POST gives what `post`
// says. The types of the JSON are in the Rust module `mitm::web::json`.

// POSTs `body` (none when undefined) as JSON: { ok: true, body } (null for 204), or
// { ok: false, error } with what the server says is wrong.
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

// A page of the list (a FlowPage); `query` (URLSearchParams) has after, limit, filter.
export const listFlows = (query) => fetch("/api/flows?" + query);

// One flow in detail (a FlowDetail).
export const flowDetail = (id) => fetch(`/api/flows/${id}`);

// Where the body of flow `id`'s `side` (request or response) is, decoded.
export const bodyUrl = (id, side) => `/api/flows/${id}/${side}/body`;

// The bytes of that body, as a Uint8Array.
export const bodyBytes = (id, side) =>
  fetch(bodyUrl(id, side))
    .then((r) => r.arrayBuffer())
    .then((buf) => new Uint8Array(buf));

export const clearFlows = () => fetch("/api/clear", { method: "POST" });

// The intercept filter and the ids of the flows waiting (an InterceptState).
export const interceptState = () => fetch("/api/intercept");

export const setInterceptFilter = (filter) => post("/api/intercept", { filter });

// Resumes (changed by `edit`, if given), kills or replays (changed by `edit`) a flow.
export const resumeFlow = (id, edit) => post(`/api/flows/${id}/resume`, edit);
export const killFlow = (id) => post(`/api/flows/${id}/kill`);
export const replayFlow = (id, edit) => post(`/api/flows/${id}/replay`, edit);

// Where the flows matching `filter` download as a capture file in `format`.
export function exportUrl(format, filter) {
  const q = new URLSearchParams({ format });
  if (filter) q.set("filter", filter);
  return "/api/export?" + q;
}

// The live socket: it sends batches of changes; send it { filter } to set its filter.
export const liveSocket = () => new WebSocket(`ws://${location.host}/api/live`);
