//! PhantomBand XDP program.
//!
//! For every frame on the interface it is attached to:
//! - IPv4 or IPv6 UDP to the PhantomBand port whose UDP payload is exactly the packet length
//!   is redirected to the AF_XDP socket registered for the frame's receive queue
//!   (`PB_XSKS`); with no socket on that queue it is dropped and counted.
//! - PhantomBand datagrams of any other payload length are dropped and counted; so are those
//!   whose UDP length claims more bytes than the frame carries.
//! - Right-size PhantomBand datagrams from a source that is not one of the relay's links
//!   (`PB_ALLOWED_V4`/`PB_ALLOWED_V6`) are treated by the policy in `PB_POLICY`: passed
//!   (no filter yet), dropped and counted (mixes and exits), or charged to the source's token
//!   bucket in `PB_BUCKETS` and dropped and counted over it (gateways, whose clients send
//!   from anywhere).
//! - UDP to the gateway's client-link port (`PB_CLIENT_PORT`, when set) is charged to the
//!   same per-source bucket: passed to the kernel within it, dropped and counted over it.
//! - Everything else (ARP, ICMP, other ports, IP fragments, IPv6 extension headers, truncated
//!   headers, VLAN tags) is passed to the kernel untouched.
//!
//! Every packet access goes through [`ptr_at`], the one bounds-checked helper. The entry point
//! fails closed: an internal error (which the verifier-checked code cannot produce today)
//! aborts the frame rather than letting it through.
//!
//! Not here: any look at the payload beyond its length (Sphinx is user space's), loading
//! and attaching (pb-io's `xdp` module), or choosing the allowed sources (the control plane
//! fills the maps from the topology whenever the links change).
#![no_std]
#![no_main]

use aya_ebpf::{
    Global,
    bindings::xdp_action,
    helpers::bpf_ktime_get_ns,
    macros::{map, xdp},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, XskMap},
    programs::XdpContext,
};
use pb_xdp_common::{
    Bucket, Counter, DEFAULT_PACKET_LEN, DEFAULT_PORT, DEFAULT_SOURCE_BURST, DEFAULT_SOURCE_RATE,
    ETH_P_IPV4, ETH_P_IPV6, EthHdr, IPPROTO_UDP, Ipv4Hdr, Ipv6Hdr, MAX_ALLOWED_SOURCES,
    MAX_BUCKETS, MAX_QUEUES, StrangerPolicy, UdpHdr, bucket_key_v4, bucket_key_v6, bucket_params,
};

/// Receive queue index → AF_XDP socket.
#[map]
static PB_XSKS: XskMap = XskMap::with_max_entries(MAX_QUEUES, 0);

/// Per-CPU counters, indexed by [`Counter`].
#[map]
static PB_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

/// IPv4 sources whose PhantomBand datagrams are relay traffic (the links); value unused.
#[map]
static PB_ALLOWED_V4: HashMap<[u8; 4], u8> = HashMap::with_max_entries(MAX_ALLOWED_SOURCES, 0);

/// IPv6 sources likewise.
#[map]
static PB_ALLOWED_V6: HashMap<[u8; 16], u8> = HashMap::with_max_entries(MAX_ALLOWED_SOURCES, 0);

/// Entry 0: the [`StrangerPolicy`] for sources not in the allowed maps (0, pass, until the
/// control plane installs a link set).
#[map]
static PB_POLICY: Array<u32> = Array::with_max_entries(1, 0);

/// Per-source token buckets (IPv4-mapped address or IPv6 /64 → bucket).
#[map]
static PB_BUCKETS: LruHashMap<[u8; 16], Bucket> = LruHashMap::with_max_entries(MAX_BUCKETS, 0);

/// The gateway's client-link UDP port (0: none); set by the loader.
#[unsafe(no_mangle)]
static PB_CLIENT_PORT: Global<u16> = Global::new(0);

/// Nanoseconds of credit one datagram costs; set by the loader.
#[unsafe(no_mangle)]
static PB_NS_PER_TOKEN: Global<u64> =
    Global::new(bucket_params(DEFAULT_SOURCE_RATE, DEFAULT_SOURCE_BURST).0);

