//! Failed connect()/bind() calls counted by the tracer (`check --observe`): per-pool counts and
//! the `connect_failures` / `bind_failures` findings.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::json;

use super::findings::{Finding, FindingCode};
use super::{Pool, PoolKey, Scope};
use crate::snapshot::{ConnectFailures, FailureCount, FailureError, Snapshot};
use crate::units::group;

/// Whether a counted connect() failure belongs to `pool`.
fn in_pool(c: &FailureCount, pool: &Pool) -> bool {
    failure_in_pool(c.error, c.local_ip, c.remote_ip, c.remote_port, pool)
}

/// Whether a failure with these addresses belongs to `pool` (EADDRNOTAVAIL only: a bind()
/// failure names no pool). Shared with `top`'s FAIL/s column.
pub fn failure_in_pool(
    error: FailureError,
    local_ip: Option<IpAddr>,
    remote_ip: Option<IpAddr>,
    remote_port: Option<u16>,
    pool: &Pool,
) -> bool {
    if error != FailureError::AddrNotAvail {
        return false;
    }
    let local = local_ip.is_none_or(|ip| ip == pool.key.local_ip);
    match pool.scope {
        Scope::Destination => {
            local && remote_ip == pool.key.remote_ip && remote_port == pool.key.remote_port
        }
        Scope::LocalAddress => local,
        Scope::Host => true,
        // The tracer counts the host's own TCP connect() failures (EADDRNOTAVAIL): not NAT's,
        // and UDP fails with EAGAIN.
        Scope::Snat | Scope::Udp => false,
    }
}

/// EADDRNOTAVAIL failures counted in `pool`'s window; `None` when nothing was observed.
pub fn pool_failures(snapshot: &Snapshot, pool: &Pool) -> Option<u64> {
    let f = snapshot.connect_failures.as_ref()?;
    Some(
        f.events
            .iter()
            .filter(|c| in_pool(c, pool))
            .map(|c| c.count)
            .sum(),
    )
}

/// The pool a failure names, as the report writes pools.
pub fn failure_pool(c: &FailureCount) -> Option<String> {
    let remote_ip = c.remote_ip?;
    let key = PoolKey {
        local_ip: c.local_ip.unwrap_or(if remote_ip.is_ipv4() {
            IpAddr::from([0, 0, 0, 0])
        } else {
            IpAddr::from([0u16; 8])
        }),
        remote_ip: Some(remote_ip),
        remote_port: c.remote_port,
    };
    Some(key.to_string())
}

/// "client (pid 42)", "client (pid 42, exited)", "pid 42", "unknown process".
pub fn process_label(c: &FailureCount) -> String {
    let exited = if c.exited { ", exited" } else { "" };
    match (&c.process, c.pid) {
        (Some(name), Some(pid)) => format!("{} (pid {pid}{exited})", crate::units::printable(name)),
        (None, Some(pid)) => format!("pid {pid}{}", if c.exited { " (exited)" } else { "" }),
        _ => "unknown process".to_string(),
    }
}

/// `connect_failures` (one per pool, critical) and `bind_failures` (one, warning).
pub(super) fn findings(snapshot: &Snapshot, out: &mut Vec<Finding>) {
    let Some(f) = &snapshot.connect_failures else {
        return;
    };
    connect_findings(snapshot, f, out);
    bind_findings(snapshot, f, out);
}

fn window(f: &ConnectFailures) -> String {
    crate::units::human_duration(f.window_seconds)
}

fn connect_findings(snapshot: &Snapshot, f: &ConnectFailures, out: &mut Vec<Finding>) {
    let mut by_pool: BTreeMap<String, Vec<&FailureCount>> = BTreeMap::new();
    for c in f
        .events
        .iter()
        .filter(|c| c.error == FailureError::AddrNotAvail)
    {
        if let Some(pool) = failure_pool(c) {
            by_pool.entry(pool).or_default().push(c);
        }
    }
    for (pool, counts) in by_pool {
        let total: u64 = counts.iter().map(|c| c.count).sum();
        let mut per_process: BTreeMap<String, u64> = BTreeMap::new();
        for c in &counts {
            *per_process.entry(process_label(c)).or_default() += c.count;
        }
        let mut who: Vec<(String, u64)> = per_process.into_iter().collect();
        who.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let names = who
            .iter()
            .map(|(p, n)| format!("{p}: {}", group(*n)))
            .collect::<Vec<_>>()
            .join(", ");
        let processes: Vec<_> = who
            .iter()
            .map(|(p, n)| json!({"process": p, "count": n}))
            .collect();
        let range_fix = super::findings::linux_range_fix(snapshot);
        out.push(Finding {
            code: FindingCode::ConnectFailures,
            severity: super::Severity::Critical,
            pool: Some(pool.clone()),
            message: format!(
                "connect() failed {} times with EADDRNOTAVAIL (no free port) in {} toward {pool}: {names}",
                group(total),
                window(f)
            ),
            evidence: super::findings::evidence_map(json!({
                "failures": total, "window_seconds": f.window_seconds,
                "processes": processes, "source": f.source,
            })),
            fix: format!(
                "free ports in this pool: reuse connections (keep-alive / a connection pool), spread over more destination addresses/ports, or host-wide: {range_fix}"
            ),
        });
    }
}

