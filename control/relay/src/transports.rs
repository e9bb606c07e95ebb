//! A gateway's transports: the plain UDP listener of its client link and, when configured,
//! the disguises (`gossip.client_quic`: QUIC presenting as HTTP/3; `gossip.client_wss`:
//! WebSocket behind an HTTPS page; `gossip.client_obfs4`: an obfs4 bridge;
//! `gossip.client_dns`: the authoritative name server of DNS links), the TLS key
//! QUIC and WSS present and the obfs4 bridge's keys (each kept in a file next to the
//! identity, made at first start), the plain TCP listener a local obfs4proxy server may sit
//! in front of (`gossip.client_tcp`, never offered), and what its descriptor offers.

use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _, path::Path};

use anyhow::Context as _;
use pb_control::{Transport, TransportOffer};
use pb_transport::{Listener, TransportKind, tls::TlsIdentity};

use crate::config::GossipSettings;

/// The TLS identity of `settings`' gateway: its key from `gossip.tls_key_file` (made and
/// written, readable by the relay's user only, when the file is missing), in a fresh
/// self-signed certificate for its gossip address (clients pin the key, not the
/// certificate).
pub fn tls_identity(settings: &GossipSettings) -> anyhow::Result<TlsIdentity> {
    let path = &settings.tls_key_file;
    let name = settings.bind.ip().to_string();
    match std::fs::read(path) {
        Ok(key) => TlsIdentity::with_key(&key, &name)
            .with_context(|| format!("gossip.tls_key_file {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let identity = TlsIdentity::generate(&name)?;
            write_private(path, identity.key_der())
                .with_context(|| format!("gossip.tls_key_file {}", path.display()))?;
            tracing::info!("made a TLS key for QUIC and WSS: {}", path.display());
            Ok(identity)
        }
        Err(e) => Err(e).with_context(|| format!("gossip.tls_key_file {}", path.display())),
    }
}

/// Writes `bytes` to `path` (mode 0600) through a temporary file, so a reader never sees
/// half a key.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The obfs4 bridge's keys: node id (20 bytes), identity key (32) and the seed of its
/// length and delay distributions (24), in `gossip.obfs4_state_file` (made and written,
/// readable by the relay's user only, when missing).
pub fn obfs4_bridge(settings: &GossipSettings) -> anyhow::Result<pb_obfs4::Obfs4Server> {
    use pb_obfs4::{Entropy as _, NodeId, OsEntropy, PrngSeed, ServerIdentity};
    const LEN: usize = 20 + 32 + 24;
    let path = &settings.obfs4_state_file;
    let context = || format!("gossip.obfs4_state_file {}", path.display());
    let bytes = match std::fs::read(path) {
        Ok(bytes) => zeroize::Zeroizing::new(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut fresh = zeroize::Zeroizing::new(vec![0u8; LEN]);
            OsEntropy.fill_bytes(&mut fresh[..52]);
            fresh[52..].copy_from_slice(&PrngSeed::generate(&mut OsEntropy).0);
            write_private(path, &fresh).with_context(context)?;
            tracing::info!("made obfs4 bridge keys: {}", path.display());
            fresh
        }
        Err(e) => return Err(e).with_context(context),
    };
    if bytes.len() != LEN {
        anyhow::bail!(
            "{}: {} bytes, not the {LEN} of an obfs4 bridge's keys",
            context(),
            bytes.len()
        );
    }
    let mut node_id = [0u8; 20];
    node_id.copy_from_slice(&bytes[..20]);
    let mut secret = zeroize::Zeroizing::new([0u8; 32]);
    secret.copy_from_slice(&bytes[20..52]);
    let mut seed = [0u8; 24];
    seed.copy_from_slice(&bytes[52..]);
    let identity = ServerIdentity::from_secret(NodeId(node_id), secret);
    if !PrngSeed(seed).is_safe() {
        tracing::warn!(
            "{}: its length seed lets obfs4proxy clients in iat-mode 2 draw a length of 0, which makes them exit; delete the file to make new keys (a new bridge line)",
            context()
        );
    }
    Ok(pb_obfs4::Obfs4Server::new(
        identity,
        PrngSeed(seed),
        settings.obfs4_iat_mode,
    ))
}

/// What an obfs4 offer carries: the bridge's cert (node id and identity key) and the
/// iat-mode clients are to use (docs/spec/transports.md).
fn obfs4_params(bridge: &pb_obfs4::Obfs4Server) -> Vec<u8> {
    let cert = bridge.cert();
    let mut params = cert.node_id.0.to_vec();
    params.extend_from_slice(&cert.public_key.0);
    params.push(bridge.iat_mode().number());
    params
}

/// The obfs4 listener's bridge line, as obfs4proxy writes it (`Bridge obfs4 ADDR:PORT
/// cert=… iat-mode=N`, without Tor's fingerprint: PhantomBand has none), if there is one.
pub fn obfs4_bridge_line(settings: &GossipSettings) -> anyhow::Result<Option<String>> {
    let Some(addr) = settings.client_obfs4 else {
        return Ok(None);
    };
    let bridge = obfs4_bridge(settings)?;
    Ok(Some(format!(
        "Bridge obfs4 {addr} cert={} iat-mode={}",
        bridge.cert(),
        bridge.iat_mode()
    )))
}

/// A DNS offer's parameters: the zone, lowercase, without the final dot.
fn zone_text(zone: &pb_doh::Zone) -> String {
    zone.name().to_ascii().trim_end_matches('.').to_owned()
}

/// Whether `settings` runs a disguise (and so needs the TLS key).
fn disguised(settings: &GossipSettings) -> bool {
    settings.client_quic.is_some() || settings.client_wss.is_some()
}

/// What the descriptor offers: plain UDP at `gossip.client_bind`, then QUIC and WSS where
/// configured, each with the TLS key's pin.
pub fn offers(settings: &GossipSettings) -> anyhow::Result<Vec<TransportOffer>> {
    let Some(udp) = settings.client_bind else {
        return Ok(Vec::new());
    };
    let mut offers = vec![TransportOffer {
        transport: Transport::Udp,
        port: udp.port(),
        params: Vec::new(),
    }];
    if disguised(settings) {
        let pin = tls_identity(settings)?.pin();
        for (transport, addr) in [
            (Transport::Quic, settings.client_quic),
            (Transport::WebSocket, settings.client_wss),
        ] {
            if let Some(addr) = addr {
                offers.push(TransportOffer {
                    transport,
                    port: addr.port(),
                    params: pin.to_vec(),
                });
            }
        }
    }
    if let Some((addr, zone)) = &settings.client_dns {
        offers.push(TransportOffer {
            transport: Transport::DoH,
            port: addr.port(),
            params: zone_text(zone).into_bytes(),
        });
    }
    if let Some(addr) = settings.client_obfs4 {
        offers.push(TransportOffer {
            transport: Transport::Obfs4,
            port: addr.port(),
            params: obfs4_params(&obfs4_bridge(settings)?),
        });
    }
    Ok(offers)
}

/// The listeners of `settings`' gateway, whose link key is `link_key`.
pub fn listeners(
    settings: &GossipSettings,
    link_key: &[u8; 32],
) -> anyhow::Result<Vec<Box<dyn Listener>>> {
    let Some(udp) = settings.client_bind else {
        return Ok(Vec::new());
    };
    let mut listeners: Vec<Box<dyn Listener>> = vec![Box::new(
        pb_transport::UdpListener::bind(udp)
            .with_context(|| format!("gossip.client_bind: cannot bind {udp}"))?,
    )];
    if let Some(addr) = settings.client_tcp {
        let factory: pb_transport::CodecFactory =
            Box::new(|_| Box::new(pb_transport::Plain::default()));
        listeners.push(Box::new(
            pb_transport::StreamListener::bind(TransportKind::Tcp, addr, factory)
                .with_context(|| format!("gossip.client_tcp: cannot listen on {addr}"))?,
        ));
    }
    if let Some(addr) = settings.client_obfs4 {
        let bridge = obfs4_bridge(settings)?;
        let factory: pb_transport::CodecFactory =
            Box::new(move |now| Box::new(bridge.accept(now, Box::new(pb_obfs4::OsEntropy))));
        listeners.push(Box::new(
            pb_transport::StreamListener::bind(TransportKind::Obfs4, addr, factory)
                .with_context(|| format!("gossip.client_obfs4: cannot listen on {addr}"))?,
        ));
    }
    if let Some((addr, zone)) = &settings.client_dns {
        listeners.push(Box::new(
            pb_doh::DnsListener::bind(
                *addr,
                zone.clone(),
                pb_doh::SessionKey::derive(link_key, zone),
            )
            .with_context(|| format!("gossip.client_dns: cannot bind {addr}"))?,
        ));
    }
    if !disguised(settings) {
        return Ok(listeners);
    }
    let identity = tls_identity(settings)?;
    let pin = identity.pin();
    if let Some(addr) = settings.client_quic {
        let secret = pb_transport::tls::path_secret(TransportKind::Quic, link_key, &pin);
        let config = pb_quic::QuicListenerConfig::new(pb_quic::LinkPath::from_secret(&secret));
        listeners.push(Box::new(
            pb_quic::QuicListener::bind(addr, &identity, config)
                .with_context(|| format!("gossip.client_quic: cannot serve on {addr}"))?,
        ));
    }
    if let Some(addr) = settings.client_wss {
        let secret = pb_transport::tls::path_secret(TransportKind::Wss, link_key, &pin);
        let config = pb_wss::WssServerConfig::new(pb_wss::SecretPath::from_random(secret));
        listeners.push(Box::new(
            pb_wss::WssListener::bind(addr, &identity, config)
                .with_context(|| format!("gossip.client_wss: cannot serve on {addr}"))?,
        ));
    }
    Ok(listeners)
}
