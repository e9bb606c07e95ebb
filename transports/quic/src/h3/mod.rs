//! The HTTP/3 a client needs for one long request (RFC 9114, RFC 9204), sans-IO: frames,
//! QPACK without a dynamic table, and the client's view of its streams. Bytes in, bytes
//! and records out; no sockets, no clock.
//!
//! The gateway side does not use this module: quiche's own `h3` module is the server.

pub mod client;
pub mod frame;
pub mod qpack;

/// Why a peer's HTTP/3 bytes were refused. Each maps to an HTTP/3 error code
/// ([`H3Error::code`]) for closing the connection the way RFC 9114 §8 asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum H3Error {
    /// A frame of a type not allowed on this stream (or an HTTP/2 type).
    #[error("a frame of type {0:#x} where it is not allowed")]
    FrameUnexpected(u64),
    /// A HEADERS, SETTINGS or other small frame larger than we take.
    #[error("a frame of type {0:#x} larger than we accept")]
    FrameTooLarge(u64),
    /// A frame whose payload does not parse.
    #[error("a malformed {0} frame")]
    Malformed(&'static str),
    /// The peer's control stream did not begin with SETTINGS.
    #[error("the control stream did not begin with SETTINGS")]
    MissingSettings,
    /// The peer opened a second control stream, or ended one.
    #[error("a control stream was repeated or ended")]
    ClosedCriticalStream,
    /// The peer opened a push stream, which we never allowed.
    #[error("a push stream we never allowed")]
    UnexpectedPush,
    /// The response's field section lacks a valid `:status`.
    #[error("a response without a valid :status")]
    BadStatus,
    /// A field section that QPACK cannot decode without a dynamic table.
    #[error("a field section: {0}")]
    Qpack(QpackError),
    /// The response body ended inside a record (or inside a frame).
    #[error("the body ended inside a record")]
    CutRecord,
}

impl H3Error {
    /// The HTTP/3 error code to close the connection with (RFC 9114 §8.1, RFC 9204 §6).
    pub fn code(self) -> u64 {
        match self {
            Self::FrameUnexpected(_) => 0x105,
            Self::FrameTooLarge(_) => 0x107,
            Self::Malformed(_) => 0x106,
            Self::MissingSettings => 0x10a,
            Self::ClosedCriticalStream => 0x104,
            Self::UnexpectedPush => 0x103,
            Self::BadStatus | Self::CutRecord => 0x101,
            Self::Qpack(_) => 0x200,
        }
    }
}

/// What is wrong with a QPACK field section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QpackError {
    /// It ends inside a field line.
    #[error("truncated")]
    Truncated,
    /// An integer does not fit 62 bits.
    #[error("an integer too large")]
    IntegerOverflow,
    /// It refers to a dynamic table, which we announced we do not keep.
    #[error("a dynamic table reference")]
    DynamicTable,
    /// A static table index past its end.
    #[error("a static index out of range")]
    BadStaticIndex,
    /// A Huffman-coded string that does not decode.
    #[error("a bad Huffman string")]
    Huffman,
    /// Names and values larger than we take.
    #[error("larger than we accept")]
    TooLarge,
}

/// What [`parse_response`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ParsedResponse {
    /// The final status, once its HEADERS came.
    pub status: Option<u16>,
    /// Records in the body.
    pub records: usize,
}

/// Reads `bytes` as a whole response stream, given in pieces of `step` bytes, then its end.
/// The entry point for fuzzing the client's parser of what a gateway sends on the request
/// stream; errors are answers, never panics.
pub fn parse_response(bytes: &[u8], step: usize) -> Result<ParsedResponse, H3Error> {
    let mut reader = client::ResponseReader::new(client::MAX_FIELD_SECTION);
    let mut records = 0;
    for piece in bytes.chunks(step.max(1)) {
        reader.handle(piece, |_| records += 1)?;
    }
    reader.handle_fin()?;
    Ok(ParsedResponse {
        status: reader.status(),
        records,
    })
}

/// Reads `bytes` as one unidirectional stream the gateway opened (control, QPACK, or an
/// unknown type), in pieces of `step` bytes. The fuzzing entry point for those streams.
pub fn parse_uni_stream(bytes: &[u8], step: usize) -> Result<client::UniKind, H3Error> {
    let mut streams = client::UniStreams::default();
    for piece in bytes.chunks(step.max(1)) {
        streams.handle(0, piece)?;
    }
    Ok(streams.kind(0))
}
