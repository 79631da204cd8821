//! `portdoctor top`: the imperative shell around `top::App`. It builds the collector (which opens
//! the target namespace once) on the main thread, collects on a worker thread so keys stay
//! responsive, and owns the terminal: raw mode and the alternate screen are undone
//! on q/Ctrl-C, on error (Drop) and after a panic (hook; release builds abort after the hook).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::crossterm::{cursor, execute, terminal};
use ratatui::Terminal;

use portdoctor::collect::refresh::{next_wait, Policy, RefreshInfo, Refresher};
use portdoctor::collect::{self, Collector};
use portdoctor::snapshot::{file, NamespaceIdentity, Snapshot};
use portdoctor::top::failures::TracedFailure;
use portdoctor::top::{render, render_text, state::Action, App, Key, ViewOptions};

use super::{usage, use_color, write_stdout};
use crate::cli::TopArgs;

pub fn run(args: &TopArgs) -> anyhow::Result<ExitCode> {
    if !(0.1..=3600.0).contains(&args.interval) {
        return Ok(usage("--interval must be between 100ms and 1h"));
    }
    let thresholds = match args.thresholds.thresholds() {
        Ok(t) => t,
        Err(e) => return Ok(usage(e)),
    };
    let interval = Duration::from_secs_f64(args.interval);
    // A saved snapshot (`--load`), or a collector for this host (its target opened once).
    // Whose failures FAIL/s counts: the target's namespace, or every one with -A.
    let mut trace: Option<Option<portdoctor::snapshot::Target>> = None;
    let (mut app, source) = if let Some(path) = &args.load {
        let snapshot = file::load(path)?;
        let app = App::loaded(snapshot, Instant::now(), interval, thresholds);
        (app, None)
    } else {
        let opts = match args.target.collect_options() {
            Ok(o) => o,
            Err(e) => return Ok(usage(e)),
        };
        let owners = opts.owners;
        trace = Some((!args.scope.all_namespaces).then(|| opts.target.clone()));
        let source = if args.scope.all_namespaces {
            match all_namespaces(opts, args.scope.pods_dir.as_deref()) {
                Ok(s) => s,
                Err(e) => return Ok(usage(e)),
            }
        } else {
            Source::One(collect::native(opts)?)
        };
        (App::new(interval, thresholds), Some((source, owners)))
    };
    if args.once {
        match &source {
            None => {}
            Some((Source::One(collector), _)) => app.ingest(Instant::now(), collector.snapshot()?),
            #[cfg(target_os = "linux")]
            Some((Source::All(opts, discovery), _)) => {
                let found = collect_all(opts, discovery)?;
                app.ingest_namespaces(Instant::now(), identified(found));
            }
        }
        let tty = std::io::stdout().is_terminal();
        let (w, h) = match terminal::size() {
            Ok((w, h)) if tty && w > 0 && h > 0 => (w, h),
            _ => {
                let pools = app.current.as_ref().map_or(0, |c| c.rows().count());
                (100, (pools as u16).saturating_add(6).clamp(8, 60))
            }
        };
        write_stdout(render_text(&app, w, h).as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    }
    if !std::io::stdout().is_terminal() {
        return Ok(usage(
            "top needs a terminal; use `portdoctor top --once` (or `check`) in scripts",
        ));
    }
    let color = use_color(args.output.color);
    let failures = trace.and_then(|target| start_failure_tracer(&mut app, target.as_ref()));
    interactive(app, source, failures.as_ref(), ViewOptions { color })
}

/// What top collects: one namespace (through the refresher, which reuses dumps), or every
/// namespace (`-A`, discovered anew at each refresh).
enum Source {
    One(Box<dyn Collector>),
    #[cfg(target_os = "linux")]
    All(collect::CollectOptions, Discovery),
}

#[cfg(target_os = "linux")]
use portdoctor::collect::linux::namespaces::{collect_all, AllNamespaces, Discovery};

#[cfg(target_os = "linux")]
#[allow(clippy::unnecessary_wraps)] // the same signature as elsewhere
fn all_namespaces(
    opts: collect::CollectOptions,
    pods_dir: Option<&std::path::Path>,
) -> Result<Source, String> {
    let mut discovery = Discovery::default();
    if let Some(dir) = pods_dir {
        discovery.pods_dir = dir.to_path_buf();
    }
    Ok(Source::All(opts, discovery))
}

#[cfg(not(target_os = "linux"))]
fn all_namespaces(
    _opts: collect::CollectOptions,
    _pods_dir: Option<&std::path::Path>,
) -> Result<Source, String> {
    Err(format!(
        "--all-namespaces reads Linux network namespaces; on {} leave it out",
        std::env::consts::OS
    ))
}

#[cfg(target_os = "linux")]
fn identified(found: AllNamespaces) -> Vec<(NamespaceIdentity, Snapshot)> {
    found
        .namespaces
        .into_iter()
        .map(|n| (n.identity, n.snapshot))
        .collect()
}

/// The worker's way of collecting.
enum Mode {
    One(Box<Refresher>),
    #[cfg(target_os = "linux")]
    All(collect::CollectOptions, Discovery),
}

/// One refresh's result.
enum Sampled {
    One(Box<Snapshot>, RefreshInfo),
    /// Every namespace, and how long collecting them took.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    All(Vec<(NamespaceIdentity, Snapshot)>, Duration),
}

enum ToWorker {
    Interval(Duration),
    Paused(bool),
    Now,
}

/// A refresh: when it started, and what it found (with the pause to the next one).
type Sample = (Instant, Result<(Sampled, Duration), String>);

/// Collects every `interval` (or at once on `Now`), not while paused; ends when `top` drops
/// its sender.
fn worker(
    source: Source,
    owners: bool,
    mut interval: Duration,
    rx: &mpsc::Receiver<ToWorker>,
    tx: &mpsc::Sender<Sample>,
) {
    let policy = Policy::default();
    let mut mode = match source {
        Source::One(collector) => Mode::One(Box::new(Refresher::new(collector, owners, policy))),
        #[cfg(target_os = "linux")]
        Source::All(opts, discovery) => Mode::All(opts, discovery),
    };
    let mut paused = false;
    let mut next = Instant::now();
    loop {
        let wait = next.saturating_duration_since(Instant::now());
        match rx.recv_timeout(if paused {
            Duration::from_secs(3600)
        } else {
            wait
        }) {
            Ok(ToWorker::Interval(d)) => {
                next = next.checked_sub(interval).map_or(next, |t| t + d);
                interval = d;
                continue;
            }
            Ok(ToWorker::Paused(p)) => {
                paused = p;
                next = Instant::now();
                continue;
            }
            Err(mpsc::RecvTimeoutError::Timeout) if paused => continue,
            Ok(ToWorker::Now) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        let result = match &mut mode {
            Mode::One(refresher) => refresher.refresh(now).map(|(snapshot, info)| {
                let wait = next_wait(interval, info.took, &policy);
                (Sampled::One(Box::new(snapshot), info), wait)
            }),
            #[cfg(target_os = "linux")]
            Mode::All(opts, discovery) => collect_all(opts, discovery).map(|found| {
                let took = now.elapsed();
                let wait = next_wait(interval, took, &policy);
                (Sampled::All(identified(found), took), wait)
            }),
        };
        let wait = result.as_ref().map_or(interval, |r| r.1);
        if tx.send((now, result.map_err(|e| e.to_string()))).is_err() {
            return;
        }
        next = Instant::now() + wait;
    }
}

/// Starts the failure tracer (docs/failures.md) on a thread of its own: it drains the perf
/// buffers every 20 ms and sends what failed in `target`'s namespace (every namespace: `None`).
/// When it cannot run, the header says failures are not traced.
#[cfg(target_os = "linux")]
fn start_failure_tracer(
    app: &mut App,
    target: Option<&portdoctor::snapshot::Target>,
) -> Option<mpsc::Receiver<Vec<TracedFailure>>> {
    use portdoctor::collect::linux::failures::{target_id, FailureTracer, DRAIN_EVERY};
    let mut tracer = match FailureTracer::start() {
        Ok(t) => t,
        Err(e) => {
            app.failure_note = Some(e.to_string());
            return None;
        }
    };
    let want = target.and_then(target_id);
    let one_namespace = target.is_some();
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("failure-tracer".into())
        .spawn(move || {
            let mut forgot = std::time::Instant::now();
            loop {
                tracer.wait(DRAIN_EVERY);
                let unix_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                let mut batch = Vec::new();
                for f in tracer.drain() {
                    let info = tracer.process(f.pid);
                    let netns = info.and_then(|p| p.netns);
                    if one_namespace && netns != want {
                        continue;
                    }
                    batch.push(TracedFailure {
                        unix_ms,
                        pid: f.pid,
                        process: info.and_then(|p| p.name.clone()),
                        netns: netns.map(|id| id.ino),
                        local_ip: f.local_ip,
                        remote_ip: f.remote_ip,
                        remote_port: f.remote_port,
                        error: f.error,
                    });
                }
                if !batch.is_empty() && tx.send(batch).is_err() {
                    return;
                }
                if forgot.elapsed() >= std::time::Duration::from_secs(10) {
                    forgot = std::time::Instant::now();
                    tracer.forget_exited();
                }
            }
        });
    if let Err(e) = spawned {
        app.failure_note = Some(format!("could not start the failure tracer: {e}"));
        return None;
    }
    app.failures = Some(portdoctor::top::failures::Failures::new(Instant::now()));
    app.failure_netns = want.map_or(0, |id| id.ino);
    Some(rx)
}

#[cfg(not(target_os = "linux"))]
fn start_failure_tracer(
    _app: &mut App,
    _target: Option<&portdoctor::snapshot::Target>,
) -> Option<mpsc::Receiver<Vec<TracedFailure>>> {
    None
}

/// Restores the terminal when dropped (normal exit and errors).
struct TerminalGuard;

fn restore_terminal() {
    let _ = terminal::disable_raw_mode();
    let _ = execute!(
        std::io::stdout(),
        terminal::LeaveAlternateScreen,
        cursor::Show
    );
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

fn key_of(ev: &event::KeyEvent) -> Option<Key> {
    if ev.kind == KeyEventKind::Release {
        return None;
    }
    Some(match ev.code {
        KeyCode::Char('c') if ev.modifiers.contains(KeyModifiers::CONTROL) => Key::CtrlC,
        KeyCode::Char(c) => Key::Char(c),
        KeyCode::Enter => Key::Enter,
        KeyCode::Esc => Key::Esc,
        KeyCode::Backspace => Key::Backspace,
        KeyCode::Up => Key::Up,
        KeyCode::Down => Key::Down,
        KeyCode::PageUp => Key::PageUp,
        KeyCode::PageDown => Key::PageDown,
        KeyCode::Home => Key::Home,
        KeyCode::End => Key::End,
        _ => return None,
    })
}

/// Runs the terminal UI; `source` `None`: nothing to collect (a loaded snapshot), no worker.
fn interactive(
    mut app: App,
    source: Option<(Source, bool)>,
    failures: Option<&mpsc::Receiver<Vec<TracedFailure>>>,
    view: ViewOptions,
) -> anyhow::Result<ExitCode> {
    let (to_worker, worker_rx) = mpsc::channel();
    let (sample_tx, samples) = mpsc::channel::<Sample>();
    let interval = app.interval;
    if let Some((source, owners)) = source {
        std::thread::Builder::new()
            .name("top-collect".into())
            .spawn(move || worker(source, owners, interval, &worker_rx, &sample_tx))?;
    }

    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_terminal();
        previous(info);
    }));
    terminal::enable_raw_mode()?;
    let _guard = TerminalGuard;
    execute!(
        std::io::stdout(),
        terminal::EnterAlternateScreen,
        cursor::Hide
    )?;
    let mut term = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
    term.clear()?;

    // Fault injection for the terminal-restore test (debug builds only).
    #[cfg(debug_assertions)]
    let panic_after: Option<u64> = std::env::var("PORTDOCTOR_FAULT_TOP_PANIC_AFTER_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok());
    let mut dirty = true;
    loop {
        #[cfg(debug_assertions)]
        assert!(
            panic_after.is_none_or(|n| app.samples < n),
            "fault injection: PORTDOCTOR_FAULT_TOP_PANIC_AFTER_SAMPLES"
        );
        if dirty {
            term.draw(|f| render(&app, view, f.area(), f.buffer_mut()))?;
            dirty = false;
        }
        // Keys are read at once; samples within 100 ms of arriving. Idle, this wakes 10×/s.
        if event::poll(Duration::from_millis(100))? {
            match event::read()? {
                Event::Key(k) => {
                    if let Some(key) = key_of(&k) {
                        let was_paused = app.paused;
                        match app.handle_key(key) {
                            Action::Quit => break,
                            Action::None => {}
                            Action::Redraw => dirty = true,
                            Action::Reschedule => {
                                let _ = to_worker.send(ToWorker::Interval(app.interval));
                                dirty = true;
                            }
                            Action::Refresh => {
                                let _ = to_worker.send(ToWorker::Now);
                            }
                        }
                        if app.paused != was_paused {
                            let _ = to_worker.send(ToWorker::Paused(app.paused));
                        }
                    }
                }
                Event::Resize(..) => {
                    term.autoresize()?;
                    dirty = true;
                }
                _ => {}
            }
        }
        if let (Some(rx), Some(f)) = (failures, &mut app.failures) {
            while let Ok(batch) = rx.try_recv() {
                for x in batch {
                    f.add(x);
                }
                dirty = true;
            }
        }
        while let Ok((at, result)) = samples.try_recv() {
            match result {
                Ok((Sampled::One(snapshot, info), wait)) => {
                    app.ingest(at, *snapshot);
                    app.refresh = Some(info);
                    app.cycle = Some(info.took + wait);
                }
                Ok((Sampled::All(namespaces, took), wait)) => {
                    app.ingest_namespaces(at, namespaces);
                    app.cycle = Some(took + wait);
                }
                Err(e) => app.error = Some(e),
            }
            dirty = true;
        }
    }
    drop(term);
    Ok(ExitCode::SUCCESS)
}
