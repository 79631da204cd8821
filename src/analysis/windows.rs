//! The Windows part of the model: per-local-address capacity (dynamic range − excluded ranges −
//! ports bound on that address or the wildcard) and the Windows findings. Pure, like the rest
//! of `analysis`; the facts and their confidence come from domain.md and the knob base.

use std::net::IpAddr;

use serde_json::json;

use super::findings::evidence_map as evidence;
use super::{Finding, FindingCode, Level, Pool, Severity};
use crate::knobs::{netsh_dynamicport_fix, reg_add_fix, reg_delete_fix, tcpip_value_range};
use crate::rules;
use crate::snapshot::{DynamicPorts, PortRange, Snapshot, TcpipRegistry, WindowsSettings};
use crate::units::{format_utc, group};

/// The dynamic range for sockets of `ip`'s family: the Windows block when collected, else the
/// generic setting (fixtures without a Windows block).
pub(super) fn range_for(snapshot: &Snapshot, ip: IpAddr) -> Option<PortRange> {
    match &snapshot.windows {
        Some(w) => w.dynamic_range_for(ip).or(match ip {
            IpAddr::V4(_) => snapshot.settings.ephemeral_ports,
            IpAddr::V6(_) => None,
        }),
        None => snapshot.settings.ephemeral_ports,
    }
}

/// Excluded ranges of `ip`'s family, merged and sorted.
fn excluded_for(snapshot: &Snapshot, ip: IpAddr) -> Vec<PortRange> {
    PortRange::merge_all(match &snapshot.windows {
        Some(w) => w.excluded_for(ip).iter().map(|e| e.range()).collect(),
        None => snapshot.settings.reserved_ports.clone(),
    })
}

fn excluded_in(range: PortRange, excluded: &[PortRange]) -> u32 {
    excluded
        .iter()
        .filter_map(|r| r.intersect(range))
        .map(PortRange::len)
        .sum()
}

/// The auto-reuse range (one for both IP versions) when one is configured (more than 0 ports): inside it
/// ports are shared per 4-tuple (Set-NetTCPSetting docs; with 0 ports, "even if
/// SO_REUSE_UNICASTPORT is set" ports come from the dynamic range).
pub(super) fn auto_reuse_for(snapshot: &Snapshot) -> Option<PortRange> {
    snapshot.windows.as_ref()?.auto_reuse_range()
}

/// The wildcard address of `ip`'s family: the key of its host-wide pool.
pub(super) fn host_key_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    }
}

/// Ports of `range` held by listeners or bound sockets on *any* address of `ip`'s family and
/// not excluded: by default Winsock gives a wildcard (port 0) bind a port of the dynamic range
/// "no matter the number of IP addresses" (SO_PORT_SCALABILITY page), so a port taken on one
/// address is taken for all.
fn bound_in(snapshot: &Snapshot, ip: IpAddr, range: PortRange, excluded: &[PortRange]) -> u32 {
    let mut bound: Vec<u16> = snapshot
        .sockets
        .iter()
        .filter(|s| s.state.holds_bind_port() && s.local_ip.is_ipv4() == ip.is_ipv4())
        .map(|s| s.local_port)
        .filter(|&p| range.contains(p) && !excluded.iter().any(|r| r.contains(p)))
        .collect();
    bound.sort_unstable();
    bound.dedup();
    bound.len() as u32
}

/// Capacity of the Windows host-wide pool of `ip`'s IP version: the dynamic range − excluded
/// ports in it − a configured auto-reuse range inside it (its ports are shared per 4-tuple
/// and counted in their own pools) − ports in it held by listeners or bound sockets on any
/// address of the family. `None` when the range is unknown.
pub fn windows_pool_capacity(snapshot: &Snapshot, ip: IpAddr) -> Option<u32> {
    let range = range_for(snapshot, ip)?;
    let mut excluded = excluded_for(snapshot, ip);
    let excluded_ports = excluded_in(range, &excluded);
    let mut reuse_ports = 0;
    if let Some(reuse) = auto_reuse_for(snapshot).and_then(|r| r.intersect(range)) {
        reuse_ports = reuse.len().saturating_sub(excluded_in(reuse, &excluded));
        excluded = PortRange::merge_all(excluded.into_iter().chain([reuse]).collect());
    }
    Some(
        range
            .len()
            .saturating_sub(excluded_ports)
            .saturating_sub(reuse_ports)
            .saturating_sub(bound_in(snapshot, ip, range, &excluded)),
    )
}

/// Capacity of one destination pool inside the auto-reuse range of `ip`'s family: the range −
/// excluded ports − ports bound on any address of the family. `None` without such a range.
pub fn windows_reuse_pool_capacity(snapshot: &Snapshot, ip: IpAddr) -> Option<u32> {
    let reuse = auto_reuse_for(snapshot)?;
    let excluded = excluded_for(snapshot, ip);
    Some(
        reuse
            .len()
            .saturating_sub(excluded_in(reuse, &excluded))
            .saturating_sub(bound_in(snapshot, ip, reuse, &excluded)),
    )
}

