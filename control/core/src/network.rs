//! The network file (docs/spec/network-file.md): what defines a PhantomBand network to a
//! client or a relay. Its name, its seed, its stewards' verifier keys and how many of them
//! must sign a checkpoint, the admission caps, and the gateways a client may start from.
//!
//! One `key = value` per line; `#` starts a comment line; `steward` and `gateway` repeat:
//!
//! ```text
//! name = pb.test/demo
//! seed = 4242…42                          64 hex digits
//! steward = pb.test/demo/steward-1+754cb450+AYqI…   (Go's verifier key form)
//! threshold = 3
//! epoch_seconds = 3600                    the epoch length (epoch n starts at n × it, Unix time)
//! gateway = 198.18.0.1:47480 9f2c…e1      the client link's UDP address, its link key (64 hex digits),
//!                                         then optional offers: quic=443/PIN wss=8443/PIN (PIN: 64 hex)
//!                                         obfs4=9443/cert=CERT;iat-mode=N (an obfs4 bridge line's arguments)
//!                                         doh=53/t.example.net (the name server's port, its zone)
//! prefix_cap_ipv4 = 4                     optional (default 4)
//! prefix_cap_ipv6 = 4                     optional (default 4)
//! allow_prefix = 198.18.0.0/24            optional, repeats: a testbed's own range
//! ```
//!
//! Parsing is strict: an unknown or repeated key, a malformed value, a threshold the
//! stewards cannot meet, or no gateway is refused with the line it is on.

use std::net::{IpAddr, SocketAddr};

use crate::{
    Transport, TransportOffer,
    admission::Policy,
    checkpoint::{CheckpointError, Stewards},
    note::NoteKey,
};

/// A gateway a client may start from: where its client link listens (plain UDP), the key
/// the link's Noise handshake is made to, and the other transports it offers (for
/// disguises, on the same IP).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayEntry {
    /// The client link's UDP address.
    pub addr: SocketAddr,
    /// The gateway's link key (X25519, public).
    pub link_key: [u8; 32],
    /// Other transports: each with its port on `addr`'s IP and its parameters.
    pub offers: Vec<TransportOffer>,
}

impl GatewayEntry {
    /// Parses `ADDR KEY [quic=PORT/PIN] [wss=PORT/PIN] [obfs4=PORT/cert=CERT;iat-mode=N]
    /// [doh=PORT/ZONE]` (a network file's `gateway` value).
    pub fn parse(value: &str) -> Result<Self, &'static str> {
        let mut words = value.split_whitespace();
        let addr = words
            .next()
            .and_then(|w| w.parse::<SocketAddr>().ok())
            .ok_or("not an address:port")?;
        let link_key = words
            .next()
            .and_then(hex32)
            .ok_or("no link key (64 hex digits) after the address")?;
        let mut offers: Vec<TransportOffer> = Vec::new();
        for word in words {
            let (name, rest) = word.split_once('=').ok_or("an offer is name=PORT/PIN")?;
            let transport = match name {
                "quic" => Transport::Quic,
                "wss" => Transport::WebSocket,
                "obfs4" => Transport::Obfs4,
                "doh" => Transport::DoH,
                _ => return Err("unknown transport (quic, wss, obfs4, doh)"),
            };
            let (port, params) = rest.split_once('/').ok_or("an offer is name=PORT/PIN")?;
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or("not a port")?;
            let params = match transport {
                Transport::Obfs4 => {
                    obfs4_params(params).ok_or("obfs4's offer is PORT/cert=CERT;iat-mode=0|1|2")?
                }
                Transport::DoH => dns_zone(params)
                    .ok_or("doh's offer is PORT/ZONE (a domain name of at most 64 characters)")?,
                _ => hex32(params).ok_or("a pin is 64 hex digits")?.to_vec(),
            };
            if offers.iter().any(|o| o.transport == transport) {
                return Err("a transport offered twice");
            }
            offers.push(TransportOffer {
                transport,
                port,
                params,
            });
        }
        Ok(Self {
            addr,
            link_key,
            offers,
        })
    }

    /// The entry as [`GatewayEntry::parse`] reads it.
    pub fn render(&self) -> String {
        let hex = |b: &[u8]| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let mut out = format!("{} {}", self.addr, hex(&self.link_key));
        for o in &self.offers {
            match o.transport {
                Transport::Quic => out.push_str(&format!(" quic={}/{}", o.port, hex(&o.params))),
                Transport::WebSocket => {
                    out.push_str(&format!(" wss={}/{}", o.port, hex(&o.params)));
                }
                Transport::Obfs4 => {
                    if let Some(args) = obfs4_args(&o.params) {
                        out.push_str(&format!(" obfs4={}/{args}", o.port));
                    }
                }
                Transport::DoH => {
                    if let Some(zone) = dns_zone_text(&o.params) {
                        out.push_str(&format!(" doh={}/{zone}", o.port));
                    }
                }
                Transport::Udp => {}
            }
        }
        out
    }
}

