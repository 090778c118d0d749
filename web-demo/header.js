// The open execution's summary: its status, how long it ran (ticking while
// it runs), when it started and, once it ended, its final result. Every
// field has its place from the start, so nothing moves when values arrive.
import { dateTime, duration, preview } from "./format.js";

const $ = (id) => document.getElementById(id);

export class ExecutionHeader {
  constructor() {
    this.summary = null;
  }

  /** Shows execution `id`, before anything is known of it. */
  open(id) {
    this.summary = null;
    $("execution-title").textContent = id ?? "No execution selected";
    $("execution-title").title = id ?? "";
    this.#status(id ? "waiting" : "none", id ? "waiting" : "—");
    $("execution-duration").textContent = "—";
    $("execution-started").textContent = "—";
    this.#final(null);
  }

  /**
   * The hub's summary (null: the hub knows no event of it yet). An older
   * one than shown (an HTTP answer overtaken by a live change) is ignored;
   * returns whether it was shown.
   */
  show(summary) {
    if (this.#stale(summary)) return false;
    this.summary = summary;
    if (!summary) return true;
    this.#status(summary.ended ? summary.status : "running", summary.status);
    $("execution-started").textContent = dateTime(summary.startedAt);
    this.#final(summary.ended ? summary.final : null, summary.ended);
    this.tick();
    return true;
  }

  #stale(summary) {
    const shown = this.summary;
    if (!shown) return false;
    if (!summary) return true;
    return (shown.ended && !summary.ended) || summary.updatedAt < shown.updatedAt;
  }

  /** Whether the execution is known to have ended. */
  get ended() {
    return Boolean(this.summary?.ended);
  }

  /** Updates the duration of a running execution. */
  tick(now = Date.now()) {
    const s = this.summary;
    if (!s) return;
    const end = s.ended ? Date.parse(s.endedAt ?? s.updatedAt) : now;
    $("execution-duration").textContent = duration(end - Date.parse(s.startedAt));
  }

  #status(state, text) {
    const badge = $("execution-status");
    badge.dataset.status = state;
    badge.textContent = text;
  }

  #final(event, ended = false) {
    const box = $("final");
    box.dataset.state = event ? "ended" : ended ? "lost" : "none";
    box.dataset.status = ended ? this.summary?.status ?? "" : "";
    $("final-text").textContent = event ? `${event.eventType} #${event.seq} ${preview(event.data)}` : ended ? "ended (no final event kept)" : "—";
    $("final-text").title = event ? JSON.stringify(event.data, null, 2) : "";
  }
}
