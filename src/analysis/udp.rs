//! UDP pools (docs/udp.md): one port space per network namespace and IP version, filled by the
//! distinct ports that UDP sockets hold, connected or not. Pure functions of the snapshot; the
//! kernel rules they follow are in [`crate::rules`] (`udp_port_held_in`, …).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;
use serde_json::json;

use super::findings::evidence_map;
use super::{
    Finding, FindingCode, Level, Pool, PoolKey, ProcessCount, Scope, Severity, Thresholds,
};
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

    /// The wildcard address of its version (`0.0.0.0`, `::`): what implicit binds take.
    pub fn wildcard(&self) -> IpAddr {
        match self.version {
            IpVersion::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpVersion::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        }
    }

    /// The pool as a row among TCP pools (`top`): scope [`Scope::Udp`], keyed by the wildcard;
    /// `in_use` is ports, `established` connected sockets, no TIME_WAIT, no rate.
    pub fn as_pool(&self) -> Pool {
        let mut states = BTreeMap::new();
        states.insert("UDP", self.sockets);
        Pool {
            scope: Scope::Udp,
            key: PoolKey {
                local_ip: self.wildcard(),
                remote_ip: None,
                remote_port: None,
            },
            in_use: self.in_use,
            established: self.connected,
            time_wait: 0,
            blocking_time_wait: 0,
            tw_reuse_applies: false,
            capacity: Some(self.capacity),
            bind_held_ports: 0,
            utilization: self.utilization,
            overcommitted: false,
            connect_rate_per_s: None,
            rate_window_seconds: None,
            release_rate_per_s: None,
            eta_seconds: None,
            processes: self
                .processes
                .iter()
                .map(|h| ProcessCount {
                    pid: h.pid,
                    name: h.name.clone(),
                    sockets: h.sockets,
                })
                .collect(),
            states,
            level: self.level,
            by_local_address: Vec::new(),
        }
    }
}

/// The name of the UDP pool whose wildcard is `ip` (`UDP ipv4`): finding `pool` and row labels.
pub fn udp_pool_name(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "UDP ipv4"
    } else {
        "UDP ipv6"
    }
}

/// The UDP pools of a snapshot: IPv4 always when the range is known and UDP sockets were
/// collected; IPv6 only when an IPv6 UDP socket exists (otherwise it repeats the IPv4 figures).
pub fn udp_pools(snapshot: &Snapshot, thresholds: Thresholds) -> Vec<UdpPool> {
    if snapshot.udp_sockets.is_empty() {
        return Vec::new();
    }
    let mut versions = vec![IpVersion::V4];
    if snapshot.udp_sockets.iter().any(|s| s.ipv6_socket) {
        versions.push(IpVersion::V6);
    }
    versions
        .into_iter()
        .filter_map(|v| {
            let (range, reserved) = space(snapshot, v)?;
            Some(pool(snapshot, v, range, &reserved, thresholds))
        })
        .collect()
}

/// The range and reserved ranges of the UDP space of `version`: Linux the one range of the
/// namespace and `ip_local_reserved_ports`; Windows the UDP dynamic range of that version and
/// its UDP excluded ranges (`None` when netsh did not say).
fn space(snapshot: &Snapshot, version: IpVersion) -> Option<(PortRange, Vec<PortRange>)> {
    match (snapshot.os, snapshot.windows.as_ref()) {
        (Os::Windows, Some(w)) => {
            let (dynamic, excluded) = match version {
                IpVersion::V4 => (w.udp_dynamic_ports_v4, &w.udp_excluded_ports_v4),
                IpVersion::V6 => (w.udp_dynamic_ports_v6, &w.udp_excluded_ports_v6),
            };
            let range = dynamic?.range()?;
            Some((range, excluded.iter().map(|e| e.range()).collect()))
        }
        (Os::Windows, None) => None,
        (Os::Linux, _) => Some((
            snapshot.settings.ephemeral_ports?,
            if rules::UDP_RESERVED_PORTS_APPLY {
                snapshot.settings.reserved_ports.clone()
            } else {
                Vec::new()
            },
        )),
    }
}

