//! SOCKS5 (RFC 1928) with username/password authentication (RFC 1929), server side, sans-IO.
//!
//! Feed what the application sent with [`Socks::input`]; it answers with what to write back
//! and, once a request is complete, the [`Target`] to open (CONNECT) or the UDP relay to set
//! up (UDP ASSOCIATE; its datagrams' header is [`crate::socks_udp`]'s). BIND is not
//! supported. A domain name stays a name (it is resolved at the exit, never here).
//! Username and password are accepted whatever they are and returned as the stream's
//! isolation key: applications (Tor Browser, curl `--proxy-user`) use them to ask for
//! separate circuits.
//!
//! Every malformed or unsupported input ends in a reply the RFC defines (where there is one)
//! and [`Action::Close`]; none panics, and the bytes held are bounded by the longest valid
//! message (a 513-byte authentication).

use std::net::{Ipv4Addr, Ipv6Addr};

/// Where a CONNECT goes: a user's destination, so its `Debug` prints `[scrubbed]` (the
/// value is for the exit's connect, never for a log).
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// An IPv4 address and port.
    V4(Ipv4Addr, u16),
    /// An IPv6 address and port.
    V6(Ipv6Addr, u16),
    /// A domain name (1-255 bytes of printable ASCII, no spaces) and port, resolved by the
    /// exit.
    Name(String, u16),
}

impl Target {
    /// The target of a SOCKS address type (1 IPv4, 3 name, 4 IPv6; stream frames use the
    /// same codes), its address bytes and port. `None` for an unknown type, an address of
    /// the wrong length, or a name that is empty or not printable ASCII.
    pub fn from_wire(atyp: u8, address: &[u8], port: u16) -> Option<Target> {
        match atyp {
            ATYP_V4 => <[u8; 4]>::try_from(address)
                .ok()
                .map(|o| Target::V4(o.into(), port)),
            ATYP_V6 => <[u8; 16]>::try_from(address)
                .ok()
                .map(|o| Target::V6(o.into(), port)),
            // All graphic ASCII: valid UTF-8.
            ATYP_NAME if !address.is_empty() && address.iter().all(u8::is_ascii_graphic) => Some(
                Target::Name(String::from_utf8_lossy(address).into_owned(), port),
            ),
            _ => None,
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        match self {
            Target::V4(_, p) | Target::V6(_, p) | Target::Name(_, p) => *p,
        }
    }
}

impl core::fmt::Debug for Target {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let kind = match self {
            Target::V4(..) => "Target::V4",
            Target::V6(..) => "Target::V6",
            Target::Name(..) => "Target::Name",
        };
        write!(f, "{kind}([scrubbed])")
    }
}

/// SOCKS5 reply codes (RFC 1928 section 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Reply {
    /// Succeeded.
    Succeeded = 0x00,
    /// General SOCKS server failure (also: a malformed request).
    GeneralFailure = 0x01,
    /// Connection not allowed by ruleset (the exit policy).
    NotAllowed = 0x02,
    /// Network unreachable.
    NetworkUnreachable = 0x03,
    /// Host unreachable (also: a name that does not resolve).
    HostUnreachable = 0x04,
    /// Connection refused.
    ConnectionRefused = 0x05,
    /// TTL expired (used for: the exit did not answer in time).
    TtlExpired = 0x06,
    /// Command not supported.
    CommandNotSupported = 0x07,
    /// Address type not supported.
    AddressTypeNotSupported = 0x08,
}

impl Reply {
    /// The reply for a code received from the exit (unknown codes are general failures).
    pub fn from_code(code: u8) -> Self {
        match code {
            0x00 => Reply::Succeeded,
            0x02 => Reply::NotAllowed,
            0x03 => Reply::NetworkUnreachable,
            0x04 => Reply::HostUnreachable,
            0x05 => Reply::ConnectionRefused,
            0x06 => Reply::TtlExpired,
            0x07 => Reply::CommandNotSupported,
            0x08 => Reply::AddressTypeNotSupported,
            _ => Reply::GeneralFailure,
        }
    }

