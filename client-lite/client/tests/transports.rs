//! The client link under each disguise, real processes in network namespaces: five relays
//! (a gateway listening on plain UDP, QUIC and WSS; a mix per layer; an exit: what is tested
//! is the access link, and fewer real-time relays leave the 2-vCPU testbed's CPU to the
//! transports), an HTTP server, and `pb-client --transport quic|wss` with curl in the client
//! namespace.
//!
//! Shows: over QUIC and over WSS, curl fetches a 1 MiB file through the mixnet
//! byte-identical, and again with 5 % of the client's access link dropped both ways
//! (nftables in the client namespace; QUIC and TCP retransmit, the link and the channel
//! recover what they lose); the static aarch64 pb-client under qemu-aarch64 does the same
//! over both, without loss; with the plain UDP link blocked, `--transport auto` gives up on
//! UDP when its handshake goes unanswered and fetches over QUIC; real tools see what we claim: gtlsclient (ngtcp2's HTTP/3
//! client) gets the web page from the QUIC listener, `curl -k` gets it from the WSS listener,
//! and tshark dissects a capture of each client session as QUIC (resp. TLS) with no
//! malformed packet and no other protocol on the access link.
#![cfg(target_arch = "x86_64")]
#![expect(clippy::unwrap_used, clippy::panic, reason = "tests")]

use std::{
    path::Path,
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use pb_testnet::{FileServer, Network, Node, QUIC_PORT, Testnet, WSS_PORT};

mod common {
    pub mod capture;
    pub mod testnet;
}

use common::capture::{Capture, tshark_count};
use common::testnet::{curl_via, exit_resolves, relay_binary};

const RELAYS: usize = 5;
const EXIT: Node = Node::Relay(RELAYS - 1);
const FILE_LEN: usize = 1 << 20;
const HTTP_PORT: u16 = 8080;
const SERVER_NAME: &str = "server.pb.test";

/// `program args..` in namespace `ns`: its standard output (and error, for messages).
fn run_in(ns: &str, program: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, program])
        .args(args)
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Whether `program` runs here.
fn have(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// In CI every tool must be there (`make test` installs them); elsewhere a missing one skips
/// its part with a line saying so.
fn missing(what: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI must run this part: {what}"
    );
    println!("skipping: {what}");
}

/// Drops `percent` % of the client namespace's packets each way (not loopback) while it
/// lives.
struct Loss(String);

impl Loss {
    fn new(ns: &str, percent: u32) -> Self {
        let nft = |args: &[&str]| {
            let out = Command::new("ip")
                .args(["netns", "exec", ns, "nft"])
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "nft {args:?}: {out:?}");
        };
        nft(&["add", "table", "inet", "pbloss"]);
        for (chain, hook, dev) in [("in", "input", "iifname"), ("out", "output", "oifname")] {
            nft(&[
                "add",
                "chain",
                "inet",
                "pbloss",
                chain,
                &format!("{{ type filter hook {hook} priority 0; }}"),
            ]);
            nft(&[
                "add",
                "rule",
                "inet",
                "pbloss",
                chain,
                dev,
                "!=",
                "lo",
                "numgen",
                "random",
                "mod",
                "100",
                "<",
                &percent.to_string(),
                "counter",
                "drop",
            ]);
        }
        Self(ns.to_owned())
    }

    /// Packets dropped so far.
    fn dropped(&self) -> u64 {
        let out = Command::new("ip")
            .args([
                "netns", "exec", &self.0, "nft", "list", "table", "inet", "pbloss",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split("packets ").nth(1))
            .filter_map(|r| r.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }
}

impl Drop for Loss {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args([
                "netns", "exec", &self.0, "nft", "delete", "table", "inet", "pbloss",
            ])
            .status();
    }
}

/// Drops every datagram from the client namespace to `port` (a censor blocking the plain
/// UDP link) while it lives.
struct Block(String);

impl Block {
    fn new(ns: &str, port: u16) -> Self {
        for args in [
            vec!["add", "table", "inet", "pbblock"],
            vec![
                "add",
                "chain",
                "inet",
                "pbblock",
                "out",
                "{ type filter hook output priority 0; }",
            ],
        ] {
            let out = Command::new("ip")
                .args(["netns", "exec", ns, "nft"])
                .args(&args)
                .output()
                .unwrap();
            assert!(out.status.success(), "nft {args:?}: {out:?}");
        }
        let port = port.to_string();
        let out = Command::new("ip")
            .args([
                "netns", "exec", ns, "nft", "add", "rule", "inet", "pbblock", "out",
            ])
            .args(["udp", "dport", &port, "drop"])
            .output()
            .unwrap();
        assert!(out.status.success(), "nft: {out:?}");
        Self(ns.to_owned())
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args([
                "netns", "exec", &self.0, "nft", "delete", "table", "inet", "pbblock",
            ])
            .status();
    }
}

