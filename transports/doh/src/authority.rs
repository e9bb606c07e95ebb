//! The gateway's name server, sans-IO: an ordinary authoritative server for its zone to
//! everyone, and the end of a client's DNS link for query names that carry one.
//!
//! [`Authority::answer`] takes a query's bytes and gives the response's bytes (or nothing,
//! for what is not a DNS query): every session query gets a TXT answer carrying the chunks of
//! its session's queued records that fit the size the query allows; the records its name
//! carried go to [`Authority::recv`].

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, NS, SOA, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record as DnsRecord, RecordType};
use pb_transport::{Peer, Record};

use crate::name::{QUERY_HEADER, SessionKey, Zone};
use crate::wire::{Assembler, Chunker};

/// A session not heard from for this long is closed.
pub const SESSION_IDLE: Duration = Duration::from_secs(30);
/// Sessions at once; the one heard from longest ago makes room.
pub const MAX_SESSIONS: usize = 16_384;
/// How often silent sessions are looked for: one walk over them a second, not one a turn.
const SWEEP: Duration = Duration::from_secs(1);
/// The largest response this server sends over UDP, whatever a query allows.
pub const MAX_RESPONSE: usize = 1232;
/// What a query without EDNS allows (RFC 1035).
const CLASSIC_UDP: usize = 512;
/// The zone's SOA serial.
const SERIAL: u32 = 2_026_120_701;

/// One client's session, known by the id in its query names.
#[derive(Debug)]
struct Session {
    peer: Peer,
    heard: Instant,
    up: Assembler,
    down: Chunker,
}

/// Counters of the name server.
#[derive(Clone, Copy, Debug, Default)]
pub struct AuthorityCounters {
    /// Session queries answered.
    pub session_queries: u64,
    /// Other queries answered as an ordinary server would (SOA, NS, NXDOMAIN, REFUSED).
    pub other_queries: u64,
    /// Datagrams that were no DNS query: dropped.
    pub malformed: u64,
    /// Sessions opened.
    pub sessions_opened: u64,
    /// Sessions closed for silence or to make room.
    pub sessions_closed: u64,
    /// Records refused for a full session queue.
    pub refused: u64,
    /// Upstream records given up for a lost chunk.
    pub lost: u64,
}

/// The gateway's authoritative name server for its zone.
#[derive(Debug)]
pub struct Authority {
    zone: Zone,
    key: SessionKey,
    /// The name server's own address, served as `ns.<zone>` (its glue).
    ns_address: Option<IpAddr>,
    sessions: HashMap<[u8; 8], Session>,
    ids: HashMap<Peer, [u8; 8]>,
    next_peer: u64,
    received: VecDeque<(Peer, Record)>,
    closed: VecDeque<Peer>,
    counters: AuthorityCounters,
    /// When silent sessions are next looked for (while any is open).
    next_sweep: Option<Instant>,
}

impl Authority {
    /// A server for `zone`, whose sessions' ids are tagged under `key`.
    pub fn new(zone: Zone, key: SessionKey) -> Self {
        Self {
            zone,
            key,
            ns_address: None,
            sessions: HashMap::new(),
            ids: HashMap::new(),
            next_peer: 0,
            received: VecDeque::new(),
            closed: VecDeque::new(),
            counters: AuthorityCounters::default(),
            next_sweep: None,
        }
    }

    /// Serves `ip` as the address of `ns.<zone>`, this server's own name, as a zone's file
    /// does (and its glue with SOA and NS answers).
    pub fn with_ns_address(mut self, ip: IpAddr) -> Self {
        self.ns_address = Some(ip);
        self
    }

    /// The zone.
    pub fn zone(&self) -> &Zone {
        &self.zone
    }

