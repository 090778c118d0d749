//! WebSocket framing for an outbox that writes its socket itself: each
//! [`Frame`]'s bytes on the wire (RFC 6455 §5.2 for a WebSocket message,
//! the bytes as they are for an SSE message).

use std::borrow::Cow;

use bytes::Bytes;
use tokio_tungstenite::tungstenite::Message;

use super::Frame;

/// A frame as it goes on the wire: a short header (empty for SSE) and its payload.
pub struct Wire<'a> {
    header: [u8; 10],
    header_len: u8,
    pub(super) payload: Cow<'a, [u8]>,
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

    pub(super) fn header(&self) -> &[u8] {
        &self.header[..usize::from(self.header_len)]
    }

    pub(super) fn len(&self) -> usize {
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

#[cfg(test)]
mod tests {
    use super::*;

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
