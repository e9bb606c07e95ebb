//! VPN mode and applications' own DNS, end to end, real processes in network namespaces:
//! five relays (a gateway, a mix per layer, an exit), NSD authoritative for `pb.test` on the
//! exit namespace's own loopback (the exit's resolver; nothing outside that namespace can
//! reach it), a web server, and pb-client in the client namespace with `--tun pbtun0`.
//!
//! The client namespace is made to leak if anything could: a default route (IPv4) and a
//! global IPv6 address with a default route (and its next hop's MAC) on its interface, and a
//! resolver address (192.0.2.53) that is routed nowhere but pb-client's device. Shows:
//! - VPN mode: plain `curl http://files.pb.test:8080/file` (no proxy settings) fetches
//!   1 MiB byte-identical; `dig` and `dig +tcp` get NSD's answer through the exit; a
//!   connection to an IPv6 address is carried (and refused by the exit policy), not leaked;
//!   a UDP echo server on the web node answers through the exit, and NTP (a port exits
//!   refuse) is refused at once ("connection refused", an ICMP port unreachable);
//!   pb-client stopped, its rules and routes are gone;
//! - `--tun-fd`: the static aarch64 pb-client under qemu-aarch64 (qemu-user cannot set
//!   routing rules, so the test makes the device and its routes with pb-tun and hands the
//!   descriptor over) answers `dig` and fetches 256 KiB; then the gateway is killed, and
//!   then pb-client itself: `dig` and `curl` fail, and nothing goes out in clear;
//! - a capture of the client namespace's interface, the whole time, holds nothing but the
//!   client link to the gateway (and ARP, and IPv6's own link-local chatter): no DNS, no
//!   TCP to the server, no IPv6;
//! - over SOCKS5 UDP ASSOCIATE (RFC 1928 section 7): PySocks (Debian's python3-socks, a
//!   SOCKS client written elsewhere) sends DNS queries built by dnslib; they are answered
//!   with what NSD says, through the exit (and a raw client's datagram to the echo server
//!   comes back from it): an A record, NXDOMAIN for a name NSD does not
//!   have, and no AAAA record for one whose only address is one the exit policy refuses
//!   (withheld); malformed requests get their SOCKS replies (BIND 0x07, an unknown address
//!   type 0x08, a bad reserved byte 0x01), and malformed datagrams (a fragment, a bad
//!   reserved field, an unknown address type, truncated, not DNS, not to port 53) and
//!   datagrams from another port get no answer, while pb-client goes on answering and counts
//!   each.
//!
//! Skips, saying so, without root, or without NSD, tshark, dig, or PySocks and dnslib.
#![cfg(target_arch = "x86_64")]
#![expect(clippy::unwrap_used, clippy::panic, reason = "tests")]

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::Duration,
};

use pb_testnet::{FileServer, Network, Node, Testnet};

mod common {
    pub mod capture;
    pub mod testnet;
}

