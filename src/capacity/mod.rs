//! The what-if model behind `portdoctor capacity` (and the prediction `portdoctor lab` checks):
//! pure functions from a [`Scenario`] (range, TIME_WAIT, rate, lifetime, pools, reuse) to an
//! [`Outcome`] (sustainable rate per pool and in total, headroom, time to exhaustion, and the
//! changes that make a demand fit). No I/O here.
//!
//! The arithmetic (domain.md §"Capacity arithmetic"): a port is held for the connection's
//! lifetime L plus, on the side that closes first, TIME_WAIT T; so one pool of U usable ports
//! sustains U / (L + T) new connections per second. With tcp_tw_reuse applying, a TIME_WAIT
//! port is reusable after tcp_tw_reuse_delay, so the hold time is L + delay; when the server
//! closes first, TIME_WAIT lands on the server's listening port and the hold time is L.

mod changes;
pub mod report;

use serde::Serialize;

pub use changes::{changes, Change, ChangeKind};

use crate::analysis::Scope;
use crate::rules;
use crate::snapshot::{Os, PortRange, Target};

/// OS defaults by name (`--os`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// Linux kernel defaults: range 32768–60999, TIME_WAIT 60 s, tcp_tw_reuse 2 (loopback only).
    LinuxDefault,
    /// Windows Server 2019 (Vista and later): dynamic range 49152–65535, TcpTimedWaitDelay
    /// default 120 s, one host-wide pool (per local address only with SO_PORT_SCALABILITY).
    Windows2019,
    /// As Windows 2019 with the 240 s TIME_WAIT that older documents give as the default.
    WindowsLegacy,
    /// A tuned Windows host: dynamic range 32768–65535, TcpTimedWaitDelay 30 s.
    WindowsTuned,
}

impl Preset {
    pub const ALL: [Preset; 4] = [
        Preset::LinuxDefault,
        Preset::Windows2019,
        Preset::WindowsLegacy,
        Preset::WindowsTuned,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Preset::LinuxDefault => "linux-default",
            Preset::Windows2019 => "windows-2019",
            Preset::WindowsLegacy => "windows-legacy",
            Preset::WindowsTuned => "windows-tuned",
        }
    }

    /// The scenario of this OS with no demand, one source IP and one destination.
    pub fn scenario(self) -> Scenario {
        let (os, range, tw, reuse) = match self {
            Preset::LinuxDefault => (
                Os::Linux,
                rules::LINUX_DEFAULT_RANGE,
                f64::from(rules::LINUX_TIME_WAIT_SECONDS),
                2,
            ),
            Preset::Windows2019 => (
                Os::Windows,
                rules::WINDOWS_DEFAULT_RANGE,
                f64::from(rules::WINDOWS_TIME_WAIT_SECONDS),
                0,
            ),
            Preset::WindowsLegacy => (Os::Windows, rules::WINDOWS_DEFAULT_RANGE, 240.0, 0),
            Preset::WindowsTuned => (Os::Windows, rules::WINDOWS_WIDE_RANGE, 30.0, 0),
        };
        Scenario {
            os,
            range,
            reserved: Vec::new(),
            bound_ports: 0,
            time_wait_s: tw,
            lifetime_s: 0.0,
            rate_per_s: None,
            destinations: 1,
            source_ips: 1,
            keepalive_share: 0.0,
            tw_reuse: reuse,
            tw_reuse_delay_s: f64::from(rules::TW_REUSE_DELAY_MS) / 1000.0,
            timestamps: true,
            loopback: false,
            bind_before_connect: false,
            server_closes_first: false,
            observed_pools: None,
            listening_ports: Vec::new(),
            target: Target::Host,
            port_scalability: false,
            udp: false,
        }
    }
}

