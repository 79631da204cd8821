//! The human report: verdict first, the pools that matter, each finding with why and a fix.
//! Fits 100 columns; colour only when asked (the caller decides from tty and NO_COLOR).

use std::fmt::Write as _;

use crate::analysis::{Analysis, Level, Pool, Scope, Severity};
use crate::snapshot::{Os, Snapshot};
use crate::units::{group, human_duration};

pub struct TextOptions {
    pub color: bool,
    /// Pools to show; `None` = all.
    pub top: Option<usize>,
}

pub(super) struct Paint(pub(super) bool);

impl Paint {
    pub(super) fn wrap(&self, code: &str, s: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    pub(super) fn bold(&self, s: &str) -> String {
        self.wrap("1", s)
    }
    pub(super) fn dim(&self, s: &str) -> String {
        self.wrap("2", s)
    }
    pub(super) fn level(&self, level: Level, s: &str) -> String {
        match level {
            Level::Ok => self.wrap("32", s),
            Level::Warning => self.wrap("33", s),
            Level::Critical => self.wrap("1;31", s),
        }
    }
    fn severity(&self, sev: Severity, s: &str) -> String {
        match sev {
            Severity::Info => self.wrap("36", s),
            Severity::Warning => self.level(Level::Warning, s),
            Severity::Critical => self.level(Level::Critical, s),
        }
    }
}

const WIDTH: usize = 100;
const MAX_FINDINGS: usize = 12;
pub(super) const POOL_COL: usize = 34;

/// Shortens `s` to `max` characters with an ellipsis in the middle (both ends carry meaning).
pub(crate) fn fit(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_string();
    }
    let keep = max.saturating_sub(1);
    let head = keep / 2;
    let tail = keep - head;
    let chars: Vec<char> = s.chars().collect();
    let mut out: String = chars[..head].iter().collect();
    out.push('…');
    out.extend(&chars[n - tail..]);
    out
}

fn pool_label(p: &Pool, os: Os) -> String {
    match p.scope {
        // Windows pools are per local address by design, not because of bind().
        Scope::LocalAddress if os == Os::Windows => format!("{} → any", p.key.local_ip),
        Scope::LocalAddress => format!("{} → any (bind)", p.key.local_ip),
        _ => p.key.to_string(),
    }
}

/// The TIME_WAIT part of the Windows settings line: the value read, or both documented
/// defaults and which one is used.
fn windows_time_wait(snap: &Snapshot, t: u32) -> String {
    if snap.settings.time_wait_source == Some(crate::snapshot::ValueSource::Read) {
        return format!("TIME_WAIT {t} s (TcpTimedWaitDelay)");
    }
    let set = snap
        .windows
        .as_ref()
        .and_then(|w| w.registry.as_ref())
        .and_then(|r| r.tcp_timed_wait_delay);
    format!(
        "TIME_WAIT {t} s ({}: Microsoft documents {} s and {} s as the default; the longer is used)",
        set.map_or_else(
            || "TcpTimedWaitDelay not set".to_string(),
            |d| format!("TcpTimedWaitDelay={d} is out of range, not used")
        ),
        crate::rules::WINDOWS_TIME_WAIT_SECONDS,
        crate::rules::WINDOWS_TIME_WAIT_SECONDS_LONG
    )
}

fn owner_cell(p: &Pool, scanned: bool) -> String {
    if !scanned {
        return "—".into();
    }
    match p.processes.as_slice() {
        [] => "—".into(),
        [one] => format!("{} ({})", one.name, one.pid),
        [first, rest @ ..] => {
            if rest.iter().all(|o| o.name == first.name) {
                format!("{} ×{}", first.name, rest.len() + 1)
            } else {
                format!("{} ({}) +{}", first.name, first.pid, rest.len())
            }
        }
    }
}

