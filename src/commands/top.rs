//! `portdoctor top`: the imperative shell around `top::App`. It enters the namespace on the main
//! thread (setns is per thread; threads started later inherit it), collects on a worker thread
//! so keys stay responsive, and owns the terminal: raw mode and the alternate screen are undone
//! on q/Ctrl-C, on error (Drop) and after a panic (hook; release builds abort after the hook).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Args;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::crossterm::{cursor, execute, terminal};
use ratatui::Terminal;

use portdoctor::analysis::Thresholds;
use portdoctor::collect::refresh::{next_wait, Policy, RefreshInfo, Refresher};
use portdoctor::collect::{self, CollectOptions};
use portdoctor::snapshot::{file, Snapshot};
use portdoctor::top::{render, render_text, state::Action, App, Key, ViewOptions};

use super::{collect_options, use_color, write_stdout, EXIT_USAGE};
use crate::cli::{ColorArg, SourceArg};

const TOP_EXAMPLES: &str = "\
Keys: q/Ctrl-C quit · s sort (u use, i in use, n rate, e full in, a name) · / filter ·
space pause · +/- interval · ↑↓ select · Enter detail · r refresh now

Examples:
  portdoctor top                       watch this host, refresh every second
  portdoctor top --netns lab1          inside the network namespace /run/netns/lab1
  portdoctor top --interval 5s --no-owners
  portdoctor top --once | head         one frame as plain text, for scripts
  portdoctor top --load db1.snap.json  a snapshot saved with `check --save`, paused";

#[derive(Debug, Args)]
#[command(after_help = TOP_EXAMPLES)]
pub struct TopArgs {
    /// How often to collect (e.g. 500ms, 1s, 5s); + and - change it while running
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = crate::units_parse_duration)]
    pub interval: f64,
    /// Print one frame as plain text to stdout and exit (no raw mode; width of the terminal,
    /// or 100 columns)
    #[arg(long)]
    pub once: bool,
    /// Skip the /proc/*/fd scan that finds owning processes (cheaper refreshes)
    #[arg(long)]
    pub no_owners: bool,
    /// Inspect the network namespace /run/netns/NAME
    #[arg(long, value_name = "NAME", conflicts_with = "pid")]
    pub netns: Option<String>,
    /// Inspect the network namespace of process PID (e.g. a container)
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
    /// When to use colour (auto: only on a terminal, and never with NO_COLOR set)
    #[arg(long, value_enum, default_value_t = ColorArg::Auto, value_name = "WHEN")]
    pub color: ColorArg,
    /// Show a snapshot saved with `portdoctor check --save FILE`, paused (any OS; nothing is
    /// collected)
    #[arg(long, value_name = "FILE", conflicts_with_all = ["netns", "pid", "no_owners"])]
    pub load: Option<std::path::PathBuf>,
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("portdoctor: error: {msg}");
    ExitCode::from(EXIT_USAGE)
}

pub fn run(args: &TopArgs) -> anyhow::Result<ExitCode> {
    if cfg!(windows) && (args.netns.is_some() || args.pid.is_some()) {
        return Ok(usage("--netns and --pid inspect Linux network namespaces; on Windows run `portdoctor top` without them"));
    }
    if !(0.1..=3600.0).contains(&args.interval) {
        return Ok(usage("--interval must be between 100ms and 1h"));
    }
    let interval = Duration::from_secs_f64(args.interval);
    // A saved snapshot (`--load`), or a collector for this host.
    let (mut app, opts) = if let Some(path) = &args.load {
        let snapshot = file::load(path)?;
        let app = App::loaded(snapshot, Instant::now(), interval, Thresholds::default());
        (app, None)
    } else {
        let opts = collect_options(
            args.netns.as_ref(),
            args.pid,
            SourceArg::Auto,
            !args.no_owners,
        );
        enter_namespace(&opts)?;
        (App::new(interval, Thresholds::default()), Some(opts))
    };
    if args.once {
        if let Some(opts) = opts {
            let snapshot = collect::native(opts)?.snapshot()?;
            app.ingest(Instant::now(), snapshot);
        }
        let tty = std::io::stdout().is_terminal();
        let (w, h) = match terminal::size() {
            Ok((w, h)) if tty && w > 0 && h > 0 => (w, h),
            _ => {
                let pools = app.current.as_ref().map_or(0, |c| c.analysis.pools.len());
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
    let color = use_color(args.color);
    interactive(app, opts, ViewOptions { color })
}

/// setns on this (the main) thread, before the collector thread starts.
#[cfg_attr(not(target_os = "linux"), allow(clippy::unnecessary_wraps))]
fn enter_namespace(opts: &CollectOptions) -> anyhow::Result<()> {
    #[cfg(target_os = "linux")]
    collect::linux::netns::enter(&opts.namespace)?;
    #[cfg(not(target_os = "linux"))]
    let _ = opts;
    Ok(())
}

enum ToWorker {
    Interval(Duration),
    Paused(bool),
    Now,
}

/// A refresh: when it started, and what it found (with the pause to the next one).
type Sample = (Instant, Result<(Snapshot, RefreshInfo, Duration), String>);

/// Collects every `interval` (or at once on `Now`), not while paused; ends when `top` drops
/// its sender.
fn worker(
    opts: CollectOptions,
    mut interval: Duration,
    rx: &mpsc::Receiver<ToWorker>,
    tx: &mpsc::Sender<Sample>,
) {
    let owners = opts.owners;
    let collector = match collect::native(opts) {
        Ok(c) => c,
        Err(e) => {
            let _ = tx.send((Instant::now(), Err(e.to_string())));
            return;
        }
    };
    let policy = Policy::default();
    let mut refresher = Refresher::new(collector, owners, policy);
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
        let result = refresher.refresh(now).map(|(snapshot, info)| {
            let wait = next_wait(interval, info.took, &policy);
            (snapshot, info, wait)
        });
        let wait = result.as_ref().map_or(interval, |r| r.2);
        if tx.send((now, result.map_err(|e| e.to_string()))).is_err() {
            return;
        }
        next = Instant::now() + wait;
    }
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

/// Runs the terminal UI; `opts` `None`: nothing to collect (a loaded snapshot), no worker.
fn interactive(
    mut app: App,
    opts: Option<CollectOptions>,
    view: ViewOptions,
) -> anyhow::Result<ExitCode> {
    let (to_worker, worker_rx) = mpsc::channel();
    let (sample_tx, samples) = mpsc::channel::<Sample>();
    let interval = app.interval;
    if let Some(opts) = opts {
        std::thread::Builder::new()
            .name("top-collect".into())
            .spawn(move || worker(opts, interval, &worker_rx, &sample_tx))?;
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
        while let Ok((at, result)) = samples.try_recv() {
            match result {
                Ok((snapshot, info, wait)) => {
                    app.ingest(at, snapshot);
                    app.refresh = Some(info);
                    app.cycle = Some(info.took + wait);
                }
                Err(e) => app.error = Some(e),
            }
            dirty = true;
        }
    }
    drop(term);
    Ok(ExitCode::SUCCESS)
}
