//! The TLS identity the TLS-based disguises (QUIC, WSS) share: a gateway's self-signed
//! certificate, and the client's check of it by a pin of its public key.
//!
//! A gateway has no certificate from a public authority (it would name the gateway to
//! anyone who reads certificate transparency logs). It makes its own, and its descriptor
//! carries the **pin**: SHA-256 of the certificate's SubjectPublicKeyInfo (DER). A client
//! accepts exactly the key it pinned, whatever the certificate's names or dates say, and
//! still checks the handshake's signature by that key. A web client without the pin sees a
//! self-signed certificate, as it would on many a small server.

use std::sync::Arc;

use rustls::{
    DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms},
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime},
};

/// SHA-256 of a certificate's SubjectPublicKeyInfo.
pub type Pin = [u8; 32];

/// A gateway's certificate and key (ECDSA P-256, the most common key on the web).
pub struct TlsIdentity {
    /// The self-signed certificate, DER.
    pub cert_der: Vec<u8>,
    /// Its private key, PKCS#8 DER. Never logged.
    key_der: zeroize::Zeroizing<Vec<u8>>,
    /// The name the certificate is for (the client sends it as SNI).
    pub name: String,
}

impl core::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Why a TLS identity could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate could not be generated.
    #[error("generating a certificate: {0}")]
    Generate(String),
    /// The certificate is not X.509 DER we can read.
    #[error("the certificate cannot be read: {0}")]
    Certificate(String),
}

impl TlsIdentity {
    /// A fresh self-signed certificate for `name`, with a fresh key.
    pub fn generate(name: &str) -> Result<Self, TlsError> {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec![name.to_owned()])
                .map_err(|e| TlsError::Generate(e.to_string()))?;
        Ok(Self {
            cert_der: cert.der().to_vec(),
            key_der: zeroize::Zeroizing::new(signing_key.serialize_der()),
            name: name.to_owned(),
        })
    }

    /// A fresh self-signed certificate for `name` on a stored key (PKCS#8 DER, from
    /// [`TlsIdentity::key_der`] of an earlier identity): the pin stays the key's, whatever
    /// the certificate's dates.
    pub fn with_key(key_der: &[u8], name: &str) -> Result<Self, TlsError> {
        let key =
            rcgen::KeyPair::try_from(key_der).map_err(|e| TlsError::Generate(e.to_string()))?;
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .and_then(|p| p.self_signed(&key))
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        Ok(Self {
            cert_der: cert.der().to_vec(),
            key_der: zeroize::Zeroizing::new(key_der.to_vec()),
            name: name.to_owned(),
        })
    }

    /// The identity from a certificate and its PKCS#8 key (both DER), as stored.
    pub fn from_der(cert_der: Vec<u8>, key_der: Vec<u8>, name: &str) -> Result<Self, TlsError> {
        pin_of(&cert_der)?;
        Ok(Self {
            cert_der,
            key_der: zeroize::Zeroizing::new(key_der),
            name: name.to_owned(),
        })
    }

    /// The private key, PKCS#8 DER.
    pub fn key_der(&self) -> &[u8] {
        &self.key_der
    }

    /// The certificate and key in PEM (for TLS stacks that read files).
    pub fn to_pem(&self) -> (String, zeroize::Zeroizing<String>) {
        let pem = |tag: &str, der: &[u8]| pem_encode(tag, der);
        (
            pem("CERTIFICATE", &self.cert_der),
            zeroize::Zeroizing::new(pem("PRIVATE KEY", &self.key_der)),
        )
    }

    /// The pin a client checks this identity by.
    pub fn pin(&self) -> Pin {
        // Checked when made: `generate` and `from_der` both read the certificate.
        pin_of(&self.cert_der).unwrap_or([0; 32])
    }

    /// A rustls server configuration presenting this identity with `alpn` protocols.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<rustls::ServerConfig, TlsError> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.to_vec()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Generate(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(self.cert_der.clone())], key)
            .map_err(|e| TlsError::Certificate(e.to_string()))?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }
}