#[test]
fn curl_fetches_through_quic_and_wss_with_and_without_loss() {
    if !pb_testbed::require_privileged("curl_fetches_through_quic_and_wss_with_and_without_loss") {
        return;
    }
    let network = Network::builder()
        .relays(RELAYS)
        .netns("tra")
        .network_seed([0x52; 32])
        .identity_seeds(0xb0)
        .link_rate(100)
        .loop_rate(1)
        .stats_interval(0.0)
        .relay_binary(relay_binary())
        .build()
        .unwrap();
    let mut net = Testnet::create(network.clone()).unwrap();
    let web = network.address(Node::Web);
    let ns_name = |node| net.netns(node).unwrap().name().to_owned();
    let client_ns = ns_name(Node::Client);
    let _etc = exit_resolves(&ns_name(EXIT), SERVER_NAME, web.into());
    net.start_relays().unwrap();
    let body = Arc::new(pb_testnet::pattern(FILE_LEN));
    let _server =
        FileServer::start(net.listen(Node::Web, HTTP_PORT).unwrap(), body.clone()).unwrap();
    if let Err(e) = net.wait_for_agreement(Duration::from_secs(60)) {
        panic!("{e}");
    }
    let gateway = network.address(Node::Relay(0));
    let url = format!("http://{SERVER_NAME}:{HTTP_PORT}/file");
    let dir = net.dir().to_owned();
    let tshark = have("tshark", "--version") && have("dumpcap", "--version");
    let mut report = Vec::new();

    // 1. Real tools at the listeners: the cover site.
    if have("gtlsclient", "--help") {
        let download = dir.join("gtls");
        std::fs::create_dir_all(&download).unwrap();
        let out = run_in(
            &client_ns,
            "gtlsclient",
            &[
                "--quiet",
                "--exit-on-all-streams-close",
                "--timeout=5s",
                &format!("--download={}", download.display()),
                &gateway.to_string(),
                &QUIC_PORT.to_string(),
                &format!("https://{gateway}:{QUIC_PORT}/"),
            ],
        );
        let got: String = std::fs::read_dir(&download)
            .unwrap()
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .collect();
        assert!(
            got.contains("<html"),
            "gtlsclient got no page from the QUIC listener: {got:?} {out}"
        );
        report.push("gtlsclient got the page over HTTP/3".to_owned());
    } else {
        missing("gtlsclient (Debian ngtcp2-client) is not installed");
    }
    let page = run_in(
        &client_ns,
        "curl",
        &["-sk", &format!("https://{gateway}:{WSS_PORT}/")],
    );
    assert!(page.contains("<html"), "curl -k got no page: {page}");
    report.push("curl -k got the page over HTTPS".to_owned());

    // 2. Each disguise, without and with loss; x86 and (no loss) aarch64 under qemu.
    let arm = Path::new(env!("CARGO_BIN_EXE_pb-client"))
        .parent()
        .and_then(Path::parent)
        .map(|t| t.join("aarch64-unknown-linux-musl/debug/pb-client"))
        .unwrap();
    let qemu = arm.exists() && have("qemu-aarch64", "--version");
    if !qemu {
        missing(&format!(
            "{} missing or qemu-aarch64 not installed",
            arm.display()
        ));
    }
    let runs: Vec<(&str, u32, bool)> = vec![
        ("quic", 0, false),
        ("wss", 0, false),
        ("quic", 5, false),
        ("wss", 5, false),
        ("quic", 0, true),
        ("wss", 0, true),
    ];
    for (k, (transport, loss, on_arm)) in runs.into_iter().enumerate() {
        if on_arm && !qemu {
            continue;
        }
        let listen = format!("127.0.0.1:{}", 1090 + k);
        let mut command = if on_arm {
            let mut c = net.command(Node::Client, "qemu-aarch64");
            c.arg(&arm);
            c
        } else {
            net.command(Node::Client, env!("CARGO_BIN_EXE_pb-client"))
        };
        command
            .args(["--listen", &listen, "--transport", transport])
            .args(net.client_args());
        let name = format!(
            "pb-client {transport}{}{}",
            if loss > 0 { " lossy" } else { "" },
            if on_arm { " aarch64" } else { "" }
        );
        let client = match net.start_client(&name, command, Duration::from_secs(90)) {
            Ok(c) => c,
            Err(e) => panic!("{name} did not get ready: {e:#}\n{}", net.report(30)),
        };
        let over = net
            .process(client)
            .unwrap()
            .lines_with("pb-client: ")
            .into_iter()
            .any(|l| l.contains(&format!("over {transport}")));
        assert!(over, "{name} does not say it runs over {transport}");
        let capture_file = dir.join(format!("{transport}-{k}.pcapng"));
        let capture = (tshark && loss == 0 && !on_arm)
            .then(|| Capture::start(&client_ns, &capture_file))
            .flatten();
        let lossy = (loss > 0).then(|| Loss::new(&client_ns, loss));
        let started = Instant::now();
        let seconds = if on_arm { "300" } else { "180" };
        match curl_via(
            &client_ns,
            &listen,
            seconds,
            &url,
            &dir.join(format!("got-{k}")),
        ) {
            Ok(got) if got == *body => {}
            Ok(got) => panic!("{name}: fetched {} bytes, not the file", got.len()),
            Err(e) => panic!("{name}: curl failed: {e}\n{}", net.report(30)),
        }
        let took = started.elapsed();
        let dropped = lossy.as_ref().map_or(0, Loss::dropped);
        drop(lossy);
        drop(capture);
        report.push(format!(
            "{name}: 1 MiB in {took:.1?} ({:.1} KiB/s){}",
            FILE_LEN as f64 / 1024.0 / took.as_secs_f64(),
            if loss > 0 {
                format!(", {dropped} packets of the access link dropped")
            } else {
                String::new()
            }
        ));
        if loss > 0 {
            assert!(dropped > 0, "{name}: the loss rule dropped nothing");
        }
        let status = net.process_mut(client).unwrap().terminate().unwrap();
        assert!(status.success(), "{name} exited with {status}");
        if capture_file.exists() {
            // What an observer of the access link dissects: the disguise, nothing
            // malformed, and nothing else between the client and the gateway.
            let (proto, decode): (&str, Vec<String>) = match transport {
                "quic" => ("quic", vec![format!("udp.port=={QUIC_PORT},quic")]),
                _ => ("tls", vec![format!("tcp.port=={WSS_PORT},tls")]),
            };
            let decode: Vec<&str> = decode.iter().map(String::as_str).collect();
            let seen = tshark_count(&capture_file, proto, &decode);
            let malformed = tshark_count(
                &capture_file,
                "_ws.malformed || _ws.expert.severity == error",
                &decode,
            );
            let other = tshark_count(
                &capture_file,
                &format!(
                    "ip.addr == {gateway} && !(udp.port == {QUIC_PORT} || tcp.port == {WSS_PORT})"
                ),
                &decode,
            );
            report.push(format!(
                "tshark: {seen} {proto} frames, {malformed} malformed, {other} other to the gateway"
            ));
            assert!(seen > 100, "tshark saw {seen} {proto} frames");
            assert_eq!(malformed, 0, "tshark found malformed {proto} frames");
            assert_eq!(other, 0, "other traffic to the gateway beside {proto}");
        } else if loss == 0 && !on_arm {
            missing("tshark/dumpcap (Debian tshark) is not installed");
        }
    }

    // 3. A censor blocks the plain UDP link: auto falls back to QUIC.
    {
        let _block = Block::new(&client_ns, pb_testnet::CLIENT_LINK_PORT);
        let mut command = net.command(Node::Client, env!("CARGO_BIN_EXE_pb-client"));
        command
            .args(["--listen", "127.0.0.1:1099", "--transport", "auto"])
            .args(net.client_args());
        let client = match net.start_client("pb-client auto", command, Duration::from_secs(90)) {
            Ok(c) => c,
            Err(e) => panic!(
                "pb-client auto did not get ready: {e:#}\n{}",
                net.report(30)
            ),
        };
        let lines = net.process(client).unwrap().lines_with("pb-client: ");
        assert!(
            lines
                .iter()
                .any(|l| l.contains("over udp refused") && l.contains("over quic")),
            "no fallback from UDP to QUIC in: {lines:?}"
        );
        let started = Instant::now();
        match curl_via(
            &client_ns,
            "127.0.0.1:1099",
            "180",
            &url,
            &dir.join("got-auto"),
        ) {
            Ok(got) if got == *body => {}
            Ok(got) => panic!("auto: fetched {} bytes, not the file", got.len()),
            Err(e) => panic!("auto: curl failed: {e}\n{}", net.report(30)),
        }
        report.push(format!(
            "pb-client auto with UDP blocked: fell back to QUIC, 1 MiB in {:.1?}",
            started.elapsed()
        ));
        let status = net.process_mut(client).unwrap().terminate().unwrap();
        assert!(status.success(), "pb-client auto exited with {status}");
    }
    for line in &report {
        println!("{line}");
    }
}
