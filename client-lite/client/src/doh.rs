//! pb-client's DNS transport settings: the DoH resolver to send the gateway's queries to
//! (`--doh-resolver`), the roots that vouch for it (`--doh-ca`), and the query rate.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, anyhow};
use pb_control::network::GatewayEntry;
use pb_doh::{DohCarrier, DohConfig, Zone};
use pb_transport::ClientCarrier;

/// The system's root certificates when `--doh-ca` is not given: Debian's, then Termux's.
const SYSTEM_ROOTS: [&str; 2] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/data/data/com.termux/files/usr/etc/tls/cert.pem",
];

/// Where DNS links go: a resolver and how to trust it.
#[derive(Clone, Debug)]
pub struct Resolver {
    url: String,
    tls: Arc<rustls::ClientConfig>,
    rate: u32,
}

impl Resolver {
    /// The resolver at `url` (`https://HOST[:PORT]/PATH`), trusted by the certificates in
    /// `ca` (PEM; default: the system's), sent `rate` queries a second.
    pub fn new(url: &str, ca: Option<&Path>, rate: u32) -> anyhow::Result<Self> {
        pb_doh::parse_url(url).map_err(|e| anyhow!("--doh-resolver: {e}"))?;
        if !(10..=5000).contains(&rate) {
            return Err(anyhow!(
                "--doh-rate: {rate} is not between 10 and 5000 queries a second"
            ));
        }
        let path = match ca {
            Some(p) => p.to_owned(),
            None => SYSTEM_ROOTS
                .iter()
                .map(Path::new)
                .find(|p| p.exists())
                .ok_or_else(|| anyhow!("--doh-ca: no system certificates found; name a PEM file"))?
                .to_owned(),
        };
        let tls = pb_doh::tls_trusting(&path).map_err(|e| anyhow!("--doh-ca: {e}"))?;
        Ok(Self {
            url: url.to_owned(),
            tls: Arc::new(tls),
            rate,
        })
    }

    /// A DNS-link carrier to `gateway` (its DoH offer names its zone), through this resolver.
    pub fn carrier(&self, gateway: &GatewayEntry) -> anyhow::Result<Box<dyn ClientCarrier>> {
        let zone = zone_of(gateway)
            .ok_or_else(|| anyhow!("gateway {} offers no DNS transport", gateway.addr))?;
        let (resolver, server_name, authority, path) =
            pb_doh::parse_url(&self.url).map_err(|e| anyhow!("--doh-resolver: {e}"))?;
        let config = DohConfig {
            resolver,
            server_name,
            authority,
            path,
            tls: self.tls.clone(),
            zone,
            query_rate: self.rate,
        };
        // A random nonce tagged under the key the gateway derives from its link key: only
        // those who know the gateway's descriptor make names it takes for sessions.
        let mut nonce = [0u8; 4];
        getrandom::fill(&mut nonce).map_err(|e| anyhow!("the OS random generator: {e}"))?;
        let session = pb_doh::SessionKey::derive(&gateway.link_key, &config.zone).session_id(nonce);
        let pad = Box::new(|b: &mut [u8]| {
            // Padding only: zeros if the generator fails would show no secret.
            let _ = getrandom::fill(b);
        });
        Ok(Box::new(
            DohCarrier::connect(&config, session, pad)
                .with_context(|| format!("gateway {} over DoH", gateway.addr))?,
        ))
    }
}

/// The zone of `gateway`'s DNS offer.
pub fn zone_of(gateway: &GatewayEntry) -> Option<Zone> {
    let offer = gateway
        .offers
        .iter()
        .find(|o| o.transport == pb_control::Transport::DoH)?;
    let text = pb_control::network::dns_zone_text(&offer.params)?;
    Zone::parse(&text).ok()
}
