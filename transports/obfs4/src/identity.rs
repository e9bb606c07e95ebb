//! A bridge's identity: node ID, identity keypair, the `cert=` that publishes them, `iat-mode=`.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use curve25519_elligator2::EdwardsPoint;
use zeroize::Zeroizing;

use crate::Entropy;
use crate::error::{CertError, IatModeError};

/// The 20-byte node ID a bridge publishes in its cert; both handshake MACs are keyed with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeId(pub [u8; 20]);

/// A bridge's long-term X25519 public key `B` (the clean key, `X25519(b, 9)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdentityPublicKey(pub [u8; 32]);

/// A bridge's identity: node ID and long-term keypair. `Debug` prints no secret.
pub struct ServerIdentity {
    node_id: NodeId,
    secret: Zeroizing<[u8; 32]>,
    public: IdentityPublicKey,
}

impl fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerIdentity")
            .field("node_id", &self.node_id)
            .field("secret", &"[scrubbed]")
            .field("public", &self.public)
            .finish()
    }
}

impl ServerIdentity {
    /// A fresh identity: 20 random bytes of node ID and 32 random bytes of private key.
    pub fn generate(rng: &mut dyn Entropy) -> Self {
        let mut node_id = [0u8; 20];
        rng.fill_bytes(&mut node_id);
        let mut secret = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut secret[..]);
        Self::from_secret(NodeId(node_id), secret)
    }

    /// An identity from stored parts (obfs4proxy's `node-id` and `private-key`). The public key
    /// is always derived from the private key, never read, as obfs4proxy does.
    pub fn from_secret(node_id: NodeId, secret: Zeroizing<[u8; 32]>) -> Self {
        let public = EdwardsPoint::mul_base_clamped(*secret)
            .to_montgomery()
            .to_bytes();
        Self {
            node_id,
            secret,
            public: IdentityPublicKey(public),
        }
    }

    /// The node ID.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The public key `B`.
    pub fn public_key(&self) -> IdentityPublicKey {
        self.public
    }

    /// The cert clients put in their bridge line.
    pub fn cert(&self) -> Cert {
        Cert {
            node_id: self.node_id,
            public_key: self.public,
        }
    }

    pub(crate) fn secret(&self) -> &[u8; 32] {
        &self.secret
    }
}

/// What a client knows of a bridge: the bridge line's `cert=`, i.e. base64 without padding of
/// `NODEID || B`. Only [`Cert::from_str`] (which checks the length) or an identity builds one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cert {
    /// The bridge's node ID.
    pub node_id: NodeId,
    /// The bridge's identity public key.
    pub public_key: IdentityPublicKey,
}

/// Length of a cert's text: 52 bytes in base64 without the trailing `==`.
const CERT_TEXT_LENGTH: usize = 70;

/// Go's `base64.StdEncoding` as obfs4proxy uses it: padding stripped on output; on input the
/// unused low bits of the last character are ignored, as Go's non-strict decoder does.
const CERT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

impl FromStr for Cert {
    type Err = CertError;

    fn from_str(text: &str) -> Result<Self, CertError> {
        if text.len() != CERT_TEXT_LENGTH {
            return Err(CertError::WrongLength(text.len()));
        }
        let mut bytes = Zeroizing::new([0u8; 54]);
        let written = CERT_BASE64
            .decode_slice(text, &mut bytes[..])
            .map_err(|_| CertError::NotBase64)?;
        // 70 base64 characters always decode to 52 bytes; anything else is a bad character.
        if written != 52 {
            return Err(CertError::NotBase64);
        }
        let mut node_id = [0u8; 20];
        node_id.copy_from_slice(&bytes[..20]);
        let mut public_key = [0u8; 32];
        public_key.copy_from_slice(&bytes[20..52]);
        Ok(Self {
            node_id: NodeId(node_id),
            public_key: IdentityPublicKey(public_key),
        })
    }
}

impl fmt::Display for Cert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut bytes = [0u8; 52];
        bytes[..20].copy_from_slice(&self.node_id.0);
        bytes[20..].copy_from_slice(&self.public_key.0);
        f.write_str(&CERT_BASE64.encode(bytes))
    }
}

