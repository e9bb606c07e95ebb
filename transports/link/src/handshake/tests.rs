use super::*;

fn key(n: u8) -> GatewayKey {
    GatewayKey::from_secret([n; 32])
}

const RATES: Rates = Rates { down: 100, up: 64 };

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Runs a handshake through the cookie round; both sessions.
fn handshake(h: &Handshaker, source: SocketAddr, now: Duration) -> (Session, Session) {
    let (i, init) = Initiator::new(&h.public(), RATES, [1; NONCE]).unwrap();
    let Greeting::Cookie(reply) = h.greet(now, source, &init, [2; NONCE]) else {
        panic!("the first init gets a cookie");
    };
    let (Some(i), Answer::Again(init)) = i.handle(&reply, [3; NONCE]) else {
        panic!("the cookie is taken");
    };
    let Greeting::Accepted(accepted) = h.greet(now, source, &init, [4; NONCE]) else {
        panic!("an init with its cookie is accepted");
    };
    assert_eq!(accepted.asked, RATES);
    let (response, gateway) = accepted
        .accept(Rates { down: 50, up: 64 }, [5; NONCE])
        .unwrap();
    let (None, Answer::Open(client, granted)) = i.handle(&response, [6; NONCE]) else {
        panic!("the response opens the session");
    };
    assert_eq!(granted, Rates { down: 50, up: 64 });
    (client, gateway)
}

#[test]
fn a_handshake_gives_sessions_that_talk_both_ways_once() {
    let h = Handshaker::new(key(7), [9; 32]);
    let (mut c, mut g) = handshake(&h, addr("192.0.2.1:5000"), Duration::from_secs(100));
    let body = [0xA5; crate::record::PLAIN_LEN];
    let up = c.seal(&body);
    assert_eq!(&g.open(&up).unwrap().1[..], &body[..]);
    assert!(g.open(&up).is_none(), "a replayed record is refused");
    let down = g.seal(&body);
    assert_eq!(c.open(&down).unwrap().0, 0);
    let own = c.seal(&body);
    assert!(
        c.open(&own).is_none(),
        "a record does not open in its own direction"
    );
    // Reordered within the window: taken; a flipped bit anywhere: refused.
    let (a, b) = (c.seal(&body), c.seal(&body));
    assert!(g.open(&b).is_some() && g.open(&a).is_some());
    for at in [0, 7, 8, 100, crate::RECORD_LEN - 1] {
        let mut bad = c.seal(&body);
        bad[at] ^= 1;
        assert!(g.open(&bad).is_none(), "a flipped bit at {at} is refused");
    }
}

#[test]
fn records_far_behind_the_window_are_refused() {
    let h = Handshaker::new(key(7), [9; 32]);
    let (mut c, mut g) = handshake(&h, addr("192.0.2.1:5000"), Duration::ZERO);
    let body = [0; crate::record::PLAIN_LEN];
    let old = c.seal(&body);
    for _ in 0..crate::record::WINDOW {
        let r = c.seal(&body);
        assert!(g.open(&r).is_some());
    }
    assert!(g.open(&old).is_none(), "older than the window");
    let recent = c.seal(&body);
    let newest = c.seal(&body);
    assert!(g.open(&newest).is_some() && g.open(&recent).is_some());
}

#[test]
fn strangers_get_nothing() {
    let h = Handshaker::new(key(7), [9; 32]);
    let now = Duration::from_secs(5);
    let source = addr("192.0.2.1:5000");
    // Random bytes, zeros, and an init made for another gateway's key.
    let mut random = [0u8; RECORD_LEN];
    blake3::Hasher::new()
        .update(b"random")
        .finalize_xof()
        .fill(&mut random);
    let (_, other) = Initiator::new(&key(8).public(), RATES, [1; NONCE]).unwrap();
    for record in [random, [0; RECORD_LEN], other] {
        assert!(matches!(
            h.greet(now, source, &record, [0; NONCE]),
            Greeting::Stranger
        ));
    }
    // An init altered anywhere.
    let (_, init) = Initiator::new(&h.public(), RATES, [1; NONCE]).unwrap();
    for at in [
        0,
        15,
        16,
        17,
        40,
        120,
        140,
        1000,
        RECORD_LEN - 17,
        RECORD_LEN - 1,
    ] {
        let mut bad = init;
        bad[at] ^= 0x10;
        assert!(
            matches!(h.greet(now, source, &bad, [0; NONCE]), Greeting::Stranger),
            "flipped at {at}"
        );
    }
}

