//! One subscription: replay, then live, merged by position — shared by
//! WebSocket and SSE.
//!
//! A subscription joins its execution's live feed *before* it reads history,
//! so every event is in the history, the feed, or both. It is usually `Live`:
//! an offered event that continues its position (`same epoch, seq = last + 1`)
//! is queued on the connection at once, from the publisher's context, with no
//! task of its own. Anything else — a gap, a new epoch, a head announcement,
//! a full connection queue — switches it to `CatchingUp`, and a short-lived
//! task reads the store from its position, at the connection's pace, until it
//! is level again. Offers that arrive meanwhile only mark that another read is
//! due. So an idle subscription is a small struct in a feed, and catching up
//! costs a task only while it lasts.
//!
//! A position is `(epoch, seq)`. When the history a position belongs to is
//! gone, or events after it were trimmed, the subscriber is told with
//! `history_lost` (typed [`LostReason`]) and delivery continues with what
//! exists; nothing is ever skipped silently ([`reconcile`] decides). Ending a
//! subscription is final: nothing of it is queued after [`Subscription`] is
//! dropped.

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use exechub_protocol::LostReason;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::event::{Epoch, SharedEvent};
use crate::feeds::{Feeds, Live, Membership, Subscriber, SubscriptionLimit};
use crate::lifecycle::Lifecycle;
use crate::outbox::{Closing, Frame, Outbox, PushError};
use crate::retry::Backoff;
use crate::store::{EventStore, Page, StoreError, Watch};

/// History is read in pages of this many events.
const PAGE: usize = 512;
/// How long a subscription waits for an unavailable store before giving up.
const STORE_PATIENCE: Duration = Duration::from_secs(60);