/// Everything the model needs. Build one from a [`Preset`] and change fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scenario {
    pub os: Os,
    /// The ephemeral (Linux) or dynamic (Windows) port range.
    pub range: PortRange,
    /// Reserved (Linux) or excluded (Windows) port ranges; only their part inside the range
    /// counts.
    pub reserved: Vec<PortRange>,
    /// Ports in the range held by listeners or explicit binds (they leave every pool).
    pub bound_ports: u32,
    /// TIME_WAIT length T in seconds (Linux: 60, fixed).
    pub time_wait_s: f64,
    /// Mean connection lifetime L in seconds (connect to close).
    pub lifetime_s: f64,
    /// Offered requests per second (all destinations together); `None` = capacity only.
    pub rate_per_s: Option<f64>,
    /// Distinct (remote IP, remote port) destinations the traffic is spread over, evenly.
    pub destinations: u32,
    /// Source IPs the traffic is spread over, evenly.
    pub source_ips: u32,
    /// Share of requests that reuse an open connection (keep-alive, pools): 0..1.
    pub keepalive_share: f64,
    /// Linux `net.ipv4.tcp_tw_reuse`: 0 off, 1 on, 2 loopback only (ignored on Windows).
    pub tw_reuse: u8,
    /// Linux `net.ipv4.tcp_tw_reuse_delay` in seconds.
    pub tw_reuse_delay_s: f64,
    /// Linux `net.ipv4.tcp_timestamps` on (reuse needs it).
    pub timestamps: bool,
    /// The destinations are loopback addresses (where tcp_tw_reuse=2 applies).
    pub loopback: bool,
    /// The application binds (port 0) before connect(): ports become unique per source IP.
    pub bind_before_connect: bool,
    /// The server closes first, so TIME_WAIT lands on its listening port.
    pub server_closes_first: bool,
    /// Destination pools seen on the host (`--from-host`): the pools the traffic spreads over,
    /// instead of every source IP times every destination.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_pools: Option<u32>,
    /// Ports services listen on (`--from-host`): a wider range must leave them out, so the
    /// range change reserves them as `tune` requires.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub listening_ports: Vec<u16>,
    /// Where the scenario was read (`--from-host --netns …`): the fixes act there.
    #[serde(skip)]
    pub target: Target,
    /// Windows: the application sets SO_PORT_SCALABILITY, so each local address has its own
    /// dynamic range. Without it the range is one host-wide pool "no matter the number of IP
    /// addresses" (Winsock's SO_PORT_SCALABILITY page).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub port_scalability: bool,
    /// UDP clients (`--udp`, docs/udp.md): a socket holds its port exactly while it is open
    /// (no TIME_WAIT, no reuse), and one pool serves the whole namespace (Windows: host), all
    /// destinations and source addresses together. `bound_ports` then also counts the UDP
    /// ports already held (concurrency).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub udp: bool,
}

/// Why ports are held as long as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldReason {
    /// Lifetime plus the full TIME_WAIT.
    TimeWait,
    /// Lifetime plus tcp_tw_reuse_delay: TIME_WAIT ports are reused after the delay.
    TwReuse,
    /// Lifetime only: the server closes first, TIME_WAIT is on its side.
    ServerClosesFirst,
    /// Lifetime only: a UDP socket holds its port while open, and has no TIME_WAIT.
    UdpSocketLifetime,
}

/// What a demand does to the pools.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Demand {
    /// Requests per second offered.
    pub offered_per_s: f64,
    /// New connections per second: offered × (1 − keep-alive share).
    pub new_connections_per_s: f64,
    /// New connections per second into each pool (spread evenly).
    pub per_pool_per_s: f64,
    /// Ports each pool holds in steady state by Little's law: per-pool rate × hold time.
    /// Above `usable_ports` the demand does not fit (the pool runs out first).
    pub ports_needed_per_pool: f64,
    /// ports needed / usable ports.
    pub utilization: f64,
    /// Sustainable total − new connections per second (negative: the shortfall).
    pub headroom_per_s: Option<f64>,
    pub fits: bool,
    /// Seconds from an empty pool until it is full (usable / per-pool rate), only when the
    /// demand does not fit; otherwise `None` (the pool settles below its capacity).
    pub time_to_exhaustion_s: Option<f64>,
}

/// The model's answer for one scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// Range − reserved − bound: what one pool can hold.
    pub usable_ports: u32,
    pub range_ports: u32,
    pub reserved_in_range: u32,
    /// What a pool's ports are unique across (destination on Linux connect(); local address on
    /// Windows and under bind-before-connect).
    pub scope: Scope,
    pub pools: u64,
    /// Seconds a port stays taken per connection.
    pub hold_s: f64,
    pub hold_reason: HoldReason,
    /// New connections per second one pool sustains; `None` = not limited by ports (hold 0).
    pub per_pool_per_s: Option<f64>,
    /// The same for all pools together.
    pub total_per_s: Option<f64>,
    pub demand: Option<Demand>,
}

/// Whether tcp_tw_reuse lets connect() take over this scenario's TIME_WAIT ports: Linux, the
/// kernel's rule ([`rules::tw_reuse_applies`]), and not ports that bind() owns.
pub fn tw_reuse_applies(s: &Scenario) -> bool {
    s.os == Os::Linux
        && !s.bind_before_connect
        && rules::tw_reuse_applies(Some(s.tw_reuse), Some(u8::from(s.timestamps)), s.loopback)
}

/// Ports of `reserved` inside `range` (overlaps counted once).
pub fn reserved_in_range(range: PortRange, reserved: &[PortRange]) -> u32 {
    let mut parts: Vec<PortRange> = reserved.iter().filter_map(|r| r.intersect(range)).collect();
    parts.sort_by_key(|r| r.low);
    let mut total = 0u32;
    let mut covered_to: Option<u16> = None;
    for r in parts {
        let low = match covered_to {
            Some(c) if c >= r.high => continue,
            Some(c) if c >= r.low => c + 1,
            _ => r.low,
        };
        total += u32::from(r.high) - u32::from(low) + 1;
        covered_to = Some(r.high);
    }
    total
}

