//! The client's end of the DNS link, sans-IO: each [`DohClient::query`] is one DNS query
//! whose name carries the next chunks of the records queued upstream (padded to the zone's
//! room, so every name has one length); each answer's TXT strings carry chunks of the
//! records coming down. The caller sends the queries (over DoH) at a constant rate and feeds
//! the answers back.

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, RData, RecordType};
use pb_transport::Record;

use crate::name::{QUERY_HEADER, Zone};
use crate::wire::{Assembler, CHUNK_HEADER, Chunker};

/// The UDP size a query asks its resolver to allow for the answer (the DNS flag day's).
pub const EDNS_SIZE: u16 = 1232;

/// Why an answer was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// Not a DNS response.
    #[error("not a DNS response")]
    Malformed,
    /// A response, but not a success (the resolver's SERVFAIL, say).
    #[error("the resolver answered {0}")]
    Failed(u16),
    /// A success about another name, or without our TXT answer.
    #[error("an answer to another question")]
    Question,
}

/// The client's end of one DNS link session.
#[derive(Debug)]
pub struct DohClient {
    zone: Zone,
    session: [u8; 8],
    sequence: u16,
    up: Chunker,
    down: Assembler,
    /// Queries made.
    pub queries: u64,
    /// Answers taken.
    pub answers: u64,
    /// Answers refused (each [`AnswerError`]).
    pub bad_answers: u64,
}

impl DohClient {
    /// A session with id `session` (random, from the caller) to the name server of `zone`.
    pub fn new(zone: Zone, session: [u8; 8]) -> Self {
        Self {
            zone,
            session,
            sequence: 0,
            up: Chunker::default(),
            down: Assembler::default(),
            queries: 0,
            answers: 0,
            bad_answers: 0,
        }
    }

    /// Record bytes one query carries upstream.
    pub fn upstream_room(&self) -> usize {
        self.zone.room() - QUERY_HEADER - CHUNK_HEADER
    }

    /// Queues `record` upstream; `false` if the queue is full.
    pub fn send(&mut self, record: &Record) -> bool {
        self.up.push(record)
    }

    /// Records queued upstream.
    pub fn backlog(&self) -> usize {
        self.up.len()
    }

    /// The next record received.
    pub fn recv(&mut self) -> Option<Record> {
        self.down.pop()
    }

    /// Whether a whole record is waiting for [`DohClient::recv`].
    pub fn recv_ready(&self) -> bool {
        self.down.ready() > 0
    }

    /// Records given up downstream for a lost chunk.
    pub fn lost(&self) -> u64 {
        self.down.lost
    }

