//! `pb-perf io`: packets received, and received-then-forwarded, per second on one core
//! through each I/O backend, over a veth pair between two network namespaces that this
//! benchmark creates and removes.
//!
//! Layout: namespace `a` holds the backend under test on one pinned core; namespace `b`
//! holds a load generator on another core (AF_XDP with our XDP program, the fastest sender
//! available) that offers the same load to every backend and absorbs what comes back.
//! "forward" sends each received packet back out to its sender through the same backend,
//! which is what a relay does minus the Sphinx work.
//!
//! Each side measures its own rate over the same window; the backend's thread also reports
//! the CPU time it used (from /proc/thread-self/schedstat), so a rate limited by the
//! generator can be told apart from one limited by the backend.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicU8, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use pb_io::{
    PacketIo, XdpCounter,
    afxdp::{AfXdpConfig, AfXdpIo, BindMode},
    udp::{UdpConfig, UdpIo},
    xdp::{AttachMode, XdpProgram},
};
use pb_testbed::{Netns, TwoNode};
use serde_json::{Map, Value};

use crate::{procfs::CpuClock, progress::Progress, report::Measurement};

/// Which backend is under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// AF_XDP socket fed by our XDP program (copy mode on veth).
    #[value(name = "af_xdp")]
    AfXdp,
    /// UDP socket with recvmmsg/sendmmsg.
    Udp,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::AfXdp => "af_xdp",
            Backend::Udp => "udp",
        }
    }
}

/// What the backend does with each packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Receive and release.
    Rx,
    /// Receive and send back to the sender.
    Forward,
}

/// Settings of one `pb-perf io` run.
#[derive(Clone, Debug)]
pub struct IoArgs {
    /// Measured window per backend and mode.
    pub seconds: f64,
    /// Load before the window opens.
    pub warmup: f64,
    /// Packets per receive call.
    pub batch: usize,
    /// UDP payload size.
    pub packet_len: u16,
    /// Backends to measure, in order.
    pub backends: Vec<Backend>,
}

const PORT: u16 = pb_io::DEFAULT_PORT;
const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// Packets the AF_XDP path dropped over the whole run (warm-up included): by the XDP program
/// (`xdp`) and by the kernel at the socket (`socket`: RX ring full or no fill-ring frame).
#[derive(Clone, Copy, Debug, Default)]
struct Drops {
    xdp: u64,
    socket: u64,
}

