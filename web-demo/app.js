// The demo page: wiring between the DOM and the exechub-client package.
// All protocol logic (reconnect, resume, dedup, validation) lives in the package.
import init, { ExechubClient } from "./pkg/exechub_client.js";

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

let subscription = null;
let executionId = new URLSearchParams(location.search).get("execution") || `demo-${Math.random().toString(36).slice(2, 8)}`;

function showState(state) {
  const label = STATE_LABELS[state] ?? state;
  $("state").dataset.state = label;
  $("state").textContent = label;
}

function watch(id) {
  subscription?.unsubscribe();
  executionId = id;
  $("execution-id").value = id;
  const url = new URL(location.href);
  url.searchParams.set("execution", id);
  history.replaceState(null, "", url);
  $("timeline").replaceChildren();
  $("notice").hidden = true;
  updateCount();
  // after: 0 replays the stored history, then continues live; the client
  // never hands the same seq twice, and the DOM is keyed by seq as well.
  subscription = client.subscribe(id, render, {
    after: 0,
    onHistoryLost: historyLost,
    onError: (error) => showNotice(`Subscription error: ${error.message}`),
  });
}

function kindOf(type) {
  if (/status|started|completed|finished|failed/.test(type) && !type.startsWith("tool")) return "status";
  if (type.startsWith("tool")) return "tool";
  if (/error|fail/.test(type)) return "error";
  return "other";
}

function render(event) {
  const timeline = $("timeline");
  if (timeline.querySelector(`li[data-seq="${event.seq}"]`)) return;
  const follow = timeline.scrollHeight - timeline.scrollTop - timeline.clientHeight < 40;
  const item = document.createElement("li");
  item.dataset.seq = String(event.seq);
  const seq = document.createElement("span");
  seq.className = "seq";
  seq.textContent = `#${event.seq}`;
  const head = document.createElement("div");
  head.className = "head";
  const type = document.createElement("span");
  type.className = "type";
  type.dataset.kind = kindOf(event.eventType);
  type.textContent = event.eventType;
  const time = document.createElement("time");
  time.className = "time";
  time.dateTime = event.timestamp;
  const when = new Date(event.timestamp);
  time.textContent = Number.isNaN(when.getTime()) ? event.timestamp : when.toLocaleTimeString([], { hour12: false }) + `.${String(when.getMilliseconds()).padStart(3, "0")}`;
  head.append(type, time);
  const data = document.createElement("pre");
  data.className = "data";
  data.textContent = JSON.stringify(event.data, null, 2);
  item.append(seq, head, data);
  // Keep seq order even if a late replay arrives after a live event.
  const next = [...timeline.children].find((li) => Number(li.dataset.seq) > event.seq);
  timeline.insertBefore(item, next ?? null);
  updateCount();
  if (follow || !next) item.scrollIntoView({ block: "end", behavior: "instant" });
}

function updateCount() {
  const count = $("timeline").children.length;
  $("count").textContent = `${count} event${count === 1 ? "" : "s"}`;
  $("empty").hidden = count > 0;
}

// A new history (its events start again at #1) replaces the old one on
// screen; trimmed events of the same history are only reported.
function historyLost(lost) {
  if (lost.reason === "trimmed") {
    showNotice(`Events #${lost.after + 1}–#${lost.resumeAfter} were trimmed before they could be shown.`);
    return;
  }
  $("timeline").replaceChildren();
  updateCount();
  const why = lost.reason === "expired" ? "expired" : "was reset by the hub";
  showNotice(`The execution's earlier history ${why}; showing its new history.`);
}

function showNotice(text) {
  $("notice").textContent = text;
  $("notice").hidden = false;
}

function showPublishError(text) {
  $("publish-error").textContent = text;
  $("publish-error").hidden = !text;
}

function describe(error) {
  const detail = (error.detail ?? []).map((d) => `${d.loc.slice(1).join(".") || "body"}: ${d.msg}`);
  return [error.message, ...detail].join("\n");
}

async function publishFromForm(event) {
  event.preventDefault();
  showPublishError("");
  let data;
  try {
    data = JSON.parse($("event-data").value);
  } catch (error) {
    showPublishError(`Data is not valid JSON: ${error.message}`);
    return;
  }
  try {
    await client.publish(executionId, $("event-type").value, data);
  } catch (error) {
    showPublishError(describe(error));
  }
}

const WORKER_SCRIPT = [
  ["execution_started", { agent: "code-reviewer", trigger: "pull_request", repository: "acme/payments" }],
  ["status_changed", { from: "queued", to: "running" }],
  ["tool_started", { tool: "git_diff", args: { base: "main" } }],
  ["tool_output", { tool: "git_diff", output: "3 files changed, 41 insertions(+), 7 deletions(-)" }],
  ["tool_finished", { tool: "git_diff", duration_ms: 182, exit_code: 0 }],
  ["log", { level: "info", message: "Reviewing src/refund.rs" }],
  ["tool_started", { tool: "cargo_test", args: { package: "payments" } }],
  ["tool_output", { tool: "cargo_test", output: "test result: ok. 128 passed; 0 failed" }],
  ["tool_finished", { tool: "cargo_test", duration_ms: 5321, exit_code: 0 }],
  ["message", { role: "assistant", content: "Looks good: refunds are now idempotent. One nit on error naming." }],
  ["status_changed", { from: "running", to: "completed" }],
  ["execution_completed", { result: "approved", comments: 1, duration_ms: 6120 }],
];

async function simulateWorker() {
  const button = $("simulate");
  button.disabled = true;
  showPublishError("");
  try {
    for (const [type, data] of WORKER_SCRIPT) {
      await client.publish(executionId, type, data);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  } catch (error) {
    showPublishError(describe(error));
  } finally {
    button.disabled = false;
  }
}

$("watch-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const id = $("execution-id").value.trim();
  if (id) watch(id);
});
$("publish-form").addEventListener("submit", publishFromForm);
$("simulate").addEventListener("click", simulateWorker);

watch(executionId);
