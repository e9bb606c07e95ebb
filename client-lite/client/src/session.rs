//! One client session with an exit: its reliable channel, its streams, the SURBs it has
//! handed out and how to open the replies they bring. It builds every packet the client
//! sends: a real one when there is something to say (data, a retransmission, an
//! acknowledgement, SURBs the exit needs), cover otherwise. No I/O; time and randomness
//! come in as arguments.

use std::{
    collections::{HashMap, VecDeque},
    time::Duration,
};

use pb_control::{Placed, Topology};
use pb_proto::{
    Channel, ChannelConfig, ClientMessage, ExitMessage, SessionId, Side, Streams,
    message::{CLIENT_CHANNEL_ROOM, EXIT_MAILBOX, MAX_SURBS},
};
use pb_sphinx::{
    DelayMs, Hop, MailboxId, NodeId, PACKET_LEN, SurbId, SurbSecrets, create_packet, create_surb,
};

/// Randomness for routes, delays, ids and packet seeds (the OS's in the binary).
pub trait Random {
    /// Fills `buf` with random bytes.
    fn fill(&mut self, buf: &mut [u8]);

    /// A number below `n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        (u64::from_le_bytes(b) % n.max(1) as u64) as usize
    }

    /// An exponentially distributed duration with mean `mean`.
    fn exponential(&mut self, mean: Duration) -> Duration {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        // Uniform in (0, 1], never 0: -ln(u) is finite.
        let u = ((u64::from_le_bytes(b) >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        mean.mul_f64(-u.ln())
    }

    /// 32 random bytes.
    fn seed(&mut self) -> [u8; 32] {
        let mut s = [0u8; 32];
        self.fill(&mut s);
        s
    }
}

/// How a client sends.
#[derive(Clone, Copy, Debug)]
pub struct Profile {
    /// Mean time between the packets the client sends (real or cover): a Poisson process.
    pub mean_gap: Duration,
    /// Mean time between its loop packets: a second Poisson process.
    pub loop_gap: Duration,
    /// Mean per-hop delay asked of each relay.
    pub mean_delay: Duration,
    /// SURBs kept at the exit while nothing is being fetched.
    pub idle_surbs: u32,
    /// SURBs kept at the exit while something is.
    pub busy_surbs: u32,
    /// Records a second the gateway sends down, replies or padding: the download ceiling.
    pub downlink_rate: u16,
    /// Records a second the client sends up, packets or padding: room for its Poisson
    /// packets and loops (a packet is a little more than a record) with some to spare.
    pub uplink_rate: u16,
    /// Whether idle slots carry cover packets and idle link records padding: always, but
    /// in the anonymity harness's known-bad setup (`--insecure-no-cover`).
    pub cover: bool,
}

impl Profile {
    /// The default profile: 50 packets a second plus a loop a second up, 100 datagrams a
    /// second down, 20 ms per hop (docs/user.md has what it costs).
    pub const DEFAULT: Profile = Profile {
        mean_gap: Duration::from_millis(20),
        loop_gap: Duration::from_secs(1),
        mean_delay: Duration::from_millis(20),
        idle_surbs: 16,
        busy_surbs: 64,
        downlink_rate: 100,
        uplink_rate: 64,
        cover: true,
    };
    /// The low-power profile for phones: 5 packets a second plus a loop every 10 s up, 10
    /// datagrams a second down, 20 ms per hop, a smaller SURB stock.
    pub const LOW_POWER: Profile = Profile {
        mean_gap: Duration::from_millis(200),
        loop_gap: Duration::from_secs(10),
        mean_delay: Duration::from_millis(20),
        idle_surbs: 8,
        busy_surbs: 8,
        downlink_rate: 10,
        uplink_rate: 8,
        cover: true,
    };

    /// Bytes a day on the client's link, both ways, idle or busy alike: its records at
    /// the two constant rates (UDP payloads; IP and UDP headers add 28 bytes a record).
    pub fn bytes_per_day(&self) -> f64 {
        (f64::from(self.uplink_rate) + f64::from(self.downlink_rate))
            * pb_link::RECORD_LEN as f64
            * 86_400.0
    }
}

/// How often a client fetches the directory again once it has one.
pub const FETCH_GAP: Duration = Duration::from_secs(5);

/// Longest per-hop delay asked for (relays refuse more than their `max_delay`).
const MAX_HOP_DELAY: Duration = Duration::from_secs(2);
/// SURBs handed out are remembered this long (for the count of what the exit holds).
const SURB_MEMORY: Duration = Duration::from_secs(60);
/// No reply for this long while streams are open: the exit's last count no longer holds.
const SURB_SILENCE: Duration = Duration::from_secs(3);
/// Most SURB secrets remembered (the oldest are forgotten: their replies can no longer be
/// opened).
const MAX_SECRETS: usize = 8192;

/// Counters of a session.
#[derive(Clone, Copy, Debug, Default)]
pub struct SessionStats {
    /// Real packets built.
    pub packets: u64,
    /// SURBs handed to the exit.
    pub surbs_sent: u64,
    /// Replies opened.
    pub replies: u64,
    /// Replies that could not be opened (unknown or forgotten SURB, tampered, malformed).
    pub bad_replies: u64,
}

/// One session.
pub struct Session {
    id: SessionId,
    channel: Channel,
    /// Its streams (the SOCKS connections).
    pub streams: Streams,
    mailbox: MailboxId,
    exit: NodeId,
    secrets: HashMap<SurbId, SurbSecrets>,
    order: VecDeque<SurbId>,
    /// SURBs handed out: when, and how many (the last [`SURB_MEMORY`] of them).
    handed: VecDeque<(Duration, u32)>,
    /// The exit's last count of the SURBs it holds, and when it came.
    report: Option<(Duration, u32)>,
    exit_wanted: u32,
    profile: Profile,
    stats: SessionStats,
    /// A probe was asked for: the next new message carries nothing but must be
    /// acknowledged.
    probe: bool,
}

impl core::fmt::Debug for Session {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // No ids, no mailbox, no routes.
        f.debug_struct("Session")
            .field("streams", &self.streams.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Why a packet could not be built.
#[derive(Debug, PartialEq, Eq)]
pub enum NoRoute {
    /// The topology has no gateway, mix or exit in some layer, or lacks this session's
    /// gateway or exit.
    Topology,
}

impl Session {
    /// A new session over `exit`, its replies coming to `mailbox`.
    pub fn new(
        random: &mut dyn Random,
        mailbox: MailboxId,
        exit: NodeId,
        profile: Profile,
    ) -> Self {
        let mut id = [0u8; 16];
        random.fill(&mut id);
        Self {
            id: SessionId(id),
            channel: Channel::new(ChannelConfig::default()),
            streams: Streams::new(Side::Client),
            mailbox,
            exit,
            secrets: HashMap::new(),
            order: VecDeque::new(),
            handed: VecDeque::new(),
            report: None,
            exit_wanted: 0,
            profile,
            stats: SessionStats::default(),
            probe: false,
        }
    }

    /// Counters.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// The session's id (random, fresh each run).
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The exit the session goes to.
    pub fn exit(&self) -> NodeId {
        self.exit
    }

    /// The channel gave up: a message went unacknowledged through every retry.
    pub fn is_broken(&self) -> bool {
        self.channel.is_broken()
    }

    /// How many SURBs the exit holds or will soon: its last count plus what was handed out
    /// since (a second before it, for what was on its way). Replies get lost (and with them
    /// the count); while streams are open and no reply has come for [`SURB_SILENCE`], only
    /// the SURBs handed out within that time are counted: the others were used on replies
    /// that did not arrive, or never reached the exit.
    fn surbs_at_exit(&self, now: Duration) -> u32 {
        let since = |t: Duration| -> u32 {
            self.handed
                .iter()
                .filter(|(at, _)| *at >= t)
                .map(|(_, n)| n)
                .sum()
        };
        match self.report {
            Some((at, held))
                if self.streams.is_empty() || now.saturating_sub(at) < SURB_SILENCE =>
            {
                held + since(at.saturating_sub(Duration::from_secs(1)))
            }
            Some(_) => since(now.saturating_sub(SURB_SILENCE)),
            None => since(Duration::ZERO),
        }
    }

    fn surbs_needed(&self, now: Duration) -> u32 {
        let target = if self.streams.is_empty() {
            self.profile.idle_surbs
        } else {
            // No more than a second of the downlink: what the exit sends beyond that waits
            // in the gateway's mailbox, and the round trip grows with the queue.
            (self.profile.busy_surbs + self.exit_wanted).min(u32::from(self.profile.downlink_rate))
        };
        target.saturating_sub(self.surbs_at_exit(now))
    }

    /// Whether the next send slot should carry a real packet of this session.
    pub fn wants_to_send(&self, now: Duration) -> bool {
        self.channel.retransmission_due(now)
            || (self.channel.can_send_new() && self.streams.has_pending())
            || self.channel.ack_owed()
            || self.surbs_needed(now) > 0
    }

    /// Builds this session's next real packet (to the exit through `gateway` and one mix
    /// per layer), with as many SURBs as it needs and fit.
    pub fn packet(
        &mut self,
        now: Duration,
        topology: &Topology,
        gateway: NodeId,
        random: &mut dyn Random,
    ) -> Result<[u8; PACKET_LEN], NoRoute> {
        let route = self.forward_route(topology, gateway, random)?;
        let (streams, probe) = (&mut self.streams, &mut self.probe);
        let channel = match self
            .channel
            .transmit(now, CLIENT_CHANNEL_ROOM, |out, room| {
                streams.fill(out, room);
                if out.is_empty() && *probe {
                    out.push(pb_proto::frame::END);
                    *probe = false;
                }
            }) {
            Some(c) => c,
            None => self.channel.idle_message(),
        };
        let want = self
            .surbs_needed(now)
            .min(ClientMessage::surb_room(channel.len()) as u32)
            .min(MAX_SURBS as u32);
        let mut surbs = Vec::new();
        for _ in 0..want {
            surbs.push(self.surb(topology, gateway, random)?);
        }
        let message = ClientMessage {
            session: self.id,
            surbs: surbs.iter().map(|s| &s[..]).collect(),
            channel: &channel,
        }
        .encode()
        .map_err(|_| NoRoute::Topology)?;
        let mut packet = [0u8; PACKET_LEN];
        create_packet(
            &mut packet,
            topology.epoch(),
            &route,
            EXIT_MAILBOX,
            &message,
            &random.seed(),
        )
        .map_err(|_| NoRoute::Topology)?;
        self.stats.packets += 1;
        self.stats.surbs_sent += u64::from(want);
        if want > 0 {
            self.handed.push_back((now, want));
        }
        while self
            .handed
            .front()
            .is_some_and(|(at, _)| now.saturating_sub(*at) > SURB_MEMORY)
        {
            self.handed.pop_front();
        }
        Ok(packet)
    }

    pub(crate) fn hop(p: &Placed, random: &mut dyn Random, mean: Duration) -> Hop {
        let delay = random.exponential(mean).min(MAX_HOP_DELAY);
        Hop {
            node: p.node,
            public_key: p.sphinx_key,
            delay: DelayMs(delay.as_millis() as u32),
        }
    }

    pub(crate) fn pick<'a>(
        topology: &'a Topology,
        layer: usize,
        random: &mut dyn Random,
    ) -> Result<&'a Placed, NoRoute> {
        // By the weights of the reputation table the stewards committed to, once the
        // client holds it (docs/spec/ledger.md); all alike before.
        topology
            .pick(layer, |n| random.below(n))
            .ok_or(NoRoute::Topology)
    }

    /// Gateway, a mix per layer, the exit.
    fn forward_route(
        &self,
        topology: &Topology,
        gateway: NodeId,
        random: &mut dyn Random,
    ) -> Result<Vec<Hop>, NoRoute> {
        let mean = self.profile.mean_delay;
        let gateway = topology.find(gateway).ok_or(NoRoute::Topology)?;
        let exit = topology.find(self.exit).ok_or(NoRoute::Topology)?;
        let mut route = vec![Self::hop(gateway, random, mean)];
        for layer in 1..=pb_control::MIX_LAYERS {
            route.push(Self::hop(
                Self::pick(topology, layer, random)?,
                random,
                mean,
            ));
        }
        route.push(Hop {
            delay: DelayMs(0),
            ..Self::hop(exit, random, mean)
        });
        Ok(route)
    }

    /// A SURB back from the exit: a mix per layer, last layer first, then this client's
    /// gateway, which holds the mailbox.
    fn surb(
        &mut self,
        topology: &Topology,
        gateway: NodeId,
        random: &mut dyn Random,
    ) -> Result<Vec<u8>, NoRoute> {
        let mean = self.profile.mean_delay;
        let mut route = Vec::new();
        for layer in (1..=pb_control::MIX_LAYERS).rev() {
            route.push(Self::hop(
                Self::pick(topology, layer, random)?,
                random,
                mean,
            ));
        }
        let gateway = topology.find(gateway).ok_or(NoRoute::Topology)?;
        route.push(Self::hop(gateway, random, mean));
        let mut id = [0u8; 16];
        random.fill(&mut id);
        let (surb, secrets) = create_surb(
            topology.epoch(),
            &route,
            self.mailbox,
            SurbId(id),
            &random.seed(),
        )
        .map_err(|_| NoRoute::Topology)?;
        if self.order.len() >= MAX_SECRETS
            && let Some(old) = self.order.pop_front()
        {
            self.secrets.remove(&old);
        }
        self.secrets.insert(SurbId(id), secrets);
        self.order.push_back(SurbId(id));
        Ok(surb.to_bytes().to_vec())
    }

    /// Asks for a probe: the next new message this session sends, if it has nothing else to
    /// say, is an empty one that the exit must acknowledge (a loop that is a real message).
    pub fn probe(&mut self) {
        self.probe = true;
    }

    /// The channel's counters (a loop session's messages are its probes).
    pub fn channel_stats(&self) -> (pb_proto::ChannelStats, usize) {
        (self.channel.stats(), self.channel.in_flight())
    }

    /// Whether `surb` is one of this session's.
    pub fn owns(&self, surb: &SurbId) -> bool {
        self.secrets.contains_key(surb)
    }

    /// Opens a reply that came back through `surb` and takes in what it carries.
    pub fn reply(&mut self, now: Duration, surb: SurbId, payload: &mut [u8]) {
        let Some(secrets) = self.secrets.remove(&surb) else {
            self.stats.bad_replies += 1;
            return;
        };
        let Ok(message) = secrets.open_reply(payload) else {
            self.stats.bad_replies += 1;
            return;
        };
        let Ok(m) = ExitMessage::parse(message) else {
            self.stats.bad_replies += 1;
            return;
        };
        self.stats.replies += 1;
        self.report = Some((now, u32::from(m.held)));
        self.exit_wanted = u32::from(m.wanted);
        match self.channel.receive(now, m.channel) {
            Ok(delivered) => {
                for frames in delivered {
                    if self.streams.handle(&frames).is_err() {
                        self.stats.bad_replies += 1;
                    }
                }
            }
            Err(_) => self.stats.bad_replies += 1,
        }
    }
}

/// What a send slot carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carried {
    /// A session's real packet.
    Real,
    /// Cover.
    Cover,
}

