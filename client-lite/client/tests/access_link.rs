//! What an observer of the client's access link learns: the same testnet as `e2e.rs` (a
//! gateway, three mix layers of two, an exit, an HTTP server, `pb-client` in a client
//! namespace), and a packet capture (AF_PACKET) on the client namespace's only interface,
//! which sees every datagram between the client and its gateway, both directions, both of
//! the gateway's ports.
//!
//! Shows: in an idle window (nothing fetched) and a busy window of the same length (curl
//! fetching a large file through pb-client the whole time, and fetching at least
//! [`MIN_FETCHED`] bytes), the client speaks to its gateway only over the client link (the
//! plain UDP transport): every datagram either way is one size, 1452 bytes; every second of
//! both windows holds the link's rate each way (64 up, 100 down, within [`SLACK`]); and
//! each of the four streams (up to the gateway's packet port, up to its client-link port,
//! down from each) has per-second datagram counts and inter-send gaps that a two-sample
//! Kolmogorov-Smirnov test cannot tell apart (every p-value, corrected for the number of
//! comparisons, at least [`P_MIN`]); a stream present in one window and absent from the
//! other fails outright (the packet port's are absent from both). It is the acceptance
//! test for "an observer of the link cannot tell idle from busy"; it proves nothing about
//! what the gateway, or anyone past it, can tell.
#![cfg(target_arch = "x86_64")]
#![expect(clippy::unwrap_used, clippy::panic, reason = "tests")]

mod common {
    pub mod ks;
    pub mod testnet;
}

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, anyhow};
use common::{
    ks,
    testnet::{exit_resolves, relay_binary},
};
use pb_testnet::{FileServer, Network, Node, Testnet};

use crate::capture::PacketSocket;

const RELAYS: usize = 8;
const EXIT: Node = Node::Relay(RELAYS - 1);
const GATEWAY: usize = 0;
const HTTP_PORT: u16 = 8080;
const SERVER_NAME: &str = "server.pb.test";
/// Large enough that no fetch ends early in the busy window (each is restarted anyway).
const FILE_LEN: usize = 4 << 20;
/// After pb-client is ready, before the idle window: its first directory fetch and
/// hellos are over.
const SETTLE: Duration = Duration::from_secs(5);
/// The idle window and the busy window, each: 30 one-second bins for the counts, and at
/// the client's 50 packets a second some 1,500 gaps up to the packet port; with the
/// testnet's start-up the test takes about a minute and a half.
const WINDOW: Duration = Duration::from_secs(30);
/// Less than this fetched in the busy window and it was not busy: the test proves nothing.
const MIN_FETCHED: u64 = 100 << 10;
/// A stream with fewer datagrams than this in a window has too few gaps to compare (its
/// counts per second are still compared).
const HANDFUL: usize = 5;
/// The acceptance criterion's level, for the whole family of comparisons: each p-value is
/// corrected (Bonferroni: times the number of comparisons made) before it is held against
/// it. Uncorrected, each of up to eight comparisons would fail by chance one run in twenty
/// with nothing leaking; corrected, the whole test does at most that often, while a leak
/// such as a downlink that follows the downloads (p about 1e-14) or send times that follow
/// the event loop (p about 1e-7) fails it by orders of magnitude.
const P_MIN: f64 = 0.05;

/// The client link's rates under the default profile, records a second: up, down.
const RATES: (f64, f64) = (64.0, 100.0);
/// How far one second's count may be from the rate (a slot falls either side of a second's
/// boundary, and the capture's clock is not the sender's).
const SLACK: f64 = 2.0;
/// Missed slots a sender may report and still have its seconds judged with a wider
/// [`slack`]: two stalls' worth.
const STALLS_FORGIVEN: u64 = 8;

