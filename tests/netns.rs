//! Linux integration tests: the real binary against real kernel sockets in network namespaces
//! made for each test. Needs root (`ip netns add`); without root these tests fail, unless
//! `PORTDOCTOR_SKIP_NETNS=1` asks to skip them.
//!
//! Every expectation comes from outside portdoctor: the population's ground truth (sockpop or the
//! Python helper), an `ss -Htan` reading of the same namespace, or the sysctls the test set.
#![cfg(target_os = "linux")]

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    array_at, assert_agrees, assert_procfs_agrees, at, finding_codes, findings, pool_summary,
    pools, portdoctor, report_pools, run_program, str_at, u64_at, Netns, PORTDOCTOR,
};
use serde_json::Value;

macro_rules! require_root {
    ($name:literal) => {
        if !common::require_root($name) {
            return;
        }
    };
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("a literal IP address")
}

/// The one pool of the report with this destination key.
fn pool<'a>(report: &'a Value, local: &str, remote: &str, port: u64) -> &'a Value {
    let found: Vec<&Value> = pools(report)
        .iter()
        .filter(|p| {
            p["scope"] == "destination"
                && p["local_ip"] == local
                && p["remote_ip"] == remote
                && p["remote_port"] == port
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "want exactly one pool {local} → {remote}:{port} in {:#?}",
        pool_summary(report)
    );
    found[0]
}

/// Exhaustion: a 100-port range, 150 TIME_WAIT asked per destination (IPv4 and IPv6).
#[test]
fn tiny_range_filled_is_critical() {
    require_root!("tiny_range_filled_is_critical");
    let ns = Netns::new("tiny");
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 40099");
    let mut pop = ns.sockpop(&[
        "--ports",
        "22000",
        "--dst",
        "127.0.0.1",
        "--dst",
        "::1",
        "--time-wait",
        "300",
    ]);
    let t = &pop.truth;
    assert_eq!(t["exhausted"], true, "sockpop ran out of ports: {t}");
    for i in 0..2 {
        assert_eq!(u64_at(t, &format!("pools.{i}.time_wait")), 100, "{t}");
        assert!(u64_at(t, &format!("pools.{i}.eaddrnotavail")) >= 1, "{t}");
    }

    let (report, code) = ns.check_json(&[]);
    assert_eq!(code, 2, "critical → exit 2");
    assert_eq!(str_at(&report, "verdict.level"), "critical");
    assert_eq!(u64_at(&report, "capacity.range_ports"), 100);
    assert_eq!(u64_at(&report, "capacity.usable_per_pool"), 100);
    for local in ["127.0.0.1", "::1"] {
        let p = pool(&report, local, local, 22000);
        assert_eq!(u64_at(p, "in_use"), 100, "{p}");
        assert_eq!(u64_at(p, "capacity"), 100, "{p}");
        assert_eq!(u64_at(p, "time_wait"), 100, "{p}");
        assert_eq!(
            u64_at(p, "blocking_time_wait"),
            100,
            "reuse 0: all block: {p}"
        );
        assert_eq!(str_at(p, "level"), "critical", "{p}");
    }
    let exhausted = findings(&report, "pool_exhausted");
    assert_eq!(exhausted.len(), 2, "findings: {:?}", finding_codes(&report));
    for f in exhausted {
        assert_eq!(str_at(f, "severity"), "critical", "{f}");
        assert_eq!(u64_at(f, "evidence.in_use"), 100, "{f}");
        assert_eq!(u64_at(f, "evidence.capacity"), 100, "{f}");
    }
    assert_agrees(&ns, &report, Some(t));
    assert_procfs_agrees(&ns, &report, true);

    let human = portdoctor(&["check", "--netns", &ns.name, "--color", "never"]);
    assert_eq!(human.code, 2, "stderr: {}", human.stderr);
    assert!(human.stdout.contains("CRITICAL"), "{}", human.stdout);
    assert!(human.stdout.contains("pool_exhausted"), "{}", human.stdout);
    assert!(
        human.stdout.contains("127.0.0.1 → 127.0.0.1:22000"),
        "{}",
        human.stdout
    );

    assert_eq!(pop.stop(), Some(3), "sockpop exits 3 when ports ran out");
}

