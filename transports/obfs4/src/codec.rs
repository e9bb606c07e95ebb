//! One obfs4 connection, either side, as a [`pb_transport::StreamCodec`]: the handshake,
//! then frames both ways, with obfs4proxy's shaping of what this side sends.
//!
//! Shaping, per the bridge's iat-mode (each side applies its own to its own writes; nothing
//! is negotiated):
//! - **0** (none): each write goes out at once, as frames of up to 1427 payload bytes, with
//!   one padding frame that brings the burst's last segment to a length drawn from the
//!   bridge's length distribution ([`WeightedDist`], seeded by the server's `drbg-seed`,
//!   which clients learn from the seed frame).
//! - **1** (enabled): the same frames, released in pieces of at most 1448 bytes (one TCP
//!   segment), each after a delay of 0 to 10 ms from the inter-arrival distribution.
//! - **2** (paranoid): no padding per write; pieces of a length drawn for each (padded with
//!   padding frames when less is queued), each after such a delay. Segment sizes then follow
//!   the distribution, not the records: the 1452-byte records never show.
//!
//! A server whose handshake fails does not close: it holds the connection, reading and
//! discarding, until 30 s plus a delay fixed per bridge (0 to 59 s) after it was accepted,
//! as obfs4proxy does, so a prober learns nothing from when the connection ends.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use pb_transport::StreamCodec;

use crate::{
    Cert, ClientHandshake, ClientProgress, Entropy, Established, IatMode,
    MAX_PACKET_PAYLOAD_LENGTH, MAX_SEGMENT_LENGTH, Packet, PrngSeed, ReplayFilter, ServerHandshake,
    ServerIdentity, ServerProgress,
    probdist::{GoRand, WeightedDist},
};

/// Frame and packet headers: a padding frame of `n` padding bytes is `n + HEADER` long.
const HEADER: usize = crate::FRAME_OVERHEAD + crate::PACKET_OVERHEAD;
/// A server holds a connection whose handshake failed this long, plus its close delay.
const FAILED_HOLD: Duration = Duration::from_secs(30);
/// The unit of the inter-arrival distribution (its values are 0 to 100).
const IAT_UNIT: Duration = Duration::from_micros(100);
/// Bytes queued past which iat-modes 1 and 2 send their next piece at once rather than after
/// its delay (counted): sixteen records' frames. obfs4proxy would block its writer instead;
/// the link above sends at a constant rate and would only lose records.
const CATCH_UP: usize = 16 * (crate::MAX_SEGMENT_LENGTH + 43);
/// The record rate, each way, a client in iat-mode 2 asks its link for: pieces of a length
/// drawn from the bridge's table (on average about 700 bytes) every 0-10 ms (on average
/// about 5) carry some 140 KB/s, less than the default profile's 100 records (149 KB of
/// frames) a second down.
pub const PARANOID_RECORD_RATE: u32 = 50;

/// The operating system's random generator.
#[derive(Debug, Default)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        use ring::rand::SecureRandom as _;
        // The OS generator does not fail on Linux once booted; a failure would leave
        // predictable keys, so stop instead.
        if ring::rand::SystemRandom::new().fill(dest).is_err() {
            eprintln!("pb-obfs4: the OS random generator failed");
            std::process::abort();
        }
    }
}

/// What a bridge's server side keeps across connections.
#[derive(Clone, Debug)]
pub struct Obfs4Server {
    identity: Arc<ServerIdentity>,
    seed: PrngSeed,
    iat: IatMode,
    replay: Arc<Mutex<ReplayFilter>>,
    close_delay: Duration,
}

impl Obfs4Server {
    /// A bridge with `identity`, its `drbg-seed` and the iat-mode of its own writes.
    pub fn new(identity: ServerIdentity, seed: PrngSeed, iat: IatMode) -> Self {
        // obfs4proxy's: `rand.New(HashDrbg(seed)).Intn(60)` seconds.
        let close_delay = Duration::from_secs(GoRand::new(&seed.0).intn(60) as u64);
        Self {
            identity: Arc::new(identity),
            seed,
            iat,
            replay: Arc::new(Mutex::new(ReplayFilter::new())),
            close_delay,
        }
    }

    /// The bridge's cert (its node id and identity key).
    pub fn cert(&self) -> Cert {
        self.identity.cert()
    }

