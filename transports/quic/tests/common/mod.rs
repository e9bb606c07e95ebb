//! Helpers the loopback tests share: a gateway, clients, a turn-based driver, a lossy relay
//! and a small HTTP/3 probe (quiche's client) for the cover site.
#![expect(dead_code, reason = "each test file uses a part")]
#![expect(clippy::unwrap_used, reason = "tests")]

use std::{
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use pb_quic::server::quiche;
use pb_quic::{LinkPath, QuicCarrier, QuicCarrierConfig, QuicListener, QuicListenerConfig};
use pb_transport::{CarrierError, ClientCarrier, Listener, RECORD_LEN, Record, tls::TlsIdentity};

pub const NAME: &str = "www.example.org";

pub fn path() -> LinkPath {
    LinkPath::from_secret(&[7; 16])
}

pub fn gateway() -> (TlsIdentity, QuicListener) {
    let id = TlsIdentity::generate(NAME).unwrap();
    let listener = QuicListener::bind(
        ([127, 0, 0, 1], 0).into(),
        &id,
        QuicListenerConfig::new(path()),
    )
    .unwrap();
    (id, listener)
}

pub fn client_to(addr: SocketAddr, id: &TlsIdentity) -> QuicCarrier {
    let config = QuicCarrierConfig::new(addr, NAME, id.pin(), path());
    QuicCarrier::connect(&config, Instant::now()).unwrap()
}

/// Record `i` of a stream tagged `tag`: distinct bytes everywhere.
pub fn record(tag: u8, i: u32) -> Record {
    let mut r = [0u8; RECORD_LEN];
    r[0] = tag;
    r[1..5].copy_from_slice(&i.to_be_bytes());
    for (j, b) in r.iter_mut().enumerate().skip(5) {
        *b = (j as u32).wrapping_mul(2_654_435_761).wrapping_add(i) as u8 ^ tag;
    }
    r
}

/// Drives clients and the gateway in turns until `done` holds; `false` after `turns`
/// turns (a bound on work, not a timing assertion). A client error is returned to `done`
/// through `errors`.
pub fn run(
    clients: &mut [&mut QuicCarrier],
    gateway: &mut QuicListener,
    turns: usize,
    mut done: impl FnMut(&mut [&mut QuicCarrier], &mut QuicListener, &[Option<String>]) -> bool,
) -> bool {
    let mut errors: Vec<Option<String>> = vec![None; clients.len()];
    for _ in 0..turns {
        for (c, e) in clients.iter_mut().zip(errors.iter_mut()) {
            if e.is_none()
                && let Err(err) = c.drive(Instant::now())
            {
                *e = Some(describe(&err));
            }
        }
        gateway.drive(Instant::now()).unwrap();
        if done(clients, gateway, &errors) {
            return true;
        }
        std::thread::sleep(Duration::from_micros(300));
    }
    false
}

pub fn describe(e: &CarrierError) -> String {
    match e {
        CarrierError::Handshake(s) => format!("handshake: {s}"),
        CarrierError::Closed(s) => format!("closed: {s}"),
        CarrierError::Io { what, source } => format!("io: {what}: {source}"),
    }
}

/// A UDP relay between one client and the gateway that drops a share of datagrams each
/// way, from a seeded generator.
pub struct LossyRelay {
    front: UdpSocket,
    back: UdpSocket,
    gateway: SocketAddr,
    client: Option<SocketAddr>,
    rng: u64,
    drop_percent: u64,
    pub forwarded: u64,
    pub dropped: u64,
}

impl LossyRelay {
    pub fn new(gateway: SocketAddr, drop_percent: u64, seed: u64) -> Self {
        let front = UdpSocket::bind("127.0.0.1:0").unwrap();
        let back = UdpSocket::bind("127.0.0.1:0").unwrap();
        front.set_nonblocking(true).unwrap();
        back.set_nonblocking(true).unwrap();
        Self {
            front,
            back,
            gateway,
            client: None,
            rng: seed | 1,
            drop_percent,
            forwarded: 0,
            dropped: 0,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.front.local_addr().unwrap()
    }

    fn lose(&mut self) -> bool {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (r >> 32) % 100 < self.drop_percent
    }

    /// Moves every waiting datagram on, or drops it.
    pub fn pump(&mut self) {
        let mut buf = [0u8; 65536];
        while let Ok((n, from)) = self.front.recv_from(&mut buf) {
            self.client = Some(from);
            if self.lose() {
                self.dropped += 1;
            } else {
                self.back.send_to(&buf[..n], self.gateway).unwrap();
                self.forwarded += 1;
            }
        }
        while let Ok((n, _)) = self.back.recv_from(&mut buf) {
            let Some(client) = self.client else { continue };
            if self.lose() {
                self.dropped += 1;
            } else {
                self.front.send_to(&buf[..n], client).unwrap();
                self.forwarded += 1;
            }
        }
    }
}

/// What an HTTP/3 probe got: status, fields and body.
#[derive(Debug, Default)]
pub struct Probed {
    pub status: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub finished: bool,
}

/// A request with quiche's own HTTP/3 client (no certificate check: a prober without the
/// pin), driven in turns with the gateway.
pub fn probe(gateway: &mut QuicListener, method: &str, path: &str) -> Probed {
    probe_with(gateway, method, path, |_| {})
}

/// [`probe`], calling `each` after every turn of the gateway.
pub fn probe_with(
    gateway: &mut QuicListener,
    method: &str,
    path: &str,
    mut each: impl FnMut(&mut QuicListener),
) -> Probed {
    use quiche::h3::NameValue as _;
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_nonblocking(true).unwrap();
    let local = socket.local_addr().unwrap();
    let mut config = quiche::Config::new(quiche::PROTOCOL_VERSION).unwrap();
    config.verify_peer(false);
    config.set_application_protos(&[b"h3"]).unwrap();
    config.set_initial_max_data(1_000_000);
    config.set_initial_max_stream_data_bidi_local(1_000_000);
    config.set_initial_max_stream_data_uni(1_000_000);
    config.set_initial_max_streams_uni(8);
    config.set_max_idle_timeout(5000);
    let scid = [9u8; quiche::MAX_CONN_ID_LEN];
    let scid = quiche::ConnectionId::from_ref(&scid);
    let mut conn =
        quiche::connect(Some(NAME), &scid, local, gateway.local_addr(), &mut config).unwrap();
    let mut h3: Option<quiche::h3::Connection> = None;
    let mut out = Probed::default();
    let mut buf = [0u8; 65536];
    for _ in 0..5000 {
        while let Ok((n, from)) = conn.send(&mut buf) {
            socket.send_to(&buf[..n], from.to).unwrap();
        }
        gateway.drive(Instant::now()).unwrap();
        each(gateway);
        std::thread::sleep(Duration::from_micros(300));
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let _ = conn.recv(&mut buf[..n], quiche::RecvInfo { from, to: local });
        }
        conn.on_timeout();
        if conn.is_established() && h3.is_none() {
            let config = quiche::h3::Config::new().unwrap();
            let mut c = quiche::h3::Connection::with_transport(&mut conn, &config).unwrap();
            let req = [
                quiche::h3::Header::new(b":method", method.as_bytes()),
                quiche::h3::Header::new(b":scheme", b"https"),
                quiche::h3::Header::new(b":authority", NAME.as_bytes()),
                quiche::h3::Header::new(b":path", path.as_bytes()),
                quiche::h3::Header::new(b"user-agent", b"probe"),
            ];
            c.send_request(&mut conn, &req, method != "POST").unwrap();
            if method == "POST" {
                // A body that the server may stop reading.
                let stream = 0;
                let _ = c.send_body(&mut conn, stream, &[0u8; 3000], false);
            }
            h3 = Some(c);
        }
        if let Some(c) = h3.as_mut() {
            while let Ok((stream, ev)) = c.poll(&mut conn) {
                match ev {
                    quiche::h3::Event::Headers { list, .. } => {
                        for h in list {
                            let (n, v) = (
                                String::from_utf8_lossy(h.name()).into_owned(),
                                String::from_utf8_lossy(h.value()).into_owned(),
                            );
                            if n == ":status" {
                                out.status = Some(v.clone());
                            }
                            out.headers.push((n, v));
                        }
                    }
                    quiche::h3::Event::Data => {
                        while let Ok(n) = c.recv_body(&mut conn, stream, &mut buf) {
                            out.body.extend_from_slice(&buf[..n]);
                        }
                    }
                    quiche::h3::Event::Finished => out.finished = true,
                    _ => {}
                }
            }
        }
        if out.finished {
            assert!(
                conn.peer_error().is_none(),
                "the server closed the connection with an error"
            );
            return out;
        }
    }
    out
}