/// Seconds a port stays taken per connection, and why.
pub fn hold_time(s: &Scenario) -> (f64, HoldReason) {
    let lifetime = s.lifetime_s.max(0.0);
    if s.udp {
        (lifetime, HoldReason::UdpSocketLifetime)
    } else if s.server_closes_first {
        (lifetime, HoldReason::ServerClosesFirst)
    } else if tw_reuse_applies(s) {
        (
            lifetime + s.tw_reuse_delay_s.clamp(0.0, s.time_wait_s.max(0.0)),
            HoldReason::TwReuse,
        )
    } else {
        (lifetime + s.time_wait_s.max(0.0), HoldReason::TimeWait)
    }
}

/// Number of pools the traffic spreads over, and what their ports are unique across.
pub fn pools(s: &Scenario) -> (u64, Scope) {
    let sources = u64::from(s.source_ips.max(1));
    if s.udp {
        // One implicit-bind space per namespace and IP version (rules::UDP_POOL_IS_PER_NAMESPACE).
        (1, Scope::Udp)
    } else if s.os == Os::Windows && !s.port_scalability {
        (1, Scope::Host)
    } else if s.os == Os::Windows || s.bind_before_connect {
        (sources, Scope::LocalAddress)
    } else {
        (
            s.observed_pools.map_or_else(
                || sources * u64::from(s.destinations.max(1)),
                |n| u64::from(n.max(1)),
            ),
            Scope::Destination,
        )
    }
}

/// Runs the model on one scenario.
pub fn evaluate(s: &Scenario) -> Outcome {
    let range_ports = s.range.len();
    let reserved = reserved_in_range(s.range, &s.reserved);
    let usable = range_ports
        .saturating_sub(reserved)
        .saturating_sub(s.bound_ports);
    let (hold_s, hold_reason) = hold_time(s);
    let (pools, scope) = pools(s);
    let per_pool = (hold_s > 0.0).then(|| f64::from(usable) / hold_s);
    let total = per_pool.map(|p| p * pools as f64);
    let demand = s.rate_per_s.map(|offered| {
        let offered = offered.max(0.0);
        let new = offered * (1.0 - s.keepalive_share.clamp(0.0, 1.0));
        let per_pool_rate = new / pools as f64;
        let needed = per_pool_rate * hold_s;
        let fits = needed <= f64::from(usable);
        let utilization = if usable == 0 {
            if needed > 0.0 {
                f64::INFINITY
            } else {
                0.0
            }
        } else {
            needed / f64::from(usable)
        };
        Demand {
            offered_per_s: offered,
            new_connections_per_s: new,
            per_pool_per_s: per_pool_rate,
            ports_needed_per_pool: needed,
            utilization,
            headroom_per_s: total.map(|t| t - new),
            fits,
            time_to_exhaustion_s: (!fits && per_pool_rate > 0.0)
                .then(|| f64::from(usable) / per_pool_rate),
        }
    });
    Outcome {
        usable_ports: usable,
        range_ports,
        reserved_in_range: reserved,
        scope,
        pools,
        hold_s,
        hold_reason,
        per_pool_per_s: per_pool,
        total_per_s: total,
        demand,
    }
}

/// When the first connect fails, for a rate that changes over time (`rate_at(t)`, new
/// connections per second into all `pools` together, spread evenly): the first `t` at which
/// the connections opened in the last `hold_s` seconds fill `usable` ports. Simulated in 1 ms
/// steps up to `horizon_s`; `None` when the pool never fills within it.
pub fn onset_seconds(
    rate_at: impl Fn(f64) -> f64,
    hold_s: f64,
    usable: u32,
    pools: u64,
    horizon_s: f64,
) -> Option<f64> {
    const DT: f64 = 0.001;
    let steps = (horizon_s / DT).ceil().max(0.0) as usize;
    let hold_steps = (hold_s / DT).round().max(0.0) as usize;
    let pools = pools.max(1) as f64;
    // Cumulative arrivals per pool at the end of each step.
    let mut cum = Vec::with_capacity(steps + 1);
    cum.push(0.0f64);
    let target = f64::from(usable);
    for i in 0..steps {
        let t = i as f64 * DT;
        let next = cum[i] + rate_at(t).max(0.0) / pools * DT;
        cum.push(next);
        let released = if i + 1 > hold_steps {
            cum[i + 1 - hold_steps]
        } else {
            0.0
        };
        // The (usable + 1)-th concurrent port request fails; with continuous arrivals that
        // is the moment the window reaches `usable`.
        if next - released >= target - 1e-9 {
            return Some((i + 1) as f64 * DT);
        }
    }
    None
}

#[cfg(test)]
mod tests;