    /// The iat-mode of its writes.
    pub fn iat_mode(&self) -> IatMode {
        self.iat
    }

    /// The codec of a connection accepted at `now`.
    pub fn accept(&self, now: Instant, mut rng: Box<dyn Entropy + Send>) -> Obfs4Codec {
        let handshake = ServerHandshake::new(&self.identity, self.seed.clone(), rng.as_mut());
        let mut codec = Obfs4Codec::new(State::Server(Some(handshake)), self.iat, &self.seed, rng);
        codec.server = Some(ServerSide {
            replay: self.replay.clone(),
            close_at: now + FAILED_HOLD + self.close_delay,
        });
        codec
    }
}

struct ServerSide {
    replay: Arc<Mutex<ReplayFilter>>,
    /// When a connection whose handshake failed is closed.
    close_at: Instant,
}

enum State {
    Client(Option<ClientHandshake>),
    Server(Option<ServerHandshake>),
    Open(Established),
    Failed,
}

/// One obfs4 connection; see the module docs.
pub struct Obfs4Codec {
    state: State,
    iat: IatMode,
    len_dist: WeightedDist,
    iat_dist: WeightedDist,
    rng: Box<dyn Entropy + Send>,
    server: Option<ServerSide>,
    /// Frames made and not yet released (iat-modes 1 and 2 release them over time).
    pending: VecDeque<u8>,
    /// Released, for the socket.
    out: Vec<u8>,
    /// When the next piece may go (iat-modes 1 and 2).
    release_at: Option<Instant>,
    received: Vec<u8>,
    scratch: Vec<u8>,
    /// Pieces sent before their delay because the queue was past [`CATCH_UP`].
    caught_up: u64,
}

impl core::fmt::Debug for Obfs4Codec {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Obfs4Codec")
            .field("open", &self.is_open())
            .field("iat", &self.iat)
            .finish_non_exhaustive()
    }
}

fn iat_seed(seed: &[u8; 24]) -> [u8; 24] {
    let digest = ring::digest::digest(&ring::digest::SHA256, seed);
    let mut out = [0u8; 24];
    out.copy_from_slice(&digest.as_ref()[..24]);
    out
}

impl Obfs4Codec {
    fn new(state: State, iat: IatMode, seed: &PrngSeed, rng: Box<dyn Entropy + Send>) -> Self {
        Self {
            state,
            iat,
            len_dist: WeightedDist::new(&seed.0, 0, MAX_SEGMENT_LENGTH as u16),
            iat_dist: WeightedDist::new(&iat_seed(&seed.0), 0, 100),
            rng,
            server: None,
            pending: VecDeque::new(),
            out: Vec::new(),
            release_at: None,
            received: Vec::new(),
            scratch: Vec::new(),
            caught_up: 0,
        }
    }

    /// Pieces sent before their delay, the queue being past sixteen records (iat-modes 1
    /// and 2).
    pub fn caught_up(&self) -> u64 {
        self.caught_up
    }

    /// A client's connection to the bridge `cert`, shaping its writes by `iat` (the bridge
    /// line's `iat-mode`); its hello is the first thing to send.
    pub fn client(cert: &Cert, iat: IatMode, mut rng: Box<dyn Entropy + Send>) -> Self {
        let handshake = ClientHandshake::new(cert, rng.as_mut(), SystemTime::now());
        // The client's own shape until the server's seed frame replaces it.
        let mut seed = [0u8; 24];
        rng.fill_bytes(&mut seed);
        let hello = handshake.hello().to_vec();
        let mut codec = Self::new(State::Client(Some(handshake)), iat, &PrngSeed(seed), rng);
        codec.out = hello;
        codec
    }

    fn reseed(&mut self, seed: &PrngSeed) {
        self.len_dist = WeightedDist::new(&seed.0, 0, MAX_SEGMENT_LENGTH as u16);
        self.iat_dist = WeightedDist::new(&iat_seed(&seed.0), 0, 100);
    }

