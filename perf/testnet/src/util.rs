//! What every testnet user needs around the relays: the binaries, waiting (and giving up
//! on Ctrl-C), a web server, a fetch through a SOCKS5 proxy, an HTTP GET for admin
//! endpoints.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    path::PathBuf,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};

/// `name` next to the running binary (or, for a test binary in `target/<profile>/deps`,
/// in `target/<profile>`).
///
/// # Errors
/// The binary is not there: the message says what to build.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("locating the running binary")?;
    let dir = me
        .parent()
        .ok_or_else(|| anyhow!("{} has no directory", me.display()))?;
    let candidates = [
        Some(dir.join(name)),
        dir.file_name()
            .filter(|d| *d == "deps")
            .and_then(|_| dir.parent())
            .map(|d| d.join(name)),
    ];
    if let Some(found) = candidates.iter().flatten().find(|p| p.exists()) {
        return Ok(found.clone());
    }
    bail!(
        "{} is missing: build it next to {} (cargo build -p {name}, with --release for a release build)",
        dir.join(name).display(),
        me.display()
    )
}

/// Set by SIGINT or SIGTERM once [`stop_on_signals`] ran.
static STOP: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// From now on SIGINT (Ctrl-C) and SIGTERM do not kill this process but make
/// [`interrupted`] true, so that waits give up and everything started is torn down.
///
/// # Errors
/// The handlers cannot be installed.
pub fn stop_on_signals() -> anyhow::Result<()> {
    let stop = STOP.get_or_init(|| Arc::new(AtomicBool::new(false)));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    Ok(())
}

/// Whether the user asked this process to stop (after [`stop_on_signals`]).
pub fn interrupted() -> bool {
    STOP.get().is_some_and(|stop| stop.load(Ordering::Relaxed))
}

/// Polls `ready` every 100 ms until it holds.
///
/// # Errors
/// It did not hold within `limit`, or the user interrupted ([`interrupted`]).
pub fn wait_for(
    what: &str,
    limit: Duration,
    mut ready: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let start = Instant::now();
    while !ready() {
        if interrupted() {
            bail!("interrupted while waiting for {what}");
        }
        if start.elapsed() > limit {
            bail!("{what} did not happen within {limit:?}");
        }
        thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// `bytes` bytes of a fixed pattern, for a file to serve.
pub fn pattern(bytes: usize) -> Vec<u8> {
    (0..bytes).map(|i| (i * 7 + 3) as u8).collect()
}

/// An HTTP/1.0 server that answers every request with the same body and closes; it runs
/// on threads of its own until the process ends.
#[derive(Debug, Clone)]
pub struct FileServer {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl FileServer {
    /// Serves `body` on `listener` (bound where the caller wants it, in a namespace or not).
    ///
    /// # Errors
    /// The listener has no local address.
    pub fn start(listener: TcpListener, body: Arc<Vec<u8>>) -> anyhow::Result<Self> {
        let addr = listener.local_addr().context("the file server's address")?;
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                counter.fetch_add(1, Ordering::Relaxed);
                let body = body.clone();
                thread::spawn(move || {
                    let mut request = Vec::new();
                    let mut byte = [0u8; 1];
                    while !request.ends_with(b"\r\n\r\n") && request.len() < 8192 {
                        match stream.read(&mut byte) {
                            Ok(1) => request.push(byte[0]),
                            _ => return,
                        }
                    }
                    let head = format!(
                        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes());
                    let _ = stream.write_all(&body);
                });
            }
        });
        Ok(Self { addr, connections })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
}

/// A SOCKS5 CONNECT to `target` through the proxy at `proxy` (no authentication): the
/// stream, once the proxy answered success.
///
/// # Errors
/// The proxy cannot be reached, or answers with an error (its reply code is in the
/// message).
pub fn socks_connect(proxy: SocketAddr, target: SocketAddrV4) -> anyhow::Result<TcpStream> {
    let mut address = vec![1];
    address.extend_from_slice(&target.ip().octets());
    socks_request(proxy, &address, target.port())
}

/// As [`socks_connect`], to a name the proxy resolves (SOCKS5 address type 3).
///
/// # Errors
/// As [`socks_connect`]; a name over 255 bytes.
pub fn socks_connect_name(proxy: SocketAddr, name: &str, port: u16) -> anyhow::Result<TcpStream> {
    let mut address = vec![
        3,
        u8::try_from(name.len()).context("a name over 255 bytes")?,
    ];
    address.extend_from_slice(name.as_bytes());
    socks_request(proxy, &address, port)
}

/// A SOCKS5 CONNECT (no authentication) through `proxy` to `address` (its type byte and
/// bytes) and `port`.
fn socks_request(proxy: SocketAddr, address: &[u8], port: u16) -> anyhow::Result<TcpStream> {
    let mut s = TcpStream::connect(proxy).context("connecting to the SOCKS5 proxy")?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    s.write_all(&[5, 1, 0])?;
    let mut method = [0u8; 2];
    s.read_exact(&mut method)?;
    let mut request = vec![5, 1, 0];
    request.extend_from_slice(address);
    request.extend_from_slice(&port.to_be_bytes());
    s.write_all(&request)?;
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply)?;
    if reply[1] != 0 {
        bail!(
            "the proxy answered the CONNECT with SOCKS reply {:#04x}",
            reply[1]
        );
    }
    Ok(s)
}

