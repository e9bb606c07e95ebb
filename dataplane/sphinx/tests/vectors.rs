//! The test vectors in docs/spec/packet-format.md, recomputed and compared byte for byte.
//! Set PB_PRINT_VECTORS=1 to print the block (to refresh the spec after a deliberate change).
#![expect(clippy::unwrap_used, clippy::panic, reason = "tests")]

use pb_sphinx::*;

const SPEC: &str = include_str!("../../../docs/spec/packet-format.md");

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn relays(epoch: Epoch, count: u8, out: &mut String) -> (Vec<NodeKeys>, Vec<Hop>) {
    let mut keys = Vec::new();
    let mut route = Vec::new();
    for i in 1..=count {
        let key = EpochKey::from_secret(epoch, [i; 32]);
        *out += &format!("relay {i} id: {}\n", hex(&[i; 16]));
        *out += &format!("relay {i} secret: {}\n", hex(&[i; 32]));
        *out += &format!("relay {i} public: {}\n", hex(&key.public_key()));
        route.push(Hop {
            node: NodeId([i; 16]),
            public_key: key.public_key(),
            delay: DelayMs(100 * u32::from(i)),
        });
        keys.push(NodeKeys {
            current: key,
            previous: None,
            format: None,
        });
    }
    (keys, route)
}

/// Walks `packet` through the relays, rendering each hop's replay tag and output hash.
fn walk(packet: &mut [u8; PACKET_LEN], keys: &[NodeKeys], out: &mut String) -> Processed {
    let mut filter = MemoryReplayFilter::default();
    let mut last = None;
    for (i, keys) in keys.iter().enumerate() {
        let result = process(packet, keys, &mut filter).unwrap();
        let tag = match result {
            Processed::Forward { tag, .. }
            | Processed::Deliver { tag, .. }
            | Processed::DeliverReply { tag, .. } => tag,
        };
        *out += &format!("hop {} replay tag: {}\n", i + 1, hex(&tag.0));
        *out += &format!(
            "hop {} output blake3: {}\n",
            i + 1,
            blake3::hash(packet).to_hex()
        );
        last = Some(result);
    }
    last.unwrap()
}

/// A packet vector: `hops` relays, the packet in full or as a hash, what each hop sees.
fn packet_vector(format: Format, hops: u8, seed: [u8; 32], full: bool) -> String {
    let epoch = Epoch(1000);
    let mut out = String::new();
    let (keys, route) = relays(epoch, hops, &mut out);
    let message: &[u8] = match format {
        Format::V1 => b"PhantomBand PB-Sphinx v1 test vector",
        Format::V2 => b"PhantomBand PB-Sphinx v2 test vector",
    };
    let mailbox = MailboxId([0xab; 16]);
    out += &format!(
        "epoch: {}\nseed: {}\nmailbox: {}\nmessage: {}\n",
        epoch.0,
        hex(&seed),
        hex(&mailbox.0),
        hex(message)
    );
    let mut packet = [0u8; PACKET_LEN];
    create_packet_with(format, &mut packet, epoch, &route, mailbox, message, &seed).unwrap();
    if full {
        for (i, chunk) in packet.chunks(64).enumerate() {
            out += &format!("packet[{:04}]: {}\n", i * 64, hex(chunk));
        }
    } else {
        out += &format!("packet blake3: {}\n", blake3::hash(&packet).to_hex());
    }
    walk(&mut packet, &keys, &mut out);
    out
}

/// A SURB vector: three relays back to a mailbox, the SURB, a reply through it, the opening.
fn surb_vector(format: Format) -> String {
    let epoch = Epoch(1000);
    let mut out = String::new();
    let (keys, route) = relays(epoch, 3, &mut out);
    let seed = [0x53; 32];
    let id = SurbId([0x5b; 16]);
    let mailbox = MailboxId([0xcd; 16]);
    out += &format!(
        "epoch: {}\nseed: {}\nsurb id: {}\nmailbox: {}\n",
        epoch.0,
        hex(&seed),
        hex(&id.0),
        hex(&mailbox.0)
    );
    let (surb, secrets) = create_surb_with(format, epoch, &route, mailbox, id, &seed).unwrap();
    for (i, chunk) in surb.to_bytes().chunks(64).enumerate() {
        out += &format!("surb[{:04}]: {}\n", i * 64, hex(chunk));
    }
    let reply = b"a reply through a single-use reply block";
    out += &format!("reply: {}\n", hex(reply));
    let mut packet = [0u8; PACKET_LEN];
    surb.into_reply(&mut packet, reply).unwrap();
    out += &format!("reply packet blake3: {}\n", blake3::hash(&packet).to_hex());
    walk(&mut packet, &keys, &mut out);
    let opened = secrets.open_reply(payload_mut(&mut packet)).unwrap();
    out += &format!("opened: {}\n", hex(&opened[..reply.len()]));
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
fn spec_vectors_match() {
    let vectors = [
        ("1", packet_vector(Format::V1, 3, [0x42; 32], true)),
        ("2", packet_vector(Format::V1, 1, [0x21; 32], false)),
        ("3", packet_vector(Format::V1, 5, [0x55; 32], false)),
        ("4", surb_vector(Format::V1)),
        ("5", packet_vector(Format::V2, 3, [0x42; 32], true)),
        ("6", packet_vector(Format::V2, 5, [0x55; 32], false)),
        ("7", surb_vector(Format::V2)),
    ];
    if std::env::var("PB_PRINT_VECTORS").is_ok() {
        for (name, computed) in &vectors {
            println!("```vector {name}\n{computed}```\n");
        }
    }
    for (name, computed) in vectors {
        assert_eq!(
            spec_block(name),
            computed,
            "docs/spec/packet-format.md vector {name} differs from the code"
        );
    }
}
