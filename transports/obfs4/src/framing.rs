//! obfs4 frames, one encoder and one decoder per direction.
//!
//! ```text
//! frame  = BE16(len(box) XOR mask) | box          len(box) in 16..=1446
//! box    = tag(16) | XSalsa20(key, prefix(16) | BE64(counter), packet)   counter from 1
//! packet = type(1) | BE16(payload length) | payload | zero padding
//! ```

use std::fmt;

use crypto_secretbox::aead::AeadInPlace as _;
use crypto_secretbox::{Key, KeyInit as _, Nonce, Tag, XSalsa20Poly1305};
use zeroize::Zeroizing;

use crate::crypto::DirectionKeys;
use crate::error::FrameError;
use crate::mask::LengthMask;
use crate::{MAX_FRAME_PAYLOAD_LENGTH, MAX_PACKET_PAYLOAD_LENGTH, PACKET_OVERHEAD};

const TAG_LENGTH: usize = 16;
/// Smallest and largest box (tag + packet) a frame may carry.
const MIN_BOX_LENGTH: usize = TAG_LENGTH;
const MAX_BOX_LENGTH: usize = TAG_LENGTH + MAX_FRAME_PAYLOAD_LENGTH;

const PACKET_PAYLOAD: u8 = 0;
const PACKET_PRNG_SEED: u8 = 1;

/// The 24-byte seed of the peer's length distribution, sent by the server in a type-1 packet.
#[derive(Clone, PartialEq, Eq)]
pub struct PrngSeed(pub [u8; 24]);

impl fmt::Debug for PrngSeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrngSeed([scrubbed])")
    }
}

/// A decoded, authenticated packet.
#[derive(Clone, PartialEq, Eq)]
pub enum Packet {
    /// Application bytes (possibly none: a padding-only frame).
    Payload(Vec<u8>),
    /// The server's length-distribution seed (honoured by clients only).
    PrngSeed(PrngSeed),
    /// A packet type obfs4proxy ignores (unknown type, or a seed of the wrong length).
    Ignored {
        /// The packet's type byte.
        kind: u8,
    },
}

impl fmt::Debug for Packet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Payload(bytes) => write!(f, "Payload({} bytes)", bytes.len()),
            Self::PrngSeed(seed) => seed.fmt(f),
            Self::Ignored { kind } => write!(f, "Ignored {{ kind: {kind} }}"),
        }
    }
}

/// Counter, key and mask shared by both ends of one direction.
struct Direction {
    cipher: XSalsa20Poly1305,
    nonce_prefix: [u8; 16],
    /// The next frame's counter; `None` once 2^64 - 1 frames have been used.
    counter: Option<u64>,
    mask: LengthMask,
}

impl Direction {
    fn new(keys: &DirectionKeys) -> Self {
        Self {
            cipher: XSalsa20Poly1305::new(Key::from_slice(&keys.secretbox_key[..])),
            nonce_prefix: keys.nonce_prefix,
            counter: Some(1),
            mask: LengthMask::new(&keys.mask_seed),
        }
    }

    fn next_nonce(&mut self) -> Result<[u8; 24], FrameError> {
        let counter = self.counter.ok_or(FrameError::CounterExhausted)?;
        // obfs4proxy refuses the frame whose counter would wrap to 0.
        self.counter = counter.checked_add(1);
        let mut nonce = [0u8; 24];
        nonce[..16].copy_from_slice(&self.nonce_prefix);
        nonce[16..].copy_from_slice(&counter.to_be_bytes());
        Ok(nonce)
    }
}

/// Turns packets into frames for one direction.
pub struct FrameEncoder {
    direction: Direction,
}

impl fmt::Debug for FrameEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FrameEncoder([scrubbed])")
    }
}

impl FrameEncoder {
    pub(crate) fn new(keys: &DirectionKeys) -> Self {
        Self {
            direction: Direction::new(keys),
        }
    }

    /// Appends one frame carrying `payload` and `padding` zero bytes to `out`.
    pub fn encode_payload(
        &mut self,
        payload: &[u8],
        padding: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), FrameError> {
        self.encode_packet(PACKET_PAYLOAD, payload, padding, out)
    }

