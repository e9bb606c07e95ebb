//! VPN mode's TCP/IP stack, sans-IO: IP packets from the TUN device in, IP packets for it
//! out, time as an argument. smoltcp terminates every TCP flow, whatever its destination
//! ("any IP"); the caller carries each flow's bytes over a mixnet stream.
//!
//! - A TCP SYN to a 4-tuple not seen yet makes a socket listening on its destination, its
//!   handshake held ([`smoltcp`]'s `pause_synack`) until the caller says the exit connected
//!   ([`Stack::accept`]) or not ([`Stack::refuse`]: a reset, so the application sees a
//!   refused connection, not a connection that then breaks).
//! - TCP and UDP to port 53, at any address, are DNS: answered by the caller (never sent
//!   anywhere as DNS). TCP port 53 is accepted at once, its messages framed by length.
//! - Other UDP goes to the caller as datagrams of flows (the exit relays them); a flow the
//!   exit refuses is answered with an ICMP port unreachable ([`Stack::refuse_udp`]), so that
//!   QUIC applications fall back to TCP at once instead of waiting for a timeout.
//! - Multicast, ICMP and what does not parse are dropped and counted: nothing but the
//!   client's own link leaves the device.

use std::collections::{HashMap, VecDeque};

use smoltcp::{
    iface::{Config, Interface, SocketHandle, SocketSet},
    phy::{self, ChecksumCapabilities, DeviceCapabilities, Medium},
    socket::tcp,
    time::Instant,
    wire::{
        HardwareAddress, Icmpv4DstUnreachable, Icmpv4Packet, Icmpv4Repr, Icmpv6DstUnreachable,
        Icmpv6Packet, Icmpv6Repr, IpAddress, IpCidr, IpEndpoint, IpListenEndpoint, IpProtocol,
        IpRepr, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, TcpPacket, UdpPacket, UdpRepr,
    },
};

/// The DNS port.
pub(crate) const DNS_PORT: u16 = 53;
/// Most flows at once; a SYN beyond them is reset.
pub(crate) const MAX_FLOWS: usize = 1024;
/// A DNS-over-TCP connection holds at most this much unread.
const MAX_DNS_TCP: usize = 4 * 1024;
/// The stack asks for a turn at most this often: a flow held for the exit's answer would
/// otherwise ask for one at once, again and again (smoltcp counts its SYN-ACK as due), and
/// everything that is really due at once is sent in the turn that queued it.
pub(crate) const MIN_WAIT: std::time::Duration = std::time::Duration::from_millis(5);

/// What a packet from the device came to. `Debug` shows only the kind and the flow: the
/// rest is a user's.
#[derive(PartialEq, Eq)]
pub(crate) enum Input {
    /// The stack took it (a segment of a known flow, or a handshake in progress).
    Taken,
    /// A new TCP flow to `to`: open a stream there, then [`Stack::accept`] or
    /// [`Stack::refuse`] it.
    Connect {
        /// The flow.
        flow: SocketHandle,
        /// Where the application connects to.
        to: IpEndpoint,
    },
    /// A UDP datagram to a port other than 53: relay it (answers with
    /// [`Stack::answer_udp`], a refusal with [`Stack::refuse_udp`] of `packet`).
    Udp {
        /// Its payload.
        data: Vec<u8>,
        /// Its application and destination.
        reply: UdpReply,
        /// The whole packet (what an ICMP refusal quotes).
        packet: Vec<u8>,
    },
    /// A DNS query over UDP: answer with [`Stack::answer_udp`] to `reply`.
    Dns {
        /// The query.
        query: Vec<u8>,
        /// Who asked, and whom: the answer goes back from the address it was sent to.
        reply: UdpReply,
    },
    /// Dropped (counted).
    Dropped(Drop),
}

impl core::fmt::Debug for Input {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Input::Taken => f.write_str("Taken"),
            Input::Connect { flow, .. } => write!(f, "Connect({flow})"),
            Input::Dns { .. } => f.write_str("Dns"),
            Input::Udp { data, .. } => write!(f, "Udp({} bytes)", data.len()),
            Input::Dropped(why) => write!(f, "Dropped({why:?})"),
        }
    }
}

/// Why a packet from the device was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Drop {
    /// Not an IPv4 or IPv6 packet that parses, or a TCP or UDP header that does not.
    Malformed,
    /// To a multicast or broadcast address (local chatter: mDNS, SSDP, LLMNR).
    Multicast,
    /// ICMP and other protocols.
    Protocol,
    /// A SYN with [`MAX_FLOWS`] flows open (answered with a reset).
    Full,
}

