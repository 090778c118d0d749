//! Group commit for one Redis: single-event appends that arrive while
//! others are on their way go out together, as one script call.
//!
//! Each append is a Lua script call, and most of what one costs — in Redis
//! (reading the request, starting the script, writing the reply) and in the
//! hub (encoding the command, a round trip on the multiplexed connection,
//! parsing the reply) — is per call, not per event. Under load many
//! publishers append at once, so the appender task keeps at most
//! [`IN_FLIGHT`] groups outstanding and sends whatever queued meanwhile as
//! one call of the append script (`lua/append.lua`, up to [`MAX_GROUP`] events). An append that
//! finds nothing in flight goes out at once, alone: grouping never waits for
//! company. Every event keeps its own keys, checks and reply; one that Redis
//! refuses fails alone (`pcall`), the others are stored.
//!
//! Every append of one Redis — batches too, each a call of its own — goes
//! through the appender's queue, and calls leave it in the order their
//! appends came, on one multiplexed connection: appends handed over in
//! order are applied in that order (what lets one WebSocket pipeline its
//! publishes). A call that Redis answers `NOSCRIPT` (it lost the scripts: a
//! restart, `SCRIPT FLUSH`; nothing of the call ran) is made again, once
//! the scripts are loaded, only if no call went out after it: a retry could
//! otherwise land behind a later call. Else its appends fail as unavailable,
//! for their publishers to retry. The appender loads both scripts before its
//! first call and before the next call after any that failed, so that is rare.
//!
//! A cluster does not group: a script's keys must share one slot.

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use redis::{ErrorKind, FromRedisValue, Script, ServerErrorKind};
use tokio::sync::{mpsc, oneshot};

use super::connection::RedisConnection;
use super::store_error;
use crate::clock::now_ms;
use crate::event::Epoch;
use crate::store::{StoreConfig, StoreError};

/// Grouped calls outstanding at once; more single appends wait and go out
/// together (batches do not wait). One, measured against two with
/// `bench/compare.sh` (6 rounds, 100,000 single-event HTTP POSTs over 32
/// connections): groups grew from 8 to 13 events, Redis spent 11.3 instead of
/// 11.7 µs per event and the hub 22.2 instead of 22.7, the round trip's p99
/// was 1.40 instead of 1.50 ms; pipelined WebSocket publishes and batches
/// were unchanged.
pub const IN_FLIGHT: usize = 1;
/// Events per grouped call at most.
pub const MAX_GROUP: usize = 128;
/// Appends waiting for the task at most (publishers wait beyond it).
const QUEUE: usize = 4 * MAX_GROUP;

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
    /// How many keys the event has in a call: five when `padded` (`""` for
    /// no idempotency record), else four or five.
    fn key_count(&self, padded: bool) -> usize {
        4 + usize::from(padded || self.idem.is_some())
    }

    /// Adds the event's keys to `cmd` (see [`AppendArgs::key_count`]).
    fn add_keys(&self, cmd: &mut redis::Cmd, padded: bool) {
        for key in &self.keys {
            cmd.arg(key);
        }
        match (&self.idem, padded) {
            (Some(idem), _) => {
                cmd.arg(idem);
            }
            (None, true) => {
                cmd.arg("");
            }
            (None, false) => {}
        }
    }

    /// Adds the event's own arguments to `cmd`.
    fn add_args(&self, cmd: &mut redis::Cmd) {
        cmd.arg(self.tail.as_ref())
            .arg(&self.channel)
            .arg(&self.timestamp)
            .arg(&self.ending);
    }
}

/// Adds the arguments all events of one call share (ARGV 1–8 of both
/// append scripts: `shared` in `lua/common.lua`).
fn add_shared(cmd: &mut redis::Cmd, config: &StoreConfig, announce: Announce) {
    cmd.arg(config.ttl.as_secs().max(1))
        .arg(config.max_events)
        .arg(config.idempotency_window.as_secs().max(1))
        .arg(u8::from(!config.after_end.is_final()))
        .arg(config.final_state_ttl.as_secs())
        .arg(now_ms())
        .arg(Epoch::random().as_str())
        .arg(announce.command());
}

/// A batch to append with the batch script: its keys and arguments.
pub struct BatchArgs {
    /// The list, seq, epoch and summary keys.
    pub keys: [String; 4],
    /// The batch's idempotency record's key, if the publisher gave one.
    pub idem: Option<String>,
    /// The pub/sub channel.
    pub channel: String,
    /// The events' tails joined by newlines (the pub/sub message's body).
    pub joined: Vec<u8>,
    /// The first event's timestamp.
    pub first_timestamp: String,
    /// The status the batch ends the execution with (`""`: none).
    pub ending: String,
    /// Each event's JSON after `{"seq":N`.
    pub tails: Vec<Bytes>,
}

