//! Applications' own DNS and UDP, end to end, real processes in network namespaces: five
//! relays (a gateway, a mix per layer, an exit), NSD authoritative for `pb.test` on the
//! exit namespace's own loopback (the exit's resolver; nothing outside that namespace can
//! reach it), and pb-client in the client namespace.
//!
//! Shows, over SOCKS5 UDP ASSOCIATE (RFC 1928 section 7):
//! - PySocks (Debian's python3-socks, a SOCKS client written elsewhere) sends DNS queries
//!   built by dnslib; they are answered with what NSD says, through the exit: an A record,
//!   NXDOMAIN for a name NSD does not have, and no AAAA record for one whose only address is
//!   one the exit policy refuses (withheld);
//! - malformed requests get their SOCKS replies (BIND 0x07, an unknown address type 0x08, a
//!   bad reserved byte 0x01), and malformed datagrams (a fragment, a bad reserved field, an
//!   unknown address type, truncated, not DNS, not to port 53) and datagrams from another
//!   port get no answer, while pb-client goes on answering and counts each.
//!
//! Skips, saying so, without root, or without NSD or PySocks and dnslib.
#![cfg(target_arch = "x86_64")]
#![expect(clippy::unwrap_used, clippy::panic, reason = "tests")]

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use pb_testnet::{Network, Node, Testnet};

mod common {
    pub mod testnet;
}

use common::testnet::{EtcNetns, relay_binary};

const RELAYS: usize = 5;
const EXIT: Node = Node::Relay(RELAYS - 1);
const NSD: &str = "/usr/sbin/nsd";
/// Debian's python, which sees Debian's python3-socks and python3-dnslib (a `python3` on
/// PATH may be another one).
const PYTHON: &str = "/usr/bin/python3";
const SOCKS: &str = "127.0.0.1:1080";
/// A name NSD has (its address is the web node's), one it has not, one with an address the
/// exit policy refuses (documentation space).
const NAME: &str = "files.pb.test";
const NO_NAME: &str = "nowhere.pb.test";
const REFUSED_NAME: &str = "inside.pb.test";
/// How long an answer through the mixnet may take (a guard against a hung test, not a
/// measurement).
const ANSWER_WITHIN: Duration = Duration::from_secs(60);

/// PySocks over SOCKS5 UDP: for each argument `NAME:TYPE`, one dnslib query sent to
/// 192.0.2.53:53 through the proxy; prints `NAME TYPE RCODE ADDRESS...` for each answer.
const PYSOCKS_DIG: &str = r#"
import socket, sys, socks, dnslib
s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
s.set_proxy(socks.SOCKS5, "127.0.0.1", 1080)
s.settimeout(60)
for arg in sys.argv[1:]:
    name, qtype = arg.split(":")
    q = dnslib.DNSRecord.question(name, qtype)
    s.sendto(q.pack(), ("192.0.2.53", 53))
    while True:
        data, source = s.recvfrom(4096)
        r = dnslib.DNSRecord.parse(data)
        if r.header.id == q.header.id:
            break
    rcode = dnslib.RCODE.get(r.header.rcode)
    print(name, qtype, rcode, *sorted(str(a.rdata) for a in r.rr), flush=True)
"#;

