//! `Debug` of what carries a user's destination, data, session or token prints none of it,
//! so a `{:?}` in a log line or an error cannot leak it.
#![expect(clippy::unwrap_used, reason = "tests")]

use pb_proto::{
    frame::{Frame, StreamId},
    link,
    message::SessionId,
    socks::Target,
};
use pb_sphinx::MailboxId;

fn assert_scrubbed(printed: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            !printed.contains(secret),
            "{secret:?} appears in {printed:?}"
        );
    }
}

#[test]
fn targets_frames_tokens_sessions_and_mailboxes_print_scrubbed() {
    let name = Target::Name("secret-destination.example".into(), 8443);
    let v4 = Target::V4("203.0.113.77".parse().unwrap(), 8443);
    let v6 = Target::V6("2001:db8::7777".parse().unwrap(), 8443);
    let open = Frame::Open {
        stream: StreamId(3),
        target: name.clone(),
    };
    let data = Frame::Data {
        stream: StreamId(3),
        bytes: b"GET /private-path HTTP/1.1",
    };
    // A registration as sent and as parsed: the token does not print.
    let register = link::register(&[0xa7; 32]);
    let hello = format!("{register:?} {:?}", link::parse_request(&register).unwrap());
    let session = SessionId([0x5c; 16]);
    let mailbox = MailboxId([0x3e; 16]);
    let printed = format!(
        "{name:?} {v4:?} {v6:?} {open:?} {data:?} {hello} {session:?} {mailbox:?} {:#?}",
        (&name, &data)
    );
    assert_scrubbed(
        &printed,
        &[
            "secret-destination",
            "203.0.113.77",
            "2001:db8",
            "8443",
            "private-path",
            "a7",
            "167",
            "c5",
            "197",
            "5c",
            "92",
            "3e",
            "62",
        ],
    );
    assert!(printed.contains("[scrubbed]"), "{printed}");
    // What is not secret stays readable.
    assert!(printed.contains("StreamId(3)"), "{printed}");
    assert!(printed.contains("len: 26"), "{printed}");
}