/// A bucket's depth in nanoseconds of credit; set by the loader.
#[unsafe(no_mangle)]
static PB_BURST_NS: Global<u64> =
    Global::new(bucket_params(DEFAULT_SOURCE_RATE, DEFAULT_SOURCE_BURST).1);

/// PhantomBand UDP port; set by the loader.
#[unsafe(no_mangle)]
static PB_PORT: Global<u16> = Global::new(DEFAULT_PORT);

/// Exact UDP payload length of a PhantomBand packet; set by the loader.
#[unsafe(no_mangle)]
static PB_PACKET_LEN: Global<u16> = Global::new(DEFAULT_PACKET_LEN);

/// What the classifier decided, before counters and redirects are applied.
enum Verdict {
    Pass,
    /// Passed to the kernel, and counted.
    PassCounted(Counter),
    Drop(Counter),
    Steer,
}

/// Where a datagram came from.
#[derive(Clone, Copy)]
enum Source {
    V4([u8; 4]),
    V6([u8; 16]),
}

impl Source {
    /// Whether the source is one of the relay's links.
    #[inline(always)]
    fn allowed(self) -> bool {
        match self {
            // SAFETY: the value is a `u8` only tested for presence; the reference is not
            // kept past this expression, so a concurrent delete cannot invalidate a use.
            Source::V4(a) => unsafe { PB_ALLOWED_V4.get(a) }.is_some(),
            // SAFETY: as above.
            Source::V6(a) => unsafe { PB_ALLOWED_V6.get(a) }.is_some(),
        }
    }

    /// The key its token bucket is kept under.
    #[inline(always)]
    fn bucket_key(self) -> [u8; 16] {
        match self {
            Source::V4(a) => bucket_key_v4(a),
            Source::V6(a) => bucket_key_v6(a),
        }
    }
}

/// An internal failure that must not let the frame through.
struct Internal;

#[xdp]
pub fn pb_xdp(ctx: XdpContext) -> u32 {
    match apply(&ctx, classify(&ctx)) {
        Ok(action) => action,
        Err(Internal) => xdp_action::XDP_ABORTED,
    }
}

#[inline(always)]
fn apply(ctx: &XdpContext, verdict: Verdict) -> Result<u32, Internal> {
    match verdict {
        Verdict::Pass => Ok(xdp_action::XDP_PASS),
        Verdict::PassCounted(counter) => {
            count(counter)?;
            Ok(xdp_action::XDP_PASS)
        }
        Verdict::Drop(reason) => {
            count(reason)?;
            Ok(xdp_action::XDP_DROP)
        }
        Verdict::Steer => {
            let queue = ctx.rx_queue_index();
            if PB_XSKS.get(queue).is_none() {
                count(Counter::DropNoSocket)?;
                return Ok(xdp_action::XDP_DROP);
            }
            match PB_XSKS.redirect(queue, 0) {
                Ok(action) => {
                    count(Counter::Redirected)?;
                    Ok(action)
                }
                // The socket went away between the lookup and the redirect.
                Err(_) => {
                    count(Counter::DropNoSocket)?;
                    Ok(xdp_action::XDP_DROP)
                }
            }
        }
    }
}

#[inline(always)]
fn count(counter: Counter) -> Result<(), Internal> {
    let slot = PB_STATS.get_ptr_mut(counter.index()).ok_or(Internal)?;
    // SAFETY: `slot` points at this CPU's element of a per-CPU array the verifier has checked;
    // no other CPU touches it and XDP programs do not nest on one CPU.
    unsafe { *slot += 1 };
    Ok(())
}

/// A pointer to a `T` at `offset` bytes into the frame, or `None` when the frame is too short.
/// The single place where packet memory is addressed.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    let len = core::mem::size_of::<T>();
    if start + offset + len > end {
        return None;
    }
    Some((start + offset) as *const T)
}

/// Reads a copy of the `T` at `offset`; `T` is one of the alignment-1 header structs.
#[inline(always)]
fn read_at<T: Copy>(ctx: &XdpContext, offset: usize) -> Option<T> {
    let ptr = ptr_at::<T>(ctx, offset)?;
    // SAFETY: `ptr_at` checked that `size_of::<T>()` bytes from `ptr` lie inside the frame,
    // and every header type has alignment 1, so an unaligned read is not needed.
    Some(unsafe { *ptr })
}

