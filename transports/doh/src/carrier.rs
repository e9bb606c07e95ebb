//! The client's DNS link over DNS-over-HTTPS (RFC 8484): [`DohCarrier`], a
//! [`ClientCarrier`] whose queries go, as HTTP/2 POSTs of `application/dns-message`, to a
//! recursive resolver, which asks the gateway's name server for them as it would any name.
//!
//! HTTP/2 is the `h2` crate's over rustls, on a thread of the carrier's own running a
//! single-threaded tokio runtime; the link's records cross to it through the sans-IO
//! [`DohClient`] behind a mutex. Queries leave at a constant rate whatever is queued
//! (`query_rate` a second, each name padded to one length), so the access link shows one
//! steady flow of DoH requests to the resolver, busy or idle.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pb_transport::{CarrierError, ClientCarrier, RECORD_LEN, Record, TransportKind};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::client::DohClient;
use crate::name::Zone;
use crate::rate::QueryRate;

/// Queries a second by default: about 35 records a second up and some 250 down
/// (docs/spec/transports.md states the rates).
pub const DEFAULT_QUERY_RATE: u32 = 400;
/// Queries without an answer at once: past that a slot goes unused (counted).
const MAX_IN_FLIGHT: usize = 256;
/// How long a query may wait for its answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest answer body taken.
const MAX_ANSWER: usize = 65_535;
/// How long the TCP, TLS and HTTP/2 handshakes may take together.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the resolver is and how to talk to it.
#[derive(Clone, Debug)]
pub struct DohConfig {
    /// The resolver's address.
    pub resolver: SocketAddr,
    /// Its name for TLS and HTTP's `:authority` (an IP address sends no SNI).
    pub server_name: ServerName<'static>,
    /// `:authority` as written in the URL.
    pub authority: String,
    /// The DoH path, e.g. `/dns-query`.
    pub path: String,
    /// TLS settings (the roots that vouch for the resolver); ALPN is set to `h2` here.
    pub tls: Arc<rustls::ClientConfig>,
    /// The gateway's zone.
    pub zone: Zone,
    /// Queries a second.
    pub query_rate: u32,
}

/// Why a resolver URL is not usable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not `https://HOST[:PORT]/PATH`.
    #[error("{0:?}: not https://HOST[:PORT]/PATH")]
    Shape(String),
    /// The host has no address.
    #[error("{0:?}: cannot resolve its host")]
    Host(String),
}

/// The resolver's address, TLS name, `:authority` and path, from `url`
/// (`https://HOST[:PORT]/PATH`). A host name is looked up with the system's resolver: give
/// an address to avoid that lookup.
pub fn parse_url(url: &str) -> Result<(SocketAddr, ServerName<'static>, String, String), UrlError> {
    let shape = || UrlError::Shape(url.to_owned());
    let rest = url.strip_prefix("https://").ok_or_else(shape)?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/dns-query"),
    };
    if authority.is_empty() || path.contains(['?', '#', ' ']) {
        return Err(shape());
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            if let Some(h6) = h.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
                (h6, p.parse::<u16>().map_err(|_| shape())?)
            } else if h.contains(':') {
                (authority, 443)
            } else {
                (h, p.parse::<u16>().map_err(|_| shape())?)
            }
        }
        _ => (authority.trim_start_matches('[').trim_end_matches(']'), 443),
    };
    let server_name = ServerName::try_from(host.to_owned()).map_err(|_| shape())?;
    let resolver = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port),
        Err(_) => std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| UrlError::Host(url.to_owned()))?,
    };
    Ok((resolver, server_name, authority.to_owned(), path.to_owned()))
}

/// Where the padding of query names comes from (the OS's randomness, outside tests).
pub type Padding = Box<dyn FnMut(&mut [u8]) + Send>;

/// Why the resolver's roots cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RootsError {
    /// The file cannot be read.
    #[error("cannot read {0}: {1}")]
    Read(String, String),
    /// It holds no certificate.
    #[error("no certificate in {0}")]
    Empty(String),
    /// rustls refused the settings.
    #[error("TLS settings: {0}")]
    Tls(String),
}

