//! The incentive ledger on a testnet in network namespaces: eight `pb-relay` processes in
//! gossip mode (a gateway, three mix layers of two, an exit; relays 0 to 2 the stewards,
//! relay 0 the log operator, every relay a copy of the log) with 20-second epochs, pb-client
//! fetching through them all along, and one mix whose outgoing packets nftables drops one
//! in five (on the bridge, where every packet between two relays passes).
//!
//! Shows: every relay's record of every epoch since the dropping began reaches the log; the
//! dropping mix's reputation ends below every honest mix's within the epochs stated, and
//! once pb-client and the relays weigh routes by the reputation table the stewards signed,
//! it forwards a smaller share of the packets than it did while routes were uniform; the
//! log holds nothing but relays' records (every id in it is a relay's) and no file of any
//! relay's copy holds the client's address; `pb-ledger verify`, on the operator's directory
//! and over HTTP from a mirror, checks the stewards' signatures, every tile, every record,
//! and recomputes the reputation table the stewards published and signed the hash of.
#![cfg(target_arch = "x86_64")]
#![expect(clippy::unwrap_used, clippy::panic, reason = "tests")]

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use pb_ledger::{
    reputation::{ONE, Params},
    tiles::TileDir,
    verify::{Verified, verify},
};
use pb_sphinx::{Epoch, NodeId};
use pb_testnet::{FileServer, Network, Node, Testnet};

mod common {
    pub mod testnet;
}

use common::testnet::{curl_via, exit_resolves, nft, relay_binary};

const RELAYS: usize = 8;
const EPOCH_SECONDS: u64 = 20;
/// The mix that drops one packet in five of those it sends.
const DROPPER: usize = 3;
/// Epochs of the dropping's records the log must hold before the reputations are judged.
const JUDGED_EPOCHS: u32 = 3;
const HTTP_PORT: u16 = 8080;
const SERVER_NAME: &str = "server.pb.test";
const FILE_LEN: usize = 256 << 10;

fn fail(net: &Testnet, why: &str) -> ! {
    panic!("{why}\n{}", net.report(30));
}

/// The pb-ledger binary built next to pb-client.
fn ledger_binary() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_pb-client")).with_file_name("pb-ledger");
    assert!(
        path.exists(),
        "{} is missing: build it first (cargo build -p pb-ledger)",
        path.display()
    );
    path
}

/// One reading of every mix: its layer (from `/status`) and the packets it forwarded so
/// far (from `/metrics`), by relay index (`None`: no answer, or no layer).
type Reading = Vec<Option<(usize, u64)>>;

fn read_mixes(net: &Testnet) -> Reading {
    (0..RELAYS)
        .map(|i| {
            if !(1..RELAYS - 1).contains(&i) {
                return None;
            }
            let status = net.admin_get(i, "/status").ok()?;
            let layer = status
                .lines()
                .find_map(|l| l.strip_prefix("layer "))?
                .trim()
                .parse()
                .ok()?;
            let metrics = net.admin_get(i, "/metrics").ok()?;
            let forwarded = metrics
                .lines()
                .find_map(|l| l.strip_prefix("pb_packets_forwarded_total "))?
                .trim()
                .parse()
                .ok()?;
            Some((layer, forwarded))
        })
        .collect()
}

/// Packets the dropping mix and the mix sharing its layer forwarded, summed over the
/// intervals between consecutive readings in which both kept the same layer: routes choose
/// one of the two for every packet through that layer, so the ratio of the sums is the
/// dropping mix's share against an honest one's, whatever the load and the layer.
fn against_layer_mate(readings: &[Reading]) -> (u64, u64) {
    let (mut dropper, mut mate) = (0, 0);
    for pair in readings.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let Some(((layer, d0), (layer_after, d1))) = a[DROPPER].zip(b[DROPPER]) else {
            continue;
        };
        let mates: Vec<usize> = (1..RELAYS - 1)
            .filter(|&i| i != DROPPER && a[i].is_some_and(|(l, _)| l == layer))
            .collect();
        let [m] = mates[..] else {
            continue;
        };
        let Some(((ml, m0), (ml_after, m1))) = a[m].zip(b[m]) else {
            continue;
        };
        if layer_after != layer || ml != layer || ml_after != layer {
            continue;
        }
        dropper += d1.saturating_sub(d0);
        mate += m1.saturating_sub(m0);
    }
    (dropper, mate)
}

