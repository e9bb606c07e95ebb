//! How a channel message rides in a Sphinx packet's message area ([`MESSAGE_LEN`] bytes, the
//! rest zero).
//!
//! ```text
//! client → exit (a forward packet, delivered to EXIT_MAILBOX)
//!   0   version 0x01
//!   1   session id (16 bytes, random per session)
//!   17  SURB count n (0-3)
//!   18  n SURBs (301 bytes each): routes back to the client, for the exit's replies
//!   ..  channel message (header and frames), then zeros
//!
//! exit → client (a SURB reply, delivered to the client's mailbox at its gateway)
//!   0   version 0x01
//!   1   SURBs the exit holds for this session after this reply (u16)
//!   3   SURBs it could use now beyond those (u16): data is waiting
//!   5   channel message, then zeros
//! ```
//!
//! A client message's channel part is at most [`CLIENT_CHANNEL_ROOM`] bytes, whatever the
//! SURB count, so that a retransmission fits next to fresh SURBs.

use pb_sphinx::{MESSAGE_LEN, MailboxId, SURB_LEN};

/// The mailbox exits deliver client messages to.
pub const EXIT_MAILBOX: MailboxId = MailboxId(*b"PhantomBand exit");
/// Format of both messages.
pub const VERSION: u8 = 1;
/// Most SURBs in one client message.
pub const MAX_SURBS: usize = 3;
const CLIENT_PREFIX: usize = 1 + 16 + 1;
const EXIT_PREFIX: usize = 1 + 2 + 2;
/// Room for the channel message in a client message (with two SURBs beside it).
pub const CLIENT_CHANNEL_ROOM: usize = MESSAGE_LEN - CLIENT_PREFIX - 2 * SURB_LEN;
/// Room for the channel message in an exit message.
pub const EXIT_CHANNEL_ROOM: usize = MESSAGE_LEN - EXIT_PREFIX;

/// A client session, as the exit knows it: random, fresh every session, never tied to the
/// client's address or keys. It links a client's messages, so `Debug` prints `[scrubbed]`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub [u8; 16]);

impl core::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SessionId([scrubbed])")
    }
}

/// Why a message did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// Not version 1.
    #[error("unknown message version")]
    Version,
    /// Shorter than its fixed fields or its SURBs.
    #[error("truncated message")]
    Truncated,
    /// More SURBs than a message carries, or more than fit beside the channel message.
    #[error("too many SURBs")]
    TooManySurbs,
}

/// A client message, parsed (the SURBs are still bytes; the exit parses each when it uses
/// it). `Debug` shows how many SURBs and bytes, never them.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientMessage<'a> {
    /// The session.
    pub session: SessionId,
    /// SURBs for replies.
    pub surbs: Vec<&'a [u8]>,
    /// The channel message (with trailing zeros).
    pub channel: &'a [u8],
}

impl core::fmt::Debug for ClientMessage<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ClientMessage")
            .field("session", &self.session)
            .field("surbs", &self.surbs.len())
            .field("channel_len", &self.channel.len())
            .finish()
    }
}

impl<'a> ClientMessage<'a> {
    /// Parses a delivered message area.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, MessageError> {
        let (&version, rest) = bytes.split_first().ok_or(MessageError::Truncated)?;
        if version != VERSION {
            return Err(MessageError::Version);
        }
        let (session, rest) = rest
            .split_first_chunk::<16>()
            .ok_or(MessageError::Truncated)?;
        let (&count, mut rest) = rest.split_first().ok_or(MessageError::Truncated)?;
        if usize::from(count) > MAX_SURBS {
            return Err(MessageError::TooManySurbs);
        }
        let mut surbs = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let (surb, tail) = rest
                .split_at_checked(SURB_LEN)
                .ok_or(MessageError::Truncated)?;
            surbs.push(surb);
            rest = tail;
        }
        Ok(Self {
            session: SessionId(*session),
            surbs,
            channel: rest,
        })
    }

    /// The session a delivered message area names, without parsing the rest (the exit
    /// files every message by it before answering any); `None` where
    /// [`parse`](Self::parse) would fail on the version or length.
    pub fn session_of(bytes: &[u8]) -> Option<SessionId> {
        match bytes.split_first() {
            Some((&VERSION, rest)) => rest.first_chunk::<16>().map(|s| SessionId(*s)),
            _ => None,
        }
    }

    /// SURBs that fit beside a channel message of `channel_len` bytes.
    pub fn surb_room(channel_len: usize) -> usize {
        ((MESSAGE_LEN - CLIENT_PREFIX).saturating_sub(channel_len) / SURB_LEN).min(MAX_SURBS)
    }

    /// Encodes into a message area.
    pub fn encode(&self) -> Result<Vec<u8>, MessageError> {
        if self.surbs.len() > Self::surb_room(self.channel.len())
            || self.surbs.iter().any(|s| s.len() != SURB_LEN)
        {
            return Err(MessageError::TooManySurbs);
        }
        let mut out = Vec::with_capacity(MESSAGE_LEN);
        out.push(VERSION);
        out.extend_from_slice(&self.session.0);
        out.push(self.surbs.len() as u8);
        for surb in &self.surbs {
            out.extend_from_slice(surb);
        }
        out.extend_from_slice(self.channel);
        Ok(out)
    }
}