/// One HTTP fetch of `bytes` body bytes from `server`, through the SOCKS5 proxy at `socks`
/// or directly: (time to the first byte of the answer, time to the last).
///
/// # Errors
/// The connection fails or ends before `bytes` body bytes came.
pub fn fetch(
    socks: Option<SocketAddr>,
    server: SocketAddr,
    bytes: usize,
) -> anyhow::Result<(Duration, Duration)> {
    let start = Instant::now();
    let mut s = match socks {
        Some(proxy) => {
            let SocketAddr::V4(v4) = server else {
                bail!("an IPv4 server");
            };
            socks_connect(proxy, v4).context("pb-client")?
        }
        None => TcpStream::connect(server)?,
    };
    s.write_all(b"GET / HTTP/1.0\r\nHost: pb-testnet\r\n\r\n")?;
    let mut buf = vec![0u8; 64 * 1024];
    // The header is kept until its end is seen; of the body only the count.
    let mut head: Vec<u8> = Vec::new();
    let mut body = None;
    let mut first = None;
    while body.is_none_or(|got| got < bytes) {
        let n = s.read(&mut buf).context("reading the fetch")?;
        if n == 0 {
            break;
        }
        first.get_or_insert_with(|| start.elapsed());
        match body.as_mut() {
            Some(got) => *got += n,
            None => {
                head.extend_from_slice(&buf[..n]);
                if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                    body = Some(head.len() - end - 4);
                }
            }
        }
    }
    let got = body.unwrap_or(0);
    if got < bytes {
        bail!("the fetch ended after {got} of {bytes} bytes");
    }
    Ok((first.unwrap_or_default(), start.elapsed()))
}

/// GET `path` over `stream` (connected by the caller, in the right namespace): the body.
///
/// # Errors
/// The exchange fails or the answer is not `200`.
pub fn http_get(mut stream: TcpStream, path: &str) -> anyhow::Result<String> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let Some((head, body)) = response.split_once("\r\n\r\n") else {
        bail!("GET {path}: no HTTP answer: {response:?}");
    };
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_owned())
}

/// A self-signed P-256 server certificate for the address `ip` (its subject alternative
/// name) made by openssl, its key written to `key` and the certificate to `pem`: what a
/// testnet's own servers (the DoH resolver, the probe suite's covers) present. A server's
/// certificate, not a CA's: clients that trust it as its own root (rustls) refuse a CA as
/// the end entity.
///
/// # Errors
/// openssl is missing or fails.
pub fn server_certificate(
    ip: std::net::IpAddr,
    key: &std::path::Path,
    pem: &std::path::Path,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let openssl = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", &format!("/CN={ip}")])
        .args(["-addext", &format!("subjectAltName=IP:{ip}")])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(pem)
        .output()
        .context("running openssl (apt-get install openssl)")?;
    anyhow::ensure!(
        openssl.status.success(),
        "openssl could not make a certificate: {}",
        String::from_utf8_lossy(&openssl.stderr).trim()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn a_fetch_gets_the_whole_file_and_counts_the_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = FileServer::start(listener, Arc::new(pattern(100_000))).unwrap();
        let (first, all) = fetch(None, server.addr(), 100_000).unwrap();
        assert!(first <= all);
        assert_eq!(server.connections(), 1);
        assert!(fetch(None, server.addr(), 100_001).is_err());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let text = FileServer::start(listener, Arc::new(b"ok\n".to_vec())).unwrap();
        let body = http_get(TcpStream::connect(text.addr()).unwrap(), "/health").unwrap();
        assert_eq!(body, "ok\n");
    }

    #[test]
    fn a_wait_that_never_ends_gives_up() {
        let e = wait_for("nothing", Duration::from_millis(150), || false).unwrap_err();
        assert!(e.to_string().contains("nothing did not happen"), "{e}");
        let mut n = 0;
        wait_for("three polls", Duration::from_secs(5), || {
            n += 1;
            n == 3
        })
        .unwrap();
    }
}
