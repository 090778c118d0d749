//! From a pub/sub message to the live feeds: both bridges (classic and
//! sharded pub/sub) hand what an append announced to [`Relay`], which splits
//! it into events and keeps the last epoch per execution.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use tokio::sync::{mpsc, oneshot};

use crate::event::{Epoch, SharedEvent, seq_of};
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

    /// Hands one message (`<epoch> <json>`, or a batch's
    /// `<epoch> <json>\n<json>…`) of watched execution `id` to the live
    /// feeds, event by event.
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
        // One event, or a batch: events separated by newlines (JSON escapes its own).
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
