//! The whole path, real processes in network namespaces on a bridge: a gateway, three mix
//! layers of two, an exit (`pb-relay` in gossip mode), an HTTP server, and `pb-client` with
//! curl in a client namespace.
//!
//! Shows: `curl --socks5-hostname 127.0.0.1:1080` fetches a 1 MiB file through the mixnet,
//! byte-identical, and ten fetches at once all do; a destination the exit policy forbids gets
//! SOCKS reply 0x02 and no connection is attempted; a name that does not resolve gets 0x04;
//! a malformed SOCKS request gets a reply and a close; with 5 % of the packets on every link
//! dropped (nftables on the bridge) the fetch still completes identically, and so it does
//! when a mix is killed in the middle of it; the static aarch64 pb-client, under
//! qemu-aarch64, fetches the same file; and pb-client wrote no file (its HOME and working
//! directory, an empty read-only directory, stay empty: the test runs as root, which could
//! write anyway) and sent no DNS query (the client namespace's resolver is a socket of the
//! test's that hears nothing); its loop cover comes back to it.
#![expect(clippy::unwrap_used, clippy::panic, reason = "tests")]

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use pb_testbed::{Proc, Star, star};

const RELAYS: usize = 8;
const SERVER: usize = RELAYS;
const CLIENT: usize = RELAYS + 1;
const NETWORK_SEED: &str = "4242424242424242424242424242424242424242424242424242424242424242";
const FILE_LEN: usize = 1 << 20;
const HTTP_PORT: u16 = 8080;
const CLIENT_LINK_PORT: u16 = 47480;

fn role(i: usize) -> &'static str {
    match i {
        0 => "gateway",
        _ if i == RELAYS - 1 => "exit",
        _ => "mix",
    }
}

/// The file the server serves: bytes no compression or framing bug would leave intact.
fn file() -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..FILE_LEN)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn relay_config(bed: &Star, i: usize) -> String {
    let ip = bed.nodes[i].v4;
    let seeds = format!(
        "\"{}:47471\", \"{}:47471\"",
        bed.nodes[0].v4, bed.nodes[1].v4
    );
    let role_lines = match role(i) {
        "gateway" => format!("client_bind = \"{ip}:{CLIENT_LINK_PORT}\"\n"),
        // The testbed's own addresses are private; the exit may open them, nothing else.
        "exit" => "exit_allow = [\"198.18.0.0/24\"]\n".to_owned(),
        _ => String::new(),
    };
    format!(
        "[node]\nformat = \"v1\"\n\n[io]\nbackend = \"udp\"\nbind = \"{ip}:47470\"\n\n[gossip]\nbind = \"{ip}:47471\"\nseeds = [{seeds}]\nnetwork_seed = \"{NETWORK_SEED}\"\nidentity_file = \"identity{i}.key\"\nrole = \"{}\"\nepoch_seconds = 604800\n{role_lines}\n[mix]\nlink_rate = 100\nloop_rate = 1\n",
        role(i)
    )
}

/// The output so far of `p`.
fn output(p: &Proc) -> String {
    p.tail(usize::MAX)
}

/// Starts `command`, failing the test if it cannot start.
fn spawn(command: Command) -> Proc {
    Proc::start(command).unwrap()
}

/// Everything the test started, stopped and removed however it ends.
struct Bed {
    procs: Vec<Proc>,
    dir: PathBuf,
    etc: Vec<PathBuf>,
}

impl Drop for Bed {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        for etc in &self.etc {
            let _ = std::fs::remove_dir_all(etc);
        }
    }
}

impl Bed {
    /// Fails at once if a process has exited.
    fn check(&mut self) {
        for i in 0..self.procs.len() {
            if let Ok(Some(status)) = self.procs[i].child.try_wait() {
                self.fail(&format!("process {i} exited: {status}"));
            }
        }
    }

    fn fail(&self, why: &str) -> ! {
        let mut report = String::new();
        for (i, p) in self.procs.iter().enumerate() {
            let out = output(p);
            let tail: Vec<&str> = out.lines().rev().take(40).collect();
            report += &format!(
                "--- process {i}:\n{}\n",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        panic!("{why}\n{report}");
    }
}

/// The pb-relay binary built next to this package's binary.
fn relay_binary() -> PathBuf {
    let client = Path::new(env!("CARGO_BIN_EXE_pb-client"));
    let relay = client.with_file_name("pb-relay");
    assert!(
        relay.exists(),
        "{} is missing: build it first (cargo build -p pb-relay)",
        relay.display()
    );
    relay
}

/// Serves GET /file (the 1 MiB file) on `listener` until the test ends; counts connections.
fn serve_http(listener: TcpListener, body: Arc<Vec<u8>>, served: Arc<AtomicUsize>) {
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let body = body.clone();
            served.fetch_add(1, Ordering::Relaxed);
            thread::spawn(move || {
                let mut request = Vec::new();
                let mut byte = [0u8; 1];
                while !request.ends_with(b"\r\n\r\n") && request.len() < 8192 {
                    if stream.read(&mut byte).unwrap_or(0) == 0 {
                        return;
                    }
                    request.push(byte[0]);
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            });
        }
    });
}

