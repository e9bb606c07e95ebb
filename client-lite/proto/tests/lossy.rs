//! A client and an exit (channel and streams each) over a simulated path that loses,
//! delays and reorders messages: a virtual clock and a seeded generator, no sockets. Every
//! byte of every stream arrives, in order, exactly once, at 5 % and at 20 % loss.
#![expect(clippy::unwrap_used, clippy::panic, reason = "tests")]

use std::{collections::BTreeMap, time::Duration};

use pb_proto::{
    Channel, ChannelConfig, Reply, Side, StreamEvent, StreamId, Streams, Target,
    message::{CLIENT_CHANNEL_ROOM, EXIT_CHANNEL_ROOM},
};

/// splitmix64.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

struct End {
    channel: Channel,
    streams: Streams,
    room: usize,
    /// Bytes read per stream.
    got: BTreeMap<StreamId, Vec<u8>>,
    finished: Vec<StreamId>,
}

impl End {
    fn new(side: Side, room: usize) -> Self {
        Self {
            channel: Channel::new(ChannelConfig::default()),
            streams: Streams::new(side),
            room,
            got: BTreeMap::new(),
            finished: Vec::new(),
        }
    }

    fn transmit(&mut self, now: Duration) -> Option<Vec<u8>> {
        let streams = &mut self.streams;
        self.channel
            .transmit(now, self.room, |out, room| streams.fill(out, room))
    }

    fn receive(&mut self, now: Duration, bytes: &[u8]) -> Vec<StreamEvent> {
        for frames in self.channel.receive(now, bytes).unwrap() {
            self.streams.handle(&frames).unwrap();
        }
        let mut events = Vec::new();
        while let Some(e) = self.streams.poll_event() {
            events.push(e);
        }
        events
    }

    fn drain(&mut self) {
        let ids: Vec<StreamId> = self.got.keys().copied().collect();
        for id in ids {
            let mut buf = [0u8; 4096];
            loop {
                let n = self.streams.read(id, &mut buf);
                if n == 0 {
                    break;
                }
                self.got.get_mut(&id).unwrap().extend_from_slice(&buf[..n]);
            }
        }
    }
}

fn body(stream: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32 ^ stream.wrapping_mul(0x9e37)) as u8)
        .collect()
}

/// Three streams: each uploads 20 KiB and downloads 1 MiB; returns the virtual time taken.
fn run(seed: u64, loss_percent: u64) -> Duration {
    let mut dice = Dice(seed);
    let mut client = End::new(Side::Client, CLIENT_CHANNEL_ROOM);
    let mut exit = End::new(Side::Exit, EXIT_CHANNEL_ROOM);
    const DOWN: usize = 1 << 20;
    const UP: usize = 20 << 10;
    let mut ids = Vec::new();
    let mut up_left: BTreeMap<StreamId, Vec<u8>> = BTreeMap::new();
    let mut down_left: BTreeMap<StreamId, Vec<u8>> = BTreeMap::new();
    for i in 0..3u16 {
        let id = client
            .streams
            .open(Target::Name(format!("host{i}.example"), 80))
            .unwrap();
        client.got.insert(id, Vec::new());
        up_left.insert(id, body(id.0, UP));
        ids.push(id);
    }
    // In flight: (arrival, sequence) -> (to the exit?, bytes).
    let mut wire: BTreeMap<(Duration, u64), (bool, Vec<u8>)> = BTreeMap::new();
    let mut sequence = 0u64;
    let tick = Duration::from_millis(5);
    let mut now = Duration::ZERO;
    let done = |client: &End| {
        ids.iter()
            .all(|id| client.got[id].len() == DOWN && client.finished.contains(id))
    };
    while !done(&client) {
        assert!(
            now < Duration::from_secs(900),
            "stuck: {:?} {:?}",
            client.channel,
            exit.channel
        );
        // Applications write what the send buffers take.
        for (id, left) in up_left.iter_mut() {
            let n = client.streams.write(*id, left);
            left.drain(..n);
            if left.is_empty() {
                client.streams.finish(*id);
            }
        }
        for (id, left) in down_left.iter_mut() {
            let n = exit.streams.write(*id, left);
            left.drain(..n);
            if left.is_empty() {
                exit.streams.finish(*id);
            }
        }
        // Each end sends at most one message per tick.
        for to_exit in [true, false] {
            let end = if to_exit { &mut client } else { &mut exit };
            if let Some(bytes) = end.transmit(now)
                && dice.next() % 100 >= loss_percent
            {
                let latency = Duration::from_millis(50 + dice.next() % 250);
                sequence += 1;
                wire.insert((now + latency, sequence), (to_exit, bytes));
            }
        }
        now += tick;
        while let Some(entry) = wire.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (to_exit, bytes) = entry.remove();
            if to_exit {
                for event in exit.receive(now, &bytes) {
                    match event {
                        StreamEvent::Open { stream, .. } => {
                            exit.streams.accept(stream);
                            exit.got.insert(stream, Vec::new());
                            down_left.insert(stream, body(stream.0 + 100, DOWN));
                        }
                        StreamEvent::Finished(id) => exit.finished.push(id),
                        StreamEvent::Readable(_) => {}
                        other => panic!("exit: {other:?}"),
                    }
                }
            } else {
                for event in client.receive(now, &bytes) {
                    match event {
                        StreamEvent::Opened { reply, .. } => assert_eq!(reply, Reply::Succeeded),
                        StreamEvent::Finished(id) => client.finished.push(id),
                        StreamEvent::Readable(_) => {}
                        other => panic!("client: {other:?}"),
                    }
                }
            }
        }
        client.drain();
        exit.drain();
    }
    for id in &ids {
        assert_eq!(client.got[id], body(id.0 + 100, DOWN), "stream {id:?} down");
        assert_eq!(exit.got[id], body(id.0, UP), "stream {id:?} up");
        assert!(exit.finished.contains(id));
    }
    assert!(!client.channel.is_broken() && !exit.channel.is_broken());
    // Retransmissions stay near what was lost (time-based loss detection does not mistake
    // the path's reordering for loss), and few arrive twice.
    let (sent, again) = (
        exit.channel.stats().sent,
        exit.channel.stats().retransmitted,
    );
    let lost_share = loss_percent as f64 / (100.0 - loss_percent as f64);
    assert!(
        (again as f64) < sent as f64 * (lost_share * 1.5 + 0.02),
        "{again} retransmissions for {sent} messages at {loss_percent}% loss"
    );
    assert!(
        client.channel.stats().duplicates * 20 < sent,
        "{:?}",
        client.channel.stats()
    );
    println!(
        "seed {seed} loss {loss_percent}%: {:?}, exit sent {:?}, client sent {:?}",
        now,
        exit.channel.stats(),
        client.channel.stats()
    );
    now
}

#[test]
fn every_byte_arrives_in_order_at_five_and_twenty_percent_loss() {
    for seed in 1..=3 {
        run(seed, 5);
        run(seed, 20);
    }
}
