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
