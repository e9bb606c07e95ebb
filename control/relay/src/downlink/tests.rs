#![expect(clippy::unwrap_used, reason = "tests")]

use super::*;

const CLIENT: MailboxId = MailboxId([7; 16]);

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 2], port))
}

/// Bytes 2 to 17 of the test's data (padding has random bytes there).
const MARK: [u8; 16] = [0xd7; 16];

fn data(tag: u8) -> Datagram {
    let mut d = Box::new([0u8; PACKET_LEN]);
    d[0] = link::REPLY;
    d[1] = tag;
    d[2..18].copy_from_slice(&MARK);
    d
}

/// What a datagram sent was: its kind byte, and the test's tag if it is data.
type Seen = (u8, Option<u8>);

/// Polls every `step` ns from `from` to `to`, pushing `arrivals` (time, tag) as their time
/// comes; every datagram sent as (poll time, what it was).
fn run(
    down: &mut Downlink,
    from: u64,
    to: u64,
    step: u64,
    arrivals: &[(u64, u8)],
) -> Vec<(u64, Seen)> {
    let mut sent = Vec::new();
    let mut next = 0;
    let mut t = from;
    while t < to {
        while next < arrivals.len() && arrivals[next].0 <= t {
            down.push(&CLIENT, data(arrivals[next].1)).unwrap();
            next += 1;
        }
        down.poll(Time(t), |to, d| {
            assert_eq!(to, addr(1));
            let tag = (d[2..18] == MARK).then_some(d[1]);
            sent.push((t, (d[0], tag)));
        });
        t += step;
    }
    sent
}

#[test]
fn busy_and_idle_send_the_same_datagrams_at_the_same_times() {
    let start = Time(Time::SECOND);
    let mut times = Vec::new();
    for busy in [false, true] {
        let mut down = Downlink::new(16, &[1; 32]);
        assert_eq!(down.register(CLIENT, addr(1), 100, true, start), Some(100));
        // Busy: 300 replies in a burst at 2 s and a trickle after; idle: none.
        let arrivals: Vec<(u64, u8)> = if busy {
            (0..300u64)
                .map(|i| (2 * Time::SECOND + (i % 200) * 7 * Time::MS, 1))
                .collect::<Vec<_>>()
                .into_iter()
                .chain((0..50).map(|i| (5 * Time::SECOND + i * 61 * Time::MS, 2)))
                .collect()
        } else {
            Vec::new()
        };
        let mut arrivals = arrivals;
        arrivals.sort_unstable();
        let sent = run(
            &mut down,
            start.0,
            11 * Time::SECOND,
            3 * Time::MS,
            &arrivals,
        );
        let data = sent.iter().filter(|(_, (_, tag))| tag.is_some()).count();
        // Padding looks like a reply on the wire.
        assert!(sent.iter().all(|(_, (kind, _))| *kind == link::REPLY));
        assert_eq!(data, if busy { 350 } else { 0 });
        // Exactly the rate in every second, and nothing missed.
        for second in 1..11 {
            let n = sent
                .iter()
                .filter(|(t, _)| t / Time::SECOND == second)
                .count();
            assert!((99..=101).contains(&n), "second {second}: {n}");
        }
        assert_eq!(down.stats().missed, 0);
        assert_eq!(down.stats().sent, sent.len() as u64);
        times.push(sent.iter().map(|(t, _)| *t).collect::<Vec<_>>());
    }
    assert_eq!(
        times[0], times[1],
        "the downlink's timing depends on its content"
    );
}

