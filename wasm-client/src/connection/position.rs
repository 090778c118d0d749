//! Where one subscription stands in its execution's history, and which
//! incoming events that position lets through.
//!
//! A seq means nothing without the history it belongs to: an expired or
//! dropped history starts again at seq 1 under a new epoch, so a position is
//! `(epoch, seq)` (docs/protocol.md, "Positions and epochs").

/// Where one subscription stands: a position `(epoch, seq)` in its
/// execution's history. A seq means nothing without the history it belongs
/// to: an expired or dropped history starts again at seq 1 under a new epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The history `last` belongs to; `None` until the hub named one (a bare
    /// `after` names none, and a fresh execution has no history yet).
    epoch: Option<String>,
    /// Highest seq delivered (or confirmed as the starting point); `None`
    /// until the hub confirmed a live-only subscription.
    last: Option<u64>,
}

/// What to do with an incoming event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it to the application.
    Deliver,
    /// Already delivered (a replay after reconnecting overlaps what was seen).
    Duplicate,
    /// Of another history than the position's, with no `history_lost`
    /// announcing it: the hub always sends one first, so this is never
    /// delivered (its seq says nothing about what was seen).
    OtherEpoch,
}

impl Position {
    /// A new subscription: after `after`, or live-only when `None`.
    pub fn new(after: Option<u64>) -> Self {
        Self {
            epoch: None,
            last: after,
        }
    }

    /// The `after` to send when (re)subscribing.
    pub fn resume_after(&self) -> Option<u64> {
        self.last
    }

    /// The epoch `last` belongs to, when the hub named one.
    pub fn epoch(&self) -> Option<&str> {
        self.epoch.as_deref()
    }

    /// The highest seq delivered or confirmed.
    pub fn last(&self) -> Option<u64> {
        self.last
    }

    /// The hub confirmed the subscription (`subscribed`), starting after
    /// `(epoch, after)`.
    pub fn confirmed(&mut self, after: u64, epoch: Option<String>) {
        // A resubscription confirms what we asked for; only a live-only
        // subscription learns its starting point here, and a bare `after`
        // its epoch.
        if self.last.is_none() {
            self.last = Some(after);
        }
        self.epoch = self.epoch.take().or(epoch);
    }

    /// Decides about event `seq` of history `epoch` (an `event` frame) and,
    /// when it is delivered, moves past it.
    pub fn accept(&mut self, epoch: Option<&str>, seq: u64) -> Verdict {
        let other = matches!((self.epoch(), epoch), (Some(ours), Some(theirs)) if ours != theirs);
        match self.last {
            // With nothing delivered in our history yet (`last` 0), any
            // history is adopted, as the hub does (it announces none then).
            Some(last) if other && last > 0 => Verdict::OtherEpoch,
            Some(last) if !other && seq <= last => Verdict::Duplicate,
            _ => {
                self.last = Some(seq);
                if let Some(epoch) = epoch {
                    self.epoch = Some(epoch.to_owned());
                }
                Verdict::Deliver
            }
        }
    }