/// An exit message, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitMessage<'a> {
    /// SURBs the exit holds after this reply.
    pub held: u16,
    /// SURBs it could use now beyond those.
    pub wanted: u16,
    /// The channel message (with trailing zeros).
    pub channel: &'a [u8],
}

impl<'a> ExitMessage<'a> {
    /// Parses an opened reply's message area.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, MessageError> {
        let (&version, rest) = bytes.split_first().ok_or(MessageError::Truncated)?;
        if version != VERSION {
            return Err(MessageError::Version);
        }
        let (counts, channel) = rest
            .split_first_chunk::<4>()
            .ok_or(MessageError::Truncated)?;
        Ok(Self {
            held: u16::from_be_bytes([counts[0], counts[1]]),
            wanted: u16::from_be_bytes([counts[2], counts[3]]),
            channel,
        })
    }

    /// Encodes into a message area (the channel message at most [`EXIT_CHANNEL_ROOM`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MESSAGE_LEN);
        out.push(VERSION);
        out.extend_from_slice(&self.held.to_be_bytes());
        out.extend_from_slice(&self.wanted.to_be_bytes());
        out.extend_from_slice(&self.channel[..self.channel.len().min(EXIT_CHANNEL_ROOM)]);
        out
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_within_the_message_area() {
        let surb = [5u8; SURB_LEN];
        let channel = vec![9u8; CLIENT_CHANNEL_ROOM];
        let m = ClientMessage {
            session: SessionId([1; 16]),
            surbs: vec![&surb, &surb],
            channel: &channel,
        };
        let bytes = m.encode().unwrap();
        assert!(bytes.len() <= MESSAGE_LEN);
        assert_eq!(ClientMessage::parse(&bytes).unwrap(), m);
        assert_eq!(ClientMessage::session_of(&bytes), Some(m.session));
        assert_eq!(ClientMessage::session_of(&bytes[..16]), None, "too short");
        let mut other = bytes.clone();
        other[0] = VERSION + 1;
        assert_eq!(ClientMessage::session_of(&other), None, "another version");
        // Three SURBs only beside a short channel message.
        assert_eq!(ClientMessage::surb_room(CLIENT_CHANNEL_ROOM), 2);
        assert_eq!(ClientMessage::surb_room(18), 3);
        let too_many = ClientMessage {
            surbs: vec![&surb; 3],
            ..m.clone()
        };
        assert_eq!(too_many.encode(), Err(MessageError::TooManySurbs));
        for cut in 0..CLIENT_PREFIX + SURB_LEN {
            assert!(ClientMessage::parse(&bytes[..cut]).is_err());
        }
        let mut bad = bytes.clone();
        bad[17] = 4;
        assert_eq!(ClientMessage::parse(&bad), Err(MessageError::TooManySurbs));

        let channel = vec![3u8; EXIT_CHANNEL_ROOM];
        let e = ExitMessage {
            held: 40,
            wanted: 7,
            channel: &channel,
        };
        let bytes = e.encode();
        assert_eq!(bytes.len(), MESSAGE_LEN);
        assert_eq!(ExitMessage::parse(&bytes).unwrap(), e);
        assert_eq!(
            ExitMessage::parse(&[2, 0, 0, 0, 0]),
            Err(MessageError::Version)
        );
    }
}
