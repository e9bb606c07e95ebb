//! Loopix-style sender entropy, as computed by a global passive observer who sees every frame on
//! every link: its time, its sending node and its receiving node, but not its content.
//!
//! The observer models each relay as a mix whose per-packet delay is exponential with a known
//! mean. A frame leaving a relay could be any packet that arrived there earlier, each with
//! probability proportional to the delay density at its age; so its sender distribution is the
//! density-weighted average of those packets' distributions. Distributions propagate hop by hop,
//! and at the marked relay (the exit) the observer's uncertainty about the sending client is the
//! Shannon entropy of the distribution. Nothing here does I/O; time is data.
//!
//! This is the observer's model, not the network's truth: it does not know which frames are
//! cover, and it ignores that a packet, once departed, cannot depart again.

use std::collections::VecDeque;

pub use super::stats::median;

/// How far back a relay's arrivals stay candidates for a departure, in mean delays.
const HORIZON_IN_MEAN_DELAYS: f64 = 10.0;

/// How much earlier than the latest frame a frame may be and still count as on time (seconds).
const REORDER_TOLERANCE: f64 = 1e-3;

/// The smallest mean delay the observer accepts (seconds).
const MIN_MEAN_DELAY: f64 = 1e-6;

/// The largest mean delay the observer accepts (seconds), which keeps the horizon finite.
const MAX_MEAN_DELAY: f64 = 1e6;

/// A node at one end of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Node {
    /// Client `k` (0-based, below the propagator's client count).
    Client(usize),
    /// Relay `r` (0-based, below the propagator's relay count).
    Relay(usize),
    /// Any other node (a gateway, a service, an unknown address): frames from it carry no
    /// sender mass and frames to it are not followed.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "the harness studies relay and client links only")
    )]
    Other,
}

/// A packet waiting (as far as the observer knows) inside a relay.
#[derive(Clone, Debug)]
struct Arrival {
    /// When it arrived (seconds).
    time: f64,
    /// Its sender distribution: one entry per client, then one per relay ("made by that relay").
    senders: Vec<f64>,
}

/// Propagates sender distributions through the mixes, frame by frame, and records the sender
/// entropy of every arrival at the marked relays.
#[derive(Clone, Debug)]
pub struct Propagator {
    /// Number of clients (the first entries of every distribution).
    clients: usize,
    /// The mean per-packet delay the observer assumes at every relay (seconds).
    mean_delay: f64,
    /// Per relay, the arrivals within the horizon, oldest first.
    queues: Vec<VecDeque<Arrival>>,
    /// Per relay, whether arrivals there are recorded.
    marked: Vec<bool>,
    /// The latest frame time seen (seconds), once a frame with a finite time has been seen.
    now: Option<f64>,
    /// Sender entropy (bits) of each recorded arrival.
    entropies: Vec<f64>,
    /// Recorded arrivals whose distribution had no client mass.
    without_clients: u64,
    /// Frames whose time was not finite or was more than the tolerance earlier than the latest.
    late_frames: u64,
}

impl Propagator {
    /// A propagator for `clients` clients and `relays` relays whose mixing delay the observer
    /// assumes exponential with mean `mean_delay` seconds (clamped to 1 µs ..= 10^6 s; NaN is
    /// taken as 1 µs).
    #[must_use]
    pub fn new(clients: usize, relays: usize, mean_delay: f64) -> Self {
        Self {
            clients,
            mean_delay: if mean_delay.is_nan() {
                MIN_MEAN_DELAY
            } else {
                mean_delay.clamp(MIN_MEAN_DELAY, MAX_MEAN_DELAY)
            },
            queues: vec![VecDeque::new(); relays],
            marked: vec![false; relays],
            now: None,
            entropies: Vec::new(),
            without_clients: 0,
            late_frames: 0,
        }
    }

    /// Feeds one frame seen on the link `from` → `to` at `time` seconds.
    ///
    /// Frames must come in time order. A frame up to 1 ms earlier than the latest one is taken
    /// as simultaneous with it; a frame later out of order, or with a non-finite time, is also
    /// processed at the latest time and counted in [`Self::late_frames`] (dropped if no frame
    /// had a finite time yet). Client and relay indices out of range count as [`Node::Other`].
    pub fn frame(&mut self, time: f64, from: Node, to: Node) {
        let Some(time) = self.advance_clock(time) else {
            return;
        };
        self.prune(time);
        let senders = self.departure(time, from);
        if let Node::Relay(relay) = to
            && relay < self.queues.len()
        {
            if self.marked[relay] {
                self.record(&senders);
            }
            self.queues[relay].push_back(Arrival { time, senders });
        }
    }

