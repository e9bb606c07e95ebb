//! Reputation from measurement records (docs/spec/ledger.md, "Reputation"): a public formula
//! in integer arithmetic (parts per million), so that every party that reads the same log
//! computes the same numbers, bit for bit.
//!
//! Per epoch, for each relay `X` that others measured:
//!
//! 1. each measurer `M` (not `X`) that settled at least [`Params::min_settled`] loops through
//!    its link to `X` gives a delivery ratio, returned / settled;
//! 2. `X`'s delivery is the median of those ratios (the lower one of an even count), so
//!    that a minority of measurers cannot slander it or vouch for it;
//! 3. the network's delivery is the median of every measured relay's, and `X`'s relative
//!    delivery is its own over the network's, at most 1 (loss everywhere, a bad link or a
//!    dropping relay anywhere on the loops' routes, is nobody's fault in particular);
//! 4. its score: 1 at a relative delivery of 1, falling linearly to 0 at
//!    `1 - tolerance` and below.
//!
//! Reputation: `R = decay · R_before + (1 - decay) · score` each epoch a relay is measured,
//! `R = decay · R_before` each epoch it is not (a relay that vanishes fades); a new relay
//! starts at 0. A route chooses relays with weight `floor + (1 - floor) · R`: a new relay
//! is chosen rarely, but chosen, so that it gets measured.
//!
//! Epochs are taken in ascending order, each once; a relay's second record for an epoch is
//! ignored (the first in log order counts).

use std::collections::{BTreeMap, BTreeSet};

use pb_sphinx::{Epoch, NodeId};

use crate::record::Measurement;

/// One, in parts per million.
pub const ONE: u64 = 1_000_000;

/// The formula's parameters (docs/spec/ledger.md gives their reasons).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// How much of the reputation before an epoch stays after it (ppm).
    pub decay: u64,
    /// Settled loops (returned or lost) a measurer's link must have to count.
    pub min_settled: u64,
    /// The shortfall in relative delivery at which the score reaches 0 (ppm).
    pub tolerance: u64,
    /// The weight of a relay of reputation 0 in route choice (ppm).
    pub floor: u64,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            decay: 750_000,
            min_settled: 20,
            tolerance: 200_000,
            floor: 100_000,
        }
    }
}

/// The lower median of `values` (which it sorts); `None` if there are none.
fn median(values: &mut [u64]) -> Option<u64> {
    values.sort_unstable();
    values.get(values.len().checked_sub(1)? / 2).copied()
}

/// What one epoch's records say about each relay they measured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EpochScores {
    /// The network's delivery (ppm).
    pub network: u64,
    /// Per relay measured: its delivery (ppm) and its score (ppm).
    pub relays: BTreeMap<NodeId, (u64, u64)>,
}

/// The scores of one epoch's records (one per measurer: the first of each counts).
pub fn score_epoch<'m>(
    params: &Params,
    records: impl IntoIterator<Item = &'m Measurement>,
) -> EpochScores {
    let mut measurers = BTreeSet::new();
    let mut ratios: BTreeMap<NodeId, Vec<u64>> = BTreeMap::new();
    for m in records {
        let me = m.relay.node_id();
        if !measurers.insert(me) {
            continue;
        }
        for l in &m.links {
            let settled = u128::from(l.returned) + u128::from(l.lost);
            if settled < u128::from(params.min_settled.max(1)) {
                continue;
            }
            // At most ONE: returned <= settled.
            let ratio = (u128::from(l.returned) * u128::from(ONE) / settled) as u64;
            ratios.entry(l.neighbour).or_default().push(ratio);
        }
    }
    let mut delivery: BTreeMap<NodeId, u64> = BTreeMap::new();
    for (relay, mut r) in ratios {
        if let Some(d) = median(&mut r) {
            delivery.insert(relay, d);
        }
    }
    let network = median(&mut delivery.values().copied().collect::<Vec<_>>()).unwrap_or(0);
    let tolerance = params.tolerance.clamp(1, ONE);
    let relays = delivery
        .into_iter()
        .map(|(relay, d)| {
            // No delivery anywhere: nobody's is relatively good.
            let relative = d
                .saturating_mul(ONE)
                .checked_div(network)
                .map_or(0, |r| r.min(ONE));
            let score = relative.saturating_sub(ONE - tolerance).saturating_mul(ONE) / tolerance;
            (relay, (d, score.min(ONE)))
        })
        .collect();
    EpochScores { network, relays }
}

/// Every relay's reputation after the epochs applied so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reputation {
    params: Params,
    /// Per relay ever measured (ppm).
    scores: BTreeMap<NodeId, u64>,
    /// The last epoch applied.
    last: Option<Epoch>,
}

impl Reputation {
    /// Nobody has any reputation yet.
    pub fn new(params: Params) -> Self {
        Self {
            params,
            scores: BTreeMap::new(),
            last: None,
        }
    }

    /// The parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The last epoch applied.
    pub fn last_epoch(&self) -> Option<Epoch> {
        self.last
    }

