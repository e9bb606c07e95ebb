//! The frame pool shared by the UDP and in-memory backends: one buffer of equal
//! [`FRAME_SIZE`]-byte frames, a free list, and the bookkeeping that ties [`Packet`]s to it.
//!
//! What it is: the safe half of a [`PacketIo`](crate::PacketIo) backend's buffer handling.
//! It hands out free frames ([`FramePool::alloc`], [`FramePool::take`]), takes them back
//! ([`FramePool::release`]), checks that a packet is this pool's and that its payload lies
//! inside its frame before giving out its bytes, and hands out the disjoint payloads of a
//! batch at once without `unsafe` code. The counters it keeps (`alloc_failures`,
//! `foreign_packets`, and for a finished receive `rx_packets` or `rx_dropped_malformed`) go
//! into the caller's [`IoStats`]. `packet_io_pool_methods!` writes the `PacketIo` methods
//! that only forward here, once for both backends.
//!
//! What it is not: I/O. It makes no system call and knows no addresses beyond copying a
//! packet's peer. The AF_XDP backend does not use it: its frames live in a UMEM shared with
//! the kernel. [`FramePool::base_ptr_for_syscall`] is the one way out to raw pointers, for the
//! UDP backend's `recvmmsg`/`sendmmsg`; this module itself has no `unsafe` code.
#![forbid(unsafe_code)]

use std::{net::SocketAddr, ops::Range};

use crate::{FrameId, IoStats, Owner, Packet};

/// Bytes in one frame: the largest payload.
pub(crate) const FRAME_SIZE: usize = 2048;

/// A pool of frames owned by one backend instance.
///
/// Invariants: `bytes.len() == frames * FRAME_SIZE` and the buffer is never resized, so a
/// pointer from [`base_ptr_for_syscall`](Self::base_ptr_for_syscall) addresses the same
/// bytes for the pool's life. Every id on `free` is below `frames`: `new` pushes only those,
/// and [`release`](Self::release) and [`put_back`](Self::put_back) check before pushing. A
/// frame is either on `free` (once) or held by one [`Packet`] of this pool (or taken with
/// [`take`](Self::take) and not yet turned into one): `Packet` is not `Clone` and its fields
/// are private to this crate, so callers cannot forge or duplicate one to return a frame
/// twice.
pub(crate) struct FramePool {
    owner: Owner,
    bytes: Vec<u8>,
    /// Frames in the pool.
    frames: usize,
    free: Vec<FrameId>,
}

/// Prints counts only: never the bytes, which are packet payloads.
impl std::fmt::Debug for FramePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FramePool")
            .field("frames", &self.frames)
            .field("free", &self.free.len())
            .finish_non_exhaustive()
    }
}

impl FramePool {
    /// A pool of `frames` zeroed frames, all free, with a fresh owner identity. Frames are
    /// handed out from the end of the pool first.
    pub(crate) fn new(frames: u32) -> Self {
        let count = frames as usize;
        Self {
            owner: Owner::new(),
            bytes: vec![0; count * FRAME_SIZE],
            frames: count,
            free: (0..frames).rev().map(FrameId).collect(),
        }
    }

    /// Frames that no packet holds.
    pub(crate) fn free_frames(&self) -> usize {
        self.free.len()
    }

    /// Whether `packet` holds one of this pool's frames.
    pub(crate) fn owns(&self, packet: &Packet) -> bool {
        packet.owner == self.owner && (packet.frame.0 as usize) < self.frames
    }

    /// Byte range of `packet`'s payload in the pool, if the packet is this pool's and its
    /// payload lies inside its frame. Every range returned lies inside the pool's buffer:
    /// `frame < frames` and `offset + len <= FRAME_SIZE`, so
    /// `frame * FRAME_SIZE + offset + len <= frames * FRAME_SIZE`.
    pub(crate) fn payload_range(&self, packet: &Packet) -> Option<Range<usize>> {
        if !self.owns(packet) {
            return None;
        }
        let (offset, len) = (usize::from(packet.offset), usize::from(packet.len));
        if offset + len > FRAME_SIZE {
            return None;
        }
        let start = packet.frame.0 as usize * FRAME_SIZE + offset;
        Some(start..start + len)
    }

