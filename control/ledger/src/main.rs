//! `pb-ledger`: checks a PhantomBand ledger from its published files alone and shows a
//! relay's history in it. See docs/spec/ledger.md and docs/operator.md.

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use pb_control::network::NetworkFile;
use pb_ledger::{
    http::HttpSource,
    reputation::{ONE, Params},
    tiles::{TileDir, TileSource},
    verify::{Verified, verify},
};
use pb_sphinx::NodeId;

#[derive(Parser)]
#[command(
    name = "pb-ledger",
    version,
    about = "Check a PhantomBand ledger and show what it says"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check everything: the checkpoint's steward signatures, every tile and record against
    /// its root, every record's relay signature, older checkpoints the log must extend; then
    /// recompute every relay's reputation from the records alone.
    Verify {
        #[command(flatten)]
        log: LogArgs,
        /// An older checkpoint (a file, as saved from an earlier run) the log must extend;
        /// repeatable.
        #[arg(long, value_name = "FILE")]
        old: Vec<PathBuf>,
    },
    /// Check the ledger as `verify` does, then print one relay's history: its own records
    /// and how the others measured it, epoch by epoch.
    Show {
        #[command(flatten)]
        log: LogArgs,
        /// The relay: its node id in hex (at least 8 digits of it), as `pb-relay status`
        /// prints it.
        relay: String,
    },
}

#[derive(clap::Args)]
struct LogArgs {
    /// The network file (docs/spec/network-file.md): the stewards and their threshold.
    #[arg(long, value_name = "FILE")]
    network: PathBuf,
    /// Where the log is: a directory, or an http:// URL it is served under.
    #[arg(long, value_name = "DIR|URL")]
    log: String,
}

impl LogArgs {
    fn verify(&self, older: &[PathBuf]) -> anyhow::Result<Verified> {
        let text = std::fs::read(&self.network)
            .with_context(|| format!("reading {}", self.network.display()))?;
        let network =
            NetworkFile::parse(&text).with_context(|| format!("{}", self.network.display()))?;
        let source: Box<dyn TileSource> = if self.log.starts_with("http://") {
            Box::new(HttpSource::new(&self.log)?)
        } else if self.log.contains("://") {
            bail!("{}: only directories and http:// URLs are read", self.log);
        } else {
            Box::new(TileDir::new(&self.log))
        };
        let older = older
            .iter()
            .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
            .collect::<anyhow::Result<Vec<_>>>()?;
        verify(
            source.as_ref(),
            &network.stewards,
            &older,
            Params::default(),
        )
        .with_context(|| format!("the ledger at {} does not verify", self.log))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn fraction(ppm: u64) -> String {
    format!("{}.{:06}", ppm / ONE, ppm % ONE)
}

fn summary(v: &Verified) {
    let c = &v.checkpoint;
    println!(
        "checkpoint: {}, epoch {}, {} records, signed by {} ({})",
        c.network,
        c.epoch.0,
        c.tree_size,
        v.signers.len(),
        v.signers.join(", ")
    );
    println!(
        "verified: every tile and entry bundle hashes to the checkpoint's root; every record is signed by the relay it names"
    );
    if !v.extends.is_empty() {
        let sizes: Vec<String> = v.extends.iter().map(u64::to_string).collect();
        println!("extends the older checkpoints of size {}", sizes.join(", "));
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Verify { log, old } => {
            let v = log.verify(&old)?;
            summary(&v);
            let epochs = v.epochs.len();
            match (v.epochs.keys().next(), v.reputation.last_epoch()) {
                (Some(first), Some(last)) => println!(
                    "reputation from the records alone, epochs {} to {} ({epochs} with records; docs/spec/ledger.md):",
                    first.0, last.0
                ),
                _ => println!("no records: nobody has a reputation yet"),
            }
            if let Some(t) = &v.published {
                println!(
                    "the published reputation table matches the records: {} relays, from the first {} records, up to epoch {}",
                    t.relays.len(),
                    t.size,
                    t.epoch
                        .map_or_else(|| "none".to_owned(), |e| e.0.to_string())
                );
            }
            let mut counts: std::collections::BTreeMap<NodeId, u64> = Default::default();
            for r in &v.records {
                *counts.entry(r.measurement().relay.node_id()).or_default() += 1;
            }
            let mut relays: Vec<(NodeId, u64)> =
                v.reputation.all().map(|(id, r)| (*id, r)).collect();
            relays.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            if !relays.is_empty() {
                println!(
                    "{:<32}  {:>10}  {:>8}  {:>7}",
                    "relay", "reputation", "weight", "records"
                );
            }
            for (id, r) in relays {
                println!(
                    "{}  {:>10}  {:>8}  {:>7}",
                    hex(&id.0),
                    fraction(r),
                    fraction(v.reputation.weight(&id)),
                    counts.get(&id).copied().unwrap_or(0)
                );
            }
        }
        Command::Show { log, relay } => {
            let wanted = relay
                .trim()
                .trim_start_matches("pb-relay-")
                .to_ascii_lowercase();
            if wanted.len() < 8 || !wanted.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!("{relay}: give the relay's node id in hex, at least 8 digits of it");
            }
            let v = log.verify(&[])?;
            summary(&v);
            let mut ids: Vec<NodeId> = v
                .records
                .iter()
                .map(|r| r.measurement().relay.node_id())
                .chain(v.reputation.all().map(|(id, _)| *id))
                .filter(|id| hex(&id.0).starts_with(&wanted))
                .collect();
            ids.sort();
            ids.dedup();
            let id = match ids.as_slice() {
                [id] => *id,
                [] => bail!("{relay}: no relay of the ledger has that node id"),
                _ => bail!(
                    "{relay}: {} relays' node ids start so; give more digits",
                    ids.len()
                ),
            };
            println!("relay {}:", hex(&id.0));
            println!(
                "{:>8}  {:>13}  {:>12}  {:>10}  {:>10}",
                "epoch", "own links", "delivery", "score", "reputation"
            );
            let mut replay = pb_ledger::reputation::Reputation::new(*v.reputation.params());
            let mut by_epoch: std::collections::BTreeMap<_, Vec<_>> = Default::default();
            for r in &v.records {
                by_epoch
                    .entry(r.measurement().epoch)
                    .or_default()
                    .push(r.measurement());
            }
            for (epoch, records) in by_epoch {
                let own = records.iter().find(|m| m.relay.node_id() == id);
                let own_links = own.map_or("-".to_owned(), |m| {
                    let (sent, returned) = m
                        .links
                        .iter()
                        .fold((0u64, 0u64), |(s, r), l| (s + l.sent, r + l.returned));
                    format!("{} ({returned}/{sent})", m.links.len())
                });
                let scores = replay.apply(epoch, records.iter().copied());
                let (delivery, score) = scores
                    .as_ref()
                    .and_then(|s| s.relays.get(&id))
                    .map_or(("-".to_owned(), "-".to_owned()), |&(d, s)| {
                        (fraction(d), fraction(s))
                    });
                println!(
                    "{:>8}  {:>13}  {:>12}  {:>10}  {:>10}",
                    epoch.0,
                    own_links,
                    delivery,
                    score,
                    fraction(replay.get(&id))
                );
            }
            println!(
                "reputation {}, route weight {}",
                fraction(v.reputation.get(&id)),
                fraction(v.reputation.weight(&id))
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pb-ledger: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
