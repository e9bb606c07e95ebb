//! The relay's part in the incentive ledger (docs/spec/ledger.md), driven by the gossip
//! driver:
//!
//! - **Every relay** sums its loops per neighbour through an epoch ([`Recorder`]), signs the
//!   epoch's record when the next begins, and sends it to the stewards by gossip, again every
//!   [`resend_every`] through that next epoch (the log takes it as the one after begins).
//! - **Stewards** collect the records ([`Collector`]). The **log operator**, the network
//!   file's first steward, appends epoch `e`'s records as `e + 2` begins, publishes the
//!   tiles and its own signed `proposal`, and signs checkpoints naming the new tree. The
//!   other stewards are **witnesses**: they fetch the proposal and its tiles, check that the
//!   tree extends the one they witnessed before and holds only valid records of this
//!   network, and then sign checkpoints naming it too. Once k stewards have, the cosigned
//!   checkpoint is the log's `checkpoint`.
//! - **Mirrors** (any other relay with `gossip.ledger_dir`, a gateway above all) fetch the
//!   cosigned checkpoint and its tiles, check them the same way and serve a copy.
//!
//! Whoever holds the log publishes the reputation its records give ([`Table`]) beside the
//! checkpoint, for the tree the checkpoint names; `pb-ledger verify` recomputes it.
//! Nothing here names a client: records hold loop counts per neighbour.

use std::{
    collections::VecDeque,
    net::TcpListener,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::Duration,
};

use anyhow::{Context as _, anyhow};
use pb_control::{
    Gossip, IdentityKeyPair,
    admission::Policy,
    checkpoint::Stewards,
    note::{Note, NoteSigner},
};
use pb_ledger::{
    Hash,
    collect::{Collector, Log, Recorder, Refused, tree_of},
    http::HttpSource,
    record::SignedMeasurement,
    reputation::{Params, Reputation, Table},
    tiles::{TileDir, read_log},
};
use pb_mix::LoopStats;
use pb_sphinx::{Epoch, NodeId};

use crate::config::GossipSettings;

/// Own records kept (for the admin endpoint, and to send again).
const RECORDS_KEPT: usize = 4;
/// How often a follower looks at the log it follows.
const FOLLOW_EVERY: Duration = Duration::from_secs(2);

/// How often a relay sends its last record again: a quarter of an epoch, from 2 s to 60 s.
pub fn resend_every(epoch_seconds: u64) -> Duration {
    Duration::from_secs((epoch_seconds / 4).clamp(2, 60))
}

/// What a follower thread found: a tree it checked, and what its records give.
struct Followed {
    size: u64,
    root: Hash,
    note: Vec<u8>,
    table: Table,
}

/// What a follower thread counts.
#[derive(Default)]
struct FollowCounters {
    /// Trees taken.
    taken: u64,
    /// Trees refused: they do not extend the last one taken, or hold what is no record.
    refused: u64,
    /// Fetches that failed (the server unreachable, a file missing or malformed).
    failed: u64,
}

/// The tree a relay holds (made, or checked), the reputation table its records give, and
/// that table's hash.
struct Held {
    size: u64,
    root: Hash,
    table: Table,
    commitment: [u8; 32],
}

impl Held {
    fn new(size: u64, root: Hash, table: Table) -> Self {
        let commitment = table.commitment();
        Self {
            size,
            root,
            table,
            commitment,
        }
    }
}

/// How this relay keeps the log, if it does.
enum Keeper {
    /// No copy (no `gossip.ledger_dir`).
    None,
    /// The log operator's log, and the reputation its records give.
    Operator(Box<Log>, Box<Reputation>),
    /// A witness's or a mirror's copy, kept up to date by a thread.
    Follower {
        results: mpsc::Receiver<Result<Followed, String>>,
        counters: FollowCounters,
        stop: Arc<AtomicBool>,
    },
}

