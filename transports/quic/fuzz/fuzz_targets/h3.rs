//! Any bytes as what a gateway (or anyone answering in its place) sends a client: the
//! response on the link request's stream, one of its unidirectional streams, or a QPACK
//! field section. The first byte picks which, the second how the bytes are cut into
//! pieces. Errors are fine, panics are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pb_quic::h3::{parse_response, parse_uni_stream, qpack};

fuzz_target!(|data: &[u8]| {
    let [which, step, rest @ ..] = data else {
        return;
    };
    let step = usize::from(*step) + 1;
    match which % 3 {
        0 => {
            let _ = parse_response(rest, step);
        }
        1 => {
            let _ = parse_uni_stream(rest, step);
        }
        _ => {
            let _ = qpack::decode(rest, 16 * 1024);
        }
    }
});
