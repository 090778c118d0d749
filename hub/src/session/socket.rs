//! The connection's socket work: writing what is queued, reading frames,
//! and closing — every way a connection ends is an [`Ending`].

use std::task::{Context, Poll};
use std::time::Duration;

use exechub_protocol::close;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::outbox::{Closing, Outbox};

/// How long a close handshake may take before the socket is dropped.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// How long the close frame to a client that stopped reading may wait for room.
const UNRESPONSIVE_GRACE: Duration = Duration::from_millis(250);

/// How a connection ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The socket is gone (reset, EOF, write error): nothing more to send.
    Gone,
    /// The client sent a close frame: flush the echo and end.
    ClientClosed,
    /// The hub closes with this code and reason.
    Close(u16, &'static str),
}

impl Ending {
    /// The `reason` label of `exechub_connections_closed_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Gone => "client_gone",
            Self::ClientClosed => "client_closed",
            Self::Close(code, _) => crate::metrics::close_reason(*code),
        }
    }
}

/// Why a read failed, as a close decision.
pub trait ReadError {
    /// The close to send for this error (`Gone` when the socket is dead).
    fn ending(&self) -> Ending;
}

impl ReadError for tokio_tungstenite::tungstenite::Error {
    fn ending(&self) -> Ending {
        use tokio_tungstenite::tungstenite::error::{Error, ProtocolError};
        match self {
            // The client vanished (EOF or reset): nobody to send a close to.
            Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => Ending::Gone,
            Error::Capacity(_) => {
                Ending::Close(close::MESSAGE_TOO_BIG, "frame exceeds the size limit")
            }
            Error::Utf8(_) => Ending::Close(close::INVALID_DATA, "text frame is not UTF-8"),
            Error::Protocol(_) => Ending::Close(close::PROTOCOL_ERROR, "protocol error"),
            _ => Ending::Gone,
        }
    }
}

/// What the socket did.
pub(super) enum Io<E> {
    /// A client frame, or the end of the stream.
    Frame(Option<Result<Message, E>>),
    /// Writing failed, or the outbox closed as slow: the connection ends.
    End(Ending),
}

/// Writes what is queued, then reads (unless not `read`: the connection has
/// as many publishes in flight as it may): the connection's whole socket
/// work in one poll. Cancel-safe: a frame leaves the outbox only in the poll
/// that hands it to the socket.
pub(super) fn poll_socket<W, E>(
    socket: &mut W,
    outbox: &Outbox<Message>,
    read: bool,
    cx: &mut Context<'_>,
) -> Poll<Io<E>>
where
    W: Sink<Message> + Stream<Item = Result<Message, E>> + Unpin,
{
    let drained = match outbox.writes_socket() {
        // The outbox writes the socket itself (the WebSocket layer only reads).
        true => outbox.poll_send(cx).map(ending_of),
        false => poll_drain(socket, outbox, cx),
    };
    if let Poll::Ready(ending) = drained {
        return Poll::Ready(Io::End(ending));
    }
    if !read {
        return Poll::Pending;
    }
    socket.poll_next_unpin(cx).map(Io::Frame)
}

/// Moves queued frames into the socket and flushes them; `Ready` only when
/// the connection must end (socket error, or the outbox closed as slow).
fn poll_drain<S>(sink: &mut S, outbox: &Outbox<Message>, cx: &mut Context<'_>) -> Poll<Ending>
where
    S: Sink<Message> + Unpin,
{
    loop {
        match sink.poll_ready_unpin(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(_)) => return Poll::Ready(Ending::Gone),
            // The socket is full: only a slow-consumer verdict can change that.
            Poll::Pending => {
                return outbox.poll_slow(cx).map(|()| {
                    let reason = "slow consumer: resume from your last seq";
                    Ending::Close(close::SLOW_CONSUMER, reason)
                });
            }
        }
        match outbox.poll_pop(cx) {
            Poll::Ready(Ok(frame)) => {
                if sink.start_send_unpin(frame).is_err() {
                    return Poll::Ready(Ending::Gone);
                }
            }
            Poll::Ready(Err(closing)) => return Poll::Ready(ending_of(closing)),
            // Nothing queued: push out what was started, then wait.
            Poll::Pending => {
                return match sink.poll_flush_unpin(cx) {
                    Poll::Ready(Err(_)) => Poll::Ready(Ending::Gone),
                    _ => Poll::Pending,
                };
            }
        }
    }
}

/// How the connection ends when its outbox closes for `closing`.
fn ending_of(closing: Closing) -> Ending {
    match closing {
        Closing::SlowConsumer => Ending::Close(
            close::SLOW_CONSUMER,
            "slow consumer: resume from your last seq",
        ),
        Closing::Done => Ending::Close(close::GOING_AWAY, "done"),
        Closing::Gone => Ending::Gone,
    }
}

/// Sends the close decision (bounded by [`CLOSE_GRACE`]) and waits briefly
/// for the client's answer, so the close handshake completes when it can.
pub(super) async fn finish<W, E>(mut socket: W, ending: Ending, conn_id: u64)
where
    W: Sink<Message> + Stream<Item = Result<Message, E>> + Unpin,
{
    crate::metrics::closed(crate::metrics::Transport::WebSocket, ending.reason());
    // A client that does not read (too slow, or silent) gets its close frame
    // if there is room for it, but nobody waits for its answer.
    let unresponsive = matches!(
        ending,
        Ending::Close(close::SLOW_CONSUMER | close::PING_TIMEOUT, _)
    );
    let handshake = async {
        match ending {
            Ending::Gone => return,
            Ending::ClientClosed => {
                let _ = socket.close().await;
                return;
            }
            Ending::Close(code, reason) => {
                tracing::info!(conn_id, code, reason, "closing WebSocket");
                let frame = CloseFrame {
                    code: code.into(),
                    reason: Utf8Bytes::from_static(reason),
                };
                if socket.send(Message::Close(Some(frame))).await.is_err() || unresponsive {
                    return;
                }
            }
        }
        // The client's close frame (or EOF) completes the handshake.
        while let Some(Ok(message)) = socket.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    };
    let grace = if unresponsive {
        UNRESPONSIVE_GRACE
    } else {
        CLOSE_GRACE
    };
    let _ = tokio::time::timeout(grace, handshake).await;
}
