//! Verdict and findings: stable codes (model.md), numbers, evidence and a pasteable fix.

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::{BindPattern, Capacity, Pool, Scope, Thresholds};
use crate::knobs::{sysctl_fix, tune_fix, KnobValue};
use crate::rules;
use crate::snapshot::{Os, PortRange, Settings, Snapshot, Target};
use crate::units::{group, human_duration};

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

/// Every finding `check` can report. The wire name ([`Self::as_str`]: JSON `code`, the
/// Prometheus `code` label, the text report) is stable; the README's findings table lists
/// [`Self::summary`] for each, and a test keeps the two equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FindingCode {
    // Pools (Linux and Windows).
    /// A pool has no free port: new connections fail now.
    PoolExhausted,
    /// A pool is over `--warn`/`--crit`, or fills within `--eta`.
    PoolNearExhaustion,
    // TIME_WAIT (Linux).
    /// Pressured pools are full of TIME_WAIT that `tcp_tw_reuse=1` would make reusable.
    TwReuseOff,
    /// `TCPTimeWaitOverflow` counted TIME_WAIT sockets dropped at `tcp_max_tw_buckets`.
    TwBucketOverflow,
    /// TIME_WAIT is at ≥ 90 % of `tcp_max_tw_buckets`.
    TwBucketsNearLimit,
    // The range.
    /// The ephemeral range is small.
    RangeSmall,
    /// Listeners or bound sockets hold ports inside the range.
    ListenerInRange,
    // The application's connection pattern.
    /// bind() before connect(): one range for all destinations of a local address.
    BindBeforeConnectSuspected,
    /// A connection per request to one destination.
    HighChurnNoPooling,
    // Windows.
    /// Tcpip events 4231/4227: ports already ran out.
    PortExhaustionEvents,
    /// Excluded port ranges inside the dynamic range.
    ExcludedRangeOverlap,
    /// The dynamic range ends at 65534: the off-by-one `start=32767 num=32768`.
    DynamicRangeOffByOne,
    /// `TcpTimedWaitDelay` outside its documented range.
    TimeWaitDelayOutOfRange,
    /// Another Tcpip registry value outside its documented range.
    RegistryValueOutOfRange,
    /// `MaxUserPort` is set; the netsh range decides.
    MaxUserPortIgnored,
    /// `StrictTimeWaitSeqCheck` is set; its effect is unverified.
    StrictTimeWaitSeqCheckUnverified,
    // Observed failures (`check --observe`, Linux).
    /// connect() failed with EADDRNOTAVAIL while observed.
    ConnectFailures,
    /// bind() failed with EADDRINUSE while observed.
    BindFailures,
}

impl FindingCode {
    /// In the order the README lists them.
    pub const ALL: [FindingCode; 18] = [
        FindingCode::PoolExhausted,
        FindingCode::PoolNearExhaustion,
        FindingCode::TwReuseOff,
        FindingCode::TwBucketOverflow,
        FindingCode::TwBucketsNearLimit,
        FindingCode::RangeSmall,
        FindingCode::ListenerInRange,
        FindingCode::BindBeforeConnectSuspected,
        FindingCode::HighChurnNoPooling,
        FindingCode::PortExhaustionEvents,
        FindingCode::ExcludedRangeOverlap,
        FindingCode::DynamicRangeOffByOne,
        FindingCode::TimeWaitDelayOutOfRange,
        FindingCode::RegistryValueOutOfRange,
        FindingCode::MaxUserPortIgnored,
        FindingCode::StrictTimeWaitSeqCheckUnverified,
        FindingCode::ConnectFailures,
        FindingCode::BindFailures,
    ];

