//! Writing frames straight to a connection's socket, from whichever task
//! has one to send.
//!
//! A live event reaches hundreds of connections at once. Queueing it for
//! each connection's task means, per connection, a wake-up, a trip through
//! the scheduler, a poll of the task and a copy into the WebSocket layer's
//! buffer — more CPU than the `write` itself. So an outbox that owns its
//! socket ([`Outbox::on_socket`](super::Outbox::on_socket)) writes a frame
//! at once, in the pusher's context, whenever nothing is ahead of it: the
//! queue is empty and no earlier frame is part-written. Only what the socket
//! does not take right away is kept (`Unsent`) for the connection's task,
//! which finishes it when the socket has room again.
//!
//! Everything written to the socket goes through the outbox's lock, in
//! order: the outbox's own frames and the WebSocket layer's (pongs, the
//! close handshake) through [`SharedSocket`](super::SharedSocket), its `AsyncWrite` half. So a
//! frame is never interleaved with another one's bytes.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::net::TcpStream;

use super::wire::Wire;
use super::{Closing, Frame, Inner, Outbox, PushError};

/// Bytes handed to the socket that it has not taken yet, oldest first.
#[derive(Default)]
pub(super) struct Unsent {
    chunks: VecDeque<Bytes>,
    bytes: usize,
}

impl Unsent {
    pub(super) fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Writes `wire` now if nothing is waiting ahead of it, keeping what the
    /// socket does not take; queues all of it otherwise.
    ///
    /// # Errors
    /// The socket's error: the connection is gone.
    pub(super) fn write(&mut self, socket: &TcpStream, wire: &Wire<'_>) -> io::Result<()> {
        let written = match self.is_empty() {
            true => try_write(socket, &[wire.header(), &wire.payload])?,
            false => 0,
        };
        if written == wire.len() {
            return Ok(());
        }
        let header = wire.header();
        if written < header.len() {
            self.keep(Bytes::copy_from_slice(&header[written..]));
        }
        let from = written.saturating_sub(header.len());
        self.keep(Bytes::copy_from_slice(&wire.payload[from..]));
        Ok(())
    }

    /// Writes what is waiting until it is all out (`Ready(Ok)`) or the
    /// socket is full (`Pending`, woken when it has room).
    ///
    /// # Errors
    /// The socket's error: the connection is gone.
    pub(super) fn poll_flush(
        &mut self,
        socket: &TcpStream,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while let Some(front) = self.chunks.front_mut() {
            match socket.try_write(front) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    self.bytes -= n;
                    front.advance(n);
                    if front.is_empty() {
                        self.chunks.pop_front();
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    // Registers for the socket's next room; retry if it came meanwhile.
                    match socket.poll_write_ready(cx) {
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                        Poll::Pending => return Poll::Pending,
                    }
                }
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
        // A drained burst does not keep its storage.
        self.chunks = VecDeque::new();
        Poll::Ready(Ok(()))
    }

    fn keep(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.bytes += chunk.len();
            self.chunks.push_back(chunk);
        }
    }
}

impl<F: Frame> Outbox<F> {
    /// From now on, writes frames to `socket` itself (as [`Outbox::on_socket`]);
    /// frames already queued go first. Once only: a later socket is ignored.
    pub fn attach(&self, socket: Arc<TcpStream>) {
        let _ = self.socket.set(socket);
        // The writer may be waiting for frames that now go out another way.
        if let Some(writer) = self.lock().writer.take() {
            writer.wake();
        }
    }

    /// The socket, when a frame may be written to it right now: nothing is
    /// queued or part-written ahead of it.
    pub(super) fn idle_socket(&self, inner: &Inner<F>) -> Option<&TcpStream> {
        let socket = self.socket()?;
        (inner.frames.is_empty() && inner.unsent.is_empty()).then_some(socket)
    }

    /// Writes `frame` to the idle socket from the caller's context; the
    /// connection's task is woken only for what the socket did not take.
    pub(super) fn write_now(&self, inner: &mut Inner<F>, frame: &F) -> Result<(), PushError> {
        let Some(socket) = self.socket() else {
            return Err(PushError::Closed);
        };
        match inner.unsent.write(socket, &frame.wire()) {
            Ok(()) if inner.unsent.is_empty() => Ok(()),
            Ok(()) => {
                if let Some(writer) = inner.writer.take() {
                    writer.wake();
                }
                Ok(())
            }
            Err(_) => {
                Self::close_locked(inner, Closing::Gone);
                Err(PushError::Closed)
            }
        }
    }

    /// Writes `bytes` (a whole frame of the WebSocket layer's own: a pong,
    /// a close) in order with the outbox's frames; what the socket does not
    /// take now waits for [`Outbox::poll_flush_unsent`].
    ///
    /// # Errors
    /// The socket's error, or `Other` when the client has left more than
    /// twice the byte bound unread.
    pub fn write_raw(&self, bytes: &[u8]) -> io::Result<()> {
        let Some(socket) = self.socket() else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        let mut inner = self.lock();
        if inner.unsent.bytes() > 2 * self.limits.bytes {
            return Err(io::Error::other("the client does not read"));
        }
        inner.unsent.write(socket, &Wire::raw(bytes))
    }

    /// Writes what waits unsent until it is out, or registers for the
    /// socket's next room.
    ///
    /// # Errors
    /// The socket's error.
    pub fn poll_flush_unsent(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(socket) = self.socket() else {
            return Poll::Ready(Ok(()));
        };
        self.lock().unsent.poll_flush(socket, cx)
    }