/// Rates and the forecast of the host pools from the collector's previous snapshot (`top`,
/// `serve`, `check --observe`): Windows tables carry no TIME_WAIT timers, so the one honest
/// source is two snapshots. New connections = connection identities (4-tuples) in the pool now
/// that were not in the previous table, per second of the gap; growth = the change in ports
/// used per second; the forecast = free ports / growth, only while it grows and with at least
/// [`super::MIN_FORECAST_ARRIVALS`] new connections. Less than a second apart: nothing.
pub(super) fn rates_from_previous(
    snapshot: &Snapshot,
    pools: &mut [Pool],
    thresholds: super::Thresholds,
) {
    use crate::snapshot::TcpState;
    type Id = (IpAddr, u16, IpAddr, u16);
    let Some(prev) = snapshot.windows.as_ref().and_then(|w| w.previous.as_ref()) else {
        return;
    };
    let dt_ms = snapshot
        .taken_at_unix_ms
        .saturating_sub(prev.taken_at_unix_ms);
    if dt_ms < 1000 {
        return;
    }
    let dt = dt_ms as f64 / 1000.0;
    let mut before = snapshot.clone();
    before.sockets = std::sync::Arc::clone(&prev.sockets);
    if let Some(w) = before.windows.as_mut() {
        w.previous = None;
    }
    let prev_pools =
        super::build_pools(&before, super::capacity(&before).as_ref(), thresholds).pools;
    let id = |s: &crate::snapshot::Socket| -> Id {
        (s.local_ip, s.local_port, s.remote_ip, s.remote_port)
    };
    let outbound =
        |s: &&crate::snapshot::Socket| !matches!(s.state, TcpState::Listen | TcpState::Close);
    let known: rustc_hash::FxHashSet<Id> = prev.sockets.iter().filter(outbound).map(id).collect();
    let listening: rustc_hash::FxHashSet<u16> = snapshot
        .sockets
        .iter()
        .filter(|s| s.state == TcpState::Listen)
        .map(|s| s.local_port)
        .collect();
    let reuse = auto_reuse_for(snapshot);
    for p in pools.iter_mut().filter(|p| p.scope == super::Scope::Host) {
        let v4 = p.key.local_ip.is_ipv4();
        let range = range_for(snapshot, p.key.local_ip);
        let new = snapshot
            .sockets
            .iter()
            .filter(outbound)
            .filter(|s| s.local_ip.is_ipv4() == v4 && !listening.contains(&s.local_port))
            .filter(|s| range.is_none_or(|r| r.contains(s.local_port)))
            .filter(|s| reuse.is_none_or(|r| !r.contains(s.local_port)))
            .filter(|s| !known.contains(&id(s)))
            .count() as u64;
        let used_before = prev_pools
            .iter()
            .find(|q| q.key == p.key)
            .map_or(0, Pool::used);
        let growth = (p.used() as f64 - used_before as f64) / dt;
        p.connect_rate_per_s = Some(new as f64 / dt);
        p.rate_window_seconds = Some(dt);
        p.eta_seconds = if new >= super::MIN_FORECAST_ARRIVALS && growth > 0.0 {
            p.free().and_then(|f| super::eta_seconds(f, growth))
        } else {
            None
        };
        if p.eta_seconds.is_some_and(|e| e <= thresholds.eta_seconds) {
            p.level = Level::Critical;
        }
    }
}

/// Extra fix lines for a pressured Windows pool: host-wide knobs and the reuse options.
pub(super) fn pool_fixes(snapshot: &Snapshot, p: &Pool) -> Vec<String> {
    let mut fixes = Vec::new();
    let wide = rules::WINDOWS_WIDE_RANGE;
    if range_for(snapshot, p.key.local_ip).is_some_and(|r| r.len() < wide.len()) {
        fixes.push(format!(
            "or host-wide, widen the range (elevated cmd or PowerShell):\n{}",
            netsh_dynamicport_fix(wide.low, wide.len())
        ));
    }
    let tw_delay = snapshot
        .windows
        .as_ref()
        .and_then(|w| w.registry.as_ref())
        .and_then(|r| r.tcp_timed_wait_delay);
    if p.time_wait * 2 >= p.in_use && tw_delay.is_none_or(|d| d > 30) {
        fixes.push(format!(
            "and shorten TIME_WAIT (elevated cmd or PowerShell):\n{}",
            reg_add_fix("TcpTimedWaitDelay", 30)
        ));
    }
    if p.key.remote_ip.is_none() {
        fixes.push(format!("by default Windows gives every outbound {} socket a port of the one dynamic range, whatever its local address (SO_PORT_SCALABILITY page: \"no matter the number of IP addresses\"), so more source addresses do not help unless the application sets SO_PORT_SCALABILITY; ports are shared across destinations only inside a configured auto-reuse range, which serves sockets with SO_REUSE_UNICASTPORT and connect() without bind() (Server 2016+: {}; .NET: ServicePointManager.ReusePort = true or SocketsHttpHandler on .NET 6+)", if p.key.local_ip.is_ipv4() { "IPv4" } else { "IPv6" }, crate::knobs::AUTO_REUSE_FIX));
        fixes.push("whether IPv4 and IPv6 draw from one port space is not documented by Microsoft (unverified): portdoctor counts them as two pools".into());
    }
    fixes
}

