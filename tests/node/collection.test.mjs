// Garbage collection never ends a live client (issue: a page that kept no
// reference to its client stopped receiving after ~165 events). A page
// written like the package README — clients created at a module's top level
// and referenced by nothing else — is built by Vite from the packed tarball
// and run in Chromium with `gc()` exposed; a Node worker does the same with
// `node --expose-gc`. Garbage is collected while events flow and while
// publishes are in flight; every event still arrives, every publish is
// stored, and clients that wait on nothing are collected and close.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import {
  ARTIFACTS, FIXTURE, ROOT, launchChromium, openPage, openWebSockets, packedProject, publish, range, run, serve, startHub, tearDown,
  until,
} from "./support.mjs";

const VITE = `${ROOT}node_modules/vite/bin/vite.js`;
const ROUNDS = 10;
const PER_ROUND = 20;

let project, hub, hubUrl, server, pageUrl, browser;

before(async () => {
  ({ project } = await packedProject("exechub-client-gc-"));
  for (const file of ["index.html", "main.js"]) copyFileSync(join(FIXTURE, "gc", file), join(project, file));
  for (const file of ["gc-worker.mjs", "free-worker.mjs"]) copyFileSync(join(FIXTURE, file), join(project, file));
  // A production build, as the app would ship.
  await run(process.execPath, [VITE, "build", "--logLevel", "warn"], { cwd: project });
  [hub, hubUrl] = await startHub();
  server = await serve(join(project, "dist"));
  pageUrl = `http://127.0.0.1:${server.address().port}/index.html`;
  browser = await launchChromium(["--js-flags=--expose-gc"]);
  mkdirSync(ARTIFACTS, { recursive: true });
});

after(() => tearDown({ browser, server, hub, project }));

test(`a Vite-built page with no reference to its clients gets all ${ROUNDS * PER_ROUND} events while garbage is collected, then its idle client is collected`, { timeout: 120_000 }, async () => {
  const executionId = `gc-page-${process.pid}`;
  const { page, problems } = await openPage(browser, pageUrl, hubUrl, executionId);
  await page.waitForSelector("#state:text('open')", { timeout: 20_000 });
  await page.waitForSelector("#list-state:text('open')", { timeout: 20_000 });
  const text = (id) => page.textContent(`#${id}`);
  const collect = () => page.evaluate(() => { globalThis.gc(); globalThis.gc(); });

  for (let round = 0; round < ROUNDS; round++) {
    await collect();
    for (let i = 0; i < PER_ROUND; i++) await publish(hubUrl, executionId, "step", { round, i });
  }
  const total = ROUNDS * PER_ROUND;
  await until("every event, or the client closing", async () => {
    await collect();
    return (await text("count")) === String(total) || (await text("state")) !== "open";
  });
  assert.equal(await text("state"), "open", "the subscribed client was not closed");
  assert.equal(await text("count"), String(total));
  assert.equal(await text("last"), String(total), "in seq order, each once");
  assert.equal(await text("ended"), "", "no gap, no end yet");

  // The end: the subscription ends, and its client then waits on nothing.
  await publish(hubUrl, executionId, "execution_completed", { steps: total });
  await page.waitForSelector("#ended:text('completed')", { timeout: 20_000 });
  await until("the list subscription to see the end", async () => (await text("status")) === "completed");
  await until("the idle client to be collected and closed", async () => {
    await collect();
    return (await text("state")) === "closed";
  });
  assert.equal(await text("list-state"), "open", "the list subscription still lives");
  await until("the hub to see one socket left", async () => (await openWebSockets(hubUrl)) === 1);
  await page.screenshot({ path: `${ARTIFACTS}/gc-page.png` });
  assert.deepEqual(problems, []);
  await page.close();
});

test("a Node worker with no reference to its clients: publishes in flight and a subscription survive collection, and the process exits by itself", { timeout: 120_000 }, async () => {
  const executionId = `gc-worker-${process.pid}`;
  const count = 200;
  const worker = await run(process.execPath, ["--expose-gc", "gc-worker.mjs", hubUrl, executionId, String(count)], { cwd: project, timeout: 60_000 });
  const { seqs, seen, status, states } = JSON.parse(worker.stdout);
  assert.deepEqual([...seqs].sort((a, b) => a - b), range(1, count), "every publish stored once");
  assert.deepEqual(seen, range(1, count + 1), "every event (and the end) delivered once, in order");
  assert.equal(status, "completed");
  assert.deepEqual(states.subscriber, ["connecting", "open", "closed"]);
  assert.deepEqual(states.publisher, ["connecting", "open", "closed"]);
});

test("free() and Symbol.dispose close a client that still has a live subscription", { timeout: 60_000 }, async () => {
  const worker = await run(process.execPath, ["free-worker.mjs", hubUrl, `free-${process.pid}`], { cwd: project, timeout: 30_000 });
  const { freed, disposed } = JSON.parse(worker.stdout);
  assert.deepEqual(freed, ["connecting", "open", "closed"]);
  assert.deepEqual(disposed, ["connecting", "open", "closed"]);
});
