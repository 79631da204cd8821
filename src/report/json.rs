//! The `portdoctor.check/v1` JSON contract (model.md). Fields may be added, never renamed or
//! removed without a new schema version. Unknown values are `null`.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::analysis::failures::pool_failures;
use crate::analysis::{
    AddressCount, Analysis, BindPattern, Finding, Level, Pool, ProcessCount, Scope, Thresholds,
    UdpHolder, UdpPool,
};
use crate::rules::IpVersion;
use crate::snapshot::{
    ConnectFailures, FailureError, HostInfo, Os, Settings, Snapshot, SocketSource, WindowsSettings,
};

pub const SCHEMA: &str = "portdoctor.check/v1";

/// Counters worth keeping in the report (the full TcpExt line has over a hundred).
const TCP_COUNTERS: &[&str] = &[
    "ActiveOpens",
    "PassiveOpens",
    "AttemptFails",
    "EstabResets",
    "CurrEstab",
];
const TCP_EXT_COUNTERS: &[&str] = &[
    "TW",
    "TWKilled",
    "TWRecycled",
    "TCPTimeWaitOverflow",
    "PAWSEstab",
    "TCPAbortOnMemory",
];

#[derive(Serialize)]
pub struct CheckReport<'a> {
    pub schema: &'static str,
    pub tool: Tool,
    pub os: Os,
    pub host: &'a HostInfo,
    pub collected_at_unix_ms: u64,
    pub source: SocketSource,
    pub settings: SettingsOut<'a>,
    pub capacity: Option<CapacityOut>,
    pub states: &'a BTreeMap<&'static str, u64>,
    pub sockets: SocketCounts,
    pub counters: CountersOut,
    pub owners: OwnersOut,
    pub pools: Vec<PoolEntry<'a>>,
    pub bind_before_connect: &'a [BindPattern],
    pub verdict: VerdictOut<'a>,
    pub thresholds: Thresholds,
    pub notes: &'a [String],
    /// `check --observe`: failed connect()/bind() calls in the window; `null` = not observed.
    pub connect_failures: Option<FailuresOut>,
    /// The conntrack table (Linux with nf_conntrack loaded); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conntrack: Option<super::snat::ConntrackOut<'a>>,
}

#[derive(Serialize)]
pub struct FailuresOut {
    pub source: String,
    pub window_seconds: f64,
    pub total: u64,
    pub by_error: BTreeMap<&'static str, u64>,
    pub events: Vec<FailureEventOut>,
    /// Failures in other namespaces of the host, by namespace (not in `total`).
    pub other_namespaces: BTreeMap<String, u64>,
    /// Samples the kernel dropped (full buffer): counts are low by up to this much.
    pub lost: u64,
}

#[derive(Serialize)]
pub struct FailureEventOut {
    pub pid: Option<u32>,
    pub process: Option<String>,
    pub exited: bool,
    pub netns: Option<String>,
    pub local_ip: Option<String>,
    pub remote_ip: Option<String>,
    pub remote_port: Option<u16>,
    pub error: &'static str,
    pub count: u64,
}

pub fn failures_out(f: &ConnectFailures) -> FailuresOut {
    FailuresOut {
        source: f.source.clone(),
        window_seconds: round(f.window_seconds, 3),
        total: f.total(),
        by_error: [FailureError::AddrNotAvail, FailureError::AddrInUse]
            .into_iter()
            .map(|e| (e.name(), f.by_error(e)))
            .collect(),
        events: f
            .events
            .iter()
            .map(|c| FailureEventOut {
                pid: c.pid,
                process: c.process.clone(),
                exited: c.exited,
                netns: c.netns_label(),
                local_ip: c.local_ip.map(|ip| ip.to_string()),
                remote_ip: c.remote_ip.map(|ip| ip.to_string()),
                remote_port: c.remote_port,
                error: c.error.name(),
                count: c.count,
            })
            .collect(),
        other_namespaces: f.other_namespaces.clone(),
        lost: f.lost,
    }
}

#[derive(Serialize)]
pub struct Tool {
    pub name: &'static str,
    pub version: &'static str,
}

#[derive(Serialize)]
pub struct SettingsOut<'a> {
    #[serde(flatten)]
    pub common: &'a Settings,
    /// Windows only (absent on Linux): dynamic ranges per IP version, excluded ranges, Tcpip
    /// registry values (`null` = absent, OS default) and events 4227/4231 (`null` = unreadable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub windows: Option<&'a WindowsSettings>,
}

#[derive(Serialize)]
pub struct CapacityOut {
    pub range_ports: u32,
    pub reserved_in_range: u32,
    pub bound_in_range: Vec<u16>,
    pub usable_per_pool: u32,
}

#[derive(Serialize)]
pub struct SocketCounts {
    pub total: u64,
    pub inbound: u64,
    pub outbound: u64,
    pub other: u64,
    pub time_wait: u64,
}

