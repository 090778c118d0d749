//! Group commit for one Redis: single-event appends that arrive while
//! others are on their way go out together, as one script call.
//!
//! Each append is a Lua script call, and most of what one costs — in Redis
//! (reading the request, starting the script, writing the reply) and in the
//! hub (encoding the command, a round trip on the multiplexed connection,
//! parsing the reply) — is per call, not per event. Under load many
//! publishers append at once, so the appender task keeps at most
//! [`IN_FLIGHT`] calls outstanding and sends whatever queued meanwhile as one
//! [`APPEND_MANY`] call (up to [`MAX_GROUP`] events). An append that finds
//! nothing in flight goes out at once, alone: grouping never waits for
//! company. Every event keeps its own keys, checks and reply; one that Redis
//! refuses fails alone (`pcall`), the others are stored.
//!
//! A cluster does not group: a script's keys must share one slot.

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use redis::Script;
use tokio::sync::{mpsc, oneshot};

use super::connection::RedisConnection;
use super::store_error;
use crate::store::{StoreConfig, StoreError};

/// Script calls outstanding at once; more appends wait and go out together.
pub const IN_FLIGHT: usize = 2;
/// Events per grouped call at most.
pub const MAX_GROUP: usize = 128;
/// Appends waiting for the task at most (publishers wait beyond it).
const QUEUE: usize = 4 * MAX_GROUP;

/// Calls [`super::APPEND_FN`] for each group of 5 keys and 11 arguments;
/// an event Redis refuses gets `{3, error}`, and the others go on.
pub const APPEND_MANY: &str = r#"
local out = {}
for i = 0, #KEYS / 5 - 1 do
  local k, a = i * 5, i * 11
  local keys = {KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4]}
  if KEYS[k + 5] ~= '' then keys[5] = KEYS[k + 5] end
  local ok, result = pcall(append, keys, {unpack(ARGV, a + 1, a + 11)})
  if ok then
    out[i + 1] = result
  else
    out[i + 1] = {3, type(result) == 'table' and result.err or tostring(result), '', 0}
  end
end
return out
"#;

/// What an append script answers: outcome (0 stored, 1 replay, 2 ended,
/// 3 refused), receipt (or status, or error), epoch, change.
pub type Outcome = (u8, String, String, u8);

/// One event to append: its keys and the script's 11 arguments.
pub struct AppendArgs {
    /// The list, seq, epoch and summary keys.
    pub keys: [String; 4],
    /// The idempotency record's key, if the publisher gave one.
    pub idem: Option<String>,
    /// The event's JSON after `{"seq":N`.
    pub tail: Bytes,
    /// The pub/sub channel.
    pub channel: String,
    /// The event's timestamp.
    pub timestamp: String,
    /// The epoch a new history gets.
    pub epoch: String,
    /// Now, in ms since the Unix epoch.
    pub now: u64,
    /// The status the event ends the execution with (`""`: none).
    pub ending: String,
}

impl AppendArgs {
    /// Adds the keys (with `""` for no idempotency record when `padded`,
    /// so every event has five) and the arguments to `invocation`.
    pub fn add_to(
        &self,
        invocation: &mut redis::ScriptInvocation<'_>,
        config: &StoreConfig,
        padded: bool,
    ) {
        for key in &self.keys {
            invocation.key(key);
        }
        match (&self.idem, padded) {
            (Some(idem), _) => {
                invocation.key(idem);
            }
            (None, true) => {
                invocation.key("");
            }
            (None, false) => {}
        }
        invocation
            .arg(self.tail.as_ref())
            .arg(config.ttl.as_secs().max(1))
            .arg(config.max_events)
            .arg(&self.channel)
            .arg(&self.timestamp)
            .arg(config.idempotency_window.as_secs().max(1))
            .arg(&self.epoch)
            .arg(self.now)
            .arg(&self.ending)
            .arg(u8::from(config.allow_publish_after_end))
            .arg(config.final_state_ttl.as_secs());
    }
}

/// An append waiting for its group.
struct Request {
    args: AppendArgs,
    reply: oneshot::Sender<Result<Outcome, StoreError>>,
}

/// The handle appends go through; the task ends when it is dropped.
pub struct Appender {
    queue: mpsc::Sender<Request>,
}

impl Appender {
    /// Starts the task, with the one-event and grouped scripts.
    pub fn spawn(
        connection: RedisConnection,
        one: Script,
        many: Script,
        config: StoreConfig,
    ) -> Self {
        let (queue, requests) = mpsc::channel(QUEUE);
        tokio::spawn(run(requests, connection, one, many, config));
        Self { queue }
    }

    /// Appends one event, grouped with whatever else is waiting.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when Redis cannot be reached (or the task
    /// is gone), [`StoreError::Rejected`] when Redis refuses the event.
    pub async fn append(&self, args: AppendArgs) -> Result<Outcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        let gone = || StoreError::Unavailable("the Redis appender has stopped".into());
        self.queue
            .send(Request { args, reply })
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// Takes appends as they come; with [`IN_FLIGHT`] calls outstanding, the
/// next group is whatever queued meanwhile.
async fn run(
    mut requests: mpsc::Receiver<Request>,
    connection: RedisConnection,
    one: Script,
    many: Script,
    config: StoreConfig,
) {
    let mut in_flight = FuturesUnordered::new();
    loop {
        tokio::select! {
            request = requests.recv(), if in_flight.len() < IN_FLIGHT => {
                let Some(first) = request else { break };
                let mut group = vec![first];
                while group.len() < MAX_GROUP {
                    match requests.try_recv() {
                        Ok(request) => group.push(request),
                        Err(_) => break,
                    }
                }
                in_flight.push(call(group, connection.clone(), &one, &many, &config));
            }
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
        }
    }
    while in_flight.next().await.is_some() {}
}

/// One script call for `group`, and every event's answer.
async fn call(
    group: Vec<Request>,
    mut connection: RedisConnection,
    one: &Script,
    many: &Script,
    config: &StoreConfig,
) {
    if let [request] = &group[..] {
        let mut invocation = one.prepare_invoke();
        request.args.add_to(&mut invocation, config, false);
        let answer = invocation
            .invoke_async::<Outcome>(&mut connection)
            .await
            .map_err(store_error);
        if let Some(request) = group.into_iter().next() {
            let _ = request.reply.send(answer);
        }
        return;
    }
    let mut invocation = many.prepare_invoke();
    for request in &group {
        request.args.add_to(&mut invocation, config, true);
    }
    match invocation
        .invoke_async::<Vec<Outcome>>(&mut connection)
        .await
    {
        Ok(outcomes) if outcomes.len() == group.len() => {
            for (request, outcome) in group.into_iter().zip(outcomes) {
                let _ = request.reply.send(Ok(outcome));
            }
        }
        Ok(outcomes) => {
            let message = format!("{} answers to {} appends", outcomes.len(), group.len());
            for request in group {
                let _ = request
                    .reply
                    .send(Err(StoreError::Corrupt(message.clone())));
            }
        }
        Err(error) => {
            // One error for all: the call as a whole failed (nothing ran, or
            // the connection broke and the outcome is unknown).
            let error = store_error(error);
            for request in group {
                let _ = request.reply.send(Err(error.clone()));
            }
        }
    }
}
