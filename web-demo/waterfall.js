// The waterfall: one row per span, its bar placed on the execution's time
// axis. Bars move with `transform` and grow with `width`, so a rescaled axis
// never shifts the layout; open spans grow until they finish or the
// execution ends.
import { SpanBook, extent } from "./spans.js";
import { duration, el } from "./format.js";

export class Waterfall {
  /** `onPick(seq)`: a span was chosen; its start event is `seq`. */
  constructor({ container, count, empty, axis, onPick }) {
    Object.assign(this, { container, count, empty, axis, onPick });
    this.reset();
  }

  /** Forgets every span (another execution, or a new history). */
  reset() {
    this.book = new SpanBook();
    this.rows = new Map();
    this.endedAt = null;
    this.container.replaceChildren();
    this.axis.hidden = true;
    this.#counts();
  }

  /** Takes an event (seq order); returns whether it opened or closed a span. */
  add(event) {
    const span = this.book.add(event);
    if (!span) return false;
    if (!this.rows.has(span.id)) this.#row(span);
    this.#counts();
    return true;
  }

  /** The execution ended at `time` (ms): open spans stop growing there. */
  end(time) {
    this.endedAt = Number.isFinite(time) ? time : Date.now();
  }

  /** Draws at the next frame (once, however many spans changed meanwhile). */
  schedule() {
    if (this.scheduled) return;
    this.scheduled = true;
    requestAnimationFrame(() => {
      this.scheduled = false;
      this.draw();
    });
  }

  /** Places every bar for the time now. */
  draw(now = Date.now()) {
    const until = this.endedAt ?? now;
    const range = extent(this.book.spans, until);
    if (!range) return;
    const total = range.to - range.from;
    this.axis.hidden = false;
    this.axis.querySelector(".axis-mid").textContent = duration(total / 2);
    this.axis.querySelector(".axis-end").textContent = duration(total);
    const follow = this.#atBottom();
    for (const span of this.book.spans) {
      const row = this.rows.get(span.id);
      const end = span.end ?? until;
      row.style.setProperty("--start", ((span.start - range.from) / total).toFixed(5));
      row.style.setProperty("--len", (Math.max(0, end - span.start) / total).toFixed(5));
      row.dataset.state = span.end === null ? (this.endedAt ? "unfinished" : "open") : span.failed ? "failed" : "done";
      row.querySelector(".span-time").textContent = duration(end - span.start);
    }
    if (follow) this.container.scrollTop = this.container.scrollHeight;
  }

  #row(span) {
    // A button: choosing a span (click, Enter, Space) shows its events.
    const row = el("button", "span-row");
    row.type = "button";
    row.dataset.span = String(span.id);
    row.dataset.kind = span.kind;
    row.title = `${span.kind} ${span.name}: show event #${span.startSeq}`;
    row.addEventListener("click", () => this.onPick(span.startSeq));
    const name = el("span", "span-name");
    name.append(el("span", "span-kind", span.kind), el("span", "span-label", span.name));
    const track = el("span", "span-track");
    track.append(el("span", "span-bar"));
    row.append(name, track, el("span", "span-time"));
    this.rows.set(span.id, row);
    this.container.append(row);
  }

  #counts() {
    this.count.textContent = String(this.book.spans.length);
    this.empty.hidden = this.book.spans.length > 0;
  }

  #atBottom() {
    const c = this.container;
    return c.scrollHeight - c.scrollTop - c.clientHeight < 8;
  }
}
