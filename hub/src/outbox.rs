//! A connection's outbound queue, bounded in frames and in bytes.
//!
//! Live offers push without waiting ([`Outbox::try_push`]): a subscription
//! whose connection has no room falls back to catching up from the store and
//! waits for room ([`Outbox::room`]), so a publisher never waits for a reader.
//! The connection's writer drains it ([`Outbox::poll_pop`]). Nothing is
//! allocated up front: the queue's storage grows with what is queued and is
//! released once a burst has drained, so an idle connection holds a few words.
//! Closing the outbox (slow consumer, end of stream) wakes the writer with the
//! reason.
//!
//! An outbox that owns its connection's socket ([`Outbox::on_socket`])
//! writes a frame straight to it when nothing is ahead of it, and queues
//! only what the socket cannot take at once.
//!
//! One job per file: this one is the bounded queue; [`direct`] the socket
//! writer (in place from the pusher, or draining from the connection's
//! task); `wire` a frame's bytes on the wire (WebSocket framing);
//! `shared_socket` the socket as the WebSocket layer reads and writes it;
//! `probe` the sampled publish-to-send latency.

pub mod direct;
mod probe;
mod shared_socket;
mod wire;

pub use shared_socket::SharedSocket;
pub use wire::Wire;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};

use tokio::net::TcpStream;
use tokio::sync::Notify;

use direct::Unsent;
use probe::{PROBE_EVERY, record_send};

/// Something that can be queued; its weight counts against the byte bound.
pub trait Frame: Send + 'static {
    /// Bytes this frame will take on the wire (about).
    fn weight(&self) -> usize;
    /// The frame's bytes on the wire, for an outbox that writes its socket.
    fn wire(&self) -> Wire<'_>;
}

/// Why the hub ends a connection from the outbound side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// The client did not drain its queue in time.
    SlowConsumer,
    /// The stream is complete (an SSE subscription ended); flush, then end.
    Done,
    /// Writing to the socket failed: the client is gone.
    Gone,
}

/// How much a connection may have queued.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Frames queued at most.
    pub frames: usize,
    /// Bytes queued at most (a single larger frame is still accepted into an empty queue).
    pub bytes: usize,
}

/// Refusals of [`Outbox::try_push`].
#[derive(Debug, PartialEq, Eq)]
pub enum PushError {
    /// The queue is at a bound: the pusher must wait for room (or give up).
    Full,
    /// The connection is closing; nothing more is sent.
    Closed,
}

/// The queue itself; shared by the connection and its subscriptions.
pub struct Outbox<F> {
    inner: Mutex<Inner<F>>,
    room: Notify,
    limits: Limits,
    /// The connection's socket, once the outbox writes to it itself.
    socket: OnceLock<Arc<TcpStream>>,
}

struct Inner<F> {
    frames: VecDeque<F>,
    bytes: usize,
    writer: Option<Waker>,
    closing: Option<Closing>,
    /// Someone waits in [`Outbox::room`]: only then does a pop notify, so
    /// the common pop (nobody waiting) takes no second lock.
    room_wanted: bool,
    /// Frames popped so far (wrapping): numbers the frames for the probe.
    popped: u32,
    /// The frame being timed leaves when `popped` reaches this.
    probe_at: u32,
    /// Its event's acceptance ([`crate::clock::monotonic`]); 0: none timed.
    probe_since: u64,
    /// Bytes given to the socket that it has not taken yet (direct mode).
    unsent: Unsent,
}

/// A drained queue keeps at most this many slots: a burst does not pin its
/// memory on an idle connection, and a connection that receives one event at
/// a time reuses its one slot instead of allocating per event.
const KEEP_SLOTS: usize = 1;

impl<F: Frame> Outbox<F> {
    /// An empty queue with `limits`, drained by its connection's task
    /// ([`Outbox::poll_pop`]).
    pub fn new(limits: Limits) -> Self {
        Self::with_socket(limits, OnceLock::new())
    }

    /// An empty queue with `limits` that writes frames to `socket` itself
    /// (see [`direct`]); its connection's task finishes what the socket
    /// could not take at once ([`Outbox::poll_send`]).
    pub fn on_socket(limits: Limits, socket: Arc<TcpStream>) -> Self {
        Self::with_socket(limits, OnceLock::from(socket))
    }

    fn with_socket(limits: Limits, socket: OnceLock<Arc<TcpStream>>) -> Self {
        Self {
            inner: Mutex::new(Inner {
                frames: VecDeque::new(),
                bytes: 0,
                writer: None,
                closing: None,
                room_wanted: false,
                popped: 0,
                probe_at: 0,
                probe_since: 0,
                unsent: Unsent::default(),
            }),
            room: Notify::new(),
            limits: Limits {
                frames: limits.frames.max(1),
                bytes: limits.bytes.max(1),
            },
            socket,
        }
    }