#[test]
fn nothing_goes_to_an_address_that_did_not_echo_the_cookie() {
    let mut down = Downlink::new(16, &[1; 32]);
    // A hello without a valid cookie (a spoofed source looks like this): nothing is kept,
    // nothing sent but the one answer.
    assert_eq!(
        down.register(CLIENT, addr(1), 1000, false, Time(0)),
        Some(1000)
    );
    assert!(down.is_empty());
    assert_eq!(down.push(&CLIENT, data(1)), Err(Refused::NoMailbox));
    assert!(run(&mut down, 0, 5 * Time::SECOND, Time::MS, &[]).is_empty());
    assert_eq!(down.next_due(), None);
    assert!(down.answer(addr(1), data(9), Time(0)).is_some());
    // The echo creates the mailbox and starts the downlink.
    down.register(CLIENT, addr(1), 1000, true, Time(5 * Time::SECOND));
    down.push(&CLIENT, data(1)).unwrap();
    let sent = run(&mut down, 5 * Time::SECOND, 6 * Time::SECOND, Time::MS, &[]);
    assert_eq!(sent[0].1, (link::REPLY, Some(1)));
    // It stops when no echo came for VERIFIED_FOR, and restarts with the next.
    let end = 5 * Time::SECOND + VERIFIED_FOR;
    let sent = run(
        &mut down,
        6 * Time::SECOND,
        end + 10 * Time::SECOND,
        Time::MS,
        &[],
    );
    assert!(
        sent.iter().all(|(t, _)| *t < end),
        "sent after the proof expired"
    );
    assert_eq!(sent.len() as u64, (end - 6 * Time::SECOND) / Time::MS);
    // A new address must prove itself first: until it echoes its cookie, a running
    // downlink stays where it is (a hello replayed from elsewhere cannot move or stop it).
    let t = end + 10 * Time::SECOND;
    down.register(CLIENT, addr(1), 1000, true, Time(t));
    down.register(CLIENT, addr(2), 1000, false, Time(t + Time::SECOND));
    let mut to = Vec::new();
    down.poll(Time(t + 2 * Time::SECOND), |a, _| to.push(a));
    assert!(!to.is_empty() && to.iter().all(|a| *a == addr(1)), "{to:?}");
    assert!(
        down.answer(addr(2), data(9), Time(t + 2 * Time::SECOND))
            .is_some(),
        "the new address gets its welcome at once"
    );
    down.register(CLIENT, addr(2), 1000, true, Time(t + 3 * Time::SECOND));
    let mut to = Vec::new();
    down.poll(Time(t + 4 * Time::SECOND), |a, _| to.push(a));
    assert!(!to.is_empty() && to.iter().all(|a| *a == addr(2)), "{to:?}");
    // A mailbox whose downlink stopped follows a new address at once (and waits there for
    // the echo).
    let later = t + 4 * Time::SECOND + 2 * VERIFIED_FOR;
    down.poll(Time(later), |_, _| {});
    down.register(CLIENT, addr(3), 1000, false, Time(later));
    let mut to = Vec::new();
    down.poll(Time(later + Time::SECOND), |a, _| to.push(a));
    assert!(to.is_empty(), "{to:?}");
    assert!(
        down.answer(addr(3), data(9), Time(later)).is_some(),
        "answered at once while its downlink waits"
    );
}

#[test]
fn a_rate_changes_only_after_it_was_held() {
    let mut down = Downlink::new(16, &[1; 32]);
    assert_eq!(down.register(CLIENT, addr(1), 50, true, Time(0)), Some(50));
    let ms = Time::MS;
    let mut sent = run(&mut down, 0, 10 * Time::SECOND, ms, &[]);
    // Asked again 10 s on: refused, the old rate holds.
    assert_eq!(
        down.register(CLIENT, addr(1), 200, true, Time(10 * Time::SECOND)),
        Some(50)
    );
    sent.extend(run(
        &mut down,
        10 * Time::SECOND,
        40 * Time::SECOND,
        ms,
        &[],
    ));
    // Hellos keep coming (they keep the downlink running): still refused.
    assert_eq!(
        down.register(CLIENT, addr(1), 200, true, Time(40 * Time::SECOND)),
        Some(50)
    );
    sent.extend(run(&mut down, 40 * Time::SECOND, RATE_HOLD, ms, &[]));
    // After RATE_HOLD the step is taken.
    assert_eq!(
        down.register(CLIENT, addr(1), 200, true, Time(RATE_HOLD)),
        Some(200)
    );
    sent.extend(run(
        &mut down,
        RATE_HOLD,
        RATE_HOLD + 2 * Time::SECOND,
        ms,
        &[],
    ));
    let in_second = |s: u64| sent.iter().filter(|(t, _)| t / Time::SECOND == s).count();
    assert_eq!(in_second(11), 50);
    assert_eq!(in_second(59), 50);
    assert_eq!(in_second(61), 200);
    assert_eq!(down.stats().missed, 0);
    // 0 is the default, and no client gets more than the most.
    assert_eq!(granted(0), DEFAULT_RATE);
    assert_eq!(granted(u16::MAX), MAX_RATE);
}

