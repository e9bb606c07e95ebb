//! Static mode: the network comes from a topology file and this relay's epoch secret from
//! its configuration file; SIGHUP re-reads both to rotate to the next epoch. The new key
//! becomes current; the old one stays accepted for the overlap (a sixth of
//! `mix.epoch_seconds`, at most a minute), after which it is dropped and its replay table
//! cleared and readied for the epoch after the new one ([`crate::replay`]).

use std::{
    path::{Path, PathBuf},
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};
use pb_pipeline::{LoopPlan, Neighbour};
use pb_sphinx::{Epoch, EpochKey, Format, Hop, NodeKeys};

use crate::{
    config::{RelayConfig, Topology, TopologyNode},
    core::Shared,
    replay::{self, Ingress, ReplayPlan},
};

/// The configuration and topology files, parsed and checked against each other.
#[derive(Debug)]
pub struct Loaded {
    /// The relay's configuration.
    pub config: RelayConfig,
    /// The network.
    pub topology: Topology,
    /// This epoch's key.
    pub key: EpochKey,
    /// The replay filter it needs.
    pub replay: ReplayPlan,
}

/// Reads the configuration at `path` and the topology it names, and sizes the replay filter
/// for this node's place in it.
pub fn load(path: &Path) -> anyhow::Result<Loaded> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    let dir = path.parent().map(PathBuf::from).unwrap_or_default();
    let config = RelayConfig::from_toml(&text, &dir)
        .with_context(|| format!("config {}", path.display()))?;
    let topology_text = std::fs::read_to_string(&config.topology)
        .with_context(|| format!("cannot read topology {}", config.topology.display()))?;
    let topology = Topology::from_toml(&topology_text)
        .with_context(|| format!("topology {}", config.topology.display()))?;
    let key = EpochKey::from_secret(config.epoch, *config.secret.expose());
    let me = topology
        .node(config.node)
        .ok_or_else(|| anyhow!("node.id: not in the topology"))?;
    if me.public_key != key.public_key() {
        return Err(anyhow!(
            "node.secret: does not match this node's public key in the topology"
        ));
    }
    let replay = replay::plan(&config, Ingress::topology(&topology, config.node))
        .with_context(|| format!("config {}", path.display()))?;
    Ok(Loaded {
        config,
        topology,
        key,
        replay,
    })
}

impl Loaded {
    /// This relay's node in the topology.
    pub fn me(&self) -> anyhow::Result<&TopologyNode> {
        self.topology
            .node(self.config.node)
            .ok_or_else(|| anyhow!("node.id: not in the topology"))
    }

    /// The links: every node of the next layer.
    pub fn neighbours(&self) -> Vec<Neighbour> {
        self.topology
            .neighbours(self.config.node)
            .iter()
            .map(|n| Neighbour {
                node: n.id,
                addr: n.addr,
            })
            .collect()
    }

    /// One loop plan per link, with this epoch's keys: the neighbour, a node drawn from each
    /// following layer, back to this node.
    pub fn plans(&self) -> Vec<Option<LoopPlan>> {
        let hop = |n: &TopologyNode| Hop {
            node: n.id,
            public_key: n.public_key,
            delay: pb_sphinx::DelayMs(0),
        };
        let me = self.topology.node(self.config.node).map(hop);
        self.topology
            .neighbours(self.config.node)
            .iter()
            .map(|n| {
                let via: Vec<Vec<Hop>> = self
                    .topology
                    .loop_layers(self.config.node, n)
                    .into_iter()
                    .map(|layer| layer.into_iter().map(hop).collect())
                    .collect();
                let fits = via.len() + 2 <= pb_sphinx::MAX_HOPS;
                Some(LoopPlan {
                    first: hop(n),
                    via: if fits { via } else { Vec::new() },
                    // A static network keeps no ledger: all alike.
                    weights: Vec::new(),
                    back: me.filter(|_| fits),
                })
            })
            .collect()
    }
}

