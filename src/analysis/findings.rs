//! Verdict and findings: stable codes (model.md), numbers, evidence and a pasteable fix.

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::{owners_in_state, BindPattern, Capacity, Filler, Pool, Scope, Thresholds};
use crate::knobs::{sysctl_fix, tune_fix, tune_fix_all, KnobValue};
use crate::rules;
use crate::snapshot::{Os, PortRange, Settings, Snapshot, Target, TcpState};
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
    /// Sockets the peer closed that the application never closed hold ports.
    CloseWaitLeak,
    /// Connects that the destination never answers hold ports.
    SynSentStuck,
    /// The range could not be read: no capacity is known, so no verdict on ports.
    CapacityUnknown,
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
    /// One process holds many BOUND ports (bound, never connected nor closed): the leak.
    BoundPortLeak,
    // Observed failures (`check --observe`, Linux).
    /// connect() failed with EADDRNOTAVAIL while observed.
    ConnectFailures,
    /// bind() failed with EADDRINUSE while observed.
    BindFailures,
    // UDP (docs/udp.md).
    /// A UDP pool has no free port: new UDP sockets fail now.
    UdpPoolExhausted,
    /// A UDP pool is over `--warn`/`--crit`.
    UdpPoolNearExhaustion,
    /// One process holds most of a UDP pool.
    UdpSocketLeak,
    // NAT (Linux conntrack; `--cloud-nat`).
    /// A SNAT pool has no free NAT port.
    SnatPoolExhausted,
    /// A SNAT pool is over `--warn`/`--crit`.
    SnatPoolNearExhaustion,
    /// conntrack `insert_failed`/`drop` counted dropped new flows.
    ConntrackInsertFailed,
    /// The conntrack table is near `nf_conntrack_max`.
    ConntrackTableFull,
    /// Flows to one destination near the cloud NAT's quota (a model).
    CloudNatQuota,
    /// Windows Tcpip event 4266: UDP ports already ran out.
    UdpPortAllocationFailed,
}

