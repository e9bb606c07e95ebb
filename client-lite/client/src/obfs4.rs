//! The obfs4 transport's client side: the built-in one (pb-obfs4's codec on pb-transport's
//! stream driver), or obfs4proxy run as a managed client transport (`--obfs4proxy PATH`,
//! Tor's way: pb-client starts it, takes its SOCKS5 port from its `CMETHOD` line and hands
//! it the bridge's `cert` and `iat-mode` as SOCKS arguments); and bridge lines
//! (`--bridge "obfs4 ADDR:PORT cert=… iat-mode=N"`), for a bridge that is not the gateway's
//! own listener (e.g. an obfs4proxy server in front of the gateway's plain TCP port).

use std::{
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{Context as _, anyhow};
use pb_obfs4::{Cert, IatMode, IdentityPublicKey, NodeId, Obfs4Codec, OsEntropy};
use pb_transport::{ClientCarrier, Plain, Socks5, StreamCarrier, TransportKind};

/// How long obfs4proxy may take to say where its SOCKS5 port is.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// An obfs4 bridge: where it listens and its offer's parameters (cert and iat-mode,
/// `pb_control::network::obfs4_params`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bridge {
    /// Its address.
    pub addr: SocketAddr,
    /// Node id (20), identity key (32), iat-mode (1).
    pub params: Vec<u8>,
}

impl Bridge {
    /// Reads a bridge line: `[Bridge] obfs4 ADDR:PORT [FINGERPRINT] cert=… iat-mode=N` (as
    /// obfs4proxy's `obfs4_bridgeline.txt` and `pb-relay`'s start-up line write it).
    pub fn parse(line: &str) -> anyhow::Result<Self> {
        let bad =
            |why: &str| anyhow!("--bridge: {why} (expected \"obfs4 ADDR:PORT cert=… iat-mode=N\")");
        let mut words = line.split_whitespace().peekable();
        if words.peek() == Some(&"Bridge") {
            words.next();
        }
        if words.next() != Some("obfs4") {
            return Err(bad("only obfs4 bridges are known"));
        }
        let addr = words
            .next()
            .and_then(|w| w.parse::<SocketAddr>().ok())
            .ok_or_else(|| bad("no ADDR:PORT"))?;
        let args: Vec<&str> = words.filter(|w| w.contains('=')).collect();
        let params = pb_control::network::obfs4_params(&args.join(";"))
            .ok_or_else(|| bad("its cert= or iat-mode= is missing or malformed"))?;
        Ok(Self { addr, params })
    }

    fn cert(&self) -> anyhow::Result<(Cert, IatMode)> {
        let bad = || anyhow!("obfs4: malformed parameters");
        let (cert, iat) = self.params.split_at_checked(52).ok_or_else(bad)?;
        let (node_id, key) = cert.split_at(20);
        let node_id = NodeId(node_id.try_into().map_err(|_| bad())?);
        let public_key = IdentityPublicKey(key.try_into().map_err(|_| bad())?);
        let iat = match iat {
            [n] => IatMode::from_number(*n).ok_or_else(bad)?,
            _ => return Err(bad()),
        };
        Ok((
            Cert {
                node_id,
                public_key,
            },
            iat,
        ))
    }

    /// A carrier to the bridge: through `obfs4proxy` if given, else the built-in obfs4.
    pub fn carrier(
        &self,
        obfs4proxy: Option<&ManagedClient>,
    ) -> anyhow::Result<Box<dyn ClientCarrier>> {
        let (cert, iat) = self.cert()?;
        let context = || format!("obfs4 bridge {}", self.addr);
        // Paranoid shaping carries less than the default profile's rates, either end's.
        let cap = (iat == IatMode::Paranoid).then_some(pb_obfs4::PARANOID_RECORD_RATE);
        Ok(match obfs4proxy {
            Some(pt) => {
                let proxy = Socks5 {
                    proxy: pt.socks,
                    args: vec![
                        ("cert".into(), cert.to_string()),
                        ("iat-mode".into(), iat.to_string()),
                    ],
                };
                Box::new(
                    StreamCarrier::via_socks5(
                        TransportKind::Obfs4,
                        &proxy,
                        self.addr,
                        Box::new(Plain::default()),
                    )
                    .with_context(|| format!("{} through obfs4proxy", context()))?
                    .with_max_record_rate(cap),
                )
            }
            None => {
                let codec = Obfs4Codec::client(&cert, iat, Box::new(OsEntropy));
                Box::new(
                    StreamCarrier::connect(TransportKind::Obfs4, self.addr, Box::new(codec))
                        .with_context(context)?
                        .with_max_record_rate(cap),
                )
            }
        })
    }
}

