// The form that edits a message (an intercepted one, or a request to replay):
// form.editOf() gives the fields changed, form.say(text) shows an error under it.

import { bodyBytes } from "./api.js";
import { el } from "./dom.js";
import { utf8 } from "./format.js";

// A form with the message of `phase` (request or response) of the flow detail `d`.
export function editForm(d, phase) {
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
    bodyBytes(d.summary.id, phase).then((data) => {
      const text = utf8(data);
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
