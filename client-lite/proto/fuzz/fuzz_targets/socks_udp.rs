//! Any datagram an application sends to the SOCKS5 UDP relay port: a typed error, or a
//! destination and data that encode back to the same bytes; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pb_proto::socks_udp;

fuzz_target!(|data: &[u8]| {
    if let Ok((target, payload)) = socks_udp::parse(data) {
        let mut out = Vec::new();
        assert!(socks_udp::encode(&target, payload, &mut out).is_ok());
        assert_eq!(out, data);
    }
});
