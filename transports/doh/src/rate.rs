//! The rate a DNS link sends its queries at, sans-IO: the configured rate, lowered when the
//! resolver fails queries (timeouts, HTTP errors, SERVFAIL or REFUSED: its limits, a public
//! resolver's rate-limiting) and raised back while it answers them all. Each second's outcome
//! sets the next second's rate, so the rate follows the resolver, never what the user does.

use std::time::{Duration, Instant};

/// The lowest rate a link goes down to: it keeps polling for its downlink.
pub const MIN_QUERY_RATE: u32 = 20;
/// How long one judgement lasts.
const SECOND: Duration = Duration::from_secs(1);

/// The query rate of one DNS link.
#[derive(Clone, Debug)]
pub struct QueryRate {
    max: u32,
    rate: u32,
    answered: u64,
    failed: u64,
    since: Option<Instant>,
}

impl QueryRate {
    /// Starting at, and never above, `max` queries a second.
    pub fn new(max: u32) -> Self {
        let max = max.max(MIN_QUERY_RATE);
        Self {
            max,
            rate: max,
            answered: 0,
            failed: 0,
            since: None,
        }
    }

    /// Queries a second now.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// A query got its answer.
    pub fn answered(&mut self) {
        self.answered += 1;
    }

    /// A query failed: no answer in time, an HTTP error, or the resolver's refusal.
    pub fn failed(&mut self) {
        self.failed += 1;
    }

    /// At `now`: the new rate, if the second that just ended calls for one. More than one
    /// query in twenty failed: three quarters of the rate (not under [`MIN_QUERY_RATE`]);
    /// none failed: a tenth of the configured rate more (not over it).
    pub fn update(&mut self, now: Instant) -> Option<u32> {
        let since = *self.since.get_or_insert(now);
        if now.saturating_duration_since(since) < SECOND {
            return None;
        }
        self.since = Some(now);
        let (ok, bad) = (self.answered, self.failed);
        self.answered = 0;
        self.failed = 0;
        let total = ok + bad;
        let next = if total > 0 && bad * 20 > total {
            (self.rate * 3 / 4).max(MIN_QUERY_RATE)
        } else if total > 0 && bad == 0 {
            (self.rate + (self.max / 10).max(1)).min(self.max)
        } else {
            self.rate
        };
        (next != self.rate).then(|| {
            self.rate = next;
            next
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_lower_the_rate_and_answers_bring_it_back() {
        let t0 = Instant::now();
        let mut rate = QueryRate::new(400);
        assert_eq!(rate.update(t0), None);
        // A second of answers at the top: nothing changes.
        (0..400).for_each(|_| rate.answered());
        assert_eq!(rate.update(t0 + SECOND), None);
        // A resolver that fails a tenth of the queries: 300, then 225, ...
        let mut t = t0 + SECOND;
        let mut seen = Vec::new();
        for _ in 0..12 {
            (0..90).for_each(|_| rate.answered());
            (0..10).for_each(|_| rate.failed());
            t += SECOND;
            if let Some(r) = rate.update(t) {
                seen.push(r);
            }
        }
        assert_eq!(seen[..3], [300, 225, 168]);
        assert_eq!(rate.rate(), MIN_QUERY_RATE);
        // One failure in a hundred is within the resolver's noise: no change.
        (0..99).for_each(|_| rate.answered());
        rate.failed();
        t += SECOND;
        assert_eq!(rate.update(t), None);
        // Then every query answered: back up by 40 a second to 400.
        let mut up = Vec::new();
        for _ in 0..20 {
            (0..50).for_each(|_| rate.answered());
            t += SECOND;
            if let Some(r) = rate.update(t) {
                up.push(r);
            }
        }
        assert_eq!(up[0], 60);
        assert_eq!(rate.rate(), 400);
        // Within a second, nothing is judged.
        rate.failed();
        assert_eq!(rate.update(t + SECOND / 2), None);
    }

    #[test]
    fn a_rate_below_the_floor_is_the_floor() {
        assert_eq!(QueryRate::new(5).rate(), MIN_QUERY_RATE);
    }
}