/// The relay's ledger state.
pub struct Ledger {
    network: String,
    stewards: Stewards,
    policy: Policy,
    /// Our index among the stewards, if we are one.
    steward: Option<usize>,
    epoch_seconds: u64,
    recorder: Recorder,
    /// Own records, newest last.
    records: VecDeque<SignedMeasurement>,
    next_send: Duration,
    collector: Option<Collector>,
    keeper: Keeper,
    dir: Option<TileDir>,
    server: Option<Arc<AtomicBool>>,
    /// The tree this relay holds (made, or checked), what its records give, and the note
    /// naming it that the relay fetched or signed.
    held: Option<Held>,
    /// The cosigned checkpoint written last as `checkpoint`.
    written: Option<String>,
    made: u64,
    sent: u64,
    kept: u64,
    refused: u64,
    appended: u64,
    last_error: Option<String>,
}

impl core::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Ledger")
            .field("network", &self.network)
            .field("steward", &self.steward)
            .finish_non_exhaustive()
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        if let Some(stop) = &self.server {
            stop.store(true, Ordering::Relaxed);
        }
        if let Keeper::Follower { stop, .. } = &self.keeper {
            stop.store(true, Ordering::Relaxed);
        }
    }
}

impl Ledger {
    /// The ledger of the relay `identity` under `settings`: `None` without a network file.
    /// Opens the operator's log, starts a follower and the file server as configured.
    pub fn start(
        settings: &GossipSettings,
        identity: &IdentityKeyPair,
    ) -> anyhow::Result<Option<Self>> {
        let Some(network) = &settings.network else {
            return Ok(None);
        };
        let stewards = network.stewards.clone();
        let steward = stewards
            .keys()
            .iter()
            .position(|k| k.public() == identity.public());
        let dir = settings.ledger_dir.as_ref().map(TileDir::new);
        let keeper = match (&dir, &network.ledger) {
            (Some(dir), _) if steward == Some(0) => {
                let log = Log::open(dir.clone(), "proposal")
                    .with_context(|| format!("the ledger in {}", dir.root().display()))?;
                let reputation = reputation_of(log.entries());
                Keeper::Operator(Box::new(log), Box::new(reputation))
            }
            (Some(dir), Some(url)) => {
                let source = HttpSource::new(url).map_err(|e| anyhow!("the ledger URL: {e}"))?;
                // A witness follows the operator's proposal, a mirror the cosigned log.
                let file = if steward.is_some() {
                    "proposal"
                } else {
                    "checkpoint"
                };
                let (tx, results) = mpsc::channel();
                let stop = Arc::new(AtomicBool::new(false));
                let follower = Follower {
                    source: Box::new(source),
                    file,
                    dir: dir.clone(),
                    stewards: stewards.clone(),
                    held: None,
                    records: Vec::new(),
                };
                let flag = stop.clone();
                thread::Builder::new()
                    .name("pb-ledger-follow".into())
                    .spawn(move || follower.run(&tx, &flag))
                    .context("starting the ledger's follower")?;
                Keeper::Follower {
                    results,
                    counters: FollowCounters::default(),
                    stop,
                }
            }
            _ => Keeper::None,
        };
        let server = match (&dir, settings.ledger_listen) {
            (Some(dir), Some(addr)) => {
                let listener = TcpListener::bind(addr)
                    .with_context(|| format!("gossip.ledger_listen: cannot listen on {addr}"))?;
                let stop = Arc::new(AtomicBool::new(false));
                let (dir, flag) = (dir.clone(), stop.clone());
                thread::Builder::new()
                    .name("pb-ledger-http".into())
                    .spawn(move || pb_ledger::serve::serve(listener, dir, flag))
                    .context("starting the ledger's file server")?;
                Some(stop)
            }
            _ => None,
        };
        let held = match &keeper {
            Keeper::Operator(log, reputation) => Some(Held::new(
                log.tree().size(),
                log.root(),
                Table::of(stewards.network(), log.tree().size(), reputation),
            )),
            _ => None,
        };
        Ok(Some(Self {
            network: stewards.network().to_owned(),
            collector: steward.map(|_| Collector::new(stewards.network())),
            stewards,
            policy: network.policy,
            steward,
            epoch_seconds: settings.epoch_seconds,
            recorder: Recorder::default(),
            records: VecDeque::new(),
            next_send: Duration::ZERO,
            keeper,
            dir,
            server,
            held,
            written: None,
            made: 0,
            sent: 0,
            kept: 0,
            refused: 0,
            appended: 0,
            last_error: None,
        }))
    }

