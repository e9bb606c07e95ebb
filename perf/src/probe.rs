//! `pb-perf probe`: a censor's active probes against every listener of a gateway, each beside
//! the same probe against the service the listener imitates, run for real on the same port
//! of another address (`probe::covers`): nginx for WSS, obfs4proxy for obfs4, NSD for the
//! name server, ngtcp2's HTTP/3 server for QUIC, a port that ignores datagrams for plain UDP.
//!
//! The testnet: three `pb-relay` processes in namespaces (a gateway listening on every
//! transport, a mix, an exit), the cover services in the web node, the prober in the client
//! node. Per probe, what each side did is written down the same way (the reply's kind, how
//! and when the connection ended, a DNS answer's code and sections, a TLS handshake's choices
//! and HTTP answers' status lines and header names), and the two are compared: a difference
//! is a probe that tells the listener from its cover. Probes of TCP ports run side by side
//! and wait up to `--wait` for the server to close.
//!
//! Rows: `probe.distinguishes` per transport and probe (1: the probe tells them apart, 0: it
//! does not), and the table with what each side did.

mod covers;
mod wire;

use std::{
    net::SocketAddr,
    thread,
    time::{Duration, SystemTime},
};

use anyhow::anyhow;
use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query},
    rr::{DNSClass, Name, RecordType},
};
use pb_testbed::Netns;
use pb_testnet::{
    CLIENT_LINK_PORT, DNS_PORT, DNS_ZONE, Network, Node, OBFS4_PORT, QUIC_PORT, Testnet, WSS_PORT,
};
use serde_json::json;
use wire::{End, Seen, TlsSeen};

use crate::report::{Measurement, row};

/// Settings of a run.
pub struct ProbeArgs {
    /// The longest wait for a server to close a probed connection.
    pub wait: Duration,
    /// Whether stdout carries JSON rows (then the table goes to stderr).
    pub json: bool,
}

/// One probe's outcome on both sides.
struct Verdict {
    transport: &'static str,
    probe: String,
    listener: String,
    cover: String,
    same: bool,
}

/// Runs the probes; see the module docs.
pub fn run(args: &ProbeArgs) -> anyhow::Result<Vec<Measurement>> {
    pb_testbed::privileged().map_err(|reason| {
        anyhow!("pb-perf probe runs a testnet in network namespaces and needs root: {reason}")
    })?;
    pb_testnet::stop_on_signals()?;
    let network = Network::builder()
        .relays(3)
        .netns("pbprb")
        .stats_interval(0.0)
        .build()?;
    eprintln!("pb-perf probe: starting 3 relays and the cover services in namespaces");
    let mut net = Testnet::create(network.clone())?;
    net.start_relays()?;
    // The gateway's listeners are up once it accepts on its TCP ones (no topology needed).
    let gateway = network.address(Node::Relay(0));
    for port in [WSS_PORT, OBFS4_PORT] {
        let to = SocketAddr::from((gateway, port));
        pb_testnet::wait_for("the gateway's listeners", Duration::from_secs(30), || {
            net.connect(Node::Client, to).is_ok()
        })?;
    }
    let dir = net.dir().join("covers");
    let covers = covers::start(&mut net, &dir)?;
    let web = network.address(Node::Web);
    let ns = net
        .netns(Node::Client)
        .ok_or_else(|| anyhow!("the testnet has no client namespace"))?;
    let at = |ip, port| SocketAddr::from((ip, port));
    let gateway_cert = gateway_obfs4_cert(&network)?;
    let cover_cert: pb_obfs4::Cert = covers
        .obfs4_cert
        .parse()
        .map_err(|e| anyhow!("obfs4proxy's cert: {e:?}"))?;
    eprintln!(
        "pb-perf probe: probing; connections are watched up to {:.0} s",
        args.wait.as_secs_f64()
    );
    let mut verdicts = Vec::new();
    thread::scope(|s| -> anyhow::Result<()> {
        let wss = s.spawn(|| {
            tcp_probes(
                ns,
                "wss",
                at(gateway, WSS_PORT),
                at(web, WSS_PORT),
                args.wait,
            )
        });
        let obfs4 = s.spawn(|| {
            tcp_probes(
                ns,
                "obfs4",
                at(gateway, OBFS4_PORT),
                at(web, OBFS4_PORT),
                args.wait,
            )
        });
        let replay = s.spawn(|| {
            obfs4_replay(
                ns,
                (at(gateway, OBFS4_PORT), &gateway_cert),
                (at(web, OBFS4_PORT), &cover_cert),
                args.wait,
            )
        });
        let mut quick = tls_probes(ns, at(gateway, WSS_PORT), at(web, WSS_PORT))?;
        quick.extend(dns_probes(ns, at(gateway, DNS_PORT), at(web, DNS_PORT))?);
        quick.extend(udp_probes(
            ns,
            "udp",
            at(gateway, CLIENT_LINK_PORT),
            at(web, CLIENT_LINK_PORT),
        )?);
        quick.extend(udp_probes(
            ns,
            "quic",
            at(gateway, QUIC_PORT),
            at(web, QUIC_PORT),
        )?);
        for handle in [wss, obfs4, replay] {
            verdicts.extend(
                handle
                    .join()
                    .map_err(|_| anyhow!("a probe thread panicked"))??,
            );
        }
        verdicts.extend(quick);
        Ok(())
    })?;
    drop(covers);
    verdicts.sort_by(|a, b| (a.transport, &a.probe).cmp(&(b.transport, &b.probe)));
    let table = table(&verdicts);
    if args.json {
        eprint!("{table}");
    } else {
        print!("{table}");
    }
    Ok(verdicts
        .iter()
        .map(|v| {
            row(
                "probe.distinguishes",
                v.transport,
                &[("probe", json!(v.probe))],
                if v.same { 0.0 } else { 1.0 },
                "bool",
            )
        })
        .collect())
}

