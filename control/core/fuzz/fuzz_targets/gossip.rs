//! Any bytes as a gossip datagram to a running node: a SWIM datagram, a descriptor sync or
//! junk. The node must count and drop what it cannot use, never panic. Inputs starting with
//! `SIGN` are instead taken as a foca packet from a known peer and signed with its key, so
//! that the SWIM decoding behind the signature check is fuzzed too. Inputs starting with
//! `FRAG` are a measurement record's fragment to a steward's reassembly (every input a
//! second later than the one before, so that assembly times out too). Any bytes as a
//! descriptor: if they parse, they are the one canonical encoding of what they hold.
#![no_main]

use std::{cell::RefCell, time::Duration};

use libfuzzer_sys::fuzz_target;
use pb_control::{
    Descriptor, Gossip, GossipConfig, IdentityKeyPair, Role, SignedDescriptor,
    records::{MAX_PENDING, MAX_RECORD, Reassembly},
    wire::swim_datagram,
};
use pb_sphinx::{Epoch, EpochKey};

const PEER: &str = "198.18.0.2:47471";

fn descriptor(pair: &IdentityKeyPair, host: u8) -> SignedDescriptor {
    pair.sign(&Descriptor {
        identity: pair.public(),
        version: 1,
        role: Role::Mix,
        epoch: Epoch(5),
        sphinx_current: EpochKey::from_secret(Epoch(5), [2; 32]).public_key(),
        sphinx_next: EpochKey::from_secret(Epoch(6), [3; 32]).public_key(),
        packet_addr: format!("198.18.0.{host}:47470").parse().unwrap(),
        gossip_addr: format!("198.18.0.{host}:47471").parse().unwrap(),
        link_key: pair.link_public(),
        transports: vec![],
    })
    .unwrap()
}

thread_local! {
    static NODE: RefCell<Gossip> = RefCell::new({
        let pair = IdentityKeyPair::from_seed(&[1; 32]);
        let own = descriptor(&pair, 1);
        let config = GossipConfig {
            allowed_prefixes: vec![("198.18.0.0".parse().unwrap(), 24)],
            ..GossipConfig::new([4; 32], vec![PEER.parse().unwrap()])
        };
        Gossip::new(config, pair, own, Epoch(5), 1, 7, Duration::ZERO).unwrap()
    });
    static FRAGMENTS: RefCell<(Reassembly, u64)> = RefCell::new((Reassembly::default(), 0));
    static PEER_KEY: (IdentityKeyPair, SignedDescriptor) = {
        let pair = IdentityKeyPair::from_seed(&[2; 32]);
        let own = descriptor(&pair, 2);
        (pair, own)
    };
}

fuzz_target!(|data: &[u8]| {
    if let Some(fragment) = data.strip_prefix(b"FRAG") {
        FRAGMENTS.with(|f| {
            let (reassembly, clock) = &mut *f.borrow_mut();
            *clock += 1;
            let _ = reassembly.receive(fragment, Duration::from_secs(*clock));
            while let Some(record) = reassembly.take() {
                assert!(!record.is_empty() && record.len() <= MAX_RECORD);
            }
            assert!(reassembly.pending() <= MAX_PENDING);
        });
        return;
    }
    let datagram = match data.strip_prefix(b"SIGN") {
        Some(packet) => PEER_KEY.with(|(pair, own)| swim_datagram(pair, own.bytes(), packet)),
        None => data.to_vec(),
    };
    NODE.with(|node| {
        let mut node = node.borrow_mut();
        let now = node.poll_timeout();
        node.handle_datagram(now, PEER.parse().unwrap(), &datagram);
        node.handle_timeout(now);
        while node.poll_transmit().is_some() {}
        let _ = node.topology();
    });
    if let Ok(signed) = SignedDescriptor::parse(data) {
        assert_eq!(signed.bytes(), data);
    }
});
