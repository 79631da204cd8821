//! From sockets to pools (model.md §"From sockets to pools").

use std::collections::BTreeMap;
use std::net::IpAddr;

use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;

use super::{BindPattern, Capacity, Level, Thresholds, RATE_WINDOW_SECONDS};
use crate::rules;
use crate::snapshot::{Os, PortRange, Settings, Snapshot, Socket, TcpState};

/// What a pool's ports must be unique across.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Linux connect(): unique per (local IP, remote IP, remote port).
    Destination,
    /// Unique per local address for all destinations (Windows classic; Linux bind-before-connect).
    LocalAddress,
    /// The whole host.
    Host,
    /// A NAT's source ports: unique per (NAT address, remote IP, remote port, protocol), from
    /// conntrack (`analysis::snat`).
    Snat,
    /// A UDP pool (docs/udp.md) as `top` lists it next to TCP pools: the namespace (Windows:
    /// host) and IP version, keyed by the version's wildcard address. `check` and `serve`
    /// report UDP pools as [`super::UdpPool`].
    Udp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolKey {
    pub local_ip: IpAddr,
    pub remote_ip: Option<IpAddr>,
    pub remote_port: Option<u16>,
}

impl std::fmt::Display for PoolKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.remote_ip, self.remote_port) {
            // A Windows host-wide pool: keyed by the wildcard of its IP version.
            (None, _) if self.local_ip.is_unspecified() => write!(
                f,
                "any {} address → any",
                if self.local_ip.is_ipv4() {
                    "IPv4"
                } else {
                    "IPv6"
                }
            ),
            (Some(IpAddr::V6(ip)), Some(port)) => write!(f, "{} → [{ip}]:{port}", self.local_ip),
            (Some(ip), Some(port)) => write!(f, "{} → {ip}:{port}", self.local_ip),
            _ => write!(f, "{} → any", self.local_ip),
        }
    }
}

/// Sockets of a host-wide pool on one local address: the per-address breakdown (Windows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddressCount {
    pub local_ip: IpAddr,
    pub sockets: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessCount {
    pub pid: u32,
    pub name: String,
    pub sockets: u64,
}

/// One pool of ephemeral ports and how full it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    pub scope: Scope,
    pub key: PoolKey,
    /// Sockets holding a port of the pool (every state, TIME_WAIT included).
    pub in_use: u64,
    pub established: u64,
    pub time_wait: u64,
    /// TIME_WAIT sockets that a new connect() cannot take over (all, unless reuse applies).
    pub blocking_time_wait: u64,
    /// Whether tcp_tw_reuse lets new connections reuse this pool's TIME_WAIT.
    pub tw_reuse_applies: bool,
    pub capacity: Option<u32>,
    /// Ports of the range held by sockets of *other* pools that bind() before connect(),
    /// already taken out of `capacity`: the kernel skips a port whose bind bucket came from
    /// bind() for every connect() of the namespace (domain.md, measured on 6.18).
    pub bind_held_ports: u64,
    /// (in_use − reusable TIME_WAIT) / capacity; above 1 only when `overcommitted`.
    pub utilization: Option<f64>,
    /// More ports in use than the model's capacity (settings changed after the sockets were
    /// made, or ports outside what we can see).
    pub overcommitted: bool,
    /// New connections per second that ended in TIME_WAIT here, over `rate_window_seconds`.
    pub connect_rate_per_s: Option<f64>,
    /// The span the connect rate was measured over: the rate window, or less when the oldest
    /// TIME_WAIT of the pool is younger (a burst that began a few seconds ago).
    pub rate_window_seconds: Option<f64>,
    /// TIME_WAIT ports that will free up per second over the next window.
    pub release_rate_per_s: Option<f64>,
    /// Seconds until no port is left, only while the pool grows.
    pub eta_seconds: Option<f64>,
    /// Owners with the most sockets here (at most five), when owners were scanned.
    pub processes: Vec<ProcessCount>,
    /// Sockets per state (ss spelling: `ESTABLISHED`, `TIME_WAIT`, `CLOSE_WAIT`, `SYN_SENT`, …):
    /// what fills the pool.
    pub states: BTreeMap<&'static str, u64>,
    /// A host-wide pool's sockets per local address, most first (empty for other scopes).
    pub by_local_address: Vec<AddressCount>,
    pub level: Level,
}

impl Pool {
    /// Ports in use that no new connection can take.
    pub fn used(&self) -> u64 {
        self.in_use - (self.time_wait - self.blocking_time_wait)
    }