    /// The connection task's side of an outbox on its socket: writes what
    /// the socket did not take and what was queued behind it, and is
    /// `Ready` only when the connection must end — the socket failed, the
    /// client is too slow, or (after draining) the stream is done.
    pub fn poll_send(&self, cx: &mut Context<'_>) -> Poll<Closing> {
        let Some(socket) = self.socket() else {
            return Poll::Ready(Closing::Gone);
        };
        let mut inner = self.lock();
        let mut freed = false;
        let ready = loop {
            if let Some(reason @ (Closing::SlowConsumer | Closing::Gone)) = inner.closing {
                break Poll::Ready(reason);
            }
            match inner.unsent.poll_flush(socket, cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => {
                    Self::close_locked(&mut inner, Closing::Gone);
                    break Poll::Ready(Closing::Gone);
                }
                // The socket is full: only a slow-consumer verdict changes that.
                Poll::Pending => {
                    Self::register_writer(&mut inner, cx);
                    break Poll::Pending;
                }
            }
            let Some(frame) = self.take_front(&mut inner) else {
                if let Some(reason) = inner.closing {
                    break Poll::Ready(reason);
                }
                Self::register_writer(&mut inner, cx);
                break Poll::Pending;
            };
            freed = true;
            if inner.unsent.write(socket, &frame.wire()).is_err() {
                Self::close_locked(&mut inner, Closing::Gone);
                break Poll::Ready(Closing::Gone);
            }
        };
        let wanted = freed && std::mem::take(&mut inner.room_wanted);
        drop(inner);
        if wanted {
            self.room.notify_waiters();
        }
        ready
    }

    /// Whether the outbox writes its connection's socket itself.
    pub fn writes_socket(&self) -> bool {
        self.socket().is_some()
    }

    /// The socket the outbox writes itself, once it has one.
    pub(super) fn socket(&self) -> Option<&TcpStream> {
        self.socket.get().map(Arc::as_ref)
    }
}

/// One non-blocking vectored write; a full socket wrote nothing.
fn try_write(socket: &TcpStream, parts: &[&[u8]]) -> io::Result<usize> {
    let slices = [IoSlice::new(parts[0]), IoSlice::new(parts[1])];
    let slices = match parts[0].is_empty() {
        true => &slices[1..],
        false => &slices[..],
    };
    match socket.try_write_vectored(slices) {
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(0),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{Closing, Limits};
    use std::future::poll_fn;
    use tokio::io::AsyncReadExt;

    /// A connected loopback pair: (the hub's end, the client's end).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (server, client)
    }

    /// Frames pushed faster than the client reads — written at once, then
    /// part-written, then queued — arrive whole and in order once the client
    /// reads; the WebSocket layer's own bytes go in between frames, never
    /// inside one (they may pass queued frames, as control frames may).
    #[tokio::test]
    async fn a_full_socket_keeps_frames_whole_and_in_order() {
        const FRAME: usize = 128 * 1024;
        let (server, mut client) = pair().await;
        let limits = Limits {
            frames: 1024,
            bytes: 64 << 20,
        };
        let outbox = Arc::new(Outbox::on_socket(limits, Arc::new(server)));
        let mut total = 0;
        for i in 0..=255_u8 {
            // 32 MiB in all: more than loopback buffers hold.
            outbox.try_push(Bytes::from(vec![i; FRAME])).expect("room");
            total += FRAME;
            if i % 50 == 0 {
                outbox.write_raw(b"raw").expect("written or kept");
                total += 3;
            }
        }
        assert!(!outbox.is_empty(), "the socket took everything at once");
        let writer = Arc::clone(&outbox);
        let sender = tokio::spawn(async move {
            // Pending while the socket is full; the outbox is never closed.
            poll_fn(|cx| match writer.poll_send(cx) {
                Poll::Pending if writer.is_empty() && writer.lock().unsent.is_empty() => {
                    Poll::Ready(None)
                }
                Poll::Pending => Poll::Pending,
                Poll::Ready(closing) => Poll::Ready(Some(closing)),
            })
            .await
        });
        let mut received = vec![0_u8; total];
        client.read_exact(&mut received).await.expect("every byte");
        assert_eq!(sender.await.expect("sender"), None::<Closing>);
        // A frame of one repeated byte never contains "raw".
        let (mut rest, mut next, mut raws) = (&received[..], 0_usize, 0);
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix(b"raw") {
                (rest, raws) = (after, raws + 1);
                continue;
            }
            let (frame, after) = rest.split_at(FRAME);
            assert!(
                frame.iter().all(|&b| usize::from(b) == next),
                "frame {next} broken"
            );
            (rest, next) = (after, next + 1);
        }
        assert_eq!((next, raws), (256, 6));
    }

    #[tokio::test]
    async fn a_closed_client_ends_the_outbox_as_gone() {
        let (server, client) = pair().await;
        let limits = Limits {
            frames: 16,
            bytes: 1 << 20,
        };
        let outbox = Outbox::on_socket(limits, Arc::new(server));
        drop(client);
        // The first write may still succeed (the reset comes back after it).
        let mut refused = false;
        for _ in 0..100 {
            if outbox.try_push(Bytes::from_static(b"data: x\n\n")).is_err() {
                refused = true;
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(refused, "writes to a closed peer kept succeeding");
        assert_eq!(poll_fn(|cx| outbox.poll_send(cx)).await, Closing::Gone);
    }
}
