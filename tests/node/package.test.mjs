// The npm package as a user gets it: the `npm pack` tarball installed
// (offline) into a fresh project, type-checked there under `tsc --strict`
// (moduleResolution bundler and node16), imported by its bare name in
// Chromium as a bundler resolves it, and run by a Node 20 worker that
// publishes to a real hub while that page watches.
//
// Run by scripts/test.sh after scripts/build-web.sh built wasm-client/pkg.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  ARTIFACTS, FIXTURE, ROOT, installedManifest, launchChromium, openPage, packedProject, range, run, serve, startHub, tearDown,
} from "./support.mjs";

const TSC = `${ROOT}node_modules/typescript/bin/tsc`;
const WORKER_EVENTS = 1000;
const BATCH_EVENTS = 50;

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

before(async () => {
  ({ project, tarball } = await packedProject("exechub-client-consumer-"));
  for (const file of ["app.ts", "worker.ts", "worker.mjs"]) copyFileSync(join(FIXTURE, file), join(project, file));
  const entry = `/node_modules/exechub-client/${browserEntry(installedManifest(project)).replace(/^\.\//, "")}`;
  writeFileSync(join(project, "index.html"), readFileSync(join(FIXTURE, "index.html"), "utf8").replace("ENTRY", entry));
  [hub, hubUrl] = await startHub();
  server = await serve(project);
  pageUrl = `http://127.0.0.1:${server.address().port}/index.html`;
  browser = await launchChromium();
  mkdirSync(ARTIFACTS, { recursive: true });
});

after(() => tearDown({ browser, server, hub, project }));

test("the tarball's manifest says what a package user needs: license, exports with types, files", async () => {
  const { stdout } = await run("tar", ["-tzf", tarball]);
  const files = stdout.trim().split("\n").map((f) => f.replace(/^package\//, "")).sort();
  assert.deepEqual(files, [
    "README.md", "exechub_client.d.ts", "exechub_client.js", "exechub_client_bg.wasm",
    "exechub_client_bg.wasm.d.ts", "exechub_client_node.js", "index.js", "package.json",
  ]);
  const manifest = installedManifest(project);
  assert.equal(manifest.license, "MIT");
  assert.ok(manifest.repository?.url, "repository");
  assert.ok(manifest.keywords.includes("websocket"), "keywords");
  assert.equal(manifest.type, "module");
  assert.equal(manifest.sideEffects, false);
  assert.deepEqual(manifest.exports["."], {
    types: "./exechub_client.d.ts", node: "./exechub_client_node.js", default: "./index.js",
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
  const { page, problems } = await openPage(browser, pageUrl, hubUrl, executionId);
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
