//! Node descriptors: what a relay says about itself, signed with its Ed25519 identity key.
//! The wire format is in docs/spec/descriptor.md; [`SignedDescriptor::parse`] is the only way
//! from bytes to a [`Descriptor`], and it checks the size, every field and the signature, so a
//! `Descriptor` in hand is well-formed and was signed by the identity it names.
//!
//! Not here: whether a descriptor is current enough or newer than one already known (that is
//! the [`crate::Directory`]'s), or which layer a node is in (the [`crate::Topology`]'s).

use std::net::SocketAddr;

use pb_sphinx::{Epoch, NodeId};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};

/// The first bytes of every descriptor (format version 2).
pub const MAGIC: [u8; 4] = *b"PBD2";
/// What the signature covers, before the descriptor's body: keeps a descriptor signature from
/// being valid for anything else signed with the identity key.
const SIGNING_CONTEXT: &[u8] = b"PhantomBand descriptor v2\0";
/// Most transports a descriptor lists: one of each kind (plain UDP, QUIC, WebSocket, DoH,
/// obfs4).
pub const MAX_TRANSPORTS: usize = 5;
/// Longest parameters of one transport: a certificate pin is 32 bytes, an obfs4 bridge's
/// node id, identity key and iat-mode 53.
pub const MAX_PARAMS: usize = 64;
/// The longest descriptor on the wire: both addresses IPv6 and every transport listed
/// with the longest parameters.
pub const MAX_DESCRIPTOR_LEN: usize = 4
    + 32
    + 8
    + 1
    + 4
    + 32
    + 32
    + 2 * crate::addr::MAX_LEN
    + 32
    + 1
    + MAX_TRANSPORTS * (1 + 2 + 1 + MAX_PARAMS)
    + SIGNATURE_LEN;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// A node's role in the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Entry: clients connect here and keep their mailboxes.
    Gateway,
    /// A mix, placed in one of the mix layers each epoch.
    Mix,
    /// Exit: hands streams to the Internet under its exit policy.
    Exit,
}

impl Role {
    fn code(self) -> u8 {
        match self {
            Role::Gateway => 0,
            Role::Mix => 1,
            Role::Exit => 2,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Role::Gateway),
            1 => Some(Role::Mix),
            2 => Some(Role::Exit),
            _ => None,
        }
    }
}

/// A client-to-gateway transport (docs/spec/transports.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// Plain UDP.
    Udp,
    /// QUIC.
    Quic,
    /// WebSocket over TLS.
    WebSocket,
    /// DNS over HTTPS.
    DoH,
    /// obfs4.
    Obfs4,
}

impl Transport {
    /// Its number on the wire.
    pub fn code(self) -> u8 {
        match self {
            Transport::Udp => 0,
            Transport::Quic => 1,
            Transport::WebSocket => 2,
            Transport::DoH => 3,
            Transport::Obfs4 => 4,
        }
    }

    /// The transport numbered `code`.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Transport::Udp),
            1 => Some(Transport::Quic),
            2 => Some(Transport::WebSocket),
            3 => Some(Transport::DoH),
            4 => Some(Transport::Obfs4),
            _ => None,
        }
    }
}

/// A transport a gateway offers its clients: where it listens (the gossip address's IP,
/// this port) and what a client needs to know besides (a certificate pin for QUIC and WSS).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransportOffer {
    /// Which transport.
    pub transport: Transport,
    /// Its port, on the IP of the gossip address.
    pub port: u16,
    /// Its parameters, at most [`MAX_PARAMS`] bytes.
    pub params: Vec<u8>,
}

/// An Ed25519 public identity key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdentityKey(pub [u8; 32]);

impl IdentityKey {
    /// The node id this identity goes by in packets: bound to the key, so that nobody can
    /// claim another node's id without its identity key.
    pub fn node_id(&self) -> NodeId {
        let hash = blake3::derive_key("PhantomBand v1 node id", &self.0);
        let mut id = [0u8; 16];
        id.copy_from_slice(&hash[..16]);
        NodeId(id)
    }

    /// Whether `signature` is this key's over `context` followed by `message`.
    pub fn verify(&self, context: &[u8], message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(&with_context(context, message), signature)
            .is_ok()
    }
}

