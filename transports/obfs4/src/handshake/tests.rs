//! Handshake tests: the known-answer handshake from the research notes (§3c, derived with a
//! re-implementation that interoperated live with obfs4proxy), in-memory round trips under
//! every split, and the refusals.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use zeroize::Zeroizing;

use crate::crypto::{self, Transcript};
use crate::testutil::{ScriptedEntropy, SeededEntropy, hex, hex32};
use crate::{
    ClientHandshake, ClientProgress, Established, FrameDecoder, HandshakeError, NodeId, Packet,
    PrngSeed, ReplayFilter, ServerHandshake, ServerIdentity, ServerProgress,
};

const X_SECRET: &str = "b531f4243aa4a013f0f87a2eaaec47807844a2f375d40b774e824d37a196b2b6";
const X_DIRTY: &str = "04a47c7903661acf03cd71e5400c8b96650bb3620d2ae91b674713ca5f2ac673";
const X_REPRESENTATIVE: &str = "f30130eb1c192cda48a503932c8751232fd784ab7792acba499807e78084a909";
const Y_SECRET: &str = "d63f245d00c57683e8f3f7174b2601aa89319d39823e42aa388fb4f349b8df16";
const Y_DIRTY: &str = "3741b60e375affc17d0dba931bb0f5f4540c31c67a979c3399596103283dd27d";
const Y_REPRESENTATIVE: &str = "3a50a823f482a7af1ac898446850dd643b9a68b530df4cebe7d9f108ebe8933b";
const KAT_EPOCH_HOUR: u64 = 499_058;

fn counting<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = i as u8;
    }
    bytes
}

fn identity() -> ServerIdentity {
    let secret = hex32("a83fdd04eb9ed77a2b38d86092a09a1cecfb93a7bdec0da35e542775b2e7af6e");
    ServerIdentity::from_secret(NodeId(counting()), Zeroizing::new(secret))
}

fn at_hour(hour: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(hour * 3600 + 1234)
}

/// Entropy that makes the key `secret` (tweak 0) and then a padding length of the minimum,
/// padding bytes all zero.
fn scripted(secret: &str, padding: usize) -> ScriptedEntropy {
    let mut script = hex(secret);
    script.push(0);
    script.extend_from_slice(&[0u8; 8]);
    script.extend(std::iter::repeat_n(0u8, padding));
    ScriptedEntropy::new(script)
}

#[test]
fn ntor_and_key_expansion_match_known_answers() {
    let identity = identity();
    let s1 = crypto::x25519(&hex32(X_SECRET), &hex32(Y_DIRTY)).expect("not low order");
    let s2 = crypto::x25519(&hex32(X_SECRET), &identity.public_key().0).expect("not low order");
    assert_eq!(
        s1.to_vec(),
        hex("b7826e8247f3746eb73384477afcd2198f1ee61418326128904088916fb2463b")
    );
    assert_eq!(
        s2.to_vec(),
        hex("f700b2e43fe4013d2e3026c34e63123fa841e98e66442d910f94f88f675af731")
    );
    let transcript = Transcript {
        identity: &identity.public_key(),
        node_id: &identity.node_id(),
        client_public: &hex32(X_DIRTY),
        server_public: &hex32(Y_DIRTY),
    };
    let ntor = crypto::ntor(&s1, &s2, &transcript);
    assert_eq!(
        ntor.key_seed.to_vec(),
        hex("0df456ec5afe0f6437729eae3ac59a7d0ba7a9852e562d9ab2fb0ba76f883e72")
    );
    assert_eq!(
        ntor.auth.to_vec(),
        hex("9177ebb2bbe02e1a61ab6acf312a1cd204455bba789036de9717eba157b251ad")
    );

    let keys = crypto::expand_keys(&ntor.key_seed);
    let half = |k: &crypto::DirectionKeys| {
        [&k.secretbox_key[..], &k.nonce_prefix, &k.mask_seed[..]].concat()
    };
    assert_eq!(
        half(&keys.client_to_server),
        hex(
            "d3533741906f907132714318e9edc735995ac9d70a52b35f49d7b4daab181baace92253ad81c23213bd8a331f84274c638d6d23a9fa6af2296feb76c622a64a2044fcaa5489c6ea3"
        )
    );
    assert_eq!(
        half(&keys.server_to_client),
        hex(
            "fd4d3959e5a44440647ae9b63aaa9f48148b0cd3d039ea4e4e2cbd79c919f359cca85d7e6641c5c533cfe46a29e9d9de631333107f68e8bde2ca84462ea8f5c3d9aea11fe2cd3e1d"
        )
    );
}

