//! Crossing between a relay's cores. Each core's pipeline owns some of the relay's links
//! (it paces them and sends on them); a packet that another core received and delayed
//! reaches its link through the owner's bounded inbox here.
//!
//! The packet's bytes cross in a buffer from a pool allocated once, since a frame belongs
//! to the receiving core's UMEM (or socket pool) and cannot be sent from another's: the
//! sender copies the packet into a free buffer and releases its frame, the owner copies it
//! into a frame of its own and returns the buffer. Lock-free (crossbeam `ArrayQueue`), no
//! allocation per packet; a full inbox or an empty buffer pool drops the packet, counted
//! by the sending core.
//!
//! Packets a relay makes itself for a link (an exit's replies) enter the same way through
//! [`Handoff::inject`]: any core takes them and passes each to its link's owner. The exit
//! runs at normal priority, so its packets cross by value in a [`ReadyQueue`], which never
//! makes a core wait for a producer the machine's load has preempted, and the exit takes
//! nothing from the buffer pool: a core returning a buffer to it could otherwise find the
//! slot it lands on still being read by a preempted exit, and wait. Packets a
//! gateway's clients send over their encrypted link enter through [`Handoff::arrive`]: any
//! core takes them as if received, and unwraps them with the rest of its batch.

use crossbeam::queue::ArrayQueue;
use pb_sphinx::{NodeId, PACKET_LEN};

use crate::ready::ReadyQueue;

/// A packet on its way to the core that owns its link.
pub(crate) struct Crossing {
    /// The next hop: the link's neighbour (link indices may differ between cores while a
    /// new topology reaches them one after the other).
    pub(crate) next: NodeId,
    /// The packet.
    pub(crate) bytes: Box<[u8; PACKET_LEN]>,
}

/// A packet the relay made itself (an exit's reply), by value.
pub(crate) struct Injected {
    /// The next hop.
    pub(crate) next: NodeId,
    /// The packet.
    pub(crate) bytes: [u8; PACKET_LEN],
}

/// The inboxes of a relay's cores and the buffers that cross between them.
pub struct Handoff {
    inboxes: Vec<ArrayQueue<Crossing>>,
    injected: ReadyQueue<Injected>,
    arrivals: ArrayQueue<Box<[u8; PACKET_LEN]>>,
    free: ArrayQueue<Box<[u8; PACKET_LEN]>>,
}

impl core::fmt::Debug for Handoff {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Handoff")
            .field("cores", &self.inboxes.len())
            .field("free", &self.free.len())
            .finish_non_exhaustive()
    }
}

impl Handoff {
    /// Inboxes for `cores` cores, one for injected packets and one for arrivals, holding
    /// `depth` packets each, and as many buffers as the inboxes and arrivals together hold
    /// (allocated now, never again; injected packets are held in their queue).
    pub fn new(cores: usize, depth: usize) -> Self {
        let (cores, depth) = (cores.max(1), depth.max(1));
        let buffers = (cores + 1) * depth;
        let free = ArrayQueue::new(buffers);
        for _ in 0..buffers {
            let _ = free.push(Box::new([0u8; PACKET_LEN]));
        }
        Self {
            inboxes: (0..cores).map(|_| ArrayQueue::new(depth)).collect(),
            injected: ReadyQueue::new(depth),
            arrivals: ArrayQueue::new(depth),
            free,
        }
    }

    /// Queues a packet this relay made (an exit's reply) for its link to `next`: a core
    /// takes it on its next turn and passes it to the link's owner, where it waits for a
    /// slot like any forwarded packet. `false` (nothing queued) if the queue is full or
    /// `packet` has the wrong length.
    pub fn inject(&self, next: NodeId, packet: &[u8]) -> bool {
        let Ok(packet) = <&[u8; PACKET_LEN]>::try_from(packet) else {
            return false;
        };
        self.injected
            .push(Injected {
                next,
                bytes: *packet,
            })
            .is_ok()
    }

    /// Queues a packet a client sent over its link (a gateway's): a core takes it on its
    /// next turn and processes it like a packet received on the wire. `false` (nothing
    /// queued) if the queue is full, no buffer is free or `packet` has the wrong length.
    pub fn arrive(&self, packet: &[u8]) -> bool {
        let Ok(packet) = <&[u8; PACKET_LEN]>::try_from(packet) else {
            return false;
        };
        let Some(mut bytes) = self.free.pop() else {
            return false;
        };
        *bytes = *packet;
        match self.arrivals.push(bytes) {
            Ok(()) => true,
            Err(refused) => {
                self.give_back(refused);
                false
            }
        }
    }

    /// The next packet that arrived over a client link.
    pub(crate) fn receive_arrival(&self) -> Option<Box<[u8; PACKET_LEN]>> {
        self.arrivals.pop()
    }

    /// Whether packets wait in the arrivals queue.
    pub(crate) fn has_arrivals(&self) -> bool {
        !self.arrivals.is_empty()
    }

