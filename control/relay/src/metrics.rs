//! Every counter the relay reports, in one list each. None splits a link's packets into
//! real and cover, or says how much of what arrived was cover: those series are exactly
//! what cover traffic exists to hide, so only totals per link (sent, slots missed, drops by
//! reason, loops) are published; the split exists in benchmarks and tests only. The lists: the dataplane totals ([`COUNTERS`],
//! plus one per [`DropReason`]) and the per-link ones ([`LINK_COUNTERS`]). The exit
//! summary's `stat <name> <value>` lines, the `link <i> …` lines, the admin endpoint's
//! `/metrics` (Prometheus text) and the tests all read these lists, so a counter is named
//! once. The gateway's client link and the exit keep their own lists next to their counters
//! ([`crate::client_link::ClientLinkStats::metrics`], [`crate::exit::ExitStats::metrics`]).
//! The replay filter's gauges (how full the current epoch's table is) are
//! [`replay_filter`]'s; the XDP program's counters ([`xdp`]) and the packet port's source
//! filter ([`source_filter`]) are read from the program and the filter in force.

use std::sync::atomic::{AtomicU64, Ordering};

use pb_io::{
    IoStats,
    sources::{SourceFilter, StrangerPolicy},
    xdp::XdpCounters,
};
use pb_mix::{Fill, LinkStats, LoopStats};
use pb_pipeline::PipelineStats;
use pb_sphinx::DropReason;

/// What one pipeline core reports: its counters and its links' (zero for links it does not
/// own).
#[derive(Clone, Debug)]
pub struct CoreReport {
    /// The pipeline's counters.
    pub stats: PipelineStats,
    /// The packet backend's counters.
    pub io: IoStats,
    /// Slot counters per link, in link order.
    pub links: Vec<LinkStats>,
    /// Which of the links this core owns.
    pub owned: Vec<bool>,
}

/// One dataplane counter: its name in `stat` lines, its Prometheus metric, how to read it.
#[derive(Debug)]
pub struct Counter {
    /// The name in the exit summary (`stat <name> <value>`).
    pub stat: &'static str,
    /// The Prometheus metric, labels included.
    pub metric: &'static str,
    /// Its value in one core's report.
    pub read: fn(&CoreReport) -> u64,
}

const fn counter(
    stat: &'static str,
    metric: &'static str,
    read: fn(&CoreReport) -> u64,
) -> Counter {
    Counter { stat, metric, read }
}