/// A DNS offer's parameters from its zone (`t.example.net`, the final dot optional):
/// lowercase letters, digits, `-` and dots, labels of 1 to 63 characters, at most
/// [`crate::descriptor::MAX_PARAMS`] in all.
pub fn dns_zone(text: &str) -> Option<Vec<u8>> {
    let zone = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    (zone.len() <= crate::descriptor::MAX_PARAMS && zone.split('.').all(label_ok))
        .then(|| zone.into_bytes())
}

/// The zone a DNS offer's parameters name, if they are one.
pub fn dns_zone_text(params: &[u8]) -> Option<String> {
    let text = core::str::from_utf8(params).ok()?;
    dns_zone(text).is_some().then(|| text.to_owned())
}

/// Bytes of an obfs4 offer's parameters: the bridge's node id (20), identity key (32) and
/// iat-mode (1), as in its `cert` (base64 of the first 52) and `iat-mode` arguments.
pub const OBFS4_PARAMS: usize = 20 + 32 + 1;

/// An obfs4 offer's parameters from a bridge line's arguments `cert=CERT;iat-mode=N` (in
/// either order).
pub fn obfs4_params(args: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let (mut cert, mut iat) = (None, None);
    for arg in args.split([';', ',']) {
        match arg.split_once('=')? {
            ("cert", c) if cert.is_none() => {
                let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
                    .decode(c.trim_end_matches('='))
                    .ok()?;
                cert = Some(<[u8; 52]>::try_from(bytes).ok()?);
            }
            ("iat-mode", n) if iat.is_none() => {
                iat = Some(n.parse::<u8>().ok().filter(|n| *n <= 2)?)
            }
            _ => return None,
        }
    }
    let mut params = cert?.to_vec();
    params.push(iat?);
    Some(params)
}

/// A bridge line's arguments `cert=CERT;iat-mode=N` from an obfs4 offer's parameters.
pub fn obfs4_args(params: &[u8]) -> Option<String> {
    use base64::Engine as _;
    let (cert, iat) = params.split_at_checked(52)?;
    let [iat] = iat else { return None };
    (*iat <= 2).then(|| {
        format!(
            "cert={};iat-mode={iat}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(cert)
        )
    })
}

/// The longest network file read.
pub const MAX_FILE: usize = 64 * 1024;

/// Why a network file was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NetworkFileError {
    /// Larger than [`MAX_FILE`], or not UTF-8.
    #[error("not a network file (too large, or not UTF-8)")]
    Unreadable,
    /// A line that is not `key = value`, an unknown key, or a repeated one.
    #[error("line {0}: {1}")]
    Line(usize, &'static str),
    /// A required key is missing.
    #[error("no {0}")]
    Missing(&'static str),
    /// The stewards and the threshold do not go together.
    #[error("stewards: {0}")]
    Stewards(CheckpointError),
}

/// A network's definition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkFile {
    /// The network's stewards, their threshold and the network's name.
    pub stewards: Stewards,
    /// The network seed (layers are dealt by it).
    pub seed: [u8; 32],
    /// The gateways a client may start from, in the order it tries them.
    pub gateways: Vec<GatewayEntry>,
    /// The epoch length in seconds: epoch n runs from n × it to (n + 1) × it, Unix time.
    pub epoch_seconds: u64,
    /// The admission caps.
    pub policy: Policy,
    /// Networks whose special-purpose addresses (private, loopback, benchmarking, ...)
    /// relays may name in their descriptors anyway: a testbed's own range. Empty for a
    /// network on the Internet.
    pub allow_prefixes: Vec<(IpAddr, u8)>,
    /// Where the ledger's log is served (`http://host:port[/path]`), by the log operator,
    /// the first steward; `None`: the network keeps no ledger.
    pub ledger: Option<String>,
}

/// A network `address/length`, the address's bits past the length zero.
fn prefix(text: &str) -> Option<(IpAddr, u8)> {
    let (ip, len) = text.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    let bits = if ip.is_ipv4() { 32 } else { 128 };
    if len > bits {
        return None;
    }
    let canonical = match ip {
        IpAddr::V4(v4) => {
            u32::from(v4) & u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0) == u32::from(v4)
        }
        IpAddr::V6(v6) => {
            u128::from(v6) & u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
                == u128::from(v6)
        }
    };
    canonical.then_some((ip, len))
}

/// Refuses a key seen before.
fn once<T>(slot: &Option<T>, line: usize) -> Result<(), NetworkFileError> {
    match slot {
        Some(_) => Err(NetworkFileError::Line(line, "repeated key")),
        None => Ok(()),
    }
}

