use super::*;
use crate::fixture::SnapshotBuilder;

fn goal_set(k: &str, v: &str) -> Goal {
    Goal {
        sets: vec![(k.into(), v.into())],
        ..Goal::default()
    }
}

#[test]
fn explicit_range_widens_capacity() {
    let s = SnapshotBuilder::linux().build();
    let p = plan(&s, &goal_set("net.ipv4.ip_local_port_range", "10000 65000")).unwrap();
    assert!(p.refusals.is_empty(), "{:?}", p.refusals);
    assert_eq!(p.changes.len(), 1);
    assert_eq!(p.changes[0].current.as_deref(), Some("32768 60999"));
    assert_eq!(p.capacity_before.usable_ports, Some(28_232));
    assert_eq!(p.capacity_after.usable_ports, Some(55_001));
    assert_eq!(
        p.commands,
        vec!["sysctl -w net.ipv4.ip_local_port_range=\"10000 65000\""]
    );
    assert_eq!(
        p.dropin.unwrap().lines,
        vec!["net.ipv4.ip_local_port_range = 10000 65000"]
    );
}

#[test]
fn short_names_and_invalid_values() {
    let s = SnapshotBuilder::linux().build();
    let p = plan(&s, &goal_set("tcp_tw_reuse", "1")).unwrap();
    assert_eq!(p.changes[0].knob, "net.ipv4.tcp_tw_reuse");
    let e = plan(&s, &goal_set("tcp_tw_reuse", "3"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("net.ipv4.tcp_tw_reuse") && e.contains("0..=2"),
        "{e}"
    );
    let e = plan(&s, &goal_set("net.ipv4.ip_local_port_range", "900 65000"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("below 1024"), "{e}");
    let e = plan(&s, &goal_set("net.ipv4.ip_local_port_range", "60000 50000"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("above HIGH"), "{e}");
    assert!(matches!(
        plan(&s, &goal_set("net.ipv4.nope", "1")),
        Err(PlanError::UnknownKnob(..))
    ));
}

#[test]
fn range_over_a_listener_is_refused_unless_reserved() {
    let s = SnapshotBuilder::linux().listen("0.0.0.0", 20000).build();
    let p = plan(&s, &goal_set("net.ipv4.ip_local_port_range", "10000 65000")).unwrap();
    assert!(p.is_refused());
    assert!(p.refusals[0].contains("20000"), "{:?}", p.refusals);
    let g = Goal {
        sets: vec![
            ("net.ipv4.ip_local_port_range".into(), "10000 65000".into()),
            ("net.ipv4.ip_local_reserved_ports".into(), "20000".into()),
        ],
        ..Goal::default()
    };
    let p = plan(&s, &g).unwrap();
    assert!(!p.is_refused(), "{:?}", p.refusals);
    // A profile reserves the listener by itself.
    let p = plan(
        &s,
        &Goal {
            profile: Some(Profile::ClientHeavy),
            ..Goal::default()
        },
    )
    .unwrap();
    assert!(!p.is_refused(), "{:?}", p.refusals);
    assert!(p
        .changes
        .iter()
        .any(|c| c.knob == "net.ipv4.ip_local_reserved_ports" && c.proposed == "20000"));
}

#[test]
fn missing_reuse_delay_cannot_be_set() {
    let s = SnapshotBuilder::linux()
        .settings(|s| s.tw_reuse_delay_source = Some(ValueSource::Default))
        .build();
    let p = plan(&s, &goal_set("net.ipv4.tcp_tw_reuse_delay", "500")).unwrap();
    assert!(
        p.refusals.iter().any(|r| r.contains("does not exist")),
        "{:?}",
        p.refusals
    );
}

#[test]
fn target_rate_prefers_the_range_then_reuse() {
    let s = SnapshotBuilder::linux().tw_reuse(0).build();
    let g = |rate| Goal {
        target_rate_per_s: Some(rate),
        ..Goal::default()
    };
    // 600/s × 60 s = 36,000 ports: raise high first, then lower low.
    let p = plan(&s, &g(600.0)).unwrap();
    assert_eq!(p.changes.len(), 1, "{:#?}", p.changes);
    assert_eq!(p.changes[0].proposed, "29536 65535");
    assert_eq!(p.capacity_after.usable_ports, Some(36_000));
    assert!(p.capacity_after.rate_per_pool_per_s.unwrap() >= 600.0);
    // 2000/s cannot be held for 60 s: reuse instead, range unchanged.
    let p = plan(&s, &g(2000.0)).unwrap();
    assert_eq!(p.changes.len(), 1, "{:#?}", p.changes);
    assert_eq!(p.changes[0].knob, "net.ipv4.tcp_tw_reuse");
    // Already enough.
    let p = plan(&s, &g(100.0)).unwrap();
    assert!(p.changes.is_empty());
    // Out of reach.
    let p = plan(&s, &g(1e9)).unwrap();
    assert!(p.is_refused());
}

#[test]
fn tw_reuse_warns_with_many_inbound() {
    let mut b = SnapshotBuilder::linux().listen("0.0.0.0", 443);
    for i in 0..150u16 {
        b = b.established("10.0.0.5", 443, "10.9.0.1", 20000 + i);
    }
    let p = plan(&b.build(), &goal_set("net.ipv4.tcp_tw_reuse", "1")).unwrap();
    assert!(!p.is_refused());
    assert!(
        p.warnings.iter().any(|w| w.contains("150 inbound")),
        "{:?}",
        p.warnings
    );
}

#[test]
fn fin_timeout_says_it_does_not_shorten_time_wait() {
    let s = SnapshotBuilder::linux().build();
    let p = plan(&s, &goal_set("net.ipv4.tcp_fin_timeout", "30")).unwrap();
    assert!(p
        .warnings
        .iter()
        .any(|w| w.contains("does NOT shorten TIME_WAIT")));
}
