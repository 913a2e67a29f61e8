// Intercept: the intercept filter box, and the form of a flow waiting for the user,
// with Resume (its changes) and Kill.

import { state } from "./state.js";
import { interceptState, killFlow, resumeFlow, setInterceptFilter } from "./api.js";
import { $, el, onTyped } from "./dom.js";
import { editForm } from "./edit.js";

// The form of an intercepted flow (detail `d`, waiting at `phase`): its message,
// editable, with Resume and Kill. It becomes `state.form`, which the key `a` resumes.
export function interceptForm(d, phase) {
  const form = editForm(d, phase);
  const id = d.summary.id;
  form.querySelector(".buttons").append(
    el("button", { type: "button", className: "resume", textContent: "Resume (a)", onclick: () => resume(id, form) }),
    el("button", {
      type: "button",
      className: "kill",
      textContent: "Kill",
      onclick: async () => {
        const r = await killFlow(id);
        if (!r.ok) form.say(r.error);
      },
    }),
  );
  state.form = form;
  return form;
}

// Resumes flow `id`, changed by the fields of `form` (when there is one).
export async function resume(id, form) {
  const r = await resumeFlow(id, form ? form.editOf() : undefined);
  if (!r.ok && form) form.say(r.error);
}

export async function resumeAll() {
  const r = await interceptState();
  if (!r.ok) return;
  for (const id of (await r.json()).waiting) await resumeFlow(id);
}

async function setIntercept(text) {
  const r = await setInterceptFilter(text);
  const input = $("intercept");
  input.classList.toggle("bad", !r.ok);
  input.classList.toggle("on", r.ok && !!text);
  $("intercept-error").textContent = r.ok ? "" : r.error;
}

// Sets the intercept filter as the user types it.
export function watchIntercept() {
  onTyped($("intercept"), setIntercept);
}
