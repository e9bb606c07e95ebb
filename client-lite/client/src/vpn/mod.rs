//! VPN mode: every application's traffic, through a TUN device. The stack ([`stack`])
//! terminates each TCP flow and this module carries it as a stream of the default session
//! (the same sessions, cover and SURBs as SOCKS); DNS queries to port 53 are answered from
//! the exit's lookups; other UDP travels as datagrams of flows the exit relays (a flow it
//! refuses is answered with an ICMP port unreachable); nothing else leaves.
//!
//! The device is made here (`--tun NAME`, with the routing of [`pb_tun::routing`]) or
//! handed over (`--tun-fd N`: Android's VpnService, or a helper that set up the device and
//! its routes itself; nothing but the descriptor is touched).

pub(crate) mod stack;

use std::{
    collections::HashMap,
    io::ErrorKind,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};
use mio::{Interest, Token, unix::SourceFd};
use pb_proto::{
    Reply, SessionId, StreamId, Target,
    dns::{self, Asked},
    frame::Resolution,
};
use pb_tun::{Tun, routing};
use smoltcp::{iface::SocketHandle, wire::IpAddress};

use crate::{
    Client,
    lookups::{self, Joined, Pending},
};
use stack::{Input, Stack, UdpReply};

/// The TUN device's poll token.
pub(crate) const TUN: Token = Token(usize::MAX - 1);
/// A flow whose exit has not answered after this long is reset.
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);
/// A UDP flow without a datagram either way for this long is closed.
const UDP_IDLE: Duration = Duration::from_secs(60);
/// Packets read from the device in one turn, at most (then the rest of the loop runs).
const PACKETS_PER_TURN: usize = 256;
/// Each flow's receive and send buffers: the application is local (its round trip is
/// nothing) and the mixnet carries some 100 KiB/s, so these never hold it back.
const BUFFERS: (usize, usize) = (64 * 1024, 128 * 1024);
/// Largest packet read from the device.
const MAX_PACKET: usize = 65_535;

/// How VPN mode was asked for.
pub(crate) enum Device {
    /// Make the device `name` with `mtu`, and route through it (bypassing `bypass`).
    Make {
        /// Its name.
        name: String,
        /// Its MTU.
        mtu: u32,
        /// The client's own links' addresses.
        bypass: Vec<IpAddr>,
    },
    /// Use this open descriptor, of `mtu`.
    Fd {
        /// The descriptor.
        fd: i32,
        /// The device's MTU.
        mtu: u32,
    },
}

/// Where a DNS answer goes. `Debug` names only the kind: the rest is a user's.
#[derive(Clone, Copy)]
enum DnsReply {
    Udp(UdpReply),
    Tcp(SocketHandle),
}

impl core::fmt::Debug for DnsReply {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            DnsReply::Udp(_) => "DnsReply::Udp",
            DnsReply::Tcp(_) => "DnsReply::Tcp",
        })
    }
}

/// A TCP flow's stream.
struct Carried {
    session: SessionId,
    stream: StreamId,
    opened: bool,
    asked_at: Instant,
    /// The application finished sending, and the stream was told.
    app_finished: bool,
    /// The exit finished, and the application's side was closed.
    exit_finished: bool,
}

/// A UDP flow: its application and destination's endpoints, its first packet (what a
/// refusal quotes), and its flow in the session.
struct UdpFlow {
    reply: UdpReply,
    packet: Vec<u8>,
    key: lookups::Key,
    last: Instant,
}

/// What VPN mode dropped and answered, for the log at exit (never addresses).
#[derive(Debug, Default)]
pub(crate) struct VpnCounters {
    /// DNS queries answered.
    pub(crate) dns_answered: u64,
    /// Of those, SERVFAIL.
    pub(crate) dns_failed: u64,
    /// Queries to port 53 that were no DNS query.
    pub(crate) dns_malformed: u64,
    /// Flows reset: no session (no gateway or topology), or its most streams.
    pub(crate) flows_refused: u64,
    /// Packets the device would not take.
    pub(crate) write_failed: u64,
    /// UDP flows opened, and refused (by the exit, or for want of a session or room).
    pub(crate) udp_flows: u64,
    pub(crate) udp_refused: u64,
    /// Datagrams to the exit, and back; dropped (a full queue).
    pub(crate) datagrams_out: u64,
    pub(crate) datagrams_in: u64,
    pub(crate) datagrams_dropped: u64,
}