/// The packet for one send slot: the real packet of the next session (round robin from
/// `turn`) that has something to send, else cover. A real packet that cannot be built gives
/// way to cover, so every slot is filled whatever the sessions hold: whether and when the
/// client sends never depends on what the user does.
pub fn slot_packet<'s>(
    sessions: impl Iterator<Item = &'s mut Session>,
    turn: &mut usize,
    now: Duration,
    topology: &Topology,
    gateway: NodeId,
    profile: &Profile,
    random: &mut dyn Random,
) -> Result<([u8; PACKET_LEN], Carried), NoRoute> {
    let mut sessions: Vec<&mut Session> = sessions.collect();
    let n = sessions.len();
    for i in 0..n {
        let index = (*turn + i) % n;
        if sessions[index].wants_to_send(now) {
            *turn = index + 1;
            if let Ok(packet) = sessions[index].packet(now, topology, gateway, random) {
                return Ok((packet, Carried::Real));
            }
            break;
        }
    }
    Ok((
        cover_packet(topology, gateway, profile, random)?,
        Carried::Cover,
    ))
}

/// A cover packet: a route like a real one, to a random exit, delivered to the cover
/// mailbox (the exit counts and drops it). On the client's link it cannot be told apart.
pub fn cover_packet(
    topology: &Topology,
    gateway: NodeId,
    profile: &Profile,
    random: &mut dyn Random,
) -> Result<[u8; PACKET_LEN], NoRoute> {
    let mean = profile.mean_delay;
    let gateway = topology.find(gateway).ok_or(NoRoute::Topology)?;
    let mut route = vec![Session::hop(gateway, random, mean)];
    for layer in 1..=pb_control::LAYERS - 1 {
        route.push(Session::hop(
            Session::pick(topology, layer, random)?,
            random,
            mean,
        ));
    }
    let mut packet = [0u8; PACKET_LEN];
    create_packet(
        &mut packet,
        topology.epoch(),
        &route,
        MailboxId([0; 16]),
        &[],
        &random.seed(),
    )
    .map_err(|_| NoRoute::Topology)?;
    Ok(packet)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, clippy::panic, reason = "tests")]