/// What a relay says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// The identity key that signs it.
    pub identity: IdentityKey,
    /// Strictly increasing per identity: a newer descriptor replaces an older one.
    pub version: u64,
    /// The node's role.
    pub role: Role,
    /// The epoch of `sphinx_current`.
    pub epoch: Epoch,
    /// The Sphinx public key for `epoch`.
    pub sphinx_current: [u8; 32],
    /// The Sphinx public key for the epoch after `epoch`, published ahead of it.
    pub sphinx_next: [u8; 32],
    /// Where PhantomBand packets go.
    pub packet_addr: SocketAddr,
    /// Where gossip goes.
    pub gossip_addr: SocketAddr,
    /// The X25519 key clients make their link's Noise handshake to (a gateway's; every
    /// relay publishes one, derived from its identity: [`IdentityKeyPair::link_secret`]).
    pub link_key: [u8; 32],
    /// Transports offered to clients (gateways), at most [`MAX_TRANSPORTS`], no transport
    /// twice.
    pub transports: Vec<TransportOffer>,
}

impl Descriptor {
    /// The node id.
    pub fn node_id(&self) -> NodeId {
        self.identity.node_id()
    }

    /// The node's Sphinx public key for `epoch`, if this descriptor has it.
    pub fn sphinx_key(&self, epoch: Epoch) -> Option<[u8; 32]> {
        if epoch == self.epoch {
            Some(self.sphinx_current)
        } else if Some(epoch.0) == self.epoch.0.checked_add(1) {
            Some(self.sphinx_next)
        } else {
            None
        }
    }

    /// The body's bytes (everything the signature covers, without the context).
    fn body(&self) -> Result<Vec<u8>, Invalid> {
        if self.transports.len() > MAX_TRANSPORTS {
            return Err(Invalid::Oversized("transports"));
        }
        let kinds: Vec<Transport> = self.transports.iter().map(|t| t.transport).collect();
        if has_repeats(&kinds) {
            return Err(Invalid::Malformed("a transport is listed twice"));
        }
        for t in &self.transports {
            if t.params.len() > MAX_PARAMS {
                return Err(Invalid::Oversized("transport parameters"));
            }
            if t.port == 0 {
                return Err(Invalid::Malformed("port 0"));
            }
        }
        for addr in [self.packet_addr, self.gossip_addr] {
            check_addr(addr)?;
        }
        let mut out = Vec::with_capacity(MAX_DESCRIPTOR_LEN);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.identity.0);
        out.extend_from_slice(&self.version.to_be_bytes());
        out.push(self.role.code());
        out.extend_from_slice(&self.epoch.0.to_be_bytes());
        out.extend_from_slice(&self.sphinx_current);
        out.extend_from_slice(&self.sphinx_next);
        for addr in [self.packet_addr, self.gossip_addr] {
            crate::addr::put(&mut out, addr);
        }
        out.extend_from_slice(&self.link_key);
        out.push(self.transports.len() as u8);
        for t in &self.transports {
            out.push(t.transport.code());
            out.extend_from_slice(&t.port.to_be_bytes());
            out.push(t.params.len() as u8);
            out.extend_from_slice(&t.params);
        }
        Ok(out)
    }
}

fn has_repeats<T: PartialEq>(items: &[T]) -> bool {
    items
        .iter()
        .enumerate()
        .any(|(i, a)| items[..i].contains(a))
}

fn check_addr(addr: SocketAddr) -> Result<(), Invalid> {
    if addr.port() == 0 {
        return Err(Invalid::Malformed("port 0"));
    }
    if addr.ip().is_unspecified() || addr.ip().is_multicast() {
        return Err(Invalid::Malformed("an unspecified or multicast address"));
    }
    Ok(())
}

