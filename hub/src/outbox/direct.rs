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
//! close handshake) through [`SharedSocket`], its `AsyncWrite` half. So a
//! frame is never interleaved with another one's bytes.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use super::{Frame, Outbox};

/// A frame as it goes on the wire: a short header (empty for SSE) and its payload.
pub struct Wire<'a> {
    header: [u8; 10],
    header_len: u8,
    payload: Cow<'a, [u8]>,
}

impl<'a> Wire<'a> {
    /// Bytes written as they are (an SSE frame is its own wire form).
    pub fn raw(payload: &'a [u8]) -> Self {
        Self {
            header: [0; 10],
            header_len: 0,
            payload: Cow::Borrowed(payload),
        }
    }

    /// An unmasked, final WebSocket frame of `opcode` (RFC 6455 §5.2): what a
    /// server sends.
    pub fn websocket(opcode: u8, payload: Cow<'a, [u8]>) -> Self {
        let mut header = [0_u8; 10];
        header[0] = 0x80 | (opcode & 0x0f);
        let len = payload.len();
        let header_len = if len < 126 {
            header[1] = len as u8;
            2
        } else if let Ok(len) = u16::try_from(len) {
            header[1] = 126;
            header[2..4].copy_from_slice(&len.to_be_bytes());
            4
        } else {
            header[1] = 127;
            header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        };
        Self {
            header,
            header_len,
            payload,
        }
    }

    fn header(&self) -> &[u8] {
        &self.header[..usize::from(self.header_len)]
    }

    fn len(&self) -> usize {
        self.header().len() + self.payload.len()
    }
}

impl Frame for Message {
    fn weight(&self) -> usize {
        // Frame header included; control frames are small but not free.
        14 + self.len()
    }

    fn wire(&self) -> Wire<'_> {
        match self {
            Self::Text(text) => Wire::websocket(0x1, Cow::Borrowed(text.as_bytes())),
            Self::Binary(bytes) => Wire::websocket(0x2, Cow::Borrowed(bytes)),
            Self::Ping(bytes) => Wire::websocket(0x9, Cow::Borrowed(bytes)),
            Self::Pong(bytes) => Wire::websocket(0xa, Cow::Borrowed(bytes)),
            Self::Close(None) => Wire::websocket(0x8, Cow::Borrowed(&[])),
            Self::Close(Some(close)) => {
                let mut payload = u16::from(close.code).to_be_bytes().to_vec();
                payload.extend_from_slice(close.reason.as_bytes());
                Wire::websocket(0x8, Cow::Owned(payload))
            }
            Self::Frame(frame) => Wire::websocket(
                u8::from(frame.header().opcode),
                Cow::Borrowed(frame.payload()),
            ),
        }
    }
}

impl Frame for Bytes {
    fn weight(&self) -> usize {
        self.len()
    }

    fn wire(&self) -> Wire<'_> {
        Wire::raw(self)
    }
}

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

/// The socket as the WebSocket layer sees it: reads go to the socket (after
/// what the HTTP layer had already read past the handshake), writes go
/// through the outbox, in order with its frames.
pub struct SharedSocket {
    /// The outbox made with [`Outbox::on_socket`]: it holds the socket.
    outbox: Arc<Outbox<Message>>,
    /// Bytes read past the upgrade request, served first.
    read_ahead: Bytes,
}

impl SharedSocket {
    /// The socket of `outbox` (made with [`Outbox::on_socket`]), with the
    /// bytes the HTTP layer read past the handshake.
    pub fn new(outbox: Arc<Outbox<Message>>, read_ahead: Bytes) -> Self {
        Self { outbox, read_ahead }
    }
}

impl AsyncRead for SharedSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(socket) = this.outbox.socket.get().map(Arc::as_ref) else {
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        };
        if !this.read_ahead.is_empty() {
            let n = this.read_ahead.len().min(buf.remaining());
            buf.put_slice(&this.read_ahead[..n]);
            this.read_ahead.advance(n);
            return Poll::Ready(Ok(()));
        }
        loop {
            match socket.poll_read_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            }
            match socket.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }
}

impl AsyncWrite for SharedSocket {
    /// Takes all of `buf` (one whole frame from the WebSocket layer): what
    /// the socket does not take now waits in the outbox, which bounds it.
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(self.outbox.write_raw(buf).map(|()| buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.outbox.poll_flush_unsent(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Dropping the socket closes it; only what is waiting must go first.
        self.outbox.poll_flush_unsent(cx)
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

    #[test]
    fn websocket_headers_follow_rfc_6455_lengths() {
        let short = Wire::websocket(0x1, Cow::Borrowed(b"hi"));
        assert_eq!(short.header(), [0x81, 2]);
        let medium = vec![0_u8; 300];
        let medium = Wire::websocket(0x1, Cow::Borrowed(&medium));
        assert_eq!(medium.header(), [0x81, 126, 1, 44]);
        let long = vec![0_u8; 70_000];
        let long = Wire::websocket(0x2, Cow::Borrowed(&long));
        assert_eq!(long.header(), [0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        let ping = Message::Ping(Bytes::new());
        assert_eq!(ping.wire().header(), [0x89, 0]);
    }
}