/// The datagrams an observer of the link tells apart by address and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stream {
    /// Client → gateway's packet port: Sphinx packets, cover and loops.
    UpPacket,
    /// Client → gateway's client-link port: hellos, directory requests.
    UpLink,
    /// Gateway's packet port → client.
    DownPacket,
    /// Gateway's client-link port → client: welcomes, directory pages, replies, loops.
    DownLink,
}

impl Stream {
    const ALL: [Self; 4] = [
        Self::UpPacket,
        Self::UpLink,
        Self::DownPacket,
        Self::DownLink,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::UpPacket => "up to packet port",
            Self::UpLink => "up to client-link port",
            Self::DownPacket => "down from packet port",
            Self::DownLink => "down from client-link port",
        }
    }
}

/// The gateway's two addresses, which name the streams.
#[derive(Clone, Copy, Debug)]
struct Gateway {
    packet: SocketAddr,
    link: SocketAddr,
}

impl Gateway {
    /// The stream an Ethernet frame belongs to; `None` for anything else (not IPv4, not
    /// UDP, a later fragment, another peer, too short to tell).
    fn classify(&self, frame: &[u8]) -> Option<Stream> {
        self.classify_sized(frame).map(|(s, _)| s)
    }

    /// The stream and the UDP payload's length.
    fn classify_sized(&self, frame: &[u8]) -> Option<(Stream, usize)> {
        let (from, to, len) = udp_endpoints(frame)?;
        let stream = match (from, to) {
            (_, to) if to == self.packet => Stream::UpPacket,
            (_, to) if to == self.link => Stream::UpLink,
            (from, _) if from == self.packet => Stream::DownPacket,
            (from, _) if from == self.link => Stream::DownLink,
            _ => return None,
        };
        Some((stream, len))
    }
}

/// The source, the destination and the payload length of an Ethernet frame holding an IPv4
/// UDP datagram (its first fragment, which has the UDP header); `None` for anything else,
/// however short or odd.
fn udp_endpoints(frame: &[u8]) -> Option<(SocketAddr, SocketAddr, usize)> {
    const ETHERNET_HEADER: usize = 14;
    const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];
    const PROTOCOL_UDP: u8 = 17;
    if frame.get(12..ETHERNET_HEADER)? != ETHERTYPE_IPV4 {
        return None;
    }
    let ip = frame.get(ETHERNET_HEADER..)?;
    let first = *ip.first()?;
    let header_len = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || header_len < 20 {
        return None;
    }
    let header = ip.get(..header_len)?;
    let fragment_offset = u16::from_be_bytes([header[6], header[7]]) & 0x1fff;
    if header[9] != PROTOCOL_UDP || fragment_offset != 0 {
        return None;
    }
    let udp = ip.get(header_len..header_len + 8)?;
    let address =
        |at: usize| Ipv4Addr::new(header[at], header[at + 1], header[at + 2], header[at + 3]);
    let port = |at: usize| u16::from_be_bytes([udp[at], udp[at + 1]]);
    Some((
        SocketAddr::from((address(12), port(0))),
        SocketAddr::from((address(16), port(2))),
        usize::from(port(4)).saturating_sub(8),
    ))
}

/// The raw socket: the only unsafe code of the test.
mod capture {
    use std::{
        io,
        mem::size_of,
        os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        time::Duration,
    };

    /// `ETH_P_ALL` in network byte order, as `sockaddr_ll` wants it: every protocol.
    const ALL_PROTOCOLS: u16 = (libc::ETH_P_ALL as u16).to_be();

    /// An AF_PACKET socket that sees every frame on one interface, sent and received,
    /// each with the kernel's timestamp. The `OwnedFd` closes it when dropped.
    #[derive(Debug)]
    pub struct PacketSocket(OwnedFd);

