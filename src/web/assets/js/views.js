// How the parts of a flow show in the detail pane: header fields, a body (as text,
// pretty JSON, an image or hex), and the timings as a small waterfall.

import { bodyBytes, bodyUrl } from "./api.js";
import { el } from "./dom.js";
import { bytes, hex, looksJson, millis, pretty, utf8 } from "./format.js";

export function headTable(headers) {
  const table = el("table", { className: "heads" });
  for (const [name, value] of headers) table.append(el("tr", {}, el("td", { textContent: name }), el("td", { textContent: value })));
  return table;
}

export function waterfall(t) {
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
export function bodyView(id, side, b) {
  const box = el("div", { className: "bodybox" });
  let note = `${bytes(b.size)} on the wire`;
  if (b.encoding) note += `, ${b.encoding}`;
  if (b.decoded != null) note += `, ${bytes(b.decoded)} decoded`;
  if (b.truncated) note += `, ${bytes(b.kept)} kept (cut)`;
  box.append(el("h3", { textContent: side === "request" ? "Request body" : "Response body" }));
  box.append(el("p", { className: "note body-note", textContent: note }));
  if (b.decode_error) box.append(el("p", { className: "error", textContent: "cannot decode: " + b.decode_error + " (shown raw)" }));
  if (!b.kept) return box;
  const url = bodyUrl(id, side);
  const views = el("div", { className: "views" });
  const out = el("div", {});
  box.append(views, out);
  bodyBytes(id, side).then((data) => {
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
