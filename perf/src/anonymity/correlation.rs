//! A MixMatch-style statistical flow matcher: an observer who sees traffic volumes at both ends
//! of the network (clients' links and flows leaving exits) scores every (flow, client) pair by
//! the best lagged Pearson correlation of their per-window byte counts, then reads how well the
//! scores separate true pairs from false ones off a ROC curve.
//!
//! Nothing here does I/O; time is given in seconds as data.

/// A count as a float.
#[expect(clippy::cast_precision_loss, reason = "counts stay far below 2^52")]
fn count_as_f64(n: usize) -> f64 {
    n as f64
}

/// Bytes per window: `windows` windows of `window` seconds from `start`.
///
/// `events` are `(seconds, bytes)`; events outside `[start, start + window·windows)` or with a
/// non-finite time are ignored. A non-positive or non-finite `window` gives all zeros.
#[must_use]
pub fn volume_series(events: &[(f64, u32)], start: f64, window: f64, windows: usize) -> Vec<f64> {
    let mut series = vec![0.0; windows];
    if !(window.is_finite() && window > 0.0) {
        return series;
    }
    for &(time, bytes) in events {
        if let Some(slot) = window_index(time, start, window).and_then(|i| series.get_mut(i)) {
            *slot += f64::from(bytes);
        }
    }
    series
}

/// The window that `time` falls in, if it is at or after `start`.
fn window_index(time: f64, start: f64, window: f64) -> Option<usize> {
    let offset = ((time - start) / window).floor();
    if !(offset.is_finite() && offset >= 0.0) {
        return None;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "offset is finite and non-negative; `as` saturates huge values past any series"
    )]
    Some(offset as usize)
}

/// Pearson's correlation coefficient of the first `min(a.len(), b.len())` points.
///
/// 0.0 when there are fewer than 3 points, when either series has zero variance, or when the
/// result would not be finite (non-finite inputs).
#[must_use]
pub fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    if n < 3 {
        return 0.0;
    }
    let (a, b) = (&a[..n], &b[..n]);
    let (mean_a, mean_b) = (mean(a), mean(b));
    let (mut covariance, mut variance_a, mut variance_b) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        let (dx, dy) = (x - mean_a, y - mean_b);
        covariance += dx * dy;
        variance_a += dx * dx;
        variance_b += dy * dy;
    }
    let r = covariance / (variance_a * variance_b).sqrt();
    if r.is_finite() {
        r.clamp(-1.0, 1.0)
    } else {
        0.0
    }
}

/// The arithmetic mean of a non-empty slice.
fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / count_as_f64(x.len())
}

/// The best Pearson correlation between `flow` and `client` over lags `-max_lag..=max_lag`.
///
/// At lag L the pairs are `(flow[t], client[t + L])` over the part where both exist, so a
/// positive L means the client's series lags the flow's. Lags leaving fewer than 3 overlapping
/// points are skipped; 0.0 when none is left. Series of different lengths are cut to the shorter.
#[must_use]
pub fn best_lagged_correlation(flow: &[f64], client: &[f64], max_lag: usize) -> f64 {
    let n = flow.len().min(client.len());
    let (flow, client) = (&flow[..n], &client[..n]);
    let reach = max_lag.min(n.saturating_sub(3));
    let later_client = (0..=reach).map(|lag| pearson(&flow[..n - lag], &client[lag..]));
    let later_flow = (1..=reach).map(|lag| pearson(&flow[lag..], &client[..n - lag]));
    later_client
        .chain(later_flow)
        .reduce(f64::max)
        .unwrap_or(0.0)
}

/// The ROC curve of `(score, is_true_pair)` items: `(false-positive rate, true-positive rate)`
/// points as the threshold sweeps from the highest score down.
///
/// Higher scores mean "more likely a match"; NaN scores rank lowest. Items with tied scores
/// enter together as one diagonal step, so if every score ties the curve is the diagonal. The
/// curve starts at (0, 0) and ends at (1, 1); without any true or any false item it is the
/// diagonal `[(0, 0), (1, 1)]`.
#[must_use]
pub fn roc(scored: &[(f64, bool)]) -> Vec<(f64, f64)> {
    let positives = scored.iter().filter(|(_, is_true)| *is_true).count();
    let negatives = scored.len() - positives;
    if positives == 0 || negatives == 0 {
        return vec![(0.0, 0.0), (1.0, 1.0)];
    }
    let mut ranked: Vec<(f64, bool)> = scored
        .iter()
        .map(|&(score, is_true)| {
            (
                if score.is_nan() {
                    f64::NEG_INFINITY
                } else {
                    score
                },
                is_true,
            )
        })
        .collect();
    ranked.sort_by(|x, y| y.0.total_cmp(&x.0));
    let (positives, negatives) = (count_as_f64(positives), count_as_f64(negatives));
    let mut curve = vec![(0.0, 0.0)];
    let (mut true_hits, mut false_hits) = (0_usize, 0_usize);
    for tie in ranked.chunk_by(|x, y| x.0.total_cmp(&y.0).is_eq()) {
        let hits = tie.iter().filter(|(_, is_true)| *is_true).count();
        true_hits += hits;
        false_hits += tie.len() - hits;
        curve.push((
            count_as_f64(false_hits) / negatives,
            count_as_f64(true_hits) / positives,
        ));
    }
    curve
}