    /// Tells the gossip which tree this relay's checkpoints name (a restarted operator's).
    pub fn attach(&self, gossip: &mut Gossip) {
        if let (Some(held), Some(_)) = (&self.held, self.steward) {
            gossip.set_ledger(held.size, held.root.0, held.commitment);
        }
    }

    /// Reads the links' loop counters (`links[i]`: link `i`'s neighbour and counters).
    pub fn observe(&mut self, links: &[(NodeId, LoopStats)]) {
        self.recorder.observe(links);
    }

    /// `ended` is over and `now` began: closes and signs `ended`'s record, sends it; the
    /// operator appends the records of the epoch before `ended`. Returns lines for the
    /// operator's log.
    pub fn epoch_began(
        &mut self,
        ended: Epoch,
        now: Epoch,
        gossip: &mut Gossip,
        clock: Duration,
    ) -> Vec<String> {
        let mut notes = Vec::new();
        let signed = {
            let identity = gossip.identity();
            self.recorder
                .close(&self.network, ended, identity.public())
                .sign(identity)
        };
        match signed {
            Ok(record) => {
                self.made += 1;
                if self.records.len() == RECORDS_KEPT {
                    self.records.pop_front();
                }
                self.records.push_back(record);
                self.next_send = clock;
            }
            Err(e) => notes.push(format!("ledger: epoch {}'s record not made: {e}", ended.0)),
        }
        self.collect(gossip, now);
        if let Keeper::Operator(log, reputation) = &mut self.keeper
            && let Some(collector) = &mut self.collector
        {
            let epoch = Epoch(ended.0.wrapping_sub(1));
            let batch = collector.take(epoch);
            if !batch.is_empty() {
                // In the tree from now on, whether or not its tiles are written yet.
                self.appended += batch.len() as u64;
                reputation.apply(epoch, batch.iter().map(SignedMeasurement::measurement));
                match log.append(&batch) {
                    Ok(()) => {
                        let (size, root) = (log.tree().size(), log.root());
                        let held =
                            Held::new(size, root, Table::of(&self.network, size, reputation));
                        gossip.set_ledger(size, root.0, held.commitment);
                        self.held = Some(held);
                        notes.push(format!(
                            "ledger: epoch {}'s {} records appended, {size} in the log",
                            epoch.0,
                            batch.len()
                        ));
                        if let Err(e) = self.propose(gossip) {
                            notes.push(format!("ledger: the proposal not written: {e}"));
                        }
                    }
                    // Written again with the next epoch's records.
                    Err(e) => notes.push(format!("ledger: writing epoch {}: {e}", epoch.0)),
                }
            }
        }
        notes
    }

    /// The operator's own signed checkpoint of its new tree, for the witnesses.
    fn propose(&self, gossip: &Gossip) -> anyhow::Result<()> {
        let (Some(dir), Some(own)) = (&self.dir, self.steward) else {
            return Ok(());
        };
        let (checkpoint, _) = gossip
            .checkpoint(&self.network, &self.policy)
            .map_err(|e| anyhow!("{e}"))?;
        let name = self
            .stewards
            .keys()
            .get(own)
            .map(|k| k.name().to_owned())
            .unwrap_or_default();
        let signer = NoteSigner::new(&name, gossip.identity()).map_err(|e| anyhow!("{e}"))?;
        let note =
            pb_control::note::sign(&checkpoint.text(), &[&signer]).map_err(|e| anyhow!("{e}"))?;
        dir.write("proposal", note.as_bytes())?;
        Ok(())
    }

    /// Takes the records gossip put together (a steward's).
    fn collect(&mut self, gossip: &mut Gossip, now: Epoch) {
        while let Some(bytes) = gossip.poll_record() {
            let Some(collector) = &mut self.collector else {
                continue;
            };
            match collector.offer(&bytes, now) {
                Ok(_) => self.kept += 1,
                // A copy sent again is no fault.
                Err(Refused::Held) => {}
                Err(_) => self.refused += 1,
            }
        }
    }

