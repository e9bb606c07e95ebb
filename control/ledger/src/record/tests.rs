#![expect(clippy::unwrap_used, reason = "tests")]

use proptest::prelude::*;

use super::*;

fn pair(i: u8) -> IdentityKeyPair {
    IdentityKeyPair::from_seed(&[i; 32])
}

fn link(n: u8, sent: u64, returned: u64, lost: u64) -> LinkMeasurement {
    let mut rtt = [0; RTT_BUCKET_COUNT];
    rtt[3] = returned / 2;
    rtt[4] = returned - returned / 2;
    LinkMeasurement {
        neighbour: pair(n).public().node_id(),
        sent,
        returned,
        lost,
        rtt,
    }
}

fn measurement() -> Measurement {
    let mut links = vec![link(2, 120, 117, 3), link(3, 90, 80, 10), link(4, 0, 0, 0)];
    links.sort_by_key(|l| l.neighbour);
    Measurement {
        network: "pb.test/network".into(),
        epoch: Epoch(880_708),
        relay: pair(1).public(),
        links,
    }
}

#[test]
fn a_record_reads_as_its_spec_says_and_round_trips() {
    let m = measurement();
    let text = m.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "PhantomBand v1 measurement");
    assert_eq!(lines[1], "network pb.test/network");
    assert_eq!(lines[2], "epoch 880708");
    assert!(lines[3].starts_with("relay ") && lines[3].len() == 6 + 44);
    assert_eq!(lines.len(), 4 + 3);
    let l = m.links.iter().position(|l| l.sent == 120).unwrap();
    assert_eq!(
        lines[4 + l],
        format!(
            "link {} sent 120 returned 117 lost 3 rtt 0 0 0 58 59 0 0 0",
            hex(&m.links[l].neighbour.0)
        )
    );
    assert_eq!(Measurement::parse(&text).unwrap(), m);
    let signed = m.sign(&pair(1)).unwrap();
    let opened = SignedMeasurement::open(signed.as_bytes()).unwrap();
    assert_eq!(opened.measurement(), &m);
    assert_eq!(opened, signed);
    let note = std::str::from_utf8(signed.as_bytes()).unwrap();
    assert!(note.starts_with(&text));
    assert!(note.contains(&format!("\n\n— {} ", key_name(&m.relay))));
}

#[test]
fn rtts_fall_in_their_buckets() {
    assert_eq!(LinkMeasurement::bucket(0), 0);
    assert_eq!(LinkMeasurement::bucket(49), 0);
    assert_eq!(LinkMeasurement::bucket(50), 1);
    assert_eq!(LinkMeasurement::bucket(3199), 6);
    assert_eq!(LinkMeasurement::bucket(3200), 7);
    assert_eq!(LinkMeasurement::bucket(u64::MAX), 7);
}

#[test]
fn a_changed_record_or_another_relays_signature_is_refused() {
    let m = measurement();
    let signed = m.sign(&pair(1)).unwrap();
    let note = std::str::from_utf8(signed.as_bytes()).unwrap().to_owned();
    // One count changed after signing.
    let changed = note.replacen("sent 120", "sent 121", 1);
    assert!(matches!(
        SignedMeasurement::open(changed.as_bytes()),
        Err(RecordError::Note(NoteError::BadSignature(0)))
    ));
    // Signed by a relay other than the one it names: refused when signing...
    assert_eq!(
        m.sign(&pair(9)).unwrap_err(),
        RecordError::Malformed("relay")
    );
    // ... and a note another key signed names nobody who signed it.
    let (nine, one) = (pair(9), pair(1));
    let other = NoteSigner::new(&key_name(&m.relay), &nine).unwrap();
    let forged = sign(&m.text(), &[&other]).unwrap();
    assert!(SignedMeasurement::open(forged.as_bytes()).is_err());
    // The relay's key, but under another key name: unsigned as far as the record goes.
    let renamed = NoteSigner::new("pb-relay-someone", &one).unwrap();
    let renamed = sign(&m.text(), &[&renamed]).unwrap();
    assert_eq!(
        SignedMeasurement::open(renamed.as_bytes()).unwrap_err(),
        RecordError::Note(NoteError::Unsigned)
    );
}

