//! Real tools against the gateway over 127.0.0.1: curl sees the web site, and a WebSocket
//! client that is not ours (Python's `websockets`, Debian `python3-websockets`) exchanges a
//! record through the `Listener` API. A test whose tool is missing says so and passes.
#![expect(clippy::unwrap_used, reason = "tests")]

use std::{
    net::SocketAddr,
    path::Path,
    process::{Command, Output},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use pb_transport::{Listener, tls::TlsIdentity};
use pb_wss::{SecretPath, WssListener, WssServerConfig};

/// The Python that has Debian's `python3-websockets` (not a pyenv shim without it).
const PYTHON: &str = "/usr/bin/python3";

/// A gateway in a thread that echoes every record to the peer it came from.
struct EchoGateway {
    addr: SocketAddr,
    path: SecretPath,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<(&'static str, u64)>>>,
}

impl EchoGateway {
    fn start() -> Self {
        let identity = TlsIdentity::generate("www.example.org").unwrap();
        let path = SecretPath::from_random([5; 16]);
        let mut gateway = WssListener::bind(
            ([127, 0, 0, 1], 0).into(),
            &identity,
            WssServerConfig::new(path.clone()),
        )
        .unwrap();
        let addr = gateway.local_addr();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                while !stop.load(Ordering::Relaxed) {
                    gateway.drive(Instant::now()).unwrap();
                    while let Some((peer, record)) = gateway.recv() {
                        gateway.send(peer, &record);
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                gateway.counters()
            }
        });
        Self {
            addr,
            path,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://127.0.0.1:{}{path}", self.addr.port())
    }

    /// Stops the gateway; its counters.
    fn stop(mut self) -> std::collections::HashMap<&'static str, u64> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().unwrap();
        thread.join().unwrap().into_iter().collect()
    }
}

fn have(tool: &str) -> bool {
    let found = Command::new(tool).arg("--version").output().is_ok();
    if !found {
        eprintln!("skipping: {tool} is not installed");
    }
    found
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn curl_gets_the_page_and_a_404_on_one_kept_alive_connection() {
    if !have("curl") {
        return;
    }
    let gateway = EchoGateway::start();
    let out = run(Command::new("curl").args([
        "-k",
        "-sS",
        "-v",
        "--http1.1",
        &gateway.url("https", "/"),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}\n",
        &gateway.url("https", "/nope"),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}\n",
    ]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200\n404\n");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("ALPN: server accepted http/1.1")
            || log.contains("ALPN, server accepted to use http/1.1"),
        "{log}"
    );
    assert!(
        log.contains("Re-using existing connection"),
        "keep-alive: {log}"
    );
    assert!(log.contains("< Server: nginx"));

    // The page's bytes, and the 404 page's.
    let page = run(Command::new("curl").args(["-k", "-sS", &gateway.url("https", "/")]));
    assert_eq!(page.stdout, pb_wss::Site::default().page);
    let missing = run(Command::new("curl").args(["-k", "-sS", &gateway.url("https", "/nope")]));
    let body = String::from_utf8_lossy(&missing.stdout);
    assert!(
        body.contains("<center><h1>404 Not Found</h1></center>"),
        "{body}"
    );
    let counters = gateway.stop();
    assert_eq!(counters["pages_served"], 2);
    assert_eq!(counters["not_found"], 2);
    assert_eq!(counters["links_opened"], 0);
}

const WS_CLIENT: &str = r#"
import asyncio, ssl, sys, websockets
async def main(url):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        async with websockets.connect(url, ssl=ctx, max_size=None) as ws:
            for n in range(3):
                record = bytes((n + i) % 256 for i in range(1452))
                await ws.send(record)
                echo = await ws.recv()
                assert echo == record, "echo differs"
            print("echoed", n + 1)
    except websockets.exceptions.InvalidStatusCode as e:
        print("status", e.status_code)
asyncio.run(main(sys.argv[1]))
"#;

fn python_websockets() -> bool {
    let ok = Path::new(PYTHON).exists()
        && Command::new(PYTHON)
            .args(["-c", "import websockets"])
            .output()
            .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!(
            "skipping: {PYTHON} has no websockets module (apt-get install python3-websockets)"
        );
    }
    ok
}