/// Windows-only findings: excluded ranges, the dynamic-range advice judged honestly, registry
/// values out of range, and the Tcpip events that prove ports ran out.
pub(super) fn findings(snapshot: &Snapshot, pools: &[Pool]) -> Vec<Finding> {
    let mut out = Vec::new();
    let Some(w) = &snapshot.windows else {
        return out;
    };
    let pressured = pools.iter().any(|p| p.level > Level::Ok);
    excluded_overlap(snapshot, w, pressured, &mut out);
    bound_leaks(snapshot, &mut out);
    off_by_one(w, &mut out);
    if let Some(reg) = &w.registry {
        registry_findings(w, reg, &mut out);
    }
    if let Some(ev) = &w.events {
        let n4231 = ev.ports_exhausted_4231.count;
        let n4227 = ev.reuse_failed_4227.count;
        if n4231.saturating_add(n4227) > 0 {
            let last = ev
                .ports_exhausted_4231
                .last_unix_ms
                .max(ev.reuse_failed_4227.last_unix_ms);
            let widen = w
                .dynamic_ports_v4
                .and_then(DynamicPorts::range)
                .is_none_or(|r| r.len() < rules::WINDOWS_WIDE_RANGE.len());
            let mut fix = vec![
                "reuse connections in the application (keep-alive / one shared HttpClient / a connection pool): the owners in the pool table open them".to_string(),
            ];
            if widen {
                let wide = rules::WINDOWS_WIDE_RANGE;
                fix.push(format!(
                    "widen the range (elevated cmd or PowerShell):\n{}",
                    netsh_dynamicport_fix(wide.low, wide.len())
                ));
            }
            fix.push(format!(
                "shorten TIME_WAIT (elevated cmd or PowerShell):\n{}",
                reg_add_fix("TcpTimedWaitDelay", 30)
            ));
            fix.push("look at the events (PowerShell):\nGet-WinEvent -FilterHashtable @{LogName='System'; ProviderName='Tcpip'; Id=4227,4231; StartTime=(Get-Date).AddDays(-1)}".into());
            out.push(Finding::host(
                FindingCode::PortExhaustionEvents,
                format!(
                    "the System log has Tcpip event 4231 (no ephemeral port left) ×{} and 4227 (TIME_WAIT reuse failed) ×{} in the last {} h{}: connections have already failed",
                    group(n4231),
                    group(n4227),
                    ev.window_hours,
                    last.map(|t| format!(", last {}", format_utc(t))).unwrap_or_default()
                ),
                json!({
                    "4231": n4231, "4227": n4227, "window_hours": ev.window_hours,
                    "last_unix_ms": last,
                }),
                fix.join("\n"),
            ));
        }
    }
    out
}

fn excluded_overlap(
    snapshot: &Snapshot,
    w: &WindowsSettings,
    pressured: bool,
    out: &mut Vec<Finding>,
) {
    let v4: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
    let v6: IpAddr = IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);
    let mut seen: Vec<(PortRange, Vec<PortRange>)> = Vec::new();
    for (ip, version) in [(v4, "ipv4"), (v6, "ipv6")] {
        let Some(range) = range_for(snapshot, ip) else {
            continue;
        };
        let excluded = excluded_for(snapshot, ip);
        let inside: Vec<PortRange> = excluded.iter().filter_map(|r| r.intersect(range)).collect();
        if inside.is_empty() {
            continue;
        }
        // netsh shows the same TCP exclusions for both versions: report them once.
        if seen.iter().any(|(r, e)| *r == range && *e == inside) {
            continue;
        }
        seen.push((range, inside.clone()));
        let ports: u32 = inside.iter().map(|r| r.len()).sum();
        let administered = w
            .excluded_for(ip)
            .iter()
            .filter(|e| e.administered && e.range().intersect(range).is_some())
            .count();
        let shown: Vec<String> = inside.iter().take(4).map(PortRange::to_string).collect();
        let more = inside.len().saturating_sub(4);
        let share = f64::from(ports) / f64::from(range.len());
        out.push(Finding {
            code: FindingCode::ExcludedRangeOverlap,
            severity: if pressured || share >= 0.1 {
                Severity::Warning
            } else {
                Severity::Info
            },
            pool: None,
            message: format!(
                "{} of the {} ports of the {version} dynamic range {} are excluded ({}{}; {administered} administered): every local address loses them, and bind() there fails with 10013",
                group(u64::from(ports)),
                group(u64::from(range.len())),
                range,
                shown.join(", "),
                if more > 0 { format!(", … {more} more") } else { String::new() },
            ),
            evidence: evidence(json!({
                "ip_version": version,
                "range": [range.low, range.high],
                "excluded_in_range": ports,
                "ranges": inside.iter().map(|r| [r.low, r.high]).collect::<Vec<_>>(),
                "administered": administered,
            })),
            fix: format!(
                "see them (cmd or PowerShell; 100-port blocks without * usually come from Hyper-V/WSL/Docker through WinNAT):\nnetsh int {version} show excludedportrange protocol=tcp\nto keep them out of the dynamic range reserve what those services need first (elevated cmd or PowerShell, PORT and N yours):\nnet stop winnat\nnetsh int {version} add excludedportrange protocol=tcp startport=PORT numberofports=N\nnet start winnat"
            ),
        });
    }
}

