//! A gateway that lies to its client. The netns testnet of `e2e.rs` (a gateway, three mix
//! layers of two, an exit; relays 0 to 2 are the network's stewards, two of whom must sign),
//! and a hostile gateway of the test's own in the web server's namespace. pb-client gets a
//! network file listing the hostile gateway first and the honest one second.
//!
//! Shows, for each lie: (a) an invented network of self-signed relays, with a checkpoint the
//! attacker signed under the stewards' names; (b) the real network with one mix replaced;
//! (c) a stale checkpoint (genuinely signed, two epochs old); (d) a checkpoint with k - 1
//! signatures; (e) the real view, claiming to be the real gateway, whose link key is not the
//! liar's (the client's handshake was made to the liar's key, which the network file gives
//! for the liar's address); (f) the real view, claiming to be a node that is not a gateway:
//! the client refuses the gateway with one line naming the reason, moves to the honest
//! gateway and fetches through it byte-identical; and it sends no packet through the liar,
//! nor does any reach the invented network's relays (sockets of the test's own).
#![cfg(target_arch = "x86_64")]
#![expect(clippy::unwrap_used, clippy::panic, reason = "tests")]

mod common {
    pub mod testnet;
}

use std::{
    collections::HashMap,
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use common::testnet::{curl_via, exit_resolves, relay_binary};
use pb_control::{
    Descriptor, IdentityKeyPair, Role, SignedDescriptor,
    checkpoint::{Checkpoint, descriptor_set_hash, empty_tree_root},
    network::{GatewayEntry, NetworkFile},
    note::{Note, NoteSigner, sign},
};
use pb_link::{ClientLink, GatewayKey, GatewayLink, Rates, Responded, Responder};
use pb_proto::link::{self, FromClient, FromGateway};
use pb_sphinx::{Epoch, EpochKey, NodeId};
use pb_testnet::{FileServer, Network, Node, Testnet};

const RELAYS: usize = 8;
const EXIT: Node = Node::Relay(RELAYS - 1);
const FILE_LEN: usize = 256 << 10;
const HTTP_PORT: u16 = 8080;
const SERVER_NAME: &str = "server.pb.test";
const FAKE_PORT: u16 = 47480;
/// The invented relays' packet ports, on the web server's address.
const TRAP_PORT: u16 = 47600;

/// What the hostile gateway serves.
#[derive(Clone)]
struct Lie {
    note: Vec<u8>,
    descriptors: Vec<Vec<u8>>,
    epoch: Epoch,
    /// The node its directory pages say it is.
    claims: NodeId,
}

/// The honest gateway's view, fetched as a client would: over a link to its key.
fn honest_view(net: &Testnet) -> (Vec<u8>, Vec<Vec<u8>>, Epoch) {
    let network = net.network();
    let gateway = network.client_link();
    let socket = net
        .in_node(Node::Client, || UdpSocket::bind("0.0.0.0:0").unwrap())
        .unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    let origin = Instant::now();
    let mut client = ClientLink::new(
        Duration::ZERO,
        &network.gateway_link_key(),
        Rates { down: 100, up: 20 },
        &[0x77; 32],
    );
    let nonce = [7u8; 8];
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut note, mut pages, mut epoch) = (None, Vec::new(), Epoch(0));
    let mut count = None;
    let mut asked = origin;
    while Instant::now() < deadline {
        if client.is_open() && Instant::now() >= asked {
            client.send(link::checkpoint_request(nonce), true).unwrap();
            for page in 0..count.unwrap_or(1) {
                client.send(link::request(nonce, page), true).unwrap();
            }
            asked = Instant::now() + Duration::from_secs(1);
        }
        while let Some(record) = client.poll_record(origin.elapsed()) {
            socket.send_to(&record, gateway).unwrap();
        }
        let mut buf = [0u8; 2048];
        while let Ok(n) = socket.recv(&mut buf) {
            if let Ok(record) = <&pb_link::Record>::try_from(&buf[..n]) {
                client.handle_record(origin.elapsed(), record);
            }
        }
        while let Some(m) = client.poll_message() {
            match link::parse(&m) {
                Some(FromGateway::Checkpoint { note: n, .. }) if !n.is_empty() => {
                    note = Some(n.to_vec());
                }
                Some(FromGateway::Page {
                    page,
                    pages: total,
                    epoch: e,
                    descriptors,
                    ..
                }) => {
                    count = Some(total);
                    epoch = e;
                    pages.resize(usize::from(total), None);
                    pages[usize::from(page)] = Some(
                        descriptors
                            .iter()
                            .map(|(_, d)| d.to_vec())
                            .collect::<Vec<_>>(),
                    );
                }
                _ => {}
            }
        }
        if let Some(note) = &note
            && !pages.is_empty()
            && pages.iter().all(Option::is_some)
        {
            let descriptors = pages.into_iter().flatten().flatten().collect();
            return (note.clone(), descriptors, epoch);
        }
    }
    panic!("the honest gateway served no cosigned checkpoint within 60 s");
}

