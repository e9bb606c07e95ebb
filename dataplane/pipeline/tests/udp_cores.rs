//! A relay on several cores and across epochs, over the UDP backend on loopback:
//!
//! - two pipelines share one `SO_REUSEPORT` address, one replay filter and a handoff; each
//!   paces one of the two links, and packets received on the other core cross to it. Every
//!   packet leaves on its own link exactly once, byte-identical to what its next hop
//!   expects; a replay arriving on the other core is still caught;
//! - a key rotation: the previous epoch's packets keep flowing through the overlap, replays
//!   from before it stay refused, and after the next rotation that epoch is past.
#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use common::{MAILBOX, NoCover, NoSink, key, keys, text};
use std::{
    net::UdpSocket,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use pb_io::{
    PacketIo,
    udp::{UdpConfig, UdpIo},
};
use pb_mix::{SharedReplayFilter, Time};
use pb_pipeline::{Handoff, Neighbour, Pipeline, PipelineConfig, PipelineStats};
use pb_sphinx::{
    DelayMs, DropReason, Epoch, Hop, MemoryReplayFilter, PACKET_LEN, Processed, message, process,
};

const DEADLINE: Duration = Duration::from_secs(20);

/// Sets the stop flag when dropped, so pipeline threads end even when the test fails.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Relay `i` as a hop, asking for 1 ms there.
fn hop(i: u8, epoch: Epoch) -> Hop {
    common::hop(i, epoch, 1)
}

/// The tests' pipeline settings: links at 2000 packets a second, so slots are never the
/// limit.
fn config(neighbours: Vec<Neighbour>) -> PipelineConfig {
    common::config(neighbours, 2000)
}

/// A packet through `route` carrying message `n`.
fn packet(epoch: Epoch, route: &[Hop], n: u32) -> [u8; PACKET_LEN] {
    common::packet(epoch, route, MAILBOX, &text(n), [(n % 251) as u8 + 1; 32])
}

#[test]
fn two_cores_share_the_links_and_the_replay_filter() {
    const EPOCH: Epoch = Epoch(1);
    const PACKETS: u32 = 200;
    // Relay 0 has two cores; its neighbours 1 and 2 are plain sockets that unwrap what
    // arrives with their own keys.
    let mut udp = UdpConfig::new("127.0.0.1:0".parse().unwrap());
    udp.reuse_port = true;
    let first = UdpIo::open(&udp).unwrap();
    udp.bind = first.local_addr();
    let second = UdpIo::open(&udp).unwrap();
    let relay = first.local_addr();
    let neighbours: Vec<UdpSocket> = (0..2)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let config = config(
        neighbours
            .iter()
            .enumerate()
            .map(|(i, s)| Neighbour {
                node: hop(i as u8 + 1, EPOCH).node,
                addr: s.local_addr().unwrap(),
            })
            .collect(),
    );
    let replay = SharedReplayFilter::new(10_000).unwrap();
    replay.prepare(EPOCH);
    let handoff = Arc::new(Handoff::new(2, 256));
    let owner = Handoff::round_robin(2, 2);
    let stop = Arc::new(AtomicBool::new(false));
    let origin = Instant::now();
    let now = move || Time(origin.elapsed().as_nanos() as u64);

    let reports: Vec<(PipelineStats, Vec<pb_mix::LinkStats>)> = thread::scope(|scope| {
        let _stop_guard = StopOnDrop(stop.clone());
        let mut handles = Vec::new();
        for (core, io) in [first, second].into_iter().enumerate() {
            let (config, replay, handoff, owner, stop) = (
                &config,
                &replay,
                handoff.clone(),
                owner.clone(),
                stop.clone(),
            );
            handles.push(scope.spawn(move || {
                let mut pipeline = Pipeline::new(
                    io,
                    config,
                    keys(key(0, EPOCH), None),
                    replay,
                    Box::new(NoCover),
                    Box::new(NoSink),
                    now(),
                )
                .unwrap()
                .shard(core, owner, handoff)
                .unwrap();
                assert!(pipeline.owns(core) && !pipeline.owns(1 - core));
                while !stop.load(Ordering::Relaxed) {
                    pipeline.step(now(), Duration::from_millis(1)).unwrap();
                }
                (pipeline.stats(), pipeline.link_stats())
            }));
        }

        // Each neighbour unwraps what it receives with its own key, on a thread of its own
        // (so that its socket buffer never overflows), until nothing has come for 300 ms.
        let readers: Vec<_> = neighbours
            .iter()
            .enumerate()
            .map(|(i, socket)| {
                scope.spawn(move || {
                    socket
                        .set_read_timeout(Some(Duration::from_millis(300)))
                        .unwrap();
                    let me = keys(key(i as u8 + 1, EPOCH), None);
                    let mut filter = MemoryReplayFilter::default();
                    let mut buf = [0u8; 2048];
                    let mut got = Vec::new();
                    let start = Instant::now();
                    while start.elapsed() < DEADLINE {
                        let Ok(len) = socket.recv(&mut buf) else {
                            if got.len() >= PACKETS as usize / 2 {
                                break;
                            }
                            continue;
                        };
                        let result = process(&mut buf[..len], &me, &mut filter);
                        assert!(
                            matches!(
                                result,
                                Ok(Processed::Deliver {
                                    mailbox: MAILBOX,
                                    ..
                                })
                            ),
                            "neighbour {i}: {result:?}"
                        );
                        got.push(message(&buf[..len]).to_vec());
                    }
                    got
                })
            })
            .collect();

        // Sixteen senders (sixteen flows for the kernel to spread over the two sockets);
        // packet n goes to neighbour 1 + n % 2; each is sent twice, by two different
        // senders, so that many replays land on the core that did not see the original.
        let senders: Vec<UdpSocket> = (0..16)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let mut want: [Vec<Vec<u8>>; 2] = Default::default();
        for n in 0..PACKETS {
            let next = 1 + (n % 2) as u8;
            let p = packet(EPOCH, &[hop(0, EPOCH), hop(next, EPOCH)], n);
            senders[n as usize % 16].send_to(&p, relay).unwrap();
            senders[(n as usize + 5) % 16].send_to(&p, relay).unwrap();
            want[usize::from(next) - 1].push(text(n));
            if n % 32 == 31 {
                thread::sleep(Duration::from_millis(5));
            }
        }
        let mut got: Vec<Vec<Vec<u8>>> = readers.into_iter().map(|r| r.join().unwrap()).collect();
        stop.store(true, Ordering::Relaxed);
        let reports: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        for i in 0..2 {
            got[i].sort();
            want[i].sort();
            assert!(
                got[i] == want[i],
                "neighbour {i}: {} of {}: {reports:?}",
                got[i].len(),
                want[i].len()
            );
        }
        reports
    });

    let sum = |f: &dyn Fn(&PipelineStats) -> u64| reports.iter().map(|(s, _)| f(s)).sum::<u64>();
    let replays = DropReason::ALL
        .iter()
        .position(|r| *r == DropReason::Replay)
        .unwrap();
    assert_eq!(sum(&|s| s.received), 2 * u64::from(PACKETS));
    assert_eq!(sum(&|s| s.forwarded), u64::from(PACKETS));
    assert_eq!(sum(&|s| s.dropped[replays]), u64::from(PACKETS));
    assert!(sum(&|s| s.handed_off) > 0, "{reports:?}");
    assert_eq!(sum(&|s| s.handed_off), sum(&|s| s.taken_over));
    assert_eq!(sum(&|s| s.dropped_handoff), 0);
    for (core, (_, links)) in reports.iter().enumerate() {
        // A core sends on its own link only: every packet for it, however it arrived.
        assert_eq!(links[core].real, u64::from(PACKETS) / 2, "core {core}");
        assert_eq!(
            links[1 - core].real + links[1 - core].missed,
            0,
            "core {core}"
        );
    }
}

#[test]
fn keys_rotate_with_an_overlap() {
    let io = UdpIo::open(&UdpConfig::new("127.0.0.1:0".parse().unwrap())).unwrap();
    let relay = io.local_addr();
    let neighbour = UdpSocket::bind("127.0.0.1:0").unwrap();
    let config = config(vec![Neighbour {
        node: hop(1, Epoch(1)).node,
        addr: neighbour.local_addr().unwrap(),
    }]);
    let replay = SharedReplayFilter::new(10_000).unwrap();
    replay.prepare(Epoch(1));
    let origin = Instant::now();
    let now = move || Time(origin.elapsed().as_nanos() as u64);
    let mut pipeline = Pipeline::new(
        io,
        &config,
        keys(key(0, Epoch(1)), None),
        &replay,
        Box::new(NoCover),
        Box::new(NoSink),
        now(),
    )
    .unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let route = |e: Epoch| [hop(0, e), hop(1, e)];
    let index = |r: DropReason| DropReason::ALL.iter().position(|x| *x == r).unwrap();
    // Sends `packets` and runs the pipeline until it has received them all.
    let run = |pipeline: &mut Pipeline<'_, UdpIo>, packets: &[[u8; PACKET_LEN]]| {
        let before = pipeline.stats().received;
        for p in packets {
            client.send_to(p, relay).unwrap();
        }
        let start = Instant::now();
        while pipeline.stats().received < before + packets.len() as u64 {
            assert!(start.elapsed() < DEADLINE, "packets went missing");
            pipeline.step(now(), Duration::from_millis(1)).unwrap();
        }
        pipeline.stats()
    };

    let old = packet(Epoch(1), &route(Epoch(1)), 0);
    let s = run(&mut pipeline, &[old]);
    assert_eq!(s.forwarded, 1);

    // Epoch 2 begins: epoch 1 is the previous one, still accepted, replays still known.
    replay.prepare(Epoch(2));
    pipeline.set_keys(keys(key(0, Epoch(2)), Some(key(0, Epoch(1)))));
    let s = run(
        &mut pipeline,
        &[
            packet(Epoch(2), &route(Epoch(2)), 1),
            packet(Epoch(1), &route(Epoch(1)), 2),
            old,
        ],
    );
    assert_eq!(s.forwarded, 3, "{s:?}");
    assert_eq!(s.dropped[index(DropReason::Replay)], 1, "{s:?}");
    assert_eq!(s.replay_filter_no_table, 0, "{s:?}");

    // Epoch 3: epoch 1 is past; epoch 2 is the overlap.
    replay.prepare(Epoch(3));
    pipeline.set_keys(keys(key(0, Epoch(3)), Some(key(0, Epoch(2)))));
    let s = run(
        &mut pipeline,
        &[
            packet(Epoch(1), &route(Epoch(1)), 3),
            packet(Epoch(2), &route(Epoch(2)), 4),
            packet(Epoch(3), &route(Epoch(3)), 5),
        ],
    );
    assert_eq!(s.dropped[index(DropReason::PastEpoch)], 1, "{s:?}");
    assert_eq!(s.forwarded, 5, "{s:?}");
}

