//! Any bytes into pb-obfs4's connection codec: errors are fine (a server then lingers, a
//! client closes), panics are not. The first byte picks the mode, the second how the rest is
//! cut into reads:
//! - 0: into a fresh server (the client hello's mark and MAC search, the replay filter);
//! - 1: into a fresh client (the server hello's mark, MAC and AUTH);
//! - 2: into a server after a real handshake (the frame decoder: lengths, boxes, packets);
//! - 3: into a client after a real handshake (the same, and seed frames).
//!
//! Between reads the codec writes a record and runs its shaping clock, as in a session.
#![no_main]

use std::{
    sync::OnceLock,
    time::{Duration, Instant},
};

use libfuzzer_sys::fuzz_target;
use pb_obfs4::{Entropy, IatMode, NodeId, Obfs4Codec, Obfs4Server, PrngSeed, ServerIdentity};
use pb_transport::StreamCodec;

/// Deterministic bytes, so a crash replays.
struct Xorshift(u64);

impl Entropy for Xorshift {
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for b in dest {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *b = self.0 as u8;
        }
    }
}

fn rng(seed: u64) -> Box<dyn Entropy + Send> {
    Box::new(Xorshift(seed | 1))
}

fn bridge(iat: IatMode) -> &'static Obfs4Server {
    static BRIDGES: OnceLock<[Obfs4Server; 3]> = OnceLock::new();
    let all = BRIDGES.get_or_init(|| {
        [IatMode::None, IatMode::Enabled, IatMode::Paranoid].map(|iat| {
            let identity = ServerIdentity::from_secret(NodeId([7; 20]), [0x42; 32].into());
            Obfs4Server::new(identity, PrngSeed([9; 24]), iat)
        })
    });
    &all[usize::from(iat.number())]
}

/// A client and a server with their handshake done.
fn open_pair(iat: IatMode, t: Instant) -> (Obfs4Codec, Obfs4Codec) {
    let server = bridge(iat);
    let mut client = Obfs4Codec::client(&server.cert(), iat, rng(1));
    let mut accepted = server.accept(t, rng(2));
    for _ in 0..4 {
        let hello = client.transmit().to_vec();
        client.consumed(hello.len());
        if !hello.is_empty() {
            let _ = accepted.handle_bytes(&hello, t);
        }
        let reply = accepted.transmit().to_vec();
        accepted.consumed(reply.len());
        if !reply.is_empty() {
            let _ = client.handle_bytes(&reply, t);
        }
    }
    (client, accepted)
}

fuzz_target!(|data: &[u8]| {
    let [mode, cut, rest @ ..] = data else {
        return;
    };
    let iat = IatMode::from_number(mode / 4 % 3).unwrap_or_default();
    let t0 = Instant::now();
    let mut codec = match mode % 4 {
        0 => bridge(iat).accept(t0, rng(3)),
        1 => Obfs4Codec::client(&bridge(iat).cert(), iat, rng(4)),
        2 => open_pair(iat, t0).1,
        _ => open_pair(iat, t0).0,
    };
    let step = usize::from(*cut).max(1) * 7;
    let mut t = t0;
    let mut out = Vec::new();
    for piece in rest.chunks(step) {
        if codec.handle_bytes(piece, t).is_err() {
            // What a driver does next: a server lingers, reading and discarding.
            let _ = codec.linger_until();
            break;
        }
        codec.take_received(&mut out);
        if codec.is_open() {
            let _ = codec.write(&[0x5a; 1452], t);
        }
        t += Duration::from_millis(3);
        codec.poll(t);
        let n = codec.transmit().len();
        codec.consumed(n);
        assert!(codec.backlog() < 1 << 24);
    }
});
