//! What the relay prints on stdout for operators and tests (counters only: never keys,
//! payloads or routes): every `--stats-interval` seconds one
//! `window <k> link <i> sent <n> missed <n>` line per owned link, and at
//! exit `stat <name> <value>` for every counter of [`crate::metrics`] (summed over cores),
//! then `core <c> …` and `link <i> …` lines.

use std::io::Write;

use pb_mix::{LinkStats, LoopStats};

use crate::metrics::{self, CoreReport, LINK_COUNTERS};

/// One core's `window` lines: the slots of each link it owns since the last window.
#[derive(Debug)]
pub struct Windows {
    window: u64,
    last: Vec<LinkStats>,
}

impl Windows {
    /// Windows starting from the links' counters `now`.
    pub fn new(now: Vec<LinkStats>) -> Self {
        Self {
            window: 0,
            last: now,
        }
    }

    /// The links changed: count from their counters `now`.
    pub fn reset(&mut self, now: Vec<LinkStats>) {
        self.last = now;
    }

    /// Whether the next window is over, `elapsed` after the start with windows of
    /// `interval` (zero: never).
    pub fn due(&self, elapsed: std::time::Duration, interval: std::time::Duration) -> bool {
        !interval.is_zero() && elapsed >= interval * (self.window as u32 + 1)
    }

    /// Prints the window's lines for the links marked in `owned` and starts the next.
    pub fn print(
        &mut self,
        out: &mut dyn Write,
        current: &[LinkStats],
        owned: &[bool],
    ) -> std::io::Result<()> {
        for (i, (c, l)) in current.iter().zip(&self.last).enumerate() {
            if !owned.get(i).copied().unwrap_or(false) {
                continue;
            }
            // Sent, never real and cover apart: that split is what cover hides.
            let sent = (c.real + c.cover).saturating_sub(l.real + l.cover);
            writeln!(
                out,
                "window {} link {i} sent {sent} missed {}",
                self.window,
                c.missed.saturating_sub(l.missed)
            )?;
        }
        self.last = current.to_vec();
        self.window += 1;
        Ok(())
    }
}

/// The exit summary: every total, each core's traffic, each link's slots and loops.
pub fn summary(
    out: &mut dyn Write,
    reports: &[CoreReport],
    loops: &dyn Fn(usize) -> LoopStats,
) -> std::io::Result<()> {
    for total in metrics::totals(reports) {
        writeln!(out, "stat {} {}", total.stat, total.value)?;
    }
    for (core, r) in reports.iter().enumerate() {
        let s = &r.stats;
        writeln!(
            out,
            "core {core} received {} forwarded {} handed_off {} taken_over {}",
            s.received, s.forwarded, s.handed_off, s.taken_over
        )?;
    }
    for (i, l, o) in metrics::owned_links(reports, loops) {
        write!(out, "link {i}")?;
        for c in LINK_COUNTERS {
            write!(out, " {} {}", c.stat, (c.read)(l, &o))?;
        }
        writeln!(out)?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn windows_print_the_difference_for_owned_links_only() {
        let mut w = Windows::new(vec![LinkStats::default(); 2]);
        let interval = std::time::Duration::from_secs(1);
        assert!(!w.due(std::time::Duration::from_millis(999), interval));
        assert!(w.due(interval, interval));
        let mut now = vec![LinkStats::default(); 2];
        now[0].real = 3;
        now[0].cover = 97;
        now[1].cover = 100;
        let mut out = Vec::new();
        w.print(&mut out, &now, &[true, false]).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "window 0 link 0 sent 100 missed 0\n"
        );
        assert!(!w.due(interval, interval));
    }
}