/// VPN mode's state.
pub(crate) struct Vpn {
    tun: Tun,
    stack: Stack,
    carried: HashMap<SocketHandle, Carried>,
    lookups: Pending<DnsReply>,
    udp: Vec<UdpFlow>,
    /// The rules and routes (none for a handed-over device): removed by [`Vpn::release`],
    /// kept otherwise (the kill switch).
    routing: Option<routing::Routing>,
    origin: Instant,
    buf: Vec<u8>,
    pub(crate) counters: VpnCounters,
}

impl Vpn {
    /// Opens the device (and sets up its routing), registered with `registry`.
    ///
    /// # Errors
    /// No device (no permission, a bad descriptor), or routing the kernel refused: a
    /// message saying what to do.
    pub(crate) fn start(
        device: Device,
        registry: &mio::Registry,
        seed: u64,
    ) -> anyhow::Result<Self> {
        let (tun, mtu, routing) = match device {
            Device::Make { name, mtu, bypass } => {
                let tun = Tun::create(&name).context("--tun")?;
                let routing = routing::Routing::install(&routing::Plan {
                    device: name,
                    mtu,
                    bypass,
                })
                .context("--tun: routing")?;
                (tun, mtu, Some(routing))
            }
            Device::Fd { fd, mtu } => (Tun::from_fd(fd).context("--tun-fd")?, mtu, None),
        };
        let fd = std::os::fd::AsRawFd::as_raw_fd(&tun);
        registry
            .register(&mut SourceFd(&fd), TUN, Interest::READABLE)
            .context("registering the TUN device")?;
        let origin = Instant::now();
        Ok(Self {
            tun,
            stack: Stack::new(
                usize::try_from(mtu).unwrap_or(1500),
                BUFFERS,
                seed,
                smoltcp::time::Instant::from_micros(0),
            ),
            carried: HashMap::new(),
            lookups: Pending::default(),
            udp: Vec::new(),
            routing,
            origin,
            buf: vec![0; MAX_PACKET],
            counters: VpnCounters::default(),
        })
    }

    fn now(&self) -> smoltcp::time::Instant {
        let micros = i64::try_from(self.origin.elapsed().as_micros()).unwrap_or(i64::MAX);
        smoltcp::time::Instant::from_micros(micros)
    }

    /// How soon the stack needs a turn (its timers).
    pub(crate) fn wait(&mut self) -> Option<Duration> {
        let now = self.now();
        self.stack.poll_delay(now)
    }

    /// A stop the user asked for: the routes go (after a crash or an error they stay, and
    /// block everything: the kill switch).
    pub(crate) fn release(&mut self) {
        if let Some(routing) = self.routing.take()
            && let Err(e) = routing.release()
        {
            tracing::warn!(
                "VPN mode's routes could not be removed ({e}): remove rule 5000 and table 5042 yourself (docs/user.md)"
            );
        }
    }

    /// The stack's counters.
    pub(crate) fn stack_counters(&self) -> &stack::StackCounters {
        &self.stack.counters
    }
}

/// The stream target of a flow's destination.
fn target_of(to: smoltcp::wire::IpEndpoint) -> Target {
    match to.addr {
        IpAddress::Ipv4(a) => Target::V4(a, to.port),
        IpAddress::Ipv6(a) => Target::V6(a, to.port),
    }
}

