//! The client's side of DNS, sans-IO: what to do with a query an application sent (to the
//! TUN's port 53 or over SOCKS5 UDP), and the answer once the exit has resolved the name.
//! No query leaves the device as DNS: the name goes to the exit, which resolves it, and
//! the addresses come back (docs/spec/client-link.md).
//!
//! - A and AAAA questions of class IN become a [`Question`] for the exit;
//! - other record types get an empty answer at once (NOERROR, no records): the exit
//!   resolves addresses only;
//! - other classes and opcodes get REFUSED or NOTIMP, and a message with other than one
//!   question FORMERR, at once;
//! - what is not a DNS query at all is a [`DnsError`], dropped and counted.
//!
//! Answers carry a fixed time to live ([`TTL`]), whatever the exit's server said, so that
//! cache state reveals nothing; parsing and building are hickory-proto's.

use std::net::IpAddr;

use hickory_proto::{
    op::{Message, MessageType, OpCode, ResponseCode},
    rr::{DNSClass, RData, Record, RecordType, rdata},
};

/// The time to live of every answer, in seconds.
pub const TTL: u32 = 60;

/// Why a datagram gets no answer at all (each dropped and counted).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// Not a DNS message that parses.
    #[error("not a DNS message")]
    Malformed,
    /// A response, not a query.
    #[error("a DNS response where a query was expected")]
    NotAQuery,
}

/// Which addresses a question asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// A records.
    V4,
    /// AAAA records.
    V6,
}

/// What to do with an application's query.
#[derive(Debug)]
pub enum Asked {
    /// Ask the exit for the name's addresses, then answer with [`Question::answer`].
    Resolve(Question),
    /// Send these bytes back at once.
    Answer(Vec<u8>),
}

/// An application's question for the exit.
pub struct Question {
    query: Message,
    /// The name, without the root's dot: a name on the Internet, for the exit to resolve.
    pub name: String,
    /// The addresses asked for.
    pub family: Family,
}

/// Opaque in `Debug`: a user's destination.
impl core::fmt::Debug for Question {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Question")
            .field("name", &"[scrubbed]")
            .field("family", &self.family)
            .finish()
    }
}

/// What to do with `datagram`, a query an application sent.
///
/// # Errors
///
/// [`DnsError`] if it is no query at all: no answer is sent.
pub fn read(datagram: &[u8]) -> Result<Asked, DnsError> {
    let query = Message::from_vec(datagram).map_err(|_| DnsError::Malformed)?;
    if query.metadata.message_type != MessageType::Query {
        return Err(DnsError::NotAQuery);
    }
    if query.metadata.op_code != OpCode::Query {
        return Ok(Asked::Answer(response(&query, ResponseCode::NotImp, &[])));
    }
    let [question] = query.queries.as_slice() else {
        return Ok(Asked::Answer(response(&query, ResponseCode::FormErr, &[])));
    };
    if question.query_class != DNSClass::IN {
        return Ok(Asked::Answer(response(&query, ResponseCode::Refused, &[])));
    }
    let family = match question.query_type {
        RecordType::A => Family::V4,
        RecordType::AAAA => Family::V6,
        _ => return Ok(Asked::Answer(response(&query, ResponseCode::NoError, &[]))),
    };
    // The exit takes printable ASCII names of 1-255 bytes (a stream's target), so every
    // label's own bytes must be printable and none a dot (hickory's text form would
    // escape such bytes into printable ones, and the exit would look up the escape).
    let labels: Vec<&[u8]> = question.name.iter().collect();
    let printable = |label: &&[u8]| label.iter().all(|b| b.is_ascii_graphic() && *b != b'.');
    if labels.is_empty() || !labels.iter().all(printable) {
        return Ok(Asked::Answer(response(&query, ResponseCode::Refused, &[])));
    }
    let name = labels
        .iter()
        .map(|label| String::from_utf8_lossy(label))
        .collect::<Vec<_>>()
        .join(".");
    if name.len() > 255 {
        return Ok(Asked::Answer(response(&query, ResponseCode::Refused, &[])));
    }
    Ok(Asked::Resolve(Question {
        query,
        name,
        family,
    }))
}