/// Calls the batch script for `args`: one answer for the batch. A script
/// Redis has lost is loaded and the call made once more (the cluster's way;
/// the appender's is [`call`]).
///
/// # Errors
/// The call's error.
pub async fn append_batch(
    scripts: &Scripts,
    connection: &mut RedisConnection,
    config: &StoreConfig,
    args: &BatchArgs,
) -> Result<Outcome, StoreError> {
    let cmd = batch_cmd(scripts, config, args);
    let answer: String = run_script(&cmd, &scripts.batch, connection).await?;
    parse_outcome(&answer)
}

/// The batch script's call for `args`.
fn batch_cmd(scripts: &Scripts, config: &StoreConfig, args: &BatchArgs) -> redis::Cmd {
    let mut cmd = evalsha(&scripts.batch, 4 + usize::from(args.idem.is_some()));
    for key in &args.keys {
        cmd.arg(key);
    }
    if let Some(idem) = &args.idem {
        cmd.arg(idem);
    }
    add_shared(&mut cmd, config, scripts.announce);
    cmd.arg(&args.channel)
        .arg(&args.joined)
        .arg(&args.first_timestamp)
        .arg(&args.ending);
    for tail in &args.tails {
        cmd.arg(tail.as_ref());
    }
    cmd
}

/// An `EVALSHA` of `script` with `keys` keys; the keys and then the
/// arguments follow.
fn evalsha(script: &Script, keys: usize) -> redis::Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash()).arg(keys);
    cmd
}

/// Runs `cmd`, an `EVALSHA` of `script`; when Redis does not have the
/// script, loads it and sends `cmd` once more.
///
/// # Errors
/// The call's error.
async fn run_script<T: FromRedisValue>(
    cmd: &redis::Cmd,
    script: &Script,
    connection: &mut RedisConnection,
) -> Result<T, StoreError> {
    match cmd.query_async(connection).await {
        Err(error) if lost_script(&error) => {
            script.load_async(connection).await.map_err(store_error)?;
            cmd.query_async(connection).await.map_err(store_error)
        }
        result => result.map_err(store_error),
    }
}

/// Whether Redis answered `NOSCRIPT`: it does not have the script (it was
/// restarted, or `SCRIPT FLUSH`), and nothing of the call ran.
fn lost_script(error: &redis::RedisError) -> bool {
    error.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
}

/// Loads both append scripts into Redis.
async fn load(scripts: &Scripts, connection: &mut RedisConnection) -> Result<(), StoreError> {
    scripts
        .many
        .load_async(connection)
        .await
        .map_err(store_error)?;
    scripts
        .batch
        .load_async(connection)
        .await
        .map_err(store_error)?;
    Ok(())
}

/// What a caller is answered with.
type Reply = oneshot::Sender<Result<Outcome, StoreError>>;

/// An append waiting for its call.
enum Request {
    /// One event, grouped with others that wait.
    One(AppendArgs, Reply),
    /// A batch: a call of its own.
    Batch(BatchArgs, Reply),
}

/// One script call: a group of single events, or a batch.
enum Call {
    Group(Vec<(AppendArgs, Reply)>),
    // Boxed: a call future is as large as its largest kind.
    Batch(Box<BatchArgs>, Reply),
}

impl Call {
    fn is_group(&self) -> bool {
        matches!(self, Self::Group(_))
    }

