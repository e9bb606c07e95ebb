use proptest::prelude::*;

use super::*;

fn records(messages: &[Message]) -> Vec<[u8; PLAIN_LEN]> {
    let mut p = Packer::new(usize::MAX);
    for m in messages {
        assert!(p.push(m.clone(), false));
    }
    let mut out = Vec::new();
    loop {
        let mut body = [0u8; PLAIN_LEN];
        if !p.fill(&mut body) {
            return out;
        }
        out.push(body);
    }
}

fn unpack(records: &[(u64, [u8; PLAIN_LEN])]) -> (Vec<Message>, Unpacker) {
    let mut u = Unpacker::default();
    let mut got = Vec::new();
    for (counter, body) in records {
        u.take(*counter, body, |m| got.push(m));
    }
    (got, u)
}

fn message(kind: u8, len: usize) -> Message {
    Message {
        kind,
        body: (0..len)
            .map(|i| (i * 7 + usize::from(kind)) as u8)
            .collect(),
    }
}

#[test]
fn messages_span_records_and_a_lost_record_loses_only_what_it_carried() {
    let sent = vec![
        message(1, 2000),
        message(2, 10),
        message(3, 1200),
        message(4, 0),
    ];
    let bodies = records(&sent);
    assert_eq!(
        bodies.len(),
        3,
        "3225 bytes of stream in records of {STREAM_LEN}"
    );
    let all: Vec<_> = bodies
        .iter()
        .copied()
        .enumerate()
        .map(|(i, b)| (i as u64, b))
        .collect();
    assert_eq!(unpack(&all).0, sent);
    // Record 1 lost: message 1 (ends in it), 2 (in it) and 3 (starts in it) are gone;
    // record 2 resynchronises at message 4.
    let lossy = vec![all[0], all[2]];
    let (got, u) = unpack(&lossy);
    assert_eq!(got, vec![message(4, 0)]);
    assert_eq!(u.desync, 0);
    // Late: a record older than one taken is dropped.
    let (got, u) = unpack(&[all[1], all[0]]);
    assert_eq!(
        got,
        vec![message(2, 10)],
        "record 1 alone carries message 2 whole"
    );
    assert_eq!(u.late, 1);
}

#[test]
fn an_empty_packer_pads_and_refuses_what_it_cannot_carry() {
    let mut p = Packer::new(100);
    let mut body = [9u8; PLAIN_LEN];
    assert!(!p.fill(&mut body));
    assert_eq!(&body[..2], &[0xFF, 0xFF]);
    assert!(body[2..].iter().all(|b| *b == 0));
    assert!(!p.push(message(0, 1), false), "kind 0 is padding");
    assert!(!p.push(message(1, 98), false), "over the queue's bytes");
    assert!(p.push(message(1, 97), false));
    // Urgent messages go first.
    let mut p = Packer::new(usize::MAX);
    assert!(p.push(message(1, 5), false) && p.push(message(2, 5), true));
    let (got, _) = unpack(&[(0, records_of(&mut p))]);
    assert_eq!(got, vec![message(2, 5), message(1, 5)]);
}

fn records_of(p: &mut Packer) -> [u8; PLAIN_LEN] {
    let mut body = [0u8; PLAIN_LEN];
    p.fill(&mut body);
    body
}

proptest! {
    #[test]
    fn what_is_packed_comes_out_and_losses_only_remove(
        sizes in proptest::collection::vec((1u8..=255, 0usize..3000), 0..20),
        lost in proptest::collection::vec(any::<bool>(), 0..40),
    ) {
        let sent: Vec<Message> = sizes.iter().map(|(k, n)| message(*k, *n)).collect();
        let bodies = records(&sent);
        let all: Vec<_> = bodies.iter().copied().enumerate().map(|(i, b)| (i as u64, b)).collect();
        prop_assert_eq!(&unpack(&all).0, &sent);
        let kept: Vec<_> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| !lost.get(*i).copied().unwrap_or(false))
            .map(|(_, r)| *r)
            .collect();
        let (got, u) = unpack(&kept);
        prop_assert_eq!(u.desync, 0);
        // What arrives is what was sent, in order, with some left out.
        let mut rest = sent.iter();
        for m in &got {
            prop_assert!(rest.any(|s| s == m));
        }
    }

    #[test]
    fn any_body_unpacks_without_panicking(
        bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), PLAIN_LEN), 1..4),
        start in any::<u64>(),
    ) {
        let mut u = Unpacker::default();
        for (i, b) in bodies.iter().enumerate() {
            let body: [u8; PLAIN_LEN] = b.as_slice().try_into().unwrap();
            u.take(start.saturating_add(i as u64), &body, |m| assert!(m.body.len() <= MAX_MESSAGE));
        }
    }
}
