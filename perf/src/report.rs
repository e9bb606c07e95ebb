//! Measurements and how they are printed: a human table by default, or one JSON object per
//! line (`--json`) in the shape DESIGN.md fixes:
//! `{"bench":"io.rx","impl":"af_xdp","params":{...},"value":123.0,"unit":"pkt/s"}`.

use std::io::Write;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One measured figure.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Measurement {
    /// What was measured, dotted (`io.rx`, `io.forward`, ...).
    pub bench: String,
    /// Which implementation or backend (`af_xdp`, `udp`, ...).
    #[serde(rename = "impl")]
    pub implementation: String,
    /// The settings it ran with.
    pub params: Map<String, Value>,
    /// The figure.
    pub value: f64,
    /// Its unit.
    pub unit: String,
}

/// The middle value of `v` (the upper of the two middle ones for an even count; 0 for none).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// A measurement of `bench` for `imp` with `params`, as given (callers round).
pub fn row(
    bench: &str,
    imp: &str,
    params: &[(&str, Value)],
    value: f64,
    unit: &str,
) -> Measurement {
    let mut map = Map::new();
    for (k, v) in params {
        map.insert((*k).into(), v.clone());
    }
    Measurement {
        bench: bench.into(),
        implementation: imp.into(),
        params: map,
        value,
        unit: unit.into(),
    }
}

/// Writes measurements as JSON lines.
pub fn write_json(out: &mut impl Write, rows: &[Measurement]) -> anyhow::Result<()> {
    for row in rows {
        serde_json::to_writer(&mut *out, row)?;
        writeln!(out)?;
    }
    Ok(())
}

/// Writes measurements as an aligned table.
pub fn write_table(out: &mut impl Write, rows: &[Measurement]) -> anyhow::Result<()> {
    let params = |m: &Measurement| {
        m.params
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let w_bench = rows.iter().map(|r| r.bench.len()).max().unwrap_or(5).max(5);
    let w_impl = rows
        .iter()
        .map(|r| r.implementation.len())
        .max()
        .unwrap_or(4)
        .max(4);
    writeln!(
        out,
        "{:<w_bench$}  {:<w_impl$}  {:>14}  {:<12}  params",
        "bench", "impl", "value", "unit"
    )?;
    for r in rows {
        writeln!(
            out,
            "{:<w_bench$}  {:<w_impl$}  {:>14}  {:<12}  {}",
            r.bench,
            r.implementation,
            format_value(r.value),
            r.unit,
            params(r)
        )?;
    }
    Ok(())
}

fn format_value(v: f64) -> String {
    if v.abs() >= 1000.0 {
        // Thousands separators make packet rates readable.
        let s = format!("{:.0}", v);
        let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        format!("{sign}{out}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_the_middle_value() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(Vec::new()), 0.0);
    }

    fn sample() -> Measurement {
        let mut params = Map::new();
        params.insert("batch".into(), Value::from(64));
        Measurement {
            bench: "io.rx".into(),
            implementation: "af_xdp".into(),
            params,
            value: 1_234_567.4,
            unit: "pkt/s".into(),
        }
    }

    #[test]
    fn json_line_has_the_fixed_shape() {
        let mut out = Vec::new();
        write_json(&mut out, &[sample()]).unwrap();
        let line = String::from_utf8(out).unwrap();
        assert_eq!(
            line,
            "{\"bench\":\"io.rx\",\"impl\":\"af_xdp\",\"params\":{\"batch\":64},\"value\":1234567.4,\"unit\":\"pkt/s\"}\n"
        );
    }

    #[test]
    fn table_groups_thousands() {
        let mut out = Vec::new();
        write_table(&mut out, &[sample()]).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("1,234,567"), "{text}");
        assert!(text.contains("batch=64"), "{text}");
        assert_eq!(format_value(999.5), "999.50");
        assert_eq!(format_value(-1000.0), "-1,000");
    }
}
