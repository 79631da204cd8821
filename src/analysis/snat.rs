//! SNAT pools: the same exhaustion one layer down (issue 16). A Linux NAT (masquerade/snat)
//! picks, for each new flow, a source port unique for (NAT address, remote address, remote
//! port, protocol); when every port of its range is taken the flow's first packet is dropped at
//! confirmation (`insert_failed`, `drop`) and the client sees only a timeout.
//!
//! Pure: from `Snapshot.conntrack` (the source-NATed entries and the rules' ranges) to pools,
//! plus the table's fullness and the cloud NAT quota model (`--cloud-nat`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use rustc_hash::FxHashMap;
use serde::Serialize;
use serde_json::json;

use super::{Finding, FindingCode, Level, Severity, Thresholds, Verdict};
use crate::snapshot::conntrack::{Conntrack, CtTcpState, NatEntry};
use crate::snapshot::{NamespaceIdentity, PortRange, Snapshot, Target};
use crate::units::group;

/// The range the kernel uses when a source-NAT rule gives no port range and the original port
/// is taken: 1024–65535 for original ports ≥ 1024 (`nf_nat_l4proto_unique_tuple`).
pub const KERNEL_DEFAULT_NAT_RANGE: PortRange = PortRange {
    low: 1024,
    high: 65535,
};

/// Where a pool's NAT range came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RangeSource {
    /// `nftables`, `iptables`, or `kernel_default`.
    pub origin: String,
    /// How it was read, in words (`nft -j list ruleset`, "no port range in the rule", …).
    pub detail: String,
}

/// One SNAT pool: conntrack entries sharing (NAT address, remote address, remote port, proto).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SnatPool {
    /// `tcp`, `udp`, or the protocol number.
    pub protocol: String,
    pub nat_ip: IpAddr,
    pub remote_ip: IpAddr,
    pub remote_port: u16,
    /// Entries holding a NAT port of the pool (every state: TIME_WAIT holds its tuple until the
    /// entry expires, `nf_conntrack_tcp_timeout_time_wait`).
    pub in_use: u64,
    /// Entries per TCP conntrack state (`conntrack -L` names; `UNREPLIED`-less protocols as
    /// `ANY`).
    pub states: BTreeMap<&'static str, u64>,
    pub nat_range: PortRange,
    pub range_source: RangeSource,
    /// `fully-random`/`--random-fully` on the rule whose range this is; `None` for the default.
    pub fully_random: Option<bool>,
    pub capacity: u32,
    pub utilization: f64,
    pub level: Level,
    /// Original source addresses (the pods/containers behind the NAT) with the most flows.
    pub sources: Vec<SourceCount>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceCount {
    pub ip: IpAddr,
    pub flows: u64,
    /// With `-A`: the namespace whose sockets use this address (`pod NS/NAME`, its /run/netns
    /// name, or `netns inode N`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// A short name of a namespace for [`SourceCount::owner`].
fn owner_label(id: &NamespaceIdentity) -> String {
    match (&id.pod, &id.name) {
        (Some(p), _) if !p.name.is_empty() => format!("pod {}/{}", p.namespace, p.name),
        (Some(p), _) => format!("pod uid {}", p.uid),
        (None, Some(name)) => name.clone(),
        (None, None) => format!("netns inode {}", id.id.ino),
    }
}

/// `-A`: names the namespace behind each SNAT source address, from the local addresses of every
/// namespace's own sockets (an address used in two namespaces names neither).
pub fn attribute<'a>(
    analyses: &mut [super::Analysis],
    namespaces: impl IntoIterator<Item = (&'a NamespaceIdentity, &'a Snapshot)>,
) {
    let mut by_ip: FxHashMap<IpAddr, Option<String>> = FxHashMap::default();
    for (id, snap) in namespaces {
        let label = owner_label(id);
        let mut ips: Vec<IpAddr> = snap
            .sockets
            .iter()
            .map(|s| s.local_ip)
            .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
            .collect();
        ips.sort_unstable();
        ips.dedup();
        for ip in ips {
            by_ip
                .entry(ip)
                .and_modify(|o| {
                    if o.as_deref() != Some(label.as_str()) {
                        *o = None;
                    }
                })
                .or_insert_with(|| Some(label.clone()));
        }
    }
    for a in analyses {
        let Some(s) = a.snat.as_mut() else { continue };
        for src in s.pools.iter_mut().flat_map(|p| p.sources.iter_mut()) {
            src.owner = by_ip.get(&src.ip).cloned().flatten();
        }
    }
}

