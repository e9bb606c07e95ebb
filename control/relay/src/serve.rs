//! The main thread of a running relay: it starts one pipeline core per backend
//! ([`crate::core::run_core`]), announces the relay once every core is up, then until
//! stopped serves static mode's admin endpoint and SIGHUP reloads or turns gossip mode's
//! driver and hands what changed to the cores; at the end it prints the summary.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::anyhow;
use pb_io::PacketIo;
use pb_pipeline::CoverSource as _;
use pb_sphinx::Epoch;
use tracing::{info, warn};

use crate::{
    admin::Admin,
    core::{Shared, install_sources, run_core, sources_for_links},
    gossip_mode::{self, GossipDriver},
    metrics::{self, CoreReport},
    replay::{self, FillAlarm},
    report,
    static_mode::{self, Running},
};

/// Most links a gossip-mode relay keeps (a layer's size bounds them).
pub const MAX_LINKS: usize = 256;

/// How the relay knows the network: a static topology (reloaded on SIGHUP) or gossip.
#[expect(missing_debug_implementations, reason = "holds the gossip driver")]
pub enum Mode {
    /// From the files, reloaded on SIGHUP.
    Static {
        /// What a reload may change.
        running: Box<Running>,
        /// The admin endpoint, if configured.
        admin: Option<Admin>,
        /// The role, for `/status`.
        role: String,
    },
    /// By gossip.
    Gossip(Box<GossipDriver>),
}

/// The main thread's part: when to stop, what to reload, what to announce.
#[expect(missing_debug_implementations, reason = "holds the gossip driver")]
pub struct Control<'a> {
    /// Stop after this long (`--seconds`).
    pub limit: Option<Duration>,
    /// Set by SIGHUP.
    pub reload: &'a AtomicBool,
    /// Static or gossip.
    pub mode: Mode,
    /// The start-up line.
    pub banner: String,
    /// This relay's node id.
    pub node: pb_sphinx::NodeId,
    /// The lines the cores print ([`Shared::lines`]).
    pub lines: std::sync::mpsc::Receiver<Vec<u8>>,
}

/// Writes out what the cores asked to print.
fn print_lines(lines: &std::sync::mpsc::Receiver<Vec<u8>>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    while let Ok(text) = lines.try_recv() {
        let _ = out.write_all(&text);
    }
    let _ = out.flush();
}

/// The dataplane's and the roles' metrics for `/metrics`.
fn dataplane_metrics(shared: &Shared) -> Vec<(String, u64)> {
    let reports = shared.snapshot();
    let loops = |link| shared.cover.loop_stats(link);
    let mut m = metrics::prometheus(&reports.iter().collect::<Vec<_>>(), &loops);
    m.extend(
        shared
            .loop_watch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .metrics(),
    );
    let epoch = current_epoch(shared);
    m.extend(metrics::replay_filter(
        shared.replay.fill(epoch),
        shared.replay.slots(),
    ));
    m.extend(shared.roles.metrics());
    if let Some(program) = shared
        .xdp
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .as_ref()
        && let Ok(counters) = program.counters()
    {
        m.extend(metrics::xdp(&counters));
    }
    m.extend(metrics::source_filter(&shared.sources.get().1));
    m
}

/// Judges the links' loop loss (see [`crate::loop_watch`]) and logs the alarms.
fn watch_loops(shared: &Shared) {
    let links = shared.links.get().1.len();
    let loops = |link| shared.cover.loop_stats(link);
    let lines = shared
        .loop_watch
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .check(links, &loops);
    for line in lines {
        warn!("{line}");
    }
}

/// Each link's neighbour now and its loop counters since the relay started.
fn loops_by_neighbour(shared: &Shared) -> Vec<(pb_sphinx::NodeId, pb_mix::LoopStats)> {
    shared
        .links
        .get()
        .1
        .iter()
        .enumerate()
        .map(|(link, n)| (n.node, shared.cover.loop_stats(link)))
        .collect()
}

/// The epoch the cores process in now.
fn current_epoch(shared: &Shared) -> Epoch {
    Epoch(shared.roles.epoch.load(Ordering::Relaxed))
}

/// Once every core has dropped `retired`'s key (the overlap after `current` began is over):
/// `retired`'s replay table is cleared and readied for the epoch after `current`. If a core
/// does not take the keys in time, the table is cleared when that epoch begins instead.
fn end_overlap(shared: &Shared, retired: Epoch, current: Epoch) {
    if shared.keys.wait_adopted(Duration::from_secs(5)) {
        replay::end_overlap(&shared.replay, retired, current);
    } else {
        warn!(
            "a pipeline core did not drop epoch {}'s key within 5 s; its replay table is cleared when epoch {} begins",
            retired.0,
            current.0.wrapping_add(1)
        );
    }
}