/// Where a UDP DNS answer goes: back to `app`, from `server` (the address the query went to).
/// `Debug` prints `[scrubbed]`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct UdpReply {
    /// The application's address and port.
    pub(crate) app: IpEndpoint,
    /// The address and port it sent to.
    pub(crate) server: IpEndpoint,
}

impl core::fmt::Debug for UdpReply {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("UdpReply([scrubbed])")
    }
}

/// A TCP flow.
pub(crate) struct Flow {
    /// DNS over TCP (answered here) rather than a stream.
    pub(crate) dns: bool,
    /// Bytes of DNS messages not yet whole.
    dns_bytes: Vec<u8>,
}

/// Counters of what the stack dropped and carried.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct StackCounters {
    /// Packets from the device.
    pub(crate) packets_in: u64,
    /// Packets to the device.
    pub(crate) packets_out: u64,
    /// TCP flows opened.
    pub(crate) flows: u64,
    /// Dropped: malformed.
    pub(crate) malformed: u64,
    /// Dropped: multicast or broadcast.
    pub(crate) multicast: u64,
    /// UDP datagrams not to port 53 (relayed as flows).
    pub(crate) udp: u64,
    /// Datagrams for the device larger than its MTU, dropped.
    pub(crate) too_big: u64,
    /// Dropped: ICMP and other protocols.
    pub(crate) other: u64,
    /// SYNs reset: too many flows.
    pub(crate) full: u64,
}

/// The device as smoltcp sees it: two queues of packets.
struct Queues {
    rx: VecDeque<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
    mtu: usize,
}

struct RxToken(Vec<u8>);
struct TxToken<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut packet = vec![0u8; len];
        let r = f(&mut packet);
        self.0.push_back(packet);
        r
    }
}

impl phy::Device for Queues {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _: Instant) -> Option<(RxToken, TxToken<'_>)> {
        let packet = self.rx.pop_front()?;
        Some((RxToken(packet), TxToken(&mut self.tx)))
    }

    fn transmit(&mut self, _: Instant) -> Option<TxToken<'_>> {
        Some(TxToken(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        caps
    }
}

/// The stack.
pub(crate) struct Stack {
    iface: Interface,
    sockets: SocketSet<'static>,
    device: Queues,
    flows: HashMap<SocketHandle, Flow>,
    /// Each flow's (application, destination) endpoints: a SYN sent again finds its flow.
    tuples: HashMap<(IpEndpoint, IpEndpoint), SocketHandle>,
    /// Each TCP socket's receive and send buffers.
    buffers: (usize, usize),
    pub(crate) counters: StackCounters,
}

impl Stack {
    /// A stack for a device of `mtu` bytes; each flow gets `buffers` bytes (receive, send);
    /// `seed` randomizes its initial sequence numbers and ports.
    pub(crate) fn new(mtu: usize, buffers: (usize, usize), seed: u64, now: Instant) -> Self {
        let mut device = Queues {
            rx: VecDeque::new(),
            tx: VecDeque::new(),
            mtu,
        };
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = seed;
        let mut iface = Interface::new(config, &mut device, now);
        // Every address is ours: each flow's socket listens on its destination.
        iface.set_any_ip(true);
        iface.update_ip_addrs(|addrs| {
            // Two entries, within smoltcp's bound of addresses.
            let _ = addrs.push(IpCidr::new(IpAddress::v4(0, 0, 0, 1), 0));
            let _ = addrs.push(IpCidr::new(
                IpAddress::v6(0xfd7b, 0x5042, 0, 0, 0, 0, 0, 2),
                0,
            ));
        });
        Self {
            iface,
            sockets: SocketSet::new(Vec::new()),
            device,
            flows: HashMap::new(),
            tuples: HashMap::new(),
            buffers,
            counters: StackCounters::default(),
        }
    }

    /// A packet from the device.
    pub(crate) fn input(&mut self, packet: &[u8], now: Instant) -> Input {
        self.counters.packets_in += 1;
        let input = self.classify(packet, now);
        match input {
            Input::Dropped(why) => {
                let c = &mut self.counters;
                *match why {
                    Drop::Malformed => &mut c.malformed,
                    Drop::Multicast => &mut c.multicast,
                    Drop::Protocol => &mut c.other,
                    Drop::Full => &mut c.full,
                } += 1;
            }
            Input::Connect { .. } => self.counters.flows += 1,
            Input::Udp { .. } => self.counters.udp += 1,
            _ => {}
        }
        input
    }

