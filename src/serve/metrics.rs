//! Metric families (OpenMetrics text) built from one [`Analysis`], with the very numbers of
//! `check --json`: every pool value goes through
//! [`json::check_report`](crate::report::json::check_report), so rounding and `null`-handling
//! are the same (a `null` there is an absent series here, never a made-up zero).
//! Every metric is documented in docs/serve.md.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::analysis::{Analysis, Level};
use crate::report::json::{check_report, CheckReport, PoolEntry, PoolOut, UdpPoolOut};
use crate::report::namespaces::Inspected;
use crate::snapshot::{NamespaceIdentity, Snapshot};

/// The label value of the series that sums up the pools beyond `--max-pools`.
pub const OTHER: &str = "other";
/// The label value for a pool key part that does not apply (a per-local-address pool has no
/// remote address).
pub const ANY: &str = "any";
/// The `Content-Type` of [`encode`]d text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type F64Gauge = Gauge<f64, AtomicU64>;
/// A series' labels, in order.
pub type Labels = Vec<(&'static str, String)>;
type GaugeFamily = Family<Labels, F64Gauge>;

/// Counters that live as long as the exporter (shared by every collection).
#[derive(Debug, Clone, Default)]
pub struct ExporterCounters {
    pub collections: Counter,
    pub collection_errors: Counter,
    /// Failed connect()/bind() calls, counted by the failure tracer while serve runs.
    pub failures: super::failures::FailureMetrics,
}

/// How to export.
#[derive(Debug, Clone, Copy)]
pub struct MetricsOptions {
    /// At most this many pools get their own series (highest utilization first); the rest are
    /// summed into one `other` series.
    pub max_pools: usize,
}

/// What one collection produced: one namespace, or every namespace of the host (`-A`).
pub enum Scraped<'a> {
    /// The host's (or `--netns`/`--pid`'s) namespace: series without namespace labels.
    One(&'a Snapshot, &'a Analysis),
    /// Every namespace: each series gains `netns`, `pod_namespace`, `pod` and `container`.
    All {
        namespaces: &'a [Inspected<'a>],
        /// Namespaces found but not collected (no privilege to enter, vanished).
        skipped: usize,
    },
}

/// What one collection attempt produced.
pub struct Collection<'a> {
    /// The snapshots and their analyses, or `None` when the collection failed.
    pub result: Option<Scraped<'a>>,
    /// Wall time of the collection and analysis.
    pub duration_seconds: f64,
    /// Unix time at the end of the collection.
    pub timestamp_seconds: f64,
}

/// The labels that name a namespace under `-A`: `netns` (its /run/netns name, else its inode),
/// `pod_namespace` and `pod` (from the kubelet's pod directory; `pod` is the pod UID when there
/// is none), `container` (`runtime://id`, as Kubernetes writes container IDs). A label that
/// does not apply is empty, which Prometheus treats as absent.
pub fn namespace_labels(id: &NamespaceIdentity) -> Labels {
    let (pod_namespace, pod) = match &id.pod {
        Some(p) if !p.name.is_empty() => (p.namespace.clone(), p.name.clone()),
        Some(p) => (String::new(), p.uid.clone()),
        None => (String::new(), String::new()),
    };
    vec![
        (
            "netns",
            id.name.clone().unwrap_or_else(|| id.id.ino.to_string()),
        ),
        ("pod_namespace", pod_namespace),
        ("pod", pod),
        (
            "container",
            id.container
                .as_ref()
                .map_or_else(String::new, |c| format!("{}://{}", c.runtime, c.id)),
        ),
    ]
}

/// `ns` followed by `more`.
fn labelled(ns: &Labels, more: Labels) -> Labels {
    let mut l = ns.clone();
    l.extend(more);
    l
}

fn gauge(reg: &mut Registry, name: &str, help: &str, value: f64) {
    let g = F64Gauge::default();
    g.set(value);
    reg.register(name, help, g);
}

