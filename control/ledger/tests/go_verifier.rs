//! Our log against a verifier written elsewhere: `tests/verify-go/main.go` uses Go's
//! `golang.org/x/mod/sumdb/tlog` and `sumdb/note` (Debian's golang-golang-x-mod-dev, built
//! with Debian's Go in GOPATH mode, offline) and none of our code. It checks the stewards'
//! signatures on the checkpoint (k of the keys), recomputes the tree hash from the hash
//! tiles, proves sampled records (read from the entry bundles) included, and proves the log
//! consistent with an older checkpoint. The entries are measurement records signed by eight
//! relays, whose signatures Go checks too.
//!
//! Shows: Go accepts the log at sizes from 1 to 70,000 (partial and full tiles of three
//! levels), each consistent with the one before; and refuses it once one byte of a hash
//! tile, one byte of a record or one byte of a signature changed, with fewer signatures
//! than k, against an older checkpoint of another history, or with a record whose relay
//! signature does not verify.
//!
//! Needs `go` and the x/mod sources (`make test` installs both); without them, and outside
//! CI, the test says so and passes.
#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use common::{NETWORK, Scratch, checkpoint, stewards};
use pb_control::{IdentityKeyPair, note::NoteSigner};
use pb_ledger::{
    Tree,
    record::{LinkMeasurement, Measurement, RTT_BUCKET_COUNT},
    tiles::TileDir,
};
use pb_sphinx::Epoch;

const GOPATH: &str = "/usr/share/gocode";

/// Builds the Go verifier into `dir`; `None` (with why) when Go is missing.
fn build(dir: &Path) -> Option<PathBuf> {
    let have_go = Command::new("go").arg("version").output().is_ok();
    let have_mod = Path::new(GOPATH)
        .join("src/golang.org/x/mod/sumdb/tlog")
        .exists();
    if !have_go || !have_mod {
        let why = "go or golang-golang-x-mod-dev is not installed (make test installs them)";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("skipped: {why}");
        return None;
    }
    let binary = dir.join("verify-go");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/verify-go/main.go");
    let out = Command::new("go")
        .args(["build", "-o"])
        .arg(&binary)
        .arg(&source)
        .env("GO111MODULE", "off")
        .env("GOPATH", GOPATH)
        .env("GOCACHE", dir.join("cache"))
        .env("GOFLAGS", "")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "go build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(binary)
}

/// Eight relays' key pairs, the measurers.
fn relays() -> Vec<IdentityKeyPair> {
    (0..8u8)
        .map(|i| IdentityKeyPair::from_seed(&[0x80 + i; 32]))
        .collect()
}

/// Record `i`: relay `i % 8`'s measurement of epoch `i / 8` over its links to two to four
/// others, signed by it.
fn record(i: u64, relays: &[IdentityKeyPair]) -> Vec<u8> {
    let me = (i % 8) as usize;
    let mut links: Vec<LinkMeasurement> = (1..=2 + i % 3)
        .map(|d| {
            let (returned, lost) = (90 + (i + d) % 11, (i + d) % 3);
            let mut rtt = [0; RTT_BUCKET_COUNT];
            rtt[LinkMeasurement::bucket(100 + i % 700)] = returned;
            LinkMeasurement {
                neighbour: relays[(me + d as usize) % 8].public().node_id(),
                sent: returned + lost + (i + d) % 13,
                returned,
                lost,
                rtt,
            }
        })
        .collect();
    links.sort_by_key(|l| l.neighbour);
    Measurement {
        network: NETWORK.into(),
        epoch: Epoch((i / 8) as u32),
        relay: relays[me].public(),
        links,
    }
    .sign(&relays[me])
    .unwrap()
    .as_bytes()
    .to_vec()
}

/// Runs the verifier on `dir` needing `k` signatures (and `old`, if given): success and
/// what it printed.
fn verify(
    go: &Path,
    dir: &Path,
    keys: &[(String, IdentityKeyPair)],
    k: usize,
    old: Option<&Path>,
) -> (bool, String) {
    let mut command = Command::new(go);
    command
        .arg("-dir")
        .arg(dir)
        .args(["-k", &k.to_string(), "-samples", "48"]);
    for (name, pair) in keys {
        command
            .arg("-vkey")
            .arg(NoteSigner::new(name, pair).unwrap().key().vkey());
    }
    if let Some(old) = old {
        command.arg("-old").arg(old);
    }
    let out = command.output().unwrap();
    let text = String::from_utf8_lossy(if out.status.success() {
        &out.stdout
    } else {
        &out.stderr
    })
    .into_owned();
    (out.status.success(), text)
}

/// Flips a bit of byte `at` of `path`.
fn flip(path: &Path, at: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at] ^= 0x01;
    fs::write(path, bytes).unwrap();
}