    fn classify(&mut self, packet: &[u8], now: Instant) -> Input {
        let Some((src, dst, protocol, payload)) = ip_parts(packet) else {
            return Input::Dropped(Drop::Malformed);
        };
        if dst.is_multicast() || dst.is_broadcast() || dst.is_unspecified() {
            return Input::Dropped(Drop::Multicast);
        }
        match protocol {
            IpProtocol::Udp => {
                let Ok(udp) = UdpPacket::new_checked(payload) else {
                    return Input::Dropped(Drop::Malformed);
                };
                let reply = UdpReply {
                    app: IpEndpoint::new(src, udp.src_port()),
                    server: IpEndpoint::new(dst, udp.dst_port()),
                };
                if udp.dst_port() != DNS_PORT {
                    return Input::Udp {
                        data: udp.payload().to_vec(),
                        reply,
                        packet: packet.to_vec(),
                    };
                }
                Input::Dns {
                    query: udp.payload().to_vec(),
                    reply,
                }
            }
            IpProtocol::Tcp => {
                let Ok(tcp) = TcpPacket::new_checked(payload) else {
                    return Input::Dropped(Drop::Malformed);
                };
                let app = IpEndpoint::new(src, tcp.src_port());
                let to = IpEndpoint::new(dst, tcp.dst_port());
                let new = tcp.syn() && !tcp.ack() && !self.tuples.contains_key(&(app, to));
                if !new {
                    // A segment of a flow (or one smoltcp answers with a reset).
                    self.device.rx.push_back(packet.to_vec());
                    return Input::Taken;
                }
                // What came before is bound to its sockets first: a SYN sent again by a flow
                // waiting for the exit must not meet the listener made here.
                self.poll(now);
                if self.flows.len() >= MAX_FLOWS {
                    // No socket: smoltcp answers the SYN with a reset.
                    self.device.rx.push_back(packet.to_vec());
                    self.poll(now);
                    return Input::Dropped(Drop::Full);
                }
                let dns = to.port == DNS_PORT;
                let mut socket = tcp::Socket::new(
                    tcp::SocketBuffer::new(vec![0; self.buffers.0]),
                    tcp::SocketBuffer::new(vec![0; self.buffers.1]),
                );
                // The application's connection completes only once the exit's does.
                socket.pause_synack(!dns);
                socket.set_nagle_enabled(false);
                if socket
                    .listen(IpListenEndpoint {
                        addr: Some(to.addr),
                        port: to.port,
                    })
                    .is_err()
                {
                    return Input::Dropped(Drop::Malformed);
                }
                let flow = self.sockets.add(socket);
                self.flows.insert(
                    flow,
                    Flow {
                        dns,
                        dns_bytes: Vec::new(),
                    },
                );
                self.tuples.insert((app, to), flow);
                // Bound to this SYN now, before another one to the same destination comes.
                self.device.rx.push_back(packet.to_vec());
                self.poll(now);
                if dns {
                    Input::Taken
                } else {
                    Input::Connect { flow, to }
                }
            }
            _ => Input::Dropped(Drop::Protocol),
        }
    }

    /// Runs the stack: takes the packets queued, sends what is due.
    pub(crate) fn poll(&mut self, now: Instant) {
        self.iface.poll(now, &mut self.device, &mut self.sockets);
    }

    /// How soon [`Stack::poll`] has something to do (`None`: not until a packet comes), at
    /// least [`MIN_WAIT`].
    pub(crate) fn poll_delay(&mut self, now: Instant) -> Option<std::time::Duration> {
        self.iface
            .poll_delay(now, &self.sockets)
            .map(|d| std::time::Duration::from_micros(d.total_micros()).max(MIN_WAIT))
    }

    /// The next packet for the device.
    pub(crate) fn output(&mut self) -> Option<Vec<u8>> {
        let packet = self.device.tx.pop_front()?;
        self.counters.packets_out += 1;
        Some(packet)
    }

    /// Lets `flow`'s handshake complete: the exit connected.
    pub(crate) fn accept(&mut self, flow: SocketHandle) {
        if self.flows.contains_key(&flow) {
            self.sockets
                .get_mut::<tcp::Socket<'_>>(flow)
                .pause_synack(false);
        }
    }

    /// Resets `flow`: the exit did not connect, or the stream broke.
    pub(crate) fn refuse(&mut self, flow: SocketHandle) {
        if self.flows.contains_key(&flow) {
            self.sockets.get_mut::<tcp::Socket<'_>>(flow).abort();
        }
    }

