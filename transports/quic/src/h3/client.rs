//! The client's side of the link request, sans-IO: the bytes it opens its streams with,
//! and readers for what the gateway sends back (the response on the request stream, and
//! the gateway's own unidirectional streams).

use std::collections::HashMap;

use pb_transport::Record;

use super::{
    H3Error,
    frame::{self, Frame, FrameDecoder},
    qpack,
};
use crate::records::Reassembler;

/// Largest field section (names and values) the client takes, and announces in
/// `SETTINGS_MAX_FIELD_SECTION_SIZE`.
pub const MAX_FIELD_SECTION: usize = 16 * 1024;

/// Unidirectional stream types (RFC 9114 §6.2, RFC 9204 §4.2).
const CONTROL_STREAM: u64 = 0x00;
const PUSH_STREAM: u64 = 0x01;
const QPACK_ENCODER_STREAM: u64 = 0x02;
const QPACK_DECODER_STREAM: u64 = 0x03;

/// Settings identifiers the client sends.
const SETTINGS_QPACK_MAX_TABLE_CAPACITY: u64 = 0x01;
const SETTINGS_MAX_FIELD_SECTION_SIZE: u64 = 0x06;
const SETTINGS_QPACK_BLOCKED_STREAMS: u64 = 0x07;

/// What the client writes when it opens its link request: each stream's first bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opening {
    /// Its control stream: the type, then SETTINGS.
    pub control: Vec<u8>,
    /// Its QPACK encoder stream: the type only (no dynamic table, no instructions).
    pub qpack_encoder: Vec<u8>,
    /// Its QPACK decoder stream: the type only.
    pub qpack_decoder: Vec<u8>,
    /// The request stream: one HEADERS frame. Records follow as DATA frames.
    pub request: Vec<u8>,
}

/// The request's fields: `POST https://authority/path` carrying an octet stream.
pub fn link_request_fields<'a>(authority: &'a str, path: &'a str) -> [(&'a str, &'a str); 5] {
    [
        (":method", "POST"),
        (":scheme", "https"),
        (":authority", authority),
        (":path", path),
        ("content-type", "application/octet-stream"),
    ]
}

/// The opening bytes of a link request to `path` on `authority`.
pub fn opening(authority: &str, path: &str) -> Opening {
    let mut settings = Vec::new();
    for (id, value) in [
        (SETTINGS_QPACK_MAX_TABLE_CAPACITY, 0),
        (SETTINGS_MAX_FIELD_SECTION_SIZE, MAX_FIELD_SECTION as u64),
        (SETTINGS_QPACK_BLOCKED_STREAMS, 0),
    ] {
        frame::put_varint(&mut settings, id);
        frame::put_varint(&mut settings, value);
    }
    let mut control = vec![CONTROL_STREAM as u8];
    frame::put_frame(&mut control, frame::SETTINGS, &settings);
    let mut request = Vec::new();
    let section = qpack::encode(&link_request_fields(authority, path));
    frame::put_frame(&mut request, frame::HEADERS, &section);
    Opening {
        control,
        qpack_encoder: vec![QPACK_ENCODER_STREAM as u8],
        qpack_decoder: vec![QPACK_DECODER_STREAM as u8],
        request,
    }
}

/// The `:status` of a response field section: three digits, 100 to 599.
pub fn status_of(fields: &[qpack::Field]) -> Result<u16, H3Error> {
    let mut statuses = fields.iter().filter(|(n, _)| n == b":status");
    let (Some((_, value)), None) = (statuses.next(), statuses.next()) else {
        return Err(H3Error::BadStatus);
    };
    let digits: [u8; 3] = value
        .as_slice()
        .try_into()
        .map_err(|_| H3Error::BadStatus)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(H3Error::BadStatus);
    }
    let status = digits
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    if (100..600).contains(&status) {
        Ok(status)
    } else {
        Err(H3Error::BadStatus)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the final response's HEADERS.
    Head,
    /// A 200: the body is records.
    Body,
    /// After trailers: nothing more may come.
    Trailers,
    /// Any other final status: the body is a page, read and dropped.
    Refused,
}

