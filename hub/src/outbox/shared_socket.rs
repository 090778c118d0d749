//! The connection's socket as the WebSocket layer sees it: reads go to the
//! socket, writes (pongs, the close handshake) go through the outbox, in
//! order with its frames, so a frame is never interleaved with another's bytes.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::Message;

use super::Outbox;

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
        let Some(socket) = this.outbox.socket() else {
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