    /// A free frame as an empty packet to `peer`; `None`, counted in `alloc_failures`, when
    /// every frame is out.
    pub(crate) fn alloc(&mut self, peer: SocketAddr, stats: &mut IoStats) -> Option<Packet> {
        match self.free.pop() {
            Some(frame) => Some(Packet {
                owner: self.owner,
                frame,
                offset: 0,
                len: 0,
                peer,
            }),
            None => {
                stats.alloc_failures += 1;
                None
            }
        }
    }

    /// A free frame to receive into, and its byte range in the pool (inside the buffer, by
    /// the invariant on `free`). The frame leaves the free list: turn it into a packet with
    /// [`received`](Self::received) or [`write_received`](Self::write_received), or give it
    /// back with [`put_back`](Self::put_back). Counts nothing; the caller decides what an
    /// empty pool means.
    pub(crate) fn take(&mut self) -> Option<(FrameId, Range<usize>)> {
        let frame = self.free.pop()?;
        let start = frame.0 as usize * FRAME_SIZE;
        Some((frame, start..start + FRAME_SIZE))
    }

    /// Returns a frame from [`take`](Self::take) that did not become a packet. An id beyond
    /// the pool (a caller bug) is ignored, so the free list holds only the pool's frames.
    pub(crate) fn put_back(&mut self, frame: FrameId) {
        debug_assert!((frame.0 as usize) < self.frames, "a frame of another pool");
        if (frame.0 as usize) < self.frames {
            self.free.push(frame);
        }
    }

    /// The packet from `peer` whose payload is the first `len` bytes of `frame` (from
    /// [`take`](Self::take), filled in place), or `None` if `len` does not fit a frame.
    pub(crate) fn received(&self, frame: FrameId, len: usize, peer: SocketAddr) -> Option<Packet> {
        if len > FRAME_SIZE || frame.0 as usize >= self.frames {
            return None;
        }
        Some(Packet {
            owner: self.owner,
            frame,
            offset: 0,
            len: u16::try_from(len).ok()?,
            peer,
        })
    }

    /// Copies `bytes` to the start of `frame` (from [`take`](Self::take)) and returns the
    /// packet from `peer` holding them, or `None` (nothing copied) if they do not fit.
    pub(crate) fn write_received(
        &mut self,
        frame: FrameId,
        bytes: &[u8],
        peer: SocketAddr,
    ) -> Option<Packet> {
        let packet = self.received(frame, bytes.len(), peer)?;
        let start = frame.0 as usize * FRAME_SIZE;
        self.bytes[start..start + bytes.len()].copy_from_slice(bytes);
        Some(packet)
    }

    /// Ends a receive into `frame` (from [`take`](Self::take)) and returns whether it gave a
    /// packet: `packet`, made from that frame, is appended to `out` and counted in
    /// `rx_packets`; `None` (the datagram was malformed) is counted in
    /// `rx_dropped_malformed` and the frame goes back to the free list.
    pub(crate) fn deliver(
        &mut self,
        frame: FrameId,
        packet: Option<Packet>,
        out: &mut Vec<Packet>,
        stats: &mut IoStats,
    ) -> bool {
        match packet {
            Some(packet) => {
                debug_assert_eq!(packet.frame, frame, "a packet of another frame");
                out.push(packet);
                stats.rx_packets += 1;
                true
            }
            None => {
                stats.rx_dropped_malformed += 1;
                self.put_back(frame);
                false
            }
        }
    }

    /// Takes `packet`'s frame back into the free list and returns `true` if it is this
    /// pool's; otherwise counts it in `foreign_packets`, leaves every frame alone and
    /// returns `false`.
    pub(crate) fn release(&mut self, packet: Packet, stats: &mut IoStats) -> bool {
        let ours = self.owns(&packet);
        if ours {
            self.free.push(packet.frame);
        } else {
            stats.foreign_packets += 1;
        }
        ours
    }

    /// [`release`](Self::release) for every packet in `packets`, leaving it empty.
    pub(crate) fn release_all(&mut self, packets: &mut Vec<Packet>, stats: &mut IoStats) {
        for packet in packets.drain(..) {
            self.release(packet, stats);
        }
    }