#[test]
fn a_real_websocket_client_exchanges_records_at_the_secret_path_only() {
    if !python_websockets() {
        return;
    }
    let gateway = EchoGateway::start();
    let out = run(Command::new(PYTHON).args([
        "-c",
        WS_CLIENT,
        &gateway.url("wss", gateway.path.as_str()),
    ]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "echoed 3\n");
    let out = run(Command::new(PYTHON).args(["-c", WS_CLIENT, &gateway.url("wss", "/chat")]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "status 404\n");
    let counters = gateway.stop();
    assert_eq!(counters["links_opened"], 1);
    assert_eq!(counters["records_received"], 3);
    assert_eq!(counters["records_sent"], 3);
    assert_eq!(counters["not_found"], 1);
    assert_eq!(counters["bad_messages"], 0);
}

/// Writes TLS secrets in the NSS key log format, for tshark to decrypt the capture.
#[derive(Debug)]
struct KeyLogTo(std::sync::Mutex<std::fs::File>);

impl rustls::KeyLog for KeyLogTo {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        use std::io::Write as _;
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let mut file = self.0.lock().unwrap();
        writeln!(file, "{label} {} {}", hex(client_random), hex(secret)).unwrap();
    }
}

fn tshark(capture: &Path, keylog: &Path, port: u16, filter: &str, fields: &[&str]) -> String {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(capture);
    cmd.args(["-o", &format!("tls.keylog_file:{}", keylog.display())]);
    cmd.args([
        "-d",
        &format!("tcp.port=={port},tls"),
        "-Y",
        filter,
        "-T",
        "fields",
    ]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    String::from_utf8(run(&mut cmd).stdout).unwrap()
}

#[test]
fn tshark_dissects_a_session_as_well_formed_https_and_websocket() {
    use pb_transport::ClientCarrier as _;
    if !have("tshark") || !have("dumpcap") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("pb-wss-tshark-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (capture, keylog) = (dir.join("lo.pcapng"), dir.join("keys.txt"));
    let identity = TlsIdentity::generate("www.example.org").unwrap();
    let path = SecretPath::from_random([8; 16]);
    let mut tls = identity.server_config(&[pb_wss::ALPN]).unwrap();
    tls.key_log = Arc::new(KeyLogTo(std::sync::Mutex::new(
        std::fs::File::create(&keylog).unwrap(),
    )));
    let mut gateway = WssListener::bind_with(
        ([127, 0, 0, 1], 0).into(),
        tls,
        WssServerConfig::new(path.clone()),
    )
    .unwrap();
    let port = gateway.local_addr().port();
    let mut dumpcap = Command::new("dumpcap")
        .args(["-q", "-i", "lo", "-f", &format!("tcp port {port}"), "-w"])
        .arg(&capture)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // dumpcap writes the file's header once it captures.
    for _ in 0..100 {
        if std::fs::metadata(&capture).is_ok_and(|m| m.len() > 0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));

    let config = pb_wss::WssClientConfig::new(identity.pin(), "www.example.org", port, path);
    let mut client = pb_wss::WssCarrier::connect(gateway.local_addr(), &config).unwrap();
    let (mut sent, mut echoed) = (0u8, 0);
    for _ in 0..20_000 {
        let now = Instant::now();
        gateway.drive(now).unwrap();
        client.drive(now).unwrap();
        if client.is_open() && sent < 20 && client.send(&[sent; pb_transport::RECORD_LEN]) {
            sent += 1;
        }
        while let Some((peer, record)) = gateway.recv() {
            gateway.send(peer, &record);
        }
        echoed += std::iter::from_fn(|| client.recv()).count();
        if echoed == 20 {
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    assert_eq!(echoed, 20);
    client.close();
    for _ in 0..50 {
        gateway.drive(Instant::now()).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(500));
    run(Command::new("kill").args(["-INT", &dumpcap.id().to_string()]));
    dumpcap.wait().unwrap();

    let binary = tshark(
        &capture,
        &keylog,
        port,
        "websocket.opcode == 2",
        &["websocket.payload_length_ext_16"],
    );
    let lengths: Vec<&str> = binary.lines().flat_map(|l| l.split(',')).collect();
    assert_eq!(lengths.len(), 40, "20 records each way: {binary}");
    assert!(lengths.iter().all(|l| *l == "1452"), "{binary}");
    let upgrade = tshark(
        &capture,
        &keylog,
        port,
        "http.response.code == 101",
        &["http.upgrade"],
    );
    assert_eq!(upgrade.trim(), "websocket");
    let closes = tshark(
        &capture,
        &keylog,
        port,
        "websocket.opcode == 8",
        &["websocket.payload.close.status_code"],
    );
    assert!(
        closes.lines().next().is_some_and(|l| l.contains("1000")),
        "{closes}"
    );
    let bad = tshark(
        &capture,
        &keylog,
        port,
        "_ws.malformed || _ws.expert.severity >= warning",
        &["frame.number", "_ws.expert.message"],
    );
    assert_eq!(bad, "", "tshark found malformed or suspicious packets");
    let _ = std::fs::remove_dir_all(&dir);
}
