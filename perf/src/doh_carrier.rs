//! `pb-perf transports`' DNS carrier alone: what DNS queries through the testnet's DoH
//! resolver carry, without the mixnet. A name server of its own (`pb_doh::DnsListener`, the
//! gateway's code) on the gateway's address at [`DNS_BENCH_PORT`], for the zone the
//! resolver forwards there ([`DNS_BENCH_ZONE`]), keeps every session's downstream queue
//! full; a `pb_doh::DohCarrier` in the client's namespace keeps its upstream queue full and
//! sends `rate` queries a second. Counted over the window: whole records each way (1452
//! bytes each; a record with a chunk lost does not count), the queries that timed out.
//!
//! Rows (`impl` doh, `params` rate and direction): `transport.doh_carrier` in KB/s
//! (10^3 bytes of records a second).

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use pb_testnet::{DNS_BENCH_PORT, DNS_BENCH_ZONE, Node, Testnet};
use pb_transport::{ClientCarrier as _, Listener as _, RECORD_LEN};
use serde_json::json;

use crate::report::{Measurement, row};

/// How long the carrier runs before the window opens (its queues fill, the resolver warms).
const WARM_UP: Duration = Duration::from_secs(2);

/// What one rate carried.
#[derive(Clone, Debug)]
pub struct Carried {
    rate: u32,
    seconds: f64,
    up_records: u64,
    down_records: u64,
    queries: u64,
    timeouts: u64,
}

impl Carried {
    fn kb_per_s(&self, records: u64) -> f64 {
        records as f64 * RECORD_LEN as f64 / self.seconds / 1e3
    }

    /// Its rows.
    pub fn rows(&self) -> Vec<Measurement> {
        ["up", "down"]
            .into_iter()
            .zip([self.up_records, self.down_records])
            .map(|(direction, records)| {
                row(
                    "transport.doh_carrier",
                    "doh",
                    &[("rate", json!(self.rate)), ("direction", json!(direction))],
                    (self.kb_per_s(records) * 10.0).round() / 10.0,
                    "KB/s",
                )
            })
            .collect()
    }
}

impl core::fmt::Display for Carried {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{} queries/s asked, {:.0} sent a second: {:.1} KB/s up, {:.1} KB/s down, {} timed out",
            self.rate,
            self.queries as f64 / self.seconds,
            self.kb_per_s(self.up_records),
            self.kb_per_s(self.down_records),
            self.timeouts
        )
    }
}

/// The carrier's figures side by side, a column per rate (empty without any).
pub fn summary(carried: &[Carried]) -> String {
    if carried.is_empty() {
        return String::new();
    }
    let mut out = String::from("\nDNS carrier alone (through unbound, no mixnet):\n");
    out.push_str(&format!("{:<22}", "queries a second"));
    for c in carried {
        out.push_str(&format!("  {:>10}", c.rate));
    }
    out.push('\n');
    for (label, f) in [
        (
            "up (KB/s)",
            &(|c: &Carried| c.kb_per_s(c.up_records)) as &dyn Fn(&Carried) -> f64,
        ),
        ("down (KB/s)", &|c: &Carried| c.kb_per_s(c.down_records)),
        ("queries sent a second", &|c: &Carried| {
            c.queries as f64 / c.seconds
        }),
    ] {
        out.push_str(&format!("{label:<22}"));
        for c in carried {
            out.push_str(&format!("  {:>10.1}", f(c)));
        }
        out.push('\n');
    }
    out
}

