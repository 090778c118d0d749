// The npm package as a user gets it: the `npm pack` tarball installed
// (offline) into a fresh project, type-checked there under `tsc --strict`
// (moduleResolution bundler and node16), imported by its bare name in
// Chromium as a bundler resolves it, and run by a Node 20 worker that
// publishes to a real hub while that page watches.
//
// Run by scripts/test.sh after scripts/build-web.sh built wasm-client/pkg.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { extname, join, resolve, sep } from "node:path";
import { promisify } from "node:util";
import { chromium } from "playwright-core";

const ROOT = new URL("../../", import.meta.url).pathname;
const FIXTURE = new URL("fixture/", import.meta.url).pathname;
const HUB_BIN = process.env.EXECHUB_BIN ?? `${ROOT}target/debug/exechub`;
const ARTIFACTS = `${ROOT}artifacts`;
const TSC = `${ROOT}node_modules/typescript/bin/tsc`;
const CHROMIUM_ARGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
  "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync",
];
const WORKER_EVENTS = 1000;
const BATCH_EVENTS = 50;
const run = promisify(execFile);

let project, tarball, hub, hubUrl, server, pageUrl, browser;

/** The file a browser bundler (Vite: conditions browser, import, default) resolves `name` to. */
function browserEntry(manifest) {
  let target = manifest.exports["."];
  while (typeof target === "object") {
    const condition = ["browser", "import", "module", "default"].find((c) => c in target);
    assert.ok(condition, "the exports name an entry for browsers");
    target = target[condition];
  }
  return target;
}

