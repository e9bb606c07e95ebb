//! The stratified topology of one epoch, which every node computes by itself from the same
//! verified descriptors and gets the same answer: gateways in layer 0, the mixes dealt over
//! [`MIX_LAYERS`] layers in an order drawn from the epoch's randomness, exits in the last
//! layer. Its [`hash`](Topology::hash) lets nodes, tests and operators compare views.

use std::{collections::BTreeMap, net::SocketAddr};

use pb_sphinx::{Epoch, NodeId};

use crate::descriptor::{Descriptor, IdentityKey, Role};

/// Mix layers between the gateways and the exits.
pub const MIX_LAYERS: usize = 3;
/// All layers: gateways, the mix layers, exits.
pub const LAYERS: usize = MIX_LAYERS + 2;

/// One node's place in a topology.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    /// Its node id.
    pub node: NodeId,
    /// Its identity.
    pub identity: IdentityKey,
    /// Its role.
    pub role: Role,
    /// Its layer (0 gateways, 1..=MIX_LAYERS mixes, then exits).
    pub layer: usize,
    /// Where its packets go.
    pub packet_addr: SocketAddr,
    /// Its Sphinx public key for the topology's epoch.
    pub sphinx_key: [u8; 32],
    /// Its link key (a gateway's: clients' Noise handshakes are made to it).
    pub link_key: [u8; 32],
}

/// The layers of one epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    epoch: Epoch,
    layers: Vec<Vec<Placed>>,
    hash: [u8; 32],
    /// Route weights by node (the ledger's reputation table, docs/spec/ledger.md); a node
    /// not in it weighs `unlisted`. Empty: every node weighs the same. Not in the hash:
    /// the weights say how to choose among the nodes, not which nodes there are.
    weights: BTreeMap<NodeId, u64>,
    unlisted: u64,
}

/// Why no topology could be formed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    /// A layer would be empty: too few gateways, mixes or exits with a key for the epoch.
    #[error("layer {layer} has no node with a key for the epoch")]
    EmptyLayer {
        /// Which.
        layer: usize,
    },
}

