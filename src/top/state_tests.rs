use std::time::{Duration, Instant};

use super::*;
use crate::fixture::SnapshotBuilder;
use crate::snapshot::NamespaceIdentity;

/// A Linux host with one pool to 10.0.0.9:5432 of `est` established connections (no
/// TIME_WAIT, so the TIME_WAIT-age rate is 0 and the count change is all there is).
fn one_pool(est: u32) -> Snapshot {
    SnapshotBuilder::linux()
        .pool("10.0.0.5", "10.0.0.9", 5432, est, 0, (0, 0))
        .build()
}

fn two_pools(a: u32, b: u32) -> Snapshot {
    SnapshotBuilder::linux()
        .pool("10.0.0.5", "10.0.0.9", 5432, a, 0, (0, 0))
        .restart_ports()
        .pool("10.0.0.5", "10.0.0.12", 443, b, 0, (0, 0))
        .build()
}

fn app() -> App {
    App::new(Duration::from_secs(1), Thresholds::default())
}

fn stats_of<'a>(app: &'a App, remote: &str) -> &'a PoolStats {
    let p = app
        .current
        .as_ref()
        .unwrap()
        .analysis
        .pools
        .iter()
        .find(|p| p.key.remote_ip.unwrap().to_string() == remote)
        .unwrap();
    &app.stats[&pool_id(p)]
}

#[test]
fn growth_is_exact_change_over_elapsed() {
    let t0 = Instant::now();
    let mut a = app();
    a.ingest(t0, one_pool(100));
    // First sample: no growth known yet; rate from TIME_WAIT ages (0 here).
    assert_eq!(stats_of(&a, "10.0.0.9").growth_per_s, None);
    assert_eq!(stats_of(&a, "10.0.0.9").connect_per_s, Some(0.0));
    a.ingest(t0 + Duration::from_millis(2500), one_pool(600));
    let s = stats_of(&a, "10.0.0.9");
    assert_eq!(s.growth_per_s, Some(200.0)); // 500 ports in 2.5 s
                                             // ETA = free / growth = (28232 - 600) / 200.
    assert_eq!(s.eta_seconds, Some((28_232.0 - 600.0) / 200.0));
    a.ingest(t0 + Duration::from_millis(3500), one_pool(400));
    let s = stats_of(&a, "10.0.0.9");
    assert_eq!(s.growth_per_s, Some(-200.0));
    assert_eq!(s.eta_seconds, None);
    assert_eq!(s.history.len(), 3);
}

#[test]
fn time_wait_ages_give_the_rate_on_the_first_sample() {
    // 300 TIME_WAIT entries aged 0..10 s: 30/s over the 10 s window.
    let snap = SnapshotBuilder::linux()
        .tw_reuse(0)
        .pool("10.0.0.5", "10.0.0.9", 80, 0, 300, (0, 10_000))
        .build();
    let mut a = app();
    a.ingest(Instant::now(), snap);
    assert_eq!(stats_of(&a, "10.0.0.9").connect_per_s, Some(30.0));
    assert!(!stats_of(&a, "10.0.0.9").connect_is_lower_bound);
}

#[test]
fn windows_without_timers_uses_rise_of_in_use() {
    let t0 = Instant::now();
    let win = |n: u32| {
        SnapshotBuilder::windows()
            .pool("10.0.0.5", "10.0.0.9", 80, n, 5, (0, 0))
            .build()
    };
    let mut a = App::new(Duration::from_secs(1), Thresholds::default());
    a.ingest(t0, win(10));
    let id = pool_id(&a.current.as_ref().unwrap().analysis.pools[0]);
    assert_eq!(a.stats[&id].connect_per_s, None);
    a.ingest(t0 + Duration::from_secs(2), win(50));
    assert_eq!(a.stats[&id].connect_per_s, Some(20.0));
    assert!(a.stats[&id].connect_is_lower_bound);
    // Shown as a lower bound.
    let screen = crate::top::render_text(&a, 100, 10);
    assert!(screen.contains("≥20"), "{screen}");
}

#[test]
fn a_pool_that_appears_grows_from_zero_and_one_that_goes_drains_to_zero() {
    let t0 = Instant::now();
    let mut a = app();
    a.ingest(t0, one_pool(10));
    a.ingest(t0 + Duration::from_secs(1), two_pools(10, 40));
    assert_eq!(stats_of(&a, "10.0.0.12").growth_per_s, Some(40.0));
    let gone = pool_id(
        a.current
            .as_ref()
            .unwrap()
            .analysis
            .pools
            .iter()
            .find(|p| p.in_use == 40)
            .unwrap(),
    );
    a.ingest(t0 + Duration::from_secs(3), one_pool(10));
    assert_eq!(a.stats[&gone].growth_per_s, Some(-20.0));
    assert_eq!(a.stats[&gone].used, 0);
    // Forgotten once out of the history window.
    a.ingest(t0 + HISTORY_WINDOW + Duration::from_secs(5), one_pool(10));
    assert!(!a.stats.contains_key(&gone));
}

