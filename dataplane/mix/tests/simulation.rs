//! Deterministic simulations (virtual clock, seeded generator) of the delay queue feeding a
//! constant-rate link: the link sends exactly its rate in every one-second window whatever
//! the offered load, and packets are held for the delays their headers ask for.
#![expect(clippy::expect_used, reason = "tests")]

use pb_mix::{DelayQueue, Link, LinkStats, Sent, Time};
use pb_sphinx::DelayMs;

/// splitmix64: a small seeded generator, so the simulations are reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Exponential with the given mean.
    fn exp(&mut self, mean: f64) -> f64 {
        -mean * self.unit().ln()
    }
}

/// A packet in the simulation: when it arrived and the delay its header asked for.
#[derive(Clone, Copy, Debug)]
struct Packet {
    arrived: Time,
    delay_ms: u32,
}

struct Outcome {
    /// Packets sent per one-second window (by slot time).
    per_window: Vec<u64>,
    stats: LinkStats,
    /// (requested delay in ns, time actually held in ns) of every packet the queue released.
    holds: Vec<(u64, u64)>,
}

/// Runs a relay's delay queue and one link for `seconds` of virtual time: packets arrive as a
/// Poisson process at `load` times the link rate, each asking for an exponential delay of
/// mean `mean_delay_ms`; the relay polls at random intervals of up to `max_step_ns`.
fn simulate(
    seed: u64,
    rate: u32,
    load: f64,
    mean_delay_ms: f64,
    max_step_ns: u64,
    seconds: u64,
) -> Outcome {
    let mut rng = Rng(seed);
    let start = Time(5 * Time::SECOND);
    let mut queue: DelayQueue<Packet> =
        DelayQueue::new(1 << 16, DelayMs(60_000), start).expect("queue");
    let mut link: Link<Option<Packet>> = Link::new(rate, 256, 64, start).expect("link");
    let end = start.plus(seconds * Time::SECOND);
    let mut per_window = vec![0u64; seconds as usize];
    let mut holds = Vec::new();
    let mut now = start;
    let mut next_arrival = if load > 0.0 {
        start.plus((rng.exp(1.0 / (load * f64::from(rate))) * 1e9) as u64)
    } else {
        Time(u64::MAX)
    };
    while now < end {
        // Arrivals up to now enter the delay queue.
        while next_arrival <= now {
            let delay_ms = rng.exp(mean_delay_ms).round().min(60_000.0) as u32;
            let packet = Packet {
                arrived: next_arrival,
                delay_ms,
            };
            queue
                .insert(next_arrival, DelayMs(delay_ms), packet)
                .map_err(|(e, _)| e)
                .expect("the queue is large enough for these loads");
            next_arrival =
                next_arrival.plus((rng.exp(1.0 / (load * f64::from(rate))) * 1e9) as u64);
        }
        // Due packets move to the link, which fills its due slots.
        queue.poll_due(now, |p| {
            holds.push((u64::from(p.delay_ms) * Time::MS, now.0 - p.arrived.0));
            let _ = link.push(Some(p));
        });
        link.poll_transmit(now, &mut || Some(None), |packet, kind, at| {
            assert_eq!(packet.is_some(), kind == Sent::Real);
            let window = ((at.0 - start.0) / Time::SECOND) as usize;
            if let Some(count) = per_window.get_mut(window) {
                *count += 1;
            }
        });
        now = now.plus(1 + rng.next() % max_step_ns);
    }
    Outcome {
        per_window,
        stats: link.stats,
        holds,
    }
}

#[test]
fn the_link_sends_exactly_its_rate_at_every_load() {
    let rate = 500;
    for (load, seed) in [(0.0, 1), (0.5, 2), (1.0, 3), (2.0, 4)] {
        let out = simulate(seed, rate, load, 50.0, 3 * Time::MS, 20);
        assert!(
            out.per_window.iter().all(|&n| n == u64::from(rate)),
            "load {load}: per-second counts {:?}",
            out.per_window
        );
        assert_eq!(out.stats.missed, 0, "load {load}");
        let slots = out.stats.real + out.stats.cover;
        match load {
            0.0 => assert_eq!(out.stats.real, 0),
            0.5 => {
                // About half the slots carry real packets.
                let share = out.stats.real as f64 / slots as f64;
                assert!((0.4..0.6).contains(&share), "real share {share}");
                assert_eq!(out.stats.dropped_full, 0);
            }
            1.0 => assert!(out.stats.real as f64 > 0.8 * slots as f64),
            _ => {
                // Twice the rate offered: every slot real once the queue fills, the rest
                // dropped and counted, the queue never beyond its bound.
                assert!(out.stats.dropped_full > 0);
                assert!(out.stats.real as f64 > 0.99 * slots as f64);
            }
        }
    }
}

#[test]
fn packets_are_held_exactly_their_delay_to_the_tick() {
    let step = 2 * Time::MS;
    let out = simulate(11, 2000, 0.5, 30.0, step, 5);
    assert!(out.holds.len() > 3000);
    for &(asked, held) in &out.holds {
        // At least the delay; at most one tick of rounding plus one polling step more.
        assert!(held >= asked, "held {held} < asked {asked}");
        assert!(
            held < asked + Time::MS + step,
            "held {held} for asked {asked}"
        );
    }
}

/// The delays packets are held follow the exponential distribution their senders drew them
/// from: a one-sample Kolmogorov-Smirnov test against Exp(mean 200 ms), rejecting at the
/// 0.1% level (critical value 1.95 / sqrt(n)). Polling every 0.1 ms at most, the relay adds
/// under 1.1 ms to a 200 ms mean, which moves the statistic by under 0.006.
#[test]
fn held_delays_follow_the_requested_distribution() {
    let mean_ms = 200.0;
    let out = simulate(21, 1000, 1.0, mean_ms, Time::MS / 10, 12);
    let mut held: Vec<f64> = out.holds.iter().map(|&(_, h)| h as f64 / 1e6).collect();
    held.sort_by(f64::total_cmp);
    let n = held.len() as f64;
    assert!(n > 5_000.0, "only {n} packets");
    let d = held
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let cdf = 1.0 - (-x / mean_ms).exp();
            (cdf - i as f64 / n)
                .abs()
                .max(((i + 1) as f64 / n - cdf).abs())
        })
        .fold(0.0, f64::max);
    let critical = 1.95 / n.sqrt();
    assert!(
        d < critical,
        "KS statistic {d:.4} >= {critical:.4} (n = {n})"
    );
    // And the test has teeth: the same delays, halved, are rejected.
    let halved = held
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let cdf = 1.0 - (-(x / 2.0) / mean_ms).exp();
            (cdf - i as f64 / n)
                .abs()
                .max(((i + 1) as f64 / n - cdf).abs())
        })
        .fold(0.0, f64::max);
    assert!(
        halved > critical,
        "a wrong distribution passed: {halved:.4}"
    );
}
