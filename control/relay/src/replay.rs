//! The relay's replay filter (pb-mix's [`SharedReplayFilter`]) from the outside: how big it
//! is ([`plan`]), when its tables are readied and cleared ([`start`], [`begin`],
//! [`end_overlap`]), and the warning when one fills up ([`FillAlarm`]).
//!
//! **Size.** Every packet a relay keeps costs a replay entry for the rest of its epoch, so the
//! filter must hold everything the relay can receive in an epoch and its overlap:
//! `(in-links × mix.link_rate + mix.client_rate) × (epoch + overlap)` packets, times
//! [`SAFETY_FACTOR`]. Links run at exactly `mix.link_rate`, so in-links bound what relays send;
//! clients are bounded by the `mix.client_rate` the operator sizes for (gateways only).
//! In-links are the previous layer of a static topology; in gossip mode, where the topology
//! is not known at start, two layers of `gossip.max_layer_width` relays (the previous layer
//! sends forward, the next one sends replies back; at most [`crate::serve::MAX_LINKS`]).
//! One-hop link cover needs no entry (pb-sphinx does not record it), so cover is never
//! refused, but a busy link may carry only real packets: the size assumes every slot is one.
//!
//! **Life of a table.** The next epoch's table is ready before that epoch begins: at start,
//! both the current and the next epoch's are prepared; when an overlap ends, the epoch that
//! ended is retired (its table cleared while nothing uses it) and its table prepared for the
//! epoch after the current one. When a new epoch begins its table is therefore ready and
//! [`begin`] costs nothing (it clears only after skipped epochs or an early rotation).

use std::time::Duration;

use pb_mix::{Fill, SharedReplayFilter};
use pb_sphinx::Epoch;

use crate::config::{ConfigError, GossipSettings, RelayConfig, Topology};

/// How much more than the rates bring in an epoch the filter is sized for: room for clocks
/// that drift, an epoch that runs long, overlap links and floods, before it refuses anything.
pub const SAFETY_FACTOR: u64 = 2;

/// The fill, in percent of a table's slots, at which the relay warns. A table sized by
/// [`plan`] ends its epoch a quarter full at the rates it is sized for; half full means
/// twice that traffic, and probes start to fail not far beyond.
pub const FILL_ALARM_PERCENT: u64 = 50;

/// How long the previous epoch's key stays accepted after a new epoch begins: a sixth of
/// an epoch, at most a minute (long enough for the packets in flight).
pub fn overlap(epoch_seconds: u64) -> Duration {
    Duration::from_secs((epoch_seconds / 6).min(60))
}

/// Which relays send to this one, as far as the filter's size goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ingress {
    /// Relays with a link to this one.
    pub in_links: usize,
    /// Whether clients send to it too (a gateway).
    pub gateway: bool,
    /// The setting `in_links` comes from, for messages.
    pub field: &'static str,
}

impl Ingress {
    /// Gossip mode: two layers of the widest layer the operator expects.
    pub fn gossip(settings: &GossipSettings) -> Self {
        Self {
            in_links: 2 * settings.max_layer_width,
            gateway: settings.role == pb_control::Role::Gateway,
            field: "gossip.max_layer_width",
        }
    }

    /// Static mode: the nodes of the previous layer of `topology`, which all link to `node`.
    pub fn topology(topology: &Topology, node: pb_sphinx::NodeId) -> Self {
        Self {
            in_links: topology.in_links(node),
            gateway: topology
                .node(node)
                .is_some_and(|n| n.role == pb_control::Role::Gateway),
            field: "topology",
        }
    }
}

/// The filter's size and what it comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplayPlan {
    /// Relays that send to this one.
    pub in_links: usize,
    /// Packets per second per link.
    pub link_rate: u32,
    /// Packets per second from clients (zero but for gateways).
    pub client_rate: u32,
    /// The epoch length.
    pub epoch_seconds: u64,
    /// The overlap after it.
    pub overlap_seconds: u64,
    /// Packets those rates bring in an epoch and its overlap.
    pub per_epoch: u64,
    /// Packets per epoch the filter is built for: `per_epoch` × [`SAFETY_FACTOR`], or
    /// `mix.replay_capacity`.
    pub capacity: usize,
}

impl ReplayPlan {
    /// The filter's memory, both tables, in bytes.
    pub fn memory(&self) -> u64 {
        SharedReplayFilter::memory_for(self.capacity as u64)
    }

    /// What it is sized for, in words: `3 in-links × 100 pkt/s over 3600 s epochs + 60 s`.
    fn describe(&self) -> String {
        let clients = if self.client_rate > 0 {
            format!(" + {} pkt/s from clients", self.client_rate)
        } else {
            String::new()
        };
        format!(
            "{} in-links × {} pkt/s{clients} over {} s epochs + {} s of overlap",
            self.in_links, self.link_rate, self.epoch_seconds, self.overlap_seconds
        )
    }
}