    /// Appends as many payload frames as `data` needs (1427 bytes each, the last one shorter),
    /// without padding; the caller adds padding frames by its own policy.
    pub fn encode_data(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
        for chunk in data.chunks(MAX_PACKET_PAYLOAD_LENGTH) {
            self.encode_payload(chunk, 0, out)?;
        }
        Ok(())
    }

    /// Appends the frame carrying the server's PRNG seed (the handshake's inline seed frame).
    pub(crate) fn encode_prng_seed(
        &mut self,
        seed: &PrngSeed,
        out: &mut Vec<u8>,
    ) -> Result<(), FrameError> {
        self.encode_packet(PACKET_PRNG_SEED, &seed.0, 0, out)
    }

    fn encode_packet(
        &mut self,
        kind: u8,
        payload: &[u8],
        padding: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), FrameError> {
        if payload.len() + padding > MAX_PACKET_PAYLOAD_LENGTH {
            return Err(FrameError::PacketTooLong);
        }
        let nonce = self.direction.next_nonce()?;
        let packet_length = PACKET_OVERHEAD + payload.len() + padding;
        let box_length = TAG_LENGTH + packet_length;
        // Both bounded by MAX_PACKET_PAYLOAD_LENGTH above, so they fit in u16.
        let payload_length = payload.len() as u16;
        let mask = self.direction.mask.next_mask();
        out.extend_from_slice(&((box_length as u16) ^ mask).to_be_bytes());

        let tag_at = out.len();
        out.extend_from_slice(&[0u8; TAG_LENGTH]);
        let packet_at = out.len();
        out.push(kind);
        out.extend_from_slice(&payload_length.to_be_bytes());
        out.extend_from_slice(payload);
        out.resize(out.len() + padding, 0);

        let tag = self
            .direction
            .cipher
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), b"", &mut out[packet_at..])
            // XSalsa20-Poly1305 fails only with associated data, and we pass none.
            .map_err(|_| FrameError::BadTag)?;
        out[tag_at..packet_at].copy_from_slice(tag.as_slice());
        Ok(())
    }
}

/// Turns the bytes of one direction back into packets, however the bytes are split.
pub struct FrameDecoder {
    direction: Direction,
    buffer: Vec<u8>,
    /// The current frame's box length, once its length prefix has been unmasked.
    pending_box: Option<usize>,
    /// Set by the first error; every later call returns it.
    failed: Option<FrameError>,
}

impl fmt::Debug for FrameDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameDecoder")
            .field("buffered", &self.buffer.len())
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl FrameDecoder {
    pub(crate) fn new(keys: &DirectionKeys) -> Self {
        Self {
            direction: Direction::new(keys),
            buffer: Vec::new(),
            pending_box: None,
            failed: None,
        }
    }

    /// Takes bytes as they arrive; call [`FrameDecoder::poll_packet`] until it returns `None`.
    pub fn handle_bytes(&mut self, bytes: &[u8]) {
        if self.failed.is_none() {
            self.buffer.extend_from_slice(bytes);
        }
    }

    /// The next complete packet, `None` if more bytes are needed, or the error that ended the
    /// stream (returned again on every later call).
    pub fn poll_packet(&mut self) -> Result<Option<Packet>, FrameError> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        let result = self.decode_next();
        if let Err(error) = result {
            self.failed = Some(error);
            self.buffer = Vec::new();
        }
        result
    }

    fn decode_next(&mut self) -> Result<Option<Packet>, FrameError> {
        let box_length = match self.pending_box {
            Some(length) => length,
            None => {
                if self.buffer.len() < 2 {
                    return Ok(None);
                }
                let masked = u16::from_be_bytes([self.buffer[0], self.buffer[1]]);
                let length = masked ^ self.direction.mask.next_mask();
                if !(MIN_BOX_LENGTH..=MAX_BOX_LENGTH).contains(&usize::from(length)) {
                    return Err(FrameError::BadLength(length));
                }
                self.buffer.drain(..2);
                self.pending_box = Some(usize::from(length));
                usize::from(length)
            }
        };
        if self.buffer.len() < box_length {
            return Ok(None);
        }
        self.pending_box = None;
        let nonce = self.direction.next_nonce()?;
        let mut sealed: Zeroizing<Vec<u8>> =
            Zeroizing::new(self.buffer.drain(..box_length).collect());
        let (tag, packet) = sealed.split_at_mut(TAG_LENGTH);
        self.direction
            .cipher
            .decrypt_in_place_detached(Nonce::from_slice(&nonce), b"", packet, Tag::from_slice(tag))
            .map_err(|_| FrameError::BadTag)?;
        parse_packet(packet).map(Some)
    }
}

