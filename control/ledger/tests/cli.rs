//! `pb-ledger` as an operator runs it, on a ledger of eight relays over six epochs (one of
//! them dropping a fifth of what it carries), written as stewards publish it: from a
//! directory, and from a web server written elsewhere (python3's `http.server`, on
//! loopback).
//!
//! Shows: `verify` accepts the ledger, names its signers and the older checkpoints it
//! extends, and prints every relay's reputation recomputed from the records alone, the
//! dropper's last; `show` prints one relay's history; a changed byte of a tile, a record
//! from another network, a checkpoint signed by too few stewards, an older checkpoint of
//! another history and bad arguments each end in one line on stderr and exit status 1.
#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use std::{
    fs,
    net::TcpStream,
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use common::{NETWORK, Scratch, checkpoint, checkpoint_with, stewards};
use pb_control::{IdentityKeyPair, note::NoteSigner};
use pb_ledger::{
    Tree,
    record::{LinkMeasurement, Measurement, RTT_BUCKET_COUNT, SignedMeasurement},
    reputation::{Params, Reputation, Table},
    tiles::TileDir,
};
use pb_sphinx::Epoch;

const DROPPER: usize = 5;

/// A child process killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn relays() -> Vec<IdentityKeyPair> {
    (0..8u8)
        .map(|i| IdentityKeyPair::from_seed(&[0x40 + i; 32]))
        .collect()
}

fn network_file(stewards: &[(String, IdentityKeyPair)]) -> String {
    let mut text = format!("name = {NETWORK}\nseed = {}\n", "42".repeat(32));
    for (name, pair) in stewards {
        let key = NoteSigner::new(name, pair).unwrap().key().vkey();
        text.push_str(&format!("steward = {key}\n"));
    }
    text.push_str("threshold = 2\nepoch_seconds = 60\n");
    text.push_str(&format!("gateway = 198.18.0.1:47480 {}\n", "ab".repeat(32)));
    text
}

/// Relay `me`'s record of `epoch`: 50 loops through each other relay; a loop through the
/// dropper (first hop) is lost one time in five, any loop one time in fifty.
fn record(network: &str, epoch: u32, me: usize, relays: &[IdentityKeyPair]) -> Vec<u8> {
    let mut links: Vec<LinkMeasurement> = (0..relays.len())
        .filter(|&n| n != me)
        .map(|n| {
            let seed = u64::from(epoch) * 131 + (me * 17 + n) as u64;
            let lost = if n == DROPPER { 10 } else { 1 } + seed % 2;
            let mut rtt = [0; RTT_BUCKET_COUNT];
            rtt[3] = 50 - lost;
            LinkMeasurement {
                neighbour: relays[n].public().node_id(),
                sent: 50,
                returned: 50 - lost,
                lost,
                rtt,
            }
        })
        .collect();
    links.sort_by_key(|l| l.neighbour);
    Measurement {
        network: network.into(),
        epoch: Epoch(epoch),
        relay: relays[me].public(),
        links,
    }
    .sign(&relays[me])
    .unwrap()
    .as_bytes()
    .to_vec()
}

/// Writes the ledger epoch by epoch into `log`, keeping each checkpoint beside it
/// (`checkpoint-<epoch>`); returns the tree.
fn publish(root: &Path, log: &Path) -> (Tree, Vec<Vec<u8>>) {
    let (stewards, relays) = (stewards(), relays());
    let dir = TileDir::new(log);
    let (mut tree, mut entries) = (Tree::new(), Vec::new());
    for epoch in 1..=6 {
        let before = tree.size();
        for me in 0..relays.len() {
            let r = record(NETWORK, epoch, me, &relays);
            tree.push(&r);
            entries.push(r);
        }
        dir.publish(&tree, &entries, before).unwrap();
        let note = checkpoint_with(&tree, commitment(&entries), epoch, &stewards, 2);
        dir.write("checkpoint", note.as_bytes()).unwrap();
        fs::write(root.join(format!("checkpoint-{epoch}")), note).unwrap();
    }
    // The stewards' table as of five epochs' records (published before the sixth).
    dir.write("reputation", table(&entries[..40]).text().as_bytes())
        .unwrap();
    (tree, entries)
}

