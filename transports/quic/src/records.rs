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

/// Collects a body's bytes into records.
#[derive(Debug)]
pub struct Reassembler {
    partial: Box<Record>,
    filled: usize,
}

impl Default for Reassembler {
    fn default() -> Self {
        Self {
            partial: Box::new([0; RECORD_LEN]),
            filled: 0,
        }
    }
}

impl Reassembler {
    /// Takes the next piece of the body; hands each record it completes to `out`.
    pub fn push(&mut self, mut body: &[u8], mut out: impl FnMut(&Record)) {
        while !body.is_empty() {
            let n = (RECORD_LEN - self.filled).min(body.len());
            self.partial[self.filled..self.filled + n].copy_from_slice(&body[..n]);
            self.filled += n;
            body = &body[n..];
            if self.filled == RECORD_LEN {
                out(&self.partial);
                self.filled = 0;
            }
        }
    }

    /// Bytes of a record begun and not finished (a body that ends here was cut short).
    pub fn pending(&self) -> usize {
        self.filled
    }
}

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
    fn records_come_back_whole_and_in_order_from_any_cut() {
        let sent: Vec<Record> = (0..7).map(record).collect();
        let body: Vec<u8> = sent.iter().flatten().copied().collect();
        for step in [1, 100, 1451, 1452, 1453, 5000, body.len()] {
            let mut r = Reassembler::default();
            let mut got = Vec::new();
            for piece in body.chunks(step) {
                r.push(piece, |rec| got.push(*rec));
            }
            assert_eq!(got, sent, "cut every {step} bytes");
            assert_eq!(r.pending(), 0);
        }
        let mut r = Reassembler::default();
        r.push(&body[..10], |_| unreachable!("no whole record yet"));
        assert_eq!(r.pending(), 10);
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
