//! What a prober without the secret path sees: an ordinary HTTP/3 web server. Probed with
//! quiche's HTTP/3 client and, where installed, ngtcp2's `gtlsclient` (Debian
//! `ngtcp2-client`), an HTTP/3 client from another QUIC stack.
#![cfg(feature = "server")]
#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::*;
use pb_quic::site::DEFAULT_INDEX;
use pb_transport::Listener;

fn header<'a>(p: &'a Probed, name: &str) -> Option<&'a str> {
    p.headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn counter(gateway: &impl Listener, name: &str) -> u64 {
    gateway
        .counters()
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(0, |(_, v)| *v)
}

#[test]
fn get_slash_gets_the_page() {
    let (_, mut gateway) = gateway();
    let page = probe(&mut gateway, "GET", "/");
    assert_eq!(page.status.as_deref(), Some("200"));
    assert!(page.finished);
    assert_eq!(page.body, DEFAULT_INDEX.as_bytes());
    assert_eq!(header(&page, "content-type"), Some("text/html"));
    assert_eq!(
        header(&page, "content-length"),
        Some(DEFAULT_INDEX.len().to_string().as_str())
    );
    assert_eq!(header(&page, "server"), Some("nginx"));
    assert!(header(&page, "date").is_some_and(|d| d.ends_with(" GMT")));
    let head = probe(&mut gateway, "HEAD", "/");
    assert_eq!(head.status.as_deref(), Some("200"));
    assert!(head.body.is_empty());
    assert_eq!(counter(&gateway, "pages_served"), 2);
}

#[test]
fn other_paths_get_the_404_page_and_no_link_opens() {
    let (_, mut gateway) = gateway();
    let nf = probe(&mut gateway, "GET", "/admin");
    assert_eq!(nf.status.as_deref(), Some("404"));
    assert!(String::from_utf8_lossy(&nf.body).contains("404 Not Found"));
    // A POST with a body to a wrong path: the same 404, the body left unread.
    let post = probe(&mut gateway, "POST", "/AAAAAAAAAAAAAAAAAAAAAA");
    assert_eq!(post.status.as_deref(), Some("404"));
    assert_eq!(post.body, nf.body);
    // The right path with the wrong method is not a link either.
    let get = probe(&mut gateway, "GET", path().as_str());
    assert_eq!(get.status.as_deref(), Some("404"));
    assert_eq!(counter(&gateway, "not_found"), 3);
    assert_eq!(counter(&gateway, "links_opened"), 0);
    let not_allowed = probe(&mut gateway, "POST", "/");
    assert_eq!(not_allowed.status.as_deref(), Some("405"));
}

#[test]
fn a_link_request_from_another_client_that_is_closed_gets_the_404_page() {
    // quiche's client POSTs to the secret path: a link. Closed by the layer above before
    // any answer, it gets what the wrong path gets.
    let (_, mut gateway) = gateway();
    let wrong = probe(&mut gateway, "POST", "/elsewhere");
    let mut opened = None;
    // Drive the probe; close the link as soon as its first record is in.
    let probed = probe_with(&mut gateway, "POST", path().as_str(), |g| {
        if let Some((peer, _)) = g.recv() {
            opened = Some(peer);
            g.close(peer);
        }
    });
    assert!(opened.is_some(), "the request was a link");
    assert_eq!(probed.status.as_deref(), Some("404"));
    assert_eq!(probed.body, wrong.body);
    assert_eq!(
        strip_date(&probed.headers),
        strip_date(&wrong.headers),
        "the same fields as any 404"
    );
}

fn strip_date(h: &[(String, String)]) -> Vec<(String, String)> {
    h.iter().filter(|(n, _)| n != "date").cloned().collect()
}

/// Runs ngtcp2's `gtlsclient` against the gateway for `urls`; the files it downloaded.
fn gtlsclient(gateway: &mut pb_quic::QuicListener, urls: &[String]) -> Option<tempdir::Dir> {
    let dir = tempdir::Dir::new("pb-quic-gtls");
    let port = gateway.local_addr().port().to_string();
    let mut child = Command::new("gtlsclient")
        .args(["--quiet", "--exit-on-all-streams-close", "--timeout=5s"])
        .arg(format!("--download={}", dir.path().display()))
        .args(["--sni", NAME, "127.0.0.1", &port])
        .args(urls)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    for _ in 0..40_000 {
        gateway.drive(Instant::now()).unwrap();
        if child.try_wait().unwrap().is_some() {
            return Some(dir);
        }
        std::thread::sleep(Duration::from_micros(250));
    }
    let _ = child.kill();
    let _ = child.wait();
    Some(dir)
}