/// Why a descriptor was refused. Each is counted by the [`crate::Directory`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// Longer than [`MAX_DESCRIPTOR_LEN`].
    #[error("descriptor longer than {MAX_DESCRIPTOR_LEN} bytes")]
    TooLong,
    /// A field is longer than its bound.
    #[error("field {0} is over its size bound")]
    Oversized(&'static str),
    /// The bytes do not parse.
    #[error("malformed descriptor: {0}")]
    Malformed(&'static str),
    /// The signature does not verify under the identity key it names.
    #[error("bad signature")]
    BadSignature,
    /// Neither of its Sphinx keys is for the current epoch or the next.
    #[error("stale epoch")]
    StaleEpoch,
    /// Its epoch is further ahead than the next one.
    #[error("epoch too far ahead")]
    FutureEpoch,
    /// Its version is not newer than the one known for the same identity.
    #[error("not newer than the known version")]
    OldVersion,
    /// A new identity, and the directory already holds its maximum.
    #[error("directory full")]
    DirectoryFull,
    /// Its gossip or packet address is already claimed by another identity held. The first
    /// claim stands until it expires, so that a newcomer cannot take over a running relay's
    /// address (and with it that relay's place in SWIM).
    #[error("address claimed by another identity")]
    AddressTaken,
    /// A Sphinx key is not a usable X25519 public key (non-canonical, off the curve, or of
    /// small order): every route through the relay would fail, or every client's shared
    /// secret with it would be one of a few values.
    #[error("unusable Sphinx key")]
    BadKey,
    /// Its packet or gossip address is special-purpose (loopback, private, link-local, ...)
    /// and the network does not allow that range: gossip would steer traffic at a service
    /// no relay runs.
    #[error(
        "special-purpose address (a relay may name one only in a range the network file's allow_prefix lists)"
    )]
    SpecialAddress,
    /// Its packet address is on another IP than its gossip address. Relays prove an address
    /// by a probe to the gossip address, signed back by the identity; a packet address
    /// elsewhere would be unproven, and links would pour constant-rate traffic at whatever
    /// host it names.
    #[error("packet address on another IP than the gossip address")]
    SplitAddress,
}

impl Invalid {
    /// Every reason, in counter order.
    pub const ALL: [Invalid; 12] = [
        Invalid::TooLong,
        Invalid::Oversized(""),
        Invalid::Malformed(""),
        Invalid::BadSignature,
        Invalid::StaleEpoch,
        Invalid::FutureEpoch,
        Invalid::OldVersion,
        Invalid::DirectoryFull,
        Invalid::AddressTaken,
        Invalid::BadKey,
        Invalid::SpecialAddress,
        Invalid::SplitAddress,
    ];

    /// Index into [`Invalid::ALL`] (details ignored).
    pub fn index(self) -> usize {
        match self {
            Invalid::TooLong => 0,
            Invalid::Oversized(_) => 1,
            Invalid::Malformed(_) => 2,
            Invalid::BadSignature => 3,
            Invalid::StaleEpoch => 4,
            Invalid::FutureEpoch => 5,
            Invalid::OldVersion => 6,
            Invalid::DirectoryFull => 7,
            Invalid::AddressTaken => 8,
            Invalid::BadKey => 9,
            Invalid::SpecialAddress => 10,
            Invalid::SplitAddress => 11,
        }
    }

    /// A metric-friendly name.
    pub fn name(self) -> &'static str {
        match self {
            Invalid::TooLong => "too_long",
            Invalid::Oversized(_) => "oversized_field",
            Invalid::Malformed(_) => "malformed",
            Invalid::BadSignature => "bad_signature",
            Invalid::StaleEpoch => "stale_epoch",
            Invalid::FutureEpoch => "future_epoch",
            Invalid::OldVersion => "old_version",
            Invalid::DirectoryFull => "directory_full",
            Invalid::AddressTaken => "address_taken",
            Invalid::BadKey => "bad_key",
            Invalid::SpecialAddress => "special_address",
            Invalid::SplitAddress => "split_address",
        }
    }
}

/// A relay's identity key pair. The seed is zeroized on drop; it never appears in `Debug`.
pub struct IdentityKeyPair {
    seed: [u8; 32],
    pair: Ed25519KeyPair,
}

impl core::fmt::Debug for IdentityKeyPair {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("IdentityKeyPair")
            .field("public", &self.public())
            .finish_non_exhaustive()
    }
}

impl Drop for IdentityKeyPair {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.seed);
    }
}

