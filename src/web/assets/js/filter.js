// The filter box: the server filters, the box says where an expression is wrong.

import { state } from "./state.js";
import { $, onTyped } from "./dom.js";

// Shows the server's `{error, position}` under the box, or clears it (null).
export function showFilterError(err) {
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

// Calls `changed` when the user has typed a new filter (in `state.filter`).
export function watchFilter(changed) {
  onTyped($("filter"), (text) => {
    state.filter = text;
    changed();
  });
}
