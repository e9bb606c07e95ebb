#![expect(clippy::unwrap_used, reason = "tests")]

use super::*;
use crate::{IdentityKeyPair, note::NoteSigner};

fn file() -> NetworkFile {
    let pairs: Vec<IdentityKeyPair> = (1..=3u8)
        .map(|i| IdentityKeyPair::from_seed(&[i; 32]))
        .collect();
    let keys = pairs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            NoteSigner::new(&format!("pb.test/demo/steward-{}", i + 1), p)
                .unwrap()
                .key()
                .clone()
        })
        .collect();
    NetworkFile {
        stewards: Stewards::new("pb.test/demo", keys, 2).unwrap(),
        seed: [0x42; 32],
        gateways: vec![
            GatewayEntry {
                addr: "198.18.0.1:47480".parse().unwrap(),
                link_key: [0x11; 32],
                offers: vec![],
            },
            GatewayEntry {
                addr: "[2001:db8::1]:47480".parse().unwrap(),
                link_key: [0x22; 32],
                offers: vec![
                    TransportOffer {
                        transport: Transport::Quic,
                        port: 443,
                        params: vec![0xab; 32],
                    },
                    TransportOffer {
                        transport: Transport::WebSocket,
                        port: 8443,
                        params: vec![0xcd; 32],
                    },
                    TransportOffer {
                        transport: Transport::Obfs4,
                        port: 9443,
                        params: [vec![0xef; 52], vec![2]].concat(),
                    },
                    TransportOffer {
                        transport: Transport::DoH,
                        port: 53,
                        params: b"t.pb.test".to_vec(),
                    },
                ],
            },
        ],
        epoch_seconds: 3600,
        policy: Policy {
            per_ipv4_24: 8,
            per_ipv6_48: 4,
        },
        allow_prefixes: vec![
            ("198.18.0.0".parse().unwrap(), 24),
            ("fd00::".parse().unwrap(), 8),
        ],
        ledger: Some("http://198.18.0.1:8470/log".into()),
    }
}

#[test]
fn a_network_file_renders_and_parses_back() {
    let f = file();
    let text = f.render();
    assert_eq!(NetworkFile::parse(text.as_bytes()).unwrap(), f);
    // Comments, blank lines and the caps' defaults.
    let minimal: String = text
        .lines()
        .filter(|l| !l.starts_with("prefix_cap"))
        .map(|l| format!("{l}\n\n# a comment\n"))
        .collect();
    let parsed = NetworkFile::parse(minimal.as_bytes()).unwrap();
    assert_eq!(parsed.policy, Policy::default());
}

