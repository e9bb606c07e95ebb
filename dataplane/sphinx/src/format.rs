//! The byte layout of a PB-Sphinx packet and the typed values carried in it.
//! docs/spec/packet-format.md is the normative description; the constants here are its table.

/// Every packet on every link is exactly this many bytes: the largest UDP payload that fits a
/// 1500-byte-MTU IPv6 path without fragmentation.
pub const PACKET_LEN: usize = 1452;
/// The most hops a header can route through.
pub const MAX_HOPS: usize = 5;
/// Bytes of the header MAC γ.
pub const MAC_LEN: usize = 16;
/// Bytes of the group element α (an X25519 u-coordinate).
pub const ALPHA_LEN: usize = 32;
/// Bytes of an encoded routing command (the first part of every routing block).
pub const COMMAND_LEN: usize = 40;

/// Offset of the version byte.
pub const VERSION_AT: usize = 0;
/// Offset of the big-endian u32 epoch.
pub const EPOCH_AT: usize = 1;
/// Offset of α.
pub const ALPHA_AT: usize = 5;
/// Offset of β.
pub const BETA_AT: usize = ALPHA_AT + ALPHA_LEN;
/// Zero bytes at the front of every plaintext payload; the final hop (or the SURB's owner)
/// checks them, so any change to the payload anywhere on the path is detected.
pub const PAYLOAD_TAG_LEN: usize = 16;

/// The two header formats. Both make packets of [`PACKET_LEN`] bytes; byte 0 says which.
///
/// - [`Format::V1`], Sphinx proper: one α that each hop blinds, so a hop does two X25519
///   operations (the shared secret, then the blinded α for the next hop).
/// - [`Format::V2`], a KEM-style header (as in Outfox): every hop's routing block carries the
///   next hop's own α, so a hop does one X25519 operation; the price is 32 more bytes of
///   header per hop and 160 fewer payload bytes.
///
/// The version byte is visible on the wire, so a network runs one format: mixing them would
/// split the anonymity set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// Sphinx with per-hop blinding (version 1).
    V1,
    /// KEM-style header, one X25519 per hop (version 2).
    V2,
}

impl Format {
    /// Both formats.
    pub const ALL: [Format; 2] = [Format::V1, Format::V2];

    /// The version byte.
    pub const fn version(self) -> u8 {
        match self {
            Format::V1 => 1,
            Format::V2 => 2,
        }
    }

    /// The format a version byte names.
    pub const fn from_version(version: u8) -> Option<Self> {
        match version {
            1 => Some(Format::V1),
            2 => Some(Format::V2),
            _ => None,
        }
    }

    /// Bytes of one routing block: the command, and in v2 the next hop's α.
    pub const fn block_len(self) -> usize {
        match self {
            Format::V1 => COMMAND_LEN,
            Format::V2 => COMMAND_LEN + ALPHA_LEN,
        }
    }

    /// Bytes of the routing information β.
    pub const fn beta_len(self) -> usize {
        MAX_HOPS * self.block_len()
    }

    /// Offset of γ.
    pub const fn gamma_at(self) -> usize {
        BETA_AT + self.beta_len()
    }

    /// Bytes of the header (version, epoch, α, β, γ).
    pub const fn header_len(self) -> usize {
        self.gamma_at() + MAC_LEN
    }

    /// Offset of the payload δ.
    pub const fn payload_at(self) -> usize {
        self.header_len()
    }

    /// Bytes of the payload δ.
    pub const fn payload_len(self) -> usize {
        PACKET_LEN - self.header_len()
    }

    /// The most message bytes one packet carries.
    pub const fn message_len(self) -> usize {
        self.payload_len() - PAYLOAD_TAG_LEN
    }

    /// Bytes of a serialized SURB: first hop (16), header, payload key (32).
    pub const fn surb_len(self) -> usize {
        16 + self.header_len() + 32
    }
}

/// Version 1's version byte.
pub const VERSION: u8 = Format::V1.version();
/// Bytes of one v1 routing command block.
pub const BLOCK_LEN: usize = Format::V1.block_len();
/// Bytes of v1's routing information β.
pub const BETA_LEN: usize = Format::V1.beta_len();
/// Offset of γ in v1.
pub const GAMMA_AT: usize = Format::V1.gamma_at();
/// Bytes of a v1 header.
pub const HEADER_LEN: usize = Format::V1.header_len();
/// Offset of the payload in v1.
pub const PAYLOAD_AT: usize = Format::V1.payload_at();
/// Bytes of a v1 payload.
pub const PAYLOAD_LEN: usize = Format::V1.payload_len();
/// The most message bytes one v1 packet carries.
pub const MESSAGE_LEN: usize = Format::V1.message_len();

/// The largest routing block of any format (buffers are sized for it).
pub(crate) const BLOCK_MAX: usize = Format::V2.block_len();
/// The largest β of any format.
pub(crate) const BETA_MAX: usize = Format::V2.beta_len();
/// The largest header of any format.
pub const HEADER_MAX: usize = Format::V2.header_len();

// A packet always fits one UDP datagram on a 1500-byte-MTU IPv6 path.
const _: () = assert!(PACKET_LEN <= 1500 - 40 - 8);
// v2 is the larger header.
const _: () = assert!(Format::V2.header_len() >= Format::V1.header_len());

