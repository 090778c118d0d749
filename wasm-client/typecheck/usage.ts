// Compiled with `tsc --strict --noEmit` by scripts/test.sh: proves the package's
// generated types are real types (not `any`) and fit how applications use them.
import init, {
  ExechubClient,
  history,
  publishBatchHttp,
  publishHttp,
  type BatchStored,
  type ConnectionState,
  type ExechubError,
  type ExecutionEvent,
  type ExecutionList,
  type ExecutionStatus,
  type ExecutionSummary,
  type ExecutionsSubscription,
  type StatusFilter,
  type HistoryLost,
  type HistoryPage,
  type LostReason,
  type NewEvent,
  type Subscription,
  type WebSocketConstructor,
} from "../pkg/exechub_client.js";

export async function demo(): Promise<void> {
  await init();
  const states: ConnectionState[] = [];
  const client = new ExechubClient("ws://127.0.0.1:8080/ws", {
    token: "t",
    getToken: async () => "fresh",
    minReconnectDelayMs: 100,
    maxReconnectDelayMs: 5_000,
    onStateChange: (state: ConnectionState) => states.push(state),
  });
  const state: ConnectionState = client.state;

  const seen: number[] = [];
  const subscription: Subscription = client.subscribe(
    "exec-1",
    (event: ExecutionEvent) => {
      const seq: number = event.seq;
      const type: string = event.eventType;
      const id: string = event.executionId;
      const when: string = event.timestamp;
      const data: Record<string, unknown> = event.data;
      seen.push(seq);
      void [type, id, when, data];
    },
    {
      after: 0,
      onHistoryLost: (lost: HistoryLost) => {
        const reason: LostReason = lost.reason;
        const epoch: string | undefined = lost.epoch;
        const id: string = lost.executionId;
        const after: number = lost.after;
        // A new history (`expired`, `reset`) restarts at seq 1; `trimmed` keeps it.
        if (reason === "trimmed") seen.push(lost.resumeAfter);
        else seen.length = 0;
        void [epoch, id, after];
      },
      onError: (error: ExechubError) => console.warn(error.code, error.detail?.[0]?.loc),
    },
  );
  const last: number | undefined = subscription.lastSeq;

  try {
    const seq: number = await client.publish("exec-1", "log", { line: "hello" });
    const viaHttp: number = await publishHttp("http://127.0.0.1:8080", "exec-1", "log", { n: 1 }, {
      idempotencyKey: "job-1",
    });
    const keyed: number = await client.publish("exec-1", "log", {}, { idempotencyKey: "job-2" });
    const timed: number = await client.publish("exec-1", "log", {}, "2026-11-28T14:03:07Z");
    const events: NewEvent[] = [{ eventType: "a", data: {} }, { eventType: "b", data: { n: 2 }, timestamp: "t" }];
    const batch: BatchStored = await client.publishBatch("exec-1", events, { idempotencyKey: "job-3" });
    const batchHttp: BatchStored = await publishBatchHttp("http://127.0.0.1:8080", "exec-1", events, { token: "t" });
    const seqs: number[] = [batch.firstSeq, batch.lastSeq, batchHttp.count];
    void [seq, viaHttp, keyed, timed, seqs];
  } catch (caught) {
    const error = caught as ExechubError;
    if (error.code === "invalid_request") {
      for (const problem of error.detail ?? []) {
        const where: (string | number)[] = problem.loc;
        void [where, problem.msg, problem.type];
      }
    }
  }

  const page: HistoryPage = await history("http://127.0.0.1:8080", "exec-1", { after: 0, limit: 50 });
  const oldest: number | null = page.oldestSeq;
  const epoch: string | undefined = page.epoch;
  const first: ExecutionEvent | undefined = page.events[0];
  void [state, last, oldest, epoch, first, page.lastSeq];

  subscription.unsubscribe();
  client.close();
}

// Executions as wholes: how one ends, the final result, the list of recent ones.
export async function lifecycle(client: ExechubClient): Promise<void> {
  client.subscribe("exec-2", (event: ExecutionEvent) => void event.seq, {
    after: 0,
    onEnd: (status: ExecutionStatus, finalEvent: ExecutionEvent | null) => {
      if (status === "failed") console.warn(finalEvent?.data);
    },
  });
  const summary: ExecutionSummary | null = await client.getExecution("exec-2");
  if (summary) {
    const ended: boolean = summary.ended;
    const final: ExecutionEvent | null = summary.final;
    const times: (string | null)[] = [summary.startedAt, summary.updatedAt, summary.endedAt];
    const seqs: number[] = [summary.firstSeq, summary.lastSeq, summary.events];
    const epoch: string | null = summary.epoch;
    void [ended, final, times, seqs, epoch];
  }
  const result: ExecutionSummary | null = await client.result("exec-2", { wait: 30 });
  const status: ExecutionStatus | undefined = result?.status;
  const filter: StatusFilter = "running";
  const page: ExecutionList = await client.listExecutions({ status: filter, limit: 20 });
  const next: ExecutionList | null = page.nextCursor
    ? await client.listExecutions({ cursor: page.nextCursor })
    : null;
  const list: ExecutionsSubscription = client.subscribeExecutions(
    (executions: ExecutionSummary[]) => void executions.length,
    {
      status: "all",
      onChange: (execution: ExecutionSummary) => void execution.status,
      onError: (error: ExechubError) => void error.code,
    },
  );
  list.unsubscribe();
  try {
    await publishHttp("http://127.0.0.1:8080", "exec-2", "log", {});
  } catch (caught) {
    if ((caught as ExechubError).code === "execution_ended") void status;
  }
  const lost: HistoryPage = await history("http://127.0.0.1:8080", "exec-2");
  void [next, lost.historyLost?.lastSeq, lost.historyLost?.reason];
}

// Node 20 has no global WebSocket: a constructor such as the `ws` package's is passed in.
export function inNode(WebSocket: WebSocketConstructor): void {
  // Freed at the end of the block (Symbol.dispose): socket, timers and callbacks released.
  using client = new ExechubClient("ws://127.0.0.1:8080/ws", { websocket: WebSocket });
  void client.state;
}

// @ts-expect-error: a list's filter is all, running or ended
void new ExechubClient("ws://x/ws").listExecutions({ status: "done" });

// @ts-expect-error: a lost position's reason is one of three strings
const unknownReason: LostReason = "gone";
void unknownReason;

// @ts-expect-error: the event type must be a string
void new ExechubClient("ws://x/ws").publish("exec-1", 42, {});

// @ts-expect-error: a batch is a list of events, each with an eventType
void new ExechubClient("ws://x/ws").publishBatch("exec-1", [{ data: {} }]);