    pub fn free(&self) -> Option<u64> {
        self.capacity
            .map(|c| u64::from(c).saturating_sub(self.used()))
    }

    /// Sockets of the pool in the state named NAME (ss spelling).
    pub fn state(&self, name: &str) -> u64 {
        self.states.get(name).copied().unwrap_or(0)
    }

    /// What holds most of the ports no new connection can take.
    pub fn filled_by(&self) -> Filler {
        let candidates = [
            (Filler::TimeWait, self.blocking_time_wait),
            (Filler::Established, self.established),
            (Filler::CloseWait, self.state("CLOSE_WAIT")),
            (Filler::SynSent, self.state("SYN_SENT")),
        ];
        let top = candidates
            .iter()
            .copied()
            .max_by_key(|&(_, n)| n)
            .unwrap_or((Filler::Established, 0));
        let named: u64 = candidates.iter().map(|&(_, n)| n).sum();
        let rest = self.used().saturating_sub(named);
        if rest > top.1 {
            Filler::Other
        } else {
            top.0
        }
    }
}

/// The state that holds most of a pool's blocked ports; it decides the fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filler {
    /// TIME_WAIT: a connection per request (reuse connections, tcp_tw_reuse).
    TimeWait,
    /// Open connections: the pool size, or more destinations.
    Established,
    /// The peer closed, the application never called close().
    CloseWait,
    /// The destination does not answer.
    SynSent,
    /// Closing states (FIN_WAIT, LAST_ACK, CLOSING) or others.
    Other,
}

/// Owners of the pool's sockets in STATE, most sockets first: the process a leak finding names.
pub fn owners_in_state(snapshot: &Snapshot, p: &Pool, state: TcpState) -> Vec<ProcessCount> {
    let mut owners: FxHashMap<u32, u64> = FxHashMap::default();
    let host = p.scope == Scope::Host;
    for s in snapshot.sockets.iter().filter(|s| {
        s.state == state
            && (s.local_ip == p.key.local_ip
                || (host && s.local_ip.is_ipv4() == p.key.local_ip.is_ipv4()))
            && p.key.remote_ip.is_none_or(|ip| ip == s.remote_ip)
            && p.key.remote_port.is_none_or(|port| port == s.remote_port)
    }) {
        if let Some(pid) = owner_of(snapshot, s) {
            *owners.entry(pid).or_default() += 1;
        }
    }
    process_counts(snapshot, &owners)
}

fn process_counts(snapshot: &Snapshot, owners: &FxHashMap<u32, u64>) -> Vec<ProcessCount> {
    let mut processes: Vec<ProcessCount> = owners
        .iter()
        .map(|(&pid, &sockets)| ProcessCount {
            pid,
            name: snapshot
                .owners
                .as_ref()
                .and_then(|o| o.processes.get(&pid).cloned())
                .unwrap_or_else(|| "?".into()),
            sockets,
        })
        .collect();
    processes.sort_by(|a, b| b.sockets.cmp(&a.sockets).then(a.pid.cmp(&b.pid)));
    processes.truncate(5);
    processes
}

#[derive(Default)]
struct Acc {
    in_use: u64,
    established: u64,
    time_wait: u64,
    blocking: u64,
    arrivals: u64,
    releases: u64,
    /// Age of the oldest TIME_WAIT (ms): how far back the TIME_WAIT record of the pool reaches.
    oldest_tw_age_ms: Option<u64>,
    /// Age of the youngest TIME_WAIT (ms): how long ago the last connection ended.
    newest_tw_age_ms: Option<u64>,
    states: FxHashMap<TcpState, u64>,
    owners: FxHashMap<u32, u64>,
    by_local: FxHashMap<IpAddr, u64>,
}

impl Acc {
    /// Adds a destination pool into a per-local-address pool. bind() ports stay owned through
    /// TIME_WAIT, so there all TIME_WAIT blocks.
    fn add_bind_style(&mut self, other: &Acc) {
        self.in_use += other.in_use;
        self.established += other.established;
        self.time_wait += other.time_wait;
        self.blocking += other.time_wait;
        self.arrivals += other.arrivals;
        self.releases += other.releases;
        self.note_ages(other.oldest_tw_age_ms);
        self.note_ages(other.newest_tw_age_ms);
        for (state, n) in &other.states {
            *self.states.entry(*state).or_default() += n;
        }
        for (pid, n) in &other.owners {
            *self.owners.entry(*pid).or_default() += n;
        }
    }
}

