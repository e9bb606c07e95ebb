//! The kernel-bypass path end to end on a veth pair between two network namespaces:
//! our XDP program attached in native mode, an AF_XDP socket in copy mode, ordinary UDP
//! sockets on the other side.
//!
//! Needs root; skips with a message without it, fails with `CI=true`. Namespaces (and with
//! them the veth and the XDP attachment) are removed even when an assertion fails.
#![expect(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::{
    collections::HashSet,
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use pb_io::{
    PacketIo, XdpCounter,
    afxdp::{AfXdpConfig, AfXdpIo, BindMode},
    xdp::{AttachMode, XdpProgram},
};
use pb_testbed::TwoNode;

const PORT: u16 = 47470;
const LEN: usize = 1452;
const DEADLINE: Duration = Duration::from_secs(60);

/// The payload of datagram `seq`: its number, then a pattern that depends on it.
fn payload(seq: u32, len: usize) -> Vec<u8> {
    let mut p: Vec<u8> = (0..len)
        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(seq) as u8)
        .collect();
    p[..4].copy_from_slice(&seq.to_be_bytes());
    p
}

fn seq_of(bytes: &[u8]) -> u32 {
    u32::from_be_bytes(bytes[..4].try_into().unwrap())
}

fn a_v6(bed: &TwoNode) -> IpAddr {
    IpAddr::V6(bed.link.a_v6.unwrap())
}

fn b_v6(bed: &TwoNode) -> IpAddr {
    IpAddr::V6(bed.link.b_v6.unwrap())
}

/// Attaches the program to `a`'s end of the veth and opens a socket on queue 0. Must run in
/// namespace `a`.
fn attach(bed: &TwoNode) -> (XdpProgram, AfXdpIo) {
    let mut program = XdpProgram::attach_new(&bed.link.a_if, AttachMode::Native, PORT, LEN as u16)
        .expect("native XDP attaches to veth");
    let mut config = AfXdpConfig::new(bed.link.a_if.clone(), 0);
    config.bind = BindMode::Copy;
    let socket = AfXdpIo::open(&config).expect("AF_XDP socket binds to queue 0");
    program.register(0, socket.fd()).unwrap();
    (program, socket)
}

fn xdp_attached(bed: &TwoNode) -> bool {
    let out = bed.a.run(&["link", "show", "dev", &bed.link.a_if]).unwrap();
    out.contains("xdp")
}

#[test]
fn afxdp_receives_transmits_and_leaves_other_traffic_alone() {
    if !pb_testbed::require_privileged("afxdp_receives_transmits_and_leaves_other_traffic_alone") {
        return;
    }
    let bed = pb_testbed::two_node("afx").unwrap();
    let guard = bed.a.enter().unwrap();
    let (program, mut socket) = attach(&bed);
    assert!(xdp_attached(&bed), "`ip link` shows the program attached");

    receive_10000_identical(&bed, &mut socket);
    assert_eq!(
        program.counters().unwrap().get(XdpCounter::Redirected),
        10_000
    );

    ping_still_works(&bed);
    datagrams_for_other_addresses_are_not_taken(&bed, &mut socket);
    other_ports_reach_the_kernel(&bed);
    wrong_size_is_dropped_and_counted(&bed, &program, &mut socket);
    transmit_reaches_ordinary_sockets(&bed, &mut socket, bed.link.b_v4.into());
    transmit_reaches_ordinary_sockets(&bed, &mut socket, b_v6(&bed));

    // A peer behind a gateway: frames must carry the gateway's MAC, found through the route.
    let gateway = bed.link.b_v4.to_string();
    bed.a
        .run(&["route", "add", "198.19.0.0/24", "via", &gateway])
        .unwrap();
    bed.b
        .run(&["addr", "add", "198.19.0.5/32", "dev", "lo"])
        .unwrap();
    transmit_reaches_ordinary_sockets(&bed, &mut socket, "198.19.0.5".parse().unwrap());

    drop(socket);
    drop(program);
    assert!(!xdp_attached(&bed), "dropping the program detaches it");
    drop(guard);
}