/// BOUND ports one process must hold in the dynamic range before it is called a leak.
pub const BOUND_LEAK_MIN: u64 = 100;

/// `bound_port_leak`: a process accumulating BOUND sockets (bound, neither connected nor
/// listening) in the dynamic range — the classic leak Microsoft's port exhaustion guide looks
/// for first (`netstat -anobq`). Their ports are already out of the host pool's capacity.
fn bound_leaks(snapshot: &Snapshot, out: &mut Vec<Finding>) {
    let mut per_pid: std::collections::BTreeMap<u32, u64> = std::collections::BTreeMap::new();
    for s in snapshot
        .sockets
        .iter()
        .filter(|s| s.state == crate::snapshot::TcpState::Close)
    {
        let in_range = range_for(snapshot, s.local_ip).is_some_and(|r| r.contains(s.local_port));
        if let (true, Some(pid)) = (in_range, s.pid) {
            *per_pid.entry(pid).or_default() += 1;
        }
    }
    let mut leaks: Vec<(u32, u64)> = per_pid
        .into_iter()
        .filter(|&(_, n)| n >= BOUND_LEAK_MIN)
        .collect();
    leaks.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for (pid, n) in leaks {
        let name = snapshot
            .owners
            .as_ref()
            .and_then(|o| o.processes.get(&pid).cloned())
            .unwrap_or_else(|| "?".into());
        out.push(Finding::host(
            FindingCode::BoundPortLeak,
            format!(
                "{name} ({pid}) holds {} BOUND ports of the dynamic range: sockets bound (port 0) and never connected, listened on or closed, each a port no other connection can take",
                group(n)
            ),
            json!({"pid": pid, "name": name, "bound_ports": n}),
            format!(
                "see them (PowerShell):\nGet-NetTCPConnection -State Bound -OwningProcess {pid}\nor (cmd, elevated): netstat -anobq\nfix the application so every socket it binds is closed on every path; restarting {name} frees them now"
            ),
        ));
    }
}

fn off_by_one(w: &WindowsSettings, out: &mut Vec<Finding>) {
    for (version, d) in [("ipv4", w.dynamic_ports_v4), ("ipv6", w.dynamic_ports_v6)] {
        let Some(d) = d else { continue };
        let Some(r) = d.range() else { continue };
        if r.high != 65534 {
            continue;
        }
        let wide = rules::WINDOWS_WIDE_RANGE;
        let (start, num, meant) = if d.start == wide.low - 1 {
            (wide.low, wide.len(), wide)
        } else {
            (
                d.start,
                d.count + 1,
                PortRange {
                    low: d.start,
                    high: 65535,
                },
            )
        };
        out.push(Finding::host(
            FindingCode::DynamicRangeOffByOne,
            format!(
                "the {version} dynamic range is start={} num={} = {r}: the widely copied start=32767 num=32768 leaves out 65535 (high = start + num − 1); you probably meant {meant}",
                d.start, d.count
            ),
            json!({"ip_version": version, "start": d.start, "num": d.count, "high": r.high}),
            format!("netsh int {version} set dynamicport tcp start={start} num={num}"),
        ));
    }
}

