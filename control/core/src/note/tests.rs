#![expect(clippy::unwrap_used, reason = "tests")]

use super::*;

fn pair(seed: u8) -> IdentityKeyPair {
    IdentityKeyPair::from_seed(&[seed; 32])
}

const TEXT: &str = "pb.test/network\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\nepoch 7\n";

#[test]
fn a_note_signs_verifies_and_round_trips_its_verifier_key() {
    let (a, b, c) = (pair(1), pair(2), pair(3));
    let sa = NoteSigner::new("pb.test/steward-a", &a).unwrap();
    let sb = NoteSigner::new("pb.test/steward-b", &b).unwrap();
    let sc = NoteSigner::new("pb.test/steward-c", &c).unwrap();
    let signed = sign(TEXT, &[&sa, &sb]).unwrap();
    assert!(signed.starts_with(TEXT));
    assert!(signed.contains("\n\n— pb.test/steward-a "));
    let note = Note::parse(signed.as_bytes()).unwrap();
    assert_eq!(note.text, TEXT);
    assert_eq!(note.signatures.len(), 2);
    let keys = [sc.key().clone(), sb.key().clone(), sa.key().clone()];
    assert_eq!(note.verify(&keys).unwrap(), vec![2, 1]);
    // Only c's key known: nobody it knows signed.
    assert_eq!(note.verify(&keys[..1]), Err(NoteError::Unsigned));
    // Verifier key strings round-trip, and a wrong ID is refused.
    // A key whose base64 holds a '+' (as many do) parses too.
    for seed in 0..16u8 {
        let key = NoteSigner::new("pb.test/k", &pair(seed))
            .unwrap()
            .key()
            .clone();
        assert_eq!(NoteKey::from_vkey(&key.vkey()).unwrap(), key);
    }
    let vkey = sa.key().vkey();
    assert!(vkey.starts_with("pb.test/steward-a+"));
    assert_eq!(&NoteKey::from_vkey(&vkey).unwrap(), sa.key());
    let mut wrong = vkey.clone();
    wrong.replace_range(18..19, if &vkey[18..19] == "0" { "1" } else { "0" });
    assert_eq!(NoteKey::from_vkey(&wrong), Err(NoteError::BadVerifierKey));
    for bad in [
        "",
        "a+b",
        "a+zz+AQ==",
        "a b+00000000+AQ==",
        "a+00000000+AQ==+x",
        "a+0+AQ==",
    ] {
        assert!(NoteKey::from_vkey(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn a_changed_text_or_signature_is_refused_and_unknown_keys_are_ignored() {
    let (a, other) = (pair(1), pair(9));
    let sa = NoteSigner::new("pb.test/steward-a", &a).unwrap();
    let signed = sign(TEXT, &[&sa]).unwrap();
    let keys = [sa.key().clone()];
    // One byte of the text changed: a's signature no longer holds.
    let changed = signed.replacen("epoch 7", "epoch 8", 1);
    let note = Note::parse(changed.as_bytes()).unwrap();
    assert_eq!(note.verify(&keys), Err(NoteError::BadSignature(0)));
    // Another key under the same name (so another ID): ignored, a's still counts.
    let impostor = NoteSigner::new("pb.test/steward-a", &other).unwrap();
    let with_impostor = format!("{signed}{}\n", impostor.signature_line(TEXT));
    let note = Note::parse(with_impostor.as_bytes()).unwrap();
    assert_eq!(note.verify(&keys).unwrap(), vec![0]);
    // A's name and ID with another key's signature: refused.
    let mut raw = key_id("pb.test/steward-a", &a.public().0)
        .to_be_bytes()
        .to_vec();
    raw.extend_from_slice(&other.sign_message(b"", TEXT.as_bytes()));
    let forged = format!("{TEXT}\n— pb.test/steward-a {}\n", BASE64.encode(raw));
    let note = Note::parse(forged.as_bytes()).unwrap();
    assert_eq!(note.verify(&keys), Err(NoteError::BadSignature(0)));
}

#[test]
fn malformed_notes_are_refused_with_their_reason() {
    let a = pair(1);
    let sa = NoteSigner::new("pb.test/a", &a).unwrap();
    let line = sa.signature_line(TEXT);
    let cases: &[(String, NoteError)] = &[
        (format!("{TEXT}{line}\n"), NoteError::Malformed),
        (format!("{TEXT}\n"), NoteError::Malformed),
        (format!("{TEXT}\n{line}"), NoteError::Malformed),
        (
            format!("{TEXT}\n- pb.test/a AAAA\n"),
            NoteError::BadSignatureLine,
        ),
        (
            format!("{TEXT}\n— pb.test/a AAA\n"),
            NoteError::BadSignatureLine,
        ),
        (
            format!("{TEXT}\n— pb.test/a\n"),
            NoteError::BadSignatureLine,
        ),
        (
            format!("{TEXT}\n— pb+test AAAAAA==\n"),
            NoteError::BadSignatureLine,
        ),
        (format!("a\tb\n\n{line}\n"), NoteError::BadCharacters),
        ("x".repeat(MAX_NOTE + 1), NoteError::TooLarge),
        (
            format!("{TEXT}\n{}", format!("{line}\n").repeat(MAX_SIGNATURES + 1)),
            NoteError::TooLarge,
        ),
    ];
    for (note, why) in cases {
        assert_eq!(Note::parse(note.as_bytes()), Err(*why), "{note:?}");
    }
    assert_eq!(
        Note::parse(&[0xff, b'\n', b'\n']),
        Err(NoteError::BadCharacters)
    );
    assert_eq!(sign("no newline", &[&sa]), Err(NoteError::Malformed));
    assert_eq!(
        NoteSigner::new("has space", &a).err(),
        Some(NoteError::BadKeyName)
    );
    // The text may hold blank lines: the last one separates it from the signatures.
    let text = "a\n\nb\n";
    let note_text = sign(text, &[&sa]).unwrap();
    let note = Note::parse(note_text.as_bytes()).unwrap();
    assert_eq!(note.text, text);
    assert_eq!(note.verify(&[sa.key().clone()]).unwrap(), vec![0]);
}