/// Several pools over IPv4 and IPv6, established and TIME_WAIT: every pool equals sockpop's
/// ground truth and ss, and the procfs fallback sees the same pools as netlink.
#[test]
fn pools_match_ground_truth_and_ss() {
    require_root!("pools_match_ground_truth_and_ss");
    let ns = Netns::new("truth");
    ns.sysctl("net.ipv4.ip_local_port_range", "30000 60999");
    let mut pop = ns.sockpop(&[
        "--ports",
        "20000-20004",
        "--dst",
        "127.0.0.1",
        "--dst",
        "::1",
        "--established",
        "200",
        "--time-wait",
        "1000",
    ]);
    let t = &pop.truth;
    assert_eq!(t["ok"], true, "{t}");
    assert_eq!(t["exhausted"], false, "{t}");

    let (report, code) = ns.check_json(&[]);
    assert!(
        code <= 1,
        "10 pools of 120 in 31000 ports are no emergency: {code}"
    );
    assert_eq!(str_at(&report, "source"), "netlink");
    let ss = assert_agrees(&ns, &report, Some(t));

    let got = report_pools(&report);
    assert_eq!(
        got.len(),
        10,
        "5 ports × 2 families: {:#?}",
        pool_summary(&report)
    );
    for c in got.values() {
        assert_eq!((c.in_use, c.established, c.time_wait), (120, 20, 100));
    }
    let v6 = pool(&report, "::1", "::1", 20003);
    assert_eq!(u64_at(v6, "in_use"), 120);
    assert_eq!(str_at(v6, "scope"), "destination");
    assert_eq!(u64_at(&report, "sockets.outbound"), 1200);
    assert_eq!(
        u64_at(&report, "sockets.inbound"),
        200,
        "accepted sides are inbound"
    );
    assert_eq!(u64_at(&report, "states.ESTABLISHED"), 400);
    assert_eq!(u64_at(&report, "states.TIME_WAIT"), 1000);
    assert_eq!(u64_at(&report, "states.LISTEN"), 10);
    assert_eq!(u64_at(&report, "sockets.total"), ss.sockets.len() as u64);
    assert_eq!(u64_at(&report, "capacity.usable_per_pool"), 31000);
    assert!(array_at(&report, "bind_before_connect").is_empty());

    assert_procfs_agrees(&ns, &report, true);
    let (procfs, _) = ns.check_json(&["--source", "procfs"]);
    assert_agrees(&ns, &procfs, Some(t));

    let (top, _) = ns.check_json(&["--top", "3"]);
    assert_eq!(pools(&top).len(), 3, "--top 3 in JSON");
    assert_eq!(
        u64_at(&top, "verdict.pools.ok"),
        10,
        "verdict counts every pool"
    );
    let (bare, _) = ns.check_json(&["--no-owners"]);
    assert_eq!(bare["owners"]["scanned"], false);
    assert!(
        bare["owners"]["unknown_sockets"].is_null(),
        "{}",
        bare["owners"]
    );
    assert!(pools(&bare).iter().all(|p| p["processes"].is_null()));
    assert_eq!(report_pools(&bare), got);

    assert_eq!(pop.stop(), Some(0));
}

/// Reserved ports inside the range lower every pool's capacity; a reserved range reaching
/// below the range counts only its part inside; a listener on a reserved port is not
/// subtracted twice.
#[test]
fn reserved_ports_lower_capacity() {
    require_root!("reserved_ports_lower_capacity");
    let ns = Netns::new("resv");
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 40999");
    ns.sysctl("net.ipv4.ip_local_reserved_ports", "39990-40009,40500");
    let mut pop = ns.sockpop(&[
        "--ports",
        "22000",
        "--ports",
        "40500",
        "--established",
        "20",
        "--time-wait",
        "200",
    ]);
    let (report, _) = ns.check_json(&[]);
    let ss = assert_agrees(&ns, &report, Some(&pop.truth));
    // The kernel kept its word: no outbound socket got a reserved port.
    for s in &ss.sockets {
        let p = s.local.1;
        assert!(
            s.state == "LISTEN"
                || ss.is_listener_port(s.local)
                || !((39990..=40009).contains(&p) || p == 40500),
            "socket on a reserved port: {s:?}"
        );
    }
    assert_eq!(
        at(&report, "settings.reserved_ports"),
        &serde_json::json!([[39990, 40009], [40500, 40500]])
    );
    assert_eq!(u64_at(&report, "capacity.range_ports"), 1000);
    assert_eq!(
        u64_at(&report, "capacity.reserved_in_range"),
        11,
        "40000-40009 and 40500"
    );
    assert!(
        array_at(&report, "capacity.bound_in_range").is_empty(),
        "the listener on 40500 holds a reserved port, not one more"
    );
    assert_eq!(u64_at(&report, "capacity.usable_per_pool"), 989);
    assert_eq!(report_pools(&report).len(), 2);
    for p in pools(&report) {
        assert_eq!(u64_at(p, "capacity"), 989, "{p}");
    }
    assert!(
        findings(&report, "listener_in_range").is_empty(),
        "{:?}",
        finding_codes(&report)
    );
    assert_eq!(pop.stop(), Some(0));
}

