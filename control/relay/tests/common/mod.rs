//! Helpers shared by the gossip-mode tests: relay processes whose output is collected as it
//! comes, the admin endpoint, the client's view of the network and packets through it.
#![allow(dead_code, reason = "each test binary uses a different part")]

use std::{
    collections::BTreeSet,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream, UdpSocket},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use pb_control::{SignedDescriptor, Topology};
use pb_sphinx::{DelayMs, Epoch, Format, Hop, MailboxId, PACKET_LEN, create_packet_with};

pub const NETWORK_SEED: [u8; 32] = [0x42; 32];
pub const MAILBOX: MailboxId = MailboxId([0xab; 16]);
pub const FORMAT: Format = Format::V2;
/// Longer than any step of the tests may take.
pub const STEP: Duration = Duration::from_secs(40);

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(text: &str) -> Vec<u8> {
    (0..text.len() / 2)
        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// The role of relay `i` of `n`: a gateway first, an exit last, mixes between.
pub fn role(i: usize, n: usize) -> &'static str {
    match i {
        0 => "gateway",
        _ if i == n - 1 => "exit",
        _ => "mix",
    }
}

/// A gossip-mode configuration: packets on `ip:47470`, gossip on `ip:47471`, the admin
/// endpoint at `admin`.
pub fn config(
    ip: std::net::Ipv4Addr,
    seeds: &[std::net::Ipv4Addr],
    i: usize,
    n: usize,
    admin: SocketAddr,
    epoch_seconds: u64,
    deliver_to: Option<SocketAddr>,
) -> String {
    let deliver = deliver_to.map_or(String::new(), |d| format!("deliver_to = \"{d}\"\n"));
    let seeds: Vec<String> = seeds.iter().map(|s| format!("\"{s}:47471\"")).collect();
    format!(
        "{deliver}\n[node]\nformat = \"v2\"\n\n[io]\nbackend = \"udp\"\nbind = \"{ip}:47470\"\n\n[gossip]\nbind = \"{ip}:47471\"\nseeds = [{}]\nnetwork_seed = \"{}\"\nidentity_file = \"identity{i}.key\"\nrole = \"{}\"\nepoch_seconds = {epoch_seconds}\nadmin = \"{admin}\"\n\n[mix]\nlink_rate = 40\nloop_rate = 1\n",
        seeds.join(", "),
        hex(&NETWORK_SEED),
        role(i, n)
    )
}

/// Identity seed of relay `i`.
pub fn identity_seed(i: usize) -> [u8; 32] {
    [0x60 + i as u8; 32]
}