/// 32 bytes from 64 hex digits (a network seed), surrounding spaces ignored.
pub fn hex32(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl NetworkFile {
    /// Parses a network file.
    pub fn parse(bytes: &[u8]) -> Result<Self, NetworkFileError> {
        if bytes.len() > MAX_FILE {
            return Err(NetworkFileError::Unreadable);
        }
        let text = core::str::from_utf8(bytes).map_err(|_| NetworkFileError::Unreadable)?;
        let (mut name, mut seed, mut threshold) = (None, None, None);
        let (mut caps4, mut caps6, mut epoch_seconds) = (None, None, None);
        let (mut stewards, mut gateways, mut allow) = (Vec::new(), Vec::new(), Vec::new());
        let mut ledger = None;
        for (n, line) in text.lines().enumerate() {
            let n = n + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line
                .split_once(" = ")
                .ok_or(NetworkFileError::Line(n, "expected `key = value`"))?;
            let bad = |what| NetworkFileError::Line(n, what);
            match key {
                "name" => {
                    once(&name, n)?;
                    if value.is_empty()
                        || value.contains(char::is_whitespace)
                        || value.contains('+')
                    {
                        return Err(bad("a name has no spaces and no '+'"));
                    }
                    name = Some(value.to_owned());
                }
                "seed" => {
                    once(&seed, n)?;
                    seed = Some(hex32(value).ok_or(bad("a seed is 64 hex digits"))?);
                }
                "threshold" => {
                    once(&threshold, n)?;
                    threshold = Some(value.parse::<usize>().map_err(|_| bad("not a number"))?);
                }
                "epoch_seconds" => {
                    once(&epoch_seconds, n)?;
                    epoch_seconds = Some(
                        value
                            .parse::<u64>()
                            .ok()
                            .filter(|s| *s >= 5)
                            .ok_or(bad("an epoch is at least 5 seconds"))?,
                    );
                }
                "prefix_cap_ipv4" => {
                    once(&caps4, n)?;
                    caps4 = Some(value.parse::<usize>().map_err(|_| bad("not a number"))?);
                }
                "prefix_cap_ipv6" => {
                    once(&caps6, n)?;
                    caps6 = Some(value.parse::<usize>().map_err(|_| bad("not a number"))?);
                }
                "steward" => stewards.push(
                    NoteKey::from_vkey(value).map_err(|_| bad("not a steward verifier key"))?,
                ),
                "allow_prefix" => allow
                    .push(prefix(value).ok_or(bad("not an address/length with zero host bits"))?),
                "gateway" => gateways.push(GatewayEntry::parse(value).map_err(bad)?),
                "ledger" => {
                    once(&ledger, n)?;
                    let fine = value.strip_prefix("http://").is_some_and(|rest| {
                        !rest.is_empty()
                            && !rest.starts_with('/')
                            && rest
                                .bytes()
                                .all(|b| b.is_ascii_graphic() && !b"?#@".contains(&b))
                    });
                    if !fine || value.len() > 256 {
                        return Err(bad("a ledger URL is http://host:port[/path]"));
                    }
                    ledger = Some(value.trim_end_matches('/').to_owned());
                }
                _ => return Err(bad("unknown key")),
            }
        }
        let name = name.ok_or(NetworkFileError::Missing("name"))?;
        let seed = seed.ok_or(NetworkFileError::Missing("seed"))?;
        let threshold = threshold.ok_or(NetworkFileError::Missing("threshold"))?;
        let epoch_seconds = epoch_seconds.ok_or(NetworkFileError::Missing("epoch_seconds"))?;
        if gateways.is_empty() {
            return Err(NetworkFileError::Missing("gateway"));
        }
        let stewards =
            Stewards::new(&name, stewards, threshold).map_err(NetworkFileError::Stewards)?;
        let defaults = Policy::default();
        Ok(Self {
            stewards,
            seed,
            gateways,
            epoch_seconds,
            policy: Policy {
                per_ipv4_24: caps4.unwrap_or(defaults.per_ipv4_24),
                per_ipv6_48: caps6.unwrap_or(defaults.per_ipv6_48),
            },
            allow_prefixes: allow,
            ledger,
        })
    }

    /// The file's text, which parses back to `self`.
    pub fn render(&self) -> String {
        let mut out = format!(
            "# PhantomBand network file (docs/spec/network-file.md)\nname = {}\nseed = {}\n",
            self.stewards.network(),
            self.seed
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        for key in self.stewards.keys() {
            out.push_str(&format!("steward = {}\n", key.vkey()));
        }
        out.push_str(&format!(
            "threshold = {}\nepoch_seconds = {}\n",
            self.stewards.threshold(),
            self.epoch_seconds
        ));
        for gateway in &self.gateways {
            out.push_str(&format!("gateway = {}\n", gateway.render()));
        }
        out.push_str(&format!(
            "prefix_cap_ipv4 = {}\nprefix_cap_ipv6 = {}\n",
            self.policy.per_ipv4_24, self.policy.per_ipv6_48
        ));
        for (ip, len) in &self.allow_prefixes {
            out.push_str(&format!("allow_prefix = {ip}/{len}\n"));
        }
        if let Some(url) = &self.ledger {
            out.push_str(&format!("ledger = {url}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests;