fn parse_packet(packet: &[u8]) -> Result<Packet, FrameError> {
    let [kind, high, low, rest @ ..] = packet else {
        return Err(FrameError::BadPacket);
    };
    let payload = rest
        .get(..usize::from(u16::from_be_bytes([*high, *low])))
        .ok_or(FrameError::BadPacket)?;
    Ok(match *kind {
        PACKET_PAYLOAD => Packet::Payload(payload.to_vec()),
        PACKET_PRNG_SEED => match <[u8; 24]>::try_from(payload) {
            Ok(seed) => Packet::PrngSeed(PrngSeed(seed)),
            Err(_) => Packet::Ignored { kind: *kind },
        },
        other => Packet::Ignored { kind: other },
    })
}

#[cfg(test)]
#[expect(clippy::expect_used, clippy::panic, reason = "tests")]
mod tests {
    use super::*;
    use crate::FRAME_OVERHEAD;

    /// Bytes a frame with this much payload and padding occupies on the wire.
    const fn frame_length(payload_and_padding: usize) -> usize {
        FRAME_OVERHEAD + PACKET_OVERHEAD + payload_and_padding
    }

    fn keys(byte: u8) -> DirectionKeys {
        DirectionKeys {
            secretbox_key: Zeroizing::new([byte; 32]),
            nonce_prefix: [byte.wrapping_add(1); 16],
            mask_seed: Zeroizing::new([byte.wrapping_add(2); 24]),
        }
    }

    fn stream(frames: &[(&[u8], usize)]) -> Vec<u8> {
        let mut encoder = FrameEncoder::new(&keys(5));
        let mut wire = Vec::new();
        for (payload, padding) in frames {
            encoder
                .encode_payload(payload, *padding, &mut wire)
                .expect("fits");
        }
        wire
    }

    fn decode_all(decoder: &mut FrameDecoder) -> Result<Vec<Packet>, FrameError> {
        let mut packets = Vec::new();
        while let Some(packet) = decoder.poll_packet()? {
            packets.push(packet);
        }
        Ok(packets)
    }

    #[test]
    fn frames_decode_under_every_split() {
        let frames: [(&[u8], usize); 3] = [(b"first", 0), (b"", 40), (&[0xab; 1427], 0)];
        let wire = stream(&frames);
        assert_eq!(
            wire.len(),
            frame_length(5) + frame_length(40) + frame_length(1427)
        );
        let expected: Vec<Packet> = frames
            .iter()
            .map(|(p, _)| Packet::Payload(p.to_vec()))
            .collect();
        for split in 0..=wire.len() {
            let mut decoder = FrameDecoder::new(&keys(5));
            decoder.handle_bytes(&wire[..split]);
            let mut packets = decode_all(&mut decoder).expect("valid stream");
            decoder.handle_bytes(&wire[split..]);
            packets.extend(decode_all(&mut decoder).expect("valid stream"));
            assert_eq!(packets, expected, "split at {split}");
        }
        // One byte at a time.
        let mut decoder = FrameDecoder::new(&keys(5));
        let mut packets = Vec::new();
        for byte in &wire {
            decoder.handle_bytes(std::slice::from_ref(byte));
            packets.extend(decode_all(&mut decoder).expect("valid stream"));
        }
        assert_eq!(packets, expected);
    }