/// A relay of the attacker's, its packets going to the test's trap.
fn invented(seed: u8, role: Role, epoch: Epoch, trap: std::net::IpAddr) -> SignedDescriptor {
    let pair = IdentityKeyPair::from_seed(&[seed; 32]);
    let at = SocketAddr::new(trap, TRAP_PORT + u16::from(seed & 0x0f));
    pair.sign(&Descriptor {
        identity: pair.public(),
        version: 1,
        role,
        epoch,
        sphinx_current: EpochKey::from_secret(epoch, [seed; 32]).public_key(),
        sphinx_next: EpochKey::from_secret(Epoch(epoch.0 + 1), [seed; 32]).public_key(),
        packet_addr: at,
        gossip_addr: at,
        link_key: pair.link_public(),
        transports: vec![],
    })
    .unwrap()
}

/// The liar's link key.
const LIAR_KEY: [u8; 32] = [0x4c; 32];

/// The hostile gateway: a real client link to the liar's own key, answering pages,
/// checkpoint requests and registrations from `lie`; counts the packets clients send it.
fn serve(socket: UdpSocket, lie: Arc<Mutex<Lie>>, packets: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    socket
        .set_read_timeout(Some(Duration::from_millis(1)))
        .unwrap();
    let origin = Instant::now();
    let mut responder = Responder::new(GatewayKey::from_secret(LIAR_KEY), &[0x4d; 32]);
    let mut links: HashMap<SocketAddr, GatewayLink> = HashMap::new();
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let now = origin.elapsed();
        for (addr, l) in &mut links {
            l.poll_records(now, |r| {
                let _ = socket.send_to(&r, addr);
            });
        }
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let Ok(record) = <&pb_link::Record>::try_from(&buf[..n]) else {
            continue;
        };
        if let Some(l) = links.get_mut(&from)
            && l.handle_record(now, record)
        {
            let lie = lie.lock().unwrap().clone();
            while let Some(m) = l.poll_message() {
                let answer = match link::parse_request(&m) {
                    Some(FromClient::DirRequest { nonce, page }) => {
                        let all: Vec<(bool, Vec<u8>)> =
                            lie.descriptors.iter().map(|d| (true, d.clone())).collect();
                        let pages = all.len().div_ceil(link::PER_PAGE);
                        let first = (usize::from(page) * link::PER_PAGE).min(all.len());
                        let last = (first + link::PER_PAGE).min(all.len());
                        link::page(
                            nonce,
                            page,
                            pages as u8,
                            lie.epoch,
                            lie.claims,
                            &all[first..last],
                        )
                    }
                    Some(FromClient::CheckpointRequest { nonce }) => {
                        link::checkpoint(nonce, Some(&lie.note))
                    }
                    // This network keeps no ledger: no table to serve.
                    Some(FromClient::ReputationRequest { nonce, page }) => {
                        link::reputation_page(nonce, page, None)
                    }
                    Some(FromClient::Register { token }) => {
                        link::registered(link::mailbox_of(token))
                    }
                    Some(FromClient::Packet(_)) => {
                        packets.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    None => continue,
                };
                l.send(answer, true);
            }
            continue;
        }
        match responder.respond(now, from, record) {
            Responded::Reply(r) => {
                let _ = socket.send_to(&r, from);
            }
            Responded::Open(r, l) => {
                let _ = socket.send_to(&r, from);
                links.insert(from, *l);
            }
            Responded::Stranger => {}
        }
    }
}