    /// The 10-byte reply message; the bound address is always 0.0.0.0:0 (the real one is
    /// the exit's, which the client must not learn or reveal).
    pub fn message(self) -> [u8; 10] {
        [VERSION, self as u8, 0, ATYP_V4, 0, 0, 0, 0, 0, 0]
    }
}

/// What to do after some input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Write these bytes to the application.
    Write(Vec<u8>),
    /// Open a stream to `target`; then answer with [`Reply::message`]. Bytes the
    /// application sent after the request are in [`Socks::take_early_data`].
    Connect {
        /// Where to.
        target: Target,
        /// Username and password, if the application authenticated: streams with different
        /// credentials must not share a session.
        isolation: Option<(Vec<u8>, Vec<u8>)>,
    },
    /// Set up a UDP relay (UDP ASSOCIATE, RFC 1928 section 7) for datagrams from `from`
    /// (the address and port the application will send from; zeros where it does not know
    /// them); then answer with [`associated`]. The relay lives as long as this connection.
    UdpAssociate {
        /// Where the application's datagrams will come from.
        from: Target,
        /// As for [`Action::Connect`].
        isolation: Option<(Vec<u8>, Vec<u8>)>,
    },
    /// Close the connection (after writing what came before).
    Close,
}

/// The reply to a UDP ASSOCIATE: success, and the address and port of the relay socket the
/// application sends its datagrams to.
pub fn associated(relay: std::net::SocketAddr) -> Vec<u8> {
    let mut reply = vec![VERSION, Reply::Succeeded as u8, 0];
    match relay.ip() {
        std::net::IpAddr::V4(a) => {
            reply.push(ATYP_V4);
            reply.extend_from_slice(&a.octets());
        }
        std::net::IpAddr::V6(a) => {
            reply.push(ATYP_V6);
            reply.extend_from_slice(&a.octets());
        }
    }
    reply.extend_from_slice(&relay.port().to_be_bytes());
    reply
}

const VERSION: u8 = 5;
const METHOD_NONE: u8 = 0x00;
const METHOD_PASSWORD: u8 = 0x02;
const NO_ACCEPTABLE_METHOD: u8 = 0xff;
const AUTH_VERSION: u8 = 1;
const CMD_CONNECT: u8 = 1;
const CMD_UDP_ASSOCIATE: u8 = 3;
pub(crate) const ATYP_V4: u8 = 1;
pub(crate) const ATYP_NAME: u8 = 3;
pub(crate) const ATYP_V6: u8 = 4;
/// The longest message: an RFC 1929 request (1 + 1 + 255 + 1 + 255).
const MAX_MESSAGE: usize = 513;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Greeting,
    Auth,
    Request,
    /// The request was taken; what follows is stream data.
    Done,
    /// Refused: everything else is ignored.
    Closed,
}

/// One SOCKS5 connection's handshake.
#[derive(Debug)]
pub struct Socks {
    state: State,
    buf: Vec<u8>,
    isolation: Option<(Vec<u8>, Vec<u8>)>,
}

impl Default for Socks {
    fn default() -> Self {
        Self::new()
    }
}

/// How a message parse went.
enum Parsed<T> {
    /// Not all of it has arrived.
    Incomplete,
    /// A complete message of this many bytes.
    Done(T, usize),
    /// Refused: write this (if anything) and close.
    Refuse(Option<Vec<u8>>),
}

impl Socks {
    /// A connection that has sent nothing yet.
    pub fn new() -> Self {
        Self {
            state: State::Greeting,
            buf: Vec::new(),
            isolation: None,
        }
    }

