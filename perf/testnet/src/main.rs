//! `pb-testnet`: a PhantomBand testnet in network namespaces, by hand (root), for
//! `deploy/testbed.sh`. `up` starts, in the background, eight relays (a gateway, three mix
//! layers of two, an exit), each in a namespace of its own on a bridge, a web server and
//! pb-client in a client namespace; `status` shows the relays' topology lines and
//! pb-client's last lines; `exec CMD…` runs a command in the client namespace (curl through
//! pb-client on 127.0.0.1:1080); `down` stops everything and removes the namespaces.
//!
//! State (the background process's pid, logs, the client namespace's name) is in
//! `/run/pb-testbed` (`--state`). The background process is `pb-testnet serve`: it holds the
//! [`pb_testnet::Testnet`] and tears it down on SIGTERM, as any user of the library would.
#![forbid(unsafe_code)]

use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use pb_testnet::{Backend, FileServer, Network, Node, Testnet};

#[derive(Parser)]
#[command(
    name = "pb-testnet",
    version,
    about = "A PhantomBand testnet in network namespaces (root)"
)]
struct Cli {
    /// Where the running testnet keeps its state.
    #[arg(long, global = true, default_value = "/run/pb-testbed")]
    state: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, clap::Args)]
struct UpArgs {
    /// Take pb-relay and pb-client from DIR (default: next to pb-testnet).
    #[arg(long, value_name = "DIR")]
    bin: Option<PathBuf>,
    /// AF_XDP with the XDP program on the relays' veths (native mode) instead of UDP.
    #[arg(long)]
    xdp: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a testnet in the background and wait until pb-client is ready.
    Up(UpArgs),
    /// The relays' topology lines and pb-client's last lines.
    Status,
    /// Run a command in the client namespace.
    Exec {
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Stop everything and remove the namespaces.
    Down,
    /// The background part of `up` (not for direct use).
    #[command(hide = true)]
    Serve(UpArgs),
}

const RELAYS: usize = 8;
const WEB_PORT: u16 = 80;
/// What a finished `serve` writes: the topology line, then the web server's address.
const READY: &str = "ready";
const PID: &str = "pid";
const CLIENT_NETNS: &str = "client-netns";

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Cmd::Up(args) => up(&cli.state, args),
        Cmd::Status => status(&cli.state),
        Cmd::Exec { command } => exec(&cli.state, command),
        Cmd::Down => down(&cli.state),
        Cmd::Serve(args) => serve(&cli.state, args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("testbed: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn say(what: &str) {
    eprintln!("testbed: {what}");
}

/// Starts `serve` in the background and waits for it to be ready or to fail.
fn up(state: &Path, args: &UpArgs) -> anyhow::Result<()> {
    pb_testbed::privileged()
        .map_err(|reason| anyhow::anyhow!("run as root (network namespaces): {reason}"))?;
    if state.exists() {
        bail!(
            "a testbed is already up ({} exists): deploy/testbed.sh down first",
            state.display()
        );
    }
    std::fs::create_dir_all(state).with_context(|| format!("creating {}", state.display()))?;
    let log = std::fs::File::create(state.join("testnet.log"))?;
    let mut command = Command::new(std::env::current_exe()?);
    command.arg("--state").arg(state).arg("serve");
    if let Some(bin) = &args.bin {
        command.arg("--bin").arg(bin);
    }
    if args.xdp {
        command.arg("--xdp");
    }
    // Its own process group: Ctrl-C in this terminal later does not reach it.
    let mut child = command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("starting pb-testnet serve")?;
    std::fs::write(state.join(PID), format!("{}\n", child.id()))?;
    say("starting 8 relays, a web server and pb-client; waiting for them to agree");
    let start = Instant::now();
    let ready = state.join(READY);
    while !ready.exists() {
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(state.join("testnet.log")).unwrap_or_default();
            let _ = std::fs::remove_dir_all(state);
            bail!("setting up failed ({status}); everything made is removed again:\n{log}");
        }
        if start.elapsed() > Duration::from_secs(180) {
            down(state)?;
            bail!("not up after 3 minutes: stopped again");
        }
        thread::sleep(Duration::from_millis(100));
    }
    let text = std::fs::read_to_string(&ready)?;
    let mut lines = text.lines();
    say(&format!("up: {}", lines.next().unwrap_or_default()));
    say(&format!(
        "try: deploy/testbed.sh exec curl --socks5-hostname 127.0.0.1:1080 http://{}/ -o /dev/null",
        lines.next().unwrap_or_default()
    ));
    Ok(())
}

/// Holds the testnet until SIGTERM.
fn serve(state: &Path, args: &UpArgs) -> anyhow::Result<()> {
    pb_testnet::stop_on_signals()?;
    let bin = |name: &str| match &args.bin {
        Some(dir) => Ok(dir.join(name)),
        None => pb_testnet::binary(name),
    };
    let network = Network::builder()
        .relays(RELAYS)
        .netns("pbtb")
        .backend(if args.xdp {
            Backend::AfXdp
        } else {
            Backend::Udp
        })
        .gossip(3600)
        .loop_rate(1)
        .admin(true)
        .stats_interval(0.0)
        .relay_binary(bin("pb-relay")?)
        .log_dir(state)
        .scratch(state.join("net"))
        .build()?;
    let mut net = Testnet::start(network)?;
    let web = FileServer::start(
        net.listen(Node::Web, WEB_PORT)?,
        Arc::new(pb_testnet::pattern(1 << 20)),
    )?;
    let view = net.wait_for_agreement(Duration::from_secs(60))?;
    let client = net.client_command(bin("pb-client")?);
    net.start_client("client", client, Duration::from_secs(30))?;
    let client_ns = net
        .netns(Node::Client)
        .map(|ns| ns.name().to_owned())
        .unwrap_or_default();
    std::fs::write(state.join(CLIENT_NETNS), client_ns + "\n")?;
    std::fs::write(
        state.join(READY),
        format!(
            "topology {} nodes {} epoch {}\n{}\n",
            view.hash,
            view.nodes,
            view.epoch,
            web.addr()
        ),
    )?;
    eprintln!("pb-testnet: up; SIGTERM stops it");
    while !pb_testnet::interrupted() {
        thread::sleep(Duration::from_millis(200));
    }
    eprintln!("pb-testnet: stopping");
    drop(net);
    Ok(())
}

fn status(state: &Path) -> anyhow::Result<()> {
    if !state.exists() {
        say("no testbed is up");
        return Ok(());
    }
    let last = |name: &str, prefix: &str, n: usize| -> Vec<String> {
        let text = std::fs::read_to_string(state.join(name)).unwrap_or_default();
        let lines: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_owned)
            .collect();
        lines[lines.len().saturating_sub(n)..].to_vec()
    };
    for i in 0..RELAYS {
        let role = pb_testnet::Role::of(i, RELAYS).as_str();
        let topology = last(&format!("relay{i}.log"), "topology ", 1).join("");
        println!("relay {i} ({role}): {topology}");
    }
    for line in last("client.log", "pb-client", 3) {
        println!("{line}");
    }
    if !alive(state)? {
        say("warning: the testnet's process is gone: deploy/testbed.sh down cleans up");
    }
    Ok(())
}