    /// The response to the datagram `query`, `None` if it is no DNS query (dropped).
    pub fn answer(&mut self, query: &[u8], now: Instant) -> Option<Vec<u8>> {
        let Ok(message) = Message::from_vec(query) else {
            self.counters.malformed += 1;
            return unparsed_answer(query);
        };
        if message.metadata.message_type != MessageType::Query {
            self.counters.malformed += 1;
            return None;
        }
        let limit = match &message.edns {
            Some(edns) => usize::from(edns.max_payload()).clamp(CLASSIC_UDP, MAX_RESPONSE),
            None => CLASSIC_UDP,
        };
        let mut response = Message::response(message.metadata.id, message.metadata.op_code);
        response.metadata.recursion_desired = message.metadata.recursion_desired;
        response.metadata.checking_disabled = message.metadata.checking_disabled;
        if message.edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(MAX_RESPONSE as u16);
            response.set_edns(edns);
        }
        let [question] = message.queries.as_slice() else {
            response.metadata.response_code = ResponseCode::FormErr;
            self.counters.other_queries += 1;
            return response.to_vec().ok();
        };
        response.add_query(question.clone());
        if message.metadata.op_code != OpCode::Query {
            response.metadata.response_code = ResponseCode::NotImp;
            self.counters.other_queries += 1;
            return response.to_vec().ok();
        }
        let name = &question.name;
        if question.query_class != DNSClass::IN || !self.zone.name().zone_of(name) {
            response.metadata.response_code = ResponseCode::Refused;
            self.counters.other_queries += 1;
            return response.to_vec().ok();
        }
        response.metadata.authoritative = true;
        if question.query_type == RecordType::TXT
            && let Some(bytes) = self.zone.decode(name)
            && bytes.len() >= QUERY_HEADER
            && self.key.accepts(&bytes[..8])
        {
            self.counters.session_queries += 1;
            return self.session_answer(response, name, &bytes, limit, now);
        }
        self.counters.other_queries += 1;
        let apex = name.num_labels() == self.zone.name().num_labels();
        let glue = self.glue();
        let ns_here = glue.is_some() && name.eq_ignore_root(&self.ns_name());
        // As NSD answers from a zone file of SOA, NS and the name server's address.
        match (apex, ns_here, question.query_type) {
            (true, _, RecordType::SOA) => {
                response.add_answer(self.soa());
                response.add_authority(self.ns());
                response.add_additionals(glue);
            }
            (true, _, RecordType::NS) => {
                response.add_answer(self.ns());
                response.add_additionals(glue);
            }
            (false, true, t) if glue.as_ref().is_some_and(|g| g.record_type() == t) => {
                response.add_answers(glue);
                response.add_authority(self.ns());
            }
            (true, _, _) | (false, true, _) => {
                response.add_authority(self.soa());
            }
            (false, false, _) => {
                response.metadata.response_code = ResponseCode::NXDomain;
                response.add_authority(self.soa());
            }
        }
        response.to_vec().ok()
    }

    fn ns(&self) -> DnsRecord {
        DnsRecord::from_rdata(
            self.zone.name().clone(),
            3600,
            RData::NS(NS(self.ns_name())),
        )
    }

    /// The name server's address record, if it has one.
    fn glue(&self) -> Option<DnsRecord> {
        let data = match self.ns_address? {
            IpAddr::V4(ip) => RData::A(A(ip)),
            IpAddr::V6(ip) => RData::AAAA(AAAA(ip)),
        };
        Some(DnsRecord::from_rdata(self.ns_name(), 3600, data))
    }

    fn ns_name(&self) -> Name {
        Name::from_ascii("ns")
            .and_then(|n| n.append_domain(self.zone.name()))
            .unwrap_or_else(|_| self.zone.name().clone())
    }

    fn soa(&self) -> DnsRecord {
        let rname = Name::from_ascii("hostmaster")
            .and_then(|n| n.append_domain(self.zone.name()))
            .unwrap_or_else(|_| self.zone.name().clone());
        DnsRecord::from_rdata(
            self.zone.name().clone(),
            3600,
            RData::SOA(SOA::new(
                self.ns_name(),
                rname,
                SERIAL,
                7200,
                3600,
                1_209_600,
                60,
            )),
        )
    }

    /// A session query's answer: its chunks taken, the session's queued chunks that fit.
    fn session_answer(
        &mut self,
        mut response: Message,
        name: &Name,
        bytes: &[u8],
        limit: usize,
        now: Instant,
    ) -> Option<Vec<u8>> {
        let mut id = [0u8; 8];
        id.copy_from_slice(&bytes[..8]);
        let session = self.session(id, now);
        session.heard = now;
        session.up.take_all(&bytes[QUERY_HEADER..]);
        let peer = session.peer;
        let mut whole = Vec::new();
        while let Some(record) = session.up.pop() {
            whole.push(record);
        }
        self.received.extend(whole.into_iter().map(|r| (peer, r)));
        // What the response takes without its TXT strings: measured, not guessed.
        let mut bare = response.clone();
        bare.add_answer(DnsRecord::from_rdata(
            name.clone(),
            0,
            RData::TXT(TXT::from_bytes(vec![])),
        ));
        let overhead = bare.to_vec().ok()?.len();
        let room = limit.saturating_sub(overhead);
        // Each string of up to 255 bytes takes one length byte more.
        let data_room = room - room.div_ceil(256);
        let mut payload = Vec::with_capacity(data_room);
        if let Some(session) = self.sessions.get_mut(&id) {
            session.down.fill(&mut payload, data_room, 64);
        }
        let strings: Vec<&[u8]> = if payload.is_empty() {
            vec![&[]]
        } else {
            payload.chunks(255).collect()
        };
        response.add_answer(DnsRecord::from_rdata(
            name.clone(),
            0,
            RData::TXT(TXT::from_bytes(strings)),
        ));
        let out = response.to_vec().ok()?;
        debug_assert!(out.len() <= limit, "{} > {limit}", out.len());
        Some(out)
    }

    /// The session with `id`, opened if new (closing the one heard from longest ago when
    /// full).
    fn session(&mut self, id: [u8; 8], now: Instant) -> &mut Session {
        if !self.sessions.contains_key(&id)
            && self.sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = self
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.heard)
                .map(|(k, _)| *k)
        {
            self.drop_session(oldest);
        }
        self.next_sweep.get_or_insert(now + SWEEP);
        let (next_peer, ids, counters) = (&mut self.next_peer, &mut self.ids, &mut self.counters);
        self.sessions.entry(id).or_insert_with(|| {
            let peer = Peer(*next_peer);
            *next_peer += 1;
            ids.insert(peer, id);
            counters.sessions_opened += 1;
            Session {
                peer,
                heard: now,
                up: Assembler::default(),
                down: Chunker::default(),
            }
        })
    }

    fn drop_session(&mut self, id: [u8; 8]) {
        if let Some(s) = self.sessions.remove(&id) {
            self.ids.remove(&s.peer);
            self.counters.sessions_closed += 1;
            self.counters.lost += s.up.lost;
            self.closed.push_back(s.peer);
        }
    }

    /// Closes sessions silent for [`SESSION_IDLE`] (looked for once a second: a session
    /// closes up to a second late).
    pub fn expire(&mut self, now: Instant) {
        match self.next_sweep {
            Some(at) if now >= at => {}
            _ => return,
        }
        self.next_sweep = (!self.sessions.is_empty()).then_some(now + SWEEP);
        let quiet: Vec<[u8; 8]> = self
            .sessions
            .iter()
            .filter(|(_, s)| now.saturating_duration_since(s.heard) >= SESSION_IDLE)
            .map(|(k, _)| *k)
            .collect();
        for id in quiet {
            self.drop_session(id);
        }
    }

    /// When [`Authority::expire`] must next run, if any session is open.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.next_sweep
    }

    /// The next record received, and from which session.
    pub fn recv(&mut self) -> Option<(Peer, Record)> {
        self.received.pop_front()
    }

    /// Queues `record` for `peer`'s next answers; `false` if it is gone or backlogged.
    pub fn send(&mut self, peer: Peer, record: &Record) -> bool {
        let Some(session) = self.ids.get(&peer).and_then(|id| self.sessions.get_mut(id)) else {
            return false;
        };
        let queued = session.down.push(record);
        if !queued {
            self.counters.refused += 1;
        }
        queued
    }

    /// Forgets `peer`'s session (its next query opens a new one).
    pub fn close(&mut self, peer: Peer) {
        if let Some(id) = self.ids.get(&peer).copied() {
            self.drop_session(id);
            // The link above asked for it: not news to it.
            self.closed.retain(|p| *p != peer);
        }
    }

    /// A session closed since the last call.
    pub fn poll_closed(&mut self) -> Option<Peer> {
        self.closed.pop_front()
    }

    /// What stands for `peer`'s address in the link's cookies: its session id, as an
    /// address in `fd00:d0e::/32`. The resolver's address says nothing about the client, and
    /// a resolver may ask from many; the cookie proves the client read an answer to its id.
    pub fn source(&self, peer: Peer) -> Option<SocketAddr> {
        let id = self.ids.get(&peer)?;
        let word = |i: usize| u16::from_be_bytes([id[i], id[i + 1]]);
        let ip = Ipv6Addr::new(0xfd00, 0x0d0e, 0, 0, word(0), word(2), word(4), word(6));
        Some(SocketAddr::new(ip.into(), 53))
    }

    /// Open sessions.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// The counters.
    pub fn counters(&self) -> AuthorityCounters {
        let mut c = self.counters;
        c.lost += self.sessions.values().map(|s| s.up.lost).sum::<u64>();
        c
    }
}

/// What an authoritative server (NSD) answers to a datagram that is no well-formed query but
/// has a query's header: the header back with QR set, no records, NOTIMP for an opcode other
/// than QUERY and FORMERR for QUERY; nothing for a response or less than a header.
fn unparsed_answer(datagram: &[u8]) -> Option<Vec<u8>> {
    let header = datagram.get(..12)?;
    if header[2] & 0x80 != 0 {
        return None;
    }
    let opcode = (header[2] >> 3) & 0x0f;
    let mut answer = header.to_vec();
    // QR on; the opcode and RD kept; AA and TC off.
    answer[2] = 0x80 | (header[2] & 0x79);
    let code = if opcode == 0 { 1 } else { 4 };
    answer[3] = (header[3] & 0xf0) | code;
    answer[4..12].fill(0);
    Some(answer)
}