/// The bridge line's `iat-mode=`: how a side shapes its own writes. Not negotiated and not on
/// the wire; each side applies its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum IatMode {
    /// One write per caller write, padded once.
    #[default]
    None,
    /// Writes cut into segments with random delays.
    Enabled,
    /// Writes of random lengths with random delays, regardless of the data.
    Paranoid,
}

impl FromStr for IatMode {
    type Err = IatModeError;

    fn from_str(text: &str) -> Result<Self, IatModeError> {
        match text {
            "0" => Ok(Self::None),
            "1" => Ok(Self::Enabled),
            "2" => Ok(Self::Paranoid),
            _ => Err(IatModeError),
        }
    }
}

impl IatMode {
    /// Its number in a bridge line (0, 1 or 2).
    pub fn number(self) -> u8 {
        match self {
            Self::None => 0,
            Self::Enabled => 1,
            Self::Paranoid => 2,
        }
    }

    /// The mode numbered `n`.
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            0 => Some(Self::None),
            1 => Some(Self::Enabled),
            2 => Some(Self::Paranoid),
            _ => None,
        }
    }
}

impl fmt::Display for IatMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digit = match self {
            Self::None => "0",
            Self::Enabled => "1",
            Self::Paranoid => "2",
        };
        f.write_str(digit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{hex, hex32};

    /// The notes' §1.3 example, checked live against obfs4proxy's bridge line.
    const EXAMPLE_CERT: &str =
        "AAECAwQFBgcICQoLDA0ODxAREhPnmmF6TXg47PsvuX+k3kiOrk4wS+mRZ2wWxVv1Yq4kJA";

    fn example_identity() -> ServerIdentity {
        let mut node_id = [0u8; 20];
        for (i, byte) in node_id.iter_mut().enumerate() {
            *byte = i as u8;
        }
        let secret = hex32("a83fdd04eb9ed77a2b38d86092a09a1cecfb93a7bdec0da35e542775b2e7af6e");
        ServerIdentity::from_secret(NodeId(node_id), Zeroizing::new(secret))
    }

    #[test]
    fn identity_and_cert_match_obfs4proxy() {
        let identity = example_identity();
        assert_eq!(
            identity.public_key().0.to_vec(),
            hex("e79a617a4d7838ecfb2fb97fa4de488eae4e304be991676c16c55bf562ae2424")
        );
        assert_eq!(identity.cert().to_string(), EXAMPLE_CERT);
        assert_eq!(EXAMPLE_CERT.parse::<Cert>(), Ok(identity.cert()));
    }

    #[test]
    fn bad_certs_are_typed_errors() {
        assert_eq!("".parse::<Cert>(), Err(CertError::WrongLength(0)));
        assert_eq!(
            EXAMPLE_CERT[..69].parse::<Cert>(),
            Err(CertError::WrongLength(69))
        );
        assert_eq!(
            format!("{EXAMPLE_CERT}==").parse::<Cert>(),
            Err(CertError::WrongLength(72))
        );
        let mut bad = EXAMPLE_CERT.to_owned();
        bad.replace_range(10..11, "!");
        assert_eq!(bad.parse::<Cert>(), Err(CertError::NotBase64));
        let mut padded = EXAMPLE_CERT[..68].to_owned();
        padded.push_str("==");
        assert_eq!(padded.parse::<Cert>(), Err(CertError::NotBase64));
    }

    #[test]
    fn debug_does_not_print_the_secret() {
        let printed = format!("{:?}", example_identity());
        assert!(printed.contains("[scrubbed]"));
        assert!(
            !printed.contains("168, 63"),
            "secret's first bytes leaked: {printed}"
        );
    }

    #[test]
    fn iat_mode_parses_only_0_1_2() {
        for (text, mode) in [
            ("0", IatMode::None),
            ("1", IatMode::Enabled),
            ("2", IatMode::Paranoid),
        ] {
            assert_eq!(text.parse::<IatMode>(), Ok(mode));
            assert_eq!(mode.to_string(), text);
        }
        for text in ["", "3", "-1", "00", " 1", "one"] {
            assert_eq!(text.parse::<IatMode>(), Err(IatModeError), "{text:?}");
        }
    }
}
