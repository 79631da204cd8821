//! SNAT pools, the conntrack table and the cloud NAT model in the check report: rows of the
//! JSON `pools` array with `scope: "snat"` (additive fields), the top-level `conntrack` object,
//! and the text section under the pool table (shown only when there are SNAT pools or a cloud
//! NAT model).

use std::fmt::Write as _;
use std::net::IpAddr;

use serde::Serialize;

use super::json::PoolOut;
use super::text::{fit, Paint, POOL_COL};
use crate::analysis::snat::{CloudFlows, RangeSource, SnatPool, SourceCount};
use crate::analysis::{Analysis, Level, Scope};
use crate::snapshot::conntrack::{ConntrackStats, NatRule};
use crate::snapshot::Snapshot;
use crate::units::group;

/// What a `scope: "snat"` pool row adds to the socket pools' fields.
#[derive(Serialize)]
pub struct NatFields<'a> {
    /// The NAT port range the pool's ports come from, `[low, high]`.
    pub nat_range: [u16; 2],
    pub range_source: &'a RangeSource,
    /// `fully-random` on the rule; `null` when no rule said.
    pub fully_random: Option<bool>,
    /// Original source addresses (pods, containers) with the most flows.
    pub sources: &'a [SourceCount],
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

/// The SNAT pools as rows of the `pools` array (`local_ip` is the NAT address).
pub fn pool_rows(a: &Analysis) -> Vec<PoolOut<'_>> {
    let Some(s) = &a.snat else {
        return Vec::new();
    };
    s.pools
        .iter()
        .map(|p| PoolOut {
            protocol: &p.protocol,
            scope: Scope::Snat,
            local_ip: p.nat_ip.to_string(),
            remote_ip: Some(p.remote_ip.to_string()),
            remote_port: Some(p.remote_port),
            in_use: p.in_use,
            established: p.state("ESTABLISHED"),
            time_wait: p.state("TIME_WAIT"),
            blocking_time_wait: p.state("TIME_WAIT"),
            tw_reuse_applies: false,
            capacity: Some(p.capacity),
            bind_held_ports: 0,
            utilization: Some(round(p.utilization, 4)),
            overcommitted: p.in_use > u64::from(p.capacity),
            connect_rate_per_s: None,
            rate_window_seconds: None,
            eta_seconds: None,
            level: p.level,
            processes: None,
            states: &p.states,
            connect_failures: None,
            by_local_address: &[],
            nat: Some(NatFields {
                nat_range: [p.nat_range.low, p.nat_range.high],
                range_source: &p.range_source,
                fully_random: p.fully_random,
                sources: &p.sources,
            }),
        })
        .collect()
}

/// The top-level `conntrack` object: `null` where conntrack is not loaded.
#[derive(Serialize)]
pub struct ConntrackOut<'a> {
    pub count: Option<u64>,
    pub max: Option<u64>,
    pub fill: Option<f64>,
    /// Summed per-CPU statistics since the namespace was made; `null` when unreadable.
    pub stats: Option<ConntrackStats>,
    pub tcp_timeout_time_wait_s: Option<u32>,
    pub tcp_timeout_established_s: Option<u32>,
    /// Entries dumped; `null` when the table could not be dumped (no CAP_NET_ADMIN).
    pub dumped: Option<u64>,
    /// Source-NATed entries; `null` when not dumped.
    pub snat_entries: Option<u64>,
    pub rules: &'a [NatRule],
    pub rules_source: Option<&'a str>,
    /// `--cloud-nat`: destinations with the most flows against the modelled quota.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud_nat: Option<&'a [CloudFlows]>,
}

pub fn conntrack_out<'a>(snap: &'a Snapshot, a: &'a Analysis) -> Option<ConntrackOut<'a>> {
    let ct = snap.conntrack.as_ref()?;
    let s = a.snat.as_ref();
    Some(ConntrackOut {
        count: ct.count,
        max: ct.max,
        fill: s.and_then(|s| s.table_fill).map(|f| round(f, 4)),
        stats: ct.stats,
        tcp_timeout_time_wait_s: ct.tcp_timeout_time_wait_s,
        tcp_timeout_established_s: ct.tcp_timeout_established_s,
        dumped: ct.dumped,
        snat_entries: ct.snat.as_ref().map(|v| v.len() as u64),
        rules: &ct.rules,
        rules_source: ct.rules_source.as_deref(),
        cloud_nat: a.thresholds.cloud_nat.and(s.map(|s| s.cloud.as_slice())),
    })
}

fn host_port(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V6(ip) => format!("[{ip}]:{port}"),
        IpAddr::V4(ip) => format!("{ip}:{port}"),
    }
}

/// The label of a SNAT pool in the table: `NAT → remote:port proto`.
pub fn pool_label(p: &SnatPool) -> String {
    format!(
        "{} → {} {}",
        p.nat_ip,
        host_port(p.remote_ip, p.remote_port),
        p.protocol
    )
}

/// The SNAT section of the text report; nothing without SNAT pools or a cloud NAT model.
pub(super) fn text_lines(a: &Analysis, top: Option<usize>, paint: &Paint, out: &mut String) {
    let Some(s) = &a.snat else {
        return;
    };
    if !s.pools.is_empty() {
        out.push('\n');
        let _ = writeln!(
            out,
            "{}",
            paint.bold(&format!(
                "{:<POOL_COL$} {:>7} {:>11} {:>8} {:>4}  NAT RANGE (from)",
                "SNAT POOL nat → remote", "IN USE", "TIME_WAIT", "CAPACITY", "USE"
            ))
        );
        let shown = top.unwrap_or(usize::MAX).min(s.pools.len());
        for p in &s.pools[..shown] {
            let random = match p.fully_random {
                Some(true) => ", fully-random",
                _ => "",
            };
            let line = format!(
                "{:<POOL_COL$} {:>7} {:>11} {:>8} {:>3.0}%  {} ({}{random})",
                fit(&pool_label(p), POOL_COL),
                group(p.in_use),
                group(p.state("TIME_WAIT")),
                group(u64::from(p.capacity)),
                p.utilization * 100.0,
                p.nat_range,
                p.range_source.origin.replace('_', " "),
            );
            let _ = writeln!(out, "{}", paint.level(p.level, &line));
        }
        if shown < s.pools.len() {
            let _ = writeln!(
                out,
                "{}",
                paint.dim(&format!(
                    "… {} more SNAT pool{} (--top 0 shows all)",
                    group((s.pools.len() - shown) as u64),
                    if s.pools.len() - shown == 1 { "" } else { "s" }
                ))
            );
        }
    }
    if let (Some(model), Some(worst)) = (a.thresholds.cloud_nat, s.cloud.first()) {
        let line = format!(
            "cloud NAT model ({}, {} flows per destination): busiest {} {} with {} flows ({:.0}%)",
            model.name(),
            group(u64::from(model.quota())),
            host_port(worst.remote_ip, worst.remote_port),
            worst.protocol,
            group(worst.flows),
            worst.utilization * 100.0
        );
        let _ = writeln!(
            out,
            "{}",
            if worst.level > Level::Ok {
                paint.level(worst.level, &line)
            } else {
                paint.dim(&line)
            }
        );
    }
}
