#![expect(clippy::unwrap_used, reason = "tests")]

use std::path::Path;

use pb_mix::Verdict;
use pb_sphinx::ReplayTag;

use super::*;
use crate::config::file::{
    ConfigFile, GossipSection, IoSection, NodeSection, TopologyEntry, TopologyFile, render,
};

/// A relay's configuration at every `[mix]` default: static mode (a mix in layer 1 of a
/// topology whose layer 0 holds `in_links` gateways), or gossip mode (a mix).
fn default_config(gossip: bool) -> RelayConfig {
    let node = NodeSection {
        format: Some("v2".into()),
        ..NodeSection::default()
    };
    let file = if gossip {
        ConfigFile {
            node: Some(node),
            io: Some(IoSection::udp("198.18.0.1:47470".parse().unwrap())),
            gossip: Some(GossipSection {
                bind: Some("198.18.0.1:47471".into()),
                network_seed: Some("42".repeat(32)),
                identity_file: Some("identity.key".into()),
                role: Some("mix".into()),
                ..GossipSection::default()
            }),
            ..ConfigFile::default()
        }
    } else {
        ConfigFile {
            topology: Some("topology.toml".into()),
            node: Some(NodeSection {
                id: Some("01".repeat(16)),
                secret: Some("c3".repeat(32)),
                epoch: Some(1),
                ..node
            }),
            io: Some(IoSection::udp("198.18.0.1:47470".parse().unwrap())),
            ..ConfigFile::default()
        }
    };
    RelayConfig::from_toml(&render(&file).unwrap(), Path::new("")).unwrap()
}

/// Layer 0: `in_links` gateways; layer 1: node 01…01 (a mix); layer 2: an exit.
fn topology(in_links: u8) -> Topology {
    let entry = |id: u8, role: &str, layer: u32| TopologyEntry {
        id: Some(format!("{id:02x}").repeat(16)),
        role: Some(role.into()),
        layer: Some(layer),
        addr: Some(format!("198.18.0.{id}:47470")),
        public_key: Some("00".repeat(32)),
    };
    let mut nodes: Vec<TopologyEntry> = (0..in_links)
        .map(|i| entry(0x10 + i, "gateway", 0))
        .collect();
    nodes.push(entry(0x01, "mix", 1));
    nodes.push(entry(0x20, "exit", 2));
    Topology::from_toml(&render(&TopologyFile { node: Some(nodes) }).unwrap()).unwrap()
}

/// Distinct, uniformly spread tags (what blake3 tags look like to the filter): SplitMix64.
struct Tags(u64);