#[test]
fn a_bad_network_file_is_refused_with_its_line() {
    let text = file().render();
    let cases: Vec<(String, NetworkFileError)> = vec![
        (
            text.replacen("name = ", "nom = ", 1),
            NetworkFileError::Line(2, "unknown key"),
        ),
        (
            format!("{text}name = pb.test/other\n"),
            NetworkFileError::Line(16, "repeated key"),
        ),
        (
            format!("{text}allow_prefix = 198.18.0.1/24\n"),
            NetworkFileError::Line(16, "not an address/length with zero host bits"),
        ),
        (
            format!("{text}allow_prefix = 10.0.0.0/33\n"),
            NetworkFileError::Line(16, "not an address/length with zero host bits"),
        ),
        (
            format!("{text}ledger = http://198.18.0.2:8470\n"),
            NetworkFileError::Line(16, "repeated key"),
        ),
        (
            text.replacen("ledger = http://", "ledger = https://", 1),
            NetworkFileError::Line(15, "a ledger URL is http://host:port[/path]"),
        ),
        (
            text.replacen(
                "ledger = http://198.18.0.1:8470/log",
                "ledger = http://a b",
                1,
            ),
            NetworkFileError::Line(15, "a ledger URL is http://host:port[/path]"),
        ),
        (
            text.replacen("seed = 42", "seed = 4", 1),
            NetworkFileError::Line(3, "a seed is 64 hex digits"),
        ),
        (
            text.replacen("threshold = 2", "threshold=2", 1),
            NetworkFileError::Line(7, "expected `key = value`"),
        ),
        (
            text.replacen("gateway = 198.18.0.1:47480", "gateway = 198.18.0.1", 1),
            NetworkFileError::Line(9, "not an address:port"),
        ),
        (
            text.replacen(&"11".repeat(32), "11", 1),
            NetworkFileError::Line(9, "no link key (64 hex digits) after the address"),
        ),
        (
            text.replacen(" quic=443/", " ftp=443/", 1),
            NetworkFileError::Line(10, "unknown transport (quic, wss, obfs4, doh)"),
        ),
        (
            text.replacen(" quic=443/", " quic=0/", 1),
            NetworkFileError::Line(10, "not a port"),
        ),
        (
            text.replacen(" wss=8443/", " quic=8443/", 1),
            NetworkFileError::Line(10, "a transport offered twice"),
        ),
        (
            text.replacen(";iat-mode=2", ";iat-mode=3", 1),
            NetworkFileError::Line(10, "obfs4's offer is PORT/cert=CERT;iat-mode=0|1|2"),
        ),
        (
            text.replacen(" doh=53/t.pb.test", " doh=53/t..pb", 1),
            NetworkFileError::Line(
                10,
                "doh's offer is PORT/ZONE (a domain name of at most 64 characters)",
            ),
        ),
        (
            text.replacen(";iat-mode=2", "", 1),
            NetworkFileError::Line(10, "obfs4's offer is PORT/cert=CERT;iat-mode=0|1|2"),
        ),
        (
            text.replacen("steward = pb.test/demo/steward-1+", "steward = x+", 1),
            NetworkFileError::Line(4, "not a steward verifier key"),
        ),
        (
            text.lines()
                .filter(|l| !l.starts_with("gateway"))
                .map(|l| format!("{l}\n"))
                .collect(),
            NetworkFileError::Missing("gateway"),
        ),
    ];
    for (bad, why) in cases {
        assert_eq!(NetworkFile::parse(bad.as_bytes()), Err(why), "{bad}");
    }
    // A threshold above the stewards' number.
    let over = text.replacen("threshold = 2", "threshold = 4", 1);
    assert!(matches!(
        NetworkFile::parse(over.as_bytes()),
        Err(NetworkFileError::Stewards(_))
    ));
    assert_eq!(
        NetworkFile::parse(&[0xff]),
        Err(NetworkFileError::Unreadable)
    );
}

#[test]
fn the_specs_example_parses() {
    let spec = include_str!("../../../../docs/spec/network-file.md");
    let example = spec
        .split("```text\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let f = NetworkFile::parse(example.as_bytes()).unwrap();
    assert_eq!(f.stewards.network(), "pb.test/network");
    assert_eq!((f.stewards.threshold(), f.stewards.keys().len()), (2, 3));
    assert_eq!((f.gateways.len(), f.epoch_seconds), (2, 3600));
}

/// The offer's arguments are an obfs4 bridge line's, as obfs4proxy prints them (this cert is
/// obfs4proxy 0.0.14's for a known key, docs/spec/transports.md).
#[test]
fn an_obfs4_offer_reads_a_bridge_lines_arguments() {
    let cert = "AAECAwQFBgcICQoLDA0ODxAREhPnmmF6TXg47PsvuX+k3kiOrk4wS+mRZ2wWxVv1Yq4kJA";
    let params = obfs4_params(&format!("cert={cert};iat-mode=1")).unwrap();
    assert_eq!(params.len(), OBFS4_PARAMS);
    assert_eq!(&params[..20], &(0..20).collect::<Vec<u8>>()[..]);
    assert_eq!(params[52], 1);
    // obfs4proxy's SMETHOD line separates them with a comma, in the other order.
    assert_eq!(
        obfs4_params(&format!("iat-mode=1,cert={cert}")),
        Some(params.clone())
    );
    assert_eq!(
        obfs4_args(&params).unwrap(),
        format!("cert={cert};iat-mode=1")
    );
    for bad in [
        format!("cert={cert}"),
        "iat-mode=0".to_owned(),
        format!("cert={cert};iat-mode=0;x=1"),
        format!("cert={};iat-mode=0", &cert[1..]),
        format!("cert={cert};iat-mode=0;iat-mode=1"),
    ] {
        assert_eq!(obfs4_params(&bad), None, "{bad}");
    }
}
