//! Seven `pb-relay` processes in gossip mode, each in its own network namespace on a bridge
//! (UDP backend): a gateway, five mixes and an exit that know only two seeds.
//!
//! Shows: they converge to one topology hash; a client that fetches the gateway's signed
//! descriptors (`/descriptors`), verifies them and computes the topology itself gets the same
//! hash, and its packets cross gateway, three mix layers and exit byte-identical; a killed
//! mix leaves every view within the failure bound and the dataplane forwards through the
//! new topology without any relay restarting; the mix, restarted, rejoins everywhere.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::{
    collections::BTreeSet,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use pb_control::{SignedDescriptor, Topology};
use pb_sphinx::{DelayMs, Epoch, Format, Hop, MailboxId, PACKET_LEN, create_packet_with};
use pb_testbed::{Star, star};

const RELAYS: usize = 7;
const PORT: u16 = 47470;
const GOSSIP_PORT: u16 = 47471;
const ADMIN: &str = "127.0.0.1:9100";
const DELIVER_PORT: u16 = 9000;
const NETWORK_SEED: [u8; 32] = [0x42; 32];
const MAILBOX: MailboxId = MailboxId([0xab; 16]);
const FORMAT: Format = Format::V2;
/// Longer than any step below may take.
const STEP: Duration = Duration::from_secs(40);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len() / 2)
        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

fn role(i: usize) -> &'static str {
    match i {
        0 => "gateway",
        6 => "exit",
        _ => "mix",
    }
}

fn write_files(bed: &Star, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..RELAYS {
        let seed = [0x60 + i as u8; 32];
        std::fs::write(dir.join(format!("identity{i}.key")), hex(&seed) + "\n").unwrap();
        let ip = bed.nodes[i].v4;
        let deliver = if i == 6 {
            format!("deliver_to = \"127.0.0.1:{DELIVER_PORT}\"\n")
        } else {
            String::new()
        };
        let config = format!(
            "{deliver}\n[node]\nformat = \"v2\"\n\n[io]\nbackend = \"udp\"\nbind = \"{ip}:{PORT}\"\n\n[gossip]\nbind = \"{ip}:{GOSSIP_PORT}\"\nseeds = [\"{}:{GOSSIP_PORT}\", \"{}:{GOSSIP_PORT}\"]\nnetwork_seed = \"{}\"\nidentity_file = \"identity{i}.key\"\nrole = \"{}\"\nepoch_seconds = 604800\nadmin = \"{ADMIN}\"\n\n[mix]\nlink_rate = 40\nloop_rate = 1\n",
            bed.nodes[0].v4,
            bed.nodes[1].v4,
            hex(&NETWORK_SEED),
            role(i)
        );
        std::fs::write(dir.join(format!("relay{i}.toml")), config).unwrap();
    }
}