#[test]
fn impossible_counts_and_bad_links_are_refused() {
    let pair1 = pair(1);
    let mut m = measurement();
    m.links[0].lost = m.links[0].sent + 1;
    assert_eq!(m.sign(&pair1).unwrap_err(), RecordError::Inconsistent(0));
    assert_eq!(
        Measurement::parse(&m.text()).unwrap_err(),
        RecordError::Inconsistent(0)
    );
    let mut m = measurement();
    m.links[1].rtt[0] += 1;
    assert_eq!(m.check().unwrap_err(), RecordError::Inconsistent(1));
    let mut m = measurement();
    m.links.swap(0, 1);
    assert_eq!(m.check().unwrap_err(), RecordError::BadLinks);
    let mut m = measurement();
    m.links[1] = m.links[0];
    assert_eq!(m.check().unwrap_err(), RecordError::BadLinks);
    let mut m = measurement();
    m.links[0].neighbour = m.relay.node_id();
    m.links.sort_by_key(|l| l.neighbour);
    assert_eq!(m.check().unwrap_err(), RecordError::BadLinks);
    let mut m = measurement();
    m.links = (0..=MAX_LINKS as u8)
        .map(|i| link(i.wrapping_add(10), 1, 1, 0))
        .collect();
    m.links.sort_by_key(|l| l.neighbour);
    assert_eq!(m.check().unwrap_err(), RecordError::BadLinks);
    assert_eq!(
        Measurement::parse(&m.text()).unwrap_err(),
        RecordError::BadLinks
    );
    let mut m = measurement();
    m.network = "two words".into();
    assert_eq!(m.check().unwrap_err(), RecordError::Malformed("network"));
}

#[test]
fn texts_not_written_the_one_way_are_refused() {
    let text = measurement().text();
    for (from, to) in [
        ("epoch 880708", "epoch 0880708"),
        ("epoch 880708", "epoch 4294967296"),
        (" sent 120", " sent  120"),
        (" rtt 0 0 0 58 59 0 0 0", " rtt 0 0 0 58 59 0 0"),
        (" rtt 0 0 0 58 59 0 0 0", " rtt 0 0 0 58 59 0 0 0 0"),
        ("PhantomBand v1 measurement", "PhantomBand v2 measurement"),
        ("network ", "network  "),
        ("\nrelay ", "\nrelay x"),
    ] {
        let bad = text.replacen(from, to, 1);
        assert_ne!(bad, text, "{from}");
        assert!(Measurement::parse(&bad).is_err(), "{to}");
    }
    assert!(Measurement::parse(text.trim_end()).is_err());
    let upper = text.replacen("link ", "link X", 1);
    assert!(Measurement::parse(&upper).is_err());
    for cut in 0..text.len() {
        if let Some(prefix) = text.get(..cut) {
            let _ = Measurement::parse(prefix);
        }
    }
}

proptest! {
    #[test]
    fn any_consistent_record_round_trips(
        epoch in any::<u32>(),
        counts in proptest::collection::vec((0u64..1 << 40, 0u64..1 << 20, 0u64..1 << 20, 0usize..RTT_BUCKET_COUNT), 0..12),
    ) {
        let mut links: Vec<LinkMeasurement> = counts
            .iter()
            .enumerate()
            .map(|(i, &(extra, returned, lost, bucket))| {
                let mut rtt = [0; RTT_BUCKET_COUNT];
                rtt[bucket] = returned;
                LinkMeasurement {
                    neighbour: NodeId([i as u8 + 1; 16]),
                    sent: returned + lost + extra,
                    returned,
                    lost,
                    rtt,
                }
            })
            .collect();
        links.sort_by_key(|l| l.neighbour);
        let m = Measurement {
            network: "pb.test/network".into(),
            epoch: Epoch(epoch),
            relay: pair(1).public(),
            links,
        };
        prop_assert_eq!(Measurement::parse(&m.text()).unwrap(), m.clone());
    }

    #[test]
    fn no_text_panics_the_parser(text in "\\PC{0,400}") {
        let _ = Measurement::parse(&text);
        let _ = SignedMeasurement::open(text.as_bytes());
    }
}