function startHub() {
  const child = spawn(HUB_BIN, ["--listen", "127.0.0.1:0", "--cors-origin", "*"], { stdio: ["ignore", "pipe", "pipe"] });
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

/** Serves the consumer project's files, as a dev server would. */
function serve(dir) {
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

before(async () => {
  project = mkdtempSync(join(tmpdir(), "exechub-client-consumer-"));
  const { stdout } = await run("npm", ["pack", "--silent", "--pack-destination", project], { cwd: `${ROOT}wasm-client/pkg` });
  tarball = join(project, stdout.trim().split("\n").at(-1));
  writeFileSync(join(project, "package.json"), JSON.stringify({ name: "consumer", private: true, type: "module" }));
  // Offline: the tarball, and `ws` from the repository's own npm packages.
  await run("npm", ["install", "--offline", "--no-audit", "--no-fund", "--no-package-lock", tarball, `${ROOT}node_modules/ws`], { cwd: project });
  for (const file of ["app.ts", "worker.ts", "worker.mjs"]) copyFileSync(join(FIXTURE, file), join(project, file));
  const manifest = JSON.parse(readFileSync(join(project, "node_modules/exechub-client/package.json"), "utf8"));
  const entry = `/node_modules/exechub-client/${browserEntry(manifest).replace(/^\.\//, "")}`;
  writeFileSync(join(project, "index.html"), readFileSync(join(FIXTURE, "index.html"), "utf8").replace("ENTRY", entry));
  [hub, hubUrl] = await startHub();
  server = await serve(project);
  pageUrl = `http://127.0.0.1:${server.address().port}/index.html`;
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", args: CHROMIUM_ARGS });
  mkdirSync(ARTIFACTS, { recursive: true });
});

after(async () => {
  await browser?.close();
  server?.close();
  hub?.kill("SIGKILL");
  if (project) rmSync(project, { recursive: true, force: true });
});

test("the tarball's manifest says what a package user needs: license, exports with types, files", async () => {
  const { stdout } = await run("tar", ["-tzf", tarball]);
  const files = stdout.trim().split("\n").map((f) => f.replace(/^package\//, "")).sort();
  assert.deepEqual(files, [
    "README.md", "exechub_client.d.ts", "exechub_client.js", "exechub_client_bg.wasm",
    "exechub_client_bg.wasm.d.ts", "exechub_client_node.js", "package.json",
  ]);
  const manifest = JSON.parse(readFileSync(join(project, "node_modules/exechub-client/package.json"), "utf8"));
  assert.equal(manifest.license, "MIT");
  assert.ok(manifest.repository?.url, "repository");
  assert.ok(manifest.keywords.includes("websocket"), "keywords");
  assert.equal(manifest.type, "module");
  assert.equal(manifest.sideEffects, false);
  assert.deepEqual(manifest.exports["."], {
    types: "./exechub_client.d.ts", node: "./exechub_client_node.js", default: "./exechub_client.js",
  });
});

for (const [resolution, file, settings] of [
  ["bundler", "app.ts", { module: "ESNext", lib: ["ES2022", "DOM"], types: [] }],
  ["node16", "worker.ts", { module: "node16", lib: ["ES2022"], types: ["node"], typeRoots: [`${ROOT}node_modules/@types`] }],
]) {
  test(`the installed package type-checks under tsc --strict with moduleResolution ${resolution}`, async () => {
    const config = join(project, `tsconfig.${resolution}.json`);
    const compilerOptions = { strict: true, noEmit: true, target: "ES2022", moduleResolution: resolution, ...settings };
    writeFileSync(config, JSON.stringify({ compilerOptions, files: [file] }));
    const checked = await run(process.execPath, [TSC, "-p", config], { cwd: project }).catch((error) => error);
    assert.equal(checked.code ?? 0, 0, `${checked.stdout}${checked.stderr}`);
  });
}

test(`a Node worker publishes ${WORKER_EVENTS} events over WebSocket and a batch over HTTP while a page watches them all arrive`, { timeout: 120_000 }, async () => {
  const executionId = `node-worker-${process.pid}`;
  const page = await browser.newPage();
  const problems = [];
  page.on("pageerror", (error) => problems.push(error.message));
  page.on("console", (message) => message.type() === "error" && problems.push(message.text()));
  const ws = `${hubUrl.replace(/^http/, "ws")}/ws`;
  await page.goto(`${pageUrl}?ws=${encodeURIComponent(ws)}&execution=${executionId}`);
  // The page imported the package by its bare name and connected.
  await page.waitForSelector("#state:text('open')", { timeout: 20_000 });

  const worker = await run(process.execPath, ["worker.mjs", hubUrl, executionId, String(WORKER_EVENTS), String(BATCH_EVENTS)], { cwd: project });
  const { seqs, batch } = JSON.parse(worker.stdout);
  assert.deepEqual([...seqs].sort((a, b) => a - b), range(1, WORKER_EVENTS), "one seq per publish, none skipped");
  const total = WORKER_EVENTS + BATCH_EVENTS;
  assert.deepEqual(batch, { firstSeq: WORKER_EVENTS + 1, lastSeq: total, count: BATCH_EVENTS });

  await page.waitForFunction((n) => document.getElementById("count").textContent === String(n), total, { timeout: 60_000 });
  const shown = await page.$$eval("#events li", (items) => items.map((li) => [Number(li.dataset.seq), li.dataset.type]));
  assert.deepEqual(shown.map(([seq]) => seq), range(1, total), "every event once, in seq order");
  assert.equal(shown.filter(([, type]) => type === "step").length, WORKER_EVENTS);
  assert.deepEqual(shown.slice(WORKER_EVENTS).map(([, type]) => type), Array(BATCH_EVENTS).fill("batch"));
  const indexes = await page.$$eval('#events li[data-type="step"]', (items) => items.map((li) => JSON.parse(li.textContent).i));
  assert.deepEqual(indexes.sort((a, b) => a - b), range(0, WORKER_EVENTS - 1), "data reaches the page as sent");
  await page.screenshot({ path: `${ARTIFACTS}/node-worker-page.png` });
  assert.deepEqual(problems, []);
  await page.close();
});

function range(from, to) {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}
