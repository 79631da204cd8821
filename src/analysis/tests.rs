//! The model on fixture snapshots: every rule of model.md with hand-computed numbers.

use proptest::prelude::*;

use super::*;
use crate::fixture::SnapshotBuilder;
use crate::snapshot::{Os, Snapshot, Socket, TcpState};

fn codes(a: &Analysis) -> Vec<&'static str> {
    a.verdict.findings.iter().map(|f| f.code.as_str()).collect()
}

fn run(s: &Snapshot) -> Analysis {
    analyze(s, Thresholds::default())
}

#[test]
fn empty_host_is_ok() {
    let a = run(&SnapshotBuilder::linux().build());
    assert_eq!(a.verdict.level, Level::Ok);
    assert!(a.pools.is_empty());
    assert_eq!(a.capacity.as_ref().map(|c| c.usable), Some(28_232));
}

#[test]
fn capacity_subtracts_reserved_and_bound_ports_of_any_address() {
    let s = SnapshotBuilder::linux()
        .range(40000, 40009)
        .reserved(40000, 40001)
        .reserved(50000, 50010) // outside the range: no effect
        .listen("127.0.0.1", 40005)
        .listen("::1", 40006)
        .bound("127.0.0.2", 40007)
        .listen("127.0.0.1", 40000) // already reserved: not counted twice
        .listen("0.0.0.0", 22) // outside the range
        .build();
    let c = capacity(&s).unwrap();
    assert_eq!(c.reserved_in_range, 2);
    assert_eq!(c.bound_in_range, vec![40005, 40006, 40007]);
    assert_eq!(c.usable, 5);
    assert!(codes(&run(&s)).contains(&"listener_in_range"));
}

#[test]
fn unknown_range_means_unknown_capacity_not_a_guess() {
    let s = SnapshotBuilder::linux()
        .settings(|st| st.ephemeral_ports = None)
        .pool("10.0.0.5", "10.0.0.9", 5432, 3, 0, (0, 0))
        .build();
    let a = run(&s);
    assert!(a.capacity.is_none());
    assert_eq!(a.pools[0].capacity, None);
    assert_eq!(a.pools[0].utilization, None);
    // Unknown is not OK (issue 13 item 5).
    assert_eq!(a.verdict.level, Level::Warning);
    assert_eq!(codes(&a), ["capacity_unknown"]);
}

#[test]
fn inbound_connections_use_no_ephemeral_port() {
    let s = SnapshotBuilder::linux()
        .listen("0.0.0.0", 40000) // wildcard listener inside the range
        .listen("10.0.0.5", 40001)
        .established("10.0.0.5", 40000, "10.0.0.7", 51000) // accepted on the wildcard
        .established("10.0.0.5", 40001, "10.0.0.7", 51001) // accepted on the exact address
        .established("10.0.0.6", 40001, "10.0.0.7", 51002) // other address: outbound
        .established("10.0.0.5", 8080, "10.0.0.7", 51003) // outside range: other
        .build();
    let a = run(&s);
    assert_eq!(a.inbound, 2);
    assert_eq!(a.outbound, 1);
    assert_eq!(a.other, 1);
    assert_eq!(a.pools.len(), 1);
    assert_eq!(
        a.pools[0].key.local_ip,
        "10.0.0.6".parse::<IpAddr>().unwrap()
    );
}

#[test]
fn pools_are_per_local_ip_remote_ip_and_port() {
    let s = SnapshotBuilder::linux()
        .pool("10.0.0.5", "10.0.0.9", 5432, 2, 3, (20_000, 40_000))
        .restart_ports()
        .pool("10.0.0.5", "10.0.0.9", 6379, 1, 0, (0, 0))
        .restart_ports()
        .pool("10.0.0.6", "10.0.0.9", 5432, 1, 0, (0, 0))
        .restart_ports()
        .pool("2001:db8::5", "2001:db8::9", 5432, 4, 0, (0, 0))
        .build();
    let a = run(&s);
    assert_eq!(a.pools.len(), 4);
    let p = a
        .pools
        .iter()
        .find(|p| p.key.remote_port == Some(5432) && p.key.local_ip.to_string() == "10.0.0.5")
        .unwrap();
    assert_eq!((p.in_use, p.established, p.time_wait), (5, 2, 3));
    assert_eq!(a.pools.iter().map(|p| p.in_use).sum::<u64>(), a.outbound);
    assert_eq!(a.outbound, 11);
}

