use proptest::prelude::*;

use super::*;
use crate::knobs::knob;

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

/// domain.md §"Capacity arithmetic": hand-computed figures.
#[test]
fn domain_md_figures() {
    let table = [
        (Preset::LinuxDefault, 28_232, 60.0, 470.5),
        (Preset::Windows2019, 16_384, 120.0, 136.5),
        (Preset::WindowsLegacy, 16_384, 240.0, 68.3),
        (Preset::WindowsTuned, 32_768, 30.0, 1_092.3),
    ];
    for (preset, usable, hold, per_s) in table {
        let o = evaluate(&preset.scenario());
        assert_eq!(o.usable_ports, usable, "{preset:?}");
        assert!(close(o.hold_s, hold, 1e-9), "{preset:?}");
        let got = o.per_pool_per_s.unwrap();
        assert!(close(got, per_s, 0.1), "{preset:?}: {got}");
        assert_eq!(o.total_per_s, o.per_pool_per_s, "one pool");
    }
}

#[test]
fn linux_default_reuse_applies_on_loopback_only() {
    let mut s = Preset::LinuxDefault.scenario();
    assert!(!tw_reuse_applies(&s));
    s.loopback = true;
    assert!(tw_reuse_applies(&s));
    assert_eq!(hold_time(&s), (1.0, HoldReason::TwReuse));
    s.timestamps = false;
    assert!(!tw_reuse_applies(&s));
    s.timestamps = true;
    s.bind_before_connect = true;
    assert!(!tw_reuse_applies(&s), "bind() ports are not reused");
}

#[test]
fn issue_example_3000_per_s_50ms_no_keepalive() {
    let mut s = Preset::LinuxDefault.scenario();
    s.rate_per_s = Some(3000.0);
    s.lifetime_s = 0.05;
    let o = evaluate(&s);
    let d = o.demand.as_ref().unwrap();
    assert!(!d.fits);
    assert!(close(o.per_pool_per_s.unwrap(), 28_232.0 / 60.05, 1e-9));
    assert!(close(d.ports_needed_per_pool, 3000.0 * 60.05, 1e-6));
    assert!(close(
        d.time_to_exhaustion_s.unwrap(),
        28_232.0 / 3000.0,
        1e-9
    ));
    assert!(d.headroom_per_s.unwrap() < 0.0);
    let ch = changes(&s);
    let ids: Vec<&str> = ch.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids[0], "app.keepalive");
    assert!(ids.contains(&"net.ipv4.tcp_tw_reuse"));
    assert!(ids.contains(&"net.ipv4.ip_local_port_range"));
    // keep-alive at the proposed share fits; tcp_tw_reuse=1 alone: 28,232 / 1.05 s ≫ 3,000/s.
    for c in &ch {
        match c.id.as_str() {
            "app.keepalive" | "net.ipv4.tcp_tw_reuse" | "app.destinations" | "app.source_ips" => {
                assert!(c.fits, "{c:?}");
            }
            // 180,150 ports do not fit in one range.
            "net.ipv4.ip_local_port_range" => assert!(!c.fits, "{c:?}"),
            _ => {}
        }
    }
    let dest = ch.iter().find(|c| c.id == "app.destinations").unwrap();
    assert_eq!(dest.setting, "7", "ceil(3000 * 60.05 / 28232)");
}

#[test]
fn every_knob_change_comes_from_the_knowledge_base() {
    let mut scenarios = Vec::new();
    for p in Preset::ALL {
        let mut s = p.scenario();
        s.rate_per_s = Some(5000.0);
        s.lifetime_s = 0.2;
        scenarios.push(s.clone());
        s.bind_before_connect = true;
        s.destinations = 4;
        scenarios.push(s.clone());
        s.timestamps = false;
        scenarios.push(s);
    }
    for s in &scenarios {
        for c in changes(s) {
            match c.kind {
                ChangeKind::Knob => {
                    let k = knob(&c.id).unwrap_or_else(|| panic!("{} not in KNOBS", c.id));
                    assert_eq!(k.os, s.os, "{}", c.id);
                    assert_eq!(c.tradeoff, k.tradeoff);
                }
                ChangeKind::App => assert!(c.id.starts_with("app."), "{}", c.id),
            }
        }
    }
}

#[test]
fn windows_changes_lower_time_wait_within_valid_range() {
    let mut s = Preset::Windows2019.scenario();
    s.rate_per_s = Some(400.0);
    let ch = changes(&s);
    let tw = ch
        .iter()
        .find(|c| c.id == "tcpip.TcpTimedWaitDelay")
        .unwrap();
    // 16,384 / 400 = 40.96 s → 40 s.
    assert_eq!(tw.setting, "40");
    assert!(tw.fits);
    let range = ch
        .iter()
        .find(|c| c.id == "netsh.ipv4.dynamicport.tcp")
        .unwrap();
    assert!(range.fits, "{range:?}");
    assert!(range
        .how
        .starts_with("netsh int ipv4 set dynamicport tcp start="));
}