    /// Closes `flow` for sending once what it holds is sent (the exit's side finished).
    pub(crate) fn finish(&mut self, flow: SocketHandle) {
        if self.flows.contains_key(&flow) {
            self.sockets.get_mut::<tcp::Socket<'_>>(flow).close();
        }
    }

    /// Reads what the application sent on `flow`, at most `buf.len()` bytes.
    pub(crate) fn recv(&mut self, flow: SocketHandle, buf: &mut [u8]) -> usize {
        if !self.flows.contains_key(&flow) {
            return 0;
        }
        let socket = self.sockets.get_mut::<tcp::Socket<'_>>(flow);
        socket.recv_slice(buf).unwrap_or(0)
    }

    /// Room in `flow`'s send buffer.
    pub(crate) fn send_room(&self, flow: SocketHandle) -> usize {
        if !self.flows.contains_key(&flow) {
            return 0;
        }
        let socket = self.sockets.get::<tcp::Socket<'_>>(flow);
        if !socket.may_send() {
            return 0;
        }
        socket.send_capacity() - socket.send_queue()
    }

    /// Queues `bytes` for the application on `flow`: how many fit.
    pub(crate) fn send(&mut self, flow: SocketHandle, bytes: &[u8]) -> usize {
        if !self.flows.contains_key(&flow) {
            return 0;
        }
        self.sockets
            .get_mut::<tcp::Socket<'_>>(flow)
            .send_slice(bytes)
            .unwrap_or(0)
    }

    /// Whether the application finished sending on `flow` (and everything it sent was read).
    pub(crate) fn app_finished(&self, flow: SocketHandle) -> bool {
        self.flows.contains_key(&flow) && {
            let socket = self.sockets.get::<tcp::Socket<'_>>(flow);
            matches!(
                socket.state(),
                tcp::State::CloseWait
                    | tcp::State::LastAck
                    | tcp::State::Closing
                    | tcp::State::TimeWait
            ) && !socket.can_recv()
        }
    }

    /// The flows (for the caller to serve).
    pub(crate) fn flows(&self) -> impl Iterator<Item = (SocketHandle, &Flow)> {
        self.flows.iter().map(|(h, f)| (*h, f))
    }

    /// Removes the flows whose connections are over (closed, reset, or a listener whose SYN
    /// never bound), after a turn that sends their last segments (a reset, above all): the
    /// caller ends their streams.
    pub(crate) fn reap(&mut self, now: Instant) -> Vec<SocketHandle> {
        self.poll(now);
        let over: Vec<SocketHandle> = self
            .flows
            .keys()
            .copied()
            .filter(|h| {
                matches!(
                    self.sockets.get::<tcp::Socket<'_>>(*h).state(),
                    tcp::State::Closed | tcp::State::TimeWait | tcp::State::Listen
                )
            })
            .collect();
        for h in &over {
            self.flows.remove(h);
            self.tuples.retain(|_, v| v != h);
            self.sockets.remove(*h);
        }
        over
    }

    /// The DNS messages an application sent whole on DNS-over-TCP `flow` (a flow that sends
    /// more than [`MAX_DNS_TCP`] unframed is reset).
    pub(crate) fn dns_queries(&mut self, flow: SocketHandle) -> Vec<Vec<u8>> {
        let mut buf = [0u8; 2048];
        let mut queries = Vec::new();
        loop {
            let n = self.recv(flow, &mut buf);
            let Some(f) = self.flows.get_mut(&flow) else {
                return queries;
            };
            f.dns_bytes.extend_from_slice(&buf[..n]);
            while f.dns_bytes.len() >= 2 {
                let len = usize::from(u16::from_be_bytes([f.dns_bytes[0], f.dns_bytes[1]]));
                if f.dns_bytes.len() < 2 + len {
                    break;
                }
                queries.push(f.dns_bytes[2..2 + len].to_vec());
                f.dns_bytes.drain(..2 + len);
            }
            if f.dns_bytes.len() > MAX_DNS_TCP {
                self.refuse(flow);
                return queries;
            }
            if n == 0 {
                return queries;
            }
        }
    }

    /// Answers on DNS-over-TCP `flow` (framed by length); dropped if it does not fit.
    pub(crate) fn answer_tcp(&mut self, flow: SocketHandle, answer: &[u8]) {
        let Ok(len) = u16::try_from(answer.len()) else {
            return;
        };
        if self.send_room(flow) >= 2 + answer.len() {
            self.send(flow, &len.to_be_bytes());
            self.send(flow, answer);
        }
    }