fn gauge_unit(reg: &mut Registry, name: &str, help: &str, unit: Unit, value: f64) {
    let g = F64Gauge::default();
    g.set(value);
    reg.register_with_unit(name, help, unit, g);
}

/// The per-pool families, registered only when they hold a series.
#[derive(Default)]
struct PoolFamilies {
    in_use: GaugeFamily,
    time_wait: GaugeFamily,
    blocking_time_wait: GaugeFamily,
    capacity: GaugeFamily,
    utilization: GaugeFamily,
    connect_rate: GaugeFamily,
    eta: GaugeFamily,
    sockets: GaugeFamily,
}

fn pool_labels(p: &PoolOut<'_>) -> Labels {
    vec![
        ("local_ip", p.local_ip.clone()),
        (
            "remote_ip",
            p.remote_ip.clone().unwrap_or_else(|| ANY.into()),
        ),
        (
            "remote_port",
            p.remote_port
                .map_or_else(|| ANY.into(), |port| port.to_string()),
        ),
    ]
}

/// A UDP pool: the wildcard of its IP version (`0.0.0.0`, `::`), any remote, `protocol="udp"`.
/// TCP pool series keep exactly the labels they always had (no `protocol`, which Prometheus
/// reads as `protocol=""`), so dashboards and rules written for them keep their meaning.
fn udp_pool_labels(p: &UdpPoolOut<'_>) -> Labels {
    vec![
        ("local_ip", p.local_ip.into()),
        ("remote_ip", ANY.into()),
        ("remote_port", ANY.into()),
        ("protocol", p.protocol.into()),
    ]
}

fn other_labels() -> Labels {
    vec![
        ("local_ip", OTHER.into()),
        ("remote_ip", OTHER.into()),
        ("remote_port", OTHER.into()),
    ]
}

impl PoolFamilies {
    fn add_entry(&self, ns: &Labels, e: &PoolEntry<'_>) {
        match e {
            PoolEntry::Tcp(p) => self.add(ns, p),
            PoolEntry::Udp(p) => self.add_udp(ns, p),
        }
    }

    /// A UDP pool: distinct ports held, capacity, utilization; its sockets as `UNCONN` and
    /// `ESTAB` (ss's words for UDP). No TIME_WAIT, rate or ETA: UDP has none.
    fn add_udp(&self, ns: &Labels, p: &UdpPoolOut<'_>) {
        let l = labelled(ns, udp_pool_labels(p));
        self.in_use.get_or_create(&l).set(p.in_use as f64);
        if let Some(c) = p.capacity {
            self.capacity.get_or_create(&l).set(f64::from(c));
        }
        if let Some(u) = p.utilization {
            self.utilization.get_or_create(&l).set(u);
        }
        for (state, n) in [("UNCONN", p.sockets - p.connected), ("ESTAB", p.connected)] {
            let mut with_state = l.clone();
            with_state.push(("state", state.to_string()));
            self.sockets.get_or_create(&with_state).set(n as f64);
        }
    }

