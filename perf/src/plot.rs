//! SVG charts of a run's measurements, written by `--svg DIR`, with no dependencies:
//!
//! - one bar chart per bench (`sphinx.unwrap`, `relay.latency_p99`, …): its rows side by
//!   side, labelled by implementation and parameters, so a baseline and PhantomBand stand
//!   next to each other and a parameter sweep (batch size, cores) reads left to right;
//! - one line chart per bench whose rows carry an x parameter: `t` (seconds), a series per
//!   implementation and phase, e.g. a link's rate over time while idle and while busy; or
//!   `latency_us` (a histogram's bucket), e.g. the share of packets per latency bucket.
//!
//! The same rows are written as JSON lines next to the charts (`<subcommand>.json`).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

use crate::report::Measurement;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 380.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 120.0;
/// Parameters that make a bench a line chart, with their axis labels.
const X_PARAMS: [(&str, &str); 2] = [("t", "seconds"), ("latency_us", "microseconds")];
const COLOURS: [&str; 6] = [
    "#3465a4", "#cc0000", "#4e9a06", "#f57900", "#75507b", "#555753",
];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A round number at or above `max` for the top of an axis, and its tick step.
fn axis(max: f64) -> (f64, f64) {
    if max.is_nan() || max <= 0.0 || !max.is_finite() {
        return (1.0, 0.25);
    }
    let magnitude = 10f64.powf(max.log10().floor());
    for step in [0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0] {
        let step = step * magnitude;
        if max / step <= 5.0 {
            return ((max / step).ceil() * step, step);
        }
    }
    (max, max / 5.0)
}

fn frame(title: &str, unit: &str, top: f64, step: f64) -> String {
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>
<text x="16" y="{}" transform="rotate(-90 16 {})" text-anchor="middle">{}</text>
"##,
        WIDTH / 2.0,
        escape(title),
        TOP + (HEIGHT - TOP - BOTTOM) / 2.0,
        TOP + (HEIGHT - TOP - BOTTOM) / 2.0,
        escape(unit)
    );
    let plot_h = HEIGHT - TOP - BOTTOM;
    let mut tick = 0.0;
    while tick <= top + step / 2.0 {
        let y = TOP + plot_h * (1.0 - tick / top);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#dddddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            number(tick)
        );
        tick += step;
    }
    svg
}