pub(crate) mod tests {
    use super::*;
    use pb_control::{Descriptor, IdentityKeyPair, Role};
    use pb_proto::{Reply, StreamEvent, Target, message::EXIT_CHANNEL_ROOM};
    use pb_sphinx::{Epoch, EpochKey, MemoryReplayFilter, NodeKeys, Processed, Surb, process};

    /// A seeded stand-in for the OS generator (splitmix64).
    pub(crate) struct Seeded(pub(crate) u64);

    impl Random for Seeded {
        fn fill(&mut self, buf: &mut [u8]) {
            for b in buf {
                self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = self.0;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                *b = (z ^ (z >> 31)) as u8;
            }
        }
    }

    const EPOCH: Epoch = Epoch(9);

    /// One relay per layer: their keys by node id, and the topology.
    pub(crate) fn network() -> (HashMap<NodeId, NodeKeys>, Topology) {
        let roles = [Role::Gateway, Role::Mix, Role::Mix, Role::Mix, Role::Exit];
        let mut keys = HashMap::new();
        let mut descriptors = Vec::new();
        for (i, role) in roles.into_iter().enumerate() {
            let pair = IdentityKeyPair::from_seed(&[i as u8 + 1; 32]);
            let key = EpochKey::from_secret(EPOCH, [i as u8 + 50; 32]);
            let at = |port| std::net::SocketAddr::from(([198, 18, 0, i as u8 + 1], port));
            let d = Descriptor {
                identity: pair.public(),
                version: 1,
                role,
                epoch: EPOCH,
                sphinx_current: key.public_key(),
                sphinx_next: [0; 32],
                packet_addr: at(47470),
                gossip_addr: at(47471),
                link_key: pair.link_public(),
                transports: vec![],
            };
            keys.insert(
                d.node_id(),
                NodeKeys {
                    current: key,
                    previous: None,
                    format: None,
                },
            );
            descriptors.push(d);
        }
        let topology = Topology::compute(&[7; 32], EPOCH, &descriptors).unwrap();
        (keys, topology)
    }

