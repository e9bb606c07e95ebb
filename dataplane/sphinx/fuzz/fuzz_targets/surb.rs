//! Any bytes as a serialized SURB: parse; if it parses, build a reply from it and let the
//! first relay process that. Any bytes as a reply payload for real SURB secrets: open must
//! fail cleanly. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pb_sphinx::{
    DelayMs, Epoch, EpochKey, Format, Hop, MailboxId, MemoryReplayFilter, NodeId, NodeKeys,
    PACKET_LEN, PAYLOAD_LEN, Surb, SurbId, create_surb_with, process,
};

fuzz_target!(|data: &[u8]| {
    let keys = NodeKeys {
        current: EpochKey::from_secret(Epoch(1000), [1; 32]),
        previous: None,
        format: None,
    };
    if let Ok(surb) = Surb::from_bytes(data) {
        let mut packet = [0u8; PACKET_LEN];
        let reply = data.get(..data.len().min(64)).unwrap_or(&[]);
        if surb.into_reply(&mut packet, reply).is_ok() {
            let _ = process(&mut packet, &keys, &mut MemoryReplayFilter::default());
        }
    }

    let hop = Hop {
        node: NodeId([1; 16]),
        public_key: keys.current.public_key(),
        delay: DelayMs(1),
    };
    for format in Format::ALL {
        if let Ok((_, secrets)) = create_surb_with(
            format,
            Epoch(1000),
            &[hop],
            MailboxId([2; 16]),
            SurbId([3; 16]),
            &[4; 32],
        ) {
            let mut payload = [0u8; PAYLOAD_LEN];
            let payload = &mut payload[..format.payload_len()];
            let n = data.len().min(payload.len());
            payload[..n].copy_from_slice(&data[..n]);
            let _ = secrets.open_reply(payload);
            let mut short = data.to_vec();
            let _ = secrets.open_reply(&mut short);
        }
    }
});
