//! The DNS transport end to end, real processes in network namespaces: five relays (a
//! gateway, a mix per layer, an exit; fewer real-time relays leave unbound and the client's
//! DoH thread their CPU on a small machine) and a resolver node running Debian's unbound as
//! a DoH resolver (RFC 8484 over HTTP/2), whose stub zone `t.pb.test` is the gateway's own
//! name server. curl through
//! pb-client (`--transport doh`) fetches 1 MiB byte-identical, and dumpcap captures both
//! sides: the client namespace sends nothing but TLS to the resolver's port 443, and the
//! resolver asks the gateway nothing but ordinary DNS queries (UDP 53, TXT, well-formed).
//!
//! Skips, saying so, without root or without unbound.
#![cfg(target_arch = "x86_64")]
#![expect(clippy::unwrap_used, clippy::panic, reason = "tests")]

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use pb_testnet::{DNS_PORT, DOH_PORT, FileServer, Network, Node, Testnet};

mod common {
    pub mod capture;
    pub mod testnet;
}

use common::capture::{Capture, have_tshark, tshark_count};
use common::testnet::{curl_via, exit_resolves, relay_binary};

const RELAYS: usize = 5;
const EXIT: Node = Node::Relay(RELAYS - 1);
const FILE_LEN: usize = 1 << 20;
const HTTP_PORT: u16 = 8080;
const SERVER_NAME: &str = "server.pb.test";
const UNBOUND: &str = "/usr/sbin/unbound";

#[test]
fn curl_fetches_over_dns_through_unbound() {
    if !pb_testbed::require_privileged("curl_fetches_over_dns_through_unbound") {
        return;
    }
    if !std::path::Path::new(UNBOUND).exists() {
        eprintln!("skipping: {UNBOUND} is not installed (apt-get install unbound)");
        return;
    }
    let network = Network::builder()
        .relays(RELAYS)
        .netns("doh")
        .network_seed([0x55; 32])
        .identity_seeds(0xb8)
        .link_rate(100)
        .loop_rate(1)
        .stats_interval(0.0)
        .resolver(true)
        .relay_binary(relay_binary())
        .build()
        .unwrap();
    let mut net = Testnet::create(network.clone()).unwrap();
    let web = network.address(Node::Web);
    let ns_name = |node| net.netns(node).unwrap().name().to_owned();
    let (client_ns, resolver_ns) = (ns_name(Node::Client), ns_name(Node::Resolver));
    let _etc = exit_resolves(&ns_name(EXIT), SERVER_NAME, web.into());
    net.start_relays().unwrap();
    let body = Arc::new(pb_testnet::pattern(FILE_LEN));
    let _server =
        FileServer::start(net.listen(Node::Web, HTTP_PORT).unwrap(), body.clone()).unwrap();
    if let Err(e) = net.wait_for_agreement(Duration::from_secs(60)) {
        panic!("{e}");
    }
    let (url, ca) = match net.start_doh_resolver() {
        Ok(r) => r,
        Err(e) => panic!("unbound: {e:#}\n{}", net.report(30)),
    };
    let dir = net.dir().to_owned();
    let tshark = have_tshark();
    let (client_file, resolver_file) = (dir.join("client.pcapng"), dir.join("resolver.pcapng"));
    let captures = tshark.then(|| {
        (
            Capture::start(&client_ns, &client_file),
            Capture::start(&resolver_ns, &resolver_file),
        )
    });
    let listen = "127.0.0.1:1100";
    let mut command = net.client_command(env!("CARGO_BIN_EXE_pb-client"));
    command
        .args([
            "--listen",
            listen,
            "--transport",
            "doh",
            "--doh-resolver",
            &url,
        ])
        .arg("--doh-ca")
        .arg(&ca);
    let client = match net.start_client("pb-client over DoH", command, Duration::from_secs(90)) {
        Ok(c) => c,
        Err(e) => panic!("pb-client over DoH: not ready: {e:#}\n{}", net.report(30)),
    };
    let over = net
        .process(client)
        .unwrap()
        .lines_with("pb-client: ")
        .into_iter()
        .any(|l| l.contains("over doh"));
    assert!(over, "pb-client does not say it runs over doh");
    let started = Instant::now();
    let target = format!("http://{SERVER_NAME}:{HTTP_PORT}/file");
    match curl_via(&client_ns, listen, "240", &target, &dir.join("got")) {
        Ok(got) if got == *body => {}
        Ok(got) => panic!("fetched {} bytes, not the file", got.len()),
        Err(e) => panic!("curl failed: {e}\n{}", net.report(30)),
    }
    let took = started.elapsed();
    let status = net.process_mut(client).unwrap().terminate().unwrap();
    assert!(status.success(), "pb-client exited with {status}");
    drop(captures);
    eprintln!(
        "doh: 1 MiB byte-identical through unbound in {took:.1?} ({:.1} KiB/s)",
        FILE_LEN as f64 / 1024.0 / took.as_secs_f64()
    );
    if !tshark {
        eprintln!("doh: tshark/dumpcap (Debian tshark) is not installed: no capture checked");
        return;
    }
    let resolver = network.address(Node::Resolver);
    let gateway = network.address(Node::Relay(0));
    // The client's side: TLS to the resolver's DoH port, and nothing else leaves it.
    let doh = format!("ip.addr == {resolver} && tcp.port == {DOH_PORT}");
    let tls = tshark_count(&client_file, &format!("{doh} && tls.app_data"), &[]);
    let other = tshark_count(
        &client_file,
        &format!("(ip && !(ip.addr == 127.0.0.1) && !({doh})) || (ipv6 && !icmpv6)"),
        &[],
    );
    let dns = tshark_count(&client_file, "dns", &[]);
    // The resolver's side: ordinary DNS to and from the gateway, nothing else.
    let queries = tshark_count(
        &resolver_file,
        &format!(
            "ip.src == {resolver} && ip.dst == {gateway} && udp.dstport == {DNS_PORT} \
             && dns.flags.response == 0 && dns.qry.type == 16"
        ),
        &[],
    );
    let answers = tshark_count(
        &resolver_file,
        &format!("ip.src == {gateway} && dns.flags.response == 1 && dns.txt"),
        &[],
    );
    let not_dns = tshark_count(
        &resolver_file,
        &format!("ip.addr == {gateway} && !(udp.port == {DNS_PORT} && dns)"),
        &[],
    );
    let malformed = tshark_count(
        &resolver_file,
        &format!("ip.addr == {gateway} && (_ws.malformed || _ws.expert.severity == error)"),
        &[],
    );
    eprintln!(
        "doh: the client sent {tls} TLS records to the resolver, {other} other packets, \
         {dns} DNS; the resolver sent {queries} TXT queries to the gateway, got {answers} \
         answers, {not_dns} other packets with it, {malformed} malformed"
    );
    assert!(
        tls > 1000,
        "only {tls} TLS records between the client and the resolver"
    );
    assert_eq!(other, 0, "the client sent something besides DoH");
    assert_eq!(dns, 0, "the client sent plain DNS");
    assert!(
        queries > 1000,
        "only {queries} DNS queries from the resolver"
    );
    assert!(answers > 1000, "only {answers} TXT answers to the resolver");
    assert_eq!(
        not_dns, 0,
        "the resolver and the gateway exchanged something but DNS"
    );
    assert_eq!(malformed, 0, "tshark found malformed DNS");
}
