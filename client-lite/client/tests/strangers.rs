//! What a party without the gateway's link key, or without a client's token, gets from the
//! client link: a gossip network of pb-testnet's (eight relays on loopback, plain UDP), and
//! link clients of the test's own (`pb_link` over UDP sockets) at its gateway.
//!
//! Shows: random bytes of the record's size and of others, and a version-1 cleartext hello,
//! get no answer at all; an honest client's handshake records replayed from another address
//! get one cookie record each (the cookie is for that address) and open nothing, and the
//! honest client's link goes on; a client that knows the victim's mailbox id (as a relay
//! on its SURBs' path would) but not its token can address packets to that mailbox, and
//! they reach the victim, never itself: registering its own token moves nothing, and the
//! victim keeps receiving.
#![cfg(target_arch = "x86_64")]
#![expect(clippy::unwrap_used, clippy::panic, reason = "tests")]

use std::{
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use pb_control::SignedDescriptor;
use pb_link::{ClientLink, Message, RECORD_LEN, Rates, Record};
use pb_proto::link::{self, FromGateway};
use pb_sphinx::{DelayMs, Hop, PACKET_LEN};
use pb_testnet::{Network, Testnet};

mod common {
    pub mod testnet;
}

use common::testnet::relay_binary;

/// A link client of the test's: a UDP socket and a `pb_link` client link.
struct Client {
    socket: UdpSocket,
    gateway: SocketAddr,
    link: ClientLink,
    origin: Instant,
    /// Every record it sent, in order.
    sent: Vec<Record>,
    got: Vec<Message>,
}

impl Client {
    fn new(gateway: SocketAddr, key: &[u8; 32], seed: u8) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(2)))
            .unwrap();
        Self {
            socket,
            gateway,
            link: ClientLink::new(Duration::ZERO, key, Rates { down: 50, up: 50 }, &[seed; 32]),
            origin: Instant::now(),
            sent: Vec::new(),
            got: Vec::new(),
        }
    }

    /// Runs the link for `time`, or until `done` holds.
    fn run(&mut self, time: Duration, mut done: impl FnMut(&Self) -> bool) -> bool {
        let until = Instant::now() + time;
        while Instant::now() < until {
            while let Some(r) = self.link.poll_record(self.origin.elapsed()) {
                self.socket.send_to(&r, self.gateway).unwrap();
                self.sent.push(r);
            }
            let mut buf = [0u8; 2048];
            while let Ok(n) = self.socket.recv(&mut buf) {
                if let Ok(r) = <&Record>::try_from(&buf[..n]) {
                    self.link.handle_record(self.origin.elapsed(), r);
                }
            }
            while let Some(m) = self.link.poll_message() {
                self.got.push(m);
            }
            if done(self) {
                return true;
            }
        }
        false
    }

    /// The messages of `kind` received so far.
    fn of_kind(&self, kind: u8) -> Vec<&Message> {
        self.got.iter().filter(|m| m.kind == kind).collect()
    }
}

/// Runs `a` until `done` holds or `time` passes, `b` alongside (its link stays alive: the
/// gateway closes a link it has not heard from for 10 s).
fn run_beside(
    a: &mut Client,
    b: &mut Client,
    time: Duration,
    mut done: impl FnMut(&Client) -> bool,
) -> bool {
    let until = Instant::now() + time;
    while Instant::now() < until {
        if a.run(Duration::from_millis(5), &mut done) {
            return true;
        }
        b.run(Duration::from_millis(5), |_| false);
    }
    false
}

/// Sends `datagrams` from a fresh socket; every datagram that comes back within `wait`.
fn answers(gateway: SocketAddr, datagrams: &[Vec<u8>], wait: Duration) -> Vec<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    for d in datagrams {
        socket.send_to(d, gateway).unwrap();
    }
    let until = Instant::now() + wait;
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while Instant::now() < until {
        if let Ok(n) = socket.recv(&mut buf) {
            got.push(buf[..n].to_vec());
        }
    }
    got
}

fn random(len: usize, seed: u8) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(&[seed])
        .finalize_xof()
        .fill(&mut out);
    out
}