#[test]
fn bind_before_connect_collapses_pools_and_no_port_restores_them() {
    let mut s = Preset::LinuxDefault.scenario();
    s.destinations = 8;
    let connect = evaluate(&s);
    s.bind_before_connect = true;
    let bind = evaluate(&s);
    assert_eq!(connect.pools, 8);
    assert_eq!(bind.pools, 1);
    assert!(bind.total_per_s.unwrap() < connect.total_per_s.unwrap());
    s.rate_per_s = Some(1000.0);
    let ch = changes(&s);
    let fix = ch
        .iter()
        .find(|c| c.id == "app.ip_bind_address_no_port")
        .unwrap();
    assert!(fix.fits);
}

/// Issue 17: on Windows more source IPs add no pool (the dynamic range is host-wide "no matter
/// the number of IP addresses") unless the application sets SO_PORT_SCALABILITY, so capacity
/// must not advise spreading over source IPs without it.
#[test]
fn windows_source_ips_add_pools_only_with_port_scalability() {
    let mut s = Preset::Windows2019.scenario();
    s.rate_per_s = Some(1000.0);
    s.source_ips = 4;
    s.destinations = 3;
    assert_eq!(pools(&s), (1, Scope::Host));
    let ids: Vec<String> = changes(&s).into_iter().map(|c| c.id).collect();
    assert!(!ids.iter().any(|i| i == "app.source_ips"), "{ids:?}");
    s.port_scalability = true;
    assert_eq!(pools(&s), (4, Scope::LocalAddress));
    let ch = changes(&s);
    let spread = ch.iter().find(|c| c.id == "app.source_ips").unwrap();
    assert!(spread.what.contains("source IPs"), "{}", spread.what);
}

#[test]
fn server_closes_first_with_zero_lifetime_is_unlimited() {
    let mut s = Preset::LinuxDefault.scenario();
    s.server_closes_first = true;
    s.rate_per_s = Some(1e6);
    let o = evaluate(&s);
    assert_eq!(o.per_pool_per_s, None);
    assert!(o.demand.unwrap().fits);
}

#[test]
fn reserved_ports_count_once_and_only_inside_the_range() {
    let r = PortRange::new(40000, 40099).unwrap();
    let res = [
        PortRange::new(39990, 40009).unwrap(),
        PortRange::new(40005, 40014).unwrap(),
        PortRange::new(40050, 40050).unwrap(),
        PortRange::new(50000, 50010).unwrap(),
    ];
    assert_eq!(reserved_in_range(r, &res), 16);
}

#[test]
fn onset_constant_rate_and_ramp() {
    // 200 ports, 60 s hold, 100/s: full after 2 s.
    let t = onset_seconds(|_| 100.0, 60.0, 200, 1, 10.0).unwrap();
    assert!(close(t, 2.0, 0.002), "{t}");
    // Two pools: 4 s.
    let t = onset_seconds(|_| 100.0, 60.0, 200, 2, 10.0).unwrap();
    assert!(close(t, 4.0, 0.002), "{t}");
    // Reuse after 1 s: 100 in the window, never full.
    assert_eq!(onset_seconds(|_| 100.0, 1.0, 200, 1, 10.0), None);
    // Ramp 20 → 200/s over 4 s: 20 t + 22.5 t² = 200 → t ≈ 2.570.
    let t = onset_seconds(|t| 20.0 + 45.0 * t, 60.0, 200, 1, 10.0).unwrap();
    assert!(close(t, 2.570, 0.003), "{t}");
}

fn scenario_strategy() -> impl Strategy<Value = Scenario> {
    (
        1024u16..=65535,
        0u16..=20000,
        0.0f64..300.0,
        0.0f64..30.0,
        proptest::option::of(0.0f64..100_000.0),
        1u32..64,
        1u32..8,
        0.0f64..=1.0,
        0u8..=2,
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |(low, span, tw, life, rate, dests, srcs, keep, reuse, (ts, lo, bind, win))| {
                let high = low.saturating_add(span);
                let mut s = if win {
                    Preset::Windows2019.scenario()
                } else {
                    Preset::LinuxDefault.scenario()
                };
                s.range = PortRange::new(low, high).unwrap();
                s.reserved = vec![PortRange::new(low, low.saturating_add(span / 10)).unwrap()];
                s.time_wait_s = tw;
                s.lifetime_s = life;
                s.rate_per_s = rate;
                s.destinations = dests;
                s.source_ips = srcs;
                s.keepalive_share = keep;
                s.tw_reuse = reuse;
                s.timestamps = ts;
                s.loopback = lo;
                s.bind_before_connect = bind;
                s
            },
        )
}