/// obfs4proxy running as pb-client's managed client transport, until dropped. Its state
/// directory is a fresh temporary one, removed with it: pb-client keeps no files.
#[derive(Debug)]
pub struct ManagedClient {
    child: Child,
    stdin: Option<ChildStdin>,
    state: PathBuf,
    /// Its SOCKS5 port.
    pub socks: SocketAddr,
}

impl ManagedClient {
    /// Starts `binary` (obfs4proxy, or another pluggable transport that offers obfs4) and
    /// waits for its SOCKS5 port.
    pub fn start(binary: &Path) -> anyhow::Result<Self> {
        let mut name = [0u8; 8];
        getrandom::fill(&mut name).map_err(|e| anyhow!("OS randomness: {e}"))?;
        let state = std::env::temp_dir().join(format!(
            "pb-client-obfs4proxy-{}",
            name.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ));
        std::fs::create_dir(&state)
            .with_context(|| format!("making obfs4proxy's state directory {}", state.display()))?;
        let spawned = Command::new(binary)
            .env("TOR_PT_MANAGED_TRANSPORT_VER", "1")
            .env("TOR_PT_STATE_LOCATION", &state)
            .env("TOR_PT_CLIENT_TRANSPORTS", "obfs4")
            // It exits when its stdin closes: when pb-client goes, however it goes.
            .env("TOR_PT_EXIT_ON_STDIN_CLOSE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&state);
                return Err(e)
                    .with_context(|| format!("--obfs4proxy: cannot run {}", binary.display()));
            }
        };
        let stdin = child.stdin.take();
        let mut managed = Self {
            child,
            stdin,
            state,
            socks: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let stdout = managed
            .child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("--obfs4proxy: no stdout"))?;
        managed.socks = socks_port(stdout, binary)?;
        Ok(managed)
    }
}

/// Reads the managed-transport lines up to `CMETHODS DONE`: the obfs4 SOCKS5 address.
fn socks_port(stdout: std::process::ChildStdout, binary: &Path) -> anyhow::Result<SocketAddr> {
    let (lines, received) = mpsc::channel();
    // Keeps draining it after the lines we need, so the process never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let mut socks = None;
    loop {
        let line = received.recv_timeout(START_TIMEOUT).map_err(|_| {
            anyhow!(
                "--obfs4proxy {}: no CMETHODS DONE within {} s",
                binary.display(),
                START_TIMEOUT.as_secs()
            )
        })?;
        if line.contains("ERROR") {
            return Err(anyhow!("--obfs4proxy {}: {line}", binary.display()));
        }
        // "CMETHOD obfs4 socks5 127.0.0.1:PORT"
        if let ["CMETHOD", "obfs4", "socks5", addr] = line.split(' ').collect::<Vec<_>>()[..] {
            socks = addr.parse().ok();
        } else if line == "CMETHODS DONE" {
            break;
        }
    }
    socks.ok_or_else(|| {
        anyhow!(
            "--obfs4proxy {}: it offers no obfs4 SOCKS5 port",
            binary.display()
        )
    })
}

impl Drop for ManagedClient {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    const CERT: &str = "AAECAwQFBgcICQoLDA0ODxAREhPnmmF6TXg47PsvuX+k3kiOrk4wS+mRZ2wWxVv1Yq4kJA";

    #[test]
    fn bridge_lines_as_obfs4proxy_and_pb_relay_write_them() {
        for line in [
            format!("obfs4 198.18.0.1:9443 cert={CERT} iat-mode=2"),
            format!("Bridge obfs4 198.18.0.1:9443 cert={CERT} iat-mode=2"),
            format!(
                "Bridge obfs4 198.18.0.1:9443 4B6C1D2E3F405162738495A6B7C8D9E0F1021324 cert={CERT} iat-mode=2"
            ),
        ] {
            let bridge = Bridge::parse(&line).unwrap();
            assert_eq!(bridge.addr, "198.18.0.1:9443".parse().unwrap());
            let (cert, iat) = bridge.cert().unwrap();
            assert_eq!(cert.to_string(), CERT);
            assert_eq!(iat, IatMode::Paranoid);
        }
        for bad in [
            format!("meek 198.18.0.1:9443 cert={CERT} iat-mode=2"),
            format!("obfs4 198.18.0.1 cert={CERT} iat-mode=2"),
            "obfs4 198.18.0.1:9443 iat-mode=2".to_owned(),
            format!("obfs4 198.18.0.1:9443 cert={CERT} iat-mode=7"),
            String::new(),
        ] {
            assert!(Bridge::parse(&bad).is_err(), "{bad}");
        }
    }
}
