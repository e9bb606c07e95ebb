//! A passive observer's recording: every IPv4 UDP and TCP frame that crosses a namespace's
//! interfaces, with the kernel's timestamp, read from one `AF_PACKET` socket on a thread of
//! its own. In a [`crate::Star`]'s switch namespace this is a global observer of the
//! testbed: every frame a node sends enters the bridge through the node's port, once
//! ([`Capture`] keeps what arrives on the ports and drops what the bridge sends out of them,
//! which is the same frame again).
//!
//! The timestamp is taken when the frame reaches the port, which on a veth is in the
//! sender's own `send` (the kernel stamps frames as it queues them): the sender's timing, as
//! a wire observer would see it.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
};

use crate::{Netns, TestbedError, sys};

/// `sll_pkttype` of frames the namespace sends (`linux/if_packet.h`).
const PACKET_OUTGOING: u8 = 4;
/// Bytes of each frame copied: Ethernet, IPv4 with options, the TCP header.
const SNAP: usize = 14 + 60 + 60;

/// One recorded frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    /// When it was seen: nanoseconds since the Unix epoch (`CLOCK_REALTIME`).
    pub ns: u64,
    /// Its source address and port.
    pub src: SocketAddrV4,
    /// Its destination address and port.
    pub dst: SocketAddrV4,
    /// `17` UDP or `6` TCP.
    pub protocol: u8,
    /// Its IPv4 total length.
    pub len: u16,
    /// Its transport payload's length (the UDP datagram's or TCP segment's data).
    pub payload: u16,
}

/// What a [`Capture`] recorded.
#[derive(Debug, Default)]
pub struct Recording {
    /// The frames, in the order the socket read them (time order but for ties across CPUs).
    pub frames: Vec<Frame>,
    /// Frames the kernel dropped because the reader fell behind.
    pub dropped: u64,
    /// Frames that were not IPv4 UDP or TCP (ARP, IPv6 neighbour discovery, …).
    pub other: u64,
}

/// A recording under way; [`Capture::stop`] ends it.
#[derive(Debug)]
pub struct Capture {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Recording, TestbedError>>>,
}

impl Capture {
    /// Starts recording every frame entering the interfaces of `ns` from outside.
    ///
    /// # Errors
    ///
    /// [`TestbedError::Setns`] if the namespace cannot be entered, [`TestbedError::Socket`] if
    /// the socket cannot be made (it needs CAP_NET_RAW).
    pub fn start(ns: &Netns) -> Result<Self, TestbedError> {
        let socket = ns
            .in_netns(|| sys::packet_socket(64 << 20))?
            .map_err(|source| TestbedError::Socket {
                what: "AF_PACKET socket for the capture".into(),
                source,
            })?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("pb-capture".into())
            .spawn(move || record(&socket, &flag))
            .map_err(|source| TestbedError::Socket {
                what: "capture thread".into(),
                source,
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops and returns the recording.
    ///
    /// # Errors
    ///
    /// [`TestbedError::Socket`] if reading failed.
    pub fn stop(mut self) -> Result<Recording, TestbedError> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(recording)) => recording,
            _ => Err(TestbedError::Socket {
                what: "capture thread".into(),
                source: std::io::Error::other("it panicked"),
            }),
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn record(socket: &std::os::fd::OwnedFd, stop: &AtomicBool) -> Result<Recording, TestbedError> {
    let io_error = |source| TestbedError::Socket {
        what: "reading the capture socket".into(),
        source,
    };
    let mut recording = Recording::default();
    let mut buf = [0u8; SNAP];
    while !stop.load(Ordering::Relaxed) {
        let Some(raw) = sys::read_frame(socket, &mut buf).map_err(io_error)? else {
            continue;
        };
        if raw.pkttype == PACKET_OUTGOING {
            continue;
        }
        let copied = raw.len.min(SNAP);
        match parse(&buf[..copied], raw.ns) {
            Some(frame) => recording.frames.push(frame),
            None => recording.other += 1,
        }
    }
    recording.dropped = sys::packet_drops(socket).map_err(io_error)?;
    Ok(recording)
}

/// The IPv4 UDP or TCP frame in `bytes` (an Ethernet frame's first bytes), seen at `ns`.
pub fn parse(bytes: &[u8], ns: u64) -> Option<Frame> {
    const IPV4: [u8; 2] = [0x08, 0x00];
    if bytes.get(12..14)? != IPV4 {
        return None;
    }
    let ip = bytes.get(14..)?;
    let version_ihl = *ip.first()?;
    if version_ihl >> 4 != 4 {
        return None;
    }
    let header = usize::from(version_ihl & 0x0f) * 4;
    let len = u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]);
    let protocol = *ip.get(9)?;
    let address = |at: usize| -> Option<Ipv4Addr> {
        let b = ip.get(at..at + 4)?;
        Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    };
    let (src_ip, dst_ip) = (address(12)?, address(16)?);
    let transport = ip.get(header..)?;
    let port = |at: usize| -> Option<u16> {
        Some(u16::from_be_bytes([
            *transport.get(at)?,
            *transport.get(at + 1)?,
        ]))
    };
    let (src_port, dst_port) = (port(0)?, port(2)?);
    let transport_header = match protocol {
        17 => 8,
        6 => usize::from(*transport.get(12)? >> 4) * 4,
        _ => return None,
    };
    let payload = usize::from(len)
        .saturating_sub(header)
        .saturating_sub(transport_header);
    Some(Frame {
        ns,
        src: SocketAddrV4::new(src_ip, src_port),
        dst: SocketAddrV4::new(dst_ip, dst_port),
        protocol,
        len,
        payload: u16::try_from(payload).unwrap_or(u16::MAX),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ethernet(ip: &[u8]) -> Vec<u8> {
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(ip);
        frame
    }

    #[test]
    fn udp_and_tcp_frames_are_read_and_anything_else_is_not() {
        let mut udp = vec![0x45, 0, 0x05, 0xc8, 0, 0, 0, 0, 64, 17, 0, 0];
        udp.extend_from_slice(&[198, 18, 0, 1, 198, 18, 0, 2]);
        udp.extend_from_slice(&[0xb9, 0x6e, 0xb9, 0x78, 0x05, 0xb4, 0, 0]);
        let frame = parse(&ethernet(&udp), 7).unwrap();
        assert_eq!(frame.src, "198.18.0.1:47470".parse().unwrap());
        assert_eq!(frame.dst, "198.18.0.2:47480".parse().unwrap());
        assert_eq!((frame.protocol, frame.len, frame.payload), (17, 1480, 1452));
        assert_eq!(frame.ns, 7);

        let mut tcp = vec![0x45, 0, 0, 140, 0, 0, 0, 0, 64, 6, 0, 0];
        tcp.extend_from_slice(&[198, 18, 0, 9, 198, 18, 0, 10]);
        tcp.extend_from_slice(&[0, 80, 0xc0, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0x10]);
        tcp.resize(20 + 32, 0);
        let frame = parse(&ethernet(&tcp), 0).unwrap();
        assert_eq!((frame.protocol, frame.payload), (6, 140 - 20 - 32));

        let mut arp = ethernet(&[0; 28]);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(parse(&arp, 0), None);
        assert_eq!(parse(&ethernet(&udp[..10]), 0), None, "cut short");
        let mut icmp = udp.clone();
        icmp[9] = 1;
        assert_eq!(parse(&ethernet(&icmp), 0), None);
    }
}
