//! One subscriber: a WebSocket subscribed to one execution that checks every
//! seq it receives (lost, duplicated, out of order) and records each event's
//! publish-to-delivery latency.
//!
//! Events are read with a byte scan for `"seq":` and `"sent_us":` rather than
//! a full JSON parse: the bench shares the machine's two cores with the hub,
//! and at hundreds of thousands of deliveries a second a parse per frame would
//! cost more CPU than the hub's own work being measured. Anything the scan
//! does not recognise is parsed properly.

use std::net::Ipv4Addr;

use anyhow::Result;
use exechub_protocol::ServerMsg;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::latency::{Latencies, micros_now};
use crate::target::Hub;
use crate::ws::{Socket, expect_subscribed, handshake, subscribe_frame};

/// Which seqs a subscriber saw, against the ones it should see.
#[derive(Debug, Clone)]
pub struct SeqCheck {
    /// Delivery starts after this seq (from `subscribed`).
    after: u64,
    /// Events expected: seqs `after + 1 ..= after + count`.
    count: u64,
    /// One bit per expected seq.
    seen: Vec<u64>,
    /// Distinct expected seqs seen.
    distinct: u64,
    /// Highest seq seen so far.
    highest: u64,
    /// Deliveries of a seq already seen, or of one nobody published.
    pub duplicated: u64,
    /// Deliveries of a seq lower than one seen before it.
    pub out_of_order: u64,
}

impl SeqCheck {
    /// Expects seqs `after + 1 ..= after + count`.
    pub fn new(after: u64, count: u64) -> Self {
        Self {
            after,
            count,
            seen: vec![0; count.div_ceil(64) as usize],
            distinct: 0,
            highest: after,
            duplicated: 0,
            out_of_order: 0,
        }
    }

    /// Notes one delivery of `seq`.
    pub fn see(&mut self, seq: u64) {
        let Some(index) = seq.checked_sub(self.after + 1).filter(|&i| i < self.count) else {
            self.duplicated += 1;
            return;
        };
        let (word, bit) = ((index / 64) as usize, 1u64 << (index % 64));
        if self.seen[word] & bit != 0 {
            self.duplicated += 1;
            return;
        }
        self.seen[word] |= bit;
        self.distinct += 1;
        if seq < self.highest {
            self.out_of_order += 1;
        }
        self.highest = self.highest.max(seq);
    }

    /// Every expected seq has been seen.
    pub fn complete(&self) -> bool {
        self.distinct == self.count
    }

    /// Expected seqs never seen.
    pub fn lost(&self) -> u64 {
        self.count - self.distinct
    }
}

/// How one subscriber fared.
#[derive(Debug)]
pub struct Tally {
    /// Event frames received (duplicates included).
    pub received: u64,
    /// The seq check.
    pub check: SeqCheck,
    /// When its last expected event arrived, if it got them all.
    pub completed_at: Option<Instant>,
    /// Why it stopped early, or what else went wrong (a `history_lost`, an `error`).
    pub trouble: Option<String>,
}

impl Tally {
    /// It saw every event once, in order, and nothing else went wrong.
    pub fn is_clean(&self) -> bool {
        self.check.complete()
            && self.check.duplicated == 0
            && self.check.out_of_order == 0
            && self.trouble.is_none()
    }
}

/// Connects from `source`, subscribes to `execution` and returns the socket
/// and the seq delivery starts after.
///
/// # Errors
/// Connecting, the handshake or the subscription failed.
pub async fn open(hub: &Hub, source: Ipv4Addr, execution: &str) -> Result<(Socket, u64)> {
    let stream = hub.connect_from(source).await?;
    let mut socket = handshake(hub, stream).await?;
    socket.send(subscribe_frame(execution)).await?;
    let after = expect_subscribed(&mut socket).await?;
    Ok((socket, after))
}

