//! The carrier under the client link: which transports to try at a gateway and in what
//! order, how each is connected (plain UDP, QUIC, WSS, obfs4, DoH), the link thread over it,
//! and the profile fitted to what the carrier can take upstream.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use anyhow::{Context as _, anyhow};
use pb_control::network::GatewayEntry;
use pb_link::Rates;
use pb_transport::{ClientCarrier, TransportKind};

use crate::{
    OsRandom, doh,
    link_thread::LinkThread,
    obfs4,
    session::{Profile, Random as _},
};

/// How pb-client speaks obfs4.
#[derive(Debug, Default)]
pub(crate) struct TransportSetup {
    /// A bridge line given for a gateway (by its client-link address): used in place of
    /// that gateway's own obfs4 offer.
    pub(crate) bridge: Option<(SocketAddr, obfs4::Bridge)>,
    /// obfs4proxy as the obfs4 implementation, if asked for.
    pub(crate) obfs4proxy: Option<obfs4::ManagedClient>,
    /// The DoH resolver DNS links go through, if one was named.
    pub(crate) doh: Option<doh::Resolver>,
}

impl TransportSetup {
    /// The obfs4 bridge of `gateway`: the bridge line's, else its own offer.
    fn bridge_of(&self, gateway: &GatewayEntry) -> Option<obfs4::Bridge> {
        if let Some((addr, bridge)) = &self.bridge
            && *addr == gateway.addr
        {
            return Some(bridge.clone());
        }
        let offer = gateway
            .offers
            .iter()
            .find(|o| o.transport == pb_control::Transport::Obfs4)?;
        Some(obfs4::Bridge {
            addr: SocketAddr::new(gateway.addr.ip(), offer.port),
            params: offer.params.clone(),
        })
    }
}

/// The transports to try at `gateway`, in order: `asked` alone if it offers it, else
/// (auto) plain UDP, then QUIC, WSS and obfs4 where offered.
pub(crate) fn transports_of(
    gateway: &GatewayEntry,
    asked: Option<TransportKind>,
    setup: &TransportSetup,
) -> Vec<TransportKind> {
    let offered = |k: TransportKind| match k {
        TransportKind::Udp => true,
        TransportKind::Obfs4 => setup.bridge_of(gateway).is_some(),
        TransportKind::Doh => setup.doh.is_some() && doh::zone_of(gateway).is_some(),
        _ => gateway.offers.iter().any(|o| o.transport.code() == k as u8),
    };
    let order = match asked {
        Some(k) => vec![k],
        None => vec![
            TransportKind::Udp,
            TransportKind::Quic,
            TransportKind::Wss,
            TransportKind::Obfs4,
            TransportKind::Doh,
        ],
    };
    order.into_iter().filter(|k| offered(*k)).collect()
}

