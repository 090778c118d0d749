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
use crate::event::{Epoch, now_ms};
use crate::store::{StoreConfig, StoreError};

/// Script calls outstanding at once; more appends wait and go out together.
pub const IN_FLIGHT: usize = 2;
/// Events per grouped call at most.
pub const MAX_GROUP: usize = 128;
/// Appends waiting for the task at most (publishers wait beyond it).
const QUEUE: usize = 4 * MAX_GROUP;

/// Calls [`super::APPEND_FN`] for each event: 5 keys each (`''` for no
/// idempotency record; an event alone may leave it out, as a cluster
/// needs: every key of a call in one slot), then ARGV 1–7 shared by all (TTL, retained events,
/// idempotency window, append-after-end, final-state TTL, now in ms, the
/// epoch a new history gets), then 4 per event (tail, channel, timestamp,
/// ending). One answer per event; an event Redis refuses gets outcome 3 and
/// the error, and the others go on.
pub const APPEND_MANY: &str = r#"
local c = shared(ARGV)
local out = {}
for i = 0, math.ceil(#KEYS / 5) - 1 do
  local k, a = i * 5, 7 + i * 4
  local keys = {KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4]}
  local idem = KEYS[k + 5]
  if idem and idem ~= '' then keys[5] = idem end
  local ok, result = pcall(append, keys, ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], c)
  if ok then
    out[i + 1] = result
  else
    out[i + 1] = answer(3, 0, '', type(result) == 'table' and result.err or tostring(result))
  end
end
return out
"#;

/// What an append script answers: outcome (0 stored, 1 replay, 2 ended,
/// 3 refused), receipt (or status, or error), epoch, change.
pub type Outcome = (u8, String, String, u8);

/// Reads an append script's answer, `<outcome><change><epoch>\n<rest>`.
///
/// # Errors
/// [`StoreError::Corrupt`] when it is not that shape.
pub fn parse_outcome(answer: &str) -> Result<Outcome, StoreError> {
    let corrupt = || StoreError::Corrupt(format!("append answer {answer:?}"));
    let (head, rest) = answer.split_once('\n').ok_or_else(corrupt)?;
    let digit = |i: usize| {
        head.as_bytes()
            .get(i)
            .filter(|b| (b'0'..=b'3').contains(b))
            .map(|b| b - b'0')
    };
    let (outcome, change) = digit(0).zip(digit(1)).ok_or_else(corrupt)?;
    Ok((outcome, rest.to_owned(), head[2..].to_owned(), change))
}

/// One event to append: its keys and its own arguments.
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
    /// The status the event ends the execution with (`""`: none).
    pub ending: String,
}

impl AppendArgs {
    /// Adds the keys (with `""` for no idempotency record when `padded`,
    /// so every event has five) and the event's own arguments to `invocation`.
    pub fn add_to(&self, invocation: &mut redis::ScriptInvocation<'_>, padded: bool) {
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
            .arg(&self.channel)
            .arg(&self.timestamp)
            .arg(&self.ending);
    }
}

/// Adds the arguments all events of one call share (ARGV 1–7 of
/// [`APPEND_MANY`] and of the batch script).
pub fn add_shared(invocation: &mut redis::ScriptInvocation<'_>, config: &StoreConfig) {
    invocation
        .arg(config.ttl.as_secs().max(1))
        .arg(config.max_events)
        .arg(config.idempotency_window.as_secs().max(1))
        .arg(u8::from(config.allow_publish_after_end))
        .arg(config.final_state_ttl.as_secs())
        .arg(now_ms())
        .arg(Epoch::random().as_str());
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
    /// Starts the task, with the [`APPEND_MANY`] script.
    pub fn spawn(connection: RedisConnection, script: Script, config: StoreConfig) -> Self {
        let (queue, requests) = mpsc::channel(QUEUE);
        tokio::spawn(run(requests, connection, script, config));
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
    script: Script,
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
                in_flight.push(call(group, connection.clone(), &script, &config));
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
    script: &Script,
    config: &StoreConfig,
) {
    let args = group.iter().map(|request| &request.args);
    match append_group(script, &mut connection, config, args).await {
        Ok(outcomes) => {
            for (request, outcome) in group.into_iter().zip(outcomes) {
                let _ = request.reply.send(outcome);
            }
        }
        Err(error) => {
            // One error for all: the call as a whole failed (nothing ran, or
            // the connection broke and the outcome is unknown).
            for request in group {
                let _ = request.reply.send(Err(error.clone()));
            }
        }
    }
}

/// Appends `events` with one call of `script` ([`APPEND_MANY`]): one
/// outcome per event, in order.
///
/// # Errors
/// The call's error when it failed as a whole; [`StoreError::Corrupt`] when
/// the answers do not match the events.
pub async fn append_group<'a>(
    script: &Script,
    connection: &mut RedisConnection,
    config: &StoreConfig,
    events: impl ExactSizeIterator<Item = &'a AppendArgs>,
) -> Result<Vec<Result<Outcome, StoreError>>, StoreError> {
    let count = events.len();
    let mut invocation = script.prepare_invoke();
    add_shared(&mut invocation, config);
    for args in events {
        args.add_to(&mut invocation, count > 1);
    }
    let answers: Vec<String> = invocation
        .invoke_async(connection)
        .await
        .map_err(store_error)?;
    if answers.len() != count {
        return Err(StoreError::Corrupt(format!(
            "{} answers to {count} appends",
            answers.len()
        )));
    }
    Ok(answers.iter().map(|answer| parse_outcome(answer)).collect())
}
