//! Which offset of a partition may be stored: the highest one such that it and every
//! offset fetched before it have a final outcome. Offsets may have gaps (compaction,
//! transaction markers), so the bookkeeping follows the offsets actually fetched, not
//! consecutive integers.

use std::collections::VecDeque;

/// The fetched, not yet stored offsets of one partition, in order, each final or not.
#[derive(Debug, Default)]
pub struct PartitionProgress {
    pending: VecDeque<(i64, bool)>,
    last_fetched: Option<i64>,
    stored: Option<i64>,
}

impl PartitionProgress {
    /// Records a fetched offset. Returns `false` (and records nothing) for an offset at or
    /// below one already fetched: a redelivery, which the caller skips.
    pub fn fetched(&mut self, offset: i64) -> bool {
        if self.last_fetched.is_some_and(|last| offset <= last) {
            return false;
        }
        self.last_fetched = Some(offset);
        self.pending.push_back((offset, false));
        true
    }

    /// Marks a fetched offset final. Returns the offset to store when the contiguous final
    /// prefix grew: the highest final offset with nothing non-final before it.
    pub fn finalize(&mut self, offset: i64) -> Option<i64> {
        if let Some(slot) = self.pending.iter_mut().find(|(o, _)| *o == offset) {
            slot.1 = true;
        }
        let mut advanced = None;
        while let Some(&(o, true)) = self.pending.front() {
            self.pending.pop_front();
            advanced = Some(o);
        }
        if advanced.is_some() {
            self.stored = advanced;
        }
        advanced
    }

    /// The highest offset known to be storable so far.
    pub fn stored(&self) -> Option<i64> {
        self.stored
    }

    /// How many fetched offsets are not yet storable.
    pub fn outstanding(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_only_the_contiguous_final_prefix() {
        let mut p = PartitionProgress::default();
        for o in [10, 11, 12, 15] {
            assert!(p.fetched(o));
        }
        assert_eq!(p.finalize(11), None, "10 is not final yet");
        assert_eq!(p.finalize(15), None);
        assert_eq!(p.finalize(10), Some(11));
        assert_eq!(p.stored(), Some(11));
        assert_eq!(p.outstanding(), 2);
        assert_eq!(p.finalize(12), Some(15), "the gap 13..15 was never fetched");
        assert_eq!(p.outstanding(), 0);
    }

    #[test]
    fn redeliveries_and_unknown_offsets_are_ignored() {
        let mut p = PartitionProgress::default();
        assert!(p.fetched(5));
        assert!(!p.fetched(5));
        assert!(!p.fetched(3));
        assert_eq!(p.finalize(99), None);
        assert_eq!(p.finalize(5), Some(5));
        assert_eq!(p.finalize(5), None, "finalising twice changes nothing");
        assert!(p.fetched(6));
        assert_eq!(p.finalize(6), Some(6));
    }
}