    /// Sets `packet`'s payload length, clamped to what its frame holds after the offset; a
    /// packet of another pool is left alone and counted in `foreign_packets`.
    pub(crate) fn set_len(&self, packet: &mut Packet, len: usize, stats: &mut IoStats) {
        if self.owns(packet) {
            let room = FRAME_SIZE.saturating_sub(usize::from(packet.offset));
            packet.len = len.min(room) as u16;
        } else {
            stats.foreign_packets += 1;
        }
    }

    /// `packet`'s payload, or an empty slice if it is not this pool's or does not fit.
    pub(crate) fn payload(&self, packet: &Packet) -> &[u8] {
        match self.payload_range(packet) {
            Some(range) => &self.bytes[range],
            None => &[],
        }
    }

    /// `packet`'s payload, writable; an empty slice (a packet of another pool counted in
    /// `foreign_packets`) if it is not this pool's or does not fit.
    pub(crate) fn payload_mut(&mut self, packet: &Packet, stats: &mut IoStats) -> &mut [u8] {
        match self.payload_range(packet) {
            Some(range) => &mut self.bytes[range],
            None => {
                stats.foreign_packets += u64::from(packet.owner != self.owner);
                &mut []
            }
        }
    }

    /// Calls `f` with the writable payloads of `packets`, in order, in chunks of at most
    /// [`crate::MAX_BATCH`]. A packet of another pool (counted in `foreign_packets`), one
    /// whose payload does not fit, or a second packet on a frame already handed out gets an
    /// empty slice.
    pub(crate) fn with_payloads_mut(
        &mut self,
        packets: &[Packet],
        stats: &mut IoStats,
        f: &mut dyn FnMut(&mut [&mut [u8]]),
    ) {
        for chunk in packets.chunks(crate::MAX_BATCH) {
            // (frame, position) sorted by frame, so one pass over the pool's frames hands out
            // disjoint slices without unsafe code.
            let mut order = [(usize::MAX, 0usize); crate::MAX_BATCH];
            let mut ranges = [(0usize, 0usize); crate::MAX_BATCH];
            for (i, packet) in chunk.iter().enumerate() {
                order[i].1 = i;
                if let Some(range) = self.payload_range(packet) {
                    order[i].0 = packet.frame.0 as usize;
                    ranges[i] = (usize::from(packet.offset), range.len());
                } else {
                    stats.foreign_packets += u64::from(packet.owner != self.owner);
                }
            }
            order[..chunk.len()].sort_unstable();
            let mut slices: [&mut [u8]; crate::MAX_BATCH] = std::array::from_fn(|_| &mut [][..]);
            let mut frames = self.bytes.chunks_exact_mut(FRAME_SIZE);
            let mut next_frame = 0;
            for &(frame, position) in &order[..chunk.len()] {
                if frame == usize::MAX || frame < next_frame {
                    continue; // not ours, or a frame already handed out
                }
                let Some(data) = frames.nth(frame - next_frame) else {
                    break;
                };
                next_frame = frame + 1;
                let (offset, len) = ranges[position];
                slices[position] = &mut data[offset..offset + len];
            }
            f(&mut slices[..chunk.len()]);
        }
    }

    /// Start of the pool's buffer, for a system call that reads or writes frames in place
    /// (the UDP backend's `recvmmsg`/`sendmmsg`): byte `i` of a range from
    /// [`take`](Self::take) or [`payload_range`](Self::payload_range) is at
    /// `base.wrapping_add(i)`, and every such range lies inside the buffer.
    ///
    /// The pointer comes from `Vec::as_mut_ptr`, which creates no reference to the bytes, and
    /// the buffer is never resized or freed before the pool is dropped. So it stays valid
    /// across later calls that do not touch the bytes ([`take`](Self::take),
    /// [`put_back`](Self::put_back), [`release`](Self::release), [`owns`](Self::owns),
    /// [`payload_range`](Self::payload_range)), and only until the next call that borrows
    /// them ([`payload`](Self::payload), [`payload_mut`](Self::payload_mut),
    /// [`with_payloads_mut`](Self::with_payloads_mut),
    /// [`write_received`](Self::write_received)). Taking `&mut self` means no payload slice
    /// is borrowed when it is made.
    pub(crate) fn base_ptr_for_syscall(&mut self) -> *mut u8 {
        self.bytes.as_mut_ptr()
    }
}

