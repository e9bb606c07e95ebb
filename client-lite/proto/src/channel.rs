//! A reliable, ordered channel of messages over a path that loses, delays and reorders them
//! (the mixnet), sans-IO. Each side numbers its messages from 1; every message it sends also
//! acknowledges what it has received: a cumulative acknowledgement (the next number it
//! expects) and a bitmap of the 256 numbers after it that it holds already (selective
//! acknowledgement). A message not acknowledged within the retransmission timeout is sent
//! again, with the timeout doubled each time (RFC 6298's estimator, Karn's rule). And, since
//! the mixnet reorders a lot (every hop delays each packet at random), a message counts as
//! lost early only by time, as in RACK (RFC 8985): when a message sent more than a
//! reordering window after it has arrived. The window starts at a quarter of the smallest
//! round trip seen and grows, up to the smoothed round trip, each time a retransmission
//! turns out to have been needless (its acknowledgement came back sooner than any round
//! trip could). A message with number 0 carries only acknowledgements.
//!
//! ```text
//! header (42 bytes): seq u32, ack u32, sack (256 bits, 32 bytes; bit i, counted from the
//! first byte's high bit: message ack + 1 + i is held), window u16
//! then the message's frames (see crate::frame), padded with zeros
//! ```
//!
//! Messages are delivered exactly once, in order, to the caller, who parses the frames.
//! Not here: what a message carries besides the channel (SURBs, the session id) and when a
//! message may be sent (the client's Poisson schedule, the exit's SURB supply).

use std::{collections::BTreeMap, time::Duration};

/// Bytes of the channel header.
pub const HEADER_LEN: usize = 4 + 4 + SACK_BYTES + 2;
/// Messages past the cumulative acknowledgement a receiver holds (the bitmap's width).
pub const RECEIVE_WINDOW: u32 = 256;
const SACK_BYTES: usize = RECEIVE_WINDOW as usize / 8;

/// Channel settings.
#[derive(Clone, Copy, Debug)]
pub struct ChannelConfig {
    /// Most messages sent and not yet acknowledged.
    pub max_in_flight: u32,
    /// Retransmission timeout before the first round-trip sample.
    pub initial_rto: Duration,
    /// Bounds of the retransmission timeout.
    pub min_rto: Duration,
    /// Bounds of the retransmission timeout.
    pub max_rto: Duration,
    /// Retransmissions of one message before the channel is declared broken.
    pub max_retries: u32,
    /// How long an acknowledgement may wait for a message to ride on.
    pub ack_delay: Duration,
}

impl Default for ChannelConfig {
    /// 256 in flight, a 3 s first timeout within 0.5-20 s, 12 retries, 100 ms ack delay.
    fn default() -> Self {
        Self {
            max_in_flight: RECEIVE_WINDOW,
            initial_rto: Duration::from_secs(3),
            min_rto: Duration::from_millis(500),
            max_rto: Duration::from_secs(20),
            max_retries: 12,
            ack_delay: Duration::from_millis(100),
        }
    }
}

/// Why a received message was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// Shorter than the header.
    #[error("message shorter than the channel header")]
    Truncated,
    /// It acknowledges a message never sent.
    #[error("acknowledges a message never sent")]
    AckOutOfRange,
}

/// Counters of one channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// Messages sent the first time.
    pub sent: u64,
    /// Retransmissions.
    pub retransmitted: u64,
    /// Messages that carried only acknowledgements.
    pub acks_only: u64,
    /// Messages received and delivered.
    pub delivered: u64,
    /// Messages received again (already delivered or held).
    pub duplicates: u64,
    /// Messages too far ahead of the cumulative acknowledgement, dropped.
    pub out_of_window: u64,
}

struct Sent {
    frames: Vec<u8>,
    first_sent: Duration,
    last_sent: Duration,
    due: Duration,
    retries: u32,
    /// Retransmissions because its timeout passed (each doubles the next timeout).
    timeouts: u32,
    /// The peer holds it (selectively acknowledged): not sent again.
    sacked: bool,
    /// Deemed lost by a later message's arrival (once per transmission).
    lost: bool,
}

