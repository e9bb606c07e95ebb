//! Any bytes from an application, split anywhere, into a SOCKS5 handshake: it must answer,
//! connect at most once and close on bad input, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pb_proto::{Action, Socks};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };
    let cut = usize::from(cut).min(bytes.len());
    let mut socks = Socks::new();
    let mut actions = socks.input(&bytes[..cut]);
    actions.extend(socks.input(&bytes[cut..]));
    let connects = actions
        .iter()
        .filter(|a| matches!(a, Action::Connect { .. }))
        .count();
    assert!(connects <= 1);
    if let Some(i) = actions.iter().position(|a| *a == Action::Close) {
        assert_eq!(i, actions.len() - 1, "nothing after a close");
    }
});
