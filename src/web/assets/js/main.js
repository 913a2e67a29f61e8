// The mitm web UI: a live flow list (only the visible rows are in the DOM), a filter
// box whose filtering the server does, and a detail pane. ES modules the browser loads
// as they are, no build step; this one, which the page loads, wires the others to the
// page. Captured data only ever reaches the page through textContent, never as HTML.

import { state } from "./state.js";
import { clearFlows, exportUrl } from "./api.js";
import { $ } from "./dom.js";
import { schedule, sortBy } from "./list.js";
import { watchFilter } from "./filter.js";
import { close, select, showTab } from "./detail.js";
import { resumeAll, watchIntercept } from "./intercept.js";
import { connect, load, sendFilter } from "./live.js";
import { bindKeys } from "./keys.js";

// The token came in the URL: it is in a cookie now, out of the address bar.
if (new URLSearchParams(location.search).has("token")) history.replaceState(null, "", "/");

$("list").addEventListener("scroll", schedule);
window.addEventListener("resize", schedule);
$("list").addEventListener("click", (e) => {
  const row = e.target.closest(".row");
  if (row) select(Number(row.dataset.id));
});
$("columns").addEventListener("click", (e) => {
  const key = e.target.dataset.key;
  if (key) sortBy(key);
});
watchFilter(() => {
  sendFilter();
  load();
});
$("clear").addEventListener("click", () => clearFlows());
watchIntercept();
$("resume-all").addEventListener("click", resumeAll);
$("export").addEventListener("click", () => {
  location.href = exportUrl($("export-format").value, state.filter);
});
$("tabs").addEventListener("click", (e) => {
  if (e.target.id === "close") close();
  else if (e.target.dataset.tab) showTab(e.target.dataset.tab);
});
bindKeys();
connect();