    /// The next query (message id 0, as RFC 8484 asks), its padding from `pad`.
    pub fn query(&mut self, pad: &mut dyn FnMut(&mut [u8])) -> Vec<u8> {
        let room = self.zone.room();
        let mut bytes = Vec::with_capacity(room);
        bytes.extend_from_slice(&self.session);
        bytes.extend_from_slice(&self.sequence.to_be_bytes());
        self.sequence = self.sequence.wrapping_add(1);
        let left = room - bytes.len();
        self.up.fill(&mut bytes, left, 1);
        let used = bytes.len();
        bytes.resize(room, 0);
        pad(&mut bytes[used..]);
        self.queries += 1;
        let mut message = Message::new(0, MessageType::Query, OpCode::Query);
        message.metadata.recursion_desired = true;
        if let Some(name) = self.zone.encode(&bytes) {
            message.add_query(Query::query(name, RecordType::TXT));
        }
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_SIZE);
        message.set_edns(edns);
        message.to_vec().unwrap_or_default()
    }

    /// Takes an answer to one of this session's queries.
    pub fn answer(&mut self, bytes: &[u8]) -> Result<(), AnswerError> {
        let result = self.take(bytes);
        match result {
            Ok(()) => self.answers += 1,
            Err(_) => self.bad_answers += 1,
        }
        result
    }

    fn take(&mut self, bytes: &[u8]) -> Result<(), AnswerError> {
        let message = Message::from_vec(bytes).map_err(|_| AnswerError::Malformed)?;
        if message.metadata.message_type != MessageType::Response {
            return Err(AnswerError::Malformed);
        }
        if message.metadata.response_code != ResponseCode::NoError {
            return Err(AnswerError::Failed(message.metadata.response_code.into()));
        }
        let [question] = message.queries.as_slice() else {
            return Err(AnswerError::Question);
        };
        let ours = self
            .zone
            .decode(&question.name)
            .is_some_and(|b| b.get(..8) == Some(&self.session[..]));
        if !ours || question.query_type != RecordType::TXT {
            return Err(AnswerError::Question);
        }
        let mut payload = Vec::new();
        let mut found = false;
        for record in &message.answers {
            if record.dns_class != DNSClass::IN || !record.name.eq_ignore_root(&question.name) {
                continue;
            }
            if let RData::TXT(txt) = &record.data {
                found = true;
                for s in txt.txt_data.iter() {
                    payload.extend_from_slice(s);
                }
            }
        }
        if !found {
            return Err(AnswerError::Question);
        }
        self.down.take_all(&payload);
        Ok(())
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use std::time::{Duration, Instant};

    use hickory_proto::rr::Name;
    use pb_transport::RECORD_LEN;

    use super::*;
    use crate::authority::{Authority, MAX_RESPONSE};

    fn record(seed: u8) -> Record {
        core::array::from_fn(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
    }

    fn zone() -> Zone {
        Zone::parse("t.pb.test").unwrap()
    }

    fn key() -> crate::SessionKey {
        crate::SessionKey::derive(&[9; 32], &zone())
    }

    fn pad() -> impl FnMut(&mut [u8]) {
        let mut x = 0x9e37_79b9u32;
        move |b: &mut [u8]| {
            for byte in b {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *byte = x as u8;
            }
        }
    }

    #[test]
    fn records_cross_both_ways_through_the_name_server() {
        let mut server = Authority::new(zone(), key());
        let mut client = DohClient::new(zone(), key().session_id(*b"ses1"));
        let mut pad = pad();
        let now = Instant::now();
        for s in 0..20 {
            assert!(client.send(&record(s)));
        }
        // The first query opens the session; records for it can then be queued.
        let q = client.query(&mut pad);
        let a = server.answer(&q, now).unwrap();
        client.answer(&a).unwrap();
        let (peer, _) = (0..200)
            .find_map(|_| {
                let q = client.query(&mut pad);
                let a = server.answer(&q, now).unwrap();
                assert!(a.len() <= MAX_RESPONSE);
                client.answer(&a).unwrap();
                server.recv()
            })
            .unwrap();
        for s in 0..20 {
            assert!(server.send(peer, &record(100 + s)));
        }
        let mut up = 1;
        let mut down = Vec::new();
        let mut queries = 0;
        while up < 20 || down.len() < 20 {
            let q = client.query(&mut pad);
            let a = server.answer(&q, now).unwrap();
            client.answer(&a).unwrap();
            while let Some((p, r)) = server.recv() {
                assert_eq!(p, peer);
                assert_eq!(r, record(up));
                up += 1;
            }
            while let Some(r) = client.recv() {
                down.push(r);
            }
            queries += 1;
            assert!(queries < 1000);
        }
        for (i, r) in down.iter().enumerate() {
            assert_eq!(*r, record(100 + i as u8));
        }
        // Every query name has one length.
        let lengths: std::collections::BTreeSet<usize> =
            (0..5).map(|_| client.query(&mut pad).len()).collect();
        assert_eq!(lengths.len(), 1);
        // One record upstream takes this many queries; one answer carries most of a record.
        assert_eq!(RECORD_LEN.div_ceil(client.upstream_room()), 11);
        assert_eq!(server.sessions(), 1);
        server.expire(now + Duration::from_secs(31));
        assert_eq!(server.poll_closed(), Some(peer));
        assert!(!server.send(peer, &record(1)));
    }

    #[test]
    fn strangers_get_an_ordinary_name_server() {
        let mut server = Authority::new(zone(), key());
        let now = Instant::now();
        let ask = |server: &mut Authority, name: &str, t: RecordType| {
            let mut m = Message::new(7, MessageType::Query, OpCode::Query);
            m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
            Message::from_vec(&server.answer(&m.to_vec().unwrap(), now).unwrap()).unwrap()
        };
        let soa = ask(&mut server, "t.pb.test.", RecordType::SOA);
        assert_eq!(soa.metadata.response_code, ResponseCode::NoError);
        assert!(soa.metadata.authoritative);
        assert!(matches!(soa.answers[0].data, RData::SOA(_)));
        let ns = ask(&mut server, "t.pb.test.", RecordType::NS);
        assert!(matches!(ns.answers[0].data, RData::NS(_)));
        let www = ask(&mut server, "www.t.pb.test.", RecordType::A);
        assert_eq!(www.metadata.response_code, ResponseCode::NXDomain);
        let other = ask(&mut server, "example.com.", RecordType::A);
        assert_eq!(other.metadata.response_code, ResponseCode::Refused);
        // A full-length name whose session id is not tagged under the key is any other name.
        let mut stranger = DohClient::new(zone(), *b"session!");
        let q = Message::from_vec(&stranger.query(&mut pad())).unwrap();
        let name = q.queries[0].name.to_ascii();
        let forged = ask(&mut server, &name, RecordType::TXT);
        assert_eq!(forged.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(server.sessions(), 0);
        // A TXT query with a short base32 name opens nothing.
        let short = ask(&mut server, "abcd.t.pb.test.", RecordType::TXT);
        assert_eq!(short.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(server.sessions(), 0);
        assert!(server.answer(b"\x00\x01garbage", now).is_none());
        assert!(server.answer(&[], now).is_none());
        // A query's header over garbage gets it back as NSD sends it: NOTIMP for another
        // opcode, FORMERR for QUERY, counts zeroed; a response's header gets nothing.
        let header = [0x12, 0x34, 0x29, 0x80, 0, 5, 0, 0, 0, 0, 0, 0, 0xff, 0xfe];
        assert_eq!(
            server.answer(&header, now).unwrap(),
            [0x12, 0x34, 0xa9, 0x84, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        let query = [0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xff];
        assert_eq!(
            server.answer(&query, now).unwrap(),
            [0x12, 0x34, 0x81, 0x01, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert!(
            server
                .answer(&[0x12, 0x34, 0x81, 0, 0, 1, 0, 0, 0, 0, 0, 0, 9], now)
                .is_none()
        );
        assert_eq!(server.counters().malformed, 5);
        // With its address, the server serves its own name and glue, as a zone file does.
        let mut server = Authority::new(zone(), key())
            .with_ns_address(std::net::Ipv4Addr::new(192, 0, 2, 53).into());
        let soa = ask(&mut server, "t.pb.test.", RecordType::SOA);
        assert_eq!(
            (
                soa.answers.len(),
                soa.authorities.len(),
                soa.additionals.len()
            ),
            (1, 1, 1)
        );
        let ns = ask(&mut server, "t.pb.test.", RecordType::NS);
        assert_eq!((ns.answers.len(), ns.additionals.len()), (1, 1));
        let a = ask(&mut server, "ns.t.pb.test.", RecordType::A);
        assert_eq!(a.metadata.response_code, ResponseCode::NoError);
        assert!(matches!(a.answers[0].data, RData::A(_)));
        let aaaa = ask(&mut server, "ns.t.pb.test.", RecordType::AAAA);
        assert_eq!(aaaa.metadata.response_code, ResponseCode::NoError);
        assert!(aaaa.answers.is_empty());
        assert_eq!(aaaa.authorities.len(), 1);
    }

    #[test]
    fn answers_fit_what_the_query_allows() {
        let mut server = Authority::new(zone(), key());
        let mut client = DohClient::new(zone(), key().session_id(*b"ses2"));
        let mut pad = pad();
        let now = Instant::now();
        let q = client.query(&mut pad);
        server.answer(&q, now).unwrap();
        for s in 0..10 {
            server.send(pb_transport::Peer(0), &record(s));
        }
        // Without EDNS: 512 bytes.
        let mut m = Message::from_vec(&client.query(&mut pad)).unwrap();
        m.edns = None;
        let a = server.answer(&m.to_vec().unwrap(), now).unwrap();
        assert!(a.len() <= 512, "{}", a.len());
        assert!(a.len() > 480, "{}", a.len());
        client.answer(&a).unwrap();
        let a = server.answer(&client.query(&mut pad), now).unwrap();
        assert!(
            a.len() <= usize::from(EDNS_SIZE) && a.len() > 1200,
            "{}",
            a.len()
        );
    }

    #[test]
    fn bad_answers_are_refused() {
        let mut client = DohClient::new(zone(), key().session_id(*b"ses3"));
        assert_eq!(client.answer(b"junk"), Err(AnswerError::Malformed));
        let q = Message::from_vec(&client.query(&mut pad())).unwrap();
        let mut fail = Message::response(0, OpCode::Query);
        fail.metadata.response_code = ResponseCode::ServFail;
        fail.add_query(q.queries[0].clone());
        assert_eq!(
            client.answer(&fail.to_vec().unwrap()),
            Err(AnswerError::Failed(2))
        );
        let mut other = DohClient::new(zone(), key().session_id(*b"othr"));
        let theirs = Message::from_vec(&other.query(&mut pad())).unwrap();
        let mut wrong = Message::response(0, OpCode::Query);
        wrong.add_query(theirs.queries[0].clone());
        assert_eq!(
            client.answer(&wrong.to_vec().unwrap()),
            Err(AnswerError::Question)
        );
        assert_eq!(client.bad_answers, 3);
    }
}
