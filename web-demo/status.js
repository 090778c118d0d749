// The operator page: reads the hub's own metrics (/metrics.json, the same
// registry /metrics exposes) every second and draws the last five minutes.
// No chart library: each chart is one SVG polyline.

const PERIOD_MS = 1000;
const HISTORY = 300; // samples kept: five minutes at one per second
const TOKEN_KEY = "exechub-metrics-token";

const $ = (id) => document.getElementById(id);
const series = { connections: [], subscriptions: [], publish: [], delivery: [] };
let previous = null; // the last snapshot and when it was taken, for rates

function number(value) {
  if (!Number.isFinite(value)) return "–";
  if (value >= 10_000) return `${(value / 1000).toFixed(value >= 100_000 ? 0 : 1)}k`;
  return value >= 100 || Number.isInteger(value) ? String(Math.round(value)) : value.toFixed(1);
}

function setState(state, text) {
  const element = $("state");
  element.dataset.state = state;
  element.textContent = text;
}

/** The series values of `name` by one label (e.g. transport), from `series`. */
function byLabel(snapshot, name, label) {
  const values = {};
  for (const [key, value] of Object.entries(snapshot.series)) {
    const match = key.match(/^([a-z_]+)\{(.*)\}$/);
    if (!match || match[1] !== name) continue;
    const found = match[2].match(new RegExp(`${label}="([^"]*)"`));
    if (found) values[found[1]] = (values[found[1]] ?? 0) + value;
  }
  return values;
}

function push(list, value) {
  list.push(value);
  if (list.length > HISTORY) list.shift();
}

/** Draws `values` (newest right) as a line with the area under it. */
function draw(svg, values) {
  const max = Math.max(1, ...values);
  // The first minute fills a minute-wide chart; after that it widens to five.
  const step = 300 / (Math.max(60, values.length) - 1);
  const x0 = 300 - (values.length - 1) * step;
  const points = values.map((v, i) => `${(x0 + i * step).toFixed(1)},${(58 - (v / max) * 54).toFixed(1)}`);
  svg.replaceChildren();
  if (points.length < 2) return;
  const ns = "http://www.w3.org/2000/svg";
  const area = document.createElementNS(ns, "polygon");
  area.setAttribute("points", `${x0.toFixed(1)},60 ${points.join(" ")} 300,60`);
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", points.join(" "));
  svg.append(area, line);
}

function rate(snapshot, at, name) {
  if (!previous) return 0;
  const seconds = (at - previous.at) / 1000;
  const delta = (snapshot.totals[name] ?? 0) - (previous.snapshot.totals[name] ?? 0);
  return seconds > 0 ? Math.max(0, delta / seconds) : 0;
}

function showFigures(snapshot, at) {
  const connections = byLabel(snapshot, "exechub_connections", "transport");
  const open = (connections.websocket ?? 0) + (connections.sse ?? 0);
  const publishRate = rate(snapshot, at, "exechub_events_published_total");
  const deliveryRate = rate(snapshot, at, "exechub_deliveries_total");
  const figures = {
    connections: [open, `${number(connections.websocket ?? 0)} WebSocket · ${number(connections.sse ?? 0)} SSE`],
    subscriptions: [snapshot.totals.exechub_subscriptions ?? 0,
      `${number(snapshot.totals.exechub_subscribed_executions ?? 0)} executions`],
    publish: [publishRate, `${number(snapshot.totals.exechub_events_published_total ?? 0)} in all`],
    delivery: [deliveryRate, `${number(snapshot.totals.exechub_deliveries_total ?? 0)} in all`],
  };
  const ids = { connections: "connections", subscriptions: "subscriptions", publish: "publish-rate", delivery: "delivery-rate" };
  for (const [key, [value, detail]] of Object.entries(figures)) {
    push(series[key], value);
    $(ids[key]).textContent = number(value);
    $(`${key}-detail`).textContent = detail;
    draw($(`${key}-chart`), series[key]);
  }
}

function item(ok, title, detail) {
  const li = document.createElement("li");
  const mark = document.createElement("strong");
  mark.className = ok ? "ok" : "bad";
  mark.textContent = ok ? "● ok" : "● failing";
  const name = document.createElement("span");
  name.textContent = title;
  const more = document.createElement("span");
  more.className = "muted";
  more.textContent = detail;
  li.append(mark, name, more);
  return li;
}

function showHealth(health) {
  const list = [item(health.store.ok, `store: ${health.store.backend}`, health.store.detail ?? "")];
  for (const p of health.providers) {
    const detail = `${p.delivered} delivered · ${p.retried} retried · ${p.failed} failed · ${p.dropped} dropped · queue ${p.queue_depth}`;
    list.push(item(p.ok, `${p.kind} ${p.name}`, detail));
  }
  if (health.providers.length === 0) {
    const none = document.createElement("li");
    none.className = "muted";
    none.textContent = "no providers configured";
    list.push(none);
  }
  $("health").replaceChildren(...list);
}

function showTop(top) {
  if (top.length === 0) {
    const row = document.createElement("tr");
    row.innerHTML = '<td colspan="2" class="muted">no publishes in the last window</td>';
    $("top").replaceChildren(row);
    return;
  }
  $("top").replaceChildren(...top.map((entry) => {
    const row = document.createElement("tr");
    const id = document.createElement("td");
    id.textContent = entry.execution_id;
    const value = document.createElement("td");
    value.textContent = `${number(entry.rate)}/s`;
    row.append(id, value);
    return row;
  }));
}

async function refresh() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = token ? { authorization: `Bearer ${token}` } : {};
  let response;
  try {
    response = await fetch("/metrics.json", { headers, cache: "no-store" });
  } catch {
    setState("offline", "hub unreachable");
    return;
  }
  if (response.status === 401) {
    setState("unauthorized", "needs the metrics token");
    $("token-form").hidden = false;
    return;
  }
  if (!response.ok) {
    setState("offline", `hub answered ${response.status}`);
    return;
  }
  const snapshot = await response.json();
  const at = performance.now();
  showFigures(snapshot, at);
  showHealth(snapshot.health);
  showTop(snapshot.top_executions);
  previous = { snapshot, at };
  $("token-form").hidden = true;
  setState("live", "live");
}

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value);
  refresh();
});

async function loop() {
  await refresh();
  setTimeout(loop, PERIOD_MS);
}
loop();
