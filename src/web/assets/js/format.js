// How values show: times, sizes, durations, and bodies as text, JSON or hex.

export function clock(ms) {
  const d = new Date(ms);
  const p = (n, w = 2) => String(n).padStart(w, "0");
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

export function bytes(n) {
  if (n == null) return "";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

export function millis(ms) {
  if (ms == null) return "";
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

// `data` as text, or null when it is not UTF-8.
export function utf8(data) {
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(data);
  } catch (e) {
    return null;
  }
}

export function looksJson(type, text) {
  if (!type.includes("json") && !/^\s*[[{]/.test(text)) return false;
  try {
    JSON.parse(text);
    return true;
  } catch (e) {
    return false;
  }
}

export function pretty(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch (e) {
    return text;
  }
}

export function hex(data) {
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
