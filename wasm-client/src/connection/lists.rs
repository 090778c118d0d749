//! Following the list of executions (`subscribe_executions`): the
//! application's list subscriptions, the one follow the hub keeps per
//! connection for all of them, and which subscription each snapshot and
//! change reaches.
//!
//! The hub follows one list per connection, so the client asks it for the
//! widest filter its subscriptions need and filters per subscription itself.

use exechub_protocol::{ExecutionSummary, StatusFilter};

/// One list subscription.
struct Entry<L> {
    key: u64,
    status: StatusFilter,
    handler: L,
}

/// The list subscriptions of a connection.
pub struct Lists<L> {
    entries: Vec<Entry<L>>,
    /// The last key handed out (keys are 1, 2, …).
    last_key: u64,
    /// The request id of the last `subscribe_executions` sent, to route the
    /// hub's `error` answer to it.
    request: Option<u64>,
}

impl<L> Default for Lists<L> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            last_key: 0,
            request: None,
        }
    }
}

impl<L: Clone> Lists<L> {
    /// Adds a subscription; returns its key.
    pub fn add(&mut self, status: StatusFilter, handler: L) -> u64 {
        self.last_key += 1;
        self.entries.push(Entry {
            key: self.last_key,
            status,
            handler,
        });
        self.last_key
    }

    /// Removes the subscription `key`; `true` when it was the last one.
    pub fn remove(&mut self, key: u64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|entry| entry.key != key);
        before != self.entries.len() && self.entries.is_empty()
    }

    /// Whether there is no list subscription.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// What to ask the hub for: the one filter all subscriptions share, or all.
    pub fn filter(&self) -> StatusFilter {
        let mut statuses = self.entries.iter().map(|entry| entry.status);
        match statuses.next() {
            Some(first) if statuses.all(|status| status == first) => first,
            _ => StatusFilter::All,
        }
    }

    /// A `subscribe_executions` with request id `id` was sent.
    pub fn requested(&mut self, id: u64) {
        self.request = Some(id);
    }

    /// Whether `id` is the last `subscribe_executions` request's.
    pub fn is_request(&self, id: u64) -> bool {
        self.request == Some(id)
    }

    /// Every subscription's handler.
    pub fn handlers(&self) -> impl Iterator<Item = L> + '_ {
        self.entries.iter().map(|entry| entry.handler.clone())
    }

    /// Each subscription with its part of a snapshot.
    pub fn snapshot(&self, summaries: &[ExecutionSummary]) -> Vec<(L, Vec<ExecutionSummary>)> {
        let part = |status: StatusFilter| {
            let matching = summaries.iter().filter(|summary| status.matches(summary));
            matching.cloned().collect()
        };
        let each = |entry: &Entry<L>| (entry.handler.clone(), part(entry.status));
        self.entries.iter().map(each).collect()
    }

    /// The subscriptions a change reaches: those it matches, and those of
    /// running executions when it ended (it leaves their list).
    pub fn changed(&self, summary: &ExecutionSummary) -> Vec<L> {
        let reaches = |entry: &&Entry<L>| {
            entry.status.matches(summary)
                || (entry.status == StatusFilter::Running && summary.ended)
        };
        let entries = self.entries.iter().filter(reaches);
        entries.map(|entry| entry.handler.clone()).collect()
    }
}