impl IdentityKeyPair {
    /// The key pair of a 32-byte Ed25519 seed (from the OS RNG at keygen, or a key file).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        // A 32-byte seed is always a valid Ed25519 private key; ring only refuses other lengths.
        match Ed25519KeyPair::from_seed_unchecked(seed) {
            Ok(pair) => Self { seed: *seed, pair },
            Err(_) => unreachable!("ring accepts every 32-byte Ed25519 seed"),
        }
    }

    /// The secret of the relay's link key (the X25519 key clients make their Noise
    /// handshakes to): derived from the identity seed, so it lives as long as the identity
    /// and needs no file of its own.
    pub fn link_secret(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(blake3::derive_key(
            "PhantomBand v1 gateway link key",
            &self.seed,
        ))
    }

    /// The public link key (what descriptors carry).
    pub fn link_public(&self) -> [u8; 32] {
        curve25519_dalek::MontgomeryPoint::mul_base_clamped(*self.link_secret()).to_bytes()
    }

    /// The public identity key.
    pub fn public(&self) -> IdentityKey {
        let mut key = [0u8; 32];
        key.copy_from_slice(self.pair.public_key().as_ref());
        IdentityKey(key)
    }

    /// Signs `descriptor`, which must name this key as its identity.
    pub fn sign(&self, descriptor: &Descriptor) -> Result<SignedDescriptor, Invalid> {
        if descriptor.identity != self.public() {
            return Err(Invalid::BadSignature);
        }
        let mut bytes = descriptor.body()?;
        let signature = self.sign_message(SIGNING_CONTEXT, &bytes);
        bytes.extend_from_slice(&signature);
        Ok(SignedDescriptor {
            descriptor: descriptor.clone(),
            bytes,
        })
    }

    /// Signs `context` followed by `message`. Every kind of signed thing has its own
    /// context (a string ending in NUL), so that no signature counts as another kind's.
    pub fn sign_message(&self, context: &[u8], message: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut signature = [0u8; SIGNATURE_LEN];
        signature.copy_from_slice(self.pair.sign(&with_context(context, message)).as_ref());
        signature
    }
}

fn with_context(context: &[u8], message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(context.len() + message.len());
    out.extend_from_slice(context);
    out.extend_from_slice(message);
    out
}

/// A descriptor with its signature: the verified [`Descriptor`] and the exact bytes that were
/// signed, which are what gossip passes on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedDescriptor {
    descriptor: Descriptor,
    bytes: Vec<u8>,
}

impl SignedDescriptor {
    /// The descriptor.
    pub fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }

    /// The wire bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Parses and verifies wire bytes: bounded size, every field well-formed, the signature
    /// valid under the identity key the descriptor names.
    pub fn parse(bytes: &[u8]) -> Result<Self, Invalid> {
        Self::parse_checked(bytes, true)
    }

    /// Parses wire bytes that k stewards already attested, byte for byte (their checkpoint
    /// signs the hash of the exact set, signatures included, which they verified before
    /// admitting it): every check of [`SignedDescriptor::parse`] but the Ed25519
    /// signature, which would add nothing and costs a phone most of a check. Never for
    /// bytes no verified checkpoint names.
    pub fn parse_attested(bytes: &[u8]) -> Result<Self, Invalid> {
        Self::parse_checked(bytes, false)
    }

    fn parse_checked(bytes: &[u8], verify: bool) -> Result<Self, Invalid> {
        if bytes.len() > MAX_DESCRIPTOR_LEN {
            return Err(Invalid::TooLong);
        }
        let Some(body_len) = bytes.len().checked_sub(SIGNATURE_LEN) else {
            return Err(Invalid::Malformed("shorter than a signature"));
        };
        let (body, signature) = bytes.split_at(body_len);
        let mut r = Reader(body);
        if r.take::<4>()? != MAGIC {
            return Err(Invalid::Malformed("not a PhantomBand descriptor v2"));
        }
        let identity = IdentityKey(r.take::<32>()?);
        let version = u64::from_be_bytes(r.take::<8>()?);
        let role = Role::from_code(r.byte()?).ok_or(Invalid::Malformed("unknown role"))?;
        let epoch = Epoch(u32::from_be_bytes(r.take::<4>()?));
        let sphinx_current = r.take::<32>()?;
        let sphinx_next = r.take::<32>()?;
        let packet_addr = r.addr()?;
        let gossip_addr = r.addr()?;
        let link_key = r.take::<32>()?;
        let count = usize::from(r.byte()?);
        if count > MAX_TRANSPORTS {
            return Err(Invalid::Oversized("transports"));
        }
        let mut transports = Vec::with_capacity(count);
        for _ in 0..count {
            let transport =
                Transport::from_code(r.byte()?).ok_or(Invalid::Malformed("unknown transport"))?;
            let port = u16::from_be_bytes(r.take::<2>()?);
            let len = usize::from(r.byte()?);
            if len > MAX_PARAMS {
                return Err(Invalid::Oversized("transport parameters"));
            }
            let params = r.bytes(len)?.to_vec();
            transports.push(TransportOffer {
                transport,
                port,
                params,
            });
        }
        if !r.0.is_empty() {
            return Err(Invalid::Malformed("trailing bytes"));
        }
        let descriptor = Descriptor {
            identity,
            version,
            role,
            epoch,
            sphinx_current,
            sphinx_next,
            packet_addr,
            gossip_addr,
            link_key,
            transports,
        };
        // Reject what `sign` would refuse to produce (repeats, bad addresses): one canonical
        // encoding per descriptor.
        if descriptor.body()? != body {
            return Err(Invalid::Malformed("not in canonical form"));
        }
        if verify && !identity.verify(SIGNING_CONTEXT, body, signature) {
            return Err(Invalid::BadSignature);
        }
        Ok(Self {
            descriptor,
            bytes: bytes.to_vec(),
        })
    }
}

