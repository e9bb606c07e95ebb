//! The two sans-IO cores against each other, and against a hand-driven TLS client, in
//! memory on a virtual clock.
#![expect(clippy::unwrap_used, clippy::panic, reason = "tests")]

use std::{
    io::{Read, Write},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use pb_transport::{CarrierError, RECORD_LEN, Record, tls::TlsIdentity};
use pb_wss::{
    ALPN, ClientCore, SecretPath, ServerCore, ServerEvent, ServerShared, WallClock,
    WssClientConfig, WssServerConfig,
};

const NAME: &str = "www.example.org";

struct World {
    identity: TlsIdentity,
    shared: Arc<ServerShared>,
    path: SecretPath,
    t0: Instant,
}

fn world() -> World {
    let identity = TlsIdentity::generate(NAME).unwrap();
    let path = SecretPath::from_random([42; 16]);
    let t0 = Instant::now();
    // 2024-05-14 10:00:00 UTC.
    let clock = WallClock::new(
        t0,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_715_680_800),
    );
    let shared = Arc::new(ServerShared::new(
        identity.server_config(&[ALPN]).unwrap(),
        WssServerConfig::new(path.clone()),
        clock,
    ));
    World {
        identity,
        shared,
        path,
        t0,
    }
}

impl World {
    fn client_config(&self) -> WssClientConfig {
        WssClientConfig::new(self.identity.pin(), NAME, 443, self.path.clone())
    }
}

/// Moves bytes both ways until neither side has any; the client's errors are returned.
fn pump(
    client: &mut ClientCore,
    server: &mut ServerCore,
    now: Instant,
) -> Result<(), CarrierError> {
    for _ in 0..100 {
        let c = client.transmit().to_vec();
        client.advance_transmit(c.len());
        if !c.is_empty() {
            server.handle_input(now, &c);
        }
        let s = server.transmit().to_vec();
        server.advance_transmit(s.len());
        if !s.is_empty() {
            client.handle_input(now, &s)?;
        }
        if c.is_empty() && s.is_empty() {
            return Ok(());
        }
    }
    panic!("the cores never went quiet");
}

fn record(n: u32) -> Record {
    let mut r = [0u8; RECORD_LEN];
    for (i, b) in r.iter_mut().enumerate() {
        *b = (n as usize * 31 + i) as u8;
    }
    r[..4].copy_from_slice(&n.to_be_bytes());
    r
}

fn events(server: &mut ServerCore) -> Vec<ServerEvent> {
    std::iter::from_fn(|| server.poll_event()).collect()
}

#[test]
fn records_cross_both_ways_byte_identical_and_in_order() {
    let w = world();
    let mut client = ClientCore::new(&w.client_config(), [7; 16], w.t0).unwrap();
    let mut server = ServerCore::new(w.shared.clone(), w.t0).unwrap();
    assert!(
        !client.send_record(&record(0), w.t0),
        "nothing goes before the upgrade"
    );
    pump(&mut client, &mut server, w.t0).unwrap();
    assert!(client.is_open() && server.is_websocket());
    assert_eq!(events(&mut server), [ServerEvent::Upgraded]);
    for n in 0..100 {
        assert!(client.send_record(&record(n), w.t0));
        assert!(server.send_record(&record(1000 + n), w.t0));
        if n % 7 == 0 {
            pump(&mut client, &mut server, w.t0).unwrap();
        }
    }
    // The last records' tails wait in their shaped TLS records until the hold runs out.
    assert!(client.next_deadline() <= w.t0 + Duration::from_millis(20));
    let later = w.t0 + Duration::from_millis(20);
    client.handle_timeout(later).unwrap();
    server.handle_timeout(later);
    pump(&mut client, &mut server, later).unwrap();
    let up: Vec<Record> = std::iter::from_fn(|| server.poll_record()).collect();
    let down: Vec<Record> = std::iter::from_fn(|| client.poll_record()).collect();
    assert_eq!(up, (0..100).map(record).collect::<Vec<_>>());
    assert_eq!(down, (1000..1100).map(record).collect::<Vec<_>>());

    // The gateway closes: the client hears a normal close.
    server.close(w.t0);
    let err = pump(&mut client, &mut server, w.t0).unwrap_err();
    assert!(matches!(err, CarrierError::Closed(_)), "{err}");
    assert!(server.is_closing());
}