impl Topology {
    /// The topology of `epoch` over the descriptors that hold a Sphinx key for it, with the
    /// epoch's randomness drawn from `network_seed` (the network's shared constant).
    pub fn compute<'a>(
        network_seed: &[u8; 32],
        epoch: Epoch,
        descriptors: impl IntoIterator<Item = &'a Descriptor>,
    ) -> Result<Self, TopologyError> {
        Self::compute_live(network_seed, epoch, descriptors, |_| true)
    }

    /// As [`compute`](Self::compute), but only the nodes `live` accepts take part: the
    /// mixes are dealt over the layers among *all* the descriptors, then the others are left
    /// out. So a relay that fails or comes back changes nothing but its own place, and two
    /// nodes whose views of who is alive differ still put every mix in the same layer.
    pub fn compute_live<'a>(
        network_seed: &[u8; 32],
        epoch: Epoch,
        descriptors: impl IntoIterator<Item = &'a Descriptor>,
        live: impl Fn(&Descriptor) -> bool,
    ) -> Result<Self, TopologyError> {
        let mut layers: Vec<Vec<Placed>> = vec![Vec::new(); LAYERS];
        let mut mixes: Vec<([u8; 32], bool, Placed)> = Vec::new();
        let order_key = epoch_key(network_seed, epoch);
        for d in descriptors {
            let Some(sphinx_key) = d.sphinx_key(epoch) else {
                continue;
            };
            let alive = live(d);
            let placed = Placed {
                node: d.node_id(),
                identity: d.identity,
                role: d.role,
                layer: 0,
                packet_addr: d.packet_addr,
                sphinx_key,
                link_key: d.link_key,
            };
            match d.role {
                Role::Gateway if alive => layers[0].push(placed),
                Role::Exit if alive => layers[LAYERS - 1].push(Placed {
                    layer: LAYERS - 1,
                    ..placed
                }),
                Role::Mix => {
                    let rank = *blake3::keyed_hash(&order_key, &d.identity.0).as_bytes();
                    mixes.push((rank, alive, placed));
                }
                Role::Gateway | Role::Exit => {}
            }
        }
        // Mixes in the epoch's random order, dealt over the layers in turn: layer sizes
        // differ by at most one, and nobody picks their own layer.
        mixes.sort_by(|a, b| a.0.cmp(&b.0).then(a.2.identity.cmp(&b.2.identity)));
        for (i, (_, alive, placed)) in mixes.into_iter().enumerate() {
            let layer = 1 + i % MIX_LAYERS;
            if alive {
                layers[layer].push(Placed { layer, ..placed });
            }
        }
        for (layer, nodes) in layers.iter_mut().enumerate() {
            nodes.sort_by(|a, b| a.node.0.cmp(&b.node.0).then(a.identity.cmp(&b.identity)));
            if nodes.is_empty() {
                return Err(TopologyError::EmptyLayer { layer });
            }
        }
        let hash = digest(epoch, &layers);
        Ok(Self {
            epoch,
            layers,
            hash,
            weights: BTreeMap::new(),
            unlisted: 1,
        })
    }

    /// The epoch.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The nodes of `layer`, by node id.
    pub fn layer(&self, layer: usize) -> &[Placed] {
        self.layers.get(layer).map_or(&[], Vec::as_slice)
    }

    /// Every node, layer by layer.
    pub fn nodes(&self) -> impl Iterator<Item = &Placed> {
        self.layers.iter().flatten()
    }

    /// The node with id `node`.
    pub fn find(&self, node: NodeId) -> Option<&Placed> {
        self.nodes().find(|p| p.node == node)
    }

    /// The nodes `node` sends to on the way out: the whole next layer (exits send to
    /// gateways, which carries relays' loops around).
    pub fn next_layer(&self, node: NodeId) -> &[Placed] {
        match self.find(node) {
            Some(p) => self.layer((p.layer + 1) % LAYERS),
            None => &[],
        }
    }

    /// Every node `node` has a link to: the next layer, and, except for gateways, the
    /// previous layer too. Replies travel back that way (exit, mix layers 3, 2, 1, then the
    /// client's gateway), so every relay keeps a constant-rate link in both directions.
    pub fn links(&self, node: NodeId) -> Vec<&Placed> {
        let Some(p) = self.find(node) else {
            return Vec::new();
        };
        let mut links: Vec<&Placed> = self.layer((p.layer + 1) % LAYERS).iter().collect();
        if p.layer > 0 {
            links.extend(self.layer(p.layer - 1));
        }
        links
    }

    /// A digest of the whole topology: equal hashes, equal topologies.
    pub fn hash(&self) -> [u8; 32] {
        self.hash
    }

    /// Routes choose a node of a layer with probability proportional to its weight in
    /// `weights`, or `unlisted` if it is not there (a relay new to the ledger). Empty
    /// `weights`: all alike.
    pub fn weigh(&mut self, weights: BTreeMap<NodeId, u64>, unlisted: u64) {
        self.unlisted = if weights.is_empty() { 1 } else { unlisted };
        self.weights = weights;
    }

    /// A node's route weight (1 for every node when the topology is not weighed).
    pub fn weight(&self, node: &NodeId) -> u64 {
        self.weights.get(node).copied().unwrap_or(self.unlisted)
    }

    /// A node of `layer` for a route, drawn by weight: `below(n)` must return a uniform
    /// draw from `0..n`. `None` for an empty layer. Nodes of weight 0 are chosen only if
    /// every node of the layer weighs 0 (then all alike).
    pub fn pick(&self, layer: usize, below: impl FnOnce(usize) -> usize) -> Option<&Placed> {
        let nodes = self.layer(layer);
        let total: u64 = nodes.iter().map(|p| self.weight(&p.node)).sum();
        let Ok(total) = usize::try_from(total) else {
            return nodes.get(below(nodes.len()));
        };
        if total == 0 {
            return nodes.get(below(nodes.len()));
        }
        let mut draw = below(total) as u64;
        for p in nodes {
            let w = self.weight(&p.node);
            if draw < w {
                return Some(p);
            }
            draw -= w;
        }
        nodes.last()
    }
}

