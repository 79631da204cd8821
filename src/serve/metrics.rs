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
use crate::report::json::{check_report, PoolOut};
use crate::snapshot::Snapshot;

/// The label value of the series that sums up the pools beyond `--max-pools`.
pub const OTHER: &str = "other";
/// The label value for a pool key part that does not apply (a per-local-address pool has no
/// remote address).
pub const ANY: &str = "any";
/// The `Content-Type` of [`encode`]d text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type F64Gauge = Gauge<f64, AtomicU64>;
type Labels = Vec<(&'static str, String)>;
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

/// What one collection attempt produced.
pub struct Collection<'a> {
    /// The snapshot and its analysis, or `None` when the collection failed.
    pub result: Option<(&'a Snapshot, &'a Analysis)>,
    /// Wall time of the collection and analysis.
    pub duration_seconds: f64,
    /// Unix time at the end of the collection.
    pub timestamp_seconds: f64,
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

fn other_labels() -> Labels {
    vec![
        ("local_ip", OTHER.into()),
        ("remote_ip", OTHER.into()),
        ("remote_port", OTHER.into()),
    ]
}

impl PoolFamilies {
    fn add(&self, p: &PoolOut<'_>) {
        let l = pool_labels(p);
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
    }

    /// Sums (counts, rates) or maxima (utilization) of the pools beyond the cap; no capacity and
    /// no ETA, which do not add up.
    fn add_other(&self, rest: &[PoolOut<'_>]) {
        let l = other_labels();
        let sum = |f: fn(&PoolOut<'_>) -> u64| rest.iter().map(f).sum::<u64>() as f64;
        self.in_use.get_or_create(&l).set(sum(|p| p.in_use));
        self.time_wait.get_or_create(&l).set(sum(|p| p.time_wait));
        self.blocking_time_wait
            .get_or_create(&l)
            .set(sum(|p| p.blocking_time_wait));
        if let Some(u) = rest.iter().filter_map(|p| p.utilization).reduce(f64::max) {
            self.utilization.get_or_create(&l).set(u);
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
    if let Some((snap, analysis)) = c.result {
        host_and_pools(&mut reg, snap, analysis, opts);
    }
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &reg);
    out
}

fn host_and_pools(reg: &mut Registry, snap: &Snapshot, a: &Analysis, opts: MetricsOptions) {
    let report = check_report(snap, a, None);
    let families = PoolFamilies::default();
    let shown = report.pools.len().min(opts.max_pools);
    for p in &report.pools[..shown] {
        families.add(p);
    }
    let rest = &report.pools[shown..];
    if !rest.is_empty() {
        families.add_other(rest);
    }
    families.register(reg);
    gauge(
        reg,
        "pools",
        "Pools found (destination and per-local-address pools), before the --max-pools cap",
        report.pools.len() as f64,
    );
    gauge(
        reg,
        "pools_dropped",
        "Pools without their own series because of --max-pools, summed into the local_ip=\"other\" series",
        rest.len() as f64,
    );
    let by_level = Family::<Labels, F64Gauge>::default();
    for (level, n) in &report.verdict.pools {
        by_level
            .get_or_create(&vec![("level", (*level).to_string())])
            .set(*n as f64);
    }
    reg.register(
        "pools_by_level",
        "Pools per health level (ok, warning, critical)",
        by_level,
    );

    if let Some(range) = snap.settings.ephemeral_ports {
        gauge(
            reg,
            "ephemeral_port_range_low",
            "First port of the ephemeral (dynamic) port range",
            f64::from(range.low),
        );
        gauge(
            reg,
            "ephemeral_port_range_high",
            "Last port of the ephemeral (dynamic) port range",
            f64::from(range.high),
        );
    }
    if let Some(cap) = &report.capacity {
        gauge(
            reg,
            "ephemeral_ports_usable",
            "Ports of the range a pool can use: range minus reserved/excluded and bound ports",
            f64::from(cap.usable_per_pool),
        );
    }
    let states = Family::<Labels, F64Gauge>::default();
    for (state, n) in report.states {
        states
            .get_or_create(&vec![("state", (*state).to_string())])
            .set(*n as f64);
    }
    reg.register("sockets", "TCP sockets per state", states);
    gauge(
        reg,
        "time_wait_sockets",
        "TCP sockets in TIME_WAIT, all pools and inbound together",
        report.sockets.time_wait as f64,
    );
    if let Some(max) = snap.settings.max_tw_buckets {
        gauge(
            reg,
            "time_wait_buckets_max",
            "net.ipv4.tcp_max_tw_buckets: TIME_WAIT sockets the kernel keeps before it drops new ones",
            max as f64,
        );
    }
    if let Some(v) = snap.counters.tcp_ext("TCPTimeWaitOverflow") {
        let c = Counter::<u64>::default();
        c.inc_by(v.max(0) as u64);
        reg.register(
            "tcp_time_wait_overflow",
            "TIME_WAIT sockets the kernel did not create because tcp_max_tw_buckets was reached (TcpExt TCPTimeWaitOverflow)",
            c,
        );
    }
    gauge(
        reg,
        "verdict_level",
        "Overall verdict of the check model: 0 ok, 1 warning, 2 critical",
        match a.verdict.level {
            Level::Ok => 0.0,
            Level::Warning => 1.0,
            Level::Critical => 2.0,
        },
    );
    let findings = Family::<Labels, F64Gauge>::default();
    for f in &a.verdict.findings {
        let severity = serde_json::to_value(f.severity)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        findings
            .get_or_create(&vec![("code", f.code.to_string()), ("severity", severity)])
            .inc_by(1.0);
    }
    reg.register(
        "findings",
        "Findings of the check model per stable code and severity (see `portdoctor check`)",
        findings,
    );
    if let Some(events) = snap.windows.as_ref().and_then(|w| w.events) {
        let ev = Family::<Labels, F64Gauge>::default();
        ev.get_or_create(&vec![("event_id", "4227".to_string())])
            .set(events.reuse_failed_4227.count as f64);
        ev.get_or_create(&vec![("event_id", "4231".to_string())])
            .set(events.ports_exhausted_4231.count as f64);
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
            f64::from(events.window_hours) * 3600.0,
        );
    }
}