/// A listener on a port inside the range leaves every pool (IPv4 and IPv6 alike, counted once),
/// is reported, and its accepted connections are inbound, not pools. Bound-only sockets
/// (bind() without listen or connect) in the range hold their ports the same way.
#[test]
fn listener_in_range_lowers_capacity_and_is_inbound() {
    require_root!("listener_in_range_lowers_capacity_and_is_inbound");
    let ns = Netns::new("lstn");
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 40999");
    let mut bound = ns.python_bound(&[("127.0.0.1", 40600), ("::1", 40601)]);
    let mut pop = ns.sockpop(&[
        "--ports",
        "40500",
        "--dst",
        "127.0.0.1",
        "--dst",
        "::1",
        "--established",
        "50",
        "--time-wait",
        "50",
    ]);
    let (report, _) = ns.check_json(&[]);
    let ss = assert_agrees(&ns, &report, Some(&pop.truth));
    let accepted = ss
        .sockets
        .iter()
        .filter(|s| s.state != "LISTEN" && s.local.1 == 40500)
        .count() as u64;
    assert_eq!(accepted, 50, "ss: the accepted side of 50 connections");
    assert!(
        ss.sockets
            .iter()
            .all(|s| s.local.1 != 40500 || s.peer.1 != 40500),
        "no client got the listener's port"
    );
    assert!(
        ss.sockets
            .iter()
            .all(|s| s.local.1 != 40600 && s.local.1 != 40601),
        "no client got a bound port"
    );

    assert_eq!(
        at(&report, "capacity.bound_in_range"),
        &serde_json::json!([40500, 40600, 40601])
    );
    assert_eq!(u64_at(&report, "capacity.usable_per_pool"), 997);
    assert_eq!(
        u64_at(&report, "states.BOUND"),
        2,
        "the two bound-only sockets"
    );
    assert_eq!(u64_at(&report, "sockets.inbound"), 50);
    assert_eq!(u64_at(&report, "sockets.outbound"), 100);
    let got = report_pools(&report);
    assert_eq!(
        got.keys().copied().collect::<Vec<_>>(),
        vec![
            (ip("127.0.0.1"), ip("127.0.0.1"), 40500),
            (ip("::1"), ip("::1"), 40500)
        ],
        "only the client sides form pools"
    );
    for p in pools(&report) {
        assert_eq!(u64_at(p, "capacity"), 997, "{p}");
        assert_eq!(u64_at(p, "in_use"), 50, "{p}");
    }
    let f = findings(&report, "listener_in_range");
    assert_eq!(f.len(), 1, "{:?}", finding_codes(&report));
    assert_eq!(
        at(f[0], "evidence.ports"),
        &serde_json::json!([40500, 40600, 40601])
    );
    assert!(
        str_at(f[0], "fix").contains("ip_local_reserved_ports"),
        "{}",
        f[0]
    );
    assert_eq!(pop.stop(), Some(0));
    bound.stop();
}

