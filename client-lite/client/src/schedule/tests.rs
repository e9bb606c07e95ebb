#![expect(clippy::expect_used, clippy::panic, reason = "tests")]

use super::*;

/// One-sample Kolmogorov-Smirnov statistic of `gaps` against an exponential distribution
/// of mean `mean`.
fn ks_exponential(gaps: &mut [f64], mean: f64) -> f64 {
    gaps.sort_by(f64::total_cmp);
    let n = gaps.len() as f64;
    gaps.iter()
        .enumerate()
        .map(|(i, &x)| {
            let f = 1.0 - (-x / mean).exp();
            (f - i as f64 / n).max((i + 1) as f64 / n - f)
        })
        .fold(0.0, f64::max)
}

/// The KS statistic's critical value at a 1% significance level (asymptotic).
fn ks_critical_1pct(n: usize) -> f64 {
    1.628 / (n as f64).sqrt()
}

/// Every event of `profile`'s schedule from seed `seed` in `seconds`: (time, kind).
fn events(profile: &Profile, seed: u8, seconds: u64) -> Vec<(Duration, Due)> {
    let mut schedule = Schedule::new(&[seed; 32], profile, Duration::ZERO);
    let end = Duration::from_secs(seconds);
    let mut out = Vec::new();
    // Each event taken at its own time, as a client that is never late does.
    while schedule.next().0 <= end {
        out.extend(schedule.take(schedule.next().0));
    }
    out
}

fn gaps(events: &[(Duration, Due)], kind: Due) -> Vec<f64> {
    let times: Vec<f64> = events
        .iter()
        .filter(|(_, d)| *d == kind)
        .map(|(t, _)| t.as_secs_f64())
        .collect();
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

/// Within four standard deviations of a Poisson count of mean `expected`.
fn poisson_close(count: usize, expected: f64) -> bool {
    (count as f64 - expected).abs() < 4.0 * expected.sqrt()
}

#[test]
fn sends_and_loops_are_poisson_at_the_profiles_rates() {
    let seconds = 600;
    for profile in [Profile::DEFAULT, Profile::LOW_POWER] {
        let e = events(&profile, 1, seconds);
        for (kind, mean) in [(Due::Send, profile.mean_gap), (Due::Loop, profile.loop_gap)] {
            let mut g = gaps(&e, kind);
            let expected = seconds as f64 / mean.as_secs_f64();
            assert!(
                poisson_close(g.len() + 1, expected),
                "{kind:?}: {} events, {expected} expected",
                g.len() + 1
            );
            // Exponential gaps: the KS statistic under its 1% critical value.
            let n = g.len();
            let d = ks_exponential(&mut g, mean.as_secs_f64());
            assert!(d < ks_critical_1pct(n), "{kind:?}: KS D {d} over {n} gaps");
        }
    }
}

#[test]
fn the_exponential_check_refuses_gaps_that_are_not() {
    // Evenly spaced sends at the same mean (a constant-rate client) fail the same check.
    let mut even = vec![0.02; 30_000];
    assert!(ks_exponential(&mut even, 0.02) > ks_critical_1pct(30_000));
    // So do Poisson gaps at the wrong rate (10% slower).
    let e = events(&Profile::DEFAULT, 2, 600);
    let mut g = gaps(&e, Due::Send);
    let n = g.len();
    assert!(ks_exponential(&mut g, 0.022) > ks_critical_1pct(n));
}

#[test]
fn a_suspended_machine_does_not_burst_on_waking() {
    let mut schedule = Schedule::new(&[3; 32], &Profile::DEFAULT, Duration::ZERO);
    // An hour asleep: what is due at once is at most the last second's worth, not 180,000.
    let woke = Duration::from_secs(3600);
    let mut burst = 0;
    while schedule.take(woke).is_some() {
        burst += 1;
    }
    assert!(burst < 200, "{burst} packets at once");
    assert!(schedule.next().0 >= woke);
}

#[test]
fn the_low_power_profile_costs_what_docs_user_md_says() {
    // A day of the low-power schedule: its rates, and its bytes against the formula.
    let day = 86_400;
    let profile = Profile::LOW_POWER;
    let e = events(&profile, 4, day);
    let sends = e.iter().filter(|(_, d)| *d == Due::Send).count();
    let loops = e.len() - sends;
    assert!(poisson_close(sends, 432_000.0), "{sends} sends a day");
    assert!(poisson_close(loops, 8_640.0), "{loops} loops a day");
    // What the Poisson processes and the directory refreshes (the testnet's two pages
    // every FETCH_GAP, a 12-byte request each) put on the link fits its constant uplink
    // with room to spare (a packet is its 1452 bytes and a 3-byte message header).
    let pages = 2u64;
    let queued = (sends as u64 + loops as u64) * 1455
        + pages * day / crate::session::FETCH_GAP.as_secs() * 12;
    let room = u64::from(profile.uplink_rate) * day * pb_link::framing::STREAM_LEN as u64;
    assert!(
        (queued as f64) < 0.8 * room as f64,
        "{queued} bytes a day on an uplink of {room}"
    );
    let formula = profile.bytes_per_day();
    assert_eq!(
        formula,
        f64::from(profile.uplink_rate + profile.downlink_rate) * 1452.0 * 86_400.0
    );
    // docs/user.md states each profile's cost in the same figures.
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/user.md"))
        .expect("docs/user.md");
    for (name, profile) in [
        ("default", Profile::DEFAULT),
        ("low-power", Profile::LOW_POWER),
    ] {
        let gb = format!("{:.2} GB", profile.bytes_per_day() / 1e9);
        let row = docs
            .lines()
            .find(|l| l.starts_with(&format!("| `{name}`")))
            .unwrap_or_else(|| panic!("docs/user.md has no `{name}` row in its profile table"));
        assert!(
            row.contains(&gb),
            "docs/user.md's `{name}` row lacks {gb}: {row}"
        );
    }
}
