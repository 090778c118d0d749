// What the browser tests share: real redis-server and hub processes on free
// loopback ports, Debian's Chromium through playwright-core, waiting for a
// condition (polling with a deadline, never a fixed sleep), and publishing
// over HTTP. Not a test file itself (node --test runs `*.test.mjs` only).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import net from "node:net";
import { chromium } from "playwright-core";

export const ROOT = new URL("../../", import.meta.url).pathname;
export const HUB_BIN = process.env.EXECHUB_BIN ?? `${ROOT}target/debug/exechub`;
export const ARTIFACTS = `${ROOT}artifacts`;
const CHROMIUM_ARGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
  "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync",
];

export function freePort() {
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
export async function waitFor(what, check, ms = 20_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check().catch(() => undefined);
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50)); // poll interval
  }
}

/** A child process, ready once its output matches `readyLine`. */
export function start(command, args, readyLine) {
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

export function startRedis(port) {
  const args = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
  return start("redis-server", args, /Ready to accept connections/).ready;
}

/** A hub serving the built demo, on `port`, with Redis at `redisPort` when given. */
export function startHub(port, redisPort, extra = []) {
  const args = ["--listen", `127.0.0.1:${port}`, "--static-dir", "web-demo/dist", ...extra];
  if (redisPort) args.push("--redis-url", `redis://127.0.0.1:${redisPort}`);
  return start(HUB_BIN, args, /listening on http:\/\//).ready;
}

export function stop(child) {
  return new Promise((resolve) => {
    if (!child || child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once("exit", () => resolve());
    child.kill("SIGKILL");
  });
}

export async function launchBrowser() {
  mkdirSync(ARTIFACTS, { recursive: true });
  return chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", args: CHROMIUM_ARGS });
}

/** POSTs an event; returns the response (status and body). */
export async function post(base, executionId, eventType, data = {}) {
  const response = await fetch(`${base}/api/v1/executions/${encodeURIComponent(executionId)}/events`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ event_type: eventType, data }),
  });
  return { status: response.status, body: await response.text() };
}

/** POSTs an event that must be accepted; returns its seq. */
export async function publish(base, executionId, eventType, data = {}) {
  const { status, body } = await post(base, executionId, eventType, data);
  assert.equal(status, 202, body);
  return JSON.parse(body).seq;
}

/**
 * A page that records its errors in `page.problems`. A 404 for an
 * execution the hub does not know yet is an answer, not a problem (the
 * viewer asks for the summary of an execution before its first event).
 */
export async function openPage(browser, url, viewport = { width: 1280, height: 800 }) {
  const page = await browser.newPage({ viewport });
  const problems = [];
  page.on("pageerror", (error) => problems.push(error.message));
  page.on("console", (message) => {
    if (message.type() !== "error") return;
    if (/status of 404/.test(message.text()) && /\/api\/v1\/executions\//.test(message.location().url)) return;
    problems.push(message.text());
  });
  page.problems = problems;
  await page.goto(url);
  return page;
}

export async function connected(page) {
  await page.waitForSelector('#state[data-state="connected"]', { timeout: 20_000 });
}

export function range(from, to) {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}