#[test]
fn v4_mapped_sockets_join_the_ipv4_pool() {
    let mapped = Socket {
        state: TcpState::Established,
        local_ip: crate::snapshot::normalize_ip("::ffff:10.0.0.5".parse().unwrap()),
        local_port: 40000,
        remote_ip: crate::snapshot::normalize_ip("::ffff:10.0.0.9".parse().unwrap()),
        remote_port: 443,
        time_wait_left_ms: None,
        inode: 1,
        uid: None,
        pid: None,
    };
    let s = SnapshotBuilder::linux()
        .socket(mapped)
        .established("10.0.0.5", 40001, "10.0.0.9", 443)
        .build();
    let a = run(&s);
    assert_eq!(a.pools.len(), 1);
    assert_eq!(a.pools[0].in_use, 2);
}

fn tw_pool(reuse: u8, timestamps: u8, local: &str, remote: &str) -> Pool {
    // 10 TIME_WAIT aged 0.1–0.5 s (younger than the 1000 ms delay), 30 aged 2–50 s.
    let s = SnapshotBuilder::linux()
        .tw_reuse(reuse)
        .timestamps(timestamps)
        .pool(local, remote, 443, 0, 10, (100, 500))
        .pool(local, remote, 443, 0, 30, (2_000, 50_000))
        .build();
    run(&s).pools.remove(0)
}

#[test]
fn blocking_time_wait_follows_tw_reuse_and_timestamps() {
    let p = tw_pool(0, 1, "10.0.0.5", "10.0.0.9");
    assert_eq!(
        (p.time_wait, p.blocking_time_wait, p.tw_reuse_applies),
        (40, 40, false)
    );
    let p = tw_pool(1, 1, "10.0.0.5", "10.0.0.9");
    assert_eq!((p.blocking_time_wait, p.tw_reuse_applies), (10, true));
    // 2 = loopback only: either end loopback.
    assert_eq!(tw_pool(2, 1, "10.0.0.5", "10.0.0.9").blocking_time_wait, 40);
    assert_eq!(
        tw_pool(2, 1, "127.0.0.1", "127.0.0.1").blocking_time_wait,
        10
    );
    assert_eq!(tw_pool(2, 1, "::1", "::1").blocking_time_wait, 10);
    // Reuse needs timestamps.
    assert_eq!(tw_pool(1, 0, "10.0.0.5", "10.0.0.9").blocking_time_wait, 40);
    // Utilization counts only what blocks.
    let p = tw_pool(1, 1, "10.0.0.5", "10.0.0.9");
    assert!((p.utilization.unwrap() - 10.0 / 28_232.0).abs() < 1e-12);
}

#[test]
fn reuse_delay_from_settings_is_used() {
    let s = SnapshotBuilder::linux()
        .tw_reuse(1)
        .settings(|st| st.tw_reuse_delay_ms = Some(10_000))
        .pool("10.0.0.5", "10.0.0.9", 443, 0, 11, (0, 20_000))
        .build();
    // Ages 0, 2, 4, … 20 s: those under 10 s block.
    assert_eq!(run(&s).pools[0].blocking_time_wait, 5);
}

#[test]
fn rate_and_eta_from_time_wait_ages() {
    // 28,000 ports in use in a 28,232 pool; 500 TIME_WAIT entered in the last 10 s and none
    // leave in the next 10 s: grows 50/s, 232 free → ETA 4.6 s, critical.
    let s = SnapshotBuilder::linux()
        .tw_reuse(0)
        .pool("10.0.0.5", "10.0.0.9", 5432, 27_500, 500, (0, 10_000))
        .build();
    let a = run(&s);
    let p = &a.pools[0];
    assert_eq!(p.connect_rate_per_s, Some(50.0));
    assert_eq!(p.release_rate_per_s, Some(0.0));
    let eta = p.eta_seconds.unwrap();
    assert!((eta - 232.0 / 50.0).abs() < 1e-9, "{eta}");
    assert_eq!(p.level, Level::Critical);
    assert_eq!(a.verdict.level, Level::Critical);
}

/// Issue 13 item 1: a churn that began 3 s ago has 3 s of arrivals, not 10.
#[test]
fn rate_divides_by_the_span_covered() {
    // 600 TIME_WAIT aged 0..3 s in a 5,000-port range: 200/s, 4,400 free → full in 22 s.
    let s = SnapshotBuilder::linux()
        .range(40000, 44999)
        .tw_reuse(0)
        .pool("10.0.0.5", "10.0.0.9", 80, 0, 600, (0, 3_000))
        .build();
    let a = run(&s);
    let p = &a.pools[0];
    assert_eq!(p.connect_rate_per_s, Some(200.0));
    assert_eq!(p.rate_window_seconds, Some(3.0));
    let eta = p.eta_seconds.unwrap();
    assert!((eta - 4_400.0 / 200.0).abs() < 1e-9, "{eta}");
    assert_eq!(a.verdict.level, Level::Critical);
    let f = &a.verdict.findings[0];
    assert!(f.message.contains("over the last 3 s"), "{}", f.message);
}

