//! Any bytes as a stewards' checkpoint note (parsing the note, its text as a checkpoint, and
//! opening it against five stewards, k = 3) and as a network file: what is not one is
//! refused, never a panic. What
//! parses as a checkpoint writes back to the same text (one text per checkpoint). Inputs
//! starting with `SIGN` are instead taken as a checkpoint text that stewards 1 to 3 sign, so
//! that opening fuzzes past the signature checks.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pb_control::{
    IdentityKeyPair,
    checkpoint::{Checkpoint, Stewards},
    network::NetworkFile,
    note::{Note, NoteSigner, sign},
};

fn pairs() -> &'static [IdentityKeyPair] {
    static PAIRS: OnceLock<Vec<IdentityKeyPair>> = OnceLock::new();
    PAIRS.get_or_init(|| {
        (1..=5u8)
            .map(|i| IdentityKeyPair::from_seed(&[i; 32]))
            .collect()
    })
}

fn signers() -> Vec<NoteSigner<'static>> {
    pairs()
        .iter()
        .enumerate()
        .map(|(i, p)| NoteSigner::new(&format!("pb.test/steward-{}", i + 1), p).unwrap())
        .collect()
}

fn stewards() -> &'static Stewards {
    static STEWARDS: OnceLock<Stewards> = OnceLock::new();
    STEWARDS.get_or_init(|| {
        let keys = signers().iter().map(|s| s.key().clone()).collect();
        Stewards::new("pb.test/network", keys, 3).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    if let Some(text) = data.strip_prefix(b"SIGN")
        && let Ok(text) = core::str::from_utf8(text)
    {
        let s = signers();
        if let Ok(note) = sign(text, &[&s[0], &s[1], &s[2]]) {
            if let Ok((checkpoint, signed)) = stewards().open(note.as_bytes()) {
                assert_eq!(checkpoint.text(), text);
                assert_eq!(signed, [0, 1, 2]);
            }
        }
        return;
    }
    if let Ok(note) = Note::parse(data) {
        if let Ok(checkpoint) = Checkpoint::parse(note.text) {
            assert_eq!(checkpoint.text(), note.text);
        }
    }
    if let Ok((checkpoint, signed)) = stewards().open(data) {
        assert!(signed.len() >= 3);
        assert_eq!(checkpoint.network, "pb.test/network");
    }
    // The same bytes as a network file: what parses renders to a file that parses the same.
    if let Ok(file) = NetworkFile::parse(data) {
        assert_eq!(NetworkFile::parse(file.render().as_bytes()).unwrap(), file);
    }
});