proptest! {
    #[test]
    fn never_negative(s in scenario_strategy()) {
        let o = evaluate(&s);
        prop_assert!(o.hold_s >= 0.0);
        prop_assert!(o.per_pool_per_s.is_none_or(|r| r >= 0.0));
        prop_assert!(o.total_per_s.is_none_or(|r| r >= 0.0));
        if let Some(d) = &o.demand {
            prop_assert!(d.new_connections_per_s >= 0.0);
            prop_assert!(d.ports_needed_per_pool >= 0.0);
            prop_assert!(d.time_to_exhaustion_s.is_none_or(|t| t >= 0.0));
        }
        for c in changes(&s) {
            prop_assert!(c.total_per_s_after.is_none_or(|r| r >= 0.0));
            prop_assert!(c.ports_needed_per_pool >= 0.0);
        }
    }

    #[test]
    fn monotonic_in_range_size(s in scenario_strategy(), extra in 1u16..2000) {
        let mut wider = s.clone();
        wider.range.high = s.range.high.saturating_add(extra);
        let (a, b) = (evaluate(&s), evaluate(&wider));
        prop_assert!(b.usable_ports >= a.usable_ports);
        if let (Some(x), Some(y)) = (a.total_per_s, b.total_per_s) {
            prop_assert!(y >= x);
        }
        if let (Some(x), Some(y)) = (a.demand, b.demand) {
            prop_assert!(!x.fits || y.fits, "widening the range cannot break a fit");
        }
    }

    #[test]
    fn monotonic_in_time_wait(s in scenario_strategy(), more in 0.001f64..200.0) {
        let mut longer = s.clone();
        longer.time_wait_s = s.time_wait_s + more;
        let (a, b) = (evaluate(&s), evaluate(&longer));
        prop_assert!(b.hold_s >= a.hold_s);
        match (a.per_pool_per_s, b.per_pool_per_s) {
            (Some(x), Some(y)) => prop_assert!(y <= x + 1e-9),
            (Some(_), None) => prop_assert!(false, "a longer TIME_WAIT cannot remove the limit"),
            _ => {}
        }
    }

    #[test]
    fn littles_law_holds(s in scenario_strategy()) {
        let o = evaluate(&s);
        if let Some(d) = &o.demand {
            // L = λ W per pool.
            prop_assert!((d.ports_needed_per_pool - d.per_pool_per_s * o.hold_s).abs() <= 1e-6 * d.ports_needed_per_pool.max(1.0));
            // At the sustainable rate the pool is exactly full.
            if let Some(r) = o.per_pool_per_s {
                prop_assert!((r * o.hold_s - f64::from(o.usable_ports)).abs() <= 1e-6 * f64::from(o.usable_ports).max(1.0));
                prop_assert_eq!(d.fits, d.per_pool_per_s <= r * (1.0 + 1e-12));
            }
            // Exhaustion: λ t = U.
            if let Some(t) = d.time_to_exhaustion_s {
                prop_assert!((t * d.per_pool_per_s - f64::from(o.usable_ports)).abs() <= 1e-6 * f64::from(o.usable_ports).max(1.0));
                prop_assert!(t <= o.hold_s + 1e-9, "a pool that does not fit fills before the first port frees");
            }
        }
    }

    #[test]
    fn proposed_fits_do_fit(s in scenario_strategy()) {
        for c in changes(&s) {
            if c.fits {
                prop_assert!(c.ports_needed_per_pool <= f64::from(c.usable_ports) + 1e-9, "{:?}", c);
            }
        }
    }
}

#[test]
fn udp_holds_ports_for_the_socket_lifetime_in_one_pool() {
    let mut s = Preset::LinuxDefault.scenario();
    s.udp = true;
    s.lifetime_s = 5.0;
    s.destinations = 8; // no effect: one pool for every destination
    s.rate_per_s = Some(2000.0);
    assert_eq!(hold_time(&s), (5.0, HoldReason::UdpSocketLifetime));
    assert_eq!(pools(&s), (1, Scope::Udp));
    let o = evaluate(&s);
    let d = o.demand.unwrap();
    assert!(close(d.ports_needed_per_pool, 10_000.0, 1e-9));
    assert!(d.fits);
    // Held sockets are concurrency: with 20,000 ports held the same demand does not fit, and
    // the changes are a shorter socket life or a wider range (shared with TCP).
    s.bound_ports = 20_000;
    assert!(!evaluate(&s).demand.unwrap().fits);
    let ids: Vec<String> = changes(&s).into_iter().map(|c| c.id).collect();
    assert_eq!(
        ids,
        ["app.udp_socket_lifetime", "net.ipv4.ip_local_port_range"]
    );
    assert!(changes(&s).iter().all(|c| c.fits), "{:?}", changes(&s));
}