#[test]
fn links_follow_a_new_topology() {
    const EPOCH: Epoch = Epoch(1);
    let io = UdpIo::open(&UdpConfig::new("127.0.0.1:0".parse().unwrap())).unwrap();
    let relay = io.local_addr();
    let sockets: Vec<UdpSocket> = (0..2)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s
        })
        .collect();
    let neighbour = |i: usize| Neighbour {
        node: hop(i as u8 + 1, EPOCH).node,
        addr: sockets[i].local_addr().unwrap(),
    };
    let replay = SharedReplayFilter::new(10_000).unwrap();
    replay.prepare(EPOCH);
    let origin = Instant::now();
    let now = move || Time(origin.elapsed().as_nanos() as u64);
    let mut pipeline = Pipeline::new(
        io,
        &config(vec![neighbour(0)]),
        keys(key(0, EPOCH), None),
        &replay,
        Box::new(NoCover),
        Box::new(NoSink),
        now(),
    )
    .unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = |next: u8, n: u32, delay: u32| {
        let mut route = [hop(0, EPOCH), hop(next, EPOCH)];
        route[0].delay = DelayMs(delay);
        packet(EPOCH, &route, n)
    };
    // Runs the pipeline until it has received `count` more packets and `settle` has passed.
    let run = |pipeline: &mut Pipeline<'_, UdpIo>, count: u64, settle: Duration| {
        let target = pipeline.stats().received + count;
        let start = Instant::now();
        while pipeline.stats().received < target || start.elapsed() < settle {
            assert!(start.elapsed() < DEADLINE);
            pipeline.step(now(), Duration::from_millis(1)).unwrap();
        }
        pipeline.stats()
    };

    // Neighbour 2 is not a link yet.
    client.send_to(&to(2, 0, 0), relay).unwrap();
    let s = run(&mut pipeline, 1, Duration::ZERO);
    assert_eq!(s.dropped_no_link, 1);

    // Now it is; neighbour 1 keeps its link.
    pipeline
        .set_neighbours(vec![neighbour(1), neighbour(0)], vec![0, 0], now())
        .unwrap();
    assert_eq!(pipeline.neighbours()[0], neighbour(1));
    client.send_to(&to(2, 1, 0), relay).unwrap();
    client.send_to(&to(1, 2, 0), relay).unwrap();
    run(&mut pipeline, 2, Duration::from_millis(50));
    let mut buf = [0u8; 2048];
    for (i, n) in [(1, 1u32), (0, 2)] {
        let len = sockets[i].recv(&mut buf).unwrap();
        let mut filter = MemoryReplayFilter::default();
        let result = process(
            &mut buf[..len],
            &keys(key(i as u8 + 1, EPOCH), None),
            &mut filter,
        );
        assert!(
            matches!(result, Ok(Processed::Deliver { .. })),
            "{result:?}"
        );
        assert_eq!(message(&buf[..len]), text(n).as_slice());
    }

    // A packet for neighbour 1 waits 300 ms; meanwhile neighbour 1 goes away: dropped.
    client.send_to(&to(1, 3, 300), relay).unwrap();
    run(&mut pipeline, 1, Duration::ZERO);
    pipeline
        .set_neighbours(vec![neighbour(1)], vec![0], now())
        .unwrap();
    let s = run(&mut pipeline, 0, Duration::from_millis(500));
    assert_eq!(s.dropped_no_link, 2, "{s:?}");
    assert!(
        pipeline
            .set_neighbours(vec![neighbour(1), neighbour(1)], vec![0, 0], now())
            .is_err()
    );
    assert!(
        pipeline
            .set_neighbours(vec![neighbour(1)], vec![1], now())
            .is_err()
    );
}