/// A relay process and the lines it printed so far.
pub struct Relay {
    pub child: Child,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl Relay {
    /// Starts `command` (a `pb-relay run`) collecting its output.
    pub fn start(mut command: Command) -> Self {
        let mut child = command
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

    /// The last `topology …` line: (hash, nodes, epoch).
    pub fn topology(&self) -> Option<(String, usize, u32)> {
        let lines = self.stdout.lock().unwrap();
        let last = lines.iter().rev().find(|l| l.starts_with("topology "))?;
        let words: Vec<&str> = last.split_whitespace().collect();
        match words.as_slice() {
            ["topology", hash, "nodes", n, "links", _, "epoch", e] => {
                Some(((*hash).to_owned(), n.parse().ok()?, e.parse().ok()?))
            }
            _ => None,
        }
    }

    /// Stops it with SIGTERM; its exit status and stderr.
    pub fn stop(&mut self) -> (std::process::ExitStatus, String) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().unwrap();
        thread::sleep(Duration::from_millis(100));
        (status, self.stderr.lock().unwrap().join("\n"))
    }

    /// Its `stat` lines after it stopped.
    pub fn stat(&self, name: &str) -> Option<u64> {
        let lines = self.stdout.lock().unwrap();
        lines.iter().find_map(|l| {
            l.strip_prefix("stat ")
                .and_then(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
        })
    }
}

/// Relays killed if the test ends early; the scratch directory removed.
pub struct Net {
    pub relays: Vec<Option<Relay>>,
    pub dir: PathBuf,
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
    /// Waits until every running relay reports the same topology of `nodes` nodes (in an
    /// epoch at least `min_epoch`): its hash, epoch and how long it took.
    pub fn converge(&mut self, nodes: usize, min_epoch: u32) -> (String, u32, Duration) {
        let start = Instant::now();
        loop {
            let views: Vec<Option<(String, usize, u32)>> =
                self.relays.iter().flatten().map(Relay::topology).collect();
            let distinct: BTreeSet<_> = views.iter().collect();
            if let (1, Some(Some((hash, n, e)))) = (distinct.len(), views.first())
                && *n == nodes
                && *e >= min_epoch
            {
                return (hash.clone(), *e, start.elapsed());
            }
            if start.elapsed() > STEP {
                self.fail(&format!("no agreement on {nodes} nodes: {views:?}"));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops every relay and fails with what they printed.
    pub fn fail(&mut self, why: &str) -> ! {
        let mut report = String::new();
        for (i, relay) in self.relays.iter_mut().enumerate() {
            if let Some(r) = relay {
                let (_, stderr) = r.stop();
                let out = r.stdout.lock().unwrap();
                let stats: Vec<&String> = out
                    .iter()
                    .filter(|l| {
                        (l.starts_with("stat ") && !l.ends_with(" 0")) || l.starts_with("link ")
                    })
                    .collect();
                report += &format!("relay {i}: {stats:?}\nstderr: {stderr}\n");
            }
        }
        panic!("{why}\n{report}");
    }
}

/// GET `path` from an admin endpoint (the stream connected by the caller, in the right
/// namespace).
pub fn admin_get(mut stream: TcpStream, path: &str) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.0 200"), "{response}");
    response.split_once("\r\n\r\n").unwrap().1.to_owned()
}

/// The client's view from a gateway's `/status` and `/descriptors`: every descriptor
/// verified, the topology computed here.
pub fn client_topology(status: &str, descriptors: &str) -> Topology {
    let epoch: u32 = status
        .lines()
        .find_map(|l| l.strip_prefix("epoch "))
        .unwrap()
        .parse()
        .unwrap();
    // `hex` for a live relay, `hex down` for one that is not.
    let descriptors: Vec<(bool, SignedDescriptor)> = descriptors
        .lines()
        .map(|l| {
            let (hex, live) = match l.strip_suffix(" down") {
                Some(h) => (h, false),
                None => (l, true),
            };
            match SignedDescriptor::parse(&unhex(hex)) {
                Ok(d) => (live, d),
                Err(e) => panic!("a descriptor that does not verify: {e}"),
            }
        })
        .collect();
    let live: Vec<_> = descriptors
        .iter()
        .filter(|(l, _)| *l)
        .map(|(_, d)| d.descriptor().identity)
        .collect();
    Topology::compute_live(
        &NETWORK_SEED,
        Epoch(epoch),
        descriptors.iter().map(|(_, d)| d.descriptor()),
        |d| live.contains(&d.identity),
    )
    .unwrap()
}

/// Packets through `topology` (gateway, the first node of each mix layer, exit), made for
/// its epoch, carrying messages tagged `tag`.
pub fn packets(topology: &Topology, count: u32, tag: u8) -> Vec<(Vec<u8>, [u8; PACKET_LEN])> {
    let route: Vec<Hop> = (0..pb_control::LAYERS)
        .map(|layer| {
            let p = &topology.layer(layer)[0];
            Hop {
                node: p.node,
                public_key: p.sphinx_key,
                delay: DelayMs(2),
            }
        })
        .collect();
    (0..count)
        .map(|n| {
            let message: Vec<u8> = (0..FORMAT.message_len())
                .map(|j| (j as u32 * 7 + n) as u8 ^ tag)
                .collect();
            let mut packet = [0u8; PACKET_LEN];
            // Fresh randomness per packet: the same would be a replay.
            let seed: [u8; 32] = [[tag; 16], [n as u8; 16]].concat().try_into().unwrap();
            create_packet_with(
                FORMAT,
                &mut packet,
                topology.epoch(),
                &route,
                MAILBOX,
                &message,
                &seed,
            )
            .unwrap();
            (message, packet)
        })
        .collect()
}

/// Sends `packets` to `gateway` and checks that each message arrives at `deliveries`
/// exactly once, byte-identical, within `patience` (or says how many did).
pub fn send_through(
    packets: &[(Vec<u8>, [u8; PACKET_LEN])],
    gateway: SocketAddr,
    client: &UdpSocket,
    deliveries: &UdpSocket,
    patience: Duration,
) -> Result<(), String> {
    let mut sent = Vec::new();
    for (message, packet) in packets {
        client.send_to(packet, gateway).unwrap();
        sent.push(message.clone());
        thread::sleep(Duration::from_millis(20));
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    while got.len() < sent.len() && start.elapsed() < patience {
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
