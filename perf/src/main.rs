//! `pb-perf`: PhantomBand's benchmark harness. Each subcommand measures one thing and runs
//! its baseline in the same process run, side by side, so ratios hold on a noisy machine.
//! Prints a table, or one JSON object per line with `--json`; progress goes to stderr.
//!
//! Subcommands so far: `io` (packet I/O backends over veth), `sphinx` (PB-Sphinx against
//! Nym's sphinx-packet), `relay` (one relay pipeline against the unwrap rate), `idle` (an
//! idle relay core's CPU under its loop against the 1 ms polling it replaced) and `e2e` (a
//! fetch through a local testnet against the same fetch made directly, per client profile,
//! and the idle client's cost), and `testnet`, the main job: a whole network (namespaces and
//! XDP as root, loopback otherwise) with pb-client on 127.0.0.1:1080, a fetch and a summary,
//! up until Ctrl-C; `attack` (the abuse attacks against a testnet in namespaces, with an
//! honest fetch during each); `transports` (the same fetch through a namespace testnet over
//! each transport of the client link, side by side with plain UDP); `anonymity` (a global
//! passive observer, a flow-correlation attacker and the senders' entropy against a
//! namespace testnet, idle, busy and under a CPU hog); `ledger` (a synthetic incentive ledger
//! of many relays and epochs: its growth, and the time to verify it).
//!
//! Not here: the testnet itself (pb-testnet, which the tests share), assertions on speed
//! (tests never make them; the figures go to docs/perf.md with their commands).
#![forbid(unsafe_code)]