#[test]
fn a_lying_gateway_is_refused_and_the_next_one_used() {
    if !pb_testbed::require_privileged("a_lying_gateway_is_refused_and_the_next_one_used") {
        return;
    }
    let network = Network::builder()
        .relays(RELAYS)
        .netns("trust")
        .network_seed([0x61; 32])
        .identity_seeds(0x90)
        .link_rate(100)
        .loop_rate(1)
        .stats_interval(0.0)
        .relay_binary(relay_binary())
        .build()
        .unwrap();
    let mut net = Testnet::create(network.clone()).unwrap();
    let web: std::net::IpAddr = network.address(Node::Web).into();
    let ns_name = |node| net.netns(node).unwrap().name().to_owned();
    let client_ns = ns_name(Node::Client);
    let _etc = exit_resolves(&ns_name(EXIT), SERVER_NAME, web);
    net.start_relays().unwrap();
    let body = Arc::new(pb_testnet::pattern(FILE_LEN));
    let _server =
        FileServer::start(net.listen(Node::Web, HTTP_PORT).unwrap(), body.clone()).unwrap();
    if let Err(e) = net.wait_for_agreement(Duration::from_secs(60)) {
        panic!("{e}");
    }
    let (real_note, real_descriptors, epoch) = honest_view(&net);
    let file = network.network_file().unwrap();
    let stewards = file.stewards.clone();
    let real: Checkpoint = stewards.open(&real_note).unwrap().0;

    // The traps: where the invented relays' packets would go.
    let traps: Vec<UdpSocket> = (0..16u16)
        .map(|i| {
            net.in_node(Node::Web, || {
                UdpSocket::bind(SocketAddr::new(web, TRAP_PORT + i)).unwrap()
            })
            .unwrap()
        })
        .collect();
    let trapped = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let watchers: Vec<_> = traps
        .into_iter()
        .map(|t| {
            let (trapped, stop) = (trapped.clone(), stop.clone());
            thread::spawn(move || {
                t.set_read_timeout(Some(Duration::from_millis(100)))
                    .unwrap();
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if t.recv(&mut buf).is_ok() {
                        trapped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    // The lies.
    let steward_pairs: Vec<IdentityKeyPair> = (0..stewards.keys().len())
        .map(|i| IdentityKeyPair::from_seed(&network.identity_seed(i)))
        .collect();
    let steward_signers: Vec<NoteSigner<'_>> = stewards
        .keys()
        .iter()
        .zip(&steward_pairs)
        .map(|(k, p)| NoteSigner::new(k.name(), p).unwrap())
        .collect();
    let attacker_pairs: Vec<IdentityKeyPair> = (0..stewards.keys().len())
        .map(|i| IdentityKeyPair::from_seed(&[0xe0 + i as u8; 32]))
        .collect();
    let attacker_signers: Vec<NoteSigner<'_>> = stewards
        .keys()
        .iter()
        .zip(&attacker_pairs)
        .map(|(k, p)| NoteSigner::new(k.name(), p).unwrap())
        .collect();
    let signed = |text: &str, by: &[&NoteSigner<'_>]| sign(text, by).unwrap().into_bytes();
    let invented_set: Vec<SignedDescriptor> = (0..8u8)
        .map(|i| {
            let role = match i {
                0 => Role::Gateway,
                7 => Role::Exit,
                _ => Role::Mix,
            };
            invented(0xd0 + i, role, epoch, web)
        })
        .collect();
    let invented_bytes: Vec<Vec<u8>> = invented_set.iter().map(|d| d.bytes().to_vec()).collect();
    let invented_checkpoint = Checkpoint {
        network: stewards.network().to_owned(),
        tree_size: 0,
        tree_root: empty_tree_root(),
        reputation: [0; 32],
        epoch,
        descriptors: descriptor_set_hash(invented_bytes.iter().map(Vec::as_slice)),
        topology: pb_control::Topology::compute(
            &network.network_seed(),
            epoch,
            invented_set.iter().map(SignedDescriptor::descriptor),
        )
        .unwrap()
        .hash(),
    };
    let gateway_id = network.node_id(0);
    let mut swapped = real_descriptors.clone();
    let mix = swapped
        .iter()
        .position(|d| SignedDescriptor::parse(d).unwrap().descriptor().role == Role::Mix)
        .unwrap();
    swapped[mix] = invented(0xdf, Role::Mix, epoch, web).bytes().to_vec();
    let stale = Checkpoint {
        epoch: Epoch(real.epoch.0 - 2),
        ..real.clone()
    };
    let real_text = Note::parse(&real_note).unwrap().text.to_owned();
    let lies: Vec<(&str, Lie, &str)> = vec![
        (
            "(a) an invented network",
            Lie {
                note: signed(
                    &invented_checkpoint.text(),
                    &attacker_signers.iter().collect::<Vec<_>>(),
                ),
                descriptors: invented_bytes.clone(),
                epoch,
                claims: invented_set[0].descriptor().node_id(),
            },
            "0 of the 2 steward signatures needed",
        ),
        (
            "(b) one mix replaced",
            Lie {
                note: real_note.clone(),
                descriptors: swapped,
                epoch,
                claims: gateway_id,
            },
            "are not the set the stewards admitted",
        ),
        (
            "(c) a stale checkpoint",
            Lie {
                note: signed(&stale.text(), &steward_signers.iter().collect::<Vec<_>>()),
                descriptors: real_descriptors.clone(),
                epoch,
                claims: gateway_id,
            },
            "the clock allows",
        ),
        (
            "(d) k - 1 signatures",
            Lie {
                note: signed(&real_text, &[&steward_signers[0]]),
                descriptors: real_descriptors.clone(),
                epoch,
                claims: gateway_id,
            },
            "1 of the 2 steward signatures needed",
        ),
        (
            "(e) claiming to be the real gateway, with another link key",
            Lie {
                note: real_note.clone(),
                descriptors: real_descriptors.clone(),
                epoch,
                claims: gateway_id,
            },
            "whose link key is not the one it answered our handshake with",
        ),
        (
            "(f) claiming to be a node that is not a gateway",
            Lie {
                note: real_note.clone(),
                descriptors: real_descriptors.clone(),
                epoch,
                claims: network.node_id(RELAYS - 1),
            },
            "which is not a gateway of the network",
        ),
    ];
    let fake_addr = SocketAddr::new(web, FAKE_PORT);
    let fake_socket = net
        .in_node(Node::Web, || UdpSocket::bind(fake_addr).unwrap())
        .unwrap();
    let current = Arc::new(Mutex::new(lies[0].1.clone()));
    let through_liar = Arc::new(AtomicU64::new(0));
    let fake = {
        let (current, stop, packets) = (current.clone(), stop.clone(), through_liar.clone());
        thread::spawn(move || serve(fake_socket, current, packets, stop))
    };
    // The client's network file: the liar first (with its own link key: a client that had
    // it from elsewhere), the honest gateway second.
    let mut gateways = file.gateways.clone();
    gateways.insert(
        0,
        GatewayEntry {
            addr: fake_addr,
            link_key: GatewayKey::from_secret(LIAR_KEY).public(),
            offers: vec![],
        },
    );
    let client_file = NetworkFile { gateways, ..file };
    let path = net.dir().join("client-network.txt");
    std::fs::write(&path, client_file.render()).unwrap();
    let url = format!("http://{SERVER_NAME}:{HTTP_PORT}/file");
    for (k, (name, lie, reason)) in lies.iter().enumerate() {
        *current.lock().unwrap() = lie.clone();
        let mut command = net.command(Node::Client, env!("CARGO_BIN_EXE_pb-client"));
        command.arg("--network").arg(&path);
        let client =
            match net.start_client(&format!("pb-client-{k}"), command, Duration::from_secs(60)) {
                Ok(c) => c,
                Err(e) => panic!(
                    "{name}: pb-client did not get ready: {e:#}\n{}",
                    net.report(30)
                ),
            };
        let refused = net
            .process(client)
            .unwrap()
            .lines_with("pb-client: ")
            .into_iter()
            .filter(|l| l.contains(&format!("gateway {fake_addr} over udp refused")))
            .collect::<Vec<_>>();
        assert!(
            refused.iter().any(|l| l.contains(reason)),
            "{name}: no line refusing the gateway for {reason:?}: {refused:?}\n{}",
            net.process(client).unwrap().tail(20)
        );
        let out = net.dir().join(format!("fetched-{k}"));
        match curl_via(&client_ns, "127.0.0.1:1080", "120", &url, &out) {
            Ok(got) if got == *body => {}
            Ok(got) => panic!("{name}: fetched {} bytes, not the file", got.len()),
            Err(e) => panic!("{name}: curl failed: {e}\n{}", net.report(30)),
        }
        println!(
            "{name}: refused ({}), fetched through the honest gateway",
            refused[0]
        );
        net.process_mut(client).unwrap().terminate().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    fake.join().unwrap();
    for w in watchers {
        w.join().unwrap();
    }
    assert_eq!(
        trapped.load(Ordering::Relaxed),
        0,
        "packets reached the invented network"
    );
    assert_eq!(
        through_liar.load(Ordering::Relaxed),
        0,
        "the client sent packets through a gateway it had not proven"
    );
}