/// TLS settings that trust the certificates of the PEM file `path` (a resolver's own, or a
/// system bundle: certificates rustls cannot use are skipped).
pub fn tls_trusting(path: &std::path::Path) -> Result<rustls::ClientConfig, RootsError> {
    use rustls::pki_types::{CertificateDer, pem::PemObject as _};
    let shown = path.display().to_string();
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| RootsError::Read(shown.clone(), e.to_string()))?;
    for cert in certs {
        let cert = cert.map_err(|e| RootsError::Read(shown.clone(), e.to_string()))?;
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(RootsError::Empty(shown));
    }
    Ok(
        rustls::ClientConfig::builder_with_provider(pb_transport::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| RootsError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// What the carrier and its thread share.
#[derive(Debug, Default)]
struct Shared {
    client: Mutex<Option<DohClient>>,
    /// The query rate, judged from the answers.
    rate: Mutex<Option<QueryRate>>,
    /// The rate now (for the counters).
    query_rate: AtomicU64,
    open: AtomicBool,
    failed: Mutex<Option<String>>,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    records_sent: AtomicU64,
    records_received: AtomicU64,
    slots_skipped: AtomicU64,
    timeouts: AtomicU64,
    http_errors: AtomicU64,
    in_flight: AtomicUsize,
}

impl Shared {
    fn with_client<T>(&self, f: impl FnOnce(&mut DohClient) -> T) -> Option<T> {
        let mut guard = self.client.lock().unwrap_or_else(PoisonError::into_inner);
        guard.as_mut().map(f)
    }

    fn judge(&self, answered: bool) {
        let mut guard = self.rate.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(rate) = guard.as_mut() {
            if answered {
                rate.answered();
            } else {
                rate.failed();
            }
        }
    }

    fn fail(&self, why: String) {
        let mut guard = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        guard.get_or_insert(why);
    }
}

/// A client's DNS link to its gateway through a DoH resolver.
pub struct DohCarrier {
    shared: Arc<Shared>,
    /// Readable when the thread has news (a record, the link open, a failure).
    wake: UnixStream,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
    up_rate: u32,
    down_rate: u32,
}

impl core::fmt::Debug for DohCarrier {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DohCarrier").finish_non_exhaustive()
    }
}

impl DohCarrier {
    /// Starts the carrier's thread, which connects to the resolver; `session` is the
    /// session id (8 random bytes) and `pad` the randomness for names' padding.
    pub fn connect(
        config: &DohConfig,
        session: [u8; 8],
        pad: Padding,
    ) -> Result<Self, CarrierError> {
        let client = DohClient::new(config.zone.clone(), session);
        let rate = config.query_rate.max(1);
        // Upstream: a query carries `upstream_room` record bytes; leave a tenth spare.
        let up_rate = (u64::from(rate) * client.upstream_room() as u64 * 9
            / (10 * RECORD_LEN as u64))
            .max(1) as u32;
        // Downstream: answers of up to 1232 bytes; the name takes a fifth of it back.
        let down_rate = (u64::from(rate) * 900 * 9 / (10 * RECORD_LEN as u64)).max(1) as u32;
        let shared = Arc::new(Shared {
            client: Mutex::new(Some(client)),
            rate: Mutex::new(Some(QueryRate::new(rate))),
            query_rate: AtomicU64::new(u64::from(QueryRate::new(rate).rate())),
            ..Shared::default()
        });
        let (wake, waker) = UnixStream::pair().map_err(|e| CarrierError::io("a socket pair", e))?;
        wake.set_nonblocking(true)
            .map_err(|e| CarrierError::io("a socket pair", e))?;
        waker
            .set_nonblocking(true)
            .map_err(|e| CarrierError::io("a socket pair", e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (config, thread_shared, thread_stop) = (config.clone(), shared.clone(), stop.clone());
        let thread = thread::Builder::new()
            .name("pb-doh".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        thread_shared.fail(format!("starting the DoH runtime: {e}"));
                        return;
                    }
                };
                let waker = Waker(waker);
                let result =
                    runtime.block_on(run(&config, &thread_shared, &thread_stop, &waker, pad));
                if let Err(why) = result {
                    thread_shared.fail(why);
                }
                thread_shared.open.store(false, Ordering::Release);
                waker.wake();
            })
            .map_err(|e| CarrierError::io("starting the DoH thread", e))?;
        Ok(Self {
            shared,
            wake,
            stop,
            thread: Some(thread),
            up_rate,
            down_rate,
        })
    }
}

impl Drop for DohCarrier {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl AsRawFd for DohCarrier {
    fn as_raw_fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }
}

