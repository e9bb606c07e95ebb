//! Our signed notes against Go's `golang.org/x/mod/sumdb/note` (the implementation the
//! C2SP spec came from; Debian's golang-golang-x-mod-dev, built here with Debian's Go in
//! GOPATH mode, offline): Go verifies what we sign, we verify what Go signs, both derive the
//! same verifier key, and Go refuses a note we signed once a byte of it changed.
//!
//! Needs `go` and the x/mod sources (`make test` installs both); without them, and outside
//! CI, the test says so and passes.
#![expect(clippy::unwrap_used, reason = "tests")]

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use pb_control::{
    IdentityKeyPair,
    note::{Note, NoteKey, NoteSigner, sign},
};

const GOPATH: &str = "/usr/share/gocode";
const TEXT: &str = "pb.test/network\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\nepoch 7\n";

/// Builds the Go helper into a scratch directory; `None` (with why) when Go is missing.
fn build() -> Option<(tempdir::Dir, PathBuf)> {
    let have_go = Command::new("go").arg("version").output().is_ok();
    let have_mod = Path::new(GOPATH)
        .join("src/golang.org/x/mod/sumdb/note")
        .exists();
    if !have_go || !have_mod {
        let why = "go or golang-golang-x-mod-dev is not installed (make test installs them)";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("skipped: {why}");
        return None;
    }
    let dir = tempdir::Dir::new();
    let binary = dir.0.join("note-go");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/note-go/main.go");
    let out = Command::new("go")
        .args(["build", "-o"])
        .arg(&binary)
        .arg(&source)
        .env("GO111MODULE", "off")
        .env("GOPATH", GOPATH)
        .env("GOCACHE", dir.0.join("cache"))
        .env("GOFLAGS", "")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "go build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some((dir, binary))
}

/// Runs the helper with `args` and `stdin`: its exit success and stdout (or stderr).
fn run(binary: &Path, args: &[&str], stdin: &str) -> (bool, String) {
    let mut child = Command::new(binary)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = if out.status.success() {
        out.stdout
    } else {
        out.stderr
    };
    (out.status.success(), String::from_utf8(text).unwrap())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn go_verifies_our_notes_and_we_verify_gos() {
    let Some((_dir, go)) = build() else {
        return;
    };
    let (seed_a, seed_b) = ([0x11; 32], [0x22; 32]);
    let (a, b) = (
        IdentityKeyPair::from_seed(&seed_a),
        IdentityKeyPair::from_seed(&seed_b),
    );
    let sa = NoteSigner::new("pb.test/steward-a", &a).unwrap();
    let sb = NoteSigner::new("pb.test/steward-b", &b).unwrap();

    // The same verifier key on both sides.
    let (ok, vkey) = run(&go, &["vkey", "pb.test/steward-a", &hex(&a.public().0)], "");
    assert!(ok, "{vkey}");
    assert_eq!(vkey.trim(), sa.key().vkey());

    // Go opens what we sign, with both signatures verified.
    let note = sign(TEXT, &[&sa, &sb]).unwrap();
    let (ok, out) = run(&go, &["verify", &sa.key().vkey(), &sb.key().vkey()], &note);
    assert!(ok, "Go refused our note: {out}");
    assert_eq!(
        out,
        format!("{TEXT}signer pb.test/steward-a\nsigner pb.test/steward-b\n")
    );
    // ... and refuses it once a byte of the text changed.
    let changed = note.replacen("epoch 7", "epoch 8", 1);
    let (ok, out) = run(&go, &["verify", &sa.key().vkey()], &changed);
    assert!(!ok, "Go accepted a changed note: {out}");

    // We open what Go signs.
    let (ok, signed) = run(&go, &["sign", "pb.test/steward-b", &hex(&seed_b)], TEXT);
    assert!(ok, "{signed}");
    assert_eq!(
        signed,
        note.replace(&format!("{}\n", sa.signature_line(TEXT)), "")
    );
    let parsed = Note::parse(signed.as_bytes()).unwrap();
    assert_eq!(parsed.text, TEXT);
    let keys = [NoteKey::from_vkey(&sb.key().vkey()).unwrap()];
    assert_eq!(parsed.verify(&keys).unwrap(), vec![0]);
}

#[test]
fn go_opens_the_specs_checkpoint_vector() {
    let Some((_dir, go)) = build() else {
        return;
    };
    let spec = include_str!("../../../docs/spec/checkpoint.md");
    let blocks: Vec<&str> = spec
        .split("```text\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .collect();
    let vkeys: Vec<&str> = blocks
        .iter()
        .find(|b| b.starts_with("pb.test/steward-1+"))
        .unwrap()
        .lines()
        .take(3)
        .collect();
    let note = blocks
        .iter()
        .find(|b| b.starts_with("pb.test/network\n"))
        .unwrap();
    let mut args = vec!["verify"];
    args.extend(&vkeys);
    let (ok, out) = run(&go, &args, note);
    assert!(ok, "Go refused the spec's vector: {out}");
    assert!(out.ends_with(
        "signer pb.test/steward-1\nsigner pb.test/steward-2\nsigner pb.test/steward-3\n"
    ));
}

/// A scratch directory removed on drop.
mod tempdir {
    use std::path::PathBuf;

    pub struct Dir(pub PathBuf);

    impl Dir {
        pub fn new() -> Self {
            // Tests of this file run at once: each gets its own directory.
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("pb-note-go-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
