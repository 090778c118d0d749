// Publishing from the page: a test event from the form, or a simulated
// worker that runs a short agent script (overlapping tool calls, a model
// call, a final result) in a new execution.

const $ = (id) => document.getElementById(id);

/** What a refused publish says on the page. */
export function describe(error) {
  if (error.code === "execution_ended") {
    return "Refused: this execution has ended, so the hub takes no more events for it. Open or simulate another execution to publish.";
  }
  const detail = (error.detail ?? []).map((d) => `${d.loc.slice(1).join(".") || "body"}: ${d.msg}`);
  return [error.message, ...detail].join("\n");
}

function showError(text) {
  $("publish-error").textContent = text;
  $("publish-error").hidden = !text;
}

/** Wires the form: events go to the open execution, `current()`. */
export function publishForm(client, current) {
  $("publish-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    showError("");
    let data;
    try {
      data = JSON.parse($("event-data").value);
    } catch (error) {
      showError(`Data is not valid JSON: ${error.message}`);
      return;
    }
    const id = current();
    if (!id) return showError("Open an execution first.");
    try {
      await client.publish(id, $("event-type").value, data);
    } catch (error) {
      showError(describe(error));
    }
  });
}

/** The simulated agent: [event type, data, ms to wait before the next]. */
const SCRIPT = [
  ["execution_started", { agent: "code-reviewer", trigger: "pull_request", repository: "acme/payments" }, 150],
  ["status_changed", { from: "queued", to: "running" }, 150],
  ["tool_started", { tool: "git_diff", tool_call_id: "call_1", args: { base: "main" } }, 120],
  ["tool_started", { tool: "ripgrep", tool_call_id: "call_2", args: { pattern: "refund" } }, 350],
  ["tool_finished", { tool: "ripgrep", tool_call_id: "call_2", matches: 14, exit_code: 0 }, 250],
  ["tool_output", { tool: "git_diff", tool_call_id: "call_1", output: "3 files changed, 41 insertions(+), 7 deletions(-)" }, 100],
  ["tool_finished", { tool: "git_diff", tool_call_id: "call_1", exit_code: 0 }, 120],
  ["llm_call_started", { name: "plan", span_id: "llm_1", model: "reviewer-large" }, 500],
  ["llm_call_finished", { name: "plan", span_id: "llm_1", tokens: 1840 }, 120],
  ["tool_started", { tool: "cargo_test", tool_call_id: "call_3", args: { package: "payments" } }, 200],
  ["log", { level: "info", message: "Running 128 tests" }, 600],
  ["tool_finished", { tool: "cargo_test", tool_call_id: "call_3", exit_code: 0, passed: 128 }, 150],
  ["message", { role: "assistant", content: "Looks good: refunds are now idempotent. One nit on error naming." }, 150],
  ["execution_completed", { result: "approved", comments: 1 }, 0],
];

/** How many events a simulated worker publishes. */
export const SIMULATED_EVENTS = SCRIPT.length;

/** Wires "Simulate a worker": `open(id)` shows the new execution first. */
export function simulator(client, open) {
  const button = $("simulate");
  button.addEventListener("click", async () => {
    button.disabled = true;
    showError("");
    const id = `sim-${Math.random().toString(36).slice(2, 8)}`;
    open(id);
    try {
      for (const [type, data, wait] of SCRIPT) {
        await client.publish(id, type, data);
        if (wait) await new Promise((resolve) => setTimeout(resolve, wait));
      }
    } catch (error) {
      showError(describe(error));
    } finally {
      button.disabled = false;
    }
  });
}
