//! Unit tests of the XDP program: crafted frames run through the loaded program with
//! `BPF_PROG_TEST_RUN`, checking the action it returns and the counter it bumps.
//!
//! Needs root (loading BPF programs; the redirect case binds an AF_XDP socket on a veth in a
//! namespace of its own). Without root they skip with a message; with `CI=true` they fail.
#![expect(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::net::{IpAddr, SocketAddr};

use pb_io::{
    XdpCounter,
    afxdp::{AfXdpConfig, AfXdpIo, BindMode},
    sources::{SourceFilter, SourceLimits, StrangerPolicy},
    wire::{self, Route},
    xdp::{XdpCounters, XdpProgram},
};

const PORT: u16 = 47470;
const LEN: u16 = 1452;
const XDP_ABORTED: u32 = 0;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;

fn route(v6: bool, dst_port: u16) -> Route {
    let (src, dst): (SocketAddr, SocketAddr) = if v6 {
        (
            "[fd70:6862::2]:40000".parse().unwrap(),
            SocketAddr::new("fd70:6862::1".parse().unwrap(), dst_port),
        )
    } else {
        (
            "198.18.0.2:40000".parse().unwrap(),
            SocketAddr::new("198.18.0.1".parse().unwrap(), dst_port),
        )
    };
    Route {
        src_mac: [2, 0, 0, 0, 0, 2],
        dst_mac: [2, 0, 0, 0, 0, 1],
        src,
        dst,
    }
}

/// A well-formed UDP frame with a `payload_len`-byte payload.
fn udp_frame(v6: bool, dst_port: u16, payload_len: usize) -> Vec<u8> {
    frame_on(&route(v6, dst_port), payload_len)
}

/// A well-formed UDP frame along `route` with a `payload_len`-byte payload.
fn frame_on(route: &Route, payload_len: usize) -> Vec<u8> {
    let header = wire::header_len(route.dst.is_ipv6());
    let mut frame = vec![0xa5; header + payload_len];
    let n = wire::build(&mut frame, route, payload_len).unwrap();
    assert_eq!(n, frame.len());
    frame
}

/// A right-size frame to `dst_port` from `src` (IPv4 or IPv6 as `src` is).
fn frame_from(src: &str, dst_port: u16) -> Vec<u8> {
    let src: IpAddr = src.parse().unwrap();
    let mut r = route(src.is_ipv6(), dst_port);
    r.src = SocketAddr::new(src, 40000);
    frame_on(&r, usize::from(LEN))
}

fn arp_frame() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[2, 0, 0, 0, 0, 2]);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    // htype 1, ptype IPv4, hlen 6, plen 4, op request, sender/target
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&[
        2, 0, 0, 0, 0, 2, 198, 18, 0, 2, 0, 0, 0, 0, 0, 0, 198, 18, 0, 1,
    ]);
    f.resize(60, 0);
    f
}

fn icmp_frame() -> Vec<u8> {
    let mut f = udp_frame(false, PORT, usize::from(LEN));
    f[14 + 9] = 1; // protocol ICMP; the rest of the bytes are irrelevant to the program
    f
}

fn counters(p: &XdpProgram) -> XdpCounters {
    p.counters().unwrap()
}

fn delta(before: &XdpCounters, after: &XdpCounters, c: XdpCounter) -> u64 {
    after.get(c) - before.get(c)
}

const COUNTERS: usize = XdpCounter::ALL.len();
type Deltas = [u64; COUNTERS];

/// Runs `frame` once and returns (action, counter deltas).
fn run(p: &XdpProgram, frame: &[u8]) -> (u32, Deltas) {
    let before = counters(p);
    let action = p.test_run(frame).unwrap();
    let after = counters(p);
    let d = XdpCounter::ALL.map(|c| delta(&before, &after, c));
    (action, d)
}

/// Deltas with `counter` one up and the others unchanged.
const fn one(counter: XdpCounter) -> Deltas {
    let mut d = [0; COUNTERS];
    d[counter.index() as usize] = 1;
    d
}

