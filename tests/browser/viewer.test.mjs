// The viewer in Debian's Chromium (playwright-core) against real hubs and
// redis-servers started here on free loopback ports: the live list of
// executions, an execution that ends (header, spans, list), a publish after
// the end refused in the page, the final state of an execution whose events
// expired, layout stability while events stream, keyboard use and narrow
// screens. Screenshots are kept in artifacts/viewer-*.png.
//
// Run by scripts/test.sh after scripts/build-web.sh built web-demo/dist.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import {
  ARTIFACTS, connected, freePort, launchBrowser, openPage, post, publish, startHub, startRedis, stop, waitFor,
} from "./harness.mjs";

let redis, hub, shortRedis, shortHub, browser, base, shortBase;
const run = `${process.pid}-${Date.now().toString(36)}`;
const id = (name) => `viewer-${name}-${run}`;

before(async () => {
  const [redisPort, hubPort, shortRedisPort, shortHubPort] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
  [redis, shortRedis] = await Promise.all([startRedis(redisPort), startRedis(shortRedisPort)]);
  // The second hub's events expire a second after the last one; the final
  // state of an ended execution is kept (the default final-state TTL).
  [hub, shortHub] = await Promise.all([
    startHub(hubPort, redisPort),
    startHub(shortHubPort, shortRedisPort, ["--event-ttl", "1"]),
  ]);
  base = `http://127.0.0.1:${hubPort}`;
  shortBase = `http://127.0.0.1:${shortHubPort}`;
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await Promise.all([hub, shortHub, redis, shortRedis].map(stop));
});

const view = (execution, hubBase = base) => `${hubBase}/?execution=${encodeURIComponent(execution)}`;
const text = (page, selector) => page.textContent(selector).then((t) => t.trim());
const listBadge = (execution) => `#executions li[data-execution="${execution}"] .badge`;

/** Records layout shifts from the start of the page on (`window.shifts`). */
async function recordLayoutShifts(page) {
  await page.addInitScript(() => {
    window.shifts = [];
    new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) {
        const sources = (entry.sources ?? []).map((s) => s.node?.id || s.node?.className || s.node?.nodeName);
        window.shifts.push({ value: entry.value, input: entry.hadRecentInput, sources });
      }
    }).observe({ type: "layout-shift", buffered: true });
  });
}


test("the list of executions updates live: new executions appear, and their status changes", async () => {
  const page = await openPage(browser, `${base}/`);
  await connected(page);
  const first = id("listed");
  await publish(base, first, "execution_started", { agent: "a" });
  await page.waitForSelector(listBadge(first), { timeout: 20_000 });
  assert.equal(await text(page, listBadge(first)), "running");
  assert.match(await text(page, `#executions li[data-execution="${first}"] .age`), /active (now|\d+s ago)/);
  // With nothing selected the viewer opened the newest execution.
  await waitFor("the newest execution opened", async () => (await text(page, "#execution-title")) === first);
  const second = id("listed-2");
  await publish(base, second, "log", { line: 1 });
  await page.waitForSelector(listBadge(second));
  await publish(base, first, "execution_failed", { error: "boom" });
  await waitFor("the list to show the end", async () => (await text(page, listBadge(first))) === "failed");
  const order = await page.$$eval("#executions li", (items) => items.map((li) => li.dataset.execution));
  assert.ok(order.indexOf(second) < order.indexOf(first), "newest start first");
  await page.selectOption("#list-filter", "running");
  await waitFor("the running filter", async () => !(await page.$(`#executions li[data-execution="${first}"]`)));
  assert.ok(await page.$(`#executions li[data-execution="${second}"]`));
  assert.deepEqual(page.problems, []);
  await page.close();
});

for (const [width, height, name] of [[1280, 800, "laptop"], [390, 844, "phone"]]) {
  test(`an execution that ends: header, spans and list show it, and streaming events shift nothing (${name})`, async () => {
    await executionEnds({ width, height }, name);
  });
}