/// Reads the response on the link request's stream: HEADERS, then records in DATA.
#[derive(Debug)]
pub struct ResponseReader {
    frames: FrameDecoder,
    phase: Phase,
    status: Option<u16>,
    records: Reassembler,
    max_field_section: usize,
}

impl ResponseReader {
    /// A reader taking field sections of at most `max_field_section` bytes.
    pub fn new(max_field_section: usize) -> Self {
        Self {
            frames: FrameDecoder::new(max_field_section + 64),
            phase: Phase::Head,
            status: None,
            records: Reassembler::default(),
            max_field_section,
        }
    }

    /// The final status, once it came.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// Whether the gateway accepted the link (a 200): records flow.
    pub fn accepted(&self) -> bool {
        matches!(self.phase, Phase::Body | Phase::Trailers)
    }

    /// Reads the next bytes of the stream; each record completed goes to `out`.
    pub fn handle(&mut self, bytes: &[u8], mut out: impl FnMut(&Record)) -> Result<(), H3Error> {
        let Self {
            frames,
            phase,
            status,
            records,
            max_field_section,
        } = self;
        frames.feed(bytes, |f| match (f, *phase) {
            (Frame::Data(p), Phase::Body) => {
                records.push(p, &mut out);
                Ok(())
            }
            (Frame::Data(_), Phase::Refused) => Ok(()),
            (Frame::Whole { ty, payload }, _) if ty == frame::HEADERS => {
                let fields = qpack::decode(payload, *max_field_section)?;
                match *phase {
                    Phase::Head => {
                        let s = status_of(&fields)?;
                        if s >= 200 {
                            *status = Some(s);
                            *phase = if s == 200 {
                                Phase::Body
                            } else {
                                Phase::Refused
                            };
                        }
                        Ok(())
                    }
                    Phase::Body => {
                        *phase = Phase::Trailers;
                        Ok(())
                    }
                    Phase::Refused => Ok(()),
                    Phase::Trailers => Err(H3Error::FrameUnexpected(frame::HEADERS)),
                }
            }
            (Frame::Data(_), _) => Err(H3Error::FrameUnexpected(frame::DATA)),
            (Frame::Whole { ty, .. }, _) => Err(H3Error::FrameUnexpected(ty)),
        })
    }

    /// The stream ended: an error if it ended inside a frame or a record, or with no
    /// response at all.
    pub fn handle_fin(&mut self) -> Result<(), H3Error> {
        if !self.frames.at_frame_boundary() || self.records.pending() != 0 {
            return Err(H3Error::CutRecord);
        }
        if self.phase == Phase::Head {
            return Err(H3Error::BadStatus);
        }
        Ok(())
    }
}

/// What a unidirectional stream from the gateway turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UniKind {
    /// Its type has not arrived yet.
    Pending,
    /// The gateway's control stream.
    Control,
    /// Its QPACK encoder stream (unused: we keep no dynamic table).
    QpackEncoder,
    /// Its QPACK decoder stream.
    QpackDecoder,
    /// A type we do not know (a reserved or extension type): read and dropped.
    Unknown(u64),
}

#[derive(Debug)]
enum Uni {
    Type(Vec<u8>),
    Control {
        frames: FrameDecoder,
        settings: bool,
    },
    Drop(UniKind),
}

/// The gateway's unidirectional streams, by stream id.
#[derive(Debug, Default)]
pub struct UniStreams {
    streams: HashMap<u64, Uni>,
    control_seen: bool,
    goaway: bool,
}

impl UniStreams {
    /// Whether the gateway said GOAWAY.
    pub fn goaway(&self) -> bool {
        self.goaway
    }

