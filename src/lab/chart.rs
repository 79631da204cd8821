//! A hand-written SVG chart of a lab run (no plotting dependency): top panel, ports of the
//! fullest pool as `check` saw them against its capacity; bottom panel, connects and failures
//! per second; dashed verticals at the predicted and the observed onset. Every series is a
//! `<polyline data-series="…">` so tests (and scripts) can read the numbers back.

use std::fmt::Write as _;

use super::LabReport;

const W: f64 = 900.0;
const H: f64 = 560.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP1: f64 = 50.0;
const H1: f64 = 210.0;
const TOP2: f64 = 320.0;
const H2: f64 = 180.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if v <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

struct Panel {
    top: f64,
    height: f64,
    x_max: f64,
    y_max: f64,
}

impl Panel {
    fn x(&self, t: f64) -> f64 {
        LEFT + (W - LEFT - RIGHT) * (t / self.x_max).clamp(0.0, 1.0)
    }
    fn y(&self, v: f64) -> f64 {
        self.top + self.height * (1.0 - (v / self.y_max).clamp(0.0, 1.0))
    }
    fn axes(&self, out: &mut String, label: &str) {
        let _ = writeln!(
            out,
            r##"<rect x="{LEFT}" y="{}" width="{}" height="{}" fill="none" stroke="#999"/>"##,
            self.top,
            W - LEFT - RIGHT,
            self.height
        );
        for k in 0..=5 {
            let v = self.y_max * f64::from(k) / 5.0;
            let y = self.y(v);
            let _ = writeln!(
                out,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
                W - RIGHT,
                LEFT - 6.0,
                y + 4.0,
                fmt_num(v)
            );
        }
        let secs = self.x_max.ceil() as u32;
        let step = (secs / 10).max(1);
        for s in (0..=secs).step_by(step as usize) {
            let x = self.x(f64::from(s));
            let _ = writeln!(
                out,
                r#"<text x="{x:.1}" y="{:.1}" font-size="11" text-anchor="middle">{s}s</text>"#,
                self.top + self.height + 14.0
            );
        }
        let _ = writeln!(
            out,
            r#"<text x="14" y="{:.1}" font-size="12" transform="rotate(-90 14 {:.1})" text-anchor="middle">{}</text>"#,
            self.top + self.height / 2.0,
            self.top + self.height / 2.0,
            esc(label)
        );
    }
    fn series(&self, out: &mut String, name: &str, color: &str, dash: bool, pts: &[(f64, f64)]) {
        let points: Vec<String> = pts
            .iter()
            .map(|&(t, v)| format!("{:.1},{:.1}", self.x(t), self.y(v)))
            .collect();
        let values: Vec<String> = pts.iter().map(|&(t, v)| format!("{t:.3}:{v}")).collect();
        let _ = writeln!(
            out,
            r#"<polyline data-series="{name}" data-values="{}" points="{}" fill="none" stroke="{color}" stroke-width="2"{}/>"#,
            values.join(" "),
            points.join(" "),
            if dash {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            }
        );
    }
    fn vline(&self, out: &mut String, name: &str, t: f64, color: &str, label: &str) {
        let x = self.x(t);
        let _ = writeln!(
            out,
            r#"<line data-marker="{name}" data-t="{t:.3}" x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="{color}" stroke-dasharray="3 3"/><text x="{:.1}" y="{:.1}" font-size="11" fill="{color}">{}</text>"#,
            self.top,
            self.top + self.height,
            x + 3.0,
            self.top + 12.0 + if name == "observed_onset" { 14.0 } else { 0.0 },
            esc(label)
        );
    }
}

