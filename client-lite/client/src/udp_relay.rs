//! SOCKS5 UDP ASSOCIATE (RFC 1928, section 7): an application's UDP relay. Each association
//! has a UDP socket of its own on the address the application reached the SOCKS port at, and
//! lives as long as the TCP connection that asked for it.
//!
//! Datagrams to port 53 (any address) are DNS queries: [`pb_proto::dns`] answers them, A and
//! AAAA questions from what the exit resolves (`resolve` frames), so no DNS packet leaves the
//! device. Datagrams to other ports of an IP address travel to the exit on a flow per
//! destination (`udp-open`, `datagram` frames), and its answers come back from there; one to
//! a name is dropped and counted (the exit relays to addresses: look the name up first).
//!
//! Only datagrams from the control connection's address are taken, and, once the first has
//! come (or the request named it), only from that port. Every malformed datagram, or one from
//! elsewhere, is dropped and counted, and gets no answer (the RFC's rule).

use std::{
    collections::HashMap,
    io::ErrorKind,
    net::{IpAddr, SocketAddr},
    time::Instant,
};

use mio::{Interest, Token, net::UdpSocket};
use pb_proto::{
    SessionId, StreamId, Target,
    dns::{self, Asked, Question},
    frame::Resolution,
    socks_udp,
};

use crate::{
    Client, Isolation,
    lookups::{self, Joined, Pending},
};

/// The DNS port: datagrams to it are answered here.
const DNS_PORT: u16 = 53;

/// What the UDP relays dropped or answered, for the log at exit (never with addresses).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct UdpCounters {
    /// Datagrams whose SOCKS header or DNS query did not parse.
    pub(crate) malformed: u64,
    /// Datagrams from another address or port than the association's application.
    pub(crate) strangers: u64,
    /// Datagrams to a name, not port 53 (the exit relays to addresses only).
    pub(crate) names: u64,
    /// Datagrams relayed to the exit, and its answers back.
    pub(crate) relayed: u64,
    pub(crate) back: u64,
    /// Datagrams dropped: a full flow queue, no session or flow room, or a flow the exit
    /// refused.
    pub(crate) dropped: u64,
    /// DNS queries answered (from the exit's lookups, at once, or with SERVFAIL).
    pub(crate) answered: u64,
    /// Of those, answered SERVFAIL: the exit failed, timed out, or no session could ask.
    pub(crate) failed: u64,
    /// Answers the socket could not take.
    pub(crate) send_failed: u64,
}

/// One association.
pub(crate) struct Association {
    socket: UdpSocket,
    /// The application's address (the control connection's peer), and its port once known.
    peer: IpAddr,
    port: Option<u16>,
    isolation: Isolation,
    /// Lookups, each query's answer to come from the destination it was sent to.
    lookups: Pending<Target>,
    /// UDP flows to the exit, one per destination.
    flows: HashMap<Target, lookups::Key>,
}