async function executionEnds(viewport, name) {
  const execution = id(`ends-${name}`);
  await publish(base, execution, "execution_started", { agent: "reviewer" });
  const page = await browser.newPage({ viewport });
  await recordLayoutShifts(page);
  await page.goto(view(execution));
  await connected(page);
  await page.waitForSelector(`${listBadge(execution)}`);
  await page.waitForSelector('#execution-status[data-status="running"]');
  const before = await page.evaluate(() => window.shifts.length);

  await publish(base, execution, "tool_started", { tool: "git_diff", tool_call_id: "c1" });
  await publish(base, execution, "tool_started", { tool: "cargo_test", tool_call_id: "c2" });
  await page.waitForSelector('.span-row[data-state="open"] >> nth=1');
  // An unfinished span grows while it runs.
  const width = () => page.$eval('.span-row:has(.span-label:text("cargo_test")) .span-bar', (bar) => bar.getBoundingClientRect().width);
  const first = await width();
  await waitFor("the open span to grow", async () => (await width()) > first + 2);
  const duration = await text(page, "#execution-duration");
  await waitFor("the duration to tick", async () => (await text(page, "#execution-duration")) !== duration);
  for (let i = 0; i < 30; i++) await publish(base, execution, "log", { line: `step ${i}` });
  await publish(base, execution, "tool_finished", { tool: "git_diff", tool_call_id: "c1", exit_code: 0 });
  await publish(base, execution, "tool_finished", { tool: "cargo_test", tool_call_id: "c2", exit_code: 1 });
  await publish(base, execution, "execution_completed", { result: "approved", comments: 2 });
  await page.waitForSelector('#timeline li[data-seq="36"]');

  await page.waitForSelector('#execution-status[data-status="completed"]');
  await waitFor("the final result", async () => /execution_completed #36 .*approved/.test(await text(page, "#final-text")));
  assert.match(await text(page, "#notice"), /Ended completed/);
  const states = await page.$$eval(".span-row", (rows) => rows.map((r) => `${r.querySelector(".span-label").textContent}:${r.dataset.state}`));
  assert.deepEqual(states, ["execution:done", "git_diff:done", "cargo_test:failed"]);
  await waitFor("the list to show the end", async () => (await text(page, listBadge(execution))) === "completed");
  const ended = await text(page, "#execution-duration");
  await page.waitForTimeout(1_100); // one tick of the clock: an ended execution's duration stays
  assert.equal(await text(page, "#execution-duration"), ended);

  // Layout Instability API: the shifts not caused by input while events streamed.
  const shifts = await page.evaluate((from) => window.shifts.slice(from).filter((s) => !s.input), before);
  const score = shifts.reduce((sum, s) => sum + s.value, 0);
  assert.ok(score < 0.0001, `layout shift while events streamed: ${score} ${JSON.stringify(shifts)}`);
  console.log(`# ${name}: cumulative layout shift while 36 events streamed: ${score.toFixed(5)} (${shifts.length} shifts)`);
  await page.screenshot({ path: `${ARTIFACTS}/viewer-ended-${name}.png`, fullPage: true });
  // Choosing a span shows its start event in the list.
  await page.click('.span-row:has(.span-label:text("git_diff"))');
  const focused = await page.evaluate(() => document.activeElement.closest("li")?.dataset.seq);
  assert.equal(focused, "2");
  assert.equal(await page.isVisible('#timeline li[data-seq="2"]'), true);
  await page.close();
}

test("publishing after the end is refused in the page, with a clear message", async () => {
  const execution = id("refused");
  await publish(base, execution, "execution_cancelled", { by: "user" });
  const page = await openPage(browser, view(execution));
  await connected(page);
  await page.waitForSelector('#execution-status[data-status="cancelled"]');
  await page.click("#publish-panel summary");
  await page.fill("#event-type", "log");
  await page.fill("#event-data", '{"late": true}');
  await page.click('#publish-form button[type="submit"]');
  await page.waitForSelector("#publish-error:not([hidden])");
  assert.match(await text(page, "#publish-error"), /Refused: this execution has ended/);
  const { status, body } = await post(base, execution, "log", {});
  assert.equal(status, 409, body);
  assert.equal(await page.$$eval("#timeline li", (items) => items.length), 1, "nothing was added");
  await page.screenshot({ path: `${ARTIFACTS}/viewer-refused.png` });
  assert.deepEqual(page.problems, []);
  await page.close();
});

test("an ended execution whose events expired still shows its final state after a reload", async () => {
  const execution = id("expired");
  await publish(shortBase, execution, "tool_started", { tool: "deploy", tool_call_id: "d1" });
  await publish(shortBase, execution, "tool_finished", { tool: "deploy", tool_call_id: "d1", exit_code: 3 });
  await publish(shortBase, execution, "execution_failed", { error: "deploy failed", exit_code: 3 });
  const page = await openPage(browser, view(execution, shortBase));
  await connected(page);
  await page.waitForSelector('#execution-status[data-status="failed"]');
  await waitFor("the events to expire", async () => {
    const response = await fetch(`${shortBase}/api/v1/executions/${execution}/events?after=0`);
    const history = await response.json();
    return history.events.length === 0 && history.history_lost?.reason === "expired";
  });
  await page.reload();
  await connected(page);
  await page.waitForSelector('#execution-status[data-status="failed"]');
  assert.equal(await text(page, "#execution-status"), "failed");
  assert.match(await text(page, "#final-text"), /execution_failed #3 .*deploy failed/);
  await waitFor("the expiry notice", async () => /events expired; the final state is kept/.test(await text(page, "#notice")));
  assert.notEqual(await text(page, "#execution-duration"), "—");
  assert.equal(await page.$$eval("#timeline li", (items) => items.length), 0);
  await page.screenshot({ path: `${ARTIFACTS}/viewer-expired.png` });
  assert.deepEqual(page.problems, []);
  await page.close();
});

test("the list is keyboard reachable: Tab to an execution, Enter or Space opens it; back and forward work", async () => {
  const [a, b] = [id("keys-a"), id("keys-b")];
  await publish(base, a, "log", { n: 1 });
  await publish(base, b, "log", { n: 2 });
  const page = await openPage(browser, view(a));
  await connected(page);
  await page.waitForSelector(`#executions li[data-execution="${b}"]`);
  const focusedExecution = () => page.evaluate(() => document.activeElement?.closest("li[data-execution]")?.dataset.execution);
  for (let i = 0; i < 40 && (await focusedExecution()) !== b; i++) await page.keyboard.press("Tab");
  assert.equal(await focusedExecution(), b, "Tab reaches the execution");
  const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  assert.notEqual(outline, "none", "the focus is visible");
  await page.keyboard.press("Enter");
  await waitFor("Enter to open it", async () => (await text(page, "#execution-title")) === b);
  assert.equal(new URL(page.url()).searchParams.get("execution"), b);
  await page.focus(`#executions li[data-execution="${a}"] button`);
  await page.keyboard.press("Space");
  await waitFor("Space to open it", async () => (await text(page, "#execution-title")) === a);
  await page.goBack();
  await waitFor("back to the previous execution", async () => (await text(page, "#execution-title")) === b);
  await page.waitForSelector('#timeline li[data-seq="1"]');
  assert.match(await text(page, '#timeline li[data-seq="1"] .preview'), /"n":2/);
  await page.goForward();
  await waitFor("forward again", async () => (await text(page, "#execution-title")) === a);
  assert.deepEqual(page.problems, []);
  await page.close();
});

test("the event list follows the tail, offers a jump to the latest when scrolled up, filters by type and opens data", async () => {
  const execution = id("tail");
  const page = await openPage(browser, view(execution));
  await connected(page);
  for (let i = 0; i < 40; i++) await publish(base, execution, i % 4 === 0 ? "tool_output" : "log", { line: i });
  await page.waitForSelector('#timeline li[data-seq="40"]');
  const atBottom = () => page.$eval("#timeline", (l) => l.scrollHeight - l.scrollTop - l.clientHeight < 24);
  await waitFor("the list to follow the tail", atBottom);
  await page.$eval("#timeline", (list) => { list.scrollTop = 0; });
  await waitFor("scrolled up", async () => !(await atBottom()));
  await publish(base, execution, "log", { line: "new" });
  await page.waitForSelector("#jump:not([hidden])");
  assert.equal(await text(page, "#jump"), "Jump to latest (1 new)");
  assert.equal(await page.$eval("#timeline", (l) => l.scrollTop), 0, "the reader's place is kept");
  await page.click("#jump");
  await waitFor("back at the latest", atBottom);
  assert.equal(await page.isHidden("#jump"), true);

  await page.selectOption("#type-filter", "tool_output");
  const shown = await page.$$eval("#timeline li:not([hidden])", (items) => items.map((li) => li.dataset.type));
  assert.equal(shown.length, 10);
  assert.ok(shown.every((type) => type === "tool_output"));
  assert.match(await text(page, "#count"), /41 events \(10 shown\)/);
  const row = '#timeline li[data-seq="5"]';
  assert.equal(await page.isHidden(`${row} .data`), true, "data starts collapsed");
  await page.click(`${row} .ev`);
  assert.equal(await page.getAttribute(`${row} .ev`, "aria-expanded"), "true");
  assert.match(await page.textContent(`${row} .data`), /"line": 4/);
  assert.equal(await page.isVisible(`${row} .data`), true);
  assert.deepEqual(page.problems, []);
  await page.close();
});

test("at phone and laptop widths nothing overflows sideways, and the header links to /status", async () => {
  const execution = id("a-rather-long-execution-identifier-that-must-not-widen-the-page");
  await publish(base, execution, "tool_started", { tool: "a_tool_with_a_very_long_name_indeed", tool_call_id: "x" });
  await publish(base, execution, "log", { message: "x".repeat(400) });
  for (const [width, height, name] of [[390, 844, "phone"], [1280, 800, "laptop"]]) {
    const page = await openPage(browser, view(execution), { width, height });
    await connected(page);
    await page.waitForSelector('#timeline li[data-seq="2"]');
    await page.click('#timeline li[data-seq="2"] .ev');
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    assert.equal(overflow, 0, `no horizontal overflow at ${width}px`);
    assert.equal(await page.getAttribute("#status-link", "href"), "/status");
    await page.screenshot({ path: `${ARTIFACTS}/viewer-${name}.png`, fullPage: name === "phone" });
    assert.deepEqual(page.problems, []);
    await page.close();
  }
});