impl ClientCarrier for DohCarrier {
    fn kind(&self) -> TransportKind {
        TransportKind::Doh
    }

    fn drive(&mut self, _now: Instant) -> Result<(), CarrierError> {
        let mut sink = [0u8; 64];
        while let Ok(n) = (&self.wake).read(&mut sink) {
            if n == 0 {
                break;
            }
        }
        let failed = self
            .shared
            .failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match failed {
            Some(why) => Err(CarrierError::Closed(why)),
            None => Ok(()),
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        None
    }

    fn is_open(&self) -> bool {
        self.shared.open.load(Ordering::Acquire)
    }

    fn send(&mut self, record: &Record) -> bool {
        if !self.is_open() {
            return false;
        }
        let queued = self.shared.with_client(|c| c.send(record)).unwrap_or(false);
        if queued {
            self.shared.records_sent.fetch_add(1, Ordering::Relaxed);
        }
        queued
    }

    fn recv(&mut self) -> Option<Record> {
        let record = self.shared.with_client(DohClient::recv).flatten()?;
        self.shared.records_received.fetch_add(1, Ordering::Relaxed);
        Some(record)
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let s = &self.shared;
        let (queries, answers, bad, lost) = s
            .with_client(|c| (c.queries, c.answers, c.bad_answers, c.lost()))
            .unwrap_or_default();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            ("records_sent", load(&s.records_sent)),
            ("records_received", load(&s.records_received)),
            ("bytes_sent", load(&s.bytes_sent)),
            ("bytes_received", load(&s.bytes_received)),
            ("queries", queries),
            ("answers", answers),
            ("bad_answers", bad),
            ("records_lost", lost),
            ("slots_skipped", load(&s.slots_skipped)),
            ("query_rate", load(&s.query_rate)),
            ("timeouts", load(&s.timeouts)),
            ("http_errors", load(&s.http_errors)),
        ]
    }

    fn max_record_rate(&self) -> Option<u32> {
        Some(self.down_rate)
    }

    fn max_upstream_rate(&self) -> Option<u32> {
        Some(self.up_rate)
    }
}

/// The thread's end of the wake socket.
struct Waker(UnixStream);

impl Waker {
    fn wake(&self) {
        // A full socket already says there is news.
        let _ = (&self.0).write(&[1]);
    }
}