/// The operator's log as it stands, checked (`None`: no cosigned checkpoint yet).
fn operator_log(net: &Testnet) -> Option<Verified> {
    let network = net.network().network_file()?;
    let dir = TileDir::new(net.dir().join("ledger0"));
    verify(&dir, &network.stewards, &[], Params::default()).ok()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn the_ledger_logs_every_relays_records_and_finds_the_dropping_mix() {
    if !pb_testbed::require_privileged(
        "the_ledger_logs_every_relays_records_and_finds_the_dropping_mix",
    ) {
        return;
    }
    let network = Network::builder()
        .relays(RELAYS)
        .netns("ledger")
        .gossip(EPOCH_SECONDS)
        .ledger(true)
        .admin(true)
        .network_seed([0x4c; 32])
        .identity_seeds(0x90)
        .link_rate(100)
        .loop_rate(2)
        .stats_interval(0.0)
        .relay_binary(relay_binary())
        .build()
        .unwrap();
    let mut net = Testnet::create(network.clone()).unwrap();
    let client_ns = net.netns(Node::Client).unwrap().name().to_owned();
    let exit_ns = net
        .netns(Node::Relay(RELAYS - 1))
        .unwrap()
        .name()
        .to_owned();
    let _etc = exit_resolves(&exit_ns, SERVER_NAME, network.address(Node::Web).into());
    net.start_relays().unwrap();
    let body: Arc<Vec<u8>> = Arc::new((0..FILE_LEN).map(|i| (i * 7 % 251) as u8).collect());
    let _server =
        FileServer::start(net.listen(Node::Web, HTTP_PORT).unwrap(), body.clone()).unwrap();
    if let Err(e) = net.wait_for_agreement(Duration::from_secs(60)) {
        panic!("{e}");
    }

    // The dropping mix: one in five of the packets it sends on its packet port.
    let dropper_ip = network.address(Node::Relay(DROPPER));
    let nft = |args: &str| nft(&net, args);
    nft("add table bridge dropper");
    nft("add chain bridge dropper drops { type filter hook forward priority 0 ; }");
    nft(&format!(
        "add rule bridge dropper drops ip saddr {dropper_ip} udp sport {} numgen random mod 100 < 20 counter drop",
        pb_testnet::PACKET_PORT
    ));
    let dropping_since = Epoch((unix_now() / EPOCH_SECONDS) as u32);

    // pb-client fetches all along: its traffic crosses every relay the log measures.
    let client = match net.start_client(
        "pb-client",
        net.client_command(env!("CARGO_BIN_EXE_pb-client")),
        Duration::from_secs(30),
    ) {
        Ok(k) => k,
        Err(e) => fail(&net, &format!("pb-client did not get ready: {e:#}")),
    };
    let mut uniform_readings = vec![read_mixes(&net)];
    let stop = Arc::new(AtomicBool::new(false));
    let fetched = Arc::new(AtomicUsize::new(0));
    // Three fetches at a time, so that the client's packets, not the relays' loops, are
    // most of what the mixes forward.
    let fetchers: Vec<_> = (0..3)
        .map(|k| {
            let (stop, fetched, body) = (stop.clone(), fetched.clone(), body.clone());
            let (ns, out) = (client_ns.clone(), net.dir().join(format!("fetched{k}")));
            thread::spawn(move || {
                let url = format!("http://{SERVER_NAME}:{HTTP_PORT}/file");
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(got) = curl_via(&ns, "127.0.0.1:1080", "60", &url, &out)
                        && got == *body
                    {
                        fetched.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    // Until the client weighs its routes by a table the stewards signed: the relays carry
    // traffic in the shares uniform routes give until then.
    let limit = Duration::from_secs(EPOCH_SECONDS * u64::from(JUDGED_EPOCHS + 6));
    let started = Instant::now();
    while net
        .process(client)
        .and_then(|p| p.last("pb-client: routes weigh"))
        .is_none()
    {
        if started.elapsed() > limit {
            fail(
                &net,
                "pb-client never weighed its routes by a reputation table",
            );
        }
        thread::sleep(Duration::from_secs(1));
        uniform_readings.push(read_mixes(&net));
    }
    let weighed_at = started.elapsed();
    let mut weighed_readings = vec![read_mixes(&net)];

    // Until the log holds the records of JUDGED_EPOCHS whole epochs of dropping.
    let last_wanted = Epoch(dropping_since.0 + JUDGED_EPOCHS);
    let log = loop {
        if let Some(v) = operator_log(&net)
            && v.records
                .iter()
                .any(|r| r.measurement().epoch >= last_wanted)
        {
            break v;
        }
        if started.elapsed() > limit {
            fail(
                &net,
                &format!(
                    "the log holds no record of epoch {} after {limit:?}; relay 0 says:\n{}",
                    last_wanted.0,
                    net.admin_get(0, "/status").unwrap_or_default()
                ),
            );
        }
        thread::sleep(Duration::from_secs(1));
        weighed_readings.push(read_mixes(&net));
    };
    stop.store(true, Ordering::Relaxed);
    for f in fetchers {
        f.join().unwrap();
    }
    let relay_ids: Vec<NodeId> = (0..RELAYS).map(|i| network.node_id(i)).collect();

    // 1. Every relay's record of every epoch since the dropping began.
    let mut by_epoch: BTreeMap<Epoch, BTreeSet<NodeId>> = BTreeMap::new();
    for r in &log.records {
        let m = r.measurement();
        by_epoch
            .entry(m.epoch)
            .or_default()
            .insert(m.relay.node_id());
    }
    for (epoch, relays) in by_epoch.range(dropping_since..=last_wanted) {
        assert_eq!(
            relays.len(),
            RELAYS,
            "epoch {}: records of {} relays in the log",
            epoch.0,
            relays.len()
        );
    }

    // 2. The log holds relays' records and nothing else: every key and id in it is a
    // relay's. No file of any copy holds the client's address, as text or as bytes.
    for r in &log.records {
        let m = r.measurement();
        assert!(relay_ids.contains(&m.relay.node_id()));
        for link in &m.links {
            assert!(
                relay_ids.contains(&link.neighbour),
                "epoch {}: a link to {}, no relay",
                m.epoch.0,
                hex(&link.neighbour.0)
            );
        }
    }
    let client_ip: Ipv4Addr = network.address(Node::Client);
    let (text, raw) = (client_ip.to_string(), client_ip.octets());
    let mut checked = 0;
    for i in 0..RELAYS {
        for path in files(&net.dir().join(format!("ledger{i}"))) {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(text.len()).any(|w| w == text.as_bytes())
                    && !bytes.windows(4).any(|w| w == raw),
                "{} holds the client's address",
                path.display()
            );
            checked += 1;
        }
    }

    // 3. The dropping mix's reputation is below every honest mix's.
    let mixes: Vec<usize> = (1..RELAYS - 1).collect();
    let reputation = |i: usize| log.reputation.get(&relay_ids[i]);
    for &i in mixes.iter().filter(|&&i| i != DROPPER) {
        assert!(
            reputation(DROPPER) < reputation(i),
            "the dropping mix's reputation {} is not below mix {i}'s {}",
            reputation(DROPPER),
            reputation(i)
        );
    }

    // 5. pb-ledger verify: the operator's directory, and a mirror over HTTP (the exit's
    // copy, from the client's namespace).
    let network_file = net.dir().join("network.txt");
    let run = |ns: Option<&str>, source: &str| {
        let mut command = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(ledger_binary());
                c
            }
            None => Command::new(ledger_binary()),
        };
        let out = command
            .args(["verify", "--network"])
            .arg(&network_file)
            .args(["--log", source])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "pb-ledger verify --log {source}: {}{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("the published reputation table matches the records"),
            "{text}"
        );
        text
    };
    let operator = run(None, net.dir().join("ledger0").to_str().unwrap());
    let mirror_url = format!(
        "http://{}:{}",
        network.address(Node::Relay(RELAYS - 1)),
        pb_testnet::LEDGER_PORT
    );
    let mirror = run(Some(&client_ns), &mirror_url);
    println!("{operator}");
    println!("mirror: {}", mirror.lines().next().unwrap_or_default());

    // 4. Once routes weigh relays by reputation, the dropping mix carries less: its share
    // of the packets the mixes forwarded falls below what uniform routes gave it.
    let (d_uniform, m_uniform) = against_layer_mate(&uniform_readings);
    let (d_weighed, m_weighed) = against_layer_mate(&weighed_readings);
    let share = |d: u64, m: u64| d as f64 / m.max(1) as f64;
    let (uniform, weighed) = (share(d_uniform, m_uniform), share(d_weighed, m_weighed));
    let fraction = |r: u64| r as f64 / ONE as f64;
    println!(
        "ledger: {} records of epochs {}..={} ({} epochs since the dropping began in epoch {}); every relay's record of each; {checked} files of 8 copies hold no client address; {} fetches of 256 KiB through the mixnet meanwhile",
        log.records.len(),
        by_epoch.keys().next().unwrap().0,
        by_epoch.keys().last().unwrap().0,
        last_wanted.0 - dropping_since.0,
        dropping_since.0,
        fetched.load(Ordering::Relaxed)
    );
    println!(
        "the dropping mix forwarded {uniform:.2} of what the honest mix in its layer did while routes were uniform (the first {:.0} s), {weighed:.2} once pb-client and the relays weighed them by the signed reputation table",
        weighed_at.as_secs_f64()
    );
    for &i in &mixes {
        println!(
            "mix {i}{}: reputation {:.3}",
            if i == DROPPER { " (drops 20%)" } else { "" },
            fraction(reputation(i))
        );
    }
    let client_out = net.process(client).map(|p| p.output()).unwrap_or_default();
    println!(
        "pb-client left its gateway {} times (a checkpoint late at an epoch's start)",
        client_out
            .lines()
            .filter(|l| l.contains("refused:"))
            .count()
    );
    println!(
        "the exit (a mirror) says:\n{}",
        net.admin_get(RELAYS - 1, "/status").unwrap_or_default()
    );
    println!(
        "forwarded in the same layer: while uniform, the dropping mix {d_uniform} and its layer's honest mix {m_uniform}; once weighed, {d_weighed} and {m_weighed}"
    );
    assert!(
        m_uniform > 500 && m_weighed > 500,
        "too few packets to judge: {m_uniform} and {m_weighed}"
    );
    // Routes choose between the two layer-mates for every packet that crosses their layer,
    // but a relay's loops take their first hop by link, whatever the weights: those dilute
    // the difference (seven runs here measured a fall of 4% to 23%).
    assert!(
        weighed < uniform && weighed < 1.0,
        "the dropping mix forwarded {weighed:.2} of what its layer's honest mix did once routes weighed reputation, {uniform:.2} before"
    );
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
