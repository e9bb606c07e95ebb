//! The WebSocket after the upgrade: tungstenite's protocol state over an in-memory stream, so
//! that it reads only bytes it is handed and writes only into a buffer the caller takes.

use std::{
    collections::VecDeque,
    io::{self, Read, Write},
};

use pb_transport::{RECORD_LEN, Record};
use tungstenite::{
    Message,
    protocol::{CloseFrame, Role, WebSocketConfig, WebSocketContext, frame::coding::CloseCode},
};

/// The bytes tungstenite reads from and writes to.
#[derive(Debug, Default)]
struct MemStream {
    input: VecDeque<u8>,
    output: Vec<u8>,
}

impl Read for MemStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.input.is_empty() {
            // Nothing more yet: never end-of-stream, the TCP driver says when that comes.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.input.read(buf)
    }
}

impl Write for MemStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Why a WebSocket stopped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    /// The peer sent a close frame (the normal end).
    #[error("the peer closed the WebSocket")]
    Closed,
    /// The peer broke RFC 6455 (unmasked client frame, masked server frame, bad opcode,
    /// oversized frame, ...).
    #[error("WebSocket protocol error: {0}")]
    Protocol(String),
    /// A message that is not one binary record of the right size.
    #[error("a message that is not a {RECORD_LEN}-byte binary record")]
    NotARecord,
}

/// One end of a WebSocket carrying records.
pub(crate) struct WsSession {
    ctx: WebSocketContext,
    stream: MemStream,
}

impl core::fmt::Debug for WsSession {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("WsSession").finish_non_exhaustive()
    }
}

impl WsSession {
    /// A WebSocket for `role`; frames larger than a record are refused before they are read.
    pub(crate) fn new(role: Role) -> Self {
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0)
            .max_message_size(Some(RECORD_LEN))
            .max_frame_size(Some(RECORD_LEN))
            .accept_unmasked_frames(false);
        Self {
            ctx: WebSocketContext::new(role, Some(config)),
            stream: MemStream::default(),
        }
    }

    /// Hands over bytes from the peer; pushes each complete record to `records`.
    /// Control frames are answered (pong, close reply) into the output.
    pub(crate) fn handle_input(
        &mut self,
        bytes: &[u8],
        mut records: impl FnMut(Record),
    ) -> Result<(), WsError> {
        self.stream.input.extend(bytes);
        loop {
            match self.ctx.read(&mut self.stream) {
                Ok(Message::Binary(data)) => match <Record>::try_from(&data[..]) {
                    Ok(record) => records(record),
                    Err(_) => return Err(WsError::NotARecord),
                },
                Ok(Message::Ping(_) | Message::Pong(_)) => {}
                Ok(Message::Close(_)) => {
                    // The reply is queued; let it out.
                    let _ = self.ctx.flush(&mut self.stream);
                    return Err(WsError::Closed);
                }
                Ok(Message::Text(_) | Message::Frame(_)) => return Err(WsError::NotARecord),
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(());
                }
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return Err(WsError::Closed);
                }
                Err(e) => return Err(WsError::Protocol(e.to_string())),
            }
        }
    }

    /// Queues `record` as one binary message.
    pub(crate) fn send(&mut self, record: &Record) -> Result<(), WsError> {
        let message = Message::Binary(tungstenite::Bytes::copy_from_slice(record));
        self.ctx
            .write(&mut self.stream, message)
            .and_then(|()| self.ctx.flush(&mut self.stream))
            .map_err(|e| WsError::Protocol(e.to_string()))
    }

    /// Starts the closing handshake with a normal close (1000).
    pub(crate) fn close(&mut self) {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        // An error only says the WebSocket is closed already.
        let _ = self.ctx.close(&mut self.stream, Some(frame));
    }

    /// Whether records can still be sent.
    pub(crate) fn can_write(&self) -> bool {
        self.ctx.can_write()
    }

    /// Takes the bytes to send to the peer.
    pub(crate) fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.stream.output)
    }
}
