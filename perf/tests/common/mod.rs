//! What the netns smoke tests of pb-perf share.

use std::path::Path;

/// pb-perf, when pb-relay and pb-client were built next to it; otherwise `None` after a
/// line saying why (in CI, which builds every binary, that fails the test instead).
pub fn pb_perf_with_binaries() -> Option<&'static Path> {
    let me = Path::new(env!("CARGO_BIN_EXE_pb-perf"));
    let missing: Vec<_> = ["pb-relay", "pb-client"]
        .iter()
        .filter(|b| !me.with_file_name(b).exists())
        .collect();
    if missing.is_empty() {
        return Some(me);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI builds every binary: {missing:?} missing"
    );
    eprintln!("skipping: {missing:?} not built next to pb-perf");
    None
}