    /// Decodes what the open connection's decoder holds.
    fn drain_packets(&mut self) -> Result<(), String> {
        let State::Open(established) = &mut self.state else {
            return Ok(());
        };
        let mut seeds = Vec::new();
        loop {
            match established.decoder.poll_packet() {
                Ok(None) => break,
                Ok(Some(Packet::Payload(data))) => self.received.extend_from_slice(&data),
                Ok(Some(Packet::PrngSeed(seed))) => seeds.push(seed),
                Ok(Some(Packet::Ignored { .. })) => {}
                Err(e) => return Err(format!("obfs4 frame: {e}")),
            }
        }
        // Clients take the server's shape; a server ignores seeds, as obfs4proxy does.
        if self.server.is_none()
            && let Some(seed) = seeds.last()
        {
            self.reseed(seed);
        }
        Ok(())
    }

    /// Appends padding to `frames` so that the burst's last segment is `to` bytes long
    /// (obfs4proxy's `padBurst`), `len` being the burst's length so far.
    fn pad_burst(&mut self, len: usize, to: usize, frames: &mut Vec<u8>) -> Result<(), String> {
        let State::Open(established) = &mut self.state else {
            return Ok(());
        };
        let tail = len % MAX_SEGMENT_LENGTH;
        let pad = if to >= tail {
            to - tail
        } else {
            MAX_SEGMENT_LENGTH - tail + to
        };
        let encoder = &mut established.encoder;
        let result = if pad > HEADER {
            encoder.encode_payload(&[], pad - HEADER, frames)
        } else if pad > 0 {
            encoder
                .encode_payload(&[], MAX_PACKET_PAYLOAD_LENGTH, frames)
                .and_then(|()| encoder.encode_payload(&[], pad, frames))
        } else {
            Ok(())
        };
        result.map_err(|e| format!("obfs4 frame: {e}"))
    }

    fn iat_delay(&mut self) -> Duration {
        IAT_UNIT * u32::from(self.iat_dist.sample(self.rng.as_mut()))
    }
}

impl StreamCodec for Obfs4Codec {
    fn handle_bytes(&mut self, bytes: &[u8], _now: Instant) -> Result<(), String> {
        match &mut self.state {
            State::Failed => return Err("obfs4: the handshake failed".into()),
            State::Client(handshake) => {
                let Some(h) = handshake.take() else {
                    return Err("obfs4: no handshake".into());
                };
                match h.handle_bytes(bytes) {
                    Ok(ClientProgress::NeedMore(h)) => *handshake = Some(h),
                    Ok(ClientProgress::Done(established)) => self.state = State::Open(established),
                    Err(e) => {
                        self.state = State::Failed;
                        return Err(format!("obfs4 handshake: {e}"));
                    }
                }
            }
            State::Server(handshake) => {
                let Some(h) = handshake.take() else {
                    return Err("obfs4: no handshake".into());
                };
                let Some(server) = &self.server else {
                    return Err("obfs4: no server state".into());
                };
                let progress = {
                    let mut replay = server
                        .replay
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    h.handle_bytes(bytes, SystemTime::now(), &mut replay, self.rng.as_mut())
                };
                match progress {
                    Ok(ServerProgress::NeedMore(h)) => *handshake = Some(h),
                    Ok(ServerProgress::Done { reply, established }) => {
                        // The server hello and seed frame in one write, unshaped.
                        self.out.extend_from_slice(&reply);
                        self.state = State::Open(established);
                    }
                    Err(e) => {
                        self.state = State::Failed;
                        return Err(format!("obfs4 handshake: {e}"));
                    }
                }
            }
            State::Open(established) => established.decoder.handle_bytes(bytes),
        }
        self.drain_packets()
    }

