//! A client and a gateway on a virtual clock, records crossing a lossy wire: the handshake,
//! messages both ways, and the constant rate whether anything is sent or not.

#![expect(clippy::unwrap_used, reason = "tests")]

use std::{net::SocketAddr, time::Duration};

use pb_link::{ClientLink, GatewayKey, GatewayLink, Message, Rates, Record, Responded, Responder};

const STEP: Duration = Duration::from_micros(500);

struct World {
    client: ClientLink,
    responder: Responder,
    gateway: Option<Box<GatewayLink>>,
    now: Duration,
    /// Drops a record when the stream's next byte is below this (0: none, 13: about 5%).
    loss: u8,
    random: blake3::OutputReader,
    up_records: u64,
    down_records: u64,
    got_up: Vec<Message>,
    got_down: Vec<Message>,
}

const SOURCE: &str = "198.51.100.7:40000";

impl World {
    fn new(loss: u8, rates: Rates) -> Self {
        let key = GatewayKey::from_secret([42; 32]);
        let public = key.public();
        Self {
            client: ClientLink::new(Duration::ZERO, &public, rates, &[1; 32]),
            responder: Responder::new(key, &[2; 32]),
            gateway: None,
            now: Duration::ZERO,
            loss,
            random: blake3::Hasher::new().update(b"wire").finalize_xof(),
            up_records: 0,
            down_records: 0,
            got_up: Vec::new(),
            got_down: Vec::new(),
        }
    }

    fn lost(&mut self) -> bool {
        let mut b = [0u8; 1];
        self.random.fill(&mut b);
        b[0] < self.loss
    }

    fn deliver_up(&mut self, record: Record) {
        self.up_records += 1;
        if self.lost() {
            return;
        }
        let source: SocketAddr = SOURCE.parse().unwrap();
        if let Some(g) = &mut self.gateway
            && g.handle_record(self.now, &record)
        {
            while let Some(m) = g.poll_message() {
                self.got_up.push(m);
            }
            return;
        }
        match self.responder.respond(self.now, source, &record) {
            Responded::Stranger => {}
            Responded::Reply(r) => self.deliver_down(r),
            Responded::Open(r, g) => {
                self.gateway = Some(g);
                self.deliver_down(r);
            }
        }
    }

    fn deliver_down(&mut self, record: Record) {
        self.down_records += 1;
        if self.lost() {
            return;
        }
        self.client.handle_record(self.now, &record);
        while let Some(m) = self.client.poll_message() {
            self.got_down.push(m);
        }
    }

    /// Runs the clock on to `until`.
    fn run(&mut self, until: Duration) {
        while self.now < until {
            while let Some(r) = self.client.poll_record(self.now) {
                self.deliver_up(r);
            }
            let mut down = Vec::new();
            if let Some(g) = &mut self.gateway {
                g.poll_records(self.now, |r| down.push(r));
            }
            for r in down {
                self.deliver_down(r);
            }
            self.now += STEP;
        }
    }
}

fn message(kind: u8, n: usize) -> Message {
    Message {
        kind,
        body: (0..1452).map(|i| (i + n) as u8).collect(),
    }
}

#[test]
fn messages_cross_both_ways_and_the_rate_is_the_same_busy_or_idle() {
    let rates = Rates { down: 100, up: 50 };
    let mut w = World::new(0, rates);
    w.run(Duration::from_secs(1));
    assert!(w.client.is_open() && w.gateway.is_some());
    assert_eq!(w.client.granted(), Some(rates));
    // Idle for 10 s, then 10 s with more queued each way than the rates carry.
    let (up0, down0) = (w.up_records, w.down_records);
    w.run(Duration::from_secs(11));
    let idle = (w.up_records - up0, w.down_records - down0);
    for n in 0..600 {
        w.client.send(message(7, n), false).unwrap();
        assert!(w.gateway.as_mut().unwrap().send(message(8, n), false));
    }
    let (up1, down1) = (w.up_records, w.down_records);
    w.run(Duration::from_secs(21));
    let busy = (w.up_records - up1, w.down_records - down1);
    assert_eq!(idle, (500, 1000), "10 s at 50 and 100 records a second");
    assert_eq!(busy, idle, "the same records whether busy or idle");
    // Everything sent arrives, in order (a 1455-byte message takes a bit more than a record).
    w.run(Duration::from_secs(40));
    assert_eq!(
        w.got_up,
        (0..600).map(|n| message(7, n)).collect::<Vec<_>>()
    );
    assert_eq!(
        w.got_down,
        (0..600).map(|n| message(8, n)).collect::<Vec<_>>()
    );
    assert_eq!(w.client.stats().missed, 0);
}

/// The known-bad setup of the anonymity harness: without padding, idle slots send nothing
/// either way and busy ones carry what is queued, so the links follow the traffic (which
/// the harness's observer must then see).
#[test]
fn without_padding_the_links_follow_the_traffic() {
    let rates = Rates { down: 100, up: 50 };
    let mut w = World::new(0, rates);
    w.run(Duration::from_secs(1));
    assert!(w.client.is_open() && w.gateway.is_some());
    w.client.set_padding(false);
    w.gateway.as_mut().unwrap().set_padding(false);
    let (up0, down0) = (w.up_records, w.down_records);
    w.run(Duration::from_secs(11));
    assert_eq!((w.up_records - up0, w.down_records - down0), (0, 0));
    for n in 0..20 {
        w.client.send(message(7, n), false).unwrap();
        assert!(w.gateway.as_mut().unwrap().send(message(8, n), false));
    }
    w.run(Duration::from_secs(21));
    let (up, down) = (w.up_records - up0, w.down_records - down0);
    // 20 messages of a little more than a record each: 21 records, not 500 and 1000.
    assert!(
        (20..=22).contains(&up) && (20..=22).contains(&down),
        "{up} {down}"
    );
    assert_eq!(w.got_up, (0..20).map(|n| message(7, n)).collect::<Vec<_>>());
    assert_eq!(
        w.got_down,
        (0..20).map(|n| message(8, n)).collect::<Vec<_>>()
    );
}

#[test]
fn with_five_percent_loss_the_handshake_completes_and_most_messages_arrive_in_order() {
    let mut w = World::new(13, Rates { down: 100, up: 100 });
    w.run(Duration::from_secs(5));
    assert!(w.client.is_open(), "the init is sent again until answered");
    for n in 0..200 {
        w.client.send(message(7, n), false).unwrap();
    }
    w.run(Duration::from_secs(10));
    let sent: Vec<_> = (0..200).map(|n| message(7, n)).collect();
    let mut rest = sent.iter();
    for m in &w.got_up {
        assert!(rest.any(|s| s == m), "delivered in order, never altered");
    }
    // A message spans two records about as often as not: about 10% are lost.
    assert!(
        w.got_up.len() > 150 && w.got_up.len() < 200,
        "{} of 200 arrived",
        w.got_up.len()
    );
}

#[test]
fn a_gateway_that_never_answers_fails_the_link() {
    let key = GatewayKey::from_secret([42; 32]).public();
    let mut c = ClientLink::new(Duration::ZERO, &key, Rates { down: 1, up: 1 }, &[1; 32]);
    let mut now = Duration::ZERO;
    let mut inits = 0;
    while now < Duration::from_secs(30) {
        while c.poll_record(now).is_some() {
            inits += 1;
        }
        now += Duration::from_millis(10);
    }
    assert_eq!(inits, pb_link::client::TRIES);
    assert_eq!(c.failed(), Some(pb_link::LinkError::NoAnswer));
    assert_eq!(c.next_deadline(now), None);
}
