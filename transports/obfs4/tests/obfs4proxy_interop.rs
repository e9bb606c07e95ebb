//! pb-obfs4 against the real obfs4proxy (Debian's 0.0.14), both ways, over loopback:
//! - our client state machine against obfs4proxy as a managed server transport: handshake,
//!   then 64 KiB echoed byte-identical through its ORPort;
//! - our client codec on pb-transport's stream driver, in each iat-mode, against obfs4proxy
//!   servers in each iat-mode: records echoed whole and in order;
//! - obfs4proxy as a managed client transport (its SOCKS5 port, the bridge's `cert` and
//!   `iat-mode` as arguments) against our listener in iat-mode 0 and 2: records both ways.
//!
//! Skips, saying so, when obfs4proxy is not installed.

#![expect(clippy::expect_used, clippy::panic, reason = "tests")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use pb_obfs4::{
    Cert, ClientHandshake, ClientProgress, Entropy, IatMode, NodeId, Obfs4Codec, Obfs4Server,
    Packet, PrngSeed, ServerIdentity,
};
use pb_transport::{
    ClientCarrier, CodecFactory, Listener, Plain, RECORD_LEN, Record, Socks5, StreamCarrier,
    StreamListener, TransportKind,
};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

const OBFS4PROXY: &str = "/usr/bin/obfs4proxy";
const TIMEOUT: Duration = Duration::from_secs(10);

struct OsEntropy(SystemRandom);

impl Entropy for OsEntropy {
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill(dest).expect("the OS RNG works");
    }
}

/// Owns the obfs4proxy process: dropping it closes stdin (obfs4proxy exits on stdin EOF),
/// then kills that one process and removes its state directory.
struct ManagedServer {
    child: Child,
    stdin: Option<ChildStdin>,
    state: PathBuf,
}

impl Drop for ManagedServer {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A one-connection echo server on loopback; returns its address.
fn spawn_echo() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let address = listener.local_addr().expect("bound");
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let _ = stream.set_read_timeout(Some(TIMEOUT));
            let mut buffer = [0u8; 4096];
            while let Ok(n @ 1..) = stream.read(&mut buffer) {
                if stream.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
        }
    });
    address
}

fn start_obfs4proxy(
    binary: &Path,
    identity_secret: &[u8; 32],
    node_id: &NodeId,
    orport: std::net::SocketAddr,
) -> (ManagedServer, String) {
    start_obfs4proxy_server(binary, identity_secret, node_id, orport, 0)
}