/// The dataplane's counters, summed over cores (the drop reasons follow: [`drop_counters`]).
pub const COUNTERS: &[Counter] = &[
    counter("received", "pb_packets_received_total", |r| {
        r.stats.received
    }),
    counter("forwarded", "pb_packets_forwarded_total", |r| {
        r.stats.forwarded
    }),
    counter("delivered", "pb_packets_delivered_total", |r| {
        r.stats.delivered
    }),
    counter("loops_sent", "pb_loops_sent_total", |r| r.stats.loops_sent),
    counter("loops_returned", "pb_loops_returned_total", |r| {
        r.stats.loops_returned
    }),
    counter("replay_filter_full", "pb_replay_filter_full_total", |r| {
        r.stats.replay_filter_full
    }),
    counter(
        "replay_filter_no_table",
        "pb_replay_filter_no_table_total",
        |r| r.stats.replay_filter_no_table,
    ),
    counter(
        "dropped_no_link",
        "pb_packets_dropped_total{reason=\"no_link\"}",
        |r| r.stats.dropped_no_link,
    ),
    counter(
        "dropped_delay_full",
        "pb_packets_dropped_total{reason=\"delay_full\"}",
        |r| r.stats.dropped_delay[0],
    ),
    counter(
        "dropped_delay_too_long",
        "pb_packets_dropped_total{reason=\"delay_too_long\"}",
        |r| r.stats.dropped_delay[1],
    ),
    counter(
        "dropped_delay_lagging",
        "pb_packets_dropped_total{reason=\"delay_lagging\"}",
        |r| r.stats.dropped_delay[2],
    ),
    counter(
        "dropped_link_full",
        "pb_packets_dropped_total{reason=\"link_full\"}",
        |r| r.stats.dropped_link_full,
    ),
    counter(
        "dropped_handoff",
        "pb_packets_dropped_total{reason=\"handoff\"}",
        |r| r.stats.dropped_handoff,
    ),
    counter("handed_off", "pb_packets_handed_off_total", |r| {
        r.stats.handed_off
    }),
    counter("taken_over", "pb_packets_taken_over_total", |r| {
        r.stats.taken_over
    }),
    counter("injected", "pb_packets_injected_total", |r| {
        r.stats.injected
    }),
    counter("arrived", "pb_packets_arrived_total", |r| r.stats.arrived),
    counter("cover_failures", "pb_cover_failures_total", |r| {
        r.stats.cover_failures
    }),
    counter("io_rx_packets", "pb_io_rx_packets_total", |r| {
        r.io.rx_packets
    }),
    counter(
        "io_rx_dropped_malformed",
        "pb_io_rx_dropped_malformed_total",
        |r| r.io.rx_dropped_malformed,
    ),
    counter(
        "io_rx_dropped_not_local",
        "pb_io_rx_dropped_not_local_total",
        |r| r.io.rx_dropped_not_local,
    ),
    counter(
        "io_rx_dropped_stranger",
        "pb_io_rx_dropped_stranger_total",
        |r| r.io.rx_dropped_stranger,
    ),
    counter(
        "io_rx_dropped_over_rate",
        "pb_io_rx_dropped_over_rate_total",
        |r| r.io.rx_dropped_over_rate,
    ),
    counter("io_tx_packets", "pb_packets_sent_total", |r| {
        r.io.tx_packets
    }),
    counter(
        "io_tx_dropped_no_neighbour",
        "pb_io_tx_dropped_no_neighbour_total",
        |r| r.io.tx_dropped_no_neighbour,
    ),
    counter(
        "io_tx_dropped_invalid",
        "pb_io_tx_dropped_invalid_total",
        |r| r.io.tx_dropped_invalid,
    ),
    counter("io_alloc_failures", "pb_io_alloc_failures_total", |r| {
        r.io.alloc_failures
    }),
    counter("link_sent", "pb_links_sent_total", |r| {
        r.links.iter().map(|l| l.real + l.cover).sum()
    }),
    counter("link_missed", "pb_link_missed_total", |r| {
        r.links.iter().map(|l| l.missed).sum()
    }),
];

/// The name of a drop reason's counter: `dropped_<reason>` in `stat` lines, the label
/// `reason="<reason>"` of `pb_packets_dropped_total`.
pub fn drop_reason_name(reason: DropReason) -> &'static str {
    match reason {
        DropReason::WrongLength => "wrong_length",
        DropReason::UnknownVersion => "unknown_version",
        DropReason::PastEpoch => "past_epoch",
        DropReason::FutureEpoch => "future_epoch",
        DropReason::InvalidElement => "invalid_element",
        DropReason::BadMac => "bad_mac",
        DropReason::Replay => "replay",
        DropReason::BadCommand => "bad_command",
        DropReason::PayloadTampered => "payload_tampered",
    }
}

/// One total: its `stat` name, its metric and its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Total {
    /// The name in `stat` lines.
    pub stat: String,
    /// The Prometheus metric.
    pub metric: String,
    /// Summed over the cores.
    pub value: u64,
}

