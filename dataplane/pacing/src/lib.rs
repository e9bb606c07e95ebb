//! Slot timing that CPU load cannot move. Every constant-rate emitter of PhantomBand (a
//! relay core's links, a gateway's downlinks, pb-client's uplink) sends at absolute
//! deadlines, and the gaps between its sends are what a global observer measures. Under
//! an ordinary thread they follow the machine's load: a wake-up comes late when other
//! threads hold the CPU, and timer slack rounds it. This crate gives the emitters:
//!
//! - [`Pacer`]: a pacing thread's state. The thread is made real-time (`SCHED_FIFO`,
//!   [`Priority::Emit`]) so that no normal thread, whatever the load, runs before it when
//!   its deadline comes; it sleeps to just before the deadline and spins the rest
//!   ([`SPIN`]). The work such a thread does between deadlines must be sized to end before
//!   the next one (a relay core unwraps only what fits), and the system's real-time
//!   throttling (`kernel.sched_rt_runtime_us`, 95% by default) leaves the rest of the
//!   machine its share if it is ever saturated. Where real-time priority is not permitted
//!   (no root, no `CAP_SYS_NICE`, no `RLIMIT_RTPRIO`: phones, containers), the same
//!   deadline sleep and spin run at normal priority, and [`Pacer::describe`] says so for
//!   the emitter's log.
//! - [`kernel_timing`]: what the kernel and the interface offer to time sends themselves
//!   (`SO_TXTIME` with the `etf` or `fq` qdisc, AF_XDP launch time), detected at run time,
//!   for the relay's start-up line and docs/perf.md.
//!
//! What it does not do: decide when to send (the emitters' slot clocks do) or send.

#![deny(unsafe_code)]

mod sys;

use std::time::{Duration, Instant};

/// What is left of a wait after the sleep, at least: spun, so that the send starts at the
/// deadline however late the wake-up. A [`Pacer`] spins longer where its wake-ups come
/// later (an idle CPU, or a virtual CPU the hypervisor must first run again, wakes later
/// than a busy one: timing that would follow load the other way round), up to [`MAX_SPIN`].
pub const SPIN: Duration = Duration::from_micros(100);
/// The longest a [`Pacer`] spins before a deadline.
pub const MAX_SPIN: Duration = Duration::from_millis(1);
/// A [`Pacer`] spins at most this fraction (1/n) of its time: its spin before a deadline is
/// at most its mean interval between emissions divided by this. Spinning runs at real-time
/// priority, where the kernel lets all such threads together take at most 95% of a CPU
/// (`kernel.sched_rt_runtime_us`) and then stops every one of them for the rest of its
/// period (up to 50 ms: the stall the spin is there to prevent); the bound keeps one
/// emitter with many slots a second from spinning all the time. It binds only above 500
/// emissions a second: a tighter bound (a tenth) cost more than it saved, `pb-perf
/// anonymity` then saw relay cores stall for up to 175 ms in three runs of five (docs/perf.md).
pub const SPIN_SHARE: u32 = 2;
/// The mean interval between emissions a new [`Pacer`] assumes until it has measured its
/// own.
const FIRST_PERIOD: Duration = Duration::from_millis(10);

/// The real-time priorities of PhantomBand's threads (`SCHED_FIFO`, 1-99): low, so that
/// the kernel's own threads come first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    /// A pacing thread between its deadlines (receiving, unwrapping): above every normal
    /// thread, below any pacer's emission.
    Work = 10,
    /// Waiting for a deadline and sending: above any pacer's work, so that one relay
    /// core's batch never delays another's slot on the same CPU.
    Emit = 20,
}

/// A thread's pacing state; see the crate docs. Not `Send`: it describes the thread that
/// made it.
#[derive(Debug)]
pub struct Pacer {
    /// Whether this thread runs real-time.
    realtime: bool,
    /// Why not, if it was asked for and refused.
    refused: Option<String>,
    /// How late its wake-ups have come lately (ns; a decaying maximum): the spin covers it.
    late: core::cell::Cell<u64>,
    /// The mean interval between its emissions (ns; a moving average): it spins at most
    /// [`SPIN_SHARE`]'s fraction of it.
    period: core::cell::Cell<u64>,
    /// The last emission's deadline.
    last: core::cell::Cell<Option<Instant>>,
    _not_send: core::marker::PhantomData<*const ()>,
}

impl Pacer {
    /// The calling thread's pacer: the thread is made real-time ([`Priority::Work`]) if
    /// `realtime` and the system permits it, for good (the work it does between deadlines,
    /// which it must size to end before the next one; [`emit_at`](Self::emit_at) raises
    /// it for each emission).
    pub fn new(realtime: bool) -> Self {
        let refused = if realtime {
            sys::set_fifo(Priority::Work as i32)
                .err()
                .map(|e| e.to_string())
        } else {
            Some("turned off in the configuration".into())
        };
        Self {
            realtime: refused.is_none(),
            refused,
            late: core::cell::Cell::new(0),
            period: core::cell::Cell::new(nanos(FIRST_PERIOD)),
            last: core::cell::Cell::new(None),
            _not_send: core::marker::PhantomData,
        }
    }

