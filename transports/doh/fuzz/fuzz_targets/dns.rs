//! Any bytes into pb-doh's parsers: errors and refusals are fine, panics are not. The first
//! byte picks the mode:
//! - 0: a datagram to the gateway's name server (`Authority::answer`), then a session query
//!   made of the rest, so the session path (name decoding, chunks) sees the bytes too;
//! - 1: an answer to the client (`DohClient::answer`), raw and wrapped in a TXT answer to a
//!   query of the client's own;
//! - 2: chunks to reassemble (`wire::Assembler`).
#![no_main]

use std::time::Instant;

use hickory_proto::{
    op::{Message, OpCode},
    rr::{RData, Record, rdata::TXT},
};
use libfuzzer_sys::fuzz_target;
use pb_doh::{Authority, DohClient, SessionKey, Zone, wire};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(zone) = Zone::parse("t.pb.test") else {
        return;
    };
    let key = SessionKey::derive(&[7; 32], &zone);
    let now = Instant::now();
    match mode % 3 {
        0 => {
            let mut server =
                Authority::new(zone.clone(), key.clone()).with_ns_address([192, 0, 2, 53].into());
            if let Some(answer) = server.answer(rest, now) {
                assert!(answer.len() <= pb_doh::MAX_RESPONSE.max(512));
            }
            // The same bytes as a session's chunks, in a query the server takes.
            let mut client = DohClient::new(zone, key.session_id([1, 2, 3, 4]));
            let mut feed = rest.to_vec();
            let mut pad = move |b: &mut [u8]| {
                for (d, s) in b.iter_mut().zip(feed.drain(..)) {
                    *d = s;
                }
            };
            let query = client.query(&mut pad);
            let _ = server.answer(&query, now);
            while server.recv().is_some() {}
        }
        1 => {
            let mut client = DohClient::new(zone, key.session_id([1, 2, 3, 4]));
            let _ = client.answer(rest);
            let query = client.query(&mut |b: &mut [u8]| b.fill(0));
            if let Ok(q) = Message::from_vec(&query) {
                let mut a = Message::response(0, OpCode::Query);
                a.add_query(q.queries[0].clone());
                let strings: Vec<&[u8]> = rest.chunks(255).collect();
                a.add_answer(Record::from_rdata(
                    q.queries[0].name.clone(),
                    0,
                    RData::TXT(TXT::from_bytes(strings)),
                ));
                if let Ok(bytes) = a.to_vec() {
                    let _ = client.answer(&bytes);
                }
            }
            while client.recv().is_some() {}
        }
        _ => {
            let mut assembler = wire::Assembler::default();
            for piece in rest.split(|b| *b == 0xfe) {
                assembler.take_all(piece);
            }
            while assembler.pop().is_some() {}
        }
    }
});