/// A burst whose last connection ended 8 s ago is not filling the pool.
#[test]
fn a_stopped_burst_is_not_forecast() {
    let s = SnapshotBuilder::linux()
        .range(40000, 44999)
        .tw_reuse(0)
        .pool("10.0.0.5", "10.0.0.9", 80, 0, 1_000, (8_000, 9_000))
        .build();
    let a = run(&s);
    let p = &a.pools[0];
    assert!(p.connect_rate_per_s.unwrap() > 90.0, "{p:?}");
    assert_eq!(p.eta_seconds, None);
    assert_eq!(a.verdict.level, Level::Ok);
}

/// One TIME_WAIT (or a few) is no rate to forecast from.
#[test]
fn too_few_arrivals_are_not_forecast() {
    for n in [1, MIN_FORECAST_ARRIVALS as u32 - 1] {
        let s = SnapshotBuilder::linux()
            .range(40000, 44999)
            .tw_reuse(0)
            .pool("10.0.0.5", "10.0.0.9", 80, 0, n, (0, 500))
            .build();
        let p = &run(&s).pools[0];
        assert_eq!(p.eta_seconds, None, "{n} arrivals: {p:?}");
    }
}

#[test]
fn steady_state_pool_has_no_eta() {
    // 60 s of uniform arrivals: as many enter as leave per window.
    let s = SnapshotBuilder::linux()
        .tw_reuse(0)
        .pool("10.0.0.5", "10.0.0.9", 80, 0, 6_000, (0, 59_990))
        .build();
    let p = &run(&s).pools[0];
    let rate = p.connect_rate_per_s.unwrap();
    assert!((rate - 100.0).abs() < 1.0, "{rate}");
    assert_eq!(p.eta_seconds, None);
}

#[test]
fn thresholds_decide_levels_and_codes() {
    let build = |tw: u32| {
        SnapshotBuilder::linux()
            .range(40000, 40099)
            .tw_reuse(0)
            .pool("127.0.0.1", "127.0.0.1", 22000, 0, tw, (30_000, 50_000))
            .build()
    };
    assert_eq!(run(&build(69)).verdict.level, Level::Ok);
    let a = run(&build(75));
    assert_eq!(a.pools[0].level, Level::Warning);
    assert!(codes(&a).contains(&"pool_near_exhaustion"));
    assert!(codes(&a).contains(&"tw_reuse_off"));
    let a = run(&build(95));
    assert_eq!(a.verdict.level, Level::Critical);
    let a = run(&build(100));
    assert_eq!(codes(&a)[0], "pool_exhausted");
    assert_eq!(a.pools[0].free(), Some(0));
    // Custom thresholds.
    let strict = Thresholds {
        warn: 0.5,
        crit: 0.6,
        eta_seconds: 1.0,
        ..Thresholds::default()
    };
    assert_eq!(analyze(&build(65), strict).verdict.level, Level::Critical);
}

#[test]
fn over_commitment_is_flagged() {
    let s = SnapshotBuilder::linux()
        .range(40000, 40009)
        .reserved(40000, 40004)
        .tw_reuse(0)
        .pool("127.0.0.1", "127.0.0.1", 9, 8, 0, (0, 0))
        .build();
    let p = &run(&s).pools[0];
    assert_eq!(p.capacity, Some(5));
    assert!(p.overcommitted);
    assert!(p.utilization.unwrap() > 1.0);
    let a = run(&s);
    let f = &a.verdict.findings[0];
    assert_eq!(f.code, FindingCode::PoolExhausted);
    assert!(
        f.message.contains("8 of 5 in use (8 ESTABLISHED)"),
        "{}",
        f.message
    );
    assert!(
        f.message
            .contains("before the range or the reserved ports changed"),
        "{}",
        f.message
    );
}

