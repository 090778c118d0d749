//! The latency probe: one frame in [`PROBE_EVERY`] is timed from its
//! event's acceptance to the moment it leaves for the socket
//! (`exechub_publish_to_send_seconds`), so measuring costs nearly nothing.

/// One frame in this many is timed from its event's acceptance to the
/// moment it leaves the queue for the socket (`exechub_publish_to_send_seconds`).
pub(super) const PROBE_EVERY: u32 = 64;

/// Times a sampled frame from its event's acceptance to the socket
/// (`exechub_publish_to_send_seconds`).
pub(super) fn record_send(accepted: u64) {
    let handles = crate::metrics::handles();
    handles
        .publish_to_send
        .record(crate::clock::since(accepted).as_secs_f64());
}