    /// Queues a UDP answer (DNS, or a flow's datagram) for the device: from the address the
    /// application sent to. One larger than the device's MTU is dropped (counted).
    pub(crate) fn answer_udp(&mut self, reply: UdpReply, answer: &[u8]) {
        match udp_packet(reply.server, reply.app, answer) {
            Some(packet) if packet.len() <= self.device.mtu => self.device.tx.push_back(packet),
            _ => self.counters.too_big += 1,
        }
    }

    /// Refuses the UDP `packet` (an [`Input::Udp`]'s) with an ICMP port unreachable.
    pub(crate) fn refuse_udp(&mut self, packet: &[u8]) {
        if let Some(refusal) = port_unreachable(packet) {
            self.device.tx.push_back(refusal);
        }
    }
}

/// An IP packet's source, destination, protocol and payload (IPv4 or IPv6 without
/// extension headers), checked.
fn ip_parts(packet: &[u8]) -> Option<(IpAddress, IpAddress, IpProtocol, &[u8])> {
    match packet.first()? >> 4 {
        4 => {
            let p = Ipv4Packet::new_checked(packet).ok()?;
            if !p.verify_checksum() || p.more_frags() || p.frag_offset() != 0 {
                return None;
            }
            let payload = &packet[usize::from(p.header_len())..usize::from(p.total_len())];
            Some((
                p.src_addr().into(),
                p.dst_addr().into(),
                p.next_header(),
                payload,
            ))
        }
        6 => {
            let p = Ipv6Packet::new_checked(packet).ok()?;
            let start = p.header_len();
            let payload = packet.get(start..start + usize::from(p.payload_len()))?;
            Some((
                p.src_addr().into(),
                p.dst_addr().into(),
                p.next_header(),
                payload,
            ))
        }
        _ => None,
    }
}

/// The ICMP (or ICMPv6) port unreachable that refuses `packet` (an IPv4 or IPv6 packet that
/// parsed): from its destination to its source, quoting its header and first 8 bytes.
fn port_unreachable(packet: &[u8]) -> Option<Vec<u8>> {
    let caps = ChecksumCapabilities::default();
    match packet.first()? >> 4 {
        4 => {
            let p = Ipv4Packet::new_checked(packet).ok()?;
            let header = Ipv4Repr::parse(&p, &caps).ok()?;
            let payload = p.payload();
            let icmp = Icmpv4Repr::DstUnreachable {
                reason: Icmpv4DstUnreachable::PortUnreachable,
                header,
                data: &payload[..payload.len().min(8)],
            };
            let ip = Ipv4Repr {
                src_addr: header.dst_addr,
                dst_addr: header.src_addr,
                next_header: IpProtocol::Icmp,
                payload_len: icmp.buffer_len(),
                hop_limit: 64,
            };
            let mut out = vec![0u8; ip.buffer_len() + icmp.buffer_len()];
            ip.emit(&mut Ipv4Packet::new_unchecked(&mut out[..]), &caps);
            icmp.emit(
                &mut Icmpv4Packet::new_unchecked(&mut out[ip.buffer_len()..]),
                &caps,
            );
            Some(out)
        }
        6 => {
            let p = Ipv6Packet::new_checked(packet).ok()?;
            let header = Ipv6Repr::parse(&p).ok()?;
            let payload = p.payload();
            let icmp = Icmpv6Repr::DstUnreachable {
                reason: Icmpv6DstUnreachable::PortUnreachable,
                header,
                data: &payload[..payload.len().min(8)],
            };
            let ip = Ipv6Repr {
                src_addr: header.dst_addr,
                dst_addr: header.src_addr,
                next_header: IpProtocol::Icmpv6,
                payload_len: icmp.buffer_len(),
                hop_limit: 64,
            };
            let mut out = vec![0u8; ip.buffer_len() + icmp.buffer_len()];
            ip.emit(&mut Ipv6Packet::new_unchecked(&mut out[..]));
            icmp.emit(
                &header.dst_addr,
                &header.src_addr,
                &mut Icmpv6Packet::new_unchecked(&mut out[ip.buffer_len()..]),
                &caps,
            );
            Some(out)
        }
        _ => None,
    }
}

/// A UDP packet from `from` to `to` carrying `payload`, checksummed.
fn udp_packet(from: IpEndpoint, to: IpEndpoint, payload: &[u8]) -> Option<Vec<u8>> {
    let udp_len = 8 + payload.len();
    if from.addr.version() != to.addr.version() || udp_len > usize::from(u16::MAX) {
        return None;
    }
    let ip = IpRepr::new(from.addr, to.addr, IpProtocol::Udp, udp_len, 64);
    let mut packet = vec![0u8; ip.buffer_len()];
    let caps = ChecksumCapabilities::default();
    ip.emit(&mut packet[..], &caps);
    let header = ip.header_len();
    UdpRepr {
        src_port: from.port,
        dst_port: to.port,
    }
    .emit(
        &mut UdpPacket::new_unchecked(&mut packet[header..]),
        &from.addr,
        &to.addr,
        payload.len(),
        |p| p.copy_from_slice(payload),
        &caps,
    );
    Some(packet)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, clippy::panic, reason = "tests")]
