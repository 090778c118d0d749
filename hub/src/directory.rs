//! The live list of executions: WebSocket clients that sent
//! `subscribe_executions` get a snapshot, then a frame per change.
//!
//! One task per hub node does all of it, so a follower's snapshot is always
//! queued before the changes that follow it. Changes made on this node come
//! from the publisher ([`Directory::changed`]: the start, the end, other
//! activity at most once a second); changes made by other nodes sharing the
//! store are found by reading the head of the list once a second, only while
//! someone follows it. Nothing here runs while nobody follows: the publisher
//! checks [`Directory::is_followed`] (one atomic load) first.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use exechub_protocol::{ExecutionSummary, RequestId, ServerMsg, StatusFilter};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::auth::{Action, Grant};
use crate::outbox::{Closing, Outbox, PushError};
use crate::store::{Change, EventStore, StoreError};

/// Executions in a follower's snapshot, and read from the head of the list
/// when looking for other nodes' changes.
pub const SNAPSHOT: usize = 50;
/// Queued changes waiting for the task; beyond it they are dropped (the
/// once-a-second read of the list recovers them on a shared store).
const QUEUE: usize = 4096;
/// Summaries remembered as sent, to tell changes from repeats.
const SEEN: usize = 10_000;

/// Who follows the list of executions on this node.
pub struct Directory {
    store: Arc<dyn EventStore>,
    followers: Mutex<Vec<Follower>>,
    /// Followers plus result waiters: whether changes are worth reporting.
    interested: AtomicUsize,
    next_key: AtomicU64,
    commands: mpsc::Sender<Command>,
    /// Woken when an execution ends on this node (result long-polls).
    ended: Notify,
}

struct Follower {
    key: u64,
    outbox: Weak<Outbox<Message>>,
    status: StatusFilter,
    grant: Grant,
    /// Set once the snapshot is queued; changes go only to ready followers.
    ready: bool,
}

enum Command {
    Snapshot { key: u64, id: Option<RequestId> },
    Changed(String),
}

/// Following the list; dropping it stops.
#[must_use = "following stops when dropped"]
pub struct Following {
    directory: Weak<Directory>,
    key: u64,
}