mod anonymity;
mod attack;
mod doh_carrier;
mod e2e_bench;
mod idle_bench;
mod io_bench;
mod ledger_bench;
mod plot;
mod probe;
mod procfs;
mod progress;
mod relay_bench;
mod report;
mod sphinx_bench;
mod testnet;
mod transports;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "pb-perf", version, about = "PhantomBand benchmark harness")]
struct Cli {
    /// One JSON object per line instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Also write SVG charts (and the rows as JSON) into this directory.
    #[arg(long, global = true, value_name = "DIR")]
    svg: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Received and forwarded packets per second on one core through each I/O backend, over
    /// a veth pair in two network namespaces created for the run (needs root).
    Io {
        /// Measured seconds per backend and mode.
        #[arg(long, default_value_t = 3.0, value_parser = seconds)]
        seconds: f64,
        /// Seconds of load before each measurement starts.
        #[arg(long, default_value_t = 0.5, value_parser = seconds)]
        warmup: f64,
        /// Packets per receive call.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=1024))]
        batch: u16,
        /// UDP payload bytes of each packet.
        #[arg(long, default_value_t = pb_io::DEFAULT_PACKET_LEN,
              value_parser = clap::value_parser!(u16).range(i64::from(pb_io::config::MIN_PACKET_LEN)..=i64::from(pb_io::config::MAX_PACKET_LEN)))]
        packet_len: u16,
        /// Backends to measure (comma-separated).
        #[arg(long, value_delimiter = ',', default_values = ["af_xdp", "udp"])]
        backend: Vec<io_bench::Backend>,
    },
    /// PB-Sphinx unwrap per batch size and creation per second on one core, then unwrap
    /// against the number of cores, side by side with Nym's sphinx-packet crate (same route
    /// length, closest packet size).
    Sphinx {
        /// Seconds per measurement, run as 5 rounds interleaved with the other measurements
        /// (the median round is reported).
        #[arg(long, default_value_t = 5.0, value_parser = seconds)]
        seconds: f64,
        /// Route length (1-5).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=5))]
        hops: u8,
        /// Batch sizes for PB-Sphinx unwrap (comma-separated).
        #[arg(long, value_delimiter = ',', default_values = ["1", "8", "16", "32"],
              value_parser = clap::value_parser!(u16).range(1..=256))]
        batch: Vec<u16>,
        /// Core counts for unwrap throughput against cores (comma-separated; default: 1 to
        /// every CPU this process may use).
        #[arg(long, value_delimiter = ',',
              value_parser = clap::value_parser!(u16).range(1..=1024))]
        cores: Vec<u16>,
    },
    /// Packets forwarded per second through one relay pipeline on one core, over AF_XDP and
    /// UDP, against the batch-unwrap rate of the same core; latency added by the relay
    /// (needs root: network namespaces and XDP).
    Relay {
        /// Measured seconds per backend (latency runs half as long).
        #[arg(long, default_value_t = 3.0, value_parser = seconds)]
        seconds: f64,
        /// Packets built for the run (each is sent once).
        #[arg(long, default_value_t = 150_000)]
        packets: usize,
        /// Slots per second over all links, split evenly among them; 0 picks 90% of the
        /// measured unwrap rate, so the links stay saturated.
        #[arg(long, default_value_t = 0)]
        link_rate: u32,
        /// Packets the generator keeps in flight in the throughput runs.
        #[arg(long, default_value_t = 1024)]
        in_flight: usize,
        /// Link counts of the relay (comma-separated), each measured saturated and idle.
        #[arg(long, value_delimiter = ',', default_values_t = [1u16],
              value_parser = clap::value_parser!(u16).range(1..=1024))]
        links: Vec<u16>,
        /// Packets per second on every link in the idle runs (pb-relay's default).
        #[arg(long, default_value_t = 100)]
        idle_link_rate: u32,
    },
    /// Time to first byte and download rate through a local testnet of eight pb-relay
    /// processes on loopback and pb-client, per client profile, against the same fetch made
    /// directly; then the idle client's CPU and RSS with its cover running. No root needed;
    /// pb-relay and pb-client must be built next to pb-perf.
    E2e {
        /// Bytes per fetch.
        #[arg(long, default_value_t = 512 * 1024)]
        bytes: usize,
        /// Fetches per profile (the median is reported).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=100))]
        fetches: u16,
        /// Seconds the idle client is watched.
        #[arg(long, default_value_t = 20.0, value_parser = seconds)]
        idle_seconds: f64,
        /// Client profiles (comma-separated).
        #[arg(long, value_delimiter = ',', default_values = ["default", "low-power"])]
        profile: Vec<String>,
        /// Packets per second on every relay link.
        #[arg(long, default_value_t = 100)]
        link_rate: u32,
        /// Also measure VPN mode (`pb-client --tun`, fetches with no proxy), side by side
        /// with SOCKS; the testnet then runs in network namespaces (root).
        #[arg(long)]
        tun: bool,
    },
    /// What an idle relay core costs: 4 links at 100 packets/s of cover under pb-relay's
    /// loop (sleep until the next deadline) against the loop it replaced (1 ms polls), side
    /// by side; with --baseline-relay, the same as whole pb-relay processes. No root.
    Idle {
        /// Measured seconds per loop (or process) and round.
        #[arg(long, default_value_t = 5.0, value_parser = seconds)]
        seconds: f64,
        /// Rounds, interleaved (the median is reported).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=100))]
        rounds: u16,
        /// Links of the relay.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
        links: u16,
        /// Packets per second on every link.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        link_rate: u32,
        /// Another pb-relay binary (e.g. built from an older commit) to compare with the one
        /// next to pb-perf, as whole processes in static mode.
        #[arg(long, value_name = "PATH")]
        baseline_relay: Option<std::path::PathBuf>,
    },
    /// The abuse attacks (docs/threat-model.md) against eight pb-relay processes in network
    /// namespaces, each while pb-client fetches through them: per attack the attacker's and
    /// the victim's bytes, their ratio, whether the honest fetch and every relay's membership
    /// survived, and the relays' largest RSS (needs root).
    Attack {
        /// Seconds each attack lasts (at least as long as its honest fetch).
        #[arg(long, default_value_t = 8.0, value_parser = seconds)]
        seconds: f64,
        /// Attacks to play (comma-separated).
        #[arg(long, value_delimiter = ',', value_enum,
              default_values = ["link-flood", "directory-push", "swim-junk", "hello-flood",
                                "gateway-flood", "exit-sessions", "exit-slow-dns", "exit-bloat"])]
        attack: Vec<attack::Attack>,
        /// Datagrams per second of the flooding attacks.
        #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..=200_000))]
        rate: u32,
        /// Bytes of the honest fetch during each attack.
        #[arg(long, default_value_t = 128 * 1024)]
        bytes: usize,
        /// The relays' packet I/O: af-xdp (the XDP program and AF_XDP sockets) or udp.
        #[arg(long, default_value = "af-xdp", value_parser = ["af-xdp", "udp"])]
        backend: String,
        /// Another pb-relay binary (e.g. built from an older commit) to attack first, side by
        /// side with the one next to pb-perf (rows `baseline` and `pb-relay`).
        #[arg(long, value_name = "PATH")]
        baseline_relay: Option<std::path::PathBuf>,
        /// Keep the relays' and pb-client's logs in this directory.
        #[arg(long, value_name = "DIR")]
        log_dir: Option<std::path::PathBuf>,
    },
    /// The same fetch through eight pb-relay processes in network namespaces (AF_XDP) over
    /// each transport of the client link, one after the other, side by side with plain UDP:
    /// time to first byte, download rate, bytes on the access link per body byte, CPU per
    /// MB of pb-client and of the gateway (needs root).
    Transports {
        /// Transports to measure, in this order (comma-separated).
        #[arg(long, value_delimiter = ',', value_enum, default_values = ["udp", "quic", "wss", "obfs4", "doh"])]
        transports: Vec<transports::Transport>,
        /// Fetches per transport, one after the other (the medians are reported).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=100))]
        fetches: u16,
        /// Bytes of each fetch's body.
        #[arg(long, default_value_t = 2 << 20)]
        size: usize,
        /// The longest wait before each transport for the gateway to close the last
        /// client's link (it holds a gone client's link 30 s) and the access link to go
        /// quiet; 0 does not wait, and the figures then include the leftovers.
        #[arg(long, default_value_t = 45.0, value_parser = seconds)]
        settle: f64,
        /// The gateway's obfs4 iat-mode (0: none, 1, 2: paranoid), and so its clients'.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
        obfs4_iat_mode: u8,
        /// With doh: the DNS carrier alone (client to a name server at the gateway's
        /// address, through the resolver, no mixnet) at each of these query rates, each
        /// way at once (comma-separated; empty: not measured).
        #[arg(long, value_delimiter = ',', default_values_t = [400u32, 1000, 2000])]
        doh_rates: Vec<u32>,
        /// Seconds of each DNS carrier measurement.
        #[arg(long, default_value_t = 8.0, value_parser = seconds)]
        doh_seconds: f64,
    },
    /// A censor's active probes at every listener of a gateway (WSS, obfs4, DNS, QUIC,
    /// plain UDP), each beside the same probe at the real service it imitates (nginx,
    /// obfs4proxy, NSD, ngtcp2-server, an ignoring port) in the same testnet: which probes
    /// tell them apart (needs root).
    Probe {
        /// The longest wait for a server to close a probed connection.
        #[arg(long, default_value_t = 100.0, value_parser = seconds)]
        wait: f64,
    },
    /// The adversaries played against eight pb-relay processes (AF_XDP, namespaces) and
    /// --clients pb-clients, idle, busy and under a CPU hog: a global passive observer's
    /// tests per link direction, a flow-correlation attacker's true-positive rates, the
    /// senders' entropy (needs root).
    Anonymity {
        /// Seconds per phase (idle, busy, cpu-hog).
        #[arg(long, default_value_t = 40.0, value_parser = seconds)]
        seconds: f64,
        /// pb-client processes (every other one fetches in the busy phase).
        #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u16).range(2..=100))]
        clients: u16,
        /// Packets per second on every relay link (scaled down for a small machine, but
        /// above what the clients send through each link).
        #[arg(long, default_value_t = 60)]
        link_rate: u32,
        /// The clients' profile.
        #[arg(long, default_value = "low-power", value_parser = ["default", "low-power"])]
        profile: String,
        /// KiB per fetch.
        #[arg(long, default_value_t = 32)]
        fetch_kib: usize,
        /// The known-bad configuration (no cover, no padding), where the adversaries must
        /// win: the harness's check that it can see.
        #[arg(long)]
        insecure_no_cover: bool,
        /// Seeds the busy clients' fetch times.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Also write the observer's recording to this file (CSV: one line per frame).
        #[arg(long, value_name = "FILE")]
        record: Option<std::path::PathBuf>,
        /// Keep the relays' and clients' logs in this directory.
        #[arg(long, value_name = "DIR")]
        log_dir: Option<std::path::PathBuf>,
    },
    /// What the incentive ledger costs at scale: a synthetic ledger of --relays relays over
    /// --epochs epochs (each relay's signed record of its loops through --links neighbours,
    /// published as tiles with a checkpoint per epoch), its growth per relay per epoch, and
    /// the time `pb-ledger verify` takes to check all of it. No root.
    Ledger {
        /// Relays, one record each per epoch.
        #[arg(long, default_value_t = 1000)]
        relays: usize,
        /// Epochs.
        #[arg(long, default_value_t = 24)]
        epochs: u32,
        /// Links measured per record.
        #[arg(long, default_value_t = 16)]
        links: usize,
    },
    /// Charts (into --svg DIR) from rows an earlier run wrote with --json or --svg.
    Plot {
        /// JSON-lines files of rows.
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
    },
    /// The main job: eight pb-relay processes, a web server and pb-client on 127.0.0.1:1080
    /// (network namespaces and XDP as root, loopback otherwise); fetches a file through it,
    /// prints a summary (topology, link rates, delivered bytes, latency percentiles) and keeps
    /// the network up until Ctrl-C.
    Testnet {
        /// Where pb-client listens.
        #[arg(long, default_value = "127.0.0.1:1080")]
        listen: std::net::SocketAddr,
        /// Stop after the summary (for scripts and tests).
        #[arg(long)]
        exit_after_summary: bool,
        /// Packets per second on every relay link.
        #[arg(long, default_value_t = 100)]
        link_rate: u32,
        /// Bytes of the fetch.
        #[arg(long, default_value_t = 1 << 20)]
        bytes: usize,
        /// Where the relays run: auto is network namespaces with AF_XDP and the XDP program
        /// as root, loopback with UDP otherwise.
        #[arg(long, value_enum, default_value_t = testnet::Backend::Auto)]
        backend: testnet::Backend,
        /// What carries pb-client's link to the gateway: `udp`, `quic` (HTTP/3) or `wss`
        /// (the gateway listens on all three).
        #[arg(long, default_value = "udp", value_parser = ["udp", "quic", "wss"])]
        transport: String,
        /// Write the network file this run's network has (for the same --backend) to PATH
        /// and exit, starting nothing: `make demo` builds it into pb-client
        /// (PB_NETWORK_FILE), which then runs with no arguments.
        #[arg(long, value_name = "PATH")]
        write_network_file: Option<std::path::PathBuf>,
    },
}