    /// What is due: sending own records again, collecting, taking a follower's result,
    /// writing a newly cosigned checkpoint. Returns lines for the operator's log.
    pub fn turn(&mut self, gossip: &mut Gossip, epoch: Epoch, clock: Duration) -> Vec<String> {
        let mut notes = Vec::new();
        self.collect(gossip, epoch);
        if clock >= self.next_send {
            self.next_send = clock + resend_every(self.epoch_seconds);
            // The record of the epoch before this one: the log takes it as the next begins.
            for record in &self.records {
                let age = epoch.0.wrapping_sub(record.measurement().epoch.0);
                if age == 1 && gossip.send_record(record.as_bytes()) > 0 {
                    self.sent += 1;
                }
            }
        }
        if let Keeper::Follower {
            results, counters, ..
        } = &mut self.keeper
        {
            while let Ok(result) = results.try_recv() {
                match result {
                    Ok(followed) => {
                        counters.taken += 1;
                        if self.steward.is_some() {
                            gossip.set_ledger(
                                followed.size,
                                followed.root.0,
                                followed.table.commitment(),
                            );
                        }
                        notes.push(format!(
                            "ledger: the log checked at {} records",
                            followed.size
                        ));
                        // A mirror fetched the cosigned checkpoint: it is the one to serve.
                        if self.steward.is_none() {
                            self.written = None;
                            if let Some(dir) = &self.dir {
                                let written = dir
                                    .write("reputation", followed.table.text().as_bytes())
                                    .and_then(|()| dir.write("checkpoint", &followed.note));
                                if let Err(e) = written {
                                    notes.push(format!("ledger: the mirror not written: {e}"));
                                }
                            }
                        }
                        self.held = Some(Held::new(followed.size, followed.root, followed.table));
                    }
                    Err(why) if why.starts_with("refused") => {
                        counters.refused += 1;
                        self.last_error = Some(why.clone());
                        pb_log::warn_limited!("ledger: {why}");
                    }
                    Err(why) => {
                        counters.failed += 1;
                        self.last_error = Some(why);
                    }
                }
            }
        }
        if self.steward.is_some()
            && let Err(e) = self.write_cosigned(gossip)
        {
            notes.push(format!("ledger: the checkpoint not written: {e}"));
        }
        notes
    }

    /// A steward holding the log writes the cosigned checkpoint of the tree it holds, and
    /// that tree's reputation table, once gossip holds one.
    fn write_cosigned(&mut self, gossip: &Gossip) -> anyhow::Result<()> {
        let (
            Some(dir),
            Some(Held {
                size, root, table, ..
            }),
        ) = (&self.dir, &self.held)
        else {
            return Ok(());
        };
        let Some(note) = gossip.cosigned_checkpoint() else {
            return Ok(());
        };
        if self.written.as_ref() == Some(&note) {
            return Ok(());
        }
        let Ok((checkpoint, _)) = self.stewards.open(note.as_bytes()) else {
            return Ok(());
        };
        if checkpoint.tree_size != *size || checkpoint.tree_root != root.0 {
            return Ok(());
        }
        dir.write("reputation", table.text().as_bytes())?;
        dir.write("checkpoint", note.as_bytes())?;
        self.written = Some(note);
        Ok(())
    }

    /// Whether the table this relay holds is the one of hash `commitment` (`None`: it holds
    /// none, or the hash is all zero: no table).
    pub fn holds_table(&self, commitment: &[u8; 32]) -> Option<bool> {
        let held = self.held.as_ref()?;
        (*commitment != [0; 32]).then_some(held.commitment == *commitment)
    }

    /// The route weights of the table of hash `commitment`, if it is the one held: each
    /// relay's weight, and a new relay's.
    pub fn route_weights(
        &self,
        commitment: &[u8; 32],
    ) -> Option<(std::collections::BTreeMap<NodeId, u64>, u64)> {
        let held = self.held.as_ref()?;
        if held.commitment != *commitment {
            return None;
        }
        let weights = held
            .table
            .relays
            .iter()
            .map(|(id, (_, w))| (*id, *w))
            .collect();
        Some((weights, Params::default().floor))
    }

    /// The text of the reputation table held.
    pub fn table_text(&self) -> Option<String> {
        self.held.as_ref().map(|h| h.table.text())
    }

