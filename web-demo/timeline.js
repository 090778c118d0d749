// The event list: one fixed-height row per event in seq order, its data
// collapsed to one line until opened; filtered by event type; following the
// live tail unless the reader scrolled up, when "Jump to latest" offers
// the way back.
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
    this.types = new Set();
    this.filter.replaceChildren(new Option("All event types", ""));
    this.unseen = 0;
    this.jump.hidden = true;
    this.#counts();
  }

  /** Shows an event; each seq once, in seq order. */
  add(event) {
    if (this.list.querySelector(`li[data-seq="${event.seq}"]`)) return;
    // Where the reader is, before the list grows: at the tail, it follows.
    const following = this.#atTail();
    const item = this.#item(event);
    const next = [...this.list.children].find((li) => Number(li.dataset.seq) > event.seq);
    this.list.insertBefore(item, next ?? null);
    this.#typeSeen(event.eventType);
    item.hidden = !this.#matches(item);
    this.#counts();
    if (item.hidden) return;
    if (following) this.list.scrollTop = this.list.scrollHeight;
    else this.#missed();
  }

  /** Scrolls to the newest event and follows again. */
  toLatest() {
    this.unseen = 0;
    this.jump.hidden = true;
    this.list.scrollTop = this.list.scrollHeight;
  }

  /** Scrolls to event `seq` (showing every type again if it is filtered out) and marks it. */
  reveal(seq) {
    const item = this.list.querySelector(`li[data-seq="${seq}"]`);
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

  #missed() {
    this.unseen += 1;
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
