//! PhantomBand XDP program.
//!
//! For every frame on the interface it is attached to:
//! - IPv4 or IPv6 UDP to the PhantomBand port whose UDP payload is exactly the packet length
//!   is redirected to the AF_XDP socket registered for the frame's receive queue
//!   (`PB_XSKS`); with no socket on that queue it is dropped and counted.
//! - PhantomBand datagrams of any other payload length are dropped and counted; so are those
//!   whose UDP length claims more bytes than the frame carries.
//! - Everything else (ARP, ICMP, other ports, IP fragments, IPv6 extension headers, truncated
//!   headers, VLAN tags) is passed to the kernel untouched.
//!
//! Every packet access goes through [`ptr_at`], the one bounds-checked helper. The entry point
//! fails closed: an internal error (which the verifier-checked code cannot produce today)
//! aborts the frame rather than letting it through.
//!
//! Not here: any look at the payload beyond its length (Sphinx is user space's), loading
//! and attaching (pb-io's `xdp` module), or state beyond the counters and the socket map.
#![no_std]
#![no_main]

use aya_ebpf::{
    Global,
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{PerCpuArray, XskMap},
    programs::XdpContext,
};
use pb_xdp_common::{
    Counter, DEFAULT_PACKET_LEN, DEFAULT_PORT, ETH_P_IPV4, ETH_P_IPV6, EthHdr, IPPROTO_UDP,
    Ipv4Hdr, Ipv6Hdr, MAX_QUEUES, UdpHdr,
};

/// Receive queue index → AF_XDP socket.
#[map]
static PB_XSKS: XskMap = XskMap::with_max_entries(MAX_QUEUES, 0);

/// Per-CPU counters, indexed by [`Counter`].
#[map]
static PB_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

/// PhantomBand UDP port; set by the loader.
#[unsafe(no_mangle)]
static PB_PORT: Global<u16> = Global::new(DEFAULT_PORT);

/// Exact UDP payload length of a PhantomBand packet; set by the loader.
#[unsafe(no_mangle)]
static PB_PACKET_LEN: Global<u16> = Global::new(DEFAULT_PACKET_LEN);

/// What the classifier decided, before counters and redirects are applied.
enum Verdict {
    Pass,
    Drop(Counter),
    Steer,
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

#[inline(always)]
fn classify(ctx: &XdpContext) -> Verdict {
    let Some(eth) = read_at::<EthHdr>(ctx, 0) else {
        return Verdict::Pass;
    };
    let l4_offset = match eth.ether_type() {
        ETH_P_IPV4 => {
            let Some(ip) = read_at::<Ipv4Hdr>(ctx, EthHdr::LEN) else {
                return Verdict::Pass;
            };
            let ihl = ip.header_len();
            if ip.version() != 4 || ihl < Ipv4Hdr::LEN || ip.protocol != IPPROTO_UDP {
                return Verdict::Pass;
            }
            // Fragments are reassembled by the kernel; PhantomBand never fragments.
            if ip.is_fragment() {
                return Verdict::Pass;
            }
            EthHdr::LEN + ihl
        }
        ETH_P_IPV6 => {
            let Some(ip) = read_at::<Ipv6Hdr>(ctx, EthHdr::LEN) else {
                return Verdict::Pass;
            };
            // Extension headers (fragments included) are left to the kernel.
            if ip.version() != 6 || ip.next_header != IPPROTO_UDP {
                return Verdict::Pass;
            }
            EthHdr::LEN + Ipv6Hdr::LEN
        }
        _ => return Verdict::Pass,
    };
    let Some(udp) = read_at::<UdpHdr>(ctx, l4_offset) else {
        return Verdict::Pass;
    };
    if udp.dst_port() != PB_PORT.load() {
        return Verdict::Pass;
    }
    let udp_len = usize::from(udp.length());
    let packet_len = usize::from(PB_PACKET_LEN.load());
    if udp_len != UdpHdr::LEN + packet_len {
        return Verdict::Drop(Counter::DropWrongSize);
    }
    let payload_start = l4_offset + UdpHdr::LEN;
    if ctx.data() + payload_start + packet_len > ctx.data_end() {
        return Verdict::Drop(Counter::DropTruncated);
    }
    Verdict::Steer
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
