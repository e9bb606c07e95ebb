//! DNS messages for the exit's resolver, sans-IO: the query for a name and an address
//! family ([`encode_query`]), and what an answer says once it is proved to answer that
//! query ([`check_answer`]): from the server it was sent to, with its id, and about its
//! question. Parsing is hickory-proto's; nothing here panics on any bytes.
//!
//! What it does not do: pick servers, time anything out or touch a socket (that is the
//! resolver's thread), or trust anything an answer says beyond the addresses of the name
//! asked for (records for other names are ignored, CNAMEs are followed only inside the
//! answer's own section).

use std::net::{IpAddr, SocketAddr};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{DNSClass, Name, RData, RecordType},
};

/// CNAMEs followed within one answer: more is a loop or a server not worth believing.
const MAX_ALIASES: usize = 8;

/// Which addresses a query asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// IPv4: A records.
    V4,
    /// IPv6: AAAA records.
    V6,
}

impl Family {
    fn record_type(self) -> RecordType {
        match self {
            Family::V4 => RecordType::A,
            Family::V6 => RecordType::AAAA,
        }
    }
}

/// A name that can be asked for: valid DNS labels, fully qualified (no search domains are
/// tried: a client's name is a name on the Internet, not in the exit's own domain).
#[derive(Clone, PartialEq, Eq)]
pub struct QueryName(Name);

impl QueryName {
    /// `name` as asked for, `None` if it is no domain name (empty, the root, a label over
    /// 63 bytes, over 255 in all, or not ASCII).
    pub fn parse(name: &str) -> Option<Self> {
        let mut parsed = Name::from_ascii(name).ok()?;
        if parsed.is_root() || parsed.num_labels() == 0 {
            return None;
        }
        parsed.set_fqdn(true);
        Some(Self(parsed))
    }
}

/// Opaque in `Debug`: a user's destination.
impl core::fmt::Debug for QueryName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("QueryName([scrubbed])")
    }
}

/// One query sent: what its answer must match.
#[derive(Clone, Debug)]
pub struct Sent {
    /// The message id (random).
    pub id: u16,
    /// The name asked for.
    pub name: QueryName,
    /// The records asked for.
    pub family: Family,
    /// The server it went to: answers come from there.
    pub server: SocketAddr,
}

/// What a matching answer says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The name's addresses of the family asked for (none: it has none of that family).
    Addresses(Vec<IpAddr>),
    /// The name does not exist (NXDOMAIN).
    NoSuchName,
    /// The server could not answer (SERVFAIL, REFUSED, …, or truncated without an
    /// address): ask the next one.
    ServerFailed,
}

/// Why a datagram is not the answer to a query: each is dropped and counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// Not from the server the query went to.
    Source,
    /// Another message id: an off-path guess, or a late answer to an earlier try.
    Id,
    /// Not a DNS response, or not one that parses.
    Malformed,
    /// A response about another question.
    Question,
}

/// The query for `family` addresses of `name`, with message id `id` (recursion desired),
/// or `None` if hickory cannot encode it (a name that parsed always can).
pub fn encode_query(id: u16, name: &QueryName, family: Family) -> Option<Vec<u8>> {
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(name.0.clone(), family.record_type()));
    message.to_vec().ok()
}

/// What `datagram`, received from `from`, answers to `sent`, or why it is not its answer.
pub fn check_answer(datagram: &[u8], from: SocketAddr, sent: &Sent) -> Result<Reply, Mismatch> {
    if from != sent.server {
        return Err(Mismatch::Source);
    }
    // The id first, before any parsing: a guess costs two byte compares.
    let Some(id) = datagram.get(..2) else {
        return Err(Mismatch::Malformed);
    };
    if u16::from_be_bytes([id[0], id[1]]) != sent.id {
        return Err(Mismatch::Id);
    }
    let message = Message::from_vec(datagram).map_err(|_| Mismatch::Malformed)?;
    if message.metadata.message_type != MessageType::Response
        || message.metadata.op_code != OpCode::Query
    {
        return Err(Mismatch::Malformed);
    }
    let [question] = message.queries.as_slice() else {
        return Err(Mismatch::Question);
    };
    if question.query_type != sent.family.record_type()
        || question.query_class != DNSClass::IN
        || !question.name.eq_ignore_root(&sent.name.0)
    {
        return Err(Mismatch::Question);
    }
    match message.metadata.response_code {
        ResponseCode::NoError => {}
        ResponseCode::NXDomain => return Ok(Reply::NoSuchName),
        _ => return Ok(Reply::ServerFailed),
    }
    let addresses = addresses_of(&message, &sent.name.0, sent.family);
    if addresses.is_empty() && message.metadata.truncation {
        // The records did not fit a datagram; this resolver does not retry over TCP.
        return Ok(Reply::ServerFailed);
    }
    Ok(Reply::Addresses(addresses))
}