impl Client {
    /// One turn of VPN mode: packets from the device, the flows' bytes both ways, packets to
    /// the device.
    pub(crate) fn vpn_turn(&mut self) {
        let Some(mut vpn) = self.vpn.take() else {
            return;
        };
        for _ in 0..PACKETS_PER_TURN {
            let n = match vpn.tun.recv(&mut vpn.buf) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // WouldBlock, or the device is gone: nothing more this turn.
                Err(_) => break,
            };
            let now = vpn.now();
            let packet = vpn.buf[..n].to_vec();
            match vpn.stack.input(&packet, now) {
                Input::Connect { flow, to } => self.vpn_connect(&mut vpn, flow, target_of(to)),
                Input::Dns { query, reply } => self.vpn_dns(&mut vpn, DnsReply::Udp(reply), &query),
                Input::Udp {
                    data,
                    reply,
                    packet,
                } => self.vpn_datagram(&mut vpn, reply, &data, packet),
                Input::Taken | Input::Dropped(_) => {}
            }
        }
        let now = vpn.now();
        vpn.stack.poll(now);
        self.vpn_serve(&mut vpn, now);
        vpn.stack.poll(now);
        while let Some(packet) = vpn.stack.output() {
            if vpn.tun.send(&packet).is_err() {
                vpn.counters.write_failed += 1;
            }
        }
        self.vpn = Some(vpn);
    }

    fn vpn_connect(&mut self, vpn: &mut Vpn, flow: SocketHandle, target: Target) {
        // The default session, as SOCKS connections without a username use.
        let opened = self.session_for(None).and_then(|s| {
            let session = &mut self.sessions[s].1;
            Some((session.id(), session.streams.open(target)?))
        });
        match opened {
            Some((session, stream)) => {
                vpn.carried.insert(
                    flow,
                    Carried {
                        session,
                        stream,
                        opened: false,
                        asked_at: Instant::now(),
                        app_finished: false,
                        exit_finished: false,
                    },
                );
            }
            None => {
                vpn.counters.flows_refused += 1;
                vpn.stack.refuse(flow);
            }
        }
    }

    /// A datagram not for port 53: on its flow (opened at its first), or refused.
    fn vpn_datagram(&mut self, vpn: &mut Vpn, reply: UdpReply, data: &[u8], packet: Vec<u8>) {
        let known = vpn.udp.iter_mut().find(|f| f.reply == reply);
        let key = match known {
            Some(flow) => {
                flow.last = Instant::now();
                flow.key
            }
            None => {
                let target = target_of(reply.server);
                let opened = self.open_flow(None, target);
                let Some(key) = opened else {
                    vpn.counters.udp_refused += 1;
                    vpn.stack.refuse_udp(&packet);
                    return;
                };
                vpn.counters.udp_flows += 1;
                vpn.udp.push(UdpFlow {
                    reply,
                    packet,
                    key,
                    last: Instant::now(),
                });
                key
            }
        };
        let sent = self.send_datagram_on(key, data);
        if sent {
            vpn.counters.datagrams_out += 1;
        } else {
            vpn.counters.datagrams_dropped += 1;
        }
    }

    /// A datagram from the exit on a flow of VPN mode's: to its application.
    pub(crate) fn vpn_datagram_back(&mut self, key: lookups::Key, bytes: &[u8]) {
        let Some(vpn) = self.vpn.as_mut() else {
            return;
        };
        if let Some(flow) = vpn.udp.iter_mut().find(|f| f.key == key) {
            flow.last = Instant::now();
            let reply = flow.reply;
            vpn.stack.answer_udp(reply, bytes);
            vpn.counters.datagrams_in += 1;
        }
    }

    /// An application's DNS query: answered at once, or once the exit resolved its name.
    fn vpn_dns(&mut self, vpn: &mut Vpn, reply: DnsReply, query: &[u8]) {
        match dns::read(query) {
            Ok(Asked::Answer(bytes)) => vpn_answer(vpn, reply, &bytes, false),
            Ok(Asked::Resolve(question)) => {
                let (reply, question) = match vpn.lookups.join(reply, question) {
                    Joined::Waiting => return,
                    Joined::Ask(reply, question) => (reply, question),
                    Joined::Full(reply, question) => {
                        return vpn_answer(vpn, reply, &question.failed(), true);
                    }
                };
                match self.ask_exit(None, &question) {
                    Some(key) => vpn.lookups.insert(key, reply, question, Instant::now()),
                    None => vpn_answer(vpn, reply, &question.failed(), true),
                }
            }
            Err(_) => {
                vpn.counters.dns_malformed += 1;
                pb_log::warn_limited!("a packet to port 53 that is no DNS query was dropped");
            }
        }
    }

    /// Each flow: its stream's answer, bytes both ways, ends.
    fn vpn_serve(&mut self, vpn: &mut Vpn, now: smoltcp::time::Instant) {
        let flows: Vec<(SocketHandle, bool)> = vpn.stack.flows().map(|(h, f)| (h, f.dns)).collect();
        let mut buf = vec![0u8; 64 * 1024];
        for (flow, is_dns) in flows {
            if is_dns {
                for query in vpn.stack.dns_queries(flow) {
                    self.vpn_dns(vpn, DnsReply::Tcp(flow), &query);
                }
                // The application is done asking: close once the answers are out.
                if vpn.stack.app_finished(flow) {
                    vpn.stack.finish(flow);
                }
                continue;
            }
            let Some(c) = vpn.carried.get_mut(&flow) else {
                continue;
            };
            let Some(streams) = self.streams_of(c.session) else {
                // The session ended (its gateway or exit went).
                vpn.stack.refuse(flow);
                continue;
            };
            if !c.opened {
                if c.asked_at.elapsed() > OPEN_TIMEOUT {
                    streams.reset(c.stream, Reply::TtlExpired);
                    vpn.stack.refuse(flow);
                }
                continue;
            }
            if !streams.contains(c.stream) {
                // Reset by the exit, or over both ways.
                if !(c.app_finished && c.exit_finished) {
                    vpn.stack.refuse(flow);
                }
                continue;
            }
            // The application's bytes, as far as the stream takes them.
            let room = streams.send_room(c.stream).min(buf.len());
            let n = vpn.stack.recv(flow, &mut buf[..room]);
            streams.write(c.stream, &buf[..n]);
            if !c.app_finished && vpn.stack.app_finished(flow) {
                c.app_finished = true;
                streams.finish(c.stream);
            }
            // The exit's bytes, as far as the socket takes them.
            let room = vpn.stack.send_room(flow).min(buf.len());
            let n = streams.read(c.stream, &mut buf[..room]);
            vpn.stack.send(flow, &buf[..n]);
            if !c.exit_finished
                && streams.peer_finished(c.stream)
                && streams.readable(c.stream) == 0
            {
                c.exit_finished = true;
                vpn.stack.finish(flow);
            }
        }
        // UDP flows: idle ones closed, those of ended sessions forgotten.
        let mut idle = Vec::new();
        vpn.udp.retain(|f| {
            let alive = self.sessions.iter().any(|(_, s)| s.id() == f.key.0);
            let keep = alive && f.last.elapsed() < UDP_IDLE;
            if alive && !keep {
                idle.push(f.key);
            }
            keep
        });
        for (session, flow) in idle {
            if let Some(s) = self.streams_of(session) {
                s.close_flow(flow);
            }
        }
        let reaped = vpn.stack.reap(now);
        // Their handles will be other flows': answers still due to them are dropped.
        vpn.lookups
            .forget_waiters(|w| matches!(w, DnsReply::Tcp(h) if reaped.contains(h)));
        for flow in reaped {
            let Some(c) = vpn.carried.remove(&flow) else {
                continue;
            };
            // Reset by the application (or never connected): the stream ends too.
            if !(c.app_finished && c.exit_finished)
                && let Some(streams) = self.streams_of(c.session)
                && streams.contains(c.stream)
            {
                streams.reset(c.stream, Reply::GeneralFailure);
            }
        }
    }

    /// A stream event no SOCKS connection claimed: a VPN flow's answer or reset.
    pub(crate) fn vpn_stream_event(&mut self, session: SessionId, stream: StreamId, reply: Reply) {
        let Some(vpn) = self.vpn.as_mut() else {
            return;
        };
        // A UDP flow the exit refused (or ended): the application hears "port unreachable".
        if let Some(i) = vpn.udp.iter().position(|f| f.key == (session, stream)) {
            if reply != Reply::Succeeded {
                let flow = vpn.udp.swap_remove(i);
                vpn.counters.udp_refused += 1;
                vpn.stack.refuse_udp(&flow.packet);
            }
            return;
        }
        let Some((&flow, c)) = vpn
            .carried
            .iter_mut()
            .find(|(_, c)| c.session == session && c.stream == stream)
        else {
            return;
        };
        if reply == Reply::Succeeded && !c.opened {
            c.opened = true;
            vpn.stack.accept(flow);
        } else {
            vpn.stack.refuse(flow);
        }
    }

    /// The exit's answer to a lookup of VPN mode's.
    pub(crate) fn vpn_resolved(&mut self, key: lookups::Key, answer: &Resolution) {
        let Some(vpn) = self.vpn.as_mut() else {
            return;
        };
        let Some(waiters) = vpn.lookups.take(key) else {
            return;
        };
        for (reply, question) in waiters {
            let (bytes, failed) = lookups::answer(&question, answer);
            vpn_answer(vpn, reply, &bytes, failed);
        }
    }

    /// SERVFAIL to VPN mode's lookups not answered in time.
    pub(crate) fn vpn_expire_lookups(&mut self, now: Instant, alive: &[SessionId]) {
        let Some(vpn) = self.vpn.as_mut() else {
            return;
        };
        let expired = vpn.lookups.expired(now, alive);
        let mut keys = Vec::new();
        for (key, waiters) in expired {
            keys.push(key);
            for (reply, question) in waiters {
                vpn_answer(vpn, reply, &question.failed(), true);
            }
        }
        for key in keys {
            self.forget_resolve(key);
        }
    }
}

