//! The stewards' admission policy (docs/spec/checkpoint.md, "Admission"): which of the
//! verified descriptors an epoch's checkpoint admits. Every steward applies it to its own
//! view, and it is a pure function of that view, so stewards with the same view sign the
//! same set.
//!
//! A descriptor is admitted when
//! 1. it is fresh: it has a Sphinx key for the epoch (its current key, or its next key one
//!    epoch on);
//! 2. that key is usable: a canonical encoding of a point on Curve25519 itself (not its
//!    twist) that is not of small order, so that a relay cannot make every client's shared
//!    secret with it predictable;
//! 3. its packet address's IPv4 /24 (or IPv6 /48) holds fewer admitted relays than the
//!    policy's cap; among the rest of a prefix, those of smallest node id go first.
//!
//! Liveness is not part of it: every admitted relay is dealt into the layers, and clients
//! and relays leave out those not live (as [`crate::Topology::compute_live`] does), so a
//! relay that fails or comes back changes neither the checkpoint nor anyone else's layer.

use std::{collections::HashMap, net::IpAddr};

use curve25519_dalek::montgomery::MontgomeryPoint;
use pb_sphinx::{Epoch, NodeId};

use crate::descriptor::SignedDescriptor;

/// The caps of the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Relays admitted per IPv4 /24.
    pub per_ipv4_24: usize,
    /// Relays admitted per IPv6 /48.
    pub per_ipv6_48: usize,
}

impl Default for Policy {
    /// Four relays per /24 and per /48: room for an operator's few machines, not for a
    /// sybil's hundreds.
    fn default() -> Self {
        Self {
            per_ipv4_24: 4,
            per_ipv6_48: 4,
        }
    }
}

/// Why a descriptor was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refused {
    /// No Sphinx key for the epoch.
    Stale,
    /// Its Sphinx key for the epoch is not a usable Curve25519 point.
    BadSphinxKey,
    /// Its prefix already holds the policy's cap.
    PrefixFull,
}

/// What admission decided.
#[derive(Debug, PartialEq, Eq)]
pub struct Admission<'d> {
    /// The admitted descriptors, in ascending node id.
    pub admitted: Vec<&'d SignedDescriptor>,
    /// The others, with why.
    pub refused: Vec<(NodeId, Refused)>,
}

/// Whether `key` is a usable X25519 public key: canonical (below 2^255 - 19), on the curve
/// rather than its twist, and not of small order.
pub fn usable_sphinx_key(key: &[u8; 32]) -> bool {
    // 2^255 - 19 in little-endian is ed ff .. ff 7f: a key with its top bit set, or at or
    // above that, is a second encoding of a smaller value.
    let at_or_above_p = key[31] == 0x7f && key[1..31].iter().all(|&b| b == 0xff) && key[0] >= 0xed;
    if key[31] & 0x80 != 0 || at_or_above_p {
        return false;
    }
    MontgomeryPoint(*key)
        .to_edwards(0)
        .is_some_and(|point| !point.is_small_order())
}

/// The prefix a cap counts in: the /24 of an IPv4 address (IPv4-mapped IPv6 included), the
/// /48 of an IPv6 one.
fn prefix(ip: IpAddr) -> (bool, [u8; 6]) {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            (true, [o[0], o[1], o[2], 0, 0, 0])
        }
        IpAddr::V6(v6) => {
            let o = v6.octets();
            (false, [o[0], o[1], o[2], o[3], o[4], o[5]])
        }
    }
}

/// Applies `policy` to `descriptors` for `epoch`.
pub fn admit<'d>(
    epoch: Epoch,
    descriptors: impl IntoIterator<Item = &'d SignedDescriptor>,
    policy: &Policy,
) -> Admission<'d> {
    let mut refused = Vec::new();
    let mut candidates: Vec<&SignedDescriptor> = Vec::new();
    for signed in descriptors {
        let d = signed.descriptor();
        let why = match d.sphinx_key(epoch) {
            None => Some(Refused::Stale),
            Some(key) if !usable_sphinx_key(&key) => Some(Refused::BadSphinxKey),
            Some(_) => None,
        };
        match why {
            Some(why) => refused.push((d.node_id(), why)),
            None => candidates.push(signed),
        }
    }
    candidates.sort_by_key(|s| s.descriptor().node_id().0);
    let mut counts: HashMap<(bool, [u8; 6]), usize> = HashMap::new();
    let mut admitted = Vec::with_capacity(candidates.len());
    for signed in candidates {
        let d = signed.descriptor();
        let key = prefix(d.packet_addr.ip());
        let cap = if key.0 {
            policy.per_ipv4_24
        } else {
            policy.per_ipv6_48
        };
        let count = counts.entry(key).or_insert(0);
        if *count >= cap {
            refused.push((d.node_id(), Refused::PrefixFull));
        } else {
            *count += 1;
            admitted.push(signed);
        }
    }
    Admission { admitted, refused }
}

#[cfg(test)]
mod tests;