/// 10,000 datagrams from an ordinary socket in `b` (alternating IPv4 and IPv6) arrive on the
/// AF_XDP socket, each exactly once and byte-identical.
fn receive_10000_identical(bed: &TwoNode, socket: &mut AfXdpIo) {
    const COUNT: u32 = 10_000;
    let received = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let targets = [
        SocketAddr::new(bed.link.a_v4.into(), PORT),
        SocketAddr::new(a_v6(bed), PORT),
    ];
    let mut seen = HashSet::new();
    thread::scope(|scope| {
        let sender = {
            let (received, done) = (received.clone(), done.clone());
            let bed_b = &bed.b;
            scope.spawn(move || {
                let _in_b = bed_b.enter().unwrap();
                let v4 = UdpSocket::bind("0.0.0.0:0").unwrap();
                let v6 = UdpSocket::bind("[::]:0").unwrap();
                let start = Instant::now();
                for seq in 0..COUNT {
                    // Stay at most 256 datagrams ahead of the receiver: the test is about
                    // delivery, not about overrunning rings.
                    while u64::from(seq) > received.load(Ordering::Relaxed) + 256 {
                        assert!(
                            start.elapsed() < DEADLINE,
                            "receiver stalled at {}",
                            received.load(Ordering::Relaxed)
                        );
                        if done.load(Ordering::Relaxed) {
                            return;
                        }
                        thread::yield_now();
                    }
                    let (sock, to) = if seq.is_multiple_of(2) {
                        (&v4, targets[0])
                    } else {
                        (&v6, targets[1])
                    };
                    sock.send_to(&payload(seq, LEN), to).unwrap();
                }
            })
        };

        let mut batch = Vec::new();
        let start = Instant::now();
        while seen.len() < COUNT as usize && start.elapsed() < DEADLINE {
            socket
                .recv(&mut batch, 64, Duration::from_millis(50))
                .unwrap();
            for p in &batch {
                let bytes = socket.payload(p);
                let seq = seq_of(bytes);
                assert!(seq < COUNT, "unknown datagram {seq}");
                assert_eq!(
                    bytes,
                    payload(seq, LEN).as_slice(),
                    "datagram {seq} differs"
                );
                let from_ip = if seq.is_multiple_of(2) {
                    IpAddr::from(bed.link.b_v4)
                } else {
                    b_v6(bed)
                };
                assert_eq!(p.peer.ip(), from_ip, "datagram {seq} source");
                assert!(seen.insert(seq), "datagram {seq} delivered twice");
            }
            // The batch's payloads, all at once and writable, are the same bytes.
            let expected: Vec<Vec<u8>> = batch.iter().map(|p| socket.payload(p).to_vec()).collect();
            let mut via_batch = Vec::new();
            socket.with_payloads_mut(&batch, &mut |slices| {
                for s in slices.iter_mut() {
                    via_batch.push(s.to_vec());
                    s[0] ^= 0xff;
                }
            });
            assert_eq!(via_batch, expected);
            for (p, bytes) in batch.iter().zip(&expected) {
                assert_eq!(socket.payload(p)[0], bytes[0] ^ 0xff, "written in place");
            }
            received.store(seen.len() as u64, Ordering::Relaxed);
            socket.release(&mut batch);
        }
        done.store(true, Ordering::Relaxed);
        sender.join().unwrap();
    });
    assert_eq!(seen.len(), COUNT as usize, "all datagrams arrive");
    assert_eq!(socket.stats().rx_packets, u64::from(COUNT));
    assert_eq!(socket.stats().rx_dropped_malformed, 0);
}

