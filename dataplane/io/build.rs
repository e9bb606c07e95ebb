//! Builds the XDP program in `ebpf/pb-xdp` for `bpfel-unknown-none` with the nightly pinned in
//! its `rust-toolchain.toml`, and leaves the object at `$OUT_DIR/pb-xdp.o` for `include_bytes!`.
//!
//! Needs what `deploy/setup.sh` installs: rustup with that nightly and `rust-src`, and
//! `bpf-linker`. A missing piece fails the build with a line saying how to install it.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    if let Err(e) = build() {
        println!("cargo::error=building the XDP program failed: {e}");
        println!("cargo::error=run `deploy/setup.sh` (as root) to install the eBPF toolchain");
        std::process::exit(1);
    }
}

fn build() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let out_dir = PathBuf::from(env::var("OUT_DIR").map_err(|e| e.to_string())?);
    let program_dir = manifest_dir.join("../../ebpf/pb-xdp");
    let common_dir = manifest_dir.join("../../ebpf/pb-xdp-common");
    for dir in [&program_dir, &common_dir] {
        println!("cargo::rerun-if-changed={}", dir.join("src").display());
        println!(
            "cargo::rerun-if-changed={}",
            dir.join("Cargo.toml").display()
        );
    }
    println!(
        "cargo::rerun-if-changed={}",
        program_dir.join("Cargo.lock").display()
    );
    let toolchain_file = program_dir.join("rust-toolchain.toml");
    println!("cargo::rerun-if-changed={}", toolchain_file.display());
    let toolchain = pinned_channel(&toolchain_file)?;

    let target_dir = out_dir.join("ebpf-target");
    let mut cmd = Command::new("rustup");
    cmd.args(["run", &toolchain, "cargo", "build", "--release", "--locked"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .arg("--manifest-path")
        .arg(program_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            [
                "--cfg=bpf_target_arch=\"x86_64\"",
                "-Cdebuginfo=2",
                "-Clink-arg=--btf",
            ]
            .join("\x1f"),
        );
    // The outer build's compiler settings are for the host; the program has its own.
    for key in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
    ] {
        cmd.env_remove(key);
    }
    let status = cmd
        .status()
        .map_err(|e| format!("could not start `rustup run {toolchain} cargo`: {e}"))?;
    if !status.success() {
        return Err(format!(
            "`rustup run {toolchain} cargo build` for ebpf/pb-xdp exited with {status}"
        ));
    }
    let object = target_dir.join("bpfel-unknown-none/release/pb-xdp");
    fs::copy(&object, out_dir.join("pb-xdp.o"))
        .map_err(|e| format!("copying {}: {e}", object.display()))?;
    Ok(())
}

/// The `channel = "..."` value of a rust-toolchain.toml.
fn pinned_channel(path: &Path) -> Result<String, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.trim().strip_prefix('='))
        .map(|value| value.trim().trim_matches('"').to_owned())
        .next()
        .ok_or_else(|| format!("no `channel = \"...\"` line in {}", path.display()))
}