impl Drop for Following {
    fn drop(&mut self) {
        if let Some(directory) = self.directory.upgrade() {
            let mut followers = directory.lock();
            let before = followers.len();
            followers.retain(|f| f.key != self.key);
            if followers.len() < before {
                directory.interested.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

impl Directory {
    /// A directory over `store`; its task runs until `shutdown`.
    pub fn spawn(store: Arc<dyn EventStore>, shutdown: CancellationToken) -> Arc<Self> {
        let (commands, receiver) = mpsc::channel(QUEUE);
        let directory = Arc::new(Self {
            store,
            followers: Mutex::default(),
            interested: AtomicUsize::new(0),
            next_key: AtomicU64::new(1),
            commands,
            ended: Notify::new(),
        });
        let task = Task {
            directory: Arc::downgrade(&directory),
            seen: HashMap::new(),
        };
        tokio::spawn(task.run(receiver, shutdown));
        directory
    }

    /// Whether anyone on this node follows the list or waits for a result.
    pub fn is_followed(&self) -> bool {
        self.interested.load(Ordering::Relaxed) > 0
    }

    /// Connections following the list on this node, for `/health`.
    pub fn followers(&self) -> usize {
        self.lock().len()
    }

    /// Reports a change of `execution_id` made on this node.
    pub fn changed(&self, execution_id: &str, change: Change) {
        if change == Change::Ended {
            self.ended.notify_waiters();
        }
        if change != Change::None && !self.lock().is_empty() {
            // Full: dropped; see QUEUE.
            let _ = self
                .commands
                .try_send(Command::Changed(execution_id.to_owned()));
        }
    }

    /// Starts following for a connection: `executions` (answering request
    /// `id`) is queued on `outbox`, then an `execution` frame per change of
    /// an execution matching `status` that `grant` may subscribe to.
    pub fn follow(
        self: &Arc<Self>,
        outbox: &Arc<Outbox<Message>>,
        id: Option<RequestId>,
        status: StatusFilter,
        grant: Grant,
    ) -> Following {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        self.lock().push(Follower {
            key,
            outbox: Arc::downgrade(outbox),
            status,
            grant,
            ready: false,
        });
        self.interested.fetch_add(1, Ordering::Relaxed);
        if self
            .commands
            .try_send(Command::Snapshot { key, id })
            .is_err()
        {
            // The task is gone (shutdown) or swamped: the client resubscribes.
            outbox.close(Closing::SlowConsumer);
        }
        Following {
            directory: Arc::downgrade(self),
            key,
        }
    }

    /// The summary of `execution_id` once it has ended, waiting up to `wait`
    /// for the end; the summary as it stands when the wait runs out first
    /// (`None`: the execution is unknown).
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn result(
        &self,
        execution_id: &str,
        wait: Duration,
    ) -> Result<Option<ExecutionSummary>, StoreError> {
        let deadline = Instant::now() + wait;
        self.interested.fetch_add(1, Ordering::Relaxed);
        let _interest = Interest(&self.interested);
        loop {
            // Registered before the read, so an end in between is not missed.
            let ended = self.ended.notified();
            let summary = self.store.summary(execution_id).await?;
            let done = summary.as_ref().is_some_and(|s| s.ended);
            if done || Instant::now() >= deadline {
                return Ok(summary);
            }
            // Ends on other nodes are not signalled here: read again each second.
            let next = (Instant::now() + Duration::from_secs(1)).min(deadline);
            tokio::select! {
                () = ended => {}
                () = tokio::time::sleep_until(next) => {}
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Follower>> {
        // Critical sections are pushes, removals and flag updates.
        self.followers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Counts a waiter while it waits.
struct Interest<'a>(&'a AtomicUsize);

impl Drop for Interest<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Task {
    directory: Weak<Directory>,
    /// `updated_at` and status last sent per execution.
    seen: HashMap<String, (String, String)>,
}

impl Task {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>, shutdown: CancellationToken) {
        let mut poll = tokio::time::interval(Duration::from_secs(1));
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let command = tokio::select! {
                () = shutdown.cancelled() => return,
                command = commands.recv() => match command {
                    Some(command) => Some(command),
                    None => return,
                },
                _ = poll.tick() => None,
            };
            let Some(directory) = self.directory.upgrade() else {
                return;
            };
            let outcome = match command {
                Some(Command::Snapshot { key, id }) => self.snapshot(&directory, key, id).await,
                Some(Command::Changed(execution_id)) => {
                    self.report(&directory, &execution_id).await
                }
                None if directory.store.is_shared() && !directory.lock().is_empty() => {
                    self.look_for_changes(&directory).await
                }
                None => Ok(()),
            };
            if let Err(error) = outcome {
                tracing::debug!(%error, "list of executions not updated; retrying on the next change");
            }
        }
    }

    async fn snapshot(
        &mut self,
        directory: &Directory,
        key: u64,
        id: Option<RequestId>,
    ) -> Result<(), StoreError> {
        let Some((status, grant)) = directory
            .lock()
            .iter()
            .find(|f| f.key == key)
            .map(|f| (f.status, f.grant.clone()))
        else {
            return Ok(());
        };
        let mut executions = Vec::with_capacity(SNAPSHOT);
        let mut cursor = None;
        // Read on past executions the follower may not see, within reason.
        for _ in 0..20 {
            let page = directory.store.recent(cursor.as_ref(), SNAPSHOT).await?;
            let last = page.len() < SNAPSHOT;
            cursor = page.last().map(|l| l.cursor.clone());
            executions.extend(
                page.into_iter()
                    .map(|l| l.summary)
                    .filter(|s| visible(s, status, &grant)),
            );
            if last || executions.len() >= SNAPSHOT {
                break;
            }
        }
        executions.truncate(SNAPSHOT);
        let frame = text(&ServerMsg::Executions { id, executions });
        let mut followers = directory.lock();
        if let Some(follower) = followers.iter_mut().find(|f| f.key == key) {
            follower.ready = true;
            push(&follower.outbox, frame);
        }
        Ok(())
    }

    async fn report(
        &mut self,
        directory: &Directory,
        execution_id: &str,
    ) -> Result<(), StoreError> {
        if let Some(summary) = directory.store.summary(execution_id).await? {
            self.send(directory, summary);
        }
        Ok(())
    }

    async fn look_for_changes(&mut self, directory: &Directory) -> Result<(), StoreError> {
        for listed in directory.store.recent(None, SNAPSHOT).await? {
            let summary = listed.summary;
            let seen = self.seen.get(&summary.execution_id);
            if seen.is_none_or(|(updated, status)| {
                *updated != summary.updated_at || *status != summary.status
            }) {
                self.send(directory, summary);
            }
        }
        Ok(())
    }

    /// Sends `summary` to every ready follower that may see it; encoded once.
    fn send(&mut self, directory: &Directory, summary: ExecutionSummary) {
        if self.seen.len() >= SEEN {
            self.seen.clear();
        }
        self.seen.insert(
            summary.execution_id.clone(),
            (summary.updated_at.clone(), summary.status.clone()),
        );
        let followers = directory.lock();
        let mut frame = None;
        for follower in followers.iter().filter(|f| f.ready) {
            if visible(&summary, follower.status, &follower.grant) {
                let frame = frame
                    .get_or_insert_with(|| {
                        text(&ServerMsg::Execution {
                            execution: Box::new(summary.clone()),
                        })
                    })
                    .clone();
                push(&follower.outbox, frame);
            }
        }
    }
}

/// Whether a follower asking for `status` with `grant` sees `summary`.
fn visible(summary: &ExecutionSummary, status: StatusFilter, grant: &Grant) -> bool {
    status.matches(summary)
        && grant
            .check(Action::Subscribe, &summary.execution_id)
            .is_ok()
}

/// Queues `frame`; a follower with no room is too slow and is closed (it
/// resubscribes and gets a fresh snapshot).
fn push(outbox: &Weak<Outbox<Message>>, frame: Message) {
    let Some(outbox) = outbox.upgrade() else {
        return;
    };
    if let Err((PushError::Full, _)) = outbox.try_push(frame) {
        outbox.close(Closing::SlowConsumer);
    }
}

fn text(msg: &ServerMsg) -> Message {
    // Server messages are plain data; encoding cannot fail.
    Message::Text(serde_json::to_string(msg).unwrap_or_default().into())
}
