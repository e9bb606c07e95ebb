//! Any bytes as a gossip datagram to a running node: a SWIM packet, a descriptor sync or
//! junk. The node must count and drop what it cannot use, never panic. Any bytes as a
//! descriptor: if they parse, they are the one canonical encoding of what they hold.
#![no_main]

use std::{cell::RefCell, time::Duration};

use libfuzzer_sys::fuzz_target;
use pb_control::{Descriptor, Gossip, GossipConfig, IdentityKeyPair, Role, SignedDescriptor};
use pb_sphinx::Epoch;

thread_local! {
    static NODE: RefCell<Gossip> = RefCell::new(node());
}

fn node() -> Gossip {
    let pair = IdentityKeyPair::from_seed(&[1; 32]);
    let own = pair
        .sign(&Descriptor {
            identity: pair.public(),
            version: 1,
            role: Role::Mix,
            epoch: Epoch(5),
            sphinx_current: [2; 32],
            sphinx_next: [3; 32],
            packet_addr: "198.18.0.1:47470".parse().unwrap(),
            gossip_addr: "198.18.0.1:47471".parse().unwrap(),
            transports: vec![],
        })
        .unwrap();
    let seeds = vec!["198.18.0.2:47471".parse().unwrap()];
    Gossip::new(
        GossipConfig::new([4; 32]),
        own,
        Epoch(5),
        seeds,
        1,
        7,
        Duration::ZERO,
    )
    .unwrap()
}

fuzz_target!(|data: &[u8]| {
    NODE.with(|node| {
        let mut node = node.borrow_mut();
        let now = node.poll_timeout();
        node.handle_datagram(now, "198.18.0.2:47471".parse().unwrap(), data);
        node.handle_timeout(now);
        while node.poll_transmit().is_some() {}
        let _ = node.topology();
    });
    if let Ok(signed) = SignedDescriptor::parse(data) {
        assert_eq!(signed.bytes(), data);
    }
});