#[test]
fn go_verifies_our_log_its_proofs_and_its_growth_and_finds_any_change() {
    let scratch = Scratch::new("go-verify");
    let Some(go) = build(&scratch.0) else {
        return;
    };
    let keys = stewards();
    let relays = relays();
    let log = scratch.0.join("log");
    let dir = TileDir::new(&log);
    let (mut tree, mut entries) = (Tree::new(), Vec::new());
    let mut old: Option<PathBuf> = None;
    // Growths that make partial and full tiles at levels 0, 1 and 2.
    for (epoch, size) in [1u64, 7, 256, 257, 65_536, 70_000].into_iter().enumerate() {
        let before = tree.size();
        while tree.size() < size {
            let r = record(tree.size(), &relays);
            tree.push(&r);
            entries.push(r);
        }
        dir.publish(&tree, &entries, before).unwrap();
        dir.write(
            "checkpoint",
            checkpoint(&tree, epoch as u32, &keys, 2).as_bytes(),
        )
        .unwrap();
        let (ok, out) = verify(&go, &log, &keys, 2, old.as_deref());
        assert!(ok, "Go refused the log at size {size}: {out}");
        assert!(
            out.starts_with(&format!("ok: tree of {size} records, 2 signatures")),
            "{out}"
        );
        if old.is_some() {
            assert!(out.contains("extends the checkpoint of size"), "{out}");
        }
        println!("size {size}: {}", out.trim());
        // The verifier keeps the checkpoint it saw, to hold the next against.
        let kept = scratch.0.join(format!("checkpoint-{size}"));
        fs::copy(log.join("checkpoint"), &kept).unwrap();
        old = Some(kept);
    }
    let old_7 = scratch.0.join("checkpoint-7");
    let (ok, out) = verify(&go, &log, &keys, 2, Some(&old_7));
    assert!(ok, "{out}");

    // Fewer signatures than k.
    let (ok, out) = verify(&go, &log, &keys, 3, None);
    assert!(
        !ok && out.contains("2 signatures of known keys, 3 needed"),
        "{out}"
    );

    // One byte of a hash tile: the last record's level-0 tile, then a level-1 tile.
    for tile in ["tile/0/273.p/112", "tile/1/000"] {
        let path = log.join(tile);
        flip(&path, 100);
        let (ok, out) = verify(&go, &log, &keys, 2, None);
        assert!(!ok, "Go accepted a changed byte in {tile}: {out}");
        println!("{tile} changed: {}", out.trim());
        flip(&path, 100);
    }
    // One byte of a record (the last one's bundle, which the verifier always proves).
    let bundle = log.join("tile/entries/273.p/112");
    let len = fs::metadata(&bundle).unwrap().len() as usize;
    flip(&bundle, len - 10);
    let (ok, out) = verify(&go, &log, &keys, 2, None);
    assert!(!ok && out.contains("is not in the tree"), "{out}");
    println!("a record changed: {}", out.trim());
    flip(&bundle, len - 10);

    // A record whose relay signature does not verify, logged as it is: in the tree, but
    // Go finds the signature bad.
    let mut bad = record(tree.size(), &relays);
    let at = bad.len() - 8;
    bad[at] = if bad[at] == b'A' { b'B' } else { b'A' };
    let before = tree.size();
    tree.push(&bad);
    entries.push(bad);
    dir.publish(&tree, &entries, before).unwrap();
    dir.write("checkpoint", checkpoint(&tree, 9, &keys, 2).as_bytes())
        .unwrap();
    let (ok, out) = verify(&go, &log, &keys, 2, None);
    assert!(!ok && out.contains("its relay's signature"), "{out}");
    println!("a record badly signed: {}", out.trim());
    tree = Tree::new();
    entries.truncate(before as usize);
    for e in &entries {
        tree.push(e);
    }
    // Back to the log of 70,000 (whose tiles are still there).
    fs::remove_file(log.join("tile/0/273.p/113")).unwrap();
    fs::remove_file(log.join("tile/entries/273.p/113")).unwrap();
    dir.write("checkpoint", checkpoint(&tree, 5, &keys, 2).as_bytes())
        .unwrap();

    // One byte of a signature.
    let note = fs::read_to_string(log.join("checkpoint")).unwrap();
    let line = note.lines().last().unwrap();
    let mut changed_line = line.to_owned();
    let at = changed_line.len() - 5;
    let c = if &changed_line[at..=at] == "A" {
        "B"
    } else {
        "A"
    };
    changed_line.replace_range(at..=at, c);
    fs::write(log.join("checkpoint"), note.replace(line, &changed_line)).unwrap();
    let (ok, out) = verify(&go, &log, &keys, 2, None);
    assert!(!ok, "Go accepted a changed signature: {out}");
    println!("a signature changed: {}", out.trim());
    fs::write(log.join("checkpoint"), &note).unwrap();
    let (ok, out) = verify(&go, &log, &keys, 2, None);
    assert!(ok, "{out}");

    // An older checkpoint of another history: validly signed, but one record differs.
    let mut fork = Tree::new();
    for i in 0..257 {
        fork.push(&record(if i == 100 { 1000 } else { i }, &relays));
    }
    let forked = scratch.0.join("checkpoint-fork");
    fs::write(&forked, checkpoint(&fork, 3, &keys, 2)).unwrap();
    let (ok, out) = verify(&go, &log, &keys, 2, Some(&forked));
    assert!(!ok && out.contains("does not extend"), "{out}");
    println!("a forked history: {}", out.trim());
}