/// A relay process and the lines it printed so far.
struct Relay {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Relay {
    fn start(bed: &Star, dir: &Path, i: usize) -> Self {
        let mut child = bed.nodes[i]
            .ns
            .exec(
                env!("CARGO_BIN_EXE_pb-relay"),
                [
                    "run",
                    "--stats-interval",
                    "0",
                    "--config",
                    dir.join(format!("relay{i}.toml")).to_str().unwrap(),
                ],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        for (pipe, lines) in [
            (
                Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
                stdout.clone(),
            ),
            (Box::new(child.stderr.take().unwrap()), stderr.clone()),
        ] {
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Self {
            child,
            stdout,
            stderr,
        }
    }

    /// The last `topology …` line: (hash, nodes).
    fn topology(&self) -> Option<(String, usize)> {
        let lines = self.stdout.lock().unwrap();
        let last = lines.iter().rev().find(|l| l.starts_with("topology "))?;
        let words: Vec<&str> = last.split_whitespace().collect();
        match words.as_slice() {
            ["topology", hash, "nodes", n, ..] => Some(((*hash).to_owned(), n.parse().ok()?)),
            _ => None,
        }
    }
}

/// Relays killed if the test ends early; the scratch directory removed.
struct Net {
    relays: Vec<Option<Relay>>,
    dir: PathBuf,
}

impl Drop for Net {
    fn drop(&mut self) {
        for relay in self.relays.iter_mut().flatten() {
            let _ = relay.child.kill();
            let _ = relay.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Net {
    /// Stops every relay and fails with what they counted.
    fn fail(&mut self, why: &str) -> ! {
        let mut report = String::new();
        for relay in self.relays.iter_mut().flatten() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &relay.child.id().to_string()])
                .status();
            let _ = relay.child.wait();
        }
        thread::sleep(Duration::from_millis(300));
        for (i, relay) in self.relays.iter().enumerate() {
            if let Some(r) = relay {
                let out = r.stdout.lock().unwrap();
                let stats: Vec<&String> = out
                    .iter()
                    .filter(|l| {
                        (l.starts_with("stat ") && !l.ends_with(" 0")) || l.starts_with("link ")
                    })
                    .collect();
                report += &format!("relay {i}: {stats:?}\n");
            }
        }
        panic!("{why}\n{report}");
    }

    /// Waits until every running relay reports the same topology of `nodes` nodes.
    fn converge(&self, nodes: usize) -> (String, Duration) {
        let start = Instant::now();
        loop {
            let views: Vec<Option<(String, usize)>> =
                self.relays.iter().flatten().map(Relay::topology).collect();
            let distinct: BTreeSet<_> = views.iter().collect();
            if let (1, Some(Some((hash, n)))) = (distinct.len(), views.first())
                && *n == nodes
            {
                return (hash.clone(), start.elapsed());
            }
            if start.elapsed() > STEP {
                let errors: Vec<Vec<String>> = self
                    .relays
                    .iter()
                    .flatten()
                    .map(|r| r.stderr.lock().unwrap().clone())
                    .collect();
                panic!("no agreement on {nodes} nodes: {views:?}\nstderr: {errors:?}");
            }
            thread::sleep(Duration::from_millis(200));
        }
    }
}

/// GET `path` from the admin endpoint of relay `i` (inside its namespace).
fn admin(bed: &Star, i: usize, path: &str) -> String {
    let mut stream = bed.nodes[i]
        .ns
        .in_netns(|| TcpStream::connect(ADMIN).unwrap())
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.0 200"), "{response}");
    response.split_once("\r\n\r\n").unwrap().1.to_owned()
}

/// The client's view: the gateway's descriptors, each verified, and the topology computed
/// from them.
fn client_topology(bed: &Star) -> Topology {
    let status = admin(bed, 0, "/status");
    let epoch: u32 = status
        .lines()
        .find_map(|l| l.strip_prefix("epoch "))
        .unwrap()
        .parse()
        .unwrap();
    let descriptors: Vec<SignedDescriptor> = admin(bed, 0, "/descriptors")
        .lines()
        .map(|l| SignedDescriptor::parse(&unhex(l)).expect("a descriptor that does not verify"))
        .collect();
    Topology::compute(
        &NETWORK_SEED,
        Epoch(epoch),
        descriptors.iter().map(SignedDescriptor::descriptor),
    )
    .unwrap()
}

/// Sends `count` packets through `topology` (gateway, one mix per layer, exit) and checks
/// that each arrives at the exit exactly once, byte-identical.
fn send_through(
    topology: &Topology,
    client: &UdpSocket,
    deliveries: &UdpSocket,
    count: u32,
    tag: u8,
) -> Result<(), String> {
    let route: Vec<Hop> = (0..pb_control::LAYERS)
        .map(|layer| {
            // Vary the mix picked per packet? One path is enough here: the first node.
            let p = &topology.layer(layer)[0];
            Hop {
                node: p.node,
                public_key: p.sphinx_key,
                delay: DelayMs(2),
            }
        })
        .collect();
    let gateway = topology.layer(0)[0].packet_addr;
    let mut sent = Vec::new();
    for n in 0..count {
        let message: Vec<u8> = (0..FORMAT.message_len())
            .map(|j| (j as u32 * 7 + n) as u8 ^ tag)
            .collect();
        let mut packet = [0u8; PACKET_LEN];
        let topology_epoch = topology.epoch();
        create_packet_with(
            FORMAT,
            &mut packet,
            topology_epoch,
            &route,
            MAILBOX,
            &message,
            // Fresh randomness per packet: the same would be a replay.
            &[[tag; 16], [n as u8; 16]].concat().try_into().unwrap(),
        )
        .unwrap();
        client.send_to(&packet, gateway).unwrap();
        sent.push(message);
        thread::sleep(Duration::from_millis(20));
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    while got.len() < sent.len() && start.elapsed() < STEP {
        if let Ok(n) = deliveries.recv(&mut buf) {
            assert_eq!(&buf[..16], &MAILBOX.0);
            got.push(buf[16..n].to_vec());
        }
    }
    got.sort();
    sent.sort();
    if got != sent {
        return Err(format!("{} of {} delivered intact", got.len(), sent.len()));
    }
    Ok(())
}

#[test]
fn gossip_network_converges_survives_a_failure_and_takes_the_node_back() {
    if !pb_testbed::require_privileged(
        "gossip_network_converges_survives_a_failure_and_takes_the_node_back",
    ) {
        return;
    }
    let bed = star("gossip", RELAYS + 1).unwrap();
    let dir = std::env::temp_dir().join(format!("pb-gossipnet-{}", std::process::id()));
    write_files(&bed, &dir);
    let mut net = Net {
        relays: Vec::new(),
        dir: dir.clone(),
    };
    let deliveries = bed.nodes[6]
        .ns
        .in_netns(|| UdpSocket::bind(("127.0.0.1", DELIVER_PORT)).unwrap())
        .unwrap();
    deliveries
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let client = bed.nodes[RELAYS]
        .ns
        .in_netns(|| UdpSocket::bind("0.0.0.0:0").unwrap())
        .unwrap();
    for i in 0..RELAYS {
        net.relays.push(Some(Relay::start(&bed, &dir, i)));
    }

    // 1. One topology everywhere; the client computes the same from signed descriptors.
    let (hash, took) = net.converge(RELAYS);
    let topology = client_topology(&bed);
    assert_eq!(hex(&topology.hash()), hash, "the client's view differs");
    if let Err(e) = send_through(&topology, &client, &deliveries, 10, 1) {
        net.fail(&e);
    }
    let pids: Vec<u32> = net.relays.iter().flatten().map(|r| r.child.id()).collect();

    // 2. Kill a mix from a layer of two (the topology stays complete without it).
    let victim_node = (1..=pb_control::MIX_LAYERS)
        .map(|l| topology.layer(l))
        .find(|layer| layer.len() == 2)
        .unwrap()[1]
        .node;
    let victim = (0..RELAYS)
        .find(|&i| {
            let seed = [0x60 + i as u8; 32];
            pb_control::IdentityKeyPair::from_seed(&seed)
                .public()
                .node_id()
                == victim_node
        })
        .unwrap();
    let mut killed = net.relays[victim].take().unwrap();
    killed.child.kill().unwrap();
    killed.child.wait().unwrap();
    let (after_kill, gone_in) = net.converge(RELAYS - 1);
    assert_ne!(after_kill, hash);
    // SWIM's bound for this network (the relays run pb-control's default settings), plus
    // the test's own polling.
    let bound = pb_control::GossipConfig::new(NETWORK_SEED).failure_bound(RELAYS);
    assert!(
        gone_in <= bound + Duration::from_secs(2),
        "left the views after {gone_in:?}, bound {bound:?}"
    );
    let topology = client_topology(&bed);
    assert_eq!(hex(&topology.hash()), after_kill);
    assert!(topology.find(victim_node).is_none());
    if let Err(e) = send_through(&topology, &client, &deliveries, 10, 2) {
        net.fail(&e);
    }
    // Nobody restarted.
    let still: Vec<u32> = net.relays.iter().flatten().map(|r| r.child.id()).collect();
    assert!(still.iter().all(|p| pids.contains(p)));

    // 3. The mix comes back (new keys, newer descriptor) and rejoins everywhere.
    net.relays[victim] = Some(Relay::start(&bed, &dir, victim));
    let (rejoined, back_in) = net.converge(RELAYS);
    let topology = client_topology(&bed);
    assert_eq!(hex(&topology.hash()), rejoined);
    assert!(topology.find(victim_node).is_some());
    if let Err(e) = send_through(&topology, &client, &deliveries, 10, 3) {
        net.fail(&e);
    }

    // 4. Metrics and status answer; every relay stops cleanly and never panicked.
    let metrics = admin(&bed, 0, "/metrics");
    assert!(metrics.contains("pb_gossip_members 7"), "{metrics}");
    assert!(metrics.contains("pb_packets_received_total"), "{metrics}");
    for relay in net.relays.iter_mut().flatten() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &relay.child.id().to_string()])
            .status();
        let status = relay.child.wait().unwrap();
        thread::sleep(Duration::from_millis(50));
        let stderr = relay.stderr.lock().unwrap().join("\n");
        assert!(status.success(), "{status}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    println!(
        "converged in {took:?}; a killed mix left every view in {gone_in:?}; rejoined in {back_in:?}"
    );
}