use common::capture::{Capture, have_tshark, tshark_lines};
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
const HTTP_PORT: u16 = 8080;
const SMALL_PORT: u16 = 8082;
/// The web node's UDP echo server.
const ECHO_PORT: u16 = 7777;
const FILE_LEN: usize = 1 << 20;
/// What the aarch64 client under qemu fetches (qemu makes it slow).
const SMALL_LEN: usize = 256 << 10;

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
fn vpn_mode_and_socks_udp_carry_everything_through_the_exit() {
    if !pb_testbed::require_privileged("vpn_mode_and_socks_udp_carry_everything_through_the_exit") {
        return;
    }
    if let Some(missing) = missing_peers() {
        eprintln!("skipping vpn_mode_and_socks_udp_carry_everything_through_the_exit: {missing}");
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
    let gateway = network.client_link();
    let ns_name = |node| net.netns(node).unwrap().name().to_owned();
    let (client_ns, exit_ns) = (ns_name(Node::Client), ns_name(EXIT));
    // The exit's resolver is NSD on its own loopback; its hosts file names nothing else.
    let etc = PathBuf::from("/etc/netns").join(&exit_ns);
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("hosts"), "127.0.0.1 localhost\n").unwrap();
    std::fs::write(etc.join("resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
    // The client's resolver: an address only pb-client's device answers for.
    let client_etc = PathBuf::from("/etc/netns").join(&client_ns);
    std::fs::create_dir_all(&client_etc).unwrap();
    std::fs::write(client_etc.join("resolv.conf"), "nameserver 192.0.2.53\n").unwrap();
    let _etc = EtcNetns(vec![etc, client_etc]);
    let records = format!("files IN A {web}\ninside IN AAAA 2001:db8::7\ninside IN A 127.0.0.9\n");
    let nsd_at = SocketAddr::from(([127, 0, 0, 1], 53));
    if let Err(e) = net.start_nsd(EXIT, nsd_at, "pb.test", &records) {
        panic!("nsd: {e:#}\n{}", net.report(30));
    }
    let veth = make_it_leak(&net, web);
    net.start_relays().unwrap();
    let body = Arc::new(pb_testnet::pattern(FILE_LEN));
    let _server =
        FileServer::start(net.listen(Node::Web, HTTP_PORT).unwrap(), body.clone()).unwrap();
    let small = Arc::new(body[..SMALL_LEN].to_vec());
    let _small_server =
        FileServer::start(net.listen(Node::Web, SMALL_PORT).unwrap(), small.clone()).unwrap();
    let _echo = UdpEcho::start(&net, web);
    if let Err(e) = net.wait_for_agreement(Duration::from_secs(60)) {
        panic!("{e}");
    }
    let dir = net.dir().to_owned();
    let pcap = dir.join("client.pcapng");
    let capture = Capture::start_on(&client_ns, &veth, &pcap).unwrap();

    // 1. VPN mode (`--tun`): curl and dig, no proxy settings.
    let mut command = net.client_command(env!("CARGO_BIN_EXE_pb-client"));
    command
        .args(["--listen", SOCKS, "--tun", "pbtun0"])
        .env("PB_LOG", "debug");
    let client = match net.start_client("pb-client", command, Duration::from_secs(60)) {
        Ok(c) => c,
        Err(e) => panic!("pb-client not ready: {e:#}\n{}", net.report(30)),
    };
    let url = format!("http://{NAME}:{HTTP_PORT}/file");
    match curl(&client_ns, &url, "240", &dir.join("got")) {
        Ok(got) if got == *body => {}
        Ok(got) => panic!("fetched {} bytes, not the file", got.len()),
        Err(e) => panic!("curl through the TUN: {e}\n{}", net.report(30)),
    }
    for tcp in [false, true] {
        assert_eq!(
            dig(&client_ns, NAME, tcp, 20),
            Ok(web.to_string()),
            "dig (tcp: {tcp})\n{}",
            net.report(20)
        );
    }
    // UDP goes through the exit and back; a port the exit refuses (NTP) is refused at once
    // (an ICMP port unreachable: a connected socket reads "connection refused").
    net.in_node(Node::Client, || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(ANSWER_WITHIN)).unwrap();
        s.connect((web, ECHO_PORT)).unwrap();
        s.send(b"over the tun").unwrap();
        let mut buf = [0u8; 64];
        let n = s.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"over the tun");
        s.connect((web, 123)).unwrap();
        s.send(b"ntp?").unwrap();
        let refused = s.recv(&mut buf).unwrap_err();
        assert_eq!(
            refused.kind(),
            std::io::ErrorKind::ConnectionRefused,
            "{refused}"
        );
    })
    .unwrap();
    // IPv6 goes into the device too: the exit refuses this address (documentation space).
    let v6 = curl(
        &client_ns,
        "http://[2001:db8::7]:8080/",
        "60",
        &dir.join("v6"),
    );
    assert!(
        v6.as_ref()
            .is_err_and(|e| e.contains("Couldn't connect") || e.contains("refused")),
        "an IPv6 connection: {v6:?}"
    );

    // 2. SOCKS5 UDP ASSOCIATE, beside VPN mode.
    socks_udp(&net, &client_ns, web);

    // 3. pb-client stops: its rules and routes go with it; it counted each drop.
    assert!(
        net.exited().is_none(),
        "a process exited\n{}",
        net.report(30)
    );
    let status = net.process_mut(client).unwrap().terminate().unwrap();
    assert!(status.success(), "pb-client exited with {status}");
    let proc = net.process(client).unwrap();
    let summary = proc
        .lines_with("pb-client: SOCKS UDP: ")
        .pop()
        .unwrap_or_else(|| panic!("no SOCKS UDP summary\n{}", net.report(30)));
    // PySocks' five and the raw client's one; FRAG 1, RSV, ATYP 9, truncated and "not a DNS
    // message" malformed.
    for counted in [
        "6 DNS queries answered (0 SERVFAIL)",
        // To the echo server and back, and to 192.0.2.53:80 (the exit refuses that flow).
        "2 datagrams relayed, 1 back",
        "5 malformed",
        "1 from strangers",
    ] {
        assert!(summary.contains(counted), "{counted:?} not in {summary:?}");
    }
    let vpn_line = proc
        .lines_with("pb-client: VPN: ")
        .pop()
        .unwrap_or_default();
    // The fetch and the IPv6 connection were streams (none refused for want of a session);
    // the DNS queries: curl's A and AAAA, and the two digs.
    for counted in [
        "2 TCP flows (0 refused)",
        "2 UDP flows (1 refused), 2 datagrams from applications (2 to the exit, 0 dropped), 1 back",
        "4 DNS queries answered (0 SERVFAIL",
    ] {
        assert!(
            vpn_line.contains(counted),
            "{counted:?} not in {vpn_line:?}"
        );
    }
    let rules = ip(&client_ns, &["rule", "show"]);
    assert!(!rules.contains("5042"), "rules left behind: {rules}");

    // 4. `--tun-fd`: the aarch64 client under qemu (else this machine's), on a device and
    // routes the test made; then the gateway dies, then pb-client: nothing leaks.
    let (program, arm) = aarch64_client();
    let tun = net
        .in_node(Node::Client, || pb_tun::Tun::create("pbtun1").unwrap())
        .unwrap();
    let routing = net
        .in_node(Node::Client, || {
            pb_tun::routing::Routing::install(&pb_tun::routing::Plan {
                device: "pbtun1".into(),
                mtu: 1500,
                bypass: vec![gateway.ip()],
            })
            .unwrap()
        })
        .unwrap();
    let mut command = net.command(Node::Client, &program[0]);
    command
        .args(&program[1..])
        .args(net.client_args())
        .args(["--listen", SOCKS, "--tun-fd", "3"])
        .env("PB_LOG", "debug");
    hand_over(&mut command, &tun, 3);
    let name = if arm {
        "pb-client (aarch64, --tun-fd)"
    } else {
        "pb-client (--tun-fd)"
    };
    let fd_client = match net.start_client(name, command, Duration::from_secs(90)) {
        Ok(c) => c,
        Err(e) => panic!("{name} not ready: {e:#}\n{}", net.report(30)),
    };
    // The device is the child's alone now: it goes when the child does.
    drop(tun);
    assert_eq!(
        dig(&client_ns, NAME, false, 20),
        Ok(web.to_string()),
        "{name}: dig"
    );
    let small_url = format!("http://{NAME}:{SMALL_PORT}/small");
    match curl(&client_ns, &small_url, "240", &dir.join("small")) {
        Ok(got) if got == *small => {}
        Ok(got) => panic!("{name}: fetched {} bytes, not the file", got.len()),
        Err(e) => panic!("{name}: curl: {e}\n{}", net.report(30)),
    }
    net.kill(0);
    assert!(
        dig(&client_ns, NAME, false, 3).is_err(),
        "dig with the gateway dead"
    );
    let dead = curl(
        &client_ns,
        &format!("http://{web}:{HTTP_PORT}/file"),
        "4",
        &dir.join("dead"),
    );
    assert!(dead.is_err(), "a fetch with the gateway dead");
    net.process_mut(fd_client).unwrap().child.kill().unwrap();
    let _ = net.process_mut(fd_client).unwrap().wait_output();
    // pb-client is gone, and its device with it: the unreachable default is what is left.
    let gone = curl(
        &client_ns,
        &format!("http://{web}:{HTTP_PORT}/file"),
        "4",
        &dir.join("gone"),
    );
    assert!(gone.is_err(), "a fetch with pb-client dead");
    assert!(
        dig(&client_ns, NAME, false, 3).is_err(),
        "dig with pb-client dead"
    );
    routing.release().unwrap();
    drop(capture);

    // 5. The capture: the client link to the gateway, and nothing else.
    let link = format!(
        "udp && ip.addr == {} && udp.port == {}",
        gateway.ip(),
        gateway.port()
    );
    // The kernel's own link-local chatter: IGMP and IPv6's neighbour and multicast listener
    // messages, to local multicast groups or from link-local addresses.
    let chatter = "(igmp && ip.dst == 224.0.0.0/24) \
         || (icmpv6 && (ipv6.dst == ff00::/8 || ipv6.src == fe80::/10 || ipv6.src == ::))";
    let others = tshark_lines(&pcap, &format!("!arp && !({link}) && !({chatter})"));
    assert!(
        others.is_empty(),
        "the client namespace's interface carried more than the client link:\n{}",
        others.join("\n")
    );
    assert!(
        !tshark_lines(&pcap, &link).is_empty(),
        "the capture saw no client link at all"
    );
}