fn vpn_answer(vpn: &mut Vpn, reply: DnsReply, answer: &[u8], failed: bool) {
    match reply {
        DnsReply::Udp(reply) => vpn.stack.answer_udp(reply, answer),
        DnsReply::Tcp(flow) => vpn.stack.answer_tcp(flow, answer),
    }
    vpn.counters.dns_answered += 1;
    vpn.counters.dns_failed += u64::from(failed);
}

/// The addresses VPN mode's routes must leave out: the gateways' (every transport is on a
/// gateway's address), a bridge's, and a DoH resolver's (which must be an address).
///
/// # Errors
/// A DoH resolver named by a host name: looking it up would go into the device.
pub(crate) fn bypass(
    gateways: &[SocketAddr],
    bridge: Option<SocketAddr>,
    doh_url: Option<&str>,
) -> anyhow::Result<Vec<IpAddr>> {
    let mut out: Vec<IpAddr> = gateways.iter().map(SocketAddr::ip).collect();
    out.extend(bridge.map(|b| b.ip()));
    if let Some(url) = doh_url {
        let host = url
            .strip_prefix("https://")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default();
        let ip = host
            .parse::<SocketAddr>()
            .map(|a| a.ip())
            .or_else(|_| host.trim_matches(['[', ']']).parse::<IpAddr>())
            .map_err(|_| {
                anyhow!(
                    "--doh-resolver with --tun: give the resolver's address, not a name (its lookup would go into the TUN device)"
                )
            })?;
        out.push(ip);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn the_client_links_are_left_out_of_the_routes() {
        let gw: Vec<SocketAddr> = vec![
            "198.18.0.1:9000".parse().unwrap(),
            "198.18.0.1:9001".parse().unwrap(),
        ];
        let got = bypass(
            &gw,
            Some("203.0.113.5:443".parse().unwrap()),
            Some("https://[2001:db8::53]:8443/dns-query"),
        )
        .unwrap();
        let want: Vec<IpAddr> = vec![
            "198.18.0.1".parse().unwrap(),
            "203.0.113.5".parse().unwrap(),
            "2001:db8::53".parse().unwrap(),
        ];
        assert_eq!(got, want);
        assert_eq!(
            bypass(&gw, None, Some("https://192.0.2.1/dns-query"))
                .unwrap()
                .len(),
            2
        );
        let e = bypass(&gw, None, Some("https://dns.example/dns-query")).unwrap_err();
        assert!(e.to_string().contains("not a name"), "{e}");
    }
}
