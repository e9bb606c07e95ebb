//! obfs4 end to end, real processes in network namespaces: five relays (a gateway, a mix
//! per layer, an exit: what is tested is the access link, and fewer real-time relays leave
//! the 2-vCPU testbed's CPU to the transports), the gateway listening on obfs4 and on plain
//! TCP for an obfs4proxy server in front of it, an HTTP server, and curl through pb-client in the client namespace, for the gateway's
//! iat-mode 0 and 2:
//!
//! - (a) pb-client's own obfs4 to the gateway's obfs4 listener;
//! - (b) pb-client with obfs4proxy (Debian's 0.0.14) as its obfs4 (`--obfs4proxy`: a managed
//!   client transport, SOCKS5 with the bridge's arguments) to the gateway's listener;
//! - (c) pb-client's own obfs4 to obfs4proxy as a managed server transport in the gateway's
//!   namespace, in front of the gateway's plain TCP listener (`--bridge` with the bridge line
//!   obfs4proxy printed).
//!
//! Each fetches 1 MiB byte-identical. Skips, saying so, without root or without obfs4proxy.
#![cfg(target_arch = "x86_64")]
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, ChildStdin, Stdio},
    sync::{Arc, mpsc},
    time::{Duration, Instant},
};

use pb_testnet::{FileServer, Network, Node, TCP_PORT, Testnet};

mod common {
    pub mod testnet;
}

use common::testnet::{curl_via, exit_resolves, relay_binary};

const RELAYS: usize = 5;
const EXIT: Node = Node::Relay(RELAYS - 1);
const FILE_LEN: usize = 1 << 20;
const HTTP_PORT: u16 = 8080;
const SERVER_NAME: &str = "server.pb.test";
const OBFS4PROXY: &str = "/usr/bin/obfs4proxy";
/// Where the obfs4proxy server of (c) listens, on the gateway's address.
const PROXY_PORT: u16 = 9444;

/// obfs4proxy as a managed server transport, until dropped (stdin closed, killed, its
/// state directory removed).
struct ProxyServer {
    child: Child,
    stdin: Option<ChildStdin>,
    state: std::path::PathBuf,
}