fn bind_findings(_snapshot: &Snapshot, f: &ConnectFailures, out: &mut Vec<Finding>) {
    let counts: Vec<&FailureCount> = f
        .events
        .iter()
        .filter(|c| c.error == FailureError::AddrInUse)
        .collect();
    let total: u64 = counts.iter().map(|c| c.count).sum();
    if total == 0 {
        return;
    }
    let mut per_process: BTreeMap<String, u64> = BTreeMap::new();
    for c in &counts {
        *per_process.entry(process_label(c)).or_default() += c.count;
    }
    let names = per_process
        .iter()
        .map(|(p, n)| format!("{p}: {}", group(*n)))
        .collect::<Vec<_>>()
        .join(", ");
    out.push(Finding::host(
        FindingCode::BindFailures,
        format!(
            "bind() failed {} times with EADDRINUSE in {}: {names}",
            group(total),
            window(f)
        ),
        json!({"failures": total, "window_seconds": f.window_seconds, "source": f.source}),
        "if these are clients binding a local address before connect(): set IP_BIND_ADDRESS_NO_PORT on the socket before bind() (the port is then chosen at connect() per destination), or do not bind; a server's bind() on a busy port is a different problem (another process or SO_REUSEADDR)".to_string(),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{analyze, Level, Thresholds};
    use crate::snapshot::Os;

    fn failures(events: Vec<FailureCount>) -> ConnectFailures {
        ConnectFailures {
            source: "test".into(),
            window_seconds: 10.0,
            events,
            ..ConnectFailures::default()
        }
    }

    fn count(error: FailureError, n: u64, exited: bool) -> FailureCount {
        let addr = error == FailureError::AddrNotAvail;
        FailureCount {
            pid: Some(42),
            process: Some("client".into()),
            exited,
            netns: None,
            netns_name: None,
            local_ip: addr.then(|| "10.0.0.5".parse().unwrap()),
            remote_ip: addr.then(|| "10.0.0.9".parse().unwrap()),
            remote_port: addr.then_some(5432),
            error,
            count: n,
        }
    }

    #[test]
    fn failures_in_the_window_are_critical_even_without_a_full_pool() {
        let mut snap = Snapshot::empty(Os::Linux);
        let th = Thresholds::default();
        assert!(analyze(&snap, th)
            .verdict
            .findings
            .iter()
            .all(|f| f.code != FindingCode::ConnectFailures));
        snap.connect_failures = Some(failures(vec![
            count(FailureError::AddrNotAvail, 25, true),
            count(FailureError::AddrInUse, 3, false),
        ]));
        let analysis = analyze(&snap, th);
        assert_eq!(analysis.verdict.level, Level::Critical);
        let codes: Vec<_> = analysis
            .verdict
            .findings
            .iter()
            .map(|f| (f.code, f.severity))
            .collect();
        assert!(codes.contains(&(
            FindingCode::ConnectFailures,
            super::super::Severity::Critical
        )));
        assert!(codes.contains(&(FindingCode::BindFailures, super::super::Severity::Warning)));
        let found = analysis
            .verdict
            .findings
            .iter()
            .find(|f| f.code == FindingCode::ConnectFailures)
            .unwrap();
        assert_eq!(found.pool.as_deref(), Some("10.0.0.5 → 10.0.0.9:5432"));
        assert!(
            found.message.contains("client (pid 42, exited): 25"),
            "{}",
            found.message
        );
    }

    #[test]
    fn an_observed_window_without_failures_finds_nothing_and_counts_zero_not_null() {
        // A host whose range is known (an unknown one is a warning of its own).
        let mut s = crate::fixture::SnapshotBuilder::linux().build();
        s.connect_failures = Some(failures(Vec::new()));
        let a = analyze(&s, Thresholds::default());
        assert_eq!(a.verdict.level, Level::Ok);
        assert_eq!(
            s.connect_failures.as_ref().map(ConnectFailures::total),
            Some(0)
        );
    }
}
