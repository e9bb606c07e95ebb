//! Unit tests of the in-memory backend: frame accounting, delivery, loss, foreign packets.
//! The frame pool's own behaviour (disjoint batch payloads, refusals) is tested in `pool`.
#![expect(clippy::unwrap_used, reason = "tests")]

use super::*;

/// Endpoints and the network can move to other threads (a pipeline per thread).
const _: () = {
    const fn send<T: Send>() {}
    send::<MemIo>();
    send::<MemNet>();
};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn config(bind: &str, packet_len: u16) -> MemConfig {
    MemConfig {
        packet_len,
        frame_count: 8,
        queue: 4,
        ..MemConfig::new(addr(bind))
    }
}

/// Sends one packet of `len` bytes, all `fill`, from `from` to `to`.
fn send_one(from: &mut MemIo, to: SocketAddr, len: usize, fill: u8) -> usize {
    let mut p = from.alloc(to).unwrap();
    from.set_len(&mut p, len);
    from.payload_mut(&p).fill(fill);
    from.send(&mut vec![p]).unwrap()
}

/// A datagram goes one way byte-identical, from its sender's address, once its latency
/// has passed; wrong-size datagrams are dropped and counted; frames all come back.
#[test]
fn delivery_after_latency_with_length_check_and_frames_back() {
    let net = MemNet::new(1);
    net.set_latency(500);
    let mut a = net.bind(&config("10.0.0.1:1", 64)).unwrap();
    let mut b = net.bind(&config("10.0.0.2:1", 64)).unwrap();
    let to = b.local_addr();
    assert_eq!(send_one(&mut a, to, 64, 7), 1);
    assert_eq!(send_one(&mut a, to, 63, 8), 1);
    assert_eq!(a.free_frames(), 8, "sent frames return to the pool");
    let mut got = Vec::new();
    assert_eq!(b.next_arrival(), Some(500));
    assert_eq!(b.waiting(), 0);
    assert_eq!(b.recv(&mut got, 64, Duration::from_secs(3600)).unwrap(), 0);
    net.set_now(499);
    assert_eq!(b.recv(&mut got, 64, Duration::ZERO).unwrap(), 0);
    net.set_now(500);
    assert_eq!(b.waiting(), 2);
    assert_eq!(b.recv(&mut got, 64, Duration::ZERO).unwrap(), 1);
    assert_eq!(got[0].peer, a.local_addr());
    assert_eq!(b.payload(&got[0]), &[7; 64][..]);
    assert_eq!(b.stats().rx_dropped_malformed, 1);
    assert_eq!(b.stats().rx_packets, 1);
    assert_eq!(b.free_frames(), 7);
    b.release(&mut got);
    assert_eq!(b.free_frames(), 8);
    net.set_now(100);
    assert_eq!(net.now(), 500, "time never goes back");
    let log = net.transmissions();
    assert_eq!(log.len(), 2);
    assert_eq!(
        (log[0].at, log[0].src, log[0].dst, log[0].fate),
        (0, a.local_addr(), to, Fate::Queued)
    );
    assert_eq!(log[1].bytes, vec![8; 63]);
    assert_eq!(net.take_transmissions().len(), 2);
    assert!(net.transmissions().is_empty());
}

/// The pool is bounded: allocation and receive fail (counted) when every frame is out,
/// and succeed again once frames are released; nothing is lost meanwhile.
#[test]
fn a_bounded_pool_counts_alloc_failures() {
    let net = MemNet::new(1);
    let mut a = net.bind(&config("10.0.0.1:1", 16)).unwrap();
    let mut b = net.bind(&config("10.0.0.2:1", 16)).unwrap();
    let peer = b.local_addr();
    let mut held: Vec<Packet> = (0..8).map(|_| a.alloc(peer).unwrap()).collect();
    assert!(a.alloc(peer).is_none());
    assert_eq!(a.stats().alloc_failures, 1);
    send_one(&mut b, a.local_addr(), 16, 1);
    let mut got = Vec::new();
    assert_eq!(a.recv(&mut got, 8, Duration::ZERO).unwrap(), 0);
    assert_eq!(a.stats().alloc_failures, 2);
    assert_eq!(a.waiting(), 1, "the datagram still waits");
    a.release(&mut held);
    assert_eq!(a.recv(&mut got, 8, Duration::ZERO).unwrap(), 1);
    a.release(&mut got);
    assert_eq!(a.free_frames(), 8);
}