#[test]
fn dns_over_socks_udp_is_answered_through_the_exit() {
    if !pb_testbed::require_privileged("dns_over_socks_udp_is_answered_through_the_exit") {
        return;
    }
    if !Path::new(NSD).exists() {
        eprintln!("skipping: {NSD} is not installed (apt-get install nsd)");
        return;
    }
    let peers = Command::new(PYTHON)
        .args(["-c", "import socks, dnslib"])
        .status();
    if !peers.is_ok_and(|s| s.success()) {
        eprintln!(
            "skipping: {PYTHON} lacks PySocks or dnslib (apt-get install python3-socks python3-dnslib)"
        );
        return;
    }
    let network = Network::builder()
        .relays(RELAYS)
        .netns("vpn")
        .network_seed([0x56; 32])
        .identity_seeds(0xc8)
        .link_rate(100)
        .loop_rate(1)
        .stats_interval(0.0)
        .relay_binary(relay_binary())
        .build()
        .unwrap();
    let mut net = Testnet::create(network.clone()).unwrap();
    let web = network.address(Node::Web);
    let ns_name = |node| net.netns(node).unwrap().name().to_owned();
    let (client_ns, exit_ns) = (ns_name(Node::Client), ns_name(EXIT));
    // The exit's resolver is NSD on its own loopback; its hosts file names nothing else.
    let etc = PathBuf::from("/etc/netns").join(&exit_ns);
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("hosts"), "127.0.0.1 localhost\n").unwrap();
    std::fs::write(etc.join("resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
    let _etc = EtcNetns(vec![etc]);
    let records = format!("files IN A {web}\ninside IN AAAA 2001:db8::7\ninside IN A 127.0.0.9\n");
    let nsd_at = SocketAddr::from(([127, 0, 0, 1], 53));
    if let Err(e) = net.start_nsd(EXIT, nsd_at, "pb.test", &records) {
        panic!("nsd: {e:#}\n{}", net.report(30));
    }
    net.start_relays().unwrap();
    if let Err(e) = net.wait_for_agreement(Duration::from_secs(60)) {
        panic!("{e}");
    }
    let mut command = net.client_command(env!("CARGO_BIN_EXE_pb-client"));
    command.args(["--listen", SOCKS]).env("PB_LOG", "debug");
    let client = match net.start_client("pb-client", command, Duration::from_secs(60)) {
        Ok(c) => c,
        Err(e) => panic!("pb-client not ready: {e:#}\n{}", net.report(30)),
    };

    // 1. PySocks and dnslib: answers from NSD, through the exit.
    let out = Command::new("ip")
        .args(["netns", "exec", &client_ns, PYTHON, "-c", PYSOCKS_DIG])
        .args([
            format!("{NAME}:A"),
            format!("{NO_NAME}:A"),
            format!("{REFUSED_NAME}:AAAA"),
            format!("{REFUSED_NAME}:A"),
            format!("{NAME}:MX"),
        ])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "PySocks: {}\n{printed}\n{}",
        String::from_utf8_lossy(&out.stderr),
        net.report(30)
    );
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(
        lines,
        [
            format!("{NAME} A NOERROR {web}"),
            format!("{NO_NAME} A NXDOMAIN"),
            format!("{REFUSED_NAME} AAAA NOERROR"),
            format!("{REFUSED_NAME} A NOERROR"),
            format!("{NAME} MX NOERROR"),
        ],
        "what PySocks got"
    );

    // 2. Malformed requests: their replies.
    for (request, reply) in [
        (&[5, 2, 0, 1, 0, 0, 0, 0, 0, 0][..], 0x07),
        (&[5, 3, 0, 9, 0, 0, 0, 0, 0, 0][..], 0x08),
        (&[5, 3, 7, 1, 0, 0, 0, 0, 0, 0][..], 0x01),
    ] {
        let got = net
            .in_node(Node::Client, || socks_request(request).1)
            .unwrap();
        assert_eq!(got, reply, "reply to {request:?}");
    }

    // 3. Malformed datagrams, and datagrams from elsewhere: no answer; then a good query
    // from the same socket is answered (the first datagram it gets is that answer).
    net.in_node(Node::Client, || {
        let (_control, code, relay) = socks_request(&[5, 3, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(code, 0, "UDP ASSOCIATE refused");
        let relay = relay.unwrap();
        assert_eq!(relay.ip().to_string(), "127.0.0.1", "the relay's address");
        let app = UdpSocket::bind("127.0.0.1:0").unwrap();
        app.set_read_timeout(Some(ANSWER_WITHIN)).unwrap();
        let query = dns_query(0x5151, NAME);
        let header = |rsv: [u8; 2], frag: u8, atyp: u8, port: u16| {
            let mut d = vec![rsv[0], rsv[1], frag, atyp, 192, 0, 2, 53];
            d.extend_from_slice(&port.to_be_bytes());
            d
        };
        let with = |mut h: Vec<u8>, body: &[u8]| {
            h.extend_from_slice(body);
            h
        };
        // The first datagram locks the association to `app`'s port; from another port
        // nothing is taken, even a good query.
        let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
        app.send_to(&with(header([0, 0], 1, 1, 53), &query), relay)
            .unwrap();
        stranger
            .send_to(&with(header([0, 0], 0, 1, 53), &query), relay)
            .unwrap();
        for bad in [
            with(header([0, 1], 0, 1, 53), &query),
            with(header([0, 0], 0, 9, 53), &query),
            vec![0, 0, 0, 1, 192, 0],
            with(header([0, 0], 0, 1, 53), b"not a DNS message"),
            with(header([0, 0], 0, 1, 80), b"GET / HTTP/1.0\r\n\r\n"),
        ] {
            app.send_to(&bad, relay).unwrap();
        }
        app.send_to(&with(header([0, 0], 0, 1, 53), &query), relay)
            .unwrap();
        let mut buf = [0u8; 2048];
        let (n, from) = app.recv_from(&mut buf).unwrap();
        assert_eq!(from, relay);
        // RSV, FRAG 0, the destination as sent (192.0.2.53:53), then the answer to 0x5151.
        assert_eq!(&buf[..10], &header([0, 0], 0, 1, 53)[..]);
        assert_eq!(&buf[10..12], &[0x51, 0x51], "not the good query's answer");
        assert!(
            buf[..n].ends_with(&web.octets()),
            "the answer has the address"
        );
        stranger.set_nonblocking(true).unwrap();
        assert!(
            stranger.recv_from(&mut buf).is_err(),
            "a stranger was answered"
        );
    })
    .unwrap();

    // 4. pb-client is still up, and counted each drop.
    assert!(
        net.exited().is_none(),
        "a process exited\n{}",
        net.report(30)
    );
    let status = net.process_mut(client).unwrap().terminate().unwrap();
    assert!(status.success(), "pb-client exited with {status}");
    let summary = net
        .process(client)
        .unwrap()
        .lines_with("pb-client: SOCKS UDP: ")
        .pop()
        .unwrap_or_else(|| panic!("no SOCKS UDP summary\n{}", net.report(30)));
    // PySocks' five and the raw client's one; FRAG 1, RSV, ATYP 9, truncated and "not a DNS
    // message" malformed.
    for counted in [
        "6 DNS queries answered (0 SERVFAIL)",
        "5 datagrams malformed",
        "1 from strangers",
        "1 not DNS",
    ] {
        assert!(summary.contains(counted), "{counted:?} not in {summary:?}");
    }
}

/// A SOCKS5 request (no authentication) to pb-client: the control connection, the reply
/// code, and the bound address of a success.
fn socks_request(request: &[u8]) -> (TcpStream, u8, Option<SocketAddr>) {
    let mut tcp = TcpStream::connect(SOCKS).unwrap();
    tcp.set_read_timeout(Some(ANSWER_WITHIN)).unwrap();
    tcp.write_all(&[5, 1, 0]).unwrap();
    let mut method = [0u8; 2];
    tcp.read_exact(&mut method).unwrap();
    assert_eq!(method, [5, 0]);
    tcp.write_all(request).unwrap();
    let mut reply = [0u8; 10];
    tcp.read_exact(&mut reply).unwrap();
    let bound = (reply[1] == 0 && reply[3] == 1).then(|| {
        SocketAddr::from((
            [reply[4], reply[5], reply[6], reply[7]],
            u16::from_be_bytes([reply[8], reply[9]]),
        ))
    });
    (tcp, reply[1], bound)
}

/// A DNS query (recursion desired) for `name`'s A records.
fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}