fn fmt_num(v: f64) -> String {
    if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn legend(out: &mut String, x: f64, y: f64, items: &[(&str, &str)]) {
    let mut x = x;
    for (label, color) in items {
        let _ = writeln!(
            out,
            r#"<rect x="{x:.1}" y="{:.1}" width="14" height="4" fill="{color}"/><text x="{:.1}" y="{y:.1}" font-size="12">{}</text>"#,
            y - 5.0,
            x + 18.0,
            esc(label)
        );
        x += 26.0 + 7.0 * label.len() as f64;
    }
}

/// The chart as an SVG document.
pub fn svg(r: &LabReport) -> String {
    let c = &r.config;
    let x_max = c.duration_s.max(1.0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif">"#
    );
    let _ = writeln!(out, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let title = format!(
        "portdoctor lab: {} ports per pool; {}; {}",
        r.model.usable_ports,
        super::report::scenario_label(c),
        match c.ramp_to_per_s {
            Some(to) => format!("{:.0}->{to:.0}/s over {:.0} s", c.rate_per_s, c.duration_s),
            None => format!("{:.0}/s for {:.0} s", c.rate_per_s, c.duration_s),
        }
    );
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="22" font-size="13" font-weight="bold">{}</text>"#,
        esc(&title)
    );

    // Panel 1: pool use as check sees it.
    let cap = r
        .pool_samples
        .iter()
        .filter_map(|s| s.capacity)
        .max()
        .map_or(f64::from(r.model.usable_ports), f64::from);
    let used_max = r
        .pool_samples
        .iter()
        .map(|s| s.used.max(s.time_wait))
        .max()
        .unwrap_or(0) as f64;
    let p1 = Panel {
        top: TOP1,
        height: H1,
        x_max,
        y_max: nice_max(cap.max(used_max) * 1.1),
    };
    p1.axes(&mut out, "ports (fullest pool)");
    let used: Vec<(f64, f64)> = r
        .pool_samples
        .iter()
        .map(|s| (s.t, s.used as f64))
        .collect();
    let tw: Vec<(f64, f64)> = r
        .pool_samples
        .iter()
        .map(|s| (s.t, s.time_wait as f64))
        .collect();
    p1.series(
        &mut out,
        "capacity",
        "#888",
        true,
        &[(0.0, cap), (x_max, cap)],
    );
    p1.series(&mut out, "time_wait", "#e0a030", false, &tw);
    p1.series(&mut out, "pool_used", "#1f6fd0", false, &used);
    if let Some(t) = r.model.onset_s {
        p1.vline(
            &mut out,
            "predicted_onset",
            t,
            "#555",
            &format!("model: {t:.2} s"),
        );
    }
    if let Some(t) = r.observed.onset_s {
        p1.vline(
            &mut out,
            "observed_onset",
            t,
            "#d03030",
            &format!("observed: {t:.2} s"),
        );
    }
    legend(
        &mut out,
        LEFT,
        TOP1 - 8.0,
        &[
            ("pool used (check)", "#1f6fd0"),
            ("TIME_WAIT (all lab pools)", "#e0a030"),
            ("capacity", "#888"),
        ],
    );

    // Panel 2: rates.
    let rate = |f: &dyn Fn(&super::Second) -> f64| -> Vec<(f64, f64)> {
        // A step per second: the value holds for the whole second it was counted in.
        r.seconds
            .iter()
            .flat_map(|s| {
                let t = f64::from(s.t);
                [(t, f(s)), ((t + 1.0).min(x_max), f(s))]
            })
            .collect()
    };
    let connects = rate(&|s| s.connects as f64);
    let failures = rate(&|s| s.failures() as f64);
    let requests = rate(&|s| s.requests as f64);
    let target = rate(&|s| s.target_rate);
    let ymax = connects
        .iter()
        .chain(&failures)
        .chain(&requests)
        .chain(&target)
        .map(|p| p.1)
        .fold(0.0, f64::max);
    let p2 = Panel {
        top: TOP2,
        height: H2,
        x_max,
        y_max: nice_max(ymax * 1.1),
    };
    p2.axes(&mut out, "per second");
    p2.series(&mut out, "target_rate", "#888", true, &target);
    p2.series(&mut out, "connects_per_s", "#2a9d4a", false, &connects);
    if c.keepalive {
        p2.series(&mut out, "requests_per_s", "#7a4ad0", false, &requests);
    }
    p2.series(&mut out, "failures_per_s", "#d03030", false, &failures);
    if let Some(t) = r.observed.onset_s {
        p2.vline(&mut out, "observed_onset", t, "#d03030", "");
    }
    legend(
        &mut out,
        LEFT,
        TOP2 - 8.0,
        &[
            ("connects/s", "#2a9d4a"),
            ("failures/s (EADDRNOTAVAIL/EADDRINUSE)", "#d03030"),
            ("target rate", "#888"),
        ],
    );
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="{}" font-size="12">{}</text>"#,
        H - 14.0,
        esc(&super::report::verdict_line(r))
    );
    out.push_str("</svg>\n");
    out
}