#[derive(Serialize)]
pub struct CountersOut {
    pub tcp: BTreeMap<&'static str, Option<i64>>,
    pub tcp_ext: BTreeMap<&'static str, Option<i64>>,
    pub sockstat: BTreeMap<String, i64>,
}

#[derive(Serialize)]
pub struct OwnersOut {
    pub scanned: bool,
    pub unknown_sockets: Option<u64>,
    pub hidden_processes: Option<u32>,
}

/// One element of `pools`: a TCP pool or a UDP pool, told apart by `protocol`.
#[derive(Serialize)]
#[serde(untagged)]
pub enum PoolEntry<'a> {
    Tcp(PoolOut<'a>),
    Udp(UdpPoolOut<'a>),
}

impl PoolEntry<'_> {
    pub fn utilization(&self) -> Option<f64> {
        match self {
            PoolEntry::Tcp(p) => p.utilization,
            PoolEntry::Udp(p) => p.utilization,
        }
    }

    /// A NAT's pool (`scope: "snat"`), which has metric families of its own.
    pub fn is_snat(&self) -> bool {
        matches!(self, PoolEntry::Tcp(p) if p.scope == Scope::Snat)
    }

    pub fn in_use(&self) -> u64 {
        match self {
            PoolEntry::Tcp(p) => p.in_use,
            PoolEntry::Udp(p) => p.in_use,
        }
    }
}

/// A UDP pool (docs/udp.md): the distinct ports of the range held by UDP sockets of one IP
/// version, namespace-wide (`scope` `namespace`; `host` on Windows). `local_ip` is the wildcard
/// of the version, the address implicit binds take.
#[derive(Serialize)]
pub struct UdpPoolOut<'a> {
    pub protocol: &'static str,
    pub scope: &'static str,
    pub ip_version: IpVersion,
    pub local_ip: &'static str,
    pub remote_ip: Option<String>,
    pub remote_port: Option<u16>,
    /// Distinct ports held.
    pub in_use: u64,
    /// Sockets holding them (port-sharing groups count each socket).
    pub sockets: u64,
    pub connected: u64,
    pub capacity: Option<u32>,
    pub reserved_in_range: u32,
    pub utilization: Option<f64>,
    pub level: Level,
    pub processes: Option<&'a [UdpHolder]>,
}

#[derive(Serialize)]
pub struct PoolOut<'a> {
    /// `tcp` (UDP pools are [`UdpPoolOut`]); a SNAT pool's own protocol (`tcp`, `udp`).
    pub protocol: &'a str,
    pub scope: Scope,
    pub local_ip: String,
    pub remote_ip: Option<String>,
    pub remote_port: Option<u16>,
    pub in_use: u64,
    pub established: u64,
    pub time_wait: u64,
    pub blocking_time_wait: u64,
    pub tw_reuse_applies: bool,
    pub capacity: Option<u32>,
    /// Ports taken out of `capacity` because other pools' sockets hold them by bind().
    #[serde(skip_serializing_if = "is_zero")]
    pub bind_held_ports: u64,
    pub utilization: Option<f64>,
    pub overcommitted: bool,
    pub connect_rate_per_s: Option<f64>,
    /// The span the connect rate was measured over (s): the rate window, or less for a pool
    /// whose oldest TIME_WAIT is younger.
    pub rate_window_seconds: Option<f64>,
    pub eta_seconds: Option<f64>,
    pub level: Level,
    pub processes: Option<&'a [ProcessCount]>,
    /// Sockets per state: what fills the pool.
    pub states: &'a BTreeMap<&'static str, u64>,
    /// `check --observe`: EADDRNOTAVAIL failures in this pool; `null` = not observed.
    pub connect_failures: Option<u64>,
    /// `scope: "snat"` rows only: protocol, NAT range and where it was read (issue 16).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub nat: Option<super::snat::NatFields<'a>>,
    /// A host-wide pool (Windows) split per local address; absent for other scopes.
    #[serde(skip_serializing_if = "<[AddressCount]>::is_empty")]
    pub by_local_address: &'a [AddressCount],
}

#[derive(Serialize)]
pub struct VerdictOut<'a> {
    pub level: Level,
    pub pools: BTreeMap<&'static str, u64>,
    pub findings: &'a [Finding],
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