#[test]
fn full_handshake_matches_known_answers() {
    let identity = identity();
    let now = at_hour(KAT_EPOCH_HOUR);
    let client = ClientHandshake::new(&identity.cert(), &mut scripted(X_SECRET, 77), now);
    let hello = client.hello().to_vec();
    assert_eq!(hello.len(), 32 + 77 + 16 + 16);
    assert_eq!(hello[..32], hex(X_REPRESENTATIVE)[..]);
    assert!(hello[32..109].iter().all(|&b| b == 0));
    assert_eq!(
        hello[109..125],
        hex("2b4e41284e4f00db9af0bffd016ba25a")[..],
        "M_C"
    );
    assert_eq!(
        hello[125..],
        hex("dbeb6c9b32d0d5f7ec223c6878d46240")[..],
        "MAC_C"
    );

    let server = ServerHandshake::new(&identity, PrngSeed(counting()), &mut scripted(Y_SECRET, 0));
    let mut replay = ReplayFilter::new();
    let progress = server.handle_bytes(&hello, now, &mut replay, &mut SeededEntropy::new(1));
    let Ok(ServerProgress::Done {
        reply,
        established: mut server_side,
    }) = progress
    else {
        panic!("server refused the KAT hello: {progress:?}");
    };
    assert_eq!(reply.len(), 32 + 32 + 16 + 16 + 45);
    assert_eq!(reply[..32], hex(Y_REPRESENTATIVE)[..]);
    assert_eq!(
        reply[32..64],
        hex("9177ebb2bbe02e1a61ab6acf312a1cd204455bba789036de9717eba157b251ad")[..]
    );
    assert_eq!(
        reply[64..80],
        hex("22ecdb1fb66c45290562156c94123da3")[..],
        "M_S"
    );
    assert_eq!(
        reply[80..96],
        hex("79be7ab4885200cff28324af1be66b1e")[..],
        "MAC_S"
    );
    assert_eq!(
        reply[96..],
        hex(
            "a77a0571405758a0607359325aa744ec623f171802e8abfa5092336bd5a04edd4b8f76b26797cf257c3752406d"
        )[..],
        "inline seed frame"
    );

    let Ok(ClientProgress::Done(mut client_side)) = client.handle_bytes(&reply) else {
        panic!("client refused the KAT reply");
    };
    assert_eq!(
        client_side.decoder.poll_packet(),
        Ok(Some(Packet::PrngSeed(PrngSeed(counting()))))
    );
    let mut frame = Vec::new();
    client_side
        .encoder
        .encode_payload(b"hello", 0, &mut frame)
        .expect("fits");
    assert_eq!(
        frame,
        hex("485ae49b09b60ee09e4875d80b3ba9e5472bc1451e3aa3c7d917")
    );
    server_side.decoder.handle_bytes(&frame);
    assert_eq!(
        server_side.decoder.poll_packet(),
        Ok(Some(Packet::Payload(b"hello".to_vec())))
    );
}

/// Feeds `bytes` to a decoder and returns every payload byte, failing on any error.
fn drain_payload(decoder: &mut FrameDecoder) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(packet) = decoder.poll_packet().expect("authentic stream") {
        if let Packet::Payload(bytes) = packet {
            out.extend_from_slice(&bytes);
        }
    }
    out
}

/// Runs the server over `hello` split at `split`; returns its reply and framers.
fn serve(hello: &[u8], split: usize, now: SystemTime, seed: u64) -> (Vec<u8>, Established) {
    let identity = identity();
    let mut rng = SeededEntropy::new(seed);
    let mut server = ServerHandshake::new(&identity, PrngSeed([9; 24]), &mut rng);
    let mut replay = ReplayFilter::new();
    for part in [&hello[..split], &hello[split..]] {
        match server
            .handle_bytes(part, now, &mut replay, &mut rng)
            .expect("valid hello")
        {
            ServerProgress::NeedMore(next) => server = next,
            ServerProgress::Done { reply, established } => return (reply, established),
        }
    }
    panic!("server wanted more than the whole hello");
}

/// A client whose padding length is `77 + extra` (the minimum plus a little).
fn client_with_padding(extra: u8, now: SystemTime) -> ClientHandshake {
    let mut script = hex(X_SECRET);
    script.push(0x80);
    script.extend_from_slice(&[extra, 0, 0, 0, 0, 0, 0, 0]);
    ClientHandshake::new(&identity().cert(), &mut ScriptedEntropy::new(script), now)
}

#[test]
fn client_hello_lengths_cover_the_range() {
    let now = at_hour(480_000);
    let mut lengths: Vec<usize> = (0..40)
        .map(|seed| {
            ClientHandshake::new(&identity().cert(), &mut SeededEntropy::new(seed), now)
                .hello()
                .len()
        })
        .collect();
    lengths.sort_unstable();
    assert!(lengths[0] >= 141 && lengths[39] <= 8192, "{lengths:?}");
    assert!(
        lengths[39] - lengths[0] > 4000,
        "padding not spread over the range: {lengths:?}"
    );
    assert_eq!(client_with_padding(0, now).hello().len(), 141);
}

