//! `pb-perf ledger`: what the incentive ledger costs at scale. A synthetic ledger of
//! `--relays` relays over `--epochs` epochs (each relay's record of each epoch, its loops
//! through `--links` neighbours, signed with its own key) is published as stewards publish
//! it (tiles, entry bundles, a checkpoint per epoch signed by two of three stewards) in a
//! scratch directory, then checked as `pb-ledger verify` checks it
//! (`pb_ledger::verify::verify`: every file, hash, record signature, and the reputation).
//!
//! Reported: the log's growth per relay per epoch (the records alone, and every file), its
//! total size, the time to publish it and the time to verify it, and records verified per
//! second. No root, no network.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::Context as _;
use pb_control::{
    IdentityKeyPair,
    checkpoint::{Checkpoint, Stewards},
    note::{NoteSigner, sign},
};
use pb_ledger::{
    Tree,
    record::{LinkMeasurement, MAX_LINKS, Measurement, RTT_BUCKET_COUNT},
    reputation::{Params, Reputation, Table},
    tiles::TileDir,
    verify::verify,
};
use pb_sphinx::Epoch;
use serde_json::json;

use crate::{
    progress::Progress,
    report::{Measurement as Row, row},
};

const NETWORK: &str = "pb.test/ledger-bench";

/// Settings of a run.
#[derive(Debug)]
pub struct LedgerArgs {
    /// Relays, each making one record an epoch.
    pub relays: usize,
    /// Epochs.
    pub epochs: u32,
    /// Links per record.
    pub links: usize,
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Bytes of every file under `dir`.
fn bytes_under(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            bytes_under(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// Relay `me`'s record of `epoch`: links to the `links` relays after it (in a ring), 360
/// loops each (a loop every ten seconds per link over an hour), a few lost.
fn record(epoch: u32, me: usize, relays: &[IdentityKeyPair], links: usize) -> Measurement {
    let n = relays.len();
    let mut list: Vec<LinkMeasurement> = (1..=links)
        .map(|d| {
            let seed = u64::from(epoch) * 7919 + (me * 31 + d) as u64;
            let lost = seed % 7;
            let returned = 360 - lost;
            let mut rtt = [0; RTT_BUCKET_COUNT];
            rtt[2] = returned / 3;
            rtt[3] = returned / 3;
            rtt[4] = returned - 2 * (returned / 3);
            LinkMeasurement {
                neighbour: relays[(me + d) % n].public().node_id(),
                sent: 360,
                returned,
                lost,
                rtt,
            }
        })
        .collect();
    list.sort_by_key(|l| l.neighbour);
    Measurement {
        network: NETWORK.into(),
        epoch: Epoch(epoch),
        relay: relays[me].public(),
        links: list,
    }
}

/// Runs the benchmark.
pub fn run(args: &LedgerArgs) -> anyhow::Result<Vec<Row>> {
    anyhow::ensure!(args.relays >= 2, "--relays: at least 2");
    anyhow::ensure!(args.epochs >= 1, "--epochs: at least 1");
    anyhow::ensure!(
        (1..=MAX_LINKS.min(args.relays - 1)).contains(&args.links),
        "--links: 1 to {} (a record holds at most {MAX_LINKS}, and a relay links to others only)",
        MAX_LINKS.min(args.relays - 1)
    );
    let scratch =
        Scratch(std::env::temp_dir().join(format!("pb-perf-ledger-{}", std::process::id())));
    let _ = fs::remove_dir_all(&scratch.0);
    fs::create_dir_all(&scratch.0).context("creating a scratch directory")?;
    let dir = TileDir::new(scratch.0.join("log"));
    let progress = Progress::new("pb-perf ledger", args.epochs as usize + 1);

    let relays: Vec<IdentityKeyPair> = (0..args.relays)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
            seed[31] = 0x1e;
            IdentityKeyPair::from_seed(&seed)
        })
        .collect();
    let stewards: Vec<(String, IdentityKeyPair)> = (1..=3u8)
        .map(|i| {
            (
                format!("pb.test/steward-{i}"),
                IdentityKeyPair::from_seed(&[i; 32]),
            )
        })
        .collect();
    let signers: Vec<NoteSigner<'_>> = stewards
        .iter()
        .map(|(n, p)| NoteSigner::new(n, p))
        .collect::<Result<_, _>>()?;
    let stewards_set = Stewards::new(
        NETWORK,
        signers.iter().map(|s| s.key().clone()).collect(),
        2,
    )?;

    let (mut tree, mut entries) = (Tree::new(), Vec::new());
    // The stewards' table, kept up to date epoch by epoch as a steward does.
    let mut reputation = Reputation::new(Params::default());
    let mut record_bytes = 0u64;
    let started = Instant::now();
    for epoch in 1..=args.epochs {
        progress.step(&format!(
            "epoch {epoch}: {} records signed and published",
            args.relays
        ));
        let before = tree.size();
        let mut made = Vec::with_capacity(args.relays);
        for me in 0..args.relays {
            let measurement = record(epoch, me, &relays, args.links);
            let signed = measurement.sign(&relays[me])?;
            made.push(measurement);
            record_bytes += signed.as_bytes().len() as u64;
            tree.push(signed.as_bytes());
            entries.push(signed.as_bytes().to_vec());
        }
        dir.publish(&tree, &entries, before)?;
        reputation.apply(Epoch(epoch), &made);
        let table = Table::of(NETWORK, tree.size(), &reputation);
        dir.write("reputation", table.text().as_bytes())?;
        let text = Checkpoint {
            network: NETWORK.into(),
            tree_size: tree.size(),
            tree_root: tree.root(tree.size())?.0,
            reputation: table.commitment(),
            epoch: Epoch(epoch),
            descriptors: [0; 32],
            topology: [0; 32],
        }
        .text();
        dir.write(
            "checkpoint",
            sign(&text, &[&signers[0], &signers[1]])?.as_bytes(),
        )?;
    }
    let publish = started.elapsed().as_secs_f64();
    let total_bytes = bytes_under(dir.root())?;

    progress.step("verifying every file, record and reputation");
    let started = Instant::now();
    let verified = verify(&dir, &stewards_set, &[], Params::default())?;
    let verify_secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        verified.records.len() == entries.len() && verified.reputation.all().count() == args.relays,
        "the verifier saw {} records and {} relays, not {} and {}",
        verified.records.len(),
        verified.reputation.all().count(),
        entries.len(),
        args.relays
    );
    drop(progress);

    let per = f64::from(args.epochs) * args.relays as f64;
    let params = [
        ("relays", json!(args.relays)),
        ("epochs", json!(args.epochs)),
        ("links", json!(args.links)),
    ];
    Ok(vec![
        row(
            "ledger.growth",
            "records",
            &params,
            (record_bytes as f64 / per).round(),
            "B/relay/epoch",
        ),
        row(
            "ledger.growth",
            "all_files",
            &params,
            (total_bytes as f64 / per).round(),
            "B/relay/epoch",
        ),
        row(
            "ledger.size",
            "all_files",
            &params,
            (total_bytes as f64 / 1e6 * 10.0).round() / 10.0,
            "MB",
        ),
        row(
            "ledger.publish",
            "phantomband",
            &params,
            (publish * 100.0).round() / 100.0,
            "s",
        ),
        row(
            "ledger.verify",
            "phantomband",
            &params,
            (verify_secs * 100.0).round() / 100.0,
            "s",
        ),
        row(
            "ledger.verify",
            "phantomband",
            &params,
            (entries.len() as f64 / verify_secs).round(),
            "records/s",
        ),
    ])
}
