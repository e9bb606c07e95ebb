//! A relay offered five times its link rate, over the UDP backend on loopback: the link still
//! sends exactly its rate in every one-second window and misses no slot, the excess is
//! dropped and counted where a bounded queue refused it, and nothing else is lost.
#![expect(clippy::unwrap_used, reason = "tests")]

use std::{
    net::UdpSocket,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use pb_io::{
    PacketIo,
    udp::{UdpConfig, UdpIo},
};
use pb_mix::{LinkStats, LoopMonitor, SharedReplayFilter, Time};
use pb_pipeline::{LoopCover, Neighbour, Pipeline, PipelineConfig, Sink};
use pb_sphinx::{
    DelayMs, Epoch, EpochKey, Format, Hop, MailboxId, NodeId, NodeKeys, PACKET_LEN,
    create_packet_with,
};

const EPOCH: Epoch = Epoch(1);
const FORMAT: Format = Format::V2;
const RATE: u64 = 200;
const OFFERED: u64 = 5 * RATE;
const SECONDS: u64 = 3;

struct NoSink;

impl Sink for NoSink {
    fn deliver(&mut self, _: MailboxId, _: Option<pb_sphinx::SurbId>, _: &[u8]) {}
}

fn key(i: u8) -> EpochKey {
    EpochKey::from_secret(EPOCH, [i + 1; 32])
}

fn hop(i: u8) -> Hop {
    Hop {
        node: NodeId([i + 1; 16]),
        public_key: key(i).public_key(),
        delay: DelayMs(2),
    }
}

#[test]
fn five_times_the_link_rate_keeps_the_rate_and_counts_the_excess() {
    let io = UdpIo::open(&UdpConfig::new("127.0.0.1:0".parse().unwrap())).unwrap();
    let relay = io.local_addr();
    let neighbour = UdpSocket::bind("127.0.0.1:0").unwrap();
    neighbour
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let config = PipelineConfig {
        neighbours: vec![Neighbour {
            node: hop(1).node,
            addr: neighbour.local_addr().unwrap(),
        }],
        link_rate: RATE as u32,
        link_queue: 64,
        max_burst: 32,
        delay_capacity: 256,
        max_delay: DelayMs(1000),
        batch: 32,
        loop_mailbox: MailboxId([0xf0; 16]),
    };
    let replay = SharedReplayFilter::new(100_000).unwrap();
    replay.prepare(EPOCH);
    let loops = LoopMonitor::new([7; 32], 1, 64, Time(Time::SECOND)).unwrap();
    // Cover is built in the pipeline's thread: link cover for the idle slots before and
    // after the load, no loops.
    let cover = LoopCover::new(
        FORMAT,
        EPOCH,
        vec![vec![hop(1)]],
        MailboxId([0xf0; 16]),
        0,
        loops,
        [9; 32],
    );
    // The packets, built before the clock starts: OFFERED per second for SECONDS.
    let packets: Vec<[u8; PACKET_LEN]> = (0..OFFERED * SECONDS)
        .map(|n| {
            let mut p = [0u8; PACKET_LEN];
            let seed = blake3::hash(&n.to_le_bytes());
            create_packet_with(
                FORMAT,
                &mut p,
                EPOCH,
                &[hop(0), hop(1)],
                MailboxId([0xab; 16]),
                b"load",
                seed.as_bytes(),
            )
            .unwrap();
            p
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let reader_stop = Arc::new(AtomicBool::new(false));
    let arrived = Arc::new(AtomicU64::new(0));
    let origin = Instant::now();
    let now = move || Time(origin.elapsed().as_nanos() as u64);

    let (stats, windows, links) = thread::scope(|scope| {
        let reader = {
            let (stop, arrived, neighbour) = (reader_stop.clone(), arrived.clone(), &neighbour);
            scope.spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if neighbour.recv(&mut buf).is_ok() {
                        arrived.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        let relay_thread = {
            let (stop, config, replay) = (stop.clone(), &config, &replay);
            scope.spawn(move || {
                let keys = NodeKeys {
                    current: key(0),
                    previous: None,
                    format: Some(FORMAT),
                };
                let mut pipeline = Pipeline::new(
                    io,
                    config,
                    keys,
                    replay,
                    Box::new(cover),
                    Box::new(NoSink),
                    now(),
                )
                .unwrap();
                // Per-second windows of the link, counted by the pipeline's own thread.
                let mut windows: Vec<LinkStats> = Vec::new();
                let mut last = pipeline.link_stats()[0];
                let start = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    pipeline.step(now(), Duration::from_millis(1)).unwrap();
                    if start.elapsed() >= Duration::from_secs(windows.len() as u64 + 1) {
                        let current = pipeline.link_stats()[0];
                        windows.push(LinkStats {
                            real: current.real - last.real,
                            cover: current.cover - last.cover,
                            missed: current.missed - last.missed,
                            dropped_full: current.dropped_full - last.dropped_full,
                        });
                        last = current;
                    }
                }
                (pipeline.stats(), windows, pipeline.link_stats())
            })
        };

        // Offer five times the link rate, in bursts of ten every 10 ms, for SECONDS.
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let start = Instant::now();
        for (i, chunk) in packets.chunks(10).enumerate() {
            let due = Duration::from_millis(10 * i as u64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                thread::sleep(wait);
            }
            for p in chunk {
                client.send_to(p, relay).unwrap();
            }
        }
        // One more second for the queues to drain into the link, then stop.
        thread::sleep(Duration::from_secs(1));
        stop.store(true, Ordering::Relaxed);
        let report = relay_thread.join().unwrap();
        // The reader stops once the last packets sent have had time to arrive.
        thread::sleep(Duration::from_millis(300));
        reader_stop.store(true, Ordering::Relaxed);
        reader.join().unwrap();
        report
    });

    let link = links[0];
    // Every full window carried the rate (within 2%) and missed nothing, under load as
    // before and after it.
    assert!(windows.len() >= SECONDS as usize, "{windows:?}");
    for w in &windows {
        let sent = w.real + w.cover;
        assert!(
            sent.abs_diff(RATE) * 50 <= RATE,
            "a window sent {sent}: {windows:?}"
        );
        assert_eq!(w.missed, 0, "{windows:?}");
    }
    assert_eq!(link.missed, 0, "{link:?}");
    // Under load the link carried real packets only (the queue never ran dry).
    assert!(windows[1].real >= RATE * 98 / 100, "{windows:?}");
    // The excess was refused by the bounded queues and counted; nothing else was lost.
    let offered = OFFERED * SECONDS;
    let refused = stats.dropped_link_full + stats.dropped_delay.iter().sum::<u64>();
    assert_eq!(stats.received, offered, "{stats:?}");
    assert_eq!(
        stats.forwarded + stats.dropped_delay.iter().sum::<u64>(),
        offered,
        "{stats:?}"
    );
    assert_eq!(stats.dropped.iter().sum::<u64>(), 0, "{stats:?}");
    assert!(refused > offered / 2, "{stats:?}");
    assert_eq!(link.real + refused, offered, "{stats:?} {link:?}");
    // What the link sent arrived.
    assert_eq!(arrived.load(Ordering::Relaxed), link.real + link.cover);
}