    /// UDP pools beyond the cap: ports summed, utilization the maximum.
    fn add_other_udp(&self, ns: &Labels, rest: &[&UdpPoolOut<'_>]) {
        let mut l = labelled(ns, other_labels());
        l.push(("protocol", "udp".into()));
        self.in_use
            .get_or_create(&l)
            .set(rest.iter().map(|p| p.in_use).sum::<u64>() as f64);
        if let Some(u) = rest.iter().filter_map(|p| p.utilization).reduce(f64::max) {
            self.utilization.get_or_create(&l).set(u);
        }
    }

    fn add(&self, ns: &Labels, p: &PoolOut<'_>) {
        let l = labelled(ns, pool_labels(p));
        self.in_use.get_or_create(&l).set(p.in_use as f64);
        self.time_wait.get_or_create(&l).set(p.time_wait as f64);
        self.blocking_time_wait
            .get_or_create(&l)
            .set(p.blocking_time_wait as f64);
        if let Some(c) = p.capacity {
            self.capacity.get_or_create(&l).set(f64::from(c));
        }
        if let Some(u) = p.utilization {
            self.utilization.get_or_create(&l).set(u);
        }
        if let Some(r) = p.connect_rate_per_s {
            self.connect_rate.get_or_create(&l).set(r);
        }
        if let Some(e) = p.eta_seconds {
            self.eta.get_or_create(&l).set(e);
        }
        for (state, n) in p.states {
            let mut with_state = l.clone();
            with_state.push(("state", (*state).to_string()));
            self.sockets.get_or_create(&with_state).set(*n as f64);
        }
    }

    /// Sums (counts, rates) or maxima (utilization) of the pools beyond the cap; no capacity and
    /// no ETA, which do not add up.
    fn add_other(&self, ns: &Labels, rest: &[&PoolOut<'_>]) {
        let l = labelled(ns, other_labels());
        let sum = |f: fn(&PoolOut<'_>) -> u64| rest.iter().map(|p| f(p)).sum::<u64>() as f64;
        self.in_use.get_or_create(&l).set(sum(|p| p.in_use));
        self.time_wait.get_or_create(&l).set(sum(|p| p.time_wait));
        self.blocking_time_wait
            .get_or_create(&l)
            .set(sum(|p| p.blocking_time_wait));
        if let Some(u) = rest.iter().filter_map(|p| p.utilization).reduce(f64::max) {
            self.utilization.get_or_create(&l).set(u);
        }
        let mut states: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
        for p in rest {
            for (state, n) in p.states {
                *states.entry(state).or_default() += n;
            }
        }
        for (state, n) in states {
            let mut with_state = l.clone();
            with_state.push(("state", state.to_string()));
            self.sockets.get_or_create(&with_state).set(n as f64);
        }
        let rates: Vec<f64> = rest.iter().filter_map(|p| p.connect_rate_per_s).collect();
        if !rates.is_empty() {
            self.connect_rate.get_or_create(&l).set(rates.iter().sum());
        }
    }

    fn register(self, reg: &mut Registry) {
        reg.register(
            "pool_in_use",
            "Ephemeral ports of the pool held by sockets (all states that hold a port)",
            self.in_use,
        );
        reg.register(
            "pool_time_wait",
            "Sockets of the pool in TIME_WAIT",
            self.time_wait,
        );
        reg.register(
            "pool_blocking_time_wait",
            "TIME_WAIT sockets of the pool whose port cannot be reused yet",
            self.blocking_time_wait,
        );
        reg.register(
            "pool_capacity",
            "Ports the pool can hold: ephemeral range minus reserved and bound ports",
            self.capacity,
        );
        reg.register_with_unit(
            "pool_utilization",
            "Share of the pool's capacity in use, reusable TIME_WAIT not counted (0..1, above 1 when overcommitted)",
            Unit::Other("ratio".into()),
            self.utilization,
        );
        reg.register(
            "pool_connect_rate_per_second",
            "Estimated new connections per second into the pool (from TIME_WAIT timers)",
            self.connect_rate,
        );
        reg.register(
            "pool_sockets",
            "Sockets of the pool per state (ESTABLISHED, TIME_WAIT, CLOSE_WAIT, SYN_SENT, ...): what fills it",
            self.sockets,
        );
        reg.register_with_unit(
            "pool_eta",
            "Estimated seconds until the pool is full; present only while the pool grows",
            Unit::Seconds,
            self.eta,
        );
    }
}

/// Encodes one collection (or its failure) as OpenMetrics text.
pub fn render(c: &Collection<'_>, counters: &ExporterCounters, opts: MetricsOptions) -> String {
    let mut reg = Registry::with_prefix("portdoctor");
    let build = Family::<Labels, F64Gauge>::default();
    build
        .get_or_create(&vec![
            ("version", env!("CARGO_PKG_VERSION").to_string()),
            ("os", std::env::consts::OS.to_string()),
        ])
        .set(1.0);
    reg.register(
        "build_info",
        "Always 1; labels give the portdoctor version and the OS it was built for",
        build,
    );
    reg.register(
        "collections",
        "Socket collections run since start (scrapes within --min-interval share one)",
        counters.collections.clone(),
    );
    reg.register(
        "collection_errors",
        "Collections that failed since start",
        counters.collection_errors.clone(),
    );
    gauge(
        &mut reg,
        "collection_success",
        "1 if the last collection succeeded, 0 if it failed (then no pool or host series)",
        if c.result.is_some() { 1.0 } else { 0.0 },
    );
    gauge_unit(
        &mut reg,
        "collection_duration",
        "Wall time of the last collection and analysis",
        Unit::Seconds,
        c.duration_seconds,
    );
    gauge_unit(
        &mut reg,
        "collection_timestamp",
        "Unix time at which the last collection finished",
        Unit::Seconds,
        c.timestamp_seconds,
    );
    counters.failures.register(&mut reg);
    if let Some(scraped) = &c.result {
        host_and_pools(&mut reg, scraped, opts);
    }
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &reg);
    out
}

/// One namespace's share of the series: its labels (none without `-A`) and its report.
struct Part<'a> {
    labels: Labels,
    snap: &'a Snapshot,
    analysis: &'a Analysis,
    report: CheckReport<'a>,
}

/// A gauge with one value per namespace: a plain series without `-A` (as it always was), one
/// series per namespace with it; not registered when no namespace has a value.
fn per_namespace(
    reg: &mut Registry,
    name: &str,
    help: &str,
    all: bool,
    series: Vec<(Labels, f64)>,
) {
    if !all {
        if let Some((_, v)) = series.first() {
            gauge(reg, name, help, *v);
        }
        return;
    }
    if series.is_empty() {
        return;
    }
    let family = GaugeFamily::default();
    for (l, v) in series {
        family.get_or_create(&l).set(v);
    }
    reg.register(name, help, family);
}

/// `(labels, value)` of every namespace that has the value.
fn each(units: &[Part<'_>], f: impl Fn(&Part<'_>) -> Option<f64>) -> Vec<(Labels, f64)> {
    units
        .iter()
        .filter_map(|u| f(u).map(|v| (u.labels.clone(), v)))
        .collect()
}

fn host_and_pools(reg: &mut Registry, scraped: &Scraped<'_>, opts: MetricsOptions) {
    let (units, all): (Vec<Part<'_>>, bool) = match scraped {
        Scraped::One(snap, a) => (
            vec![Part {
                labels: Vec::new(),
                snap,
                analysis: a,
                report: check_report(snap, a, None),
            }],
            false,
        ),
        Scraped::All { namespaces, .. } => (
            namespaces
                .iter()
                .map(|n| Part {
                    labels: namespace_labels(n.identity),
                    snap: n.snapshot,
                    analysis: n.analysis,
                    report: check_report(n.snapshot, n.analysis, None),
                })
                .collect(),
            true,
        ),
    };
    if let Scraped::All { skipped, .. } = scraped {
        gauge(
            reg,
            "namespaces",
            "Network namespaces collected (-A); each namespace's series carry its netns, pod_namespace, pod and container labels",
            units.len() as f64,
        );
        gauge(
            reg,
            "namespaces_skipped",
            "Network namespaces found but not collected (-A): no privilege to enter them (CAP_SYS_ADMIN), or gone meanwhile",
            *skipped as f64,
        );
    }
    pools(reg, &units, all, opts);
    host(reg, &units, all);
    conntrack(reg, &units, opts);
}

/// The pool families: the `--max-pools` most utilized pools of all namespaces get their own
/// series, the rest are summed per namespace into its `other` series.
fn pools(reg: &mut Registry, units: &[Part<'_>], all: bool, opts: MetricsOptions) {
    let mut ranked: Vec<(usize, &PoolEntry<'_>)> = units
        .iter()
        .enumerate()
        .flat_map(|(i, u)| u.report.pools.iter().map(move |p| (i, p)))
        // SNAT pools have families of their own (serve/snat.rs).
        .filter(|(_, p)| !p.is_snat())
        .collect();
    // Stable, with the analysis' own order (utilization, then size): one namespace's pools keep
    // exactly the order `check` shows them in.
    ranked.sort_by(|(_, a), (_, b)| {
        b.utilization()
            .unwrap_or(-1.0)
            .total_cmp(&a.utilization().unwrap_or(-1.0))
            .then(b.in_use().cmp(&a.in_use()))
    });
    let shown = ranked.len().min(opts.max_pools);
    let families = PoolFamilies::default();
    for (i, p) in &ranked[..shown] {
        families.add_entry(&units[*i].labels, p);
    }
    let mut rest: Vec<Vec<&PoolOut<'_>>> = vec![Vec::new(); units.len()];
    let mut rest_udp: Vec<Vec<&UdpPoolOut<'_>>> = vec![Vec::new(); units.len()];
    for (i, p) in &ranked[shown..] {
        match p {
            PoolEntry::Tcp(p) => rest[*i].push(p),
            PoolEntry::Udp(p) => rest_udp[*i].push(p),
        }
    }
    for ((u, r), ru) in units.iter().zip(&rest).zip(&rest_udp) {
        if !r.is_empty() {
            families.add_other(&u.labels, r);
        }
        if !ru.is_empty() {
            families.add_other_udp(&u.labels, ru);
        }
    }
    families.register(reg);
    per_namespace(
        reg,
        "pools",
        "Pools found (TCP destination and per-local-address pools, UDP pools; SNAT pools are portdoctor_snat_pool_*), before the --max-pools cap",
        all,
        units
            .iter()
            // SNAT rows of `pools` have families and a cap of their own (serve/snat.rs).
            .map(|u| {
                let n = u.report.pools.iter().filter(|p| !p.is_snat()).count();
                (u.labels.clone(), n as f64)
            })
            .collect(),
    );
    per_namespace(
        reg,
        "pools_dropped",
        "Pools without their own series because of --max-pools, summed into the local_ip=\"other\" series",
        all,
        units
            .iter()
            .zip(rest.iter().zip(&rest_udp))
            .map(|(u, (r, ru))| (u.labels.clone(), (r.len() + ru.len()) as f64))
            .collect(),
    );
    let by_level = GaugeFamily::default();
    for u in units {
        for (level, n) in &u.report.verdict.pools {
            by_level
                .get_or_create(&labelled(&u.labels, vec![("level", (*level).to_string())]))
                .set(*n as f64);
        }
    }
    reg.register(
        "pools_by_level",
        "Pools per health level (ok, warning, critical)",
        by_level,
    );
}

#[allow(clippy::too_many_lines)] // one registration after the other
fn host(reg: &mut Registry, units: &[Part<'_>], all: bool) {
    per_namespace(
        reg,
        "ephemeral_port_range_low",
        "First port of the ephemeral (dynamic) port range",
        all,
        each(units, |u| {
            u.snap.settings.ephemeral_ports.map(|r| f64::from(r.low))
        }),
    );
    per_namespace(
        reg,
        "ephemeral_port_range_high",
        "Last port of the ephemeral (dynamic) port range",
        all,
        each(units, |u| {
            u.snap.settings.ephemeral_ports.map(|r| f64::from(r.high))
        }),
    );
    per_namespace(
        reg,
        "ephemeral_ports_usable",
        "Ports of the range a pool can use: range minus reserved/excluded and bound ports",
        all,
        each(units, |u| {
            u.report
                .capacity
                .as_ref()
                .map(|c| f64::from(c.usable_per_pool))
        }),
    );
    let states = GaugeFamily::default();
    for u in units {
        for (state, n) in u.report.states {
            states
                .get_or_create(&labelled(&u.labels, vec![("state", (*state).to_string())]))
                .set(*n as f64);
        }
    }
    reg.register("sockets", "TCP sockets per state", states);
    per_namespace(
        reg,
        "time_wait_sockets",
        "TCP sockets in TIME_WAIT, all pools and inbound together",
        all,
        each(units, |u| Some(u.report.sockets.time_wait as f64)),
    );
    per_namespace(
        reg,
        "time_wait_buckets_max",
        "net.ipv4.tcp_max_tw_buckets: TIME_WAIT sockets the kernel keeps before it drops new ones",
        all,
        each(units, |u| u.snap.settings.max_tw_buckets.map(|m| m as f64)),
    );
    let overflow_help = "TIME_WAIT sockets the kernel did not create because tcp_max_tw_buckets was reached (TcpExt TCPTimeWaitOverflow)";
    let overflow: Vec<(&Labels, u64)> = units
        .iter()
        .filter_map(|u| {
            let v = u.snap.counters.tcp_ext("TCPTimeWaitOverflow")?;
            Some((&u.labels, v.max(0) as u64))
        })
        .collect();
    if all {
        if !overflow.is_empty() {
            let family = Family::<Labels, Counter>::default();
            for (l, v) in overflow {
                family.get_or_create(l).inc_by(v);
            }
            reg.register("tcp_time_wait_overflow", overflow_help, family);
        }
    } else if let Some((_, v)) = overflow.first() {
        let c = Counter::<u64>::default();
        c.inc_by(*v);
        reg.register("tcp_time_wait_overflow", overflow_help, c);
    }
    per_namespace(
        reg,
        "verdict_level",
        "Overall verdict of the check model: 0 ok, 1 warning, 2 critical",
        all,
        each(units, |u| {
            Some(match u.analysis.verdict.level {
                Level::Ok => 0.0,
                Level::Warning => 1.0,
                Level::Critical => 2.0,
            })
        }),
    );
    let findings = GaugeFamily::default();
    for u in units {
        for f in &u.analysis.verdict.findings {
            let severity = serde_json::to_value(f.severity)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            findings
                .get_or_create(&labelled(
                    &u.labels,
                    vec![("code", f.code.to_string()), ("severity", severity)],
                ))
                .inc_by(1.0);
        }
    }
    reg.register(
        "findings",
        "Findings of the check model per stable code and severity (see `portdoctor check`)",
        findings,
    );
    windows_events(reg, units);
}

/// The conntrack and SNAT families (`serve/snat.rs`).
fn conntrack(reg: &mut Registry, units: &[Part<'_>], opts: MetricsOptions) {
    let parts: Vec<super::snat::Unit3<'_>> = units
        .iter()
        .map(|u| super::snat::Unit3 {
            labels: &u.labels,
            snap: u.snap,
            analysis: u.analysis,
        })
        .collect();
    super::snat::register(reg, &parts, opts.max_pools);
}

fn windows_events(reg: &mut Registry, units: &[Part<'_>]) {
    let ev = GaugeFamily::default();
    let mut window = None;
    for u in units {
        let Some(events) = u.snap.windows.as_ref().and_then(|w| w.events) else {
            continue;
        };
        ev.get_or_create(&labelled(&u.labels, vec![("event_id", "4227".to_string())]))
            .set(events.reuse_failed_4227.count as f64);
        ev.get_or_create(&labelled(&u.labels, vec![("event_id", "4231".to_string())]))
            .set(events.ports_exhausted_4231.count as f64);
        window = Some(f64::from(events.window_hours) * 3600.0);
    }
    if let Some(w) = window {
        reg.register(
            "windows_tcpip_events",
            "Tcpip events in the System log within the look-back window: 4227 TIME_WAIT reuse failed, 4231 ephemeral port allocation failed",
            ev,
        );
        gauge_unit(
            reg,
            "windows_tcpip_events_window",
            "Look-back window of portdoctor_windows_tcpip_events",
            Unit::Seconds,
            w,
        );
    }
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