    /// This relay's own reputation and weight (ppm) in the table it holds, and that table's
    /// log size.
    fn own_standing(&self, me: NodeId) -> Option<(u64, u64, u64)> {
        let table = &self.held.as_ref()?.table;
        let (r, w) = table
            .relays
            .get(&me)
            .copied()
            .unwrap_or((0, Params::default().floor));
        Some((r, w, table.size))
    }

    /// Counters and state for `/metrics`.
    pub fn metrics(&self, me: NodeId) -> Vec<(String, u64)> {
        let mut m = vec![
            ("pb_ledger_records_made_total".to_owned(), self.made),
            ("pb_ledger_records_sent_total".to_owned(), self.sent),
        ];
        if let Some(last) = self.records.back() {
            let ms = last.measurement();
            m.push((
                "pb_ledger_last_record_epoch".to_owned(),
                u64::from(ms.epoch.0),
            ));
            m.push((
                "pb_ledger_last_record_links".to_owned(),
                ms.links.len() as u64,
            ));
            for (name, value) in [
                ("sent", ms.links.iter().map(|l| l.sent).sum::<u64>()),
                ("returned", ms.links.iter().map(|l| l.returned).sum()),
                ("lost", ms.links.iter().map(|l| l.lost).sum()),
            ] {
                m.push((format!("pb_ledger_last_record_loops_{name}"), value));
            }
        }
        if let Some((r, w, size)) = self.own_standing(me) {
            m.push(("pb_ledger_reputation_ppm".to_owned(), r));
            m.push(("pb_ledger_weight_ppm".to_owned(), w));
            m.push(("pb_ledger_tree_size".to_owned(), size));
        }
        if self.collector.is_some() {
            m.push(("pb_ledger_records_kept_total".to_owned(), self.kept));
            m.push(("pb_ledger_records_refused_total".to_owned(), self.refused));
        }
        if let Keeper::Operator(..) = &self.keeper {
            m.push(("pb_ledger_records_appended_total".to_owned(), self.appended));
        }
        if let Keeper::Follower { counters, .. } = &self.keeper {
            m.push(("pb_ledger_follow_taken_total".to_owned(), counters.taken));
            m.push((
                "pb_ledger_follow_refused_total".to_owned(),
                counters.refused,
            ));
            m.push(("pb_ledger_follow_failed_total".to_owned(), counters.failed));
        }
        m
    }

    /// Lines for `/status` and `pb-relay status`.
    pub fn status(&self, me: NodeId) -> String {
        let role = match (&self.keeper, self.steward) {
            (Keeper::Operator(..), _) => "log operator",
            (Keeper::Follower { .. }, Some(_)) => "witness",
            (Keeper::Follower { .. }, None) => "mirror",
            (Keeper::None, Some(_)) => "steward (keeps no copy)",
            (Keeper::None, None) => "records only",
        };
        let mut s = format!("ledger {role}, {} records made\n", self.made);
        if let Some(last) = self.records.back() {
            let ms = last.measurement();
            let sent: u64 = ms.links.iter().map(|l| l.sent).sum();
            let returned: u64 = ms.links.iter().map(|l| l.returned).sum();
            let lost: u64 = ms.links.iter().map(|l| l.lost).sum();
            s += &format!(
                "ledger last record epoch {} links {} loops sent {sent} returned {returned} lost {lost}\n",
                ms.epoch.0,
                ms.links.len()
            );
        }
        match self.own_standing(me) {
            Some((r, w, size)) => {
                s += &format!(
                    "ledger reputation {} weight {} (log of {size} records)\n",
                    fraction(r),
                    fraction(w)
                );
            }
            None => s += "ledger reputation unknown (no copy of the log)\n",
        }
        if let Some(e) = &self.last_error {
            s += &format!("ledger last error: {e}\n");
        }
        s
    }
}

fn fraction(ppm: u64) -> String {
    format!(
        "{}.{:06}",
        ppm / pb_ledger::reputation::ONE,
        ppm % pb_ledger::reputation::ONE
    )
}

/// The reputation a log's entries give (the operator checked each when it appended it).
fn reputation_of(entries: &[Vec<u8>]) -> Reputation {
    let records: Vec<SignedMeasurement> = entries
        .iter()
        .filter_map(|e| SignedMeasurement::open(e).ok())
        .collect();
    let mut reputation = Reputation::new(Params::default());
    reputation.apply_all(records.iter().map(SignedMeasurement::measurement));
    reputation
}

