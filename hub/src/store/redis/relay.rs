//! From a pub/sub message to the live feeds: both bridges (classic and
//! sharded pub/sub) hand what an append announced to [`Relay`], which splits
//! it into events and keeps the last epoch per execution.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use tokio::sync::{mpsc, oneshot};

use crate::event::{Epoch, SharedEvent, seq_of, splice_seq};
use crate::feeds::LiveSink;
use crate::store::Watch;

/// A [`Watch`] through a bridge's command queue: `watch` asks the bridge's
/// task to follow `execution_id` (it answers once subscribed), and dropping
/// the watch sends `unwatch`. Shared by both bridges.
pub fn watch_through<C: Send + 'static>(
    commands: &mpsc::UnboundedSender<C>,
    execution_id: &str,
    watch: fn(Arc<str>, oneshot::Sender<()>) -> C,
    unwatch: fn(Arc<str>) -> C,
) -> Watch {
    let id: Arc<str> = Arc::from(execution_id);
    let (done, confirmed) = oneshot::channel();
    let _ = commands.send(watch(Arc::clone(&id), done));
    let commands = commands.clone();
    Watch::new(confirmed, move || {
        let _ = commands.send(unwatch(id));
    })
}

/// Hands announced appends to the node's live feeds.
pub struct Relay {
    sink: Arc<dyn LiveSink>,
    /// The last epoch seen per watched execution, so relaying a message
    /// usually clones an epoch instead of allocating one.
    epochs: HashMap<Arc<str>, Epoch>,
}

impl Relay {
    /// A relay into `sink`.
    pub fn new(sink: Arc<dyn LiveSink>) -> Self {
        Self {
            sink,
            epochs: HashMap::new(),
        }
    }

    /// Hands one message of watched execution `id` to the live feeds, event
    /// by event: `<epoch> <json>` (one event), or a batch's
    /// `<epoch> =<first seq>\n<tail>\n<tail>…` (each event's JSON after
    /// `{"seq":N`, with consecutive seqs). Nodes before that batch form sent
    /// `<epoch> <json>\n<json>…`, still read.
    pub fn message(&mut self, id: &Arc<str>, payload: &[u8]) {
        let Some(split) = payload.iter().position(|b| *b == b' ') else {
            tracing::warn!(execution_id = %id, "ignoring a pub/sub message without epoch");
            return;
        };
        let (epoch, events) = (&payload[..split], &payload[split + 1..]);
        let Some(epoch) = self.epoch(id, epoch) else {
            tracing::warn!(execution_id = %id, "ignoring a pub/sub message with a malformed epoch");
            return;
        };
        if let Some(batch) = events.strip_prefix(b"=") {
            let mut lines = batch.split(|b| *b == b'\n');
            let first = lines
                .next()
                .and_then(|digits| std::str::from_utf8(digits).ok())
                .and_then(|digits| digits.parse::<u64>().ok());
            let Some(first) = first else {
                tracing::warn!(execution_id = %id, "ignoring a pub/sub batch without its first seq");
                return;
            };
            for (seq, tail) in (first..).zip(lines) {
                let event = SharedEvent::new(epoch.clone(), seq, splice_seq(seq, tail));
                self.sink.event(id, &event);
            }
            return;
        }
        // One event, or an older node's batch: events separated by newlines.
        for json in events.split(|b| *b == b'\n') {
            match seq_of(json) {
                Some(seq) => {
                    let event = SharedEvent::new(epoch.clone(), seq, Bytes::copy_from_slice(json));
                    self.sink.event(id, &event);
                }
                None => tracing::warn!(execution_id = %id, "ignoring a malformed pub/sub event"),
            }
        }
    }

    /// Tells the live feeds of `id` where its history stands (after a
    /// resubscription), so subscribers fill what they missed from the list.
    pub fn head(&self, id: &str, epoch: Option<&str>, seq: Option<u64>) {
        let epoch = epoch.and_then(Epoch::parse);
        self.sink.head(id, epoch.as_ref(), seq.unwrap_or(0));
    }

    /// Forgets `id` once nobody on this node watches it.
    pub fn forget(&mut self, id: &str) {
        self.epochs.remove(id);
    }

    /// The epoch named by `text`, reusing the last one seen for `id`.
    fn epoch(&mut self, id: &Arc<str>, text: &[u8]) -> Option<Epoch> {
        if let Some(known) = self.epochs.get(id)
            && known.as_str().as_bytes() == text
        {
            return Some(known.clone());
        }
        let epoch = Epoch::parse(std::str::from_utf8(text).ok()?)?;
        self.epochs.insert(Arc::clone(id), epoch.clone());
        Some(epoch)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Records what the relay hands on: (execution, epoch, seq, JSON).
    #[derive(Default)]
    struct Recorder(Mutex<Vec<(String, String, u64, String)>>);

    impl LiveSink for Recorder {
        fn event(&self, execution_id: &str, event: &SharedEvent) {
            let json = String::from_utf8_lossy(event.json()).into_owned();
            let entry = (
                execution_id.to_owned(),
                event.epoch().to_string(),
                event.seq(),
                json,
            );
            self.0.lock().unwrap().push(entry);
        }
        fn head(&self, _: &str, _: Option<&Epoch>, _: u64) {}
    }

    fn relay() -> (Arc<Recorder>, Relay) {
        let recorder = Arc::new(Recorder::default());
        let sink: Arc<dyn LiveSink> = Arc::clone(&recorder) as Arc<dyn LiveSink>;
        (recorder, Relay::new(sink))
    }

    const EPOCH: &str = "00000000000000ab";

    #[test]
    fn a_batch_message_becomes_events_with_consecutive_seqs() {
        let (recorder, mut relay) = relay();
        let id: Arc<str> = Arc::from("x");
        relay.message(
            &id,
            format!("{EPOCH} =41\n,\"n\":1}}\n,\"n\":2}}").as_bytes(),
        );
        relay.message(&id, format!("{EPOCH} {{\"seq\":43,\"n\":3}}").as_bytes());
        let seen = recorder.0.lock().unwrap().clone();
        let expected: Vec<_> = [(41, r#"{"seq":41,"n":1}"#), (42, r#"{"seq":42,"n":2}"#)]
            .into_iter()
            .chain([(43, r#"{"seq":43,"n":3}"#)])
            .map(|(seq, json)| ("x".to_owned(), EPOCH.to_owned(), seq, json.to_owned()))
            .collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn an_older_nodes_batch_and_malformed_messages_are_read_or_skipped() {
        let (recorder, mut relay) = relay();
        let id: Arc<str> = Arc::from("x");
        relay.message(
            &id,
            format!("{EPOCH} {{\"seq\":1}}\n{{\"seq\":2}}").as_bytes(),
        );
        relay.message(&id, format!("{EPOCH} =\n,\"n\":1}}").as_bytes());
        relay.message(&id, b"no-epoch");
        relay.message(&id, b"bad! {\"seq\":3}");
        let seqs: Vec<u64> = recorder.0.lock().unwrap().iter().map(|e| e.2).collect();
        assert_eq!(seqs, [1, 2]);
    }
}