    /// Whether the handshake is over (a CONNECT was taken or the connection refused).
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done | State::Closed)
    }

    /// Bytes the application sent after its CONNECT request, before the reply (stream data).
    pub fn take_early_data(&mut self) -> Vec<u8> {
        if self.state == State::Done {
            std::mem::take(&mut self.buf)
        } else {
            Vec::new()
        }
    }

    /// Handles bytes from the application.
    pub fn input(&mut self, bytes: &[u8]) -> Vec<Action> {
        let mut actions = Vec::new();
        match self.state {
            State::Closed => return actions,
            State::Done => {
                self.buf.extend_from_slice(bytes);
                return actions;
            }
            _ => self.buf.extend_from_slice(bytes),
        }
        loop {
            let step = match self.state {
                State::Greeting => self.greeting(),
                State::Auth => self.auth(),
                State::Request => self.request(),
                State::Done | State::Closed => break,
            };
            match step {
                Parsed::Incomplete if self.buf.len() > MAX_MESSAGE => {
                    self.refuse(&mut actions, None);
                    break;
                }
                Parsed::Incomplete => break,
                Parsed::Refuse(reply) => {
                    self.refuse(&mut actions, reply);
                    break;
                }
                Parsed::Done(action, used) => {
                    self.buf.drain(..used);
                    actions.push(action);
                }
            }
        }
        actions
    }

    fn refuse(&mut self, actions: &mut Vec<Action>, reply: Option<Vec<u8>>) {
        if let Some(reply) = reply {
            actions.push(Action::Write(reply));
        }
        actions.push(Action::Close);
        self.state = State::Closed;
        self.buf.clear();
    }

    fn greeting(&mut self) -> Parsed<Action> {
        let b = &self.buf;
        let (Some(&version), Some(&count)) = (b.first(), b.get(1)) else {
            return Parsed::Incomplete;
        };
        if version != VERSION {
            // Not SOCKS5 (SOCKS4, HTTP...): there is no reply it would understand.
            return Parsed::Refuse(None);
        }
        let Some(methods) = b.get(2..2 + usize::from(count)) else {
            return Parsed::Incomplete;
        };
        // Password first: it carries the application's isolation wish.
        let method = if methods.contains(&METHOD_PASSWORD) {
            METHOD_PASSWORD
        } else if methods.contains(&METHOD_NONE) {
            METHOD_NONE
        } else {
            return Parsed::Refuse(Some(vec![VERSION, NO_ACCEPTABLE_METHOD]));
        };
        self.state = if method == METHOD_PASSWORD {
            State::Auth
        } else {
            State::Request
        };
        Parsed::Done(Action::Write(vec![VERSION, method]), 2 + methods.len())
    }

    fn auth(&mut self) -> Parsed<Action> {
        let b = &self.buf;
        let Some(&version) = b.first() else {
            return Parsed::Incomplete;
        };
        if version != AUTH_VERSION {
            return Parsed::Refuse(Some(vec![AUTH_VERSION, 0xff]));
        }
        let Some(&ulen) = b.get(1) else {
            return Parsed::Incomplete;
        };
        let user_end = 2 + usize::from(ulen);
        let Some(&plen) = b.get(user_end) else {
            return Parsed::Incomplete;
        };
        let end = user_end + 1 + usize::from(plen);
        if b.len() < end {
            return Parsed::Incomplete;
        }
        self.isolation = Some((b[2..user_end].to_vec(), b[user_end + 1..end].to_vec()));
        self.state = State::Request;
        Parsed::Done(Action::Write(vec![AUTH_VERSION, 0]), end)
    }

    fn request(&mut self) -> Parsed<Action> {
        let refuse = |reply: Reply| Parsed::Refuse(Some(reply.message().to_vec()));
        let b = &self.buf;
        let Some(head) = b.get(..4) else {
            return Parsed::Incomplete;
        };
        let &[version, command, reserved, atyp] = head else {
            return Parsed::Incomplete;
        };
        if version != VERSION || reserved != 0 {
            return refuse(Reply::GeneralFailure);
        }
        if command != CMD_CONNECT && command != CMD_UDP_ASSOCIATE {
            return refuse(Reply::CommandNotSupported);
        }
        let (address_len, at) = match atyp {
            ATYP_V4 => (4, 4),
            ATYP_V6 => (16, 4),
            ATYP_NAME => match b.get(4) {
                Some(0) => return refuse(Reply::GeneralFailure),
                Some(&n) => (usize::from(n), 5),
                None => return Parsed::Incomplete,
            },
            _ => return refuse(Reply::AddressTypeNotSupported),
        };
        let end = at + address_len + 2;
        if b.len() < end {
            return Parsed::Incomplete;
        }
        let address = &b[at..at + address_len];
        let port = u16::from_be_bytes([b[end - 2], b[end - 1]]);
        let Some(target) = Target::from_wire(atyp, address, port) else {
            return refuse(Reply::GeneralFailure);
        };
        self.state = State::Done;
        let isolation = self.isolation.take();
        let action = if command == CMD_UDP_ASSOCIATE {
            Action::UdpAssociate {
                from: target,
                isolation,
            }
        } else {
            Action::Connect { target, isolation }
        };
        Parsed::Done(action, end)
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn connect_of(actions: &[Action]) -> Option<&Target> {
        actions.iter().find_map(|a| match a {
            Action::Connect { target, .. } => Some(target),
            _ => None,
        })
    }

    #[test]
    fn udp_associate_names_where_datagrams_come_from() {
        let mut s = Socks::new();
        s.input(&[5, 1, 0]);
        let actions = s.input(&[5, 3, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            actions,
            vec![Action::UdpAssociate {
                from: Target::V4(Ipv4Addr::UNSPECIFIED, 0),
                isolation: None,
            }]
        );
        assert!(s.is_done());
        assert_eq!(
            associated("127.0.0.1:5353".parse().unwrap()),
            vec![5, 0, 0, 1, 127, 0, 0, 1, 0x14, 0xe9]
        );
        let v6 = associated("[::1]:53".parse().unwrap());
        assert_eq!((v6[3], v6.len(), &v6[20..]), (4, 22, &[0, 53][..]));
    }

    #[test]
    fn no_auth_connect_to_each_address_type() {
        let cases: [(&[u8], Target); 3] = [
            (
                &[5, 1, 0, 1, 198, 18, 0, 9, 0x1f, 0x90],
                Target::V4(Ipv4Addr::new(198, 18, 0, 9), 8080),
            ),
            (
                &[
                    5, 1, 0, 4, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 80,
                ],
                Target::V6("fd00::1".parse().unwrap(), 80),
            ),
            (
                b"\x05\x01\x00\x03\x0bexample.org\x01\xbb",
                Target::Name("example.org".into(), 443),
            ),
        ];
        for (request, target) in cases {
            let mut s = Socks::new();
            assert_eq!(s.input(&[5, 1, 0]), vec![Action::Write(vec![5, 0])]);
            let actions = s.input(request);
            assert_eq!(connect_of(&actions), Some(&target));
            assert!(s.is_done());
        }
    }

    #[test]
    fn byte_at_a_time_and_early_data() {
        let mut all = vec![5, 2, 0, 2];
        all.extend_from_slice(&[1, 3, b'b', b'o', b'b', 2, b'p', b'w']);
        all.extend_from_slice(&[5, 1, 0, 1, 10, 0, 0, 1, 0, 80]);
        all.extend_from_slice(b"GET /");
        let mut s = Socks::new();
        let mut actions = Vec::new();
        for b in &all {
            actions.extend(s.input(std::slice::from_ref(b)));
        }
        assert_eq!(actions[0], Action::Write(vec![5, 2]), "password preferred");
        assert_eq!(actions[1], Action::Write(vec![1, 0]));
        assert_eq!(
            actions[2],
            Action::Connect {
                target: Target::V4(Ipv4Addr::new(10, 0, 0, 1), 80),
                isolation: Some((b"bob".to_vec(), b"pw".to_vec())),
            }
        );
        assert_eq!(s.take_early_data(), b"GET /");
    }

    #[test]
    fn refusals_reply_and_close() {
        let cases: [(&[u8], Option<Vec<u8>>); 10] = [
            // No acceptable method.
            (&[5, 1, 0x80], Some(vec![5, 0xff])),
            // BIND, and a command that does not exist.
            (
                &[5, 1, 0, 5, 2, 0, 1, 1, 2, 3, 4, 0, 80],
                Some(Reply::CommandNotSupported.message().to_vec()),
            ),
            (
                &[5, 1, 0, 5, 9, 0, 1, 1, 2, 3, 4, 0, 80],
                Some(Reply::CommandNotSupported.message().to_vec()),
            ),
            // UDP ASSOCIATE with a bad reserved byte, an unknown address type.
            (
                &[5, 1, 0, 5, 3, 1, 1, 0, 0, 0, 0, 0, 0],
                Some(Reply::GeneralFailure.message().to_vec()),
            ),
            (
                &[5, 1, 0, 5, 3, 0, 9, 0, 0, 0, 0, 0, 0],
                Some(Reply::AddressTypeNotSupported.message().to_vec()),
            ),
            // Unknown address type.
            (
                &[5, 1, 0, 5, 1, 0, 9, 1, 2, 3, 4, 0, 80],
                Some(Reply::AddressTypeNotSupported.message().to_vec()),
            ),
            // Wrong version in the request, non-zero reserved byte.
            (
                &[5, 1, 0, 4, 1, 0, 1, 1, 2, 3, 4, 0, 80],
                Some(Reply::GeneralFailure.message().to_vec()),
            ),
            (
                &[5, 1, 0, 5, 1, 7, 1, 1, 2, 3, 4, 0, 80],
                Some(Reply::GeneralFailure.message().to_vec()),
            ),
            // Empty name, and a name with a space.
            (
                &[5, 1, 0, 5, 1, 0, 3, 0, 0, 80],
                Some(Reply::GeneralFailure.message().to_vec()),
            ),
            (
                b"\x05\x01\x00\x05\x01\x00\x03\x03a b\x00\x50",
                Some(Reply::GeneralFailure.message().to_vec()),
            ),
        ];
        for (input, reply) in cases {
            let mut s = Socks::new();
            let actions = s.input(input);
            assert_eq!(actions.last(), Some(&Action::Close), "{input:?}");
            let written: Vec<&Vec<u8>> = actions
                .iter()
                .filter_map(|a| match a {
                    Action::Write(w) => Some(w),
                    _ => None,
                })
                .collect();
            assert_eq!(written.last().copied(), reply.as_ref(), "{input:?}");
            assert!(s.input(b"more").is_empty(), "closed stays closed");
        }
        // Not SOCKS5 at all: closed without a reply.
        let mut s = Socks::new();
        assert_eq!(s.input(b"GET / HTTP/1.1\r\n"), vec![Action::Close]);
        // A bad authentication version.
        let mut s = Socks::new();
        s.input(&[5, 1, 2]);
        assert_eq!(
            s.input(&[9, 1, b'a', 1, b'b']),
            vec![Action::Write(vec![1, 0xff]), Action::Close]
        );
    }

    proptest::proptest! {
        #[test]
        fn any_input_in_any_split_is_handled(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..700),
            cut in 0usize..700,
        ) {
            let mut s = Socks::new();
            let cut = cut.min(bytes.len());
            let mut actions = s.input(&bytes[..cut]);
            actions.extend(s.input(&bytes[cut..]));
            // Whatever came in, at most one connect, and nothing after a close.
            let connects = actions.iter().filter(|a| matches!(a, Action::Connect { .. })).count();
            proptest::prop_assert!(connects <= 1);
            if let Some(i) = actions.iter().position(|a| *a == Action::Close) {
                proptest::prop_assert_eq!(i, actions.len() - 1);
            }
            proptest::prop_assert!(s.buf.len() <= MAX_MESSAGE + 700);
        }
    }
}