impl FindingCode {
    /// In the order the README lists them.
    pub const ALL: [FindingCode; 31] = [
        FindingCode::PoolExhausted,
        FindingCode::PoolNearExhaustion,
        FindingCode::TwReuseOff,
        FindingCode::TwBucketOverflow,
        FindingCode::TwBucketsNearLimit,
        FindingCode::RangeSmall,
        FindingCode::ListenerInRange,
        FindingCode::BindBeforeConnectSuspected,
        FindingCode::HighChurnNoPooling,
        FindingCode::CloseWaitLeak,
        FindingCode::SynSentStuck,
        FindingCode::CapacityUnknown,
        FindingCode::PortExhaustionEvents,
        FindingCode::ExcludedRangeOverlap,
        FindingCode::DynamicRangeOffByOne,
        FindingCode::TimeWaitDelayOutOfRange,
        FindingCode::RegistryValueOutOfRange,
        FindingCode::MaxUserPortIgnored,
        FindingCode::StrictTimeWaitSeqCheckUnverified,
        FindingCode::BoundPortLeak,
        FindingCode::ConnectFailures,
        FindingCode::BindFailures,
        FindingCode::UdpPoolExhausted,
        FindingCode::UdpPoolNearExhaustion,
        FindingCode::UdpSocketLeak,
        FindingCode::SnatPoolExhausted,
        FindingCode::SnatPoolNearExhaustion,
        FindingCode::ConntrackInsertFailed,
        FindingCode::ConntrackTableFull,
        FindingCode::CloudNatQuota,
        FindingCode::UdpPortAllocationFailed,
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
            FindingCode::CloseWaitLeak => "close_wait_leak",
            FindingCode::SynSentStuck => "syn_sent_stuck",
            FindingCode::CapacityUnknown => "capacity_unknown",
            FindingCode::PortExhaustionEvents => "port_exhaustion_events",
            FindingCode::ExcludedRangeOverlap => "excluded_range_overlap",
            FindingCode::DynamicRangeOffByOne => "dynamic_range_off_by_one",
            FindingCode::TimeWaitDelayOutOfRange => "time_wait_delay_out_of_range",
            FindingCode::RegistryValueOutOfRange => "registry_value_out_of_range",
            FindingCode::MaxUserPortIgnored => "max_user_port_ignored",
            FindingCode::StrictTimeWaitSeqCheckUnverified => {
                "strict_time_wait_seq_check_unverified"
            }
            FindingCode::BoundPortLeak => "bound_port_leak",
            FindingCode::ConnectFailures => "connect_failures",
            FindingCode::BindFailures => "bind_failures",
            FindingCode::UdpPoolExhausted => "udp_pool_exhausted",
            FindingCode::UdpPoolNearExhaustion => "udp_pool_near_exhaustion",
            FindingCode::UdpSocketLeak => "udp_socket_leak",
            FindingCode::SnatPoolExhausted => "snat_pool_exhausted",
            FindingCode::SnatPoolNearExhaustion => "snat_pool_near_exhaustion",
            FindingCode::ConntrackInsertFailed => "conntrack_insert_failed",
            FindingCode::ConntrackTableFull => "conntrack_table_full",
            FindingCode::CloudNatQuota => "cloud_nat_quota",
            FindingCode::UdpPortAllocationFailed => "udp_port_allocation_failed",
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
            FindingCode::CloseWaitLeak => {
                "outbound sockets in CLOSE_WAIT hold ports: the peer closed, the application never called close()"
            }
            FindingCode::SynSentStuck => {
                "outbound connects stuck in SYN_SENT hold ports: the destination does not answer"
            }
            FindingCode::CapacityUnknown => {
                "the ephemeral range could not be read, so no pool's capacity is known: unknown is not OK"
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
            FindingCode::BoundPortLeak => {
                "Windows: one process holds 100+ BOUND ports of the dynamic range (bound, never connected or closed)"
            }
            FindingCode::ConnectFailures => {
                "`--observe`: connect() calls failed with EADDRNOTAVAIL (no free port) in the window, per process and pool"
            }
            FindingCode::BindFailures => {
                "`--observe`: bind() calls failed with EADDRINUSE in the window (bind-before-connect: `IP_BIND_ADDRESS_NO_PORT`)"
            }
            FindingCode::UdpPoolExhausted => {
                "a UDP pool (namespace or host, per IP version) has no free port: new UDP sockets fail with EAGAIN now"
            }
            FindingCode::UdpPoolNearExhaustion => {
                "a UDP pool is over `--warn`/`--crit`, naming the processes that hold most ports"
            }
            FindingCode::UdpSocketLeak => {
                "one process holds at least half of a UDP pool's ports (a socket per request, or sockets never closed)"
            }
            FindingCode::SnatPoolExhausted => {
                "a SNAT pool (NAT address → remote address:port, protocol) has no free NAT port: new flows are dropped"
            }
            FindingCode::SnatPoolNearExhaustion => {
                "a SNAT pool is over `--warn`/`--crit` of its NAT port range"
            }
            FindingCode::ConntrackInsertFailed => {
                "conntrack's `insert_failed`/`drop` counted dropped new flows (no free NAT tuple, or the clash race)"
            }
            FindingCode::ConntrackTableFull => {
                "the conntrack table is over `--warn`/`--crit` of `nf_conntrack_max`"
            }
            FindingCode::CloudNatQuota => {
                "`--cloud-nat`: flows to one destination near the cloud NAT's documented quota (a model)"
            }
            FindingCode::UdpPortAllocationFailed => {
                "Windows: the System log has Tcpip event 4266: UDP ports already ran out (DNS fails first)"
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
            | FindingCode::CloseWaitLeak
            | FindingCode::SynSentStuck
            | FindingCode::ExcludedRangeOverlap
            | FindingCode::UdpPoolExhausted
            | FindingCode::UdpPoolNearExhaustion
            | FindingCode::SnatPoolExhausted
            | FindingCode::SnatPoolNearExhaustion
            | FindingCode::ConntrackInsertFailed
            | FindingCode::ConntrackTableFull
            | FindingCode::CloudNatQuota => None,
            FindingCode::TwReuseOff
            | FindingCode::TwBucketOverflow
            | FindingCode::TwBucketsNearLimit
            | FindingCode::CapacityUnknown
            | FindingCode::TimeWaitDelayOutOfRange
            | FindingCode::BoundPortLeak
            | FindingCode::BindFailures
            | FindingCode::UdpSocketLeak => Some(Severity::Warning),
            FindingCode::PortExhaustionEvents
            | FindingCode::ConnectFailures
            | FindingCode::UdpPortAllocationFailed => Some(Severity::Critical),
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

impl Verdict {
    /// Adds findings of another family (UDP), keeping the order and the level right.
    pub(super) fn add(&mut self, more: Vec<Finding>) {
        if more.is_empty() {
            return;
        }
        self.findings.extend(more);
        self.level = self
            .findings
            .iter()
            .map(|f| match f.severity {
                Severity::Info => Level::Ok,
                Severity::Warning => Level::Warning,
                Severity::Critical => Level::Critical,
            })
            .max()
            .unwrap_or(Level::Ok);
        self.findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    }
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
    capacity_unknown_findings(&cx, &mut findings);
    pool_findings(&cx, &mut findings);
    tw_reuse_findings(&cx, &mut findings);
    tw_bucket_findings(&cx, &mut findings);
    range_findings(&cx, &mut findings);
    bind_findings(&cx, &mut findings);
    churn_findings(&cx, &mut findings);
    stuck_findings(&cx, &mut findings);
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

/// `capacity_unknown`: without the range no pool can be judged, and unknown is not OK.
fn capacity_unknown_findings(cx: &Context, out: &mut Vec<Finding>) {
    let unknown = cx.pools.iter().filter(|p| p.capacity.is_none()).count();
    if cx.capacity.is_some() && unknown == 0 {
        return;
    }
    let (what, fix) = if cx.linux {
        (
            "net.ipv4.ip_local_port_range",
            "check that /proc/sys/net/ipv4/ip_local_port_range is readable in the namespace inspected (`sysctl net.ipv4.ip_local_port_range`) and run check again",
        )
    } else {
        (
            "the TCP dynamic port range",
            "run `netsh int ipv4 show dynamicport tcp` (and `ipv6`) or, in PowerShell, `Get-NetTCPSetting -SettingName InternetCustom` and fix what makes them fail, then run check again",
        )
    };
    out.push(Finding::host(
        FindingCode::CapacityUnknown,
        format!(
            "{what} could not be read: the capacity of {} is unknown, so nothing here says whether ports are running out",
            match unknown {
                0 => "every pool".to_string(),
                1 => "1 pool".to_string(),
                n => format!("{} pools", group(n as u64)),
            }
        ),
        json!({"range": cx.settings.ephemeral_ports, "pools_without_capacity": unknown}),
        fix.into(),
    ));
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
            fix: linux_range_fix(cx.snapshot),
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
                "{} inside the ephemeral range {} held by listeners or bound sockets ({}{}): they leave every pool, and an outbound connection can take them while their service restarts",
                crate::units::count(cap.bound_in_range.len() as u64, "port", "ports"),
                if cap.bound_in_range.len() == 1 { "is" } else { "are" },
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
                "{} connections from {} to {} destinations never share a local port ({:.0}% have bind()'s parity): the app likely calls bind() before connect(), so all destinations share one range, and its ports leave every other connect pool of the namespace",
                group(b.sockets), b.local_ip, b.destinations, b.bind_parity_share * 100.0
            ),
            evidence: evidence_map(json!({
                "local_ip": b.local_ip.to_string(), "sockets": b.sockets, "destinations": b.destinations,
                "shared_ports": b.shared_ports, "bind_parity_share": round(b.bind_parity_share, 3),
            })),
            fix: "set the socket option IP_BIND_ADDRESS_NO_PORT before bind() (Linux 4.2+; nginx, HAProxy and Envoy set it for proxy_bind, `source` and upstream_bind_config): the port is then chosen at connect(), shared across destinations, and no longer taken out of every other pool; or do not bind() before connect()".into(),
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

/// Sockets in one state of a pool below which they are transient, not stuck.
const STUCK_MIN_SOCKETS: u64 = 10;

/// `close_wait_leak`, `syn_sent_stuck`: ports held by sockets that no connection reuse, pool
/// size or range frees: an application that does not close what its peer closed, a
/// destination that does not answer.
fn stuck_findings(cx: &Context, out: &mut Vec<Finding>) {
    for p in cx
        .pools
        .iter()
        .filter(|p| p.scope == Scope::Destination || !cx.linux)
    {
        for (state, code) in [
            (TcpState::CloseWait, FindingCode::CloseWaitLeak),
            (TcpState::SynSent, FindingCode::SynSentStuck),
        ] {
            let n = p.state(state.name());
            if n < STUCK_MIN_SOCKETS {
                continue;
            }
            let owners = owners_in_state(cx.snapshot, p, state);
            let who = owners.first().map_or_else(
                || "the client".to_string(),
                |o| format!("{} ({}, {} of them)", o.name, o.pid, group(o.sockets)),
            );
            let share = p.capacity.filter(|&c| c > 0).map_or(String::new(), |c| {
                format!(
                    " ({:.0}% of its {} ports)",
                    100.0 * n as f64 / f64::from(c),
                    group(u64::from(c))
                )
            });
            let (message, fix) = if code == FindingCode::CloseWaitLeak {
                (
                    format!(
                        "{} sockets to {} are in CLOSE_WAIT{share}: the peer closed them and {who} never called close(); they hold their ports until it does",
                        group(n),
                        p.key
                    ),
                    format!(
                        "fix {who}: close a connection when a read returns 0 bytes (EOF) or the peer resets it, and release pooled connections the server closed; restarting the process frees the ports now"
                    ),
                )
            } else {
                (
                    format!(
                        "{} connects to {} are stuck in SYN_SENT{share}: the destination does not answer (down, filtered, or dropping SYNs); each holds its port for up to ~130 s",
                        group(n),
                        p.key
                    ),
                    format!(
                        "check that {} is up and reachable (firewall, security group, route); make {who} use a short connect timeout and back off instead of retrying at once",
                        p.key.remote_ip.map_or_else(|| "the destination".to_string(), |ip| match p.key.remote_port {
                            Some(port) => format!("{ip} port {port}"),
                            None => ip.to_string(),
                        })
                    ),
                )
            };
            out.push(Finding {
                code,
                severity: Severity::from_level(p.level),
                pool: Some(p.key.to_string()),
                message,
                evidence: evidence_map(json!({
                    "state": state.name(), "sockets": n, "in_use": p.in_use,
                    "capacity": p.capacity,
                    "processes": owners,
                })),
                fix,
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
            let rate = p.connect_rate_per_s.map_or(String::new(), |r| {
                format!(
                    " at {} new connections/s over the last {}",
                    if r < 10.0 {
                        format!("{r:.1}")
                    } else {
                        group(r.round() as u64)
                    },
                    human_duration(p.rate_window_seconds.unwrap_or(0.0).round())
                )
            });
            format!(", full in {about}{d}{rate}")
        })
        .unwrap_or_default();
    let message = if exhausted {
        format!(
            "{} has no free port: {} of {} in use ({}); new connections fail ({})",
            p.key,
            group(used),
            group(u64::from(cap)),
            states_phrase(p),
            if snapshot.os == Os::Linux {
                "EADDRNOTAVAIL"
            } else {
                "WSAENOBUFS 10055"
            }
        )
    } else {
        format!(
            "{} is {:.0}% full ({} of {}: {}){eta}",
            p.key,
            util * 100.0,
            group(used),
            crate::units::count(u64::from(cap), "port", "ports"),
            states_phrase(p)
        )
    };
    let message = if p.bind_held_ports > 0 {
        format!(
            "{message}; {} port{} of the range {} held by sockets that bind() before connect() (shown under bind_before_connect_suspected): bind()'s ports leave every connect pool of the namespace",
            group(p.bind_held_ports),
            if p.bind_held_ports == 1 { "" } else { "s" },
            if p.bind_held_ports == 1 { "is" } else { "are" }
        )
    } else {
        message
    };
    let message = if p.overcommitted {
        format!(
            "{message}; more ports are in use than the pool can hold now: connections took ports of the range before listeners or bind() claimed them, or before the range or the reserved ports changed, and keep them"
        )
    } else {
        message
    };
    let mut fixes = Vec::new();
    let owner = p
        .processes
        .first()
        .map(|o| format!("{} ({})", o.name, o.pid));
    let filler = p.filled_by();
    let client = owner.clone().unwrap_or_else(|| "the client".into());
    if bind_style && snapshot.os == Os::Linux {
        fixes.push("the app binds before connect: set IP_BIND_ADDRESS_NO_PORT before bind() so ports are shared across destinations".to_string());
    } else {
        fixes.push(match filler {
            Filler::TimeWait => format!(
                "{client} opens a connection per request: reuse connections (keep-alive / a connection pool)"
            ),
            Filler::Established => format!(
                "{client} holds {} open connection{} to one destination: cap the pool size, or spread over more destination addresses/ports",
                group(p.established),
                if p.established == 1 { "" } else { "s" }
            ),
            Filler::CloseWait => format!(
                "{} sockets are in CLOSE_WAIT: the application does not close connections its peer closed (see close_wait_leak); no range or pool size fixes a leak",
                group(p.state("CLOSE_WAIT"))
            ),
            Filler::SynSent => format!(
                "{} connects are stuck in SYN_SENT: the destination does not answer (see syn_sent_stuck); use connect timeouts and back off",
                group(p.state("SYN_SENT"))
            ),
            Filler::Other => format!(
                "the ports are held by closing connections ({}): find out why they do not finish closing",
                states_phrase(p)
            ),
        });
    }
    // One host-wide knob, the one that helps this pool most; the host findings carry the rest.
    // None for a leak or a dead destination: more ports only postpone the failure.
    let leak = matches!(filler, Filler::CloseWait | Filler::SynSent);
    if snapshot.os == Os::Linux && !leak {
        if !p.tw_reuse_applies && p.blocking_time_wait * 2 >= used && s.tw_reuse != Some(1) {
            fixes.push(format!(
                "or host-wide: {}",
                tune_fix("net.ipv4.tcp_tw_reuse", "1", target)
            ));
        } else if s.ephemeral_ports.is_some_and(|r| r.len() < 50000) {
            fixes.push(format!("or host-wide: {}", linux_range_fix(snapshot)));
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
            "bind_held_ports": p.bind_held_ports,
            "utilization": p.utilization.map(|u| round(u, 4)),
            "connect_rate_per_s": p.connect_rate_per_s.map(|r| round(r, 1)),
            "rate_window_seconds": p.rate_window_seconds.map(|w| round(w, 1)),
            "eta_seconds": p.eta_seconds.map(|e| round(e, 1)),
            "warn": thresholds.warn, "crit": thresholds.crit,
        })),
        fix: fixes.join("\n"),
    }
}

/// The wider Linux range as a fix `tune` accepts as printed (the planner's own rule,
/// [`crate::tune::plan::linux_range_sets`]).
pub(super) fn linux_range_fix(snapshot: &Snapshot) -> String {
    let sets = crate::tune::plan::linux_range_sets(
        &snapshot.listen_ports(),
        &snapshot.settings.reserved_ports,
        rules::LINUX_SUGGESTED_RANGE,
    );
    tune_fix_all(&sets, &snapshot.host.target)
}

/// "100 CLOSE_WAIT, 3 ESTABLISHED": the pool's states, most sockets first.
fn states_phrase(p: &Pool) -> String {
    let mut states: Vec<(&str, u64)> = p
        .states
        .iter()
        .map(|(k, v)| (*k, *v))
        .filter(|&(_, n)| n > 0)
        .collect();
    states.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let parts: Vec<String> = states
        .iter()
        .map(|(name, n)| {
            if *name == "TIME_WAIT" && p.blocking_time_wait < p.time_wait {
                format!(
                    "{} TIME_WAIT ({} reusable)",
                    group(*n),
                    group(p.time_wait - p.blocking_time_wait)
                )
            } else {
                format!("{} {name}", group(*n))
            }
        })
        .collect();
    if parts.is_empty() {
        "no sockets".into()
    } else {
        parts.join(", ")
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