/// A witness's or mirror's thread: follows the log at a URL, checks it, mirrors it.
struct Follower {
    source: Box<dyn pb_ledger::tiles::TileSource + Send>,
    /// `proposal` (a witness) or `checkpoint` (a mirror).
    file: &'static str,
    dir: TileDir,
    stewards: Stewards,
    /// The tree taken last, and its entries.
    held: Option<(pb_ledger::Tree, Vec<Vec<u8>>)>,
    /// Those entries as records, each checked once.
    records: Vec<SignedMeasurement>,
}

impl Follower {
    fn run(mut self, results: &mpsc::Sender<Result<Followed, String>>, stop: &AtomicBool) {
        let mut last_note: Option<Vec<u8>> = None;
        while !stop.load(Ordering::Relaxed) {
            match self.source.fetch(self.file) {
                Ok(note) if last_note.as_ref() != Some(&note) => {
                    let result = self.take(&note);
                    if result.is_ok() || result.as_ref().is_err_and(|e| e.starts_with("refused")) {
                        last_note = Some(note);
                    }
                    if results.send(result).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                // Nothing published yet.
                Err(pb_ledger::tiles::TileError::NotFound(_)) => {}
                Err(e) => {
                    if results
                        .send(Err(format!("fetching the {}: {e}", self.file)))
                        .is_err()
                    {
                        return;
                    }
                }
            }
            for _ in 0..20 {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                thread::sleep(FOLLOW_EVERY / 20);
            }
        }
    }

    /// Checks the tree `note` names and mirrors it.
    fn take(&mut self, note: &[u8]) -> Result<Followed, String> {
        // The note's signatures: the operator's on a proposal, k stewards' on a checkpoint.
        if self.file == "proposal" {
            let operator = self.stewards.keys().first().ok_or("no stewards")?.clone();
            let parsed = Note::parse(note).map_err(|e| format!("refused: the proposal: {e}"))?;
            parsed
                .verify(&[operator])
                .map_err(|e| format!("refused: the proposal is not the operator's: {e}"))?;
        } else {
            self.stewards
                .open(note)
                .map_err(|e| format!("refused: the checkpoint: {e}"))?;
        }
        let (size, root) = tree_of(note).ok_or("refused: not a checkpoint")?;
        let (old_size, old_root) = match &self.held {
            Some((tree, _)) => (
                tree.size(),
                tree.root(tree.size()).unwrap_or_else(|_| Hash::empty()),
            ),
            None => (0, Hash::empty()),
        };
        if size < old_size {
            return Err(format!(
                "refused: the log shrank from {old_size} to {size} records"
            ));
        }
        let (tree, entries) = read_log(self.source.as_ref(), size, &root)
            .map_err(|e| format!("reading the log: {e}"))?;
        if tree.root(old_size).map_err(|e| e.to_string())? != old_root {
            return Err(format!(
                "refused: the log of {size} records does not extend the one of {old_size} taken before"
            ));
        }
        // The first `old_size` entries are the ones checked before (the roots agree): only
        // the new ones are opened and their signatures checked, and kept only if all pass.
        let mut fresh = Vec::with_capacity(entries.len().saturating_sub(self.records.len()));
        for (i, entry) in entries.iter().enumerate().skip(self.records.len()) {
            let record =
                SignedMeasurement::open(entry).map_err(|e| format!("refused: entry {i}: {e}"))?;
            if record.measurement().network != self.stewards.network() {
                return Err(format!("refused: entry {i} is another network's"));
            }
            fresh.push(record);
        }
        self.dir
            .publish(&tree, &entries, old_size)
            .map_err(|e| format!("mirroring: {e}"))?;
        self.records.extend(fresh);
        let mut reputation = Reputation::new(Params::default());
        reputation.apply_all(self.records.iter().map(SignedMeasurement::measurement));
        let table = Table::of(self.stewards.network(), size, &reputation);
        self.held = Some((tree, entries));
        Ok(Followed {
            size,
            root,
            note: note.to_vec(),
            table,
        })
    }
}

#[cfg(test)]
mod tests;