/// A UDP echo server on the web node (until dropped).
struct UdpEcho {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UdpEcho {
    fn start(net: &Testnet, web: std::net::Ipv4Addr) -> Self {
        let socket = net
            .in_node(Node::Web, || UdpSocket::bind((web, ECHO_PORT)).unwrap())
            .unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(&buf[..n], from);
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the test needs that may be missing: NSD, tshark, dig, PySocks and dnslib.
fn missing_peers() -> Option<String> {
    if !Path::new(NSD).exists() {
        return Some(format!("{NSD} is not installed (apt-get install nsd)"));
    }
    if !have_tshark() {
        return Some("tshark and dumpcap are not installed (apt-get install tshark)".into());
    }
    if Command::new("dig").arg("-v").output().is_err() {
        return Some("dig is not installed (apt-get install bind9-dnsutils)".into());
    }
    let peers = Command::new(PYTHON)
        .args(["-c", "import socks, dnslib"])
        .status();
    if !peers.is_ok_and(|s| s.success()) {
        return Some(format!(
            "{PYTHON} lacks PySocks or dnslib (apt-get install python3-socks python3-dnslib)"
        ));
    }
    None
}

/// Gives the client namespace every way to leak: a default route (through `next_hop`, on
/// its link), a global IPv6 address with a default route whose next hop's MAC is known. Its
/// interface's name.
fn make_it_leak(net: &Testnet, next_hop: std::net::Ipv4Addr) -> String {
    let ns = net.netns(Node::Client).unwrap().name().to_owned();
    let links = ip(&ns, &["-o", "link", "show"]);
    let veth = links
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name))
        .find(|name| *name != "lo")
        .unwrap()
        .to_owned();
    ip(
        &ns,
        &["route", "add", "default", "via", &next_hop.to_string()],
    );
    ip(
        &ns,
        &[
            "-6",
            "addr",
            "add",
            "fd00:5042::2/64",
            "dev",
            &veth,
            "nodad",
        ],
    );
    ip(
        &ns,
        &[
            "-6",
            "neigh",
            "add",
            "fd00:5042::1",
            "lladdr",
            "02:00:00:00:50:42",
            "dev",
            &veth,
            "nud",
            "permanent",
        ],
    );
    ip(
        &ns,
        &[
            "-6",
            "route",
            "add",
            "default",
            "via",
            "fd00:5042::1",
            "dev",
            &veth,
        ],
    );
    veth
}

/// `ip -n NS ARGS`: its output (the test fails if it does).
fn ip(ns: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["-n", ns])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "ip {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Plain curl in `ns` (no proxy): the bytes fetched, or curl's complaint.
fn curl(ns: &str, url: &str, seconds: &str, out: &Path) -> Result<Vec<u8>, String> {
    let result = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "curl",
            "-sS",
            "-g",
            "--max-time",
            seconds,
            "-o",
        ])
        .arg(out)
        .arg(url)
        .env_remove("http_proxy")
        .env_remove("all_proxy")
        .output()
        .unwrap();
    if !result.status.success() {
        return Err(String::from_utf8_lossy(&result.stderr).into_owned());
    }
    std::fs::read(out).map_err(|e| e.to_string())
}