    /// Whether the thread runs real-time.
    pub fn realtime(&self) -> bool {
        self.realtime
    }

    /// Why it does not, if it does not.
    pub fn refused(&self) -> Option<&str> {
        self.refused.as_deref()
    }

    /// One line for a log: how this thread's sends are timed.
    pub fn describe(&self) -> String {
        match &self.refused {
            None => format!(
                "real-time priority (SCHED_FIFO {} working, {} sending), deadline sleep then spin",
                Priority::Work as i32,
                Priority::Emit as i32
            ),
            Some(why) => format!(
                "deadline sleep then spin at normal priority (real-time refused: {why}); CPU load can delay sends"
            ),
        }
    }

    /// Waits until `deadline` precisely: raised to [`Priority::Emit`] (if real-time),
    /// asleep until [`spin`](Self::spin) before it, spinning the rest; returns at once if
    /// it has passed. The thread stays raised, for the send, until the returned guard is dropped.
    #[must_use = "the thread drops back to its working priority when the guard goes"]
    pub fn emit_at(&self, deadline: Instant) -> Emitting<'_> {
        if self.realtime {
            // A refusal now (it was allowed at the start) leaves the working priority:
            // still real-time, only not above other pacers' work.
            let _ = sys::set_fifo(Priority::Emit as i32);
        }
        if let Some(last) = self.last.get() {
            let gap = nanos(deadline.saturating_duration_since(last));
            let period = self.period.get();
            self.period.set(period - period / 16 + gap / 16);
        }
        self.last.set(Some(deadline));
        let late = self.late.get();
        let woke = sleep_then_spin(deadline, self.spin());
        // A decaying maximum: one late wake-up raises the spin at once, and it comes down
        // by 1/64 an emission when wake-ups are punctual again.
        self.late.set(woke.max(late - late / 64));
        Emitting { pacer: self }
    }

    /// How long it spins before a deadline now.
    pub fn spin(&self) -> Duration {
        spin_for(self.late.get(), self.period.get())
    }
}

/// The spin before a deadline for a pacer whose wake-ups came up to `late` ns late and
/// whose emissions come every `period` ns on average: [`SPIN`] beyond the lateness, at
/// most [`MAX_SPIN`] and at most the [`SPIN_SHARE`] of the period.
fn spin_for(late: u64, period: u64) -> Duration {
    (SPIN + Duration::from_nanos(late))
        .min(MAX_SPIN)
        .min(Duration::from_nanos(period / u64::from(SPIN_SHARE)))
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A pacing thread raised for an emission ([`Pacer::emit_at`]); dropping it ends that.
#[derive(Debug)]
pub struct Emitting<'a> {
    pacer: &'a Pacer,
}

impl Drop for Emitting<'_> {
    fn drop(&mut self) {
        if self.pacer.realtime {
            let _ = sys::set_fifo(Priority::Work as i32);
        }
    }
}

/// Sleeps until [`SPIN`] before `deadline`, then spins until it (at the caller's priority).
pub fn precise_sleep_until(deadline: Instant) {
    sleep_then_spin(deadline, SPIN);
}

/// Sleeps until `spin` before `deadline`, then spins until it; how late the wake-up came
/// after the sleep's end (ns; 0 without a sleep).
fn sleep_then_spin(deadline: Instant, spin: Duration) -> u64 {
    let now = Instant::now();
    if deadline <= now {
        return 0;
    }
    let sleep = (deadline - now).saturating_sub(spin);
    let mut late = 0;
    if !sleep.is_zero() {
        let until = now + sleep;
        std::thread::sleep(sleep);
        late = u64::try_from(Instant::now().saturating_duration_since(until).as_nanos())
            .unwrap_or(u64::MAX);
    }
    while Instant::now() < deadline {
        std::hint::spin_loop();
    }
    late
}

/// Locks the process's memory, present and future, so that a pacing thread never takes a
/// page fault: a fault waits for the address space's lock, which a normal thread may hold
/// while the load keeps it off the CPU (an inversion no priority cures). Call it once
/// everything large is allocated; it makes every page resident.
///
/// # Errors
/// The system refuses (no `CAP_IPC_LOCK` and a small `RLIMIT_MEMLOCK`).
pub fn lock_memory() -> std::io::Result<()> {
    sys::lock_all_memory()
}

/// What the kernel offers to time sends itself (see [`kernel_timing`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelTiming {
    /// The `etf` qdisc (earliest TxTime first, `SO_TXTIME` with a launch time per packet):
    /// its module is loaded or can be.
    pub etf: bool,
    /// The `fq` qdisc, which also honours `SO_TXTIME`.
    pub fq: bool,
}