    /// Runs `packet` hop by hop from `first` until it is delivered.
    fn travel(
        keys: &HashMap<NodeId, NodeKeys>,
        first: NodeId,
        packet: &mut [u8; PACKET_LEN],
    ) -> Processed {
        let mut replay = MemoryReplayFilter::default();
        let mut at = first;
        loop {
            match process(packet, &keys[&at], &mut replay).unwrap() {
                Processed::Forward { next, .. } => at = next,
                delivered => return delivered,
            }
        }
    }

    #[test]
    fn a_stream_opens_and_its_reply_comes_back_through_a_surb() {
        let (keys, topology) = network();
        let gateway = topology.layer(0)[0].node;
        let exit = topology.layer(4)[0].node;
        let mut random = Seeded(1);
        let mailbox = MailboxId([0xab; 16]);
        let mut session = Session::new(&mut random, mailbox, exit, Profile::DEFAULT);
        let stream = session
            .streams
            .open(Target::Name("example.org".into(), 80))
            .unwrap();
        assert!(session.wants_to_send(Duration::ZERO));
        let mut packet = session
            .packet(Duration::ZERO, &topology, gateway, &mut random)
            .unwrap();
        // Gateway, three mixes, exit: delivered to the exit's mailbox.
        let Processed::Deliver { mailbox: to, .. } = travel(&keys, gateway, &mut packet) else {
            panic!("not delivered");
        };
        assert_eq!(to, EXIT_MAILBOX);
        let message = pb_sphinx::message(&packet);
        let m = ClientMessage::parse(message).unwrap();
        assert_eq!(
            m.surbs.len(),
            3,
            "three SURBs beside a short channel message"
        );
        // The exit's side: take the open, answer it through a SURB.
        let mut exit_channel = Channel::new(ChannelConfig::default());
        let mut exit_streams = Streams::new(Side::Exit);
        for frames in exit_channel.receive(Duration::ZERO, m.channel).unwrap() {
            exit_streams.handle(&frames).unwrap();
        }
        assert!(matches!(
            exit_streams.poll_event(),
            Some(StreamEvent::Open { .. })
        ));
        exit_streams.accept(stream);
        exit_streams.write(stream, b"HTTP/1.0 200 OK\r\n\r\nhello");
        let answer = exit_channel
            .transmit(Duration::ZERO, EXIT_CHANNEL_ROOM, |out, room| {
                exit_streams.fill(out, room)
            })
            .unwrap();
        let reply = ExitMessage {
            held: 1,
            wanted: 0,
            channel: &answer,
        }
        .encode();
        let surb = Surb::from_bytes(m.surbs[0]).unwrap();
        let mut back = [0u8; PACKET_LEN];
        let first = surb.into_reply(&mut back, &reply).unwrap();
        // Mix 3, 2, 1, gateway: delivered to the client's mailbox, still wrapped.
        let Processed::DeliverReply {
            mailbox: to, surb, ..
        } = travel(&keys, first, &mut back)
        else {
            panic!("not a reply");
        };
        assert_eq!(to, mailbox);
        assert!(session.owns(&surb));
        session.reply(
            Duration::from_millis(300),
            surb,
            pb_sphinx::payload_mut(&mut back),
        );
        assert_eq!(
            session.streams.poll_event(),
            Some(StreamEvent::Opened {
                stream,
                reply: Reply::Succeeded
            })
        );
        let mut buf = [0u8; 64];
        let n = session.streams.read(stream, &mut buf);
        assert_eq!(&buf[..n], b"HTTP/1.0 200 OK\r\n\r\nhello");
        assert_eq!(session.stats().replies, 1);
        // A reply through a SURB it never made, or replayed: not opened.
        session.reply(Duration::from_millis(400), surb, &mut [0u8; 1199]);
        assert_eq!(session.stats().bad_replies, 1);
    }

