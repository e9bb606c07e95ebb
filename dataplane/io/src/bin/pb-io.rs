//! `pb-io check --config io.toml`: attaches the PhantomBand XDP program to the configured
//! interface, binds one AF_XDP socket per configured queue, receives for a while and prints
//! what arrived and what the program dropped. An operator's first test of a NIC; exits
//! non-zero with one line naming the interface, queue or field when something is wrong, and
//! leaves nothing attached either way.
#![forbid(unsafe_code)]

use std::{
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use pb_io::{
    PacketIo,
    afxdp::{AfXdpConfig, AfXdpIo},
    config::IoConfig,
    xdp::XdpProgram,
};

#[derive(Parser)]
#[command(name = "pb-io", version, about = "PhantomBand packet I/O tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Attach the XDP program and AF_XDP sockets as configured, receive, report, detach.
    Check {
        /// TOML file with `interface`, `queues`, `port`, `packet_len`, `xdp_mode`, `bind`.
        #[arg(long)]
        config: PathBuf,
        /// How long to receive before reporting.
        #[arg(long, default_value_t = 1.0)]
        seconds: f64,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pb-io: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Check { config, seconds } => check(&config, seconds),
    }
}

fn check(path: &PathBuf, seconds: f64) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    let config =
        IoConfig::from_toml(&text).with_context(|| format!("config {}", path.display()))?;
    let duration = Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|d| *d <= Duration::from_secs(3600))
        .context("--seconds must be between 0 and 3600")?;

    // Fail on a missing interface before touching the kernel.
    pb_io::afxdp::ifindex(&config.interface)?;
    let mut program = XdpProgram::attach_new(
        &config.interface,
        config.xdp_mode,
        config.port,
        config.packet_len,
    )?;
    let mut sockets = Vec::new();
    for &queue in &config.queues {
        let mut afxdp = AfXdpConfig::new(config.interface.clone(), queue);
        afxdp.port = config.port;
        afxdp.packet_len = config.packet_len;
        afxdp.bind = config.bind;
        let socket = AfXdpIo::open(&afxdp)?;
        program.register(queue, socket.fd())?;
        sockets.push(socket);
    }
    eprintln!(
        "pb-io: XDP attached to {} ({:?}), AF_XDP on queues {:?}, port {}, packets of {} bytes; receiving for {:.1}s",
        config.interface, config.xdp_mode, config.queues, config.port, config.packet_len, seconds
    );

    let start = Instant::now();
    let mut batch = Vec::with_capacity(64);
    let mut received = vec![0u64; sockets.len()];
    while start.elapsed() < duration {
        for (socket, count) in sockets.iter_mut().zip(&mut received) {
            let n = socket.recv(&mut batch, 64, Duration::from_millis(10))?;
            *count += n as u64;
            socket.release(&mut batch);
        }
    }
    for (socket, count) in sockets.iter().zip(&received) {
        println!("queue {}: received {count}", socket.queue());
    }
    for (counter, value) in program.counters()?.iter() {
        println!("xdp {}: {value}", counter.name());
    }
    Ok(())
}
