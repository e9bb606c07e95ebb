#![expect(clippy::unwrap_used, reason = "tests")]

use pb_control::{IdentityKey, IdentityKeyPair};

use super::*;
use crate::record::{LinkMeasurement, RTT_BUCKET_COUNT};

fn key(i: u8) -> IdentityKey {
    IdentityKeyPair::from_seed(&[i; 32]).public()
}

fn id(i: u8) -> NodeId {
    key(i).node_id()
}

fn link(to: u8, sent: u64, returned: u64) -> LinkMeasurement {
    let mut rtt = [0; RTT_BUCKET_COUNT];
    rtt[2] = returned;
    LinkMeasurement {
        neighbour: id(to),
        sent,
        returned,
        lost: sent - returned,
        rtt,
    }
}

fn record(epoch: u32, by: u8, links: Vec<LinkMeasurement>) -> Measurement {
    let mut links = links;
    links.sort_by_key(|l| l.neighbour);
    Measurement {
        network: "pb.test/network".into(),
        epoch: Epoch(epoch),
        relay: key(by),
        links,
    }
}

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One epoch of eight relays each sending 60 loops through every other: a loop through
/// `dropper` (first hop, or one of two later hops with a chance of one in four each) is
/// lost with probability `drop` (ppm); any loop, with 1 % anyway.
fn epoch(epoch: u32, dropper: u8, drop: u64, rng: &mut Rng) -> Vec<Measurement> {
    (0..8u8)
        .map(|me| {
            let links = (0..8u8)
                .filter(|&n| n != me)
                .map(|n| {
                    let mut returned = 0;
                    for _ in 0..60 {
                        let through = n == dropper
                            || (me != dropper && (rng.below(4) == 0 || rng.below(4) == 0));
                        let lost = rng.below(100) == 0 || (through && rng.below(ONE) < drop);
                        returned += u64::from(!lost);
                    }
                    link(n, 60, returned)
                })
                .collect();
            record(epoch, me, links)
        })
        .collect()
}

#[test]
fn a_relay_dropping_a_fifth_scores_below_every_honest_one_from_the_first_epoch() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut reputation = Reputation::new(Params::default());
    for e in 1..=6 {
        let scores = reputation
            .apply(Epoch(e), &epoch(e, 5, 200_000, &mut rng))
            .unwrap();
        let (_, bad) = scores.relays[&id(5)];
        let honest: Vec<u64> = (0..8u8)
            .filter(|&i| i != 5)
            .map(|i| scores.relays[&id(i)].1)
            .collect();
        println!(
            "epoch {e}: network {} dropper {bad} honest {honest:?}",
            scores.network
        );
        assert!(
            honest.iter().all(|&h| h > bad),
            "epoch {e}: {bad} against {honest:?}"
        );
        let worst_honest = (0..8u8)
            .filter(|&i| i != 5)
            .map(|i| reputation.get(&id(i)))
            .min()
            .unwrap();
        assert!(
            reputation.get(&id(5)) < worst_honest,
            "epoch {e}: the dropper has {} against {worst_honest}",
            reputation.get(&id(5))
        );
        assert!(reputation.weight(&id(5)) < reputation.weight(&id(0)));
    }
    // After six epochs the honest have most of what they can have; the dropper little.
    assert!(
        reputation.get(&id(0)) > 700_000,
        "{}",
        reputation.get(&id(0))
    );
    assert!(
        reputation.get(&id(5)) < 400_000,
        "{}",
        reputation.get(&id(5))
    );
}

#[test]
fn a_minority_of_measurers_can_neither_slander_nor_vouch() {
    // Relay 7 is measured by six others: four see it deliver everything, two claim it lost
    // everything. Relay 6 drops half; two of its measurers claim it delivered everything.
    let mut records = Vec::new();
    for me in 0..6u8 {
        let to_7 = if me < 2 {
            link(7, 50, 0)
        } else {
            link(7, 50, 50)
        };
        let to_6 = if me < 2 {
            link(6, 50, 50)
        } else {
            link(6, 50, 25)
        };
        let others = (0..6u8).filter(|&n| n != me).map(|n| link(n, 50, 50));
        records.push(record(1, me, others.chain([to_7, to_6]).collect()));
    }
    let scores = score_epoch(&Params::default(), &records);
    assert_eq!(scores.network, ONE);
    assert_eq!(scores.relays[&id(7)], (ONE, ONE));
    assert_eq!(scores.relays[&id(6)], (500_000, 0));
}