mod tests {
    use std::net::Ipv4Addr;

    use smoltcp::wire::{TcpControl, TcpRepr, TcpSeqNumber};

    use super::*;

    const APP: IpEndpoint = IpEndpoint::new(IpAddress::v4(10, 255, 255, 1), 40000);
    const SERVER: IpEndpoint = IpEndpoint::new(IpAddress::v4(198, 19, 0, 7), 80);

    fn t(ms: i64) -> Instant {
        Instant::from_millis(ms)
    }

    /// A TCP segment from `from` to `to`.
    fn segment(
        from: IpEndpoint,
        to: IpEndpoint,
        control: TcpControl,
        seq: u32,
        ack: Option<u32>,
        payload: &[u8],
    ) -> Vec<u8> {
        let tcp = TcpRepr {
            src_port: from.port,
            dst_port: to.port,
            control,
            seq_number: TcpSeqNumber(seq as i32),
            ack_number: ack.map(|a| TcpSeqNumber(a as i32)),
            window_len: 65535,
            window_scale: None,
            max_seg_size: Some(1400),
            sack_permitted: false,
            sack_ranges: [None, None, None],
            timestamp: None,
            payload,
        };
        let ip = IpRepr::new(from.addr, to.addr, IpProtocol::Tcp, tcp.buffer_len(), 64);
        let mut packet = vec![0u8; ip.buffer_len()];
        let caps = ChecksumCapabilities::default();
        ip.emit(&mut packet[..], &caps);
        let h = ip.header_len();
        tcp.emit(
            &mut TcpPacket::new_unchecked(&mut packet[h..]),
            &from.addr,
            &to.addr,
            &caps,
        );
        packet
    }

    /// The TCP segments among `packets`, as (flags, seq, ack, payload).
    fn tcp_of(packet: &[u8]) -> (bool, bool, bool, u32, u32, Vec<u8>) {
        let (_, _, proto, payload) = ip_parts(packet).unwrap();
        assert_eq!(proto, IpProtocol::Tcp);
        let p = TcpPacket::new_checked(payload).unwrap();
        (
            p.syn(),
            p.rst(),
            p.fin(),
            p.seq_number().0 as u32,
            p.ack_number().0 as u32,
            p.payload().to_vec(),
        )
    }