/// The gateway's obfs4 cert, from the network's description.
fn gateway_obfs4_cert(network: &Network) -> anyhow::Result<pb_obfs4::Cert> {
    let params = network.gateway_obfs4_params();
    let args = pb_control::network::obfs4_args(&params)
        .ok_or_else(|| anyhow!("the gateway's obfs4 parameters do not read"))?;
    let cert = args
        .split(';')
        .find_map(|a| a.strip_prefix("cert="))
        .ok_or_else(|| anyhow!("no cert in {args}"))?;
    cert.parse()
        .map_err(|e| anyhow!("the gateway's cert: {e:?}"))
}

/// What each side of a TCP probe did, in words: the reply's kind, how and when it ended.
fn describe(seen: &Seen) -> String {
    let reply = if seen.reply.is_empty() {
        "nothing".to_owned()
    } else if seen.reply.len() >= 7 && seen.reply[0] == 0x15 {
        format!("TLS alert {}", seen.reply[6])
    } else if seen.reply.len() >= 5 && seen.reply[0] == 0x16 && seen.reply[1] == 0x03 {
        // A TLS server's first flight: its size is its certificate's.
        "a TLS server flight".to_owned()
    } else if seen.reply.starts_with(b"HTTP/") {
        let line = seen.reply.split(|b| *b == b'\r').next().unwrap_or_default();
        String::from_utf8_lossy(line).into_owned()
    } else {
        format!("{} bytes", seen.reply.len())
    };
    let end = match seen.end {
        End::Closed => "FIN",
        End::Reset => "RST",
        End::Open => "still open",
    };
    format!("{reply}; {end} after {:.1} s", seen.after.as_secs_f64())
}

/// Whether two TCP probes look the same: the reply's kind and the way it ended alike, and
/// the time within 3 s, or both in obfs4's window of 30 to 90 s (a bridge's delay is its own).
fn same_tcp(a: &Seen, b: &Seen) -> bool {
    let kind = |s: &Seen| describe(s).split(';').next().unwrap_or_default().to_owned();
    let window = |s: &Seen| (29.5..=90.5).contains(&s.after.as_secs_f64());
    let close =
        (a.after.as_secs_f64() - b.after.as_secs_f64()).abs() <= 3.0 || (window(a) && window(b));
    kind(a) == kind(b) && a.end == b.end && close
}