fn number(v: f64) -> String {
    if v.abs() >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v.abs() >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// A bar chart: one bar per `(label, value)`, coloured by `group`.
pub fn bar_chart(title: &str, unit: &str, bars: &[(String, f64, usize)]) -> String {
    let max = bars.iter().map(|b| b.1).fold(0.0, f64::max);
    let (top, step) = axis(max);
    let mut svg = frame(title, unit, top, step);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let slot = plot_w / bars.len().max(1) as f64;
    for (i, (label, value, group)) in bars.iter().enumerate() {
        let h = plot_h * (value / top).clamp(0.0, 1.0);
        let x = LEFT + slot * i as f64 + slot * 0.15;
        let w = slot * 0.7;
        let _ = writeln!(
            svg,
            r##"<rect x="{x:.1}" y="{:.1}" width="{w:.1}" height="{h:.1}" fill="{}"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11">{}</text>"##,
            TOP + plot_h - h,
            COLOURS[group % COLOURS.len()],
            x + w / 2.0,
            TOP + plot_h - h - 4.0,
            number(*value)
        );
        // The label slants down to the left; a long one is split after its first word
        // (the implementation), so that it stays inside the picture.
        let lx = x + w / 2.0;
        let ly = TOP + plot_h + 14.0;
        let lines: Vec<&str> = match label.split_once(' ') {
            Some((first, rest)) if label.len() > 24 => vec![first, rest],
            _ => vec![label.as_str()],
        };
        let spans: String = lines
            .iter()
            .enumerate()
            .map(|(k, line)| {
                format!(
                    r##"<tspan x="{lx:.1}" dy="{}">{}</tspan>"##,
                    if k == 0 { 0 } else { 12 },
                    escape(line)
                )
            })
            .collect();
        let _ = writeln!(
            svg,
            r##"<text x="{lx:.1}" y="{ly:.1}" transform="rotate(-30 {lx:.1} {ly:.1})" text-anchor="end" font-size="10">{spans}</text>"##
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// A line chart of `series`, each `(name, points (x, y))`.
pub fn line_chart(
    title: &str,
    x_label: &str,
    unit: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> String {
    let max_y = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(0.0, f64::max);
    let xs = || series.iter().flat_map(|s| s.1.iter().map(|p| p.0));
    let min_x = xs()
        .fold(f64::INFINITY, f64::min)
        .min(xs().fold(0.0, f64::max));
    let max_x = xs().fold(0.0, f64::max);
    let (top, step) = axis(max_y);
    // The x axis spans the data: from 0 for time, from near the fastest for latencies.
    let (span, x_step) = axis((max_x - min_x).max(1.0));
    let lo = if min_x.is_finite() {
        (min_x / x_step).floor() * x_step
    } else {
        0.0
    };
    let mut span = span;
    if lo + span < max_x {
        span += x_step;
    }
    let mut svg = frame(title, unit, top, step);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let mut tick = lo;
    while tick <= lo + span + x_step / 2.0 {
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            LEFT + plot_w * (tick - lo) / span,
            TOP + plot_h + 16.0,
            number(tick)
        );
        tick += x_step;
    }
    let _ = writeln!(
        svg,
        r##"<text x="{}" y="{}" text-anchor="middle">{}</text>"##,
        LEFT + plot_w / 2.0,
        TOP + plot_h + 34.0,
        escape(x_label)
    );
    for (i, (name, points)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let path: Vec<String> = points
            .iter()
            .map(|(x, y)| {
                format!(
                    "{:.1},{:.1}",
                    LEFT + plot_w * (x - lo) / span,
                    TOP + plot_h * (1.0 - (y / top).clamp(0.0, 1.0))
                )
            })
            .collect();
        let _ = writeln!(
            svg,
            r##"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/><text x="{}" y="{}" fill="{colour}">{}</text>"##,
            path.join(" "),
            LEFT + 10.0,
            TOP + plot_h + 52.0 + 16.0 * i as f64,
            escape(name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// Whether a parameter is a line chart's x axis or its series' phase, not a label.
fn is_axis(key: &str) -> bool {
    key == "phase" || X_PARAMS.iter().any(|(x, _)| *x == key)
}

fn param(v: &serde_json::Value) -> String {
    v.to_string().trim_matches('"').to_owned()
}

/// The parameters whose value differs between `rows` (a row without one counts as differing).
fn varying(rows: &[&Measurement]) -> Vec<String> {
    let mut keys: Vec<String> = rows.iter().flat_map(|r| r.params.keys().cloned()).collect();
    keys.sort();
    keys.dedup();
    keys.retain(|k| {
        !is_axis(k)
            && rows
                .iter()
                .any(|r| r.params.get(k) != rows.first().and_then(|f| f.params.get(k)))
    });
    keys
}

/// The parameters all `rows` share, as `k=v` words (for the chart's title).
fn common(rows: &[&Measurement], varying: &[String]) -> String {
    rows.first()
        .map(|r| {
            r.params
                .iter()
                .filter(|(k, _)| !varying.contains(k) && !is_axis(k))
                .map(|(k, v)| format!("{k}={}", param(v)))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// A row's label: its implementation and the parameters that vary in its chart.
fn label(row: &Measurement, varying: &[String]) -> String {
    let params: Vec<String> = varying
        .iter()
        .filter_map(|k| row.params.get(k).map(|v| format!("{k}={}", param(v))))
        .collect();
    if params.is_empty() {
        row.implementation.clone()
    } else {
        format!("{} {}", row.implementation, params.join(" "))
    }
}

/// Writes the charts of `rows` and `<name>.json` into `dir`; returns the files written.
pub fn write(dir: &Path, name: &str, rows: &[Measurement]) -> anyhow::Result<Vec<PathBuf>> {
    let json = dir.join(format!("{name}.json"));
    std::fs::create_dir_all(dir)
        .with_context(|| format!("--svg: cannot create {}", dir.display()))?;
    let mut out = Vec::new();
    crate::report::write_json(&mut out, rows)?;
    std::fs::write(&json, out)?;
    let mut written = vec![json];
    written.extend(charts(dir, rows)?);
    Ok(written)
}

/// Writes the charts of `rows` (no JSON: `pb-perf plot` redraws from saved rows and leaves
/// them as they are) into `dir`; returns the files written.
pub fn charts(dir: &Path, rows: &[Measurement]) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("--svg: cannot create {}", dir.display()))?;
    let mut written = Vec::new();
    let mut benches: BTreeMap<&str, Vec<&Measurement>> = BTreeMap::new();
    for row in rows {
        benches.entry(row.bench.as_str()).or_default().push(row);
    }
    for (bench, rows) in benches {
        let unit = rows.first().map_or("", |r| r.unit.as_str());
        let varying = varying(&rows);
        let shared = common(&rows, &varying);
        let title = if shared.is_empty() {
            bench.to_owned()
        } else {
            format!("{bench} ({shared})")
        };
        let x_param = X_PARAMS
            .iter()
            .find(|(x, _)| rows.iter().all(|r| r.params.contains_key(*x)));
        let svg = if let Some((x, x_label)) = x_param {
            let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
            for r in &rows {
                let phase = r
                    .params
                    .get("phase")
                    .map(|p| format!(" ({})", param(p)))
                    .unwrap_or_default();
                let t = r
                    .params
                    .get(*x)
                    .and_then(serde_json::Value::as_f64)
                    .unwrap_or(0.0);
                series
                    .entry(format!("{}{phase}", label(r, &varying)))
                    .or_default()
                    .push((t, r.value));
            }
            let series: Vec<(String, Vec<(f64, f64)>)> = series.into_iter().collect();
            line_chart(&title, x_label, unit, &series)
        } else {
            let mut groups: Vec<&str> = Vec::new();
            let bars: Vec<(String, f64, usize)> = rows
                .iter()
                .map(|r| {
                    let group = match groups.iter().position(|g| *g == r.implementation) {
                        Some(g) => g,
                        None => {
                            groups.push(&r.implementation);
                            groups.len() - 1
                        }
                    };
                    (label(r, &varying), r.value, group)
                })
                .collect();
            bar_chart(&title, unit, &bars)
        };
        let path = dir.join(format!("{}.svg", bench.replace(['/', ' '], "_")));
        std::fs::write(&path, svg)?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::row;
    use serde_json::json;

    #[test]
    fn charts_are_well_formed_svg_with_every_bar_and_series() {
        let dir = std::env::temp_dir().join(format!("pb-perf-plot-{}", std::process::id()));
        let rows = vec![
            row(
                "sphinx.unwrap",
                "phantomband",
                &[("batch", json!(8))],
                41000.0,
                "pkt/s",
            ),
            row(
                "sphinx.unwrap",
                "nym-sphinx",
                &[("batch", json!(1))],
                9000.0,
                "pkt/s",
            ),
            row(
                "testnet.link_rate_over_time",
                "relay0",
                &[("t", json!(0)), ("phase", json!("idle"))],
                100.0,
                "pkt/s",
            ),
            row(
                "testnet.link_rate_over_time",
                "relay0",
                &[("t", json!(1)), ("phase", json!("busy"))],
                101.0,
                "pkt/s",
            ),
            row(
                "relay.latency_histogram",
                "af_xdp",
                &[("latency_us", json!(1100))],
                60.0,
                "% of packets",
            ),
            row(
                "relay.latency_histogram",
                "af_xdp",
                &[("latency_us", json!(1200))],
                40.0,
                "% of packets",
            ),
        ];
        let files = write(&dir, "demo", &rows).unwrap_or_default();
        assert_eq!(files.len(), 4, "{files:?}");
        let bars = std::fs::read_to_string(dir.join("sphinx.unwrap.svg")).unwrap_or_default();
        assert!(bars.starts_with("<svg") && bars.trim_end().ends_with("</svg>"));
        assert_eq!(bars.matches("<rect x=").count(), 2);
        assert!(bars.contains(">phantomband batch=8<") && bars.contains(">nym-sphinx batch=1<"));
        let long = bar_chart(
            "t",
            "pkt/s",
            &[("phantomband batch=32 cores=1 format=v2".into(), 1.0, 0)],
        );
        assert!(
            long.contains(">phantomband</tspan>")
                && long.contains(r#"dy="12">batch=32 cores=1 format=v2<"#),
            "{long}"
        );
        assert!(
            bars.contains(">sphinx.unwrap<"),
            "no shared parameters in the title"
        );
        let lines = std::fs::read_to_string(dir.join("testnet.link_rate_over_time.svg"))
            .unwrap_or_default();
        assert_eq!(lines.matches("<polyline").count(), 2, "idle and busy");
        let histogram =
            std::fs::read_to_string(dir.join("relay.latency_histogram.svg")).unwrap_or_default();
        assert_eq!(histogram.matches("<polyline").count(), 1);
        // The axis starts near the data (1100), not at 0.
        assert!(histogram.contains(">1100<") && !histogram.contains(">0</text></svg>"));
        assert!(histogram.contains(">microseconds<"));
        let json = std::fs::read_to_string(dir.join("demo.json")).unwrap_or_default();
        assert_eq!(json.lines().count(), 6);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(axis(41000.0), (50000.0, 10000.0));
        assert_eq!(escape("a<b"), "a&lt;b");
    }
}
