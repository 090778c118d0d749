// The viewer: wiring between the DOM and the exechub-client package. All
// protocol logic (reconnect, resume, dedup, lifecycle) lives in the package;
// the views live in their modules (sidebar, header, waterfall, timeline).
import init, { ExechubClient } from "./pkg/index.js";
import { EventList } from "./timeline.js";
import { ExecutionHeader } from "./header.js";
import { Sidebar } from "./sidebar.js";
import { Waterfall } from "./waterfall.js";
import { publishForm, simulator } from "./publish.js";

const $ = (id) => document.getElementById(id);
const STATE_LABELS = { open: "connected", connecting: "connecting", reconnecting: "reconnecting", closed: "offline" };

await init();

// A hub started with --dev-token (development only) hands out tokens at
// /dev/token and says so in /health; otherwise the page connects without one.
async function devToken() {
  const response = await fetch("/dev/token");
  if (!response.ok) throw new Error(`no development token (${response.status})`);
  return (await response.json()).token;
}
const health = await fetch("/health").then((r) => r.json()).catch(() => ({}));
const authenticated = health.auth === "jwt" && health.dev_token === true;

const wsUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
const client = new ExechubClient(wsUrl, {
  onStateChange: showState,
  ...(authenticated ? { getToken: devToken } : {}),
});
showState(client.state);

function showState(state) {
  const label = STATE_LABELS[state] ?? state;
  $("state").dataset.state = label;
  $("state").textContent = label;
}

const header = new ExecutionHeader();
const events = new EventList({ list: $("timeline"), empty: $("empty"), count: $("count"), filter: $("type-filter"), jump: $("jump") });
const waterfall = new Waterfall({
  container: $("waterfall"), count: $("span-count"), empty: $("spans-empty"), axis: $("axis"), onPick: (seq) => events.reveal(seq),
});
const sidebar = new Sidebar($("executions"), $("list-filter"), $("list-note"), (id) => open(id, true));

/** The open execution: its id, subscription, and a number that tells stale answers apart. */
let current = { id: null, subscription: null, generation: 0, reading: false, again: false };

function notice(text) {
  $("notice").textContent = text;
}

/** Opens execution `id`: replays its events, follows it live, shows its summary. */
function open(id, push = false) {
  if (!id || id === current.id) return;
  current.subscription?.unsubscribe();
  current = { id, subscription: null, generation: current.generation + 1, reading: false, again: false };
  const url = new URL(location.href);
  url.searchParams.set("execution", id);
  if (push) history.pushState({ execution: id }, "", url);
  else history.replaceState({ execution: id }, "", url);
  $("execution-id").value = id;
  document.title = `${id} — exechub`;
  header.open(id);
  sidebar.select(id);
  waterfall.reset();
  events.reset();
  notice("Following live events.");
  $("empty").textContent = "No events yet. Publish one, or simulate a worker.";
  const generation = current.generation;
  const mine = (f) => (...args) => generation === current.generation && f(...args);
  // after: 0 replays the stored history, then continues live; the client
  // never hands the same seq twice, and the list is keyed by seq as well.
  current.subscription = client.subscribe(id, mine(received), {
    after: 0,
    onHistoryLost: mine(historyLost),
    onError: mine((error) => notice(`Subscription error: ${error.message}`)),
    onEnd: mine(ended),
  });
  refresh(generation);
}

function received(event) {
  events.add(event);
  if (waterfall.add(event)) waterfall.schedule();
  // The hub knew nothing of the execution when it was opened: now it does.
  if (!header.summary) refresh(current.generation);
}

/**
 * Reads the open execution's summary for the header: one read at a time,
 * and one more after it when asked meanwhile (a burst of events, then the end).
 */
async function refresh(generation) {
  const open = current;
  if (open.reading) {
    open.again = true;
    return;
  }
  open.reading = true;
  do {
    open.again = false;
    try {
      const summary = await client.getExecution(open.id);
      if (generation === current.generation) summarize(summary);
    } catch (error) {
      if (generation === current.generation) notice(`Could not read the execution: ${error.message}`);
    }
  } while (open.again && generation === current.generation);
  open.reading = false;
}

function summarize(summary) {
  if (!header.show(summary)) return;
  if (!summary) return notice("Waiting for the execution's first event.");
  if (!summary.ended) return;
  waterfall.end(Date.parse(summary.endedAt ?? summary.updatedAt));
  waterfall.schedule();
  const expired = summary.events === 0 && summary.lastSeq > 0;
  if (expired) $("empty").textContent = `Its ${summary.lastSeq} events expired; the result above is kept.`;
  notice(expired
    ? `Ended ${summary.status}. Its events expired; the final state is kept.`
    : `Ended ${summary.status}: no more events will come.`);
}

function ended(status, finalEvent) {
  if (finalEvent) waterfall.end(Date.parse(finalEvent.timestamp));
  waterfall.schedule();
  notice(`Ended ${status}: no more events will come.`);
  refresh(current.generation);
}

// A new history (its events start again at #1) replaces the old one on
// screen; trimmed events of the same history are only reported.
function historyLost(lost) {
  if (lost.reason === "trimmed") {
    notice(`Events #${lost.after + 1}–#${lost.resumeAfter} were trimmed before they could be shown.`);
    return;
  }
  events.reset();
  waterfall.reset();
  notice(lost.reason === "expired" ? "The earlier events expired." : "The hub reset this execution's history; showing the new one.");
}

client.subscribeExecutions((summaries) => {
  sidebar.snapshot(summaries);
  if (!current.id) open(sidebar.newest());
}, {
  onChange: (summary) => {
    sidebar.change(summary);
    if (summary.executionId === current.id) summarize(summary);
    if (!current.id) open(sidebar.newest());
  },
  onError: (error) => sidebar.say(`The hub cannot list executions: ${error.message}`),
});

$("watch-form").addEventListener("submit", (event) => {
  event.preventDefault();
  open($("execution-id").value.trim(), true);
});
window.addEventListener("popstate", () => {
  const id = new URLSearchParams(location.search).get("execution");
  if (id) open(id);
});
publishForm(client, () => current.id);
simulator(client, (id) => open(id, true));

setInterval(() => {
  header.tick();
  sidebar.tick();
}, 1000);
setInterval(() => {
  if (!header.ended) waterfall.draw();
}, 250);

const initial = new URLSearchParams(location.search).get("execution");
if (initial) open(initial);
else header.open(null);
