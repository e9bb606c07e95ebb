//! What a prober sends and sees, on sockets in a namespace: a TCP connection fed bytes and
//! watched until it ends ([`tcp`]), datagrams and their answers ([`udp`]), a TLS handshake
//! and HTTP requests over it ([`tls_http`]).

use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{SocketAddr, TcpStream, UdpSocket},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use pb_testbed::Netns;

/// The most reply bytes kept.
const KEEP: usize = 64 * 1024;

/// How a TCP connection ended, as the prober saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The server closed it (FIN).
    Closed,
    /// The server reset it (RST).
    Reset,
    /// Still open when the prober gave up.
    Open,
}

/// What one TCP probe saw.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The bytes the server sent (at most 64 KiB).
    pub reply: Vec<u8>,
    /// How it ended.
    pub end: End,
    /// When, from the connect.
    pub after: Duration,
}

/// Connects from `ns` to `to`, sends `send`, and reads until the server ends the connection
/// or `wait` passes.
pub fn tcp(ns: &Netns, to: SocketAddr, send: &[u8], wait: Duration) -> anyhow::Result<Seen> {
    let mut stream = ns
        .in_netns(|| TcpStream::connect_timeout(&to, Duration::from_secs(5)))?
        .with_context(|| format!("connecting to {to}"))?;
    let start = Instant::now();
    let _ = stream.set_nodelay(true);
    if !send.is_empty()
        && let Err(e) = stream.write_all(send)
    {
        let end = if e.kind() == ErrorKind::ConnectionReset {
            End::Reset
        } else {
            End::Closed
        };
        return Ok(Seen {
            reply: Vec::new(),
            end,
            after: start.elapsed(),
        });
    }
    watch(&mut stream, start, wait)
}

/// Reads `stream` until it ends or `wait` (from `start`) passes.
fn watch(stream: &mut TcpStream, start: Instant, wait: Duration) -> anyhow::Result<Seen> {
    stream.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let end = loop {
        match stream.read(&mut buf) {
            Ok(0) => break End::Closed,
            Ok(n) => {
                let room = KEEP.saturating_sub(reply.len());
                reply.extend_from_slice(&buf[..n.min(room)]);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if start.elapsed() >= wait {
                    break End::Open;
                }
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break End::Reset,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break End::Reset,
        }
    };
    Ok(Seen {
        reply,
        end,
        after: start.elapsed(),
    })
}

/// Sends `datagram` from `ns` to `to` and collects what comes back within `wait`.
pub fn udp(
    ns: &Netns,
    to: SocketAddr,
    datagram: &[u8],
    wait: Duration,
) -> anyhow::Result<Vec<Vec<u8>>> {
    let socket = ns
        .in_netns(|| UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], 0))))?
        .context("a UDP socket")?;
    socket.connect(to)?;
    socket.send(datagram)?;
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 65_536];
    while start.elapsed() < wait {
        match socket.recv(&mut buf) {
            Ok(n) => got.push(buf[..n].to_vec()),
            // An ICMP port unreachable: the prober sees "refused", as from a closed port.
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                got.push(b"ICMP port unreachable".to_vec());
                break;
            }
            Err(_) => {}
        }
    }
    Ok(got)
}

/// What a TLS server said in its handshake, and its answers to HTTP requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSeen {
    /// The version, cipher suite and ALPN protocol it chose, or why the handshake failed.
    pub handshake: String,
    /// Each request's answer: the status line and header names in order (values of
    /// `Date`, `Last-Modified`, `ETag` and `Content-Length` left out), the body's length.
    pub answers: Vec<String>,
    /// How the connection ended after the last answer.
    pub end: String,
}

/// A TLS handshake from `ns` with `to` (SNI `sni`, ALPN `h2, http/1.1` offered, any
/// certificate taken), then `requests` one after the other on the connection.
pub fn tls_http(
    ns: &Netns,
    to: SocketAddr,
    sni: Option<&str>,
    requests: &[&[u8]],
) -> anyhow::Result<TlsSeen> {
    let mut config = rustls::ClientConfig::builder_with_provider(pb_transport::tls::provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let name = match sni {
        Some(n) => rustls::pki_types::ServerName::try_from(n.to_owned())?,
        None => rustls::pki_types::ServerName::IpAddress(to.ip().into()),
    };
    let mut tls = rustls::ClientConnection::new(Arc::new(config), name)?;
    let mut tcp = ns
        .in_netns(|| TcpStream::connect_timeout(&to, Duration::from_secs(5)))?
        .with_context(|| format!("connecting to {to}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    while tls.is_handshaking() {
        if let Err(e) = tls.complete_io(&mut tcp) {
            return Ok(TlsSeen {
                handshake: format!("failed: {e}"),
                answers: Vec::new(),
                end: String::new(),
            });
        }
    }
    let handshake = format!(
        "{:?} {:?} alpn {}",
        tls.protocol_version(),
        tls.negotiated_cipher_suite().map(|s| s.suite()),
        tls.alpn_protocol()
            .map_or("none".into(), |p| String::from_utf8_lossy(p).into_owned())
    );
    let mut stream = rustls::Stream::new(&mut tls, &mut tcp);
    let mut answers = Vec::new();
    let mut end = "open".to_owned();
    for request in requests {
        if stream.write_all(request).is_err() {
            end = "closed before the request".into();
            break;
        }
        match read_answer(&mut stream) {
            Ok(Some(a)) => answers.push(a),
            Ok(None) => {
                end = "closed without an answer".into();
                break;
            }
            Err(e) => {
                end = format!("failed: {e}");
                break;
            }
        }
    }
    Ok(TlsSeen {
        handshake,
        answers,
        end,
    })
}

/// One HTTP/1.1 answer from `stream`: its summary, `None` if the connection ended first.
fn read_answer(stream: &mut impl std::io::Read) -> anyhow::Result<Option<String>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(0) => return Ok(None),
            Ok(_) => head.push(byte[0]),
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        if head.len() > 64 * 1024 {
            anyhow::bail!("an answer head over 64 KiB");
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n").filter(|l| !l.is_empty());
    let status = lines.next().unwrap_or_default().to_owned();
    let mut names = Vec::new();
    let mut length = 0usize;
    for line in lines {
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        let lower = name.trim().to_ascii_lowercase();
        if lower == "content-length" {
            length = value.trim().parse().unwrap_or(0);
        }
        names.push(match lower.as_str() {
            "date" | "last-modified" | "etag" | "content-length" => name.trim().to_owned(),
            _ => format!("{}: {}", name.trim(), value.trim()),
        });
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body)?;
    Ok(Some(format!(
        "{status} [{}] body {length} bytes {:016x}",
        names.join(", "),
        fnv(&body)
    )))
}

/// A short fingerprint of `bytes` (FNV-1a), to compare bodies in a table.
pub fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Takes any certificate: a prober looks at what a server says, not whom to trust.
#[derive(Debug)]
struct AnyCertificate;

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        pb_transport::tls::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
