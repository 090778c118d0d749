// How the viewer pairs events into spans (web-demo/spans.js, plain functions
// the page renders): by a key in the data when there is one, else by name in
// order; failures from the end event; unfinished spans stay open.
import { test } from "node:test";
import assert from "node:assert/strict";
import { SpanBook, extent } from "../../web-demo/spans.js";

function book(events) {
  const spans = new SpanBook();
  events.forEach(([eventType, data], i) => {
    spans.add({ seq: i + 1, eventType, data, timestamp: new Date(Date.UTC(2026, 10, 29, 21, 0, 0, i * 100)).toISOString() });
  });
  return spans.spans.map((s) => ({ name: s.name, kind: s.kind, seqs: [s.startSeq, s.endSeq], failed: s.failed }));
}

test("a key in the data pairs a finish with its start, whatever the order", () => {
  const spans = book([
    ["tool_started", { tool: "grep", tool_call_id: "a" }],
    ["tool_started", { tool: "grep", tool_call_id: "b" }],
    ["tool_finished", { tool: "grep", tool_call_id: "b" }],
    ["tool_finished", { tool: "grep", tool_call_id: "a", exit_code: 2 }],
    ["step_started", { span_id: 7 }],
    ["step_finished", { span_id: 7 }],
  ]);
  assert.deepEqual(spans, [
    { name: "grep", kind: "tool", seqs: [1, 4], failed: true },
    { name: "grep", kind: "tool", seqs: [2, 3], failed: false },
    { name: "step", kind: "step", seqs: [5, 6], failed: false },
  ]);
});

test("without a key, starts and finishes of the same name pair in order; other names and kinds stay apart", () => {
  const spans = book([
    ["tool_started", { tool: "fetch" }],
    ["tool_started", { tool: "fetch" }],
    ["tool_started", { tool: "parse" }],
    ["tool_finished", { tool: "fetch" }],
    ["llm_call_started", { name: "plan" }],
    ["tool_finished", { tool: "parse", error: "bad input" }],
    ["llm_call_failed", { name: "plan" }],
  ]);
  assert.deepEqual(spans, [
    { name: "fetch", kind: "tool", seqs: [1, 4], failed: false },
    { name: "fetch", kind: "tool", seqs: [2, null], failed: false },
    { name: "parse", kind: "tool", seqs: [3, 6], failed: true },
    { name: "plan", kind: "llm_call", seqs: [5, 7], failed: true },
  ]);
});

test("a finish without a start is no span, and the chart covers the first start to now or the last end", () => {
  assert.deepEqual(book([["tool_finished", { tool: "x" }], ["log", {}]]), []);
  const spans = new SpanBook();
  spans.add({ seq: 1, eventType: "tool_started", data: {}, timestamp: "2026-11-29T21:00:00.000Z" });
  const start = Date.parse("2026-11-29T21:00:00.000Z");
  assert.deepEqual(extent(spans.spans, start + 5000), { from: start, to: start + 5000 });
  spans.add({ seq: 2, eventType: "tool_finished", data: {}, timestamp: "2026-11-29T21:00:02.000Z" });
  assert.deepEqual(extent(spans.spans, null), { from: start, to: start + 2000 });
  assert.equal(extent([], 0), null);
});