    /// Applies one epoch's records (epochs in ascending order; an epoch at or before the
    /// last applied is ignored and `None` returned).
    pub fn apply<'m>(
        &mut self,
        epoch: Epoch,
        records: impl IntoIterator<Item = &'m Measurement>,
    ) -> Option<EpochScores> {
        if self.last.is_some_and(|last| epoch <= last) {
            return None;
        }
        let scores = score_epoch(&self.params, records);
        let decay = self.params.decay.min(ONE);
        for r in self.scores.values_mut() {
            *r = *r * decay / ONE;
        }
        for (relay, &(_, score)) in &scores.relays {
            let r = self.scores.entry(*relay).or_insert(0);
            *r += score * (ONE - decay) / ONE;
        }
        self.last = Some(epoch);
        Some(scores)
    }

    /// Every epoch of `records` (any order), each applied in ascending order; the scores
    /// of each.
    pub fn apply_all<'m>(
        &mut self,
        records: impl IntoIterator<Item = &'m Measurement>,
    ) -> BTreeMap<Epoch, EpochScores> {
        let mut by_epoch: BTreeMap<Epoch, Vec<&Measurement>> = BTreeMap::new();
        for m in records {
            by_epoch.entry(m.epoch).or_default().push(m);
        }
        by_epoch
            .into_iter()
            .filter_map(|(epoch, records)| Some((epoch, self.apply(epoch, records)?)))
            .collect()
    }

    /// A relay's reputation (ppm; 0 if never measured).
    pub fn get(&self, relay: &NodeId) -> u64 {
        self.scores.get(relay).copied().unwrap_or(0)
    }

    /// A relay's weight in route choice (ppm): `floor + (1 - floor) · R`.
    pub fn weight(&self, relay: &NodeId) -> u64 {
        let floor = self.params.floor.min(ONE);
        floor + (ONE - floor) * self.get(relay) / ONE
    }

    /// Every relay measured so far, with its reputation (ppm).
    pub fn all(&self) -> impl Iterator<Item = (&NodeId, u64)> {
        self.scores.iter().map(|(id, r)| (id, *r))
    }
}

/// The first line of a reputation table.
pub const TABLE_HEADER: &str = "PhantomBand v1 reputation";

/// A reputation table as a steward publishes it next to the log (the `reputation` file):
/// what the first `size` entries of the log give every relay, one line per relay in
/// ascending order of node id, its reputation and its route weight in ppm:
///
/// ```text
/// PhantomBand v1 reputation
/// network <name>
/// size <entries read>
/// epoch <last epoch applied, or "none">
/// <node id, hex> <reputation> <weight>
/// …
/// ```
///
/// Anyone can check it: `pb-ledger verify` recomputes it from the records alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    /// The network's name.
    pub network: String,
    /// How many of the log's entries it was computed from (the first ones).
    pub size: u64,
    /// The last epoch applied.
    pub epoch: Option<Epoch>,
    /// Per relay: its reputation and its weight (ppm).
    pub relays: BTreeMap<NodeId, (u64, u64)>,
}

impl Table {
    /// The table of `reputation`, computed from the first `size` entries of `network`'s log.
    pub fn of(network: &str, size: u64, reputation: &Reputation) -> Self {
        Self {
            network: network.to_owned(),
            size,
            epoch: reputation.last_epoch(),
            relays: reputation
                .all()
                .map(|(id, r)| (*id, (r, reputation.weight(id))))
                .collect(),
        }
    }

    /// Its text.
    pub fn text(&self) -> String {
        let epoch = self
            .epoch
            .map_or_else(|| "none".to_owned(), |e| e.0.to_string());
        let mut text = format!(
            "{TABLE_HEADER}\nnetwork {}\nsize {}\nepoch {epoch}\n",
            self.network, self.size
        );
        for (id, (r, w)) in &self.relays {
            let hex: String = id.0.iter().map(|b| format!("{b:02x}")).collect();
            text.push_str(&format!("{hex} {r} {w}\n"));
        }
        text
    }

    /// What a checkpoint commits to (its `reputation` line): SHA-256 of the text, or all
    /// zero for a table of no records (a network whose ledger is empty).
    pub fn commitment(&self) -> [u8; 32] {
        if self.size == 0 {
            return [0; 32];
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, self.text().as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        out
    }

    /// Parses a table's text (as [`text`](Self::text) writes it, and nothing else).
    pub fn parse(text: &str) -> Option<Self> {
        use pb_control::checkpoint::decimal;
        let mut lines = text.strip_suffix('\n')?.split('\n');
        (lines.next()? == TABLE_HEADER).then_some(())?;
        let network = lines.next()?.strip_prefix("network ")?.to_owned();
        let size = decimal(lines.next()?.strip_prefix("size ")?)?;
        let epoch = match lines.next()?.strip_prefix("epoch ")? {
            "none" => None,
            e => Some(Epoch(u32::try_from(decimal(e)?).ok()?)),
        };
        let mut relays = BTreeMap::new();
        for line in lines {
            let mut words = line.split(' ');
            let hex = words.next()?;
            if hex.len() != 32 {
                return None;
            }
            let mut id = [0u8; 16];
            for (i, b) in id.iter_mut().enumerate() {
                *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
            }
            let r = decimal(words.next()?)?;
            let w = decimal(words.next()?)?;
            if words.next().is_some() || relays.insert(NodeId(id), (r, w)).is_some() {
                return None;
            }
        }
        let table = Self {
            network,
            size,
            epoch,
            relays,
        };
        (table.text() == text).then_some(table)
    }
}

#[cfg(test)]
mod tests;
