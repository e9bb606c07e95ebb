//! What the netns tests of pb-client share: the relay binary and the `/etc/netns` files.
// Each test file uses what it needs of these.
#![allow(dead_code, reason = "each test file uses what it needs")]

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

/// Makes the exit resolve `name` to `ip` from its namespace's hosts file (`ip netns exec`
/// mounts `/etc/netns/<namespace>/` over /etc), and nothing else (its resolver is its own
/// loopback, where nothing answers): the files are removed when the guard drops.
pub fn exit_resolves(exit_ns: &str, name: &str, ip: std::net::IpAddr) -> EtcNetns {
    let etc = PathBuf::from("/etc/netns").join(exit_ns);
    let guard = EtcNetns(vec![etc.clone()]);
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(
        etc.join("hosts"),
        format!("127.0.0.1 localhost\n{ip} {name}\n"),
    )
    .unwrap();
    std::fs::write(etc.join("resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
    guard
}

/// curl in namespace `ns` through the SOCKS5 proxy at `proxy`, given `seconds` at most: the
/// fetched bytes (or curl's complaint).
pub fn curl_via(
    ns: &str,
    proxy: &str,
    seconds: &str,
    url: &str,
    out: &Path,
) -> Result<Vec<u8>, String> {
    let result = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-sS", "--max-time", seconds])
        .args(["--socks5-hostname", proxy, url, "-o"])
        .arg(out)
        .output()
        .unwrap();
    if !result.status.success() {
        return Err(String::from_utf8_lossy(&result.stderr).into_owned());
    }
    std::fs::read(out).map_err(|e| e.to_string())
}

/// Runs `nft ARGS` in the testnet's switch namespace (the bridge every packet between two
/// nodes crosses): its output, or the test fails with nft's complaint.
pub fn nft(net: &pb_testnet::Testnet, args: &str) -> String {
    let switch = net.switch().unwrap();
    let out = switch.exec("nft", args.split(' ')).output().unwrap();
    assert!(
        out.status.success(),
        "nft {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
