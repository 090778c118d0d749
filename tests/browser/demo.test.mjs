// The web demo in Debian's Chromium (driven by playwright-core), against real
// hub and redis-server processes started here on free loopback ports.
//
// Run by scripts/test.sh after scripts/build-web.sh built web-demo/dist.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import net from "node:net";
import { chromium } from "playwright-core";

const ROOT = new URL("../../", import.meta.url).pathname;
const HUB_BIN = process.env.EXECHUB_BIN ?? `${ROOT}target/debug/exechub`;
const ARTIFACTS = `${ROOT}artifacts`;
const CHROMIUM_ARGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
  "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync",
];

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Polls `check` until it returns a truthy value, for at most `ms`. */
async function waitFor(what, check, ms = 20_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check().catch(() => undefined);
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50)); // poll interval
  }
}

/** A child process, killed when the tests end. */
function start(command, args, readyLine) {
  const child = spawn(command, args, { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  const ready = new Promise((resolve, reject) => {
    const onData = (chunk) => {
      output += chunk;
      if (readyLine.test(output)) resolve(child);
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.on("exit", (code) => reject(new Error(`${command} exited (${code}): ${output}`)));
  });
  return { child, ready };
}

async function startRedis(port) {
  const redis = start("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], /Ready to accept connections/);
  return redis.ready;
}

async function startHub(port, redisPort) {
  const args = ["--listen", `127.0.0.1:${port}`, "--redis-url", `redis://127.0.0.1:${redisPort}`, "--static-dir", "web-demo/dist"];
  const hub = start(HUB_BIN, args, /listening on http:\/\//);
  return hub.ready;
}

function stop(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once("exit", () => resolve());
    child.kill("SIGKILL");
  });
}

let redisPort, hubPort, otherPort, redis, hub, other, browser, base;
const executionId = `demo-test-${process.pid}`;

async function publish(port, eventType, data) {
  const response = await fetch(`http://127.0.0.1:${port}/api/v1/executions/${executionId}/events`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ event_type: eventType, data }),
  });
  const body = await response.text();
  assert.equal(response.status, 202, body);
  return JSON.parse(body).seq;
}

async function lastSeq() {
  const response = await fetch(`http://127.0.0.1:${otherPort}/api/v1/executions/${executionId}/events?limit=0`);
  return (await response.json()).last_seq;
}

async function seqs(page) {
  return page.$$eval("#timeline li", (items) => items.map((li) => Number(li.dataset.seq)));
}