#[test]
fn strangers_get_nothing_replays_open_nothing_and_a_mailbox_id_moves_nothing() {
    let network = Network::builder()
        .loopback("127.76.0.1".parse().unwrap())
        .network_seed([0x4c; 32])
        .identity_seeds(0xc0)
        .stats_interval(0.0)
        .relay_binary(relay_binary())
        .build()
        .unwrap();
    let mut net = Testnet::create(network.clone()).unwrap();
    net.start_relays().unwrap();
    if let Err(e) = net.wait_for_agreement(Duration::from_secs(60)) {
        panic!("{e}");
    }
    let gateway = network.client_link();
    let key = network.gateway_link_key();

    // The victim: a link, a registered mailbox.
    let mut victim = Client::new(gateway, &key, 1);
    let token = [0x5a; 32];
    assert!(
        victim.run(Duration::from_secs(20), |c| c.link.is_open()),
        "the victim's link did not open:\n{}",
        net.report(20)
    );
    victim.link.send(link::register(&token), true).unwrap();
    let mailbox = link::mailbox_of(&token);
    assert!(victim.run(Duration::from_secs(5), |c| {
        c.of_kind(link::REGISTERED)
            .iter()
            .any(|m| m.body == mailbox.0)
    }));

    // Strangers: random records, other sizes, a version-1 hello: no answer at all.
    let mut junk: Vec<Vec<u8>> = (0..20).map(|i| random(RECORD_LEN, i)).collect();
    junk.push(random(100, 100));
    junk.push(random(1500, 101));
    let mut hello = random(RECORD_LEN, 102);
    hello[0] = 0x02;
    junk.push(hello);
    let got = answers(gateway, &junk, Duration::from_secs(2));
    assert!(
        got.is_empty(),
        "a stranger got {} datagrams back",
        got.len()
    );

    // The victim's handshake records and some of its transport records, replayed from
    // elsewhere: a cookie for each init (one record for one), nothing else.
    let inits = victim.sent.iter().take(2).map(|r| r.to_vec());
    let later = victim.sent.iter().skip(2).take(20).map(|r| r.to_vec());
    let replayed: Vec<Vec<u8>> = inits.chain(later).collect();
    let got = answers(gateway, &replayed, Duration::from_secs(2));
    assert!(
        got.len() <= 2 && got.iter().all(|d| d.len() == RECORD_LEN),
        "a replay got {} datagrams back",
        got.len()
    );

    // The attacker: a link of its own, the victim's mailbox id, not its token.
    let mut attacker = Client::new(gateway, &key, 2);
    assert!(run_beside(
        &mut attacker,
        &mut victim,
        Duration::from_secs(20),
        |c| c.link.is_open()
    ));
    // The gateway's directory, once its own descriptor is in it.
    let mut page = None;
    for n in 0..30u8 {
        attacker.got.clear();
        attacker.link.send(link::request([n; 8], 0), true).unwrap();
        run_beside(&mut attacker, &mut victim, Duration::from_secs(1), |c| {
            !c.of_kind(link::DIR_PAGE).is_empty()
        });
        let got = attacker
            .of_kind(link::DIR_PAGE)
            .first()
            .map(|m| (*m).clone());
        if let Some(m) = got
            && matches!(link::parse(&m), Some(FromGateway::Page { ref descriptors, .. }) if !descriptors.is_empty())
        {
            page = Some(m);
            break;
        }
    }
    let page = page.unwrap_or_else(|| panic!("the gateway served no descriptor within 30 s"));
    let Some(FromGateway::Page {
        epoch, descriptors, ..
    }) = link::parse(&page)
    else {
        panic!("no directory page");
    };
    let gw = descriptors
        .iter()
        .map(|(_, d)| SignedDescriptor::parse(d).unwrap())
        .find(|d| d.descriptor().role == pb_control::Role::Gateway)
        .unwrap_or_else(|| panic!("no gateway in the directory"));
    let gw = gw.descriptor();
    let route = [Hop {
        node: gw.node_id(),
        public_key: gw.sphinx_key(epoch).unwrap(),
        delay: DelayMs(0),
    }];
    // It registers a token of its own (the only way to register anything): that names
    // its own mailbox, not the victim's.
    attacker
        .link
        .send(link::register(&[0x66; 32]), true)
        .unwrap();
    for n in 0..10u8 {
        let mut packet = [0u8; PACKET_LEN];
        pb_sphinx::create_packet(&mut packet, epoch, &route, mailbox, &[0xee, n], &[n; 32])
            .unwrap();
        attacker.link.send(link::packet(&packet), false).unwrap();
    }
    let delivered = |c: &Client| {
        c.of_kind(link::LOOP)
            .iter()
            .filter(|m| m.body.starts_with(&[0xee]))
            .count()
    };
    // Both links run (the attacker's records carry its packets up).
    let until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < until && delivered(&victim) < 10 {
        attacker.run(Duration::from_millis(5), |_| false);
        victim.run(Duration::from_millis(5), |_| false);
    }
    assert!(
        delivered(&victim) == 10,
        "the victim got {} of the 10 packets for its mailbox:\n{}",
        delivered(&victim),
        net.report(20)
    );
    run_beside(&mut attacker, &mut victim, Duration::from_secs(1), |_| {
        false
    });
    assert_eq!(
        delivered(&attacker),
        0,
        "the attacker got the victim's mail"
    );
    assert!(
        attacker
            .of_kind(link::REGISTERED)
            .iter()
            .all(|m| m.body != mailbox.0),
        "the attacker was told it holds the victim's mailbox"
    );
    println!(
        "strangers: none answered; replays: {} cookie records for 22 records; the victim got all 10 packets for its mailbox, the attacker none",
        got.len()
    );
}