    /// Answers every append of the call with `error`.
    fn fail(self, error: &StoreError) {
        match self {
            Self::Group(group) => {
                for (_, reply) in group {
                    let _ = reply.send(Err(error.clone()));
                }
            }
            Self::Batch(_, reply) => {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}

/// What one call came to.
enum Called {
    /// Answered (its appends told): whether it went well, whether a group.
    Done { ok: bool, group: bool },
    /// Redis did not have the script, so nothing of it ran: the call (the
    /// `seq`-th sent, `retried` or not), to make again or to fail.
    LostScript { seq: u64, retried: bool, call: Call },
}

/// How an append script announces the event: `PUBLISH` on one Redis,
/// `SPUBLISH` on a cluster (the message then goes only to the shard that
/// owns the execution's slot). Passed to the scripts as an argument.
#[derive(Debug, Clone, Copy)]
pub enum Announce {
    /// Classic pub/sub.
    Publish,
    /// Sharded pub/sub (Redis ≥ 7).
    SPublish,
}

impl Announce {
    fn command(self) -> &'static str {
        match self {
            Self::Publish => "PUBLISH",
            Self::SPublish => "SPUBLISH",
        }
    }
}

/// The two append scripts, and how they announce.
#[derive(Clone)]
pub struct Scripts {
    /// Single events, grouped or alone (`lua/append.lua`).
    pub many: Script,
    /// A batch (`lua/append_batch.lua`).
    pub batch: Script,
    /// `PUBLISH` or `SPUBLISH`.
    pub announce: Announce,
}

/// The handle appends go through; the task ends when it is dropped.
pub struct Appender {
    queue: mpsc::Sender<Request>,
}

impl Appender {
    /// Starts the task, with the append scripts.
    pub fn spawn(connection: RedisConnection, scripts: Scripts, config: StoreConfig) -> Self {
        let (queue, requests) = mpsc::channel(QUEUE);
        tokio::spawn(run(requests, connection, scripts, config));
        Self { queue }
    }

    /// Appends one event, grouped with whatever else is waiting.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when Redis cannot be reached (or the task
    /// is gone), [`StoreError::Rejected`] when Redis refuses the event.
    pub async fn append(&self, args: AppendArgs) -> Result<Outcome, StoreError> {
        self.request(|reply| Request::One(args, reply)).await
    }

    /// Appends a batch, after every append handed over before it.
    ///
    /// # Errors
    /// As [`Appender::append`].
    pub async fn append_batch(&self, args: BatchArgs) -> Result<Outcome, StoreError> {
        self.request(|reply| Request::Batch(args, reply)).await
    }

    async fn request(&self, request: impl FnOnce(Reply) -> Request) -> Result<Outcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        let gone = || StoreError::Unavailable("the Redis appender has stopped".into());
        self.queue.send(request(reply)).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// Takes appends as they come. With [`IN_FLIGHT`] groups outstanding, the
/// next group is whatever single events queued meanwhile, up to the next
/// batch; a batch goes at once, in a call of its own (it is a group
/// already). Loads the scripts before the first call and before the next
/// call after one that failed.
///
/// A call that found its script gone is made again only if no call went
/// out after it (so it cannot land behind a later one), once; otherwise its
/// appends fail as unavailable, for their publishers to retry.
async fn run(
    mut requests: mpsc::Receiver<Request>,
    mut connection: RedisConnection,
    scripts: Scripts,
    config: StoreConfig,
) {
    let mut in_flight = FuturesUnordered::new();
    let mut groups = 0;
    // Calls sent so far: the last one's seq.
    let mut sent = 0_u64;
    // A batch taken from the queue while grouping: the next call.
    let mut next: Option<Request> = None;
    let mut loaded = false;
    loop {
        let request = match next.take() {
            Some(batch) => batch,
            None => tokio::select! {
                request = requests.recv(), if groups < IN_FLIGHT => match request {
                    Some(request) => request,
                    None => break,
                },
                Some(called) = in_flight.next(), if !in_flight.is_empty() => {
                    let came_back = CameBack { sent, groups: &mut groups, loaded: &mut loaded };
                    if let Some(work) = came_back.settle(called, &scripts, &mut connection).await {
                        sent += 1;
                        in_flight.push(call(sent, true, work, connection.clone(), &scripts, &config));
                    }
                    continue;
                }
            },
        };
        if !loaded {
            // A failure here is the next call's too; it reports it.
            loaded = load(&scripts, &mut connection).await.is_ok();
        }
        let work = match request {
            Request::Batch(args, reply) => Call::Batch(Box::new(args), reply),
            Request::One(args, reply) => {
                groups += 1;
                group((args, reply), &mut requests, &mut next)
            }
        };
        sent += 1;
        in_flight.push(call(
            sent,
            false,
            work,
            connection.clone(),
            &scripts,
            &config,
        ));
    }
    // (The queue closed: `next` was empty, or `recv` would not have run.)
    drain(in_flight).await;
}

/// Waits for the calls still in flight once the queue closed; one that
/// would need making again fails instead.
async fn drain(mut in_flight: FuturesUnordered<impl Future<Output = Called>>) {
    while let Some(called) = in_flight.next().await {
        if let Called::LostScript { call: work, .. } = called {
            work.fail(&StoreError::Unavailable(
                "the Redis appender has stopped".into(),
            ));
        }
    }
}

/// A group of single events: `first`, and whatever else queued, up to
/// [`MAX_GROUP`] or the next batch (left in `next`).
fn group(
    first: (AppendArgs, Reply),
    requests: &mut mpsc::Receiver<Request>,
    next: &mut Option<Request>,
) -> Call {
    let mut group = vec![first];
    while group.len() < MAX_GROUP {
        match requests.try_recv() {
            Ok(Request::One(args, reply)) => group.push((args, reply)),
            Ok(batch) => {
                *next = Some(batch);
                break;
            }
            Err(_) => break,
        }
    }
    Call::Group(group)
}

/// The appender's counters, as a call comes back.
struct CameBack<'a> {
    /// The seq of the last call sent.
    sent: u64,
    /// Groups in flight.
    groups: &'a mut usize,
    /// Whether Redis has the scripts, as far as the appender knows.
    loaded: &'a mut bool,
}

impl CameBack<'_> {
    /// Notes how `called` went. A call whose script Redis lost comes back
    /// to be made again when the scripts load and no call went out after it
    /// (and it was not made again already); otherwise its appends fail.
    async fn settle(
        self,
        called: Called,
        scripts: &Scripts,
        connection: &mut RedisConnection,
    ) -> Option<Call> {
        match called {
            Called::Done { ok, group } => {
                *self.loaded &= ok;
                *self.groups -= usize::from(group);
                None
            }
            Called::LostScript { seq, retried, call } => {
                *self.loaded = load(scripts, connection).await.is_ok();
                if seq == self.sent && !retried && *self.loaded {
                    return Some(call);
                }
                *self.groups -= usize::from(call.is_group());
                call.fail(&StoreError::Unavailable(
                    "Redis lost the append scripts (restarted or flushed); retry".into(),
                ));
                None
            }
        }
    }
}

/// Makes `work`, the `seq`-th call sent, and answers its appends — unless
/// Redis lost the script, which the caller decides about.
async fn call(
    seq: u64,
    retried: bool,
    work: Call,
    mut connection: RedisConnection,
    scripts: &Scripts,
    config: &StoreConfig,
) -> Called {
    let lost = |call| Called::LostScript { seq, retried, call };
    match work {
        Call::Batch(args, reply) => {
            let cmd = batch_cmd(scripts, config, &args);
            match cmd.query_async::<String>(&mut connection).await {
                Err(error) if lost_script(&error) => lost(Call::Batch(args, reply)),
                answer => {
                    let outcome = answer
                        .map_err(store_error)
                        .and_then(|answer| parse_outcome(&answer));
                    let ok = outcome.is_ok();
                    let _ = reply.send(outcome);
                    Called::Done { ok, group: false }
                }
            }
        }
        Call::Group(group) => {
            let cmd = group_cmd(scripts, config, group.iter().map(|(args, _)| args));
            let answers = match cmd.query_async::<Vec<String>>(&mut connection).await {
                Err(error) if lost_script(&error) => return lost(Call::Group(group)),
                answers => answers.map_err(store_error),
            };
            match answers.and_then(|answers| group_outcomes(&answers, group.len())) {
                Ok(outcomes) => {
                    for ((_, reply), outcome) in group.into_iter().zip(outcomes) {
                        let _ = reply.send(outcome);
                    }
                    Called::Done {
                        ok: true,
                        group: true,
                    }
                }
                Err(error) => {
                    // One error for all: the call as a whole failed (the
                    // connection broke and the outcome is unknown, or the
                    // answer made no sense).
                    Call::Group(group).fail(&error);
                    Called::Done {
                        ok: false,
                        group: true,
                    }
                }
            }
        }
    }
}

/// Appends `events` with one call of the append script: one outcome per
/// event, in order. A script Redis has lost is loaded and the
/// call made once more (the cluster's way; the appender's is [`call`]).
///
/// # Errors
/// The call's error when it failed as a whole; [`StoreError::Corrupt`] when
/// the answers do not match the events.
pub async fn append_group<'a>(
    scripts: &Scripts,
    connection: &mut RedisConnection,
    config: &StoreConfig,
    events: impl ExactSizeIterator<Item = &'a AppendArgs> + Clone,
) -> Result<Vec<Result<Outcome, StoreError>>, StoreError> {
    let count = events.len();
    let cmd = group_cmd(scripts, config, events);
    let answers: Vec<String> = run_script(&cmd, &scripts.many, connection).await?;
    group_outcomes(&answers, count)
}

/// The append script's call for `events`.
fn group_cmd<'a>(
    scripts: &Scripts,
    config: &StoreConfig,
    events: impl ExactSizeIterator<Item = &'a AppendArgs> + Clone,
) -> redis::Cmd {
    let padded = events.len() > 1;
    let keys = events.clone().map(|args| args.key_count(padded)).sum();
    let mut cmd = evalsha(&scripts.many, keys);
    for args in events.clone() {
        args.add_keys(&mut cmd, padded);
    }
    add_shared(&mut cmd, config, scripts.announce);
    for args in events {
        args.add_args(&mut cmd);
    }
    cmd
}

/// Each event's outcome from a group call's `answers`, one per event.
///
/// # Errors
/// [`StoreError::Corrupt`] when there are not `count` answers.
fn group_outcomes(
    answers: &[String],
    count: usize,
) -> Result<Vec<Result<Outcome, StoreError>>, StoreError> {
    if answers.len() != count {
        return Err(StoreError::Corrupt(format!(
            "{} answers to {count} appends",
            answers.len()
        )));
    }
    Ok(answers.iter().map(|answer| parse_outcome(answer)).collect())
}