impl Acc {
    fn note_ages(&mut self, age_ms: Option<u64>) {
        if let Some(a) = age_ms {
            self.oldest_tw_age_ms = Some(self.oldest_tw_age_ms.map_or(a, |o| o.max(a)));
            self.newest_tw_age_ms = Some(self.newest_tw_age_ms.map_or(a, |n| n.min(a)));
        }
    }
}

pub struct BuiltPools {
    pub pools: Vec<Pool>,
    pub bind_patterns: Vec<BindPattern>,
    pub inbound: u64,
    pub outbound: u64,
    pub other: u64,
}

/// Whether TIME_WAIT of a pool between `local` and `remote` may be reused by connect()
/// ([`rules::tw_reuse_applies`]).
fn tw_reuse_applies(settings: &Settings, local: IpAddr, remote: IpAddr) -> bool {
    rules::tw_reuse_applies(
        settings.tw_reuse,
        settings.tcp_timestamps,
        local.is_loopback() || remote.is_loopback(),
    )
}

fn is_outbound_candidate(s: &Socket) -> bool {
    !matches!(s.state, TcpState::Listen | TcpState::Close)
}

/// Groups outbound sockets into pools and computes each pool's use, rate and forecast.
pub fn build_pools(
    snapshot: &Snapshot,
    capacity: Option<&Capacity>,
    thresholds: Thresholds,
) -> BuiltPools {
    let settings = &snapshot.settings;
    let range = settings.ephemeral_ports;
    let mut listen_exact: FxHashSet<(IpAddr, u16)> = FxHashSet::default();
    let mut listen_wild: FxHashSet<u16> = FxHashSet::default();
    for s in snapshot
        .sockets
        .iter()
        .filter(|s| s.state == TcpState::Listen)
    {
        if s.local_ip.is_unspecified() {
            listen_wild.insert(s.local_port);
        } else {
            listen_exact.insert((s.local_ip, s.local_port));
        }
    }
    let tw_len_ms = settings.time_wait_seconds.map(|t| t.saturating_mul(1000));
    let window_ms = RATE_WINDOW_SECONDS * 1000;
    let reuse_delay_ms = settings
        .tw_reuse_delay_ms
        .unwrap_or(rules::TW_REUSE_DELAY_MS);
    // Windows: one host-wide pool per IP version (a port of the dynamic range is taken for
    // every local address), and destination pools inside a configured auto-reuse range.
    let windows = snapshot.os == Os::Windows;
    let auto_reuse = if windows {
        super::windows::auto_reuse_for(snapshot)
    } else {
        None
    };

    let mut accs: FxHashMap<PoolKey, (Acc, bool)> = FxHashMap::default();
    let mut ports_by_local: FxHashMap<IpAddr, Vec<u16>> = FxHashMap::default();
    let (mut inbound, mut outbound, mut other) = (0u64, 0u64, 0u64);
    for s in snapshot.sockets.iter().filter(|s| is_outbound_candidate(s)) {
        if listen_wild.contains(&s.local_port) || listen_exact.contains(&(s.local_ip, s.local_port))
        {
            inbound += 1;
            continue;
        }
        let shared = auto_reuse.is_some_and(|r| r.contains(s.local_port));
        let range = if windows {
            super::windows::range_for(snapshot, s.local_ip)
        } else {
            range
        };
        if !shared && range.is_some_and(|r| !r.contains(s.local_port)) {
            other += 1;
            continue;
        }
        outbound += 1;
        let key = if windows && !shared {
            PoolKey {
                local_ip: super::windows::host_key_ip(s.local_ip),
                remote_ip: None,
                remote_port: None,
            }
        } else {
            PoolKey {
                local_ip: s.local_ip,
                remote_ip: Some(s.remote_ip),
                remote_port: Some(s.remote_port),
            }
        };
        let (acc, reuse) = accs.entry(key).or_insert_with(|| {
            (
                Acc::default(),
                !windows && tw_reuse_applies(settings, s.local_ip, s.remote_ip),
            )
        });
        acc.in_use += 1;
        *acc.states.entry(s.state).or_default() += 1;
        match s.state {
            TcpState::Established => acc.established += 1,
            TcpState::TimeWait => {
                acc.time_wait += 1;
                let age_ms = match (tw_len_ms, s.time_wait_left_ms) {
                    (Some(len), Some(left)) => Some(len.saturating_sub(left)),
                    _ => None,
                };
                let blocking = !*reuse || age_ms.is_none_or(|a| a < reuse_delay_ms);
                if blocking {
                    acc.blocking += 1;
                }
                if age_ms.is_some_and(|a| a <= window_ms) {
                    acc.arrivals += 1;
                }
                acc.note_ages(age_ms.map(u64::from));
                if blocking && s.time_wait_left_ms.is_some_and(|l| l <= window_ms) {
                    acc.releases += 1;
                }
            }
            _ => {}
        }
        if let Some(pid) = owner_of(snapshot, s) {
            *acc.owners.entry(pid).or_default() += 1;
        }
        if windows {
            *acc.by_local.entry(s.local_ip).or_default() += 1;
        } else {
            ports_by_local
                .entry(s.local_ip)
                .or_default()
                .push(s.local_port);
        }
    }

    let cap = capacity.map(|c| c.usable);
    // Windows tables carry no TIME_WAIT timers: without them a rate would be a made-up zero.
    let rates_known = tw_len_ms.is_some()
        && (!windows
            || snapshot
                .sockets
                .iter()
                .all(|s| s.state != TcpState::TimeWait || s.time_wait_left_ms.is_some()));
    let mut dest_count: FxHashMap<IpAddr, u64> = FxHashMap::default();
    for key in accs.keys() {
        *dest_count.entry(key.local_ip).or_default() += 1;
    }

    // Detect bind-before-connect first: its ports belong to bind(), which connect() never
    // takes over, so tcp_tw_reuse does not free them.
    let mut bind_patterns = Vec::new();
    if let Some(r) = range {
        for (ip, ports) in &mut ports_by_local {
            let destinations = dest_count.get(ip).copied().unwrap_or(0);
            if let Some(p) = detect_bind_pattern(*ip, ports, destinations, r) {
                bind_patterns.push(p);
            }
        }
    }
    for (key, (acc, reuse)) in &mut accs {
        if bind_patterns.iter().any(|b| b.local_ip == key.local_ip) {
            *reuse = false;
            acc.blocking = acc.time_wait;
        }
    }

    // Ports that bind() holds (ESTABLISHED and TIME_WAIT alike) leave every connect pool of
    // the namespace, not only their own address's: count, per pool, those that are not its own.
    let bind_held: FxHashSet<u16> = bind_patterns
        .iter()
        .filter_map(|b| ports_by_local.get(&b.local_ip))
        .flatten()
        .copied()
        .filter(|p| capacity.is_none_or(|c| c.bound_in_range.binary_search(p).is_err()))
        .collect();
    let mut own_bind_held: FxHashMap<PoolKey, FxHashSet<u16>> = FxHashMap::default();
    if !bind_held.is_empty() {
        for s in snapshot
            .sockets
            .iter()
            .filter(|s| is_outbound_candidate(s) && bind_held.contains(&s.local_port))
        {
            let key = PoolKey {
                local_ip: s.local_ip,
                remote_ip: Some(s.remote_ip),
                remote_port: Some(s.remote_port),
            };
            if accs.contains_key(&key) {
                own_bind_held.entry(key).or_default().insert(s.local_port);
            }
        }
    }
    let mut pools: Vec<Pool> = accs
        .iter()
        .map(|(key, (acc, reuse))| {
            let scope = if windows && key.remote_ip.is_none() {
                Scope::Host
            } else {
                Scope::Destination
            };
            // Windows: the host-wide pool of the IP version, or a destination pool of the
            // auto-reuse range.
            let (cap, held_elsewhere) = if windows {
                (
                    if scope == Scope::Host {
                        super::windows::windows_pool_capacity(snapshot, key.local_ip)
                    } else {
                        super::windows::windows_reuse_pool_capacity(snapshot, key.local_ip)
                    },
                    0,
                )
            } else if bind_patterns.iter().any(|b| b.local_ip == key.local_ip) {
                // Its own local-address pool (below) is where these ports are counted.
                (cap, 0)
            } else {
                let own = own_bind_held.get(key).map_or(0, FxHashSet::len);
                let elsewhere = bind_held.len().saturating_sub(own) as u32;
                (
                    cap.map(|c| c.saturating_sub(elsewhere)),
                    u64::from(elsewhere),
                )
            };
            let mut pool = finish(
                snapshot,
                scope,
                *key,
                acc,
                *reuse,
                cap,
                rates_known,
                thresholds,
            );
            pool.bind_held_ports = held_elsewhere;
            pool
        })
        .collect();
    for b in &bind_patterns {
        let mut total = Acc::default();
        for (acc, _) in accs
            .iter()
            .filter(|(k, _)| k.local_ip == b.local_ip)
            .map(|(_, v)| v)
        {
            total.add_bind_style(acc);
        }
        let key = PoolKey {
            local_ip: b.local_ip,
            remote_ip: None,
            remote_port: None,
        };
        pools.push(finish(
            snapshot,
            Scope::LocalAddress,
            key,
            &total,
            false,
            cap,
            rates_known,
            thresholds,
        ));
    }
    if windows {
        super::windows::rates_from_previous(snapshot, &mut pools, thresholds);
    }
    bind_patterns.sort_by_key(|b| b.local_ip);
    sort_pools(&mut pools);
    BuiltPools {
        pools,
        bind_patterns,
        inbound,
        outbound,
        other,
    }
}