    /// The next injected packet.
    pub(crate) fn receive_injected(&self) -> Option<Injected> {
        self.injected.pop()
    }

    /// Number of cores.
    pub fn cores(&self) -> usize {
        self.inboxes.len()
    }

    /// Which core owns each of `links` links when `cores` cores share them: round robin.
    pub fn round_robin(links: usize, cores: usize) -> Vec<usize> {
        (0..links).map(|l| l % cores.max(1)).collect()
    }

    /// Copies `packet` into a free buffer bound for neighbour `next` on core `to`: `false`
    /// (nothing queued) if no buffer is free, the inbox is full, `to` is no core or `packet`
    /// has the wrong length.
    pub(crate) fn send(&self, to: usize, next: NodeId, packet: &[u8]) -> bool {
        let (Some(inbox), Ok(packet)) =
            (self.inboxes.get(to), <&[u8; PACKET_LEN]>::try_from(packet))
        else {
            return false;
        };
        let Some(mut bytes) = self.free.pop() else {
            return false;
        };
        *bytes = *packet;
        match inbox.push(Crossing { next, bytes }) {
            Ok(()) => true,
            Err(refused) => {
                self.give_back(refused.bytes);
                false
            }
        }
    }

    /// The next packet waiting for core `core`.
    pub(crate) fn receive(&self, core: usize) -> Option<Crossing> {
        self.inboxes.get(core).and_then(ArrayQueue::pop)
    }

    /// Returns a buffer to the pool once its packet is copied out.
    pub(crate) fn give_back(&self, bytes: Box<[u8; PACKET_LEN]>) {
        // The pool has room for every buffer ever made, so this cannot fail.
        let _ = self.free.push(bytes);
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn packets_cross_in_order_and_buffers_come_back() {
        let h = Handoff::new(2, 3);
        for i in 0..3u8 {
            assert!(h.send(1, NodeId([i; 16]), &[i; PACKET_LEN]));
        }
        assert!(
            !h.send(1, NodeId([9; 16]), &[9; PACKET_LEN]),
            "the inbox holds 3"
        );
        assert!(h.receive(0).is_none());
        for i in 0..3u8 {
            let c = h.receive(1).unwrap();
            assert_eq!(
                (c.next, c.bytes[0], c.bytes[PACKET_LEN - 1]),
                (NodeId([i; 16]), i, i)
            );
            h.give_back(c.bytes);
        }
        assert_eq!(h.free.len(), 9, "every buffer is back");
    }

    /// The exit (normal priority) takes nothing from the pool the cores return buffers
    /// to, nor gives anything back: its packets cross by value.
    #[test]
    fn injection_leaves_the_buffer_pool_alone() {
        let h = Handoff::new(1, 2);
        let n = NodeId([0; 16]);
        let free = h.free.len();
        assert!(h.inject(n, &[1; PACKET_LEN]) && h.inject(n, &[2; PACKET_LEN]));
        assert!(
            !h.inject(n, &[3; PACKET_LEN]),
            "the injection queue holds 2"
        );
        assert_eq!(h.free.len(), free, "no buffer taken, none given back");
        let first = h.receive_injected().unwrap();
        assert_eq!((first.next, first.bytes[0]), (n, 1));
        assert_eq!(h.free.len(), free);
        assert!(h.inject(n, &[3; PACKET_LEN]), "room again");
    }

    #[test]
    fn bad_targets_and_lengths_queue_nothing() {
        let h = Handoff::new(2, 2);
        let n = NodeId([0; 16]);
        assert!(!h.send(2, n, &[0; PACKET_LEN]));
        assert!(!h.send(0, n, &[0; 100]));
        assert_eq!(h.free.len(), 6);
        // With every buffer out (the inboxes and arrivals full), nothing more crosses.
        for core in [0, 0, 1, 1] {
            assert!(h.send(core, n, &[1; PACKET_LEN]));
        }
        assert!(h.inject(n, &[2; PACKET_LEN]) && h.inject(n, &[3; PACKET_LEN]));
        assert!(
            !h.inject(n, &[4; PACKET_LEN]),
            "the injection queue holds 2"
        );
        assert!(!h.arrive(&[5; 100]), "an arrival of the wrong length");
        assert!(h.arrive(&[5; PACKET_LEN]) && h.arrive(&[6; PACKET_LEN]));
        assert!(!h.arrive(&[7; PACKET_LEN]), "the arrivals queue holds 2");
        assert!(!h.send(0, n, &[1; PACKET_LEN]));
        assert_eq!(h.receive_injected().unwrap().bytes[0], 2);
        assert!(h.has_arrivals());
        assert_eq!(h.receive_arrival().unwrap()[0], 5);
        assert_eq!(h.receive_arrival().unwrap()[0], 6);
        assert!(!h.has_arrivals() && h.receive_arrival().is_none());
        assert_eq!(Handoff::round_robin(5, 2), vec![0, 1, 0, 1, 0]);
        assert_eq!(Handoff::round_robin(2, 0), vec![0, 0]);
    }
}