/// The reputation table `entries` give.
fn table(entries: &[Vec<u8>]) -> Table {
    let records: Vec<SignedMeasurement> = entries
        .iter()
        .map(|e| SignedMeasurement::open(e).unwrap())
        .collect();
    let mut reputation = Reputation::new(Params::default());
    reputation.apply_all(records.iter().map(SignedMeasurement::measurement));
    Table::of(NETWORK, entries.len() as u64, &reputation)
}

/// What a checkpoint of `entries` commits to.
fn commitment(entries: &[Vec<u8>]) -> [u8; 32] {
    table(entries).commitment()
}

fn pb_ledger(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pb-ledger"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The reputation `verify` printed for each relay, in its order.
fn reputations(out: &str) -> Vec<(String, f64)> {
    out.lines()
        .skip_while(|l| !l.starts_with("relay "))
        .skip(1)
        .map(|l| {
            let mut words = l.split_whitespace();
            let id = words.next().unwrap().to_owned();
            (id, words.next().unwrap().parse().unwrap())
        })
        .collect()
}

#[test]
fn verify_and_show_read_a_ledger_from_a_directory_and_a_web_server() {
    let scratch = Scratch::new("cli-read");
    let log = scratch.0.join("log");
    publish(&scratch.0, &log);
    let network = scratch.0.join("network.txt");
    fs::write(&network, network_file(&stewards())).unwrap();
    let (n, l) = (network.to_str().unwrap(), log.to_str().unwrap());
    let old = scratch.0.join("checkpoint-2");

    let (ok, out, err) = pb_ledger(&[
        "verify",
        "--network",
        n,
        "--log",
        l,
        "--old",
        old.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    println!("{out}");
    assert!(out.contains(&format!(
        "checkpoint: {NETWORK}, epoch 6, 48 records, signed by 2 (pb.test/steward-1, pb.test/steward-2)"
    )));
    assert!(out.contains("extends the older checkpoints of size 16"));
    assert!(out.contains("epochs 1 to 6"));
    assert!(out.contains(
        "the published reputation table matches the records: 8 relays, from the first 40 records, up to epoch 5"
    ));
    let table = reputations(&out);
    assert_eq!(table.len(), 8, "{out}");
    let dropper = hex(&relays()[DROPPER].public().node_id().0);
    assert_eq!(
        table.last().unwrap().0,
        dropper,
        "the dropper is last:\n{out}"
    );
    assert!(table[..7].iter().all(|(_, r)| *r > 0.8), "{out}");
    assert!(table[7].1 < 0.1, "{out}");

    let (ok, shown, err) = pb_ledger(&["show", "--network", n, "--log", l, &dropper[..10]]);
    assert!(ok, "{err}");
    println!("{shown}");
    assert!(shown.contains(&format!("relay {dropper}:")));
    assert_eq!(
        shown
            .lines()
            .filter(|l| l.trim_start().starts_with(char::is_numeric))
            .count(),
        6,
        "{shown}"
    );
    assert!(shown.contains("reputation 0.0"), "{shown}");

    // The same from a web server: python3's http.server serving the directory.
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let server = Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .current_dir(&scratch.0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match server {
        Err(e) => {
            assert!(std::env::var_os("CI").is_none(), "python3: {e}");
            eprintln!("skipping the web server half: python3: {e}");
        }
        Ok(child) => {
            let _server = Server(child);
            let start = Instant::now();
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "http.server did not start"
                );
                thread::sleep(Duration::from_millis(50));
            }
            let url = format!("http://127.0.0.1:{port}/log");
            let (ok, over_http, err) = pb_ledger(&["verify", "--network", n, "--log", &url]);
            assert!(ok, "{err}");
            assert_eq!(reputations(&over_http), table);
            let (ok, _, err) = pb_ledger(&[
                "verify",
                "--network",
                n,
                "--log",
                &format!("http://127.0.0.1:{port}/nothing"),
            ]);
            assert!(!ok && err.contains("not found"), "{err}");
        }
    }
}

#[test]
fn a_changed_ledger_and_bad_arguments_each_get_one_line_and_status_1() {
    let scratch = Scratch::new("cli-refuse");
    let log = scratch.0.join("log");
    let (tree, mut entries) = publish(&scratch.0, &log);
    let network = scratch.0.join("network.txt");
    fs::write(&network, network_file(&stewards())).unwrap();
    let (n, l) = (
        network.to_str().unwrap().to_owned(),
        log.to_str().unwrap().to_owned(),
    );
    let refused = |args: &[&str], why: &str| {
        let (ok, _, err) = pb_ledger(args);
        assert!(!ok, "{args:?} was accepted");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with("pb-ledger: error: ") && err.contains(why),
            "{why}: {err}"
        );
    };
    let verify = ["verify", "--network", &n, "--log", &l];

    // One byte of a hash tile.
    let tile = log.join("tile/0/000.p/48");
    let bytes = fs::read(&tile).unwrap();
    let mut changed = bytes.clone();
    changed[33] ^= 1;
    fs::write(&tile, &changed).unwrap();
    refused(&verify, "does not hold the entries' hashes");
    fs::write(&tile, &bytes).unwrap();

    // A published reputation that is not the records'.
    let table = fs::read_to_string(log.join("reputation")).unwrap();
    let line = table.lines().nth(4).unwrap();
    let mut words: Vec<String> = line.split(' ').map(str::to_owned).collect();
    words[1] = format!("{}", words[1].parse::<u64>().unwrap() + 1);
    fs::write(
        log.join("reputation"),
        table.replace(line, &words.join(" ")),
    )
    .unwrap();
    refused(
        &verify,
        "the published reputation table: not what its 40 records give",
    );
    fs::write(log.join("reputation"), &table).unwrap();

    // A checkpoint committing to another table: validly signed, but not the records'.
    let good = fs::read(log.join("checkpoint")).unwrap();
    TileDir::new(&log)
        .write(
            "checkpoint",
            checkpoint_with(&tree, [9; 32], 6, &stewards(), 2).as_bytes(),
        )
        .unwrap();
    refused(
        &verify,
        "the checkpoint's reputation hash is not that of the table",
    );
    fs::write(log.join("checkpoint"), &good).unwrap();

    // Too few stewards: a checkpoint signed by one.
    let stewards = stewards();
    let good = fs::read(log.join("checkpoint")).unwrap();
    TileDir::new(&log)
        .write("checkpoint", checkpoint(&tree, 6, &stewards, 1).as_bytes())
        .unwrap();
    refused(&verify, "1 of the 2 steward signatures needed");
    fs::write(log.join("checkpoint"), &good).unwrap();

    // An older checkpoint of another history.
    let mut fork = Tree::new();
    for e in entries.iter().take(15) {
        fork.push(e);
    }
    fork.push(b"another record");
    let forked = scratch.0.join("forked");
    fs::write(&forked, checkpoint(&fork, 2, &stewards, 2)).unwrap();
    let mut with_old = verify.to_vec();
    with_old.extend(["--old", forked.to_str().unwrap()]);
    refused(&with_old, "does not extend the older checkpoint of size 16");

    // A record of another network, validly signed and logged.
    let other = TileDir::new(scratch.0.join("other"));
    entries[3] = record("pb.test/elsewhere", 1, 3, &relays());
    let mut t = Tree::new();
    for e in &entries {
        t.push(e);
    }
    other.publish(&t, &entries, 0).unwrap();
    other
        .write("checkpoint", checkpoint(&t, 6, &stewards, 2).as_bytes())
        .unwrap();
    let other_dir = other.root().to_str().unwrap().to_owned();
    refused(
        &["verify", "--network", &n, "--log", &other_dir],
        "entry 3: a record of another network",
    );

    // Arguments.
    refused(
        &["verify", "--network", "/nonexistent", "--log", &l],
        "reading /nonexistent",
    );
    refused(
        &["verify", "--network", &n, "--log", "https://example.test/"],
        "only directories and http:// URLs",
    );
    refused(
        &["verify", "--network", &n, "--log", "/nonexistent"],
        "not found",
    );
    refused(
        &["show", "--network", &n, "--log", &l, "xyz"],
        "at least 8 digits",
    );
    refused(
        &["show", "--network", &n, "--log", &l, "00000000"],
        "no relay of the ledger",
    );
}