    fn take_received(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.received);
    }

    fn write(&mut self, data: &[u8], now: Instant) -> Result<(), String> {
        let State::Open(established) = &mut self.state else {
            return Err("obfs4: not open".into());
        };
        let mut frames = std::mem::take(&mut self.scratch);
        frames.clear();
        established
            .encoder
            .encode_data(data, &mut frames)
            .map_err(|e| format!("obfs4 frame: {e}"))?;
        if self.iat != IatMode::Paranoid {
            let to = usize::from(self.len_dist.sample(self.rng.as_mut()));
            let len = self.pending.len() + frames.len();
            self.pad_burst(len, to, &mut frames)?;
        }
        self.pending.extend(frames.iter());
        self.scratch = frames;
        self.poll(now);
        Ok(())
    }

    fn poll(&mut self, now: Instant) {
        match self.iat {
            IatMode::None => {
                self.out.extend(self.pending.drain(..));
                self.release_at = None;
            }
            IatMode::Enabled | IatMode::Paranoid => {
                while !self.pending.is_empty()
                    && (self.release_at.is_none_or(|at| at <= now) || self.pending.len() > CATCH_UP)
                {
                    if self.release_at.is_some_and(|at| at > now) {
                        self.caught_up += 1;
                    }
                    let take = if self.iat == IatMode::Enabled {
                        MAX_SEGMENT_LENGTH
                    } else {
                        // A length of 0 would send nothing: draw again.
                        let mut target = 0;
                        for _ in 0..16 {
                            target = usize::from(self.len_dist.sample(self.rng.as_mut()));
                            if target > 0 {
                                break;
                            }
                        }
                        let target = target.max(1);
                        if self.pending.len() < target {
                            let mut frames = Vec::new();
                            if self
                                .pad_burst(self.pending.len(), target, &mut frames)
                                .is_err()
                            {
                                break;
                            }
                            self.pending.extend(frames);
                        }
                        target
                    };
                    let n = take.min(self.pending.len());
                    self.out.extend(self.pending.drain(..n));
                    let delay = self.iat_delay();
                    self.release_at = Some(now + delay);
                }
                if self.pending.is_empty() && self.release_at.is_some_and(|at| at <= now) {
                    self.release_at = None;
                }
            }
        }
    }

    fn transmit(&self) -> &[u8] {
        &self.out
    }

    fn consumed(&mut self, n: usize) {
        self.out.drain(..n.min(self.out.len()));
    }

    fn backlog(&self) -> usize {
        self.out.len() + self.pending.len()
    }

    fn next_deadline(&self) -> Option<Instant> {
        if self.pending.is_empty() {
            return None;
        }
        self.release_at
    }

    fn is_open(&self) -> bool {
        matches!(self.state, State::Open(_))
    }

    fn linger_until(&self) -> Option<Instant> {
        // Only a server holds a failed connection; a client closes at once.
        self.server.as_ref().map(|s| s.close_at)
    }

    fn open_timeout(&self) -> Duration {
        // obfs4proxy's server gives a handshake 30 s (`serverHandshakeTimeout`), then holds
        // the connection as a failed one: every failure closes at one time per bridge.
        if self.server.is_some() {
            FAILED_HOLD
        } else {
            pb_transport::OPEN_TIMEOUT
        }
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::{NodeId, testutil::SeededEntropy};

    fn bridge(iat: IatMode) -> Obfs4Server {
        let mut rng = SeededEntropy::new(11);
        Obfs4Server::new(ServerIdentity::generate(&mut rng), PrngSeed([5; 24]), iat)
    }

    fn rng(seed: u64) -> Box<dyn Entropy + Send> {
        Box::new(SeededEntropy::new(seed))
    }

    /// Moves everything each side has released to the other, `now` advancing by a
    /// millisecond a turn, for `turns` turns.
    fn exchange(a: &mut Obfs4Codec, b: &mut Obfs4Codec, now: &mut Instant, turns: usize) {
        fn pass(from: &mut Obfs4Codec, to: &mut Obfs4Codec, now: Instant) {
            from.poll(now);
            let bytes = from.transmit().to_vec();
            from.consumed(bytes.len());
            if !bytes.is_empty() {
                to.handle_bytes(&bytes, now).unwrap();
            }
        }
        for _ in 0..turns {
            pass(a, b, *now);
            pass(b, a, *now);
            *now += Duration::from_millis(1);
        }
    }

    fn open_pair(iat: IatMode) -> (Obfs4Codec, Obfs4Codec, Instant) {
        let server = bridge(iat);
        let mut now = Instant::now();
        let cert = server.identity.cert();
        let mut c = Obfs4Codec::client(&cert, iat, rng(1));
        let mut s = server.accept(now, rng(2));
        exchange(&mut c, &mut s, &mut now, 3);
        assert!(c.is_open() && s.is_open());
        (c, s, now)
    }

    #[test]
    fn data_crosses_both_ways_in_every_iat_mode() {
        for iat in [IatMode::None, IatMode::Enabled, IatMode::Paranoid] {
            let (mut c, mut s, mut now) = open_pair(iat);
            let up: Vec<u8> = (0..50_000u32).map(|i| (i * 7) as u8).collect();
            let down: Vec<u8> = (0..30_000u32).map(|i| (i * 13) as u8).collect();
            for piece in up.chunks(1452) {
                c.write(piece, now).unwrap();
            }
            for piece in down.chunks(1452) {
                s.write(piece, now).unwrap();
            }
            exchange(&mut c, &mut s, &mut now, 2000);
            let (mut got_up, mut got_down) = (Vec::new(), Vec::new());
            s.take_received(&mut got_up);
            c.take_received(&mut got_down);
            assert_eq!(got_up, up, "{iat:?}");
            assert_eq!(got_down, down, "{iat:?}");
            assert_eq!(c.backlog() + s.backlog(), 0);
        }
    }

    #[test]
    fn paranoid_pieces_follow_the_distribution_not_the_records() {
        let (mut c, _s, now) = open_pair(IatMode::Paranoid);
        // Delays of one unit, so that each poll releases one piece.
        c.iat_dist = WeightedDist::new(&[0; 24], 1, 1);
        let mut sizes = std::collections::BTreeSet::new();
        let mut t = now;
        for _ in 0..200 {
            c.write(&[0x42; 1452], t).unwrap();
            loop {
                c.poll(t);
                let n = c.transmit().len();
                if n > 0 {
                    sizes.insert(n);
                    c.consumed(n);
                }
                match c.next_deadline() {
                    Some(at) => t = at.max(t),
                    None => break,
                }
            }
        }
        let support: std::collections::BTreeSet<usize> = c
            .len_dist
            .support()
            .iter()
            .map(|v| usize::from(*v))
            .collect();
        assert!(
            sizes.iter().all(|n| support.contains(n)),
            "{sizes:?} not within {support:?}"
        );
        // 1452-byte records make 1491 bytes of frames; no piece shows that.
        assert!(!sizes.contains(&1491));
    }

    #[test]
    fn the_client_takes_the_bridges_shape_from_the_seed_frame() {
        let server = bridge(IatMode::None);
        let (c, _s, _) = open_pair(IatMode::None);
        let bridge_shape = WeightedDist::new(&server.seed.0, 0, MAX_SEGMENT_LENGTH as u16);
        assert_eq!(c.len_dist.support(), bridge_shape.support());
    }

    #[test]
    fn a_failed_server_handshake_lingers_and_a_wrong_cert_fails_the_client() {
        let server = bridge(IatMode::None);
        let now = Instant::now();
        let mut s = server.accept(now, rng(3));
        let junk = vec![0x5a; 9000];
        assert!(s.handle_bytes(&junk, now).is_err());
        let until = s.linger_until().unwrap();
        assert!(until >= now + FAILED_HOLD && until < now + FAILED_HOLD + Duration::from_secs(60));
        assert!(s.transmit().is_empty(), "no answer to a probe");
        // A client that pinned another bridge's cert: the server never answers (its mark
        // does not check out), so nothing opens.
        let mut other = SeededEntropy::new(99);
        let wrong = ServerIdentity::from_secret(
            NodeId([9; 20]),
            zeroize::Zeroizing::new({
                let mut k = [0u8; 32];
                other.fill_bytes(&mut k);
                k
            }),
        )
        .cert();
        let mut c = Obfs4Codec::client(&wrong, IatMode::None, rng(4));
        let mut s = server.accept(now, rng(5));
        let mut t = now;
        exchange(&mut c, &mut s, &mut t, 5);
        assert!(!c.is_open() && !s.is_open());
        assert!(c.linger_until().is_none(), "a client closes at once");
    }

    #[test]
    fn a_replayed_client_hello_gets_no_answer() {
        let server = bridge(IatMode::None);
        let now = Instant::now();
        let mut c = Obfs4Codec::client(&server.identity.cert(), IatMode::None, rng(6));
        let hello = c.transmit().to_vec();
        c.consumed(hello.len());
        let mut first = server.accept(now, rng(7));
        first.handle_bytes(&hello, now).unwrap();
        assert!(first.is_open());
        let mut second = server.accept(now, rng(8));
        assert!(second.handle_bytes(&hello, now).is_err());
        assert!(second.transmit().is_empty());
        assert!(second.linger_until().is_some());
    }
}