/// A raw SOCKS5 CONNECT from the client namespace: the reply code (None: closed first).
fn socks_reply(bed: &Star, request: &[u8]) -> Option<u8> {
    let mut s = bed.nodes[CLIENT]
        .ns
        .in_netns(|| TcpStream::connect("127.0.0.1:1080").unwrap())
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(90))).unwrap();
    s.write_all(&[5, 1, 0]).unwrap();
    let mut method = [0u8; 2];
    s.read_exact(&mut method).ok()?;
    assert_eq!(method, [5, 0]);
    s.write_all(request).unwrap();
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply).ok()?;
    Some(reply[1])
}

/// curl through pb-client; the fetched bytes (or the failure).
fn curl(bed: &Star, url: &str, out: &Path) -> Result<Vec<u8>, String> {
    curl_via(bed, "127.0.0.1:1080", "240", url, out)
}

/// curl through the SOCKS5 proxy at `proxy`, given `seconds` at most.
fn curl_via(
    bed: &Star,
    proxy: &str,
    seconds: &str,
    url: &str,
    out: &Path,
) -> Result<Vec<u8>, String> {
    let result = bed.nodes[CLIENT]
        .ns
        .exec(
            "curl",
            [
                "-sS",
                "--max-time",
                seconds,
                "--socks5-hostname",
                proxy,
                url,
                "-o",
                out.to_str().unwrap(),
            ],
        )
        .output()
        .unwrap();
    if !result.status.success() {
        return Err(String::from_utf8_lossy(&result.stderr).into_owned());
    }
    std::fs::read(out).map_err(|e| e.to_string())
}

