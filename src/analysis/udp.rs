//! UDP pools (docs/udp.md): one port space per network namespace and IP version, filled by the
//! distinct ports that UDP sockets hold, connected or not. Pure functions of the snapshot; the
//! kernel rules they follow are in [`crate::rules`] (`udp_port_held_in`, …).

use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;
use serde_json::json;

use super::findings::evidence_map;
use super::{Finding, FindingCode, Level, Severity, Thresholds};
use crate::knobs::tune_fix;
use crate::rules::{self, IpVersion};
use crate::snapshot::{Os, PortRange, Snapshot, UdpSocket};
use crate::units::group;

/// A process holding ports of a UDP pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UdpHolder {
    pub pid: u32,
    pub name: String,
    /// Its UDP sockets holding a port of the pool.
    pub sockets: u64,
    /// The distinct ports of the pool those sockets hold.
    pub ports: u64,
}

/// The UDP port space of one IP version of a namespace (Linux) or host (Windows).
#[derive(Debug, Clone, PartialEq)]
pub struct UdpPool {
    pub version: IpVersion,
    pub range: PortRange,
    /// Ports of the range reserved (`ip_local_reserved_ports`) or excluded.
    pub reserved_in_range: u32,
    /// What an implicit bind can get: range − reserved.
    pub capacity: u32,
    /// Distinct ports of the range (not reserved) held by a UDP socket of this space.
    pub in_use: u64,
    /// Sockets holding those ports (sharing groups count each socket).
    pub sockets: u64,
    pub connected: u64,
    /// `in_use / capacity`; `None` for a range with nothing usable.
    pub utilization: Option<f64>,
    /// Owners with the most ports (at most five), when owners were scanned.
    pub processes: Vec<UdpHolder>,
    pub level: Level,
}

impl UdpPool {
    pub fn free(&self) -> u64 {
        u64::from(self.capacity).saturating_sub(self.in_use)
    }

    /// How reports name it: `UDP ipv4`.
    pub fn label(&self) -> String {
        format!("UDP {}", self.version.name())
    }
}

/// The UDP pools of a snapshot: IPv4 always when the range is known and UDP sockets were
/// collected; IPv6 only when an IPv6 UDP socket exists (otherwise it repeats the IPv4 figures).
pub fn udp_pools(snapshot: &Snapshot, thresholds: Thresholds) -> Vec<UdpPool> {
    let Some(range) = snapshot.settings.ephemeral_ports else {
        return Vec::new();
    };
    if snapshot.udp_sockets.is_empty() {
        return Vec::new();
    }
    let reserved: &[PortRange] = if rules::UDP_RESERVED_PORTS_APPLY {
        &snapshot.settings.reserved_ports
    } else {
        &[]
    };
    let mut versions = vec![IpVersion::V4];
    if snapshot.udp_sockets.iter().any(|s| s.ipv6_socket) {
        versions.push(IpVersion::V6);
    }
    versions
        .into_iter()
        .map(|v| pool(snapshot, v, range, reserved, thresholds))
        .collect()
}

fn pool(
    snapshot: &Snapshot,
    version: IpVersion,
    range: PortRange,
    reserved: &[PortRange],
    thresholds: Thresholds,
) -> UdpPool {
    let reserved_in_range: u32 = reserved
        .iter()
        .filter_map(|r| r.intersect(range))
        .map(PortRange::len)
        .sum();
    let capacity = range.len().saturating_sub(reserved_in_range);
    let holds = |s: &&UdpSocket| {
        rules::udp_port_held_in(s.ipv6_socket, s.v6only, version)
            && range.contains(s.local_port)
            && !reserved.iter().any(|r| r.contains(s.local_port))
    };
    let mut ports: FxHashSet<u16> = FxHashSet::default();
    let mut sockets = 0;
    let mut connected = 0;
    let mut by_pid: FxHashMap<u32, (u64, FxHashSet<u16>)> = FxHashMap::default();
    for s in snapshot.udp_sockets.iter().filter(holds) {
        ports.insert(s.local_port);
        sockets += 1;
        connected += u64::from(s.connected());
        if let Some(pid) = owner(snapshot, s) {
            let e = by_pid.entry(pid).or_default();
            e.0 += 1;
            e.1.insert(s.local_port);
        }
    }
    let in_use = ports.len() as u64;
    let utilization = (capacity > 0).then(|| in_use as f64 / f64::from(capacity));
    let level = match utilization {
        _ if capacity == 0 || in_use >= u64::from(capacity) => Level::Critical,
        Some(u) if u >= thresholds.crit => Level::Critical,
        Some(u) if u >= thresholds.warn => Level::Warning,
        _ => Level::Ok,
    };
    let mut processes: Vec<UdpHolder> = by_pid
        .into_iter()
        .map(|(pid, (sockets, ports))| UdpHolder {
            pid,
            name: snapshot
                .owners
                .as_ref()
                .and_then(|o| o.processes.get(&pid).cloned())
                .unwrap_or_else(|| "?".into()),
            sockets,
            ports: ports.len() as u64,
        })
        .collect();
    processes.sort_by(|a, b| b.ports.cmp(&a.ports).then(a.pid.cmp(&b.pid)));
    processes.truncate(5);
    UdpPool {
        version,
        range,
        reserved_in_range,
        capacity,
        in_use,
        sockets,
        connected,
        utilization,
        processes,
        level,
    }
}

