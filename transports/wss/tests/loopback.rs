//! The mio drivers over 127.0.0.1: thousands of records both ways, two clients told apart,
//! closes seen from both ends.
#![expect(clippy::unwrap_used, reason = "tests")]

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use pb_transport::{
    CarrierError, ClientCarrier, Listener, Peer, RECORD_LEN, Record, tls::TlsIdentity,
};
use pb_wss::{SecretPath, WssCarrier, WssClientConfig, WssListener, WssServerConfig};

const NAME: &str = "www.example.org";
const COUNT: u32 = 3000;

fn record(client: u8, n: u32) -> Record {
    let mut r = [client; RECORD_LEN];
    r[..4].copy_from_slice(&n.to_be_bytes());
    r[RECORD_LEN - 4..].copy_from_slice(&(n ^ 0xA5A5_A5A5).to_be_bytes());
    r
}

/// Drives everything until `done` holds; false if it never does (bounded turns: loopback
/// delivers within a few).
fn until(
    gateway: &mut WssListener,
    clients: &mut [&mut WssCarrier],
    mut done: impl FnMut(&mut WssListener, &mut [&mut WssCarrier]) -> bool,
) -> bool {
    for _ in 0..20_000 {
        let now = Instant::now();
        gateway.drive(now).unwrap();
        for c in clients.iter_mut() {
            let _ = c.drive(now);
        }
        if done(gateway, clients) {
            return true;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    false
}

#[test]
fn thousands_of_records_cross_both_ways_and_two_clients_are_told_apart() {
    let identity = TlsIdentity::generate(NAME).unwrap();
    let path = SecretPath::from_random([3; 16]);
    let mut gateway = WssListener::bind(
        ([127, 0, 0, 1], 0).into(),
        &identity,
        WssServerConfig::new(path.clone()),
    )
    .unwrap();
    let addr = gateway.local_addr();
    let config = WssClientConfig::new(identity.pin(), NAME, addr.port(), path);
    let mut a = WssCarrier::connect(addr, &config).unwrap();
    let mut b = WssCarrier::connect(addr, &config).unwrap();
    assert!(until(&mut gateway, &mut [&mut a, &mut b], |_, c| c
        .iter()
        .all(|c| c.is_open())));

    // Each client sends COUNT records; the gateway sends COUNT to each peer it learns of.
    let mut up: HashMap<Peer, Vec<Record>> = HashMap::new();
    let (mut sent_a, mut sent_b) = (0, 0);
    let mut sent_down: HashMap<Peer, u32> = HashMap::new();
    let (mut down_a, mut down_b) = (Vec::new(), Vec::new());
    let done = until(&mut gateway, &mut [&mut a, &mut b], |g, c| {
        while sent_a < COUNT && c[0].send(&record(1, sent_a)) {
            sent_a += 1;
        }
        while sent_b < COUNT && c[1].send(&record(2, sent_b)) {
            sent_b += 1;
        }
        while let Some((peer, r)) = g.recv() {
            up.entry(peer).or_default().push(r);
            sent_down.entry(peer).or_insert(0);
        }
        for (peer, n) in sent_down.iter_mut() {
            while *n < COUNT && g.send(*peer, &record(0x80 | peer.0 as u8, *n)) {
                *n += 1;
            }
        }
        down_a.extend(std::iter::from_fn(|| c[0].recv()));
        down_b.extend(std::iter::from_fn(|| c[1].recv()));
        let all_up = up.values().map(Vec::len).sum::<usize>() == 2 * COUNT as usize;
        all_up && down_a.len() == COUNT as usize && down_b.len() == COUNT as usize
    });
    assert!(done, "records stopped flowing");
    assert_eq!(up.len(), 2, "two peers");
    let peer_of = |client: u8| *up.iter().find(|(_, rs)| rs[0][4] == client).unwrap().0;
    let (peer_a, peer_b) = (peer_of(1), peer_of(2));
    assert_ne!(peer_a, peer_b);
    assert_eq!(
        up[&peer_a],
        (0..COUNT).map(|n| record(1, n)).collect::<Vec<_>>()
    );
    assert_eq!(
        up[&peer_b],
        (0..COUNT).map(|n| record(2, n)).collect::<Vec<_>>()
    );
    let want = |peer: Peer| {
        (0..COUNT)
            .map(|n| record(0x80 | peer.0 as u8, n))
            .collect::<Vec<_>>()
    };
    assert_eq!(down_a, want(peer_a));
    assert_eq!(down_b, want(peer_b));
    assert_eq!(gateway.source(peer_a), Some(a.local_addr().unwrap()));
    assert_eq!(gateway.source(peer_b), Some(b.local_addr().unwrap()));
    let counters: HashMap<_, _> = gateway.counters().into_iter().collect();
    assert_eq!(counters["records_received"], 2 * u64::from(COUNT));
    assert_eq!(counters["records_sent"], 2 * u64::from(COUNT));
    assert_eq!(counters["links_opened"], 2);
    assert_eq!(counters["inbox_full"], 0, "backpressure, not loss");
    // Each record costs its frame header (client: 8 with the mask; server: 4) and TLS.
    let client_bytes: HashMap<_, _> = a.counters().into_iter().collect();
    assert!(client_bytes["bytes_sent"] > u64::from(COUNT) * (RECORD_LEN as u64 + 8));

    // The gateway closes A: A's carrier fails, B's goes on.
    gateway.close(peer_a);
    assert!(
        !gateway.send(peer_a, &record(0, 0)),
        "a closed peer takes nothing"
    );
    let mut a_err = None;
    assert!(until(&mut gateway, &mut [&mut b], |_, _| {
        if let Err(e) = a.drive(Instant::now()) {
            a_err = Some(e);
        }
        a_err.is_some()
    }));
    assert!(matches!(a_err, Some(CarrierError::Closed(_))), "{a_err:?}");
    assert!(!a.is_open() && b.is_open());
    assert!(gateway.send(peer_b, &record(0, 1)));
    assert!(until(&mut gateway, &mut [&mut b], |_, c| c[0].recv()
        == Some(record(0, 1))));

    // B closes: the gateway reports peer B gone (and not A, which it closed itself).
    b.close();
    let mut gone = Vec::new();
    assert!(until(&mut gateway, &mut [], |g, _| {
        gone.extend(std::iter::from_fn(|| g.poll_closed()));
        !gone.is_empty()
    }));
    assert_eq!(gone, [peer_b]);
    assert!(gateway.source(peer_b).is_none());
}

#[test]
fn a_client_with_the_wrong_pin_fails_and_a_full_gateway_refuses() {
    let identity = TlsIdentity::generate(NAME).unwrap();
    let path = SecretPath::from_random([3; 16]);
    let mut server_config = WssServerConfig::new(path.clone());
    server_config.limits.max_connections = 1;
    let mut gateway =
        WssListener::bind(([127, 0, 0, 1], 0).into(), &identity, server_config).unwrap();
    let addr = gateway.local_addr();
    let other = TlsIdentity::generate(NAME).unwrap();
    let mut wrong = WssCarrier::connect(
        addr,
        &WssClientConfig::new(other.pin(), NAME, addr.port(), path.clone()),
    )
    .unwrap();
    let mut err = None;
    assert!(until(&mut gateway, &mut [], |_, _| {
        if let Err(e) = wrong.drive(Instant::now()) {
            err = Some(e);
        }
        err.is_some()
    }));
    assert!(matches!(err, Some(CarrierError::Handshake(_))), "{err:?}");

    // Once the first connection is gone, one more fits and a second is refused.
    let config = WssClientConfig::new(identity.pin(), NAME, addr.port(), path);
    assert!(until(&mut gateway, &mut [], |g, _| g
        .counters()
        .contains(&("connections", 0))));
    let mut first = WssCarrier::connect(addr, &config).unwrap();
    assert!(until(&mut gateway, &mut [&mut first], |_, c| c[0].is_open()));
    let mut second = WssCarrier::connect(addr, &config).unwrap();
    let mut err = None;
    assert!(until(&mut gateway, &mut [], |_, _| {
        if let Err(e) = second.drive(Instant::now()) {
            err = Some(e);
        }
        err.is_some()
    }));
    assert!(gateway.counters().contains(&("connections_refused", 1)));
    assert!(first.is_open());
}

#[test]
fn a_peer_that_floods_pings_and_never_reads_is_not_read_either() {
    use std::io::Write as _;
    let identity = TlsIdentity::generate(NAME).unwrap();
    let path = SecretPath::from_random([4; 16]);
    let mut gateway = WssListener::bind(
        ([127, 0, 0, 1], 0).into(),
        &identity,
        WssServerConfig::new(path.clone()),
    )
    .unwrap();
    let addr = gateway.local_addr();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let driver = std::thread::spawn({
        let stop = stop.clone();
        move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                gateway.drive(Instant::now()).unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
            gateway.counters()
        }
    });
    let tls = pb_transport::tls::client_config(identity.pin(), &[pb_wss::ALPN]).unwrap();
    let name = rustls::pki_types::ServerName::try_from(NAME).unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(tls), name).unwrap();
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    // A write that cannot go out for this long shows the gateway stopped reading.
    tcp.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    let upgrade = format!(
        "GET {} HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        path.as_str()
    );
    stream.write_all(upgrade.as_bytes()).unwrap();
    // Masked pings of 125 bytes, 64 KiB at a time, never reading a pong.
    let mut ping = vec![0x89, 0x80 | 125, 0, 0, 0, 0];
    ping.extend_from_slice(&[0; 125]);
    let burst: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 500)
        .collect();
    let mut written = 0usize;
    let blocked = loop {
        if written > 200 << 20 {
            break false;
        }
        match stream.write_all(&burst) {
            Ok(()) => written += burst.len(),
            Err(_) => break true,
        }
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let counters: HashMap<_, _> = driver.join().unwrap().into_iter().collect();
    assert!(
        blocked,
        "the gateway read {written} bytes of pings it could not answer"
    );
    assert_eq!(counters["links_opened"], 1);
    assert!(counters["bytes_received"] < 64 << 20, "{counters:?}");
}
