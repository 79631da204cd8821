//! Text and JSON (`portdoctor.lab/v1`) rendering of a lab run.

use std::fmt::Write as _;

use super::{LabConfig, LabReport, Second};
use crate::capacity::HoldReason;

/// "connect() to 2 destinations, client closes first, tcp_tw_reuse=0".
pub fn scenario_label(c: &LabConfig) -> String {
    let mut parts = vec![format!(
        "{} to {} destination{}",
        if c.keepalive {
            "keep-alive"
        } else if c.bind_before_connect {
            "bind()+connect()"
        } else {
            "connect()"
        },
        c.destinations,
        if c.destinations == 1 { "" } else { "s" }
    )];
    parts.push(if c.server_closes_first {
        "server closes first".into()
    } else {
        "client closes first".into()
    });
    parts.push(format!("tcp_tw_reuse={}", c.tw_reuse));
    if c.lifetime_s > 0.0 {
        parts.push(format!("lifetime {} s", c.lifetime_s));
    }
    parts.join(", ")
}

fn onset(t: Option<f64>) -> String {
    t.map_or_else(|| "no failures".into(), |t| format!("{t:.2} s"))
}

/// The one-line answer: model vs observation.
pub fn verdict_line(r: &LabReport) -> String {
    let c = &r.comparison;
    match (r.model.onset_s, r.observed.onset_s) {
        (Some(_), Some(_)) => format!(
            "model {} vs observed {}: difference {:+.2} s ({:+.1}%), {}",
            onset(r.model.onset_s),
            onset(r.observed.onset_s),
            c.difference_s.unwrap_or(0.0),
            c.relative.unwrap_or(0.0) * 100.0,
            if c.agrees {
                "agrees (within 10%)"
            } else {
                "DISAGREES (more than 10%)"
            }
        ),
        (None, None) => "model: no failures; observed: no failures: agrees".into(),
        (p, o) => format!("model {} vs observed {}: DISAGREES", onset(p), onset(o)),
    }
}

pub fn render_json(r: &LabReport) -> String {
    let mut s =
        serde_json::to_string_pretty(r).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    s.push('\n');
    s
}

fn pool_cell(s: &Second) -> String {
    match &s.pool {
        Some(p) => format!(
            "{}/{}{}",
            p.used,
            p.capacity.map_or_else(|| "?".into(), |c| c.to_string()),
            match p.scope {
                Some(crate::analysis::Scope::LocalAddress) => " (per address)",
                _ => "",
            }
        ),
        None => "-".into(),
    }
}

/// One line per second, as printed while the lab runs and in the final table.
pub fn second_line(s: &Second) -> String {
    let lat = s.connect_latency.map_or_else(
        || format!("{:>7} {:>7} {:>7}", "-", "-", "-"),
        |l| format!("{:>7} {:>7} {:>7}", l.p50_us, l.p90_us, l.p99_us),
    );
    format!(
        "{:>3} {:>7.0} {:>8} {:>8} {:>8} {:>8} {:>6} {lat}  {}",
        s.t,
        s.target_rate,
        s.attempts,
        s.connects + s.requests,
        s.eaddrnotavail,
        s.eaddrinuse,
        s.other_errors,
        pool_cell(s)
    )
}

pub const SECOND_HEADER: &str =
    "  s  target attempts   ok     ENOTAV  EINUSE  other  p50 us  p90 us  p99 us  pool used/cap (check)";

pub fn render_text(r: &LabReport) -> String {
    let c = &r.config;
    let m = &r.model;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "portdoctor lab in network namespace {} ({})",
        r.namespace,
        if r.namespace_removed {
            "removed"
        } else {
            "NOT removed: run `ip netns del` on it"
        }
    );
    let _ = writeln!(
        out,
        "scenario: {}; range {}-{} ({} ports); {}; lifetime {} s; server port(s) {:?}",
        scenario_label(c),
        c.range.low,
        c.range.high,
        c.range.len(),
        match c.ramp_to_per_s {
            Some(to) => format!(
                "ramp {:.0} -> {to:.0}/s over {:.0} s",
                c.rate_per_s, c.duration_s
            ),
            None => format!("{:.0}/s for {:.0} s", c.rate_per_s, c.duration_s),
        },
        c.lifetime_s,
        r.server_ports
    );
    let hold = match m.hold_reason {
        HoldReason::TimeWait => "lifetime + TIME_WAIT",
        HoldReason::TwReuse => "lifetime + tcp_tw_reuse_delay",
        HoldReason::ServerClosesFirst => "lifetime (server closes first)",
        HoldReason::UdpSocketLifetime => "UDP socket lifetime",
    };
    let _ = writeln!(
        out,
        "model: {} usable ports x {} pool(s), hold {:.2} s ({hold}), sustainable {} in total -> first failure: {}",
        m.usable_ports,
        m.pools,
        m.hold_s,
        m.total_per_s
            .map_or_else(|| "unlimited".into(), crate::capacity::report::rate),
        onset(m.onset_s)
    );
    let o = &r.observed;
    let _ = writeln!(
        out,
        "observed: {} attempts, {} connects, {} port failures, {} other errors -> first failure: {}{}",
        o.attempts,
        o.connects,
        o.failures,
        o.other_errors,
        onset(o.onset_s),
        o.first_failure
            .as_deref()
            .map_or_else(String::new, |f| format!(" ({f})"))
    );
    let _ = match (o.traced_failures, &o.tracing_note) {
        (Some(traced), _) => writeln!(
            out,
            "traced: {traced} port failures counted by the kernel tracepoints ({})",
            if traced == o.failures {
                "the same as observed"
            } else {
                "DIFFERENT from observed"
            }
        ),
        (None, Some(note)) => writeln!(out, "traced: not available: {note}"),
        (None, None) => Ok(()),
    };
    let _ = writeln!(out, "=> {}", verdict_line(r));
    if let Some(reason) = &o.stop_reason {
        let _ = writeln!(out, "note: stopped early: {reason}");
    }
    if let Some(e) = &o.other_error_example {
        let _ = writeln!(out, "note: unexpected error seen: {e}");
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "{SECOND_HEADER}");
    for s in &r.seconds {
        let _ = writeln!(out, "{}", second_line(s));
    }
    if let Some(path) = &r.chart {
        let _ = writeln!(out, "\nchart: {path}");
    }
    out
}