/// tcp_tw_reuse 0/1/2 against the same TIME_WAIT, older than tcp_tw_reuse_delay: on loopback
/// (sockpop) and on a non-loopback address (10.77.0.1 on lo, Python helper).
#[test]
fn tw_reuse_modes_decide_blocking_time_wait() {
    require_root!("tw_reuse_modes_decide_blocking_time_wait");
    let ns = Netns::new("reuse");
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 44999");
    ns.ip(&["addr", "add", "10.77.0.1/24", "dev", "lo"]);
    assert_eq!(ns.read_sysctl("net.ipv4.tcp_timestamps"), "1");
    let delay: u64 = ns
        .read_sysctl("net.ipv4.tcp_tw_reuse_delay")
        .parse()
        .expect("tcp_tw_reuse_delay is a number (kernel 6.14+)");
    assert_eq!(delay, 1000);

    let mut pop = ns.sockpop(&[
        "--ports",
        "22000",
        "--dst",
        "127.0.0.1",
        "--dst",
        "::1",
        "--time-wait",
        "200",
    ]);
    let (mut helper, helper_truth) = ns.python_time_wait("10.77.0.1", 22001, 60);
    assert_eq!(helper_truth["local_ip"], "10.77.0.1", "{helper_truth}");
    let born = Instant::now();
    let mut rates_checked = 0;
    // Older than tcp_tw_reuse_delay (1000 ms), so reuse may take every one of them.
    thread::sleep(Duration::from_millis(1600));

    let mut truth = common::truth_pools(&pop.truth);
    truth.extend(common::truth_pools(&helper_truth));

    // (tcp_tw_reuse, tcp_tw_reuse_delay ms, loopback pools blocked, 10.77.0.1 pool blocked)
    for (reuse, delay, lo_blocks, other_blocks) in [
        ("0", "1000", true, true),
        ("1", "1000", false, false),
        ("2", "1000", false, true),
        // Reuse on, but every TIME_WAIT is younger than a 60 s delay: all of them block.
        ("1", "60000", true, true),
    ] {
        ns.sysctl("net.ipv4.tcp_tw_reuse", reuse);
        ns.sysctl("net.ipv4.tcp_tw_reuse_delay", delay);
        let (report, _) = ns.check_json(&[]);
        let what = format!("tw_reuse={reuse} delay={delay}");
        assert_eq!(u64_at(&report, "settings.tw_reuse").to_string(), reuse);
        assert_eq!(
            u64_at(&report, "settings.tw_reuse_delay_ms").to_string(),
            delay
        );
        assert_agrees(&ns, &report, None);
        // The TIME_WAIT must stay well inside the 10 s rate window for rate checks.
        let young = born.elapsed() < Duration::from_secs(8);
        assert_procfs_agrees(&ns, &report, young);
        assert_eq!(report_pools(&report), truth, "{what}");
        for (local, port, tw, blocks) in [
            ("127.0.0.1", 22000, 100, lo_blocks),
            ("::1", 22000, 100, lo_blocks),
            ("10.77.0.1", 22001, 60, other_blocks),
        ] {
            let p = pool(&report, local, local, port);
            assert_eq!(u64_at(p, "time_wait"), tw, "{what}: {p}");
            assert_eq!(
                u64_at(p, "blocking_time_wait"),
                if blocks { tw } else { 0 },
                "{what}, pool {local}: {p}"
            );
            // Every TIME_WAIT entered within the last 10 s (the rate window), so the rate
            // read from their timers is the count over the span they cover: their age (the
            // population is younger than the window), not the whole window.
            if young {
                let rate = p["connect_rate_per_s"].as_f64().expect("a rate");
                let window = p["rate_window_seconds"].as_f64().expect("a rate window");
                let age = born.elapsed().as_secs_f64();
                assert!(
                    (1.0..=age + 0.5).contains(&window),
                    "{what}: window {window} s, population {age:.1} s old: {p}"
                );
                let want = tw as f64 / window;
                assert!(
                    (rate - want).abs() <= 0.06 * want + 0.1,
                    "{what}: rate {rate}, want {want:.1} ({tw} over {window} s): {p}"
                );
                rates_checked += 1;
            }
            let applies = reuse == "1" || (reuse == "2" && local != "10.77.0.1");
            assert_eq!(p["tw_reuse_applies"], applies, "{what}, pool {local}: {p}");
        }
    }
    assert!(
        rates_checked >= 3,
        "the machine is too slow to check rates at all"
    );
    assert_eq!(pop.stop(), Some(0));
    helper.stop();
}

/// Two source addresses (IP_BIND_ADDRESS_NO_PORT): one pool per source.
#[test]
fn two_sources_two_pools() {
    require_root!("two_sources_two_pools");
    let ns = Netns::new("srcs");
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 44999");
    let mut pop = ns.sockpop(&[
        "--src",
        "127.0.0.1",
        "--src",
        "127.0.0.2",
        "--ports",
        "22000",
        "--established",
        "20",
        "--time-wait",
        "100",
    ]);
    let (report, _) = ns.check_json(&[]);
    assert_agrees(&ns, &report, Some(&pop.truth));
    let got = report_pools(&report);
    let locals: BTreeSet<IpAddr> = got.keys().map(|k| k.0).collect();
    assert_eq!(locals, BTreeSet::from([ip("127.0.0.1"), ip("127.0.0.2")]));
    for local in ["127.0.0.1", "127.0.0.2"] {
        let p = pool(&report, local, "127.0.0.1", 22000);
        assert_eq!(u64_at(p, "in_use"), 60, "{p}");
        assert_eq!(u64_at(p, "established"), 10, "{p}");
    }
    assert!(array_at(&report, "bind_before_connect").is_empty());
    assert!(findings(&report, "bind_before_connect_suspected").is_empty());
    assert_eq!(pop.stop(), Some(0));
}

