//! The quinn-proto client and the quiche gateway over loopback: records both ways, peers
//! told apart, the pin, closing, loss.
#![cfg(feature = "server")]
#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use std::time::Instant;

use common::*;
use pb_quic::QuicCarrierConfig;
use pb_transport::{ClientCarrier, Listener, Peer, tls::TlsIdentity};

fn counter(list: &[(&'static str, u64)], name: &str) -> u64 {
    list.iter().find(|(n, _)| *n == name).map_or(0, |(_, v)| *v)
}

/// Sends `n` records each way between `client` and the gateway (through whatever path the
/// client was pointed at), checking both sides get all of them, byte for byte, in order.
fn exchange(
    client: &mut pb_quic::QuicCarrier,
    gateway: &mut pb_quic::QuicListener,
    n: u32,
    mut between: impl FnMut(),
) -> Peer {
    let (mut up_sent, mut down_sent) = (0u32, 0u32);
    let (mut up_got, mut down_got) = (0u32, 0u32);
    let mut peer = None;
    let done = run(&mut [client], gateway, 200_000, |c, g, errors| {
        assert_eq!(errors[0], None);
        between();
        let c = &mut c[0];
        while c.is_open() && up_sent < n && c.send(&record(1, up_sent)) {
            up_sent += 1;
        }
        while let Some((p, r)) = g.recv() {
            assert_eq!(*peer.get_or_insert(p), p, "one client, one peer");
            assert!(r == record(1, up_got), "record {up_got} up arrived intact");
            up_got += 1;
        }
        if let Some(p) = peer {
            while down_sent < n && g.send(p, &record(2, down_sent)) {
                down_sent += 1;
            }
        }
        while let Some(r) = c.recv() {
            assert!(
                r == record(2, down_got),
                "record {down_got} down arrived intact"
            );
            down_got += 1;
        }
        up_got == n && down_got == n
    });
    assert!(done, "up {up_got}/{n}, down {down_got}/{n}");
    peer.unwrap()
}

#[test]
fn thousands_of_records_cross_both_ways_intact_and_in_order() {
    let (id, mut gateway) = gateway();
    let mut client = client_to(gateway.local_addr(), &id);
    let peer = exchange(&mut client, &mut gateway, 3000, || {});
    let source = gateway.source(peer).unwrap();
    assert_eq!(source.ip(), std::net::Ipv4Addr::LOCALHOST);
    assert_eq!(source.port(), client.local_addr().unwrap().port());
    let g = gateway.counters();
    assert_eq!(counter(&g, "records_received"), 3000);
    assert_eq!(counter(&g, "records_sent"), 3000);
    assert_eq!(counter(&g, "links_opened"), 1);
    let c = client.counters();
    // The disguise's overhead is visible: more UDP payload than record bytes.
    assert!(counter(&c, "bytes_sent") > 3000 * 1452);
    assert!(counter(&g, "bytes_received") > 3000 * 1452);
    assert!(counter(&g, "bytes_sent") > 3000 * 1452);
    assert!(counter(&c, "bytes_received") > 3000 * 1452);
}

#[test]
fn two_clients_are_two_peers() {
    let (id, mut gateway) = gateway();
    let mut a = client_to(gateway.local_addr(), &id);
    let mut b = client_to(gateway.local_addr(), &id);
    let mut got: Vec<(Peer, u8)> = Vec::new();
    let (mut sent_a, mut sent_b) = (false, false);
    assert!(run(
        &mut [&mut a, &mut b],
        &mut gateway,
        20_000,
        |c, g, e| {
            assert_eq!(e, [None, None]);
            if !sent_a && c[0].is_open() {
                sent_a = c[0].send(&record(0xa, 0));
            }
            if !sent_b && c[1].is_open() {
                sent_b = c[1].send(&record(0xb, 0));
            }
            got.extend(std::iter::from_fn(|| g.recv()).map(|(p, r)| (p, r[0])));
            got.len() == 2
        }
    ));
    let peer_a = got.iter().find(|(_, t)| *t == 0xa).unwrap().0;
    let peer_b = got.iter().find(|(_, t)| *t == 0xb).unwrap().0;
    assert_ne!(peer_a, peer_b);
    assert_ne!(gateway.source(peer_a), gateway.source(peer_b));
    assert_eq!(
        gateway.source(peer_a).unwrap().port(),
        a.local_addr().unwrap().port()
    );
    assert!(gateway.send(peer_b, &record(0xb, 1)));
    assert!(gateway.send(peer_a, &record(0xa, 1)));
    let (mut at_a, mut at_b) = (None, None);
    assert!(run(
        &mut [&mut a, &mut b],
        &mut gateway,
        20_000,
        |c, _, _| {
            at_a = at_a.or(c[0].recv());
            at_b = at_b.or(c[1].recv());
            at_a.is_some() && at_b.is_some()
        }
    ));
    assert!(at_a.unwrap() == record(0xa, 1) && at_b.unwrap() == record(0xb, 1));
}

#[test]
fn a_wrong_pin_fails_the_handshake() {
    let (_, mut gateway) = gateway();
    let other = TlsIdentity::generate(NAME).unwrap();
    let mut client = client_to(gateway.local_addr(), &other);
    let mut error = None;
    assert!(run(&mut [&mut client], &mut gateway, 20_000, |_, _, e| {
        error = e[0].clone();
        error.is_some()
    }));
    let error = error.unwrap();
    assert!(error.starts_with("handshake:"), "{error}");
    assert!(!client.is_open());
    assert!(
        !client.send(&record(1, 0)),
        "no records before the handshake"
    );
    assert_eq!(counter(&gateway.counters(), "links_opened"), 0);
}

#[test]
fn nothing_listening_fails_as_a_handshake_error() {
    // A port with nothing behind it: ICMP or silence, then quinn's handshake timeout.
    let unused = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = unused.local_addr().unwrap();
    drop(unused);
    let id = TlsIdentity::generate(NAME).unwrap();
    let mut config = QuicCarrierConfig::new(addr, NAME, id.pin(), path());
    config.idle_timeout = std::time::Duration::from_millis(300);
    let mut client = pb_quic::QuicCarrier::connect(&config, Instant::now()).unwrap();
    let mut error = None;
    for _ in 0..20_000 {
        if let Err(e) = client.drive(Instant::now()) {
            error = Some(describe(&e));
            break;
        }
        std::thread::sleep(std::time::Duration::from_micros(300));
    }
    assert!(error.unwrap().starts_with("handshake:"));
}

#[test]
fn a_link_closed_before_any_answer_ends_with_the_404_page() {
    let (id, mut gateway) = gateway();
    let mut client = client_to(gateway.local_addr(), &id);
    let mut peer = None;
    assert!(run(&mut [&mut client], &mut gateway, 20_000, |c, g, _| {
        if c[0].is_open() && peer.is_none() {
            c[0].send(&record(1, 0));
        }
        peer = peer.or(g.recv().map(|(p, _)| p));
        peer.is_some()
    }));
    let peer = peer.unwrap();
    gateway.close(peer);
    assert!(gateway.source(peer).is_none());
    assert!(
        !gateway.send(peer, &record(2, 0)),
        "a closed peer takes nothing"
    );
    let mut error = None;
    assert!(run(&mut [&mut client], &mut gateway, 20_000, |_, _, e| {
        error = e[0].clone();
        error.is_some()
    }));
    assert_eq!(error.unwrap(), "closed: the gateway answered 404");
    // The lead closed it: not reported back as a peer that went away on its own.
    assert_eq!(gateway.poll_closed(), None);
}

#[test]
fn a_link_closed_after_records_ends_its_response() {
    let (id, mut gateway) = gateway();
    let mut client = client_to(gateway.local_addr(), &id);
    let mut peer = None;
    assert!(run(&mut [&mut client], &mut gateway, 20_000, |c, g, _| {
        if c[0].is_open() && peer.is_none() {
            c[0].send(&record(1, 0));
        }
        peer = peer.or(g.recv().map(|(p, _)| p));
        peer.is_some()
    }));
    let peer = peer.unwrap();
    assert!(gateway.send(peer, &record(2, 0)));
    gateway.close(peer);
    let (mut got, mut error) = (Vec::new(), None);
    assert!(run(&mut [&mut client], &mut gateway, 20_000, |c, _, e| {
        got.extend(std::iter::from_fn(|| c[0].recv()));
        error = e[0].clone();
        error.is_some()
    }));
    assert!(got == [record(2, 0)], "the record before the end arrived");
    assert_eq!(error.unwrap(), "closed: the gateway ended the link");
}

#[test]
fn a_client_that_goes_away_is_reported_closed() {
    let (id, mut gateway) = gateway();
    let mut client = client_to(gateway.local_addr(), &id);
    let mut peer = None;
    assert!(run(&mut [&mut client], &mut gateway, 20_000, |c, g, _| {
        if c[0].is_open() && peer.is_none() {
            c[0].send(&record(1, 0));
        }
        peer = peer.or(g.recv().map(|(p, _)| p));
        peer.is_some()
    }));
    client.close(Instant::now());
    let mut closed = None;
    assert!(run(&mut [], &mut gateway, 20_000, |_, g, _| {
        closed = g.poll_closed();
        closed.is_some()
    }));
    assert_eq!(closed, peer);
    assert!(gateway.source(peer.unwrap()).is_none());
    assert_eq!(counter(&gateway.counters(), "connections"), 0);
}

#[test]
fn every_record_arrives_through_five_percent_loss_each_way() {
    let (id, mut gateway) = gateway();
    let mut relay = LossyRelay::new(gateway.local_addr(), 5, 0x5eed_1234);
    let mut client = client_to(relay.addr(), &id);
    exchange(&mut client, &mut gateway, 600, || relay.pump());
    assert!(relay.dropped > 0, "the relay dropped datagrams");
    let lost = counter(&client.counters(), "packets_lost");
    assert!(lost > 0, "quinn saw losses and retransmitted");
}

#[test]
fn twenty_clients_at_once_each_get_their_own_records() {
    let (id, mut gateway) = gateway();
    let mut clients: Vec<pb_quic::QuicCarrier> = (0..20)
        .map(|_| client_to(gateway.local_addr(), &id))
        .collect();
    let mut refs: Vec<&mut pb_quic::QuicCarrier> = clients.iter_mut().collect();
    let (mut sent, mut echoed, mut back) = (vec![0u32; 20], 0, vec![0u32; 20]);
    assert!(run(&mut refs, &mut gateway, 50_000, |c, g, e| {
        assert!(e.iter().all(Option::is_none));
        for (i, client) in c.iter_mut().enumerate() {
            while client.is_open() && sent[i] < 50 && client.send(&record(i as u8, sent[i])) {
                sent[i] += 1;
            }
            while let Some(r) = client.recv() {
                assert!(
                    r == record(100 + i as u8, back[i]),
                    "client {i} got its own"
                );
                back[i] += 1;
            }
        }
        // The gateway answers each record with one tagged for its sender.
        while let Some((peer, r)) = g.recv() {
            let i = u32::from_be_bytes([r[1], r[2], r[3], r[4]]);
            assert!(g.send(peer, &record(100 + r[0], i)));
            echoed += 1;
        }
        back.iter().all(|n| *n == 50)
    }));
    assert_eq!(echoed, 20 * 50);
    assert_eq!(counter(&gateway.counters(), "links_opened"), 20);
    assert_eq!(counter(&gateway.counters(), "peers"), 20);
}

#[test]
fn past_the_connection_cap_a_client_gets_no_answer() {
    let id = TlsIdentity::generate(NAME).unwrap();
    let mut config = pb_quic::QuicListenerConfig::new(path());
    config.max_connections = 1;
    let mut gateway = pb_quic::QuicListener::bind(([127, 0, 0, 1], 0).into(), &id, config).unwrap();
    let mut first = client_to(gateway.local_addr(), &id);
    let mut client_config = QuicCarrierConfig::new(gateway.local_addr(), NAME, id.pin(), path());
    client_config.idle_timeout = std::time::Duration::from_millis(300);
    let mut second = pb_quic::QuicCarrier::connect(&client_config, Instant::now()).unwrap();
    let mut error = None;
    assert!(run(
        &mut [&mut first, &mut second],
        &mut gateway,
        50_000,
        |c, _, e| {
            assert_eq!(e[0], None, "the first client stays up");
            error = e[1].clone();
            c[0].is_open() && error.is_some()
        }
    ));
    assert!(error.unwrap().starts_with("handshake:"));
    assert!(counter(&gateway.counters(), "connections_refused") > 0);
    assert_eq!(counter(&gateway.counters(), "connections_opened"), 1);
}