#[test]
fn gtlsclient_gets_the_page_and_the_404() {
    if Command::new("gtlsclient").arg("--help").output().is_err() {
        println!("skipping gtlsclient test: gtlsclient not installed (Debian ngtcp2-client)");
        return;
    }
    let (_, mut gateway) = gateway();
    let port = gateway.local_addr().port();
    let urls = [
        format!("https://{NAME}:{port}/"),
        format!("https://{NAME}:{port}/missing.html"),
    ];
    let dir = gtlsclient(&mut gateway, &urls).unwrap();
    let page = std::fs::read(dir.path().join("index.html")).unwrap();
    assert_eq!(page, DEFAULT_INDEX.as_bytes());
    let missing = std::fs::read(dir.path().join("missing.html")).unwrap();
    assert!(String::from_utf8_lossy(&missing).contains("404 Not Found"));
    assert_eq!(counter(&gateway, "pages_served"), 1);
    assert_eq!(counter(&gateway, "not_found"), 1);
}

#[test]
fn curl_http3_if_it_has_it() {
    let Ok(version) = Command::new("curl").arg("--version").output() else {
        println!("skipping curl test: curl not installed");
        return;
    };
    if !String::from_utf8_lossy(&version.stdout).contains("HTTP3") {
        println!("skipping curl test: this curl is built without HTTP/3");
        return;
    }
    let (_, mut gateway) = gateway();
    let port = gateway.local_addr().port();
    let mut child = Command::new("curl")
        .args(["--http3-only", "-sk", "--max-time", "5"])
        .arg(format!("https://{NAME}:{port}/"))
        .args(["--resolve", &format!("{NAME}:{port}:127.0.0.1")])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..40_000 {
        gateway.drive(Instant::now()).unwrap();
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_micros(250));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.stdout, DEFAULT_INDEX.as_bytes());
}

/// A temporary directory, removed on drop.
mod tempdir {
    use std::path::{Path, PathBuf};

    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new(prefix: &str) -> Self {
            let n = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let p = std::env::temp_dir().join(format!("{prefix}-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&p).unwrap_or_default();
            Self(p)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Version Negotiation as other QUIC servers send it (RFC 9000 §6, ngtcp2): for a long header
/// of an unknown version in a datagram of at least 1200 bytes, whatever its type and however
/// long its connection IDs; never for a smaller datagram.
#[test]
fn unknown_versions_get_version_negotiation_only_in_full_size_datagrams() {
    let (_, mut gateway) = gateway();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(gateway.local_addr()).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut ask = |datagram: &[u8]| -> Option<Vec<u8>> {
        socket.send(datagram).unwrap();
        let until = Instant::now() + Duration::from_millis(500);
        let mut buf = [0u8; 2048];
        while Instant::now() < until {
            gateway.drive(Instant::now()).unwrap();
            if let Ok(n) = socket.recv(&mut buf) {
                return Some(buf[..n].to_vec());
            }
        }
        None
    };
    let long = |first: u8, dcid: &[u8], scid: &[u8], len: usize| {
        let mut p = vec![first, 0x1a, 0x2a, 0x3a, 0x4a, dcid.len() as u8];
        p.extend_from_slice(dcid);
        p.push(scid.len() as u8);
        p.extend_from_slice(scid);
        p.resize(len, 0);
        p
    };
    for (first, dcid, scid) in [
        (0xc0, &[1u8; 8][..], &[2u8; 8][..]),
        // A Handshake packet's type bits, and IDs far past QUIC v1's 20 bytes.
        (0xe0, &[3u8; 40][..], &[4u8; 200][..]),
    ] {
        let vn = ask(&long(first, dcid, scid, 1200)).unwrap();
        assert!(vn[0] & 0x80 != 0);
        assert_eq!(vn[1..5], [0; 4]);
        // Its destination is our source ID and its source our destination ID.
        assert_eq!(usize::from(vn[5]), scid.len());
        assert_eq!(&vn[6..6 + scid.len()], scid);
        assert_eq!(ask(&long(first, dcid, scid, 1199)), None);
    }
}