fn owner(snapshot: &Snapshot, s: &UdpSocket) -> Option<u32> {
    s.pid.or_else(|| {
        (s.inode != 0)
            .then(|| snapshot.owners.as_ref()?.by_inode.get(&s.inode).copied())
            .flatten()
    })
}

/// A process holding at least this share of a UDP pool's capacity is named as a leak.
pub const UDP_LEAK_SHARE: f64 = 0.5;

/// `udp_pool_exhausted`, `udp_pool_near_exhaustion` and `udp_socket_leak`.
pub fn findings(snapshot: &Snapshot, pools: &[UdpPool]) -> Vec<Finding> {
    let mut out = Vec::new();
    for p in pools {
        let top = p.processes.first();
        let who = top.map_or_else(
            || "no owner known (run as root, without --no-owners, to name it)".to_string(),
            |h| {
                format!(
                    "{} ({}) holds {} of {} UDP ports",
                    h.name,
                    h.pid,
                    group(h.ports),
                    group(u64::from(p.capacity))
                )
            },
        );
        let evidence = json!({
            "protocol": "udp",
            "ip_version": p.version.name(),
            "range": [p.range.low, p.range.high],
            "reserved_in_range": p.reserved_in_range,
            "capacity": p.capacity,
            "in_use": p.in_use,
            "sockets": p.sockets,
            "connected": p.connected,
            "processes": p.processes,
        });
        if p.level != Level::Ok {
            let (code, message) = if p.free() == 0 {
                (
                    FindingCode::UdpPoolExhausted,
                    format!(
                        "{} has no free port: {} of {} ports held; new UDP sockets fail (connect/sendto: EAGAIN); {who}",
                        p.label(),
                        group(p.in_use),
                        group(u64::from(p.capacity))
                    ),
                )
            } else {
                (
                    FindingCode::UdpPoolNearExhaustion,
                    format!(
                        "{} is {:.0} % full: {} of {} ports held, {} free; {who}",
                        p.label(),
                        p.utilization.unwrap_or(1.0) * 100.0,
                        group(p.in_use),
                        group(u64::from(p.capacity)),
                        group(p.free())
                    ),
                )
            };
            out.push(Finding {
                code,
                severity: if p.level == Level::Critical {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
                pool: Some(p.label()),
                message,
                evidence: evidence_map(evidence.clone()),
                fix: fix(snapshot, p),
            });
        }
        if let Some(h) = top
            .filter(|h| p.capacity > 0 && h.ports as f64 >= UDP_LEAK_SHARE * f64::from(p.capacity))
        {
            out.push(Finding {
                code: FindingCode::UdpSocketLeak,
                severity: Severity::Warning,
                pool: Some(p.label()),
                message: format!(
                    "{} ({}) holds {} of {} {} ports with {} sockets: a socket per request or a leak",
                    h.name,
                    h.pid,
                    group(h.ports),
                    group(u64::from(p.capacity)),
                    p.label(),
                    group(h.sockets)
                ),
                evidence: evidence_map(evidence),
                fix: format!(
                    "make {} close its UDP sockets, or reuse them: one socket per destination (metrics clients such as statsd), a resolver that reuses its sockets; check its open descriptors (`ls -l /proc/{}/fd | grep -c socket`)",
                    h.name, h.pid
                ),
            });
        }
    }
    out
}

fn fix(snapshot: &Snapshot, p: &UdpPool) -> String {
    let app = "close UDP sockets that are done, or reuse them: one socket per destination for metrics clients (statsd style), a resolver that reuses its sockets, QUIC clients that multiplex";
    if snapshot.os == Os::Linux {
        let wide = rules::LINUX_SUGGESTED_RANGE;
        format!(
            "{app}\nthe range is shared with TCP (net.ipv4.ip_local_port_range serves both): widening it gives TCP pools those ports too, and a narrower one would shrink them; if that is intended:\n{}",
            tune_fix(
                "net.ipv4.ip_local_port_range",
                &format!("{} {}", wide.low, wide.high),
                &snapshot.host.target
            )
        )
    } else {
        let wide = rules::WINDOWS_WIDE_RANGE;
        format!(
            "{app}\nor widen the UDP dynamic range: netsh int {} set dynamicport udp start={} num={}  (undo: netsh int {} set dynamicport udp start={} num={})",
            p.version.name(),
            wide.low,
            wide.len(),
            p.version.name(),
            p.range.low,
            p.range.len()
        )
    }
}