/// The UDP section (docs/udp.md): one row per UDP pool, when UDP sockets hold ports.
fn udp_lines(a: &Analysis, scanned: bool, os: Os, paint: &Paint, out: &mut String) {
    if a.udp_pools.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n{}",
        paint.bold(&format!(
            "{:<POOL_COL$} {:>7} {:>11} {:>8} {:>4}  OWNER",
            if os == Os::Windows {
                "UDP POOL (whole host)"
            } else {
                "UDP POOL (whole namespace)"
            },
            "IN USE",
            "SOCKETS",
            "CAPACITY",
            "USE"
        ))
    );
    for p in &a.udp_pools {
        let owner = match (scanned, p.processes.as_slice()) {
            (false, _) | (true, []) => "—".to_string(),
            (true, [one, ..]) => format!("{} ({}) {} ports", one.name, one.pid, group(one.ports)),
        };
        let line = format!(
            "{:<POOL_COL$} {:>7} {:>11} {:>8} {:>4}  {}",
            format!("{} · {}", p.version.name(), p.range),
            group(p.in_use),
            group(p.sockets),
            group(u64::from(p.capacity)),
            p.utilization
                .map_or("—".into(), |u| format!("{:.0}%", u * 100.0)),
            fit(&owner, 30),
        );
        let _ = writeln!(out, "{}", paint.level(p.level, &line));
    }
}