/// The running relay's state that a reload may change.
#[derive(Debug)]
pub struct Running {
    /// The configuration file.
    pub path: PathBuf,
    /// The current epoch.
    pub epoch: Epoch,
    /// Its key.
    pub key: EpochKey,
    /// The previous epoch's key, through the overlap after a rotation.
    pub previous: Option<EpochKey>,
    /// When the overlap ends.
    pub overlap_until: Option<Instant>,
    /// How long the previous epoch's key stays accepted after a rotation.
    pub overlap: Duration,
    /// The links (a reload may not change them).
    pub neighbours: Vec<Neighbour>,
    /// The packet format (a reload may not change it).
    pub format: Format,
}

impl Running {
    /// The keys the cores process with: the current one, and the previous one through the
    /// overlap.
    pub fn node_keys(&self) -> NodeKeys {
        NodeKeys {
            current: self.key.clone(),
            previous: self.previous.clone(),
            format: Some(self.format),
        }
    }

    /// At `now`: if the overlap has just ended, the previous epoch, whose key is now
    /// dropped (hand [`node_keys`](Self::node_keys) to the cores, then retire its table).
    pub fn overlap_ended(&mut self, now: Instant) -> Option<Epoch> {
        if self.overlap_until.is_none_or(|until| now < until) {
            return None;
        }
        self.overlap_until = None;
        self.previous.take().map(|key| key.epoch())
    }

    /// `/status` of the admin endpoint.
    pub fn status(&self, node: pb_sphinx::NodeId, role: &str) -> String {
        let id: String = node.0.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "node {id}\nrole {role}\nepoch {}\nmode static\nlinks {}\n",
            self.epoch.0,
            self.neighbours.len()
        )
    }
}

/// Rotates to the next epoch from the configuration files: the new key becomes current, the
/// old one previous until the overlap ends (a previous key still in its overlap is dropped
/// now). The new epoch's replay table is ready, normally since the last overlap ended. The
/// line to announce once every core has taken the new keys.
pub fn rotate(running: &mut Running, shared: &Shared) -> anyhow::Result<String> {
    let loaded = load(&running.path)?;
    let next = Epoch(running.epoch.0.wrapping_add(1));
    if loaded.config.epoch != next {
        return Err(anyhow!(
            "node.epoch: {} is not the next epoch ({}); restart the relay to jump epochs",
            loaded.config.epoch.0,
            next.0
        ));
    }
    if loaded.config.format != running.format {
        return Err(anyhow!("node.format: changing it needs a restart"));
    }
    if loaded.neighbours() != running.neighbours {
        return Err(anyhow!(
            "topology: this node's links changed; changing them needs a restart"
        ));
    }
    if loaded.replay.capacity > shared.replay.capacity() {
        return Err(anyhow!(
            "topology: the replay filter holds {} packets per epoch, and this node's place in the new topology (or the new [mix] settings) needs {}: growing it needs a restart",
            shared.replay.capacity(),
            loaded.replay.capacity
        ));
    }
    // The table first, so that no core holding the new key finds none for its packets;
    // a core still on the old keys for a turn drops the new epoch's packets as future.
    replay::begin(&shared.replay, next);
    shared.keys.keys.set(NodeKeys {
        current: loaded.key.clone(),
        previous: Some(running.key.clone()),
        format: Some(running.format),
    });
    shared.cover.set_routes(next, loaded.plans(), false);
    shared.roles.epoch.store(next.0, Ordering::Relaxed);
    // Announce the rotation only once every core processes with the new keys.
    if !shared.keys.wait_adopted(Duration::from_secs(5)) {
        return Err(anyhow!(
            "a pipeline core did not take the new keys within 5 s"
        ));
    }
    running.overlap = replay::overlap(loaded.config.mix.epoch_seconds);
    let line = format!(
        "epoch {} is current; epoch {} is accepted for {} s more",
        next.0,
        running.epoch.0,
        running.overlap.as_secs()
    );
    running.epoch = next;
    running.previous = Some(std::mem::replace(&mut running.key, loaded.key));
    running.overlap_until = Some(Instant::now() + running.overlap);
    Ok(line)
}