#[test]
fn history_is_bounded_by_window_and_points() {
    let t0 = Instant::now();
    let mut a = app();
    for i in 0..2000u64 {
        a.ingest(t0 + Duration::from_millis(500 * i), one_pool(10));
    }
    let s = stats_of(&a, "10.0.0.9");
    assert_eq!(s.history.len(), HISTORY_MAX_POINTS);
    // Memory: no doubling past the bound (2,000 pushes, one allocation).
    assert!(s.history.capacity() <= HISTORY_MAX_POINTS + 1);
    assert_eq!(std::mem::size_of::<Point>(), 24);
    let p = s.history.back().unwrap();
    assert!((p.utilization().unwrap() - 10.0 / 28_232.0).abs() < 1e-6);
    assert!(Point::new(t0, None, Some(2.5)).utilization().is_none());
    assert_eq!(Point::new(t0, None, Some(2.5)).connect_per_s(), Some(2.5));
    let mut b = app();
    for i in 0..100u64 {
        b.ingest(t0 + Duration::from_secs(30 * i), one_pool(10));
    }
    let s = stats_of(&b, "10.0.0.9");
    // 600 s window at 30 s: the points at most 600 s old (21 of them).
    assert_eq!(s.history.len(), 21);
    let newest = s.history.back().unwrap().at;
    assert!(s.history.iter().all(|p| newest - p.at <= HISTORY_WINDOW));
}

#[test]
fn sorting_and_filter() {
    let snap = SnapshotBuilder::linux()
        .pool("10.0.0.5", "10.0.0.9", 5432, 30, 0, (0, 0))
        .restart_ports()
        .pool("10.0.0.5", "10.0.0.12", 443, 50, 0, (0, 0))
        .restart_ports()
        .pool("10.0.0.5", "10.0.0.7", 6379, 20, 0, (0, 0))
        .owned_by(77, "redis-client")
        .build();
    let mut a = app();
    a.ingest(Instant::now(), snap);
    let order = |a: &App| -> Vec<u64> { a.visible().iter().map(|p| p.in_use).collect() };
    assert_eq!(order(&a), vec![50, 30, 20]); // utilization
    assert_eq!(a.handle_key(Key::Char('a')), Action::Redraw);
    assert_eq!(order(&a), vec![20, 30, 50]); // by name: 10.0.0.7 < 10.0.0.9 < 10.0.0.12
    a.handle_key(Key::Char('s'));
    assert_eq!(a.sort, SortBy::Utilization);
    a.handle_key(Key::Char('/'));
    for c in "6379".chars() {
        a.handle_key(Key::Char(c));
    }
    assert!(a.editing_filter);
    assert_eq!(order(&a), vec![20]);
    a.handle_key(Key::Enter);
    assert!(!a.editing_filter);
    assert_eq!(a.selected_pool().unwrap().in_use, 20);
    // q while not editing quits; while editing it is a filter character.
    a.handle_key(Key::Esc);
    assert_eq!(order(&a).len(), 3);
    a.handle_key(Key::Char('/'));
    a.handle_key(Key::Char('q'));
    assert_eq!(a.filter, "q");
    a.handle_key(Key::Esc);
    // Owner names match too.
    a.handle_key(Key::Char('/'));
    for c in "redis".chars() {
        a.handle_key(Key::Char(c));
    }
    a.handle_key(Key::Enter);
    assert_eq!(
        order(&a).len(),
        3,
        "every socket here is owned by redis-client"
    );
    assert_eq!(a.handle_key(Key::Char('q')), Action::Quit);
    assert_eq!(a.handle_key(Key::CtrlC), Action::Quit);
}

#[test]
fn pause_ignores_samples_and_selection_follows_the_pool() {
    let t0 = Instant::now();
    let mut a = app();
    a.ingest(t0, two_pools(10, 40));
    a.handle_key(Key::Down);
    let chosen = a.selected.unwrap();
    assert_eq!(a.selected_pool().unwrap().in_use, 10);
    a.handle_key(Key::Char(' '));
    a.ingest(t0 + Duration::from_secs(1), two_pools(10, 99));
    assert_eq!(a.samples, 1);
    a.handle_key(Key::Char(' '));
    // The 10-pool overtakes the other: the selection stays on it.
    a.ingest(t0 + Duration::from_secs(2), two_pools(60, 5));
    assert_eq!(a.selected, Some(chosen));
    assert_eq!(a.visible()[0].in_use, 60);
}

#[test]
fn interval_steps_within_bounds() {
    let mut a = app();
    assert_eq!(a.handle_key(Key::Char('+')), Action::Reschedule);
    assert_eq!(a.interval, Duration::from_secs(2));
    for _ in 0..10 {
        a.handle_key(Key::Char('-'));
    }
    assert_eq!(a.interval, Duration::from_millis(500));
    assert_eq!(a.handle_key(Key::Char('-')), Action::None);
}

#[test]
fn a_stretched_refresh_cycle_is_shown_in_the_header() {
    let mut a = app();
    a.ingest(Instant::now(), one_pool(10));
    let header = |a: &App| {
        crate::top::render_text(a, 100, 8)
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    };
    a.cycle = Some(Duration::from_millis(1020));
    assert!(header(&a).contains("every 1 s  "), "{}", header(&a));
    a.cycle = Some(Duration::from_secs(6));
    assert!(
        header(&a).contains("every 1 s (slow: 6 s)"),
        "{}",
        header(&a)
    );
}

