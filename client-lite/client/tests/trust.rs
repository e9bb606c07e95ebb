//! A gateway that lies to its client. The netns testnet of `e2e.rs` (a gateway, three mix
//! layers of two, an exit; relays 0 to 2 are the network's stewards, two of whom must sign),
//! and a hostile gateway of the test's own in the web server's namespace. pb-client gets a
//! network file listing the hostile gateway first and the honest one second.
//!
//! Shows, for each lie: (a) an invented network of self-signed relays, with a checkpoint the
//! attacker signed under the stewards' names; (b) the real network with one mix replaced;
//! (c) a stale checkpoint (genuinely signed, two epochs old); (d) a checkpoint with k - 1
//! signatures; (e) the real view, claiming to be the real gateway, but a welcome that gateway
//! did not sign (the liar cannot open the hello, which is sealed to that gateway's key);
//! (f) the real view, claiming to be a node that is not a gateway: the client refuses the
//! gateway with one line naming the reason, moves to the honest gateway and fetches through
//! it byte-identical; and no packet ever reaches the invented network's relays (sockets of
//! the test's own).
#![cfg(target_arch = "x86_64")]
#![expect(clippy::unwrap_used, clippy::panic, reason = "tests")]

mod common {
    pub mod testnet;
}

use std::{
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
    network::NetworkFile,
    note::{Note, NoteSigner, sign},
};
use pb_proto::link::{self, FromClient, FromGateway};
use pb_sphinx::{Epoch, EpochKey, NodeId, PACKET_LEN};
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

/// The honest gateway's view, fetched as a client would.
fn honest_view(net: &Testnet) -> (Vec<u8>, Vec<Vec<u8>>, Epoch) {
    let gateway = net.network().client_link();
    let socket = net
        .in_node(Node::Client, || UdpSocket::bind("0.0.0.0:0").unwrap())
        .unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let nonce = [7u8; 8];
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut note, mut pages, mut epoch) = (None, Vec::new(), Epoch(0));
    let mut count = None;
    while Instant::now() < deadline {
        socket
            .send_to(&link::checkpoint_request(nonce), gateway)
            .unwrap();
        for page in 0..count.unwrap_or(1) {
            socket
                .send_to(&link::request(nonce, page), gateway)
                .unwrap();
        }
        let mut buf = [0u8; 2048];
        while let Ok(n) = socket.recv(&mut buf) {
            match link::parse(&buf[..n]) {
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
        transports: vec![],
    })
    .unwrap()
}

/// The hostile gateway: answers pages, checkpoint requests and hellos from `lie`.
fn serve(socket: UdpSocket, lie: Arc<Mutex<Lie>>, stop: Arc<AtomicBool>) {
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let lie = lie.lock().unwrap().clone();
        let answer: [u8; PACKET_LEN] = match link::parse_request(&buf[..n]) {
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
            Some(FromClient::Hello { ephemeral, .. }) => {
                // The hello is sealed to the claimed gateway's key: all the liar can do is
                // echo the ephemeral key, with a seal and a signature of its own.
                let mut forged = [0u8; PACKET_LEN];
                forged[0] = link::WELCOME;
                forged[1..33].copy_from_slice(&ephemeral);
                let signed_at = 45 + link::SEALED_WELCOME_LEN;
                forged[33..signed_at].fill(0x5a);
                let signature = IdentityKeyPair::from_seed(&[0xee; 32])
                    .sign_message(link::WELCOME_CONTEXT, &forged[1..signed_at]);
                forged[signed_at..signed_at + link::SIGNATURE_LEN].copy_from_slice(&signature);
                forged
            }
            None => continue,
        };
        let _ = socket.send_to(&answer, from);
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
            "(e) a welcome the gateway it names did not sign",
            Lie {
                note: real_note.clone(),
                descriptors: real_descriptors.clone(),
                epoch,
                claims: gateway_id,
            },
            "its welcome is not from gateway",
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
    let fake = {
        let (current, stop) = (current.clone(), stop.clone());
        thread::spawn(move || serve(fake_socket, current, stop))
    };
    // The client's network file: the liar first, the honest gateway second.
    let client_file = NetworkFile {
        gateways: vec![fake_addr, network.client_link()],
        ..file
    };
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
            .filter(|l| l.contains(&format!("gateway {fake_addr} refused")))
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
}
