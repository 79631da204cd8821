//! Verdict and findings: stable codes (model.md), numbers, evidence and a pasteable fix.

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::{BindPattern, Capacity, Pool, Scope, Thresholds};
use crate::knobs::{sysctl_fix, tune_fix};
use crate::report::{group, human_duration};
use crate::snapshot::{Os, Snapshot};

/// Health of a pool or of the whole host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warning,
    Critical,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Critical => "critical",
        }
    }
}

/// How much a finding matters. `Info` findings do not change the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    fn from_level(level: Level) -> Self {
        match level {
            Level::Ok => Severity::Info,
            Level::Warning => Severity::Warning,
            Level::Critical => Severity::Critical,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// Stable machine-readable code, e.g. `pool_exhausted`.
    pub code: &'static str,
    pub severity: Severity,
    /// The pool it is about, as "local → remote:port", when it is about one.
    pub pool: Option<String>,
    /// One line with the numbers.
    pub message: String,
    /// Why, in numbers.
    pub evidence: Map<String, Value>,
    /// The exact command or code change.
    pub fix: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub level: Level,
    pub findings: Vec<Finding>,
}

fn evidence(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Round for display in messages and evidence, so JSON stays readable.
fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

/// The `--netns` name the snapshot came from, so fixes act on the same namespace (`--pid`
/// snapshots have no name that `tune` could take).
fn named_netns(snapshot: &Snapshot) -> Option<&str> {
    snapshot
        .host
        .netns
        .as_deref()
        .filter(|n| !n.starts_with("pid:"))
}

pub(super) fn verdict(
    snapshot: &Snapshot,
    capacity: Option<&Capacity>,
    pools: &[Pool],
    binds: &[BindPattern],
    time_wait_total: u64,
    thresholds: Thresholds,
) -> Verdict {
    let s = &snapshot.settings;
    let netns = named_netns(snapshot);
    let mut findings = Vec::new();
    let linux = snapshot.os == Os::Linux;

    let bind_style = |p: &Pool| binds.iter().any(|b| b.local_ip == p.key.local_ip);
    for pool in pools.iter().filter(|p| p.level > Level::Ok) {
        findings.push(pool_finding(snapshot, pool, bind_style(pool), thresholds));
    }

    // TIME_WAIT reuse: only worth raising where pressured pools are full of TIME_WAIT.
    if linux && s.tw_reuse != Some(1) {
        let pressured: Vec<&Pool> = pools
            .iter()
            .filter(|p| {
                p.scope == Scope::Destination
                    && !bind_style(p)
                    && p.level > Level::Ok
                    && !p.tw_reuse_applies
                    && p.blocking_time_wait * 2 >= p.used()
            })
            .collect();
        if !pressured.is_empty() {
            let blocking: u64 = pressured.iter().map(|p| p.blocking_time_wait).sum();
            let delay = s.tw_reuse_delay_ms.unwrap_or(1000);
            let reuse = s.tw_reuse.map_or("unknown".to_string(), |v| v.to_string());
            let ts_off = s.tcp_timestamps == Some(0);
            findings.push(Finding {
                code: "tw_reuse_off",
                severity: Severity::Warning,
                pool: None,
                message: format!(
                    "tcp_tw_reuse={reuse}: {} TIME_WAIT sockets block ports in {} pressured pool(s); with tcp_tw_reuse=1 they become reusable after {delay} ms",
                    group(blocking),
                    pressured.len()
                ),
                evidence: evidence(json!({
                    "tw_reuse": s.tw_reuse, "tcp_timestamps": s.tcp_timestamps,
                    "tw_reuse_delay_ms": s.tw_reuse_delay_ms,
                    "blocking_time_wait": blocking, "pools": pressured.len(),
                })),
                fix: if ts_off {
                    format!(
                        "{} && {} (reuse needs TCP timestamps)",
                        sysctl_fix("net.ipv4.tcp_timestamps", "1"),
                        sysctl_fix("net.ipv4.tcp_tw_reuse", "1")
                    )
                } else {
                    format!(
                        "{}\n(outbound connections only; safe for clients)",
                        tune_fix("net.ipv4.tcp_tw_reuse", "1", netns)
                    )
                },
            });
        }
    }

    // TIME_WAIT buckets.
    let overflow = snapshot
        .counters
        .tcp_ext("TCPTimeWaitOverflow")
        .unwrap_or(0);
    if let Some(max) = s.max_tw_buckets {
        let fix = format!(
            "{}\n(and reduce churn: reuse connections)",
            tune_fix(
                "net.ipv4.tcp_max_tw_buckets",
                &max.max(1).saturating_mul(2).to_string(),
                netns
            )
        );
        if overflow > 0 {
            findings.push(Finding {
                code: "tw_bucket_overflow",
                severity: Severity::Warning,
                pool: None,
                message: format!(
                    "{} TIME_WAIT sockets were dropped at once because tcp_max_tw_buckets ({}) was full; TIME_WAIT now {}",
                    group(overflow.unsigned_abs()),
                    group(max),
                    group(time_wait_total)
                ),
                evidence: evidence(json!({
                    "TCPTimeWaitOverflow": overflow, "max_tw_buckets": max,
                    "time_wait": time_wait_total,
                })),
                fix: fix.clone(),
            });
        } else if max > 0 && time_wait_total as f64 >= 0.9 * max as f64 {
            findings.push(Finding {
                code: "tw_buckets_near_limit",
                severity: Severity::Warning,
                pool: None,
                message: format!(
                    "{} TIME_WAIT sockets of tcp_max_tw_buckets {} ({:.0}%): past the limit new ones are dropped",
                    group(time_wait_total),
                    group(max),
                    100.0 * time_wait_total as f64 / max as f64
                ),
                evidence: evidence(json!({"max_tw_buckets": max, "time_wait": time_wait_total})),
                fix,
            });
        }
    }

    if let Some(cap) = capacity {
        let any_pressure = pools.iter().any(|p| p.level > Level::Ok);
        if linux && cap.range.len() < 16384 {
            findings.push(Finding {
                code: "range_small",
                severity: if any_pressure {
                    Severity::Warning
                } else {
                    Severity::Info
                },
                pool: None,
                message: format!(
                    "the ephemeral range {}–{} has only {} ports (default 32768–60999: 28,232)",
                    cap.range.low,
                    cap.range.high,
                    group(u64::from(cap.range.len()))
                ),
                evidence: evidence(
                    json!({"low": cap.range.low, "high": cap.range.high, "ports": cap.range.len()}),
                ),
                fix: tune_fix("net.ipv4.ip_local_port_range", "15000 65000", netns),
            });
        }
        if !cap.bound_in_range.is_empty() {
            let shown: Vec<String> = cap
                .bound_in_range
                .iter()
                .take(8)
                .map(u16::to_string)
                .collect();
            let more = cap.bound_in_range.len().saturating_sub(8);
            let mut reserved: Vec<String> = s
                .reserved_ports
                .iter()
                .map(|r| {
                    if r.low == r.high {
                        r.low.to_string()
                    } else {
                        format!("{}-{}", r.low, r.high)
                    }
                })
                .collect();
            reserved.extend(cap.bound_in_range.iter().map(u16::to_string));
            findings.push(Finding {
                code: "listener_in_range",
                severity: Severity::Info,
                pool: None,
                message: format!(
                    "{} port(s) inside the ephemeral range are held by listeners or bound sockets ({}{}): they leave every pool, and an outbound connection can take them while their service restarts",
                    cap.bound_in_range.len(),
                    shown.join(", "),
                    if more > 0 { format!(", … {more} more") } else { String::new() }
                ),
                evidence: evidence(json!({"ports": cap.bound_in_range})),
                fix: if linux {
                    tune_fix("net.ipv4.ip_local_reserved_ports", &reserved.join(","), netns)
                } else {
                    "move the listener out of the dynamic range, or exclude its port: netsh int ipv4 add excludedportrange protocol=tcp startport=PORT numberofports=1".into()
                },
            });
        }
    }

    for b in binds {
        let pool = pools
            .iter()
            .find(|p| p.scope == Scope::LocalAddress && p.key.local_ip == b.local_ip);
        let severity = pool.map_or(Severity::Info, |p| Severity::from_level(p.level));
        findings.push(Finding {
            code: "bind_before_connect_suspected",
            severity: severity.max(Severity::Info),
            pool: pool.map(|p| p.key.to_string()),
            message: format!(
                "{} connections from {} to {} destinations never share a local port ({:.0}% have bind()'s parity): the app likely calls bind() before connect(), so all destinations share one range",
                group(b.sockets), b.local_ip, b.destinations, b.bind_parity_share * 100.0
            ),
            evidence: evidence(json!({
                "local_ip": b.local_ip.to_string(), "sockets": b.sockets, "destinations": b.destinations,
                "shared_ports": b.shared_ports, "bind_parity_share": round(b.bind_parity_share, 3),
            })),
            fix: "set IP_BIND_ADDRESS_NO_PORT on the socket before bind() (Linux 4.2+), or do not bind() before connect(); nginx proxy_bind, HAProxy `source` and Envoy upstream_bind_config do this bind".into(),
        });
    }

    for p in pools.iter().filter(|p| p.scope == Scope::Destination) {
        let rate = p.connect_rate_per_s.unwrap_or(0.0);
        if rate >= 20.0 && p.time_wait >= 200 && p.time_wait * 10 >= p.in_use * 8 {
            let who = p.processes.first().map_or_else(
                || "the client".to_string(),
                |o| format!("{} ({})", o.name, o.pid),
            );
            findings.push(Finding {
                code: "high_churn_no_pooling",
                severity: if p.level > Level::Ok { Severity::from_level(p.level).min(Severity::Warning) } else { Severity::Info },
                pool: Some(p.key.to_string()),
                message: format!(
                    "{:.0} new connections/s to {} and {} of {} sockets in TIME_WAIT: a connection per request, no pooling",
                    rate, p.key, group(p.time_wait), group(p.in_use)
                ),
                evidence: evidence(json!({"connect_rate_per_s": round(rate, 1), "time_wait": p.time_wait, "in_use": p.in_use})),
                fix: format!("make {who} reuse connections: HTTP keep-alive or a connection pool (Go: raise Transport.MaxIdleConnsPerHost; .NET: one shared HttpClient; Java/Node/Python: a keep-alive agent; databases: a pool)"),
            });
        }
    }

    if snapshot.os == Os::Windows {
        findings.extend(super::windows::findings(snapshot, pools));
    }

    let level = findings
        .iter()
        .map(|f| match f.severity {
            Severity::Info => Level::Ok,
            Severity::Warning => Level::Warning,
            Severity::Critical => Level::Critical,
        })
        .max()
        .unwrap_or(Level::Ok);
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    Verdict { level, findings }
}

/// `bind_style`: the pool's local address shows the bind-before-connect pattern, whose ports
/// tcp_tw_reuse cannot free.
fn pool_finding(
    snapshot: &Snapshot,
    p: &Pool,
    bind_style: bool,
    thresholds: Thresholds,
) -> Finding {
    let s = &snapshot.settings;
    let netns = named_netns(snapshot);
    let cap = p.capacity.unwrap_or(0);
    let used = p.used();
    let util = p.utilization.unwrap_or(0.0);
    let exhausted = p.free() == Some(0);
    let eta = p
        .eta_seconds
        .map(|e| {
            let d = human_duration(e);
            let about = if d.starts_with('<') { "" } else { "~" };
            format!(", full in {about}{d}")
        })
        .unwrap_or_default();
    let message = if exhausted {
        format!(
            "{} has no free port: {} of {} in use ({} TIME_WAIT); new connections fail ({})",
            p.key,
            group(used),
            group(u64::from(cap)),
            group(p.time_wait),
            if snapshot.os == Os::Linux {
                "EADDRNOTAVAIL"
            } else {
                "WSAENOBUFS 10055"
            }
        )
    } else {
        format!(
            "{} is {:.0}% full ({} of {} ports){eta}",
            p.key,
            util * 100.0,
            group(used),
            group(u64::from(cap))
        )
    };
    let mut fixes = Vec::new();
    let owner = p
        .processes
        .first()
        .map(|o| format!("{} ({})", o.name, o.pid));
    if bind_style && snapshot.os == Os::Linux {
        fixes.push("the app binds before connect: set IP_BIND_ADDRESS_NO_PORT before bind() so ports are shared across destinations".to_string());
    } else if p.time_wait * 2 >= p.in_use {
        fixes.push(format!(
            "{} opens a connection per request: reuse connections (keep-alive / a connection pool)",
            owner.clone().unwrap_or_else(|| "the client".into())
        ));
    } else {
        fixes.push(format!(
            "{} holds {} open connections to one destination: cap the pool size, or spread over more destination addresses/ports",
            owner.clone().unwrap_or_else(|| "the client".into()),
            p.established
        ));
    }
    // One host-wide knob, the one that helps this pool most; the host findings carry the rest.
    if snapshot.os == Os::Linux {
        if !p.tw_reuse_applies && p.blocking_time_wait * 2 >= used && s.tw_reuse != Some(1) {
            fixes.push(format!(
                "or host-wide: {}",
                tune_fix("net.ipv4.tcp_tw_reuse", "1", netns)
            ));
        } else if s.ephemeral_ports.is_some_and(|r| r.len() < 50000) {
            fixes.push(format!(
                "or host-wide: {}",
                tune_fix("net.ipv4.ip_local_port_range", "15000 65000", netns)
            ));
        }
    }
    if snapshot.os == Os::Windows {
        fixes.extend(super::windows::pool_fixes(snapshot, p));
    }
    let code = if exhausted {
        "pool_exhausted"
    } else {
        "pool_near_exhaustion"
    };
    Finding {
        code,
        severity: Severity::from_level(p.level),
        pool: Some(p.key.to_string()),
        message,
        evidence: evidence(json!({
            "scope": p.scope,
            "in_use": p.in_use,
            "time_wait": p.time_wait,
            "blocking_time_wait": p.blocking_time_wait,
            "capacity": p.capacity,
            "utilization": p.utilization.map(|u| round(u, 4)),
            "connect_rate_per_s": p.connect_rate_per_s.map(|r| round(r, 1)),
            "eta_seconds": p.eta_seconds.map(|e| round(e, 1)),
            "warn": thresholds.warn, "crit": thresholds.crit,
        })),
        fix: fixes.join("\n"),
    }
}
