//! Records in an HTTP/3 body, sans-IO.
//!
//! Each direction of the link request's body is the records one after another, nothing
//! between them: a body's length is always a whole number of records, however the sender
//! cut it into DATA frames. [`Reassembler`] turns body bytes, in pieces of any size, back
//! into records. The client sends each record as one DATA frame ([`data_frame`]); quiche's
//! `send_body` on the gateway cuts as flow control allows.

use pb_transport::{RECORD_LEN, Record};

use crate::h3::frame;

/// Bytes of one record's DATA frame: type (1), length (2, a varint of 1452) and the record.
pub const DATA_FRAME_LEN: usize = 3 + RECORD_LEN;

/// Appends `record` as one DATA frame.
pub fn data_frame(out: &mut Vec<u8>, record: &Record) {
    frame::put_frame_header(out, frame::DATA, RECORD_LEN);
    out.extend_from_slice(record);
}

/// Collects a body's bytes into records (the stream transports' own).
pub use pb_transport::Reassembler;

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: usize) -> Record {
        let mut r = [0u8; RECORD_LEN];
        for (j, b) in r.iter_mut().enumerate() {
            *b = (i * 31 + j) as u8;
        }
        r
    }

    #[test]
    fn a_data_frame_is_three_bytes_of_header_and_the_record() {
        let mut out = Vec::new();
        data_frame(&mut out, &record(1));
        assert_eq!(out.len(), DATA_FRAME_LEN);
        assert_eq!(&out[..3], &[0x00, 0x45, 0xac]);
        assert_eq!(&out[3..], &record(1)[..]);
    }
}