    /// From now on, records the sender entropy of every arrival at `relay` (out of range:
    /// ignored).
    pub fn mark(&mut self, relay: usize) {
        if let Some(marked) = self.marked.get_mut(relay) {
            *marked = true;
        }
    }

    /// The sender entropy in bits of each recorded arrival, in arrival order: the entropy of the
    /// distribution restricted to the clients and renormalised (0 = the observer knows the
    /// client, log2(clients) = any client equally likely).
    #[must_use]
    pub fn entropies(&self) -> &[f64] {
        &self.entropies
    }

    /// Recorded arrivals skipped because no client could have sent them (relay-made or from
    /// [`Node::Other`] only).
    #[must_use]
    pub fn without_clients(&self) -> u64 {
        self.without_clients
    }

    /// Frames that came with a non-finite time or more than 1 ms out of order.
    #[must_use]
    pub fn late_frames(&self) -> u64 {
        self.late_frames
    }

    /// How many arrivals are held across all relays (bounded by the frames within the horizon).
    #[must_use]
    #[cfg(test)]
    pub fn stored_arrivals(&self) -> usize {
        self.queues.iter().map(VecDeque::len).sum()
    }

    /// The time at which to process a frame stamped `time`, keeping the clock monotone.
    fn advance_clock(&mut self, time: f64) -> Option<f64> {
        let Some(now) = self.now else {
            if time.is_finite() {
                self.now = Some(time);
                return Some(time);
            }
            self.late_frames += 1;
            return None;
        };
        if !time.is_finite() || time < now - REORDER_TOLERANCE {
            self.late_frames += 1;
            return Some(now);
        }
        let time = time.max(now);
        self.now = Some(time);
        Some(time)
    }

    /// Forgets arrivals older than the horizon at `time`.
    fn prune(&mut self, time: f64) {
        let oldest = time - HORIZON_IN_MEAN_DELAYS * self.mean_delay;
        for queue in &mut self.queues {
            while queue.front().is_some_and(|arrival| arrival.time < oldest) {
                queue.pop_front();
            }
        }
    }

    /// The sender distribution of a frame leaving `from` at `time`.
    fn departure(&self, time: f64, from: Node) -> Vec<f64> {
        let mut senders = vec![0.0; self.clients + self.queues.len()];
        match from {
            Node::Client(client) if client < self.clients => senders[client] = 1.0,
            Node::Relay(relay) if relay < self.queues.len() => {
                self.mix_departure(time, relay, &mut senders);
            }
            _ => {}
        }
        senders
    }

    /// Fills `senders` for a frame leaving `relay` at `time`: the delay-density-weighted average
    /// of the distributions waiting there, or "made by the relay" if nothing is waiting.
    fn mix_departure(&self, time: f64, relay: usize, senders: &mut [f64]) {
        let mut total_weight = 0.0;
        for arrival in &self.queues[relay] {
            let weight = (-(time - arrival.time) / self.mean_delay).exp();
            total_weight += weight;
            for (sum, share) in senders.iter_mut().zip(&arrival.senders) {
                *sum += weight * share;
            }
        }
        if total_weight > 0.0 {
            for sum in senders.iter_mut() {
                *sum /= total_weight;
            }
        } else {
            senders[self.clients + relay] = 1.0;
        }
    }

    /// Records the client entropy of an arrival at a marked relay.
    fn record(&mut self, senders: &[f64]) {
        let client_part = &senders[..self.clients];
        let mass: f64 = client_part.iter().sum();
        if mass > 0.0 && mass.is_finite() {
            self.entropies.push(shannon_bits(client_part, mass));
        } else {
            self.without_clients += 1;
        }
    }
}

/// The Shannon entropy in bits of `weights / mass` (zero weights contribute nothing).
fn shannon_bits(weights: &[f64], mass: f64) -> f64 {
    weights
        .iter()
        .map(|weight| weight / mass)
        .filter(|p| *p > 0.0)
        .map(|p| -p * p.log2())
        .sum::<f64>()
        .max(0.0)
}

/// Counts of `x` in `bins` equal bins over `[0, max]`.
///
/// Values below 0 go to the first bin and values at or above `max` to the last; NaN values are
/// skipped. `bins == 0` gives an empty vector; a non-positive or non-finite `max` puts every
/// value in the first bin.
#[must_use]
pub fn histogram(x: &[f64], bins: usize, max: f64) -> Vec<u64> {
    let mut counts = vec![0_u64; bins];
    let Some(last) = bins.checked_sub(1) else {
        return counts;
    };
    let width = max / count_as_f64(bins);
    for value in x.iter().filter(|v| !v.is_nan()) {
        let bin = if width.is_finite() && width > 0.0 {
            bin_index(value / width).min(last)
        } else {
            0
        };
        counts[bin] += 1;
    }
    counts
}

