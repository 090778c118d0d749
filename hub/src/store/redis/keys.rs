//! The Redis key layout: one execution's keys all live in one Cluster hash slot.
//!
//! - `execution:<id>:events` — list of event JSON in seq order (the replaced
//!   service's key), TTL refreshed on every append, trimmed to the newest
//!   `max_events`;
//! - `{execution:<id>:events}:seq` — the seq counter, same TTL;
//! - `{execution:<id>:events}:epoch` — the history's epoch, same TTL;
//! - `{execution:<id>:events}:idem:<key>` — `seq|epoch|timestamp` of an idempotent publish;
//! - `{execution:<id>:events}:idem-batch:<key>` — `first-last|epoch|timestamp` of a batch;
//! - `{execution:<id>:events}:summary` — hash: the execution as a whole
//!   (started/updated/ended times, status, last seq, the terminal event), kept
//!   as long as the events, or `--final-state-ttl` longer once it has ended;
//! - `executions:index` — sorted set of execution ids by last update (Unix
//!   ms), bounded: the list of executions (its own slot; never in a script
//!   with an execution's keys);
//! - channel `{execution:<id>:events}:live` — `<epoch> <event JSON>` of every append
//!   (a batch: `<epoch> =<first seq>\n<tail>\n<tail>…`, one message; each tail
//!   is an event's JSON after `{"seq":N`).
//!
//! The hash tag `{execution:<id>:events}` hashes exactly like the untagged
//! list key, which keeps them together.

/// The list holding an execution's events (the replaced service's key).
pub fn events_key(execution_id: &str) -> String {
    join(&["execution:", execution_id, ":events"])
}

/// The seq counter, in the list's hash slot.
pub fn seq_key(execution_id: &str) -> String {
    join(&["{execution:", execution_id, ":events}:seq"])
}

/// The current history's epoch, in the list's hash slot.
pub fn epoch_key(execution_id: &str) -> String {
    join(&["{execution:", execution_id, ":events}:epoch"])
}

/// The record of an idempotent publish, in the list's hash slot.
pub fn idempotency_key(execution_id: &str, key: &str) -> String {
    join(&["{execution:", execution_id, ":events}:idem:", key])
}

/// The record of an idempotent batch publish (apart from single publishes').
pub fn batch_idempotency_key(execution_id: &str, key: &str) -> String {
    join(&["{execution:", execution_id, ":events}:idem-batch:", key])
}

/// An execution's summary hash, in the list's hash slot.
pub fn summary_key(execution_id: &str) -> String {
    join(&["{execution:", execution_id, ":events}:summary"])
}

/// `parts` in one allocation (keys are built on every append; `format!`
/// costs several times this).
fn join(parts: &[&str]) -> String {
    let mut key = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        key.push_str(part);
    }
    key
}

/// The sorted set of executions by last update: the list of executions.
pub const EXECUTIONS_INDEX: &str = "executions:index";

/// The pub/sub channel announcing an execution's appends.
pub fn channel(execution_id: &str) -> String {
    join(&["{execution:", execution_id, ":events}:live"])
}

/// The execution id of a channel name made by [`channel`].
pub fn execution_of_channel(channel: &str) -> Option<&str> {
    channel
        .strip_prefix("{execution:")?
        .strip_suffix(":events}:live")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_list_hash_slot_and_channels_round_trip() {
        assert_eq!(events_key("e-1"), "execution:e-1:events");
        assert_eq!(seq_key("e-1"), "{execution:e-1:events}:seq");
        assert_eq!(epoch_key("e-1"), "{execution:e-1:events}:epoch");
        assert_eq!(idempotency_key("e-1", "k"), "{execution:e-1:events}:idem:k");
        assert_eq!(execution_of_channel(&channel("a:b c")), Some("a:b c"));
        assert_eq!(execution_of_channel("other"), None);
    }
}
