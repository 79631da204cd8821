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
        result: Some(Scraped::One(snap, a)),
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

fn identity(
    ino: u64,
    name: Option<&str>,
    pod: Option<(&str, &str)>,
    own: bool,
) -> NamespaceIdentity {
    use crate::snapshot::{Container, NetnsId, Pod};
    NamespaceIdentity {
        id: NetnsId { dev: 4, ino },
        name: name.map(str::to_string),
        found_in: Vec::new(),
        pids: vec![100 + u32::try_from(ino % 1000).unwrap_or(0)],
        container: pod.map(|_| Container {
            runtime: "containerd".into(),
            id: "3f2a9c1b8d7e".into(),
        }),
        pod: pod.map(|(ns, name)| Pod {
            namespace: ns.into(),
            name: name.into(),
            uid: format!("uid-{ino}"),
        }),
        own,
    }
}

/// Pools of `in_use` ports each in a range of 100 ports (utilization = in_use / 100).
fn pools_of(in_use: &[u32]) -> Snapshot {
    let mut b = SnapshotBuilder::linux().range(40000, 40099);
    for (i, n) in in_use.iter().enumerate() {
        let remote = format!("10.0.1.{i}");
        b = b
            .pool("10.0.0.5", &remote, 80, *n, 0, (0, 0))
            .restart_ports();
    }
    b.build()
}

/// The value of the sample whose line starts with `series` followed by a space.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

/// Under -A every pool and host series names its namespace; `--max-pools` keeps the most
/// utilized pools of all namespaces together and sums the rest per namespace.
#[test]
fn every_namespace_labelled_and_capped_across_namespaces() {
    let snaps = [
        pools_of(&[95, 40, 3, 1]),
        pools_of(&[50, 20, 10]),
        pools_of(&[2]),
    ];
    let ids = [
        identity(4_026_531_840, None, None, true),
        identity(
            4_026_532_001,
            Some("blue"),
            Some(("shop", "cart-5d8")),
            false,
        ),
        identity(4_026_532_002, None, Some(("", "")), false),
    ];
    let analyses: Vec<Analysis> = snaps
        .iter()
        .map(|s| analyze(s, Thresholds::default()))
        .collect();
    let all: Vec<Inspected<'_>> = (0..3)
        .map(|i| Inspected {
            identity: &ids[i],
            snapshot: &snaps[i],
            analysis: &analyses[i],
        })
        .collect();
    let c = Collection {
        result: Some(Scraped::All {
            namespaces: &all,
            skipped: 2,
        }),
        duration_seconds: 0.5,
        timestamp_seconds: 1_700_000_000.0,
    };
    let text = render(
        &c,
        &ExporterCounters::default(),
        MetricsOptions { max_pools: 3 },
    );

    let host = r#"netns="4026531840",pod_namespace="",pod="",container="""#;
    let blue =
        r#"netns="blue",pod_namespace="shop",pod="cart-5d8",container="containerd://3f2a9c1b8d7e""#;
    let uid_only = r#"netns="4026532002",pod_namespace="",pod="uid-4026532002",container="containerd://3f2a9c1b8d7e""#;
    assert_eq!(value(&text, "portdoctor_namespaces"), Some(3.0), "{text}");
    assert_eq!(
        value(&text, "portdoctor_namespaces_skipped"),
        Some(2.0),
        "{text}"
    );

    // The three most utilized pools of all namespaces: host 95 and 40, blue 50.
    let pool = |ns: &str, i: u32| {
        format!(
            "portdoctor_pool_in_use{{{ns},local_ip=\"10.0.0.5\",remote_ip=\"10.0.1.{i}\",remote_port=\"80\"}}"
        )
    };
    assert_eq!(value(&text, &pool(host, 0)), Some(95.0), "{text}");
    assert_eq!(value(&text, &pool(host, 1)), Some(40.0), "{text}");
    assert_eq!(value(&text, &pool(blue, 0)), Some(50.0), "{text}");
    let own_series = text
        .lines()
        .filter(|l| l.starts_with("portdoctor_pool_in_use{") && !l.contains("\"other\""))
        .count();
    assert_eq!(own_series, 3, "{text}");
    // The rest, summed per namespace; utilization the highest of them.
    let other = |ns: &str, metric: &str| {
        value(
            &text,
            &format!(
                "portdoctor_{metric}{{{ns},local_ip=\"other\",remote_ip=\"other\",remote_port=\"other\"}}"
            ),
        )
    };
    assert_eq!(other(host, "pool_in_use"), Some(4.0), "{text}");
    assert_eq!(other(blue, "pool_in_use"), Some(30.0), "{text}");
    assert_eq!(other(uid_only, "pool_in_use"), Some(2.0), "{text}");
    assert_eq!(other(blue, "pool_utilization_ratio"), Some(0.2), "{text}");
    for (ns, pools, dropped) in [(host, 4.0, 2.0), (blue, 3.0, 2.0), (uid_only, 1.0, 1.0)] {
        assert_eq!(
            value(&text, &format!("portdoctor_pools{{{ns}}}")),
            Some(pools)
        );
        assert_eq!(
            value(&text, &format!("portdoctor_pools_dropped{{{ns}}}")),
            Some(dropped)
        );
    }
    // Host-level gauges per namespace.
    assert_eq!(
        value(&text, &format!("portdoctor_verdict_level{{{host}}}")),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value(&text, &format!("portdoctor_verdict_level{{{uid_only}}}")),
        Some(0.0)
    );
    assert_eq!(
        value(
            &text,
            &format!("portdoctor_sockets{{{blue},state=\"ESTABLISHED\"}}")
        ),
        Some(80.0)
    );
    assert_eq!(
        value(
            &text,
            &format!("portdoctor_ephemeral_port_range_low{{{blue}}}")
        ),
        Some(40000.0)
    );
    // Every series but the exporter's own names its namespace.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let exporter_own = [
            "portdoctor_build_info",
            "portdoctor_collection",
            "portdoctor_namespaces",
            "portdoctor_connect_failure",
        ]
        .iter()
        .any(|p| line.starts_with(p));
        assert!(exporter_own || line.contains("netns=\""), "{line}");
    }
}