fn state_dir(side: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let state = std::env::temp_dir().join(format!(
        "pb-obfs4-interop-{side}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&state).expect("state dir");
    state
}

/// Reads obfs4proxy's managed-transport lines up to `done`; the `METHOD obfs4 ` line.
fn method_line(stdout: std::process::ChildStdout, method: &str, done: &str) -> String {
    // Read its lines on a thread (and keep draining them) so a silent process cannot hang us.
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let mut found = None;
    loop {
        let line = received
            .recv_timeout(TIMEOUT)
            .expect("obfs4proxy printed its METHODS DONE in time");
        assert!(!line.contains("ERROR"), "obfs4proxy: {line}");
        if line.starts_with(method) {
            found = Some(line);
        } else if line == done {
            break;
        }
    }
    found.expect("a METHOD obfs4 line")
}

/// obfs4proxy as a managed client transport; its SOCKS5 address.
fn start_obfs4proxy_client(binary: &Path) -> (ManagedServer, std::net::SocketAddr) {
    let state = state_dir("client");
    let mut child = Command::new(binary)
        .env("TOR_PT_MANAGED_TRANSPORT_VER", "1")
        .env("TOR_PT_STATE_LOCATION", &state)
        .env("TOR_PT_CLIENT_TRANSPORTS", "obfs4")
        .env("TOR_PT_EXIT_ON_STDIN_CLOSE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn obfs4proxy");
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().expect("piped stdout");
    let line = method_line(stdout, "CMETHOD obfs4 ", "CMETHODS DONE");
    // "CMETHOD obfs4 socks5 127.0.0.1:PORT"
    let socks = line
        .split(' ')
        .nth(3)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no SOCKS address in {line:?}"));
    (
        ManagedServer {
            child,
            stdin,
            state,
        },
        socks,
    )
}

fn start_obfs4proxy_server(
    binary: &Path,
    identity_secret: &[u8; 32],
    node_id: &NodeId,
    orport: std::net::SocketAddr,
    iat_mode: u8,
) -> (ManagedServer, String) {
    let state = state_dir("server");
    let options = format!(
        "obfs4:node-id={};obfs4:private-key={};obfs4:drbg-seed={};obfs4:iat-mode={iat_mode}",
        hex(&node_id.0),
        hex(identity_secret),
        hex(&[0x5a; 24])
    );
    let mut child = Command::new(binary)
        .env("TOR_PT_MANAGED_TRANSPORT_VER", "1")
        .env("TOR_PT_STATE_LOCATION", &state)
        .env("TOR_PT_SERVER_TRANSPORTS", "obfs4")
        .env("TOR_PT_SERVER_BINDADDR", "obfs4-127.0.0.1:0")
        .env("TOR_PT_ORPORT", orport.to_string())
        .env("TOR_PT_EXIT_ON_STDIN_CLOSE", "1")
        .env("TOR_PT_SERVER_TRANSPORT_OPTIONS", options)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn obfs4proxy");
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().expect("piped stdout");
    let line = method_line(stdout, "SMETHOD obfs4 ", "SMETHODS DONE");
    (
        ManagedServer {
            child,
            stdin,
            state,
        },
        line,
    )
}

#[test]
fn echo_64_kib_through_real_obfs4proxy() {
    let binary = Path::new(OBFS4PROXY);
    if !binary.exists() {
        eprintln!("skipping: {OBFS4PROXY} is not installed (apt-get install obfs4proxy)");
        return;
    }
    let mut rng = OsEntropy(SystemRandom::new());
    let mut secret = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(&mut secret[..]);
    let mut node_id = [0u8; 20];
    rng.fill_bytes(&mut node_id);
    let identity = ServerIdentity::from_secret(NodeId(node_id), secret.clone());

    let echo = spawn_echo();
    let (_server, smethod) = start_obfs4proxy(binary, &secret, &identity.node_id(), echo);
    // "SMETHOD obfs4 127.0.0.1:PORT ARGS:cert=...,iat-mode=0"
    let mut fields = smethod.split(' ');
    let address = fields.nth(2).expect("address field");
    assert!(address.starts_with("127.0.0.1:"), "{smethod}");
    let args = fields.next().expect("ARGS field");
    let cert_text = args
        .trim_start_matches("ARGS:")
        .split(',')
        .find_map(|arg| arg.strip_prefix("cert="))
        .expect("cert= in ARGS");
    let cert: Cert = cert_text.parse().expect("obfs4proxy's cert parses");
    assert_eq!(
        cert,
        identity.cert(),
        "obfs4proxy derived a different cert from our keys"
    );

    let handshake = ClientHandshake::new(&cert, &mut rng, SystemTime::now());
    let mut stream = TcpStream::connect(address).expect("connect to obfs4proxy");
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    stream.set_write_timeout(Some(TIMEOUT)).expect("timeout");
    stream.write_all(handshake.hello()).expect("send hello");

    let mut buffer = vec![0u8; 16 * 1448];
    let mut progress = ClientProgress::NeedMore(handshake);
    let mut established = loop {
        match progress {
            ClientProgress::Done(established) => break established,
            ClientProgress::NeedMore(handshake) => {
                let n = stream
                    .read(&mut buffer)
                    .expect("server hello before the timeout");
                assert!(n > 0, "obfs4proxy closed during the handshake");
                progress = handshake
                    .handle_bytes(&buffer[..n])
                    .expect("valid server hello");
            }
        }
    };

    let data: Vec<u8> = (0..65_536u32)
        .map(|i| (i ^ (i >> 8) ^ 0xa5) as u8)
        .collect();
    let mut wire = Vec::new();
    established
        .encoder
        .encode_data(&data, &mut wire)
        .expect("frames");
    established
        .encoder
        .encode_payload(b"", 300, &mut wire)
        .expect("padding frame");
    stream.write_all(&wire).expect("send data");

    let mut echoed = Vec::new();
    let mut saw_seed = false;
    while echoed.len() < data.len() {
        while let Some(packet) = established.decoder.poll_packet().expect("authentic frames") {
            match packet {
                Packet::Payload(bytes) => echoed.extend_from_slice(&bytes),
                Packet::PrngSeed(_) => saw_seed = true,
                Packet::Ignored { kind } => panic!("unexpected packet type {kind}"),
            }
        }
        if echoed.len() >= data.len() {
            break;
        }
        let n = stream.read(&mut buffer).expect("echo before the timeout");
        assert!(n > 0, "obfs4proxy closed before echoing everything");
        established.decoder.handle_bytes(&buffer[..n]);
    }
    assert!(saw_seed, "obfs4proxy's inline PRNG-seed frame was not seen");
    assert_eq!(echoed.len(), data.len());
    assert!(echoed == data, "echo differs from what was sent");
}

fn installed() -> Option<&'static Path> {
    let binary = Path::new(OBFS4PROXY);
    if binary.exists() {
        Some(binary)
    } else {
        eprintln!("skipping: {OBFS4PROXY} is not installed (apt-get install obfs4proxy)");
        None
    }
}

fn fresh_identity(rng: &mut OsEntropy) -> (Zeroizing<[u8; 32]>, ServerIdentity) {
    let mut secret = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(&mut secret[..]);
    let mut node_id = [0u8; 20];
    rng.fill_bytes(&mut node_id);
    let identity = ServerIdentity::from_secret(NodeId(node_id), secret.clone());
    (secret, identity)
}

fn record(i: usize) -> Record {
    let mut r = [0u8; RECORD_LEN];
    for (j, b) in r.iter_mut().enumerate() {
        *b = (i.wrapping_mul(131) ^ j.wrapping_mul(7)) as u8;
    }
    r
}

/// Sends `count` records from `client` and drives `client` (and `other`, if any) until as
/// many come back through `echo`, in order.
fn records_round_trip(
    client: &mut dyn ClientCarrier,
    mut echo: impl FnMut() -> Vec<Record>,
    count: usize,
) -> Vec<Record> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !client.is_open() {
        assert!(std::time::Instant::now() < deadline, "never opened");
        client.drive(std::time::Instant::now()).expect("carrier");
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut sent = 0;
    let mut got = Vec::new();
    while got.len() < count {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {count} records back",
            got.len()
        );
        while sent < count && client.send(&record(sent)) {
            sent += 1;
        }
        client.drive(std::time::Instant::now()).expect("carrier");
        got.extend(std::iter::from_fn(|| client.recv()));
        got.extend(echo());
        std::thread::sleep(Duration::from_micros(200));
    }
    got
}

