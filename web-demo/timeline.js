// The event list: one fixed-height row per event in seq order, its data
// collapsed to one line until opened; filtered by event type; following the
// live tail unless the reader scrolled up, when "Jump to latest" offers
// the way back. Rows are added once per frame, all that arrived meanwhile at
// once: a replay of thousands of events costs a few layouts, not thousands.
import { clock, el, kindOf, preview } from "./format.js";

export class EventList {
  constructor({ list, empty, count, filter, jump }) {
    Object.assign(this, { list, empty, count, filter, jump });
    this.unseen = 0;
    filter.addEventListener("change", () => this.#applyFilter());
    list.addEventListener("scroll", () => this.#scrolled(), { passive: true });
    jump.addEventListener("click", () => this.toLatest());
    this.reset();
  }

  /** Empties the list (another execution, or a new history). */
  reset() {
    this.list.replaceChildren();
    this.items = new Map(); // seq → row
    this.pending = [];
    this.types = new Set();
    this.filter.replaceChildren(new Option("All event types", ""));
    this.unseen = 0;
    this.jump.hidden = true;
    this.#counts();
  }

  /** Shows an event (at the next frame); each seq once, in seq order. */
  add(event) {
    if (this.items.has(event.seq)) return;
    const item = this.#item(event);
    this.items.set(event.seq, item);
    this.pending.push(item);
    if (this.pending.length === 1) requestAnimationFrame(() => this.flush());
  }

  /** Adds the rows that arrived since the last frame. */
  flush() {
    const items = this.pending;
    if (items.length === 0) return;
    this.pending = [];
    // Where the reader is, before the list grows: at the tail, it follows.
    const following = this.#atTail();
    let shown = 0;
    for (const item of items) {
      this.#typeSeen(item.dataset.type);
      item.hidden = !this.#matches(item);
      if (!item.hidden) shown += 1;
    }
    // Events come in seq order (the client sees to it): appending is the rule.
    const last = Number(this.list.lastElementChild?.dataset.seq ?? 0);
    if (items.every((item, i) => Number(item.dataset.seq) > (i ? Number(items[i - 1].dataset.seq) : last))) {
      this.list.append(...items);
    } else {
      for (const item of items) this.#insert(item);
    }
    this.#counts();
    if (shown === 0) return;
    if (following) this.list.scrollTop = this.list.scrollHeight;
    else this.#missed(shown);
  }

  #insert(item) {
    const seq = Number(item.dataset.seq);
    const next = [...this.list.children].find((li) => Number(li.dataset.seq) > seq);
    this.list.insertBefore(item, next ?? null);
  }

  /** Scrolls to the newest event and follows again. */
  toLatest() {
    this.unseen = 0;
    this.jump.hidden = true;
    this.list.scrollTop = this.list.scrollHeight;
  }

  /** Scrolls to event `seq` (showing every type again if it is filtered out) and marks it. */
  reveal(seq) {
    this.flush();
    const item = this.items.get(seq);
    if (!item) return;
    if (item.hidden) {
      this.filter.value = "";
      this.#applyFilter();
    }
    item.scrollIntoView({ block: "center" });
    item.classList.remove("flash");
    void item.offsetWidth; // restart the animation
    item.classList.add("flash");
    item.querySelector(".ev").focus({ preventScroll: true });
  }

  #item(event) {
    const item = el("li");
    item.dataset.seq = String(event.seq);
    item.dataset.type = event.eventType;
    const row = el("button", "ev");
    row.type = "button";
    row.setAttribute("aria-expanded", "false");
    const type = el("span", "type", event.eventType);
    type.dataset.kind = kindOf(event.eventType);
    const time = el("time", "time", clock(event.timestamp));
    time.dateTime = event.timestamp;
    row.append(el("span", "seq", `#${event.seq}`), type, time, el("span", "preview", preview(event.data)));
    const data = el("pre", "data", JSON.stringify(event.data, null, 2));
    data.hidden = true;
    row.addEventListener("click", () => {
      const open = row.getAttribute("aria-expanded") !== "true";
      row.setAttribute("aria-expanded", String(open));
      data.hidden = !open;
      item.classList.toggle("open", open);
    });
    item.append(row, data);
    return item;
  }

  #typeSeen(type) {
    if (this.types.has(type)) return;
    this.types.add(type);
    this.filter.append(new Option(type, type));
  }

  #matches(item) {
    return !this.filter.value || item.dataset.type === this.filter.value;
  }

  #applyFilter() {
    for (const item of this.list.children) item.hidden = !this.#matches(item);
    this.#counts();
    this.toLatest();
  }

  #atTail() {
    const l = this.list;
    return l.scrollHeight - l.scrollTop - l.clientHeight < 24;
  }

  #scrolled() {
    if (!this.#atTail()) return;
    this.unseen = 0;
    this.jump.hidden = true;
  }

  #missed(count) {
    this.unseen += count;
    this.jump.textContent = `Jump to latest (${this.unseen} new)`;
    this.jump.hidden = false;
  }

  #counts() {
    const total = this.list.children.length;
    const shown = this.filter.value ? this.list.querySelectorAll("li:not([hidden])").length : total;
    const events = `${total} event${total === 1 ? "" : "s"}`;
    this.count.textContent = shown === total ? events : `${events} (${shown} shown)`;
    this.empty.hidden = total > 0;
  }
}