/// Raw probes of a TCP listener and its cover: silence, random bytes of several lengths, an
/// HTTP request in clear, a TLS ClientHello and then silence.
fn tcp_probes(
    ns: &Netns,
    transport: &'static str,
    listener: SocketAddr,
    cover: SocketAddr,
    wait: Duration,
) -> anyhow::Result<Vec<Verdict>> {
    let mut probes: Vec<(String, Vec<u8>)> = vec![("nothing sent".into(), Vec::new())];
    for n in [1usize, 100, 1000, 5000, 10_000] {
        probes.push((format!("{n} random bytes"), random(n, n as u64)));
    }
    probes.push((
        "HTTP/1.1 GET in clear".into(),
        b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n".to_vec(),
    ));
    probes.push(("TLS ClientHello, then nothing".into(), client_hello()?));
    let verdicts: anyhow::Result<Vec<(Verdict, Seen, Seen)>> = thread::scope(|s| {
        let handles: Vec<_> = probes
            .iter()
            .map(|(name, bytes)| {
                let l = s.spawn(move || wire::tcp(ns, listener, bytes, wait));
                let c = s.spawn(move || wire::tcp(ns, cover, bytes, wait));
                (name, l, c)
            })
            .collect();
        handles
            .into_iter()
            .map(|(name, l, c)| {
                let l = l.join().map_err(|_| anyhow!("a probe panicked"))??;
                let c = c.join().map_err(|_| anyhow!("a probe panicked"))??;
                Ok((
                    Verdict {
                        transport,
                        probe: name.clone(),
                        listener: describe(&l),
                        cover: describe(&c),
                        same: same_tcp(&l, &c),
                    },
                    l,
                    c,
                ))
            })
            .collect()
    });
    let verdicts = verdicts?;
    // One server closes every connection it gave up on at one time (obfs4proxy: 30 s plus
    // the bridge's delay; nginx: its timeout): a spread across probes tells them apart.
    let spread = |side: &dyn Fn(&(Verdict, Seen, Seen)) -> &Seen| {
        let times: Vec<f64> = verdicts
            .iter()
            .map(side)
            .filter(|s| s.reply.is_empty() && s.end == End::Closed && s.after.as_secs_f64() > 5.0)
            .map(|s| s.after.as_secs_f64())
            .collect();
        let lo = times.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = times.iter().copied().fold(0.0, f64::max);
        (times.len(), lo, hi)
    };
    let (ln, llo, lhi) = spread(&|v| &v.1);
    let (cn, clo, chi) = spread(&|v| &v.2);
    let words = |n: usize, lo: f64, hi: f64| match n {
        0 => "none".to_owned(),
        _ => format!("{n} closed after {lo:.1} to {hi:.1} s"),
    };
    let mut out: Vec<Verdict> = verdicts.into_iter().map(|(v, _, _)| v).collect();
    out.push(Verdict {
        transport,
        probe: "silent closes: one time for all".into(),
        listener: words(ln, llo, lhi),
        cover: words(cn, clo, chi),
        same: (ln == 0) == (cn == 0) && (lhi - llo <= 1.5) == (chi - clo <= 1.5),
    });
    Ok(out)
}