/// Issue 13 item 2: the fix follows what fills the pool.
#[test]
fn the_fix_follows_the_state_that_fills_the_pool() {
    let build = |state: TcpState| {
        let mut s = SnapshotBuilder::linux()
            .range(40000, 40099)
            .tw_reuse(0)
            .pool("127.0.0.1", "127.0.0.2", 80, 100, 0, (0, 0))
            .build();
        for sock in std::sync::Arc::make_mut(&mut s.sockets) {
            sock.state = state;
        }
        s
    };
    let pool_fix = |a: &Analysis| {
        a.verdict
            .findings
            .iter()
            .find(|f| f.code == FindingCode::PoolExhausted)
            .map(|f| f.fix.clone())
            .unwrap()
    };
    let a = run(&build(TcpState::Established));
    assert!(
        pool_fix(&a).contains("holds 100 open connections"),
        "{}",
        pool_fix(&a)
    );
    assert!(!codes(&a).contains(&"close_wait_leak"));

    let a = run(&build(TcpState::CloseWait));
    assert_eq!(a.pools[0].state("CLOSE_WAIT"), 100);
    assert!(codes(&a).contains(&"close_wait_leak"), "{:?}", codes(&a));
    let fix = pool_fix(&a);
    assert!(fix.contains("100 sockets are in CLOSE_WAIT"), "{fix}");
    assert!(!fix.contains("ip_local_port_range"), "{fix}");

    let a = run(&build(TcpState::SynSent));
    assert!(codes(&a).contains(&"syn_sent_stuck"), "{:?}", codes(&a));
    assert!(pool_fix(&a).contains("SYN_SENT"), "{}", pool_fix(&a));
}

#[test]
fn tw_bucket_overflow_and_near_limit() {
    let s = SnapshotBuilder::linux()
        .max_tw_buckets(50)
        .tcp_ext("TCPTimeWaitOverflow", 150)
        .pool("127.0.0.1", "127.0.0.1", 1, 0, 50, (0, 1000))
        .build();
    let a = run(&s);
    let f = a
        .verdict
        .findings
        .iter()
        .find(|f| f.code == FindingCode::TwBucketOverflow)
        .unwrap();
    assert_eq!(f.evidence["TCPTimeWaitOverflow"], 150);
    assert!(f.fix.contains("net.ipv4.tcp_max_tw_buckets=100"));
    let s = SnapshotBuilder::linux()
        .max_tw_buckets(50)
        .pool("127.0.0.1", "127.0.0.1", 1, 0, 46, (0, 1000))
        .build();
    assert!(codes(&run(&s)).contains(&"tw_buckets_near_limit"));
}

/// Ports as bind(0) hands them out: unique per address, opposite parity to the range start.
fn bind_style(parity_of_low: bool) -> Snapshot {
    let mut b = SnapshotBuilder::linux().range(32768, 60999).tw_reuse(0);
    let mut port: u16 = if parity_of_low { 32768 } else { 32769 };
    for dst in 0..4u16 {
        for _ in 0..20 {
            b = b.time_wait("10.0.0.5", port, "10.0.1.1", 8000 + dst, 30_000);
            port += 2;
        }
    }
    b.build()
}

#[test]
fn bind_before_connect_pattern_is_detected() {
    let a = run(&bind_style(false));
    assert_eq!(a.bind_before_connect.len(), 1);
    assert_eq!(a.bind_before_connect[0].destinations, 4);
    assert!(codes(&a).contains(&"bind_before_connect_suspected"));
    let local = a
        .pools
        .iter()
        .find(|p| p.scope == Scope::LocalAddress)
        .unwrap();
    assert_eq!(local.in_use, 80);
    assert_eq!(local.blocking_time_wait, 80);
    // connect()'s parity: no finding.
    assert!(run(&bind_style(true)).bind_before_connect.is_empty());
    // Ports shared across destinations: plain connect().
    let shared = SnapshotBuilder::linux()
        .pool("10.0.0.5", "10.0.1.1", 1, 40, 0, (0, 0))
        .restart_ports()
        .pool("10.0.0.5", "10.0.1.2", 1, 40, 0, (0, 0))
        .build();
    assert!(run(&shared).bind_before_connect.is_empty());
}

#[test]
fn churn_finding_names_the_owner() {
    let s = SnapshotBuilder::linux()
        .pool("10.0.0.5", "10.0.0.9", 5432, 10, 3_000, (0, 59_000))
        .owned_by(1234, "api-server")
        .build();
    let a = run(&s);
    let f = a
        .verdict
        .findings
        .iter()
        .find(|f| f.code == FindingCode::HighChurnNoPooling)
        .unwrap();
    assert!(f.fix.contains("api-server (1234)"), "{}", f.fix);
    assert_eq!(a.pools[0].processes[0].sockets, 10);
    assert_eq!(a.owners_unknown, Some(0));
}

#[test]
fn windows_pools_are_host_wide() {
    let mut s = SnapshotBuilder::linux()
        .pool("10.0.0.5", "10.0.0.9", 443, 3, 0, (0, 0))
        .pool("10.0.0.6", "10.0.0.10", 443, 2, 0, (0, 0))
        .build();
    s.os = Os::Windows;
    let a = run(&s);
    assert_eq!(a.pools.len(), 1);
    assert_eq!(a.pools[0].scope, Scope::Host);
    assert_eq!(a.pools[0].in_use, 5);
}

