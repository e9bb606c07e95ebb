//! HTTP/3 frames (RFC 9114 §7) and QUIC variable-length integers (RFC 9000 §16), sans-IO.
//!
//! [`FrameDecoder`] reads one stream's bytes in whatever pieces they arrive and hands out
//! frames: a DATA frame's payload as it comes (never buffered whole), the small frames
//! (HEADERS, SETTINGS, GOAWAY, ...) whole, up to a cap; unknown and reserved frame types are
//! skipped as RFC 9114 §9 asks.

use super::H3Error;

/// DATA.
pub const DATA: u64 = 0x00;
/// HEADERS.
pub const HEADERS: u64 = 0x01;
/// CANCEL_PUSH.
pub const CANCEL_PUSH: u64 = 0x03;
/// SETTINGS.
pub const SETTINGS: u64 = 0x04;
/// PUSH_PROMISE.
pub const PUSH_PROMISE: u64 = 0x05;
/// GOAWAY.
pub const GOAWAY: u64 = 0x07;
/// MAX_PUSH_ID.
pub const MAX_PUSH_ID: u64 = 0x0d;

/// The largest value a variable-length integer holds.
pub const VARINT_MAX: u64 = (1 << 62) - 1;

/// Reads a variable-length integer from the front of `buf`: its value and length, `None`
/// while `buf` holds only part of it.
pub fn read_varint(buf: &[u8]) -> Option<(u64, usize)> {
    let first = *buf.first()?;
    let len = 1usize << (first >> 6);
    let bytes = buf.get(..len)?;
    let value = bytes
        .iter()
        .skip(1)
        .fold(u64::from(first & 0x3f), |v, b| v << 8 | u64::from(*b));
    Some((value, len))
}

/// Appends `value` as a variable-length integer (the shortest form); values above
/// [`VARINT_MAX`] are clamped to it (callers only pass lengths and codes).
pub fn put_varint(out: &mut Vec<u8>, value: u64) {
    let v = value.min(VARINT_MAX);
    if v < 1 << 6 {
        out.push(v as u8);
    } else if v < 1 << 14 {
        out.extend_from_slice(&(v as u16 | 0x4000).to_be_bytes());
    } else if v < 1 << 30 {
        out.extend_from_slice(&(v as u32 | 0x8000_0000).to_be_bytes());
    } else {
        out.extend_from_slice(&(v | 0xc000_0000_0000_0000).to_be_bytes());
    }
}

/// Appends a frame's type and length; its payload follows.
pub fn put_frame_header(out: &mut Vec<u8>, ty: u64, len: usize) {
    put_varint(out, ty);
    put_varint(out, len as u64);
}

/// Appends a whole frame.
pub fn put_frame(out: &mut Vec<u8>, ty: u64, payload: &[u8]) {
    put_frame_header(out, ty, payload.len());
    out.extend_from_slice(payload);
}

/// A frame, or part of one, as [`FrameDecoder`] hands it out.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A piece of a DATA frame's payload (one frame may come in several pieces).
    Data(&'a [u8]),
    /// A whole frame of a known type other than DATA: HEADERS, SETTINGS, GOAWAY,
    /// CANCEL_PUSH, PUSH_PROMISE or MAX_PUSH_ID. Where it may appear is the stream's to check.
    Whole {
        /// Its type.
        ty: u64,
        /// Its payload.
        payload: &'a [u8],
    },
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Reading a frame's type and length.
    Header,
    /// Inside a DATA frame's payload.
    Data { left: u64 },
    /// Collecting a small frame's payload.
    Whole { ty: u64, left: usize },
    /// Skipping an unknown frame's payload.
    Skip { left: u64 },
}

/// One stream's frame reader. Bytes in, frames out; no I/O.
#[derive(Debug)]
pub struct FrameDecoder {
    state: State,
    head: [u8; 16],
    head_len: usize,
    whole: Vec<u8>,
    max_whole: usize,
}

impl FrameDecoder {
    /// A reader that takes frames other than DATA of at most `max_whole` bytes of payload.
    pub fn new(max_whole: usize) -> Self {
        Self {
            state: State::Header,
            head: [0; 16],
            head_len: 0,
            whole: Vec::new(),
            max_whole,
        }
    }

    /// Whether the stream may end here (it is between frames).
    pub fn at_frame_boundary(&self) -> bool {
        matches!(self.state, State::Header) && self.head_len == 0
    }