#[test]
fn loss_everywhere_is_nobodys_fault_and_few_loops_do_not_count() {
    // Every link loses a tenth: everyone's relative delivery is 1.
    let records: Vec<Measurement> = (0..4u8)
        .map(|me| {
            let links = (0..4u8)
                .filter(|&n| n != me)
                .map(|n| link(n, 100, 90))
                .collect();
            record(1, me, links)
        })
        .collect();
    let scores = score_epoch(&Params::default(), &records);
    assert_eq!(scores.network, 900_000);
    assert!(scores.relays.values().all(|&(_, s)| s == ONE));
    // Nineteen settled loops are too few to judge (the default needs twenty).
    let few = [record(1, 0, vec![link(1, 19, 0)])];
    assert!(score_epoch(&Params::default(), &few).relays.is_empty());
}

#[test]
fn reputation_grows_from_zero_and_fades_when_unmeasured() {
    let mut reputation = Reputation::new(Params::default());
    assert_eq!(reputation.get(&id(1)), 0);
    assert_eq!(reputation.weight(&id(1)), 100_000);
    let perfect = |e| {
        vec![
            record(e, 0, vec![link(1, 40, 40)]),
            record(e, 1, vec![link(0, 40, 40)]),
        ]
    };
    let mut seen = Vec::new();
    for e in 1..=8 {
        reputation.apply(Epoch(e), &perfect(e)).unwrap();
        seen.push(reputation.get(&id(1)));
    }
    // 1 - 0.75^n: 0.25, 0.4375, ... 0.8999.
    assert_eq!(seen[0], 250_000);
    assert_eq!(seen[1], 437_500);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(seen[7], 899_886);
    // Relay 1 vanishes: only relay 0 is measured (by relay 2), relay 1 fades.
    reputation
        .apply(Epoch(9), &[record(9, 2, vec![link(0, 40, 40)])])
        .unwrap();
    assert_eq!(reputation.get(&id(1)), 899_886 * 750_000 / ONE);
    // An epoch applied again, or an older one, changes nothing.
    let before = reputation.clone();
    assert!(reputation.apply(Epoch(9), &perfect(9)).is_none());
    assert!(reputation.apply(Epoch(3), &perfect(3)).is_none());
    assert_eq!(reputation, before);
}

#[test]
fn the_log_order_does_not_matter_but_a_second_record_does_not_count() {
    let mut rng = Rng(77);
    let mut records: Vec<Measurement> = (1..=4)
        .flat_map(|e| epoch(e, 3, 300_000, &mut rng))
        .collect();
    let mut a = Reputation::new(Params::default());
    a.apply_all(&records);
    records.reverse();
    let mut b = Reputation::new(Params::default());
    b.apply_all(&records);
    assert_eq!(a, b);
    // Relay 0 logs a second record for epoch 1 praising relay 3: it is ignored wherever
    // it comes after the first.
    let mut with_second = records.clone();
    with_second.reverse();
    with_second.push(record(1, 0, vec![link(3, 1000, 1000)]));
    let mut c = Reputation::new(Params::default());
    c.apply_all(&with_second);
    assert_eq!(a, c);
}

#[test]
fn a_reputation_table_reads_back_and_refuses_anything_else() {
    let mut rng = Rng(5);
    let records: Vec<Measurement> = (1..=3)
        .flat_map(|e| epoch(e, 1, 100_000, &mut rng))
        .collect();
    let mut reputation = Reputation::new(Params::default());
    reputation.apply_all(&records);
    let table = Table::of("pb.test/network", records.len() as u64, &reputation);
    assert_eq!(table.epoch, Some(Epoch(3)));
    assert!(!table.relays.is_empty());
    for (id, (r, w)) in &table.relays {
        assert_eq!((*r, *w), (reputation.get(id), reputation.weight(id)));
    }
    let text = table.text();
    assert_eq!(Table::parse(&text), Some(table.clone()));
    let empty = Table::of("pb.test/network", 0, &Reputation::new(Params::default()));
    assert_eq!(Table::parse(&empty.text()), Some(empty));
    let first = text.lines().nth(4).unwrap().to_owned();
    for bad in [
        text.replace("size ", "size 0"),
        text.replace("epoch 3", "epoch x"),
        format!("{text}{first}\n"),
        text.replace(&first, &format!("{first} 1")),
        text.trim_end().to_owned(),
        text.replace("PhantomBand v1", "PhantomBand v2"),
    ] {
        assert_eq!(Table::parse(&bad), None, "{bad}");
    }
}