impl Client {
    /// Sets up the UDP relay that `control` asked for: a socket on the address the
    /// application reached the SOCKS port at; answers with its address, or fails.
    pub(crate) fn associate(&mut self, control: Token, from: &Target, isolation: Isolation) {
        let token = Token(self.next_token);
        let Some(app) = self.apps.get_mut(&control) else {
            return;
        };
        let addrs = app
            .tcp
            .peer_addr()
            .and_then(|p| Ok((p, app.tcp.local_addr()?)));
        let bound = addrs.and_then(|(peer, local)| {
            let mut socket = UdpSocket::bind(SocketAddr::new(local.ip(), 0))?;
            let bound = socket.local_addr()?;
            self.poll
                .registry()
                .register(&mut socket, token, Interest::READABLE)?;
            Ok((peer, socket, bound))
        });
        let (peer, socket, bound) = match bound {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("SOCKS UDP ASSOCIATE: no relay socket: {e}");
                app.out
                    .extend_from_slice(&pb_proto::Reply::GeneralFailure.message());
                app.closing = true;
                return;
            }
        };
        self.next_token += 1;
        // A port named in the request is where datagrams will come from; zero: not known.
        let port = match from {
            Target::V4(_, p) | Target::V6(_, p) if *p != 0 => Some(*p),
            _ => None,
        };
        app.association = Some(token);
        app.out
            .extend_from_slice(&pb_proto::socks::associated(bound));
        tracing::debug!("SOCKS UDP ASSOCIATE");
        self.associations.insert(
            token,
            Association {
                socket,
                peer: peer.ip(),
                port,
                isolation,
                lookups: Pending::default(),
                flows: HashMap::new(),
            },
        );
    }

    /// Ends an association (its control connection closed): its socket closes, its
    /// lookups' answers are ignored.
    pub(crate) fn dissociate(&mut self, token: Token) {
        let Some(mut a) = self.associations.remove(&token) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut a.socket);
        for key in a.lookups.keys() {
            self.forget_resolve(*key);
        }
        for (session, flow) in a.flows.into_values() {
            if let Some(s) = self.streams_of(session) {
                s.close_flow(flow);
            }
        }
    }

    /// Relays a datagram to `target` on the association's flow there (opened at the first).
    fn relay(&mut self, token: Token, target: Target, data: &[u8]) {
        let Some(a) = self.associations.get_mut(&token) else {
            return;
        };
        if matches!(target, Target::Name(..)) {
            self.udp.names += 1;
            pb_log::warn_limited!(
                "a SOCKS UDP datagram to a name (not port 53) was dropped: the exit relays to addresses"
            );
            return;
        }
        let key = match a.flows.get(&target) {
            Some(key) => *key,
            None => {
                let isolation = a.isolation.clone();
                let opened = self.open_flow(isolation, target.clone());
                let Some(key) = opened else {
                    self.udp.dropped += 1;
                    return;
                };
                if let Some(a) = self.associations.get_mut(&token) {
                    a.flows.insert(target, key);
                }
                key
            }
        };
        let sent = self.send_datagram_on(key, data);
        if sent {
            self.udp.relayed += 1;
        } else {
            self.udp.dropped += 1;
        }
    }

    /// A datagram from the exit on flow `key`: to its association's application, from the
    /// destination as the application named it (else to VPN mode's flow).
    pub(crate) fn datagram_back(&mut self, key: lookups::Key, bytes: &[u8]) {
        let found = self.associations.iter().find_map(|(token, a)| {
            a.flows
                .iter()
                .find(|(_, k)| **k == key)
                .map(|(target, _)| (*token, target.clone()))
        });
        let Some((token, target)) = found else {
            self.vpn_datagram_back(key, bytes);
            return;
        };
        let Some(a) = self.associations.get(&token) else {
            return;
        };
        let Some(port) = a.port else {
            return;
        };
        let mut datagram = Vec::with_capacity(socks_udp::HEADER_MAX + bytes.len());
        let sent = socks_udp::encode(&target, bytes, &mut datagram).is_ok()
            && a.socket
                .send_to(&datagram, SocketAddr::new(a.peer, port))
                .is_ok();
        if sent {
            self.udp.back += 1;
        } else {
            self.udp.send_failed += 1;
        }
    }

    /// A flow's end or refusal by the exit: forgotten (the next datagram opens another);
    /// `false` if it is no association's.
    pub(crate) fn flow_ended(&mut self, key: lookups::Key) -> bool {
        for a in self.associations.values_mut() {
            if let Some(target) = a
                .flows
                .iter()
                .find(|(_, k)| **k == key)
                .map(|(t, _)| t.clone())
            {
                a.flows.remove(&target);
                return true;
            }
        }
        false
    }

    /// Tells lookup `key`'s session not to wait for its answer.
    pub(crate) fn forget_resolve(&mut self, (session, id): lookups::Key) {
        if let Some(s) = self.streams_of(session) {
            s.forget_resolve(id);
        }
    }

    /// Opens a UDP flow to `target` in the session of `isolation`: its key, or `None` (no
    /// topology yet, or the session has its most flows).
    pub(crate) fn open_flow(
        &mut self,
        isolation: Isolation,
        target: Target,
    ) -> Option<lookups::Key> {
        let s = self.session_for(isolation)?;
        let session = &mut self.sessions[s].1;
        Some((session.id(), session.streams.udp_open(target)?))
    }

    /// Asks the exit (in the session of `isolation`) to resolve `question`'s name: the
    /// lookup's key, or `None` (no topology yet, or the session has its most lookups).
    pub(crate) fn ask_exit(
        &mut self,
        isolation: Isolation,
        question: &Question,
    ) -> Option<lookups::Key> {
        let s = self.session_for(isolation)?;
        let session = &mut self.sessions[s].1;
        let id = session.streams.resolve(&question.name, question.family)?;
        Some((session.id(), id))
    }

    /// Datagrams from an application: each one checked, then answered or dropped.
    pub(crate) fn udp_ready(&mut self, token: Token) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let Some(a) = self.associations.get_mut(&token) else {
                return;
            };
            let (n, from) = match a.socket.recv_from(&mut buf) {
                Ok(got) => got,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // An ICMP error for an earlier answer, and the like.
                Err(_) => continue,
            };
            if from.ip() != a.peer || a.port.is_some_and(|p| p != from.port()) {
                self.udp.strangers += 1;
                pb_log::warn_limited!(
                    "a datagram from another address than its association's application was dropped"
                );
                continue;
            }
            a.port = Some(from.port());
            let Ok((target, data)) = socks_udp::parse(&buf[..n]) else {
                self.udp.malformed += 1;
                pb_log::warn_limited!("a malformed SOCKS UDP datagram was dropped");
                continue;
            };
            if target.port() != DNS_PORT {
                let data = data.to_vec();
                self.relay(token, target, &data);
                continue;
            }
            let asked = match dns::read(data) {
                Ok(asked) => asked,
                Err(_) => {
                    self.udp.malformed += 1;
                    pb_log::warn_limited!("a datagram to port 53 that is no DNS query was dropped");
                    continue;
                }
            };
            match asked {
                Asked::Answer(bytes) => self.send_answer(token, &target, &bytes, false),
                Asked::Resolve(question) => self.ask(token, target, question),
            }
        }
    }

    /// Joins `question` to the lookup of its name already asked for, or asks the exit.
    fn ask(&mut self, token: Token, target: Target, question: Question) {
        let Some(a) = self.associations.get_mut(&token) else {
            return;
        };
        let (target, question) = match a.lookups.join(target, question) {
            Joined::Waiting => return,
            Joined::Ask(target, question) => (target, question),
            Joined::Full(target, question) => {
                let failed = question.failed();
                return self.send_answer(token, &target, &failed, true);
            }
        };
        let isolation = a.isolation.clone();
        let Some(key) = self.ask_exit(isolation, &question) else {
            let failed = question.failed();
            return self.send_answer(token, &target, &failed, true);
        };
        if let Some(a) = self.associations.get_mut(&token) {
            a.lookups.insert(key, target, question, Instant::now());
        }
    }

    /// The exit's answer to lookup `id` of `session`: to every query waiting for it (here,
    /// or in VPN mode).
    pub(crate) fn resolved(&mut self, session: SessionId, id: StreamId, answer: &Resolution) {
        let Some((token, waiters)) = self
            .associations
            .iter_mut()
            .find_map(|(t, a)| Some((*t, a.lookups.take((session, id))?)))
        else {
            self.vpn_resolved((session, id), answer);
            return;
        };
        for (target, question) in waiters {
            let (bytes, failed) = lookups::answer(&question, answer);
            self.send_answer(token, &target, &bytes, failed);
        }
    }

    /// Answers SERVFAIL to the lookups the exit has not answered in time.
    pub(crate) fn expire_lookups(&mut self) {
        let now = Instant::now();
        let alive: Vec<SessionId> = self.sessions.iter().map(|(_, s)| s.id()).collect();
        let mut expired = Vec::new();
        for (token, a) in &mut self.associations {
            for (key, waiters) in a.lookups.expired(now, &alive) {
                expired.push((*token, key, waiters));
            }
        }
        for (token, key, waiters) in expired {
            self.forget_resolve(key);
            for (target, question) in waiters {
                let failed = question.failed();
                self.send_answer(token, &target, &failed, true);
            }
        }
        self.vpn_expire_lookups(now, &alive);
    }

    /// Sends a DNS answer to the association's application, from `target` (as it named it).
    fn send_answer(&mut self, token: Token, target: &Target, answer: &[u8], failed: bool) {
        let Some(a) = self.associations.get(&token) else {
            return;
        };
        let Some(port) = a.port else {
            return;
        };
        let mut datagram = Vec::with_capacity(socks_udp::HEADER_MAX + answer.len());
        let sent = socks_udp::encode(target, answer, &mut datagram).is_ok()
            && a.socket
                .send_to(&datagram, SocketAddr::new(a.peer, port))
                .is_ok();
        if sent {
            self.udp.answered += 1;
            self.udp.failed += u64::from(failed);
        } else {
            self.udp.send_failed += 1;
        }
    }
}
