//! obfs4's primitives: truncated HMAC, Elligator2 ephemeral keys, the ntor variant obfs4proxy
//! runs (not Tor's: `B|B|X|Y|PROTOID|ID` and `:key_verify`) and the 144-byte key expansion.

use std::fmt;

use curve25519_elligator2::{MapToPointVariant, MontgomeryPoint, Randomized};
use ring::{hkdf, hmac};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::Entropy;
use crate::error::HandshakeError;
use crate::identity::{IdentityPublicKey, NodeId};

const PROTOID: &[u8] = b"ntor-curve25519-sha256-1";
const T_MAC: &[u8] = b"ntor-curve25519-sha256-1:mac";
const T_KEY: &[u8] = b"ntor-curve25519-sha256-1:key_extract";
const T_VERIFY: &[u8] = b"ntor-curve25519-sha256-1:key_verify";
const M_EXPAND: &[u8] = b"ntor-curve25519-sha256-1:key_expand";

/// Bytes of key material per direction: secretbox key, nonce prefix, SipHash key, SipHash IV.
pub(crate) const DIRECTION_KEY_LENGTH: usize = 32 + 16 + 16 + 8;

/// HMAC-SHA256 over the concatenation of `parts`.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut context = hmac::Context::with_key(&key);
    for part in parts {
        context.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(context.sign().as_ref());
    out
}

/// The handshake MAC key `B || NODEID`, and `HMAC-SHA256-128` under it (marks and MACs).
#[derive(Clone)]
pub(crate) struct MarkKey([u8; 52]);

impl MarkKey {
    pub(crate) fn new(public_key: &IdentityPublicKey, node_id: &NodeId) -> Self {
        let mut key = [0u8; 52];
        key[..32].copy_from_slice(&public_key.0);
        key[32..].copy_from_slice(&node_id.0);
        Self(key)
    }

    pub(crate) fn mac128(&self, parts: &[&[u8]]) -> [u8; 16] {
        let full = hmac_sha256(&self.0, parts);
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }
}

/// 16-byte equality in constant time.
pub(crate) fn mac_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// An ephemeral key whose public half is sent as an Elligator2 representative. The public key
/// is the "dirty" one (with a torsion component, as obfs4proxy ≥ 0.0.12 makes it) and exactly
/// what the peer decodes the representative to.
pub(crate) struct EphemeralKey {
    secret: Zeroizing<[u8; 32]>,
    public: [u8; 32],
    representative: [u8; 32],
}

impl fmt::Debug for EphemeralKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EphemeralKey([scrubbed])")
    }
}

impl EphemeralKey {
    /// Draws keys until one has a representative (about half do).
    pub(crate) fn generate(rng: &mut dyn Entropy) -> Self {
        loop {
            let mut secret = Zeroizing::new([0u8; 32]);
            rng.fill_bytes(&mut secret[..]);
            let mut tweak = [0u8; 1];
            rng.fill_bytes(&mut tweak);
            let representative = Randomized::to_representative(&secret, tweak[0]);
            if let Some(representative) = Option::<[u8; 32]>::from(representative) {
                let public = Randomized::mul_base_clamped(*secret)
                    .to_montgomery()
                    .to_bytes();
                return Self {
                    secret,
                    public,
                    representative,
                };
            }
        }
    }

    pub(crate) fn public(&self) -> &[u8; 32] {
        &self.public
    }

    pub(crate) fn representative(&self) -> &[u8; 32] {
        &self.representative
    }

    pub(crate) fn secret(&self) -> &[u8; 32] {
        &self.secret
    }
}

/// The Montgomery u-coordinate a representative stands for (its top two bits are ignored).
pub(crate) fn decode_representative(representative: &[u8; 32]) -> [u8; 32] {
    MontgomeryPoint::map_to_point(representative).to_bytes()
}

/// X25519 of `secret` with the u-coordinate `peer`, refusing an all-zero result.
pub(crate) fn x25519(
    secret: &[u8; 32],
    peer: &[u8; 32],
) -> Result<Zeroizing<[u8; 32]>, HandshakeError> {
    let shared = Zeroizing::new(MontgomeryPoint(*peer).mul_clamped(*secret).to_bytes());
    if bool::from(shared.ct_eq(&[0u8; 32])) {
        return Err(HandshakeError::ZeroSharedSecret);
    }
    Ok(shared)
}

