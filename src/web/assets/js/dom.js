// Small helpers to find and make elements. Captured data only ever reaches the page
// through textContent (or a property such as `value`), never as HTML.

export const $ = (id) => document.getElementById(id);

// Makes an element; strings become text nodes.
export function el(tag, props, ...children) {
  const e = document.createElement(tag);
  Object.assign(e, props || {});
  for (const c of children) if (c != null) e.append(c);
  return e;
}

// Calls `then` with the trimmed text of `input` once typing in it pauses for 200 ms.
export function onTyped(input, then) {
  let typing = null;
  input.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => then(input.value.trim()), 200);
  });
}