#[test]
fn our_codec_on_the_stream_driver_against_obfs4proxy_servers_in_every_iat_mode() {
    let Some(binary) = installed() else {
        return;
    };
    let mut rng = OsEntropy(SystemRandom::new());
    for (server_iat, client_iat) in [
        (0, IatMode::None),
        (1, IatMode::Enabled),
        (2, IatMode::Paranoid),
    ] {
        let (secret, identity) = fresh_identity(&mut rng);
        let echo = spawn_echo();
        let (_server, smethod) =
            start_obfs4proxy_server(binary, &secret, &identity.node_id(), echo, server_iat);
        let address: std::net::SocketAddr = smethod
            .split(' ')
            .nth(2)
            .and_then(|a| a.parse().ok())
            .expect("address field");
        let codec = Obfs4Codec::client(&identity.cert(), client_iat, Box::new(pb_obfs4::OsEntropy));
        let mut carrier = StreamCarrier::connect(TransportKind::Obfs4, address, Box::new(codec))
            .expect("connect");
        let got = records_round_trip(&mut carrier, Vec::new, 400);
        assert!(
            got.iter().enumerate().all(|(i, r)| *r == record(i)),
            "server iat-mode {server_iat}: records differ"
        );
    }
}

#[test]
fn obfs4proxy_as_client_against_our_listener_in_iat_modes_0_and_2() {
    let Some(binary) = installed() else {
        return;
    };
    let mut rng = OsEntropy(SystemRandom::new());
    let (_client_pt, socks) = start_obfs4proxy_client(binary);
    for iat in [IatMode::None, IatMode::Paranoid] {
        let (_, identity) = fresh_identity(&mut rng);
        let cert = identity.cert();
        let bridge = Obfs4Server::new(identity, PrngSeed([0x33; 24]), iat);
        let factory: CodecFactory =
            Box::new(move |now| Box::new(bridge.accept(now, Box::new(pb_obfs4::OsEntropy))));
        let mut listener =
            StreamListener::bind(TransportKind::Obfs4, ([127, 0, 0, 1], 0).into(), factory)
                .expect("bind");
        let at = listener.local_addr();
        // The listener echoes what it gets, on its own thread: obfs4proxy answers the SOCKS
        // CONNECT only once its obfs4 handshake with the listener is done.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let echo = std::thread::spawn(move || {
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                listener.drive(std::time::Instant::now()).expect("listener");
                while let Some((peer, r)) = listener.recv() {
                    assert!(listener.send(peer, &r), "the listener takes it back");
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            listener
        });
        let proxy = Socks5 {
            proxy: socks,
            args: vec![
                ("cert".into(), cert.to_string()),
                ("iat-mode".into(), iat.to_string()),
            ],
        };
        let mut carrier =
            StreamCarrier::via_socks5(TransportKind::Tcp, &proxy, at, Box::new(Plain::default()))
                .expect("through obfs4proxy's SOCKS5 port");
        let got = records_round_trip(&mut carrier, Vec::new, 400);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let listener = echo.join().expect("the listener's thread");
        assert!(
            got.iter().enumerate().all(|(i, r)| *r == record(i)),
            "{iat:?}: records differ"
        );
        let counters = listener.counters();
        assert!(counters.contains(&("handshakes_failed", 0)), "{counters:?}");
    }
}
