// The web demo in Debian's Chromium (driven by playwright-core), against real
// hub and redis-server processes started here on free loopback ports.
//
// Run by scripts/test.sh after scripts/build-web.sh built web-demo/dist.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import {
  ARTIFACTS, HUB_BIN, connected, freePort, launchBrowser, openPage as open, publish as publishTo, range, start, startHub,
  startRedis, stop, waitFor,
} from "./harness.mjs";

let redisPort, hubPort, otherPort, redis, hub, other, browser, base;
const executionId = `demo-test-${process.pid}`;

function publish(port, eventType, data) {
  return publishTo(`http://127.0.0.1:${port}`, executionId, eventType, data);
}

async function lastSeq() {
  const response = await fetch(`http://127.0.0.1:${otherPort}/api/v1/executions/${executionId}/events?limit=0`);
  return (await response.json()).last_seq;
}

async function seqs(page) {
  return page.$$eval("#timeline li", (items) => items.map((li) => Number(li.dataset.seq)));
}

function openPage() {
  return open(browser, `${base}/?execution=${encodeURIComponent(executionId)}`);
}

/** Opens the (collapsed) publish form. */
async function publishForm(page) {
  await page.click("#publish-panel summary");
  await page.waitForSelector("#event-type", { state: "visible" });
}

async function timelineIs(page, expected) {
  await waitFor(`timeline ${expected.at(-1)} events`, async () => (await seqs(page)).length >= expected.length);
  assert.deepEqual(await seqs(page), expected);
}

before(async () => {
  [redisPort, hubPort, otherPort] = await Promise.all([freePort(), freePort(), freePort()]);
  redis = await startRedis(redisPort);
  [hub, other] = await Promise.all([startHub(hubPort, redisPort), startHub(otherPort, redisPort)]);
  browser = await launchBrowser();
  base = `http://127.0.0.1:${hubPort}`;
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
  // The list of executions is followed again on the new connection.
  const fresh = `${executionId}-after-restart`;
  await publishTo(`http://127.0.0.1:${hubPort}`, fresh, "log", {});
  await page.waitForSelector(`#executions li[data-execution="${fresh}"]`, { timeout: 20_000 });
  await page.close();
});

test("an event published from the page's form appears in a second open page", async () => {
  const [first, second] = [await openPage(), await openPage()];
  await Promise.all([connected(first), connected(second)]);
  const next = (await lastSeq()) + 1;
  await publishForm(first);
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
  await publishForm(page);
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
    // The summary (HTTP, with the page's token) and the live list (WebSocket) work with auth on.
    await page.waitForSelector('#execution-status[data-status="running"]', { timeout: 20_000 });
    await page.waitForSelector(`#executions li[data-execution="${executionId}-auth"]`, { timeout: 20_000 });
    await page.close();
  } finally {
    await stop(secured);
  }
});

test("simulating a worker runs a new execution to its end: events, spans and result (screenshots kept as artifacts)", async () => {
  const page = await openPage();
  await connected(page);
  await page.click("#simulate");
  await waitFor("a new execution", async () => new URL(page.url()).searchParams.get("execution")?.startsWith("sim-"));
  const simulated = new URL(page.url()).searchParams.get("execution");
  assert.equal(await page.textContent("#execution-title"), simulated);
  await page.waitForSelector('#execution-status[data-status="completed"]', { timeout: 20_000 });
  assert.deepEqual(await seqs(page), range(1, 14));
  assert.equal(await page.textContent('#timeline li[data-seq="14"] .type'), "execution_completed");
  assert.match(await page.textContent("#final-text"), /approved/);
  const spans = await page.$$eval(".span-row", (rows) => rows.map((r) => `${r.querySelector(".span-label").textContent}:${r.dataset.state}`));
  assert.deepEqual(spans, ["execution:done", "git_diff:done", "ripgrep:done", "plan:done", "cargo_test:done"]);
  await page.waitForSelector(`#executions li[data-execution="${simulated}"] .badge[data-status="completed"]`);
  await page.screenshot({ path: `${ARTIFACTS}/demo-timeline.png` });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.screenshot({ path: `${ARTIFACTS}/demo-phone.png` });
  assert.deepEqual(page.problems, []);
  await page.close();
});
