// Spans from an execution's events: an `X_started` event opens one, the
// matching `X_finished` (or `_completed`, `_failed`, …) closes it. Events are
// matched by a key in their data (`tool_call_id`, `span_id` or `id`) when the
// start has one, else by name (`data.tool` or `data.name`, else `X`) in order.
// Plain functions over plain objects: the page renders what they return.

const START = /^(.+)_started$/;
const END = /^(.+)_(finished|completed|failed|ended|cancelled|timed_out)$/;
const KEYS = ["tool_call_id", "span_id", "id"];

function keyOf(data) {
  for (const name of KEYS) {
    const value = data?.[name];
    if (typeof value === "string" || typeof value === "number") return `${name}:${value}`;
  }
  return null;
}

function nameOf(kind, data) {
  const name = data?.tool ?? data?.name;
  return typeof name === "string" && name ? name : kind;
}

function failed(outcome, data) {
  if (outcome !== "finished" && outcome !== "completed" && outcome !== "ended") return true;
  return Boolean(data?.error) || (typeof data?.exit_code === "number" && data.exit_code !== 0);
}

/** Collects spans as events arrive (in seq order); `spans` lists them by start. */
export class SpanBook {
  constructor() {
    /** @type {Array<{id: number, kind: string, name: string, start: number, end: number|null, startSeq: number, endSeq: number|null, failed: boolean}>} */
    this.spans = [];
    this.open = new Map(); // "kind|key" or "kind|name" → spans still open, oldest first
  }

  /** Takes one event; returns the span it opened or closed, if any. */
  add(event) {
    const time = Date.parse(event.timestamp);
    const started = START.exec(event.eventType);
    if (started) return this.#start(started[1], event, time);
    const ended = END.exec(event.eventType);
    if (ended) return this.#finish(ended[1], ended[2], event, time);
    return null;
  }

  #slot(kind, data) {
    const key = keyOf(data);
    return key ? `${kind}|${key}` : `${kind}|name:${nameOf(kind, data)}`;
  }

  #start(kind, event, time) {
    const span = {
      id: this.spans.length, kind, name: nameOf(kind, event.data), start: time, end: null,
      startSeq: event.seq, endSeq: null, failed: false,
    };
    this.spans.push(span);
    const slot = this.#slot(kind, event.data);
    this.open.set(slot, [...(this.open.get(slot) ?? []), span]);
    return span;
  }

  #finish(kind, outcome, event, time) {
    // A key on the end event names its start; without one, the oldest open
    // start of the same name does.
    const slot = this.#slot(kind, event.data);
    const waiting = this.open.get(slot);
    const span = waiting?.shift();
    if (!span) return null;
    if (waiting.length === 0) this.open.delete(slot);
    span.end = time;
    span.endSeq = event.seq;
    span.failed = failed(outcome, event.data);
    return span;
  }
}

/** The time range a chart of `spans` covers: from the first start to `now` or the last end. */
export function extent(spans, now) {
  if (spans.length === 0) return null;
  let from = Infinity;
  let to = now ?? 0;
  for (const span of spans) {
    from = Math.min(from, span.start);
    to = Math.max(to, span.end ?? now ?? span.start);
  }
  return { from, to: Math.max(to, from + 1) };
}