    /// The stable wire name, e.g. `pool_exhausted`.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingCode::PoolExhausted => "pool_exhausted",
            FindingCode::PoolNearExhaustion => "pool_near_exhaustion",
            FindingCode::TwReuseOff => "tw_reuse_off",
            FindingCode::TwBucketOverflow => "tw_bucket_overflow",
            FindingCode::TwBucketsNearLimit => "tw_buckets_near_limit",
            FindingCode::RangeSmall => "range_small",
            FindingCode::ListenerInRange => "listener_in_range",
            FindingCode::BindBeforeConnectSuspected => "bind_before_connect_suspected",
            FindingCode::HighChurnNoPooling => "high_churn_no_pooling",
            FindingCode::PortExhaustionEvents => "port_exhaustion_events",
            FindingCode::ExcludedRangeOverlap => "excluded_range_overlap",
            FindingCode::DynamicRangeOffByOne => "dynamic_range_off_by_one",
            FindingCode::TimeWaitDelayOutOfRange => "time_wait_delay_out_of_range",
            FindingCode::RegistryValueOutOfRange => "registry_value_out_of_range",
            FindingCode::MaxUserPortIgnored => "max_user_port_ignored",
            FindingCode::StrictTimeWaitSeqCheckUnverified => {
                "strict_time_wait_seq_check_unverified"
            }
            FindingCode::ConnectFailures => "connect_failures",
            FindingCode::BindFailures => "bind_failures",
        }
    }

    /// When it is raised, in one line: the "when" column of the README's findings table.
    pub fn summary(self) -> &'static str {
        match self {
            FindingCode::PoolExhausted => "a pool has no free port: new connections fail now",
            FindingCode::PoolNearExhaustion => {
                "a pool is over `--warn`/`--crit`, or grows fast enough to fill within `--eta`"
            }
            FindingCode::TwReuseOff => {
                "pressured pools are full of TIME_WAIT that `tcp_tw_reuse=1` would make reusable"
            }
            FindingCode::TwBucketOverflow => {
                "`TCPTimeWaitOverflow` counted TIME_WAIT sockets dropped at `tcp_max_tw_buckets`"
            }
            FindingCode::TwBucketsNearLimit => "TIME_WAIT is at ≥ 90 % of `tcp_max_tw_buckets`",
            FindingCode::RangeSmall => "the ephemeral range has fewer than 16,384 ports",
            FindingCode::ListenerInRange => {
                "listeners or bound sockets hold ports inside the range (info)"
            }
            FindingCode::BindBeforeConnectSuspected => {
                "one local address uses unique ports across destinations with bind()'s parity"
            }
            FindingCode::HighChurnNoPooling => {
                "many new connections/s to one destination, nearly all ending in TIME_WAIT"
            }
            FindingCode::PortExhaustionEvents => {
                "Windows: the System log has Tcpip event 4231 or 4227: ports already ran out"
            }
            FindingCode::ExcludedRangeOverlap => {
                "Windows: excluded port ranges (Hyper-V, WinNAT, `netsh`) lie inside the dynamic range"
            }
            FindingCode::DynamicRangeOffByOne => {
                "Windows: the dynamic range ends at 65534, the common `start=32767 num=32768` mistake (info)"
            }
            FindingCode::TimeWaitDelayOutOfRange => {
                "Windows: `TcpTimedWaitDelay` is outside its documented range for the build"
            }
            FindingCode::RegistryValueOutOfRange => {
                "Windows: another Tcpip registry value is outside its documented range (info)"
            }
            FindingCode::MaxUserPortIgnored => {
                "Windows: `MaxUserPort` is set, but the netsh dynamic range decides (info)"
            }
            FindingCode::StrictTimeWaitSeqCheckUnverified => {
                "Windows: `StrictTimeWaitSeqCheck` is set; its effect is unverified (info)"
            }
            FindingCode::ConnectFailures => {
                "`--observe`: connect() calls failed with EADDRNOTAVAIL (no free port) in the window, per process and pool"
            }
            FindingCode::BindFailures => {
                "`--observe`: bind() calls failed with EADDRINUSE in the window (bind-before-connect: `IP_BIND_ADDRESS_NO_PORT`)"
            }
        }
    }

    /// The severity the finding always has; `None` when it follows the pool's level or the
    /// pressure on the host (see [`Self::summary`] and the finding's family in `verdict`).
    pub fn severity(self) -> Option<Severity> {
        match self {
            FindingCode::PoolExhausted
            | FindingCode::PoolNearExhaustion
            | FindingCode::RangeSmall
            | FindingCode::BindBeforeConnectSuspected
            | FindingCode::HighChurnNoPooling
            | FindingCode::ExcludedRangeOverlap => None,
            FindingCode::TwReuseOff
            | FindingCode::TwBucketOverflow
            | FindingCode::TwBucketsNearLimit
            | FindingCode::TimeWaitDelayOutOfRange
            | FindingCode::BindFailures => Some(Severity::Warning),
            FindingCode::PortExhaustionEvents | FindingCode::ConnectFailures => {
                Some(Severity::Critical)
            }
            FindingCode::ListenerInRange
            | FindingCode::DynamicRangeOffByOne
            | FindingCode::RegistryValueOutOfRange
            | FindingCode::MaxUserPortIgnored
            | FindingCode::StrictTimeWaitSeqCheckUnverified => Some(Severity::Info),
        }
    }
}