/// Counts taken by one thread at the start and end of the measured window.
#[derive(Clone, Copy, Debug, Default)]
struct Window {
    rx: u64,
    tx: u64,
    cpu_ns: u64,
    at: Option<Instant>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Side {
    start: Window,
    end: Window,
}

impl Side {
    fn secs(&self) -> f64 {
        match (self.start.at, self.end.at) {
            (Some(s), Some(e)) => e.duration_since(s).as_secs_f64(),
            _ => 0.0,
        }
    }
    fn rx_rate(&self) -> f64 {
        rate(self.end.rx - self.start.rx, self.secs())
    }
    fn tx_rate(&self) -> f64 {
        rate(self.end.tx - self.start.tx, self.secs())
    }
    fn cpu_secs(&self) -> f64 {
        (self.end.cpu_ns.saturating_sub(self.start.cpu_ns)) as f64 / 1e9
    }
}

fn rate(count: u64, secs: f64) -> f64 {
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

/// Tracks the phase flag and snapshots counters when it changes. Returns false once stopped.
struct Phases<'a> {
    phase: &'a AtomicU8,
    seen: u8,
    side: Side,
    clock: CpuClock,
}

impl<'a> Phases<'a> {
    fn new(phase: &'a AtomicU8) -> anyhow::Result<Self> {
        Ok(Self {
            phase,
            seen: WARMUP,
            side: Side::default(),
            clock: CpuClock::for_this_thread()?,
        })
    }
    fn tick(&mut self, rx: u64, tx: u64) -> bool {
        let now = self.phase.load(Ordering::Relaxed);
        if now == self.seen {
            return now != STOP;
        }
        let snapshot = Window {
            rx,
            tx,
            cpu_ns: self.clock.now_ns(),
            at: Some(Instant::now()),
        };
        if self.seen == WARMUP {
            self.side.start = snapshot;
        }
        if now == STOP {
            if self.side.start.at.is_none() {
                self.side.start = snapshot;
            }
            self.side.end = snapshot;
        }
        self.seen = now;
        now != STOP
    }
}

/// Runs every backend in both modes and returns the measurements.
pub fn run(args: &IoArgs) -> anyhow::Result<Vec<Measurement>> {
    pb_testbed::privileged().map_err(|why| {
        anyhow!("pb-perf io needs root to create network namespaces and attach XDP ({why})")
    })?;
    let cpus = pb_testbed::allowed_cpus().unwrap_or_else(|_| vec![0]);
    let (gen_cpu, rut_cpu) = match cpus.as_slice() {
        [a, b, ..] => (*a, *b),
        [a] => {
            eprintln!("pb-perf io: only one CPU available; generator and backend share it");
            (*a, *a)
        }
        [] => (0, 0),
    };
    eprintln!("pb-perf io: creating two namespaces joined by veth");
    let bed = pb_testbed::two_node("perf").context("creating the testbed")?;

    let mut rows = Vec::new();
    let total = args.backends.len() * 2;
    let progress = Progress::new("pb-perf io", total);
    for &backend in &args.backends {
        for mode in [Mode::Rx, Mode::Forward] {
            progress.step(&format!(
                "{} {} for {:.1}s (+{:.1}s warm-up)",
                backend.name(),
                if mode == Mode::Rx {
                    "receive"
                } else {
                    "forward"
                },
                args.seconds,
                args.warmup
            ));
            let (rut, generator, drops) = run_one(&bed, backend, mode, args, gen_cpu, rut_cpu)
                .with_context(|| format!("{} {:?}", backend.name(), mode))?;
            rows.extend(measurements(backend, mode, args, &rut, &generator, drops));
        }
    }
    drop(progress);
    eprintln!("pb-perf io: removing the namespaces");
    drop(bed);
    Ok(rows)
}

fn measurements(
    backend: Backend,
    mode: Mode,
    args: &IoArgs,
    rut: &Side,
    generator: &Side,
    drops: Drops,
) -> Vec<Measurement> {
    let cpu = rut.cpu_secs();
    let util = if rut.secs() > 0.0 {
        cpu / rut.secs()
    } else {
        0.0
    };
    let mut params = Map::new();
    params.insert("batch".into(), Value::from(args.batch));
    params.insert("packet_len".into(), Value::from(args.packet_len));
    params.insert("cores".into(), Value::from(1));
    params.insert(
        "offered_pps".into(),
        Value::from(generator.tx_rate().round()),
    );
    params.insert(
        "cpu_util".into(),
        Value::from((util * 1000.0).round() / 1000.0),
    );
    let (bench, count) = match mode {
        Mode::Rx => ("io.rx", rut.end.rx - rut.start.rx),
        Mode::Forward => {
            params.insert(
                "returned_pps".into(),
                Value::from(generator.rx_rate().round()),
            );
            ("io.forward", rut.end.tx - rut.start.tx)
        }
    };
    if backend == Backend::AfXdp {
        params.insert("xdp_drops".into(), Value::from(drops.xdp));
        params.insert("xsk_drops".into(), Value::from(drops.socket));
    }
    let pps = rate(count, rut.secs());
    let per_cpu = if cpu > 0.0 { count as f64 / cpu } else { 0.0 };
    vec![
        Measurement {
            bench: bench.into(),
            implementation: backend.name().into(),
            params: params.clone(),
            value: pps.round(),
            unit: "pkt/s".into(),
        },
        Measurement {
            bench: format!("{bench}_per_cpu"),
            implementation: backend.name().into(),
            params,
            value: per_cpu.round(),
            unit: "pkt/cpu-s".into(),
        },
    ]
}

/// One backend in one mode: returns the backend's side, the generator's side, and the XDP
/// program's drop count (AF_XDP only).
fn run_one(
    bed: &TwoNode,
    backend: Backend,
    mode: Mode,
    args: &IoArgs,
    gen_cpu: usize,
    rut_cpu: usize,
) -> anyhow::Result<(Side, Side, Drops)> {
    let phase = AtomicU8::new(WARMUP);
    let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<()>>();
    let target = SocketAddr::new(IpAddr::V4(bed.link.a_v4), PORT);
    thread::scope(|scope| {
        let wait_ready = |failure: &mut Option<anyhow::Error>| {
            if failure.is_some() {
                return;
            }
            match ready_rx.recv_timeout(Duration::from_secs(30)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => *failure = Some(e),
                Err(_) => *failure = Some(anyhow!("a benchmark thread did not start within 30 s")),
            }
        };
        let mut failure = None;
        // The backend first, so that the generator's first packet already finds its socket.
        let rut = {
            let (phase, ready) = (&phase, ready_tx.clone());
            let ns = &bed.a;
            let interface = bed.link.a_if.clone();
            scope.spawn(move || {
                backend_under_test(ns, &interface, backend, mode, args, rut_cpu, phase, ready)
            })
        };
        wait_ready(&mut failure);
        let generator = {
            let (phase, ready) = (&phase, ready_tx.clone());
            let ns = &bed.b;
            let interface = bed.link.b_if.clone();
            scope.spawn(move || generate(ns, &interface, target, args, gen_cpu, phase, ready))
        };
        drop(ready_tx);
        wait_ready(&mut failure);
        if failure.is_none() {
            thread::sleep(Duration::from_secs_f64(args.warmup));
            phase.store(MEASURE, Ordering::Relaxed);
            thread::sleep(Duration::from_secs_f64(args.seconds));
        }
        phase.store(STOP, Ordering::Relaxed);
        let rut = rut
            .join()
            .map_err(|_| anyhow!("the backend thread panicked"))?;
        let generator = generator
            .join()
            .map_err(|_| anyhow!("the generator thread panicked"))?;
        if let Some(e) = failure {
            return Err(e);
        }
        let (rut_side, drops) = rut?;
        Ok((rut_side, generator?, drops))
    })
}

#[expect(
    clippy::too_many_arguments,
    reason = "one call site; a struct would only rename them"
)]
fn backend_under_test(
    ns: &Netns,
    interface: &str,
    backend: Backend,
    mode: Mode,
    args: &IoArgs,
    cpu: usize,
    phase: &AtomicU8,
    ready: mpsc::Sender<anyhow::Result<()>>,
) -> anyhow::Result<(Side, Drops)> {
    let setup = || -> anyhow::Result<_> {
        pb_testbed::pin_to_cpu(cpu)?;
        let guard = ns.enter()?;
        Ok(guard)
    };
    let guard = match setup() {
        Ok(g) => g,
        Err(e) => {
            let _ = ready.send(Err(anyhow!("{e:#}")));
            return Err(e);
        }
    };
    let result = match backend {
        Backend::AfXdp => {
            let opened = (|| -> anyhow::Result<_> {
                let mut program =
                    XdpProgram::attach_new(interface, AttachMode::Native, PORT, args.packet_len)?;
                let mut config = AfXdpConfig::new(interface, 0);
                config.packet_len = args.packet_len;
                config.bind = BindMode::Copy;
                let io = AfXdpIo::open(&config)?;
                program.register(0, io.fd())?;
                Ok((program, io))
            })();
            match opened {
                Ok((program, mut io)) => {
                    let side = serve(&mut io, mode, args.batch, phase, ready);
                    let drops = program.counters().map(|c| {
                        c.get(XdpCounter::DropNoSocket)
                            + c.get(XdpCounter::DropWrongSize)
                            + c.get(XdpCounter::DropTruncated)
                    });
                    let kernel = io
                        .kernel_stats()
                        .map(|s| s.rx_dropped() + s.rx_ring_full() + s.rx_fill_ring_empty_descs())
                        .unwrap_or(0);
                    side.map(|s| {
                        (
                            s,
                            Drops {
                                xdp: drops.unwrap_or(0),
                                socket: kernel,
                            },
                        )
                    })
                }
                Err(e) => {
                    let _ = ready.send(Err(anyhow!("{e:#}")));
                    Err(e)
                }
            }
        }
        Backend::Udp => {
            let mut config = UdpConfig::new(SocketAddr::new(
                IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                PORT,
            ));
            config.packet_len = args.packet_len;
            match UdpIo::open(&config) {
                Ok(mut io) => {
                    serve(&mut io, mode, args.batch, phase, ready).map(|s| (s, Drops::default()))
                }
                Err(e) => {
                    let _ = ready.send(Err(anyhow!("{e}")));
                    Err(e.into())
                }
            }
        }
    };
    drop(guard);
    result
}