/// The namespace of tests/combined.rs: a TCP pool, a UDP pool and two SNAT pools.
fn tcp_udp_snat() -> Snapshot {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/snapshot/linux-tcp-udp-snat.json");
    crate::snapshot::file::load(&path).expect("fixture")
}

/// `portdoctor_pools` counts the pools of the pool families (TCP and UDP), so that it minus
/// `portdoctor_pools_dropped` is the pools with series of their own; SNAT pools have their own
/// families, capped by --max-pools across all namespaces as the socket pools are.
#[test]
fn pool_counts_and_caps_with_udp_and_snat() {
    let snap = tcp_udp_snat();
    let a = analyze(&snap, Thresholds::default());
    let text = one(&snap, &a, 1);
    assert_eq!(value(&text, "portdoctor_pools"), Some(2.0), "{text}");
    assert_eq!(
        value(&text, "portdoctor_pools_dropped"),
        Some(1.0),
        "{text}"
    );
    let series = |text: &str, prefix: &str| text.lines().filter(|l| l.starts_with(prefix)).count();
    assert_eq!(series(&text, "portdoctor_snat_pool_in_use{"), 1, "{text}");

    let ids = [
        identity(4_026_532_011, Some("node-a"), None, false),
        identity(4_026_532_012, Some("node-b"), None, false),
    ];
    let all: Vec<Inspected<'_>> = ids
        .iter()
        .map(|id| Inspected {
            identity: id,
            snapshot: &snap,
            analysis: &a,
        })
        .collect();
    let c = Collection {
        result: Some(Scraped::All {
            namespaces: &all,
            skipped: 0,
        }),
        duration_seconds: 0.5,
        timestamp_seconds: 1_700_000_000.0,
    };
    let text = render(
        &c,
        &ExporterCounters::default(),
        MetricsOptions { max_pools: 3 },
    );
    assert_eq!(
        series(&text, "portdoctor_snat_pool_in_use{"),
        3,
        "4 SNAT pools in 2 namespaces, 3 series: {text}"
    );
}
