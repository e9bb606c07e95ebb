//! The directory as the client fetches it over the client link (`pb_proto::link`). Every
//! descriptor a gateway serves is verified here (size, fields, canonical form, Ed25519
//! signature) before it counts; the topology is then computed locally, so the gateway can
//! withhold relays but not forge or move one.

use pb_control::{SignedDescriptor, Topology, TopologyError};
use pb_sphinx::{Epoch, NodeId};

/// A descriptor's signed bytes, and whether the gateway says its relay is live.
pub type Entry = (bool, Vec<u8>);

/// Pages of one directory fetch, as they arrive.
#[derive(Debug)]
pub struct Fetch {
    /// The nonce the requests carried.
    pub nonce: [u8; 8],
    /// The epoch and the node the gateway says it is, as its first page gave them.
    epoch: Option<(Epoch, NodeId)>,
    pages: Vec<Option<Vec<Entry>>>,
}

impl Fetch {
    /// A fetch with `nonce`, page 0 asked for first.
    pub fn new(nonce: [u8; 8]) -> Self {
        Self {
            nonce,
            epoch: None,
            pages: vec![None],
        }
    }

    /// Pages not received yet (to ask for again).
    pub fn missing(&self) -> Vec<u8> {
        (0..self.pages.len())
            .filter(|p| self.pages[*p].is_none())
            .map(|p| p as u8)
            .collect()
    }

    /// Takes a page; whether it was new. Pages of another fetch, of another epoch or naming
    /// another gateway, and pages already held (a duplicate answer), are ignored.
    pub fn take(
        &mut self,
        nonce: [u8; 8],
        page: u8,
        pages: u8,
        (epoch, gateway): (Epoch, NodeId),
        descriptors: &[(bool, &[u8])],
    ) -> bool {
        if nonce != self.nonce || pages == 0 || self.epoch.is_some_and(|e| e != (epoch, gateway)) {
            return false;
        }
        self.epoch = Some((epoch, gateway));
        self.pages.resize(usize::from(pages), None);
        match self.pages.get_mut(usize::from(page)) {
            Some(slot @ None) => {
                *slot = Some(descriptors.iter().map(|(l, d)| (*l, d.to_vec())).collect());
                true
            }
            _ => false,
        }
    }

    /// Whether every page is in.
    pub fn is_complete(&self) -> bool {
        self.epoch.is_some() && self.pages.iter().all(Option::is_some)
    }

    /// The epoch, the node the gateway says it is, and every descriptor (with whether it
    /// is live), once all pages are in.
    pub fn complete(&self) -> Option<(Epoch, NodeId, Vec<Entry>)> {
        let (epoch, gateway) = self.epoch?;
        let mut all = Vec::new();
        for page in &self.pages {
            all.extend(page.as_ref()?.iter().cloned());
        }
        Some((epoch, gateway, all))
    }
}

/// Verifies every descriptor and computes the topology as the relays do (every descriptor
/// dealt over the layers, the live ones kept); returns it and how many descriptors were
/// refused.
pub fn topology(
    network_seed: &[u8; 32],
    epoch: Epoch,
    descriptors: &[Entry],
) -> Result<(Topology, usize), TopologyError> {
    let mut refused = 0;
    let verified: Vec<(bool, SignedDescriptor)> = descriptors
        .iter()
        .filter_map(|(live, bytes)| match SignedDescriptor::parse(bytes) {
            Ok(d) => Some((*live, d)),
            Err(_) => {
                refused += 1;
                None
            }
        })
        .collect();
    let live: std::collections::BTreeSet<_> = verified
        .iter()
        .filter(|(l, _)| *l)
        .map(|(_, d)| d.descriptor().identity)
        .collect();
    let topology = Topology::compute_live(
        network_seed,
        epoch,
        verified.iter().map(|(_, d)| d.descriptor()),
        |d| live.contains(&d.identity),
    )?;
    Ok((topology, refused))
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: NodeId = NodeId([9; 16]);

    #[test]
    fn a_fetch_takes_each_page_once_and_only_its_own() {
        let mut fetch = Fetch::new([1; 8]);
        assert_eq!(fetch.missing(), vec![0]);
        let one: &[u8] = b"one";
        assert!(
            !fetch.take([2; 8], 0, 2, (Epoch(7), G), &[(true, one)]),
            "another fetch"
        );
        assert!(fetch.take([1; 8], 0, 2, (Epoch(7), G), &[(true, one)]));
        assert!(
            !fetch.take([1; 8], 0, 2, (Epoch(7), G), &[(true, one)]),
            "a duplicate"
        );
        assert_eq!(fetch.missing(), vec![1]);
        assert!(!fetch.is_complete() && fetch.complete().is_none());
        assert!(
            !fetch.take([1; 8], 1, 2, (Epoch(8), G), &[(false, one)]),
            "another epoch"
        );
        assert!(
            !fetch.take([1; 8], 1, 2, (Epoch(7), NodeId([8; 16])), &[(false, one)]),
            "another gateway"
        );
        assert!(fetch.take([1; 8], 1, 2, (Epoch(7), G), &[(false, one)]));
        assert!(fetch.is_complete());
        let (epoch, gateway, all) =
            fetch
                .complete()
                .unwrap_or((Epoch(0), NodeId([0; 16]), Vec::new()));
        assert_eq!((epoch, gateway), (Epoch(7), G));
        assert_eq!(all, vec![(true, one.to_vec()), (false, one.to_vec())]);
        assert!(
            !fetch.take([1; 8], 1, 2, (Epoch(7), G), &[(false, one)]),
            "after completion"
        );
    }
}