/// Builds the report; `top` limits the pools (None = all).
pub fn check_report<'a>(
    snap: &'a Snapshot,
    a: &'a Analysis,
    top: Option<usize>,
) -> CheckReport<'a> {
    let pick = |names: &[&'static str], map: &BTreeMap<String, i64>| {
        names
            .iter()
            .map(|&n| (n, map.get(n).copied()))
            .collect::<BTreeMap<_, _>>()
    };
    let scanned = snap.owners.is_some();
    let mut pools: Vec<PoolEntry<'a>> = a
        .pools
        .iter()
        .map(|p| PoolEntry::Tcp(pool_out(snap, p, scanned)))
        .collect();
    // UDP and SNAT pools go where their utilization sorts them (after pools of equal use), TCP
    // order unchanged; `--top N` then keeps the N fullest of every kind together.
    let others = a
        .udp_pools
        .iter()
        .map(|u| PoolEntry::Udp(udp_pool_out(snap, u, scanned)))
        .chain(super::snat::pool_rows(a).into_iter().map(PoolEntry::Tcp));
    for e in others {
        let use_of = |p: &PoolEntry<'_>| p.utilization().unwrap_or(0.0);
        let at = pools
            .iter()
            .position(|p| use_of(p) < use_of(&e))
            .unwrap_or(pools.len());
        pools.insert(at, e);
    }
    pools.truncate(top.unwrap_or(usize::MAX));
    let mut by_level = BTreeMap::from([("critical", 0), ("warning", 0), ("ok", 0)]);
    for level in a.pool_levels() {
        *by_level.entry(level.name()).or_default() += 1;
    }
    CheckReport {
        schema: SCHEMA,
        tool: Tool {
            name: "portdoctor",
            version: env!("CARGO_PKG_VERSION"),
        },
        os: snap.os,
        host: &snap.host,
        collected_at_unix_ms: snap.taken_at_unix_ms,
        source: snap.source,
        settings: SettingsOut {
            common: &snap.settings,
            windows: snap.windows.as_ref(),
        },
        capacity: a.capacity.as_ref().map(|c| CapacityOut {
            range_ports: c.range.len(),
            reserved_in_range: c.reserved_in_range,
            bound_in_range: c.bound_in_range.clone(),
            usable_per_pool: c.usable,
        }),
        states: &a.states,
        sockets: SocketCounts {
            total: snap.sockets.len() as u64,
            inbound: a.inbound,
            outbound: a.outbound,
            other: a.other,
            time_wait: a.time_wait_total,
        },
        counters: CountersOut {
            tcp: pick(TCP_COUNTERS, &snap.counters.tcp),
            tcp_ext: pick(TCP_EXT_COUNTERS, &snap.counters.tcp_ext),
            sockstat: snap.counters.sockstat.clone(),
        },
        owners: OwnersOut {
            scanned,
            unknown_sockets: a.owners_unknown,
            hidden_processes: snap.owners.as_ref().map(|o| o.hidden_processes),
        },
        pools,
        bind_before_connect: &a.bind_before_connect,
        verdict: VerdictOut {
            level: a.verdict.level,
            pools: by_level,
            findings: &a.verdict.findings,
        },
        thresholds: a.thresholds,
        notes: &snap.notes,
        connect_failures: snap.connect_failures.as_ref().map(failures_out),
        conntrack: super::snat::conntrack_out(snap, a),
    }
}

fn udp_pool_out<'a>(snap: &Snapshot, p: &'a UdpPool, scanned: bool) -> UdpPoolOut<'a> {
    UdpPoolOut {
        protocol: "udp",
        scope: if snap.os == Os::Windows {
            "host"
        } else {
            "namespace"
        },
        ip_version: p.version,
        local_ip: match p.version {
            IpVersion::V4 => "0.0.0.0",
            IpVersion::V6 => "::",
        },
        remote_ip: None,
        remote_port: None,
        in_use: p.in_use,
        sockets: p.sockets,
        connected: p.connected,
        capacity: Some(p.capacity),
        reserved_in_range: p.reserved_in_range,
        utilization: p.utilization.map(|u| round(u, 4)),
        level: p.level,
        processes: scanned.then_some(p.processes.as_slice()),
    }
}

fn pool_out<'a>(snap: &Snapshot, p: &'a Pool, scanned: bool) -> PoolOut<'a> {
    PoolOut {
        protocol: "tcp",
        scope: p.scope,
        local_ip: p.key.local_ip.to_string(),
        remote_ip: p.key.remote_ip.map(|ip| ip.to_string()),
        remote_port: p.key.remote_port,
        in_use: p.in_use,
        established: p.established,
        time_wait: p.time_wait,
        blocking_time_wait: p.blocking_time_wait,
        tw_reuse_applies: p.tw_reuse_applies,
        capacity: p.capacity,
        bind_held_ports: p.bind_held_ports,
        utilization: p.utilization.map(|u| round(u, 4)),
        overcommitted: p.overcommitted,
        connect_rate_per_s: p.connect_rate_per_s.map(|r| round(r, 1)),
        rate_window_seconds: p.rate_window_seconds.map(|w| round(w, 1)),
        eta_seconds: p.eta_seconds.map(|e| round(e, 1)),
        level: p.level,
        processes: scanned.then_some(p.processes.as_slice()),
        states: &p.states,
        connect_failures: pool_failures(snap, p),
        nat: None,
        by_local_address: &p.by_local_address,
    }
}

/// The report as pretty JSON with a trailing newline.
pub fn render(snap: &Snapshot, a: &Analysis, top: Option<usize>) -> String {
    let mut out = serde_json::to_string_pretty(&check_report(snap, a, top))
        .unwrap_or_else(|e| format!("{{\"error\": {}}}", Value::String(e.to_string())));
    out.push('\n');
    out
}