fn exec(state: &Path, command: &[String]) -> anyhow::Result<()> {
    let ns = std::fs::read_to_string(state.join(CLIENT_NETNS))
        .context("no testbed is up (deploy/testbed.sh up)")?;
    let error = Command::new("ip")
        .args(["netns", "exec", ns.trim()])
        .args(command)
        .exec();
    Err(error).context("running ip netns exec")
}

fn down(state: &Path) -> anyhow::Result<()> {
    if !state.exists() {
        say("no testbed is up");
        return Ok(());
    }
    if let Some(pid) = pid(state) {
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let start = Instant::now();
        while running(&pid) {
            if start.elapsed() > Duration::from_secs(30) {
                say("the testnet did not stop within 30 s: killing it");
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
                thread::sleep(Duration::from_millis(500));
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
    // Namespaces of a testnet process that was killed before it could remove them.
    pb_testbed::remove_stale_namespaces()?;
    std::fs::remove_dir_all(state).with_context(|| format!("removing {}", state.display()))?;
    say("down");
    Ok(())
}

fn pid(state: &Path) -> Option<String> {
    let pid = std::fs::read_to_string(state.join(PID)).ok()?;
    let pid = pid.trim();
    (!pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())).then(|| pid.to_owned())
}

/// Whether the background process still runs.
fn alive(state: &Path) -> anyhow::Result<bool> {
    Ok(pid(state).is_some_and(|pid| running(&pid)))
}

/// Whether process `pid` exists and is not a zombie (which only waits to be reaped).
fn running(pid: &str) -> bool {
    std::fs::read_to_string(Path::new("/proc").join(pid).join("stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}
