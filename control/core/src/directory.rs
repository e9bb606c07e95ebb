//! The directory: the verified descriptors a node knows, one per identity, the newest
//! version of each, bounded in number. Every refusal is counted by reason.

use std::collections::BTreeMap;

use pb_sphinx::Epoch;

use crate::descriptor::{IdentityKey, Invalid, SignedDescriptor};

/// What an offered descriptor did to the directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offered {
    /// A new identity.
    New,
    /// A newer version of a known identity.
    Updated,
    /// Exactly the descriptor already held (gossip repeats itself; not an error).
    Unchanged,
}

/// `ip` with an IPv4-mapped IPv6 address written as its IPv4 address.
fn canonical_ip(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        v4 => v4,
    }
}

/// Verified descriptors by identity.
#[derive(Debug)]
pub struct Directory {
    entries: BTreeMap<IdentityKey, SignedDescriptor>,
    capacity: usize,
    /// Networks whose special-purpose addresses descriptors may name anyway.
    allowed: Vec<(std::net::IpAddr, u8)>,
    rejected: [u64; Invalid::ALL.len()],
    equivocations: u64,
}

impl Directory {
    /// An empty directory holding at most `capacity` identities.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: BTreeMap::new(),
            capacity,
            allowed: Vec::new(),
            rejected: [0; Invalid::ALL.len()],
            equivocations: 0,
        }
    }

    /// Lets descriptors name special-purpose addresses in `networks` (a testbed's own).
    pub fn allowing(mut self, networks: Vec<(std::net::IpAddr, u8)>) -> Self {
        self.allowed = networks;
        self
    }

    /// Parses, verifies and files `bytes` while `epoch` is current: accepted if it carries
    /// the key of `epoch` or of the next one, and is newer than the version held.
    pub fn offer(&mut self, bytes: &[u8], epoch: Epoch) -> Result<Offered, Invalid> {
        // Gossip repeats itself: the exact bytes already held need no second verification.
        let held = bytes
            .get(4..36)
            .and_then(|id| <[u8; 32]>::try_from(id).ok())
            .and_then(|id| self.entries.get(&IdentityKey(id)));
        if held.is_some_and(|h| h.bytes() == bytes) {
            return Ok(Offered::Unchanged);
        }
        let result = SignedDescriptor::parse(bytes).and_then(|s| self.file(s, epoch));
        if let Err(reason) = result {
            self.rejected[reason.index()] += 1;
        }
        result
    }

    /// Files a descriptor already parsed and verified (e.g. this node's own).
    pub fn offer_signed(
        &mut self,
        signed: SignedDescriptor,
        epoch: Epoch,
    ) -> Result<Offered, Invalid> {
        let result = self.file(signed, epoch);
        if let Err(reason) = result {
            self.rejected[reason.index()] += 1;
        }
        result
    }

    fn file(&mut self, signed: SignedDescriptor, epoch: Epoch) -> Result<Offered, Invalid> {
        let d = signed.descriptor();
        if u64::from(d.epoch.0) + 1 < u64::from(epoch.0) {
            return Err(Invalid::StaleEpoch);
        }
        if u64::from(d.epoch.0) > u64::from(epoch.0) + 1 {
            return Err(Invalid::FutureEpoch);
        }
        if ![d.sphinx_current, d.sphinx_next, d.link_key]
            .iter()
            .all(crate::admission::usable_sphinx_key)
        {
            return Err(Invalid::BadKey);
        }
        if ![d.packet_addr, d.gossip_addr]
            .iter()
            .all(|a| crate::special::relay_may_use(a.ip(), &self.allowed))
        {
            return Err(Invalid::SpecialAddress);
        }
        if canonical_ip(d.packet_addr.ip()) != canonical_ip(d.gossip_addr.ip()) {
            return Err(Invalid::SplitAddress);
        }
        let held = self.entries.get(&d.identity);
        if held.is_some_and(|h| h.bytes() == signed.bytes()) {
            return Ok(Offered::Unchanged);
        }
        let claims = |other: &crate::Descriptor| {
            [other.gossip_addr, other.packet_addr]
                .iter()
                .any(|a| *a == d.gossip_addr || *a == d.packet_addr)
        };
        if self
            .entries
            .iter()
            .any(|(id, other)| *id != d.identity && claims(other.descriptor()))
        {
            return Err(Invalid::AddressTaken);
        }
        match held {
            // Two different descriptors signed with the same version: the relay equivocates
            // (shows different nodes different things). Every node keeps the same one, the
            // lower blake3 of the bytes, so that the views still agree; counted.
            Some(held) if held.descriptor().version == d.version => {
                self.equivocations += 1;
                if blake3::hash(signed.bytes()).as_bytes() < blake3::hash(held.bytes()).as_bytes() {
                    self.entries.insert(d.identity, signed);
                    Ok(Offered::Updated)
                } else {
                    Err(Invalid::OldVersion)
                }
            }
            Some(held) if held.descriptor().version > d.version => Err(Invalid::OldVersion),
            Some(_) => {
                self.entries.insert(d.identity, signed);
                Ok(Offered::Updated)
            }
            None if self.entries.len() >= self.capacity => Err(Invalid::DirectoryFull),
            None => {
                self.entries.insert(d.identity, signed);
                Ok(Offered::New)
            }
        }
    }

    /// Forgets `identity` (membership says it is down); a later, newer descriptor brings it
    /// back.
    pub fn remove(&mut self, identity: &IdentityKey) -> Option<SignedDescriptor> {
        self.entries.remove(identity)
    }

    /// Drops descriptors that have no key for `epoch` or later (after an epoch change).
    pub fn expire(&mut self, epoch: Epoch) {
        self.entries
            .retain(|_, s| u64::from(s.descriptor().epoch.0) + 1 >= u64::from(epoch.0));
    }

    /// The descriptor held for `identity`.
    pub fn get(&self, identity: &IdentityKey) -> Option<&SignedDescriptor> {
        self.entries.get(identity)
    }

    /// Every descriptor held, by identity.
    pub fn iter(&self) -> impl Iterator<Item = &SignedDescriptor> {
        self.entries.values()
    }

    /// Number held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Identities seen signing two different descriptors with one version.
    pub fn equivocations(&self) -> u64 {
        self.equivocations
    }

    /// Refusals so far for `reason`.
    pub fn rejected(&self, reason: Invalid) -> u64 {
        self.rejected[reason.index()]
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::descriptor::{Descriptor, IdentityKeyPair, Role};

    /// A descriptor of `pair` at addresses of its own (198.18.k.k, k its key's first byte).
    /// A directory allowing the tests' benchmarking range (198.18.0.0/15).
    fn testbed(capacity: usize) -> Directory {
        Directory::new(capacity).allowing(vec![("198.18.0.0".parse().unwrap(), 15)])
    }

    /// A real X25519 public key, from `secret`.
    fn key(secret: u8) -> [u8; 32] {
        pb_sphinx::EpochKey::from_secret(Epoch(0), [secret; 32]).public_key()
    }

    fn signed(pair: &IdentityKeyPair, version: u64, epoch: u32) -> SignedDescriptor {
        let k = pair.public().0[0];
        let at = |port| std::net::SocketAddr::new([198, 18, k, k].into(), port);
        pair.sign(&Descriptor {
            identity: pair.public(),
            version,
            role: Role::Mix,
            epoch: Epoch(epoch),
            sphinx_current: key(1),
            sphinx_next: key(2),
            packet_addr: at(47470),
            gossip_addr: at(47471),
            link_key: pair.link_public(),
            transports: vec![],
        })
        .unwrap()
    }

    #[test]
    fn an_address_belongs_to_the_first_identity_that_claims_it() {
        let a = IdentityKeyPair::from_seed(&[1; 32]);
        let b = IdentityKeyPair::from_seed(&[2; 32]);
        let mut dir = testbed(10);
        let held = signed(&a, 1, 5);
        dir.offer(held.bytes(), Epoch(5)).unwrap();
        // Another identity claiming either of a's addresses, as either of its own: refused.
        // (Its own two addresses share an IP: a descriptor's addresses always do.)
        let other = std::net::SocketAddr::new(held.descriptor().gossip_addr.ip(), 1);
        for (gossip, packet) in [
            (held.descriptor().gossip_addr, other),
            (other, held.descriptor().gossip_addr),
            (other, held.descriptor().packet_addr),
        ] {
            let mut squat = signed(&b, 1, 5).descriptor().clone();
            squat.gossip_addr = gossip;
            squat.packet_addr = packet;
            let squat = b.sign(&squat).unwrap();
            assert_eq!(
                dir.offer(squat.bytes(), Epoch(5)),
                Err(Invalid::AddressTaken)
            );
        }
        assert_eq!(dir.rejected(Invalid::AddressTaken), 3);
        // a itself may keep or move its addresses in a newer version.
        assert_eq!(
            dir.offer(signed(&a, 2, 5).bytes(), Epoch(5)),
            Ok(Offered::Updated)
        );
        // Once a's descriptor is gone (expired), the address is free again.
        dir.expire(Epoch(7));
        let mut late = signed(&b, 1, 7).descriptor().clone();
        late.gossip_addr = held.descriptor().gossip_addr;
        late.packet_addr = held.descriptor().packet_addr;
        assert_eq!(
            dir.offer(b.sign(&late).unwrap().bytes(), Epoch(7)),
            Ok(Offered::New)
        );
    }

    #[test]
    fn newer_versions_replace_older_ones_and_replays_are_refused() {
        let a = IdentityKeyPair::from_seed(&[1; 32]);
        let mut dir = testbed(10);
        let v1 = signed(&a, 1, 5);
        let v2 = signed(&a, 2, 5);
        assert_eq!(dir.offer(v1.bytes(), Epoch(5)), Ok(Offered::New));
        assert_eq!(dir.offer(v1.bytes(), Epoch(5)), Ok(Offered::Unchanged));
        assert_eq!(dir.offer(v2.bytes(), Epoch(5)), Ok(Offered::Updated));
        // The old version again: a replay.
        assert_eq!(dir.offer(v1.bytes(), Epoch(5)), Err(Invalid::OldVersion));
        assert_eq!(dir.rejected(Invalid::OldVersion), 1);
        // The same version with other contents: equivocation. Whatever the order they
        // arrive in, every directory keeps the same one of the two.
        let mut other = v2.descriptor().clone();
        other.sphinx_next = key(9);
        let other = a.sign(&other).unwrap();
        let _ = dir.offer(other.bytes(), Epoch(5));
        assert_eq!(dir.equivocations(), 1);
        let mut reversed = testbed(10);
        reversed.offer(other.bytes(), Epoch(5)).unwrap();
        let _ = reversed.offer(v2.bytes(), Epoch(5));
        assert_eq!(dir.get(&a.public()), reversed.get(&a.public()));
    }

    #[test]
    fn epochs_outside_the_window_are_refused_and_expire() {
        let a = IdentityKeyPair::from_seed(&[1; 32]);
        let mut dir = testbed(10);
        assert_eq!(
            dir.offer(signed(&a, 1, 3).bytes(), Epoch(5)),
            Err(Invalid::StaleEpoch)
        );
        assert_eq!(
            dir.offer(signed(&a, 1, 7).bytes(), Epoch(5)),
            Err(Invalid::FutureEpoch)
        );
        // Epoch 4's descriptor still has the key for 5; epoch 6's is published ahead.
        assert_eq!(
            dir.offer(signed(&a, 1, 4).bytes(), Epoch(5)),
            Ok(Offered::New)
        );
        let b = IdentityKeyPair::from_seed(&[2; 32]);
        assert_eq!(
            dir.offer(signed(&b, 1, 6).bytes(), Epoch(5)),
            Ok(Offered::New)
        );
        dir.expire(Epoch(6));
        assert_eq!(dir.len(), 1, "epoch 4's descriptor has no key for 6");
        assert_eq!(dir.rejected(Invalid::StaleEpoch), 1);
        assert_eq!(dir.rejected(Invalid::FutureEpoch), 1);
    }

    /// A relay whose Sphinx key is of small order, off the curve or not canonical would
    /// break every route through it (or make every client's secret with it guessable): its
    /// descriptor is refused and counted, whatever the signature says.
    #[test]
    fn unusable_sphinx_keys_are_refused_and_counted() {
        let a = IdentityKeyPair::from_seed(&[1; 32]);
        let mut dir = testbed(10);
        let good = signed(&a, 1, 5);
        // The identity (small order), p itself (non-canonical zero), a top bit set (a second
        // encoding), and a u-coordinate on the twist.
        let mut p = [0xff; 32];
        p[0] = 0xed;
        p[31] = 0x7f;
        let mut high = key(3);
        high[31] |= 0x80;
        let twist = (2u8..)
            .map(|b| [b; 32])
            .find(|u| {
                curve25519_dalek::montgomery::MontgomeryPoint(*u)
                    .to_edwards(0)
                    .is_none()
            })
            .unwrap();
        for (version, bad) in [[0; 32], p, high, twist].into_iter().enumerate() {
            for current in [true, false] {
                let mut d = good.descriptor().clone();
                d.version = 2 + 2 * version as u64 + u64::from(current);
                if current {
                    d.sphinx_current = bad;
                } else {
                    d.sphinx_next = bad;
                }
                let bytes = a.sign(&d).unwrap();
                assert_eq!(dir.offer(bytes.bytes(), Epoch(5)), Err(Invalid::BadKey));
            }
        }
        assert_eq!(dir.rejected(Invalid::BadKey), 8);
        assert_eq!(dir.offer(good.bytes(), Epoch(5)), Ok(Offered::New));
    }

    /// A descriptor naming a loopback, private or otherwise special-purpose address is
    /// refused and counted, unless the network allows that range (a testbed's own).
    #[test]
    fn special_purpose_addresses_are_refused_unless_allowed() {
        let a = IdentityKeyPair::from_seed(&[1; 32]);
        let mut d = signed(&a, 1, 5).descriptor().clone();
        let mut open = Directory::new(10);
        for (version, addr) in [
            "127.0.0.1:53",
            "10.0.0.1:47470",
            "[::1]:53",
            "198.18.1.1:47470",
        ]
        .into_iter()
        .enumerate()
        {
            d.version = version as u64 + 1;
            d.packet_addr = addr.parse().unwrap();
            d.gossip_addr = std::net::SocketAddr::new(d.packet_addr.ip(), 47471);
            let bytes = a.sign(&d).unwrap();
            assert_eq!(
                open.offer(bytes.bytes(), Epoch(5)),
                Err(Invalid::SpecialAddress),
                "{addr}"
            );
        }
        assert_eq!(open.rejected(Invalid::SpecialAddress), 4);
        let mut allowed = testbed(10);
        assert_eq!(
            allowed.offer(a.sign(&d).unwrap().bytes(), Epoch(5)),
            Ok(Offered::New)
        );
    }

    /// A packet address on another IP than the gossip address is refused and counted: only
    /// the gossip address is proven by a probe, so links would go to an unproven host.
    #[test]
    fn a_packet_address_away_from_the_gossip_address_is_refused() {
        let a = IdentityKeyPair::from_seed(&[1; 32]);
        let mut d = signed(&a, 1, 5).descriptor().clone();
        let mut dir = testbed(10);
        d.packet_addr = "198.18.77.77:53".parse().unwrap();
        assert_eq!(
            dir.offer(a.sign(&d).unwrap().bytes(), Epoch(5)),
            Err(Invalid::SplitAddress)
        );
        // The same IP written as IPv4-mapped IPv6 is the same host.
        d.version = 2;
        let v4 = match d.gossip_addr.ip() {
            std::net::IpAddr::V4(v4) => v4,
            std::net::IpAddr::V6(_) => unreachable!("the test's addresses are IPv4"),
        };
        d.packet_addr = std::net::SocketAddr::new(v4.to_ipv6_mapped().into(), 47470);
        assert_eq!(
            dir.offer(a.sign(&d).unwrap().bytes(), Epoch(5)),
            Ok(Offered::New)
        );
        assert_eq!(dir.rejected(Invalid::SplitAddress), 1);
    }

    #[test]
    fn bad_bytes_are_counted_and_capacity_is_bounded() {
        let mut dir = testbed(1);
        assert!(dir.offer(b"nonsense", Epoch(1)).is_err());
        assert_eq!(dir.rejected(Invalid::Malformed("")), 1);
        let mut forged = signed(&IdentityKeyPair::from_seed(&[1; 32]), 1, 1)
            .bytes()
            .to_vec();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert_eq!(dir.offer(&forged, Epoch(1)), Err(Invalid::BadSignature));
        let a = signed(&IdentityKeyPair::from_seed(&[1; 32]), 1, 1);
        let b = signed(&IdentityKeyPair::from_seed(&[2; 32]), 1, 1);
        assert_eq!(dir.offer(a.bytes(), Epoch(1)), Ok(Offered::New));
        assert_eq!(dir.offer(b.bytes(), Epoch(1)), Err(Invalid::DirectoryFull));
        assert!(dir.remove(&a.descriptor().identity).is_some());
        assert_eq!(dir.offer(b.bytes(), Epoch(1)), Ok(Offered::New));
    }
}
