use super::*;
use crate::analysis::{analyze, Thresholds};
use crate::fixture::SnapshotBuilder;

/// A host with a full pool, a busy one and two quiet ones, TIME_WAIT overflow counted.
fn host() -> Snapshot {
    SnapshotBuilder::linux()
        .range(40000, 40099)
        .tcp_ext("TCPTimeWaitOverflow", 3)
        .pool("10.0.0.5", "10.0.0.9", 5432, 90, 5, (1_000, 30_000))
        .restart_ports()
        .pool("10.0.0.5", "10.0.0.12", 443, 40, 0, (0, 0))
        .restart_ports()
        .pool("10.0.0.5", "10.0.0.13", 80, 3, 0, (0, 0))
        .restart_ports()
        .pool("10.0.0.5", "10.0.0.14", 80, 1, 0, (0, 0))
        .build()
}

/// The text with its lines sorted: a family keeps its series in a hash map, so their order
/// changes from run to run.
fn sorted(text: &str) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    lines.join("\n")
}

fn one(snap: &Snapshot, a: &Analysis, max_pools: usize) -> String {
    let c = Collection {
        result: Some((snap, a)),
        duration_seconds: 0.25,
        timestamp_seconds: 1_700_000_000.0,
    };
    render(
        &c,
        &ExporterCounters::default(),
        MetricsOptions { max_pools },
    )
    .replace(env!("CARGO_PKG_VERSION"), "VERSION")
    .replace(std::env::consts::OS, "OS")
}

/// Without -A the series carry exactly the labels they always had (the pool key; state,
/// level, code) and the host gauges none: dashboards and alert rules written for one host keep
/// working.
#[test]
fn single_namespace_output_is_unchanged() {
    let snap = host();
    let a = analyze(&snap, Thresholds::default());
    insta::assert_snapshot!(sorted(&one(&snap, &a, 2)));
}
