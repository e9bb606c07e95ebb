//! Our length and inter-arrival tables against Go's own `math/rand` (Debian's Go, offline):
//! `tests/probdist-go/main.go` makes obfs4proxy's tables (`common/probdist` over
//! `common/drbg`) for 200 random seeds, over the length range (0-1448) and the delay range
//! (0-100); ours must hold the same values in the same order with the same weights. This is
//! what lets a bridge pick seeds whose length table leaves out 0, which obfs4proxy clients
//! in iat-mode 2 cannot survive.
//!
//! Needs `go` (`make test` installs it); without it, and outside CI, the test says so and
//! passes.
#![expect(clippy::unwrap_used, reason = "tests")]

use std::{
    io::Write as _,
    path::Path,
    process::{Command, Stdio},
};

use pb_obfs4::{Entropy as _, OsEntropy, WeightedDist};

#[test]
fn our_tables_are_gos() {
    if Command::new("go").arg("version").output().is_err() {
        let why = "go is not installed (make test installs golang-go)";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("skipped: {why}");
        return;
    }
    let scratch = std::env::temp_dir().join(format!("pb-obfs4-probdist-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let binary = scratch.join("probdist-go");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/probdist-go/main.go");
    let built = Command::new("go")
        .args(["build", "-o"])
        .arg(&binary)
        .arg(&source)
        .env("GO111MODULE", "off")
        .env("GOCACHE", scratch.join("cache"))
        .env("GOFLAGS", "")
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "go build: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let mut cases = Vec::new();
    for i in 0..200 {
        let mut seed = [0u8; 24];
        OsEntropy.fill_bytes(&mut seed);
        let (min, max) = if i % 2 == 0 {
            (0u16, 1448u16)
        } else {
            (0, 100)
        };
        cases.push((seed, min, max));
    }
    let input: String = cases
        .iter()
        .map(|(seed, min, max)| {
            let hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
            format!("{hex} {min} {max}\n")
        })
        .collect();
    let mut child = Command::new(&binary)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_dir_all(&scratch);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), cases.len());
    for ((seed, min, max), line) in cases.iter().zip(lines) {
        let fields: Vec<&str> = line.split(' ').collect();
        let n: usize = fields[0].parse().unwrap();
        let values: Vec<u16> = fields[1..=n].iter().map(|v| v.parse().unwrap()).collect();
        let weights: Vec<f64> = fields[n + 1..].iter().map(|w| w.parse().unwrap()).collect();
        let ours = WeightedDist::new(seed, *min, *max);
        assert_eq!(
            ours.support(),
            &values[..],
            "values of {seed:02x?} over {min}-{max}"
        );
        for (a, b) in ours.weights().iter().zip(&weights) {
            assert!((a - b).abs() < 1e-9, "weights of {seed:02x?}: {a} vs {b}");
        }
    }
}