/// dig in `ns` with its resolver (over TCP if `tcp`), waiting `seconds`: the A record, or
/// why none.
fn dig(ns: &str, name: &str, tcp: bool, seconds: u32) -> Result<String, String> {
    let mut command = Command::new("ip");
    let time = format!("+time={seconds}");
    command.args(["netns", "exec", ns, "dig", "+short", &time, "+tries=1"]);
    if tcp {
        command.arg("+tcp");
    }
    let out = command.args([name, "A"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || text.is_empty() || text.starts_with(";;") {
        return Err(format!("{text} {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(text)
}

/// The static aarch64 pb-client under qemu-aarch64 (`true`), or, where it is not built or
/// qemu is missing (never in CI), this machine's.
fn aarch64_client() -> (Vec<String>, bool) {
    let native = env!("CARGO_BIN_EXE_pb-client").to_owned();
    let arm = Path::new(&native)
        .parent()
        .and_then(Path::parent)
        .map(|target| target.join("aarch64-unknown-linux-musl/debug/pb-client"))
        .unwrap();
    let qemu = Command::new("qemu-aarch64")
        .arg("--version")
        .output()
        .is_ok();
    if arm.exists() && qemu {
        return (vec!["qemu-aarch64".into(), arm.display().to_string()], true);
    }
    let why = format!(
        "{} missing or qemu-aarch64 not installed (make test builds it)",
        arm.display()
    );
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI must run the aarch64 client: {why}"
    );
    println!("the --tun-fd run uses this machine's pb-client: {why}");
    (vec![native], false)
}

/// Makes `tun`'s descriptor the child's descriptor `fd` (open across exec).
fn hand_over(command: &mut Command, tun: &pb_tun::Tun, fd: i32) {
    use std::os::{fd::AsRawFd as _, unix::process::CommandExt as _};
    let from = tun.as_raw_fd();
    // SAFETY: dup2 is async-signal-safe, and touches only descriptors: `from` is open in
    // the parent (the `Tun` outlives the spawn) and so in the child until exec; the copy
    // at `fd` has no close-on-exec flag, so the program finds it there.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(from, fd) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// SOCKS5 UDP ASSOCIATE: PySocks' DNS queries, malformed requests and datagrams.
fn socks_udp(net: &Testnet, client_ns: &str, web: std::net::Ipv4Addr) {
    // PySocks and dnslib: answers from NSD, through the exit.
    let out = Command::new("ip")
        .args(["netns", "exec", client_ns, PYTHON, "-c", PYSOCKS_DIG])
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

    // Malformed requests: their replies.
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

    // Malformed datagrams, and datagrams from elsewhere: no answer; then a good query
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
        // Other UDP: through the exit to the echo server and back, from where it went.
        let mut to_echo = vec![0, 0, 0, 1];
        to_echo.extend_from_slice(&web.octets());
        to_echo.extend_from_slice(&ECHO_PORT.to_be_bytes());
        let header = to_echo.clone();
        to_echo.extend_from_slice(b"echo me");
        app.send_to(&to_echo, relay).unwrap();
        let (n, _) = app.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..header.len()], &header[..], "from the echo server");
        assert_eq!(&buf[header.len()..n], b"echo me");
    })
    .unwrap();
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
