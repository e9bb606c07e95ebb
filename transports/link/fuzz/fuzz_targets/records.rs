//! Records as a stranger (or a broken client) sends them: the responder must drop them or
//! answer one record, and the unpacker must reassemble or drop, never panic.

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use pb_link::{
    GatewayKey, RECORD_LEN, Responder,
    framing::{MAX_MESSAGE, Unpacker},
    record::PLAIN_LEN,
};

fuzz_target!(|data: &[u8]| {
    let mut responder = Responder::new(GatewayKey::from_secret([7; 32]), &[9; 32]);
    for chunk in data.chunks(RECORD_LEN) {
        let mut record = [0u8; RECORD_LEN];
        record[..chunk.len()].copy_from_slice(chunk);
        let _ = responder.respond(Duration::from_secs(1), ([192, 0, 2, 1], 9).into(), &record);
    }
    let mut unpacker = Unpacker::default();
    for (i, chunk) in data.chunks(PLAIN_LEN + 1).enumerate() {
        let mut body = [0u8; PLAIN_LEN];
        let (skip, bytes) = chunk.split_first().unwrap_or((&0, &[]));
        body[..bytes.len()].copy_from_slice(bytes);
        // Counters in order, with gaps where the first byte says so.
        let counter = i as u64 * 2 + u64::from(*skip & 1);
        unpacker.take(counter, &body, |m| {
            assert!(m.body.len() <= MAX_MESSAGE && m.kind != 0)
        });
    }
});
