//! `result.svg`: throughput and ack latency (p50, p99, p99.9) of an open-loop run, as a
//! plain SVG any browser opens. Over offered load for a ramp (one point per step), over
//! time otherwise (one point per second). Hand-written: two panels of polylines, a few
//! ticks and a legend are not worth a plotting dependency.

use std::fmt::Write as _;

use super::open_loop::{OpenLoopReport, Point};

const W: f64 = 900.0;
const PANEL_H: f64 = 260.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 50.0;
const GAP: f64 = 70.0;

struct Series<'a> {
    name: &'a str,
    colour: &'a str,
    values: Vec<f64>,
}

/// The picture of `r`.
pub(crate) fn render(r: &OpenLoopReport) -> String {
    let ramp = !r.steps.is_empty();
    let points: &[Point] = if ramp { &r.steps } else { &r.series };
    let xs: Vec<f64> = points
        .iter()
        .map(|p| {
            if ramp {
                p.offered_frames_per_sec
            } else {
                p.at_s
            }
        })
        .collect();
    let x_label = if ramp {
        "offered load (frames/s)"
    } else {
        "time (s, intended send)"
    };
    let pick = |f: fn(&Point) -> f64| points.iter().map(f).collect::<Vec<f64>>();
    let throughput = [
        Series {
            name: "offered frames/s",
            colour: "#888888",
            values: pick(|p| p.offered_frames_per_sec),
        },
        Series {
            name: "achieved frames/s",
            colour: "#1f77b4",
            values: pick(|p| p.achieved_frames_per_sec),
        },
    ];
    let latency = [
        Series {
            name: "p50",
            colour: "#2ca02c",
            values: pick(|p| p.ack_latency_ms.p50),
        },
        Series {
            name: "p99",
            colour: "#ff7f0e",
            values: pick(|p| p.ack_latency_ms.p99),
        },
        Series {
            name: "p99.9",
            colour: "#d62728",
            values: pick(|p| p.ack_latency_ms.p999),
        },
    ];
    let h = TOP + 2.0 * PANEL_H + GAP + 60.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="sans-serif" font-size="12">
<rect x="0" y="0" width="{W}" height="{h}" fill="white"/>"#
    );
    let t = &r.total;
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="22" font-size="15">feeder loadgen {}: achieved {:.0} frames/s, {:.0} readings/s; ack p99 {:.1} ms, p99.9 {:.1} ms</text>"#,
        escape(&r.scenario),
        t.achieved_frames_per_sec,
        t.achieved_readings_per_sec,
        t.ack_latency_ms.p99,
        t.ack_latency_ms.p999,
    );
    if let Some(reason) = &r.stop_reason {
        let _ = writeln!(
            s,
            r##"<text x="{LEFT}" y="40" fill="#555555">stopped: {}</text>"##,
            escape(reason)
        );
    }
    panel(&mut s, TOP, "throughput (frames/s)", &xs, &throughput, ramp);
    panel(
        &mut s,
        TOP + PANEL_H + GAP,
        "ack latency from intended send (ms)",
        &xs,
        &latency,
        ramp,
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{x_label}</text>"#,
        LEFT + (W - LEFT - RIGHT) / 2.0,
        h - 15.0
    );
    s.push_str("</svg>\n");
    s
}

fn panel(s: &mut String, top: f64, title: &str, xs: &[f64], series: &[Series<'_>], dots: bool) {
    let (pw, ph) = (W - LEFT - RIGHT, PANEL_H);
    let x_max = nice(xs.iter().copied().fold(0.0, f64::max));
    let y_max = nice(
        series
            .iter()
            .flat_map(|v| v.values.iter().copied())
            .fold(0.0, f64::max),
    );
    let x = |v: f64| LEFT + pw * v / x_max;
    let y = |v: f64| top + ph - ph * v / y_max;
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#000000"/>
<text x="{LEFT}" y="{}" font-weight="bold">{}</text>"##,
        top - 6.0,
        escape(title)
    );
    for i in 0..=4 {
        let f = f64::from(i) / 4.0;
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#dddddd"/>
<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>
<text x="{xx:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            y(f * y_max) + 4.0,
            label(f * y_max),
            top + ph + 16.0,
            label(f * x_max),
            yy = y(f * y_max),
            xx = x(f * x_max),
        );
    }
    for (i, v) in series.iter().enumerate() {
        let pts: Vec<String> = xs
            .iter()
            .zip(&v.values)
            .map(|(a, b)| format!("{:.1},{:.1}", x(*a), y(*b)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
            v.colour,
            pts.join(" ")
        );
        if dots {
            for p in &pts {
                let (cx, cy) = p.split_once(',').unwrap_or(("0", "0"));
                let _ = writeln!(
                    s,
                    r#"<circle cx="{cx}" cy="{cy}" r="3" fill="{}"/>"#,
                    v.colour
                );
            }
        }
        let ly = top + 14.0 + 18.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{}" stroke-width="3"/>
<text x="{:.1}" y="{:.1}">{}</text>"#,
            LEFT + pw + 12.0,
            LEFT + pw + 32.0,
            v.colour,
            LEFT + pw + 38.0,
            ly + 4.0,
            escape(v.name)
        );
    }
}

/// The axis maximum: 1, 2 or 5 times a power of ten at or above `v` (1 for no data).
fn nice(v: f64) -> f64 {
    if !(v.is_finite() && v > 0.0) {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|m| *m >= v)
        .unwrap_or(10.0 * p)
}

fn label(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_maxima_and_labels() {
        assert_eq!(nice(0.0), 1.0);
        assert_eq!(nice(f64::NAN), 1.0);
        assert_eq!(nice(3.2), 5.0);
        assert_eq!(nice(1000.0), 1000.0);
        assert_eq!(nice(1001.0), 2000.0);
        assert_eq!(label(25_000.0), "25k");
        assert_eq!(label(2.5), "2.50");
        assert_eq!(escape("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
    }

    #[test]
    fn an_empty_report_still_draws_a_picture() {
        let svg = render(&OpenLoopReport::default());
        assert!(svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }
}