fn registry_findings(w: &WindowsSettings, reg: &TcpipRegistry, out: &mut Vec<Finding>) {
    let build = w.build;
    let values = [
        ("TcpTimedWaitDelay", reg.tcp_timed_wait_delay),
        ("MaxUserPort", reg.max_user_port),
        ("StrictTimeWaitSeqCheck", reg.strict_time_wait_seq_check),
        ("TcpNumConnections", reg.tcp_num_connections),
        ("MaxHashTableSize", reg.max_hash_table_size),
    ];
    for (name, value) in values {
        let Some(v) = value else { continue };
        let Some((lo, hi)) = tcpip_value_range(name, build) else {
            continue;
        };
        let pow2_bad = name == "MaxHashTableSize" && !v.is_power_of_two();
        if (lo..=hi).contains(&v) && !pow2_bad {
            continue;
        }
        let timed_wait = name == "TcpTimedWaitDelay";
        let code = if timed_wait {
            FindingCode::TimeWaitDelayOutOfRange
        } else {
            FindingCode::RegistryValueOutOfRange
        };
        out.push(Finding {
            code,
            severity: code.severity().unwrap_or(Severity::Info),
            pool: None,
            message: format!(
                "{name}={v} is outside the documented {lo}–{hi}{}{}: Windows may ignore or clamp it (unverified which), so the value in effect is unknown{}",
                if pow2_bad { " (and not a power of 2)" } else { "" },
                build.map(|b| format!(" for build {b}")).unwrap_or_default(),
                if timed_wait {
                    format!("; portdoctor does not use it and computes with {} s, the longer documented default", rules::WINDOWS_TIME_WAIT_SECONDS_LONG)
                } else {
                    String::new()
                }
            ),
            evidence: evidence(json!({"value": name, "data": v, "valid": [lo, hi], "build": build})),
            fix: if timed_wait {
                reg_add_fix("TcpTimedWaitDelay", 30)
            } else {
                reg_delete_fix(name)
            },
        });
    }
    if let (Some(max), Some(range)) = (
        reg.max_user_port,
        w.dynamic_ports_v4.and_then(DynamicPorts::range),
    ) {
        // 65534 is MaxUserPort's documented ceiling, so it "agrees" with a range ending at 65535.
        let disagree = u32::from(range.high) != max && !(max == 65534 && range.high == 65535);
        out.push(Finding::host(
            FindingCode::MaxUserPortIgnored,
            format!(
                "MaxUserPort={max} is set, but since Vista the netsh dynamic range ({}) decides which ports are used{}; whether MaxUserPort still has any effect is unverified",
                range,
                if disagree { format!(" — the two disagree ({max} vs {})", range.high) } else { String::new() }
            ),
            json!({"MaxUserPort": max, "dynamic_range": [range.low, range.high], "build": w.build}),
            format!(
                "size the range with netsh (elevated cmd or PowerShell):\n{}\nand remove the legacy value to avoid confusion:\n{}",
                netsh_dynamicport_fix(range.low, range.len()),
                reg_delete_fix("MaxUserPort")
            ),
        ));
    }
    if let Some(v) = reg.strict_time_wait_seq_check {
        out.push(Finding::host(
            FindingCode::StrictTimeWaitSeqCheckUnverified,
            format!(
                "StrictTimeWaitSeqCheck={v} is set; it is said to make TcpTimedWaitDelay take effect on some older versions — its effect on this build{} is unverified, and portdoctor assumes none",
                w.build.map(|b| format!(" ({b})")).unwrap_or_default()
            ),
            json!({"StrictTimeWaitSeqCheck": v, "TcpTimedWaitDelay": reg.tcp_timed_wait_delay, "build": w.build}),
            "no change needed; to know, measure: close a burst of outbound connections and time how long they stay in TIME_WAIT (netstat -anq)".into(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{analyze, Level, Scope, Thresholds};
    use crate::fixture::SnapshotBuilder;
    use crate::snapshot::{DynamicPorts, EventStat, ExcludedRange, ValueSource};

    fn ex(low: u16, high: u16, administered: bool) -> ExcludedRange {
        ExcludedRange {
            low,
            high,
            administered,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn codes(s: &Snapshot) -> Vec<&'static str> {
        analyze(s, Thresholds::default())
            .verdict
            .findings
            .iter()
            .map(|f| f.code.as_str())
            .collect()
    }

    #[test]
    fn capacity_is_host_wide_per_ip_version() {
        let s = SnapshotBuilder::windows()
            .windows_settings(|w| {
                w.excluded_ports_v4 = vec![ex(49671, 49770, false), ex(50000, 50059, true)];
            })
            .listen("0.0.0.0", 50500) // every IPv4 address
            .listen("10.0.0.5", 51000) // on one address: the port is gone for all
            .bound("10.0.0.6", 52000) // bound only: gone for all too
            .listen("10.0.0.5", 49700) // excluded already: not counted twice
            .listen("::", 53000) // IPv6 only
            .listen("10.0.0.5", 8080) // outside the range
            .build();
        // The key's address does not matter: one pool per IP version.
        for a in ["0.0.0.0", "10.0.0.5", "10.0.0.7"] {
            assert_eq!(
                windows_pool_capacity(&s, ip(a)),
                Some(16384 - 160 - 3),
                "{a}"
            );
        }
        assert_eq!(windows_pool_capacity(&s, ip("::")), Some(16384 - 1));
        let a = analyze(&s, Thresholds::default());
        let c = a.capacity.unwrap();
        assert_eq!((c.reserved_in_range, c.usable), (160, 16384 - 160 - 3));
        // TcpTimedWaitDelay absent: the documents say 120 s or 240 s; the longer is used.
        assert_eq!(s.settings.time_wait_seconds, Some(240));
        assert_eq!(s.settings.time_wait_source, Some(ValueSource::Default));
    }

    /// The case of issue 17: 8,000 outbound sockets on 10.0.0.5 and 8,000 on 127.0.0.1 are
    /// 16,000 of the 16,384 ports host-wide (critical), not two pools at 48.8 % (OK).
    #[test]
    fn sockets_on_two_addresses_fill_one_host_wide_pool() {
        let s = SnapshotBuilder::windows()
            .pool("10.0.0.5", "10.0.0.9", 443, 3000, 5000, (0, 100_000))
            .pool("127.0.0.1", "127.0.0.1", 8080, 3000, 5000, (0, 100_000))
            .build();
        let a = analyze(&s, Thresholds::default());
        assert_eq!(a.pools.len(), 1, "{:?}", a.pools);
        let p = &a.pools[0];
        assert_eq!(p.scope, Scope::Host);
        assert_eq!(p.key.local_ip, ip("0.0.0.0"));
        assert_eq!((p.in_use, p.capacity), (16_000, Some(16_384)));
        assert_eq!(p.level, Level::Critical);
        assert_eq!(a.verdict.level, Level::Critical);
        let split: Vec<(IpAddr, u64)> = p
            .by_local_address
            .iter()
            .map(|b| (b.local_ip, b.sockets))
            .collect();
        assert_eq!(split, vec![(ip("10.0.0.5"), 8000), (ip("127.0.0.1"), 8000)]);
        let f = a
            .verdict
            .findings
            .iter()
            .find(|f| f.pool.is_some())
            .unwrap();
        assert!(
            f.fix.contains("no matter the number of IP addresses"),
            "{}",
            f.fix
        );
        assert!(f.fix.contains("unverified"), "{}", f.fix);
        assert!(!f.fix.contains("spread"), "{}", f.fix);
    }

    #[test]
    fn an_auto_reuse_range_makes_destination_pools_inside_it_only() {
        let s = SnapshotBuilder::windows()
            .windows_settings(|w| {
                w.auto_reuse_ports = Some(DynamicPorts {
                    start: 60000,
                    count: 5536,
                });
            })
            .listen("10.0.0.5", 60010) // inside the reuse range
            .pool("10.0.0.5", "10.0.0.9", 443, 100, 0, (0, 0))
            .established("10.0.0.5", 60001, "10.0.0.9", 443)
            .established("10.0.0.5", 60001, "10.0.0.12", 443)
            .build();
        let a = analyze(&s, Thresholds::default());
        let host = a.pools.iter().find(|p| p.scope == Scope::Host).unwrap();
        assert_eq!(host.in_use, 100);
        // 49152-59999 only: the reuse range is out of the host pool.
        assert_eq!(host.capacity, Some(10_848));
        let shared: Vec<_> = a
            .pools
            .iter()
            .filter(|p| p.scope == Scope::Destination)
            .collect();
        assert_eq!(shared.len(), 2);
        for p in shared {
            assert_eq!(p.in_use, 1);
            assert_eq!(p.capacity, Some(5536 - 1));
        }
        // 0 ports = not configured: everything in the host pool.
        let off = SnapshotBuilder::windows()
            .windows_settings(|w| {
                w.auto_reuse_ports = Some(DynamicPorts {
                    start: 60000,
                    count: 0,
                });
            })
            .pool("10.0.0.5", "10.0.0.9", 443, 100, 0, (0, 0))
            .build();
        let a = analyze(&off, Thresholds::default());
        assert_eq!(a.pools.len(), 1);
        assert_eq!(a.pools[0].capacity, Some(16_384));
    }

    #[test]
    fn pools_group_all_destinations_and_addresses_of_an_ip_version() {
        let s = SnapshotBuilder::windows()
            .pool("10.0.0.5", "10.0.0.9", 1433, 100, 12_000, (0, 100_000))
            .pool("10.0.0.5", "10.0.0.12", 443, 50, 3000, (0, 100_000))
            .restart_ports()
            .pool("2001:db8::5", "2001:db8::9", 443, 10, 0, (0, 0))
            .owned_by(4242, "w3wp.exe")
            .build();
        let a = analyze(&s, Thresholds::default());
        assert_eq!(a.pools.len(), 2);
        let p = &a.pools[0];
        assert_eq!(p.scope, Scope::Host);
        assert_eq!((p.key.local_ip, p.key.remote_ip), (ip("0.0.0.0"), None));
        assert_eq!(
            (p.in_use, p.time_wait, p.blocking_time_wait),
            (15_150, 15_000, 15_000)
        );
        assert_eq!(p.capacity, Some(16384));
        assert_eq!(p.level, Level::Critical); // 15,150 / 16,384 = 92 %
                                              // No TIME_WAIT timers on Windows: no made-up rate or forecast.
        assert_eq!((p.connect_rate_per_s, p.eta_seconds), (None, None));
        assert_eq!(p.processes[0].name, "w3wp.exe");
        assert!(!p.tw_reuse_applies);
        let f = a
            .verdict
            .findings
            .iter()
            .find(|f| f.pool.is_some())
            .unwrap();
        assert!(
            f.fix.contains("TcpTimedWaitDelay /t REG_DWORD /d 30"),
            "{}",
            f.fix
        );
        assert!(f.fix.contains("SO_REUSE_UNICASTPORT"), "{}", f.fix);
    }

    #[test]
    fn excluded_ranges_inside_the_dynamic_range_are_a_finding() {
        let s = SnapshotBuilder::windows()
            .windows_settings(|w| {
                let hyperv = vec![
                    ex(5357, 5357, false),
                    ex(49671, 49770, false),
                    ex(50000, 50059, true),
                ];
                w.excluded_ports_v4.clone_from(&hyperv);
                w.excluded_ports_v6 = hyperv;
            })
            .build();
        let a = analyze(&s, Thresholds::default());
        let f: Vec<_> = a
            .verdict
            .findings
            .iter()
            .filter(|f| f.code == FindingCode::ExcludedRangeOverlap)
            .collect();
        // Same list for both versions: reported once.
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Info);
        assert!(
            f[0].message.starts_with("160 of the 16,384 ports"),
            "{}",
            f[0].message
        );
        assert!(f[0].message.contains("1 administered"), "{}", f[0].message);
        assert_eq!(f[0].evidence["excluded_in_range"], 160);
        assert_eq!(a.verdict.level, Level::Ok);
        // No exclusions inside the range: no finding.
        let s = SnapshotBuilder::windows()
            .windows_settings(|w| w.excluded_ports_v4 = vec![ex(5357, 5357, false)])
            .build();
        assert!(!codes(&s).contains(&"excluded_range_overlap"));
    }

    #[test]
    fn off_by_one_advice_is_spotted() {
        let s = SnapshotBuilder::windows()
            .windows_settings(|w| {
                w.dynamic_ports_v4 = Some(DynamicPorts {
                    start: 32767,
                    count: 32768,
                });
            })
            .build();
        let a = analyze(&s, Thresholds::default());
        let f = a
            .verdict
            .findings
            .iter()
            .find(|f| f.code == FindingCode::DynamicRangeOffByOne)
            .unwrap();
        assert_eq!(
            f.fix,
            "netsh int ipv4 set dynamicport tcp start=32768 num=32768"
        );
        assert!(f.message.contains("32767–65534"), "{}", f.message);
        assert_eq!(s.settings.ephemeral_ports, PortRange::new(32767, 65534));
        let ok = SnapshotBuilder::windows()
            .windows_settings(|w| {
                w.dynamic_ports_v4 = Some(DynamicPorts {
                    start: 32768,
                    count: 32768,
                });
            })
            .build();
        assert!(!codes(&ok).contains(&"dynamic_range_off_by_one"));
    }

    /// Issue 17 item 6: every line of a Windows fix pastes as it is into cmd and into Windows
    /// PowerShell 5.1 (which has no `&&`); reboot notes stand on their own line.
    /// Issue 17 item 2: BOUND sockets (from Get-NetTCPConnection) leave the host pool and a
    /// process accumulating them is named.
    #[test]
    fn a_process_holding_bound_ports_is_a_leak() {
        let mut b = SnapshotBuilder::windows();
        for port in 50_000..50_150 {
            b = b.bound("10.0.0.5", port);
        }
        let s = b
            .pool("10.0.0.5", "10.0.0.9", 443, 10, 0, (0, 0))
            .owned_by(4242, "leaky.exe")
            .build();
        let mut s = s;
        for sock in std::sync::Arc::make_mut(&mut s.sockets).iter_mut() {
            sock.pid = Some(4242);
        }
        let a = analyze(&s, Thresholds::default());
        let f = a
            .verdict
            .findings
            .iter()
            .find(|f| f.code == FindingCode::BoundPortLeak)
            .expect("bound_port_leak");
        assert_eq!(f.severity, Severity::Warning);
        assert!(
            f.message
                .starts_with("leaky.exe (4242) holds 150 BOUND ports"),
            "{}",
            f.message
        );
        assert!(f
            .fix
            .contains("Get-NetTCPConnection -State Bound -OwningProcess 4242"));
        assert_eq!(a.pools[0].capacity, Some(16_384 - 150));
        assert_eq!(a.states.get("BOUND"), Some(&150));
        // 99 is not a leak.
        let mut b = SnapshotBuilder::windows();
        for port in 50_000..50_099 {
            b = b.bound("10.0.0.5", port);
        }
        let mut s = b.build();
        for sock in std::sync::Arc::make_mut(&mut s.sockets).iter_mut() {
            sock.pid = Some(7);
        }
        assert!(!codes(&s).contains(&"bound_port_leak"));
    }

    /// Issue 17 item 4: rates and the forecast from two snapshots. 3,000 connections appeared in
    /// 10 s and the pool grew by as many: 300/s, and the 12,384 free ports last 41.3 s.
    #[test]
    fn rates_and_eta_come_from_the_previous_snapshot() {
        let mut s = SnapshotBuilder::windows()
            .pool("10.0.0.5", "10.0.0.9", 443, 4000, 0, (0, 0))
            .build();
        s.taken_at_unix_ms = 1_000_010_000;
        let before: Vec<_> = s.sockets.iter().take(1000).cloned().collect();
        // No previous snapshot: no forecast (and no TIME_WAIT to take a rate from).
        let a = analyze(&s, Thresholds::default());
        assert_eq!(a.pools[0].eta_seconds, None);
        assert_eq!(a.pools[0].level, Level::Ok);
        s.windows.as_mut().unwrap().previous = Some(crate::snapshot::PreviousSample {
            taken_at_unix_ms: 1_000_000_000,
            sockets: std::sync::Arc::new(before),
        });
        let a = analyze(&s, Thresholds::default());
        let p = &a.pools[0];
        assert_eq!(p.connect_rate_per_s, Some(300.0));
        assert_eq!(p.rate_window_seconds, Some(10.0));
        let eta = p.eta_seconds.unwrap();
        assert!((eta - 12_384.0 / 300.0).abs() < 1e-6, "{eta}");
        // 24 % used, but full within a minute: critical by the forecast.
        assert_eq!(p.level, Level::Critical);
        // A shrinking pool has a rate but no forecast.
        let mut shrink = s.clone();
        let w = shrink.windows.as_mut().unwrap();
        w.previous.as_mut().unwrap().sockets = std::sync::Arc::new(
            s.sockets
                .iter()
                .cloned()
                .chain(
                    SnapshotBuilder::windows()
                        .pool("10.0.0.6", "10.0.0.9", 443, 500, 0, (0, 0))
                        .build()
                        .sockets
                        .iter()
                        .cloned(),
                )
                .collect(),
        );
        let a = analyze(&shrink, Thresholds::default());
        assert_eq!(
            (a.pools[0].connect_rate_per_s, a.pools[0].eta_seconds),
            (Some(0.0), None)
        );
    }

    #[test]
    fn windows_fixes_paste_line_by_line() {
        let s = SnapshotBuilder::windows()
            .windows_settings(|w| {
                let hyperv = vec![ex(49671, 49770, false)];
                w.excluded_ports_v4.clone_from(&hyperv);
                w.excluded_ports_v6 = hyperv;
                let r = w.registry.as_mut().unwrap();
                r.max_user_port = Some(5000);
                r.tcp_timed_wait_delay = Some(1);
                r.max_hash_table_size = Some(1000);
                w.events.as_mut().unwrap().ports_exhausted_4231 = EventStat {
                    count: 1,
                    last_unix_ms: Some(1_795_814_043_512),
                };
            })
            .pool("10.0.0.5", "10.0.0.9", 443, 100, 16_000, (0, 100_000))
            .build();
        let a = analyze(&s, Thresholds::default());
        let codes: Vec<&str> = a.verdict.findings.iter().map(|f| f.code.as_str()).collect();
        for code in [
            "pool_near_exhaustion",
            "port_exhaustion_events",
            "excluded_range_overlap",
            "max_user_port_ignored",
            "time_wait_delay_out_of_range",
        ] {
            assert!(codes.contains(&code), "{code} missing: {codes:?}");
        }
        let mut commands = 0;
        for f in &a.verdict.findings {
            for line in f.fix.lines() {
                assert!(!line.contains("&&"), "{}: {line}", f.code.as_str());
                assert!(
                    !line.contains("(then reboot)"),
                    "{}: {line}",
                    f.code.as_str()
                );
                if line.starts_with("reg ") {
                    assert!(line.ends_with(" /f"), "{line}");
                    commands += 1;
                }
                if line.starts_with("netsh ") {
                    assert!(!line.contains(" (") && !line.contains(';'), "{line}");
                    commands += 1;
                }
            }
        }
        assert!(commands >= 5, "{commands} command lines");
    }

    #[test]
    fn registry_advice_is_judged_honestly() {
        let s = SnapshotBuilder::windows()
            .windows_settings(|w| {
                let r = w.registry.as_mut().unwrap();
                r.max_user_port = Some(5000);
                r.strict_time_wait_seq_check = Some(1);
                r.tcp_timed_wait_delay = Some(1);
                r.max_hash_table_size = Some(1000);
            })
            .build();
        // Out of range: reported, not used in the arithmetic.
        assert_eq!(s.settings.time_wait_seconds, Some(240));
        assert_eq!(s.settings.time_wait_source, Some(ValueSource::Default));
        let a = analyze(&s, Thresholds::default());
        let find = |code: &str| {
            a.verdict
                .findings
                .iter()
                .find(|f| f.code.as_str() == code)
                .unwrap()
        };
        let m = find("max_user_port_ignored");
        assert!(
            m.message.contains("unverified") && m.message.contains("disagree"),
            "{}",
            m.message
        );
        assert!(m.fix.contains("reg delete"), "{}", m.fix);
        let st = find("strict_time_wait_seq_check_unverified");
        assert_eq!(st.severity, Severity::Info);
        assert!(st.message.contains("unverified"));
        let tw = find("time_wait_delay_out_of_range");
        assert_eq!(tw.severity, Severity::Warning);
        assert!(tw.message.contains("2–300"), "{}", tw.message);
        assert!(find("registry_value_out_of_range")
            .message
            .contains("power of 2"));
        assert_eq!(a.verdict.level, Level::Warning);
        // Older build: 30–300.
        let old = SnapshotBuilder::windows()
            .windows_settings(|w| {
                w.build = Some(7601);
                w.registry.as_mut().unwrap().tcp_timed_wait_delay = Some(10);
            })
            .build();
        assert!(codes(&old).contains(&"time_wait_delay_out_of_range"));
        let fine = SnapshotBuilder::windows()
            .windows_settings(|w| w.registry.as_mut().unwrap().tcp_timed_wait_delay = Some(30))
            .build();
        assert!(codes(&fine).is_empty(), "{:?}", codes(&fine));
    }

    #[test]
    fn tcpip_events_are_critical_and_unreadable_logs_invent_nothing() {
        let s = SnapshotBuilder::windows()
            .windows_settings(|w| {
                let e = w.events.as_mut().unwrap();
                e.ports_exhausted_4231 = EventStat {
                    count: 3,
                    last_unix_ms: Some(1_795_814_043_512),
                };
                e.reuse_failed_4227 = EventStat {
                    count: 1,
                    last_unix_ms: Some(1_795_814_038_007),
                };
            })
            .build();
        let a = analyze(&s, Thresholds::default());
        assert_eq!(a.verdict.level, Level::Critical);
        let f = &a.verdict.findings[0];
        assert_eq!(f.code, FindingCode::PortExhaustionEvents);
        assert!(
            f.message.contains("4231 (no ephemeral port left) ×3"),
            "{}",
            f.message
        );
        assert!(
            f.message.contains("last 2026-11-27 21:14:03 UTC"),
            "{}",
            f.message
        );
        let unreadable = SnapshotBuilder::windows()
            .windows_settings(|w| w.events = None)
            .build();
        assert!(codes(&unreadable).is_empty());
    }
}