fn arb_socket() -> impl Strategy<Value = Socket> {
    let ips = prop_oneof![
        Just("127.0.0.1"),
        Just("127.0.0.2"),
        Just("10.0.0.5"),
        Just("::1"),
        Just("0.0.0.0")
    ];
    (
        1u8..=12,
        ips.clone(),
        prop_oneof![0u16..64, 40000u16..40100, 60000u16..60010],
        ips,
        prop_oneof![Just(0u16), 1u16..5],
        proptest::option::of(0u32..70_000),
    )
        .prop_map(|(st, l, lp, r, rp, left)| {
            let state = TcpState::from_kernel(st).unwrap_or(TcpState::Established);
            Socket {
                state,
                local_ip: l.parse().unwrap(),
                local_port: lp,
                remote_ip: r.parse().unwrap(),
                remote_port: rp,
                time_wait_left_ms: if state == TcpState::TimeWait {
                    left
                } else {
                    None
                },
                inode: 0,
                uid: None,
                pid: None,
            }
        })
}

proptest! {
    #[test]
    fn model_invariants(
        sockets in proptest::collection::vec(arb_socket(), 0..300),
        low in 39_990u16..40_050,
        len in 0u16..80,
        reserved in proptest::option::of((40_000u16..40_060, 0u16..30)),
        reuse in 0u8..=2,
    ) {
        let mut b = SnapshotBuilder::linux().range(low, low + len).tw_reuse(reuse);
        if let Some((r, n)) = reserved {
            b = b.reserved(r, r + n);
        }
        for s in sockets {
            b = b.socket(s);
        }
        let snap = b.build();
        let a = run(&snap);
        let cap = a.capacity.as_ref().unwrap();
        prop_assert!(cap.usable <= cap.range.len());
        prop_assert_eq!(
            u64::from(cap.usable) + u64::from(cap.reserved_in_range) + cap.bound_in_range.len() as u64,
            u64::from(cap.range.len())
        );
        let dest_sum: u64 = a.pools.iter().filter(|p| p.scope == Scope::Destination).map(|p| p.in_use).sum();
        prop_assert_eq!(dest_sum, a.outbound);
        prop_assert_eq!(a.inbound + a.outbound + a.other
            + snap.sockets.iter().filter(|s| s.state.holds_bind_port()).count() as u64,
            snap.sockets.len() as u64);
        for p in &a.pools {
            prop_assert!(p.blocking_time_wait <= p.time_wait);
            prop_assert!(p.time_wait <= p.in_use);
            let u = p.utilization.unwrap();
            prop_assert!(u >= 0.0);
            prop_assert!(u <= 1.0 || p.overcommitted, "utilization {} without the flag", u);
            if let Some(e) = p.eta_seconds { prop_assert!(e >= 0.0); }
        }
        // Sorted by utilization, highest first.
        for w in a.pools.windows(2) {
            prop_assert!(w[0].utilization >= w[1].utilization);
        }
        // Verdict is the worst finding.
        let worst = a.verdict.findings.iter().map(|f| f.severity).max();
        match a.verdict.level {
            Level::Ok => prop_assert!(worst.is_none_or(|s| s == Severity::Info)),
            Level::Warning => prop_assert_eq!(worst, Some(Severity::Warning)),
            Level::Critical => prop_assert_eq!(worst, Some(Severity::Critical)),
        }
    }
}

#[test]
fn bind_pattern_that_spilled_into_connect_parity_is_still_detected() {
    // bind() used every port of a 100-port range (both parities) across 4 destinations.
    let mut b = SnapshotBuilder::linux().range(40000, 40099).tw_reuse(1);
    for (i, port) in (40000u16..40100).enumerate() {
        b = b.time_wait(
            "127.0.0.1",
            port,
            "127.0.0.1",
            22000 + (i % 4) as u16,
            30_000,
        );
    }
    let a = run(&b.build());
    assert_eq!(a.bind_before_connect.len(), 1);
    let local = a
        .pools
        .iter()
        .find(|p| p.scope == Scope::LocalAddress)
        .unwrap();
    assert_eq!(local.free(), Some(0));
    assert!(codes(&a).contains(&"pool_exhausted"));
    // tw_reuse cannot free bind()'s ports: not offered, and destination pools block fully.
    assert!(!codes(&a).contains(&"tw_reuse_off"));
    assert!(a
        .pools
        .iter()
        .all(|p| !p.tw_reuse_applies && p.blocking_time_wait == p.time_wait));
}
