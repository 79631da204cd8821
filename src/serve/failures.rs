//! `serve`: failed connect()/bind() calls counted for the exporter's lifetime by the failure
//! tracer (docs/failures.md), as `portdoctor_connect_failures_total{local_ip,remote_ip,
//! remote_port,error}` and `portdoctor_connect_failure_tracing` (1 while tracing works).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use std::path::Path;

use super::metrics::{ANY, OTHER};
use crate::snapshot::Target;

type Labels = Vec<(&'static str, String)>;

/// Shared between the tracing thread and every render.
#[derive(Debug, Clone, Default)]
pub struct FailureMetrics {
    tracing: Arc<AtomicBool>,
    counts: Family<Labels, Counter>,
}

impl FailureMetrics {
    /// Registers both families (the counter only once it has a series, like the pool families).
    pub fn register(&self, reg: &mut Registry) {
        let g = prometheus_client::metrics::gauge::Gauge::<i64>::default();
        g.set(i64::from(self.tracing.load(Ordering::Relaxed)));
        reg.register(
            "connect_failure_tracing",
            "1 while the failure tracer runs (kernel tracepoints; needs root), 0 when it cannot (then no connect_failures series)",
            g,
        );
        if self.tracing.load(Ordering::Relaxed) {
            reg.register(
                "connect_failures",
                "connect() calls that failed with EADDRNOTAVAIL and bind() calls that failed with EADDRINUSE, per pool (bind(): no addresses, label `any`); with -A also per namespace and pod of the failing process",
                self.counts.clone(),
            );
        }
    }
}

/// The labels of one failure: pool and error, or all `other` once `cap` series exist.
pub fn labels(
    local_ip: Option<std::net::IpAddr>,
    remote_ip: Option<std::net::IpAddr>,
    remote_port: Option<u16>,
    error: &str,
) -> Labels {
    let text = |v: Option<String>| v.unwrap_or_else(|| ANY.to_string());
    vec![
        ("local_ip", text(local_ip.map(|ip| ip.to_string()))),
        ("remote_ip", text(remote_ip.map(|ip| ip.to_string()))),
        ("remote_port", text(remote_port.map(|p| p.to_string()))),
        ("error", error.to_string()),
    ]
}

#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn capped(l: Labels, seen: &mut rustc_hash::FxHashSet<Labels>, cap: usize) -> Labels {
    if seen.contains(&l) {
        return l;
    }
    if seen.len() < cap {
        seen.insert(l.clone());
        return l;
    }
    // Every label but the error (the namespace ones under -A too) becomes `other`.
    l.into_iter()
        .map(|(k, v)| (k, if k == "error" { v } else { OTHER.to_string() }))
        .collect()
}

/// Starts tracing the failures of `target`'s namespace (`None`: every namespace, for `serve
/// -A`, each series then labelled with its namespace and pod as the pool series are, from the
/// failing process: /proc/PID/ns/net and its cgroup, pods under `pods_dir`) on a thread of its
/// own, with at most `cap` series (the rest summed as `other`). When it cannot, says why on
/// stderr and exports `portdoctor_connect_failure_tracing 0`.
#[cfg(target_os = "linux")]
pub fn start(target: Option<&Target>, pods_dir: Option<&Path>, cap: usize) -> FailureMetrics {
    use super::metrics::namespace_labels;
    use crate::collect::linux::failures::{target_id, FailureTracer, DRAIN_EVERY};
    use crate::collect::linux::namespaces::{identify_process, Discovery};
    use crate::snapshot::NetnsId;
    let metrics = FailureMetrics::default();
    let mut tracer = match FailureTracer::start() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("portdoctor: note: {e}; portdoctor_connect_failures_total is not exported");
            return metrics;
        }
    };
    let want = target.and_then(target_id);
    let all = target.is_none();
    let mut discovery = Discovery::default();
    if let Some(dir) = pods_dir {
        discovery.pods_dir = dir.to_path_buf();
    }
    metrics.tracing.store(true, Ordering::Relaxed);
    let m = metrics.clone();
    let spawned = std::thread::Builder::new()
        .name("failure-tracer".into())
        .spawn(move || {
            let mut seen = rustc_hash::FxHashSet::default();
            // -A: each namespace's labels, from the first process seen failing in it.
            let mut ns_labels: rustc_hash::FxHashMap<Option<NetnsId>, Labels> =
                rustc_hash::FxHashMap::default();
            let mut forgot = std::time::Instant::now();
            loop {
                tracer.wait(DRAIN_EVERY);
                for f in tracer.drain() {
                    let netns = tracer.process(f.pid).and_then(|p| p.netns);
                    if !all && netns != want {
                        continue;
                    }
                    let mut l = labels(f.local_ip, f.remote_ip, f.remote_port, f.error.name());
                    if all {
                        if ns_labels.len() > 4096 {
                            ns_labels.clear();
                        }
                        let ns = ns_labels.entry(netns).or_insert_with(|| match netns {
                            Some(id) => namespace_labels(&identify_process(f.pid, id, &discovery)),
                            None => unknown_namespace(),
                        });
                        l.splice(0..0, ns.iter().cloned());
                    }
                    m.counts.get_or_create(&capped(l, &mut seen, cap)).inc();
                }
                if forgot.elapsed() >= std::time::Duration::from_secs(10) {
                    forgot = std::time::Instant::now();
                    // Every ~10 s: forget processes that exited (the table stays small).
                    tracer.forget_exited();
                }
            }
        });
    if let Err(e) = spawned {
        eprintln!("portdoctor: note: could not start the failure tracer: {e}");
        metrics.tracing.store(false, Ordering::Relaxed);
    }
    metrics
}

/// The namespace labels of a failure whose process exited before its namespace was read.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn unknown_namespace() -> Labels {
    vec![
        ("netns", "unknown".to_string()),
        ("pod_namespace", String::new()),
        ("pod", String::new()),
        ("container", String::new()),
    ]
}

#[cfg(not(target_os = "linux"))]
pub fn start(_target: Option<&Target>, _pods_dir: Option<&Path>, _cap: usize) -> FailureMetrics {
    FailureMetrics::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_beyond_the_cap_are_summed_as_other() {
        let mut seen = rustc_hash::FxHashSet::default();
        let a = labels(
            Some("127.0.0.1".parse().unwrap()),
            Some("127.0.0.3".parse().unwrap()),
            Some(7001),
            "EADDRNOTAVAIL",
        );
        let b = labels(None, None, None, "EADDRINUSE");
        assert_eq!(capped(a.clone(), &mut seen, 1), a);
        assert_eq!(capped(a.clone(), &mut seen, 1), a);
        let other = capped(b, &mut seen, 1);
        assert_eq!(other[0], ("local_ip", OTHER.to_string()));
        assert_eq!(other[3], ("error", "EADDRINUSE".to_string()));
        // -A: the namespace labels beyond the cap are `other` too, the error stays.
        let mut with_ns = unknown_namespace();
        with_ns.extend(labels(None, None, None, "EADDRNOTAVAIL"));
        let other = capped(with_ns, &mut seen, 1);
        assert!(other.iter().all(|(k, v)| if *k == "error" {
            v == "EADDRNOTAVAIL"
        } else {
            v == OTHER
        }));
        assert_eq!(other.len(), 8);
        let m = FailureMetrics::default();
        let mut reg = Registry::with_prefix("portdoctor");
        m.register(&mut reg);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        assert!(
            out.contains("portdoctor_connect_failure_tracing 0"),
            "{out}"
        );
        assert!(!out.contains("portdoctor_connect_failures_total"), "{out}");
    }
}