/// An IPv6 socket talking to an IPv4-mapped address uses the IPv4 4-tuple, so it belongs to the
/// IPv4 pool and is reported in IPv4 form (netlink and procfs alike).
#[test]
fn ipv4_mapped_ipv6_sockets_form_ipv4_pools() {
    require_root!("ipv4_mapped_ipv6_sockets_form_ipv4_pools");
    let ns = Netns::new("mapped");
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 44999");
    let (mut helper, truth) = ns.python_time_wait("::ffff:127.0.0.1", 22010, 30);
    assert_eq!(
        truth["local_ip"], "::ffff:127.0.0.1",
        "an IPv6 socket: {truth}"
    );
    let raw = ns.ss_raw();
    assert!(
        raw.contains("[::ffff:127.0.0.1]"),
        "ss shows mapped addresses:\n{raw}"
    );
    let (report, _) = ns.check_json(&[]);
    assert_agrees(&ns, &report, Some(&truth));
    let p = pool(&report, "127.0.0.1", "127.0.0.1", 22010);
    assert_eq!(u64_at(p, "time_wait"), 30, "{p}");
    assert_eq!(p["tw_reuse_applies"], false, "tw_reuse=0: {p}");
    assert_procfs_agrees(&ns, &report, true);
    ns.sysctl("net.ipv4.tcp_tw_reuse", "2");
    let (report, _) = ns.check_json(&[]);
    let p = pool(&report, "127.0.0.1", "127.0.0.1", 22010);
    assert_eq!(
        p["tw_reuse_applies"], true,
        "mapped loopback is loopback: {p}"
    );
    helper.stop();
}

fn bind_population(ns: &Netns, mode: &str) -> common::Sockpop {
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 41999");
    ns.sockpop(&[
        "--src",
        "127.0.0.1",
        "--bind",
        mode,
        "--ports",
        "22000-22007",
        "--established",
        "40",
        "--time-wait",
        "320",
    ])
}

/// bind() before connect(): ports unique per source across 8 destinations → a per-address pool
/// and a finding. The control with IP_BIND_ADDRESS_NO_PORT and the same counts has neither.
#[test]
fn bind_before_connect_is_detected_and_control_is_not() {
    require_root!("bind_before_connect_is_detected_and_control_is_not");
    let ns = Netns::new("bind");
    let mut pop = bind_population(&ns, "port");
    let (report, _) = ns.check_json(&[]);
    let ss = assert_agrees(&ns, &report, Some(&pop.truth));
    let client_ports: Vec<u16> = ss
        .sockets
        .iter()
        .filter(|s| s.state != "LISTEN" && s.local.1 >= 40000)
        .map(|s| s.local.1)
        .collect();
    assert_eq!(client_ports.len(), 360);
    let unique: BTreeSet<u16> = client_ports.iter().copied().collect();
    assert_eq!(
        unique.len(),
        360,
        "bind-before-connect: no port shared across destinations"
    );

    let f = findings(&report, "bind_before_connect_suspected");
    assert_eq!(f.len(), 1, "{:?}", finding_codes(&report));
    assert_eq!(str_at(f[0], "evidence.local_ip"), "127.0.0.1");
    assert_eq!(u64_at(f[0], "evidence.destinations"), 8);
    assert_eq!(u64_at(f[0], "evidence.sockets"), 360);
    assert_eq!(u64_at(f[0], "evidence.shared_ports"), 0);
    let bind_pools: Vec<&Value> = pools(&report)
        .iter()
        .filter(|p| p["scope"] == "local_address")
        .collect();
    assert_eq!(bind_pools.len(), 1, "{:#?}", pool_summary(&report));
    let bp = bind_pools[0];
    assert_eq!(bp["local_ip"], "127.0.0.1");
    assert!(
        bp["remote_ip"].is_null() && bp["remote_port"].is_null(),
        "{bp}"
    );
    assert_eq!(u64_at(bp, "in_use"), 360);
    assert_eq!(u64_at(bp, "established"), 40);
    assert_eq!(u64_at(bp, "time_wait"), 320);
    assert_eq!(
        u64_at(bp, "blocking_time_wait"),
        320,
        "bound ports stay owned in TIME_WAIT"
    );
    assert_eq!(u64_at(bp, "capacity"), 2000);
    assert_eq!(pop.stop(), Some(0));

    let control_ns = Netns::new("nobind");
    let mut control = bind_population(&control_ns, "noport");
    let (report, _) = control_ns.check_json(&[]);
    assert_agrees(&control_ns, &report, Some(&control.truth));
    assert_eq!(report_pools(&report).len(), 8);
    assert!(
        findings(&report, "bind_before_connect_suspected").is_empty(),
        "control (IP_BIND_ADDRESS_NO_PORT) flagged: {:?}",
        finding_codes(&report)
    );
    assert!(array_at(&report, "bind_before_connect").is_empty());
    assert!(pools(&report).iter().all(|p| p["scope"] == "destination"));
    assert_eq!(control.stop(), Some(0));
}