/// `check --observe`: one line per failing (process, pool); without a window, while pools are
/// under pressure, how to get this evidence.
fn failure_lines(snap: &Snapshot, a: &Analysis, out: &mut String) {
    use crate::analysis::failures::{failure_pool, process_label};
    use crate::snapshot::FailureError;
    let Some(f) = &snap.connect_failures else {
        if snap.os == Os::Linux && a.pools.iter().any(|p| p.level > Level::Ok) {
            let _ = writeln!(
                out,
                "\nto count the connect() calls that fail now: portdoctor check{} --observe 10s (as root)",
                snap.host.target.cli_args()
            );
        }
        return;
    };
    let window = human_duration(f.window_seconds);
    out.push('\n');
    if f.total() == 0 {
        let _ = writeln!(
            out,
            "no connect() or bind() failed in the {window} observed"
        );
        return;
    }
    let _ = writeln!(
        out,
        "failures in {window}: {} connect() EADDRNOTAVAIL · {} bind() EADDRINUSE",
        group(f.by_error(FailureError::AddrNotAvail)),
        group(f.by_error(FailureError::AddrInUse))
    );
    let mut rows: std::collections::BTreeMap<(String, String, &'static str), u64> =
        std::collections::BTreeMap::new();
    for c in &f.events {
        let pool = failure_pool(c).unwrap_or_else(|| "bind()".to_string());
        *rows
            .entry((process_label(c), pool, c.error.name()))
            .or_default() += c.count;
    }
    let mut rows: Vec<_> = rows.into_iter().collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    for ((process, pool, error), n) in rows {
        let _ = writeln!(
            out,
            "  {:>7} {error:<13} {} {}",
            group(n),
            fit(&pool, POOL_COL),
            process
        );
    }
}

pub fn render(snap: &Snapshot, a: &Analysis, opts: &TextOptions) -> String {
    let paint = Paint(opts.color);
    let s = &snap.settings;
    let mut out = String::new();

    // Line 1: who, where, verdict.
    let os = match snap.os {
        Os::Linux => "linux",
        Os::Windows => "windows",
    };
    let mut head = format!(
        "portdoctor check · {} · {os} {}",
        snap.host.hostname.as_deref().unwrap_or("?"),
        snap.host.os_version.as_deref().unwrap_or("")
    )
    .trim_end()
    .to_string();
    if let Some(ns) = snap.host.target.label() {
        let _ = write!(head, " · netns {ns}");
    }
    let verdict = a.verdict.level.name().to_uppercase();
    let gap = WIDTH
        .saturating_sub(head.chars().count() + verdict.len())
        .max(2);
    let _ = writeln!(
        out,
        "{}{}{}",
        paint.bold(&head),
        " ".repeat(gap),
        paint.level(a.verdict.level, &verdict)
    );
    out.push('\n');

    // Settings line.
    let mut parts = Vec::new();
    match &a.capacity {
        Some(c) => {
            parts.push(format!(
                "range {} ({})",
                c.range,
                crate::units::count(u64::from(c.range.len()), "port", "ports")
            ));
            parts.push(format!(
                "{} {}",
                if snap.os == Os::Windows {
                    "excluded"
                } else {
                    "reserved"
                },
                group(u64::from(c.reserved_in_range))
            ));
            if !c.bound_in_range.is_empty() {
                parts.push(format!("bound in range {}", c.bound_in_range.len()));
            }
        }
        None => parts.push("range unknown".into()),
    }
    if let Some(t) = s.time_wait_seconds {
        if snap.os == Os::Windows {
            parts.push(windows_time_wait(snap, t));
        } else {
            parts.push(format!("TIME_WAIT {t} s"));
        }
    }
    if snap.os == Os::Linux {
        parts.push(match s.tw_reuse {
            Some(0) => "tw_reuse 0 (off)".into(),
            Some(1) => "tw_reuse 1 (on)".into(),
            Some(2) => "tw_reuse 2 (loopback only)".into(),
            Some(v) => format!("tw_reuse {v}"),
            None => "tw_reuse ?".into(),
        });
    }
    let _ = writeln!(out, "{}", parts.join(" · "));
    if let Some(w) = &snap.windows {
        for line in windows_lines(w) {
            let _ = writeln!(out, "{line}");
        }
    }

    // Population line.
    // Every kind of pool (TCP, UDP, SNAT), as `verdict.pools` counts them in JSON.
    let counts = |lvl: Level| a.pool_levels().filter(|&l| l == lvl).count();
    let buckets = s
        .max_tw_buckets
        .map_or_else(String::new, |m| format!(" of {} buckets", group(m)));
    let _ = writeln!(
        out,
        "sockets {} (outbound {} · inbound {}) · TIME_WAIT {}{buckets} · pools: {} critical, {} warning, {} ok",
        group(snap.sockets.len() as u64),
        group(a.outbound),
        group(a.inbound),
        group(a.time_wait_total),
        counts(Level::Critical),
        counts(Level::Warning),
        counts(Level::Ok),
    );
    out.push('\n');

    // Pool table.
    let scanned = snap.owners.is_some();
    if a.pools.is_empty() {
        let _ = writeln!(
            out,
            "{}",
            paint.dim("no outbound TCP connections use the ephemeral range")
        );
    } else {
        let _ = writeln!(
            out,
            "{}",
            paint.bold(&format!(
                "{:<POOL_COL$} {:>7} {:>11} {:>8} {:>4} {:>6} {:>7}  OWNER",
                "POOL local → remote", "IN USE", "TIME_WAIT", "CAPACITY", "USE", "NEW/s", "FULL IN"
            ))
        );
        let shown = opts.top.unwrap_or(usize::MAX).min(a.pools.len());
        for p in &a.pools[..shown] {
            let use_pct = p
                .utilization
                .map_or("—".into(), |u| format!("{:.0}%", u * 100.0));
            // With reuse, only the young TIME_WAIT blocks: blocking/all, as top shows it.
            let time_wait = if p.blocking_time_wait == p.time_wait {
                group(p.time_wait)
            } else {
                format!("{}/{}", group(p.blocking_time_wait), group(p.time_wait))
            };
            let line = format!(
                "{:<POOL_COL$} {:>7} {:>11} {:>8} {:>4} {:>6} {:>7}  {}",
                fit(&pool_label(p, snap.os), POOL_COL),
                group(p.in_use),
                time_wait,
                p.capacity.map_or("—".into(), |c| group(u64::from(c))),
                use_pct,
                p.connect_rate_per_s
                    .map_or("—".into(), |r| format!("{r:.0}")),
                p.eta_seconds.map_or("—".into(), human_duration),
                fit(&owner_cell(p, scanned), 24),
            );
            let _ = writeln!(out, "{}", paint.level(p.level, &line));
            if p.by_local_address.len() > 1 {
                let split: Vec<String> = p
                    .by_local_address
                    .iter()
                    .take(4)
                    .map(|b| format!("{} {}", b.local_ip, group(b.sockets)))
                    .collect();
                let more = p.by_local_address.len().saturating_sub(4);
                let _ = writeln!(
                    out,
                    "{}",
                    paint.dim(&format!(
                        "  by local address: {}{}",
                        split.join(" · "),
                        if more > 0 {
                            format!(" · … {more} more")
                        } else {
                            String::new()
                        }
                    ))
                );
            }
        }
        let hidden = a.pools.len() - shown;
        if hidden > 0 {
            let max_hidden = a.pools[shown..]
                .iter()
                .filter_map(|p| p.utilization)
                .fold(0.0f64, f64::max);
            let _ = writeln!(
                out,
                "{}",
                paint.dim(&format!(
                    "… {} more pool{} at or under {:.0}% (--top 0 shows all)",
                    group(hidden as u64),
                    if hidden == 1 { "" } else { "s" },
                    (max_hidden * 100.0).ceil()
                ))
            );
        }
    }

    udp_lines(a, scanned, snap.os, &paint, &mut out);
    super::snat::text_lines(a, opts.top, &paint, &mut out);
    failure_lines(snap, a, &mut out);

    // Findings.
    if !a.verdict.findings.is_empty() {
        out.push('\n');
    }
    for f in a.verdict.findings.iter().take(MAX_FINDINGS) {
        let sev = match f.severity {
            Severity::Info => "INFO",
            Severity::Warning => "WARNING",
            Severity::Critical => "CRITICAL",
        };
        let _ = writeln!(
            out,
            "{}  {}  {}",
            paint.severity(f.severity, &format!("{sev:<8}")),
            paint.bold(f.code.as_str()),
            f.message
        );
        for (i, line) in f.fix.lines().enumerate() {
            let label = if i == 0 { "fix" } else { "   " };
            let _ = writeln!(out, "  {}   {line}", paint.dim(label));
        }
    }
    if a.verdict.findings.len() > MAX_FINDINGS {
        let _ = writeln!(
            out,
            "{}",
            paint.dim(&format!(
                "… {} more findings (--json lists them all)",
                a.verdict.findings.len() - MAX_FINDINGS
            ))
        );
    }
    // "Every pool has room" only where every pool's room is known.
    if a.verdict.findings.is_empty() && a.pools.iter().all(|p| p.capacity.is_some()) {
        let _ = writeln!(
            out,
            "{}",
            paint.level(Level::Ok, "no findings: every pool has room")
        );
    }

    // Notes about the collection itself.
    let mut notes: Vec<String> = snap.notes.clone();
    match a.owners_unknown {
        Some(n) if n > 0 => notes.push(format!(
            "{} sockets have unknown owners (other users' processes need root, or CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH)",
            group(n)
        )),
        None => notes.push("owners not scanned (--no-owners)".into()),
        _ => {}
    }
    if !notes.is_empty() {
        out.push('\n');
        for n in notes {
            let _ = writeln!(out, "{}", paint.dim(&format!("note: {n}")));
        }
    }
    out
}

/// Windows settings under the settings line: IPv6 range, excluded ranges, registry, events.
fn windows_lines(w: &crate::snapshot::WindowsSettings) -> Vec<String> {
    let mut lines = Vec::new();
    let mut first = Vec::new();
    if let Some(b) = w.build {
        first.push(format!("build {b}"));
    }
    first.push(
        match w
            .dynamic_ports_v6
            .and_then(crate::snapshot::DynamicPorts::range)
        {
            Some(r) => format!(
                "ipv6 range {r} ({})",
                crate::units::count(u64::from(r.len()), "port", "ports")
            ),
            None => "ipv6 range unknown".into(),
        },
    );
    match &w.registry {
        Some(reg) => {
            let show = |name: &str, v: Option<u32>| match v {
                Some(v) => format!("{name} {v}"),
                None => format!("{name} default"),
            };
            first.push(show("MaxUserPort", reg.max_user_port));
            if let Some(v) = reg.strict_time_wait_seq_check {
                first.push(format!("StrictTimeWaitSeqCheck {v}"));
            }
        }
        None => first.push("Tcpip registry unreadable".into()),
    }
    first.push(match &w.events {
        Some(e) => format!(
            "events ({} h): 4231 ×{}, 4227 ×{}",
            e.window_hours,
            group(e.ports_exhausted_4231.count),
            group(e.reuse_failed_4227.count)
        ),
        None => "event log unreadable".into(),
    });
    lines.push(first.join(" · "));
    if !w.excluded_ports_v4.is_empty() {
        let shown: Vec<String> = w
            .excluded_ports_v4
            .iter()
            .take(6)
            .map(|e| {
                let star = if e.administered { "*" } else { "" };
                format!("{}{star}", e.range())
            })
            .collect();
        let more = w.excluded_ports_v4.len().saturating_sub(6);
        lines.push(fit(
            &format!(
                "excluded (ipv4): {}{}",
                shown.join(", "),
                if more > 0 {
                    format!(", … {more} more")
                } else {
                    String::new()
                }
            ),
            WIDTH,
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::fit;

    #[test]
    fn fit_keeps_both_ends() {
        assert_eq!(fit("short", 10), "short");
        assert_eq!(fit("2001:db8::1 → [2001:db8::2]:443", 12), "2001:…2]:443");
        assert_eq!(fit("abcdef", 5).chars().count(), 5);
    }
}
