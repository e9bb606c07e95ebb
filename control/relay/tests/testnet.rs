//! A five-relay testnet of real `pb-relay` processes, each in its own network namespace on a
//! bridge: gateway → three mixes (one per layer) → exit → gateway. Run once over AF_XDP (the
//! XDP program attached to every relay's interface) and once over the UDP backend. The
//! gateway runs two pipeline cores (two AF_XDP queues, or two `SO_REUSEPORT` sockets), and
//! the client sends from many ports, so that its packets arrive on both cores and those on
//! the core not owning the gateway's link cross to the other.
//!
//! Shows: client packets injected at the gateway arrive at the exit byte-identical, exactly
//! once; every link sends the same count per one-second window (within 2%) idle and busy;
//! malformed, replayed and wrong-epoch packets are dropped and counted at the gateway; every
//! relay's loops come back; relays exit cleanly and their memory does not grow.
#![expect(clippy::unwrap_used, reason = "tests")]

use std::{
    collections::HashMap,
    fmt::Write as _,
    io::Read as _,
    net::{SocketAddr, UdpSocket},
    path::PathBuf,
    process::{Child, Stdio},
    thread,
    time::{Duration, Instant},
};

use pb_sphinx::{
    DelayMs, Epoch, EpochKey, Format, Hop, MailboxId, NodeId, PACKET_LEN, create_packet_with,
};
use pb_testbed::{Star, star_with_queues};

const EPOCH: Epoch = Epoch(1);
const FORMAT: Format = Format::V2;
const PORT: u16 = 47470;
const RATE: u64 = 100;
const RELAYS: usize = 5;
const MAILBOX: MailboxId = MailboxId([0xab; 16]);
const DELIVER_PORT: u16 = 9000;
const DEADLINE: Duration = Duration::from_secs(90);

fn secret(i: usize) -> [u8; 32] {
    [0x20 + i as u8; 32]
}

