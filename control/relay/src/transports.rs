//! A gateway's transports: the plain UDP listener of its client link and, when configured,
//! the disguises (`gossip.client_quic`: QUIC presenting as HTTP/3; `gossip.client_wss`:
//! WebSocket behind an HTTPS page), the TLS key those present (kept in a file next to the
//! identity, made at first start), and what its descriptor offers clients.

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