    impl PacketSocket {
        /// Opens one on interface `ifindex` of the calling thread's network namespace
        /// (where the socket then stays); a receive waits at most `timeout`.
        pub fn open(ifindex: i32, timeout: Duration) -> io::Result<Self> {
            // Protocol 0 receives nothing until `bind` names the protocol and the
            // interface, so no frame of another interface is queued in between.
            // SAFETY: plain system call with constant arguments; no pointers.
            let fd =
                unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `fd` was just returned by socket(2) and is owned by nothing else;
            // from here on the OwnedFd closes it on every path.
            let socket = Self(unsafe { OwnedFd::from_raw_fd(fd) });
            let timeout = libc::timeval {
                tv_sec: timeout.as_secs().try_into().unwrap_or(libc::time_t::MAX),
                tv_usec: timeout.subsec_micros().into(),
            };
            socket.set(libc::SOL_SOCKET, libc::SO_RCVTIMEO, &timeout)?;
            socket.set(libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, &1 as &libc::c_int)?;
            // Room for seconds of frames if the reading thread is descheduled.
            socket.set(
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                &(8 << 20) as &libc::c_int,
            )?;
            let address = libc::sockaddr_ll {
                sll_family: libc::AF_PACKET as u16,
                sll_protocol: ALL_PROTOCOLS,
                sll_ifindex: ifindex,
                sll_hatype: 0,
                sll_pkttype: 0,
                sll_halen: 0,
                sll_addr: [0; 8],
            };
            // SAFETY: `address` is a live, initialised sockaddr_ll and the length passed
            // is its size; bind(2) only reads it.
            let bound = unsafe {
                libc::bind(
                    socket.0.as_raw_fd(),
                    (&raw const address).cast(),
                    size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            if bound < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(socket)
        }

        /// setsockopt(2) with `value`.
        fn set<T>(&self, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
            // SAFETY: `value` is a live `T` and the length passed is `T`'s size; the
            // kernel only reads it. Each caller passes the type the option takes.
            let done = unsafe {
                libc::setsockopt(
                    self.0.as_raw_fd(),
                    level,
                    name,
                    (&raw const *value).cast(),
                    size_of::<T>() as libc::socklen_t,
                )
            };
            if done < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        }

        /// The next frame's first `buf.len()` bytes into `buf`: how many, and when the
        /// kernel saw the frame (nanoseconds since the Unix epoch) if it said. `None` when
        /// the timeout passed (or a signal came) first.
        pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<(usize, Option<i128>)>> {
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            // u64s: aligned for cmsghdr. Room for a timestamp and more.
            let mut control = [0u64; 16];
            // SAFETY: msghdr is plain data for which all zeroes (null pointers, zero
            // lengths) is a valid value.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = &raw mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = size_of_val(&control);
            // SAFETY: `msg` points at `iov` (which points at `buf`, with its length) and at
            // `control` (with its length), all live and not otherwise borrowed during the
            // call; the kernel writes at most those lengths. (A longer frame is cut.)
            let n = unsafe { libc::recvmsg(self.0.as_raw_fd(), &raw mut msg, 0) };
            let Ok(n) = usize::try_from(n) else {
                let error = io::Error::last_os_error();
                return match error.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
                    _ => Err(error),
                };
            };
            let mut stamp = None;
            // SAFETY: after recvmsg, `msg.msg_control` and `msg.msg_controllen` describe
            // the part of `control` the kernel filled, still live; CMSG_FIRSTHDR and
            // CMSG_NXTHDR return a header lying wholly inside it, or null; a header whose
            // `cmsg_len` covers a timespec has that many data bytes at CMSG_DATA, inside
            // `control`. Reads are unaligned ones, so alignment does not matter.
            unsafe {
                let mut header = libc::CMSG_FIRSTHDR(&raw const msg);
                while !header.is_null() {
                    let h = std::ptr::read_unaligned(header);
                    let needed = libc::CMSG_LEN(size_of::<libc::timespec>() as u32) as usize;
                    if h.cmsg_level == libc::SOL_SOCKET
                        && h.cmsg_type == libc::SCM_TIMESTAMPNS
                        && h.cmsg_len >= needed
                    {
                        let t: libc::timespec =
                            std::ptr::read_unaligned(libc::CMSG_DATA(header).cast());
                        stamp = Some(i128::from(t.tv_sec) * 1_000_000_000 + i128::from(t.tv_nsec));
                    }
                    header = libc::CMSG_NXTHDR(&raw const msg, header);
                }
            }
            Ok(Some((n.min(buf.len()), stamp)))
        }

        /// Frames the kernel dropped for want of room in the socket's buffer since this was
        /// last asked (PACKET_STATISTICS resets its counters).
        pub fn drops(&self) -> io::Result<u32> {
            let mut stats = libc::tpacket_stats {
                tp_packets: 0,
                tp_drops: 0,
            };
            let mut len = size_of::<libc::tpacket_stats>() as libc::socklen_t;
            // SAFETY: `stats` and `len` are live and exclusively borrowed; `len` says how
            // much of `stats` the kernel may write, which is its whole size.
            let done = unsafe {
                libc::getsockopt(
                    self.0.as_raw_fd(),
                    libc::SOL_PACKET,
                    libc::PACKET_STATISTICS,
                    (&raw mut stats).cast(),
                    &raw mut len,
                )
            };
            if done < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(stats.tp_drops)
        }
    }
}

/// Nanoseconds since the Unix epoch: the clock of SO_TIMESTAMPNS.
fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// What a capture saw.
#[derive(Debug, Default)]
struct Seen {
    /// Each classified datagram and when (nanoseconds since the Unix epoch).
    datagrams: Vec<(Stream, i128)>,
    /// The UDP payload lengths seen, per stream.
    sizes: Vec<(Stream, usize)>,
    /// Frames of any kind.
    frames: u64,
    /// Frames without a kernel timestamp (timed at receipt instead).
    unstamped: u64,
    /// Frames the kernel dropped.
    drops: u32,
}

/// A capture running on a thread of its own. [`Capture::finish`] (or dropping it, also
/// while a panic unwinds) stops the thread within the socket's timeout, which closes the
/// socket.
#[derive(Debug)]
struct Capture {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<std::io::Result<Seen>>>,
}

impl Capture {
    fn start(socket: PacketSocket, gateway: Gateway) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = thread::spawn(move || {
            let mut seen = Seen::default();
            // Ethernet, the longest IPv4 header and UDP's ports fit.
            let mut frame = [0u8; 128];
            while !stopped.load(Ordering::Relaxed) {
                let Some((n, stamp)) = socket.recv(&mut frame)? else {
                    continue;
                };
                seen.frames += 1;
                let at = stamp.unwrap_or_else(|| {
                    seen.unstamped += 1;
                    now_ns()
                });
                if let Some((stream, len)) = frame.get(..n).and_then(|f| gateway.classify_sized(f))
                {
                    seen.datagrams.push((stream, at));
                    if !seen.sizes.contains(&(stream, len)) {
                        seen.sizes.push((stream, len));
                    }
                }
            }
            seen.drops = socket.drops()?;
            Ok(seen)
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> anyhow::Result<Seen> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self
            .thread
            .take()
            .ok_or_else(|| anyhow!("already finished"))?;
        let seen = thread
            .join()
            .map_err(|_| anyhow!("the capture thread panicked"))?;
        seen.context("capturing")
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

/// One stream in one window: its datagrams' times, in seconds from the window's start.
fn in_window(seen: &[(Stream, i128)], stream: Stream, start: i128) -> Vec<f64> {
    let end = start + WINDOW.as_nanos() as i128;
    let mut times: Vec<f64> = seen
        .iter()
        .filter(|&&(s, at)| s == stream && (start..end).contains(&at))
        .map(|&(_, at)| (at - start) as f64 / 1e9)
        .collect();
    times.sort_by(f64::total_cmp);
    times
}

/// Datagrams in each second of the window.
fn counts_per_second(times: &[f64]) -> Vec<f64> {
    let mut counts = vec![0.0; WINDOW.as_secs() as usize];
    for &t in times {
        if let Some(bin) = counts.get_mut(t as usize) {
            *bin += 1.0;
        }
    }
    counts
}

/// How far one second's count may be from the rate when the sender counted `missed` slots
/// it could not keep (its thread was held off the CPU for more than a burst of late slots:
/// a stall of the machine, which this 2-vCPU testbed shows a few times an hour). Each missed
/// slot is one datagram fewer, and the late slots sent at once when the thread runs again
/// ([`pb_link::clock::MAX_BURST`]) can fall into the next second. Only a few stalls are
/// forgiven: a sender that missed more than [`STALLS_FORGIVEN`] slots keeps [`SLACK`], so a
/// link whose slots follow its load still fails here (and its counts' KS test as well).
fn slack(missed: u64) -> f64 {
    if missed == 0 || missed > STALLS_FORGIVEN {
        SLACK
    } else {
        SLACK + missed as f64 + f64::from(pb_link::clock::MAX_BURST)
    }
}

/// The missed slots in pb-client's last report ("… N uplink slots missed …").
fn slots_missed(line: &str) -> Option<u64> {
    let (before, _) = line.split_once(" uplink slots missed")?;
    before.rsplit(' ').next()?.parse().ok()
}

/// The gaps between consecutive datagrams.
fn gaps(times: &[f64]) -> Vec<f64> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

/// One KS comparison of a stream's idle and busy windows: what was compared, and its
/// uncorrected p-value.
struct Comparison {
    what: String,
    p: f64,
}

/// Compares a stream's idle and busy windows: its report line, the comparisons made, and a
/// failure if the stream is present in one window only.
fn compare(
    stream: Stream,
    idle: &[f64],
    busy: &[f64],
) -> (String, Vec<Comparison>, Option<String>) {
    let seconds = WINDOW.as_secs_f64();
    let head = format!(
        "{:<26} idle {:>6.1}/s  busy {:>6.1}/s",
        stream.name(),
        idle.len() as f64 / seconds,
        busy.len() as f64 / seconds
    );
    let sizes = format!("(datagrams idle {}, busy {})", idle.len(), busy.len());
    if idle.is_empty() && busy.is_empty() {
        return (
            format!("{head}  none in either window: passes {sizes}"),
            Vec::new(),
            None,
        );
    }
    if idle.is_empty() || busy.is_empty() {
        return (
            format!("{head}  LEAK: present in one window only {sizes}"),
            Vec::new(),
            Some(format!("{}: present in one window only", stream.name())),
        );
    }
    let counts = ks::two_sample(&counts_per_second(idle), &counts_per_second(busy));
    let mut made = vec![Comparison {
        what: format!("{}: counts per second", stream.name()),
        p: counts.p,
    }];
    let gaps_said = if idle.len() >= HANDFUL && busy.len() >= HANDFUL {
        let gaps = ks::two_sample(&gaps(idle), &gaps(busy));
        made.push(Comparison {
            what: format!("{}: gaps", stream.name()),
            p: gaps.p,
        });
        format!("{:.3e} (D {:.3})", gaps.p, gaps.d)
    } else {
        "too few to compare".to_owned()
    };
    let line = format!(
        "{head}  KS p counts {:.3e} (D {:.3}), gaps {gaps_said} {sizes}",
        counts.p, counts.d,
    );
    (line, made, None)
}

/// The index of the only interface other than `lo` in `ip -o link show` output.
fn only_interface(links: &str) -> Option<i32> {
    let mut found = links.lines().filter_map(|line| {
        let mut fields = line.split(": ");
        let index = fields.next()?.trim().parse().ok()?;
        let name = fields.next()?.split('@').next()?;
        (name != "lo").then_some(index)
    });
    let index = found.next()?;
    found.next().is_none().then_some(index)
}

/// curl's exit code for "--max-time passed".
const CURL_TIMED_OUT: i32 = 28;

/// Fetches `url` with curl in namespace `ns` through pb-client, one fetch after another,
/// until `deadline` (the last one cut there): the bytes fetched and the fetches completed.
fn fetch_until(ns: &str, url: &str, out: &Path, deadline: Instant) -> (u64, usize) {
    let (mut bytes, mut complete) = (0, 0);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left < Duration::from_millis(100) {
            return (bytes, complete);
        }
        let _ = std::fs::remove_file(out);
        let started = Instant::now();
        let result = Command::new("ip")
            .args(["netns", "exec", ns, "curl", "-sS", "--max-time"])
            .arg(format!("{:.3}", left.as_secs_f64()))
            .args(["--socks5-hostname", "127.0.0.1:1080", url, "-o"])
            .arg(out)
            .output()
            .unwrap();
        // A fetch cut by --max-time leaves what it got in the file.
        bytes += std::fs::metadata(out).map_or(0, |m| m.len());
        match result.status.code() {
            Some(0) => complete += 1,
            // Cut at the deadline: expected.
            Some(CURL_TIMED_OUT) => {}
            _ => {
                println!("curl: {}", String::from_utf8_lossy(&result.stderr).trim());
                if started.elapsed() < Duration::from_millis(200) {
                    // Refused at once: do not spin.
                    thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }
}

#[test]
fn an_observer_of_the_access_link_cannot_tell_idle_from_busy() {
    if !pb_testbed::require_privileged("an_observer_of_the_access_link_cannot_tell_idle_from_busy")
    {
        return;
    }
    let started = Instant::now();
    let network = Network::builder()
        .relays(RELAYS)
        .netns("acl")
        .network_seed([0x5a; 32])
        .identity_seeds(0xa0)
        .link_rate(100)
        .loop_rate(1)
        .stats_interval(0.0)
        .admin(true)
        .relay_binary(relay_binary())
        .build()
        .unwrap();
    let mut net = Testnet::create(network.clone()).unwrap();
    let server_ip = network.address(Node::Web);
    let ns_name = |node| net.netns(node).unwrap().name().to_owned();
    let client_ns = ns_name(Node::Client);
    // The exit resolves the server's name from its namespace's hosts file.
    let _etc = exit_resolves(&ns_name(EXIT), SERVER_NAME, server_ip.into());
    net.start_relays().unwrap();
    let body = Arc::new(pb_testnet::pattern(FILE_LEN));
    let _server = FileServer::start(net.listen(Node::Web, HTTP_PORT).unwrap(), body).unwrap();
    if let Err(e) = net.wait_for_agreement(Duration::from_secs(60)) {
        panic!("{e}");
    }

    // The capture, on the client namespace's one interface (its end of the bridge).
    let links = net
        .netns(Node::Client)
        .unwrap()
        .run(&["-o", "link", "show"])
        .unwrap();
    let ifindex = only_interface(&links).unwrap_or_else(|| {
        panic!("not one interface besides lo in the client's namespace:\n{links}")
    });
    let socket = net
        .in_node(Node::Client, || {
            PacketSocket::open(ifindex, Duration::from_millis(100))
        })
        .unwrap()
        .unwrap();
    let gateway = Gateway {
        packet: network.packet_addr(GATEWAY),
        link: network.client_link(),
    };
    let capture = Capture::start(socket, gateway);

    let command = net.client_command(env!("CARGO_BIN_EXE_pb-client"));
    let client = match net.start_client("pb-client", command, Duration::from_secs(30)) {
        Ok(k) => k,
        Err(e) => panic!("pb-client did not get ready: {e:#}\n{}", net.report(40)),
    };
    thread::sleep(SETTLE);

    // Idle, then busy: windows of the same length, by the capture's clock.
    let idle_start = now_ns();
    thread::sleep(WINDOW);
    let busy_start = now_ns();
    let deadline = Instant::now() + WINDOW;
    let url = format!("http://{SERVER_NAME}:{HTTP_PORT}/file");
    let (fetched, complete) = fetch_until(&client_ns, &url, &net.dir().join("fetched"), deadline);
    thread::sleep(deadline.saturating_duration_since(Instant::now()));
    if let Some(exited) = net.exited() {
        panic!("{exited}\n{}", net.report(40));
    }
    let seen = capture.finish().unwrap();

    println!(
        "busy window: {fetched} bytes fetched, {complete} fetches complete; capture: {} frames, {} of the gateway's datagrams, {} without a kernel timestamp, {} dropped",
        seen.frames,
        seen.datagrams.len(),
        seen.unstamped,
        seen.drops
    );
    // The slots each sender counted as missed (its thread was held off the CPU for more than
    // a burst of late slots): pb-client's uplink, from its last report, and the gateway's
    // downlink, from its `/metrics`.
    let down_missed = net
        .admin_get(GATEWAY, "/metrics")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                l.strip_prefix("pb_client_link_downlink_missed_total ")?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
        })
        .unwrap_or_else(|| {
            panic!(
                "the gateway's /metrics has no downlink_missed counter\n{}",
                net.report(20)
            )
        });
    if let Some(p) = net.process_mut(client) {
        let _ = p.terminate();
    }
    let client_lines = net
        .process(client)
        .map(|p| p.lines_with("pb-client: "))
        .unwrap_or_default();
    let up_missed = client_lines
        .iter()
        .find_map(|l| slots_missed(l))
        .unwrap_or_else(|| {
            panic!(
                "pb-client did not report its missed slots\n{}",
                net.report(20)
            )
        });
    let (mut failures, mut made) = (Vec::new(), Vec::new());
    // One size, and the link's rate in every second, both ways, idle and busy.
    println!("datagram sizes seen: {:?}", seen.sizes);
    for (stream, len) in &seen.sizes {
        if *len != pb_link::RECORD_LEN {
            failures.push(format!("{}: a datagram of {len} bytes", stream.name()));
        }
    }
    for (stream, rate, missed) in [
        (Stream::UpLink, RATES.0, up_missed),
        (Stream::DownLink, RATES.1, down_missed),
    ] {
        let slack = slack(missed);
        for (window, start) in [("idle", idle_start), ("busy", busy_start)] {
            let counts = counts_per_second(&in_window(&seen.datagrams, stream, start));
            let worst = counts.iter().map(|c| (c - rate).abs()).fold(0.0, f64::max);
            println!(
                "{} {window}: {rate}/s, worst second off by {worst} (allowed {slack}: the sender missed {missed} slots)",
                stream.name()
            );
            if worst > slack {
                failures.push(format!(
                    "{} {window}: a second {worst} datagrams off the link's {rate}/s: {counts:?}",
                    stream.name()
                ));
            }
        }
    }
    for stream in Stream::ALL {
        let idle = in_window(&seen.datagrams, stream, idle_start);
        let busy = in_window(&seen.datagrams, stream, busy_start);
        let (line, comparisons, failure) = compare(stream, &idle, &busy);
        println!("{line}");
        made.extend(comparisons);
        failures.extend(failure);
    }
    let m = made.len() as f64;
    let smallest = made.iter().map(|c| c.p).fold(1.0, f64::min);
    println!(
        "{} comparisons; smallest p {smallest:.3e}, corrected (x{}) {:.3e}; level {P_MIN}",
        made.len(),
        made.len(),
        (smallest * m).min(1.0)
    );
    for c in &made {
        if c.p * m < P_MIN {
            failures.push(format!(
                "{}: p = {:.2e}, corrected {:.2e}",
                c.what,
                c.p,
                c.p * m
            ));
        }
    }
    // pb-client's own counters: its sessions' packets and replies, and the packets it sent
    // late (its event loop fell behind).
    for line in client_lines
        .iter()
        .filter(|l| l.contains("session: ") || l.contains("sent late"))
    {
        println!("{line}");
    }
    println!("took {:.0?}", started.elapsed());
    assert!(
        fetched >= MIN_FETCHED,
        "the busy window fetched only {fetched} bytes: it was not busy, the comparison proves nothing"
    );
    assert_eq!(
        seen.drops, 0,
        "the capture lost frames: the counts are not the link's"
    );
    assert!(
        failures.is_empty(),
        "an observer of the access link tells idle from busy (corrected KS p < {P_MIN}):\n{}",
        failures.join("\n")
    );
}

#[test]
fn frames_are_classified_by_the_gateways_ports_and_odd_ones_ignored() {
    let gateway = Gateway {
        packet: "198.18.0.1:4000".parse().unwrap(),
        link: "198.18.0.1:4001".parse().unwrap(),
    };
    let frame = |from: [u8; 4], from_port: u16, to: [u8; 4], to_port: u16| {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&[0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0]);
        f.extend_from_slice(&from);
        f.extend_from_slice(&to);
        f.extend_from_slice(&from_port.to_be_bytes());
        f.extend_from_slice(&to_port.to_be_bytes());
        f.extend_from_slice(&[0, 8, 0, 0]);
        f
    };
    let client = [198, 18, 0, 10];
    let gw = [198, 18, 0, 1];
    assert_eq!(
        gateway.classify(&frame(client, 5555, gw, 4000)),
        Some(Stream::UpPacket)
    );
    assert_eq!(
        gateway.classify(&frame(client, 5555, gw, 4001)),
        Some(Stream::UpLink)
    );
    assert_eq!(
        gateway.classify(&frame(gw, 4000, client, 5555)),
        Some(Stream::DownPacket)
    );
    assert_eq!(
        gateway.classify(&frame(gw, 4001, client, 5555)),
        Some(Stream::DownLink)
    );
    assert_eq!(gateway.classify(&frame(client, 5555, gw, 4002)), None);
    let good = frame(gw, 4001, client, 5555);
    // Every truncation, and a later fragment, a TCP segment, an ARP frame: ignored.
    for n in 0..good.len() {
        assert_eq!(gateway.classify(&good[..n]), None, "cut at {n}");
    }
    let mut fragment = good.clone();
    fragment[14 + 7] = 1;
    assert_eq!(gateway.classify(&fragment), None);
    let mut tcp = good.clone();
    tcp[14 + 9] = 6;
    assert_eq!(gateway.classify(&tcp), None);
    let mut arp = good;
    arp[13] = 0x06;
    assert_eq!(gateway.classify(&arp), None);
}

#[test]
fn windows_bin_and_gap_the_times() {
    let times = [0.1, 0.5, 1.2, 29.9, 30.0];
    let counts = counts_per_second(&times);
    assert_eq!(counts.len(), WINDOW.as_secs() as usize);
    assert_eq!((counts[0], counts[1], counts[29]), (2.0, 1.0, 1.0));
    assert_eq!(counts.iter().sum::<f64>(), 4.0);
    let g = gaps(&[1.0, 1.5, 3.0]);
    assert_eq!(g, vec![0.5, 1.5]);
    assert_eq!(
        only_interface("1: lo: <LOOPBACK,UP>\n7: pb42n9@if8: <BROADCAST,UP>\n"),
        Some(7)
    );
    assert_eq!(only_interface("1: lo: <LOOPBACK,UP>\n"), None);
}

#[test]
fn a_few_missed_slots_widen_the_slack_and_many_do_not() {
    assert_eq!(slack(0), SLACK);
    assert_eq!(slack(3), SLACK + 3.0 + f64::from(pb_link::clock::MAX_BURST));
    assert_eq!(slack(STALLS_FORGIVEN + 1), SLACK);
    let line = "pb-client: 2223 cover packets; 3 uplink slots missed (the event loop fell behind: sent late); loops: 60 sent, 57 back, 0 lost";
    assert_eq!(slots_missed(line), Some(3));
    assert_eq!(slots_missed("pb-client: session: 559 packets"), None);
}
