//! The handshake pieces both sides share: the epoch hour in the MACs, and what a finished
//! handshake hands over.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::crypto::SessionKeys;
use crate::framing::{FrameDecoder, FrameEncoder};

pub mod client;
pub mod server;

/// Bytes of a representative, of AUTH, of a mark and of a MAC.
pub(crate) const REPRESENTATIVE_LENGTH: usize = 32;
pub(crate) const AUTH_LENGTH: usize = 32;
pub(crate) const MARK_LENGTH: usize = 16;
pub(crate) const MAC_LENGTH: usize = 16;

/// Hours since the Unix epoch; its decimal text ends both hello MACs, so a hello is only
/// valid for an hour either side of the server's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EpochHour(pub u64);

impl EpochHour {
    /// The hour `now` falls in (hour 0 for times before 1970).
    pub fn at(now: SystemTime) -> Self {
        Self(
            now.duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_secs() / 3600),
        )
    }

    /// ASCII decimal without padding, as the MACs use it.
    pub(crate) fn text(self) -> Vec<u8> {
        self.0.to_string().into_bytes()
    }
}

/// A finished handshake: the framers for the two directions of this side. Bytes that arrived
/// after the handshake are already in the decoder; poll it before reading more.
#[derive(Debug)]
pub struct Established {
    /// Frames what this side sends.
    pub encoder: FrameEncoder,
    /// Decodes what the peer sends.
    pub decoder: FrameDecoder,
}

impl Established {
    pub(crate) fn client(keys: &SessionKeys) -> Self {
        Self {
            encoder: FrameEncoder::new(&keys.client_to_server),
            decoder: FrameDecoder::new(&keys.server_to_client),
        }
    }

    pub(crate) fn server(keys: &SessionKeys) -> Self {
        Self {
            encoder: FrameEncoder::new(&keys.server_to_client),
            decoder: FrameDecoder::new(&keys.client_to_server),
        }
    }
}

#[cfg(test)]
#[expect(clippy::expect_used, clippy::panic, reason = "tests")]
mod tests;
