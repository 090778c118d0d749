// How times, durations and values read on the page.

/** `1.2 s`, `3 m 04 s`, `2 h 05 m`. */
export function duration(ms) {
  if (!Number.isFinite(ms) || ms < 0) return "—";
  if (ms < 10_000) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.floor(ms / 1000);
  if (s < 3600) return `${Math.floor(s / 60)} m ${String(s % 60).padStart(2, "0")} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor(s / 60) % 60).padStart(2, "0")} m`;
}

/** `now`, `12s ago`, `4m ago`, `3h ago`, `2d ago`. */
export function age(ms) {
  if (!Number.isFinite(ms)) return "";
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 2) return "now";
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86_400)}d ago`;
}

const pad = (n, width = 2) => String(n).padStart(width, "0");

/**
 * `14:03:07.123` (local time), or the text itself when it is not a time.
 * Written out by hand: `toLocaleTimeString` costs tens of microseconds a
 * call, which a replay of thousands of events feels.
 */
export function clock(iso) {
  const when = new Date(iso);
  if (Number.isNaN(when.getTime())) return iso ?? "—";
  return `${pad(when.getHours())}:${pad(when.getMinutes())}:${pad(when.getSeconds())}.${pad(when.getMilliseconds(), 3)}`;
}

/** A date and time for a start: `2026-11-29 21:00:00`. */
export function dateTime(iso) {
  const when = new Date(iso);
  if (Number.isNaN(when.getTime())) return "—";
  return `${when.getFullYear()}-${pad(when.getMonth() + 1)}-${pad(when.getDate())} ${pad(when.getHours())}:${pad(when.getMinutes())}:${pad(when.getSeconds())}`;
}

/** A one-line preview of event data. */
export function preview(data) {
  const text = JSON.stringify(data ?? {});
  return text === "{}" ? "" : text;
}

/** The colour family of an event type. */
export function kindOf(type) {
  if (/(^|_)(error|failed|failure)$/.test(type)) return "error";
  if (/_(started|finished|completed|ended|cancelled|timed_out)$/.test(type)) return type.startsWith("execution") || type.startsWith("status") ? "status" : "tool";
  if (/status/.test(type)) return "status";
  return "other";
}

/** A DOM element with a class and text. */
export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}