/// What ntor gives both sides.
pub(crate) struct NtorOutput {
    pub(crate) key_seed: Zeroizing<[u8; 32]>,
    pub(crate) auth: [u8; 32],
}

/// The public inputs of the transcript: `B`, `NODEID`, and the two decoded ephemeral keys.
pub(crate) struct Transcript<'a> {
    pub(crate) identity: &'a IdentityPublicKey,
    pub(crate) node_id: &'a NodeId,
    pub(crate) client_public: &'a [u8; 32],
    pub(crate) server_public: &'a [u8; 32],
}

/// obfs4's ntor from the two shared secrets (`s1` ephemeral-ephemeral, `s2` with `B`).
pub(crate) fn ntor(s1: &[u8; 32], s2: &[u8; 32], transcript: &Transcript<'_>) -> NtorOutput {
    let b = &transcript.identity.0[..];
    let suffix: [&[u8]; 6] = [
        b,
        b,
        transcript.client_public,
        transcript.server_public,
        PROTOID,
        &transcript.node_id.0,
    ];
    let mut secret_input: Vec<&[u8]> = vec![s1, s2];
    secret_input.extend_from_slice(&suffix);
    let key_seed = Zeroizing::new(hmac_sha256(T_KEY, &secret_input));
    let verify = Zeroizing::new(hmac_sha256(T_VERIFY, &secret_input));
    let mut auth_input: Vec<&[u8]> = vec![&verify[..]];
    auth_input.extend_from_slice(&suffix);
    auth_input.push(b"Server");
    let auth = hmac_sha256(T_MAC, &auth_input);
    NtorOutput { key_seed, auth }
}

/// One direction's keys, the 72-byte half of the expansion split as obfs4proxy's framing does.
pub(crate) struct DirectionKeys {
    pub(crate) secretbox_key: Zeroizing<[u8; 32]>,
    pub(crate) nonce_prefix: [u8; 16],
    pub(crate) mask_seed: Zeroizing<[u8; 24]>,
}

impl DirectionKeys {
    fn from_half(half: &[u8]) -> Self {
        let mut secretbox_key = Zeroizing::new([0u8; 32]);
        secretbox_key.copy_from_slice(&half[..32]);
        let mut nonce_prefix = [0u8; 16];
        nonce_prefix.copy_from_slice(&half[32..48]);
        let mut mask_seed = Zeroizing::new([0u8; 24]);
        mask_seed.copy_from_slice(&half[48..72]);
        Self {
            secretbox_key,
            nonce_prefix,
            mask_seed,
        }
    }
}

/// The session's keys: `okm[0..72]` client→server, `okm[72..144]` server→client (the spec
/// says the reverse; obfs4proxy does this).
pub(crate) struct SessionKeys {
    pub(crate) client_to_server: DirectionKeys,
    pub(crate) server_to_client: DirectionKeys,
}

struct OkmLength;

impl hkdf::KeyType for OkmLength {
    fn len(&self) -> usize {
        2 * DIRECTION_KEY_LENGTH
    }
}

/// `HKDF-SHA256(IKM = KEY_SEED, salt = t_key, info = m_expand, L = 144)`.
pub(crate) fn expand_keys(key_seed: &[u8; 32]) -> SessionKeys {
    let okm = expand_okm(key_seed);
    SessionKeys {
        client_to_server: DirectionKeys::from_half(&okm[..DIRECTION_KEY_LENGTH]),
        server_to_client: DirectionKeys::from_half(&okm[DIRECTION_KEY_LENGTH..]),
    }
}