fn seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if (0.0..=600.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is outside 0-600 seconds"))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pb-perf: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let rows = match &cli.command {
        Command::Io {
            seconds,
            warmup,
            batch,
            packet_len,
            backend,
        } => io_bench::run(&io_bench::IoArgs {
            seconds: *seconds,
            warmup: *warmup,
            batch: usize::from(*batch),
            packet_len: *packet_len,
            backends: backend.clone(),
        })?,
        Command::Sphinx {
            seconds,
            hops,
            batch,
            cores,
        } => sphinx_bench::run(&sphinx_bench::SphinxArgs {
            seconds: *seconds,
            hops: usize::from(*hops),
            batches: batch.iter().map(|b| usize::from(*b)).collect(),
            cores: cores.iter().map(|c| usize::from(*c)).collect(),
        })?,
        Command::Relay {
            seconds,
            packets,
            link_rate,
            in_flight,
            links,
            idle_link_rate,
        } => relay_bench::run(&relay_bench::RelayArgs {
            seconds: *seconds,
            packets: *packets,
            link_rate: *link_rate,
            in_flight: (*in_flight).max(1),
            links: links.iter().map(|l| usize::from(*l)).collect(),
            idle_link_rate: (*idle_link_rate).max(1),
        })?,
        Command::E2e {
            bytes,
            fetches,
            idle_seconds,
            profile,
            link_rate,
            tun,
        } => e2e_bench::run(&e2e_bench::E2eArgs {
            bytes: (*bytes).max(1),
            fetches: usize::from(*fetches),
            idle_seconds: *idle_seconds,
            profiles: profile.clone(),
            link_rate: (*link_rate).max(1),
            tun: *tun,
        })?,
        Command::Idle {
            seconds,
            rounds,
            links,
            link_rate,
            baseline_relay,
        } => idle_bench::run(&idle_bench::IdleArgs {
            seconds: *seconds,
            rounds: usize::from(*rounds),
            links: usize::from(*links),
            link_rate: *link_rate,
            baseline_relay: baseline_relay.clone(),
        })?,
        Command::Attack {
            seconds,
            attack,
            rate,
            bytes,
            backend,
            baseline_relay,
            log_dir,
        } => attack::run(&attack::AttackArgs {
            seconds: *seconds,
            attacks: attack.clone(),
            rate: *rate,
            bytes: (*bytes).max(1),
            backend: if backend == "udp" {
                pb_testnet::Backend::Udp
            } else {
                pb_testnet::Backend::AfXdp
            },
            baseline_relay: baseline_relay.clone(),
            log_dir: log_dir.clone(),
        })?,
        Command::Transports {
            transports,
            fetches,
            size,
            settle,
            obfs4_iat_mode,
            doh_rates,
            doh_seconds,
        } => transports::run(&transports::TransportsArgs {
            transports: transports.clone(),
            fetches: usize::from(*fetches),
            size: (*size).max(1),
            settle: std::time::Duration::from_secs_f64(*settle),
            json: cli.json,
            obfs4_iat_mode: *obfs4_iat_mode,
            doh_rates: doh_rates.clone(),
            doh_seconds: std::time::Duration::from_secs_f64(*doh_seconds),
        })?,
        Command::Probe { wait } => probe::run(&probe::ProbeArgs {
            wait: std::time::Duration::from_secs_f64(*wait),
            json: cli.json,
        })?,
        Command::Anonymity {
            seconds,
            clients,
            link_rate,
            profile,
            fetch_kib,
            insecure_no_cover,
            seed,
            record,
            log_dir,
        } => anonymity::run(&anonymity::AnonymityArgs {
            seconds: *seconds,
            clients: usize::from(*clients),
            link_rate: (*link_rate).max(1),
            profile: profile.clone(),
            fetch_kib: (*fetch_kib).max(1),
            insecure_no_cover: *insecure_no_cover,
            svg: cli.svg.clone(),
            seed: *seed,
            record: record.clone(),
            log_dir: log_dir.clone(),
        })?,
        Command::Ledger {
            relays,
            epochs,
            links,
        } => ledger_bench::run(&ledger_bench::LedgerArgs {
            relays: *relays,
            epochs: *epochs,
            links: *links,
        })?,
        Command::Plot { files } => {
            let Some(dir) = &cli.svg else {
                anyhow::bail!("plot: where to? pass --svg DIR");
            };
            for file in files {
                let text = std::fs::read_to_string(file)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                let rows: Vec<report::Measurement> = text
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(serde_json::from_str)
                    .collect::<Result<_, _>>()
                    .map_err(|e| {
                        anyhow::anyhow!("{}: not pb-perf JSON rows: {e}", file.display())
                    })?;
                let written = plot::charts(dir, &rows)?;
                eprintln!("pb-perf: {} charts from {}", written.len(), file.display());
            }
            return Ok(());
        }
        Command::Testnet {
            listen,
            link_rate,
            bytes,
            backend,
            write_network_file: Some(path),
            ..
        } => {
            testnet::write_network_file(
                &testnet::TestnetArgs {
                    listen: *listen,
                    exit_after_summary: true,
                    link_rate: (*link_rate).max(1),
                    bytes: (*bytes).max(1),
                    json: false,
                    backend: *backend,
                    transport: "udp".into(),
                },
                path,
            )?;
            return Ok(());
        }
        Command::Testnet {
            listen,
            exit_after_summary,
            link_rate,
            bytes,
            backend,
            transport,
            write_network_file: None,
        } => testnet::run(&testnet::TestnetArgs {
            listen: *listen,
            exit_after_summary: *exit_after_summary
                || std::env::var("PB_DEMO_EXIT").is_ok_and(|v| v == "1"),
            link_rate: (*link_rate).max(1),
            bytes: (*bytes).max(1),
            json: cli.json || cli.svg.is_some(),
            backend: *backend,
            transport: transport.clone(),
        })?,
    };
    if let Some(dir) = &cli.svg {
        let name = match &cli.command {
            Command::Io { .. } => "io",
            Command::Sphinx { .. } => "sphinx",
            Command::Relay { .. } => "relay",
            Command::E2e { .. } => "e2e",
            Command::Idle { .. } => "idle",
            Command::Testnet { .. } => "testnet",
            Command::Attack { .. } => "attack",
            Command::Transports { .. } => "transports",
            Command::Probe { .. } => "probe",
            Command::Anonymity { .. } => "anonymity",
            Command::Ledger { .. } => "ledger",
            Command::Plot { .. } => "plot",
        };
        let files = plot::write(dir, name, &rows)?;
        eprintln!(
            "pb-perf: wrote {} files (charts and {name}.json) to {}",
            files.len(),
            dir.display()
        );
    }
    let mut out = std::io::stdout().lock();
    if rows.is_empty() {
        return Ok(());
    }
    if cli.json {
        report::write_json(&mut out, &rows)
    } else {
        report::write_table(&mut out, &rows)
    }
}
