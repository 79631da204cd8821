//! Text rendering of plans (JSON is the serde form of [`Plan`]).

use std::fmt::Write as _;

use super::plan::{CapacityPoint, Plan};
use crate::snapshot::Os;

/// `28232` → `28,232`.
pub fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ports(c: &CapacityPoint) -> String {
    c.usable_ports
        .map_or_else(|| "—".into(), |u| grouped(u64::from(u)))
}

fn rate(c: &CapacityPoint) -> String {
    c.rate_per_pool_per_s.map_or_else(
        || "—".into(),
        |r| format!("{}/s", grouped(r.floor() as u64)),
    )
}

fn hold(c: &CapacityPoint) -> String {
    let h = c.port_hold_seconds;
    if h >= 1.0 && (h - h.round()).abs() < 1e-9 {
        format!("{h:.0} s")
    } else {
        format!("{h} s")
    }
}

/// What one pool is on `os`: a remote destination (Linux connect) or the host (Windows: one
/// pool per IP version unless SO_PORT_SCALABILITY or an auto-reuse range).
fn per(os: Os) -> &'static str {
    match os {
        Os::Linux => "per remote destination",
        Os::Windows => "host-wide",
    }
}

/// `28,232 ports per pool, 470/s per remote destination (port held 60 s after close)`.
pub fn capacity_line(c: &CapacityPoint, os: Os) -> String {
    format!(
        "{} ports per pool, {} {} (port held {} after close)",
        ports(c),
        rate(c),
        per(os),
        hold(c)
    )
}

/// The human form of a plan. `command` is how to apply it (shown at the end), e.g.
/// `portdoctor tune apply --set … --yes`.
pub fn plan_text(plan: &Plan, apply_hint: Option<&str>) -> String {
    let mut o = String::new();
    let host = plan.hostname.as_deref().unwrap_or("?");
    let os = match plan.os {
        Os::Linux => "linux",
        Os::Windows => "windows",
    };
    let ver = plan.os_version.as_deref().unwrap_or("?");
    let ns = match plan.os {
        Os::Linux => format!(" · netns {}", plan.netns.as_deref().unwrap_or("default")),
        Os::Windows => String::new(),
    };
    let head = if plan.is_refused() {
        "REFUSED"
    } else if plan.changes.is_empty() {
        "NOTHING TO CHANGE"
    } else {
        "PLAN"
    };
    let _ = writeln!(
        o,
        "portdoctor tune plan · {host} · {os} {ver}{ns}    {head}"
    );
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "now    {}",
        capacity_line(&plan.capacity_before, plan.os)
    );
    if !plan.changes.is_empty() {
        let _ = writeln!(o, "after  {}", capacity_line(&plan.capacity_after, plan.os));
    }
    let mut prev = plan.capacity_before;
    for c in &plan.changes {
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "CHANGE {}  {} → {}",
            c.knob,
            c.current
                .as_deref()
                .map_or("(unknown)", |v| if v.is_empty() { "(empty)" } else { v }),
            if c.proposed.is_empty() {
                "(empty)"
            } else {
                &c.proposed
            }
        );
        let _ = writeln!(o, "  why      {}", c.reason);
        let a = c.capacity_after;
        if a == prev {
            let _ = writeln!(
                o,
                "  buys     no capacity by itself ({} ports, {})",
                ports(&a),
                rate(&a)
            );
        } else {
            let _ = writeln!(
                o,
                "  buys     {} → {} ports per pool, {} → {} {}",
                ports(&prev),
                ports(&a),
                rate(&prev),
                rate(&a),
                per(plan.os)
            );
        }
        prev = a;
        let _ = writeln!(o, "  applies  {}", c.takes_effect);
        for r in &c.risks {
            let _ = writeln!(o, "  risk     {r}");
        }
    }
    for u in &plan.unchanged {
        let _ = writeln!(o, "\nSAME   {u}");
    }
    if !plan.commands.is_empty() {
        let _ = writeln!(
            o,
            "\n{}",
            if plan.os == Os::Linux {
                "commands (runtime):"
            } else {
                "commands (elevated prompt):"
            }
        );
        for c in &plan.commands {
            let _ = writeln!(o, "  {c}");
        }
    }
    if let Some(d) = plan.dropin.as_ref().filter(|d| !d.lines.is_empty()) {
        let _ = writeln!(o, "persistent ({}):", d.path);
        for l in &d.lines {
            let _ = writeln!(o, "  {l}");
        }
    }
    if !plan.windows_steps.is_empty() {
        let _ = writeln!(o, "then:");
        for s in &plan.windows_steps {
            let _ = writeln!(o, "  {s}");
        }
    }
    if !plan.warnings.is_empty() || !plan.refusals.is_empty() || !plan.notes.is_empty() {
        let _ = writeln!(o);
    }
    for w in &plan.warnings {
        let _ = writeln!(o, "WARNING  {w}");
    }
    for r in &plan.refusals {
        let _ = writeln!(o, "REFUSED  {r}");
    }
    for n in &plan.notes {
        let _ = writeln!(o, "note     {n}");
    }
    if let Some(hint) = apply_hint {
        if !plan.is_refused() && !plan.changes.is_empty() {
            let _ = writeln!(o, "\napply:   {hint}");
            let _ = writeln!(
                o,
                "         (writes a backup first; undo with `portdoctor tune rollback`)"
            );
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::grouped;

    #[test]
    fn groups_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(28_232), "28,232");
        assert_eq!(grouped(1_234_567), "1,234,567");
    }
}
