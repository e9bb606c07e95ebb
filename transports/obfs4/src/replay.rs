//! The server's filter of client-hello MACs seen recently, as obfs4proxy's `replayfilter`.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, SystemTime};

/// How long a MAC is remembered: a MAC is valid for the three epoch hours E-1, E, E+1.
const REPLAY_TTL: Duration = Duration::from_secs(3 * 3600);
/// The most MACs remembered (obfs4proxy's limit); the oldest are forgotten first.
const MAX_ENTRIES: usize = 100 * 1024;

/// MACs of accepted client hellos from the last three hours. One per server, shared by its
/// connections; the caller owns it and passes it to [`crate::ServerHandshake::handle_bytes`].
#[derive(Debug, Default)]
pub struct ReplayFilter {
    seen: HashSet<[u8; 16]>,
    /// Insertion order with insertion time, for expiry.
    order: VecDeque<(SystemTime, [u8; 16])>,
}

impl ReplayFilter {
    /// An empty filter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `mac` and returns whether it was already there (a replay).
    pub(crate) fn test_and_set(&mut self, now: SystemTime, mac: &[u8; 16]) -> bool {
        // A clock that went backwards makes expiry meaningless; obfs4proxy resets then.
        if self.order.back().is_some_and(|(last, _)| *last > now) {
            self.seen.clear();
            self.order.clear();
        }
        while let Some((inserted, old)) = self.order.front() {
            let expired = now
                .duration_since(*inserted)
                .is_ok_and(|age| age > REPLAY_TTL);
            if !expired && self.order.len() < MAX_ENTRIES {
                break;
            }
            self.seen.remove(old);
            self.order.pop_front();
        }
        if !self.seen.insert(*mac) {
            return true;
        }
        self.order.push_back((now, *mac));
        false
    }

    /// How many MACs are remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no MAC is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn remembers_for_three_hours_then_forgets() {
        let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut filter = ReplayFilter::new();
        assert!(!filter.test_and_set(start, &[1; 16]));
        assert!(filter.test_and_set(start + Duration::from_secs(3 * 3600), &[1; 16]));
        // Another insert after the TTL expires the old entry.
        let later = start + Duration::from_secs(3 * 3600 + 1);
        assert!(!filter.test_and_set(later, &[2; 16]));
        assert!(!filter.test_and_set(later, &[1; 16]));
    }

    #[test]
    fn stays_bounded() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut filter = ReplayFilter::new();
        for i in 0..(MAX_ENTRIES as u32 + 10) {
            let mut mac = [0u8; 16];
            mac[..4].copy_from_slice(&i.to_le_bytes());
            filter.test_and_set(now, &mac);
        }
        assert_eq!(filter.len(), MAX_ENTRIES);
    }
}