/// Charges one datagram to `source`'s token bucket: whether it is within the rate. A
/// bucket map that cannot take a new source (it cannot fail for an LRU map) fails closed.
#[inline(always)]
fn within_rate(source: Source) -> bool {
    let key = source.bucket_key();
    let per = PB_NS_PER_TOKEN.load();
    let depth = PB_BURST_NS.load();
    // SAFETY: a helper without arguments or side effects on memory.
    let now = unsafe { bpf_ktime_get_ns() };
    match PB_BUCKETS.get_ptr_mut(key) {
        Some(bucket) => {
            // SAFETY: the pointer is to a bucket value of the map, valid while this program
            // runs (RCU). Two CPUs charging one source at the same instant may both read the
            // same credit: the source then gets a token more, never a crash.
            unsafe { (*bucket).take(now, per, depth) }
        }
        None => PB_BUCKETS
            .insert(key, Bucket::first(now, per, depth), 0)
            .is_ok(),
    }
}

/// The datagram's source and UDP header and where its payload starts, or `None` for
/// anything that is not a whole unfragmented IPv4/IPv6 UDP header (left to the kernel).
#[inline(always)]
fn udp_of(ctx: &XdpContext) -> Option<(Source, UdpHdr, usize)> {
    let eth = read_at::<EthHdr>(ctx, 0)?;
    let (source, l4_offset) = match eth.ether_type() {
        ETH_P_IPV4 => {
            let ip = read_at::<Ipv4Hdr>(ctx, EthHdr::LEN)?;
            let ihl = ip.header_len();
            if ip.version() != 4 || ihl < Ipv4Hdr::LEN || ip.protocol != IPPROTO_UDP {
                return None;
            }
            // Fragments are reassembled by the kernel; PhantomBand never fragments.
            if ip.is_fragment() {
                return None;
            }
            (Source::V4(ip.src), EthHdr::LEN + ihl)
        }
        ETH_P_IPV6 => {
            let ip = read_at::<Ipv6Hdr>(ctx, EthHdr::LEN)?;
            // Extension headers (fragments included) are left to the kernel.
            if ip.version() != 6 || ip.next_header != IPPROTO_UDP {
                return None;
            }
            (Source::V6(ip.src), EthHdr::LEN + Ipv6Hdr::LEN)
        }
        _ => return None,
    };
    let udp = read_at::<UdpHdr>(ctx, l4_offset)?;
    Some((source, udp, l4_offset + UdpHdr::LEN))
}

#[inline(always)]
fn classify(ctx: &XdpContext) -> Verdict {
    let Some((source, udp, payload_start)) = udp_of(ctx) else {
        return Verdict::Pass;
    };
    let dst_port = udp.dst_port();
    let client_port = PB_CLIENT_PORT.load();
    if client_port != 0 && dst_port == client_port {
        return if within_rate(source) {
            Verdict::PassCounted(Counter::ClientLinkPassed)
        } else {
            Verdict::Drop(Counter::DropClientLinkRate)
        };
    }
    if dst_port != PB_PORT.load() {
        return Verdict::Pass;
    }
    let udp_len = usize::from(udp.length());
    let packet_len = usize::from(PB_PACKET_LEN.load());
    if udp_len != UdpHdr::LEN + packet_len {
        return Verdict::Drop(Counter::DropWrongSize);
    }
    if ctx.data() + payload_start + packet_len > ctx.data_end() {
        return Verdict::Drop(Counter::DropTruncated);
    }
    // A missing policy entry cannot happen (arrays are preallocated); fail closed if it did.
    let policy = PB_POLICY
        .get(0)
        .map_or(StrangerPolicy::Drop, |p| StrangerPolicy::from_u32(*p));
    match policy {
        StrangerPolicy::Pass => Verdict::Steer,
        _ if source.allowed() => Verdict::Steer,
        StrangerPolicy::Limit if within_rate(source) => Verdict::Steer,
        StrangerPolicy::Limit => Verdict::Drop(Counter::DropSourceRate),
        StrangerPolicy::Drop => Verdict::Drop(Counter::DropStranger),
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // Unreachable in a verified program: BPF has no unwinding and the verifier rejects loops
    // without exits. Required by `no_std`.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