/// The true-positive rate at false-positive rate `fpr`, interpolated linearly on a curve from
/// [`roc`] (points in nondecreasing FPR).
///
/// Where the curve steps vertically at exactly `fpr`, the top of the step counts. `fpr` is
/// clamped to `[0, 1]`; NaN or an empty curve gives 0.0.
#[must_use]
pub fn tpr_at_fpr(curve: &[(f64, f64)], fpr: f64) -> f64 {
    if fpr.is_nan() {
        return 0.0;
    }
    let fpr = fpr.clamp(0.0, 1.0);
    let mut best = 0.0_f64;
    for point in curve.iter().filter(|(x, _)| *x <= fpr) {
        best = best.max(point.1);
    }
    for pair in curve.windows(2) {
        let ((x0, y0), (x1, y1)) = (pair[0], pair[1]);
        if x0 < fpr && fpr < x1 {
            best = best.max(y0 + (y1 - y0) * (fpr - x0) / (x1 - x0));
        }
    }
    best
}

/// The area under a curve from [`roc`] (trapezoid rule): 1 for perfect separation, 0.5 for
/// chance.
#[must_use]
pub fn auc(curve: &[(f64, f64)]) -> f64 {
    curve
        .windows(2)
        .map(|pair| (pair[1].0 - pair[0].0) * (pair[0].1 + pair[1].1) / 2.0)
        .sum()
}