/// A full receive queue drops and counts; a datagram for an unbound address is counted
/// as unreachable; the counters add up.
#[test]
fn a_full_queue_drops_and_counts() {
    let net = MemNet::new(1);
    let mut a = net.bind(&config("10.0.0.1:1", 16)).unwrap();
    let b = net.bind(&config("10.0.0.2:1", 16)).unwrap();
    for i in 0..6 {
        send_one(&mut a, b.local_addr(), 16, i);
    }
    send_one(&mut a, addr("10.0.0.3:1"), 16, 0);
    assert_eq!(b.dropped_queue_full(), 2);
    let s = net.stats();
    assert_eq!(
        (s.sent, s.queued, s.queue_full, s.unreachable),
        (7, 4, 2, 1)
    );
    let fates: Vec<Fate> = net.transmissions().iter().map(|t| t.fate).collect();
    assert_eq!(
        fates[4..],
        [Fate::QueueFull, Fate::QueueFull, Fate::Unreachable]
    );
    // An endpoint that goes away unbinds its address.
    drop(b);
    send_one(&mut a, addr("10.0.0.2:1"), 16, 0);
    assert_eq!(net.stats().unreachable, 2);
    assert!(net.bind(&config("10.0.0.2:1", 16)).is_ok());
}

/// Loss follows the seed: the same seed loses the same datagrams, another seed others;
/// about the rate asked for is lost.
#[test]
fn loss_is_reproducible_from_the_seed() {
    let fates = |seed: u64| {
        let net = MemNet::new(seed);
        net.set_loss(0.25);
        let mut a = net.bind(&config("10.0.0.1:1", 16)).unwrap();
        let mut b = net
            .bind(&MemConfig {
                queue: 1000,
                frame_count: 1000,
                ..config("10.0.0.2:1", 16)
            })
            .unwrap();
        for i in 0..400 {
            send_one(&mut a, b.local_addr(), 16, i as u8);
        }
        let mut got = Vec::new();
        b.recv(&mut got, 1000, Duration::ZERO).unwrap();
        assert_eq!(got.len() as u64, net.stats().queued);
        b.release(&mut got);
        net.transmissions()
            .iter()
            .map(|t| t.fate == Fate::Lost)
            .collect::<Vec<bool>>()
    };
    let first = fates(7);
    assert_eq!(first, fates(7));
    assert_ne!(first, fates(8));
    let lost = first.iter().filter(|l| **l).count();
    assert!((60..=140).contains(&lost), "{lost} of 400 lost");
    let net = MemNet::new(7);
    net.set_loss(1.0);
    let mut a = net.bind(&config("10.0.0.1:1", 16)).unwrap();
    let to = a.local_addr();
    send_one(&mut a, to, 16, 0);
    assert_eq!(net.stats().lost, 1);
}

/// A packet of another endpoint handed to `send` goes nowhere: taken from the batch,
/// counted, not put on the network, its frame not adopted; it stays out of its own pool.
#[test]
fn send_refuses_foreign_packets() {
    let net = MemNet::new(1);
    let mut a = net.bind(&config("10.0.0.1:1", 16)).unwrap();
    let mut b = net.bind(&config("10.0.0.2:1", 16)).unwrap();
    let mut p = a.alloc(b.local_addr()).unwrap();
    a.set_len(&mut p, 16);
    let mut batch = vec![p];
    assert_eq!(b.send(&mut batch).unwrap(), 0);
    assert!(batch.is_empty());
    assert_eq!(b.free_frames(), 8, "b must not adopt a's frame");
    assert_eq!(b.stats().foreign_packets, 1);
    assert_eq!(
        (
            b.stats().tx_packets,
            b.stats().tx_dropped_invalid,
            net.stats().sent
        ),
        (0, 0, 0)
    );
    assert_eq!(a.free_frames(), 7, "a's frame stays out until a gets it");
}

/// `reuse_port` endpoints share an address, each datagram reaching exactly one of them
/// by its source; without it a second bind is refused; port 0 picks a free port.
#[test]
fn reuse_port_spreads_sources_over_a_shared_address() {
    let net = MemNet::new(1);
    let shared = MemConfig {
        reuse_port: true,
        ..config("10.0.0.9:5", 16)
    };
    let mut a = net.bind(&shared).unwrap();
    let mut b = net.bind(&shared).unwrap();
    assert!(matches!(
        net.bind(&config("10.0.0.9:5", 16)),
        Err(IoError::Sys { call: "bind", .. })
    ));
    let first = net.bind(&config("10.0.0.1:0", 16)).unwrap();
    assert_eq!(first.local_addr(), addr("10.0.0.1:40000"));
    drop(first);
    let mut senders: Vec<MemIo> = (0..8)
        .map(|_| net.bind(&config("10.0.0.1:0", 16)).unwrap())
        .collect();
    for (i, s) in senders.iter_mut().enumerate() {
        send_one(s, a.local_addr(), 16, i as u8);
    }
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    a.recv(&mut got_a, 8, Duration::ZERO).unwrap();
    b.recv(&mut got_b, 8, Duration::ZERO).unwrap();
    assert!(
        !got_a.is_empty() && !got_b.is_empty(),
        "both get some flows"
    );
    let mut firsts = [
        crate::first_bytes(&a, &got_a),
        crate::first_bytes(&b, &got_b),
    ]
    .concat();
    firsts.sort_unstable();
    assert_eq!(firsts, (0..8).collect::<Vec<u8>>(), "each exactly once");
    a.release(&mut got_a);
    b.release(&mut got_b);
}