    /// The hub said (`history_lost`) that delivery continues after
    /// `(epoch, resume_after)`: events before it are gone, or its history
    /// replaced the position's.
    pub fn lost(&mut self, resume_after: u64, epoch: Option<String>) {
        self.last = Some(resume_after);
        self.epoch = epoch;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const E1: Option<&str> = Some("9f2c41d07a3b5e11");
    const E2: Option<&str> = Some("5d0e2b7c91aa4f30");

    fn epoch(epoch: Option<&str>) -> Option<String> {
        epoch.map(Into::into)
    }

    #[test]
    fn replays_after_reconnect_never_deliver_twice_or_backwards() {
        let mut position = Position::new(Some(3));
        assert_eq!(position.accept(E1, 3), Verdict::Duplicate);
        assert_eq!(position.accept(E1, 4), Verdict::Deliver);
        assert_eq!(position.resume_after(), Some(4));
        // Reconnected: the hub replays from 4, some of it already seen.
        position.confirmed(4, epoch(E1));
        assert_eq!(position.accept(E1, 4), Verdict::Duplicate);
        assert_eq!(position.accept(E1, 5), Verdict::Deliver);
    }

    #[test]
    fn live_only_learns_its_start_from_the_hub() {
        let mut position = Position::new(None);
        assert_eq!(position.resume_after(), None);
        position.confirmed(10, epoch(E1));
        assert_eq!((position.resume_after(), position.epoch()), (Some(10), E1));
        position.confirmed(2, None); // a later confirmation never moves it back
        assert_eq!((position.last(), position.epoch()), (Some(10), E1));
        position.lost(40, epoch(E1));
        assert_eq!(position.accept(E1, 41), Verdict::Deliver);
    }

    #[test]
    fn every_frame_kind_moves_the_position() {
        // `subscribed` names the history a bare `after` (or a live-only start) is in …
        let mut position = Position::new(Some(2));
        position.confirmed(2, epoch(E1));
        assert_eq!((position.epoch(), position.last()), (E1, Some(2)));
        // … an `event` frame moves the seq within it …
        assert_eq!(position.accept(E1, 3), Verdict::Deliver);
        assert_eq!((position.epoch(), position.last()), (E1, Some(3)));
        // … and `history_lost` moves both.
        position.lost(0, epoch(E2));
        assert_eq!((position.epoch(), position.last()), (E2, Some(0)));
        // A fresh execution has no history: the first event's epoch is adopted.
        let mut fresh = Position::new(None);
        fresh.confirmed(0, None);
        assert_eq!(fresh.accept(E1, 1), Verdict::Deliver);
        assert_eq!((fresh.epoch(), fresh.last()), (E1, Some(1)));
    }

    #[test]
    fn a_new_history_is_delivered_from_seq_1_after_history_lost() {
        let mut position = Position::new(Some(0));
        for seq in 1..=3 {
            assert_eq!(position.accept(E1, seq), Verdict::Deliver);
        }
        // Unannounced, the new history's events are not delivered …
        assert_eq!(position.accept(E2, 1), Verdict::OtherEpoch);
        assert_eq!(position.accept(E2, 4), Verdict::OtherEpoch);
        // … announced, its seq 1 is not mistaken for a duplicate of the old 1.
        position.lost(0, epoch(E2));
        for seq in 1..=3 {
            assert_eq!(position.accept(E2, seq), Verdict::Deliver);
        }
        // Nor does a leftover of the old history get through.
        assert_eq!(position.accept(E1, 4), Verdict::OtherEpoch);
        assert_eq!((position.epoch(), position.last()), (E2, Some(3)));
    }

    #[test]
    fn duplicates_within_an_epoch_are_dropped() {
        let mut position = Position::new(Some(0));
        assert_eq!(position.accept(E1, 1), Verdict::Deliver);
        assert_eq!(position.accept(E1, 2), Verdict::Deliver);
        assert_eq!(position.accept(E1, 2), Verdict::Duplicate);
        assert_eq!(position.accept(E1, 1), Verdict::Duplicate);
        // A hub that names no epoch is taken to mean the same history.
        assert_eq!(position.accept(None, 2), Verdict::Duplicate);
        assert_eq!(position.accept(None, 3), Verdict::Deliver);
        assert_eq!((position.epoch(), position.last()), (E1, Some(3)));
    }

    #[test]
    fn trimmed_history_continues_in_the_same_epoch() {
        let mut position = Position::new(Some(0));
        assert_eq!(position.accept(E1, 1), Verdict::Deliver);
        position.lost(7, epoch(E1));
        assert_eq!(position.accept(E1, 7), Verdict::Duplicate);
        assert_eq!(position.accept(E1, 8), Verdict::Deliver);
    }
}
