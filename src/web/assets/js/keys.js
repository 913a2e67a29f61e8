// The keys: j/k (or the arrows) move, Enter opens, r replays, a resumes, A resumes
// all, Esc closes, / goes to the filter. Keys typed in a field stay there (Esc
// leaves it).

import { state } from "./state.js";
import { $ } from "./dom.js";
import { step } from "./list.js";
import { replay, select } from "./detail.js";
import { resume, resumeAll } from "./intercept.js";

function move(by) {
  const id = step(by);
  if (id !== undefined) select(id);
}

export function bindKeys() {
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
}