fn ns_identity(ino: u64, own: bool, pod: Option<(&str, &str)>) -> NamespaceIdentity {
    use crate::snapshot::{NetnsId, Pod};
    NamespaceIdentity {
        id: NetnsId { dev: 4, ino },
        name: None,
        found_in: Vec::new(),
        pids: vec![1],
        container: None,
        pod: pod.map(|(ns, name)| Pod {
            namespace: ns.into(),
            name: name.into(),
            uid: "1b4e28ba-2fa1-11d2-883f-0016d3cca427".into(),
        }),
        own,
    }
}

/// Three namespaces whose loopback pools have the same key: `est` connections each.
fn three_namespaces(own: u32, web: u32, api: u32) -> Vec<(NamespaceIdentity, Snapshot)> {
    let snap = |n: u32| {
        SnapshotBuilder::linux()
            .range(40000, 40099)
            .pool("127.0.0.1", "127.0.0.1", 8080, n, 0, (0, 0))
            .build()
    };
    vec![
        (ns_identity(10, true, None), snap(own)),
        (ns_identity(11, false, Some(("shop", "web-1"))), snap(web)),
        (
            ns_identity(12, false, Some(("payments", "api-7f9"))),
            snap(api),
        ),
    ]
}

/// `-A`: the same pool key in three namespaces is three rows with their own stats, sorted by
/// utilization across namespaces; the filter matches pod names; the selection follows the
/// namespace's pool, and the detail pane names the pod.
#[test]
fn every_namespace_one_row_per_pool_filter_by_pod() {
    let t0 = Instant::now();
    let mut a = app();
    a.ingest_namespaces(t0, three_namespaces(10, 80, 30));
    let rows = |a: &App| -> Vec<(Option<String>, u64)> {
        a.visible()
            .iter()
            .map(|r| (r.namespace.map(|n| namespace_label(&n.identity)), r.in_use))
            .collect()
    };
    assert_eq!(
        rows(&a),
        vec![
            (Some("shop/web-1".into()), 80),
            (Some("payments/api-7f9".into()), 30),
            (None, 10)
        ]
    );
    assert_eq!(a.stats.len(), 3, "one history per namespace's pool");
    // The filter matches the pod's name and namespace.
    a.handle_key(Key::Char('/'));
    for c in "payments".chars() {
        a.handle_key(Key::Char(c));
    }
    a.handle_key(Key::Enter);
    assert_eq!(rows(&a), vec![(Some("payments/api-7f9".into()), 30)]);
    let chosen = a.selected.unwrap();
    a.handle_key(Key::Esc);
    // The selection stays on that namespace's pool as the others grow past it.
    a.selected = Some(chosen);
    a.ingest_namespaces(t0 + Duration::from_secs(1), three_namespaces(90, 95, 31));
    assert_eq!(a.selected, Some(chosen));
    let sel = a.selected_pool().unwrap();
    assert_eq!(sel.in_use, 31);
    assert!((a.stats[&chosen].growth_per_s.unwrap() - 1.0).abs() < 1e-9);
    // The detail pane says which pod the pool is in.
    a.handle_key(Key::Enter);
    let text = crate::top::render_text(&a, 120, 30);
    assert!(text.contains("pod payments/api-7f9"), "{text}");
    assert!(
        text.contains("NAMESPACE/POD") && text.contains("3 netns, worst"),
        "{text}"
    );
}

/// UDP pools are rows next to TCP ones, sorted by use; `/udp` and `/tcp` filter by protocol,
/// and the UDP row's findings are the UDP pool's.
#[test]
fn udp_pools_are_rows_and_the_filter_picks_a_protocol() {
    use crate::snapshot::UdpSocket;
    let mut snap = one_pool(100);
    snap.udp_sockets = std::sync::Arc::new(
        (0..25_000u16)
            .map(|i| UdpSocket {
                local_ip: "0.0.0.0".parse().unwrap(),
                local_port: 32768 + i,
                remote_ip: "0.0.0.0".parse().unwrap(),
                remote_port: 0,
                ipv6_socket: false,
                v6only: None,
                inode: u64::from(i) + 1,
                uid: None,
                pid: None,
            })
            .collect(),
    );
    let mut a = app();
    a.ingest(Instant::now(), snap);
    let rows = a.visible();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].scope, Scope::Udp, "the fuller pool first");
    assert_eq!(rows[0].in_use, 25_000);
    let codes: Vec<&str> = a
        .findings_for(&rows[0])
        .iter()
        .map(|f| f.code.as_str())
        .collect();
    assert_eq!(codes, ["udp_pool_near_exhaustion"]);
    a.filter = "udp".into();
    assert!(a.visible().iter().all(|r| r.scope == Scope::Udp));
    assert_eq!(a.visible().len(), 1);
    a.filter = "tcp".into();
    assert_eq!(a.visible().len(), 1);
    assert_eq!(a.visible()[0].scope, Scope::Destination);
}