    /// Queues `frame` if the bounds allow it.
    ///
    /// # Errors
    /// [`PushError::Full`] at a bound, [`PushError::Closed`] once closing;
    /// the frame comes back with the refusal.
    pub fn try_push(&self, frame: F) -> Result<(), (PushError, F)> {
        self.try_push_live(frame, 0, true)
    }

    /// [`Outbox::try_push`] for a live event's frame, `accepted` at that
    /// [`crate::clock::monotonic`] time: now and then the frame is timed until
    /// it leaves for the socket. Unless `in_place`, the frame is queued for
    /// the connection's task even when it could be written at once.
    ///
    /// # Errors
    /// As [`Outbox::try_push`].
    pub fn try_push_live(
        &self,
        frame: F,
        accepted: u64,
        in_place: bool,
    ) -> Result<(), (PushError, F)> {
        let mut inner = self.lock();
        if inner.closing.is_some() {
            return Err((PushError::Closed, frame));
        }
        if !self.has_room(&inner, frame.weight()) {
            return Err((PushError::Full, frame));
        }
        if in_place && self.idle_socket(&inner).is_some() {
            inner.popped = inner.popped.wrapping_add(1);
            if accepted != 0 && inner.popped.is_multiple_of(PROBE_EVERY) {
                record_send(accepted);
            }
            return match self.write_now(&mut inner, &frame) {
                Ok(()) => Ok(()),
                Err(PushError::Closed) => Err((PushError::Closed, frame)),
                Err(PushError::Full) => Err((PushError::Full, frame)),
            };
        }
        Self::enqueue(&mut inner, frame);
        let number = inner.popped.wrapping_add(inner.frames.len() as u32);
        if accepted != 0 && inner.probe_since == 0 && number.is_multiple_of(PROBE_EVERY) {
            inner.probe_at = number;
            inner.probe_since = accepted;
        }
        Ok(())
    }

    /// Queues an answer to the client's own request (ack, error, pong…),
    /// which is never dropped; a client that fills twice the bounds with
    /// requests it does not read the answers of is closed as slow.
    ///
    /// # Errors
    /// [`PushError::Closed`] once closing (or just closed as slow).
    pub fn push_reply(&self, frame: F) -> Result<(), PushError> {
        let mut inner = self.lock();
        if inner.closing.is_some() {
            return Err(PushError::Closed);
        }
        if inner.frames.len() >= 2 * self.limits.frames || inner.bytes >= 2 * self.limits.bytes {
            Self::close_locked(&mut inner, Closing::SlowConsumer);
            return Err(PushError::Closed);
        }
        if self.idle_socket(&inner).is_some() {
            return self.write_now(&mut inner, &frame);
        }
        Self::enqueue(&mut inner, frame);
        Ok(())
    }

    /// Completes when a frame of `weight` bytes would fit (or the outbox is closing).
    pub async fn room(&self, weight: usize) {
        loop {
            let notified = self.room.notified();
            {
                let mut inner = self.lock();
                if inner.closing.is_some() || self.has_room(&inner, weight) {
                    return;
                }
                inner.room_wanted = true;
            }
            notified.await;
        }
    }

    /// Whether the connection is closing.
    pub fn is_closed(&self) -> bool {
        self.lock().closing.is_some()
    }

    /// Starts closing for `reason` (the first reason wins); the writer is woken.
    pub fn close(&self, reason: Closing) {
        Self::close_locked(&mut self.lock(), reason);
        self.room.notify_waiters();
    }

    /// The next frame to write, or `Ready(Err(reason))` once closing and,
    /// for [`Closing::Done`], drained. Registers the writer's waker when empty.
    pub fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<Result<F, Closing>> {
        let mut inner = self.lock();
        if let Some(reason @ (Closing::SlowConsumer | Closing::Gone)) = inner.closing {
            return Poll::Ready(Err(reason));
        }
        if let Some(frame) = self.take_front(&mut inner) {
            let wanted = std::mem::take(&mut inner.room_wanted);
            drop(inner);
            if wanted {
                self.room.notify_waiters();
            }
            return Poll::Ready(Ok(frame));
        }
        if let Some(reason) = inner.closing {
            return Poll::Ready(Err(reason));
        }
        Self::register_writer(&mut inner, cx);
        Poll::Pending
    }