    /// What stream `id` is.
    pub fn kind(&self, id: u64) -> UniKind {
        match self.streams.get(&id) {
            None | Some(Uni::Type(_)) => UniKind::Pending,
            Some(Uni::Control { .. }) => UniKind::Control,
            Some(Uni::Drop(kind)) => *kind,
        }
    }

    /// Reads the next bytes of stream `id`.
    pub fn handle(&mut self, id: u64, mut bytes: &[u8]) -> Result<(), H3Error> {
        let stream = self.streams.entry(id).or_insert(Uni::Type(Vec::new()));
        if let Uni::Type(head) = stream {
            let Some((&b, rest)) = bytes.split_first() else {
                return Ok(());
            };
            head.push(b);
            bytes = rest;
            while frame::read_varint(head).is_none() {
                let Some((&b, rest)) = bytes.split_first() else {
                    return Ok(());
                };
                head.push(b);
                bytes = rest;
            }
            let ty = frame::read_varint(head).map_or(0, |(t, _)| t);
            *stream = match ty {
                CONTROL_STREAM if self.control_seen => return Err(H3Error::ClosedCriticalStream),
                CONTROL_STREAM => {
                    self.control_seen = true;
                    Uni::Control {
                        frames: FrameDecoder::new(4096),
                        settings: false,
                    }
                }
                PUSH_STREAM => return Err(H3Error::UnexpectedPush),
                QPACK_ENCODER_STREAM => Uni::Drop(UniKind::QpackEncoder),
                QPACK_DECODER_STREAM => Uni::Drop(UniKind::QpackDecoder),
                other => Uni::Drop(UniKind::Unknown(other)),
            };
        }
        let goaway = &mut self.goaway;
        match stream {
            Uni::Control { frames, settings } => frames.feed(bytes, |f| match f {
                Frame::Whole { ty, payload } if ty == frame::SETTINGS && !*settings => {
                    frame::parse_settings(payload)?;
                    *settings = true;
                    Ok(())
                }
                _ if !*settings => Err(H3Error::MissingSettings),
                Frame::Whole { ty, payload } if ty == frame::GOAWAY => {
                    match frame::read_varint(payload) {
                        Some((_, n)) if n == payload.len() => {
                            *goaway = true;
                            Ok(())
                        }
                        _ => Err(H3Error::Malformed("GOAWAY")),
                    }
                }
                Frame::Whole { ty, .. } if ty == frame::CANCEL_PUSH => Ok(()),
                Frame::Whole { ty, .. } => Err(H3Error::FrameUnexpected(ty)),
                Frame::Data(_) => Err(H3Error::FrameUnexpected(frame::DATA)),
            }),
            Uni::Type(_) | Uni::Drop(_) => Ok(()),
        }
    }