impl Question {
    /// The answer: `addresses` of the family asked for (others are left out; none is an
    /// empty answer, the name having no address of that family).
    pub fn answer(&self, addresses: &[IpAddr]) -> Vec<u8> {
        response(&self.query, ResponseCode::NoError, addresses)
    }

    /// The answer that the name does not exist (NXDOMAIN).
    pub fn no_such_name(&self) -> Vec<u8> {
        response(&self.query, ResponseCode::NXDomain, &[])
    }

    /// The answer that the name could not be resolved now (SERVFAIL): the exit failed or
    /// did not answer in time.
    pub fn failed(&self) -> Vec<u8> {
        response(&self.query, ResponseCode::ServFail, &[])
    }
}

/// The response to `query` with `code` and the `addresses` that match its question.
fn response(query: &Message, code: ResponseCode, addresses: &[IpAddr]) -> Vec<u8> {
    let mut message = Message::response(query.metadata.id, query.metadata.op_code);
    message.metadata.recursion_desired = query.metadata.recursion_desired;
    message.metadata.recursion_available = true;
    message.metadata.response_code = code;
    if let [question] = query.queries.as_slice() {
        message.add_query(question.clone());
        for address in addresses {
            let data = match (address, question.query_type) {
                (IpAddr::V4(a), RecordType::A) => RData::A(rdata::A(*a)),
                (IpAddr::V6(a), RecordType::AAAA) => RData::AAAA(rdata::AAAA(*a)),
                _ => continue,
            };
            message.add_answer(Record::from_rdata(question.name.clone(), TTL, data));
        }
    }
    // A response to a message that parsed always encodes; should it not, a bare header
    // with the code says as much.
    message
        .to_vec()
        .unwrap_or_else(|_| header_only(query.metadata.id, code))
}

/// A response header alone: `id`, QR set, `code`, no sections.
fn header_only(id: u16, code: ResponseCode) -> Vec<u8> {
    let mut bytes = vec![0u8; 12];
    bytes[..2].copy_from_slice(&id.to_be_bytes());
    bytes[2] = 0x80;
    bytes[3] = code.low();
    bytes
}