/// bind() before connect() that has used up the whole range of its source address: the kernel
/// hands out bind() ports of one parity first and the other parity once those are gone, so the
/// ports are half odd, half even. Nothing from 127.0.0.1 can connect any more, to any
/// destination.
#[test]
fn bind_before_connect_exhausting_the_range_is_detected() {
    require_root!("bind_before_connect_exhausting_the_range_is_detected");
    let ns = Netns::new("bindfull");
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 40099");
    let mut pop = ns.sockpop(&[
        "--src",
        "127.0.0.1",
        "--bind",
        "port",
        "--ports",
        "22000-22003",
        "--time-wait",
        "120",
    ]);
    assert_eq!(pop.truth["exhausted"], true, "{}", pop.truth);
    assert_eq!(u64_at(&pop.truth, "time_wait"), 100, "{}", pop.truth);
    let (report, code) = ns.check_json(&[]);
    let ss = assert_agrees(&ns, &report, Some(&pop.truth));
    let ports: BTreeSet<u16> = ss
        .sockets
        .iter()
        .filter(|s| s.state == "TIME_WAIT")
        .map(|s| s.local.1)
        .collect();
    assert_eq!(ports.len(), 100, "every port of the range, none shared");

    let f = findings(&report, "bind_before_connect_suspected");
    assert_eq!(f.len(), 1, "{:?}", finding_codes(&report));
    let bind_pools: Vec<&Value> = pools(&report)
        .iter()
        .filter(|p| p["scope"] == "local_address" && p["local_ip"] == "127.0.0.1")
        .collect();
    assert_eq!(bind_pools.len(), 1, "{:#?}", pool_summary(&report));
    assert_eq!(u64_at(bind_pools[0], "in_use"), 100);
    assert_eq!(u64_at(bind_pools[0], "capacity"), 100);
    assert!(
        !findings(&report, "pool_exhausted").is_empty(),
        "{:?}",
        finding_codes(&report)
    );
    assert_eq!(code, 2, "no port left for 127.0.0.1: critical");
    // connect() never takes over bind()'s ports, so tcp_tw_reuse is not the advice here.
    assert!(
        findings(&report, "tw_reuse_off").is_empty(),
        "{:?}",
        finding_codes(&report)
    );
    for p in pools(&report)
        .iter()
        .filter(|p| p["local_ip"] == "127.0.0.1")
    {
        assert_eq!(p["tw_reuse_applies"], false, "{p}");
        assert_eq!(p["blocking_time_wait"], p["time_wait"], "{p}");
    }
    assert_eq!(pop.stop(), Some(3));
}

/// A tiny tcp_max_tw_buckets: the kernel drops TIME_WAIT past it and counts the overflow.
#[test]
fn tw_bucket_overflow_is_reported() {
    require_root!("tw_bucket_overflow_is_reported");
    let ns = Netns::new("twb");
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 44999");
    ns.sysctl("net.ipv4.tcp_max_tw_buckets", "50");
    let mut pop = ns.sockpop(&["--ports", "22000", "--time-wait", "200"]);
    assert_eq!(
        u64_at(&pop.truth, "time_wait"),
        200,
        "sockpop closed 200 connections"
    );
    let (report, code) = ns.check_json(&[]);
    assert_eq!(
        code, 1,
        "the overflow is a warning; no pool is under pressure"
    );
    assert_eq!(str_at(&report, "verdict.level"), "warning");
    // The truth is what sockpop made; the kernel kept only what fit, so compare with ss.
    let ss = assert_agrees(&ns, &report, None);
    let kept = ss.count("TIME_WAIT");
    assert!(
        kept > 0 && kept <= 50,
        "the kernel kept {kept} TIME_WAIT with 50 buckets"
    );
    assert_eq!(u64_at(&report, "settings.max_tw_buckets"), 50);
    let overflow = u64_at(&report, "counters.tcp_ext.TCPTimeWaitOverflow");
    assert_eq!(overflow, 200 - kept, "every dropped TIME_WAIT counted once");
    let f = findings(&report, "tw_bucket_overflow");
    assert_eq!(f.len(), 1, "{:?}", finding_codes(&report));
    assert_eq!(u64_at(f[0], "evidence.TCPTimeWaitOverflow"), overflow);
    assert_eq!(u64_at(f[0], "evidence.max_tw_buckets"), 50);
    assert_eq!(pop.stop(), Some(0));
}

/// A world-readable copy of the binary, so an unprivileged user can run it whatever the
/// permissions of the build directory.
fn world_executable_copy() -> (tempfile::TempDir, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("pdt-bin-")
        .tempdir_in("/tmp")
        .expect("temporary directory in /tmp");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod 755");
    let bin = dir.path().join("portdoctor");
    std::fs::copy(PORTDOCTOR, &bin).expect("copying the binary");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod 755");
    (dir, bin)
}

