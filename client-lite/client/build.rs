//! Builds a network file into pb-client: `PB_NETWORK_FILE=PATH cargo build -p pb-client`
//! (docs/spec/network-file.md). Without it the binary has none, and asks for `--network`.

use std::{env, fs, path::PathBuf, process::exit};

fn main() {
    println!("cargo:rerun-if-env-changed=PB_NETWORK_FILE");
    let Some(out) = env::var_os("OUT_DIR").map(PathBuf::from) else {
        eprintln!("OUT_DIR is not set: run this through cargo");
        exit(1);
    };
    let text = match env::var_os("PB_NETWORK_FILE").filter(|p| !p.is_empty()) {
        Some(path) => {
            let path = PathBuf::from(path);
            println!("cargo:rerun-if-changed={}", path.display());
            match fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) => {
                    eprintln!("PB_NETWORK_FILE: cannot read {}: {e}", path.display());
                    exit(1);
                }
            }
        }
        None => Vec::new(),
    };
    if let Err(e) = fs::write(out.join("network.txt"), text) {
        eprintln!("cannot write the built-in network file: {e}");
        exit(1);
    }
}