/// A cloud NAT in front of the host (`--cloud-nat`): a model with the provider's documented
/// quota of concurrent flows per destination, never a measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloudNat {
    /// Azure Load Balancer outbound rules / default SNAT: PORTS pre-allocated per node.
    AzureLb(u32),
    /// Azure App Service: 128 SNAT ports per instance.
    AppService,
    /// AWS NAT gateway: 55,000 simultaneous connections per unique destination for each of its
    /// IP addresses (1–8).
    AwsNatGw(u32),
    /// Google Cloud NAT: PORTS per VM (default minimum 64).
    Gcp(u32),
}

impl CloudNat {
    /// Parses `azure-lb:PORTS`, `app-service`, `aws-natgw[:IPS]`, `gcp[:PORTS]`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (name, arg) = text
            .split_once(':')
            .map_or((text, None), |(n, a)| (n, Some(a)));
        let ports = |default: Option<u32>| -> Result<u32, String> {
            match arg {
                Some(a) => a
                    .parse::<u32>()
                    .ok()
                    .filter(|&p| (1..=65_536).contains(&p))
                    .ok_or_else(|| format!("{a:?} is not a port count (1–65536)")),
                None => default.ok_or_else(|| {
                    format!("{name} needs its ports per node: {name}:PORTS (e.g. {name}:1024)")
                }),
            }
        };
        match name {
            "azure-lb" => Ok(CloudNat::AzureLb(ports(None)?)),
            "app-service" if arg.is_none() => Ok(CloudNat::AppService),
            "aws-natgw" => match arg {
                None => Ok(CloudNat::AwsNatGw(1)),
                Some(a) => a
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=8).contains(n))
                    .map(CloudNat::AwsNatGw)
                    .ok_or_else(|| {
                        format!("aws-natgw:{a}: give the NAT gateway's IP addresses, 1–8")
                    }),
            },
            "gcp" => Ok(CloudNat::Gcp(ports(Some(64))?)),
            _ => Err(format!(
                "{text:?}: expected azure-lb:PORTS, app-service, aws-natgw[:IPS] or gcp[:PORTS]"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CloudNat::AzureLb(_) => "azure-lb",
            CloudNat::AppService => "app-service",
            CloudNat::AwsNatGw(_) => "aws-natgw",
            CloudNat::Gcp(_) => "gcp",
        }
    }

    /// Concurrent flows to one destination (address, port, protocol) the provider allows.
    pub fn quota(self) -> u32 {
        match self {
            CloudNat::AzureLb(p) | CloudNat::Gcp(p) => p,
            CloudNat::AppService => 128,
            CloudNat::AwsNatGw(ips) => 55_000 * ips,
        }
    }

    /// Where the number comes from (docs/nat.md has the links).
    pub fn basis(self) -> &'static str {
        match self {
            CloudNat::AzureLb(_) => "Azure Load Balancer SNAT ports pre-allocated per node (given)",
            CloudNat::AppService => "Azure App Service: 128 SNAT ports per instance (documented)",
            CloudNat::AwsNatGw(_) => {
                "AWS NAT gateway: 55,000 simultaneous connections per destination and IP address (documented)"
            }
            CloudNat::Gcp(_) => "Google Cloud NAT ports per VM (default minimum 64)",
        }
    }
}

impl Serialize for CloudNat {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        json!({"provider": self.name(), "flows_per_destination": self.quota(), "basis": self.basis()})
            .serialize(ser)
    }
}

/// `capacity --cloud-nat`: the open flows per destination the offered load keeps (Little's
/// law: new flows per second per destination × connection lifetime) against the quota. The
/// cloud NAT's own hold after a flow closes is not in it (providers differ; docs/nat.md), so
/// this is a lower bound of what the NAT holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CloudNatDemand {
    pub model: CloudNat,
    pub flows_per_destination: f64,
    pub quota: u32,
    pub utilization: f64,
    pub fits: bool,
}

/// The cloud NAT demand of RATE new flows/s spread over DESTINATIONS, each open LIFETIME s.
pub fn cloud_nat_demand(
    model: CloudNat,
    rate_per_s: f64,
    lifetime_s: f64,
    destinations: u32,
) -> CloudNatDemand {
    let flows = rate_per_s / f64::from(destinations.max(1)) * lifetime_s;
    let quota = model.quota();
    CloudNatDemand {
        model,
        flows_per_destination: (flows * 10.0).round() / 10.0,
        quota,
        utilization: flows / f64::from(quota),
        fits: flows < f64::from(quota),
    }
}

/// Concurrent flows from this host to one destination, against a cloud NAT's quota.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CloudFlows {
    pub protocol: String,
    pub remote_ip: IpAddr,
    pub remote_port: u16,
    /// Source-NATed conntrack entries plus the host's own outbound TCP sockets to it.
    pub flows: u64,
    pub quota: u32,
    pub utilization: f64,
    pub level: Level,
}

/// The SNAT picture of a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SnatAnalysis {
    /// Highest utilization first.
    pub pools: Vec<SnatPool>,
    /// `nf_conntrack_count / nf_conntrack_max`.
    pub table_fill: Option<f64>,
    /// `--cloud-nat`: destinations with the most flows, highest first (at most 20).
    pub cloud: Vec<CloudFlows>,
}