    /// Stream `id` ended (or was reset): an error if it was the control stream.
    pub fn handle_end(&mut self, id: u64) -> Result<(), H3Error> {
        match self.streams.remove(&id) {
            Some(Uni::Control { .. }) => Err(H3Error::ClosedCriticalStream),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use pb_transport::RECORD_LEN;

    fn response(status: &str, records: &[Record]) -> Vec<u8> {
        let mut out = Vec::new();
        let section = qpack::encode(&[(":status", status), ("server", "nginx")]);
        frame::put_frame(&mut out, frame::HEADERS, &section);
        for r in records {
            crate::records::data_frame(&mut out, r);
        }
        out
    }

    #[test]
    fn the_opening_is_settings_and_a_post_to_the_path() {
        let o = opening("www.example.org", "/secret");
        assert_eq!(o.control[0], 0x00);
        assert_eq!(o.control[1], frame::SETTINGS as u8);
        assert_eq!(o.qpack_encoder, [0x02]);
        let mut headers = None;
        FrameDecoder::new(1000)
            .feed(&o.request, |f| {
                if let Frame::Whole { payload, .. } = f {
                    headers = Some(qpack::decode(payload, 1000)?);
                }
                Ok(())
            })
            .unwrap();
        let headers = headers.unwrap();
        assert!(headers.contains(&(b":method".to_vec(), b"POST".to_vec())));
        assert!(headers.contains(&(b":path".to_vec(), b"/secret".to_vec())));
        // The gateway's control stream would accept ours.
        let mut uni = UniStreams::default();
        uni.handle(3, &o.control).unwrap();
        assert_eq!(uni.kind(3), UniKind::Control);
    }

    #[test]
    fn a_200_carries_records_and_a_404_refuses() {
        let recs = [[1u8; RECORD_LEN], [2u8; RECORD_LEN]];
        let mut interim = Vec::new();
        frame::put_frame(
            &mut interim,
            frame::HEADERS,
            &qpack::encode(&[(":status", "103")]),
        );
        let mut bytes = interim;
        bytes.extend(response("200", &recs));
        let mut r = ResponseReader::new(MAX_FIELD_SECTION);
        let mut got = Vec::new();
        for piece in bytes.chunks(500) {
            r.handle(piece, |rec| got.push(*rec)).unwrap();
        }
        assert!(r.accepted());
        assert_eq!(got, recs);
        r.handle_fin().unwrap();

        let mut r = ResponseReader::new(MAX_FIELD_SECTION);
        r.handle(&response("404", &[[0; RECORD_LEN]]), |_| {
            unreachable!("a refused response carries no records")
        })
        .unwrap();
        assert_eq!(r.status(), Some(404));
        assert!(!r.accepted());
    }

    #[test]
    fn bad_responses_are_errors() {
        assert_eq!(
            crate::h3::parse_response(&response("2000", &[]), 7),
            Err(H3Error::BadStatus)
        );
        let mut data_first = Vec::new();
        frame::put_frame(&mut data_first, frame::DATA, b"x");
        assert_eq!(
            crate::h3::parse_response(&data_first, 7),
            Err(H3Error::FrameUnexpected(frame::DATA))
        );
        let mut cut = response("200", &[[0; RECORD_LEN]]);
        cut.truncate(cut.len() - 1);
        assert_eq!(
            crate::h3::parse_response(&cut, 100),
            Err(H3Error::CutRecord)
        );
        let mut settings = response("200", &[]);
        frame::put_frame(&mut settings, frame::SETTINGS, b"");
        assert_eq!(
            crate::h3::parse_response(&settings, 100),
            Err(H3Error::FrameUnexpected(frame::SETTINGS))
        );
    }

    #[test]
    fn the_control_stream_must_start_with_settings() {
        let mut goaway_first = vec![0x00];
        frame::put_frame(&mut goaway_first, frame::GOAWAY, &[0]);
        assert_eq!(
            crate::h3::parse_uni_stream(&goaway_first, 1),
            Err(H3Error::MissingSettings)
        );
        let mut ok = vec![0x00];
        frame::put_frame(&mut ok, frame::SETTINGS, &[0x01, 0x00]);
        frame::put_frame(&mut ok, frame::GOAWAY, &[0]);
        assert_eq!(crate::h3::parse_uni_stream(&ok, 2), Ok(UniKind::Control));
        assert_eq!(
            crate::h3::parse_uni_stream(&[0x01, 0x00], 1),
            Err(H3Error::UnexpectedPush)
        );
        assert_eq!(
            crate::h3::parse_uni_stream(&[0x40, 0x21, 9, 9], 1),
            Ok(UniKind::Unknown(0x21))
        );
        let mut uni = UniStreams::default();
        uni.handle(3, &ok).unwrap();
        assert!(uni.goaway());
        assert_eq!(uni.handle(7, &[0x00]), Err(H3Error::ClosedCriticalStream));
        assert_eq!(uni.handle_end(3), Err(H3Error::ClosedCriticalStream));
    }
}