/// Every dataplane counter summed over `reports`, in list order, the drop reasons last.
pub fn totals<'a>(reports: impl IntoIterator<Item = &'a CoreReport> + Clone) -> Vec<Total> {
    let sum = |read: &dyn Fn(&CoreReport) -> u64| reports.clone().into_iter().map(read).sum();
    let mut out: Vec<Total> = COUNTERS
        .iter()
        .map(|c| Total {
            stat: c.stat.to_owned(),
            metric: c.metric.to_owned(),
            value: sum(&c.read),
        })
        .collect();
    for (i, reason) in DropReason::ALL.iter().enumerate() {
        let name = drop_reason_name(*reason);
        out.push(Total {
            stat: format!("dropped_{name}"),
            metric: format!("pb_packets_dropped_total{{reason=\"{name}\"}}"),
            value: sum(&|r| r.stats.dropped.get(i).copied().unwrap_or(0)),
        });
    }
    out
}

/// One per-link counter: its name in `link <i> …` lines, its Prometheus metric (labelled
/// with the link), how to read it from the link's slots and loops.
#[derive(Debug)]
pub struct LinkCounter {
    /// The word in `link <i>` lines.
    pub stat: &'static str,
    /// The Prometheus metric (`{link="<i>"}` is added).
    pub metric: &'static str,
    /// Its value.
    pub read: fn(&LinkStats, &LoopStats) -> u64,
}

/// The per-link counters.
pub const LINK_COUNTERS: &[LinkCounter] = &[
    LinkCounter {
        stat: "sent",
        metric: "pb_link_sent_total",
        read: |l, _| l.real + l.cover,
    },
    LinkCounter {
        stat: "missed",
        metric: "pb_link_slots_missed_total",
        read: |l, _| l.missed,
    },
    LinkCounter {
        stat: "dropped_full",
        metric: "pb_link_dropped_full_total",
        read: |l, _| l.dropped_full,
    },
    LinkCounter {
        stat: "loops_sent",
        metric: "pb_link_loops_sent_total",
        read: |_, o| o.sent,
    },
    LinkCounter {
        stat: "loops_returned",
        metric: "pb_link_loops_returned_total",
        read: |_, o| o.returned,
    },
    LinkCounter {
        stat: "loops_lost",
        metric: "pb_link_loops_lost_total",
        read: |_, o| o.lost,
    },
];

/// The links `reports` own, each with its index, slot counters and `loops(index)`.
pub fn owned_links<'a>(
    reports: impl IntoIterator<Item = &'a CoreReport>,
    loops: &'a dyn Fn(usize) -> LoopStats,
) -> impl Iterator<Item = (usize, &'a LinkStats, LoopStats)> {
    reports.into_iter().flat_map(move |r| {
        r.links
            .iter()
            .enumerate()
            .filter(|(i, _)| r.owned.get(*i).copied().unwrap_or(false))
            .map(move |(i, l)| (i, l, loops(i)))
    })
}

/// The admin endpoint's dataplane metrics: every total, then every owned link's counters.
pub fn prometheus<'a>(
    reports: &[&'a CoreReport],
    loops: &'a dyn Fn(usize) -> LoopStats,
) -> Vec<(String, u64)> {
    let mut m: Vec<(String, u64)> = totals(reports.iter().copied())
        .into_iter()
        .map(|t| (t.metric, t.value))
        .collect();
    for (i, l, o) in owned_links(reports.iter().copied(), loops) {
        for c in LINK_COUNTERS {
            m.push((format!("{}{{link=\"{i}\"}}", c.metric), (c.read)(l, &o)));
        }
    }
    m
}

/// The replay filter's gauges: the slots of an epoch's table, and of the current epoch's
/// table the packets so far (recorded, and link cover, which takes no entry but is counted
/// so that no gauge tells how much of the traffic was cover) and that in percent of the
/// slots, the fill the relay warns at ([`crate::replay::FILL_ALARM_PERCENT`]). Both are 0
/// while no table serves the current epoch.
pub fn replay_filter(current: Option<Fill>, slots: usize) -> Vec<(String, u64)> {
    let fill = current.unwrap_or(Fill {
        packets: 0,
        slots: slots as u64,
    });
    vec![
        ("pb_replay_filter_slots".to_owned(), slots as u64),
        ("pb_replay_filter_packets".to_owned(), fill.packets),
        ("pb_replay_filter_fill_percent".to_owned(), fill.percent()),
    ]
}