    #[test]
    fn cover_looks_like_a_real_packet_and_is_dropped_by_the_exit() {
        let (keys, topology) = network();
        let gateway = topology.layer(0)[0].node;
        let mut packet =
            cover_packet(&topology, gateway, &Profile::DEFAULT, &mut Seeded(2)).unwrap();
        let Processed::Deliver { mailbox, .. } = travel(&keys, gateway, &mut packet) else {
            panic!("not delivered");
        };
        assert_eq!(mailbox, MailboxId([0; 16]), "the cover mailbox");
    }

    #[test]
    fn the_uplink_is_the_same_whether_the_user_is_idle_or_busy() {
        // Ten seconds of the client's send process, idle and while a stream uploads: the
        // times come from the schedule's own stream, and every slot carries a packet of
        // the one size. Only the content differs, and it is encrypted.
        let (_, topology) = network();
        let gateway = topology.layer(0)[0].node;
        let exit = topology.layer(4)[0].node;
        let profile = Profile::DEFAULT;
        let uplink = |busy: bool| {
            let mut random = Seeded(if busy { 10 } else { 20 });
            let mut sessions = [Session::new(&mut random, MailboxId([1; 16]), exit, profile)];
            if busy {
                let stream = sessions[0]
                    .streams
                    .open(Target::Name("example.org".into(), 80))
                    .unwrap();
                sessions[0].streams.write(stream, &vec![0x55; 200_000]);
            }
            let mut schedule = crate::schedule::Schedule::new(&[9; 32], &profile, Duration::ZERO);
            let (mut sent, mut real, mut turn) = (Vec::new(), 0, 0);
            while schedule.next().0 <= Duration::from_secs(10) {
                let Some((at, crate::schedule::Due::Send)) = schedule.take(schedule.next().0)
                else {
                    continue;
                };
                let (packet, carried) = slot_packet(
                    sessions.iter_mut(),
                    &mut turn,
                    at,
                    &topology,
                    gateway,
                    &profile,
                    &mut random,
                )
                .unwrap();
                real += usize::from(carried == Carried::Real);
                sent.push((at, packet.len()));
            }
            (sent, real)
        };
        let (idle, idle_real) = uplink(false);
        let (busy, busy_real) = uplink(true);
        assert!(idle.len() > 400, "{} slots in 10 s", idle.len());
        assert_eq!(idle, busy, "the uplink's times or sizes depend on the user");
        // Idle sends a few real packets (the session stocks the exit with SURBs) and
        // busy many: the content did differ.
        assert!(
            busy_real > idle_real + 100,
            "{busy_real} real packets busy, {idle_real} idle"
        );
    }
}