/// The best lagged covariance between `flow` and the volume `client` moved over `span`
/// windows, per unit of the flow's own spread: the maximum over lags `0..=max_lag` of
/// `Σ_t f̂[t] · (Σ_{j<span} client[t + L + j] − span · mean(client))`, where `f̂` is the flow
/// centred and scaled to unit length. In bytes: how much more than its usual volume the
/// client moved right after the flow's bytes did.
///
/// Unlike a correlation it is not normalised by the client's spread, so a sparse series
/// (an idle client's few packets) cannot score high by one chance coincidence: the client
/// whose volume follows the flow's is the one that moved the bytes. 0.0 for a flat flow or
/// empty series.
#[must_use]
pub fn lagged_covariance(flow: &[f64], client: &[f64], max_lag: usize, span: usize) -> f64 {
    let n = flow.len().min(client.len());
    if n == 0 {
        return 0.0;
    }
    let (flow, client) = (&flow[..n], &client[..n]);
    #[expect(clippy::cast_precision_loss, reason = "series lengths are small")]
    let count = n as f64;
    let mean_flow = flow.iter().sum::<f64>() / count;
    let centred: Vec<f64> = flow.iter().map(|v| v - mean_flow).collect();
    let norm = centred.iter().map(|v| v * v).sum::<f64>().sqrt();
    if !(norm.is_finite() && norm > 0.0) {
        return 0.0;
    }
    let span = span.max(1);
    let mean_client = client.iter().sum::<f64>() / count;
    #[expect(clippy::cast_precision_loss, reason = "spans are small")]
    let expected = span as f64 * mean_client;
    // excess[t]: the client's volume over windows t..t+span beyond its mean.
    // Near the end, where fewer than `span` windows are left, nothing is counted.
    let excess: Vec<f64> = (0..n)
        .map(|t| match client.get(t..t + span) {
            Some(windows) => windows.iter().sum::<f64>() - expected,
            None => 0.0,
        })
        .collect();
    (0..=max_lag.min(n - 1))
        .map(|lag| {
            (0..n - lag)
                .map(|t| centred[t] / norm * excess[t + lag])
                .sum::<f64>()
        })
        .fold(f64::NEG_INFINITY, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::Random as SplitMix;

    /// The tests' draws, on the harness's generator.
    trait Draws {
        fn jitter(&mut self) -> f64;
        fn on_off(&mut self, windows: usize) -> Vec<f64>;
        fn flat(&mut self, windows: usize, spread: f64) -> Vec<f64>;
    }

    impl Draws for SplitMix {
        /// Uniform in [-1, 1).
        fn jitter(&mut self) -> f64 {
            2.0 * self.uniform() - 1.0
        }

        /// An on/off source: bursts of about 1000 bytes per window that switch with chance 0.2.
        fn on_off(&mut self, windows: usize) -> Vec<f64> {
            let mut on = self.uniform() < 0.5;
            (0..windows)
                .map(|_| {
                    if self.uniform() < 0.2 {
                        on = !on;
                    }
                    if on {
                        1000.0 + 100.0 * self.jitter()
                    } else {
                        0.0
                    }
                })
                .collect()
        }

        /// A constant-rate source: 1000 bytes per window ± `spread`.
        fn flat(&mut self, windows: usize, spread: f64) -> Vec<f64> {
            (0..windows)
                .map(|_| 1000.0 + spread * self.jitter())
                .collect()
        }
    }

    fn close(actual: f64, expected: f64, tolerance: f64) -> bool {
        (actual - expected).abs() <= tolerance
    }

    const WINDOWS: usize = 200;
    const FLOW_LAG: usize = 2;

    /// The flow an observer sees at the exit: the client's series delayed by `FLOW_LAG`
    /// windows plus independent noise of amplitude `noise`.
    fn observed_flow(rng: &mut SplitMix, client: &[f64], noise: f64) -> Vec<f64> {
        (0..client.len())
            .map(|t| {
                let carried = t.checked_sub(FLOW_LAG).map_or(0.0, |s| client[s]);
                carried + noise * rng.jitter()
            })
            .collect()
    }

    /// Scores every (flow, client) pair; flow i belongs to client i. Returns the scored pairs
    /// and how many flows rank their own client first.
    fn match_all(flows: &[Vec<f64>], clients: &[Vec<f64>]) -> (Vec<(f64, bool)>, usize) {
        let mut scored = Vec::new();
        let mut ranked_first = 0;
        for (i, flow) in flows.iter().enumerate() {
            let row: Vec<f64> = clients
                .iter()
                .map(|client| best_lagged_correlation(flow, client, 2 * FLOW_LAG))
                .collect();
            ranked_first += usize::from(row.iter().all(|other| *other <= row[i]));
            scored.extend(row.iter().enumerate().map(|(j, s)| (*s, i == j)));
        }
        (scored, ranked_first)
    }

    #[test]
    fn volume_series_bins_bytes() {
        let events = [
            (9.9, 7),
            (10.0, 1),
            (10.4, 2),
            (10.5, 3),
            (11.49, 4),
            (11.5, 5),
        ];
        assert_eq!(volume_series(&events, 10.0, 0.5, 3), vec![3.0, 3.0, 4.0]);
        assert_eq!(volume_series(&[(f64::NAN, 1)], 0.0, 1.0, 2), vec![0.0, 0.0]);
        assert_eq!(volume_series(&events, 10.0, 0.0, 2), vec![0.0, 0.0]);
    }

    #[test]
    fn pearson_by_hand() {
        // dx = -2..2, dy = -2, 0, 1, 0, 1: Sxy = 6, Sxx = 10, Syy = 6, r = 6 / sqrt(60).
        let r = pearson(&[1.0, 2.0, 3.0, 4.0, 5.0], &[2.0, 4.0, 5.0, 4.0, 5.0]);
        assert!(close(r, 6.0 / 60.0_f64.sqrt(), 1e-12));
        assert!(close(
            pearson(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]),
            -1.0,
            1e-12
        ));
        assert!(close(pearson(&[1.0, 2.0, 3.0], &[5.0; 3]), 0.0, 0.0));
        assert!(close(pearson(&[1.0, 2.0], &[1.0, 2.0]), 0.0, 0.0));
        assert!(close(
            pearson(&[1.0, f64::INFINITY, 3.0], &[1.0, 2.0, 3.0]),
            0.0,
            0.0
        ));
    }

    #[test]
    fn best_lag_finds_a_shifted_copy() {
        let flow = [0.0, 5.0, 1.0, 7.0, 2.0, 2.0, 9.0, 0.0, 4.0, 3.0];
        // The client's series lags the flow's by 2: client[t + 2] = flow[t].
        let mut client = vec![8.0, 1.0];
        client.extend_from_slice(&flow[..8]);
        assert!(pearson(&flow, &client) < 0.9);
        assert!(close(
            best_lagged_correlation(&flow, &client, 2),
            1.0,
            1e-12
        ));
        assert!(close(
            best_lagged_correlation(&client, &flow, 3),
            1.0,
            1e-12
        ));
        assert!(best_lagged_correlation(&flow, &client, 1) < 0.9);
        assert!(close(
            best_lagged_correlation(&flow, &client, usize::MAX),
            1.0,
            1e-12
        ));
        assert!(close(best_lagged_correlation(&[], &[], 3), 0.0, 0.0));
    }

    #[test]
    fn roc_by_hand() {
        // sklearn roc_curve / roc_auc_score on these four: AUC 0.75.
        let curve = roc(&[(0.9, true), (0.8, false), (0.7, true), (0.6, false)]);
        assert_eq!(
            curve,
            vec![(0.0, 0.0), (0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (1.0, 1.0)]
        );
        assert!(close(auc(&curve), 0.75, 1e-12));
        assert!(close(tpr_at_fpr(&curve, 0.5), 1.0, 0.0));
        assert!(close(tpr_at_fpr(&curve, 0.75), 1.0, 0.0));
        assert!(close(tpr_at_fpr(&curve, 0.25), 0.5, 0.0));
    }

    #[test]
    fn perfect_separation_gives_full_tpr_at_one_percent() {
        let scored: Vec<(f64, bool)> = (0..100_u32).map(|i| (f64::from(i), i >= 90)).collect();
        let curve = roc(&scored);
        assert_eq!(curve.first(), Some(&(0.0, 0.0)));
        assert_eq!(curve.last(), Some(&(1.0, 1.0)));
        assert!(close(tpr_at_fpr(&curve, 0.01), 1.0, 0.0));
        assert!(close(auc(&curve), 1.0, 1e-12));
    }

    #[test]
    fn all_tied_scores_give_the_diagonal() {
        let scored: Vec<(f64, bool)> = (0..50_u32).map(|i| (0.3, i % 5 == 0)).collect();
        let curve = roc(&scored);
        assert_eq!(curve, vec![(0.0, 0.0), (1.0, 1.0)]);
        for fpr in [0.0, 0.01, 0.3, 1.0] {
            assert!(close(tpr_at_fpr(&curve, fpr), fpr, 1e-12));
        }
        assert!(close(auc(&curve), 0.5, 1e-12));
        assert_eq!(roc(&[(1.0, true)]), vec![(0.0, 0.0), (1.0, 1.0)]);
        assert!(close(tpr_at_fpr(&[], 0.5), 0.0, 0.0));
    }

    #[test]
    fn matcher_links_on_off_clients_to_their_flows() {
        let mut rng = SplitMix(7);
        let clients: Vec<Vec<f64>> = (0..10).map(|_| rng.on_off(WINDOWS)).collect();
        let flows: Vec<Vec<f64>> = clients
            .iter()
            .map(|client| observed_flow(&mut rng, client, 300.0))
            .collect();
        let (scored, ranked_first) = match_all(&flows, &clients);
        assert!(ranked_first >= 9, "only {ranked_first} of 10 flows matched");
        let curve = roc(&scored);
        assert!(tpr_at_fpr(&curve, 0.01) >= 0.8, "{curve:?}");
        assert!(auc(&curve) > 0.95);
    }

    #[test]
    fn matcher_is_near_chance_on_constant_rate_clients() {
        let mut rng = SplitMix(8);
        let clients: Vec<Vec<f64>> = (0..30).map(|_| rng.flat(WINDOWS, 2.0)).collect();
        // The network's jitter (±100 bytes) drowns the client's own (±2 bytes).
        let flows: Vec<Vec<f64>> = clients
            .iter()
            .map(|client| observed_flow(&mut rng, client, 100.0))
            .collect();
        let (scored, ranked_first) = match_all(&flows, &clients);
        assert!(ranked_first <= 5, "{ranked_first} of 30 flows matched");
        let curve = roc(&scored);
        assert!(tpr_at_fpr(&curve, 0.01) < 0.15);
        assert!(close(auc(&curve), 0.5, 0.1), "AUC {}", auc(&curve));
    }

    #[test]
    fn the_covariance_matcher_finds_the_client_that_moved_the_bytes() {
        // A flow's bytes at window 10; the true client downloads them over windows 11-13,
        // an idle client has two chance packets at 11, a busy one moves a little always.
        let mut flow = vec![0.0; 40];
        flow[10] = 16_000.0;
        let mut truth = vec![0.0; 40];
        truth[11..14].copy_from_slice(&[6_000.0, 6_000.0, 4_000.0]);
        let mut idle = vec![0.0; 40];
        idle[11] = 2_900.0;
        let busy = vec![1_500.0; 40];
        let score = |c: &[f64]| lagged_covariance(&flow, c, 2, 2);
        assert!(
            score(&truth) > score(&idle),
            "{} {}",
            score(&truth),
            score(&idle)
        );
        assert!(score(&truth) > score(&busy));
        assert!(
            score(&busy).abs() < 1e-6,
            "a flat client moved nothing extra"
        );
        // A Pearson correlation prefers the sparse idle client: why this matcher exists.
        assert!(
            best_lagged_correlation(&flow, &idle, 2) > best_lagged_correlation(&flow, &truth, 2)
        );
        assert_eq!(
            lagged_covariance(&[1.0; 5], &truth, 2, 2),
            0.0,
            "a flat flow"
        );
        assert_eq!(lagged_covariance(&[], &[], 2, 2), 0.0);
    }
}