/// Measures the carrier at `rate` queries a second for `window` through the resolver at
/// `url` (trusted by the certificate `ca`).
pub fn measure(
    net: &Testnet,
    url: &str,
    ca: &Path,
    rate: u32,
    window: Duration,
) -> anyhow::Result<Carried> {
    let gateway = net.network().address(Node::Relay(0));
    let zone = pb_doh::Zone::parse(DNS_BENCH_ZONE)?;
    let at = SocketAddr::from((gateway, DNS_BENCH_PORT));
    // The benchmark's own name server: any key will do, both ends know it.
    let key = pb_doh::SessionKey::derive(&[0x42; 32], &zone);
    let session = key.session_id(rate.to_le_bytes());
    let mut listener = net
        .in_node(Node::Relay(0), || {
            pb_doh::DnsListener::bind(at, zone.clone(), key.clone())
        })?
        .with_context(|| format!("the benchmark's name server on {at}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let up = Arc::new(AtomicU64::new(0));
    let server = {
        let (stop, up) = (stop.clone(), up.clone());
        thread::spawn(move || -> anyhow::Result<()> {
            let record = [0x5a; RECORD_LEN];
            let mut peers = BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                listener.drive(Instant::now())?;
                while let Some((peer, _)) = listener.recv() {
                    up.fetch_add(1, Ordering::Relaxed);
                    peers.insert(peer);
                }
                while let Some(gone) = listener.poll_closed() {
                    peers.remove(&gone);
                }
                for &peer in &peers {
                    while listener.send(peer, &record) {}
                }
                thread::sleep(Duration::from_micros(300));
            }
            Ok(())
        })
    };
    let result = run_client(net, (url, ca), zone, session, rate, window, &up);
    stop.store(true, Ordering::Relaxed);
    let served = server
        .join()
        .map_err(|_| anyhow!("the benchmark's name server panicked"))?;
    let carried = result?;
    served.context("the benchmark's name server")?;
    Ok(carried)
}

fn run_client(
    net: &Testnet,
    (url, ca): (&str, &Path),
    zone: pb_doh::Zone,
    session: [u8; 8],
    rate: u32,
    window: Duration,
    up: &AtomicU64,
) -> anyhow::Result<Carried> {
    let (resolver, server_name, authority, path) = pb_doh::parse_url(url)?;
    let config = pb_doh::DohConfig {
        resolver,
        server_name,
        authority,
        path,
        tls: Arc::new(pb_doh::tls_trusting(ca)?),
        zone,
        query_rate: rate,
    };
    let mut names = 0u64;
    let pad: pb_doh::Padding = Box::new(move |bytes: &mut [u8]| {
        names += 1;
        blake3::Hasher::new()
            .update(&names.to_le_bytes())
            .finalize_xof()
            .fill(bytes);
    });
    // The carrier's thread is started in the client's namespace and stays there.
    let mut carrier = net.in_node(Node::Client, || {
        pb_doh::DohCarrier::connect(&config, session, pad)
    })??;
    let opened = Instant::now();
    while !carrier.is_open() {
        carrier.drive(Instant::now())?;
        if opened.elapsed() > Duration::from_secs(10) {
            bail!("the DoH carrier did not connect to {url} within 10 s");
        }
        thread::sleep(Duration::from_millis(5));
    }
    let mut down = 0u64;
    spin(&mut carrier, Instant::now() + WARM_UP, &mut down)?;
    let (up_from, down_from) = (up.load(Ordering::Relaxed), down);
    let (queries_from, timeouts_from) =
        (counter(&carrier, "queries"), counter(&carrier, "timeouts"));
    let started = Instant::now();
    spin(&mut carrier, started + window, &mut down)?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(Carried {
        rate,
        seconds,
        up_records: up.load(Ordering::Relaxed) - up_from,
        down_records: down - down_from,
        queries: counter(&carrier, "queries") - queries_from,
        timeouts: counter(&carrier, "timeouts") - timeouts_from,
    })
}

/// Keeps `carrier`'s upstream queue full and counts the records it receives in `down`,
/// until `until`.
fn spin(carrier: &mut pb_doh::DohCarrier, until: Instant, down: &mut u64) -> anyhow::Result<()> {
    let record = [0xa5; RECORD_LEN];
    while Instant::now() < until {
        carrier.drive(Instant::now())?;
        while carrier.send(&record) {}
        while carrier.recv().is_some() {
            *down += 1;
        }
        thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// The carrier's counter `name`.
fn counter(carrier: &pb_doh::DohCarrier, name: &str) -> u64 {
    carrier
        .counters()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map_or(0, |(_, v)| v)
}