/// The [`PacketIo`](crate::PacketIo) methods that need only the frame pool and the counters
/// (`release`, `alloc`, `capacity`, `set_len`, `payload`, `payload_mut`,
/// `with_payloads_mut`, `stats`), written once for the backends built on a [`FramePool`].
/// Invoke it inside `impl PacketIo for T` where `T` has the fields `pool: FramePool` and
/// `stats: IoStats`; each pool method forwards to the [`FramePool`] method of the same name,
/// counting into `stats`.
macro_rules! packet_io_pool_methods {
    () => {
        fn release(&mut self, packets: &mut Vec<$crate::Packet>) {
            self.pool.release_all(packets, &mut self.stats);
        }

        fn alloc(&mut self, peer: ::std::net::SocketAddr) -> Option<$crate::Packet> {
            self.pool.alloc(peer, &mut self.stats)
        }

        fn capacity(&self) -> usize {
            $crate::pool::FRAME_SIZE
        }

        fn set_len(&mut self, packet: &mut $crate::Packet, len: usize) {
            self.pool.set_len(packet, len, &mut self.stats);
        }

        fn payload(&self, packet: &$crate::Packet) -> &[u8] {
            self.pool.payload(packet)
        }

        fn payload_mut(&mut self, packet: &$crate::Packet) -> &mut [u8] {
            self.pool.payload_mut(packet, &mut self.stats)
        }

        fn with_payloads_mut(
            &mut self,
            packets: &[$crate::Packet],
            f: &mut dyn FnMut(&mut [&mut [u8]]),
        ) {
            self.pool.with_payloads_mut(packets, &mut self.stats, f);
        }

        fn stats(&self) -> $crate::IoStats {
            self.stats
        }
    };
}
pub(crate) use packet_io_pool_methods;

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "198.18.0.1:47470".parse().unwrap()
    }

    /// Frames go out and come back exactly once; an empty pool refuses and counts, and
    /// recovers after a release; a frame taken to receive into leaves the free list until
    /// it is put back.
    #[test]
    fn allocation_and_release_account_for_every_frame() {
        let mut pool = FramePool::new(4);
        let mut stats = IoStats::default();
        let mut held: Vec<Packet> = (0..4)
            .map(|_| pool.alloc(peer(), &mut stats).unwrap())
            .collect();
        let mut frames: Vec<u32> = held.iter().map(|p| p.frame.0).collect();
        frames.sort_unstable();
        assert_eq!(frames, [0, 1, 2, 3], "each frame handed out once");
        assert_eq!(pool.free_frames(), 0);
        assert!(pool.alloc(peer(), &mut stats).is_none());
        assert!(pool.take().is_none());
        assert_eq!(stats.alloc_failures, 1, "take counts nothing");
        assert!(pool.release(held.pop().unwrap(), &mut stats));
        let (frame, range) = pool.take().unwrap();
        assert_eq!(
            range,
            frame.0 as usize * FRAME_SIZE..(frame.0 as usize + 1) * FRAME_SIZE
        );
        assert_eq!(pool.free_frames(), 0);
        pool.put_back(frame);
        pool.release_all(&mut held, &mut stats);
        assert!(held.is_empty());
        assert_eq!(pool.free_frames(), 4);
        assert_eq!(stats.foreign_packets, 0);
    }

    /// A received packet holds its bytes from the frame's start; bytes that do not fit a
    /// frame are refused without copying.
    #[test]
    fn received_bytes_land_in_the_frame() {
        let mut pool = FramePool::new(2);
        let (frame, _) = pool.take().unwrap();
        let p = pool.write_received(frame, &[9; 100], peer()).unwrap();
        assert_eq!((p.len(), p.peer), (100, peer()));
        assert_eq!(pool.payload(&p), &[9; 100][..]);
        assert!(
            pool.write_received(frame, &[1; FRAME_SIZE + 1], peer())
                .is_none()
        );
        assert!(pool.received(frame, FRAME_SIZE + 1, peer()).is_none());
        assert!(
            pool.received(FrameId(2), 10, peer()).is_none(),
            "not a frame"
        );
        assert_eq!(pool.payload(&p), &[9; 100][..]);
    }

    /// Lengths are clamped to the frame; a payload that would run past its frame (a corrupt
    /// offset) reads as empty instead of reaching into the next frame.
    #[test]
    fn payloads_stay_inside_their_frame() {
        let mut pool = FramePool::new(2);
        let mut stats = IoStats::default();
        let mut p = pool.alloc(peer(), &mut stats).unwrap();
        pool.set_len(&mut p, FRAME_SIZE + 10, &mut stats);
        assert_eq!(p.len(), FRAME_SIZE);
        p.offset = 1;
        assert!(pool.payload_range(&p).is_none());
        assert!(pool.payload(&p).is_empty());
        assert!(pool.payload_mut(&p, &mut stats).is_empty());
        pool.set_len(&mut p, FRAME_SIZE, &mut stats);
        assert_eq!(p.len(), FRAME_SIZE - 1);
        assert_eq!(pool.payload(&p).len(), FRAME_SIZE - 1);
        assert_eq!(stats.foreign_packets, 0, "ours, only out of bounds");
    }

    /// A packet of another pool is refused everywhere and counted; its frame is not
    /// adopted and stays out of its own pool until that pool gets it back.
    #[test]
    fn foreign_packets_are_refused_and_counted() {
        let (mut a, mut b) = (FramePool::new(8), FramePool::new(8));
        let (mut sa, mut sb) = (IoStats::default(), IoStats::default());
        let mut p = a.alloc(peer(), &mut sa).unwrap();
        a.set_len(&mut p, 16, &mut sa);
        a.payload_mut(&p, &mut sa).fill(3);
        assert!(!b.owns(&p));
        assert!(b.payload_range(&p).is_none());
        assert!(b.payload(&p).is_empty());
        assert!(b.payload_mut(&p, &mut sb).is_empty());
        b.set_len(&mut p, 10, &mut sb);
        assert_eq!(p.len(), 16, "b does not touch a's packet");
        assert!(!b.release(p, &mut sb));
        assert_eq!(sb.foreign_packets, 3);
        assert_eq!(b.free_frames(), 8, "b must not adopt a's frame");
        assert_eq!(a.free_frames(), 7, "a's frame stays out until a gets it");
        assert_eq!(sa.foreign_packets, 0);
    }

    /// A batch's payloads come out together, writable, in packet order; a second packet on
    /// the same frame and a foreign packet get empty slices; batches longer than
    /// `MAX_BATCH` come in chunks.
    #[test]
    fn payloads_of_a_batch_at_once() {
        let (mut a, mut b) = (FramePool::new(8), FramePool::new(8));
        let mut stats = IoStats::default();
        // Frames are handed out from the end of the pool: allocate several so the batch's
        // frame order differs from packet order.
        let mut batch: Vec<Packet> = (0..5)
            .map(|_| a.alloc(peer(), &mut stats).unwrap())
            .collect();
        for (i, p) in batch.iter_mut().enumerate() {
            a.set_len(p, 10 + i, &mut stats);
        }
        batch.swap(0, 3);
        let duplicate = Packet {
            owner: batch[1].owner,
            frame: batch[1].frame,
            offset: batch[1].offset,
            len: batch[1].len,
            peer: peer(),
        };
        batch.push(duplicate);
        let mut foreign = b.alloc(peer(), &mut IoStats::default()).unwrap();
        b.set_len(&mut foreign, 50, &mut IoStats::default());
        batch.push(foreign);
        let mut lens = Vec::new();
        a.with_payloads_mut(&batch, &mut stats, &mut |slices| {
            for (i, s) in slices.iter_mut().enumerate() {
                lens.push(s.len());
                s.fill(i as u8 + 1);
            }
        });
        assert_eq!(lens, [13, 11, 12, 10, 14, 0, 0]);
        assert_eq!(
            stats.foreign_packets, 1,
            "the foreign packet, not the duplicate"
        );
        for (i, p) in batch[..5].iter().enumerate() {
            assert!(a.payload(p).iter().all(|&x| x == i as u8 + 1), "packet {i}");
        }
        assert!(b.payload(&batch[6]).iter().all(|&x| x == 0));

        let mut big = FramePool::new(crate::MAX_BATCH as u32 + 1);
        let many: Vec<Packet> = (0..=crate::MAX_BATCH)
            .map(|_| big.alloc(peer(), &mut stats).unwrap())
            .collect();
        let mut chunks = Vec::new();
        big.with_payloads_mut(&many, &mut stats, &mut |slices| chunks.push(slices.len()));
        assert_eq!(chunks, [crate::MAX_BATCH, 1]);
    }
}