    /// Reads `input`, handing each frame (or DATA piece) to `on`. The first error, the
    /// reader's or `on`'s, ends the stream: the caller must not feed it again.
    pub fn feed(
        &mut self,
        mut input: &[u8],
        mut on: impl FnMut(Frame<'_>) -> Result<(), H3Error>,
    ) -> Result<(), H3Error> {
        while !input.is_empty() {
            match self.state {
                State::Header => {
                    let (byte, rest) = (input[0], &input[1..]);
                    input = rest;
                    self.head[self.head_len] = byte;
                    self.head_len += 1;
                    if let Some(next) = self.parse_header()? {
                        self.head_len = 0;
                        self.state = next;
                        match next {
                            State::Whole { ty, left: 0 } => {
                                self.state = State::Header;
                                on(Frame::Whole { ty, payload: &[] })?;
                            }
                            State::Data { left: 0 } | State::Skip { left: 0 } => {
                                self.state = State::Header;
                            }
                            _ => {}
                        }
                    }
                }
                State::Data { left } => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
                    let (piece, rest) = input.split_at(n);
                    input = rest;
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::Header
                    } else {
                        State::Data { left }
                    };
                    on(Frame::Data(piece))?;
                }
                State::Skip { left } => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
                    input = &input[n..];
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::Header
                    } else {
                        State::Skip { left }
                    };
                }
                State::Whole { ty, left } => {
                    let n = left.min(input.len());
                    self.whole.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    if left == n {
                        self.state = State::Header;
                        let result = on(Frame::Whole {
                            ty,
                            payload: &self.whole,
                        });
                        self.whole.clear();
                        result?;
                    } else {
                        self.state = State::Whole { ty, left: left - n };
                    }
                }
            }
        }
        Ok(())
    }

    /// The state after the frame header in `head`, once it is whole.
    fn parse_header(&mut self) -> Result<Option<State>, H3Error> {
        let head = &self.head[..self.head_len];
        let Some((ty, n)) = read_varint(head) else {
            return Ok(None);
        };
        let Some((len, _)) = read_varint(&head[n..]) else {
            return Ok(None);
        };
        Ok(Some(match ty {
            DATA => State::Data { left: len },
            // HTTP/2 frame types with no HTTP/3 meaning (RFC 9114 §7.2.8).
            0x02 | 0x06 | 0x08 | 0x09 => return Err(H3Error::FrameUnexpected(ty)),
            HEADERS | CANCEL_PUSH | SETTINGS | PUSH_PROMISE | GOAWAY | MAX_PUSH_ID => {
                let left = usize::try_from(len)
                    .ok()
                    .filter(|l| *l <= self.max_whole)
                    .ok_or(H3Error::FrameTooLarge(ty))?;
                State::Whole { ty, left }
            }
            _ => State::Skip { left: len },
        }))
    }
}

/// A SETTINGS payload's identifier and value pairs; a truncated one is an error.
pub fn parse_settings(payload: &[u8]) -> Result<Vec<(u64, u64)>, H3Error> {
    let mut out = Vec::new();
    let mut rest = payload;
    while !rest.is_empty() {
        let (id, n) = read_varint(rest).ok_or(H3Error::Malformed("SETTINGS"))?;
        rest = &rest[n..];
        let (value, n) = read_varint(rest).ok_or(H3Error::Malformed("SETTINGS"))?;
        rest = &rest[n..];
        // HTTP/2 settings identifiers must not appear (RFC 9114 §7.2.4.1).
        if matches!(id, 0x02..=0x05) {
            return Err(H3Error::Malformed("SETTINGS"));
        }
        out.push((id, value));
    }
    Ok(out)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn varints_of_every_length_round_trip() {
        for v in [0, 37, 63, 64, 15293, 16383, 16384, 494_878_333, VARINT_MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(read_varint(&out), Some((v, out.len())));
            assert_eq!(read_varint(&out[..out.len() - 1]), None);
        }
        // RFC 9000 §A.1's examples.
        assert_eq!(read_varint(&[0x7b, 0xbd]), Some((15293, 2)));
        assert_eq!(
            read_varint(&[0x9d, 0x7f, 0x3e, 0x7d]),
            Some((494_878_333, 4))
        );
    }

    fn frames_of(input: &[u8], step: usize) -> Result<Vec<(u64, Vec<u8>)>, H3Error> {
        let mut d = FrameDecoder::new(64);
        let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
        for piece in input.chunks(step) {
            d.feed(piece, |f| {
                match f {
                    Frame::Data(p) => match out.last_mut() {
                        Some((DATA, v)) => v.extend_from_slice(p),
                        _ => out.push((DATA, p.to_vec())),
                    },
                    Frame::Whole { ty, payload } => out.push((ty, payload.to_vec())),
                }
                Ok(())
            })?;
        }
        assert!(d.at_frame_boundary());
        Ok(out)
    }

    #[test]
    fn frames_come_out_whole_however_the_bytes_are_cut() {
        let mut input = Vec::new();
        put_frame(&mut input, HEADERS, b"abc");
        put_frame(&mut input, 0x21, &[9; 300]); // reserved: skipped
        put_frame(&mut input, DATA, &[7; 200]);
        put_frame(&mut input, SETTINGS, b"");
        for step in [1, 2, 3, 7, 100, 1000] {
            let frames = frames_of(&input, step).unwrap();
            assert_eq!(
                frames,
                vec![
                    (HEADERS, b"abc".to_vec()),
                    (DATA, vec![7; 200]),
                    (SETTINGS, vec![])
                ]
            );
        }
    }

    #[test]
    fn http2_frame_types_and_oversized_frames_are_errors() {
        let mut input = Vec::new();
        put_frame(&mut input, 0x06, b"ping");
        assert_eq!(frames_of(&input, 5), Err(H3Error::FrameUnexpected(6)));
        let mut input = Vec::new();
        put_frame(&mut input, HEADERS, &[0; 65]);
        assert_eq!(frames_of(&input, 5), Err(H3Error::FrameTooLarge(HEADERS)));
    }

    #[test]
    fn settings_parse_and_truncation_is_an_error() {
        let mut p = Vec::new();
        for v in [0x01, 0, 0x07, 0, 0x06, 16384] {
            put_varint(&mut p, v);
        }
        assert_eq!(
            parse_settings(&p).unwrap(),
            vec![(1, 0), (7, 0), (6, 16384)]
        );
        assert!(parse_settings(&p[..p.len() - 1]).is_err());
        assert!(parse_settings(&[0x02, 0x00]).is_err());
    }
}