fn node_id(i: usize) -> NodeId {
    NodeId([0x40 + i as u8; 16])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Relay processes, killed if the test ends early; a scratch directory, removed.
struct Relays {
    children: Vec<Child>,
    dir: PathBuf,
}

impl Drop for Relays {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write_files(bed: &Star, backend: &str, dir: &PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let mut topology = String::new();
    for i in 0..RELAYS {
        let role = match i {
            0 => "gateway",
            4 => "exit",
            _ => "mix",
        };
        let public = EpochKey::from_secret(EPOCH, secret(i)).public_key();
        write!(
            topology,
            "[[node]]\nid = \"{}\"\nrole = \"{role}\"\nlayer = {i}\naddr = \"{}:{PORT}\"\npublic_key = \"{}\"\n\n",
            hex(&node_id(i).0),
            bed.nodes[i].v4,
            hex(&public)
        )
        .unwrap();
    }
    std::fs::write(dir.join("topology.toml"), topology).unwrap();
    for i in 0..RELAYS {
        // The gateway has two cores, the others one.
        let (queues, cores) = if i == 0 { ("0, 1", 2) } else { ("0", 1) };
        let io = match backend {
            "af_xdp" => format!(
                "backend = \"af_xdp\"\ninterface = \"{}\"\nqueues = [{queues}]\nport = {PORT}\npacket_len = {PACKET_LEN}\nxdp_mode = \"native\"\nbind = \"copy\"\n",
                bed.nodes[i].ifname
            ),
            _ => format!(
                "backend = \"udp\"\nbind = \"{}:{PORT}\"\ncores = {cores}\n",
                bed.nodes[i].v4
            ),
        };
        let deliver = if i == 4 {
            format!("deliver_to = \"127.0.0.1:{DELIVER_PORT}\"\n")
        } else {
            String::new()
        };
        let config = format!(
            "topology = \"topology.toml\"\n{deliver}\n[node]\nid = \"{}\"\nsecret = \"{}\"\nepoch = {}\nformat = \"v2\"\n\n[io]\n{io}\n[mix]\nlink_rate = {RATE}\nmax_burst = 8\n",
            hex(&node_id(i).0),
            hex(&secret(i)),
            EPOCH.0
        );
        std::fs::write(dir.join(format!("relay{i}.toml")), config).unwrap();
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

struct Output {
    stats: HashMap<String, u64>,
    /// (window, link) → packets sent in that window.
    windows: Vec<(u64, u64)>,
    loops_returned: u64,
    /// Packets received by each core.
    core_received: Vec<u64>,
}

fn parse(text: &str) -> Output {
    let mut stats = HashMap::new();
    let mut windows = Vec::new();
    let mut loops_returned = 0;
    let mut core_received = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["stat", name, value] => {
                stats.insert((*name).to_owned(), value.parse().unwrap());
            }
            ["window", w, "link", _, "sent", n, ..] => {
                windows.push((w.parse().unwrap(), n.parse().unwrap()));
            }
            ["core", _, "received", n, ..] => core_received.push(n.parse().unwrap()),
            ["link", _, rest @ ..] => {
                if let Some(pos) = rest.iter().position(|w| *w == "loops_returned") {
                    loops_returned += rest[pos + 1].parse::<u64>().unwrap();
                }
            }
            _ => {}
        }
    }
    Output {
        stats,
        windows,
        loops_returned,
        core_received,
    }
}

/// One testnet at a time: two at once would share two CPUs between ten relays.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn testnet(backend: &str) {
    let _serial = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // Two queues on the gateway's interface, one on the others'.
    let mut queues = vec![1; RELAYS + 1];
    queues[0] = 2;
    let bed = star_with_queues(&format!("relay-{}", &backend[..3]), &queues).unwrap();
    let dir = std::env::temp_dir().join(format!("pb-relay-test-{}-{backend}", std::process::id()));
    write_files(&bed, backend, &dir);
    let mut relays = Relays {
        children: Vec::new(),
        dir: dir.clone(),
    };

    // The exit hands delivered messages to this socket in its namespace.
    let deliveries = bed.nodes[4]
        .ns
        .in_netns(|| UdpSocket::bind(("127.0.0.1", DELIVER_PORT)).unwrap())
        .unwrap();
    deliveries
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();

    for i in 0..RELAYS {
        let child = bed.nodes[i]
            .ns
            .exec(
                env!("CARGO_BIN_EXE_pb-relay"),
                [
                    "run",
                    "--config",
                    dir.join(format!("relay{i}.toml")).to_str().unwrap(),
                ],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        relays.children.push(child);
    }

    // Idle: three seconds of cover only.
    thread::sleep(Duration::from_secs(3));
    let rss_idle: Vec<u64> = relays.children.iter().map(|c| rss_kib(c.id())).collect();
    let idle_windows_end = 3;

    // Busy: a client on the sixth node sends 300 packets through all five relays, at most
    // 40 in flight; then one malformed datagram, one replay and one wrong-epoch packet.
    // Many source ports: many flows for the gateway's queues (or sockets) to share.
    let clients: Vec<UdpSocket> = bed.nodes[5]
        .ns
        .in_netns(|| {
            (0..32)
                .map(|_| UdpSocket::bind("0.0.0.0:0").unwrap())
                .collect()
        })
        .unwrap();
    let client = &clients[0];
    let gateway = SocketAddr::new(bed.nodes[0].v4.into(), PORT);
    let route: Vec<Hop> = (0..RELAYS)
        .map(|i| Hop {
            node: node_id(i),
            public_key: EpochKey::from_secret(EPOCH, secret(i)).public_key(),
            delay: DelayMs(3),
        })
        .collect();
    let mut sent: Vec<Vec<u8>> = Vec::new();
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut buf = [0u8; 2048];
    let mut receive = |got: &mut Vec<Vec<u8>>| {
        while let Ok(n) = deliveries.recv(&mut buf) {
            assert_eq!(&buf[..16], &MAILBOX.0, "delivered to the wrong mailbox");
            got.push(buf[16..n].to_vec());
        }
    };
    let start = Instant::now();
    let mut first_packet = [0u8; PACKET_LEN];
    for n in 0..300u32 {
        while sent.len() > got.len() + 40 {
            receive(&mut got);
            assert!(
                start.elapsed() < DEADLINE,
                "the testnet stopped delivering ({} of {})",
                got.len(),
                sent.len()
            );
        }
        let message: Vec<u8> = (0..FORMAT.message_len())
            .map(|j| (n as usize * 31 + j) as u8)
            .collect();
        let mut packet = [0u8; PACKET_LEN];
        create_packet_with(
            FORMAT,
            &mut packet,
            EPOCH,
            &route,
            MAILBOX,
            &message,
            &n.to_le_bytes().repeat(8).try_into().unwrap(),
        )
        .unwrap();
        clients[n as usize % clients.len()]
            .send_to(&packet, gateway)
            .unwrap();
        if n == 0 {
            first_packet = packet;
        }
        sent.push(message);
    }
    client.send_to(&first_packet, gateway).unwrap(); // a replay
    client.send_to(&[7u8; 100], gateway).unwrap(); // malformed (wrong size)
    let mut future = [0u8; PACKET_LEN];
    let future_hop = Hop {
        public_key: EpochKey::from_secret(Epoch(2), secret(0)).public_key(),
        ..route[0]
    };
    create_packet_with(
        FORMAT,
        &mut future,
        Epoch(2),
        &[future_hop],
        MAILBOX,
        b"early",
        &[3; 32],
    )
    .unwrap();
    client.send_to(&future, gateway).unwrap();
    while got.len() < sent.len() {
        receive(&mut got);
        assert!(
            start.elapsed() < DEADLINE,
            "only {} of {} delivered",
            got.len(),
            sent.len()
        );
    }
    let busy_seconds = start.elapsed().as_secs();
    // Two more seconds so the last windows and loops settle.
    thread::sleep(Duration::from_secs(2));
    receive(&mut got);
    let rss_end: Vec<u64> = relays.children.iter().map(|c| rss_kib(c.id())).collect();

    // Stop every relay cleanly and read what it printed.
    let mut outputs = Vec::new();
    for (i, child) in relays.children.iter_mut().enumerate() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let status = child.wait().unwrap();
        let mut stdout = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert!(status.success(), "relay {i} exited with {status}: {stderr}");
        assert!(!stderr.contains("panicked"), "relay {i}: {stderr}");
        outputs.push(parse(&stdout));
    }

    // Every message exactly once, byte-identical.
    let mut want = sent.clone();
    want.sort();
    got.sort();
    assert_eq!(got.len(), want.len(), "each message exactly once");
    assert!(got == want, "delivered messages differ from those sent");

    // The gateway dropped and counted the bad packets.
    let gw = &outputs[0].stats;
    assert_eq!(gw["dropped_replay"], 1, "{gw:?}");
    assert_eq!(gw["dropped_future_epoch"], 1, "{gw:?}");
    let malformed = if backend == "af_xdp" {
        gw["xdp_drop_wrong_size"]
    } else {
        gw["io_rx_dropped_malformed"]
    };
    assert_eq!(malformed, 1, "{gw:?}");
    // Both gateway cores received client packets; those on core 1 crossed to core 0, which
    // owns the gateway's only link, and none was lost on the way.
    let cores = &outputs[0].core_received;
    assert!(
        cores.len() == 2 && cores.iter().all(|n| *n > 0),
        "{cores:?}"
    );
    assert!(gw["handed_off"] > 0, "{gw:?}");
    assert_eq!(gw["handed_off"], gw["taken_over"], "{gw:?}");
    assert_eq!(gw["dropped_handoff"], 0, "{gw:?}");

    // Constant rate: every full window of every link, idle or busy, within 2% of the rate.
    for (i, out) in outputs.iter().enumerate() {
        let windows: Vec<u64> = out
            .windows
            .iter()
            .filter(|(w, _)| *w >= 1)
            .map(|(_, n)| *n)
            .collect();
        assert!(
            windows.len() >= idle_windows_end + busy_seconds as usize,
            "relay {i}: {:?}",
            out.windows
        );
        for n in &windows {
            let off = (*n as f64 - RATE as f64).abs() / RATE as f64;
            assert!(
                off <= 0.02,
                "relay {i}: a window sent {n}, rate {RATE}: {:?}",
                out.windows
            );
        }
        assert!(
            out.loops_returned > 0,
            "relay {i}: no loop came back: {:?}",
            out.stats
        );
        assert_eq!(out.stats["dropped_no_link"], 0, "relay {i}");
        if i > 0 {
            let bad: u64 = out
                .stats
                .iter()
                .filter(|(k, _)| k.starts_with("dropped_"))
                .map(|(_, v)| v)
                .sum();
            assert_eq!(bad, 0, "relay {i} dropped: {:?}", out.stats);
        }
        // Bounded memory: busy traffic did not make a relay grow.
        assert!(
            rss_end[i] <= rss_idle[i] + 16 * 1024,
            "relay {i}: RSS {} KiB idle, {} KiB after",
            rss_idle[i],
            rss_end[i]
        );
    }
    drop(relays);
    drop(bed);
}

#[test]
fn testnet_over_af_xdp() {
    if !pb_testbed::require_privileged("testnet_over_af_xdp") {
        return;
    }
    testnet("af_xdp");
}

#[test]
fn testnet_over_udp() {
    if !pb_testbed::require_privileged("testnet_over_udp") {
        return;
    }
    testnet("udp");
}
