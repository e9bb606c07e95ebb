//! Epoch rotation of a running relay: SIGHUP re-reads the configuration and topology. The
//! new epoch's packets pass, the previous epoch's still pass through the overlap (replays
//! from before the rotation stay refused), a reload that skips an epoch is refused in one
//! line while the relay keeps running, and after the next rotation the first epoch is past.
//! Unprivileged: one relay on loopback, its neighbours plain sockets of the test.
#![expect(clippy::unwrap_used, clippy::panic, reason = "tests")]

use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader, Read as _},
    net::UdpSocket,
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use pb_sphinx::{
    DelayMs, Epoch, EpochKey, Format, Hop, MailboxId, NodeId, PACKET_LEN, create_packet_with,
};

const FORMAT: Format = Format::V2;
const MAILBOX: MailboxId = MailboxId([0xab; 16]);
const RELAY: NodeId = NodeId([0x51; 16]);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The relay's secret for `epoch`: a new one every epoch.
fn secret(epoch: u32) -> [u8; 32] {
    [0x30 + epoch as u8; 32]
}

fn key(epoch: u32) -> EpochKey {
    EpochKey::from_secret(Epoch(epoch), secret(epoch))
}

/// Writes the relay's files for `epoch`: it is layer 0 at `relay`, the two other layers are
/// the test's sockets.
fn write_files(dir: &Path, epoch: u32, relay: u16, others: [u16; 2], deliver: u16) {
    let mut topology = format!(
        "[[node]]\nid = \"{}\"\nrole = \"gateway\"\nlayer = 0\naddr = \"127.0.0.1:{relay}\"\npublic_key = \"{}\"\n\n",
        hex(&RELAY.0),
        hex(&key(epoch).public_key())
    );
    for (i, port) in others.iter().enumerate() {
        topology += &format!(
            "[[node]]\nid = \"{}\"\nrole = \"mix\"\nlayer = {}\naddr = \"127.0.0.1:{port}\"\npublic_key = \"{}\"\n\n",
            hex(&[0x61 + i as u8; 16]),
            i + 1,
            hex(&EpochKey::from_secret(Epoch(epoch), [0x70 + i as u8; 32]).public_key())
        );
    }
    std::fs::write(dir.join("topology.toml"), topology).unwrap();
    let config = format!(
        "topology = \"topology.toml\"\ndeliver_to = \"127.0.0.1:{deliver}\"\n\n[node]\nid = \"{}\"\nsecret = \"{}\"\nepoch = {epoch}\nformat = \"v2\"\n\n[io]\nbackend = \"udp\"\nbind = \"127.0.0.1:{relay}\"\ncores = 2\n\n[mix]\nlink_rate = 50\n",
        hex(&RELAY.0),
        hex(&secret(epoch)),
    );
    std::fs::write(dir.join("relay.toml"), config).unwrap();
}

/// A one-hop packet to the relay's mailbox in `epoch`, carrying `n`.
fn packet(epoch: u32, n: u8) -> [u8; PACKET_LEN] {
    let mut p = [0u8; PACKET_LEN];
    let hop = Hop {
        node: RELAY,
        public_key: key(epoch).public_key(),
        delay: DelayMs(0),
    };
    create_packet_with(
        FORMAT,
        &mut p,
        Epoch(epoch),
        &[hop],
        MAILBOX,
        &[n; 8],
        &[n; 32],
    )
    .unwrap();
    p
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the relay if the test fails; removes the scratch directory.
struct Relay {
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn sighup_rotates_to_the_next_epoch() {
    let dir = std::env::temp_dir().join(format!("pb-relay-rotation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let neighbours: Vec<UdpSocket> = (0..2)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let others = [0, 1].map(|i| neighbours[i].local_addr().unwrap().port());
    let deliveries = UdpSocket::bind("127.0.0.1:0").unwrap();
    deliveries
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let deliver = deliveries.local_addr().unwrap().port();
    let port = free_port();
    write_files(&dir, 1, port, others, deliver);
    let child = Command::new(env!("CARGO_BIN_EXE_pb-relay"))
        .args(["run", "--stats-interval", "0", "--config"])
        .arg(dir.join("relay.toml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut relay = Relay { child, dir };
    let stderr = relay.child.stderr.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let next_line = || lines.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(next_line().starts_with("pb-relay: node 51515151"));
    let pid = relay.child.id().to_string();
    let hup = || {
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    };

    let mut relay_stdout = relay.child.stdout.take();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut buf = [0u8; 2048];
    // Sends packets and expects exactly the messages `want` delivered, in any order.
    let mut exchange = |packets: &[[u8; PACKET_LEN]], want: &[u8]| {
        for p in packets {
            client.send_to(p, ("127.0.0.1", port)).unwrap();
        }
        let mut got: Vec<u8> = (0..want.len())
            .map(|_| {
                let Ok(n) = deliveries.recv(&mut buf) else {
                    let _ = Command::new("kill").args(["-TERM", &pid]).status();
                    std::thread::sleep(Duration::from_millis(500));
                    let mut out = String::new();
                    let _ = relay_stdout.take().map(|mut s| s.read_to_string(&mut out));
                    panic!("nothing delivered; the relay printed:\n{out}");
                };
                assert_eq!(&buf[..16], &MAILBOX.0);
                assert!(n > 16);
                buf[16]
            })
            .collect();
        got.sort_unstable();
        assert_eq!(got, want);
    };

    exchange(&[packet(1, 1)], &[1]);

    write_files(&relay.dir, 2, port, others, deliver);
    assert!(hup());
    let line = next_line();
    assert!(
        line.contains("epoch 2 is current; epoch 1 is accepted"),
        "{line}"
    );
    // Epoch 2, and epoch 1 through the overlap; the replay from epoch 1 stays refused.
    exchange(&[packet(2, 2), packet(1, 3), packet(1, 1)], &[2, 3]);

    // Skipping an epoch is refused in one line; the relay runs on in epoch 2.
    write_files(&relay.dir, 4, port, others, deliver);
    assert!(hup());
    let line = next_line();
    assert!(
        line.starts_with("pb-relay: reload refused: node.epoch: 4 is not the next epoch (3)"),
        "{line}"
    );
    exchange(&[packet(2, 4)], &[4]);

    write_files(&relay.dir, 3, port, others, deliver);
    assert!(hup());
    let line = next_line();
    assert!(
        line.contains("epoch 3 is current; epoch 2 is accepted"),
        "{line}"
    );
    // Epoch 1 is past now.
    exchange(&[packet(1, 5), packet(3, 6), packet(2, 7)], &[6, 7]);

    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(relay.child.wait().unwrap().success());
    let mut stdout = String::new();
    relay_stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let stats: HashMap<&str, u64> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("stat "))
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k, v.parse().unwrap()))
        .collect();
    assert_eq!(stats["delivered"], 6, "{stdout}");
    assert_eq!(stats["dropped_replay"], 1, "{stdout}");
    assert_eq!(stats["dropped_past_epoch"], 1, "{stdout}");
    assert_eq!(stats["replay_filter_no_table"], 0, "{stdout}");
}