/// What a subscription tells its client, in order.
#[derive(Debug, Clone, Copy)]
pub enum Item<'a> {
    /// The live feed is in place: delivery continues after `(epoch, after)`.
    Subscribed {
        /// The position delivery continues after.
        after: u64,
        /// The history `after` belongs to.
        epoch: Option<&'a Epoch>,
    },
    /// The next event.
    Event(&'a SharedEvent),
    /// The position `after` cannot be continued; delivery goes on after
    /// `(epoch, resume_after)`.
    Lost {
        /// The last position delivered (or asked to resume after).
        after: u64,
        /// Delivery continues with the seq after this one.
        resume_after: u64,
        /// Why.
        reason: LostReason,
        /// The history delivery continues in.
        epoch: Option<&'a Epoch>,
    },
    /// The execution has ended: its terminal event (`seq`) was delivered,
    /// or is gone with its history while its summary is kept.
    Ended {
        /// How it ended.
        status: &'a str,
        /// The seq of the terminal event.
        seq: u64,
    },
    /// The store failed for good; the subscription has ended.
    Failed(&'a StoreError),
}

/// Turns items into one transport's frames.
pub trait Encoder: Send + Sync + 'static {
    /// The transport's frame.
    type Frame: Frame;
    /// Whether a failed subscription ends its connection (SSE: the stream is
    /// the subscription) rather than only itself (WebSocket).
    const FAILURE_ENDS_CONNECTION: bool;
    /// Whether the end of the execution ends the connection (SSE) rather
    /// than only the subscription (WebSocket).
    const END_ENDS_CONNECTION: bool;
    /// The frame for `item`.
    fn encode(&self, item: Item<'_>) -> Self::Frame;
    /// Counts `item`, now queued for the client (metrics); nothing by default.
    fn queued(&self, item: Item<'_>) {
        let _ = item;
    }
}

/// Where a subscription starts and how patient it is.
pub struct Start {
    /// Replay after this seq; `None`: only events from now on.
    pub after: Option<u64>,
    /// The epoch `after` belongs to, when the client knows it.
    pub epoch: Option<Epoch>,
    /// How long a delivery may wait for room in the connection's queue
    /// before the client counts as too slow.
    pub slow_timeout: Duration,
    /// Subscriptions this node may hold in total.
    pub node_limit: usize,
    /// Which events end an execution.
    pub lifecycle: Arc<Lifecycle>,
}

/// A running subscription; dropping it ends it.
pub struct Subscription<E: Encoder> {
    inner: Arc<Inner<E>>,
    _membership: Membership,
    _watch: Watch,
}

struct Inner<E: Encoder> {
    execution_id: Arc<str>,
    store: Arc<dyn EventStore>,
    outbox: Arc<Outbox<E::Frame>>,
    encoder: E,
    slow_timeout: Duration,
    lifecycle: Arc<Lifecycle>,
    state: Mutex<State>,
    me: Weak<Self>,
}

#[derive(Debug)]
struct State {
    epoch: Option<Epoch>,
    /// The last position queued for the client.
    last: u64,
    mode: Mode,
    ended: bool,
    /// `ended` was queued (sent once, also when the subscription goes on
    /// after the end because ended executions still take events).
    told_end: bool,
    task: Option<AbortHandle>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Live,
    /// A task is reading the store; `again`: something new was offered meanwhile.
    CatchingUp {
        again: bool,
    },
}

/// Why a delivery loop stopped.
enum Stop {
    /// The subscription or its connection ended.
    Ended,
    /// The store failed for good.
    Store(StoreError),
}

impl<E: Encoder> Subscription<E> {
    /// Subscribes to `execution_id` on behalf of a connection whose queue is `outbox`.
    ///
    /// # Errors
    /// [`SubscriptionLimit`] when the node holds its maximum of subscriptions.
    pub fn start(
        store: &Arc<dyn EventStore>,
        feeds: &Arc<Feeds>,
        execution_id: &Arc<str>,
        outbox: Arc<Outbox<E::Frame>>,
        encoder: E,
        start: Start,
    ) -> Result<Self, SubscriptionLimit> {
        let execution_id = Arc::clone(execution_id);
        let inner = Arc::new_cyclic(|me| Inner {
            execution_id: Arc::clone(&execution_id),
            store: Arc::clone(store),
            outbox,
            encoder,
            slow_timeout: start.slow_timeout,
            lifecycle: start.lifecycle,
            state: Mutex::new(State {
                epoch: None,
                last: 0,
                mode: Mode::CatchingUp { again: false },
                ended: false,
                told_end: false,
                task: None,
            }),
            me: Weak::clone(me),
        });
        let membership = feeds.join(&execution_id, inner.clone(), start.node_limit)?;
        let mut watch = store.watch(&execution_id);
        let confirmed = watch.confirmed();
        let opener = Arc::clone(&inner);
        let task = tokio::spawn(async move {
            confirmed.await;
            let outcome = match opener.open(start.after, start.epoch).await {
                Ok(()) => opener.catch_up().await,
                Err(stop) => Err(stop),
            };
            opener.finish(outcome);
        });
        inner.lock().task = Some(task.abort_handle());
        Ok(Self {
            inner,
            _membership: membership,
            _watch: watch,
        })
    }

    /// Whether the subscription has ended by itself (its store failed).
    pub fn is_ended(&self) -> bool {
        self.inner.lock().ended
    }
}

impl<E: Encoder> Drop for Subscription<E> {
    fn drop(&mut self) {
        let mut state = self.inner.lock();
        state.ended = true;
        if let Some(task) = state.task.take() {
            task.abort();
        }
    }
}

impl<E: Encoder> Subscriber for Inner<E> {
    fn offer(&self, live: Live<'_>, in_place: bool) {
        let mut state = self.lock();
        if state.ended {
            return;
        }
        if let Mode::CatchingUp { again } = state.mode {
            let news = !is_behind(&state_position(&state), live);
            state.mode = Mode::CatchingUp {
                again: again || news,
            };
            return;
        }
        match live {
            Live::Event(event) if continues(&state, event) => {
                let frame = self.encoder.encode(Item::Event(event));
                match self.outbox.try_push_live(frame, event.accepted(), in_place) {
                    Ok(()) => {
                        self.encoder.queued(Item::Event(event));
                        state.epoch = Some(event.epoch().clone());
                        state.last = event.seq();
                        if let Some(status) = event.ending(&self.lifecycle) {
                            self.end_now(&mut state, status, event.seq());
                        }
                    }
                    // No room: fetch it from the store once the client drains.
                    Err((PushError::Full, _)) => self.catch_up_later(&mut state),
                    Err((PushError::Closed, _)) => state.ended = true,
                }
            }
            live if is_behind(&state_position(&state), live) => {}
            _ => self.catch_up_later(&mut state),
        }
    }
}

/// `(epoch, last)` of a state.
fn state_position(state: &State) -> (Option<&Epoch>, u64) {
    (state.epoch.as_ref(), state.last)
}

/// Whether `event` is the very next one for `state` (a first event of a new
/// history counts when nothing was delivered yet).
fn continues(state: &State, event: &SharedEvent) -> bool {
    match &state.epoch {
        Some(epoch) => epoch == event.epoch() && event.seq() == state.last + 1,
        None => state.last == 0 && event.seq() == 1,
    }
}

/// Whether `live` is already covered by position `(epoch, last)`: nothing to do.
fn is_behind(position: &(Option<&Epoch>, u64), live: Live<'_>) -> bool {
    let (epoch, last) = *position;
    match live {
        Live::Event(event) => epoch == Some(event.epoch()) && event.seq() <= last,
        Live::Head { epoch: head, seq } => epoch == head && seq <= last,
    }
}

impl<E: Encoder> Inner<E> {
    /// Queues `ended` right after the terminal event (from the publisher's
    /// context); with no room, the catch-up task says it instead.
    fn end_now(&self, state: &mut State, status: &str, seq: u64) {
        if state.told_end {
            return;
        }
        let frame = self.encoder.encode(Item::Ended { status, seq });
        match self.outbox.try_push(frame) {
            Ok(()) => self.ended(state),
            Err((PushError::Full, _)) => self.catch_up_later(state),
            Err((PushError::Closed, _)) => state.ended = true,
        }
    }

    /// After `ended` was queued: the subscription is over (unless ended
    /// executions still take events), and for SSE the stream too.
    fn ended(&self, state: &mut State) {
        state.told_end = true;
        if self.lifecycle.after_end().is_final() {
            state.ended = true;
            if E::END_ENDS_CONNECTION {
                self.outbox.close(Closing::Done);
            }
        }
    }

    /// Switches to catching up and starts the task that does it.
    fn catch_up_later(&self, state: &mut State) {
        let Some(me) = self.me.upgrade() else { return };
        state.mode = Mode::CatchingUp { again: false };
        let task = tokio::spawn(async move {
            let outcome = me.catch_up().await;
            me.finish(outcome);
        });
        state.task = Some(task.abort_handle());
    }

    /// Fixes the starting position and queues `subscribed`.
    async fn open(&self, after: Option<u64>, epoch: Option<Epoch>) -> Result<(), Stop> {
        let (after, epoch) = match after {
            Some(after) => (after, epoch),
            None => {
                let head = self.page(0, 0).await?;
                (head.last_seq, head.epoch)
            }
        };
        let item = Item::Subscribed {
            after,
            epoch: epoch.as_ref(),
        };
        self.deliver(item, |state| {
            state.last = after;
            state.epoch = epoch.clone();
        })
        .await
    }

    /// Reads the store from the position until level with it, then goes live.
    async fn catch_up(&self) -> Result<(), Stop> {
        loop {
            let (epoch, last) = {
                let state = self.lock();
                if state.ended {
                    return Err(Stop::Ended);
                }
                (state.epoch.clone(), state.last)
            };
            let page = self.page(last, PAGE).await?;
            let step = reconcile(epoch.as_ref(), last, &page, &*self.store);
            if let Some((reason, resume_after)) = step.lost {
                let item = Item::Lost {
                    after: last,
                    resume_after,
                    reason,
                    epoch: page.epoch.as_ref(),
                };
                self.deliver(item, |state| {
                    state.epoch = page.epoch.clone();
                    state.last = resume_after;
                })
                .await?;
            } else if epoch != page.epoch {
                self.lock().epoch = page.epoch.clone();
            }
            if step.reread {
                continue;
            }
            let mut position = if step.lost.is_some() {
                step.resume_after()
            } else {
                last
            };
            for event in &page.events {
                if event.seq() > position {
                    self.deliver(Item::Event(event), |state| state.last = event.seq())
                        .await?;
                    position = event.seq();
                }
            }
            self.tell_end(&page, position).await?;
            // Level with the store once the head is reached (a short page is
            // not enough: items that are not the hub's can shorten one).
            let done = position >= page.last_seq || page.events.is_empty();
            if done && self.level() {
                return Ok(());
            }
        }
    }

    /// Tells the end, once: after its terminal event, or when only the
    /// summary is left of the execution. `Stop::Ended` when the
    /// subscription is over with it.
    async fn tell_end(&self, page: &Page, position: u64) -> Result<(), Stop> {
        let Some(end) = &page.ended else {
            return Ok(());
        };
        let reached = position >= end.seq || page.epoch.is_none();
        if !reached || self.lock().told_end {
            return Ok(());
        }
        let item = Item::Ended {
            status: &end.status,
            seq: end.seq,
        };
        self.deliver(item, |state| self.ended(state)).await?;
        if self.lock().ended {
            return Err(Stop::Ended);
        }
        Ok(())
    }

    /// After a read that came back short: goes live unless something new
    /// was offered meanwhile (then another read is due).
    fn level(&self) -> bool {
        let mut state = self.lock();
        match state.mode {
            Mode::CatchingUp { again: true } => {
                state.mode = Mode::CatchingUp { again: false };
                false
            }
            _ => {
                state.mode = Mode::Live;
                state.task = None;
                true
            }
        }
    }

    /// The end of a catch-up task: a store failure ends the subscription.
    fn finish(&self, outcome: Result<(), Stop>) {
        let Err(Stop::Store(error)) = outcome else {
            return;
        };
        let mut state = self.lock();
        if state.ended {
            return;
        }
        state.ended = true;
        state.task = None;
        tracing::warn!(execution_id = %self.execution_id, %error, "subscription ended by a store failure");
        let _ = self
            .outbox
            .push_reply(self.encoder.encode(Item::Failed(&error)));
        if E::FAILURE_ENDS_CONNECTION {
            self.outbox.close(Closing::Done);
        }
    }

    /// Queues `item` once the connection has room, applying `update` to the
    /// state in the same step (so position and queue never disagree).
    async fn deliver(&self, item: Item<'_>, update: impl FnOnce(&mut State)) -> Result<(), Stop> {
        let mut frame = self.encoder.encode(item);
        let deadline = Instant::now() + self.slow_timeout;
        loop {
            let weight = frame.weight();
            if tokio::time::timeout_at(deadline, self.outbox.room(weight))
                .await
                .is_err()
            {
                self.outbox.close(Closing::SlowConsumer);
                return Err(Stop::Ended);
            }
            let mut state = self.lock();
            if state.ended {
                return Err(Stop::Ended);
            }
            match self.outbox.try_push(frame) {
                Ok(()) => {
                    update(&mut state);
                    self.encoder.queued(item);
                    return Ok(());
                }
                // Another subscription took the room first; wait again.
                Err((PushError::Full, back)) => frame = back,
                Err((PushError::Closed, _)) => {
                    state.ended = true;
                    return Err(Stop::Ended);
                }
            }
        }
    }

    /// Reads history, riding out a short store outage: a subscriber should
    /// not lose its subscription because Redis restarted.
    async fn page(&self, after: u64, limit: usize) -> Result<Page, Stop> {
        let mut backoff = Backoff::STORE.attempts();
        let give_up = Instant::now() + STORE_PATIENCE;
        loop {
            match self.store.range(&self.execution_id, after, limit).await {
                Ok(page) => return Ok(page),
                Err(error) if error.is_retryable() && Instant::now() < give_up => {
                    tracing::debug!(%error, execution_id = %self.execution_id, "history read failed; retrying");
                    if self.outbox.is_closed() {
                        return Err(Stop::Ended);
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(error) => return Err(Stop::Store(error)),
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Critical sections are field updates and non-blocking pushes.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What a page read from position `(epoch, last)` means for the subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconciled {
    /// The position cannot be continued: why, and where delivery resumes.
    pub lost: Option<(LostReason, u64)>,
    /// The page was read from a position of another history: read again
    /// from the new position before delivering.
    pub reread: bool,
}

impl Reconciled {
    const LEVEL: Self = Self {
        lost: None,
        reread: false,
    };

    fn lost(reason: LostReason, resume_after: u64, reread: bool) -> Self {
        Self {
            lost: Some((reason, resume_after)),
            reread,
        }
    }

    fn resume_after(&self) -> u64 {
        self.lost.map_or(0, |(_, resume_after)| resume_after)
    }
}

/// Decides, from a page read after `last`, whether the position
/// `(epoch, last)` still holds, and if not, why and where delivery resumes.
pub fn reconcile(
    epoch: Option<&Epoch>,
    last: u64,
    page: &Page,
    store: &dyn EventStore,
) -> Reconciled {
    // Where a new history's delivery starts: before its oldest retained event.
    let from_start = page.oldest_seq.map_or(0, |oldest| oldest - 1);
    match (epoch, page.epoch.as_ref()) {
        // Nothing delivered yet: any history is simply adopted.
        _ if last == 0 => within(last, page),
        (Some(known), Some(current)) if known == current => within(last, page),
        (Some(known), current) => {
            let reread = current.is_some();
            Reconciled::lost(store.lost_reason(known), from_start, reread)
        }
        // A bare seq (no epoch known) is taken to be in the current history,
        // unless it lies beyond it.
        (None, Some(_)) if last <= page.last_seq => within(last, page),
        (None, _) => Reconciled::lost(LostReason::Reset, from_start, page.epoch.is_some()),
    }
}

/// Same history: only trimming (or a position past the head) loses anything.
fn within(last: u64, page: &Page) -> Reconciled {
    if last > page.last_seq {
        let from_start = page.oldest_seq.map_or(0, |oldest| oldest - 1);
        return Reconciled::lost(LostReason::Reset, from_start, page.epoch.is_some());
    }
    match page.oldest_seq {
        Some(oldest) if oldest > last + 1 => {
            Reconciled::lost(LostReason::Trimmed, oldest - 1, false)
        }
        None if page.last_seq > last => Reconciled::lost(LostReason::Trimmed, page.last_seq, false),
        _ => Reconciled::LEVEL,
    }
}

#[cfg(test)]
mod tests;
