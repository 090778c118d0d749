// The operator page (/status) in Debian's Chromium (driven by playwright-core),
// against a real hub started here on a free loopback port: its figures move
// when load is applied, it is readable at phone width, and a metrics token
// is asked for when the hub needs one.
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
const PHONE = { width: 390, height: 844 };

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

/** Starts a hub serving web-demo/dist; resolves once it logs its address. */
function startHub(port, extra = []) {
  const args = ["--listen", `127.0.0.1:${port}`, "--static-dir", "web-demo/dist", "--publish-rate", "0", ...extra];
  const child = spawn(HUB_BIN, args, { cwd: ROOT, stdio: ["ignore", "ignore", "pipe"] });
  let output = "";
  return new Promise((resolve, reject) => {
    child.stderr.on("data", (chunk) => {
      output += chunk;
      if (/listening on http:\/\//.test(output)) resolve(child);
    });
    child.on("exit", (code) => reject(new Error(`exechub exited (${code}): ${output}`)));
  });
}

function stop(child) {
  return new Promise((resolve) => {
    if (!child || child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once("exit", () => resolve());
    child.kill("SIGKILL");
  });
}

let hubPort, hub, browser, base;
const streams = [];

async function publish(executionId, n) {
  const response = await fetch(`${base}/api/v1/executions/${executionId}/events`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ event_type: "load", data: { n } }),
  });
  assert.equal(response.status, 202, await response.text());
}

/** An SSE subscriber held open by this process (a connection and a subscription). */
async function subscribe(executionId) {
  const controller = new AbortController();
  const response = await fetch(`${base}/api/v1/executions/${executionId}/stream`, { signal: controller.signal });
  assert.equal(response.status, 200);
  const reader = response.body.getReader();
  // Keep reading so the hub never sees a slow consumer.
  (async () => { try { for (;;) { if ((await reader.read()).done) return; } } catch { /* aborted */ } })();
  streams.push(controller);
}

async function number(page, id) {
  const text = (await page.textContent(`#${id}`)).trim();
  const value = parseFloat(text);
  return text.endsWith("k") ? value * 1000 : value;
}

async function openStatus(viewport = PHONE) {
  const page = await browser.newPage({ viewport });
  const problems = [];
  page.on("pageerror", (error) => problems.push(error.message));
  page.on("console", (message) => message.type() === "error" && problems.push(message.text()));
  page.problems = problems;
  await page.goto(`${base}/status`);
  await page.waitForSelector('#state[data-state="live"]', { timeout: 20_000 });
  return page;
}

before(async () => {
  hubPort = await freePort();
  hub = await startHub(hubPort);
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", args: CHROMIUM_ARGS });
  base = `http://127.0.0.1:${hubPort}`;
  mkdirSync(ARTIFACTS, { recursive: true });
});

after(async () => {
  for (const stream of streams) stream.abort();
  await browser?.close();
  await stop(hub);
});

test("the figures move when load is applied, and the page fits a phone's width", async () => {
  const page = await openStatus();
  assert.equal(await number(page, "connections"), 0);
  assert.equal(await number(page, "subscriptions"), 0);
  const hot = `status-hot-${process.pid}`;
  for (let i = 0; i < 3; i++) await subscribe(hot);
  await subscribe(`status-cold-${process.pid}`);
  await waitFor("4 connections on the page", async () => (await number(page, "connections")) === 4);
  assert.equal(await number(page, "subscriptions"), 4);
  // Load: the hot execution gets ten times the events of the cold one, for a
  // few seconds, so rates and the busiest list have whole windows to show.
  let publishing = true;
  const load = (async () => {
    for (let n = 0; publishing; n++) {
      await publish(hot, n);
      if (n % 10 === 0) await publish(`status-cold-${process.pid}`, n);
    }
  })();
  try {
    await waitFor("events/s above 0", async () => (await number(page, "publish-rate")) > 0);
    await waitFor("deliveries/s above events/s (3 subscribers)", async () =>
      (await number(page, "delivery-rate")) > (await number(page, "publish-rate")));
    await waitFor("the hot execution on top", async () =>
      (await page.textContent("#top tr:first-child td:first-child")) === hot);
    await waitFor("the charts drawn", async () => (await page.$$("#publish-chart polyline")).length === 1);
    assert.match(await page.textContent("#health"), /store: memory/);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    assert.equal(overflow, 0, "no horizontal scrolling at 390 px");
    await page.screenshot({ path: `${ARTIFACTS}/status.png`, fullPage: true });
    const wide = await openStatus({ width: 1200, height: 760 });
    await waitFor("the wide page's charts", async () => (await wide.$$("#delivery-chart polyline")).length === 1);
    await waitFor("a few seconds of history", async () => (await wide.$$eval("#delivery-chart polyline", ([l]) => l.getAttribute("points").split(" ").length)) >= 4);
    await wide.screenshot({ path: `${ARTIFACTS}/status-wide.png` });
    await wide.close();
  } finally {
    publishing = false;
    await load;
  }
  await waitFor("events/s back to 0", async () => (await number(page, "publish-rate")) === 0);
  assert.deepEqual(page.problems, []);
  await page.close();
});

test("a hub with --metrics-token asks for it, then shows its figures", async () => {
  const port = await freePort();
  const guarded = await startHub(port, ["--metrics-token", "ops-token"]);
  try {
    const page = await browser.newPage({ viewport: PHONE });
    await page.goto(`http://127.0.0.1:${port}/status`);
    await page.waitForSelector('#state[data-state="unauthorized"]', { timeout: 20_000 });
    await page.fill("#token", "ops-token");
    await page.click('#token-form button[type="submit"]');
    await page.waitForSelector('#state[data-state="live"]', { timeout: 20_000 });
    assert.equal(await number(page, "connections"), 0);
    await page.close();
  } finally {
    await stop(guarded);
  }
});
