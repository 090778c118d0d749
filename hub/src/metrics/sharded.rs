//! A counter for the hottest path (every delivery): one cache line per
//! shard, each thread adding to its own, summed at scrape time. A single
//! shared atomic would bounce its cache line between the cores that fan
//! out at the same time.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Shards: more than the worker threads of a typical hub.
const SHARDS: usize = 16;

#[derive(Default)]
#[repr(align(128))]
struct Shard(AtomicU64);

/// A monotonic count, added to without contention; read with [`ShardedCounter::sum`].
#[derive(Default)]
pub struct ShardedCounter {
    shards: [Shard; SHARDS],
}

/// This thread's shard, assigned round-robin on first use.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|shard| *shard)
}

impl ShardedCounter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.shards[shard()].0.fetch_add(n, Ordering::Relaxed);
    }

    /// The total so far.
    pub fn sum(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn adds_from_many_threads_sum_up() {
        let counter = Arc::new(ShardedCounter::default());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let counter = Arc::clone(&counter);
                std::thread::spawn(move || (0..1000).for_each(|_| counter.add(1)))
            })
            .collect();
        for thread in threads {
            thread.join().expect("joins");
        }
        assert_eq!(counter.sum(), 8000);
    }
}
