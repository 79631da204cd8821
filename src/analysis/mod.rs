//! The functional core: pure functions from a [`Snapshot`] to an [`Analysis`] (pools, rates,
//! forecasts, verdict). No I/O here; everything is tested on fixture snapshots.

pub mod failures;
mod findings;
mod pools;
pub mod snat;
pub mod udp;
mod windows;

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;

pub use findings::{Finding, FindingCode, Level, Severity, Verdict};
pub use pools::{
    build_pools, eta_seconds, owners_in_state, AddressCount, Filler, Pool, PoolKey, ProcessCount,
    Scope, MIN_FORECAST_ARRIVALS,
};
pub use udp::{UdpHolder, UdpPool};

use crate::rules;
use crate::snapshot::{Os, PortRange, Snapshot};

/// When a pool counts as full enough to warn about.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Thresholds {
    /// Utilization (0..1) at which a pool is a warning.
    pub warn: f64,
    /// Utilization (0..1) at which a pool is critical.
    pub crit: f64,
    /// A growing pool that fills within this many seconds is critical.
    pub eta_seconds: f64,
    /// `--cloud-nat`: the cloud NAT in front of the host, modelled (issue 16).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud_nat: Option<snat::CloudNat>,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            warn: rules::WARN_UTILIZATION,
            crit: rules::CRIT_UTILIZATION,
            eta_seconds: rules::CRIT_ETA_SECONDS,
            cloud_nat: None,
        }
    }
}

/// Seconds of TIME_WAIT history used for the connect rate: recent enough to show a ramp,
/// long enough to smooth single bursts.
pub const RATE_WINDOW_SECONDS: u32 = 10;

/// The capacity every connect pool of the namespace shares, and why it is what it is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Capacity {
    pub range: PortRange,
    /// Ports of the range listed as reserved/excluded.
    pub reserved_in_range: u32,
    /// Ports of the range held by listeners or bound sockets (and not already reserved).
    pub bound_in_range: Vec<u16>,
    /// What a pool can hold: range − reserved − bound.
    pub usable: u32,
}

/// Everything `check` reports, derived from one snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    pub capacity: Option<Capacity>,
    /// Socket count per state name (ss spelling).
    pub states: BTreeMap<&'static str, u64>,
    pub inbound: u64,
    pub outbound: u64,
    /// Non-listening sockets whose local port lies outside the ephemeral range and is no
    /// listener's: explicitly bound clients or server-side TIME_WAIT of a gone listener.
    pub other: u64,
    /// All pools, highest utilization first (destination pools and, where detected, per local
    /// address pools for bind-before-connect).
    pub pools: Vec<Pool>,
    pub time_wait_total: u64,
    /// Sockets that have a file (inode) but whose owner was not found; `None` without a scan.
    pub owners_unknown: Option<u64>,
    /// Local addresses whose pattern suggests bind-before-connect.
    pub bind_before_connect: Vec<BindPattern>,
    /// UDP pools (docs/udp.md), IPv4 first; empty without UDP sockets.
    pub udp_pools: Vec<UdpPool>,
    pub verdict: Verdict,
    pub thresholds: Thresholds,
    /// SNAT pools, conntrack fill and the cloud NAT model; `None` without conntrack.
    pub snat: Option<snat::SnatAnalysis>,
}

/// Evidence for bind() before connect() from one local address.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BindPattern {
    pub local_ip: IpAddr,
    pub sockets: u64,
    pub destinations: u64,
    /// Ports used by more than one socket of this address (0 under bind-before-connect).
    pub shared_ports: u64,
    /// Share of ports with the parity bind() prefers (the opposite of the range start's).
    pub bind_parity_share: f64,
}

