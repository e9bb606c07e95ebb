//! The exit's UDP flows: each a connected UDP socket of its own, opened for a client's
//! `udp-open` to an IP address the exit policy allows, on a port not in
//! [`REFUSED_UDP_PORTS`], within caps per session and in all, and closed after
//! [`UDP_IDLE`] without a datagram either way. Datagrams go out as they come; what comes
//! back goes to the client in the session's replies (dropped, counted, when its queue is
//! full: UDP may lose them).

use std::{
    collections::HashMap,
    io::ErrorKind,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use mio::{Interest, Registry, Token, net::UdpSocket};
use pb_proto::{Reply, SessionId, StreamId, Target};

use super::ExitPolicy;

/// UDP flows at once, in all.
pub const MAX_UDP_FLOWS: usize = 1024;
/// UDP flows at once per session.
pub const MAX_SESSION_UDP_FLOWS: usize = 16;
/// A flow without a datagram either way for this long is closed.
pub const UDP_IDLE: Duration = Duration::from_secs(60);
/// UDP ports the exit never sends to, whatever the address: services that answer a small
/// datagram with a large one (reflection: chargen, portmap, NTP, SNMP, CLDAP, SSDP,
/// memcached) and local-network protocols (NetBIOS, mDNS).
pub const REFUSED_UDP_PORTS: &[u16] = &[
    0, 19, 111, 123, 137, 138, 139, 161, 162, 389, 1900, 5353, 11211,
];

/// Why a flow was not opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpRefusal {
    /// A name (flows go to addresses: the client resolves first).
    Name,
    /// The exit policy refuses the address or the port.
    Policy,
    /// The session, or the exit, has its most flows.
    Caps,
    /// No socket could be made.
    Socket,
}

impl UdpRefusal {
    /// The reply code the client hears.
    pub fn reply(self) -> Reply {
        match self {
            UdpRefusal::Name => Reply::AddressTypeNotSupported,
            UdpRefusal::Policy => Reply::NotAllowed,
            UdpRefusal::Caps | UdpRefusal::Socket => Reply::GeneralFailure,
        }
    }
}

struct Flow {
    session: SessionId,
    id: StreamId,
    socket: UdpSocket,
    last: Duration,
}

/// Every UDP flow of the exit.
#[derive(Default)]
pub struct UdpFlows {
    flows: HashMap<Token, Flow>,
    by_flow: HashMap<(SessionId, StreamId), Token>,
    per_session: HashMap<SessionId, usize>,
}

impl UdpFlows {
    /// Opens flow `id` of `session` to `target` under `token`, if the policy and the caps
    /// allow it.
    ///
    /// # Errors
    /// Why not ([`UdpRefusal`]).
    #[allow(clippy::too_many_arguments, reason = "the exit's parts a flow needs")]
    pub fn open(
        &mut self,
        session: SessionId,
        id: StreamId,
        target: &Target,
        policy: &ExitPolicy,
        registry: &Registry,
        token: Token,
        now: Duration,
    ) -> Result<(), UdpRefusal> {
        let addr = match target {
            Target::V4(ip, port) => SocketAddr::new(IpAddr::V4(*ip), *port),
            Target::V6(ip, port) => SocketAddr::new(IpAddr::V6(*ip), *port),
            Target::Name(..) => return Err(UdpRefusal::Name),
        };
        if !policy.allows_ip(addr.ip()) || REFUSED_UDP_PORTS.contains(&addr.port()) {
            return Err(UdpRefusal::Policy);
        }
        let held = self.per_session.get(&session).copied().unwrap_or(0);
        if held >= MAX_SESSION_UDP_FLOWS
            || self.flows.len() >= MAX_UDP_FLOWS
            || self.by_flow.contains_key(&(session, id))
        {
            return Err(UdpRefusal::Caps);
        }
        let any = match addr {
            SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
        };
        let mut socket = UdpSocket::bind(any).map_err(|_| UdpRefusal::Socket)?;
        socket.connect(addr).map_err(|_| UdpRefusal::Socket)?;
        registry
            .register(&mut socket, token, Interest::READABLE)
            .map_err(|_| UdpRefusal::Socket)?;
        self.flows.insert(
            token,
            Flow {
                session,
                id,
                socket,
                last: now,
            },
        );
        self.by_flow.insert((session, id), token);
        *self.per_session.entry(session).or_default() += 1;
        Ok(())
    }

    /// Whether `token` is a flow's.
    pub fn contains(&self, token: Token) -> bool {
        self.flows.contains_key(&token)
    }

    /// Sends a client's datagram on its flow: `false` if there is no such flow or the
    /// socket did not take it.
    pub fn send(&mut self, session: SessionId, id: StreamId, bytes: &[u8], now: Duration) -> bool {
        let Some(flow) = self
            .by_flow
            .get(&(session, id))
            .and_then(|t| self.flows.get_mut(t))
        else {
            return false;
        };
        flow.last = now;
        flow.socket.send(bytes).is_ok()
    }

