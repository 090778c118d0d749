//! Replay-then-live: one subscription's delivery loop, shared by WebSocket and SSE.
//!
//! The live feed is opened *before* history is read, so every event is in the
//! history, the feed, or both; delivery keeps the last seq it sent and drops
//! anything at or below it. A live event more than one past the last seq means
//! something was missed (a reordering, or a lost pub/sub message), so the gap
//! is filled from the store before that event goes out. Positions that no
//! longer exist are reported with [`Item::HistoryLost`] instead of skipped
//! silently.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use super::Live;
use crate::event::SharedEvent;
use crate::store::{EventStore, Page, StoreError};

/// History is read in pages of this many events.
const PAGE: usize = 512;
/// Backoff for history reads while the store is unavailable.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// How long a subscription waits for the store to come back before giving up.
const RETRY_FOR: Duration = Duration::from_secs(60);

/// What a subscription delivers, in order.
#[derive(Debug, Clone)]
pub enum Item {
    /// The live feed is in place: anything published from now on will be
    /// delivered, starting after seq `after`.
    Subscribed {
        /// Delivery continues with the seq after this one.
        after: u64,
    },
    /// The next event.
    Event(SharedEvent),
    /// Events `after + 1 ..= resume_after` no longer exist; delivery goes on after `resume_after`.
    HistoryLost {
        /// The last seq delivered (or asked to resume after).
        after: u64,
        /// Delivery continues with the seq after this one.
        resume_after: u64,
    },
}

/// Why a subscription stopped.
#[derive(Debug)]
pub enum FollowEnd {
    /// The receiving side went away.
    Closed,
    /// The subscriber fell too far behind and must reconnect and resume.
    SlowConsumer,
    /// The store failed.
    Store(StoreError),
}

/// How a subscription hands items to its connection.
pub struct Outbox<F> {
    /// The connection's bounded outbound queue.
    pub queue: mpsc::Sender<F>,
    /// Turns an item into the connection's frame type.
    pub encode: Box<dyn Fn(Item) -> F + Send + Sync>,
    /// How long a live event may wait for room in `queue` before the
    /// subscriber is considered too slow.
    pub slow_timeout: Duration,
}

/// Delivers `execution_id`'s events with `seq > after` (or only new ones when
/// `after` is `None`) to `outbox` until the receiver leaves or falls behind.
pub async fn follow<F>(
    store: Arc<dyn EventStore>,
    execution_id: String,
    after: Option<u64>,
    outbox: Outbox<F>,
) -> FollowEnd {
    let mut follower = Follower {
        store,
        execution_id,
        last: 0,
        outbox,
    };
    match follower.run(after).await {
        Ok(never) => match never {},
        Err(end) => end,
    }
}

struct Follower<F> {
    store: Arc<dyn EventStore>,
    execution_id: String,
    last: u64,
    outbox: Outbox<F>,
}

enum Never {}

impl<F> Follower<F> {
    async fn run(&mut self, after: Option<u64>) -> Result<Never, FollowEnd> {
        let mut feed = self
            .store
            .subscribe(&self.execution_id)
            .await
            .map_err(FollowEnd::Store)?;
        // `Subscribed` goes out once `last` is fixed: from then on, every
        // publish the client causes has a seq above it and will be delivered.
        match after {
            Some(after) => {
                self.last = after;
                self.deliver(Item::Subscribed { after: self.last }, false)
                    .await?;
                self.catch_up(u64::MAX, false).await?;
            }
            None => {
                self.last = self.page(0, 0).await?.last_seq;
                self.deliver(Item::Subscribed { after: self.last }, false)
                    .await?;
            }
        }
        loop {
            let live = tokio::select! {
                received = feed.recv() => match received {
                    Ok(live) => live,
                    Err(RecvError::Lagged(_)) => return Err(FollowEnd::SlowConsumer),
                    Err(RecvError::Closed) => return Err(FollowEnd::Closed),
                },
                () = self.outbox.queue.closed() => return Err(FollowEnd::Closed),
            };
            let event = match live {
                Live::Event(event) => event,
                Live::Head(head) => {
                    self.catch_up(head, true).await?;
                    continue;
                }
            };
            if event.seq() > self.last.saturating_add(1) {
                self.catch_up(event.seq() - 1, true).await?;
            }
            if event.seq() > self.last {
                self.deliver(Item::Event(event), true).await?;
            }
        }
    }

    /// Delivers stored events after `self.last` up to `until`.
    async fn catch_up(&mut self, until: u64, live: bool) -> Result<(), FollowEnd> {
        while self.last < until {
            let page = self.page(self.last, PAGE).await?;
            self.report_lost(&page, live).await?;
            let fetched = page.events.len();
            for event in page.events {
                if event.seq() > self.last && event.seq() <= until {
                    self.deliver(Item::Event(event), live).await?;
                }
            }
            if fetched < PAGE {
                break;
            }
        }
        Ok(())
    }

    /// Reports a position that the store no longer has, and moves past it.
    async fn report_lost(&mut self, page: &Page, live: bool) -> Result<(), FollowEnd> {
        let resume_after = match page.oldest_seq {
            // The history restarted (expired, then new events): start over.
            _ if self.last > page.last_seq => 0,
            Some(oldest) if oldest > self.last.saturating_add(1) => oldest - 1,
            None if page.last_seq > self.last => page.last_seq,
            _ => return Ok(()),
        };
        let item = Item::HistoryLost {
            after: self.last,
            resume_after,
        };
        self.deliver(item, live).await
    }

    /// Reads history, riding out a short store outage: a subscriber should not
    /// lose its subscription because Redis restarted.
    async fn page(&self, after: u64, limit: usize) -> Result<Page, FollowEnd> {
        let mut delay = RETRY_FIRST;
        let deadline = tokio::time::Instant::now() + RETRY_FOR;
        loop {
            match self.store.range(&self.execution_id, after, limit).await {
                Ok(page) => return Ok(page),
                Err(error)
                    if error.is_retryable() && tokio::time::Instant::now() + delay < deadline =>
                {
                    tracing::debug!(%error, execution_id = %self.execution_id, "history read failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.outbox.queue.closed() => return Err(FollowEnd::Closed),
                    }
                    delay = (delay * 2).min(RETRY_MAX);
                }
                Err(error) => return Err(FollowEnd::Store(error)),
            }
        }
    }

    async fn deliver(&mut self, item: Item, live: bool) -> Result<(), FollowEnd> {
        match &item {
            Item::Event(event) => self.last = event.seq(),
            Item::HistoryLost { resume_after, .. } => self.last = *resume_after,
            Item::Subscribed { .. } => {}
        }
        let frame = (self.outbox.encode)(item);
        if !live {
            // Replay is pulled at the receiver's pace: waiting is backpressure.
            return self
                .outbox
                .queue
                .send(frame)
                .await
                .map_err(|_| FollowEnd::Closed);
        }
        match self
            .outbox
            .queue
            .send_timeout(frame, self.outbox.slow_timeout)
            .await
        {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => Err(FollowEnd::SlowConsumer),
            Err(mpsc::error::SendTimeoutError::Closed(_)) => Err(FollowEnd::Closed),
        }
    }
}
