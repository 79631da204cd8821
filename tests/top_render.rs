//! `portdoctor top` rendered on ratatui's TestBackend from fixture snapshot sequences.

use std::time::{Duration, Instant};

use insta::assert_snapshot;
use portdoctor::analysis::Thresholds;
use portdoctor::fixture::SnapshotBuilder;
use portdoctor::snapshot::Snapshot;
use portdoctor::top::{render, App, Key, ViewOptions};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

fn frame(app: &App, w: u16, h: u16) -> String {
    let mut term = Terminal::new(TestBackend::new(w, h)).expect("test backend");
    term.draw(|f| render(app, ViewOptions { color: false }, f.area(), f.buffer_mut()))
        .expect("draw");
    portdoctor::top::view::buffer_text(term.backend().buffer())
}

/// Feeds snapshots one second apart.
fn app_fed(snaps: Vec<Snapshot>) -> App {
    let t0 = Instant::now();
    let mut app = App::new(Duration::from_secs(1), Thresholds::default());
    for (i, s) in snaps.into_iter().enumerate() {
        app.ingest(t0 + Duration::from_secs(i as u64), s);
    }
    app
}

fn critical(tw: u32) -> Snapshot {
    SnapshotBuilder::linux()
        .tw_reuse(0)
        .pool("10.0.0.5", "10.0.0.9", 5432, 300, tw, (0, 59_000))
        .owned_by(1234, "api-server")
        .restart_ports()
        .pool("10.0.0.5", "10.0.0.12", 443, 40, 2_000, (0, 59_000))
        .build()
}

fn many(step: u32) -> Snapshot {
    let mut b = SnapshotBuilder::linux();
    for i in 0..30u32 {
        b = b.restart_ports().pool(
            "10.0.0.5",
            &format!("10.0.1.{i}"),
            8080,
            10 + i * 7 + step,
            i * 300,
            (0, 59_000),
        );
    }
    b.owned_by(4242, "worker").build()
}

#[test]
fn empty_host() {
    let app = app_fed(vec![SnapshotBuilder::linux().build()]);
    assert_snapshot!(frame(&app, 100, 12));
}

#[test]
fn many_pools() {
    let app = app_fed(vec![many(0), many(5)]);
    assert_snapshot!(frame(&app, 120, 30));
}

#[test]
fn critical_pool_with_rates_from_two_samples() {
    let app = app_fed(vec![critical(24_000), critical(26_000)]);
    assert_snapshot!(frame(&app, 100, 12));
}

#[test]
fn narrow_80x24() {
    let app = app_fed(vec![many(0), many(3)]);
    assert_snapshot!(frame(&app, 80, 24));
}

#[test]
fn detail_pane() {
    let mut app = app_fed(vec![critical(20_000), critical(22_000), critical(24_000)]);
    app.handle_key(Key::Enter);
    assert_snapshot!(frame(&app, 120, 24));
    assert_snapshot!("detail_pane_80x24", frame(&app, 80, 24));
}

#[test]
fn filter_active() {
    let mut app = app_fed(vec![many(0)]);
    app.handle_key(Key::Char('/'));
    for c in "10.0.1.2".chars() {
        app.handle_key(Key::Char(c));
    }
    assert_snapshot!(frame(&app, 100, 16));
    app.handle_key(Key::Char('x'));
    assert_snapshot!("filter_no_match", frame(&app, 100, 8));
}

/// `top --load FILE` shows the saved snapshot, paused: `--once` prints exactly the frame the
/// library renders for that snapshot, and keys that would collect do nothing.
#[test]
fn loaded_snapshot_is_shown_paused() {
    let snap = critical(6_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("critical.snapshot.json");
    portdoctor::snapshot::file::save(&snap, &path).expect("save");

    let mut app = App::loaded(
        snap,
        Instant::now(),
        Duration::from_secs(1),
        Thresholds::default(),
    );
    assert!(app.paused && app.loaded);
    for key in [
        Key::Char(' '),
        Key::Char('r'),
        Key::Char('+'),
        Key::Char('-'),
    ] {
        assert_eq!(
            app.handle_key(key),
            portdoctor::top::state::Action::None,
            "{key:?}"
        );
    }
    assert!(app.paused);
    let pools = app.current.as_ref().map_or(0, |c| c.analysis.pools.len());
    // The frame size `top --once` picks when stdout is not a terminal.
    let want = portdoctor::top::render_text(&app, 100, (pools as u16 + 6).clamp(8, 60));
    assert!(
        want.contains("PAUSED") && want.contains("10.0.0.9:5432"),
        "{want}"
    );

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portdoctor"))
        .args(["top", "--once", "--load"])
        .arg(&path)
        .output()
        .expect("run portdoctor top");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portdoctor"))
        .args(["top", "--once", "--load"])
        .arg(dir.path().join("missing.json"))
        .output()
        .expect("run portdoctor top");
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.json"));
}

/// While the failure tracer runs, FAIL/s shows each pool's failed connect() calls per second
/// between the last two samples (50 over 2 s: 25), the header their total, and the detail pane
/// the last failures (time, process, pool), repeats folded.
#[test]
fn fail_per_second_column_and_last_failures() {
    use portdoctor::snapshot::FailureError;
    use portdoctor::top::failures::{Failures, TracedFailure};
    let t0 = Instant::now();
    let mut app = App::new(Duration::from_secs(1), Thresholds::default());
    app.failures = Some(Failures::new(t0));
    app.ingest(t0, critical(24_000));
    let fail = |pid: u32, name: &str, port: u16, netns: u64| TracedFailure {
        unix_ms: 1_795_814_043_512,
        pid,
        process: Some(name.into()),
        netns: Some(netns),
        local_ip: Some("10.0.0.5".parse().unwrap()),
        remote_ip: Some("10.0.0.9".parse().unwrap()),
        remote_port: Some(port),
        error: FailureError::AddrNotAvail,
    };
    let f = app.failures.as_mut().unwrap();
    for _ in 0..40 {
        f.add(fail(1234, "api-server", 5432, 0));
    }
    for _ in 0..10 {
        f.add(fail(77, "cron", 5432, 0));
    }
    // Another pool, another namespace: not this pool's.
    f.add(fail(1234, "api-server", 443, 0));
    f.add(fail(9, "elsewhere", 5432, 4_026_532_000));
    app.ingest(t0 + Duration::from_secs(2), critical(26_000));
    let table = frame(&app, 100, 12);
    let row = table
        .lines()
        .find(|l| l.starts_with("10.0.0.5 → 10.0.0.9:5432"))
        .unwrap_or_default();
    assert!(table.contains("FAIL/s"), "{table}");
    assert!(row.split_whitespace().any(|w| w == "25"), "{table}");
    assert_snapshot!(table);
    app.handle_key(Key::Enter);
    let detail = frame(&app, 120, 24);
    assert!(
        detail.contains("failed 21:14:03 UTC cron (pid 77) ×10 10.0.0.5 → 10.0.0.9:5432")
            && detail.contains("api-server (pid 1234) ×40"),
        "{detail}"
    );
    assert_snapshot!("fail_detail_pane", detail);
}
