// What the package tests share: the packed tarball installed into a fresh
// project, a real hub on a free port, a static server, and Chromium.
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { extname, join, resolve, sep } from "node:path";
import { promisify } from "node:util";
import { chromium } from "playwright-core";

export const ROOT = new URL("../../", import.meta.url).pathname;
export const FIXTURE = new URL("fixture/", import.meta.url).pathname;
export const ARTIFACTS = `${ROOT}artifacts`;
const HUB_BIN = process.env.EXECHUB_BIN ?? `${ROOT}target/debug/exechub`;
const CHROMIUM_ARGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
  "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync",
];

export const run = promisify(execFile);

/**
 * A fresh npm project with the packed package (`npm pack` of wasm-client/pkg)
 * and `ws` installed offline; returns its directory and the tarball's path.
 */
export async function packedProject(prefix) {
  const project = mkdtempSync(join(tmpdir(), prefix));
  const { stdout } = await run("npm", ["pack", "--silent", "--pack-destination", project], { cwd: `${ROOT}wasm-client/pkg` });
  const tarball = join(project, stdout.trim().split("\n").at(-1));
  writeFileSync(join(project, "package.json"), JSON.stringify({ name: "consumer", private: true, type: "module" }));
  // Offline: the tarball, and `ws` from the repository's own npm packages.
  await run("npm", ["install", "--offline", "--no-audit", "--no-fund", "--no-package-lock", tarball, `${ROOT}node_modules/ws`], { cwd: project });
  return { project, tarball };
}

/** The installed package's manifest. */
export function installedManifest(project) {
  return JSON.parse(readFileSync(join(project, "node_modules/exechub-client/package.json"), "utf8"));
}

/** Starts a hub (embedded store, any origin) on a free port: `[child, "http://…"]`. */
export function startHub(args = []) {
  const child = spawn(HUB_BIN, ["--listen", "127.0.0.1:0", "--cors-origin", "*", ...args], { stdio: ["ignore", "pipe", "pipe"] });
  return new Promise((resolve, reject) => {
    let output = "";
    const onData = (chunk) => {
      output += chunk;
      const found = /listening on (http:\/\/[0-9.:]+)/.exec(output);
      if (found) resolve([child, found[1]]);
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.on("exit", (code) => reject(new Error(`the hub exited (${code}): ${output}`)));
  });
}

const TYPES = { ".html": "text/html", ".js": "text/javascript", ".wasm": "application/wasm", ".json": "application/json" };

/** Serves `dir`'s files, as a dev server or a static host would. */
export function serve(dir) {
  const server = createServer((request, response) => {
    const path = resolve(dir, `.${decodeURIComponent(new URL(request.url, "http://x").pathname)}`);
    try {
      if (!path.startsWith(dir + sep)) throw new Error("outside the project");
      const body = readFileSync(path);
      response.writeHead(200, { "content-type": TYPES[extname(path)] ?? "application/octet-stream" });
      response.end(body);
    } catch {
      response.writeHead(404).end();
    }
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

/** Debian's Chromium, headless, with `extraArgs`. */
export function launchChromium(extraArgs = []) {
  return chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", args: [...CHROMIUM_ARGS, ...extraArgs] });
}

/**
 * Opens `pageUrl` for `executionId` on the hub at `hubUrl` (the page reads
 * `?ws=` and `?execution=`), collecting the page's errors into `problems`.
 */
export async function openPage(browser, pageUrl, hubUrl, executionId) {
  const page = await browser.newPage();
  const problems = [];
  page.on("pageerror", (error) => problems.push(error.message));
  page.on("console", (message) => message.type() === "error" && problems.push(message.text()));
  const ws = `${hubUrl.replace(/^http/, "ws")}/ws`;
  await page.goto(`${pageUrl}?ws=${encodeURIComponent(ws)}&execution=${executionId}`);
  return { page, problems };
}

/** The hub's count of open WebSockets (`/health`). */
export async function openWebSockets(hubUrl) {
  const health = await (await fetch(`${hubUrl}/health`)).json();
  return health.connections.websocket;
}

/** Publishes one event over HTTP, as a worker that speaks only HTTP does; returns its seq. */
export async function publish(hubUrl, executionId, eventType, data) {
  const response = await fetch(`${hubUrl}/api/v1/executions/${executionId}/events`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ event_type: eventType, data }),
  });
  assert.equal(response.status, 202, await response.clone().text());
  return (await response.json()).seq;
}

/** Polls `check` (async) until it returns true, for at most `ms`. */
export async function until(what, check, ms = 20_000) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Stops what a test file started: the browser, the static server, the hub, the project. */
export async function tearDown({ browser, server, hub, project }) {
  await browser?.close();
  server?.close();
  hub?.kill("SIGKILL");
  if (project) rmSync(project, { recursive: true, force: true });
}

export function range(from, to) {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}