fn expand_okm(key_seed: &[u8; 32]) -> Zeroizing<[u8; 2 * DIRECTION_KEY_LENGTH]> {
    let mut okm = Zeroizing::new([0u8; 2 * DIRECTION_KEY_LENGTH]);
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, T_KEY).extract(key_seed);
    // HKDF-SHA256 fails only for outputs over 255 * 32 bytes; 144 is far below, so neither
    // call can fail and the all-zero fallback is unreachable.
    if let Ok(expanded) = prk.expand(&[M_EXPAND], OkmLength) {
        let _ = expanded.fill(&mut okm[..]);
    }
    okm
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{hex, hex32};

    /// curve25519-elligator2's `ntor_valid_test_vectors`, two of them re-checked independently:
    /// (private key, clean public key, dirty public key, representative with tweak 0).
    const VECTORS: [[&str; 4]; 2] = [
        [
            "b531f4243aa4a013f0f87a2eaaec47807844a2f375d40b774e824d37a196b2b6",
            "aa2d8f1c47f717d96edbf503ff0d9fa782849c486ad8a7c15b2bf4a793902c35",
            "04a47c7903661acf03cd71e5400c8b96650bb3620d2ae91b674713ca5f2ac673",
            "f30130eb1c192cda48a503932c8751232fd784ab7792acba499807e78084a909",
        ],
        [
            "d63f245d00c57683e8f3f7174b2601aa89319d39823e42aa388fb4f349b8df16",
            "97ed90e92c02c5a488d4d9589174867d0d640c460caf4c61833f6c6cb5f5f874",
            "3741b60e375affc17d0dba931bb0f5f4540c31c67a979c3399596103283dd27d",
            "3a50a823f482a7af1ac898446850dd643b9a68b530df4cebe7d9f108ebe8933b",
        ],
    ];

    #[test]
    fn elligator2_matches_known_answers() {
        for [secret, clean, dirty, representative] in VECTORS {
            let secret = hex32(secret);
            let key = EphemeralKey::generate(&mut crate::testutil::ScriptedEntropy::new(
                [&secret[..], &[0u8]].concat(),
            ));
            assert_eq!(key.representative().to_vec(), hex(representative));
            assert_eq!(key.public().to_vec(), hex(dirty));
            assert_eq!(
                decode_representative(&hex32(representative)).to_vec(),
                hex(dirty)
            );
            // The torsion component vanishes in X25519: dirty and clean keys agree.
            let peer = hex32("e79a617a4d7838ecfb2fb97fa4de488eae4e304be991676c16c55bf562ae2424");
            let with_dirty = MontgomeryPoint(hex32(dirty))
                .mul_clamped([7u8; 32])
                .to_bytes();
            let with_clean = MontgomeryPoint(hex32(clean))
                .mul_clamped([7u8; 32])
                .to_bytes();
            assert_eq!(with_dirty, with_clean);
            assert_ne!(
                x25519(&secret, &peer).map(|s| *s),
                Err(HandshakeError::ZeroSharedSecret)
            );
        }
    }

    #[test]
    fn representative_top_bits_are_ignored_when_decoding() {
        let representative = hex32(VECTORS[0][3]);
        let mut tweaked = representative;
        tweaked[31] |= 0xc0;
        assert_eq!(
            decode_representative(&tweaked),
            decode_representative(&representative)
        );
    }

    #[test]
    fn low_order_peer_key_is_refused() {
        assert_eq!(
            x25519(&[9u8; 32], &[0u8; 32]).map(|s| *s),
            Err(HandshakeError::ZeroSharedSecret)
        );
    }

    /// RFC 5869 written out with HMAC: PRK = HMAC(t_key, KEY_SEED), T(i) = HMAC(PRK, T(i-1) |
    /// m_expand | i). Catches a swapped salt/info or a missing extract step.
    #[test]
    fn expansion_is_hkdf_sha256_with_ntor_labels() {
        let key_seed = [0x42u8; 32];
        let okm = expand_okm(&key_seed);
        let prk = hmac_sha256(T_KEY, &[&key_seed[..]]);
        let mut previous: Vec<u8> = Vec::new();
        let mut by_hand = Vec::new();
        for counter in 1u8..=5 {
            let block = hmac_sha256(&prk, &[&previous[..], M_EXPAND, &[counter]]);
            by_hand.extend_from_slice(&block);
            previous = block.to_vec();
        }
        assert_eq!(okm[..], by_hand[..144]);
    }
}