fn protocol_name(p: u8) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        132 => "sctp".into(),
        n => n.to_string(),
    }
}

fn level_of(u: f64, t: Thresholds) -> Level {
    if u >= t.crit {
        Level::Critical
    } else if u >= t.warn {
        Level::Warning
    } else {
        Level::Ok
    }
}

type Key = (u8, IpAddr, IpAddr, u16);

/// The pools, the table's fill and the cloud model; `None` where conntrack is not loaded.
pub fn analyze(snapshot: &Snapshot, t: Thresholds) -> Option<SnatAnalysis> {
    let ct = snapshot.conntrack.as_ref()?;
    let entries = ct.snat.as_deref().unwrap_or(&[]);
    let mut groups: FxHashMap<Key, Vec<&NatEntry>> = FxHashMap::default();
    // Protocols with ports (TCP, UDP, SCTP, DCCP, UDP-Lite): ICMP ids are another space.
    for e in entries
        .iter()
        .filter(|e| matches!(e.proto, 6 | 17 | 33 | 132 | 136))
    {
        groups
            .entry((e.proto, e.nat_ip, e.remote_ip, e.remote_port))
            .or_default()
            .push(e);
    }
    let mut pools: Vec<SnatPool> = groups
        .into_iter()
        .map(|(key, es)| pool(ct, key, &es, t))
        .collect();
    pools.sort_by(|a, b| {
        b.utilization
            .total_cmp(&a.utilization)
            .then_with(|| b.in_use.cmp(&a.in_use))
            .then_with(|| {
                (a.nat_ip, a.remote_ip, a.remote_port).cmp(&(b.nat_ip, b.remote_ip, b.remote_port))
            })
    });
    let table_fill = match (ct.count, ct.max) {
        (Some(c), Some(m)) if m > 0 => Some(c as f64 / m as f64),
        _ => None,
    };
    let cloud = t
        .cloud_nat
        .map(|c| cloud_flows(snapshot, entries, c, t))
        .unwrap_or_default();
    Some(SnatAnalysis {
        pools,
        table_fill,
        cloud,
    })
}

fn pool(ct: &Conntrack, key: Key, es: &[&NatEntry], t: Thresholds) -> SnatPool {
    let (proto, nat_ip, remote_ip, remote_port) = key;
    let mut states: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut sources: FxHashMap<IpAddr, u64> = FxHashMap::default();
    for e in es {
        *states
            .entry(e.tcp_state.map_or("ANY", CtTcpState::name))
            .or_default() += 1;
        *sources.entry(e.src_ip).or_default() += 1;
    }
    // The rule range (of this protocol) that holds most of the pool's NAT ports.
    let best = ct
        .rules
        .iter()
        .filter(|r| r.proto.is_none_or(|p| p == proto))
        .filter_map(|r| r.ports.map(|p| (r, p)))
        .map(|(r, p)| (r, p, es.iter().filter(|e| p.contains(e.nat_port)).count()))
        .max_by_key(|&(_, p, n)| (n, std::cmp::Reverse(p.len())));
    let (range, range_source, fully_random) = match best {
        Some((r, p, n)) if n > 0 => (
            p,
            RangeSource {
                origin: r.origin.clone(),
                detail: format!(
                    "{} rule `to :{}-{}`, read with {}",
                    match r.kind {
                        crate::snapshot::conntrack::NatKind::Masquerade => "masquerade",
                        crate::snapshot::conntrack::NatKind::Snat => "snat",
                    },
                    p.low,
                    p.high,
                    ct.rules_source.as_deref().unwrap_or("?")
                ),
            },
            Some(r.fully_random),
        ),
        _ => (
            KERNEL_DEFAULT_NAT_RANGE,
            RangeSource {
                origin: "kernel_default".into(),
                detail: match &ct.rules_source {
                    Some(src) => format!(
                        "no port range in the NAT rules ({src}): the kernel's default 1024–65535"
                    ),
                    None => {
                        "the NAT rules could not be read: assumed the kernel's default 1024–65535"
                            .into()
                    }
                },
            },
            ct.rules
                .iter()
                .find(|r| r.proto.is_none_or(|p| p == proto))
                .map(|r| r.fully_random),
        ),
    };
    let in_use = es.len() as u64;
    let capacity = range.len();
    let utilization = in_use as f64 / f64::from(capacity);
    let mut sources: Vec<SourceCount> = sources
        .into_iter()
        .map(|(ip, flows)| SourceCount {
            ip,
            flows,
            owner: None,
        })
        .collect();
    sources.sort_by(|a, b| b.flows.cmp(&a.flows).then(a.ip.cmp(&b.ip)));
    sources.truncate(5);
    SnatPool {
        protocol: protocol_name(proto),
        nat_ip,
        remote_ip,
        remote_port,
        in_use,
        states,
        nat_range: range,
        range_source,
        fully_random,
        capacity,
        utilization,
        level: level_of(utilization, t),
        sources,
    }
}