/// Highest utilization first; unknown last; ties by size, then by key for stable output.
pub fn sort_pools(pools: &mut [Pool]) {
    pools.sort_by(|a, b| {
        let ua = a.utilization.unwrap_or(-1.0);
        let ub = b.utilization.unwrap_or(-1.0);
        ub.total_cmp(&ua)
            .then(b.in_use.cmp(&a.in_use))
            .then(a.scope.cmp(&b.scope))
            .then(a.key.cmp(&b.key))
    });
}

fn owner_of(snapshot: &Snapshot, s: &Socket) -> Option<u32> {
    s.pid.or_else(|| {
        if s.inode == 0 {
            return None;
        }
        snapshot.owners.as_ref()?.by_inode.get(&s.inode).copied()
    })
}

#[allow(clippy::too_many_arguments)]
fn finish(
    snapshot: &Snapshot,
    scope: Scope,
    key: PoolKey,
    acc: &Acc,
    reuse: bool,
    capacity: Option<u32>,
    rates_known: bool,
    thresholds: Thresholds,
) -> Pool {
    let used = acc.in_use - (acc.time_wait - acc.blocking);
    let utilization = capacity.map(|c| {
        if c == 0 {
            1.0
        } else {
            used as f64 / f64::from(c)
        }
    });
    let overcommitted = capacity.is_some_and(|c| used > u64::from(c));
    let rates = rates_known.then(|| Rates::of(acc));
    let connect_rate = rates.map(|r| r.connect_per_s);
    let release_rate = rates.map(|r| r.release_per_s);
    // With reuse, a TIME_WAIT port is free again after the reuse delay, so TIME_WAIT does not
    // accumulate: no forecast from it.
    let eta_seconds = match (rates, capacity) {
        (Some(r), Some(c)) if !reuse => r
            .filling_per_s()
            .and_then(|g| eta_seconds(u64::from(c).saturating_sub(used), g)),
        _ => None,
    };
    let level = match utilization {
        Some(u) if u >= thresholds.crit => Level::Critical,
        _ if eta_seconds.is_some_and(|e| e <= thresholds.eta_seconds) => Level::Critical,
        Some(u) if u >= thresholds.warn => Level::Warning,
        _ => Level::Ok,
    };
    let processes = process_counts(snapshot, &acc.owners);
    let mut states = BTreeMap::new();
    for (state, n) in &acc.states {
        *states.entry(state.name()).or_default() += n;
    }
    let mut by_local_address: Vec<AddressCount> = if scope == Scope::Host {
        acc.by_local
            .iter()
            .map(|(&local_ip, &sockets)| AddressCount { local_ip, sockets })
            .collect()
    } else {
        Vec::new()
    };
    by_local_address.sort_by(|a, b| b.sockets.cmp(&a.sockets).then(a.local_ip.cmp(&b.local_ip)));
    Pool {
        scope,
        key,
        in_use: acc.in_use,
        established: acc.established,
        time_wait: acc.time_wait,
        blocking_time_wait: acc.blocking,
        tw_reuse_applies: reuse,
        capacity,
        bind_held_ports: 0,
        utilization,
        overcommitted,
        connect_rate_per_s: connect_rate,
        rate_window_seconds: rates.map(|r| r.window_s),
        release_rate_per_s: release_rate,
        eta_seconds,
        processes,
        states,
        by_local_address,
        level,
    }
}