/// The addresses of `family` the answer section gives `name`, following its CNAMEs (at
/// most [`MAX_ALIASES`]).
fn addresses_of(message: &Message, name: &Name, family: Family) -> Vec<IpAddr> {
    let mut names = vec![name.clone()];
    for _ in 0..MAX_ALIASES {
        let alias = message.answers.iter().find_map(|r| match &r.data {
            RData::CNAME(target)
                if r.dns_class == DNSClass::IN
                    && names.last().is_some_and(|n| r.name.eq_ignore_root(n)) =>
            {
                Some(target.0.clone())
            }
            _ => None,
        });
        match alias {
            Some(target) if !names.iter().any(|n| n.eq_ignore_root(&target)) => {
                names.push(target);
            }
            _ => break,
        }
    }
    message
        .answers
        .iter()
        .filter(|r| r.dns_class == DNSClass::IN && names.iter().any(|n| r.name.eq_ignore_root(n)))
        .filter_map(|r| match (&r.data, family) {
            (RData::A(a), Family::V4) => Some(IpAddr::V4(a.0)),
            (RData::AAAA(a), Family::V6) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
pub(crate) mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use hickory_proto::rr::{
        Record,
        rdata::{A, AAAA, CNAME},
    };

    use super::*;

    /// A server's answer to `query` (its bytes): `code`, and `records` as (owner, data).
    pub(crate) fn answer(query: &[u8], code: ResponseCode, records: &[(&str, RData)]) -> Vec<u8> {
        let query = Message::from_vec(query).unwrap();
        let mut m = Message::response(query.metadata.id, OpCode::Query);
        m.metadata.response_code = code;
        m.metadata.recursion_available = true;
        m.add_queries(query.queries.clone());
        for (owner, data) in records {
            m.add_answer(Record::from_rdata(
                Name::from_ascii(owner).unwrap(),
                60,
                data.clone(),
            ));
        }
        m.to_vec().unwrap()
    }

    fn server() -> SocketAddr {
        "192.0.2.53:53".parse().unwrap()
    }

    fn sent(name: &str, family: Family) -> (Sent, Vec<u8>) {
        let name = QueryName::parse(name).unwrap();
        let bytes = encode_query(0x1234, &name, family).unwrap();
        let sent = Sent {
            id: 0x1234,
            name,
            family,
            server: server(),
        };
        (sent, bytes)
    }

    /// The query asks one question, for the name's records of the family, recursively,
    /// under the id given.
    #[test]
    fn a_query_asks_one_question_under_its_id() {
        let (_, bytes) = sent("Www.Example.org", Family::V6);
        let m = Message::from_vec(&bytes).unwrap();
        assert_eq!(m.metadata.id, 0x1234);
        assert_eq!(m.metadata.message_type, MessageType::Query);
        assert!(m.metadata.recursion_desired);
        assert_eq!(m.queries.len(), 1);
        assert_eq!(m.queries[0].query_type, RecordType::AAAA);
        assert_eq!(m.queries[0].name.to_ascii(), "Www.Example.org.");
        assert!(m.answers.is_empty());
    }

    #[test]
    fn names_that_are_not_domain_names_are_refused() {
        assert!(QueryName::parse("").is_none());
        assert!(QueryName::parse(".").is_none());
        assert!(QueryName::parse(&"a".repeat(64)).is_none());
        assert!(QueryName::parse(&["abc"; 70].join(".")).is_none());
        assert!(QueryName::parse("example.org.").is_some());
        assert!(QueryName::parse("localhost").is_some());
        assert_eq!(
            format!("{:?}", QueryName::parse("secret.example").unwrap()),
            "QueryName([scrubbed])"
        );
    }

    /// The matching answer's addresses come out, through a CNAME; records for other names
    /// (a server stuffing the answer) do not.
    #[test]
    fn a_matching_answer_gives_the_names_addresses() {
        let (s, q) = sent("www.example.org", Family::V4);
        let bytes = answer(
            &q,
            ResponseCode::NoError,
            &[
                (
                    "www.example.org.",
                    RData::CNAME(CNAME(Name::from_ascii("cdn.example.net.").unwrap())),
                ),
                ("cdn.example.net.", RData::A(A(Ipv4Addr::new(192, 0, 2, 7)))),
                ("bank.example.", RData::A(A(Ipv4Addr::new(203, 0, 113, 9)))),
                ("cdn.example.net.", RData::AAAA(AAAA(Ipv6Addr::LOCALHOST))),
            ],
        );
        assert_eq!(
            check_answer(&bytes, server(), &s),
            Ok(Reply::Addresses(vec![Ipv4Addr::new(192, 0, 2, 7).into()]))
        );
    }

    /// An answer with the wrong id, from the wrong address (or port), or about another
    /// question is refused, however right its records look.
    #[test]
    fn answers_that_do_not_match_the_query_are_refused() {
        let (s, q) = sent("www.example.org", Family::V4);
        let good = answer(
            &q,
            ResponseCode::NoError,
            &[("www.example.org.", RData::A(A(Ipv4Addr::new(192, 0, 2, 7))))],
        );
        assert!(check_answer(&good, server(), &s).is_ok());
        let mut wrong_id = good.clone();
        wrong_id[1] ^= 1;
        assert_eq!(check_answer(&wrong_id, server(), &s), Err(Mismatch::Id));
        for from in ["192.0.2.54:53", "192.0.2.53:5353"] {
            assert_eq!(
                check_answer(&good, from.parse().unwrap(), &s),
                Err(Mismatch::Source)
            );
        }
        for (name, family) in [
            ("www.example.com", Family::V4),
            ("www.example.org", Family::V6),
        ] {
            let (other, other_q) = sent(name, family);
            let other_answer = answer(&other_q, ResponseCode::NoError, &[]);
            assert!(check_answer(&other_answer, server(), &other).is_ok());
            assert_eq!(
                check_answer(&other_answer, server(), &s),
                Err(Mismatch::Question)
            );
        }
        // The query itself, echoed: not a response.
        assert_eq!(check_answer(&q, server(), &s), Err(Mismatch::Malformed));
    }

    /// NXDOMAIN and SERVFAIL say so; the question's case does not matter (servers may
    /// echo it in another).
    #[test]
    fn failures_are_told_apart() {
        let (s, q) = sent("WWW.example.org", Family::V4);
        let (_, lower) = sent("www.example.org", Family::V4);
        let nx = answer(&lower, ResponseCode::NXDomain, &[]);
        assert_eq!(check_answer(&nx, server(), &s), Ok(Reply::NoSuchName));
        let fail = answer(&q, ResponseCode::ServFail, &[]);
        assert_eq!(check_answer(&fail, server(), &s), Ok(Reply::ServerFailed));
        let empty = answer(&q, ResponseCode::NoError, &[]);
        assert_eq!(
            check_answer(&empty, server(), &s),
            Ok(Reply::Addresses(vec![]))
        );
    }

    /// Truncated, cut or random bytes under the right id are malformed, never a panic.
    #[test]
    fn junk_under_the_right_id_is_malformed() {
        let (s, q) = sent("www.example.org", Family::V4);
        let good = answer(
            &q,
            ResponseCode::NoError,
            &[("www.example.org.", RData::A(A(Ipv4Addr::new(192, 0, 2, 7))))],
        );
        for n in 0..good.len() {
            let r = check_answer(&good[..n], server(), &s);
            assert!(
                matches!(r, Err(Mismatch::Malformed | Mismatch::Question)) || n < 2,
                "{n}: {r:?}"
            );
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            let mut junk: Vec<u8> = (0..64)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            junk[..2].copy_from_slice(&0x1234u16.to_be_bytes());
            let _ = check_answer(&junk, server(), &s);
        }
    }
}