    /// Takes the oldest queued frame, accounting for it (and timing it when
    /// it is the probe).
    fn take_front(&self, inner: &mut Inner<F>) -> Option<F> {
        let frame = inner.frames.pop_front()?;
        inner.bytes -= frame.weight();
        inner.popped = inner.popped.wrapping_add(1);
        if inner.probe_since != 0 && inner.popped == inner.probe_at {
            record_send(std::mem::take(&mut inner.probe_since));
        }
        if inner.frames.is_empty() && inner.frames.capacity() > KEEP_SLOTS {
            inner.frames = VecDeque::new();
        }
        Some(frame)
    }

    /// `Ready` once the connection was found too slow; otherwise registers
    /// the writer's waker (for a writer blocked on a full socket).
    pub fn poll_slow(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut inner = self.lock();
        if matches!(inner.closing, Some(Closing::SlowConsumer | Closing::Gone)) {
            return Poll::Ready(());
        }
        Self::register_writer(&mut inner, cx);
        Poll::Pending
    }

    /// Remembers the writer's waker (cloned only when it changed).
    fn register_writer(inner: &mut Inner<F>, cx: &Context<'_>) {
        if !inner
            .writer
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            inner.writer = Some(cx.waker().clone());
        }
    }

    /// Whether a frame is waiting.
    pub fn is_empty(&self) -> bool {
        self.lock().frames.is_empty()
    }

    fn has_room(&self, inner: &Inner<F>, weight: usize) -> bool {
        inner.frames.len() < self.limits.frames
            && (inner.frames.is_empty() || inner.bytes + weight <= self.limits.bytes)
    }

    fn enqueue(inner: &mut Inner<F>, frame: F) {
        if inner.frames.capacity() == 0 {
            // The first slot only (a plain push would reserve four).
            inner.frames.reserve_exact(KEEP_SLOTS);
        }
        inner.bytes += frame.weight();
        inner.frames.push_back(frame);
        if let Some(writer) = inner.writer.take() {
            writer.wake();
        }
    }

    fn close_locked(inner: &mut Inner<F>, reason: Closing) {
        if inner.closing.is_none() {
            inner.closing = Some(reason);
        }
        if reason != Closing::Done {
            // Nothing queued will be written; free it now. (A part-written
            // frame stays: the close frame, if any, goes after it.)
            inner.frames = VecDeque::new();
            inner.bytes = 0;
        }
        if let Some(writer) = inner.writer.take() {
            writer.wake();
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<F>> {
        // Every critical section is a few field updates that cannot panic midway.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::future::poll_fn;

    fn outbox(frames: usize, bytes: usize) -> Outbox<Bytes> {
        Outbox::new(Limits { frames, bytes })
    }

    #[tokio::test]
    async fn bounds_frames_and_bytes_and_drains_in_order() {
        let out = outbox(3, 10);
        assert_eq!(out.try_push(Bytes::from_static(b"123456")), Ok(()));
        let full = out.try_push(Bytes::from_static(b"12345"));
        assert_eq!(full, Err((PushError::Full, Bytes::from_static(b"12345"))));
        assert_eq!(out.try_push(Bytes::from_static(b"1234")), Ok(()));
        let first = poll_fn(|cx| out.poll_pop(cx)).await;
        assert_eq!(first, Ok(Bytes::from_static(b"123456")));
        assert_eq!(out.try_push(Bytes::from_static(b"12345")), Ok(()));
        // One frame larger than the byte bound still goes into an empty queue.
        let big = outbox(3, 4);
        assert_eq!(big.try_push(Bytes::from_static(b"123456")), Ok(()));
    }

    #[tokio::test]
    async fn slow_close_discards_and_done_drains_first() {
        let out = outbox(8, 100);
        out.try_push(Bytes::from_static(b"a")).expect("room");
        out.close(Closing::Done);
        let refused = out.try_push(Bytes::from_static(b"b"));
        assert_eq!(refused.map_err(|(e, _)| e), Err(PushError::Closed));
        assert_eq!(
            poll_fn(|cx| out.poll_pop(cx)).await,
            Ok(Bytes::from_static(b"a"))
        );
        assert_eq!(poll_fn(|cx| out.poll_pop(cx)).await, Err(Closing::Done));
        let slow = outbox(8, 100);
        slow.try_push(Bytes::from_static(b"a")).expect("room");
        slow.close(Closing::SlowConsumer);
        assert_eq!(
            poll_fn(|cx| slow.poll_pop(cx)).await,
            Err(Closing::SlowConsumer)
        );
    }

    #[tokio::test]
    async fn replies_past_twice_the_bound_close_the_connection() {
        let out = outbox(1, 100);
        out.push_reply(Bytes::from_static(b"a")).expect("within");
        out.push_reply(Bytes::from_static(b"b"))
            .expect("within twice");
        assert_eq!(
            out.push_reply(Bytes::from_static(b"c")),
            Err(PushError::Closed)
        );
        assert!(out.is_closed());
    }
}