/// Runs one pipeline per backend in `ios` on threads of their own until stopped, then
/// prints the counters.
pub fn serve<I: PacketIo + Send>(
    ios: Vec<I>,
    shared: &Shared,
    control: Control<'_>,
) -> anyhow::Result<()> {
    let cores = ios.len();
    // The XDP program (if any) takes the sources the relay starts with.
    install_sources(shared, shared.sources.get().1);
    let (ready, started) = std::sync::mpsc::channel::<()>();
    let reports: Vec<anyhow::Result<CoreReport>> = thread::scope(|scope| {
        let handles: Vec<_> = ios
            .into_iter()
            .enumerate()
            .map(|(core, io)| {
                let ready = ready.clone();
                thread::Builder::new()
                    .name(format!("pb-core-{core}"))
                    .spawn_scoped(scope, move || {
                        let result = run_core(core, cores, io, shared, ready);
                        // One core failing stops the relay.
                        shared.stop.store(true, Ordering::Relaxed);
                        result
                    })
            })
            .collect();
        drop(ready);
        // Announce the relay only once every core is set up (a core that fails to set up
        // drops its sender without sending).
        if (0..cores).all(|_| started.recv().is_ok()) {
            // One line: the banner, then how slots are timed (tests and operators read the
            // banner as the relay's first line, and what follows as events).
            let timing = shared
                .timing
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take()
                .unwrap_or_default();
            info!(
                "{}; slot timing: {timing}; in the kernel: {}",
                control.banner,
                pb_pacing::kernel_timing().describe()
            );
        }
        let mut mode = control.mode;
        let mut watched = Instant::now();
        let mut alarm = FillAlarm::default();
        while !shared.stop.load(Ordering::Relaxed)
            && control.limit.is_none_or(|l| shared.start.elapsed() < l)
        {
            print_lines(&control.lines);
            if watched.elapsed() >= Duration::from_secs(1) {
                watched = Instant::now();
                watch_loops(shared);
                if let Mode::Gossip(driver) = &mut mode {
                    driver.observe_loops(&loops_by_neighbour(shared));
                }
            }
            match &mut mode {
                Mode::Static {
                    running,
                    admin,
                    role,
                } => {
                    thread::sleep(Duration::from_millis(20));
                    if let Some(admin) = admin {
                        admin.serve(&mut |path| match path {
                            "/health" => Some("ok\n".to_owned()),
                            "/status" => Some(running.status(control.node, role)),
                            "/metrics" => {
                                let mut m =
                                    vec![("pb_epoch".to_owned(), u64::from(running.epoch.0))];
                                m.extend(dataplane_metrics(shared));
                                Some(metrics::render(&m))
                            }
                            _ => None,
                        });
                    }
                    if control.reload.swap(false, Ordering::Relaxed) {
                        match static_mode::rotate(running, shared) {
                            Ok(line) => info!("{line}"),
                            Err(e) => {
                                let chain: Vec<String> =
                                    e.chain().map(ToString::to_string).collect();
                                warn!("reload refused: {}", chain.join(": "));
                            }
                        }
                    }
                    if let Some(retired) = running.overlap_ended(Instant::now()) {
                        shared.keys.keys.set(running.node_keys());
                        end_overlap(shared, retired, running.epoch);
                    }
                }
                Mode::Gossip(driver) => {
                    if control.reload.swap(false, Ordering::Relaxed) {
                        warn!("SIGHUP ignored: gossip mode rotates keys by itself");
                    }
                    let metrics = || dataplane_metrics(shared);
                    let update = driver.turn(Duration::from_millis(20), &metrics);
                    apply(update, shared);
                }
            }
            let epoch = current_epoch(shared);
            if let Some(line) = alarm.observe(epoch, shared.replay.fill(epoch)) {
                pb_log::warn_limited!("{line}");
            }
        }
        if let Mode::Gossip(driver) = &mut mode {
            driver.leave();
        }
        shared.stop.store(true, Ordering::Relaxed);
        handles
            .into_iter()
            .map(|h| match h {
                Ok(h) => h
                    .join()
                    .unwrap_or_else(|_| Err(anyhow!("a pipeline core panicked"))),
                Err(e) => Err(anyhow!("starting a pipeline core: {e}")),
            })
            .collect()
    });
    print_lines(&control.lines);
    let reports: Vec<CoreReport> = reports.into_iter().collect::<anyhow::Result<_>>()?;
    let loops = |link| shared.cover.loop_stats(link);
    report::summary(&mut std::io::stdout().lock(), &reports, &loops)?;
    Ok(())
}

/// Hands what gossip changed to the cores: keys (after readying the replay filter for
/// their epoch; when an overlap ended, retiring the previous epoch's table once the cores
/// have dropped its key), links and the loop plans along them, and the sources the packet
/// port serves (the links' addresses, before the cores start sending on new links).
fn apply(update: gossip_mode::Update, shared: &Shared) {
    for note in update.notes {
        info!("{note}");
    }
    if let Some((epoch, keys)) = update.keys {
        replay::begin(&shared.replay, epoch);
        shared.keys.keys.set(keys);
        shared.roles.epoch.store(epoch.0, Ordering::Relaxed);
        if let Some(retired) = update.retired {
            end_overlap(shared, retired, epoch);
        }
    }
    if let (Some(view), Some(directory)) = (update.directory, &shared.roles.directory) {
        directory.set(view);
    }
    if let Some((epoch, mut neighbours, mut routes)) = update.links {
        neighbours.truncate(MAX_LINKS);
        routes.truncate(MAX_LINKS);
        shared.cover.set_routes(epoch, routes, true);
        let current = shared.sources.get().1;
        let sources = sources_for_links(&current, &neighbours);
        if sources != current {
            install_sources(shared, sources);
        }
        shared.links.set(neighbours);
    }
    if !update.reports.is_empty() {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        for line in update.reports {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
    }
}