/// Share of the connect rate below which arrivals and releases count as balanced.
const STEADY_STATE_TOLERANCE: f64 = 0.05;

/// Arrivals needed before a pool is forecast: fewer are chance, not a rate.
pub const MIN_FORECAST_ARRIVALS: u64 = 10;

/// The shortest span a rate is divided by (ms): a handful of sockets made within a few
/// milliseconds is not thousands per second.
const MIN_RATE_SPAN_MS: u64 = 1_000;

/// No TIME_WAIT younger than this (ms), nor than three average gaps between arrivals, means
/// the burst has stopped: it is not forecast as filling.
const STOPPED_AFTER_MS: f64 = 2_000.0;

/// A pool's connect and release rates from its TIME_WAIT timers: the one rate and forecast
/// that `check`, `top` and `serve` show.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rates {
    /// New connections per second that ended in TIME_WAIT, over `window_s`.
    connect_per_s: f64,
    /// TIME_WAIT ports that free up per second over the next rate window.
    release_per_s: f64,
    /// The span the arrivals were counted over (s): the rate window, or the age of the oldest
    /// TIME_WAIT when the pool's record is younger than the window.
    window_s: f64,
    arrivals: u64,
    /// Age of the youngest TIME_WAIT (ms).
    newest_age_ms: Option<u64>,
}

