// The waterfall: one row per span, its bar placed on the execution's time
// axis. Bars move with `transform` and grow with `width`, so a rescaled axis
// never shifts the layout; open spans grow until they finish or the
// execution ends.
import { SpanBook, extent } from "./spans.js";
import { duration, el } from "./format.js";

export class Waterfall {
  constructor(container, count, empty) {
    this.container = container;
    this.count = count;
    this.empty = empty;
    this.reset();
  }

  /** Forgets every span (another execution, or a new history). */
  reset() {
    this.book = new SpanBook();
    this.rows = new Map();
    this.endedAt = null;
    this.container.replaceChildren();
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

  /** Places every bar for the time now. */
  draw(now = Date.now()) {
    const until = this.endedAt ?? now;
    const range = extent(this.book.spans, until);
    if (!range) return;
    const total = range.to - range.from;
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
    const row = el("div", "span-row");
    row.setAttribute("role", "listitem");
    row.dataset.span = String(span.id);
    row.dataset.kind = span.kind;
    row.title = `${span.kind} ${span.name} (#${span.startSeq})`;
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