impl Tags {
    fn next(&mut self) -> ReplayTag {
        let mut word = || {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let mut tag = [0u8; 16];
        tag[..8].copy_from_slice(&word().to_le_bytes());
        tag[8..].copy_from_slice(&word().to_le_bytes());
        ReplayTag(tag)
    }
}

/// What a run refused that it should not have.
#[derive(Debug, Default, PartialEq, Eq)]
struct Refused {
    full: u64,
    no_table: u64,
    /// Fresh packets taken for replays, or replays taken for fresh packets.
    wrong: u64,
}

/// Records `count` fresh packets of `epoch`, then replays the first of them.
fn record(filter: &SharedReplayFilter, epoch: Epoch, count: u64, tags: &mut Tags) -> Refused {
    let mut refused = Refused::default();
    let mut first = None;
    for _ in 0..count {
        let tag = tags.next();
        first.get_or_insert(tag);
        match filter.check_and_insert(epoch, &tag) {
            Verdict::Fresh => {}
            Verdict::Full => refused.full += 1,
            Verdict::NoTable => refused.no_table += 1,
            Verdict::Replay => refused.wrong += 1,
        }
    }
    if let Some(tag) = first
        && filter.check_and_insert(epoch, &tag) != Verdict::Replay
    {
        refused.wrong += 1;
    }
    refused
}

/// Runs `epochs` epochs of `rate` packets a second through `filter`, every second of each
/// epoch and of its overlap, with the calls the relay makes: [`start`], then for each
/// epoch [`begin`], the overlap (the previous epoch's packets still arrive beside the new
/// one's), [`end_overlap`], the rest of the epoch. Checks on the way that each epoch's
/// table is ready and empty before it begins and that a retired epoch's table is gone.
/// What was refused, and the fullest a table got, in percent.
fn run(filter: &SharedReplayFilter, plan: &ReplayPlan, rate: u64, epochs: u32) -> (Refused, u64) {
    let mut tags = Tags(7);
    let mut refused = Refused::default();
    let mut fullest = 0;
    let mut add = |r: Refused| {
        refused.full += r.full;
        refused.no_table += r.no_table;
        refused.wrong += r.wrong;
    };
    let first = Epoch(40);
    start(filter, first);
    for k in 0..=epochs {
        let epoch = Epoch(first.0 + k);
        let fill = filter.fill(epoch);
        assert_eq!(fill.map(|f| f.packets), Some(0), "epoch {k} not ready");
        begin(filter, epoch);
        if k == epochs {
            // The last epoch's overlap only: what the previous one still receives.
            add(record(
                filter,
                Epoch(epoch.0 - 1),
                rate * plan.overlap_seconds,
                &mut tags,
            ));
            break;
        }
        if k > 0 {
            let previous = Epoch(epoch.0 - 1);
            add(record(
                filter,
                previous,
                rate * plan.overlap_seconds,
                &mut tags,
            ));
            fullest = fullest.max(filter.fill(previous).unwrap().percent());
            end_overlap(filter, previous, epoch);
            assert_eq!(
                filter.fill(previous),
                None,
                "epoch {k}: the last one not retired"
            );
        }
        add(record(
            filter,
            epoch,
            rate * plan.overlap_seconds,
            &mut tags,
        ));
        let rest = plan.epoch_seconds - plan.overlap_seconds;
        add(record(filter, epoch, rate * rest, &mut tags));
    }
    (refused, fullest)
}

/// Three epochs of saturated links (every slot of every in-link a packet the filter must
/// record) at the default configuration, static and gossip mode: nothing is refused, and
/// no table gets to the alarm. The filter of before (a million packets per epoch, whatever
/// the rates) refuses packets within the first epoch.
#[test]
fn three_saturated_epochs_at_the_default_configuration_refuse_nothing() {
    let static_plan = plan(
        &default_config(false),
        Ingress::topology(&topology(3), pb_sphinx::NodeId([1; 16])),
    )
    .unwrap();
    let config = default_config(true);
    let gossip_plan = plan(&config, Ingress::gossip(config.gossip.as_ref().unwrap())).unwrap();
    assert_eq!(
        (
            static_plan.in_links,
            static_plan.epoch_seconds,
            static_plan.overlap_seconds
        ),
        (3, 3600, 60)
    );
    assert_eq!(gossip_plan.in_links, 8);
    for plan in [static_plan, gossip_plan] {
        let rate = plan.in_links as u64 * u64::from(plan.link_rate);
        assert_eq!(plan.per_epoch, rate * 3660);
        assert_eq!(plan.capacity as u64, 2 * plan.per_epoch);
        let filter = SharedReplayFilter::new(plan.capacity).unwrap();
        let (refused, fullest) = run(&filter, &plan, rate, 3);
        assert_eq!(refused, Refused::default(), "{plan:?}");
        // An epoch ends a quarter full at the rates it is sized for.
        assert_eq!(fullest, 25, "{plan:?}");
    }
    let before = SharedReplayFilter::new(1_000_000).unwrap();
    let (refused, _) = run(&before, &gossip_plan, 800, 1);
    assert!(refused.full > 0, "{refused:?}");
}

#[test]
fn what_a_configuration_needs_is_refused_in_one_line_naming_its_fields() {
    let mut config = default_config(true);
    let ingress = |c: &RelayConfig| Ingress::gossip(c.gossip.as_ref().unwrap());
    // A week at 100 packets a second from two layers of four.
    if let Some(g) = config.gossip.as_mut() {
        g.epoch_seconds = 7 * 24 * 3600;
    }
    let e = plan(&config, ingress(&config)).unwrap_err();
    assert_eq!(
        e.field,
        "mix.link_rate, gossip.epoch_seconds, gossip.max_layer_width"
    );
    assert!(e.reason.contains("would need 28.8 GiB"), "{e}");
    assert!(e.reason.contains("mix.replay_memory_mib = 4096"), "{e}");
    assert_eq!(e.to_string().lines().count(), 1);
    // More memory allowed: it fits.
    config.mix.replay_memory_mib = 32 * 1024;
    assert!(plan(&config, ingress(&config)).is_ok());
    // A capacity given below what an epoch brings.
    config.mix.replay_capacity = Some(1_000_000);
    let e = plan(&config, ingress(&config)).unwrap_err();
    assert_eq!(e.field, "mix.replay_capacity");
    assert!(e.reason.contains("less than an epoch brings"), "{e}");
    // Static mode: a gateway counts its clients too.
    let mut config = default_config(false);
    config.mix.epoch_seconds = 24 * 3600;
    let gateway = Ingress {
        gateway: true,
        ..Ingress::topology(&topology(3), pb_sphinx::NodeId([1; 16]))
    };
    let e = plan(&config, gateway).unwrap_err();
    assert_eq!(
        e.field,
        "mix.link_rate, mix.epoch_seconds, topology, mix.client_rate"
    );
    assert!(e.reason.contains("+ 500 pkt/s from clients"), "{e}");
    // The capacity given, when enough, is what the filter gets.
    config.mix.epoch_seconds = 3600;
    config.mix.replay_capacity = Some(5_000_000);
    let p = plan(&config, gateway).unwrap();
    assert_eq!(p.capacity, 5_000_000);
    assert_eq!(p.memory(), 160_000_000);
    // A capacity given that needs more memory than allowed names itself.
    config.mix.replay_memory_mib = 100;
    let e = plan(&config, gateway).unwrap_err();
    assert_eq!(e.field, "mix.replay_capacity");
    assert!(e.reason.contains("(as mix.replay_capacity says)"), "{e}");
}

#[test]
fn the_alarm_warns_once_per_epoch_at_half_full() {
    let mut alarm = FillAlarm::default();
    let fill = |packets| {
        Some(Fill {
            packets,
            slots: 1000,
        })
    };
    assert_eq!(alarm.observe(Epoch(3), None), None);
    assert_eq!(alarm.observe(Epoch(3), fill(499)), None);
    let line = alarm.observe(Epoch(3), fill(500)).unwrap();
    assert!(
        line.starts_with("replay filter: epoch 3's table is 50% full (500 packets for 1000 slots)"),
        "{line}"
    );
    assert_eq!(line.lines().count(), 1);
    assert_eq!(alarm.observe(Epoch(3), fill(900)), None, "warned twice");
    assert!(alarm.observe(Epoch(4), fill(600)).is_some(), "not again");
}

/// The filter's metrics follow the current epoch's table as it fills, cover (which takes
/// no entry) counted like any packet.
#[test]
fn the_gauges_follow_the_current_table() {
    let filter = SharedReplayFilter::new(10).unwrap();
    start(&filter, Epoch(1));
    let mut tags = Tags(1);
    record(&filter, Epoch(1), 11, &mut tags);
    filter.count_unrecorded(Epoch(1));
    filter.count_unrecorded(Epoch(1));
    let gauges = crate::metrics::replay_filter(filter.fill(Epoch(1)), filter.slots());
    let get = |name: &str| gauges.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
    assert_eq!(get("pb_replay_filter_slots"), Some(20));
    assert_eq!(get("pb_replay_filter_packets"), Some(13));
    assert_eq!(get("pb_replay_filter_fill_percent"), Some(65));
    let none = crate::metrics::replay_filter(filter.fill(Epoch(9)), filter.slots());
    assert!(
        none.iter()
            .any(|(k, v)| k == "pb_replay_filter_packets" && *v == 0)
    );
}
