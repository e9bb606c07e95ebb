//! What the netns tests of pb-client share: the relay binary and the `/etc/netns` files.

use std::path::{Path, PathBuf};

/// The pb-relay binary built next to this package's binary.
pub fn relay_binary() -> PathBuf {
    let client = Path::new(env!("CARGO_BIN_EXE_pb-client"));
    let relay = client.with_file_name("pb-relay");
    assert!(
        relay.exists(),
        "{} is missing: build it first (cargo build -p pb-relay)",
        relay.display()
    );
    relay
}

/// `/etc/netns/<namespace>` directories (hosts and resolver files that `ip netns exec`
/// mounts over /etc), removed however the test ends.
pub struct EtcNetns(pub Vec<PathBuf>);

impl Drop for EtcNetns {
    fn drop(&mut self) {
        for dir in &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