fn pem_encode(tag: &str, der: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(char::from(TABLE[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {tag}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {tag}-----\n"));
    out
}

/// The secret part of the path a TLS transport's link lives at (QUIC's request, WSS's
/// WebSocket): SHA-256 of a context, the transport's number, the gateway's link key and
/// its pin, cut to 16 bytes. Whoever has the gateway's descriptor (or network file entry)
/// can compute it; a prober who only knows the address cannot, and gets the cover site.
pub fn path_secret(kind: crate::TransportKind, link_key: &[u8; 32], pin: &Pin) -> [u8; 16] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"PhantomBand v1 link path\0");
    ctx.update(&[kind as u8]);
    ctx.update(link_key);
    ctx.update(pin);
    let mut out = [0u8; 16];
    out.copy_from_slice(&ctx.finish().as_ref()[..16]);
    out
}

/// The pin of a DER certificate: SHA-256 of its SubjectPublicKeyInfo.
pub fn pin_of(cert_der: &[u8]) -> Result<Pin, TlsError> {
    let der = CertificateDer::from(cert_der);
    let cert = webpki::EndEntityCert::try_from(&der)
        .map_err(|e| TlsError::Certificate(format!("{e:?}")))?;
    let spki = cert.subject_public_key_info();
    let digest = ring::digest::digest(&ring::digest::SHA256, spki.as_ref());
    let mut pin = [0u8; 32];
    pin.copy_from_slice(digest.as_ref());
    Ok(pin)
}

/// The crypto provider every TLS-based disguise uses: rustls on ring.
///
/// rustls deprecates its ring provider because it lacks post-quantum key exchange (browsers
/// now offer X25519MLKEM768, so a ClientHello without it is a fingerprint; see the threat
/// model). The design names ring; moving to aws-lc-rs is a decision for later.
pub fn provider() -> Arc<CryptoProvider> {
    #[expect(deprecated, reason = "the design names ring (see above)")]
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls client configuration that accepts exactly the key `pin` names, with `alpn`.
pub fn client_config(pin: Pin, alpn: &[&[u8]]) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let verifier = PinnedServer {
        pin,
        algorithms: provider.signature_verification_algorithms,
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Generate(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// Accepts the server's certificate when its key is the pinned one, and nothing else; the
/// handshake's signature is still checked with that key.
#[derive(Debug)]
pub struct PinnedServer {
    pin: Pin,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedServer {
    /// A verifier for `pin`.
    pub fn new(pin: Pin) -> Self {
        Self {
            pin,
            algorithms: provider().signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use subtle::ConstantTimeEq as _;
        let pin = pin_of(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        if bool::from(pin.ct_eq(&self.pin)) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    /// Runs a rustls handshake in memory; whether it completed.
    fn handshake(server: rustls::ServerConfig, client: rustls::ClientConfig) -> bool {
        let mut s = rustls::ServerConnection::new(Arc::new(server)).unwrap();
        let name = ServerName::try_from("example.org").unwrap();
        let mut c = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
        for _ in 0..10 {
            let mut wire = Vec::new();
            c.write_tls(&mut wire).unwrap();
            if s.read_tls(&mut &wire[..]).is_err() || s.process_new_packets().is_err() {
                return false;
            }
            let mut wire = Vec::new();
            s.write_tls(&mut wire).unwrap();
            if c.read_tls(&mut &wire[..]).is_err() || c.process_new_packets().is_err() {
                return false;
            }
            if !c.is_handshaking() && !s.is_handshaking() {
                return true;
            }
        }
        false
    }

    #[test]
    fn the_pinned_key_is_accepted_and_another_is_refused() {
        let gateway = TlsIdentity::generate("www.example.org").unwrap();
        let other = TlsIdentity::generate("www.example.org").unwrap();
        assert_ne!(gateway.pin(), other.pin());
        let server = || gateway.server_config(&[b"h2"]).unwrap();
        assert!(handshake(
            server(),
            client_config(gateway.pin(), &[b"h2"]).unwrap()
        ));
        assert!(!handshake(
            server(),
            client_config(other.pin(), &[b"h2"]).unwrap()
        ));
        // The same key in a new certificate keeps its pin.
        let again =
            TlsIdentity::from_der(gateway.cert_der.clone(), gateway.key_der().to_vec(), "x")
                .unwrap();
        assert_eq!(again.pin(), gateway.pin());
    }

    #[test]
    fn paths_differ_by_transport_key_and_pin() {
        use crate::TransportKind::{Quic, Wss};
        let p = path_secret(Quic, &[1; 32], &[2; 32]);
        assert_eq!(p, path_secret(Quic, &[1; 32], &[2; 32]));
        for other in [
            path_secret(Wss, &[1; 32], &[2; 32]),
            path_secret(Quic, &[3; 32], &[2; 32]),
            path_secret(Quic, &[1; 32], &[3; 32]),
        ] {
            assert_ne!(p, other);
        }
    }

    #[test]
    fn pem_is_what_openssl_writes() {
        assert_eq!(
            pem_encode("X", b"any carnal pleas"),
            "-----BEGIN X-----\nYW55IGNhcm5hbCBwbGVhcw==\n-----END X-----\n"
        );
        assert!(pin_of(b"not a certificate").is_err());
    }
}