/// One side of a channel.
pub struct Channel {
    config: ChannelConfig,
    next_seq: u32,
    in_flight: BTreeMap<u32, Sent>,
    peer_window: u32,
    recv_next: u32,
    held: BTreeMap<u32, Vec<u8>>,
    ack_owed_since: Option<Duration>,
    srtt: Option<Duration>,
    rttvar: Duration,
    rto: Duration,
    min_rtt: Option<Duration>,
    /// The reordering window, in quarters of `min_rtt`.
    reorder_quarters: u32,
    broken: bool,
    stats: ChannelStats,
}

impl core::fmt::Debug for Channel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Channel")
            .field("in_flight", &self.in_flight.len())
            .field("held", &self.held.len())
            .field("rto", &self.rto)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Channel {
    /// A channel that has sent and received nothing.
    pub fn new(config: ChannelConfig) -> Self {
        Self {
            rto: config.initial_rto,
            config,
            next_seq: 1,
            in_flight: BTreeMap::new(),
            peer_window: RECEIVE_WINDOW,
            recv_next: 1,
            held: BTreeMap::new(),
            ack_owed_since: None,
            srtt: None,
            rttvar: Duration::ZERO,
            min_rtt: None,
            reorder_quarters: 1,
            broken: false,
            stats: ChannelStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> ChannelStats {
        self.stats
    }

    /// A message went unacknowledged through every retry: the path is gone.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Messages sent and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The current retransmission timeout.
    pub fn rto(&self) -> Duration {
        self.rto
    }

    /// Whether a message with new frames may be sent.
    pub fn can_send_new(&self) -> bool {
        !self.broken
            && (self.in_flight.len() as u32) < self.config.max_in_flight.min(self.peer_window)
    }

    /// Whether something received waits to be acknowledged.
    pub fn ack_owed(&self) -> bool {
        self.ack_owed_since.is_some()
    }

    /// Whether an owed acknowledgement has waited its delay.
    pub fn ack_due(&self, now: Duration) -> bool {
        self.ack_owed_since
            .is_some_and(|since| now >= since + self.config.ack_delay)
    }

    /// Whether a retransmission is due.
    pub fn retransmission_due(&self, now: Duration) -> bool {
        self.due_retransmission(now).is_some()
    }

    fn due_retransmission(&self, now: Duration) -> Option<u32> {
        if self.broken {
            return None;
        }
        self.in_flight
            .iter()
            .find(|(_, s)| !s.sacked && s.due <= now)
            .map(|(seq, _)| *seq)
    }

    /// When [`transmit`](Self::transmit) next has something due without new input: a
    /// retransmission or an acknowledgement.
    pub fn poll_timeout(&self) -> Option<Duration> {
        let retransmit = self
            .in_flight
            .values()
            .filter(|s| !s.sacked)
            .map(|s| s.due)
            .min()
            .filter(|_| !self.broken);
        let ack = self.ack_owed_since.map(|t| t + self.config.ack_delay);
        match (retransmit, ack) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next message, at most `room` bytes: a due retransmission; else, if the window
    /// allows, new frames written by `fill` (given the room left after the header; writing
    /// nothing means there is nothing new); else, if something waits to be acknowledged,
    /// an acknowledgement alone. `None`: nothing to send.
    pub fn transmit(
        &mut self,
        now: Duration,
        room: usize,
        fill: impl FnOnce(&mut Vec<u8>, usize),
    ) -> Option<Vec<u8>> {
        let room = room.checked_sub(HEADER_LEN)?;
        if let Some(seq) = self.due_retransmission(now) {
            let (rto, max_rto) = (self.rto, self.config.max_rto);
            if let Some(sent) = self.in_flight.get_mut(&seq) {
                if sent.retries >= self.config.max_retries {
                    self.broken = true;
                    return None;
                }
                // A timeout doubles the next one; a loss seen by a later arrival does not
                // (the path works, this packet was unlucky).
                if !sent.lost {
                    sent.timeouts += 1;
                }
                sent.retries += 1;
                sent.due = now + (rto * 2u32.saturating_pow(sent.timeouts)).min(max_rto);
                sent.last_sent = now;
                sent.lost = false;
                let frames = sent.frames.clone();
                self.stats.retransmitted += 1;
                return Some(self.message(seq, &frames));
            }
        }
        if self.can_send_new() {
            let mut frames = Vec::new();
            fill(&mut frames, room);
            frames.truncate(room);
            if !frames.is_empty() {
                let seq = self.next_seq;
                self.next_seq = self.next_seq.wrapping_add(1).max(1);
                self.in_flight.insert(
                    seq,
                    Sent {
                        frames: frames.clone(),
                        first_sent: now,
                        last_sent: now,
                        due: now + self.rto,
                        retries: 0,
                        timeouts: 0,
                        sacked: false,
                        lost: false,
                    },
                );
                self.stats.sent += 1;
                return Some(self.message(seq, &frames));
            }
        }
        if self.ack_owed() {
            self.stats.acks_only += 1;
            return Some(self.message(0, &[]));
        }
        None
    }

    /// A message with acknowledgements only, whether or not any are owed (to go with
    /// something else the packet carries, such as SURBs).
    pub fn idle_message(&mut self) -> Vec<u8> {
        self.stats.acks_only += 1;
        self.message(0, &[])
    }

    fn message(&mut self, seq: u32, frames: &[u8]) -> Vec<u8> {
        let mut sack = [0u8; SACK_BYTES];
        for held in self.held.keys() {
            let offset = held.wrapping_sub(self.recv_next).wrapping_sub(1) as usize;
            if let Some(byte) = sack.get_mut(offset / 8) {
                *byte |= 0x80 >> (offset % 8);
            }
        }
        let mut out = Vec::with_capacity(HEADER_LEN + frames.len());
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&self.recv_next.to_be_bytes());
        out.extend_from_slice(&sack);
        out.extend_from_slice(&(RECEIVE_WINDOW as u16).to_be_bytes());
        out.extend_from_slice(frames);
        self.ack_owed_since = None;
        out
    }

    /// Handles a received message: takes its acknowledgements, and returns the frames of
    /// every message that is now in order (none, this one, or this one and those it
    /// released).
    pub fn receive(&mut self, now: Duration, bytes: &[u8]) -> Result<Vec<Vec<u8>>, ChannelError> {
        let (header, frames) = bytes
            .split_first_chunk::<HEADER_LEN>()
            .ok_or(ChannelError::Truncated)?;
        let seq = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let ack = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        let mut sack = [0u8; SACK_BYTES];
        sack.copy_from_slice(&header[8..8 + SACK_BYTES]);
        let window = u16::from_be_bytes([header[HEADER_LEN - 2], header[HEADER_LEN - 1]]);
        if ack == 0 || ack > self.next_seq {
            return Err(ChannelError::AckOutOfRange);
        }
        self.take_acks(now, ack, &sack);
        self.peer_window = u32::from(window).min(RECEIVE_WINDOW);
        let mut delivered = Vec::new();
        if seq == 0 {
            return Ok(delivered);
        }
        self.ack_owed_since.get_or_insert(now);
        if seq < self.recv_next || self.held.contains_key(&seq) {
            self.stats.duplicates += 1;
        } else if seq - self.recv_next > RECEIVE_WINDOW {
            self.stats.out_of_window += 1;
        } else {
            self.held.insert(seq, frames.to_vec());
        }
        while let Some(frames) = self.held.remove(&self.recv_next) {
            delivered.push(frames);
            self.recv_next += 1;
            self.stats.delivered += 1;
        }
        Ok(delivered)
    }

    fn take_acks(&mut self, now: Duration, ack: u32, sack: &[u8; SACK_BYTES]) {
        // When the newest message known to have arrived was sent.
        let mut newest_arrived: Option<Duration> = None;
        let mut samples = Vec::new();
        let acked: Vec<u32> = self.in_flight.range(..ack).map(|(s, _)| *s).collect();
        for seq in acked {
            if let Some(sent) = self.in_flight.remove(&seq) {
                self.check_spurious(now, &sent);
                // Which transmission of a retransmitted message arrived is unknown (Karn):
                // neither a sample nor evidence of order.
                if sent.retries == 0 && !sent.sacked {
                    samples.push(now.saturating_sub(sent.first_sent));
                    newest_arrived = newest_arrived.max(Some(sent.last_sent));
                }
            }
        }
        for bit in 0..RECEIVE_WINDOW {
            if sack[bit as usize / 8] & (0x80 >> (bit % 8)) == 0 {
                continue;
            }
            let seq = ack.wrapping_add(1).wrapping_add(bit);
            if let Some(sent) = self.in_flight.get(&seq)
                && !sent.sacked
            {
                let sent_copy = (sent.retries, sent.last_sent);
                self.check_spurious_at(now, sent_copy);
            }
            if let Some(sent) = self.in_flight.get_mut(&seq)
                && !sent.sacked
            {
                if sent.retries == 0 {
                    samples.push(now.saturating_sub(sent.first_sent));
                    newest_arrived = newest_arrived.max(Some(sent.last_sent));
                }
                sent.sacked = true;
            }
        }
        for rtt in samples {
            self.sample(rtt);
        }
        // Sent a reordering window or more before one that arrived: lost; send it again now.
        if let (Some(newest), Some(srtt), Some(min_rtt)) = (newest_arrived, self.srtt, self.min_rtt)
        {
            let window = (min_rtt / 4 * self.reorder_quarters)
                .min(srtt)
                .max(Duration::from_millis(10));
            for sent in self.in_flight.values_mut() {
                if !sent.sacked && !sent.lost && sent.last_sent + window < newest {
                    sent.lost = true;
                    sent.due = sent.due.min(now);
                }
            }
        }
    }

    fn check_spurious(&mut self, now: Duration, sent: &Sent) {
        self.check_spurious_at(now, (sent.retries, sent.last_sent));
    }

    /// A retransmitted message acknowledged sooner after its last transmission than half
    /// the smallest round trip: the earlier transmission arrived, the retransmission was
    /// needless; the reordering window grows.
    fn check_spurious_at(&mut self, now: Duration, (retries, last_sent): (u32, Duration)) {
        if retries > 0
            && let Some(min_rtt) = self.min_rtt
            && now.saturating_sub(last_sent) < min_rtt / 2
        {
            self.reorder_quarters = (self.reorder_quarters + 1).min(16);
        }
    }

    /// RFC 6298 with a granularity of 1 ms.
    fn sample(&mut self, rtt: Duration) {
        self.min_rtt = Some(self.min_rtt.map_or(rtt, |m| m.min(rtt)));
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let diff = srtt.abs_diff(rtt);
                self.rttvar = self.rttvar * 3 / 4 + diff / 4;
                self.srtt = Some(srtt * 7 / 8 + rtt / 8);
            }
        }
        let srtt = self.srtt.unwrap_or(rtt);
        self.rto = (srtt + (self.rttvar * 4).max(Duration::from_millis(1)))
            .clamp(self.config.min_rto, self.config.max_rto);
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, clippy::panic, reason = "tests")]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn send(c: &mut Channel, now: Duration, body: &[u8]) -> Vec<u8> {
        c.transmit(now, 200, |out, _| out.extend_from_slice(body))
            .unwrap()
    }

    #[test]
    fn in_order_exactly_once_across_loss_and_reordering() {
        let mut a = Channel::new(ChannelConfig::default());
        let mut b = Channel::new(ChannelConfig::default());
        let m1 = send(&mut a, ms(0), b"one");
        let m2 = send(&mut a, ms(0), b"two");
        let m3 = send(&mut a, ms(0), b"three");
        // m1 is lost; m3 then m2 arrive: nothing yet in order.
        assert!(b.receive(ms(10), &m3).unwrap().is_empty());
        assert!(b.receive(ms(11), &m2).unwrap().is_empty());
        // b's acknowledgement: cumulative 1, m2 and m3 held.
        let ack = b.transmit(ms(200), 200, |_, _| {}).unwrap();
        assert_eq!(&ack[..4], &[0, 0, 0, 0], "acknowledgement only");
        a.receive(ms(210), &ack).unwrap();
        assert_eq!(
            a.in_flight(),
            3,
            "held messages stay in flight until acknowledged"
        );
        // Only m1 is retransmitted when its timeout passes.
        assert!(!a.retransmission_due(ms(2000)));
        let again = a
            .transmit(ms(3000), 200, |_, _| panic!("no new data"))
            .unwrap();
        assert_eq!(again, m1);
        let delivered = b.receive(ms(3010), &again).unwrap();
        let texts: Vec<&[u8]> = delivered.iter().map(|f| f.as_slice()).collect();
        assert_eq!(texts, vec![&b"one"[..], b"two", b"three"]);
        // A duplicate is counted, not delivered.
        assert!(b.receive(ms(3020), &m2).unwrap().is_empty());
        assert_eq!(b.stats().duplicates, 1);
        let ack = b.transmit(ms(3200), 200, |_, _| {}).unwrap();
        a.receive(ms(3210), &ack).unwrap();
        assert_eq!(a.in_flight(), 0);
    }

    #[test]
    fn a_message_overtaken_by_one_sent_well_after_it_is_sent_again_at_once() {
        let mut a = Channel::new(ChannelConfig::default());
        let mut b = Channel::new(ChannelConfig::default());
        let lost = send(&mut a, ms(0), b"lost");
        // Sent 5 ms later and arrived first: within the reordering window, not lost yet.
        let close = send(&mut a, ms(5), b"close");
        b.receive(ms(100), &close).unwrap();
        let ack = b.transmit(ms(100), 200, |_, _| {}).unwrap();
        a.receive(ms(200), &ack).unwrap();
        assert!(!a.retransmission_due(ms(200)));
        // Sent 300 ms later (more than twice the round-trip variation) and arrived: lost.
        let late = send(&mut a, ms(300), b"late");
        b.receive(ms(400), &late).unwrap();
        let ack = b.transmit(ms(400), 200, |_, _| {}).unwrap();
        a.receive(ms(500), &ack).unwrap();
        assert!(a.retransmission_due(ms(500)));
        assert_eq!(a.transmit(ms(500), 200, |_, _| {}).unwrap(), lost);
    }

    #[test]
    fn the_window_bounds_what_is_in_flight_and_silence_breaks_the_channel() {
        let config = ChannelConfig {
            max_in_flight: 4,
            max_retries: 2,
            ..ChannelConfig::default()
        };
        let mut a = Channel::new(config);
        for i in 0..4u8 {
            send(&mut a, ms(0), &[i]);
        }
        assert!(!a.can_send_new());
        assert!(a.transmit(ms(1), 200, |out, _| out.push(9)).is_none());
        // Nobody answers: after the retries run out, the channel is broken.
        let mut now = ms(0);
        while !a.is_broken() {
            now = a.poll_timeout().unwrap().max(now);
            let _ = a.transmit(now, 200, |_, _| {});
            assert!(now < Duration::from_secs(600), "never gave up");
        }
    }

    #[test]
    fn garbage_is_refused() {
        let mut a = Channel::new(ChannelConfig::default());
        assert_eq!(a.receive(ms(0), &[1, 2, 3]), Err(ChannelError::Truncated));
        // Acknowledges message 9, never sent.
        let mut m = vec![0, 0, 0, 1, 0, 0, 0, 10];
        m.extend_from_slice(&[0; HEADER_LEN - 8]);
        assert_eq!(a.receive(ms(0), &m), Err(ChannelError::AckOutOfRange));
    }
}