impl KernelTiming {
    /// One line for logs and docs.
    pub fn describe(&self) -> String {
        let yes_no = |b: bool| if b { "available" } else { "not in this kernel" };
        format!(
            "etf qdisc {}, fq qdisc {}; AF_XDP launch time needs a NIC that has it (not veth)",
            yes_no(self.etf),
            yes_no(self.fq)
        )
    }
}

/// Whether this kernel has the qdiscs that honour `SO_TXTIME` (built in, loaded, or a
/// module on disk). A packet's launch time is then kept by the kernel or the NIC instead
/// of the sender's thread; without them the thread's own timing ([`Pacer`]) is all there
/// is.
pub fn kernel_timing() -> KernelTiming {
    KernelTiming {
        etf: qdisc_available("sch_etf"),
        fq: qdisc_available("sch_fq"),
    }
}

fn qdisc_available(module: &str) -> bool {
    if std::path::Path::new("/sys/module").join(module).exists() {
        return true;
    }
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let base = std::path::Path::new("/lib/modules").join(release.trim());
    let builtin = std::fs::read_to_string(base.join("modules.builtin")).unwrap_or_default();
    let listed = std::fs::read_to_string(base.join("modules.dep")).unwrap_or_default();
    let name = format!("/{module}.ko");
    builtin
        .lines()
        .chain(listed.lines())
        .any(|l| l.contains(&name))
}

/// How long until `deadline` from `now`, zero if it passed.
pub fn until(deadline: Instant, now: Instant) -> Duration {
    deadline.saturating_duration_since(now)
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn a_precise_wait_never_returns_early() {
        for micros in [0u64, 50, 300, 2_000] {
            let deadline = Instant::now() + Duration::from_micros(micros);
            precise_sleep_until(deadline);
            assert!(Instant::now() >= deadline);
        }
        // A passed deadline returns at once (no sleep of a negative length).
        precise_sleep_until(Instant::now() - Duration::from_millis(1));
    }

    #[test]
    fn the_pacer_says_whether_it_runs_realtime() {
        // On a thread of its own, which the test leaves real-time when it ends.
        std::thread::spawn(|| {
            let pacer = Pacer::new(true);
            let deadline = Instant::now() + Duration::from_micros(200);
            let emitting = pacer.emit_at(deadline);
            assert!(Instant::now() >= deadline);
            assert!(pacer.spin() <= MAX_SPIN);
            if pacer.realtime() {
                assert!(pacer.refused().is_none());
                assert_eq!(sys::priority(), (libc::SCHED_FIFO, Priority::Emit as i32));
                drop(emitting);
                assert_eq!(sys::priority(), (libc::SCHED_FIFO, Priority::Work as i32));
            } else {
                drop(emitting);
                println!("real-time priority refused here: {}", pacer.describe());
                assert_eq!(sys::priority().0, libc::SCHED_OTHER);
            }
        })
        .join()
        .unwrap();
        std::thread::spawn(|| {
            let off = Pacer::new(false);
            assert!(!off.realtime());
            assert!(off.describe().contains("turned off"));
            assert_eq!(sys::priority().0, libc::SCHED_OTHER);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn the_spin_covers_late_wake_ups_within_its_share_of_the_time() {
        let ms = |m: u64| m * 1_000_000;
        // Punctual wake-ups, slots far apart: the minimum spin.
        assert_eq!(spin_for(0, ms(10)), SPIN);
        // Late ones: the spin grows to cover them, up to its maximum.
        assert_eq!(spin_for(300_000, ms(10)), SPIN + Duration::from_micros(300));
        assert_eq!(spin_for(ms(5), ms(100)), MAX_SPIN);
        // Many slots a second: half the interval at most, however late the wake-ups
        // (1,000 slots a second spin at most 0.5 ms each; 5,000 at most 0.1 ms).
        assert_eq!(spin_for(ms(5), ms(1)), Duration::from_micros(500));
        assert_eq!(spin_for(ms(5), 200_000), Duration::from_micros(100));
        assert_eq!(spin_for(0, 100_000), Duration::from_micros(50));
        assert_eq!(spin_for(u64::MAX, 0), Duration::ZERO);
    }

    #[test]
    fn a_pacer_measures_its_own_rate() {
        std::thread::spawn(|| {
            let pacer = Pacer::new(false);
            assert_eq!(pacer.spin(), SPIN);
            // 200 emissions 0.2 ms apart: the spin comes down to half of that.
            let mut deadline = Instant::now();
            for _ in 0..200 {
                deadline += Duration::from_micros(200);
                drop(pacer.emit_at(deadline));
            }
            assert!(
                pacer.spin() <= Duration::from_micros(101),
                "spin {:?}",
                pacer.spin()
            );
        })
        .join()
        .unwrap();
    }

    #[test]
    fn kernel_timing_is_described() {
        let timing = kernel_timing();
        println!("{}", timing.describe());
        assert!(timing.describe().contains("etf qdisc"));
    }
}
