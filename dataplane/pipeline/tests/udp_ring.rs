//! Three relays in a ring (0 → 1 → 2 → 0) over the UDP backend on loopback, each a real
//! pipeline in its own thread: client packets injected at relay 0 reach relay 2's sink
//! byte-identical; every link carries loop cover that comes back to its sender; malformed,
//! replayed and wrong-epoch packets are dropped and counted at the first relay.
#![expect(clippy::unwrap_used, reason = "tests")]

use std::{
    net::UdpSocket,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use pb_io::{
    PacketIo,
    udp::{UdpConfig, UdpIo},
};
use pb_mix::{LoopMonitor, SharedReplayFilter, Time};
use pb_pipeline::{LoopCover, Neighbour, Pipeline, PipelineConfig, PipelineStats, Sink};
use pb_sphinx::{
    DelayMs, DropReason, Epoch, EpochKey, Format, Hop, MailboxId, NodeId, NodeKeys, PACKET_LEN,
    create_packet_with,
};

const EPOCH: Epoch = Epoch(1);
const FORMAT: Format = Format::V2;
const USER_MAILBOX: MailboxId = MailboxId([0xab; 16]);
/// Give up (and fail) if the network has not done its work by then.
const DEADLINE: Duration = Duration::from_secs(20);

type Delivered = Arc<Mutex<Vec<(MailboxId, Vec<u8>)>>>;

struct Recorder(Delivered);

impl Sink for Recorder {
    fn deliver(&mut self, mailbox: MailboxId, _reply: Option<pb_sphinx::SurbId>, message: &[u8]) {
        self.0.lock().unwrap().push((mailbox, message.to_vec()));
    }
}

fn key(i: usize) -> EpochKey {
    EpochKey::from_secret(EPOCH, [i as u8 + 1; 32])
}

fn hop(i: usize) -> Hop {
    Hop {
        node: NodeId([i as u8 + 1; 16]),
        public_key: key(i).public_key(),
        delay: DelayMs(5),
    }
}

fn loop_mailbox(i: usize) -> MailboxId {
    MailboxId([0xf0 + i as u8; 16])
}

/// Sets the stop flag when dropped, so relay threads end even when the test fails.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

struct Report {
    stats: PipelineStats,
    loops_returned: u64,
    malformed: u64,
}

#[test]
fn a_ring_of_three_relays_forwards_mixes_and_loops() {
    let sockets: Vec<UdpIo> = (0..3)
        .map(|_| UdpIo::open(&UdpConfig::new("127.0.0.1:0".parse().unwrap())).unwrap())
        .collect();
    let addrs: Vec<_> = sockets.iter().map(|s| s.local_addr()).collect();
    let delivered: Delivered = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let origin = Instant::now();
    let now = move || Time(origin.elapsed().as_nanos() as u64);
    let filters: Vec<SharedReplayFilter> = (0..3)
        .map(|_| {
            let f = SharedReplayFilter::new(100_000).unwrap();
            f.prepare(EPOCH);
            f
        })
        .collect();

    let reports: Vec<Report> = thread::scope(|scope| {
        let _stop_guard = StopOnDrop(stop.clone());
        let mut handles = Vec::new();
        for (i, io) in sockets.into_iter().enumerate() {
            let next = (i + 1) % 3;
            let config = PipelineConfig {
                neighbours: vec![Neighbour {
                    node: hop(next).node,
                    addr: addrs[next],
                }],
                link_rate: 100,
                link_queue: 256,
                max_burst: 8,
                delay_capacity: 4096,
                max_delay: DelayMs(10_000),
                batch: 32,
                loop_mailbox: loop_mailbox(i),
            };
            let keys = NodeKeys {
                current: key(i),
                previous: None,
                format: Some(FORMAT),
            };
            // Relay i's loops go once around the ring: i+1, i+2, back to i.
            let route = vec![hop(next), hop((i + 2) % 3), hop(i)];
            let loops =
                LoopMonitor::new([0x10 + i as u8; 32], 1, 4096, Time(5 * Time::SECOND)).unwrap();
            let cover = LoopCover::new(
                FORMAT,
                EPOCH,
                vec![route],
                loop_mailbox(i),
                20,
                loops,
                [i as u8; 32],
            );
            let sink = Recorder(delivered.clone());
            let (stop, filter) = (stop.clone(), &filters[i]);
            handles.push(scope.spawn(move || {
                let mut pipeline = Pipeline::new(
                    io,
                    &config,
                    keys,
                    filter,
                    Box::new(cover),
                    Box::new(sink),
                    now(),
                )
                .unwrap();
                while !stop.load(Ordering::Relaxed) {
                    pipeline.step(now(), Duration::from_millis(1)).unwrap();
                }
                Report {
                    stats: pipeline.stats(),
                    loops_returned: pipeline.loop_stats(0).returned,
                    malformed: pipeline.io().stats().rx_dropped_malformed,
                }
            }));
        }

        // A client sends 200 packets along 0 → 1 → 2 to a mailbox at relay 2, plus one
        // malformed datagram, one replay and one packet for an epoch relay 0 has no key for.
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let route = [hop(0), hop(1), hop(2)];
        let mut sent = Vec::new();
        for n in 0..200u32 {
            let message: Vec<u8> = (0..400)
                .map(|j| (n as u8).wrapping_mul(7) ^ j as u8)
                .collect();
            let mut packet = [0u8; PACKET_LEN];
            create_packet_with(
                FORMAT,
                &mut packet,
                EPOCH,
                &route,
                USER_MAILBOX,
                &message,
                &[n as u8; 32],
            )
            .unwrap();
            // Keep at most 32 packets in flight, so that a starved relay thread (a busy CI
            // machine) cannot overflow its socket buffer: the test is about the pipeline, not
            // about kernel drops.
            let start = Instant::now();
            while sent.len() > delivered.lock().unwrap().len() + 32 {
                assert!(start.elapsed() < DEADLINE, "the ring stopped delivering");
                thread::sleep(Duration::from_millis(2));
            }
            client.send_to(&packet, addrs[0]).unwrap();
            if n == 0 {
                client.send_to(&packet, addrs[0]).unwrap(); // the replay
            }
            sent.push(message);
        }
        client.send_to(&[0u8; 100], addrs[0]).unwrap();
        let mut future = [0u8; PACKET_LEN];
        let future_hop = Hop {
            public_key: EpochKey::from_secret(Epoch(2), [1; 32]).public_key(),
            ..hop(0)
        };
        create_packet_with(
            FORMAT,
            &mut future,
            Epoch(2),
            &[future_hop],
            USER_MAILBOX,
            b"early",
            &[9; 32],
        )
        .unwrap();
        client.send_to(&future, addrs[0]).unwrap();

        // Wait until every message has arrived (and loops have had time to go around).
        let start = Instant::now();
        loop {
            let got = delivered.lock().unwrap().len();
            if got >= sent.len() && start.elapsed() > Duration::from_secs(1) {
                break;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "only {got} of {} delivered",
                sent.len()
            );
            thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::Relaxed);
        let reports = handles.into_iter().map(|h| h.join().unwrap()).collect();

        let mut got = delivered.lock().unwrap().clone();
        assert!(got.iter().all(|(m, _)| *m == USER_MAILBOX));
        let mut want: Vec<(MailboxId, Vec<u8>)> = sent
            .into_iter()
            .map(|m| {
                let mut padded = m.clone();
                padded.resize(FORMAT.message_len(), 0);
                (USER_MAILBOX, padded)
            })
            .collect();
        got.sort_by(|a, b| a.1.cmp(&b.1));
        want.sort_by(|a, b| a.1.cmp(&b.1));
        assert_eq!(got.len(), want.len(), "each message exactly once");
        assert!(got == want, "delivered messages differ from those sent");
        reports
    });

    let first = &reports[0].stats;
    let index = |r: DropReason| DropReason::ALL.iter().position(|x| *x == r).unwrap();
    assert_eq!(first.dropped[index(DropReason::Replay)], 1, "{first:?}");
    assert_eq!(
        first.dropped[index(DropReason::FutureEpoch)],
        1,
        "{first:?}"
    );
    // The replay was a replay, not a filter that could not record it.
    assert_eq!(
        first.replay_filter_full + first.replay_filter_no_table,
        0,
        "{first:?}"
    );
    assert_eq!(reports[0].malformed, 1);
    for (i, r) in reports.iter().enumerate() {
        assert!(
            r.loops_returned > 0,
            "relay {i}: no loop came back: {:?}",
            r.stats
        );
        assert_eq!(r.stats.dropped_no_link, 0);
        assert_eq!(r.stats.cover_failures, 0, "relay {i}");
        let bad: u64 = r.stats.dropped.iter().sum();
        if i > 0 {
            assert_eq!(bad, 0, "relay {i} dropped {:?}", r.stats.dropped);
        }
    }
}
