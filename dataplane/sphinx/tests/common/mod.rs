//! Shared fixtures: relays with deterministic keys.
#![allow(dead_code, reason = "each test file uses part of the fixtures")]

use pb_sphinx::{DelayMs, Epoch, EpochKey, Hop, MailboxId, NodeId, NodeKeys};

pub const EPOCH: Epoch = Epoch(1000);

pub struct Relay {
    pub id: NodeId,
    pub keys: NodeKeys,
}

/// Relay `i` with secret bytes derived from `i` and `epoch`.
pub fn relay(i: u8, epoch: Epoch) -> Relay {
    let mut secret = [0u8; 32];
    secret[0] = i;
    secret[1..5].copy_from_slice(&epoch.0.to_be_bytes());
    secret[31] = 0x5a;
    Relay {
        id: NodeId([i; 16]),
        keys: NodeKeys {
            current: EpochKey::from_secret(epoch, secret),
            previous: None,
            format: None,
        },
    }
}

pub fn relays(n: usize) -> Vec<Relay> {
    (1..=n as u8).map(|i| relay(i, EPOCH)).collect()
}

pub fn route(relays: &[Relay]) -> Vec<Hop> {
    relays
        .iter()
        .enumerate()
        .map(|(i, r)| Hop {
            node: r.id,
            public_key: r.keys.current.public_key(),
            delay: DelayMs(10 * (i as u32 + 1)),
        })
        .collect()
}

pub const MAILBOX: MailboxId = MailboxId([0xab; 16]);

pub fn test_message(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(salt))
        .collect()
}