impl Analysis {
    /// The level of every pool of every kind (TCP, UDP, SNAT): what `verdict.pools` in JSON and
    /// the text report's `pools:` line count.
    pub fn pool_levels(&self) -> impl Iterator<Item = Level> + '_ {
        self.pools
            .iter()
            .map(|p| p.level)
            .chain(self.udp_pools.iter().map(|p| p.level))
            .chain(
                self.snat
                    .iter()
                    .flat_map(|s| s.pools.iter().map(|p| p.level)),
            )
    }
}

/// Runs the whole model on one snapshot.
pub fn analyze(snapshot: &Snapshot, thresholds: Thresholds) -> Analysis {
    let capacity = capacity(snapshot);
    let built = build_pools(snapshot, capacity.as_ref(), thresholds);
    let mut states: BTreeMap<&'static str, u64> = BTreeMap::new();
    for s in snapshot.sockets.iter() {
        *states.entry(s.state.name()).or_default() += 1;
    }
    let owners_unknown = snapshot.owners.as_ref().map(|o| {
        snapshot
            .sockets
            .iter()
            .filter(|s| s.inode != 0 && s.pid.is_none() && !o.by_inode.contains_key(&s.inode))
            .count() as u64
    });
    let time_wait_total = states.get("TIME_WAIT").copied().unwrap_or(0);
    let mut verdict = findings::verdict(
        snapshot,
        capacity.as_ref(),
        &built.pools,
        &built.bind_patterns,
        time_wait_total,
        thresholds,
    );
    let udp_pools = udp::udp_pools(snapshot, thresholds);
    verdict.add(udp::findings(snapshot, &udp_pools));
    let snat = snat::analyze(snapshot, thresholds);
    if let Some(s) = &snat {
        snat::add_findings(snapshot, s, thresholds, &mut verdict);
    }
    Analysis {
        capacity,
        states,
        inbound: built.inbound,
        outbound: built.outbound,
        other: built.other,
        pools: built.pools,
        time_wait_total,
        owners_unknown,
        bind_before_connect: built.bind_patterns,
        udp_pools,
        verdict,
        thresholds,
        snat,
    }
}

/// Range − reserved − bound ports in the range. Bound ports leave *every* connect pool of the
/// namespace whatever address they are bound to (domain.md, measured on 6.18).
/// On Windows it is the IPv4 host-wide pool ([`windows_pool_capacity`]): binds on any IPv4
/// address leave it, and so does a configured auto-reuse range.
pub fn capacity(snapshot: &Snapshot) -> Option<Capacity> {
    let range = snapshot.settings.ephemeral_ports?;
    let reserved = &snapshot.settings.reserved_ports;
    let reserved_in_range: u32 = reserved
        .iter()
        .filter_map(|r| r.intersect(range))
        .map(PortRange::len)
        .sum();
    let windows = snapshot.os == Os::Windows;
    // Windows: a configured auto-reuse range inside the range is its own (shared) pool.
    let reuse = if windows {
        windows::auto_reuse_for(snapshot).and_then(|r| r.intersect(range))
    } else {
        None
    };
    let mut bound: Vec<u16> = snapshot
        .sockets
        .iter()
        .filter(|s| s.state.holds_bind_port())
        .filter(|s| !windows || s.local_ip.is_ipv4())
        .map(|s| s.local_port)
        .filter(|&p| range.contains(p) && !reserved.iter().any(|r| r.contains(p)))
        .filter(|&p| reuse.is_none_or(|r| !r.contains(p)))
        .collect();
    bound.sort_unstable();
    bound.dedup();
    let reuse_ports = reuse.map_or(0, |r| {
        r.len().saturating_sub(
            reserved
                .iter()
                .filter_map(|x| x.intersect(r))
                .map(PortRange::len)
                .sum(),
        )
    });
    let usable = range
        .len()
        .saturating_sub(reserved_in_range)
        .saturating_sub(reuse_ports)
        .saturating_sub(bound.len() as u32);
    Some(Capacity {
        range,
        reserved_in_range,
        bound_in_range: bound,
        usable,
    })
}

pub use windows::windows_pool_capacity;

#[cfg(test)]
mod tests;