fn ping_still_works(bed: &TwoNode) {
    for target in [bed.link.a_v4.to_string(), a_v6(bed).to_string()] {
        let out = bed
            .b
            .exec("ping", ["-c", "3", "-i", "0.2", "-W", "2", target.as_str()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ping {target} with XDP attached: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// A datagram to another port goes through the kernel stack to an ordinary socket in `a`.
fn other_ports_reach_the_kernel(bed: &TwoNode) {
    let listener = UdpSocket::bind((bed.link.a_v4, 5555)).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let to = SocketAddr::new(bed.link.a_v4.into(), 5555);
    bed.b
        .in_netns(|| {
            UdpSocket::bind("0.0.0.0:0")
                .unwrap()
                .send_to(&payload(7, LEN), to)
                .unwrap()
        })
        .unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = listener
        .recv_from(&mut buf)
        .expect("datagram to another port arrives");
    assert_eq!(&buf[..n], payload(7, LEN).as_slice());
}

fn wrong_size_is_dropped_and_counted(bed: &TwoNode, program: &XdpProgram, socket: &mut AfXdpIo) {
    let before = program.counters().unwrap();
    let to = SocketAddr::new(bed.link.a_v4.into(), PORT);
    bed.b
        .in_netns(|| {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            for len in [1, 100, LEN - 1, LEN + 1] {
                for _ in 0..25 {
                    s.send_to(&vec![0x5a; len], to).unwrap();
                }
            }
        })
        .unwrap();
    let start = Instant::now();
    let mut after = program.counters().unwrap();
    while after.get(XdpCounter::DropWrongSize) - before.get(XdpCounter::DropWrongSize) < 100
        && start.elapsed() < Duration::from_secs(10)
    {
        thread::sleep(Duration::from_millis(10));
        after = program.counters().unwrap();
    }
    assert_eq!(
        after.get(XdpCounter::DropWrongSize) - before.get(XdpCounter::DropWrongSize),
        100
    );
    assert_eq!(
        after.get(XdpCounter::Redirected),
        before.get(XdpCounter::Redirected)
    );
    let mut batch = Vec::new();
    assert_eq!(
        socket
            .recv(&mut batch, 64, Duration::from_millis(200))
            .unwrap(),
        0
    );
}

/// 1,000 packets sent through AF_XDP TX arrive at an ordinary UDP socket in `b`,
/// byte-identical and from our address and port (the kernel verified the checksums).
fn transmit_reaches_ordinary_sockets(bed: &TwoNode, socket: &mut AfXdpIo, to_ip: IpAddr) {
    const COUNT: u32 = 1_000;
    let to = SocketAddr::new(to_ip, 6000);
    let from_ip: IpAddr = if to_ip.is_ipv4() {
        bed.link.a_v4.into()
    } else {
        a_v6(bed)
    };
    socket
        .resolve_peer(to_ip, Duration::from_secs(5))
        .expect("neighbour resolves");

    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let received = Arc::new(AtomicU64::new(0));
    thread::scope(|scope| {
        let receiver = {
            let received = received.clone();
            let bed_b = &bed.b;
            scope.spawn(move || {
                let _in_b = bed_b.enter().unwrap();
                let s = UdpSocket::bind(to).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                ready_tx.send(()).unwrap();
                let mut got = HashSet::new();
                let mut buf = [0u8; 2048];
                while got.len() < COUNT as usize {
                    let Ok((n, from)) = s.recv_from(&mut buf) else {
                        break;
                    };
                    let seq = seq_of(&buf[..n]);
                    assert_eq!(
                        &buf[..n],
                        payload(seq, LEN).as_slice(),
                        "datagram {seq} differs"
                    );
                    assert_eq!(
                        from,
                        SocketAddr::new(from_ip, PORT),
                        "datagram {seq} source"
                    );
                    got.insert(seq);
                    received.store(got.len() as u64, Ordering::Relaxed);
                }
                got.len()
            })
        };
        ready_rx.recv().unwrap();

        let start = Instant::now();
        let mut batch = Vec::new();
        let mut seq = 0;
        while seq < COUNT && start.elapsed() < DEADLINE {
            // Keep within the receiving socket's buffer.
            if u64::from(seq) > received.load(Ordering::Relaxed) + 64 {
                socket.poll_completions().unwrap();
                thread::yield_now();
                continue;
            }
            let mut p = socket.alloc(to).expect("a free frame");
            socket.set_len(&mut p, LEN);
            socket.payload_mut(&p).copy_from_slice(&payload(seq, LEN));
            batch.push(p);
            while !batch.is_empty() {
                socket.send(&mut batch).unwrap();
            }
            seq += 1;
        }
        while socket.poll_completions().unwrap() > 0 {}
        assert_eq!(
            receiver.join().unwrap(),
            COUNT as usize,
            "all AF_XDP transmissions arrive ({to_ip})"
        );
    });
    assert_eq!(socket.stats().tx_dropped_no_neighbour, 0);
}

/// A right-size datagram to our MAC but another IP (what a bridge or promiscuous NIC would
/// pass up) reaches the socket through XDP but is dropped and counted, not handed up.
fn datagrams_for_other_addresses_are_not_taken(bed: &TwoNode, socket: &mut AfXdpIo) {
    let other = "198.18.0.77";
    let mac = bed
        .link
        .a_mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    bed.b
        .run(&[
            "neigh",
            "replace",
            other,
            "lladdr",
            &mac,
            "dev",
            &bed.link.b_if,
        ])
        .unwrap();
    let before = socket.stats();
    let to: SocketAddr = format!("{other}:{PORT}").parse().unwrap();
    bed.b
        .in_netns(|| {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            for seq in 0..10 {
                s.send_to(&payload(seq, LEN), to).unwrap();
            }
        })
        .unwrap();
    let mut batch = Vec::new();
    let start = Instant::now();
    while socket.stats().rx_dropped_not_local - before.rx_dropped_not_local < 10
        && start.elapsed() < Duration::from_secs(10)
    {
        socket
            .recv(&mut batch, 64, Duration::from_millis(50))
            .unwrap();
        assert!(batch.is_empty(), "a datagram for {other} was handed up");
    }
    assert_eq!(
        socket.stats().rx_dropped_not_local - before.rx_dropped_not_local,
        10
    );
    assert_eq!(socket.stats().rx_packets, before.rx_packets);
}