/// As nobody inside the namespace: same pools, owners unknown. As root: sockpop owns its pools.
#[test]
fn unprivileged_sees_pools_but_not_owners() {
    require_root!("unprivileged_sees_pools_but_not_owners");
    let ns = Netns::new("nobody");
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 44999");
    let mut pop = ns.sockpop(&[
        "--ports",
        "22000-22001",
        "--established",
        "30",
        "--time-wait",
        "40",
    ]);
    let pid = u64::from(pop.pid());

    let (root, _) = ns.check_json(&[]);
    assert_agrees(&ns, &root, Some(&pop.truth));
    assert_eq!(root["owners"]["scanned"], true);
    assert_eq!(
        u64_at(&root, "owners.unknown_sockets"),
        0,
        "root sees every owner"
    );
    let root_owner: Vec<&Value> = pools(&root)
        .iter()
        .flat_map(|p| array_at(p, "processes"))
        .filter(|pr| pr["pid"] == pid)
        .collect();
    assert_eq!(
        root_owner.len(),
        2,
        "sockpop ({pid}) owns both pools: {root}"
    );
    for pr in &root_owner {
        assert!(str_at(pr, "name").starts_with("sockpop"), "{pr}");
        assert_eq!(
            u64_at(pr, "sockets"),
            15,
            "15 established client sockets per pool"
        );
    }

    let (_dir, bin) = world_executable_copy();
    let args = ["check", "--json"];
    let mut cmd = ns.exec("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args(args);
    let run = run_program(&mut cmd, &args);
    let user = run.json();
    assert!(
        user["host"]["netns"].is_null(),
        "no --netns given: {}",
        user["host"]
    );
    assert_eq!(
        pool_summary(&user),
        pool_summary(&root),
        "same pools as root"
    );
    assert_agrees(&ns, &user, Some(&pop.truth));
    assert_eq!(user["owners"]["scanned"], true);
    assert!(
        u64_at(&user, "owners.unknown_sockets") > 0,
        "root's sockets cannot be attributed by nobody: {}",
        user["owners"]
    );
    assert!(
        u64_at(&user, "owners.hidden_processes") > 0,
        "{}",
        user["owners"]
    );
    for p in pools(&user) {
        assert!(
            array_at(p, "processes").iter().all(|pr| pr["pid"] != pid),
            "nobody cannot see root's sockpop as owner: {p}"
        );
    }

    // Entering a namespace needs privileges: a clear error and exit 3, not a wrong report.
    let pid_text = pid.to_string();
    for target in [["--netns", ns.name.as_str()], ["--pid", pid_text.as_str()]] {
        let args = ["check", target[0], target[1]];
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&bin)
            .args(args);
        let run = run_program(&mut cmd, &args);
        assert_eq!(run.code, 3, "{args:?} as nobody: {}", run.stderr);
        assert!(
            run.stderr.contains("CAP_SYS_ADMIN"),
            "{args:?}: {}",
            run.stderr
        );
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
    }
    assert_eq!(pop.stop(), Some(0));
}