#[test]
fn round_trip_under_every_split() {
    let now = at_hour(480_000);
    for seed in 1..=2u8 {
        let client = client_with_padding(seed * 20, now);
        let hello = client.hello().to_vec();
        // Every split of the client hello gives the same reply.
        let (reply, mut server_side) = serve(&hello, 0, now, u64::from(seed));
        for split in 1..=hello.len() {
            assert_eq!(
                serve(&hello, split, now, u64::from(seed)).0,
                reply,
                "hello split at {split}"
            );
        }
        // The server's first data frames right behind its hello, as obfs4proxy may send them.
        let mut server_bytes = reply.clone();
        server_side
            .encoder
            .encode_data(b"from the server", &mut server_bytes)
            .expect("fits");
        for split in 0..=server_bytes.len() {
            let mut client = client_with_padding(seed * 20, now);
            let mut established = None;
            for part in [&server_bytes[..split], &server_bytes[split..]] {
                match established.as_mut() {
                    Some(Established { decoder, .. }) => {
                        let decoder: &mut FrameDecoder = decoder;
                        decoder.handle_bytes(part);
                    }
                    None => match client.handle_bytes(part).expect("valid reply") {
                        ClientProgress::NeedMore(next) => client = next,
                        ClientProgress::Done(done) => {
                            established = Some(done);
                            // `client` was consumed; a placeholder that is never used again.
                            client = client_with_padding(0, now);
                        }
                    },
                }
            }
            let mut established = established.expect("handshake done after all bytes");
            assert_eq!(
                established.decoder.poll_packet(),
                Ok(Some(Packet::PrngSeed(PrngSeed([9; 24]))))
            );
            assert_eq!(
                drain_payload(&mut established.decoder),
                b"from the server",
                "reply split at {split}"
            );
        }
    }
}

