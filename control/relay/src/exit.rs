//! The exit: opens the TCP connections clients ask for, under the exit policy, and sends
//! what comes back in replies built from the SURBs the clients supply. One thread, a mio
//! loop over the TCP connections; names are resolved by a non-blocking resolver on a thread
//! of its own ([`resolver`]), each lookup answered by a deadline ([`lookups`]).
//!
//! Client messages reach it from the cores' sinks through a bounded queue, which it empties
//! each turn into a backlog of its own where established sessions go first ([`backlog`]);
//! its replies go to the dataplane through [`Handoff::inject`], where they wait for a slot
//! on the link to their first hop like any forwarded packet, so the link's constant rate
//! is kept.
//!
//! A session is known by the random id in its messages; it holds a reliable channel, its
//! streams and its SURBs, and is forgotten after [`SESSION_IDLE`] without a message, or
//! sooner to make room for a new one if it holds no connection ([`limits`]). Connections,
//! lookups and buffered bytes are capped per session and in all, so that no client can take
//! the exit's file descriptors or memory. Nothing about a session is logged; counters only.

use std::{
    collections::{HashMap, VecDeque},
    io::{ErrorKind, Read as _, Write as _},
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use mio::{Events, Interest, Poll, Token, Waker, net::TcpStream};
use pb_pipeline::Handoff;
use pb_proto::{
    Channel, ChannelConfig, ClientMessage, ExitMessage, Reply, SessionId, Side, StreamEvent,
    StreamId, Streams, Target, dns::Family, frame::Resolution, message::EXIT_CHANNEL_ROOM,
};
use pb_sphinx::{Epoch, MESSAGE_LEN, PACKET_LEN, Surb};

use crate::slots::Slots;

mod backlog;
pub(crate) mod limits;
pub(crate) mod lookups;
mod policy;
pub(crate) mod resolver;
pub(crate) mod udp;

use backlog::Backlog;
use limits::{Refusal, SessionTable};
use lookups::{LookupId, Lookups};
pub use policy::{DEFAULT_REFUSED_PORTS, ExitPolicy, PortRange};
use resolver::Resolver;

/// A session without a message for this long is forgotten (its connections closed).
pub const SESSION_IDLE: Duration = Duration::from_secs(600);
/// Most SURBs held per session.
const MAX_SURBS: usize = 2048;
/// Connection attempts give up after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const WAKER: Token = Token(0);
/// The host's addresses are read again this often, for the exit policy.
const OWN_ADDRESSES_REFRESH: Duration = Duration::from_secs(10);

/// Counters of the exit.
#[derive(Debug, Default)]
pub struct ExitStats {
    /// Client messages taken.
    pub messages: AtomicU64,
    /// Client messages that did not parse (or came with a bad channel header).
    pub malformed: AtomicU64,
    /// Client messages the cores could not queue.
    pub queue_full: AtomicU64,
    /// Client messages the exit dropped from its backlog to stay within it: fresh
    /// sessions' first ([`backlog`]).
    pub backlog_shed: AtomicU64,
    /// Sessions opened.
    pub sessions: AtomicU64,
    /// Sessions forgotten to make room for a new one (the table was full).
    pub sessions_evicted: AtomicU64,
    /// New sessions refused: the table was full of sessions holding connections or lookups.
    pub sessions_refused: AtomicU64,
    /// Streams opened to a destination.
    pub connected: AtomicU64,
    /// Streams refused by the exit policy.
    pub refused_policy: AtomicU64,
    /// Streams whose destination did not resolve or answer.
    pub failed: AtomicU64,
    /// Names resolved for clients' own DNS (`resolve` frames answered with addresses).
    pub resolved: AtomicU64,
    /// Names clients asked to resolve that do not exist, or failed to resolve.
    pub resolve_failed: AtomicU64,
    /// Addresses left out of clients' DNS answers: the exit policy refuses them, so an
    /// exit's own networks are not disclosed.
    pub resolve_addresses_withheld: AtomicU64,
    /// UDP flows opened.
    pub udp_flows: AtomicU64,
    /// UDP flows refused: a name, or the exit policy (address or port).
    pub udp_refused_policy: AtomicU64,
    /// UDP flows refused: the session or the exit had its most.
    pub udp_refused_caps: AtomicU64,
    /// Datagrams sent to destinations.
    pub udp_datagrams_out: AtomicU64,
    /// Datagrams from destinations passed to their clients.
    pub udp_datagrams_in: AtomicU64,
    /// Datagrams dropped: a socket that did not take one, or a client's full queue.
    pub udp_dropped: AtomicU64,
    /// Replies sent into the dataplane.
    pub replies: AtomicU64,
    /// Replies the dataplane could not take (its queue full).
    pub inject_full: AtomicU64,
    /// SURBs dropped unused (stale epoch, or over the per-session bound).
    pub surbs_dropped: AtomicU64,
    /// Streams refused (0x01): the session had its most connections.
    pub refused_session_connections: AtomicU64,
    /// Streams refused (0x01): the exit had its most connections.
    pub refused_connections: AtomicU64,
    /// Sessions forgotten, with their connections and lookups, to make room for a new one in
    /// a table full of sessions holding something: each had been quiet over 30 s.
    pub sessions_reclaimed: AtomicU64,
    /// Connections taken back for a session that asked when the exit held its most: a
    /// quiet session's, or one of the largest holder's ([`limits::Reclaim`]).
    pub connections_reclaimed: AtomicU64,
    /// Streams refused (0x01): the session had its most name lookups.
    pub refused_session_lookups: AtomicU64,
    /// Streams refused (0x01): the exit had its most name lookups.
    pub refused_lookups: AtomicU64,
    /// Streams answered 0x04: their name did not resolve by the deadline.
    pub lookup_timeouts: AtomicU64,
    /// Streams answered 0x04: their lookup gave its place to another while the exit was
    /// full (the session holding the most lookups gave one up, or a lookup resolving for
    /// half a second gave its slot to a waiting one).
    pub lookups_preempted: AtomicU64,
    /// DNS answers dropped: malformed, or not from the server asked, or under another id or
    /// about another question (a confused server, or an off-path attacker guessing).
    pub lookup_answers_refused: AtomicU64,
    /// Streams reset: the exit held too much for destinations that did not take it.
    pub reset_buffered: AtomicU64,
}

impl ExitStats {
    /// Every counter with its metric name.
    pub fn metrics(&self) -> Vec<(String, u64)> {
        [
            ("messages", &self.messages),
            ("malformed", &self.malformed),
            ("queue_full", &self.queue_full),
            ("backlog_shed", &self.backlog_shed),
            ("sessions", &self.sessions),
            ("sessions_evicted", &self.sessions_evicted),
            ("sessions_refused", &self.sessions_refused),
            ("sessions_reclaimed", &self.sessions_reclaimed),
            ("connected", &self.connected),
            ("refused_policy", &self.refused_policy),
            ("failed", &self.failed),
            ("resolved", &self.resolved),
            ("resolve_failed", &self.resolve_failed),
            (
                "resolve_addresses_withheld",
                &self.resolve_addresses_withheld,
            ),
            ("udp_flows", &self.udp_flows),
            ("udp_refused_policy", &self.udp_refused_policy),
            ("udp_refused_caps", &self.udp_refused_caps),
            ("udp_datagrams_out", &self.udp_datagrams_out),
            ("udp_datagrams_in", &self.udp_datagrams_in),
            ("udp_dropped", &self.udp_dropped),
            ("replies", &self.replies),
            ("inject_full", &self.inject_full),
            ("surbs_dropped", &self.surbs_dropped),
            (
                "refused_session_connections",
                &self.refused_session_connections,
            ),
            ("refused_connections", &self.refused_connections),
            ("connections_reclaimed", &self.connections_reclaimed),
            ("refused_session_lookups", &self.refused_session_lookups),
            ("refused_lookups", &self.refused_lookups),
            ("lookup_timeouts", &self.lookup_timeouts),
            ("lookups_preempted", &self.lookups_preempted),
            ("lookup_answers_refused", &self.lookup_answers_refused),
            ("reset_buffered", &self.reset_buffered),
        ]
        .into_iter()
        .map(|(name, v)| crate::metrics::role_metric("exit", name, v))
        .collect()
    }
}

/// The cores' side: delivered client messages, queued for the exit thread.
#[derive(Clone)]
pub struct ExitInbox {
    slots: Arc<Slots<[u8; MESSAGE_LEN]>>,
    stats: Arc<ExitStats>,
}

impl ExitInbox {
    /// A queue of `depth` messages.
    pub fn new(depth: usize, stats: Arc<ExitStats>) -> Self {
        Self {
            slots: Arc::new(Slots::new(depth, || [0u8; MESSAGE_LEN])),
            stats,
        }
    }

    /// Queues a delivered message (from a core's sink).
    pub fn push(&self, message: &[u8]) {
        let queued = self.slots.push_with(|slot| {
            let n = message.len().min(MESSAGE_LEN);
            slot[..n].copy_from_slice(&message[..n]);
            slot[n..].fill(0);
        });
        if !queued {
            self.stats.queue_full.fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct Session {
    channel: Channel,
    streams: Streams,
    surbs: VecDeque<(Epoch, Surb)>,
}

struct Conn {
    session: SessionId,
    stream: StreamId,
    tcp: TcpStream,
    connected: bool,
    started: Duration,
    /// Bytes from the client not yet written to the destination.
    pending: Vec<u8>,
    /// The client's half-close has been passed on.
    shut_down: bool,
    /// The destination has finished (or failed): read no more.
    read_done: bool,
    /// The socket may have bytes: an event came since a read last found none (mio's events
    /// are edge-triggered), so idle connections cost no read each turn.
    may_read: bool,
}

/// The exit's thread.
pub struct Exit {
    inbox: ExitInbox,
    handoff: Arc<Handoff>,
    policy: ExitPolicy,
    epoch: Arc<AtomicU32>,
    sessions: SessionTable<Session>,
    conns: HashMap<Token, Conn>,
    by_stream: HashMap<(SessionId, StreamId), Token>,
    /// UDP flows, under tokens of the same numbers as the connections'.
    udp: udp::UdpFlows,
    next_token: usize,
    poll: Poll,
    lookups: Lookups,
    resolver: Resolver,
    /// Messages taken from the cores, not yet answered.
    backlog: Backlog<Box<[u8; MESSAGE_LEN]>>,
    /// Bytes each stream may hold for its client ([`limits::stream_buffer`]).
    stream_buffer: usize,
    buf: Vec<u8>,
}

impl Exit {
    /// The exit thread's state, with its resolvers started and the host's addresses read
    /// for the policy (an exit that cannot read them does not start). It allows at most
    /// `max_connections`, fewer if the process's open-files limit is too low for them.
    pub fn new(
        inbox: ExitInbox,
        handoff: Arc<Handoff>,
        mut policy: ExitPolicy,
        epoch: Arc<AtomicU32>,
        max_connections: usize,
    ) -> anyhow::Result<Self> {
        policy.refresh_own()?;
        let allowed = limits::connection_cap(max_connections, limits::open_files_limit());
        if allowed < max_connections {
            tracing::warn!(
                configured = max_connections,
                allowed,
                "the open-files limit leaves room for fewer exit connections than configured; \
                 raise it (LimitNOFILE) to allow more"
            );
        }
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let stats = inbox.stats.clone();
        let resolver = Resolver::start(
            resolver::Files::system(),
            resolver::conf::Budget::EXIT,
            waker,
            stats.clone(),
        )?;
        Ok(Self {
            inbox,
            handoff,
            policy,
            epoch,
            sessions: SessionTable::new(limits::Caps::with_connections(allowed), stats),
            conns: HashMap::new(),
            by_stream: HashMap::new(),
            udp: udp::UdpFlows::default(),
            next_token: 1,
            poll,
            lookups: Lookups::new(
                lookups::RESOLVING,
                lookups::MAX_LOOKUPS,
                lookups::LOOKUP_DEADLINE,
            ),
            resolver,
            backlog: Backlog::new(backlog::MOST, backlog::SESSION_MOST),
            stream_buffer: limits::stream_buffer(allowed),
            buf: vec![0; 16 * 1024],
        })
    }

    /// Runs until `stop` is set.
    pub fn run(mut self, stop: &AtomicBool) {
        let mut events = Events::with_capacity(256);
        let mut sweep_at = Instant::now();
        let mut own_read_at = Instant::now();
        let origin = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            // Messages left from the last turn: look at the connections and carry on.
            let wait = if self.backlog.is_empty() {
                Duration::from_millis(3)
            } else {
                Duration::ZERO
            };
            let _ = self.poll.poll(&mut events, Some(wait));
            let now = origin.elapsed();
            for event in events.iter() {
                match event.token() {
                    WAKER => {}
                    token if self.udp.contains(token) => self.udp_ready(token, now),
                    token => self.connection_ready(token),
                }
            }
            while let Some((id, result)) = self.resolver.try_answer() {
                self.resolved(id, result, now);
            }
            self.take_messages(now);
            for _ in 0..backlog::PER_TURN {
                let Some(message) = self.backlog.pop() else {
                    break;
                };
                self.message(&message[..], now);
                self.inbox.slots.give_back(message);
            }
            self.expire_lookups(now);
            self.dispatch_lookups(now);
            self.pump(now);
            self.send(now);
            if sweep_at.elapsed() >= Duration::from_secs(1) {
                sweep_at = Instant::now();
                self.sweep(now);
            }
            if own_read_at.elapsed() >= OWN_ADDRESSES_REFRESH {
                own_read_at = Instant::now();
                // A failure is warned about and keeps the last list.
                let _ = self.policy.refresh_own();
            }
        }
    }

    fn stats(&self) -> &ExitStats {
        &self.inbox.stats
    }

    /// Files everything the cores queued into the backlog, settled sessions' apart (see
    /// [`backlog`]), so that the cores' queue has room again.
    fn take_messages(&mut self, now: Duration) {
        while let Some(message) = self.inbox.slots.pop() {
            let session = ClientMessage::session_of(&message[..]);
            let settled = session
                .and_then(|id| self.sessions.since(&id))
                .is_some_and(|since| now.saturating_sub(since) >= limits::YOUNG);
            if let Some(shed) = self.backlog.push(session, settled, message) {
                self.stats().backlog_shed.fetch_add(1, Ordering::Relaxed);
                self.inbox.slots.give_back(shed);
            }
        }
    }

    /// A client message: its SURBs, then its channel message.
    fn message(&mut self, bytes: &[u8], now: Duration) {
        self.stats().messages.fetch_add(1, Ordering::Relaxed);
        let Ok(m) = ClientMessage::parse(bytes) else {
            self.stats().malformed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let epoch = Epoch(self.epoch.load(Ordering::Relaxed));
        let new = || Session {
            channel: Channel::new(ChannelConfig::default()),
            streams: Streams::new(Side::Exit),
            surbs: VecDeque::new(),
        };
        // A full table of sessions that all hold something makes room by forgetting one
        // that has gone quiet.
        if let Some(quiet) = self
            .sessions
            .quiet_to_evict(m.session, now, limits::RECLAIM_QUIET)
        {
            self.forget_session(quiet);
            self.stats()
                .sessions_reclaimed
                .fetch_add(1, Ordering::Relaxed);
        }
        // `None`: the table is full of sessions holding connections (counted).
        let Some(session) = self.sessions.admit(m.session, now, new) else {
            return;
        };
        for bytes in &m.surbs {
            let Ok(surb) = Surb::from_bytes(bytes) else {
                self.inbox
                    .stats
                    .surbs_dropped
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let surb_epoch = surb.epoch();
            if surb_epoch.0.saturating_add(1) < epoch.0 {
                self.inbox
                    .stats
                    .surbs_dropped
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if session.surbs.len() >= MAX_SURBS {
                session.surbs.pop_front();
                self.inbox
                    .stats
                    .surbs_dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
            session.surbs.push_back((surb_epoch, surb));
        }
        match session.channel.receive(now, m.channel) {
            Ok(delivered) => {
                for frames in delivered {
                    if session.streams.handle(&frames).is_err() {
                        self.inbox.stats.malformed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Err(_) => {
                self.inbox.stats.malformed.fetch_add(1, Ordering::Relaxed);
            }
        }
        let id = m.session;
        self.stream_events(id, now);
    }

    fn stream_events(&mut self, id: SessionId, now: Duration) {
        loop {
            let Some(event) = self
                .sessions
                .get_mut(&id)
                .and_then(|s| s.streams.poll_event())
            else {
                return;
            };
            match event {
                StreamEvent::Open { stream, target } => self.open(id, stream, target, now),
                StreamEvent::Readable(stream) | StreamEvent::Finished(stream) => {
                    if let Some(token) = self.by_stream.get(&(id, stream)).copied() {
                        self.forward_to_destination(token);
                    }
                }
                StreamEvent::Reset { stream, .. } => {
                    self.close(id, stream);
                    self.udp.close(id, stream, self.poll.registry());
                }
                StreamEvent::UdpOpen { id: flow, target } => self.udp_open(id, flow, &target, now),
                StreamEvent::Datagram { id: flow, bytes } => {
                    let stats = &self.inbox.stats;
                    if self.udp.send(id, flow, &bytes, now) {
                        stats.udp_datagrams_out.fetch_add(1, Ordering::Relaxed);
                    } else {
                        stats.udp_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                StreamEvent::Resolve {
                    id: lookup, name, ..
                } => {
                    self.lookup(id, lookup, name.0, now);
                }
                StreamEvent::Opened { .. } | StreamEvent::Resolved { .. } => {}
            }
        }
    }

    fn open(&mut self, session: SessionId, stream: StreamId, target: Target, now: Duration) {
        match target {
            Target::V4(ip, port) => self.connect(session, stream, &[(ip, port).into()], now),
            Target::V6(ip, port) => self.connect(session, stream, &[(ip, port).into()], now),
            Target::Name(name, port) => {
                // An address written as a name is no name to resolve.
                if let Ok(ip) = name.parse::<IpAddr>() {
                    self.connect(session, stream, &[SocketAddr::new(ip, port)], now);
                    return;
                }
                if let Err(why) = self.sessions.start_lookup(session) {
                    self.refuse_for(session, stream, why);
                    return;
                }
                let since = self.sessions.since(&session).unwrap_or(now);
                if let Err(why) = self
                    .lookups
                    .submit_for(session, since, stream, name, port, now)
                {
                    self.sessions.end_lookup(session);
                    self.refuse_for(session, stream, why);
                }
            }
        }
    }

    /// A client's own DNS question (`resolve`): looked up like a stream's name, under the
    /// same caps, and answered with a `resolved` frame.
    fn lookup(&mut self, session: SessionId, id: StreamId, name: String, now: Duration) {
        if let Ok(ip) = name.parse::<IpAddr>() {
            self.answer_lookup(session, id, Ok(vec![SocketAddr::new(ip, 0)]));
            return;
        }
        if let Err(why) = self.sessions.start_lookup(session) {
            self.refuse_for(session, id, why);
            return;
        }
        let since = self.sessions.since(&session).unwrap_or(now);
        if let Err(why) = self.lookups.submit_for(session, since, id, name, 0, now) {
            self.sessions.end_lookup(session);
            self.refuse_for(session, id, why);
        }
    }

    /// Answers lookup `id` with what the resolver found: the addresses of the family asked
    /// for that the policy allows (others withheld, counted), or no such name, or failed.
    fn answer_lookup(
        &mut self,
        session: SessionId,
        id: StreamId,
        result: std::io::Result<Vec<SocketAddr>>,
    ) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        let Some(family) = s.streams.resolving(id) else {
            return;
        };
        let stats = &self.inbox.stats;
        let answer = match result {
            Ok(addrs) => {
                let of_family = addrs.iter().map(SocketAddr::ip).filter(|ip| match family {
                    Family::V4 => ip.is_ipv4(),
                    Family::V6 => ip.is_ipv6(),
                });
                let (allowed, withheld): (Vec<IpAddr>, Vec<IpAddr>) =
                    of_family.partition(|ip| self.policy.allows_ip(*ip));
                stats
                    .resolve_addresses_withheld
                    .fetch_add(withheld.len() as u64, Ordering::Relaxed);
                stats.resolved.fetch_add(1, Ordering::Relaxed);
                Resolution::Found(allowed)
            }
            Err(e) => {
                stats.resolve_failed.fetch_add(1, Ordering::Relaxed);
                if e.kind() == std::io::ErrorKind::NotFound {
                    Resolution::NoSuchName
                } else {
                    Resolution::Failed
                }
            }
        };
        s.streams.answer(id, answer);
    }

    /// A client's UDP flow: opened under the policy and the caps, or refused with a reply.
    fn udp_open(&mut self, session: SessionId, flow: StreamId, target: &Target, now: Duration) {
        let token = Token(self.next_token);
        self.next_token += 1;
        let opened = self.udp.open(
            session,
            flow,
            target,
            &self.policy,
            self.poll.registry(),
            token,
            now,
        );
        let stats = &self.inbox.stats;
        let Some(s) = self.sessions.get_mut(&session) else {
            self.udp.close(session, flow, self.poll.registry());
            return;
        };
        match opened {
            Ok(()) => {
                stats.udp_flows.fetch_add(1, Ordering::Relaxed);
                s.streams.accept(flow);
            }
            Err(why) => {
                let counter = match why {
                    udp::UdpRefusal::Name | udp::UdpRefusal::Policy => &stats.udp_refused_policy,
                    udp::UdpRefusal::Caps | udp::UdpRefusal::Socket => &stats.udp_refused_caps,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                s.streams.refuse(flow, why.reply());
            }
        }
    }

    /// Datagrams from a flow's destination, to its client (dropped when its queue is full).
    fn udp_ready(&mut self, token: Token, now: Duration) {
        let Some((session, flow, datagrams)) = self.udp.receive(token, &mut self.buf, 64, now)
        else {
            return;
        };
        let stats = &self.inbox.stats;
        let Some(s) = self.sessions.get_mut(&session) else {
            self.udp.close(session, flow, self.poll.registry());
            return;
        };
        for d in datagrams {
            if s.streams.send_datagram(flow, &d) {
                stats.udp_datagrams_in.fetch_add(1, Ordering::Relaxed);
            } else {
                stats.udp_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Tells the resolver which lookups to drop (past their deadline, or their streams
    /// gone), and hands it waiting lookups while it has room.
    fn dispatch_lookups(&mut self, now: Duration) {
        self.lookups.taken(self.resolver.taken(), now);
        while let Some(id) = self.lookups.poll_cancelled() {
            self.resolver.cancel(id);
        }
        while let Some(job) = self.lookups.next_job(now) {
            self.resolver.resolve(job);
        }
        // Slots taken back for waiting lookups: the resolver drops them, their streams are
        // answered.
        while let Some(id) = self.lookups.poll_cancelled() {
            self.resolver.cancel(id);
        }
        self.answer_preempted();
    }

    /// Answers 0x04 to the streams whose names have not resolved by their deadline.
    fn expire_lookups(&mut self, now: Duration) {
        for (session, stream) in self.lookups.expire(now) {
            self.sessions.end_lookup(session);
            self.refuse_for(session, stream, Refusal::LookupTimedOut);
        }
        self.answer_preempted();
    }

    /// Answers 0x04 to the streams whose lookups gave their places to others (counted as
    /// `lookups_preempted`).
    fn answer_preempted(&mut self) {
        while let Some((session, stream)) = self.lookups.poll_preempted() {
            self.sessions.end_lookup(session);
            self.stats()
                .lookups_preempted
                .fetch_add(1, Ordering::Relaxed);
            self.refuse(session, stream, Reply::HostUnreachable);
        }
    }

    fn resolved(&mut self, id: LookupId, result: std::io::Result<Vec<SocketAddr>>, now: Duration) {
        // `None`: answered at its deadline already, or its stream or session is gone.
        let Some((session, stream)) = self.lookups.answered(id) else {
            return;
        };
        self.sessions.end_lookup(session);
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        if s.streams.resolving(stream).is_some() {
            self.answer_lookup(session, stream, result);
            return;
        }
        if !s.streams.contains(stream) {
            return;
        }
        match result {
            Ok(addrs) if !addrs.is_empty() => self.connect(session, stream, &addrs, now),
            _ => {
                self.stats().failed.fetch_add(1, Ordering::Relaxed);
                self.refuse(session, stream, Reply::HostUnreachable);
            }
        }
    }

    /// Refuses a stream (or fails a client's own lookup).
    fn refuse(&mut self, session: SessionId, stream: StreamId, reply: Reply) {
        if let Some(s) = self.sessions.get_mut(&session) {
            if s.streams.resolving(stream).is_some() {
                self.inbox
                    .stats
                    .resolve_failed
                    .fetch_add(1, Ordering::Relaxed);
                s.streams.answer(stream, Resolution::Failed);
            } else {
                s.streams.refuse(stream, reply);
            }
        }
    }

    /// Refuses a stream (or fails a client's own lookup) over a cap, or past its lookup's
    /// deadline: its reply and counter.
    fn refuse_for(&mut self, session: SessionId, stream: StreamId, why: Refusal) {
        match self.sessions.get_mut(&session) {
            Some(s) if s.streams.resolving(stream).is_some() => {
                why.count(&self.inbox.stats);
                s.streams.answer(stream, Resolution::Failed);
            }
            Some(s) => limits::refuse_stream(&mut s.streams, stream, why, &self.inbox.stats),
            None => why.count(&self.inbox.stats),
        }
    }

    /// Connects to the first address the policy allows (address and port); refuses the
    /// stream if none.
    fn connect(
        &mut self,
        session: SessionId,
        stream: StreamId,
        addrs: &[SocketAddr],
        now: Duration,
    ) {
        let Some(addr) = addrs.iter().find(|a| self.policy.allows(**a)).copied() else {
            self.stats().refused_policy.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                destination = %pb_log::Sensitive::new(addrs),
                "refused by the exit policy"
            );
            self.refuse(session, stream, Reply::NotAllowed);
            return;
        };
        if let Err(why) = self.open_connection(session, now) {
            self.refuse_for(session, stream, why);
            return;
        }
        tracing::debug!(destination = %pb_log::Sensitive::new(addr), "connecting");
        let mut tcp = match TcpStream::connect(addr) {
            Ok(tcp) => tcp,
            Err(e) => {
                self.sessions.close_connection(session);
                self.stats().failed.fetch_add(1, Ordering::Relaxed);
                self.refuse(session, stream, reply_for(&e));
                return;
            }
        };
        let token = Token(self.next_token);
        self.next_token += 1;
        if self
            .poll
            .registry()
            .register(&mut tcp, token, Interest::READABLE | Interest::WRITABLE)
            .is_err()
        {
            self.sessions.close_connection(session);
            self.refuse(session, stream, Reply::GeneralFailure);
            return;
        }
        self.by_stream.insert((session, stream), token);
        self.conns.insert(
            token,
            Conn {
                session,
                stream,
                tcp,
                connected: false,
                started: now,
                pending: Vec::new(),
                shut_down: false,
                read_done: false,
                may_read: true,
            },
        );
    }

    /// A connection became readable or writable (or failed).
    fn connection_ready(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        conn.may_read = true;
        if !conn.connected {
            match conn.tcp.take_error() {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => {
                    let (session, stream) = (conn.session, conn.stream);
                    self.stats().failed.fetch_add(1, Ordering::Relaxed);
                    self.refuse(session, stream, reply_for(&e));
                    self.drop_conn(token);
                    return;
                }
            }
            if conn.tcp.peer_addr().is_err() {
                return; // still connecting
            }
            conn.connected = true;
            let (session, stream) = (conn.session, conn.stream);
            self.stats().connected.fetch_add(1, Ordering::Relaxed);
            if let Some(s) = self.sessions.get_mut(&session) {
                s.streams.accept(stream);
            }
        }
        self.forward_to_destination(token);
    }

    /// Moves the client's bytes to the destination, as far as it takes them.
    fn forward_to_destination(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        let Some(session) = self.sessions.get_mut(&conn.session) else {
            return;
        };
        loop {
            if conn.pending.is_empty() {
                let n = session.streams.read(conn.stream, &mut self.buf);
                if n == 0 {
                    break;
                }
                conn.pending.extend_from_slice(&self.buf[..n]);
            }
            if !conn.connected {
                return;
            }
            match conn.tcp.write(&conn.pending) {
                Ok(0) => break,
                Ok(n) => {
                    conn.pending.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => {
                    session.streams.reset(conn.stream, Reply::GeneralFailure);
                    self.drop_conn(token);
                    return;
                }
            }
        }
        // The client has finished and everything it sent is written: pass the half-close on.
        if conn.connected
            && !conn.shut_down
            && conn.pending.is_empty()
            && session.streams.readable(conn.stream) == 0
            && session.streams.peer_finished(conn.stream)
        {
            conn.shut_down = true;
            let _ = conn.tcp.shutdown(std::net::Shutdown::Write);
        }
    }

    /// Moves destination bytes into the streams while they are under their share
    /// ([`limits::read_room`]): past it the exit stops reading, and the destination's TCP
    /// window closes.
    fn pump(&mut self, now: Duration) {
        let tokens: Vec<Token> = self.conns.keys().copied().collect();
        for token in tokens {
            let Some(conn) = self.conns.get_mut(&token) else {
                continue;
            };
            if !conn.connected {
                if now.saturating_sub(conn.started) > CONNECT_TIMEOUT {
                    let (session, stream) = (conn.session, conn.stream);
                    self.stats().failed.fetch_add(1, Ordering::Relaxed);
                    self.refuse(session, stream, Reply::TtlExpired);
                    self.drop_conn(token);
                }
                continue;
            }
            let Some(session) = self.sessions.get_mut(&conn.session) else {
                continue;
            };
            if !session.streams.contains(conn.stream) {
                self.drop_conn(token);
                continue;
            }
            while !conn.read_done && conn.may_read {
                let room =
                    limits::read_room(session.streams.send_room(conn.stream), self.stream_buffer)
                        .min(self.buf.len());
                if room == 0 {
                    break;
                }
                match conn.tcp.read(&mut self.buf[..room]) {
                    Ok(0) => {
                        conn.read_done = true;
                        session.streams.finish(conn.stream);
                    }
                    Ok(n) => {
                        session.streams.write(conn.stream, &self.buf[..n]);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => conn.may_read = false,
                    Err(_) => {
                        conn.read_done = true;
                        session.streams.reset(conn.stream, Reply::GeneralFailure);
                    }
                }
            }
        }
    }

    /// Sends what each session has, while it has SURBs.
    fn send(&mut self, now: Duration) {
        let mut packet = [0u8; PACKET_LEN];
        for (_, session, _) in self.sessions.iter_mut() {
            while !session.surbs.is_empty() {
                let due = session.channel.retransmission_due(now)
                    || (session.channel.can_send_new() && session.streams.has_pending())
                    || session.channel.ack_due(now);
                if !due {
                    break;
                }
                let streams = &mut session.streams;
                let Some(channel) =
                    session
                        .channel
                        .transmit(now, EXIT_CHANNEL_ROOM, |out, room| streams.fill(out, room))
                else {
                    break;
                };
                // The newest first: it was made from the client's latest view of the
                // network, so it avoids relays that have failed since older ones were made.
                let Some((_, surb)) = session.surbs.pop_back() else {
                    break;
                };
                let wanted = session.streams.pending_bytes().div_ceil(EXIT_CHANNEL_ROOM);
                let message = ExitMessage {
                    held: session.surbs.len().min(usize::from(u16::MAX)) as u16,
                    wanted: wanted.min(usize::from(u16::MAX)) as u16,
                    channel: &channel,
                }
                .encode();
                let Ok(first) = surb.into_reply(&mut packet, &message) else {
                    continue;
                };
                if self.handoff.inject(first, &packet) {
                    self.inbox.stats.replies.fetch_add(1, Ordering::Relaxed);
                } else {
                    // The reply is lost; the channel sends it again.
                    self.inbox.stats.inject_full.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
    }

    /// Counts a connection of `session`; when the exit holds its most, first takes one back
    /// as [`limits::SessionTable::reclaim`] says (counted as `connections_reclaimed`).
    fn open_connection(&mut self, session: SessionId, now: Duration) -> Result<(), Refusal> {
        match self.sessions.open_connection(session) {
            Err(Refusal::Connections) => {}
            other => return other,
        }
        match self.sessions.reclaim(session, now, limits::RECLAIM_QUIET) {
            Some(limits::Reclaim::Session(quiet)) => self.forget_session(quiet),
            Some(limits::Reclaim::ConnectionOf(holder)) => {
                // Its oldest connection (the lowest token).
                let Some(token) = self
                    .conns
                    .iter()
                    .filter(|(_, c)| c.session == holder)
                    .map(|(t, _)| *t)
                    .min()
                else {
                    return Err(Refusal::Connections);
                };
                if let Some(stream) = self.conns.get(&token).map(|c| c.stream) {
                    self.refuse(holder, stream, Reply::GeneralFailure);
                }
                self.drop_conn(token);
            }
            None => return Err(Refusal::Connections),
        }
        self.stats()
            .connections_reclaimed
            .fetch_add(1, Ordering::Relaxed);
        self.sessions.open_connection(session)
    }

    /// Forgets session `id` with its lookups and connections.
    fn forget_session(&mut self, id: SessionId) {
        self.sessions.remove(&id);
        self.lookups.forget_session(id);
        self.udp.close_session(id, self.poll.registry());
        let tokens: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, c)| c.session == id)
            .map(|(t, _)| *t)
            .collect();
        for t in tokens {
            self.drop_conn(t);
        }
    }

    /// Forgets idle or broken sessions and stale SURBs, and sheds what is buffered towards
    /// destinations over the budget.
    fn sweep(&mut self, now: Duration) {
        let epoch = self.epoch.load(Ordering::Relaxed);
        let mut gone = Vec::new();
        for (id, s, last_heard) in self.sessions.iter_mut() {
            let before = s.surbs.len();
            s.surbs.retain(|(e, _)| e.0.saturating_add(1) >= epoch);
            self.inbox
                .stats
                .surbs_dropped
                .fetch_add((before - s.surbs.len()) as u64, Ordering::Relaxed);
            if now.saturating_sub(last_heard) > SESSION_IDLE || s.channel.is_broken() {
                gone.push(id);
            }
        }
        for id in gone {
            self.forget_session(id);
        }
        for (session, flow) in self.udp.close_idle(now, self.poll.registry()) {
            if let Some(s) = self.sessions.get_mut(&session) {
                s.streams.close_flow(flow);
            }
        }
        self.shed_buffered();
    }

    /// Over [`limits::TO_DESTINATIONS_BUFFERED`] held for destinations (a stream's unread
    /// bytes and its write buffer), resets the streams holding the most until the rest fit:
    /// their destinations are the ones not reading.
    fn shed_buffered(&mut self) {
        let holders: Vec<(usize, Token)> = self
            .conns
            .iter()
            .map(|(token, c)| {
                let unread = self
                    .sessions
                    .get(&c.session)
                    .map_or(0, |s| s.streams.readable(c.stream));
                (unread + c.pending.len(), *token)
            })
            .collect();
        for token in limits::over_budget(holders, limits::TO_DESTINATIONS_BUFFERED) {
            let Some(conn) = self.conns.get(&token) else {
                continue;
            };
            if let Some(s) = self.sessions.get_mut(&conn.session) {
                limits::reset_stream(
                    &mut s.streams,
                    conn.stream,
                    Refusal::Buffered,
                    &self.inbox.stats,
                );
            }
            self.drop_conn(token);
        }
    }

    fn close(&mut self, session: SessionId, stream: StreamId) {
        if let Some(token) = self.by_stream.get(&(session, stream)).copied() {
            self.drop_conn(token);
        }
        if self.lookups.forget(session, stream) {
            self.sessions.end_lookup(session);
        }
    }

    fn drop_conn(&mut self, token: Token) {
        if let Some(mut conn) = self.conns.remove(&token) {
            let _ = self.poll.registry().deregister(&mut conn.tcp);
            self.by_stream.remove(&(conn.session, conn.stream));
            self.sessions.close_connection(conn.session);
        }
    }
}

/// The SOCKS reply for a failed connection.
fn reply_for(e: &std::io::Error) -> Reply {
    match e.kind() {
        ErrorKind::ConnectionRefused => Reply::ConnectionRefused,
        ErrorKind::NetworkUnreachable => Reply::NetworkUnreachable,
        ErrorKind::HostUnreachable => Reply::HostUnreachable,
        ErrorKind::TimedOut => Reply::TtlExpired,
        _ => Reply::GeneralFailure,
    }
}

/// Opaque in `Debug`: it holds buffers, sockets or user data.
impl core::fmt::Debug for ExitInbox {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ExitInbox").finish_non_exhaustive()
    }
}

/// Opaque in `Debug`: it holds buffers, sockets or user data.
impl core::fmt::Debug for Exit {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Exit").finish_non_exhaustive()
    }
}
