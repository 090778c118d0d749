// The sidebar: recent and running executions, live (a snapshot from
// `subscribeExecutions`, then each change), newest start first so that
// activity never reorders the list under the reader's eyes.
import { age, el } from "./format.js";

export class Sidebar {
  /** @param {(id: string) => void} onSelect */
  constructor(list, filter, note, onSelect) {
    this.list = list;
    this.filter = filter;
    this.note = note;
    this.onSelect = onSelect;
    this.executions = new Map();
    this.items = new Map();
    this.selected = null;
    filter.addEventListener("change", () => this.#render());
  }

  /** The executions now (a snapshot replaces what was shown). */
  snapshot(summaries) {
    this.executions = new Map(summaries.map((s) => [s.executionId, s]));
    this.#render();
  }

  /** One execution changed or appeared. */
  change(summary) {
    const known = this.executions.has(summary.executionId);
    this.executions.set(summary.executionId, summary);
    const item = this.items.get(summary.executionId);
    if (known && item && this.#shown(summary)) this.#fill(item, summary);
    else this.#render();
  }

  /** Marks `id` as the open execution. */
  select(id) {
    this.selected = id;
    for (const [itemId, item] of this.items) {
      const button = item.firstElementChild;
      if (itemId === id) button.setAttribute("aria-current", "page");
      else button.removeAttribute("aria-current");
    }
  }

  /** The newest execution, if any. */
  newest() {
    return this.#sorted()[0]?.executionId ?? null;
  }

  /** A note instead of (or above) the list, e.g. when the hub cannot list. */
  say(text) {
    this.note.textContent = text;
  }

  /** Refreshes the ages (once a second). */
  tick(now = Date.now()) {
    for (const [id, item] of this.items) {
      const summary = this.executions.get(id);
      if (summary) item.querySelector(".age").textContent = ageText(summary, now);
    }
  }

  #shown(summary) {
    const filter = this.filter.value;
    return filter === "all" || (filter === "ended") === summary.ended;
  }

  #sorted() {
    const summaries = [...this.executions.values()];
    return summaries.sort((a, b) => b.startedAt.localeCompare(a.startedAt) || a.executionId.localeCompare(b.executionId));
  }

  #render() {
    const shown = this.#sorted().filter((s) => this.#shown(s));
    const focused = document.activeElement?.closest?.("li[data-execution]")?.dataset.execution;
    this.items = new Map(shown.map((s) => [s.executionId, this.items.get(s.executionId) ?? this.#item(s)]));
    for (const [id, item] of this.items) this.#fill(item, this.executions.get(id));
    this.list.replaceChildren(...this.items.values());
    if (focused) this.items.get(focused)?.firstElementChild.focus();
    this.select(this.selected);
    const total = this.executions.size;
    this.say(total === 0 ? "No executions yet." : shown.length === 0 ? `None of ${total} match.` : `${shown.length} of ${total}`);
  }

  #item(summary) {
    const item = el("li");
    item.dataset.execution = summary.executionId;
    const button = el("button", "exec");
    button.type = "button";
    button.append(el("span", "exec-id", summary.executionId), el("span", "badge"), el("span", "exec-meta"));
    button.querySelector(".exec-meta").append(el("span", "age"), el("span", "exec-events"));
    // A button: Enter and Space open it, and it is in the tab order.
    button.addEventListener("click", () => this.onSelect(summary.executionId));
    item.append(button);
    return item;
  }

  #fill(item, summary) {
    item.dataset.status = summary.status;
    const badge = item.querySelector(".badge");
    badge.dataset.status = summary.ended ? summary.status : "running";
    badge.textContent = summary.status;
    item.querySelector(".age").textContent = ageText(summary, Date.now());
    item.querySelector(".exec-events").textContent = `${summary.lastSeq} ev`;
    item.firstElementChild.title = `${summary.executionId}: ${summary.status}`;
  }
}

function ageText(summary, now) {
  const at = Date.parse(summary.ended ? summary.endedAt ?? summary.updatedAt : summary.updatedAt);
  return `${summary.ended ? "ended" : "active"} ${age(now - at)}`;
}
