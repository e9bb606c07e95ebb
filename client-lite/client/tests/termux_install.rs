//! `deploy/termux-install.sh` with a temporary PREFIX standing in for Termux's: it installs
//! pb-client and the phone wrapper, both runnable, and refuses a binary that does not run.
//! Unprivileged; touches nothing outside its PREFIX.
#![expect(clippy::unwrap_used, reason = "tests")]

use std::{os::unix::fs::PermissionsExt as _, path::Path, process::Command};

fn install(prefix: &Path, binary: &Path) -> std::process::Output {
    Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/termux-install.sh"))
        .arg("--binary")
        .arg(binary)
        .env("PREFIX", prefix)
        .output()
        .unwrap()
}

#[test]
fn the_termux_script_installs_a_runnable_client() {
    let prefix = std::env::temp_dir().join(format!("pb-termux-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&prefix);
    let out = install(&prefix, Path::new(env!("CARGO_BIN_EXE_pb-client")));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["pb-client", "pb-client-phone"] {
        let path = prefix.join("bin").join(name);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o111, 0o111, "{name} is executable");
    }
    let version = Command::new(prefix.join("bin/pb-client"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("pb-client "));
    // A file that is not a program for this machine is refused, in one line.
    let junk = prefix.join("junk");
    std::fs::write(&junk, b"not a program").unwrap();
    let out = install(&prefix.join("other"), &junk);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("does not run here"), "{said}");
    std::fs::remove_dir_all(&prefix).unwrap();
}