/// Reads events until all `count` after `after` arrived, the socket ended, or
/// `stop` turned true. Returns the tally and the socket, kept open so that
/// closing it is not part of the measured window.
pub async fn run(
    mut socket: Socket,
    after: u64,
    count: u64,
    latencies: Latencies,
    mut stop: watch::Receiver<bool>,
) -> (Tally, Option<Socket>) {
    let mut tally = Tally {
        received: 0,
        check: SeqCheck::new(after, count),
        completed_at: None,
        trouble: None,
    };
    while !tally.check.complete() {
        let frame = tokio::select! {
            frame = socket.next() => frame,
            _ = stop.wait_for(|&s| s) => {
                tally.trouble.get_or_insert_with(|| "stopped waiting (drain timeout)".into());
                break;
            }
        };
        match frame {
            Some(Ok(Message::Text(text))) => on_text(text.as_str(), &mut tally, &latencies),
            Some(Ok(Message::Close(frame))) => {
                tally.trouble = Some(format!("hub closed the WebSocket: {frame:?}"));
                return (tally, None);
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => {
                tally.trouble = Some(error.to_string());
                return (tally, None);
            }
            None => {
                tally.trouble = Some("WebSocket ended".into());
                return (tally, None);
            }
        }
    }
    if tally.check.complete() {
        tally.completed_at = Some(Instant::now());
    }
    (tally, Some(socket))
}

fn on_text(text: &str, tally: &mut Tally, latencies: &Latencies) {
    let (seq, sent_us) = match scan_event(text) {
        Some(found) => found,
        None => match serde_json::from_str::<ServerMsg>(text) {
            Ok(ServerMsg::Event { event, .. }) => {
                let sent = event.data.get("sent_us").and_then(|v| v.as_u64());
                (event.seq, sent.unwrap_or(0))
            }
            Ok(other) => {
                tally
                    .trouble
                    .get_or_insert_with(|| format!("unexpected frame: {other:?}"));
                return;
            }
            Err(error) => {
                tally
                    .trouble
                    .get_or_insert_with(|| format!("bad frame: {error}"));
                return;
            }
        },
    };
    tally.received += 1;
    tally.check.see(seq);
    latencies.record_us(micros_now().saturating_sub(sent_us));
}

/// `(seq, sent_us)` of an `event` frame as the hub writes it
/// (`{"type":"event",…,"event":{"seq":N,…,"data":{"sent_us":T,…}}}`), or
/// `None` for anything else.
fn scan_event(text: &str) -> Option<(u64, u64)> {
    if !text.starts_with(r#"{"type":"event""#) {
        return None;
    }
    let seq = number_after(text, r#""seq":"#)?;
    let sent = number_after(text, r#""sent_us":"#)?;
    Some((seq, sent))
}

/// The unsigned integer right after the first `key` in `text`.
fn number_after(text: &str, key: &str) -> Option<u64> {
    let start = text.find(key)? + key.len();
    let digits = &text[start..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_counts_lost_duplicated_and_out_of_order() {
        let mut check = SeqCheck::new(10, 5);
        for seq in [11, 13, 12, 13, 99, 15] {
            check.see(seq);
        }
        assert_eq!(check.out_of_order, 1, "12 after 13");
        assert_eq!(check.duplicated, 2, "13 again, and 99 nobody published");
        assert_eq!(check.lost(), 1, "14");
        assert!(!check.complete());
        check.see(14);
        assert!(check.complete());
        assert_eq!(check.out_of_order, 2);
    }

    #[test]
    fn in_order_delivery_is_clean() {
        let mut check = SeqCheck::new(0, 200);
        (1..=200).for_each(|seq| check.see(seq));
        assert!(check.complete());
        assert_eq!(
            (check.duplicated, check.out_of_order, check.lost()),
            (0, 0, 0)
        );
    }

    #[test]
    fn scan_reads_the_hubs_event_frame() {
        let frame = r#"{"type":"event","epoch":"9f2c41d07a3b5e11","event":{"seq":42,"execution_id":"bench-1-0","event_type":"bench","timestamp":"2026-01-01T00:00:00.000Z","data":{"sent_us":1700000000000123,"pad":"xx"}}}"#;
        assert_eq!(scan_event(frame), Some((42, 1_700_000_000_000_123)));
        let parsed: ServerMsg = serde_json::from_str(frame).unwrap();
        assert!(matches!(parsed, ServerMsg::Event { event, .. } if event.seq == 42));
        assert_eq!(scan_event(r#"{"type":"pong"}"#), None);
    }
}