#[test]
fn answers_take_the_next_slot_and_queues_are_bounded() {
    let mut down = Downlink::new(1, &[1; 32]);
    down.register(CLIENT, addr(1), 100, true, Time(0));
    for i in 0..QUEUE_DEPTH {
        down.push(&CLIENT, data(i as u8)).unwrap();
    }
    assert_eq!(down.push(&CLIENT, data(0)), Err(Refused::Full));
    assert_eq!(
        down.push(&MailboxId([1; 16]), data(0)),
        Err(Refused::NoMailbox)
    );
    let mut answer = data(0);
    answer[0] = link::DIR_PAGE;
    // The queue is full: the answer comes back to be sent at once.
    assert!(down.answer(addr(1), answer.clone(), Time(0)).is_some());
    let sent = run(&mut down, 0, 20 * Time::MS, Time::MS, &[]);
    assert_eq!(sent.len(), 2);
    assert!(down.answer(addr(1), answer, Time(20 * Time::MS)).is_none());
    let sent = run(&mut down, 20 * Time::MS, 21 * Time::MS, Time::MS, &[]);
    assert_eq!(sent[0].1, (link::DIR_PAGE, Some(0)));
    // Expiry gives the queued datagrams' room back.
    down.expire(Time(Time::SECOND));
    assert!(down.is_empty());
    assert_eq!(down.queued, 0);
    assert!(down.next_due().is_some());
    let mut after = 0;
    down.poll(Time(2 * Time::SECOND), |_, _| after += 1);
    assert_eq!(after, 0);
}

/// A flood of hellos from spoofed sources fills nothing; a full table of verified
/// mailboxes makes room by forgetting the one heard from longest ago, with its queue.
#[test]
fn spoofed_hellos_fill_nothing_and_a_full_table_forgets_the_oldest() {
    let mut down = Downlink::new(3, &[1; 32]);
    for i in 0..10_000u16 {
        let mut id = [0u8; 16];
        id[..2].copy_from_slice(&i.to_be_bytes());
        down.register(MailboxId(id), addr(i), 100, false, Time(0));
    }
    assert!(down.is_empty());
    for (i, at) in [(1u8, 1), (2, 2), (3, 3)] {
        down.register(MailboxId([i; 16]), addr(u16::from(i)), 100, true, Time(at));
        down.push(&MailboxId([i; 16]), data(i)).unwrap();
    }
    // Mailbox 1 speaks again: 2 is now the one heard from longest ago.
    down.register(MailboxId([1; 16]), addr(1), 100, true, Time(4));
    down.register(MailboxId([4; 16]), addr(4), 100, true, Time(5));
    assert_eq!(down.len(), 3);
    assert_eq!(down.stats().evicted, 1);
    assert_eq!(
        down.push(&MailboxId([2; 16]), data(2)),
        Err(Refused::NoMailbox)
    );
    assert_eq!(down.queued, 2, "the evicted mailbox's queue is gone");
    for kept in [1u8, 3, 4] {
        down.push(&MailboxId([kept; 16]), data(kept)).unwrap();
    }
}
