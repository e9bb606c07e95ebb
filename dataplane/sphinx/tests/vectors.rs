//! The test vectors in docs/spec/packet-format.md, recomputed and compared byte for byte.
//! Set PB_PRINT_VECTORS=1 to print the block (to refresh the spec after a deliberate change).
#![expect(clippy::unwrap_used, clippy::panic, reason = "tests")]

use pb_sphinx::*;

const SPEC: &str = include_str!("../../../docs/spec/packet-format.md");

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Renders vector 1: three relays, a delivered packet, and what each hop sees.
fn vector_1() -> String {
    let epoch = Epoch(1000);
    let mut out = String::new();
    let mut relays = Vec::new();
    for i in 1..=3u8 {
        let key = EpochKey::from_secret(epoch, [i; 32]);
        out += &format!("relay {i} id: {}\n", hex(&[i; 16]));
        out += &format!("relay {i} secret: {}\n", hex(&[i; 32]));
        out += &format!("relay {i} public: {}\n", hex(&key.public_key()));
        relays.push((
            NodeId([i; 16]),
            NodeKeys {
                current: key,
                previous: None,
            },
        ));
    }
    let route: Vec<Hop> = relays
        .iter()
        .enumerate()
        .map(|(i, (id, keys))| Hop {
            node: *id,
            public_key: keys.current.public_key(),
            delay: DelayMs(100 * (i as u32 + 1)),
        })
        .collect();
    let seed = [0x42; 32];
    let message = b"PhantomBand PB-Sphinx v1 test vector";
    let mailbox = MailboxId([0xab; 16]);
    out += &format!(
        "epoch: {}\nseed: {}\nmailbox: {}\nmessage: {}\n",
        epoch.0,
        hex(&seed),
        hex(&mailbox.0),
        hex(message)
    );
    let mut packet = [0u8; PACKET_LEN];
    create_packet(&mut packet, epoch, &route, mailbox, message, &seed).unwrap();
    for (i, chunk) in packet.chunks(64).enumerate() {
        out += &format!("packet[{:04}]: {}\n", i * 64, hex(chunk));
    }
    let mut filter = MemoryReplayFilter::default();
    for (i, (_, keys)) in relays.iter().enumerate() {
        let result = process(&mut packet, keys, &mut filter).unwrap();
        let tag = match result {
            Processed::Forward { tag, .. }
            | Processed::Deliver { tag, .. }
            | Processed::DeliverReply { tag, .. } => tag,
        };
        out += &format!("hop {} replay tag: {}\n", i + 1, hex(&tag.0));
        out += &format!(
            "hop {} output blake3: {}\n",
            i + 1,
            blake3::hash(&packet).to_hex()
        );
    }
    out
}

fn spec_block(name: &str) -> String {
    let start = format!("```vector {name}\n");
    let begin = SPEC
        .find(&start)
        .unwrap_or_else(|| panic!("no `{start}` block in the spec"))
        + start.len();
    let end = SPEC[begin..].find("```").unwrap() + begin;
    SPEC[begin..end].to_owned()
}

#[test]
fn spec_vector_1_matches() {
    let computed = vector_1();
    if std::env::var("PB_PRINT_VECTORS").is_ok() {
        println!("{computed}");
    }
    assert_eq!(
        spec_block("1"),
        computed,
        "docs/spec/packet-format.md vector 1 differs from the code"
    );
}

/// With PB_WRITE_CORPUS=DIR, writes the fuzz seed corpus: valid packets for relay 1 (three
/// routes) under DIR/process and serialized SURBs under DIR/surb.
#[test]
fn write_fuzz_corpus_when_asked() {
    let Ok(dir) = std::env::var("PB_WRITE_CORPUS") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(dir.join("process")).unwrap();
    std::fs::create_dir_all(dir.join("surb")).unwrap();
    let epoch = Epoch(1000);
    let hops: Vec<Hop> = (1..=3u8)
        .map(|i| Hop {
            node: NodeId([i; 16]),
            public_key: EpochKey::from_secret(epoch, [i; 32]).public_key(),
            delay: DelayMs(7),
        })
        .collect();
    for n in 1..=3 {
        let mut packet = [0u8; PACKET_LEN];
        create_packet(
            &mut packet,
            epoch,
            &hops[..n],
            MailboxId([0xab; 16]),
            b"corpus",
            &[n as u8; 32],
        )
        .unwrap();
        std::fs::write(dir.join("process").join(format!("valid-{n}-hops")), packet).unwrap();
        std::fs::write(
            dir.join("process").join(format!("short-{n}")),
            &packet[..PACKET_LEN - 1],
        )
        .unwrap();
        let (surb, _) = create_surb(
            epoch,
            &hops[..n],
            MailboxId([0xcd; 16]),
            SurbId([n as u8; 16]),
            &[0x80 + n as u8; 32],
        )
        .unwrap();
        std::fs::write(
            dir.join("surb").join(format!("surb-{n}-hops")),
            surb.to_bytes(),
        )
        .unwrap();
    }
}