const NONE: Deltas = [0; COUNTERS];
const REDIRECTED: Deltas = one(XdpCounter::Redirected);
const WRONG_SIZE: Deltas = one(XdpCounter::DropWrongSize);
const TRUNCATED: Deltas = one(XdpCounter::DropTruncated);
const NO_SOCKET: Deltas = one(XdpCounter::DropNoSocket);
const STRANGER: Deltas = one(XdpCounter::DropStranger);
const OVER_RATE: Deltas = one(XdpCounter::DropSourceRate);
const CLIENT_PASSED: Deltas = one(XdpCounter::ClientLinkPassed);
const CLIENT_OVER_RATE: Deltas = one(XdpCounter::DropClientLinkRate);

#[test]
fn program_classifies_crafted_frames() {
    if !pb_testbed::require_privileged("program_classifies_crafted_frames") {
        return;
    }
    // A socket must be bound for the XSKMAP to accept it; it lives on a veth in a namespace
    // that is removed when `bed` drops, whatever happens below.
    let bed = pb_testbed::two_node("xdpt").unwrap();
    let mut program = XdpProgram::load(PORT, LEN).expect("the verifier accepts the program");
    let socket = bed
        .a
        .in_netns(|| {
            let mut config = AfXdpConfig::new(bed.link.a_if.clone(), 0);
            config.bind = BindMode::Copy;
            AfXdpIo::open(&config)
        })
        .unwrap()
        .unwrap();
    program.register(0, socket.fd()).unwrap();

    let len = usize::from(LEN);
    let cases: Vec<(&str, Vec<u8>, u32, Deltas)> = vec![
        (
            "IPv4 UDP to the port, right size",
            udp_frame(false, PORT, len),
            XDP_REDIRECT,
            REDIRECTED,
        ),
        (
            "IPv6 UDP to the port, right size",
            udp_frame(true, PORT, len),
            XDP_REDIRECT,
            REDIRECTED,
        ),
        (
            "IPv4 UDP to the port, too short",
            udp_frame(false, PORT, len - 1),
            XDP_DROP,
            WRONG_SIZE,
        ),
        (
            "IPv4 UDP to the port, too long",
            udp_frame(false, PORT, len + 1),
            XDP_DROP,
            WRONG_SIZE,
        ),
        (
            "IPv6 UDP to the port, wrong size",
            udp_frame(true, PORT, 100),
            XDP_DROP,
            WRONG_SIZE,
        ),
        (
            "IPv4 UDP to the port, empty",
            udp_frame(false, PORT, 0),
            XDP_DROP,
            WRONG_SIZE,
        ),
        (
            "IPv4 UDP to another port",
            udp_frame(false, PORT + 1, len),
            XDP_PASS,
            NONE,
        ),
        (
            "IPv6 UDP to another port",
            udp_frame(true, 53, len),
            XDP_PASS,
            NONE,
        ),
        ("ICMP", icmp_frame(), XDP_PASS, NONE),
        ("ARP", arp_frame(), XDP_PASS, NONE),
        (
            "IPv4 first fragment (MF)",
            with(udp_frame(false, PORT, len), 14 + 6, &[0x20, 0]),
            XDP_PASS,
            NONE,
        ),
        (
            "IPv4 later fragment (offset)",
            with(udp_frame(false, PORT, len), 14 + 6, &[0, 0x10]),
            XDP_PASS,
            NONE,
        ),
        (
            "IPv6 fragment header",
            with(udp_frame(true, PORT, len), 14 + 6, &[44]),
            XDP_PASS,
            NONE,
        ),
        (
            "Ethernet header only",
            udp_frame(false, PORT, len)[..14].to_vec(),
            XDP_PASS,
            NONE,
        ),
        (
            "truncated IPv4 header",
            udp_frame(false, PORT, len)[..14 + 19].to_vec(),
            XDP_PASS,
            NONE,
        ),
        (
            "truncated IPv6 header",
            udp_frame(true, PORT, len)[..14 + 39].to_vec(),
            XDP_PASS,
            NONE,
        ),
        (
            "truncated UDP header",
            udp_frame(false, PORT, len)[..14 + 20 + 7].to_vec(),
            XDP_PASS,
            NONE,
        ),
        (
            "IPv4 header length below 20",
            with(udp_frame(false, PORT, len), 14, &[0x44]),
            XDP_PASS,
            NONE,
        ),
        (
            "IP version 5 with IPv4 EtherType",
            with(udp_frame(false, PORT, len), 14, &[0x55]),
            XDP_PASS,
            NONE,
        ),
        (
            "right UDP length, payload cut short",
            udp_frame(false, PORT, len)[..14 + 20 + 8 + len - 1].to_vec(),
            XDP_DROP,
            TRUNCATED,
        ),
        (
            "IPv4 with options, to the port",
            ipv4_with_options(udp_frame(false, PORT, len)),
            XDP_REDIRECT,
            REDIRECTED,
        ),
    ];
    for (name, frame, action, deltas) in &cases {
        let got = run(&program, frame);
        assert_eq!(got, (*action, *deltas), "{name}: (action, counter deltas)");
    }

    // Shorter than an Ethernet header: the kernel itself refuses such test input (EINVAL);
    // if it ever accepts it, the program must pass it.
    if let Ok(action) = program.test_run(&udp_frame(false, PORT, len)[..13]) {
        assert_eq!(action, XDP_PASS, "13-byte frame");
    }

    // With the socket unregistered, a right-size datagram is dropped and counted as such.
    program.unregister(0).unwrap();
    assert_eq!(
        run(&program, &udp_frame(false, PORT, len)),
        (XDP_DROP, NO_SOCKET)
    );
    assert_ne!(run(&program, &udp_frame(true, PORT, len)).0, XDP_ABORTED);
    drop(socket);
}