/// A TLS 1.3 ClientHello as a browser-less client sends it (rustls, SNI example.com).
fn client_hello() -> anyhow::Result<Vec<u8>> {
    let config = rustls::ClientConfig::builder_with_provider(pb_transport::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let mut tls = rustls::ClientConnection::new(
        std::sync::Arc::new(config),
        rustls::pki_types::ServerName::try_from("example.com")?,
    )?;
    let mut hello = Vec::new();
    tls.write_tls(&mut hello)?;
    Ok(hello)
}

/// TLS and HTTP/1.1 over it, at the WSS listener and nginx, with and without SNI.
fn tls_probes(ns: &Netns, listener: SocketAddr, cover: SocketAddr) -> anyhow::Result<Vec<Verdict>> {
    let requests: [(&str, &[&[u8]]); 4] = [
        (
            "GET /, GET /index.html, GET /nope",
            &[
                b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
                b"GET /index.html HTTP/1.1\r\nHost: example.com\r\n\r\n",
                b"GET /nope HTTP/1.1\r\nHost: example.com\r\n\r\n",
            ],
        ),
        (
            "POST / with a body",
            &[b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 4\r\n\r\nabcd"],
        ),
        ("a malformed request line", &[b"GET\r\n\r\n"]),
        ("HTTP/1.1 without Host", &[b"GET / HTTP/1.1\r\n\r\n"]),
    ];
    let mut verdicts = Vec::new();
    for sni in [Some("example.com"), None] {
        for (name, reqs) in requests {
            let l = wire::tls_http(ns, listener, sni, reqs)?;
            let c = wire::tls_http(ns, cover, sni, reqs)?;
            verdicts.push(Verdict {
                transport: "wss",
                probe: format!(
                    "TLS {}: {name}",
                    if sni.is_some() {
                        "with SNI"
                    } else {
                        "without SNI"
                    }
                ),
                same: l == c,
                listener: tls_words(&l),
                cover: tls_words(&c),
            });
        }
    }
    Ok(verdicts)
}

fn tls_words(t: &TlsSeen) -> String {
    format!("{} | {} | {}", t.handshake, t.answers.join(" / "), t.end)
}

/// A hello made for each bridge's own cert, sent once (answered), then replayed.
fn obfs4_replay(
    ns: &Netns,
    listener: (SocketAddr, &pb_obfs4::Cert),
    cover: (SocketAddr, &pb_obfs4::Cert),
    wait: Duration,
) -> anyhow::Result<Vec<Verdict>> {
    let run = |(to, cert): (SocketAddr, &pb_obfs4::Cert)| -> anyhow::Result<(Seen, Seen)> {
        let hello =
            pb_obfs4::ClientHandshake::new(cert, &mut pb_obfs4::OsEntropy, SystemTime::now())
                .hello()
                .to_vec();
        let first = wire::tcp(ns, to, &hello, Duration::from_secs(3))?;
        let replay = wire::tcp(ns, to, &hello, wait)?;
        Ok((first, replay))
    };
    let ((lf, lr), (cf, cr)) = thread::scope(|s| {
        let l = s.spawn(|| run(listener));
        let c = s.spawn(|| run(cover));
        Ok::<_, anyhow::Error>((
            l.join().map_err(|_| anyhow!("a probe panicked"))??,
            c.join().map_err(|_| anyhow!("a probe panicked"))??,
        ))
    })?;
    let answered = |s: &Seen| !s.reply.is_empty();
    Ok(vec![
        Verdict {
            transport: "obfs4",
            probe: "a hello for the bridge's cert".into(),
            listener: format!("answered: {}", answered(&lf)),
            cover: format!("answered: {}", answered(&cf)),
            same: answered(&lf) == answered(&cf),
        },
        Verdict {
            transport: "obfs4",
            probe: "the same hello replayed".into(),
            listener: describe(&lr),
            cover: describe(&cr),
            same: same_tcp(&lr, &cr),
        },
    ])
}

/// DNS questions of the kinds a prober asks, at the gateway's name server and NSD.
fn dns_probes(ns: &Netns, listener: SocketAddr, cover: SocketAddr) -> anyhow::Result<Vec<Verdict>> {
    let zone = DNS_ZONE;
    let base32 = |n: usize| -> String {
        random(n, 77)
            .iter()
            .map(|b| char::from(b"abcdefghijklmnopqrstuvwxyz234567"[usize::from(b & 31)]))
            .collect()
    };
    let long = format!(
        "{}.{}.{}.{}.{zone}.",
        base32(63),
        base32(63),
        base32(63),
        base32(50)
    );
    let mut probes: Vec<(String, Vec<u8>)> = Vec::new();
    for (label, name, kind, class, edns) in [
        (
            "SOA at the apex",
            format!("{zone}."),
            RecordType::SOA,
            DNSClass::IN,
            true,
        ),
        (
            "NS at the apex",
            format!("{zone}."),
            RecordType::NS,
            DNSClass::IN,
            true,
        ),
        (
            "A at the apex",
            format!("{zone}."),
            RecordType::A,
            DNSClass::IN,
            true,
        ),
        (
            "A of ns.<zone>",
            format!("ns.{zone}."),
            RecordType::A,
            DNSClass::IN,
            true,
        ),
        (
            "A of www.<zone>",
            format!("www.{zone}."),
            RecordType::A,
            DNSClass::IN,
            true,
        ),
        (
            "TXT of a short name",
            format!("abcd.{zone}."),
            RecordType::TXT,
            DNSClass::IN,
            true,
        ),
        (
            "TXT of a long base32 name",
            long.clone(),
            RecordType::TXT,
            DNSClass::IN,
            true,
        ),
        (
            "A of example.com",
            "example.com.".into(),
            RecordType::A,
            DNSClass::IN,
            true,
        ),
        (
            "CH TXT version.bind",
            "version.bind.".into(),
            RecordType::TXT,
            DNSClass::CH,
            false,
        ),
        (
            "SOA at the apex, no EDNS",
            format!("{zone}."),
            RecordType::SOA,
            DNSClass::IN,
            false,
        ),
    ] {
        let mut m = Message::new(0x4242, MessageType::Query, OpCode::Query);
        let mut q = Query::query(Name::from_ascii(&name)?, kind);
        q.set_query_class(class);
        m.add_query(q);
        if edns {
            let mut e = Edns::new();
            e.set_max_payload(1232);
            m.set_edns(e);
        }
        probes.push((label.into(), m.to_vec()?));
    }
    let mut update = Message::new(0x4243, MessageType::Query, OpCode::Update);
    update.add_query(Query::query(
        Name::from_ascii(format!("{zone}."))?,
        RecordType::SOA,
    ));
    probes.push(("an UPDATE".into(), update.to_vec()?));
    for n in [1usize, 12, 100] {
        probes.push((format!("{n} random bytes"), random(n, 1000 + n as u64)));
    }
    probes
        .iter()
        .map(|(name, bytes)| {
            let l = dns_words(&wire::udp(ns, listener, bytes, Duration::from_secs(1))?);
            let c = dns_words(&wire::udp(ns, cover, bytes, Duration::from_secs(1))?);
            Ok(Verdict {
                transport: "dns",
                probe: name.clone(),
                same: l == c,
                listener: l,
                cover: c,
            })
        })
        .collect()
}

/// A DNS answer in words: code, flags and section counts, EDNS size.
fn dns_words(answers: &[Vec<u8>]) -> String {
    if answers.is_empty() {
        return "nothing".into();
    }
    answers
        .iter()
        .map(|a| match Message::from_vec(a) {
            Err(_) => format!("{} bytes, not DNS", a.len()),
            Ok(m) => format!(
                "{:?}{}{}{} an {} ns {} ar {} edns {}",
                m.metadata.response_code,
                if m.metadata.authoritative { " aa" } else { "" },
                if m.metadata.recursion_available {
                    " ra"
                } else {
                    ""
                },
                if m.metadata.truncation { " tc" } else { "" },
                m.answers.len(),
                m.authorities.len(),
                m.additionals.len(),
                m.edns
                    .as_ref()
                    .map_or("none".into(), |e| e.max_payload().to_string()),
            ),
        })
        .collect::<Vec<_>>()
        .join(" + ")
}

/// Datagrams at a UDP port (the plain link's, QUIC's): random bytes, and for QUIC a long
/// header of an unknown version (servers answer Version Negotiation).
fn udp_probes(
    ns: &Netns,
    transport: &'static str,
    listener: SocketAddr,
    cover: SocketAddr,
) -> anyhow::Result<Vec<Verdict>> {
    let mut probes: Vec<(String, Vec<u8>)> = [1usize, 100, 1200, 1452]
        .iter()
        .map(|&n| (format!("{n} random bytes"), random(n, 500 + n as u64)))
        .collect();
    if transport == "quic" {
        let mut initial = vec![0xc0, 0x1a, 0x2a, 0x3a, 0x4a, 8];
        initial.extend(random(8, 9));
        initial.push(8);
        initial.extend(random(8, 10));
        initial.resize(1200, 0);
        probes.push(("an Initial of an unknown version".into(), initial));
    }
    probes
        .iter()
        .map(|(name, bytes)| {
            let words = |got: Vec<Vec<u8>>| -> String {
                if got.is_empty() {
                    return "nothing".into();
                }
                got.iter()
                    .map(|d| {
                        if d.len() >= 5 && d[0] & 0x80 != 0 && d[1..5] == [0; 4] {
                            "Version Negotiation".to_owned()
                        } else {
                            format!("{} bytes", d.len())
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" + ")
            };
            let l = words(wire::udp(ns, listener, bytes, Duration::from_secs(1))?);
            let c = words(wire::udp(ns, cover, bytes, Duration::from_secs(1))?);
            Ok(Verdict {
                transport,
                probe: name.clone(),
                same: l == c,
                listener: l,
                cover: c,
            })
        })
        .collect()
}

/// `n` bytes from a small generator seeded by `seed`: the same probe for both sides.
fn random(n: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; n];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

/// The verdicts as a table: per transport and probe, each side, and whether they differ.
fn table(verdicts: &[Verdict]) -> String {
    let mut out = String::from("transport | probe | listener | cover | tells them apart\n");
    for v in verdicts {
        out.push_str(&format!(
            "{} | {} | {} | {} | {}\n",
            v.transport,
            v.probe,
            v.listener,
            v.cover,
            if v.same { "no" } else { "YES" }
        ));
    }
    let told = verdicts.iter().filter(|v| !v.same).count();
    out.push_str(&format!(
        "{told} of {} probes tell a listener from its cover\n",
        verdicts.len()
    ));
    out
}