impl std::fmt::Display for FindingCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for FindingCode {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// Stable machine-readable code, e.g. `pool_exhausted`.
    pub code: FindingCode,
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

impl Finding {
    /// A host-wide finding of a code whose severity is fixed ([`FindingCode::severity`]).
    pub(super) fn host(code: FindingCode, message: String, evidence: Value, fix: String) -> Self {
        debug_assert!(code.severity().is_some(), "{code} has no fixed severity");
        Finding {
            code,
            severity: code.severity().unwrap_or(Severity::Info),
            pool: None,
            message,
            evidence: evidence_map(evidence),
            fix,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub level: Level,
    pub findings: Vec<Finding>,
}

pub(super) fn evidence_map(v: Value) -> Map<String, Value> {
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

/// What every finding family looks at.
struct Context<'a> {
    snapshot: &'a Snapshot,
    settings: &'a Settings,
    target: &'a Target,
    linux: bool,
    capacity: Option<&'a Capacity>,
    pools: &'a [Pool],
    binds: &'a [BindPattern],
    time_wait_total: u64,
    thresholds: Thresholds,
}

impl Context<'_> {
    /// The pool's local address shows the bind-before-connect pattern, whose ports
    /// tcp_tw_reuse cannot free.
    fn bind_style(&self, p: &Pool) -> bool {
        self.binds.iter().any(|b| b.local_ip == p.key.local_ip)
    }

    fn any_pressure(&self) -> bool {
        self.pools.iter().any(|p| p.level > Level::Ok)
    }
}

/// All findings, most severe first, and the verdict they add up to. One function per family;
/// the order they run in is the order of equally severe findings in the report.
pub(super) fn verdict(
    snapshot: &Snapshot,
    capacity: Option<&Capacity>,
    pools: &[Pool],
    binds: &[BindPattern],
    time_wait_total: u64,
    thresholds: Thresholds,
) -> Verdict {
    let cx = Context {
        snapshot,
        settings: &snapshot.settings,
        target: &snapshot.host.target,
        linux: snapshot.os == Os::Linux,
        capacity,
        pools,
        binds,
        time_wait_total,
        thresholds,
    };
    let mut findings = Vec::new();
    pool_findings(&cx, &mut findings);
    tw_reuse_findings(&cx, &mut findings);
    tw_bucket_findings(&cx, &mut findings);
    range_findings(&cx, &mut findings);
    bind_findings(&cx, &mut findings);
    churn_findings(&cx, &mut findings);
    super::failures::findings(snapshot, &mut findings);
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

/// `pool_exhausted`, `pool_near_exhaustion`: every pool above Ok.
fn pool_findings(cx: &Context, out: &mut Vec<Finding>) {
    for pool in cx.pools.iter().filter(|p| p.level > Level::Ok) {
        out.push(pool_finding(
            cx.snapshot,
            pool,
            cx.bind_style(pool),
            cx.thresholds,
        ));
    }
}

/// `tw_reuse_off`: only worth raising where pressured pools are full of TIME_WAIT.
fn tw_reuse_findings(cx: &Context, out: &mut Vec<Finding>) {
    let s = cx.settings;
    if !cx.linux || s.tw_reuse == Some(1) {
        return;
    }
    let pressured: Vec<&Pool> = cx
        .pools
        .iter()
        .filter(|p| {
            p.scope == Scope::Destination
                && !cx.bind_style(p)
                && p.level > Level::Ok
                && !p.tw_reuse_applies
                && p.blocking_time_wait * 2 >= p.used()
        })
        .collect();
    if pressured.is_empty() {
        return;
    }
    let blocking: u64 = pressured.iter().map(|p| p.blocking_time_wait).sum();
    let delay = s.tw_reuse_delay_ms.unwrap_or(rules::TW_REUSE_DELAY_MS);
    let reuse = s.tw_reuse.map_or("unknown".to_string(), |v| v.to_string());
    let ts_off = s.tcp_timestamps == Some(0);
    out.push(Finding::host(
        FindingCode::TwReuseOff,
        format!(
            "tcp_tw_reuse={reuse}: {} TIME_WAIT sockets block ports in {} pressured pool(s); with tcp_tw_reuse=1 they become reusable after {delay} ms",
            group(blocking),
            pressured.len()
        ),
        json!({
            "tw_reuse": s.tw_reuse, "tcp_timestamps": s.tcp_timestamps,
            "tw_reuse_delay_ms": s.tw_reuse_delay_ms,
            "blocking_time_wait": blocking, "pools": pressured.len(),
        }),
        if ts_off {
            format!(
                "{} && {} (reuse needs TCP timestamps)",
                sysctl_fix("net.ipv4.tcp_timestamps", "1"),
                sysctl_fix("net.ipv4.tcp_tw_reuse", "1")
            )
        } else {
            format!(
                "{}\n(outbound connections only; safe for clients)",
                tune_fix("net.ipv4.tcp_tw_reuse", "1", cx.target)
            )
        },
    ));
}

/// `tw_bucket_overflow`, `tw_buckets_near_limit`: the TIME_WAIT table itself.
fn tw_bucket_findings(cx: &Context, out: &mut Vec<Finding>) {
    let Some(max) = cx.settings.max_tw_buckets else {
        return;
    };
    let time_wait_total = cx.time_wait_total;
    let overflow = cx
        .snapshot
        .counters
        .tcp_ext("TCPTimeWaitOverflow")
        .unwrap_or(0);
    let fix = format!(
        "{}\n(and reduce churn: reuse connections)",
        tune_fix(
            "net.ipv4.tcp_max_tw_buckets",
            &max.max(1).saturating_mul(2).to_string(),
            cx.target
        )
    );
    if overflow > 0 {
        out.push(Finding::host(
            FindingCode::TwBucketOverflow,
            format!(
                "{} TIME_WAIT sockets were dropped at once because tcp_max_tw_buckets ({}) was full; TIME_WAIT now {}",
                group(overflow.unsigned_abs()),
                group(max),
                group(time_wait_total)
            ),
            json!({
                "TCPTimeWaitOverflow": overflow, "max_tw_buckets": max,
                "time_wait": time_wait_total,
            }),
            fix,
        ));
    } else if max > 0 && time_wait_total as f64 >= 0.9 * max as f64 {
        out.push(Finding::host(
            FindingCode::TwBucketsNearLimit,
            format!(
                "{} TIME_WAIT sockets of tcp_max_tw_buckets {} ({:.0}%): past the limit new ones are dropped",
                group(time_wait_total),
                group(max),
                100.0 * time_wait_total as f64 / max as f64
            ),
            json!({"max_tw_buckets": max, "time_wait": time_wait_total}),
            fix,
        ));
    }
}

/// `range_small`, `listener_in_range`: what the range itself offers.
fn range_findings(cx: &Context, out: &mut Vec<Finding>) {
    let Some(cap) = cx.capacity else {
        return;
    };
    let s = cx.settings;
    if cx.linux && cap.range.len() < 16384 {
        let default = rules::LINUX_DEFAULT_RANGE;
        out.push(Finding {
            code: FindingCode::RangeSmall,
            severity: if cx.any_pressure() {
                Severity::Warning
            } else {
                Severity::Info
            },
            pool: None,
            message: format!(
                "the ephemeral range {} has only {} ports (default {default}: {})",
                cap.range,
                group(u64::from(cap.range.len())),
                group(u64::from(default.len()))
            ),
            evidence: evidence_map(
                json!({"low": cap.range.low, "high": cap.range.high, "ports": cap.range.len()}),
            ),
            fix: tune_fix(
                "net.ipv4.ip_local_port_range",
                &KnobValue::Range(rules::LINUX_SUGGESTED_RANGE).text(),
                cx.target,
            ),
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
        let mut reserved = s.reserved_ports.clone();
        reserved.extend(
            cap.bound_in_range
                .iter()
                .map(|&p| PortRange { low: p, high: p }),
        );
        out.push(Finding::host(
            FindingCode::ListenerInRange,
            format!(
                "{} port(s) inside the ephemeral range are held by listeners or bound sockets ({}{}): they leave every pool, and an outbound connection can take them while their service restarts",
                cap.bound_in_range.len(),
                shown.join(", "),
                if more > 0 { format!(", … {more} more") } else { String::new() }
            ),
            json!({"ports": cap.bound_in_range}),
            if cx.linux {
                tune_fix(
                    "net.ipv4.ip_local_reserved_ports",
                    &KnobValue::List(reserved).text(),
                    cx.target,
                )
            } else {
                "move the listener out of the dynamic range, or exclude its port: netsh int ipv4 add excludedportrange protocol=tcp startport=PORT numberofports=1".into()
            },
        ));
    }
}

/// `bind_before_connect_suspected`: one per local address with the pattern.
fn bind_findings(cx: &Context, out: &mut Vec<Finding>) {
    for b in cx.binds {
        let pool = cx
            .pools
            .iter()
            .find(|p| p.scope == Scope::LocalAddress && p.key.local_ip == b.local_ip);
        let severity = pool.map_or(Severity::Info, |p| Severity::from_level(p.level));
        out.push(Finding {
            code: FindingCode::BindBeforeConnectSuspected,
            severity: severity.max(Severity::Info),
            pool: pool.map(|p| p.key.to_string()),
            message: format!(
                "{} connections from {} to {} destinations never share a local port ({:.0}% have bind()'s parity): the app likely calls bind() before connect(), so all destinations share one range",
                group(b.sockets), b.local_ip, b.destinations, b.bind_parity_share * 100.0
            ),
            evidence: evidence_map(json!({
                "local_ip": b.local_ip.to_string(), "sockets": b.sockets, "destinations": b.destinations,
                "shared_ports": b.shared_ports, "bind_parity_share": round(b.bind_parity_share, 3),
            })),
            fix: "set IP_BIND_ADDRESS_NO_PORT on the socket before bind() (Linux 4.2+), or do not bind() before connect(); nginx proxy_bind, HAProxy `source` and Envoy upstream_bind_config do this bind".into(),
        });
    }
}

/// `high_churn_no_pooling`: a destination pool whose sockets are nearly all TIME_WAIT at a high
/// connect rate.
fn churn_findings(cx: &Context, out: &mut Vec<Finding>) {
    for p in cx.pools.iter().filter(|p| p.scope == Scope::Destination) {
        let rate = p.connect_rate_per_s.unwrap_or(0.0);
        if rate >= 20.0 && p.time_wait >= 200 && p.time_wait * 10 >= p.in_use * 8 {
            let who = p.processes.first().map_or_else(
                || "the client".to_string(),
                |o| format!("{} ({})", o.name, o.pid),
            );
            out.push(Finding {
                code: FindingCode::HighChurnNoPooling,
                severity: if p.level > Level::Ok { Severity::from_level(p.level).min(Severity::Warning) } else { Severity::Info },
                pool: Some(p.key.to_string()),
                message: format!(
                    "{:.0} new connections/s to {} and {} of {} sockets in TIME_WAIT: a connection per request, no pooling",
                    rate, p.key, group(p.time_wait), group(p.in_use)
                ),
                evidence: evidence_map(json!({"connect_rate_per_s": round(rate, 1), "time_wait": p.time_wait, "in_use": p.in_use})),
                fix: format!("make {who} reuse connections: HTTP keep-alive or a connection pool (Go: raise Transport.MaxIdleConnsPerHost; .NET: one shared HttpClient; Java/Node/Python: a keep-alive agent; databases: a pool)"),
            });
        }
    }
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
    let target = &snapshot.host.target;
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
                tune_fix("net.ipv4.tcp_tw_reuse", "1", target)
            ));
        } else if s.ephemeral_ports.is_some_and(|r| r.len() < 50000) {
            fixes.push(format!(
                "or host-wide: {}",
                tune_fix(
                    "net.ipv4.ip_local_port_range",
                    &KnobValue::Range(rules::LINUX_SUGGESTED_RANGE).text(),
                    target
                )
            ));
        }
    }
    if snapshot.os == Os::Windows {
        fixes.extend(super::windows::pool_fixes(snapshot, p));
    }
    let code = if exhausted {
        FindingCode::PoolExhausted
    } else {
        FindingCode::PoolNearExhaustion
    };
    Finding {
        code,
        severity: Severity::from_level(p.level),
        pool: Some(p.key.to_string()),
        message,
        evidence: evidence_map(json!({
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

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;

    /// The rows of the README's findings table: (code, when).
    fn readme_rows() -> Vec<(String, String)> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
        let readme = std::fs::read_to_string(path).expect("README.md is readable");
        let section = readme
            .split_once("\n### Findings\n")
            .map(|(_, rest)| rest)
            .expect("README has a ### Findings section");
        section
            .lines()
            .skip_while(|l| !l.starts_with("| code | when |"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|l| {
                let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
                assert_eq!(cells.len(), 2, "README findings row {l:?}");
                (cells[0].trim_matches('`').to_string(), cells[1].to_string())
            })
            .collect()
    }

    #[test]
    fn the_readme_table_lists_every_code_as_the_enum_does() {
        let want: Vec<(String, String)> = FindingCode::ALL
            .iter()
            .map(|c| (c.as_str().to_string(), c.summary().to_string()))
            .collect();
        let table = want.iter().fold(String::new(), |mut t, (c, w)| {
            let _ = writeln!(t, "| `{c}` | {w} |");
            t
        });
        assert_eq!(
            readme_rows(),
            want,
            "README.md's findings table differs from FindingCode; it should read:\n{table}"
        );
    }

    #[test]
    fn codes_are_unique_snake_case_wire_names() {
        let mut seen = std::collections::BTreeSet::new();
        for c in FindingCode::ALL {
            let json = serde_json::to_value(c).unwrap();
            assert_eq!(json, c.as_str(), "{c:?}");
            assert_eq!(c.to_string(), c.as_str());
            assert!(
                c.as_str()
                    .chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch == '_'),
                "{c:?}"
            );
            assert!(seen.insert(c.as_str()), "{c} twice");
        }
    }
}