#[test]
fn port_and_packet_length_come_from_the_loader() {
    if !pb_testbed::require_privileged("port_and_packet_length_come_from_the_loader") {
        return;
    }
    let program = XdpProgram::load(9999, 200).unwrap();
    // No socket registered: a right-size datagram to 9999 is dropped as no-socket, a 1452-byte
    // one as wrong size, and the default port is now just another port.
    assert_eq!(
        run(&program, &udp_frame(false, 9999, 200)),
        (XDP_DROP, NO_SOCKET)
    );
    assert_eq!(
        run(&program, &udp_frame(false, 9999, 1452)),
        (XDP_DROP, WRONG_SIZE)
    );
    assert_eq!(
        run(&program, &udp_frame(false, PORT, 200)),
        (XDP_PASS, NONE)
    );
}

#[test]
fn sources_are_filtered_and_strangers_limited_in_the_program() {
    if !pb_testbed::require_privileged("sources_are_filtered_and_strangers_limited_in_the_program")
    {
        return;
    }
    const CLIENT_PORT: u16 = 47480;
    // One token a second and bursts of three: the test runs in far less than a second, so
    // no source earns a fourth.
    let limits = SourceLimits {
        client_port: Some(CLIENT_PORT),
        rate: 1,
        burst: 3,
    };
    let mut program = XdpProgram::load_with(PORT, LEN, &limits).unwrap();
    // No socket is registered: a datagram the filter lets through is dropped as no-socket,
    // which tells it apart from one the filter drops.
    let link4 = "198.18.0.7";
    let link6 = "fd70:6862::7";
    let stranger4 = "198.18.0.66";
    let stranger6 = "fd70:6862::66";

    // Before any link set: no filter.
    for src in [link4, stranger4, stranger6] {
        assert_eq!(
            run(&program, &frame_from(src, PORT)),
            (XDP_DROP, NO_SOCKET),
            "{src}"
        );
    }

    // Mixes and exits: strangers are dropped, links served, in both families.
    let links = SourceFilter::new(
        StrangerPolicy::Drop,
        [link4.parse().unwrap(), link6.parse().unwrap()],
    );
    program.set_sources(&links).unwrap();
    for src in [link4, link6] {
        assert_eq!(
            run(&program, &frame_from(src, PORT)),
            (XDP_DROP, NO_SOCKET),
            "{src}"
        );
    }
    for src in [stranger4, stranger6] {
        assert_eq!(
            run(&program, &frame_from(src, PORT)),
            (XDP_DROP, STRANGER),
            "{src}"
        );
    }
    // Wrong-size datagrams are still counted as such, whoever sends them.
    assert_eq!(
        run(&program, &udp_frame(false, PORT, 100)),
        (XDP_DROP, WRONG_SIZE)
    );
    // Other ports are none of the filter's business.
    let mut other = route(false, 53);
    other.src = SocketAddr::new(stranger4.parse().unwrap(), 40000);
    assert_eq!(run(&program, &frame_on(&other, 100)), (XDP_PASS, NONE));

    // A new link set replaces the old one: the old link is a stranger now.
    let moved = SourceFilter::new(StrangerPolicy::Drop, [stranger4.parse().unwrap()]);
    program.set_sources(&moved).unwrap();
    assert_eq!(
        run(&program, &frame_from(link4, PORT)),
        (XDP_DROP, STRANGER)
    );
    assert_eq!(
        run(&program, &frame_from(link6, PORT)),
        (XDP_DROP, STRANGER)
    );
    assert_eq!(
        run(&program, &frame_from(stranger4, PORT)),
        (XDP_DROP, NO_SOCKET)
    );

    // Gateways: strangers get their bucket (three), links are not limited.
    let gateway = SourceFilter::new(StrangerPolicy::Limit, [link4.parse().unwrap()]);
    program.set_sources(&gateway).unwrap();
    for _ in 0..3 {
        assert_eq!(
            run(&program, &frame_from(stranger6, PORT)),
            (XDP_DROP, NO_SOCKET)
        );
    }
    assert_eq!(
        run(&program, &frame_from(stranger6, PORT)),
        (XDP_DROP, OVER_RATE)
    );
    // Another address of the same IPv6 /64 shares the bucket.
    assert_eq!(
        run(&program, &frame_from("fd70:6862::67", PORT)),
        (XDP_DROP, OVER_RATE)
    );
    for _ in 0..10 {
        assert_eq!(
            run(&program, &frame_from(link4, PORT)),
            (XDP_DROP, NO_SOCKET)
        );
    }

    // The client link: every source has its bucket there (shared with the packet port).
    let client = "198.18.0.99";
    for _ in 0..3 {
        assert_eq!(
            run(&program, &frame_from(client, CLIENT_PORT)),
            (XDP_PASS, CLIENT_PASSED)
        );
    }
    assert_eq!(
        run(&program, &frame_from(client, CLIENT_PORT)),
        (XDP_DROP, CLIENT_OVER_RATE)
    );
    assert_eq!(
        run(&program, &frame_from(client, PORT)),
        (XDP_DROP, OVER_RATE)
    );
    // A second source is unaffected.
    assert_eq!(
        run(&program, &frame_from("198.18.0.98", CLIENT_PORT)),
        (XDP_PASS, CLIENT_PASSED)
    );
}

#[test]
fn without_a_client_port_the_client_link_is_not_limited() {
    if !pb_testbed::require_privileged("without_a_client_port_the_client_link_is_not_limited") {
        return;
    }
    let program = XdpProgram::load(PORT, LEN).unwrap();
    for _ in 0..2000 {
        assert_eq!(
            run(&program, &frame_from("198.18.0.99", 47480)),
            (XDP_PASS, NONE)
        );
    }
}

/// `frame` with `bytes` written at `at`.
fn with(mut frame: Vec<u8>, at: usize, bytes: &[u8]) -> Vec<u8> {
    frame[at..at + bytes.len()].copy_from_slice(bytes);
    frame
}

/// Inserts 4 bytes of IPv4 options (NOPs) and fixes the header length and total length.
fn ipv4_with_options(frame: Vec<u8>) -> Vec<u8> {
    let mut out = frame[..14 + 20].to_vec();
    out.extend_from_slice(&[1, 1, 1, 1]);
    out.extend_from_slice(&frame[14 + 20..]);
    out[14] = 0x46;
    let total = u16::from_be_bytes([out[16], out[17]]) + 4;
    out[16..18].copy_from_slice(&total.to_be_bytes());
    out
}