#[test]
fn a_cookie_is_good_only_for_its_address_and_two_periods() {
    let h = Handshaker::new(key(7), [9; 32]);
    let a = addr("192.0.2.1:5000");
    let t = Duration::from_secs(600);
    let (i, init) = Initiator::new(&h.public(), RATES, [1; NONCE]).unwrap();
    let Greeting::Cookie(reply) = h.greet(t, a, &init, [2; NONCE]) else {
        panic!()
    };
    let (Some(_), Answer::Again(with_cookie)) = i.handle(&reply, [3; NONCE]) else {
        panic!()
    };
    for (source, at, accepted) in [
        (a, t, true),
        (addr("192.0.2.1:5001"), t, false),
        (addr("192.0.2.2:5000"), t, false),
        (a, t + COOKIE_PERIOD, true),
        (a, t + 2 * COOKIE_PERIOD, false),
    ] {
        let g = h.greet(at, source, &with_cookie, [0; NONCE]);
        assert_eq!(
            matches!(g, Greeting::Accepted(_)),
            accepted,
            "from {source} at {at:?}"
        );
        if !accepted {
            assert!(matches!(g, Greeting::Cookie(_)), "a new cookie instead");
        }
    }
}

#[test]
fn a_replayed_init_gives_a_session_the_replayer_cannot_use() {
    let h = Handshaker::new(key(7), [9; 32]);
    let a = addr("192.0.2.1:5000");
    let (i, init) = Initiator::new(&h.public(), RATES, [1; NONCE]).unwrap();
    let Greeting::Cookie(reply) = h.greet(Duration::ZERO, a, &init, [2; NONCE]) else {
        panic!()
    };
    let (Some(i), Answer::Again(init)) = i.handle(&reply, [3; NONCE]) else {
        panic!()
    };
    let Greeting::Accepted(first) = h.greet(Duration::ZERO, a, &init, [4; NONCE]) else {
        panic!()
    };
    let Greeting::Accepted(replayed) = h.greet(Duration::ZERO, a, &init, [5; NONCE]) else {
        panic!("the same source within the period: the gateway cannot tell")
    };
    let (response, mut real) = first.accept(RATES, [6; NONCE]).unwrap();
    let (_, mut ghost) = replayed.accept(RATES, [7; NONCE]).unwrap();
    let (None, Answer::Open(mut client, _)) = i.handle(&response, [8; NONCE]) else {
        panic!()
    };
    let record = client.seal(&[1; crate::record::PLAIN_LEN]);
    assert!(
        ghost.open(&record).is_none(),
        "the ghost session has other keys"
    );
    assert!(real.open(&record).is_some());
}

/// Nonces as the link draws them: random bytes.
fn rn(n: u8, k: u8) -> [u8; NONCE] {
    let mut r = [0u8; NONCE];
    blake3::Hasher::new()
        .update(&[n, k])
        .finalize_xof()
        .fill(&mut r);
    r
}

#[test]
fn every_record_looks_random() {
    // Handshake records and transport records (padding included): across records, no
    // byte position is constant, and the byte histogram is flat (chi-square, 255 degrees
    // of freedom: mean 255, sd 22.6; 400 is beyond 6 sd).
    let h = Handshaker::new(key(7), [9; 32]);
    let mut records = Vec::new();
    for n in 0..32u8 {
        let (i, init) = Initiator::new(&h.public(), RATES, rn(n, 1)).unwrap();
        records.push(init);
        let source = addr("192.0.2.1:5000");
        let Greeting::Cookie(reply) = h.greet(Duration::ZERO, source, &init, rn(n, 1)) else {
            panic!()
        };
        records.push(*reply);
        let (Some(i), Answer::Again(again)) = i.handle(&reply, rn(n, 2)) else {
            panic!()
        };
        records.push(*again);
        let Greeting::Accepted(a) = h.greet(Duration::ZERO, source, &again, rn(n, 3)) else {
            panic!()
        };
        let (response, mut g) = a.accept(RATES, rn(n, 1)).unwrap();
        records.push(response);
        let (None, Answer::Open(mut c, _)) = i.handle(&response, rn(n, 3)) else {
            panic!()
        };
        records.push(c.seal(&[0; crate::record::PLAIN_LEN]));
        records.push(g.seal(&[0; crate::record::PLAIN_LEN]));
    }
    for at in 0..RECORD_LEN {
        assert!(
            records.iter().any(|r| r[at] != records[0][at]),
            "byte {at} is the same in every record"
        );
    }
    let mut counts = [0u64; 256];
    for r in &records {
        for b in r {
            counts[usize::from(*b)] += 1;
        }
    }
    let expected = (records.len() * RECORD_LEN) as f64 / 256.0;
    let chi: f64 = counts
        .iter()
        .map(|c| (*c as f64 - expected).powi(2) / expected)
        .sum();
    assert!(chi < 400.0, "chi-square {chi}");
}