/// The replay filter `config` needs for `ingress`, or why it cannot have one: a
/// `mix.replay_capacity` below what an epoch brings, or more memory than
/// `mix.replay_memory_mib` allows. The error names every field the size comes from.
pub fn plan(config: &RelayConfig, ingress: Ingress) -> Result<ReplayPlan, ConfigError> {
    let (epoch_seconds, epoch_field) = config.epoch_seconds();
    let client_rate = if ingress.gateway {
        config.mix.client_rate
    } else {
        0
    };
    let overlap_seconds = overlap(epoch_seconds).as_secs();
    let rate = (ingress.in_links as u64)
        .saturating_mul(u64::from(config.mix.link_rate))
        .saturating_add(u64::from(client_rate));
    let per_epoch = rate.saturating_mul(epoch_seconds + overlap_seconds);
    let mut fields = vec!["mix.link_rate", epoch_field, ingress.field];
    if ingress.gateway {
        fields.push("mix.client_rate");
    }
    let sized = ReplayPlan {
        in_links: ingress.in_links,
        link_rate: config.mix.link_rate,
        client_rate,
        epoch_seconds,
        overlap_seconds,
        per_epoch,
        capacity: 0,
    };
    let mut why = format!("{}, ×{SAFETY_FACTOR}", sized.describe());
    let capacity = match config.mix.replay_capacity {
        Some(given) if (given as u64) < per_epoch => {
            return Err(ConfigError {
                field: "mix.replay_capacity".into(),
                reason: format!(
                    "{given} packets is less than an epoch brings: {per_epoch} ({}; {}): raise it, or leave it out to size the filter from these",
                    sized.describe(),
                    fields.join(", ")
                ),
            });
        }
        Some(given) => {
            fields = vec!["mix.replay_capacity"];
            why = "as mix.replay_capacity says".into();
            given as u64
        }
        None => per_epoch.saturating_mul(SAFETY_FACTOR),
    };
    let memory = SharedReplayFilter::memory_for(capacity);
    let limit = config.mix.replay_memory_mib.saturating_mul(1 << 20);
    if memory > limit {
        return Err(ConfigError {
            field: fields.join(", "),
            reason: format!(
                "the replay filter would need {} for {capacity} packets per epoch ({why}), more than mix.replay_memory_mib = {}: lower them, or raise mix.replay_memory_mib",
                bytes(memory),
                config.mix.replay_memory_mib
            ),
        });
    }
    Ok(ReplayPlan {
        capacity: usize::try_from(capacity).map_err(|_| ConfigError {
            field: fields.join(", "),
            reason: format!("{capacity} packets per epoch do not fit this machine's memory"),
        })?,
        ..sized
    })
}

/// `bytes` in MiB or GiB, one decimal.
pub fn bytes(bytes: u64) -> String {
    let mib = bytes as f64 / f64::from(1 << 20);
    if mib < 1024.0 {
        format!("{mib:.1} MiB")
    } else {
        format!("{:.1} GiB", mib / 1024.0)
    }
}

/// At start: the tables of `epoch` and of the epoch after it, so that the next one is ready
/// before it begins.
pub fn start(filter: &SharedReplayFilter, epoch: Epoch) {
    filter.prepare(epoch);
    filter.prepare(Epoch(epoch.0.wrapping_add(1)));
}

/// `epoch` begins (call before its key is handed to the cores): its table, ready since the
/// previous overlap ended, unless epochs were skipped or the previous overlap was cut
/// short by an early rotation (then it is cleared now).
pub fn begin(filter: &SharedReplayFilter, epoch: Epoch) {
    filter.prepare(epoch);
}

/// The overlap after `current` began is over and no core holds `retired`'s key any more:
/// `retired`'s table is cleared now and readied for the epoch after `current`.
pub fn end_overlap(filter: &SharedReplayFilter, retired: Epoch, current: Epoch) {
    filter.retire(retired);
    filter.prepare(Epoch(current.0.wrapping_add(1)));
}

/// Warns once per epoch when the current epoch's table reaches [`FILL_ALARM_PERCENT`].
#[derive(Debug, Default)]
pub struct FillAlarm {
    warned: Option<Epoch>,
}

impl FillAlarm {
    /// The warning to log if `epoch`'s table, `fill` full, has just reached the alarm level;
    /// `None` below it and once warned for the epoch. It holds counts only: no tag, no key.
    pub fn observe(&mut self, epoch: Epoch, fill: Option<Fill>) -> Option<String> {
        let fill = fill?;
        if fill.percent() < FILL_ALARM_PERCENT || self.warned == Some(epoch) {
            return None;
        }
        self.warned = Some(epoch);
        Some(format!(
            "replay filter: epoch {}'s table is {}% full ({} packets for {} slots), more than the rates it is sized for bring in a whole epoch; once full it refuses every packet but link cover: look for a flood (pb_packets_received_total), or size it for more traffic (mix.link_rate, the epoch length, gossip.max_layer_width, mix.client_rate or mix.replay_capacity)",
            epoch.0,
            fill.percent(),
            fill.packets,
            fill.slots
        ))
    }
}

#[cfg(test)]
mod tests;