fn pool(
    snapshot: &Snapshot,
    version: IpVersion,
    range: PortRange,
    reserved: &[PortRange],
    thresholds: Thresholds,
) -> UdpPool {
    let reserved_in_range = crate::capacity::reserved_in_range(range, reserved);
    let capacity = range.len().saturating_sub(reserved_in_range);
    let windows = snapshot.os == Os::Windows;
    let holds = |s: &&UdpSocket| {
        let held = if windows {
            rules::windows_udp_port_held_in(s.ipv6_socket, version)
        } else {
            rules::udp_port_held_in(s.ipv6_socket, s.v6only, version)
        };
        held && range.contains(s.local_port) && !reserved.iter().any(|r| r.contains(s.local_port))
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

/// `udp_pool_exhausted`, `udp_pool_near_exhaustion`, `udp_socket_leak` and (Windows)
/// `udp_port_allocation_failed`.
pub fn findings(snapshot: &Snapshot, pools: &[UdpPool]) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Some(e) = snapshot
        .windows
        .as_ref()
        .and_then(|w| w.events)
        .filter(|e| e.udp_ports_exhausted_4266.count > 0)
    {
        let stat = e.udp_ports_exhausted_4266;
        let holder = pools
            .iter()
            .filter_map(|p| p.processes.first().map(|h| (p, h)))
            .max_by_key(|(_, h)| h.ports)
            .map_or_else(String::new, |(p, h)| {
                format!(
                    "; now {} ({}) holds {} of {} {} ports",
                    h.name,
                    h.pid,
                    group(h.ports),
                    group(u64::from(p.capacity)),
                    p.label()
                )
            });
        let wide = rules::WINDOWS_WIDE_RANGE;
        let current = snapshot
            .windows
            .as_ref()
            .and_then(|w| w.udp_dynamic_ports_v4)
            .map_or_else(
                || "netsh int ipv4 show dynamicport udp  (note start and num first)".to_string(),
                |d| {
                    format!(
                        "netsh int ipv4 set dynamicport udp start={} num={}",
                        d.start, d.count
                    )
                },
            );
        out.push(Finding::host(
            FindingCode::UdpPortAllocationFailed,
            format!(
                "Tcpip event 4266 logged {} times in the last {} h: a UDP ephemeral port could not be allocated, all were in use (DNS lookups and every other UDP client fail){holder}",
                group(stat.count),
                e.window_hours
            ),
            json!({"event_id": 4266, "count": stat.count, "last_unix_ms": stat.last_unix_ms, "window_hours": e.window_hours}),
            format!(
                "find the process holding UDP ports (`netstat -anobp udp`, or the UDP pools above) and make it close or reuse its sockets; or widen the UDP dynamic range: netsh int ipv4 set dynamicport udp start={} num={}  (undo: {current})",
                wide.low,
                wide.len()
            ),
        ));
    }
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
                        "{} is {:.0}% full: {} of {} ports held, {} free; {who}",
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

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::analysis::analyze;
    use crate::fixture::SnapshotBuilder;
    use crate::snapshot::Owners;

    fn udp(local: &str, port: u16, v6: bool, v6only: Option<bool>, inode: u64) -> UdpSocket {
        let local_ip: IpAddr = local.parse().unwrap();
        UdpSocket {
            local_ip,
            local_port: port,
            remote_ip: if local_ip.is_ipv4() {
                "127.0.0.1".parse().unwrap()
            } else {
                "::1".parse().unwrap()
            },
            remote_port: 7000,
            ipv6_socket: v6,
            v6only,
            inode,
            uid: Some(0),
            pid: None,
        }
    }

    fn snap(low: u16, high: u16, sockets: Vec<UdpSocket>) -> Snapshot {
        let mut s = SnapshotBuilder::linux().range(low, high).build();
        s.udp_sockets = Arc::new(sockets);
        s
    }

    #[test]
    fn no_udp_sockets_no_udp_pools() {
        let s = SnapshotBuilder::linux().range(40000, 40099).build();
        let a = analyze(&s, Thresholds::default());
        assert!(a.udp_pools.is_empty());
    }

    #[test]
    fn ninety_five_of_a_hundred_by_one_owner_is_critical_and_a_leak() {
        let mut s = snap(
            40000,
            40099,
            (0..95)
                .map(|i| udp("127.0.0.1", 40000 + i, false, None, 1000 + u64::from(i)))
                .collect(),
        );
        let mut owners = Owners::default();
        owners.processes.insert(42, "statsd-client".into());
        for i in 0..95 {
            owners.by_inode.insert(1000 + i, 42);
        }
        s.owners = Some(Arc::new(owners));
        let a = analyze(&s, Thresholds::default());
        assert_eq!(a.udp_pools.len(), 1);
        let p = &a.udp_pools[0];
        assert_eq!((p.in_use, p.capacity, p.free()), (95, 100, 5));
        assert_eq!(p.level, Level::Critical);
        assert_eq!(p.processes[0].ports, 95);
        assert_eq!(a.verdict.level, Level::Critical);
        let codes: Vec<&str> = a.verdict.findings.iter().map(|f| f.code.as_str()).collect();
        assert!(codes.contains(&"udp_pool_near_exhaustion"), "{codes:?}");
        assert!(codes.contains(&"udp_socket_leak"), "{codes:?}");
        let f = &a.verdict.findings[0];
        assert!(
            f.message
                .contains("statsd-client (42) holds 95 of 100 UDP ports"),
            "{}",
            f.message
        );
        assert!(f.fix.contains("shared with TCP"), "{}", f.fix);
    }

    #[test]
    fn reserved_ports_shrink_capacity_and_held_reserved_ports_do_not_count() {
        let mut s = snap(
            40000,
            40009,
            vec![
                udp("0.0.0.0", 40000, false, None, 1), // reserved: already out of the capacity
                udp("0.0.0.0", 40007, false, None, 2),
                udp("0.0.0.0", 50000, false, None, 3), // outside the range
            ],
        );
        s.settings.reserved_ports = vec![PortRange::new(40000, 40004).unwrap()];
        let p = &udp_pools(&s, Thresholds::default())[0];
        assert_eq!((p.in_use, p.capacity, p.reserved_in_range), (1, 5, 5));
    }

    #[test]
    fn sharing_groups_count_once_and_a_full_pool_is_exhausted() {
        let mut v: Vec<UdpSocket> = (0..5)
            .map(|i| udp("0.0.0.0", 40003, false, None, i))
            .collect();
        v.extend((0..10).map(|i| udp("127.0.0.2", 40000 + i, false, None, 10 + u64::from(i))));
        let s = snap(40000, 40009, v);
        let a = analyze(&s, Thresholds::default());
        let p = &a.udp_pools[0];
        assert_eq!((p.in_use, p.sockets, p.free()), (10, 15, 0));
        assert_eq!(a.verdict.findings[0].code, FindingCode::UdpPoolExhausted);
    }

    #[test]
    fn ipv6_spaces_follow_v6only() {
        let s = snap(
            40000,
            40009,
            vec![
                udp("127.0.0.1", 40000, false, None, 1),
                udp("::1", 40001, true, Some(true), 2),
                udp("::1", 40002, true, Some(false), 3),
                udp("::1", 40003, true, None, 4),
            ],
        );
        let pools = udp_pools(&s, Thresholds::default());
        assert_eq!(pools.len(), 2);
        // IPv4: the IPv4 socket, the dual-stack one and the unknown one (counted as dual-stack).
        assert_eq!((pools[0].version, pools[0].in_use), (IpVersion::V4, 3));
        assert_eq!((pools[1].version, pools[1].in_use), (IpVersion::V6, 4));
    }

    /// Windows (fixture): the UDP dynamic range and UDP exclusions of each version, sockets by
    /// family, owners from the table's PIDs, event 4266 → `udp_port_allocation_failed` with a
    /// netsh fix and its undo.
    #[test]
    fn windows_udp_pool_uses_the_udp_range_exclusions_and_event_4266() {
        use crate::snapshot::{DynamicPorts, EventStat, ExcludedRange};
        let mut s = SnapshotBuilder::windows()
            .windows_settings(|w| {
                w.udp_dynamic_ports_v4 = Some(DynamicPorts {
                    start: 49152,
                    count: 16384,
                });
                w.udp_excluded_ports_v4 = vec![ExcludedRange {
                    low: 50000,
                    high: 50383,
                    administered: false,
                }];
                if let Some(e) = w.events.as_mut() {
                    e.udp_ports_exhausted_4266 = EventStat {
                        count: 12,
                        last_unix_ms: Some(1),
                    };
                }
            })
            .build();
        let mut socks: Vec<UdpSocket> = (0..15_900u16)
            .map(|i| UdpSocket {
                pid: Some(1234),
                ..udp("0.0.0.0", 49152 + i, false, None, 0)
            })
            .collect();
        // An IPv6 socket in the IPv4 range does not count there on Windows (unverified rule).
        socks.push(udp("::", 49152 + 15_950, true, None, 0));
        s.udp_sockets = Arc::new(socks);
        let mut owners = Owners::default();
        owners.processes.insert(1234, "WmiPrvSE.exe".into());
        s.owners = Some(Arc::new(owners));
        let a = analyze(&s, Thresholds::default());
        // No IPv6 UDP range known: only the IPv4 pool.
        assert_eq!(a.udp_pools.len(), 1);
        let p = &a.udp_pools[0];
        // 15,900 held, minus the 384 that sit in the excluded block (already out of capacity).
        assert_eq!((p.capacity, p.in_use), (16_000, 15_516));
        let exhausted = a
            .verdict
            .findings
            .iter()
            .find(|f| f.code == FindingCode::UdpPortAllocationFailed)
            .expect("4266 finding");
        assert_eq!(exhausted.severity, Severity::Critical);
        assert!(
            exhausted
                .message
                .contains("WmiPrvSE.exe (1234) holds 15,516 of 16,000 UDP ipv4 ports"),
            "{}",
            exhausted.message
        );
        assert!(
            exhausted
                .fix
                .contains("netsh int ipv4 set dynamicport udp start=32768 num=32768"),
            "{}",
            exhausted.fix
        );
        assert!(
            exhausted
                .fix
                .contains("undo: netsh int ipv4 set dynamicport udp start=49152 num=16384"),
            "{}",
            exhausted.fix
        );
        let near = a
            .verdict
            .findings
            .iter()
            .find(|f| f.code == FindingCode::UdpPoolNearExhaustion)
            .expect("pool finding");
        assert!(near.fix.contains("set dynamicport udp"), "{}", near.fix);
        assert!(!near.fix.contains("shared with TCP"), "{}", near.fix);
    }

    proptest! {
        /// Whatever the sockets: in_use is the number of distinct non-reserved ports of the
        /// range held in that space, never more than the capacity, and IPv6 ⊇ IPv4.
        #[test]
        fn in_use_is_distinct_ports_within_capacity(
            socks in proptest::collection::vec(
                (39990u16..40030, any::<bool>(), proptest::option::of(any::<bool>())), 0..60),
            res_low in 40000u16..40020,
        ) {
            let v: Vec<UdpSocket> = socks
                .iter()
                .enumerate()
                .map(|(i, &(port, v6, only))| {
                    udp(if v6 { "::" } else { "0.0.0.0" }, port, v6, if v6 { only } else { None }, i as u64)
                })
                .collect();
            let mut s = snap(40000, 40019, v.clone());
            s.settings.reserved_ports = vec![PortRange::new(res_low, res_low + 2).unwrap()];
            let pools = udp_pools(&s, Thresholds::default());
            let reserved = |p: u16| (res_low..=res_low + 2).contains(&p);
            for p in &pools {
                let mut want: Vec<u16> = v
                    .iter()
                    .filter(|u| rules::udp_port_held_in(u.ipv6_socket, u.v6only, p.version))
                    .map(|u| u.local_port)
                    .filter(|&port| (40000..=40019).contains(&port) && !reserved(port))
                    .collect();
                want.sort_unstable();
                want.dedup();
                prop_assert_eq!(p.in_use, want.len() as u64);
                prop_assert!(p.in_use <= u64::from(p.capacity));
            }
            if pools.len() == 2 {
                prop_assert!(pools[1].in_use >= pools[0].in_use);
            }
        }
    }
}