/// The XDP program's counters (AF_XDP backend): `pb_xdp_<name>_total`, the names of
/// `pb_xdp_common::Counter` (the summary prints them as `stat xdp_<name>`).
pub fn xdp(counters: &XdpCounters) -> Vec<(String, u64)> {
    counters
        .iter()
        .map(|(c, v)| (format!("pb_xdp_{}_total", c.name()), v))
        .collect()
}

/// The packet port's source filter: how many addresses it serves
/// (`pb_source_filter_allowed`) and what happens to the others
/// (`pb_source_filter_policy`: 0 served, no filter yet; 1 dropped; 2 held to the per-source
/// token bucket).
pub fn source_filter(filter: &SourceFilter) -> Vec<(String, u64)> {
    vec![
        ("pb_source_filter_allowed".to_owned(), filter.len() as u64),
        (
            "pb_source_filter_policy".to_owned(),
            u64::from(match filter.policy {
                StrangerPolicy::Pass => 0u8,
                StrangerPolicy::Drop => 1,
                StrangerPolicy::Limit => 2,
            }),
        ),
    ]
}

/// A role's counter as a Prometheus metric: `pb_<role>_<name>_total` and its value.
pub fn role_metric(role: &str, name: &str, counter: &AtomicU64) -> (String, u64) {
    (
        format!("pb_{role}_{name}_total"),
        counter.load(Ordering::Relaxed),
    )
}

/// Prometheus text from `(metric, value)` pairs.
pub fn render(metrics: &[(String, u64)]) -> String {
    metrics.iter().map(|(k, v)| format!("{k} {v}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_has_one_stat_name_and_one_metric() {
        let report = CoreReport {
            stats: PipelineStats::default(),
            io: IoStats::default(),
            links: Vec::new(),
            owned: Vec::new(),
        };
        let totals = totals([&report]);
        let mut stats: Vec<&str> = totals.iter().map(|t| t.stat.as_str()).collect();
        let mut metrics: Vec<&str> = totals.iter().map(|t| t.metric.as_str()).collect();
        let n = stats.len();
        stats.sort_unstable();
        stats.dedup();
        metrics.sort_unstable();
        metrics.dedup();
        assert_eq!((stats.len(), metrics.len()), (n, n), "a name is used twice");
        assert_eq!(n, COUNTERS.len() + DropReason::ALL.len());
        assert!(stats.contains(&"dropped_replay") && stats.contains(&"received"));
    }

    #[test]
    fn totals_sum_the_cores_and_links_follow_ownership() {
        let mut a = CoreReport {
            stats: PipelineStats::default(),
            io: IoStats::default(),
            links: vec![LinkStats::default(); 2],
            owned: vec![true, false],
        };
        a.stats.received = 3;
        a.stats.dropped[6] = 2;
        a.links[0].real = 5;
        let mut b = a.clone();
        b.owned = vec![false, true];
        // A core's counters of links it does not own stay zero.
        b.links[0] = LinkStats::default();
        b.links[1].cover = 7;
        let t = totals([&a, &b]);
        let get = |s: &str| t.iter().find(|t| t.stat == s).map(|t| t.value);
        assert_eq!(get("received"), Some(6));
        assert_eq!(get("dropped_replay"), Some(4));
        let loops = |_| LoopStats::default();
        let m = prometheus(&[&a, &b], &loops);
        let metric = |s: &str| m.iter().find(|(k, _)| k == s).map(|(_, v)| *v);
        assert_eq!(metric("pb_link_sent_total{link=\"0\"}"), Some(5));
        assert_eq!(metric("pb_link_sent_total{link=\"1\"}"), Some(7));
        assert_eq!(metric("pb_links_sent_total"), Some(12));
        assert_eq!(
            metric("pb_packets_dropped_total{reason=\"replay\"}"),
            Some(4)
        );
    }
}
