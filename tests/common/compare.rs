//! Cross-checks of a report against independent readings of the same namespace: `ss`, the
//! population's ground truth, and the `--source procfs` collector.

use std::collections::BTreeMap;

use serde_json::Value;

use super::netns::Netns;
use super::population::truth_pools;
use super::report::{at, ip_of, pools, str_at, u64_at};
use super::ss::{Counts, PoolKey, Ss};

/// The report's destination pools by key; panics on a duplicate key.
pub fn report_pools(report: &Value) -> BTreeMap<PoolKey, Counts> {
    let mut m = BTreeMap::new();
    for p in pools(report).iter().filter(|p| p["scope"] == "destination") {
        let key = (
            ip_of(p, "local_ip"),
            ip_of(p, "remote_ip"),
            u16::try_from(u64_at(p, "remote_port")).expect("remote_port fits u16"),
        );
        let counts = Counts {
            in_use: u64_at(p, "in_use"),
            established: u64_at(p, "established"),
            time_wait: u64_at(p, "time_wait"),
        };
        assert!(
            m.insert(key, counts).is_none(),
            "pool {key:?} appears twice in {report}"
        );
    }
    m
}

/// Pools reduced to what two runs over the same population must agree on.
pub fn pool_summary(report: &Value) -> Vec<String> {
    let mut v: Vec<String> = pools(report)
        .iter()
        .map(|p| {
            format!(
                "{} {} {} {} in_use={} est={} tw={} blocking={} reuse={} cap={}",
                p["scope"],
                p["local_ip"],
                p["remote_ip"],
                p["remote_port"],
                p["in_use"],
                p["established"],
                p["time_wait"],
                p["blocking_time_wait"],
                p["tw_reuse_applies"],
                p["capacity"]
            )
        })
        .collect();
    v.sort();
    v
}

/// Checks a report against an independent `ss` reading of the same namespace and, when given,
/// against the population's ground truth: the range, every destination pool (key, in use,
/// established, TIME_WAIT), the state counts, the outbound total and each pool's capacity.
/// Returns the `ss` reading for further checks.
pub fn assert_agrees(ns: &Netns, report: &Value, truth: Option<&Value>) -> Ss {
    let range = ns.port_range();
    assert_eq!(
        (
            u64_at(report, "settings.ephemeral_ports.low"),
            u64_at(report, "settings.ephemeral_ports.high")
        ),
        (u64::from(range.0), u64::from(range.1)),
        "ephemeral range differs from the namespace's sysctl"
    );
    let ss = ns.ss();
    let got = report_pools(report);
    let from_ss = ss.pools(range);
    assert_eq!(
        got,
        from_ss,
        "portdoctor's pools differ from ss's\nss -Htan:\n{}",
        ns.ss_raw()
    );
    if let Some(truth) = truth {
        assert_eq!(
            got,
            truth_pools(truth),
            "portdoctor's pools differ from the ground truth {truth}"
        );
    }
    // ss 6.1 cannot list bound-only sockets (BOUND); tests that make them check them apart.
    let states: BTreeMap<String, u64> = at(report, "states")
        .as_object()
        .expect("states is an object")
        .iter()
        .filter(|(k, _)| k.as_str() != "BOUND")
        .map(|(k, v)| (k.clone(), v.as_u64().expect("state count")))
        .collect();
    assert_eq!(states, ss.states(), "state counts differ from ss");
    let sum: u64 = got.values().map(|c| c.in_use).sum();
    assert_eq!(
        u64_at(report, "sockets.outbound"),
        sum,
        "sockets.outbound != sum of pools' in_use"
    );
    assert_eq!(u64_at(report, "sockets.time_wait"), ss.count("TIME_WAIT"));
    assert_eq!(
        u64_at(report, "sockets.inbound"),
        ss.inbound(),
        "inbound differs from ss"
    );
    let usable = u64_at(report, "capacity.usable_per_pool");
    for p in pools(report) {
        assert_eq!(
            u64_at(p, "capacity"),
            usable,
            "pool capacity != usable_per_pool: {p}"
        );
    }
    // Contract: pools sorted by utilization, highest first; verdict.pools counts their levels.
    let utilization: Vec<f64> = pools(report)
        .iter()
        .map(|p| p["utilization"].as_f64().unwrap_or(-1.0))
        .collect();
    assert!(
        utilization.windows(2).all(|w| w[0] >= w[1]),
        "pools not sorted by utilization: {utilization:?}"
    );
    for level in ["critical", "warning", "ok"] {
        let n = pools(report).iter().filter(|p| p["level"] == level).count() as u64;
        assert_eq!(
            u64_at(report, &format!("verdict.pools.{level}")),
            n,
            "{level} pools"
        );
    }
    ss
}

/// The same namespace read through /proc/net/tcp{,6} (`--source procfs`) gives the same pools
/// (including blocking TIME_WAIT and capacity) and states as REPORT (netlink). With
/// `compare_rates`, also the same connect arrivals: only while the population's TIME_WAIT is
/// well inside the 10 s rate window, so that the two runs cannot straddle its edge.
pub fn assert_procfs_agrees(ns: &Netns, report: &Value, compare_rates: bool) {
    let (procfs, _) = ns.check_json(&["--source", "procfs"]);
    assert_eq!(str_at(&procfs, "source"), "procfs");
    assert_eq!(
        pool_summary(&procfs),
        pool_summary(report),
        "procfs vs netlink pools"
    );
    // The TIME_WAIT timers (ms in netlink, clock ticks in procfs) give the same arrivals. The
    // rate divides them by the span the pool's TIME_WAIT covers, which grows between the two
    // runs while a population is younger than the window: compare rate × window, within the
    // rounding of both (0.1) and one arrival.
    let rates = |r: &Value| -> Vec<(String, f64, f64)> {
        let mut v: Vec<(String, f64, f64)> = pools(r)
            .iter()
            .map(|p| {
                (
                    format!(
                        "{} {} {} {}",
                        p["scope"], p["local_ip"], p["remote_ip"], p["remote_port"]
                    ),
                    p["connect_rate_per_s"].as_f64().unwrap_or(-1.0),
                    p["rate_window_seconds"].as_f64().unwrap_or(0.0),
                )
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    if compare_rates {
        let (a, b) = (rates(&procfs), rates(report));
        assert_eq!(a.len(), b.len(), "procfs vs netlink pools");
        for ((key, ra, wa), (_, rb, wb)) in a.iter().zip(&b) {
            let tolerance = 0.05 * (wa + wb) + 0.05 * (ra + rb) + 1.0;
            assert!(
                (ra * wa - rb * wb).abs() <= tolerance,
                "procfs vs netlink connect rates of {key}: {ra}/s over {wa} s vs {rb}/s over {wb} s"
            );
        }
    }
    assert_eq!(
        at(&procfs, "states"),
        at(report, "states"),
        "procfs vs netlink states"
    );
    assert_eq!(
        at(&procfs, "sockets"),
        at(report, "sockets"),
        "procfs vs netlink sockets"
    );
}
