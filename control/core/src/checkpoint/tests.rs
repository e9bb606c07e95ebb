#![expect(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use super::*;
use crate::{IdentityKeyPair, note::NoteSigner, note::sign};

const NETWORK: &str = "pb.test/network";

fn checkpoint() -> Checkpoint {
    Checkpoint {
        network: NETWORK.into(),
        tree_size: 0,
        tree_root: empty_tree_root(),
        reputation: [0; 32],
        epoch: Epoch(7),
        descriptors: descriptor_set_hash([&b"one"[..], &b"two"[..]]),
        topology: [0x5a; 32],
    }
}

/// Five stewards (seeds 1 to 5), named `pb.test/steward-N`.
fn pairs() -> Vec<IdentityKeyPair> {
    (1..=5u8)
        .map(|i| IdentityKeyPair::from_seed(&[i; 32]))
        .collect()
}

fn signers(pairs: &[IdentityKeyPair]) -> Vec<NoteSigner<'_>> {
    pairs
        .iter()
        .enumerate()
        .map(|(i, p)| NoteSigner::new(&format!("pb.test/steward-{}", i + 1), p).unwrap())
        .collect()
}

fn stewards(signers: &[NoteSigner<'_>], k: usize) -> Stewards {
    Stewards::new(
        NETWORK,
        signers.iter().map(|s| s.key().clone()).collect(),
        k,
    )
    .unwrap()
}

#[test]
fn the_text_is_a_tlog_checkpoint_and_parses_back_only_in_its_one_form() {
    let c = checkpoint();
    let text = c.text();
    let lines: Vec<&str> = text.lines().collect();
    // Origin, tree size, root hash: what a tlog checkpoint reader expects first.
    assert_eq!(
        lines[..3],
        [NETWORK, "0", "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="]
    );
    assert_eq!(lines[3], "epoch 7");
    assert_eq!(lines[6], format!("reputation {}=", "A".repeat(43)));
    assert_eq!(Checkpoint::parse(&text).unwrap(), c);
    let bad = [
        text.replacen("\n0\n", "\n00\n", 1),
        text.replacen("\n0\n", "\n+0\n", 1),
        text.replacen("epoch 7", "epoch 07", 1),
        text.replacen("epoch 7", "epoch 4294967296", 1),
        text.replacen("epoch 7", "epoch  7", 1),
        text.replacen("descriptors ", "descriptors", 1),
        text.replacen(NETWORK, "pb.test/a b", 1),
        text.replacen(NETWORK, "", 1),
        text.replacen("topology ", "topology AAAA", 1),
        text.replacen("reputation ", "reputation AAAA", 1),
        text.replacen("reputation ", "Reputation ", 1),
        format!("{text}extra\n"),
        text.trim_end().to_owned(),
    ];
    for b in &bad {
        assert!(
            matches!(Checkpoint::parse(b), Err(CheckpointError::Malformed(_))),
            "{b:?}"
        );
    }
}

#[test]
fn the_descriptor_set_hash_ignores_order_and_sees_every_byte() {
    let (a, b) = (&b"descriptor a"[..], &b"descriptor b"[..]);
    assert_eq!(descriptor_set_hash([a, b]), descriptor_set_hash([b, a]));
    assert_ne!(descriptor_set_hash([a, b]), descriptor_set_hash([a]));
    assert_ne!(
        descriptor_set_hash([a, b]),
        descriptor_set_hash([a, &b"descriptor c"[..]])
    );
    // Lengths are framed: moving a boundary changes the hash.
    assert_ne!(
        descriptor_set_hash([&b"ab"[..], &b"c"[..]]),
        descriptor_set_hash([&b"a"[..], &b"bc"[..]])
    );
}

#[test]
fn k_distinct_stewards_must_sign_the_networks_checkpoint() {
    let pairs = pairs();
    let s = signers(&pairs);
    let stewards = stewards(&s, 3);
    let text = checkpoint().text();
    let by = |who: &[usize]| {
        let chosen: Vec<&NoteSigner<'_>> = who.iter().map(|&i| &s[i]).collect();
        sign(&text, &chosen).unwrap()
    };
    let (c, signed) = stewards.open(by(&[0, 2, 4]).as_bytes()).unwrap();
    assert_eq!((c, signed), (checkpoint(), vec![0, 2, 4]));
    // Two stewards, or one steward three times: not enough.
    assert_eq!(
        stewards.open(by(&[1, 3]).as_bytes()),
        Err(CheckpointError::TooFewSignatures { got: 2, need: 3 })
    );
    assert_eq!(
        stewards.open(by(&[1, 1, 1]).as_bytes()),
        Err(CheckpointError::TooFewSignatures { got: 1, need: 3 })
    );
    // Signatures by keys that are not stewards count for nothing.
    let outsiders: Vec<IdentityKeyPair> = (6..=8u8)
        .map(|i| IdentityKeyPair::from_seed(&[i; 32]))
        .collect();
    let o = signers(&outsiders);
    let note = sign(&text, &[&o[0], &o[1], &o[2]]).unwrap();
    assert_eq!(
        stewards.open(note.as_bytes()),
        Err(CheckpointError::TooFewSignatures { got: 0, need: 3 })
    );
    // k signatures over another network's checkpoint.
    let other = Checkpoint {
        network: "pb.test/other".into(),
        ..checkpoint()
    };
    let note = sign(&other.text(), &[&s[0], &s[1], &s[2]]).unwrap();
    assert_eq!(
        stewards.open(note.as_bytes()),
        Err(CheckpointError::WrongNetwork)
    );
    // A steward's signature that does not verify refuses the note, whatever else it holds.
    let good = by(&[0, 1, 2]);
    let tampered = good.replacen("epoch 7", "epoch 9", 1);
    assert!(matches!(
        stewards.open(tampered.as_bytes()),
        Err(CheckpointError::Note(NoteError::BadSignature(_)))
    ));
    // Unusable thresholds and duplicate stewards.
    let keys: Vec<NoteKey> = s.iter().map(|x| x.key().clone()).collect();
    for k in [0, 6] {
        assert!(Stewards::new(NETWORK, keys.clone(), k).is_err());
    }
    let mut twice = keys.clone();
    twice.push(keys[0].clone());
    assert!(Stewards::new(NETWORK, twice, 3).is_err());
}

/// The vector in docs/spec/checkpoint.md, made again from its inputs.
#[test]
fn the_specs_test_vector_holds() {
    let spec = include_str!("../../../../docs/spec/checkpoint.md");
    let block = spec
        .split("```text\n")
        .find(|b| b.starts_with("pb.test/network\n"))
        .and_then(|b| b.split("```").next())
        .expect("docs/spec/checkpoint.md has the vector");
    let pairs = pairs();
    let s = signers(&pairs);
    let note = sign(&checkpoint().text(), &[&s[0], &s[1], &s[2]]).unwrap();
    assert_eq!(
        block, note,
        "the spec's vector differs from what the code signs"
    );
    let (c, _) = stewards(&s, 3).open(block.as_bytes()).unwrap();
    assert_eq!(c, checkpoint());
    for (i, signer) in s.iter().enumerate() {
        assert!(
            spec.contains(&signer.key().vkey()),
            "the spec lacks steward {}'s verifier key",
            i + 1
        );
    }
}