fn cloud_flows(
    snapshot: &Snapshot,
    entries: &[NatEntry],
    cloud: CloudNat,
    t: Thresholds,
) -> Vec<CloudFlows> {
    let mut by_dest: FxHashMap<(u8, IpAddr, u16), u64> = FxHashMap::default();
    for e in entries {
        *by_dest
            .entry((e.proto, e.remote_ip, e.remote_port))
            .or_default() += 1;
    }
    let listen = snapshot.listen_ports();
    for s in snapshot.sockets.iter() {
        if s.state.holds_bind_port()
            || listen.binary_search(&s.local_port).is_ok()
            || s.remote_ip.is_loopback()
        {
            continue;
        }
        *by_dest.entry((6, s.remote_ip, s.remote_port)).or_default() += 1;
    }
    let quota = cloud.quota();
    let mut out: Vec<CloudFlows> = by_dest
        .into_iter()
        .map(|((p, ip, port), flows)| {
            let utilization = flows as f64 / f64::from(quota);
            CloudFlows {
                protocol: protocol_name(p),
                remote_ip: ip,
                remote_port: port,
                flows,
                quota,
                utilization,
                level: level_of(utilization, t),
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.flows
            .cmp(&a.flows)
            .then_with(|| (a.remote_ip, a.remote_port).cmp(&(b.remote_ip, b.remote_port)))
    });
    out.truncate(20);
    out
}

fn severity(level: Level) -> Severity {
    match level {
        Level::Ok => Severity::Info,
        Level::Warning => Severity::Warning,
        Level::Critical => Severity::Critical,
    }
}

/// Adds the SNAT, conntrack and cloud NAT findings to a verdict (and its level).
pub fn add_findings(snapshot: &Snapshot, s: &SnatAnalysis, t: Thresholds, v: &mut Verdict) {
    let Some(ct) = snapshot.conntrack.as_ref() else {
        return;
    };
    let target = &snapshot.host.target;
    let mut out = Vec::new();
    pool_findings(ct, s, target, &mut out);
    stats_findings(ct, s, target, &mut out);
    table_findings(ct, s, t, target, &mut out);
    cloud_findings(s, t, &mut out);
    for f in &out {
        let level = match f.severity {
            Severity::Info => Level::Ok,
            Severity::Warning => Level::Warning,
            Severity::Critical => Level::Critical,
        };
        v.level = v.level.max(level);
    }
    v.findings.extend(out);
    v.findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
}

fn pool_label(p: &SnatPool) -> String {
    format!(
        "SNAT {} → {}:{} ({})",
        p.nat_ip,
        match p.remote_ip {
            IpAddr::V6(ip) => format!("[{ip}]"),
            ip @ IpAddr::V4(_) => ip.to_string(),
        },
        p.remote_port,
        p.protocol
    )
}

fn snat_fix(ct: &Conntrack, p: Option<&SnatPool>, target: &Target) -> String {
    let mut lines = vec![
        "add source addresses: `snat to ADDR1-ADDR2` (each NAT address is a pool of its own per destination)".to_string(),
        "widen the NAT range: `masquerade to :1024-65535` (nft) or `--to-ports 1024-65535` (iptables)".to_string(),
    ];
    if p.and_then(|p| p.fully_random) != Some(true) {
        lines.push("add `fully-random` (nft) / `--random-fully` (iptables) against the port-allocation clash race".into());
    }
    lines.push("reuse connections in the clients (HTTP keep-alive, connection pools): each new flow takes a NAT port".into());
    if p.is_some_and(|p| p.state("TIME_WAIT") > 0) {
        lines.push(format!(
            "shorten conntrack's TIME_WAIT ({} s now): {}sysctl -w net.netfilter.nf_conntrack_tcp_timeout_time_wait=30",
            ct.tcp_timeout_time_wait_s.map_or("?".into(), |v| v.to_string()),
            target.exec_prefix()
        ));
    }
    lines.join("\n")
}

impl SnatPool {
    /// Entries in the state named NAME.
    pub fn state(&self, name: &str) -> u64 {
        self.states.get(name).copied().unwrap_or(0)
    }
}

fn pool_findings(ct: &Conntrack, s: &SnatAnalysis, target: &Target, out: &mut Vec<Finding>) {
    for p in s.pools.iter().filter(|p| p.level > Level::Ok) {
        let exhausted = p.in_use >= u64::from(p.capacity);
        let code = if exhausted {
            FindingCode::SnatPoolExhausted
        } else {
            FindingCode::SnatPoolNearExhaustion
        };
        let states: Vec<String> = p.states.iter().map(|(k, v)| format!("{v} {k}")).collect();
        out.push(Finding {
            code,
            severity: severity(if exhausted { Level::Critical } else { p.level }),
            pool: Some(pool_label(p)),
            message: format!(
                "{}: {} of {} NAT ports in use ({:.0}%; {}){}",
                pool_label(p),
                group(p.in_use),
                group(u64::from(p.capacity)),
                100.0 * p.utilization,
                states.join(", "),
                if exhausted {
                    ": new flows to this destination are dropped, their clients time out without an error"
                } else {
                    ""
                }
            ),
            evidence: super::findings::evidence_map(json!({
                "nat_ip": p.nat_ip, "remote_ip": p.remote_ip, "remote_port": p.remote_port,
                "protocol": p.protocol, "in_use": p.in_use, "capacity": p.capacity,
                "nat_range": [p.nat_range.low, p.nat_range.high],
                "range_source": p.range_source, "fully_random": p.fully_random,
                "states": p.states, "sources": p.sources,
            })),
            fix: snat_fix(ct, Some(p), target),
        });
    }
}

/// `check --observe`: records in AFTER how much its conntrack statistics moved since BEFORE
/// (the same namespace, ELAPSED earlier). Not for the analysis to call: the shell's step
/// between two collections.
pub fn observe_window(before: &Snapshot, after: &mut Snapshot, elapsed: std::time::Duration) {
    if before.host.netns_id != after.host.netns_id {
        return;
    }
    let Some(b) = before.conntrack.as_ref().and_then(|c| c.stats) else {
        return;
    };
    if let Some(ct) = after.conntrack.as_mut() {
        ct.window = ct.stats.and_then(|a| a.since(&b)).map(|delta| {
            crate::snapshot::conntrack::StatsWindow {
                seconds: elapsed.as_secs_f64(),
                delta,
            }
        });
    }
}

fn stats_findings(ct: &Conntrack, s: &SnatAnalysis, target: &Target, out: &mut Vec<Finding>) {
    let Some(st) = ct.stats else {
        return;
    };
    if st.insert_failed == 0 && st.drop == 0 {
        return;
    }
    // Observed: what moved in the window decides; nothing moved, nothing to say now.
    if let Some(w) = ct.window {
        if w.delta.insert_failed == 0 && w.delta.drop == 0 {
            return;
        }
    }
    let worst = s.pools.first();
    let pressure = s.pools.iter().any(|p| p.level > Level::Ok);
    let full = s.pools.iter().any(|p| p.in_use >= u64::from(p.capacity));
    out.push(Finding {
        code: FindingCode::ConntrackInsertFailed,
        severity: if pressure {
            Severity::Critical
        } else {
            Severity::Warning
        },
        pool: None,
        message: format!(
            "conntrack dropped packets of new flows: insert_failed {}, drop {}, early_drop {} ({}){}",
            group(ct.window.map_or(st.insert_failed, |w| w.delta.insert_failed)),
            group(ct.window.map_or(st.drop, |w| w.delta.drop)),
            group(ct.window.map_or(st.early_drop, |w| w.delta.early_drop)),
            ct.window.map_or_else(
                || "since the namespace was made".to_string(),
                |w| format!("in the {:.0} s observed", w.seconds)
            ),
            if full {
                "; a SNAT pool is full, so these are flows that found no free NAT port"
            } else if pressure {
                "; a SNAT pool is near full: flows that found no free NAT port, or the NAT port clash race (without fully-random)"
            } else {
                "; no SNAT pool is full now: the NAT port clash race (without fully-random) or an earlier exhaustion"
            }
        ),
        evidence: super::findings::evidence_map(json!({
            "insert_failed": st.insert_failed, "drop": st.drop, "early_drop": st.early_drop,
            "clash_resolve": st.clash_resolve, "search_restart": st.search_restart,
            "window": ct.window,
        })),
        fix: if ct.window.is_none() {
            format!(
                "{}\nto see whether drops happen now (these counters never go back): portdoctor check{} --observe 10s",
                snat_fix(ct, worst, target),
                target.cli_args()
            )
        } else {
            snat_fix(ct, worst, target)
        },
    });
}

fn table_findings(
    ct: &Conntrack,
    s: &SnatAnalysis,
    t: Thresholds,
    target: &Target,
    out: &mut Vec<Finding>,
) {
    let (Some(fill), Some(count), Some(max)) = (s.table_fill, ct.count, ct.max) else {
        return;
    };
    let early = ct.stats.map_or(0, |s| s.early_drop);
    let level = level_of(fill, t);
    if level == Level::Ok {
        return;
    }
    out.push(Finding {
        code: FindingCode::ConntrackTableFull,
        severity: severity(level),
        pool: None,
        message: format!(
            "the conntrack table holds {} of nf_conntrack_max {} entries ({:.0}%){}",
            group(count),
            group(max),
            100.0 * fill,
            if count >= max {
                ": new flows are dropped (\"nf_conntrack: table full, dropping packet\")"
            } else {
                ""
            }
        ),
        evidence: super::findings::evidence_map(json!({
            "count": count, "max": max, "early_drop": early,
            "tcp_timeout_time_wait_s": ct.tcp_timeout_time_wait_s,
            "tcp_timeout_established_s": ct.tcp_timeout_established_s,
        })),
        fix: format!(
            "raise the limit (one for the host, set in the host's namespace): sysctl -w net.netfilter.nf_conntrack_max={}\nshorten idle entries: {}sysctl -w net.netfilter.nf_conntrack_tcp_timeout_established=86400 (and _time_wait=30)",
            max.max(1).saturating_mul(2),
            target.exec_prefix()
        ),
    });
}

fn cloud_findings(s: &SnatAnalysis, t: Thresholds, out: &mut Vec<Finding>) {
    let Some(cloud) = t.cloud_nat else {
        return;
    };
    for c in s.cloud.iter().filter(|c| c.level > Level::Ok) {
        let dest = match c.remote_ip {
            IpAddr::V6(ip) => format!("[{ip}]:{}", c.remote_port),
            ip @ IpAddr::V4(_) => format!("{ip}:{}", c.remote_port),
        };
        out.push(Finding {
            code: FindingCode::CloudNatQuota,
            severity: severity(c.level),
            pool: Some(format!("cloud NAT → {dest} ({})", c.protocol)),
            message: format!(
                "model, not a measurement: {} concurrent flows to {dest} ({}) against the {} quota of {} per destination ({:.0}%){}",
                group(c.flows),
                c.protocol,
                cloud.name(),
                group(u64::from(c.quota)),
                100.0 * c.utilization,
                if c.flows >= u64::from(c.quota) { ": past it the cloud NAT drops or refuses new flows" } else { "" }
            ),
            evidence: super::findings::evidence_map(json!({
                "model": cloud, "flows": c.flows, "quota": c.quota,
                "remote_ip": c.remote_ip, "remote_port": c.remote_port, "protocol": c.protocol,
                "note": "flows to private destinations usually bypass the cloud NAT",
            })),
            fix: format!(
                "reuse connections to {dest} (keep-alive, pools); give the NAT more ports or addresses ({}); or reach it privately (private endpoint / VPC endpoint), see docs/nat.md",
                match cloud {
                    CloudNat::AzureLb(_) => "outbound rule allocatedOutboundPorts, more frontend IPs, or a NAT Gateway",
                    CloudNat::AppService => "VNet integration with a NAT Gateway",
                    CloudNat::AwsNatGw(_) => "secondary IP addresses on the NAT gateway (up to 8)",
                    CloudNat::Gcp(_) => "--min-ports-per-vm, dynamic port allocation, more NAT IPs",
                }
            ),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::analyze as analyze_all;
    use crate::snapshot::conntrack::{ConntrackStats, NatKind, NatRule};

    fn entry(remote_port: u16, nat_port: u16, state: CtTcpState) -> NatEntry {
        NatEntry {
            proto: 6,
            tcp_state: Some(state),
            src_ip: "10.9.1.2".parse().unwrap(),
            src_port: 30000 + nat_port % 1000,
            remote_ip: "10.9.2.2".parse().unwrap(),
            remote_port,
            nat_ip: "10.9.2.1".parse().unwrap(),
            nat_port,
            timeout_s: Some(100),
        }
    }

    fn rule(low: u16, high: u16, fully_random: bool) -> NatRule {
        NatRule {
            kind: NatKind::Masquerade,
            proto: Some(6),
            ports: PortRange::new(low, high),
            addr: None,
            random: false,
            fully_random,
            origin: "nftables".into(),
        }
    }

    fn snap(entries: Vec<NatEntry>, rules: Vec<NatRule>, stats: ConntrackStats) -> Snapshot {
        let mut s = crate::fixture::SnapshotBuilder::linux().build();
        s.conntrack = Some(Conntrack {
            count: Some(entries.len() as u64),
            max: Some(262_144),
            stats: Some(stats),
            tcp_timeout_time_wait_s: Some(120),
            tcp_timeout_established_s: Some(432_000),
            dumped: Some(entries.len() as u64),
            snat: Some(entries),
            rules,
            rules_source: Some("nft -j list ruleset".into()),
            window: None,
        });
        s
    }

    fn codes(s: &Snapshot, t: Thresholds) -> Vec<&'static str> {
        analyze_all(s, t)
            .verdict
            .findings
            .iter()
            .map(|f| f.code.as_str())
            .collect()
    }

    #[test]
    fn full_range_is_an_exhausted_pool_and_drops_are_reported() {
        let mut es: Vec<NatEntry> = (40000..40100)
            .map(|p| entry(8080, p, CtTcpState::Established))
            .collect();
        es.push(entry(8081, 40000, CtTcpState::TimeWait));
        let stats = ConntrackStats {
            insert_failed: 6,
            drop: 6,
            ..ConntrackStats::default()
        };
        let s = snap(es, vec![rule(40000, 40099, false)], stats);
        let a = analyze(&s, Thresholds::default()).unwrap();
        assert_eq!(
            a.pools.len(),
            2,
            "a second remote port is a pool of its own"
        );
        let p = &a.pools[0];
        assert_eq!((p.in_use, p.capacity, p.remote_port), (100, 100, 8080));
        assert_eq!(p.level, Level::Critical);
        assert_eq!(p.fully_random, Some(false));
        assert_eq!(p.range_source.origin, "nftables");
        assert_eq!(p.sources[0].flows, 100);
        assert_eq!(a.pools[1].state("TIME_WAIT"), 1);
        let all = analyze_all(&s, Thresholds::default());
        assert_eq!(all.verdict.level, Level::Critical);
        assert_eq!(
            codes(&s, Thresholds::default()),
            ["snat_pool_exhausted", "conntrack_insert_failed"]
        );
        let f = &all.verdict.findings[0];
        assert!(f.fix.contains("fully-random"), "{}", f.fix);
    }

    /// At 95 of 100 the pool is critical, and so are the drops, but the pool is not full.
    #[test]
    fn drops_beside_a_near_full_pool_do_not_call_it_full() {
        let es: Vec<NatEntry> = (40000..40095)
            .map(|p| entry(8080, p, CtTcpState::Established))
            .collect();
        let stats = ConntrackStats {
            insert_failed: 3,
            drop: 3,
            ..ConntrackStats::default()
        };
        let s = snap(es, vec![rule(40000, 40099, false)], stats);
        let all = analyze_all(&s, Thresholds::default());
        let f = all
            .verdict
            .findings
            .iter()
            .find(|f| f.code == FindingCode::ConntrackInsertFailed)
            .expect("conntrack_insert_failed");
        assert_eq!(f.severity, Severity::Critical);
        assert!(!f.message.contains("is full"), "{}", f.message);
        assert!(f.message.contains("near full"), "{}", f.message);
    }

    #[test]
    fn icmp_ids_are_not_a_port_pool() {
        let mut icmp = entry(0, 7, CtTcpState::Established);
        icmp.proto = 1;
        icmp.tcp_state = None;
        let s = snap(vec![icmp], Vec::new(), ConntrackStats::default());
        assert!(analyze(&s, Thresholds::default()).unwrap().pools.is_empty());
    }

    #[test]
    fn observed_window_decides_whether_drops_are_news() {
        use crate::snapshot::conntrack::StatsWindow;
        let stats = ConntrackStats {
            insert_failed: 500,
            drop: 500,
            ..ConntrackStats::default()
        };
        let mut s = snap(Vec::new(), Vec::new(), stats);
        assert_eq!(
            codes(&s, Thresholds::default()),
            ["conntrack_insert_failed"]
        );
        if let Some(ct) = s.conntrack.as_mut() {
            ct.window = Some(StatsWindow {
                seconds: 10.0,
                delta: ConntrackStats::default(),
            });
        }
        assert!(
            codes(&s, Thresholds::default()).is_empty(),
            "old drops only"
        );
        if let Some(ct) = s.conntrack.as_mut() {
            ct.window = Some(StatsWindow {
                seconds: 10.0,
                delta: ConntrackStats {
                    insert_failed: 7,
                    ..ConntrackStats::default()
                },
            });
        }
        let a = analyze_all(&s, Thresholds::default());
        let f = &a.verdict.findings[0];
        assert!(
            f.message
                .contains("insert_failed 7, drop 0, early_drop 0 (in the 10 s observed)"),
            "{}",
            f.message
        );

        // The shell's step: the delta of two readings of the same namespace.
        let mut before = s.clone();
        if let Some(ct) = before.conntrack.as_mut() {
            ct.stats = Some(ConntrackStats {
                insert_failed: 490,
                drop: 495,
                ..ConntrackStats::default()
            });
        }
        let mut after = s.clone();
        observe_window(&before, &mut after, std::time::Duration::from_secs(3));
        let w = after.conntrack.unwrap().window.unwrap();
        assert_eq!((w.delta.insert_failed, w.delta.drop), (10, 5));
        assert!((w.seconds - 3.0).abs() < 1e-9);
    }

    #[test]
    fn range_without_ports_is_the_kernel_default_said_so() {
        let es = vec![entry(443, 50_000, CtTcpState::Established)];
        let s = snap(
            es,
            vec![NatRule {
                ports: None,
                ..rule(1, 1, true)
            }],
            ConntrackStats::default(),
        );
        let a = analyze(&s, Thresholds::default()).unwrap();
        let p = &a.pools[0];
        assert_eq!(p.nat_range, KERNEL_DEFAULT_NAT_RANGE);
        assert_eq!(p.capacity, 64_512);
        assert_eq!(p.range_source.origin, "kernel_default");
        assert!(p.range_source.detail.contains("no port range"));
        assert_eq!(p.fully_random, Some(true));
        assert!(codes(&s, Thresholds::default()).is_empty());
    }

    #[test]
    fn the_range_holding_the_pool_ports_is_chosen() {
        let es: Vec<NatEntry> = (41000..41010)
            .map(|p| entry(80, p, CtTcpState::Established))
            .collect();
        let rules = vec![rule(40000, 40099, false), rule(41000, 41019, true)];
        let a = analyze(
            &snap(es, rules, ConntrackStats::default()),
            Thresholds::default(),
        )
        .unwrap();
        assert_eq!(a.pools[0].nat_range, PortRange::new(41000, 41019).unwrap());
        assert_eq!(a.pools[0].fully_random, Some(true));
        assert_eq!(a.pools[0].level, Level::Ok);
    }

    #[test]
    fn table_near_max_is_conntrack_table_full() {
        let mut s = snap(Vec::new(), Vec::new(), ConntrackStats::default());
        if let Some(ct) = s.conntrack.as_mut() {
            ct.count = Some(95);
            ct.max = Some(100);
            ct.stats = Some(ConntrackStats {
                early_drop: 3,
                ..ConntrackStats::default()
            });
        }
        let all = analyze_all(&s, Thresholds::default());
        assert_eq!(codes(&s, Thresholds::default()), ["conntrack_table_full"]);
        assert_eq!(all.verdict.level, Level::Critical);
        assert!(all.snat.unwrap().pools.is_empty());
    }

    #[test]
    fn no_conntrack_and_idle_conntrack_say_nothing() {
        let s = crate::fixture::SnapshotBuilder::linux().build();
        assert!(analyze(&s, Thresholds::default()).is_none());
        assert!(codes(&s, Thresholds::default()).is_empty());
        let idle = snap(Vec::new(), Vec::new(), ConntrackStats::default());
        let a = analyze(&idle, Thresholds::default()).unwrap();
        assert!(a.pools.is_empty());
        assert!(codes(&idle, Thresholds::default()).is_empty());
    }

    #[test]
    fn cloud_nat_quota_is_a_model_per_destination() {
        let es: Vec<NatEntry> = (40000..40080)
            .map(|p| entry(443, p, CtTcpState::Established))
            .collect();
        let s = snap(
            es,
            vec![rule(40000, 40999, true)],
            ConntrackStats::default(),
        );
        let t = Thresholds {
            cloud_nat: Some(CloudNat::parse("azure-lb:64").unwrap()),
            ..Thresholds::default()
        };
        let all = analyze_all(&s, t);
        assert_eq!(codes(&s, t), ["cloud_nat_quota"]);
        let f = &all.verdict.findings[0];
        assert_eq!(f.severity, Severity::Critical);
        assert!(
            f.message
                .starts_with("model, not a measurement: 80 concurrent flows"),
            "{}",
            f.message
        );
        assert_eq!(all.snat.unwrap().cloud[0].quota, 64);
        assert!(codes(&s, Thresholds::default()).is_empty());
    }

    #[test]
    fn cloud_nat_demand_is_littles_law_per_destination() {
        let d = cloud_nat_demand(CloudNat::AzureLb(64), 400.0, 0.5, 2);
        assert!((d.flows_per_destination - 100.0).abs() < 1e-9);
        assert!(!d.fits);
        assert!(cloud_nat_demand(CloudNat::AwsNatGw(1), 400.0, 0.5, 2).fits);
    }

    #[test]
    fn cloud_nat_parses_each_model() {
        assert_eq!(
            CloudNat::parse("azure-lb:1024"),
            Ok(CloudNat::AzureLb(1024))
        );
        assert_eq!(CloudNat::parse("app-service").map(CloudNat::quota), Ok(128));
        assert_eq!(
            CloudNat::parse("aws-natgw").map(CloudNat::quota),
            Ok(55_000)
        );
        assert_eq!(CloudNat::parse("gcp"), Ok(CloudNat::Gcp(64)));
        assert_eq!(CloudNat::parse("gcp:256"), Ok(CloudNat::Gcp(256)));
        assert!(CloudNat::parse("azure-lb").is_err());
        assert!(CloudNat::parse("azure-lb:0").is_err());
        assert!(CloudNat::parse("aws").is_err());
        assert!(CloudNat::parse("app-service:3").is_err());
    }
}