/// A TCP stream counting its bytes into the carrier's counters.
struct Counted {
    inner: tokio::net::TcpStream,
    shared: Arc<Shared>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.shared
            .bytes_received
            .fetch_add(n as u64, Ordering::Relaxed);
        poll
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &poll {
            self.shared
                .bytes_sent
                .fetch_add(*n as u64, Ordering::Relaxed);
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Connects, then sends a query every `1 / query_rate` seconds until stopped or the
/// connection fails.
async fn run(
    config: &DohConfig,
    shared: &Arc<Shared>,
    stop: &AtomicBool,
    waker: &Waker,
    mut pad: Padding,
) -> Result<(), String> {
    let connect = async {
        let tcp = tokio::net::TcpStream::connect(config.resolver)
            .await
            .map_err(|e| format!("connecting to the DoH resolver: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let mut tls = (*config.tls).clone();
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let tls = tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(
                config.server_name.clone(),
                Counted {
                    inner: tcp,
                    shared: shared.clone(),
                },
            )
            .await
            .map_err(|e| format!("TLS with the DoH resolver: {e}"))?;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err("the DoH resolver does not speak HTTP/2".to_owned());
        }
        h2::client::Builder::new()
            .initial_window_size(1 << 20)
            .initial_connection_window_size(4 << 20)
            .handshake::<_, Bytes>(tls)
            .await
            .map_err(|e| format!("HTTP/2 with the DoH resolver: {e}"))
    };
    let (send, connection) = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| "the DoH resolver did not answer in 10 s".to_owned())??;
    let (dead_tx, mut dead_rx) = tokio::sync::oneshot::channel::<String>();
    tokio::spawn(async move {
        let why = match connection.await {
            Ok(()) => "the DoH resolver closed the connection".to_owned(),
            Err(e) => format!("the DoH connection failed: {e}"),
        };
        let _ = dead_tx.send(why);
    });
    shared.open.store(true, Ordering::Release);
    waker.wake();
    let uri: http::Uri = format!("https://{}{}", config.authority, config.path)
        .parse()
        .map_err(|e| format!("the DoH URL: {e}"))?;
    let every = |rate: u32| {
        let mut ticks =
            tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        ticks
    };
    let mut ticks = every(shared.query_rate.load(Ordering::Relaxed) as u32);
    // The waker is shared with the answer tasks.
    let waker = Arc::new(Waker(waker.0.try_clone().map_err(|e| e.to_string())?));
    while !stop.load(Ordering::Acquire) {
        tokio::select! {
            why = &mut dead_rx => {
                return Err(why.unwrap_or_else(|_| "the DoH connection ended".to_owned()));
            }
            _ = ticks.tick() => {}
        }
        // The resolver's failures over the last second set the rate (its limits).
        let changed = shared
            .rate
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
            .and_then(|r| r.update(Instant::now()));
        if let Some(rate) = changed {
            shared.query_rate.store(u64::from(rate), Ordering::Relaxed);
            ticks = every(rate);
        }
        if shared.in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
            shared.slots_skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let Some(body) = shared.with_client(|c| c.query(&mut *pad)) else {
            return Ok(());
        };
        let request = http::Request::post(uri.clone())
            .header(http::header::ACCEPT, "application/dns-message")
            .header(http::header::CONTENT_TYPE, "application/dns-message")
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(())
            .map_err(|e| e.to_string())?;
        let mut ready = send
            .clone()
            .ready()
            .await
            .map_err(|e| format!("the DoH connection failed: {e}"))?;
        let (response, mut stream) = match ready.send_request(request, false) {
            Ok(r) => r,
            Err(e) => return Err(format!("the DoH connection failed: {e}")),
        };
        if stream.send_data(Bytes::from(body), true).is_err() {
            shared.http_errors.fetch_add(1, Ordering::Relaxed);
            shared.judge(false);
            continue;
        }
        shared.in_flight.fetch_add(1, Ordering::Relaxed);
        let (shared, waker) = (shared.clone(), waker.clone());
        tokio::spawn(async move {
            let answer = tokio::time::timeout(ANSWER_TIMEOUT, read_answer(response)).await;
            shared.in_flight.fetch_sub(1, Ordering::Relaxed);
            match answer {
                Err(_) => {
                    shared.timeouts.fetch_add(1, Ordering::Relaxed);
                    shared.judge(false);
                }
                Ok(Err(())) => {
                    shared.http_errors.fetch_add(1, Ordering::Relaxed);
                    shared.judge(false);
                }
                Ok(Ok(bytes)) => {
                    let (taken, news) = shared
                        .with_client(|c| (c.answer(&bytes).is_ok(), c.recv_ready()))
                        .unwrap_or((false, false));
                    // SERVFAIL or REFUSED from the resolver: its limits.
                    shared.judge(taken);
                    if news {
                        waker.wake();
                    }
                }
            }
        });
    }
    Ok(())
}

/// The body of a 200 answer of type `application/dns-message`.
async fn read_answer(response: h2::client::ResponseFuture) -> Result<Vec<u8>, ()> {
    let response = response.await.map_err(|_| ())?;
    if response.status() != http::StatusCode::OK {
        return Err(());
    }
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|_| ())?;
        let _ = body.flow_control().release_capacity(chunk.len());
        if bytes.len() + chunk.len() > MAX_ANSWER {
            return Err(());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn urls_are_read_or_refused() {
        let (addr, name, authority, path) = parse_url("https://10.0.0.1/dns-query").unwrap();
        assert_eq!(addr, "10.0.0.1:443".parse().unwrap());
        assert!(matches!(name, ServerName::IpAddress(_)));
        assert_eq!(
            (authority.as_str(), path.as_str()),
            ("10.0.0.1", "/dns-query")
        );
        let (addr, _, authority, path) = parse_url("https://10.0.0.1:8443").unwrap();
        assert_eq!(addr.port(), 8443);
        assert_eq!(
            (authority.as_str(), path.as_str()),
            ("10.0.0.1:8443", "/dns-query")
        );
        let (addr, _, _, _) = parse_url("https://[fd00::1]:444/q").unwrap();
        assert_eq!(addr, "[fd00::1]:444".parse().unwrap());
        for bad in [
            "http://10.0.0.1/",
            "https:///x",
            "https://10.0.0.1:x/",
            "https://a/b?c",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