/// Operational and usage errors map to exit 3 and 4 with a message.
#[test]
fn errors_have_exit_codes_and_messages() {
    // No namespace needed: these fail before or while looking for one.
    let name = format!("pdt-{}-does-not-exist", std::process::id());
    let run = portdoctor(&["check", "--netns", &name]);
    assert_eq!(run.code, 3, "stderr: {}", run.stderr);
    assert!(run.stderr.contains(&name), "{}", run.stderr);
    assert!(run.stderr.contains("ip netns list"), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);

    // A name that leaves /run/netns is a usage error that says why, for every command.
    for cmd in [
        &["check", "--netns", "../../etc", "--json"][..],
        &["check", "--netns", ""][..],
        &["top", "--once", "--netns", "/etc/passwd"][..],
        &[
            "tune",
            "plan",
            "--netns",
            "..",
            "--set",
            "net.ipv4.tcp_tw_reuse=1",
        ][..],
        &["capacity", "--from-host", "--netns", "a/b"][..],
        &["serve", "--textfile", "/tmp", "--netns", "."][..],
    ] {
        if (cmd[0] == "top" && !cfg!(feature = "top"))
            || (cmd[0] == "serve" && !cfg!(feature = "serve"))
        {
            continue;
        }
        let run = portdoctor(cmd);
        assert_eq!(
            run.code, 4,
            "{cmd:?}: a path is no namespace name: {}",
            run.stderr
        );
        assert!(run.stderr.contains("--netns"), "{cmd:?}: {}", run.stderr);
        // Nothing on stdout, but the JSON error object when --json asked for JSON.
        if cmd.contains(&"--json") {
            assert!(
                run.stdout.starts_with("{\"error\"") && run.stdout.contains("portdoctor.error/v1"),
                "{cmd:?}: {}",
                run.stdout
            );
        } else {
            assert!(run.stdout.is_empty(), "{cmd:?}: {}", run.stdout);
        }
    }

    let run = portdoctor(&["check", "--pid", "999999999"]);
    assert_eq!(run.code, 3, "stderr: {}", run.stderr);
    assert!(run.stderr.contains("999999999"), "{}", run.stderr);

    for (args, mentions) in [
        (&["check", "--warn", "2"][..], "--warn"),
        (&["check", "--bogus"][..], "--bogus"),
        (&["check", "--crit", "soon"][..], "--crit"),
        (&["check", "--warn", "0.95", "--crit", "0.9"][..], "--warn"),
        (&["check", "--netns", "a", "--pid", "1"][..], "--pid"),
    ] {
        let run = portdoctor(args);
        assert_eq!(run.code, 4, "{args:?}: stderr: {}", run.stderr);
        assert!(run.stderr.contains(mentions), "{args:?}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
    }
}

/// `--pid` of a process in the namespace sees what `--netns` sees.
#[test]
fn pid_namespace_matches_named_namespace() {
    require_root!("pid_namespace_matches_named_namespace");
    let ns = Netns::new("pid");
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 44999");
    let mut pop = ns.sockpop(&[
        "--ports",
        "22000-22002",
        "--dst",
        "127.0.0.1",
        "--dst",
        "::1",
        "--established",
        "30",
        "--time-wait",
        "90",
    ]);
    let (by_name, code) = ns.check_json(&[]);
    let pid = pop.pid().to_string();
    let run = portdoctor(&["check", "--pid", &pid, "--json"]);
    let by_pid = run.json();
    assert_eq!(run.code, code);
    assert_eq!(str_at(&by_pid, "host.netns"), format!("pid:{pid}"));
    assert_eq!(pool_summary(&by_pid), pool_summary(&by_name));
    assert_eq!(at(&by_pid, "states"), at(&by_name, "states"));
    assert_eq!(at(&by_pid, "settings"), at(&by_name, "settings"));
    assert_agrees(&ns, &by_pid, Some(&pop.truth));
    assert_eq!(report_pools(&by_pid).len(), 6);
    let procfs = portdoctor(&["check", "--pid", &pid, "--json", "--source", "procfs"]).json();
    assert_eq!(
        pool_summary(&procfs),
        pool_summary(&by_name),
        "--pid with procfs"
    );

    assert_eq!(pop.stop(), Some(0));
}

/// The one-walk legacy dump (TCPDIAG_GETSOCK, both families at once) and the per-family
/// SOCK_DIAG_BY_FAMILY pair return the same sockets, bound-only ones included.
#[test]
fn legacy_and_per_family_dumps_agree() {
    use portdoctor::collect::linux::{netlink, netns};
    use portdoctor::collect::Target;

    require_root!("legacy_and_per_family_dumps_agree");
    let ns = Netns::new("dumps");
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 40999");
    let mut bound = ns.python_bound(&[("127.0.0.1", 40600), ("::1", 40601)]);
    let mut pop = ns.sockpop(&[
        "--ports",
        "20000-20002",
        "--dst",
        "127.0.0.1",
        "--dst",
        "::1",
        "--established",
        "60",
        "--time-wait",
        "90",
    ]);
    // setns() moves only the calling thread: do it on a thread of its own.
    let name = ns.name.clone();
    let (legacy, per_family) = thread::spawn(move || {
        let _ns = netns::enter(&Target::Netns(name)).expect("entering the test namespace");
        let a = netlink::dump_tcp().expect("legacy dump");
        let b = netlink::dump_tcp_per_family().expect("per-family dump");
        (a, b)
    })
    .join()
    .expect("dump thread");
    let a = common::socket_table(&legacy.sockets);
    assert_eq!(a, common::socket_table(&per_family.sockets));
    // 6 listeners + 2 bound-only + 60 × 2 established + 90 TIME_WAIT.
    assert_eq!(a.len(), 6 + 2 + 120 + 90, "{a:?}");
    let bound_only = legacy
        .sockets
        .iter()
        .filter(|s| s.state == portdoctor::snapshot::TcpState::Close)
        .count();
    assert_eq!(bound_only, 2);
    assert!(!legacy.interrupted && !per_family.interrupted);
    assert_eq!(pop.stop(), Some(0));
    bound.stop();
}