/// The key that orders the mixes of `epoch`.
fn epoch_key(network_seed: &[u8; 32], epoch: Epoch) -> [u8; 32] {
    let mut material = [0u8; 36];
    material[..32].copy_from_slice(network_seed);
    material[32..].copy_from_slice(&epoch.0.to_be_bytes());
    blake3::derive_key("PhantomBand v1 mix layer order", &material)
}

fn digest(epoch: Epoch, layers: &[Vec<Placed>]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("PhantomBand v1 topology hash");
    h.update(&epoch.0.to_be_bytes());
    for nodes in layers {
        h.update(&(nodes.len() as u32).to_be_bytes());
        for p in nodes {
            h.update(&p.identity.0);
            h.update(&p.node.0);
            h.update(&[match p.role {
                Role::Gateway => 0,
                Role::Mix => 1,
                Role::Exit => 2,
            }]);
            h.update(&p.sphinx_key);
            let mut addr = [0u8; crate::addr::MAX_LEN];
            let mut room = &mut addr[..];
            crate::addr::put(&mut room, p.packet_addr);
            let written = crate::addr::MAX_LEN - room.len();
            h.update(&addr[..written]);
        }
    }
    *h.finalize().as_bytes()
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::descriptor::IdentityKeyPair;

    fn node(i: u8, role: Role, epoch: u32) -> Descriptor {
        Descriptor {
            identity: IdentityKeyPair::from_seed(&[i; 32]).public(),
            version: 1,
            role,
            epoch: Epoch(epoch),
            sphinx_current: [i; 32],
            sphinx_next: [i ^ 0xff; 32],
            packet_addr: SocketAddr::new([198, 18, 0, i].into(), 47470),
            gossip_addr: SocketAddr::new([198, 18, 0, i].into(), 47471),
            link_key: IdentityKeyPair::from_seed(&[i; 32]).link_public(),
            transports: vec![],
        }
    }

    fn network(epoch: u32) -> Vec<Descriptor> {
        let mut nodes = vec![node(1, Role::Gateway, epoch), node(2, Role::Exit, epoch)];
        nodes.extend((10..19).map(|i| node(i, Role::Mix, epoch)));
        nodes
    }

    #[test]
    fn every_order_of_the_same_descriptors_gives_the_same_topology() {
        let nodes = network(4);
        let t = Topology::compute(&[5; 32], Epoch(4), &nodes).unwrap();
        let mut reversed = nodes.clone();
        reversed.reverse();
        assert_eq!(Topology::compute(&[5; 32], Epoch(4), &reversed).unwrap(), t);
        assert_eq!(t.layer(0).len(), 1);
        assert_eq!(t.layer(4).len(), 1);
        for layer in 1..=MIX_LAYERS {
            assert_eq!(t.layer(layer).len(), 3, "balanced mix layers");
        }
        assert_eq!(t.nodes().count(), nodes.len());
        let gw = t.layer(0)[0].node;
        assert_eq!(t.next_layer(gw), t.layer(1));
        assert_eq!(t.next_layer(t.layer(4)[0].node), t.layer(0));
        // Links: gateways only forward; the others both ways (the exit: gateways and the
        // third mix layer).
        let ids = |v: Vec<&Placed>| v.iter().map(|p| p.node).collect::<Vec<_>>();
        let layer_ids = |l: usize| t.layer(l).iter().map(|p| p.node).collect::<Vec<_>>();
        assert_eq!(ids(t.links(gw)), layer_ids(1));
        let exit = t.layer(4)[0].node;
        assert_eq!(ids(t.links(exit)), [layer_ids(0), layer_ids(3)].concat());
        let mix = t.layer(2)[1].node;
        assert_eq!(ids(t.links(mix)), [layer_ids(3), layer_ids(1)].concat());
    }

    #[test]
    fn weighed_routes_choose_nodes_in_proportion_to_their_weights() {
        let nodes = network(4);
        let mut t = Topology::compute(&[5; 32], Epoch(4), &nodes).unwrap();
        let hash = t.hash();
        let layer: Vec<NodeId> = t.layer(2).iter().map(|p| p.node).collect();
        // Every draw of 0..n, once: the count each node gets is exactly its weight's share.
        let counts = |t: &Topology| {
            let total: u64 = layer.iter().map(|n| t.weight(n)).sum();
            let mut counts = BTreeMap::new();
            for draw in 0..total as usize {
                let picked = t.pick(2, |n| {
                    assert_eq!(n, total as usize);
                    draw
                });
                *counts.entry(picked.unwrap().node).or_insert(0u64) += 1;
            }
            layer
                .iter()
                .map(|n| counts.get(n).copied().unwrap_or(0))
                .collect::<Vec<_>>()
        };
        assert_eq!(counts(&t), [1, 1, 1], "unweighed: all alike");
        // The first node well reputed, the second badly, the third new to the ledger.
        t.weigh(
            [(layer[0], 900_000), (layer[1], 150_000)]
                .into_iter()
                .collect(),
            100_000,
        );
        assert_eq!(t.hash(), hash, "weights are not part of the topology");
        assert_eq!(counts(&t), [900_000, 150_000, 100_000]);
        // Weights of zero: chosen only when the whole layer weighs nothing.
        t.weigh(layer.iter().map(|n| (*n, 0)).collect(), 100_000);
        assert_eq!(t.pick(2, |n| n - 1).unwrap().node, layer[2]);
        t.weigh([(layer[0], 0)].into_iter().collect(), 5);
        assert_eq!(counts(&t), [0, 5, 5]);
        assert!(t.pick(7, |_| 0).is_none(), "no such layer");
    }

    #[test]
    fn a_node_that_is_down_leaves_its_place_and_moves_nobody() {
        let nodes = network(4);
        let all = Topology::compute(&[5; 32], Epoch(4), &nodes).unwrap();
        let gone = all.layer(2)[0].identity;
        let without =
            Topology::compute_live(&[5; 32], Epoch(4), &nodes, |d| d.identity != gone).unwrap();
        assert_eq!(without.nodes().count(), all.nodes().count() - 1);
        for p in without.nodes() {
            assert_eq!(all.find(p.node).map(|q| q.layer), Some(p.layer), "moved");
        }
        assert_ne!(without.hash(), all.hash());
    }

    #[test]
    fn the_layers_change_with_the_epoch_and_the_seed() {
        // Keys for epoch 5 are the descriptors' "next" keys.
        let nodes = network(4);
        let a = Topology::compute(&[5; 32], Epoch(4), &nodes).unwrap();
        let b = Topology::compute(&[5; 32], Epoch(5), &nodes).unwrap();
        let c = Topology::compute(&[6; 32], Epoch(4), &nodes).unwrap();
        let layers = |t: &Topology| -> Vec<Vec<NodeId>> {
            (1..=MIX_LAYERS)
                .map(|l| t.layer(l).iter().map(|p| p.node).collect())
                .collect()
        };
        assert_ne!(layers(&a), layers(&b));
        assert_ne!(layers(&a), layers(&c));
        assert_eq!(b.layer(0)[0].sphinx_key, [1 ^ 0xff; 32]);
        assert_ne!(a.hash(), b.hash());
        // Epoch 6: nobody has a key, so no topology.
        assert_eq!(
            Topology::compute(&[5; 32], Epoch(6), &nodes),
            Err(TopologyError::EmptyLayer { layer: 0 })
        );
    }

    #[test]
    fn the_hash_covers_keys_and_addresses() {
        let nodes = network(4);
        let t = Topology::compute(&[5; 32], Epoch(4), &nodes).unwrap();
        let mut moved = nodes.clone();
        moved[3].packet_addr.set_port(1);
        let mut rekeyed = nodes.clone();
        rekeyed[3].sphinx_current = [0; 32];
        for other in [moved, rekeyed] {
            assert_ne!(
                Topology::compute(&[5; 32], Epoch(4), &other)
                    .unwrap()
                    .hash(),
                t.hash()
            );
        }
        let mut too_few = nodes.clone();
        too_few.truncate(4);
        assert_eq!(
            Topology::compute(&[5; 32], Epoch(4), &too_few),
            Err(TopologyError::EmptyLayer { layer: 3 })
        );
    }
}