impl Rates {
    fn of(acc: &Acc) -> Rates {
        let window_ms = u64::from(RATE_WINDOW_SECONDS) * 1000;
        // Divide by the span actually covered: a burst that began 3 s ago has 3 s of arrivals,
        // not 10.
        let span_ms = acc
            .oldest_tw_age_ms
            .map_or(window_ms, |a| a.clamp(MIN_RATE_SPAN_MS, window_ms));
        let window_s = span_ms as f64 / 1000.0;
        Rates {
            connect_per_s: acc.arrivals as f64 / window_s,
            release_per_s: acc.releases as f64 / f64::from(RATE_WINDOW_SECONDS),
            window_s,
            arrivals: acc.arrivals,
            newest_age_ms: acc.newest_tw_age_ms,
        }
    }

    /// Whether arrivals have stopped: the youngest TIME_WAIT is older than a quiet spell.
    fn stopped(&self) -> bool {
        let quiet_ms = if self.connect_per_s > 0.0 {
            STOPPED_AFTER_MS.max(3_000.0 / self.connect_per_s)
        } else {
            STOPPED_AFTER_MS
        };
        self.newest_age_ms.is_none_or(|a| a as f64 > quiet_ms)
    }

    /// Net ports taken per second, when there are enough arrivals to tell, they continue, and
    /// they outrun releases by more than sampling noise.
    fn filling_per_s(&self) -> Option<f64> {
        if self.arrivals < MIN_FORECAST_ARRIVALS || self.stopped() {
            return None;
        }
        let growth = self.connect_per_s - self.release_per_s;
        (growth > STEADY_STATE_TOLERANCE * self.connect_per_s).then_some(growth)
    }
}

/// Seconds until `free` ports are gone at `growth_per_s` net new ports a second; `None` unless
/// the pool grows. The one forecast `check` and `top` print.
pub fn eta_seconds(free: u64, growth_per_s: f64) -> Option<f64> {
    (growth_per_s > 0.0 && growth_per_s.is_finite()).then(|| free as f64 / growth_per_s)
}

/// Minimum sockets from one address before the bind pattern is judged (small samples are
/// unique by chance).
const BIND_MIN_SOCKETS: usize = 32;

/// bind(port 0) before connect() makes ports unique per local address, and Linux 4.2+ gives
/// bind() ports of the parity opposite to the range start first (connect() prefers the range
/// start's parity). Ports unique across several destinations, and bind()'s parity for nearly
/// all of them — or for nearly all that parity has, once bind() had to spill over — are the
/// signature.
fn detect_bind_pattern(
    ip: IpAddr,
    ports: &mut [u16],
    destinations: u64,
    range: PortRange,
) -> Option<BindPattern> {
    if destinations < 2 || ports.len() < BIND_MIN_SOCKETS {
        return None;
    }
    let low_parity = range.low % 2;
    ports.sort_unstable();
    let shared = ports.windows(2).filter(|w| w[0] == w[1]).count() as u64;
    let bind_parity = ports.iter().filter(|&&p| p % 2 != low_parity).count();
    let share = bind_parity as f64 / ports.len() as f64;
    // Ports of bind()'s parity in the range: every second one.
    let available = (range.len() / 2) as usize;
    let expected = ports.len().min(available);
    (shared == 0 && bind_parity as f64 >= 0.9 * expected as f64).then_some(BindPattern {
        local_ip: ip,
        sockets: ports.len() as u64,
        destinations,
        shared_ports: shared,
        bind_parity_share: share,
    })
}