/// Reads fields off the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], Invalid> {
        let Some((head, rest)) = self.0.split_first_chunk::<N>() else {
            return Err(Invalid::Malformed("truncated"));
        };
        self.0 = rest;
        Ok(*head)
    }

    fn byte(&mut self) -> Result<u8, Invalid> {
        Ok(self.take::<1>()?[0])
    }

    fn bytes(&mut self, n: usize) -> Result<&[u8], Invalid> {
        let (head, rest) = self
            .0
            .split_at_checked(n)
            .ok_or(Invalid::Malformed("truncated"))?;
        self.0 = rest;
        Ok(head)
    }

    fn addr(&mut self) -> Result<SocketAddr, Invalid> {
        let addr = crate::addr::get(&mut self.0).map_err(|e| match e {
            crate::addr::BadAddr::Truncated => Invalid::Malformed("truncated"),
            crate::addr::BadAddr::UnknownFamily => Invalid::Malformed("unknown address family"),
        })?;
        check_addr(addr)?;
        Ok(addr)
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn sample(pair: &IdentityKeyPair, version: u64, epoch: u32) -> Descriptor {
        Descriptor {
            identity: pair.public(),
            version,
            role: Role::Mix,
            epoch: Epoch(epoch),
            sphinx_current: [1; 32],
            sphinx_next: [2; 32],
            packet_addr: "198.18.0.1:47470".parse().unwrap(),
            gossip_addr: "[fd00::1]:47471".parse().unwrap(),
            link_key: pair.link_public(),
            transports: vec![
                TransportOffer {
                    transport: Transport::Udp,
                    port: 47480,
                    params: vec![],
                },
                TransportOffer {
                    transport: Transport::Quic,
                    port: 443,
                    params: vec![7; MAX_PARAMS],
                },
            ],
        }
    }

    #[test]
    fn round_trip_and_every_flipped_bit_is_refused() {
        let pair = IdentityKeyPair::from_seed(&[7; 32]);
        let signed = pair.sign(&sample(&pair, 3, 10)).unwrap();
        let parsed = SignedDescriptor::parse(signed.bytes()).unwrap();
        assert_eq!(parsed, signed);
        assert_eq!(parsed.descriptor().node_id(), pair.public().node_id());
        for bit in 0..signed.bytes().len() * 8 {
            let mut bytes = signed.bytes().to_vec();
            bytes[bit / 8] ^= 1 << (bit % 8);
            assert!(
                SignedDescriptor::parse(&bytes).is_err(),
                "bit {bit} flipped and still accepted"
            );
        }
    }

    #[test]
    fn attested_bytes_skip_only_the_signature_check() {
        let pair = IdentityKeyPair::from_seed(&[7; 32]);
        let signed = pair.sign(&sample(&pair, 3, 10)).unwrap();
        let mut bad_signature = signed.bytes().to_vec();
        *bad_signature.last_mut().unwrap() ^= 1;
        assert_eq!(
            SignedDescriptor::parse(&bad_signature),
            Err(Invalid::BadSignature)
        );
        let attested = SignedDescriptor::parse_attested(&bad_signature).unwrap();
        assert_eq!(attested.descriptor(), signed.descriptor());
        // Every other check still holds: a body bit flipped, or bytes cut short.
        let mut bad_body = signed.bytes().to_vec();
        bad_body[4 + 32 + 8] = 0xee; // the role
        assert!(SignedDescriptor::parse_attested(&bad_body).is_err());
        assert!(SignedDescriptor::parse_attested(&signed.bytes()[..40]).is_err());
    }

    #[test]
    fn bounds_and_shapes_are_refused_with_their_reason() {
        let pair = IdentityKeyPair::from_seed(&[7; 32]);
        let good = pair.sign(&sample(&pair, 1, 1)).unwrap();
        assert_eq!(
            SignedDescriptor::parse(&vec![0; MAX_DESCRIPTOR_LEN + 1]),
            Err(Invalid::TooLong)
        );
        assert!(matches!(
            SignedDescriptor::parse(&good.bytes()[..good.bytes().len() - 1]),
            Err(Invalid::Malformed(_) | Invalid::BadSignature)
        ));
        let udp = TransportOffer {
            transport: Transport::Udp,
            port: 1,
            params: vec![],
        };
        let mut too_many = sample(&pair, 1, 1);
        too_many.transports = vec![udp.clone(); MAX_TRANSPORTS + 1];
        assert_eq!(pair.sign(&too_many), Err(Invalid::Oversized("transports")));
        let mut repeated = sample(&pair, 1, 1);
        repeated.transports = vec![udp.clone(), udp.clone()];
        assert!(matches!(pair.sign(&repeated), Err(Invalid::Malformed(_))));
        let mut long_params = sample(&pair, 1, 1);
        long_params.transports[1].params = vec![0; MAX_PARAMS + 1];
        assert_eq!(
            pair.sign(&long_params),
            Err(Invalid::Oversized("transport parameters"))
        );
        let mut transport_port0 = sample(&pair, 1, 1);
        transport_port0.transports[0].port = 0;
        assert!(matches!(
            pair.sign(&transport_port0),
            Err(Invalid::Malformed(_))
        ));
        let mut port0 = sample(&pair, 1, 1);
        port0.packet_addr = "198.18.0.1:0".parse().unwrap();
        assert!(matches!(pair.sign(&port0), Err(Invalid::Malformed(_))));
        // Someone else's descriptor cannot be signed with this key.
        let other = IdentityKeyPair::from_seed(&[8; 32]);
        assert_eq!(pair.sign(&sample(&other, 1, 1)), Err(Invalid::BadSignature));
        // A transport count over the bound, re-signed so only the bound is wrong.
        let mut none = sample(&pair, 1, 1);
        none.transports.clear();
        let mut body = none.body().unwrap();
        let count_at = body.len() - 1;
        body[count_at] = MAX_TRANSPORTS as u8 + 1;
        for _ in 0..=MAX_TRANSPORTS {
            body.extend_from_slice(&[0, 0, 1, 0]);
        }
        let sig = pair.sign_message(SIGNING_CONTEXT, &body);
        body.extend_from_slice(sig.as_ref());
        assert_eq!(
            SignedDescriptor::parse(&body),
            Err(Invalid::Oversized("transports"))
        );
    }

    #[test]
    fn sphinx_keys_cover_the_epoch_and_the_next() {
        let pair = IdentityKeyPair::from_seed(&[7; 32]);
        let d = sample(&pair, 1, 10);
        assert_eq!(d.sphinx_key(Epoch(10)), Some([1; 32]));
        assert_eq!(d.sphinx_key(Epoch(11)), Some([2; 32]));
        assert_eq!(d.sphinx_key(Epoch(9)), None);
        assert_eq!(d.sphinx_key(Epoch(12)), None);
        let mut last = sample(&pair, 1, u32::MAX);
        last.epoch = Epoch(u32::MAX);
        assert_eq!(last.sphinx_key(Epoch(0)), None);
    }
}