    #[test]
    fn any_flipped_bit_is_an_error_not_a_panic() {
        let wire = stream(&[(b"payload", 3), (b"second", 0)]);
        let first_frame = frame_length(7 + 3);
        for bit in 0..wire.len() * 8 {
            let mut tampered = wire.clone();
            tampered[bit / 8] ^= 1 << (bit % 8);
            let mut decoder = FrameDecoder::new(&keys(5));
            decoder.handle_bytes(&tampered);
            // A flipped length bit may leave the decoder waiting for bytes that never come;
            // otherwise the tampered frame is an error. No tampered packet is ever handed out.
            let untouched = usize::from(bit / 8 >= first_frame);
            match decode_all(&mut decoder) {
                Err(FrameError::BadTag | FrameError::BadLength(_)) => {}
                Ok(packets) => {
                    assert_eq!(
                        packets.len(),
                        untouched,
                        "bit {bit}: tampered frame accepted"
                    );
                    assert!(
                        bit / 8 == 0
                            || bit / 8 == 1
                            || bit / 8 == first_frame
                            || bit / 8 == first_frame + 1
                    );
                }
                Err(other) => panic!("bit {bit}: unexpected {other}"),
            }
        }
    }

    #[test]
    fn errors_are_sticky() {
        let mut wire = stream(&[(b"x", 0)]);
        wire[5] ^= 1;
        let mut decoder = FrameDecoder::new(&keys(5));
        decoder.handle_bytes(&wire);
        assert_eq!(decoder.poll_packet(), Err(FrameError::BadTag));
        decoder.handle_bytes(&stream(&[(b"x", 0)]));
        assert_eq!(decoder.poll_packet(), Err(FrameError::BadTag));
    }

    #[test]
    fn wrong_key_and_reordering_are_refused() {
        let wire = stream(&[(b"a", 0), (b"b", 0)]);
        let mut decoder = FrameDecoder::new(&keys(6));
        decoder.handle_bytes(&wire);
        assert!(decoder.poll_packet().is_err());

        let first = frame_length(1);
        let mut swapped = wire[first..].to_vec();
        swapped.extend_from_slice(&wire[..first]);
        let mut decoder = FrameDecoder::new(&keys(5));
        decoder.handle_bytes(&swapped);
        // The second frame's length was masked with the second mask: garbage under the first.
        assert!(matches!(
            decoder.poll_packet(),
            Err(FrameError::BadTag | FrameError::BadLength(_))
        ));
    }

    #[test]
    fn oversized_packets_are_refused() {
        let mut encoder = FrameEncoder::new(&keys(5));
        let mut out = Vec::new();
        assert_eq!(
            encoder.encode_payload(&[0; 1427], 1, &mut out),
            Err(FrameError::PacketTooLong)
        );
        assert!(out.is_empty());
        encoder.encode_data(&[1; 3000], &mut out).expect("chunked");
        assert_eq!(
            out.len(),
            2 * frame_length(1427) + frame_length(3000 - 2 * 1427)
        );
    }

    #[test]
    fn packet_parsing_rejects_lengths_beyond_the_frame() {
        assert_eq!(parse_packet(&[0, 0]), Err(FrameError::BadPacket));
        assert_eq!(parse_packet(&[0, 0, 2, 9]), Err(FrameError::BadPacket));
        assert_eq!(parse_packet(&[0, 0, 1, 9, 0]), Ok(Packet::Payload(vec![9])));
        assert_eq!(parse_packet(&[1, 0, 1, 9]), Ok(Packet::Ignored { kind: 1 }));
        assert_eq!(parse_packet(&[7, 0, 0]), Ok(Packet::Ignored { kind: 7 }));
    }

    #[test]
    fn exhausted_counter_is_an_error() {
        let mut encoder = FrameEncoder::new(&keys(5));
        encoder.direction.counter = Some(u64::MAX);
        let mut out = Vec::new();
        encoder
            .encode_payload(b"last", 0, &mut out)
            .expect("u64::MAX is usable");
        assert_eq!(
            encoder.encode_payload(b"wrap", 0, &mut out),
            Err(FrameError::CounterExhausted)
        );
    }
}