/// The backend's loop, the same code for every backend.
fn serve(
    io: &mut impl PacketIo,
    mode: Mode,
    batch: usize,
    phase: &AtomicU8,
    ready: mpsc::Sender<anyhow::Result<()>>,
) -> anyhow::Result<Side> {
    let mut phases = Phases::new(phase)?;
    let mut packets = Vec::with_capacity(batch);
    let (mut rx, mut tx) = (0u64, 0u64);
    let _ = ready.send(Ok(()));
    while phases.tick(rx, tx) {
        rx += io.recv(&mut packets, batch, Duration::from_millis(10))? as u64;
        match mode {
            Mode::Rx => io.release(&mut packets),
            Mode::Forward => {
                // Each packet goes back to where it came from; what the ring cannot take now
                // is dropped, as a relay under overload would.
                tx += io.send(&mut packets)? as u64;
                io.release(&mut packets);
                io.poll_completions()?;
            }
        }
    }
    Ok(phases.side)
}

/// The load generator in namespace `b`: AF_XDP transmit as fast as it goes, absorbing what
/// comes back.
fn generate(
    ns: &Netns,
    interface: &str,
    target: SocketAddr,
    args: &IoArgs,
    cpu: usize,
    phase: &AtomicU8,
    ready: mpsc::Sender<anyhow::Result<()>>,
) -> anyhow::Result<Side> {
    let setup = || -> anyhow::Result<_> {
        pb_testbed::pin_to_cpu(cpu)?;
        let guard = ns.enter()?;
        let mut program =
            XdpProgram::attach_new(interface, AttachMode::Native, PORT, args.packet_len)?;
        let mut config = AfXdpConfig::new(interface, 0);
        config.packet_len = args.packet_len;
        config.bind = BindMode::Copy;
        let mut io = AfXdpIo::open(&config)?;
        program.register(0, io.fd())?;
        io.resolve_peer(target.ip(), Duration::from_secs(5))
            .context("resolving the backend's MAC")?;
        Ok((guard, program, io))
    };
    let (guard, program, mut io) = match setup() {
        Ok(parts) => parts,
        Err(e) => {
            let _ = ready.send(Err(anyhow!("generator: {e:#}")));
            return Err(e);
        }
    };
    let mut phases = Phases::new(phase)?;
    let mut out = Vec::with_capacity(args.batch);
    let mut back = Vec::with_capacity(256);
    let (mut rx, mut tx) = (0u64, 0u64);
    let mut seq = 0u64;
    let len = usize::from(args.packet_len);
    let _ = ready.send(Ok(()));
    while phases.tick(rx, tx) {
        rx += io.recv(&mut back, 256, Duration::ZERO)? as u64;
        io.release(&mut back);
        while out.len() < args.batch {
            let Some(mut p) = io.alloc(target) else { break };
            io.set_len(&mut p, len);
            if let Some(head) = io.payload_mut(&p).get_mut(..8) {
                head.copy_from_slice(&seq.to_be_bytes());
            }
            seq += 1;
            out.push(p);
        }
        tx += io.send(&mut out)? as u64;
        io.poll_completions()?;
    }
    io.release(&mut out);
    drop(program);
    drop(guard);
    if io.stats().tx_dropped_no_neighbour > 0 {
        bail!("generator dropped packets for want of a neighbour entry");
    }
    Ok(phases.side)
}