function range(from, to) {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

async function openPage() {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const problems = [];
  page.on("pageerror", (error) => problems.push(error.message));
  page.on("console", (message) => message.type() === "error" && problems.push(message.text()));
  page.problems = problems;
  await page.goto(`${base}/?execution=${encodeURIComponent(executionId)}`);
  return page;
}

async function connected(page) {
  await page.waitForSelector('#state[data-state="connected"]', { timeout: 20_000 });
}

async function timelineIs(page, expected) {
  await waitFor(`timeline ${expected.at(-1)} events`, async () => (await seqs(page)).length >= expected.length);
  assert.deepEqual(await seqs(page), expected);
}

before(async () => {
  [redisPort, hubPort, otherPort] = await Promise.all([freePort(), freePort(), freePort()]);
  redis = await startRedis(redisPort);
  [hub, other] = await Promise.all([startHub(hubPort, redisPort), startHub(otherPort, redisPort)]);
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", args: CHROMIUM_ARGS });
  base = `http://127.0.0.1:${hubPort}`;
  mkdirSync(ARTIFACTS, { recursive: true });
});

after(async () => {
  await browser?.close();
  await Promise.all([hub, other, redis].filter(Boolean).map(stop));
});

test("the page loads and shows connected", async () => {
  const page = await openPage();
  await connected(page);
  assert.equal(await page.inputValue("#execution-id"), executionId);
  assert.deepEqual(page.problems, []);
  await page.close();
});

test("events POSTed over HTTP appear in the timeline in seq order, and a reload rebuilds it without duplicates", async () => {
  const page = await openPage();
  await connected(page);
  for (let i = 1; i <= 5; i++) await publish(hubPort, "log", { line: `line ${i}` });
  await timelineIs(page, range(1, 5));
  assert.match(await page.textContent('#timeline li[data-seq="3"] .data'), /line 3/);
  await page.reload();
  await connected(page);
  await timelineIs(page, range(1, 5));
  await page.close();
});

test("after the hub is killed and restarted the page reconnects and shows what was published meanwhile", async () => {
  const page = await openPage();
  await connected(page);
  const before = await lastSeq();
  await timelineIs(page, range(1, before));
  await stop(hub);
  await page.waitForSelector('#state[data-state="reconnecting"]', { timeout: 20_000 });
  for (let i = 0; i < 3; i++) await publish(otherPort, "log", { while: "hub down", i });
  hub = await startHub(hubPort, redisPort);
  await connected(page);
  await publish(hubPort, "log", { after: "restart" });
  await timelineIs(page, range(1, before + 4));
  await page.close();
});

test("an event published from the page's form appears in a second open page", async () => {
  const [first, second] = [await openPage(), await openPage()];
  await Promise.all([connected(first), connected(second)]);
  const next = (await lastSeq()) + 1;
  await first.fill("#event-type", "note");
  await first.fill("#event-data", '{"text": "from the form"}');
  await first.click('#publish-form button[type="submit"]');
  await second.waitForSelector(`#timeline li[data-seq="${next}"]`, { timeout: 20_000 });
  assert.equal(await second.textContent(`#timeline li[data-seq="${next}"] .type`), "note");
  assert.match(await second.textContent(`#timeline li[data-seq="${next}"] .data`), /from the form/);
  await Promise.all([first.close(), second.close()]);
});

test("invalid input in the form shows the validation error and publishes nothing", async () => {
  const page = await openPage();
  await connected(page);
  const before = await lastSeq();
  await page.fill("#event-data", "{not json");
  await page.click('#publish-form button[type="submit"]');
  await page.waitForSelector("#publish-error:not([hidden])");
  assert.match(await page.textContent("#publish-error"), /not valid JSON/);
  await page.fill("#event-data", "[1, 2]");
  await page.click('#publish-form button[type="submit"]');
  await waitFor("the validation detail", async () => /data: Input should be a valid dictionary/.test(await page.textContent("#publish-error")));
  assert.equal(await lastSeq(), before);
  await page.close();
});

test("with auth on, the demo connects with its development token and shows events", async () => {
  const port = await freePort();
  const args = ["--listen", `127.0.0.1:${port}`, "--jwt-secret", "demo-secret", "--dev-token", "--static-dir", "web-demo/dist"];
  const secured = await start(HUB_BIN, args, /listening on http:\/\//).ready;
  try {
    const url = `http://127.0.0.1:${port}/api/v1/executions/${executionId}-auth/events`;
    const body = JSON.stringify({ event_type: "secured", data: { ok: true } });
    const anonymous = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body });
    assert.equal(anonymous.status, 401, "auth is really on");
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${port}/?execution=${encodeURIComponent(executionId)}-auth`);
    await connected(page);
    const { token } = await (await fetch(`http://127.0.0.1:${port}/dev/token`)).json();
    const headers = { "content-type": "application/json", authorization: `Bearer ${token}` };
    assert.equal((await fetch(url, { method: "POST", headers, body })).status, 202);
    await page.waitForSelector('#timeline li[data-seq="1"]', { timeout: 20_000 });
    assert.equal(await page.textContent('#timeline li[data-seq="1"] .type'), "secured");
    await page.close();
  } finally {
    await stop(secured);
  }
});

test("simulating a worker fills the timeline (screenshots kept as artifacts)", async () => {
  const page = await openPage();
  await connected(page);
  const before = await lastSeq();
  await page.click("#simulate");
  await timelineIs(page, range(1, before + 12));
  assert.equal(await page.textContent(`#timeline li[data-seq="${before + 12}"] .type`), "execution_completed");
  await page.screenshot({ path: `${ARTIFACTS}/demo-timeline.png` });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.screenshot({ path: `${ARTIFACTS}/demo-phone.png` });
  assert.deepEqual(page.problems, []);
  await page.close();
});