/// A TLS client that sends whatever HTTP the test writes.
struct Browser {
    tls: rustls::ClientConnection,
}

impl Browser {
    fn new(w: &World) -> Self {
        let config = pb_transport::tls::client_config(w.identity.pin(), &[ALPN]).unwrap();
        let name = rustls::pki_types::ServerName::try_from(NAME).unwrap();
        Self {
            tls: rustls::ClientConnection::new(Arc::new(config), name).unwrap(),
        }
    }

    /// Sends `request` and returns what the server answers to it.
    fn ask(&mut self, server: &mut ServerCore, now: Instant, request: &[u8]) -> Vec<u8> {
        self.tls.writer().write_all(request).unwrap();
        let mut answer = Vec::new();
        for _ in 0..20 {
            let mut wire = Vec::new();
            while self.tls.wants_write() {
                self.tls.write_tls(&mut wire).unwrap();
            }
            server.handle_input(now, &wire);
            let s = server.transmit().to_vec();
            server.advance_transmit(s.len());
            if s.is_empty() && wire.is_empty() {
                break;
            }
            self.tls.read_tls(&mut &s[..]).unwrap();
            self.tls.process_new_packets().unwrap();
            let mut buf = [0u8; 65536];
            while let Ok(n) = self.tls.reader().read(&mut buf) {
                if n == 0 {
                    break;
                }
                answer.extend_from_slice(&buf[..n]);
            }
        }
        answer
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn everyone_else_sees_a_static_web_site() {
    let w = world();
    let mut server = ServerCore::new(w.shared.clone(), w.t0).unwrap();
    let mut browser = Browser::new(&w);
    let page = text(&browser.ask(
        &mut server,
        w.t0,
        b"GET / HTTP/1.1\r\nHost: www.example.org\r\n\r\n",
    ));
    assert!(page.starts_with("HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Tue, 14 May 2024 10:00:00 GMT\r\nContent-Type: text/html\r\n"), "{page}");
    assert!(page.contains("Connection: keep-alive\r\n"));
    assert!(page.ends_with("</html>\n"));
    assert!(page.contains("<h1>Marta Lindqvist</h1>"));
    // Kept alive: more requests on the same connection.
    let later = w.t0 + Duration::from_secs(3);
    let head = text(&browser.ask(&mut server, later, b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert!(
        head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"),
        "{head}"
    );
    assert!(head.contains("Date: Tue, 14 May 2024 10:00:03 GMT\r\n"));
    let missing = text(&browser.ask(&mut server, later, b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert!(missing.starts_with("HTTP/1.1 404 Not Found\r\n"));
    assert!(missing.contains("<center><h1>404 Not Found</h1></center>"));
    let post = text(&browser.ask(&mut server, later, b"POST / HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert!(post.starts_with("HTTP/1.1 405 Not Allowed\r\n"));
    // Two requests in one write (pipelining) get two answers in order.
    let two = text(&browser.ask(
        &mut server,
        later,
        b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /index.html HTTP/1.1\r\nHost: a\r\n\r\n",
    ));
    let (first, second) = two.split_at(two.find("HTTP/1.1 200").unwrap());
    assert!(first.starts_with("HTTP/1.1 404") && second.contains("Marta"));
    // A conditional request for the current page: 304.
    let etag = page
        .lines()
        .find_map(|l| l.strip_prefix("ETag: "))
        .unwrap()
        .to_owned();
    let cond = format!("GET / HTTP/1.1\r\nHost: a\r\nIf-None-Match: {etag}\r\n\r\n");
    let cond = text(&browser.ask(&mut server, later, cond.as_bytes()));
    assert!(cond.starts_with("HTTP/1.1 304 Not Modified\r\n") && cond.ends_with("\r\n\r\n"));
    assert!(!server.is_closing());
    // Garbage: 400, then the connection closes.
    let bad = text(&browser.ask(&mut server, later, b"GET / HTTP/1.1\r\nHost a\r\n\r\n"));
    assert!(
        bad.starts_with("HTTP/1.1 400 Bad Request\r\n") && bad.contains("Connection: close\r\n")
    );
    assert!(server.is_closing());
    let mut seen = events(&mut server);
    seen.sort_by_key(|e| format!("{e:?}"));
    use ServerEvent::*;
    assert_eq!(
        seen,
        [
            BadRequest, NotAllowed, NotFound, NotFound, PageServed, PageServed, PageServed,
            PageServed
        ]
    );
}

#[test]
fn an_upgrade_anywhere_but_the_secret_path_is_a_404() {
    let w = world();
    let upgrade = |path: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
    };
    let mut server = ServerCore::new(w.shared.clone(), w.t0).unwrap();
    let mut browser = Browser::new(&w);
    for path in ["/", "/chat", "/ws", &w.path.as_str()[..10]] {
        let answer = text(&browser.ask(&mut server, w.t0, upgrade(path).as_bytes()));
        let want = if path == "/" {
            "HTTP/1.1 200 OK\r\n"
        } else {
            "HTTP/1.1 404 Not Found\r\n"
        };
        assert!(answer.starts_with(want), "{path}: {answer}");
        assert!(!server.is_websocket());
    }
    // The secret path without an upgrade: the same 404.
    let plain = format!("GET {} HTTP/1.1\r\nHost: a\r\n\r\n", w.path.as_str());
    let answer = text(&browser.ask(&mut server, w.t0, plain.as_bytes()));
    assert!(answer.starts_with("HTTP/1.1 404 Not Found\r\n"));
    // At the secret path: 101 with the RFC's accept key.
    let answer = text(&browser.ask(&mut server, w.t0, upgrade(w.path.as_str()).as_bytes()));
    assert!(
        answer.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{answer}"
    );
    assert!(answer.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    assert!(server.is_websocket());
}

/// A masked client frame with `opcode` and `payload`.
fn frame(opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    let mask_bit = if masked { 0x80 } else { 0 };
    if payload.len() < 126 {
        f.push(mask_bit | payload.len() as u8);
    } else {
        f.push(mask_bit | 126);
        f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    let mask = [1, 2, 3, 4];
    if masked {
        f.extend_from_slice(&mask);
    }
    f.extend(
        payload
            .iter()
            .enumerate()
            .map(|(i, b)| if masked { b ^ mask[i % 4] } else { *b }),
    );
    f
}

#[test]
fn anything_but_a_masked_binary_record_closes_the_peer() {
    let w = world();
    let upgrade = format!(
        "GET {} HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        w.path.as_str()
    );
    let cases: [(&str, Vec<u8>); 5] = [
        ("text", frame(0x1, b"hello", true)),
        ("short binary", frame(0x2, &[0; 100], true)),
        ("long binary", frame(0x2, &[0; RECORD_LEN + 1], true)),
        ("unmasked", frame(0x2, &[0; RECORD_LEN], false)),
        ("bad opcode", frame(0x3, b"", true)),
    ];
    for (what, bytes) in cases {
        let mut server = ServerCore::new(w.shared.clone(), w.t0).unwrap();
        let mut browser = Browser::new(&w);
        browser.ask(&mut server, w.t0, upgrade.as_bytes());
        // A good record first, then the bad message.
        let mut good = frame(0x2, &record(1), true);
        good.extend_from_slice(&bytes);
        let answer = browser.ask(&mut server, w.t0, &good);
        assert_eq!(server.poll_record(), Some(record(1)), "{what}");
        assert!(server.is_closing(), "{what}");
        assert!(
            events(&mut server).contains(&ServerEvent::BadMessage),
            "{what}"
        );
        // The close frame is unmasked, code 1000.
        assert_eq!(answer, [0x88, 0x02, 0x03, 0xE8], "{what}");
    }
    // A ping is answered with a pong and the link stays.
    let mut server = ServerCore::new(w.shared.clone(), w.t0).unwrap();
    let mut browser = Browser::new(&w);
    browser.ask(&mut server, w.t0, upgrade.as_bytes());
    let answer = browser.ask(&mut server, w.t0, &frame(0x9, b"hi", true));
    assert_eq!(answer, [0x8A, 0x02, b'h', b'i']);
    assert!(server.is_websocket());
}

#[test]
fn a_wrong_pin_or_a_wrong_path_fails_the_clients_handshake() {
    let w = world();
    let other = TlsIdentity::generate(NAME).unwrap();
    let mut config = w.client_config();
    config.pin = other.pin();
    let mut client = ClientCore::new(&config, [1; 16], w.t0).unwrap();
    let mut server = ServerCore::new(w.shared.clone(), w.t0).unwrap();
    let err = pump(&mut client, &mut server, w.t0).unwrap_err();
    assert!(matches!(err, CarrierError::Handshake(_)), "{err}");
    assert!(!server.is_websocket());

    let mut config = w.client_config();
    config.path = SecretPath::from_random([9; 16]);
    let mut client = ClientCore::new(&config, [1; 16], w.t0).unwrap();
    let mut server = ServerCore::new(w.shared.clone(), w.t0).unwrap();
    let err = pump(&mut client, &mut server, w.t0).unwrap_err();
    assert!(
        matches!(&err, CarrierError::Handshake(m) if m.contains("404")),
        "{err}"
    );
}

#[test]
fn slow_and_quiet_connections_time_out() {
    let w = world();
    // No request within the request timeout: closed, then dropped after the linger.
    let mut server = ServerCore::new(w.shared.clone(), w.t0).unwrap();
    let limits = &w.shared.config().limits;
    let due = server.next_deadline();
    assert_eq!(due, w.t0 + limits.request_timeout);
    server.handle_timeout(due - Duration::from_millis(1));
    assert!(!server.is_closing());
    server.handle_timeout(due);
    assert!(server.is_closing() && !server.is_dead());
    assert_eq!(events(&mut server), [ServerEvent::TimedOut]);
    server.handle_timeout(server.next_deadline());
    assert!(server.is_dead());

    // An open WebSocket that hears nothing is closed after the idle timeout.
    let mut client = ClientCore::new(&w.client_config(), [7; 16], w.t0).unwrap();
    let mut server = ServerCore::new(w.shared.clone(), w.t0).unwrap();
    pump(&mut client, &mut server, w.t0).unwrap();
    assert_eq!(server.next_deadline(), w.t0 + limits.idle_timeout);
    server.handle_timeout(server.next_deadline());
    assert!(server.is_closing());

    // A client whose handshake does not finish gives up with a handshake error.
    let mut client = ClientCore::new(&w.client_config(), [7; 16], w.t0).unwrap();
    let err = client.handle_timeout(client.next_deadline()).unwrap_err();
    assert!(matches!(err, CarrierError::Handshake(_)));
}

/// Before TLS, the listener is nginx on its TLS port: plain HTTP gets nginx's 400 pages in
/// clear, bytes OpenSSL would refuse get the connection closed without a word (no alert),
/// and a connection that says nothing is closed silently after nginx's 60 s.
#[test]
fn before_tls_it_answers_as_nginx_on_an_https_port() {
    let w = world();
    let clear = |input: &[u8]| {
        let mut server = ServerCore::new(w.shared.clone(), w.t0).unwrap();
        server.handle_input(w.t0, input);
        let out = server.transmit().to_vec();
        (server.is_closing(), text(&out))
    };
    let (closing, out) = clear(b"GET / HTTP/1.1\r\nHost: example.org\r\n\r\n");
    assert!(closing);
    assert!(
        out.starts_with("HTTP/1.1 400 Bad Request\r\nServer: nginx\r\n"),
        "{out}"
    );
    assert!(out.contains("Connection: close\r\n"), "{out}");
    assert!(
        out.contains("The plain HTTP request was sent to HTTPS port"),
        "{out}"
    );
    let (closing, out) = clear(b"hello there\r\n\r\n");
    assert!(closing);
    assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
    assert!(!out.contains("plain HTTP"), "{out}");
    // A plain request not yet whole: nginx waits for the rest.
    let (closing, out) = clear(b"GET / HT");
    assert!(!closing && out.is_empty());
    // The high bit set (SSLv2, to OpenSSL) but no TLS: closed, nothing sent.
    let (closing, out) = clear(&[0x80; 64]);
    assert!(closing);
    assert!(out.is_empty(), "{out}");
    // A handshake record that is not one: closed without an alert.
    let (closing, out) = clear(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5]);
    assert!(closing);
    assert!(out.is_empty(), "{out}");
    // Silence: at 60 s, closed without a word.
    let mut server = ServerCore::new(w.shared.clone(), w.t0).unwrap();
    assert_eq!(server.next_deadline(), w.t0 + Duration::from_secs(60));
    server.handle_timeout(w.t0 + Duration::from_secs(60));
    assert!(server.is_closing());
    assert!(server.transmit().is_empty());
}

/// A request with a body nginx does not want (POST to the page) gets 405 and, when
/// `Content-Length` gives the body, keeps the connection after reading and dropping it, as
/// nginx does; a chunked body ends the connection.
#[test]
fn a_405_drops_a_sized_body_and_keeps_the_connection() {
    let w = world();
    let mut server = ServerCore::new(w.shared.clone(), w.t0).unwrap();
    let mut browser = Browser::new(&w);
    let post = text(&browser.ask(
        &mut server,
        w.t0,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nabcd",
    ));
    assert!(post.starts_with("HTTP/1.1 405 Not Allowed\r\n"), "{post}");
    assert!(post.contains("Connection: keep-alive\r\n"), "{post}");
    let get = text(&browser.ask(&mut server, w.t0, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert!(get.starts_with("HTTP/1.1 200 OK\r\n"), "{get}");
    let chunked = text(&browser.ask(
        &mut server,
        w.t0,
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n",
    ));
    assert!(chunked.contains("Connection: close\r\n"), "{chunked}");
    assert!(server.is_closing());
}

/// The link's records leave in TLS records of drawn sizes (200 to 3,000 bytes of plaintext),
/// not one 1,456-byte frame per TLS record: an observer's size histogram of the gateway's
/// TLS records (and so of its TCP segments) does not show the link's record size.
#[test]
fn records_leave_in_tls_records_of_drawn_sizes() {
    let w = world();
    let mut client = ClientCore::new(&w.client_config(), [7; 16], w.t0).unwrap();
    let mut server = ServerCore::new(w.shared.clone(), w.t0).unwrap();
    pump(&mut client, &mut server, w.t0).unwrap();
    let mut wire = Vec::new();
    for n in 0..300 {
        let now = w.t0 + Duration::from_millis(10 * n);
        server.handle_timeout(now);
        assert!(server.send_record(&record(n as u32), now));
        let out = server.transmit().to_vec();
        server.advance_transmit(out.len());
        wire.extend_from_slice(&out);
        client.handle_input(now, &out).unwrap();
    }
    // TLS 1.3 application data records: header (5), then plaintext + type (1) + tag (16).
    let mut sizes = std::collections::BTreeMap::new();
    let mut at = 0;
    while at + 5 <= wire.len() {
        let len = usize::from(u16::from_be_bytes([wire[at + 3], wire[at + 4]]));
        if wire[at] == 0x17 {
            *sizes.entry(len - 17).or_insert(0usize) += 1;
        }
        at += 5 + len;
    }
    let records: usize = sizes.values().sum();
    let frames = sizes.get(&1456).copied().unwrap_or(0);
    assert!(records > 100, "{sizes:?}");
    assert!(sizes.len() > 50, "only {} sizes: {sizes:?}", sizes.len());
    assert!(
        frames * 20 < records,
        "{frames} of {records} records are one frame"
    );
    assert!(sizes.keys().all(|s| *s <= 3000), "{sizes:?}");
    let got: Vec<Record> = std::iter::from_fn(|| client.poll_record()).collect();
    assert!(got.len() >= 298, "{}", got.len());
    assert_eq!(
        got[..],
        (0..got.len() as u32).map(record).collect::<Vec<_>>()[..]
    );
}