#[cfg(test)]
#[expect(clippy::unwrap_used, clippy::panic, reason = "tests")]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use hickory_proto::op::Query;

    use super::*;

    fn parse(bytes: &[u8]) -> Message {
        Message::from_vec(bytes).unwrap()
    }

    /// A query for `name`'s `record` records with id `id`, as an application sends it.
    fn query(id: u16, name: &str, record: RecordType) -> Option<Vec<u8>> {
        let mut message = Message::new(id, MessageType::Query, OpCode::Query);
        message.metadata.recursion_desired = true;
        let name = hickory_proto::rr::Name::from_ascii(name).ok()?;
        message.add_query(Query::query(name, record));
        message.to_vec().ok()
    }

    #[test]
    fn an_a_question_goes_to_the_exit_and_its_addresses_come_back() {
        let q = query(0x1234, "www.example.com.", RecordType::A).unwrap();
        let Asked::Resolve(question) = read(&q).unwrap() else {
            panic!("not a question for the exit");
        };
        assert_eq!(
            (question.name.as_str(), question.family),
            ("www.example.com", Family::V4)
        );
        assert!(!format!("{question:?}").contains("example"), "scrubbed");
        let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        let answer = parse(&question.answer(&[v4, v6]));
        assert_eq!(answer.metadata.id, 0x1234);
        assert_eq!(answer.metadata.message_type, MessageType::Response);
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
        assert_eq!(answer.queries.len(), 1);
        assert_eq!(answer.answers.len(), 1, "the IPv6 address is left out");
        assert_eq!(answer.answers[0].ttl, TTL);
        assert_eq!(
            answer.answers[0].data,
            RData::A(rdata::A(Ipv4Addr::new(192, 0, 2, 7)))
        );
        let nx = parse(&question.no_such_name());
        assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
        assert!(nx.answers.is_empty());
        let failed = parse(&question.failed());
        assert_eq!(failed.metadata.response_code, ResponseCode::ServFail);
    }

    #[test]
    fn an_aaaa_question_asks_for_ipv6() {
        let q = query(7, "example.org", RecordType::AAAA).unwrap();
        let Asked::Resolve(question) = read(&q).unwrap() else {
            panic!("not a question for the exit");
        };
        assert_eq!(question.family, Family::V6);
        let answer = parse(&question.answer(&[IpAddr::V6(Ipv6Addr::LOCALHOST)]));
        assert_eq!(
            answer.answers[0].data,
            RData::AAAA(rdata::AAAA(Ipv6Addr::LOCALHOST))
        );
    }

    #[test]
    fn other_questions_are_answered_at_once() {
        let code = |bytes: &[u8]| match read(bytes).unwrap() {
            Asked::Answer(answer) => parse(&answer).metadata.response_code,
            Asked::Resolve(_) => panic!("sent to the exit"),
        };
        let mx = query(1, "example.com", RecordType::MX).unwrap();
        assert_eq!(code(&mx), ResponseCode::NoError);
        let mut chaos =
            Message::from_vec(&query(2, "version.bind", RecordType::TXT).unwrap()).unwrap();
        chaos.queries[0].query_class = DNSClass::CH;
        assert_eq!(code(&chaos.to_vec().unwrap()), ResponseCode::Refused);
        let mut two = Message::from_vec(&query(3, "a.example", RecordType::A).unwrap()).unwrap();
        two.add_query(Query::query(
            hickory_proto::rr::Name::from_ascii("b.example").unwrap(),
            RecordType::A,
        ));
        assert_eq!(code(&two.to_vec().unwrap()), ResponseCode::FormErr);
        let mut update = Message::from_vec(&query(4, "a.example", RecordType::A).unwrap()).unwrap();
        update.metadata.op_code = OpCode::Update;
        assert_eq!(code(&update.to_vec().unwrap()), ResponseCode::NotImp);
    }

    /// A label holding a space or a dot is refused, not passed on in hickory's escaped
    /// text form (which is printable, and would be looked up as written).
    #[test]
    fn names_the_exit_cannot_take_are_refused() {
        for label in [&b"a b"[..], b"a.b", b"\x01"] {
            let name = hickory_proto::rr::Name::from_labels([label, b"example"]).unwrap();
            let mut m = Message::new(5, MessageType::Query, OpCode::Query);
            m.add_query(Query::query(name, RecordType::A));
            let Asked::Answer(answer) = read(&m.to_vec().unwrap()).unwrap() else {
                panic!("sent to the exit");
            };
            assert_eq!(parse(&answer).metadata.response_code, ResponseCode::Refused);
        }
    }

    #[test]
    fn what_is_no_query_gets_no_answer() {
        assert_eq!(read(&[]).unwrap_err(), DnsError::Malformed);
        assert_eq!(read(&[0; 5]).unwrap_err(), DnsError::Malformed);
        let q = query(9, "example.com", RecordType::A).unwrap();
        let Asked::Resolve(question) = read(&q).unwrap() else {
            panic!("not a question for the exit");
        };
        assert_eq!(
            read(&question.answer(&[])).unwrap_err(),
            DnsError::NotAQuery
        );
        assert_eq!(header_only(5, ResponseCode::ServFail), {
            let mut h = vec![0, 5, 0x80, 2];
            h.resize(12, 0);
            h
        });
    }

    proptest::proptest! {
        /// Any bytes: an error, an answer that parses as a response with the query's id,
        /// or a question; never a panic.
        #[test]
        fn any_bytes_are_read_without_panic(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
        ) {
            match read(&bytes) {
                Err(_) => {}
                Ok(Asked::Answer(answer)) => {
                    let m = Message::from_vec(&answer).unwrap();
                    proptest::prop_assert_eq!(m.metadata.message_type, MessageType::Response);
                    proptest::prop_assert_eq!(&answer[..2], &bytes[..2]);
                }
                Ok(Asked::Resolve(q)) => {
                    let answer = q.answer(&[]);
                    proptest::prop_assert_eq!(&answer[..2], &bytes[..2]);
                }
            }
        }
    }
}