    fn drain(stack: &mut Stack) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| stack.output()).collect()
    }

    #[test]
    fn a_connection_completes_only_once_accepted_and_carries_bytes_both_ways() {
        let mut s = Stack::new(1500, (8192, 8192), 7, t(0));
        let syn = segment(APP, SERVER, TcpControl::Syn, 1000, None, b"");
        let Input::Connect { flow, to } = s.input(&syn, t(0)) else {
            panic!("no connect")
        };
        assert_eq!(to, SERVER);
        s.poll(t(1));
        assert!(
            drain(&mut s).is_empty(),
            "a SYN-ACK before the exit answered"
        );
        // Held, it asks for no turn sooner than the floor (smoltcp would say "now").
        assert!(s.poll_delay(t(1)).is_none_or(|d| d >= MIN_WAIT));
        // The application's SYN again: the same flow, no second one.
        assert_eq!(s.input(&syn, t(1000)), Input::Taken);
        assert_eq!(s.flows().count(), 1);
        s.accept(flow);
        s.poll(t(1001));
        let out = drain(&mut s);
        assert_eq!(out.len(), 1);
        let (syn_flag, rst, _, server_seq, ack, _) = tcp_of(&out[0]);
        assert!(syn_flag && !rst && ack == 1001);
        // The handshake's last ACK with data.
        let data = segment(
            APP,
            SERVER,
            TcpControl::Psh,
            1001,
            Some(server_seq + 1),
            b"GET / HTTP/1.0\r\n\r\n",
        );
        assert_eq!(s.input(&data, t(1002)), Input::Taken);
        s.poll(t(1002));
        let mut buf = [0u8; 100];
        let n = s.recv(flow, &mut buf);
        assert_eq!(&buf[..n], b"GET / HTTP/1.0\r\n\r\n");
        // Bytes from the exit.
        assert_eq!(s.send(flow, b"HTTP/1.0 200 OK\r\n"), 17);
        s.poll(t(1003));
        let out = drain(&mut s);
        let payloads: Vec<u8> = out.iter().flat_map(|p| tcp_of(p).5).collect();
        assert_eq!(payloads, b"HTTP/1.0 200 OK\r\n");
        // The application closes: seen as finished once read.
        let fin = segment(
            APP,
            SERVER,
            TcpControl::Fin,
            1001 + 18,
            Some(server_seq + 1 + 17),
            b"",
        );
        s.input(&fin, t(1004));
        s.poll(t(1004));
        assert!(s.app_finished(flow));
        s.finish(flow);
        s.poll(t(1005));
        assert!(drain(&mut s).iter().any(|p| tcp_of(p).2), "no FIN");
        let last_ack = segment(
            APP,
            SERVER,
            TcpControl::None,
            1001 + 19,
            Some(server_seq + 1 + 18),
            b"",
        );
        s.input(&last_ack, t(1006));
        s.poll(t(1006));
        assert_eq!(s.reap(t(1006)), vec![flow]);
        assert_eq!(s.flows().count(), 0);
    }

    #[test]
    fn a_refused_connection_is_reset() {
        let mut s = Stack::new(1500, (4096, 4096), 7, t(0));
        let syn = segment(APP, SERVER, TcpControl::Syn, 5, None, b"");
        let Input::Connect { flow, .. } = s.input(&syn, t(0)) else {
            panic!("no connect")
        };
        s.refuse(flow);
        // Reaped in the same turn: its reset still goes out.
        assert_eq!(s.reap(t(1)), vec![flow]);
        let out = drain(&mut s);
        assert!(out.iter().any(|p| tcp_of(p).1), "no reset");
    }

    #[test]
    fn dns_is_answered_here_over_udp_and_tcp() {
        let mut s = Stack::new(1500, (4096, 4096), 7, t(0));
        let resolver = IpEndpoint::new(IpAddress::v4(192, 0, 2, 53), 53);
        let query = b"a query";
        let packet = udp_packet(APP, resolver, query).unwrap();
        let Input::Dns { query: got, reply } = s.input(&packet, t(0)) else {
            panic!("not DNS")
        };
        assert_eq!(got, query);
        s.answer_udp(reply, b"an answer");
        let out = drain(&mut s);
        let (src, dst, proto, payload) = ip_parts(&out[0]).unwrap();
        assert_eq!(
            (src, dst, proto),
            (resolver.addr, APP.addr, IpProtocol::Udp)
        );
        let udp = UdpPacket::new_checked(payload).unwrap();
        assert!(udp.verify_checksum(&src, &dst));
        assert_eq!((udp.src_port(), udp.dst_port()), (53, APP.port));
        assert_eq!(udp.payload(), b"an answer");
        // Over TCP: accepted at once, no stream asked for.
        let syn = segment(APP, resolver, TcpControl::Syn, 1, None, b"");
        assert_eq!(s.input(&syn, t(1)), Input::Taken);
        let out = drain(&mut s);
        let (syn_flag, _, _, server_seq, _, _) = tcp_of(&out[0]);
        assert!(syn_flag);
        let mut framed = vec![0, 7];
        framed.extend_from_slice(query);
        framed.extend_from_slice(&[0, 3, b'x']);
        let data = segment(
            APP,
            resolver,
            TcpControl::Psh,
            2,
            Some(server_seq + 1),
            &framed,
        );
        s.input(&data, t(2));
        s.poll(t(2));
        let (flow, f) = s.flows().next().unwrap();
        assert!(f.dns);
        assert_eq!(s.dns_queries(flow), vec![query.to_vec()]);
        // The rest of the second message.
        let rest = segment(
            APP,
            resolver,
            TcpControl::Psh,
            2 + framed.len() as u32,
            Some(server_seq + 1),
            b"yz",
        );
        s.input(&rest, t(3));
        s.poll(t(3));
        assert_eq!(s.dns_queries(flow), vec![b"xyz".to_vec()]);
        s.answer_tcp(flow, b"answer");
        s.poll(t(4));
        let payloads: Vec<u8> = drain(&mut s).iter().flat_map(|p| tcp_of(p).5).collect();
        assert_eq!(payloads, b"\x00\x06answer");
    }

    #[test]
    fn udp_goes_to_the_caller_and_the_rest_is_dropped_and_counted() {
        let mut s = Stack::new(1500, (4096, 4096), 7, t(0));
        let quic = udp_packet(APP, IpEndpoint::new(SERVER.addr, 443), &[0xc0; 1200]).unwrap();
        let Input::Udp {
            data,
            reply,
            packet,
        } = s.input(&quic, t(0))
        else {
            panic!("not a datagram")
        };
        assert_eq!((data.len(), reply.app, reply.server.port), (1200, APP, 443));
        assert!(drain(&mut s).is_empty());
        // Answers come from where it went; one over the MTU is dropped.
        s.answer_udp(reply, b"back");
        s.answer_udp(reply, &[0; 1500]);
        let out = drain(&mut s);
        assert_eq!(out.len(), 1);
        assert_eq!(s.counters.too_big, 1);
        // Refused (the exit would not relay it), so that QUIC falls back to TCP: an ICMP
        // port unreachable quoting the datagram's header.
        s.refuse_udp(&packet);
        let refusal = s.output().unwrap();
        let p = Ipv4Packet::new_checked(&refusal[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(
            (p.src_addr(), p.dst_addr()),
            (Ipv4Addr::new(198, 19, 0, 7), Ipv4Addr::new(10, 255, 255, 1))
        );
        let icmp = Icmpv4Packet::new_checked(p.payload()).unwrap();
        assert!(icmp.verify_checksum());
        assert_eq!(
            (icmp.msg_type(), icmp.msg_code()),
            (smoltcp::wire::Icmpv4Message::DstUnreachable, 3)
        );
        assert_eq!(
            &icmp.data()[20..24],
            &[0x9c, 0x40, 0x01, 0xbb],
            "the quoted ports"
        );
        let app6 = IpEndpoint::new(IpAddress::v6(0xfd7b, 0x5042, 0, 0, 0, 0, 0, 1), 40001);
        let quic6 = udp_packet(
            app6,
            IpEndpoint::new(IpAddress::v6(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7), 443),
            &[0xc0; 1200],
        )
        .unwrap();
        let Input::Udp { packet, .. } = s.input(&quic6, t(0)) else {
            panic!("not a datagram")
        };
        s.refuse_udp(&packet);
        let refusal = s.output().unwrap();
        let p = Ipv6Packet::new_checked(&refusal[..]).unwrap();
        let icmp = Icmpv6Packet::new_checked(p.payload()).unwrap();
        assert!(icmp.verify_checksum(&p.src_addr(), &p.dst_addr()));
        assert_eq!(
            icmp.msg_type(),
            smoltcp::wire::Icmpv6Message::DstUnreachable
        );
        assert_eq!(icmp.msg_code(), 4, "port unreachable");
        let mdns = udp_packet(
            APP,
            IpEndpoint::new(IpAddress::v4(224, 0, 0, 251), 5353),
            b"q",
        )
        .unwrap();
        assert_eq!(s.input(&mdns, t(0)), Input::Dropped(Drop::Multicast));
        assert_eq!(
            s.input(&[0x45, 0, 1], t(0)),
            Input::Dropped(Drop::Malformed)
        );
        assert_eq!(s.input(&[], t(0)), Input::Dropped(Drop::Malformed));
        let mut bad_sum = udp_packet(APP, IpEndpoint::new(SERVER.addr, 53), b"q").unwrap();
        bad_sum[10] ^= 0xff;
        assert_eq!(s.input(&bad_sum, t(0)), Input::Dropped(Drop::Malformed));
        let c = &s.counters;
        assert_eq!(
            (c.udp, c.multicast, c.malformed, c.packets_in),
            (2, 1, 3, 6)
        );
        assert!(drain(&mut s).is_empty(), "nothing answers a dropped packet");
    }

    #[test]
    fn ipv6_flows_are_carried_too() {
        let mut s = Stack::new(1500, (4096, 4096), 7, t(0));
        let app = IpEndpoint::new(IpAddress::v6(0xfd7b, 0x5042, 0, 0, 0, 0, 0, 1), 40001);
        let server = IpEndpoint::new(IpAddress::v6(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7), 443);
        let syn = segment(app, server, TcpControl::Syn, 9, None, b"");
        let Input::Connect { flow, to } = s.input(&syn, t(0)) else {
            panic!("no connect")
        };
        assert_eq!(to, server);
        s.accept(flow);
        s.poll(t(1));
        let out = drain(&mut s);
        assert!(tcp_of(&out[0]).0, "no SYN-ACK");
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_from_the_device_are_handled_without_panic(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
        ) {
            let mut s = Stack::new(1500, (1024, 1024), 1, t(0));
            let _ = s.input(&bytes, t(0));
            s.poll(t(1));
            let _ = drain(&mut s);
        }
    }
}