#[test]
fn bulk_data_both_ways() {
    let now = at_hour(480_000);
    let client = ClientHandshake::new(&identity().cert(), &mut SeededEntropy::new(5), now);
    let (reply, mut server_side) = serve(client.hello(), 0, now, 5);
    let Ok(ClientProgress::Done(mut client_side)) = client.handle_bytes(&reply) else {
        panic!("client refused the reply");
    };
    let data: Vec<u8> = (0..65_536u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let mut wire = Vec::new();
    client_side
        .encoder
        .encode_data(&data, &mut wire)
        .expect("chunked");
    client_side
        .encoder
        .encode_payload(b"", 100, &mut wire)
        .expect("padding frame");
    let mut received = Vec::new();
    for chunk in wire.chunks(997) {
        server_side.decoder.handle_bytes(chunk);
        received.extend(drain_payload(&mut server_side.decoder));
    }
    assert_eq!(received, data);

    let mut wire = Vec::new();
    server_side
        .encoder
        .encode_data(&data, &mut wire)
        .expect("chunked");
    client_side.decoder.handle_bytes(&wire);
    assert_eq!(
        client_side.decoder.poll_packet(),
        Ok(Some(Packet::PrngSeed(PrngSeed([9; 24]))))
    );
    assert_eq!(drain_payload(&mut client_side.decoder), data);
}

fn server_result(
    hello: &[u8],
    now: SystemTime,
    replay: &mut ReplayFilter,
) -> Result<ServerProgress, HandshakeError> {
    let mut rng = SeededEntropy::new(3);
    ServerHandshake::new(&identity(), PrngSeed([0; 24]), &mut rng)
        .handle_bytes(hello, now, replay, &mut rng)
}

#[test]
fn epoch_hour_within_one_is_accepted_and_two_is_refused() {
    let client_hour = 480_000;
    let client = ClientHandshake::new(
        &identity().cert(),
        &mut SeededEntropy::new(11),
        at_hour(client_hour),
    );
    for (server_hour, accepted) in [
        (client_hour - 2, false),
        (client_hour - 1, true),
        (client_hour, true),
        (client_hour + 1, true),
        (client_hour + 2, false),
    ] {
        let result = server_result(
            client.hello(),
            at_hour(server_hour),
            &mut ReplayFilter::new(),
        );
        match (accepted, result) {
            (true, Ok(ServerProgress::Done { reply, .. })) => {
                // The server answers with the client's hour, so the client accepts whatever
                // hour the server is in.
                let fresh = ClientHandshake::new(
                    &identity().cert(),
                    &mut SeededEntropy::new(11),
                    at_hour(client_hour),
                );
                assert!(
                    matches!(fresh.handle_bytes(&reply), Ok(ClientProgress::Done(_))),
                    "hour {server_hour}"
                );
            }
            (false, Err(HandshakeError::BadMac)) => {}
            (_, other) => panic!("server hour {server_hour}: {other:?}"),
        }
    }
}

#[test]
fn replayed_client_hello_is_refused() {
    let now = at_hour(480_000);
    let client = ClientHandshake::new(&identity().cert(), &mut SeededEntropy::new(12), now);
    let mut replay = ReplayFilter::new();
    assert!(matches!(
        server_result(client.hello(), now, &mut replay),
        Ok(ServerProgress::Done { .. })
    ));
    let later = now + Duration::from_secs(3600);
    assert!(matches!(
        server_result(client.hello(), later, &mut replay),
        Err(HandshakeError::Replayed)
    ));
}

#[test]
fn tampered_or_pipelined_hellos_are_refused() {
    let now = at_hour(480_000);
    let client = ClientHandshake::new(&identity().cert(), &mut SeededEntropy::new(13), now);
    let hello = client.hello().to_vec();
    // A flipped bit in the padding or the MAC breaks the MAC.
    for at in [40, hello.len() - 33, hello.len() - 10, hello.len() - 1] {
        let mut tampered = hello.clone();
        tampered[at] ^= 0x10;
        let result = server_result(&tampered, now, &mut ReplayFilter::new());
        assert!(
            matches!(result, Err(HandshakeError::BadMac)),
            "byte {at}: {result:?}"
        );
    }
    // A flipped bit in the representative changes the expected mark, and in the mark hides
    // it: the server does not recognise a hello and waits (obfs4proxy gives up at 8192 bytes).
    for at in [0, 31, hello.len() - 30] {
        let mut tampered = hello.clone();
        tampered[at] ^= 1;
        let result = server_result(&tampered, now, &mut ReplayFilter::new());
        assert!(
            matches!(result, Ok(ServerProgress::NeedMore(_))),
            "byte {at}: {result:?}"
        );
    }
    // Data pipelined behind the hello: the mark is no longer at the tail.
    let mut pipelined = hello.clone();
    pipelined.extend_from_slice(b"early data");
    assert!(matches!(
        server_result(&pipelined, now, &mut ReplayFilter::new()),
        Ok(ServerProgress::NeedMore(_))
    ));
    // 8192 bytes without a mark at the tail is a probe.
    assert!(matches!(
        server_result(&[0x55; 8192], now, &mut ReplayFilter::new()),
        Err(HandshakeError::MarkNotFound)
    ));
}

#[test]
fn wrong_server_is_refused_by_the_client() {
    let now = at_hour(480_000);
    let client = ClientHandshake::new(&identity().cert(), &mut SeededEntropy::new(14), now);
    let (mut reply, _) = serve(client.hello(), 0, now, 14);
    // A flipped AUTH bit passes the MAC check only if the MAC is recomputed; it is not, so the
    // client sees a MAC mismatch. A flipped MAC bit likewise.
    reply[40] ^= 1;
    let client_again = ClientHandshake::new(&identity().cert(), &mut SeededEntropy::new(14), now);
    assert!(matches!(
        client_again.handle_bytes(&reply),
        Err(HandshakeError::BadMac)
    ));
    // 8192 bytes without the server's mark.
    let client_again = ClientHandshake::new(&identity().cert(), &mut SeededEntropy::new(14), now);
    assert!(matches!(
        client_again.handle_bytes(&[0x33; 8192]),
        Err(HandshakeError::MarkNotFound)
    ));
}

#[test]
fn forged_auth_with_valid_mac_is_refused() {
    // A server that knows B and NODEID (public) but not b can produce marks and MACs, but not
    // AUTH: simulate it with an impostor identity sharing the public parts' MAC key.
    let now = at_hour(480_000);
    let real = identity();
    let client = ClientHandshake::new(&real.cert(), &mut SeededEntropy::new(15), now);
    let mark_key = crypto::MarkKey::new(&real.public_key(), &real.node_id());
    let impostor = crypto::EphemeralKey::generate(&mut SeededEntropy::new(16));
    let representative = impostor.representative();
    let fake_auth = [0x77u8; 32];
    let mark = mark_key.mac128(&[representative]);
    let epoch_text = crate::EpochHour::at(now).text();
    let mac = mark_key.mac128(&[representative, &fake_auth, &mark, &epoch_text]);
    let reply = [&representative[..], &fake_auth, &mark, &mac].concat();
    assert!(matches!(
        client.handle_bytes(&reply),
        Err(HandshakeError::BadAuth)
    ));
}