impl Drop for ProxyServer {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// Starts obfs4proxy in the gateway's namespace in front of its plain TCP port, with
/// `iat_mode`: the process and its bridge line. Its keys are fresh, with a length seed whose
/// table leaves out 0: obfs4proxy 0.0.14 in iat-mode 2 exits when it draws a length of 0
/// (`pb_obfs4::PrngSeed::generate`, docs/spec/transports.md).
fn proxy_server(net: &Testnet, gateway: std::net::Ipv4Addr, iat_mode: u8) -> (ProxyServer, String) {
    let state = net.dir().join(format!("obfs4proxy-server-{iat_mode}"));
    std::fs::create_dir_all(&state).unwrap();
    let mut command = net.command(Node::Relay(0), OBFS4PROXY);
    command
        .env("TOR_PT_MANAGED_TRANSPORT_VER", "1")
        .env("TOR_PT_STATE_LOCATION", &state)
        .env("TOR_PT_SERVER_TRANSPORTS", "obfs4")
        .env(
            "TOR_PT_SERVER_BINDADDR",
            format!("obfs4-{gateway}:{PROXY_PORT}"),
        )
        .env("TOR_PT_ORPORT", format!("{gateway}:{TCP_PORT}"))
        .env("TOR_PT_EXIT_ON_STDIN_CLOSE", "1")
        .env(
            "TOR_PT_SERVER_TRANSPORT_OPTIONS",
            format!(
                "obfs4:node-id={};obfs4:private-key={};obfs4:drbg-seed={};obfs4:iat-mode={iat_mode}",
                hex(&random::<20>()),
                hex(&random::<32>()),
                hex(&pb_obfs4::PrngSeed::generate(&mut pb_obfs4::OsEntropy).0),
            ),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = command.spawn().unwrap();
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().unwrap();
    let server = ProxyServer {
        child,
        stdin,
        state,
    };
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let mut args = None;
    loop {
        let line = received
            .recv_timeout(Duration::from_secs(10))
            .expect("obfs4proxy printed SMETHODS DONE in time");
        assert!(!line.contains("ERROR"), "obfs4proxy: {line}");
        // "SMETHOD obfs4 ADDR:PORT ARGS:cert=…,iat-mode=N"
        if let Some(rest) = line.strip_prefix("SMETHOD obfs4 ") {
            let (addr, a) = rest.split_once(" ARGS:").unwrap();
            args = Some(format!("obfs4 {addr} {}", a.replace(',', " ")));
        } else if line == "SMETHODS DONE" {
            break;
        }
    }
    (server, args.expect("an SMETHOD obfs4 line"))
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    pb_obfs4::Entropy::fill_bytes(&mut pb_obfs4::OsEntropy, &mut bytes);
    bytes
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn curl_fetches_over_obfs4_both_ways_with_obfs4proxy_in_iat_modes_0_and_2() {
    if !pb_testbed::require_privileged("curl_fetches_over_obfs4") {
        return;
    }
    if !std::path::Path::new(OBFS4PROXY).exists() {
        eprintln!("skipping: {OBFS4PROXY} is not installed (apt-get install obfs4proxy)");
        return;
    }
    let mut report = Vec::new();
    for iat_mode in [0u8, 2] {
        let network = Network::builder()
            .relays(RELAYS)
            .netns("ob4")
            .network_seed([0x54; 32])
            .identity_seeds(0xb4)
            .link_rate(100)
            .loop_rate(1)
            .stats_interval(0.0)
            .obfs4_iat_mode(iat_mode)
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
        let (_proxy, bridge) = proxy_server(&net, gateway, iat_mode);
        let url = format!("http://{SERVER_NAME}:{HTTP_PORT}/file");
        let dir = net.dir().to_owned();
        let runs: [(&str, Vec<String>); 3] = [
            ("(a) pb-client's obfs4 to the gateway", vec![]),
            (
                "(b) obfs4proxy as pb-client's obfs4 to the gateway",
                vec!["--obfs4proxy".into(), OBFS4PROXY.into()],
            ),
            (
                "(c) pb-client's obfs4 to obfs4proxy in front of the gateway",
                vec!["--bridge".into(), bridge.clone()],
            ),
        ];
        for (k, (name, extra)) in runs.into_iter().enumerate() {
            let listen = format!("127.0.0.1:{}", 1100 + k);
            let mut command = net.client_command(env!("CARGO_BIN_EXE_pb-client"));
            command
                .args(["--listen", &listen, "--transport", "obfs4"])
                .args(&extra);
            let label = format!("{name}, iat-mode {iat_mode}");
            let client = match net.start_client(&label, command, Duration::from_secs(90)) {
                Ok(c) => c,
                Err(e) => panic!("{label}: not ready: {e:#}\n{}", net.report(30)),
            };
            let over = net
                .process(client)
                .unwrap()
                .lines_with("pb-client: ")
                .into_iter()
                .any(|l| l.contains("over obfs4"));
            assert!(over, "{label}: pb-client does not say it runs over obfs4");
            let started = Instant::now();
            match curl_via(
                &client_ns,
                &listen,
                "180",
                &url,
                &dir.join(format!("got-{iat_mode}-{k}")),
            ) {
                Ok(got) if got == *body => {}
                Ok(got) => panic!("{label}: fetched {} bytes, not the file", got.len()),
                Err(e) => panic!("{label}: curl failed: {e}\n{}", net.report(30)),
            }
            let took = started.elapsed();
            report.push(format!(
                "{label}: 1 MiB byte-identical in {took:.1?} ({:.1} KiB/s)",
                FILE_LEN as f64 / 1024.0 / took.as_secs_f64()
            ));
            let status = net.process_mut(client).unwrap().terminate().unwrap();
            assert!(status.success(), "{label}: pb-client exited with {status}");
        }
    }
    for line in report {
        eprintln!("obfs4: {line}");
    }
}
