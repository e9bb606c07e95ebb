//! Our client state machine against the real obfs4proxy (Debian's 0.0.14) as a managed server
//! transport, over loopback: handshake, then 64 KiB echoed byte-identical through its ORPort.
//! Skips, saying so, when obfs4proxy is not installed.

#![expect(clippy::expect_used, clippy::panic, reason = "tests")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use pb_obfs4::{Cert, ClientHandshake, ClientProgress, Entropy, NodeId, Packet, ServerIdentity};
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
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let state =
        std::env::temp_dir().join(format!("pb-obfs4-interop-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&state).expect("state dir");
    let options = format!(
        "obfs4:node-id={};obfs4:private-key={};obfs4:drbg-seed={};obfs4:iat-mode=0",
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
    let server = ManagedServer {
        child,
        stdin,
        state,
    };

    // Read its lines on a thread (and keep draining them) so a silent process cannot hang us.
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let mut smethod = None;
    loop {
        let line = received
            .recv_timeout(TIMEOUT)
            .expect("obfs4proxy printed SMETHODS DONE in time");
        assert!(!line.contains("ERROR"), "obfs4proxy: {line}");
        if line.starts_with("SMETHOD obfs4 ") {
            smethod = Some(line);
        } else if line == "SMETHODS DONE" {
            break;
        }
    }
    (server, smethod.expect("an SMETHOD obfs4 line"))
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