    /// The datagrams waiting on `token`'s socket, with their flow (at most `most`, each at
    /// most `buf`'s length).
    pub fn receive(
        &mut self,
        token: Token,
        buf: &mut [u8],
        most: usize,
        now: Duration,
    ) -> Option<(SessionId, StreamId, Vec<Vec<u8>>)> {
        let flow = self.flows.get_mut(&token)?;
        let mut got = Vec::new();
        while got.len() < most {
            match flow.socket.recv(buf) {
                Ok(n) => got.push(buf[..n].to_vec()),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // WouldBlock, or an ICMP error for what was sent: nothing more now.
                Err(_) => break,
            }
        }
        if !got.is_empty() {
            flow.last = now;
        }
        Some((flow.session, flow.id, got))
    }

    /// Closes flow `id` of `session` (if open).
    pub fn close(&mut self, session: SessionId, id: StreamId, registry: &Registry) {
        if let Some(token) = self.by_flow.get(&(session, id)).copied() {
            self.remove(token, registry);
        }
    }

    /// Closes every flow of `session`.
    pub fn close_session(&mut self, session: SessionId, registry: &Registry) {
        let tokens: Vec<Token> = self
            .flows
            .iter()
            .filter(|(_, f)| f.session == session)
            .map(|(t, _)| *t)
            .collect();
        for token in tokens {
            self.remove(token, registry);
        }
    }

    /// Closes the flows idle for [`UDP_IDLE`]: theirs, for the client to be told.
    pub fn close_idle(&mut self, now: Duration, registry: &Registry) -> Vec<(SessionId, StreamId)> {
        let idle: Vec<Token> = self
            .flows
            .iter()
            .filter(|(_, f)| now.saturating_sub(f.last) >= UDP_IDLE)
            .map(|(t, _)| *t)
            .collect();
        idle.into_iter()
            .filter_map(|t| self.remove(t, registry))
            .collect()
    }

    /// Flows open.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    fn remove(&mut self, token: Token, registry: &Registry) -> Option<(SessionId, StreamId)> {
        let mut flow = self.flows.remove(&token)?;
        let _ = registry.deregister(&mut flow.socket);
        self.by_flow.remove(&(flow.session, flow.id));
        if let Some(n) = self.per_session.get_mut(&flow.session) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_session.remove(&flow.session);
            }
        }
        Some((flow.session, flow.id))
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use mio::{Events, Poll};

    use super::*;

    fn session(n: u8) -> SessionId {
        SessionId([n; 16])
    }

    #[test]
    fn flows_carry_datagrams_within_the_policy_and_the_caps() {
        let poll = Poll::new().unwrap();
        // The test's own loopback, allowed as a testbed would allow its networks.
        let policy = ExitPolicy::new(vec![("127.0.0.0".parse().unwrap(), 8)], None);
        let echo = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let echo_at = echo.local_addr().unwrap();
        let mut flows = UdpFlows::default();
        let target = |port| Target::V4(Ipv4Addr::LOCALHOST, port);
        let now = Duration::ZERO;
        flows
            .open(
                session(1),
                StreamId(1),
                &target(echo_at.port()),
                &policy,
                poll.registry(),
                Token(1),
                now,
            )
            .unwrap();
        assert!(flows.send(session(1), StreamId(1), b"ping", now));
        let mut buf = [0u8; 64];
        let (n, from) = echo.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping");
        echo.send_to(b"pong", from).unwrap();
        let mut events = Events::with_capacity(4);
        let mut poll = poll;
        poll.poll(&mut events, Some(Duration::from_secs(10)))
            .unwrap();
        let (s, id, got) = flows.receive(Token(1), &mut buf, 8, now).unwrap();
        assert_eq!(
            (s, id, got),
            (session(1), StreamId(1), vec![b"pong".to_vec()])
        );
        // Refused: a name, a reflection port, an address the policy refuses.
        let open = |flows: &mut UdpFlows, t: &Target, token| {
            flows.open(
                session(1),
                StreamId(token),
                t,
                &policy,
                poll.registry(),
                Token(token as usize),
                now,
            )
        };
        assert_eq!(
            open(&mut flows, &Target::Name("a.test".into(), 53), 2),
            Err(UdpRefusal::Name)
        );
        assert_eq!(open(&mut flows, &target(123), 3), Err(UdpRefusal::Policy));
        assert_eq!(
            open(&mut flows, &Target::V4(Ipv4Addr::new(10, 0, 0, 1), 9999), 4),
            Err(UdpRefusal::Policy)
        );
        // At most MAX_SESSION_UDP_FLOWS per session.
        for k in 1..MAX_SESSION_UDP_FLOWS as u32 {
            open(&mut flows, &target(9000), 100 + k).unwrap();
        }
        assert_eq!(open(&mut flows, &target(9000), 999), Err(UdpRefusal::Caps));
        assert_eq!(flows.len(), MAX_SESSION_UDP_FLOWS);
        // Idle ones close; a session's close all of theirs.
        let closed = flows.close_idle(UDP_IDLE, poll.registry());
        assert_eq!(closed.len(), MAX_SESSION_UDP_FLOWS);
        assert_eq!(flows.len(), 0);
        open(&mut flows, &target(9000), 5).unwrap();
        flows.close_session(session(1), poll.registry());
        assert_eq!(flows.len(), 0);
        assert!(!flows.send(session(1), StreamId(5), b"late", now));
    }
}