/// The bin a value of `position` bin widths falls in (0 for negative positions).
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "`as` saturates: negatives go to 0, huge values past the last bin, clamped by the caller"
)]
fn bin_index(position: f64) -> usize {
    position.floor() as usize
}

/// A count as a float.
#[expect(clippy::cast_precision_loss, reason = "bin counts stay far below 2^52")]
fn count_as_f64(n: usize) -> f64 {
    n as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::Random as SplitMix;

    /// The tests' draws, on the harness's generator.
    trait Draws {
        fn below(&mut self, n: usize) -> usize;
    }

    impl Draws for SplitMix {
        /// Uniform in `0..n`.
        #[expect(clippy::cast_possible_truncation, reason = "the result is below n")]
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn close(actual: f64, expected: f64, tolerance: f64) -> bool {
        (actual - expected).abs() <= tolerance
    }

    /// Relay 0 is the mix under test; departures from it go to relay 1, which is marked.
    fn mix_with_marked_exit(clients: usize, mean_delay: f64) -> Propagator {
        let mut propagator = Propagator::new(clients, 2, mean_delay);
        propagator.mark(1);
        propagator
    }

    #[test]
    fn four_clients_through_one_mix_give_two_bits() {
        let mut propagator = mix_with_marked_exit(4, 1.0);
        for client in 0..4 {
            let time = count_as_f64(client) * 1e-3;
            propagator.frame(time, Node::Client(client), Node::Relay(0));
        }
        propagator.frame(1.0, Node::Relay(0), Node::Relay(1));
        let entropies = propagator.entropies();
        assert_eq!(entropies.len(), 1);
        assert!(entropies[0] > 1.999 && entropies[0] <= 2.0, "{entropies:?}");
    }

    #[test]
    fn weights_follow_the_delay_density() {
        // Arrivals at 0 and ln 3 s, departure at ln 3 s with a 1 s mean: weights 1/3 and 1, so
        // p = (1/4, 3/4) and H = 2 - (3/4) log2 3 = 0.811278 bits.
        let mut propagator = mix_with_marked_exit(2, 1.0);
        let later = 3.0_f64.ln();
        propagator.frame(0.0, Node::Client(0), Node::Relay(0));
        propagator.frame(later, Node::Client(1), Node::Relay(0));
        propagator.frame(later, Node::Relay(0), Node::Relay(1));
        assert!(close(propagator.entropies()[0], 0.811_278, 1e-6));
    }

    #[test]
    fn a_lone_packet_has_zero_entropy() {
        // One client's packet waits alone for 5 mean delays: the departure can only be it.
        let mut propagator = mix_with_marked_exit(4, 1.0);
        propagator.frame(0.0, Node::Client(2), Node::Relay(0));
        propagator.frame(5.0, Node::Relay(0), Node::Relay(1));
        // Client 1's packet arrives 10.5 s after client 3's, which falls out of the horizon.
        propagator.frame(20.0, Node::Client(3), Node::Relay(0));
        propagator.frame(30.5, Node::Client(1), Node::Relay(0));
        propagator.frame(30.6, Node::Relay(0), Node::Relay(1));
        assert_eq!(propagator.entropies(), &[0.0, 0.0]);
        // Nothing has arrived within the horizon: the relay made this packet itself.
        propagator.frame(50.0, Node::Relay(0), Node::Relay(1));
        assert_eq!(propagator.without_clients(), 1);
        assert_eq!(propagator.entropies().len(), 2);
    }

    #[test]
    fn distributions_propagate_along_a_chain() {
        // Relay 0 mixes clients 0 and 1; relay 1 mixes that output with client 2; relay 2 is the
        // exit. At relay 1: average of (1/2, 1/2, 0, 0) and (0, 0, 1, 0) = (1/4, 1/4, 1/2, 0),
        // H = 1.5 bits.
        let mut propagator = Propagator::new(4, 3, 0.1);
        propagator.mark(2);
        propagator.frame(0.0, Node::Client(0), Node::Relay(0));
        propagator.frame(0.0, Node::Client(1), Node::Relay(0));
        propagator.frame(0.0, Node::Client(2), Node::Relay(1));
        propagator.frame(0.0, Node::Relay(0), Node::Relay(1));
        propagator.frame(0.0, Node::Relay(1), Node::Relay(2));
        assert!(close(propagator.entropies()[0], 1.5, 1e-12));
        // Frames to Other or clients are followed no further.
        propagator.frame(0.0, Node::Relay(2), Node::Other);
        propagator.frame(0.0, Node::Relay(2), Node::Client(3));
        assert_eq!(propagator.stored_arrivals(), 5);
    }

    #[test]
    fn relay_made_and_other_frames_carry_no_client_mass() {
        let mut propagator = mix_with_marked_exit(3, 1.0);
        propagator.frame(0.0, Node::Other, Node::Relay(1));
        propagator.frame(0.0, Node::Relay(0), Node::Relay(1));
        propagator.frame(0.0, Node::Client(7), Node::Relay(1));
        assert_eq!(propagator.without_clients(), 3);
        assert!(propagator.entropies().is_empty());
    }

    #[test]
    fn time_order_is_enforced_with_a_tolerance() {
        let mut propagator = mix_with_marked_exit(2, 1.0);
        propagator.frame(f64::NAN, Node::Client(0), Node::Relay(0));
        assert_eq!(
            (propagator.late_frames(), propagator.stored_arrivals()),
            (1, 0)
        );
        propagator.frame(1.0, Node::Client(0), Node::Relay(0));
        propagator.frame(0.9995, Node::Client(1), Node::Relay(0));
        assert_eq!(propagator.late_frames(), 1);
        propagator.frame(0.5, Node::Relay(0), Node::Relay(1));
        assert_eq!(propagator.late_frames(), 2);
        // Both arrivals count as simultaneous with the departure: exactly one bit.
        assert!(close(propagator.entropies()[0], 1.0, 1e-12));
    }

    #[test]
    fn pruning_bounds_memory_over_many_frames() {
        // One frame per millisecond, 10 ms mean delay: the 100 ms horizon holds ~100 frames.
        let (clients, relays) = (10, 3);
        let mut propagator = Propagator::new(clients, relays, 0.01);
        propagator.mark(2);
        let mut rng = SplitMix(9);
        let mut most_stored = 0;
        for step in 0..100_000_u32 {
            let (from, to) = match rng.below(4) {
                0 => (Node::Client(rng.below(clients)), Node::Relay(0)),
                1 => (Node::Relay(0), Node::Relay(1)),
                2 => (Node::Relay(1), Node::Relay(2)),
                _ => (Node::Relay(2), Node::Other),
            };
            propagator.frame(f64::from(step) * 1e-3, from, to);
            most_stored = most_stored.max(propagator.stored_arrivals());
        }
        assert!(most_stored <= 102, "{most_stored}");
        let entropies = propagator.entropies();
        assert!(entropies.len() > 20_000);
        let ceiling = 10.0_f64.log2();
        assert!(entropies.iter().all(|h| (0.0..=ceiling + 1e-9).contains(h)));
        // A busy two-mix chain hides the client well: well over half of log2(10) bits remain.
        assert!(median(entropies) > 0.7 * ceiling, "{}", median(entropies));
    }

    #[test]
    fn degenerate_propagators_never_yield_nan() {
        for mean_delay in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e-9] {
            let mut propagator = Propagator::new(2, 1, mean_delay);
            propagator.mark(0);
            propagator.mark(5);
            propagator.frame(0.0, Node::Client(0), Node::Relay(0));
            propagator.frame(0.0, Node::Client(1), Node::Relay(0));
            propagator.frame(f64::INFINITY, Node::Relay(0), Node::Relay(0));
            propagator.frame(1e9, Node::Relay(0), Node::Relay(0));
            assert!(propagator.entropies().iter().all(|h| h.is_finite()));
        }
        let mut empty = Propagator::new(0, 0, 1.0);
        empty.frame(0.0, Node::Client(0), Node::Relay(0));
        assert!(empty.entropies().is_empty());
    }

    #[test]
    fn histogram_and_median() {
        let x = [-1.0, 0.0, 0.4, 0.5, 0.99, 1.0, 7.0, f64::NAN, f64::INFINITY];
        assert_eq!(histogram(&x, 2, 1.0), vec![3, 5]);
        assert_eq!(histogram(&x, 0, 1.0), Vec::<u64>::new());
        assert_eq!(histogram(&x, 3, 0.0), vec![8, 0, 0]);
        assert!(close(median(&[3.0, 1.0, 2.0, 10.0]), 2.5, 0.0));
    }
}
