//! Any datagram an application sends to port 53: no answer, an answer at once that is a
//! DNS response with the query's id, or a question for the exit whose answers are such
//! responses too; never a panic.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use pb_proto::dns::{self, Asked};

fuzz_target!(|data: &[u8]| {
    let answers = match dns::read(data) {
        Err(_) => return,
        Ok(Asked::Answer(answer)) => vec![answer],
        Ok(Asked::Resolve(question)) => {
            assert!(!question.name.is_empty() && question.name.len() <= 255);
            let addresses = [
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ];
            vec![
                question.answer(&addresses),
                question.no_such_name(),
                question.failed(),
            ]
        }
    };
    for answer in answers {
        assert_eq!(answer[..2], data[..2], "the query's id");
        assert!(answer[2] & 0x80 != 0, "a response");
    }
});