/// A carrier of `kind` to `gateway`.
pub(crate) fn connect(
    gateway: &GatewayEntry,
    kind: TransportKind,
    setup: &TransportSetup,
) -> anyhow::Result<Box<dyn ClientCarrier>> {
    if kind == TransportKind::Doh {
        let resolver = setup
            .doh
            .as_ref()
            .ok_or_else(|| anyhow!("gateway {} over DoH: no --doh-resolver", gateway.addr))?;
        return resolver.carrier(gateway);
    }
    if kind == TransportKind::Obfs4 {
        let bridge = setup
            .bridge_of(gateway)
            .ok_or_else(|| anyhow!("gateway {} over obfs4: not offered", gateway.addr))?;
        return bridge
            .carrier(setup.obfs4proxy.as_ref())
            .with_context(|| format!("gateway {} over obfs4", gateway.addr));
    }
    let offer = gateway
        .offers
        .iter()
        .find(|o| o.transport.code() == kind as u8);
    let pin = offer.and_then(|o| <[u8; 32]>::try_from(&o.params[..]).ok());
    let context = || format!("gateway {} over {kind}", gateway.addr);
    let at = |port: u16| SocketAddr::new(gateway.addr.ip(), port);
    // No SNI: the client connects to an address, as to any server known by its IP.
    let name = gateway.addr.ip().to_string();
    Ok(match (kind, offer, pin) {
        (TransportKind::Udp, _, _) => {
            Box::new(pb_transport::UdpCarrier::connect(gateway.addr).with_context(context)?)
        }
        (TransportKind::Quic, Some(offer), Some(pin)) => {
            let secret = pb_transport::tls::path_secret(kind, &gateway.link_key, &pin);
            let config = pb_quic::QuicCarrierConfig::new(
                at(offer.port),
                &name,
                pin,
                pb_quic::LinkPath::from_secret(&secret),
            );
            Box::new(pb_quic::QuicCarrier::connect(&config, Instant::now()).with_context(context)?)
        }
        (TransportKind::Wss, Some(offer), Some(pin)) => {
            let secret = pb_transport::tls::path_secret(kind, &gateway.link_key, &pin);
            let config = pb_wss::WssClientConfig::new(
                pin,
                &name,
                offer.port,
                pb_wss::SecretPath::from_random(secret),
            );
            Box::new(pb_wss::WssCarrier::connect(at(offer.port), &config).with_context(context)?)
        }
        _ => return Err(anyhow!("{}: not offered (or no pin)", context())),
    })
}

/// A link thread over `carrier` to `gateway`, waking the poll through `waker`.
pub(crate) fn start_link(
    carrier: Box<dyn ClientCarrier>,
    gateway: &GatewayEntry,
    profile: &Profile,
    random: &mut OsRandom,
    waker: &Arc<mio::Waker>,
) -> anyhow::Result<LinkThread> {
    let waker = waker.clone();
    let mut rates = rates(profile);
    let cap = |r: Option<u32>| r.map(|r| u16::try_from(r).unwrap_or(u16::MAX));
    let (down, up) = (
        cap(carrier.max_record_rate()),
        cap(carrier.max_upstream_rate()),
    );
    if down.is_some_and(|d| rates.down > d) || up.is_some_and(|u| rates.up > u) {
        tracing::info!(
            "{} carries at most {} records a second down and {} up: the link asks for no more",
            carrier.kind(),
            down.unwrap_or(rates.down),
            up.unwrap_or(rates.up)
        );
    }
    rates.down = rates.down.min(down.unwrap_or(u16::MAX));
    rates.up = rates.up.min(up.unwrap_or(u16::MAX));
    LinkThread::start(
        carrier,
        &gateway.link_key,
        rates,
        profile.cover,
        &random.seed(),
        move || {
            let _ = waker.wake();
        },
    )
    .context("starting the link's thread")
}

/// `profile` fitted to what `carrier` carries upstream: where that is less than the
/// profile's uplink, its packets and loops are spread out in proportion, so that they still
/// fit the link's slots (a slower but steady flow, rather than a queue without end).
pub(crate) fn fit_profile(profile: Profile, carrier: &dyn ClientCarrier) -> Profile {
    let mut fitted = profile;
    let Some(up) = carrier
        .max_upstream_rate()
        .and_then(|u| u16::try_from(u).ok())
        .filter(|u| *u > 0 && *u < profile.uplink_rate)
    else {
        return fitted;
    };
    let stretch = f64::from(profile.uplink_rate) / f64::from(up);
    fitted.mean_gap = profile.mean_gap.mul_f64(stretch);
    fitted.loop_gap = profile.loop_gap.mul_f64(stretch);
    fitted.uplink_rate = up;
    tracing::info!(
        "{} carries {up} records a second up: packets every {:.0} ms on average rather than {:.0}",
        carrier.kind(),
        fitted.mean_gap.as_secs_f64() * 1e3,
        profile.mean_gap.as_secs_f64() * 1e3
    );
    fitted
}

/// What the link asks its gateway for: the profile's rates.
pub(crate) fn rates(profile: &Profile) -> Rates {
    Rates {
        down: profile.downlink_rate,
        up: profile.uplink_rate,
    }
}