/// Bytes of the header prefix (version and epoch) that every hop's MAC also covers.
pub const PREFIX_LEN: usize = ALPHA_AT;

/// Identifies a relay in routing commands (derived from its identity key by the control plane).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub [u8; 16]);

/// Identifies a mailbox at a gateway or a service at an exit. A client's mailbox id links
/// its packets, so `Debug` prints `[scrubbed]`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MailboxId(pub [u8; 16]);

impl core::fmt::Debug for MailboxId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("MailboxId([scrubbed])")
    }
}

/// The mailbox of one-hop link cover: the relay a packet for it is delivered to counts it and
/// drops it. [`process`](crate::process) records no replay tag for such packets (see
/// `finish` in `process.rs` for why that is safe), so a full replay filter never stops cover.
pub const COVER_MAILBOX: MailboxId = MailboxId([0; 16]);

/// Names a single-use reply block, so its creator finds the keys to open the reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SurbId(pub [u8; 16]);

/// A key epoch (one hour by default). Packets name the epoch whose keys they were made with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Epoch(pub u32);

/// Per-hop delay in milliseconds that the relay holds the packet before sending it on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct DelayMs(pub u32);

/// Command bytes of a routing block.
pub(crate) const CMD_FORWARD: u8 = 0x01;
pub(crate) const CMD_DELIVER: u8 = 0x02;
pub(crate) const CMD_DELIVER_REPLY: u8 = 0x03;

/// What one hop is told to do, as decoded from its routing block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Command {
    Forward {
        next: NodeId,
        delay: DelayMs,
        mac: [u8; MAC_LEN],
    },
    Deliver {
        mailbox: MailboxId,
        delay: DelayMs,
    },
    DeliverReply {
        mailbox: MailboxId,
        surb: SurbId,
        delay: DelayMs,
    },
}

impl Command {
    /// The 40-byte block: command, delay (u32 BE), address (16), MAC or SURB id (16), zero (3).
    pub(crate) fn encode(&self) -> [u8; COMMAND_LEN] {
        let mut b = [0u8; COMMAND_LEN];
        let (cmd, delay, address, tail) = match *self {
            Command::Forward { next, delay, mac } => (CMD_FORWARD, delay, next.0, mac),
            Command::Deliver { mailbox, delay } => (CMD_DELIVER, delay, mailbox.0, [0; 16]),
            Command::DeliverReply {
                mailbox,
                surb,
                delay,
            } => (CMD_DELIVER_REPLY, delay, mailbox.0, surb.0),
        };
        b[0] = cmd;
        b[1..5].copy_from_slice(&delay.0.to_be_bytes());
        b[5..21].copy_from_slice(&address);
        b[21..37].copy_from_slice(&tail);
        b
    }

    /// Decodes a block; `None` for an unknown command or non-zero reserved bytes.
    pub(crate) fn decode(b: &[u8; COMMAND_LEN]) -> Option<Self> {
        if b[37..] != [0u8; 3] {
            return None;
        }
        let delay = DelayMs(u32::from_be_bytes([b[1], b[2], b[3], b[4]]));
        let mut address = [0u8; 16];
        address.copy_from_slice(&b[5..21]);
        let mut tail = [0u8; 16];
        tail.copy_from_slice(&b[21..37]);
        match b[0] {
            CMD_FORWARD => Some(Command::Forward {
                next: NodeId(address),
                delay,
                mac: tail,
            }),
            CMD_DELIVER if tail == [0; 16] => Some(Command::Deliver {
                mailbox: MailboxId(address),
                delay,
            }),
            CMD_DELIVER_REPLY => Some(Command::DeliverReply {
                mailbox: MailboxId(address),
                surb: SurbId(tail),
                delay,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn layout_adds_up() {
        assert_eq!(HEADER_LEN, 253);
        assert_eq!(PAYLOAD_LEN, 1199);
        assert_eq!(HEADER_LEN + PAYLOAD_LEN, PACKET_LEN);
        assert_eq!(MESSAGE_LEN, 1183);
    }

    #[test]
    fn commands_round_trip() {
        let cmds = [
            Command::Forward {
                next: NodeId([7; 16]),
                delay: DelayMs(1234),
                mac: [9; 16],
            },
            Command::Deliver {
                mailbox: MailboxId([1; 16]),
                delay: DelayMs(0),
            },
            Command::DeliverReply {
                mailbox: MailboxId([2; 16]),
                surb: SurbId([3; 16]),
                delay: DelayMs(u32::MAX),
            },
        ];
        for c in cmds {
            assert_eq!(Command::decode(&c.encode()).unwrap(), c);
        }
        let mut bad = cmds[0].encode();
        bad[0] = 0x7f;
        assert_eq!(Command::decode(&bad), None);
        let mut reserved = cmds[0].encode();
        reserved[39] = 1;
        assert_eq!(Command::decode(&reserved), None);
        // A deliver block must have a zero MAC field.
        let mut deliver = cmds[1].encode();
        deliver[30] = 1;
        assert_eq!(Command::decode(&deliver), None);
    }
}