#[test]
fn curl_through_the_mixnet_fetches_a_file_byte_identical() {
    if !pb_testbed::require_privileged("curl_through_the_mixnet_fetches_a_file_byte_identical") {
        return;
    }
    let bed_net = star("e2e", CLIENT + 1).unwrap();
    let dir = std::env::temp_dir().join(format!("pb-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // The exit resolves the server's name from its namespace's own hosts file (`ip netns
    // exec` mounts /etc/netns/<name>/ over /etc); any other name finds no DNS server.
    let etc = PathBuf::from("/etc/netns").join(bed_net.nodes[RELAYS - 1].ns.name());
    std::fs::create_dir_all(&etc).unwrap();
    let server_ip = bed_net.nodes[SERVER].v4;
    std::fs::write(
        etc.join("hosts"),
        format!("127.0.0.1 localhost\n{server_ip} server.pb.test\n"),
    )
    .unwrap();
    std::fs::write(etc.join("resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
    // The client namespace's resolver is the test's socket: any query pb-client made
    // would arrive there.
    let client_etc = PathBuf::from("/etc/netns").join(bed_net.nodes[CLIENT].ns.name());
    std::fs::create_dir_all(&client_etc).unwrap();
    std::fs::write(client_etc.join("resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
    let mut bed = Bed {
        procs: Vec::new(),
        dir: dir.clone(),
        etc: vec![etc, client_etc],
    };
    let dns = bed_net.nodes[CLIENT]
        .ns
        .in_netns(|| std::net::UdpSocket::bind("127.0.0.1:53").unwrap())
        .unwrap();
    dns.set_nonblocking(true).unwrap();
    // pb-client's HOME and working directory: empty, and nobody may write in it.
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o555)).unwrap();
    let relay = relay_binary();
    for i in 0..RELAYS {
        std::fs::write(
            dir.join(format!("identity{i}.key")),
            format!("{}\n", format!("{:02x}", 0x70 + i).repeat(32)),
        )
        .unwrap();
        let path = dir.join(format!("relay{i}.toml"));
        std::fs::write(&path, relay_config(&bed_net, i)).unwrap();
        bed.procs.push(spawn(bed_net.nodes[i].ns.exec(
            &relay,
            [
                "run",
                "--stats-interval",
                "0",
                "--config",
                path.to_str().unwrap(),
            ],
        )));
    }
    let body = Arc::new(file());
    let served = Arc::new(AtomicUsize::new(0));
    let listener = bed_net.nodes[SERVER]
        .ns
        .in_netns(|| TcpListener::bind((server_ip, HTTP_PORT)).unwrap())
        .unwrap();
    serve_http(listener, body.clone(), served.clone());
    // Something listening where the policy forbids going: it must never see a connection.
    let forbidden = bed_net.nodes[RELAYS - 1]
        .ns
        .in_netns(|| TcpListener::bind("127.0.0.1:8081").unwrap())
        .unwrap();
    forbidden.set_nonblocking(true).unwrap();

    // 1. The relays agree on one topology of all eight.
    let start = Instant::now();
    loop {
        // `topology <hash> nodes <n> links <k> epoch <e>`: the same hash and n everywhere.
        let views: Vec<Option<String>> = bed
            .procs
            .iter()
            .map(|p| {
                p.last("topology ")
                    .map(|l| l.split_whitespace().take(4).collect::<Vec<_>>().join(" "))
            })
            .collect();
        let first = views[0].clone();
        if first.as_deref().is_some_and(|t| t.ends_with(" nodes 8"))
            && views.iter().all(|v| *v == first)
        {
            break;
        }
        bed.check();
        if start.elapsed() > Duration::from_secs(60) {
            bed.fail(&format!("no agreement: {views:?}"));
        }
        thread::sleep(Duration::from_millis(200));
    }

    // 2. pb-client verifies the directory and gets ready.
    let gateway = SocketAddr::from((bed_net.nodes[0].v4, CLIENT_LINK_PORT));
    let mut command = bed_net.nodes[CLIENT].ns.exec(
        env!("CARGO_BIN_EXE_pb-client"),
        [
            "--gateway",
            &gateway.to_string(),
            "--network-seed",
            NETWORK_SEED,
        ],
    );
    command.current_dir(&home).env("HOME", &home);
    bed.procs.push(spawn(command));
    let start = Instant::now();
    while bed.procs[RELAYS].last("pb-client: ready").is_none() {
        bed.check();
        if start.elapsed() > Duration::from_secs(30) {
            bed.fail("pb-client did not get ready");
        }
        thread::sleep(Duration::from_millis(100));
    }

    // 3. One fetch, byte-identical.
    let started = Instant::now();
    let url = format!("http://server.pb.test:{HTTP_PORT}/file");
    match curl(&bed_net, &url, &dir.join("one")) {
        Ok(got) if got == *body => {}
        Ok(got) => bed.fail(&format!("fetched {} bytes, not the file", got.len())),
        Err(e) => bed.fail(&format!("curl failed: {e}")),
    }
    let one = started.elapsed();

    // 4. Ten at once.
    let started = Instant::now();
    let results: Vec<Result<Vec<u8>, String>> = thread::scope(|scope| {
        let handles: Vec<_> = (0..10)
            .map(|k| {
                let (bed_net, url, out) = (&bed_net, &url, dir.join(format!("ten{k}")));
                scope.spawn(move || curl(bed_net, url, &out))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (k, r) in results.iter().enumerate() {
        match r {
            Ok(got) if *got == *body => {}
            Ok(got) => bed.fail(&format!("fetch {k}: {} bytes, not the file", got.len())),
            Err(e) => bed.fail(&format!("fetch {k}: curl failed: {e}")),
        }
    }
    let ten = started.elapsed();

    // 5. Refusals: policy (0x02, and nothing reached the listener), an unknown name (0x04),
    // a malformed request (a reply, then the connection closes).
    assert_eq!(
        socks_reply(&bed_net, &[5, 1, 0, 1, 127, 0, 0, 1, 0x1f, 0x91]),
        Some(0x02)
    );
    assert!(
        forbidden.accept().is_err(),
        "the exit connected to a forbidden address"
    );
    let mut unknown = vec![5, 1, 0, 3, 16];
    unknown.extend_from_slice(b"nowhere.pb.test.");
    unknown.extend_from_slice(&[0, 80]);
    assert_eq!(socks_reply(&bed_net, &unknown), Some(0x04));
    assert_eq!(
        socks_reply(&bed_net, &[5, 9, 0, 1, 1, 2, 3, 4, 0, 80]),
        Some(0x07)
    );
    let mut s = bed_net.nodes[CLIENT]
        .ns
        .in_netns(|| TcpStream::connect("127.0.0.1:1080").unwrap())
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&[5, 1, 0, 5, 1, 7, 1, 1, 2, 3, 4, 0, 80])
        .unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    assert_eq!(
        answer,
        [
            vec![5, 0],
            pb_proto::Reply::GeneralFailure.message().to_vec()
        ]
        .concat()
    );

    // 6. 5 % loss on every link: every packet between two nodes crosses the bridge once.
    let switch = &bed_net.switch;
    let nft = |args: &str| {
        let out = switch.exec("nft", args.split(' ')).output().unwrap();
        assert!(
            out.status.success(),
            "nft {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    nft("add table bridge lossy");
    nft("add chain bridge lossy drops { type filter hook forward priority 0 ; }");
    nft("add rule bridge lossy drops numgen random mod 100 < 5 counter drop");
    let started = Instant::now();
    match curl(&bed_net, &url, &dir.join("lossy")) {
        Ok(got) if got == *body => {}
        Ok(got) => bed.fail(&format!("with loss: {} bytes, not the file", got.len())),
        Err(e) => bed.fail(&format!("with loss: curl failed: {e}")),
    }
    let lossy = started.elapsed();
    let listing = nft("list chain bridge lossy drops");
    let dropped: u64 = listing
        .split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        dropped > 100,
        "the bridge dropped only {dropped} packets: {listing}"
    );
    nft("delete table bridge lossy");

    // 7. A mix killed in the middle of a fetch (every layer has two).
    let started = Instant::now();
    let killed = thread::scope(|scope| {
        let fetch = scope.spawn(|| curl(&bed_net, &url, &dir.join("killed")));
        thread::sleep(Duration::from_secs(2));
        let _ = bed.procs[3].child.kill();
        let _ = bed.procs[3].child.wait();
        fetch.join().unwrap()
    });
    match killed {
        Ok(got) if got == *body => {}
        Ok(got) => bed.fail(&format!("mix killed: {} bytes, not the file", got.len())),
        Err(e) => bed.fail(&format!("mix killed: curl failed: {e}")),
    }
    let through_kill = started.elapsed();

    // 8. The static aarch64 pb-client under qemu-aarch64, on port 1081.
    let arm = Path::new(env!("CARGO_BIN_EXE_pb-client"))
        .parent()
        .and_then(Path::parent)
        .map(|target| target.join("aarch64-unknown-linux-musl/debug/pb-client"))
        .unwrap();
    let qemu = Command::new("qemu-aarch64")
        .arg("--version")
        .output()
        .is_ok();
    let arm_time = if arm.exists() && qemu {
        let mut command = bed_net.nodes[CLIENT].ns.exec(
            "qemu-aarch64",
            [
                arm.to_str().unwrap(),
                "--listen",
                "127.0.0.1:1081",
                "--gateway",
                &gateway.to_string(),
                "--network-seed",
                NETWORK_SEED,
            ],
        );
        command.current_dir(&home).env("HOME", &home);
        bed.procs.push(spawn(command));
        let arm_proc = bed.procs.len() - 1;
        let start = Instant::now();
        while bed.procs[arm_proc].last("pb-client: ready").is_none() {
            if start.elapsed() > Duration::from_secs(90) {
                bed.fail("the aarch64 pb-client did not get ready");
            }
            thread::sleep(Duration::from_millis(200));
        }
        let started = Instant::now();
        match curl_via(&bed_net, "127.0.0.1:1081", "300", &url, &dir.join("arm")) {
            Ok(got) if got == *body => {}
            Ok(got) => bed.fail(&format!("aarch64 fetch: {} bytes, not the file", got.len())),
            Err(e) => bed.fail(&format!("aarch64 fetch failed: {e}")),
        }
        Some(started.elapsed())
    } else {
        let why = format!(
            "{} missing or qemu-aarch64 not installed (make test builds it)",
            arm.display()
        );
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must run the aarch64 client: {why}"
        );
        println!("skipping the aarch64 fetch: {why}");
        None
    };

    // 9. The client stops on SIGTERM and reports its counters: its loops came back.
    let client_pid = bed.procs[RELAYS].child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &client_pid]).status();
    let status = bed.procs[RELAYS].child.wait().unwrap();
    assert!(status.success(), "pb-client exited with {status}");
    thread::sleep(Duration::from_millis(200));
    let loops = bed.procs[RELAYS].last("pb-client: ").unwrap_or_default();
    let back: u64 = loops
        .split("sent, ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(back > 10, "too few loops came back: {loops}");

    // 10. Nothing written where pb-client could, no DNS query.
    assert_eq!(
        std::fs::read_dir(&home).unwrap().count(),
        0,
        "pb-client wrote a file"
    );
    let mut query = [0u8; 512];
    assert!(
        dns.recv_from(&mut query).is_err(),
        "pb-client (or curl) made a DNS query"
    );
    assert!(served.load(Ordering::Relaxed) >= 13);
    println!(
        "one 1 MiB fetch in {one:?}; ten at once in {ten:?}; with 5% loss per link in {lossy:?} ({dropped} packets dropped); through a killed mix in {through_kill:?}; aarch64 under qemu in {arm_time:?}; {loops}"
    );
}
