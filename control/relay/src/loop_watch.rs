//! Watches the relay's loops for loss: per link, each time enough of its loops have settled
//! (returned or lost, [`pb_mix::LOOP_LOSS_MIN_SETTLED`]) since the last judgement, the share lost is
//! judged against [`LOOP_LOSS_ALERT`]. A link above it is reported: a warning line for the
//! operator (link index and counts only) and `pb_link_loop_loss_alarm{link="i"} 1` on
//! `/metrics` until a later judgement clears it. Loops are shaped like real traffic, so a
//! relay on their routes that drops real packets drops them too and shows up here.

use pb_mix::{LOOP_LOSS_ALERT, LoopStats};

/// The judgements so far.
#[derive(Debug, Default)]
pub struct LoopWatch {
    /// Per link: its counters at the last judgement, and whether that one was an alarm.
    links: Vec<(LoopStats, bool)>,
    /// Judgements that were alarms.
    alarms: u64,
}

impl LoopWatch {
    /// Judges links `0..links` whose loops have settled enough since their last judgement,
    /// reading each link's counters from `current`; returns a warning line per alarm.
    pub fn check(&mut self, links: usize, current: &dyn Fn(usize) -> LoopStats) -> Vec<String> {
        if self.links.len() < links {
            self.links.resize(links, (LoopStats::default(), false));
        }
        let mut lines = Vec::new();
        for (i, (since, alarm)) in self.links.iter_mut().enumerate().take(links) {
            let now = current(i);
            let d = now.since(since);
            let settled = d.returned + d.lost;
            // Fewer than LOOP_LOSS_MIN_SETTLED: not judged yet.
            let Some(loss) = d.loss() else {
                continue;
            };
            *alarm = d.alarming();
            *since = now;
            if *alarm {
                self.alarms += 1;
                lines.push(format!(
                    "link {i}: {} of its last {settled} loops lost ({:.1}%, above {:.0}%): a \
                     relay on its loops' routes drops packets",
                    d.lost,
                    loss * 100.0,
                    LOOP_LOSS_ALERT * 100.0
                ));
            }
        }
        lines
    }

    /// `pb_loop_loss_alarms_total` and each link's `pb_link_loop_loss_alarm` (0 or 1).
    pub fn metrics(&self) -> Vec<(String, u64)> {
        let mut m = vec![("pb_loop_loss_alarms_total".to_owned(), self.alarms)];
        for (i, (_, alarm)) in self.links.iter().enumerate() {
            m.push((
                format!("pb_link_loop_loss_alarm{{link=\"{i}\"}}"),
                u64::from(*alarm),
            ));
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(returned: u64, lost: u64) -> LoopStats {
        LoopStats {
            sent: returned + lost,
            returned,
            lost,
            ..LoopStats::default()
        }
    }

    #[test]
    fn a_lossy_link_is_reported_once_per_judgement_and_cleared_after() {
        let mut w = LoopWatch::default();
        // Link 0 loses 10%, link 1 none; 50 settled: too few to judge.
        let few = [stats(45, 5), stats(50, 0)];
        assert!(w.check(2, &|i| few[i]).is_empty());
        let many = [stats(180, 20), stats(200, 0)];
        let lines = w.check(2, &|i| many[i]);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].starts_with("link 0: 20 of its last 200 loops lost (10.0%"));
        let m = w.metrics();
        assert!(m.contains(&("pb_link_loop_loss_alarm{link=\"0\"}".to_owned(), 1)));
        assert!(m.contains(&("pb_link_loop_loss_alarm{link=\"1\"}".to_owned(), 0)));
        assert!(m.contains(&("pb_loop_loss_alarms_total".to_owned(), 1)));
        // Not judged again until another 100 have settled; then healthy: cleared.
        assert!(w.check(2, &|i| many[i]).is_empty());
        let healed = [stats(300, 20), stats(300, 0)];
        assert!(w.check(2, &|i| healed[i]).is_empty());
        assert!(
            w.metrics()
                .contains(&("pb_link_loop_loss_alarm{link=\"0\"}".to_owned(), 0))
        );
    }
}
