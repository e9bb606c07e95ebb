//! Return routability before membership (docs/spec/descriptor.md, "Probes"). A member gets
//! SWIM probes, gossip and directory pushes, hundreds of times what it sends, so a node
//! takes SWIM packets from an address only once that address has answered a probe: a padded
//! datagram carrying a cookie (a keyed hash of the address and the period) that the address
//! echoes, signed by the identity whose descriptor claims the address. A spoofed source never
//! sees the cookie; the echo is no larger than the probe, and the probe smaller than the
//! SWIM packet that prompts it, so neither amplifies.

use std::{net::SocketAddr, time::Duration};

use crate::{IdentityKey, IdentityKeyPair, descriptor::SIGNATURE_LEN};

/// Kind byte of a probe.
pub const KIND_PROBE: u8 = 4;
/// Kind byte of a probe's echo.
pub const KIND_ECHO: u8 = 5;
/// Signing context of an echo.
pub const ECHO_CONTEXT: &[u8] = b"PhantomBand v1 probe echo\0";
/// A cookie.
pub type Cookie = [u8; 16];
/// An echo: the kind, the cookie and the signature over the cookie and the prober's address.
pub const ECHO_LEN: usize = 1 + 16 + SIGNATURE_LEN;
/// A probe is padded to this length, so that its echo is never larger.
pub const PROBE_LEN: usize = ECHO_LEN;

/// A probe carrying `cookie`.
pub fn probe(cookie: &Cookie) -> Vec<u8> {
    let mut out = vec![0u8; PROBE_LEN];
    out[0] = KIND_PROBE;
    out[1..17].copy_from_slice(cookie);
    out
}

/// The cookie of a probe's body (after the kind byte), if it is one of full length.
pub fn parse_probe(body: &[u8]) -> Option<Cookie> {
    if body.len() + 1 < PROBE_LEN {
        return None;
    }
    body.first_chunk::<16>().copied()
}

/// What an echo's signature covers, after [`ECHO_CONTEXT`]: the cookie and the address the
/// probe came from (the prober's, as the answering node saw it).
fn signed(cookie: &Cookie, prober: SocketAddr) -> Vec<u8> {
    let mut out = cookie.to_vec();
    out.extend_from_slice(prober.to_string().as_bytes());
    out
}

/// The echo of a probe with `cookie` from `prober`, signed by `identity`.
pub fn echo(identity: &IdentityKeyPair, cookie: &Cookie, prober: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(ECHO_LEN);
    out.push(KIND_ECHO);
    out.extend_from_slice(cookie);
    out.extend_from_slice(&identity.sign_message(ECHO_CONTEXT, &signed(cookie, prober)));
    out
}

/// An echo's body (after the kind byte): the cookie and the signature.
pub fn parse_echo(body: &[u8]) -> Option<(Cookie, &[u8; SIGNATURE_LEN])> {
    if body.len() + 1 != ECHO_LEN {
        return None;
    }
    let (cookie, signature) = body.split_first_chunk::<16>()?;
    Some((*cookie, signature.first_chunk::<SIGNATURE_LEN>()?))
}

/// Whether `signature` is `identity`'s over an echo of `cookie` to `prober` (us).
pub fn echo_signed_by(
    identity: &IdentityKey,
    cookie: &Cookie,
    prober: SocketAddr,
    signature: &[u8; SIGNATURE_LEN],
) -> bool {
    identity.verify(ECHO_CONTEXT, &signed(cookie, prober), signature)
}

/// Return-routability cookies for addresses: a keyed hash of the address and the period,
/// valid in its period and the next. Gossip probes use them, and so does a gateway's client
/// link (a hello's cookie).
pub struct Cookies {
    key: [u8; 32],
    period: Duration,
}

impl core::fmt::Debug for Cookies {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Cookies").finish_non_exhaustive()
    }
}

impl Drop for Cookies {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

impl Cookies {
    /// Cookies keyed from `identity` and `seed` (a signature is deterministic and
    /// unpredictable without the key, so the cookie key is too), of `period` each.
    pub fn new(identity: &IdentityKeyPair, seed: u64, period: Duration) -> Self {
        let signature =
            identity.sign_message(b"PhantomBand v1 probe cookie key\0", &seed.to_le_bytes());
        Self::with_key(
            blake3::derive_key("PhantomBand v1 probe cookies", &signature),
            period,
        )
    }

    /// Cookies under `key` (32 secret random bytes; zeroized on drop), of `period` each.
    pub fn with_key(key: [u8; 32], period: Duration) -> Self {
        Self {
            key,
            period: period.max(Duration::from_secs(1)),
        }
    }

    fn at(&self, addr: SocketAddr, period: u64) -> Cookie {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(addr.to_string().as_bytes());
        hasher.update(&period.to_be_bytes());
        let mut cookie = [0u8; 16];
        cookie.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
        cookie
    }

    fn period(&self, now: Duration) -> u64 {
        (now.as_millis() / self.period.as_millis()) as u64
    }

    /// The cookie for `addr` now.
    pub fn cookie(&self, addr: SocketAddr, now: Duration) -> Cookie {
        self.at(addr, self.period(now))
    }

    /// Whether `cookie` is `addr`'s for this period or the last.
    pub fn valid(&self, addr: SocketAddr, cookie: &Cookie, now: Duration) -> bool {
        use subtle::ConstantTimeEq as _;
        let period = self.period(now);
        let current = self.at(addr, period).ct_eq(cookie);
        let last = self.at(addr, period.saturating_sub(1)).ct_eq(cookie);
        bool::from(current | last)
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn an_echo_proves_the_address_and_the_key_and_is_no_larger_than_the_probe() {
        let us: SocketAddr = "198.18.0.1:47471".parse().unwrap();
        let them: SocketAddr = "198.18.0.2:47471".parse().unwrap();
        let ours = IdentityKeyPair::from_seed(&[1; 32]);
        let theirs = IdentityKeyPair::from_seed(&[2; 32]);
        let cookies = Cookies::new(&ours, 7, Duration::from_secs(60));
        let cookie = cookies.cookie(them, Duration::from_secs(10));
        let p = probe(&cookie);
        assert_eq!(parse_probe(&p[1..]), Some(cookie));
        assert_eq!(
            parse_probe(&p[1..20]),
            None,
            "an unpadded probe gets no echo"
        );
        let e = echo(&theirs, &cookie, us);
        assert!(e.len() <= p.len());
        let (c, signature) = parse_echo(&e[1..]).unwrap();
        assert_eq!(parse_echo(&e[1..e.len() - 1]), None, "truncated");
        assert!(cookies.valid(them, &c, Duration::from_secs(70)));
        assert!(
            !cookies.valid(them, &c, Duration::from_secs(130)),
            "two periods on"
        );
        assert!(
            !cookies.valid(us, &c, Duration::from_secs(10)),
            "another address"
        );
        assert!(echo_signed_by(&theirs.public(), &c, us, signature));
        assert!(!echo_signed_by(&ours.public(), &c, us, signature));
        assert!(!echo_signed_by(&theirs.public(), &c, them, signature));
        // Another node's cookies differ.
        let other = Cookies::new(&theirs, 7, Duration::from_secs(60));
        assert!(!other.valid(them, &cookie, Duration::from_secs(10)));
    }
}
