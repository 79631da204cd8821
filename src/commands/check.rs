//! `portdoctor check`: collect one snapshot (or load a saved one), analyze it, render text or
//! JSON, exit by verdict.

use std::process::ExitCode;

use portdoctor::analysis::{analyze, Level};
use portdoctor::collect;
use portdoctor::report::{json, text};
use portdoctor::snapshot::{file, Snapshot};

use super::{usage, use_color, write_stdout};
use crate::cli::CheckArgs;

/// The snapshot to analyse, collected (and written to `--save FILE` when asked, before anything
/// is printed, so a failed save fails the command).
fn snapshot_for(args: &CheckArgs, opts: collect::CollectOptions) -> anyhow::Result<Snapshot> {
    let collector = collect::native(opts)?;
    // With --observe: trace first (the window), then take the snapshot the failures are
    // reported against.
    // Windows: the window lies between two snapshots of the same collector, whose tables give
    // the rates and the forecast (no TIME_WAIT timers there).
    #[cfg(windows)]
    if let Some(window) = args.observe {
        collector.snapshot()?;
        std::thread::sleep(window);
    }
    let before = args
        .observe
        .and_then(|_| collector.parts()?.without_sockets().ok());
    let started = std::time::Instant::now();
    let observed = args.observe.map(observe);
    let mut snapshot = collector.snapshot()?;
    if let Some(before) = &before {
        portdoctor::analysis::snat::observe_window(before, &mut snapshot, started.elapsed());
    }
    match observed {
        Some(Ok(f)) => {
            snapshot.notes.extend(failure_notes(&f));
            let f = narrow(f, snapshot.host.netns_id);
            if !f.other_namespaces.is_empty() {
                let others: Vec<String> = f
                    .other_namespaces
                    .iter()
                    .map(|(ns, n)| format!("{ns}: {n}"))
                    .collect();
                snapshot.notes.push(format!(
                    "failed connect()/bind() calls in other namespaces were not counted here ({}); inspect them with --netns or --pid (`unknown`: the process exited before its namespace was read)",
                    others.join(", ")
                ));
            }
            if f.events.iter().any(|c| c.netns.is_none()) {
                snapshot.notes.push("some failing processes exited before their namespace was read; they are counted here only because no namespace was asked for".to_string());
            }
            snapshot.connect_failures = Some(f);
        }
        Some(Err(note)) => snapshot.notes.push(note),
        None => {}
    }
    if let Some(path) = &args.save {
        file::save(&snapshot, path)?;
    }
    Ok(snapshot)
}

/// Traces failed connect()/bind() calls for `window` on the whole host; the error is the note
/// saying why it could not.
#[cfg(target_os = "linux")]
fn observe(window: std::time::Duration) -> Result<portdoctor::snapshot::ConnectFailures, String> {
    collect::linux::failures::observe(window, None).map_err(|e| e.to_string())
}

#[cfg(windows)]
#[allow(clippy::unnecessary_wraps)] // the same signature as the Linux version
fn observe(window: std::time::Duration) -> Result<portdoctor::snapshot::ConnectFailures, String> {
    Err(format!(
        "--observe {:.1}s: rates and forecasts come from two snapshots that far apart; failed connect() calls are not traced on Windows (see events 4227/4231 in the findings)",
        window.as_secs_f64()
    ))
}

#[cfg(not(any(target_os = "linux", windows)))]
fn observe(_window: std::time::Duration) -> Result<portdoctor::snapshot::ConnectFailures, String> {
    Err(format!(
        "--observe traces Linux kernel tracepoints; on {} it counts nothing (Windows: see events 4227/4231 in the findings)",
        std::env::consts::OS
    ))
}

/// The failures of the inspected namespace (failures elsewhere are summed by namespace).
fn narrow(
    f: portdoctor::snapshot::ConnectFailures,
    target: Option<portdoctor::snapshot::NetnsId>,
) -> portdoctor::snapshot::ConnectFailures {
    let portdoctor::snapshot::ConnectFailures {
        source,
        window_seconds,
        events,
        lost,
        ..
    } = f;
    collect::failures::report(&source, window_seconds, events, target, lost)
}

fn failure_notes(f: &portdoctor::snapshot::ConnectFailures) -> Vec<String> {
    let mut notes = Vec::new();
    if f.lost > 0 {
        notes.push(format!(
            "the failure tracer's buffers overflowed: {} samples were dropped, the failure counts are low",
            f.lost
        ));
    }
    notes
}

pub fn run(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let thresholds = match args.thresholds.thresholds() {
        Ok(t) => t,
        Err(e) => return Ok(usage(e)),
    };
    let snapshot = if let Some(path) = &args.load {
        // Nothing is read from this host: no target, no namespace.
        file::load(path)?
    } else {
        let opts = match args.target.collect_options() {
            Ok(o) => o,
            Err(e) => return Ok(usage(e)),
        };
        if args.scope.all_namespaces {
            return all_namespaces(args, &opts, thresholds);
        }
        snapshot_for(args, opts)?
    };
    let analysis = analyze(&snapshot, thresholds);
    let top = top_pools(args);
    let rendered = if args.json {
        json::render(&snapshot, &analysis, top)
    } else {
        let color = use_color(args.output.color);
        text::render(&snapshot, &analysis, &text::TextOptions { color, top })
    };
    write_stdout(rendered.as_bytes())?;
    Ok(exit_for(analysis.verdict.level))
}

fn exit_for(level: Level) -> ExitCode {
    ExitCode::from(match level {
        Level::Ok => 0,
        Level::Warning => 1,
        Level::Critical => 2,
    })
}

fn top_pools(args: &CheckArgs) -> Option<usize> {
    match args.top {
        Some(0) => None,
        Some(n) => Some(n),
        None if args.json => None,
        None => Some(20),
    }
}

/// `check -A`: every namespace, each analysed with its own settings; exit by the worst.
#[cfg(target_os = "linux")]
fn all_namespaces(
    args: &CheckArgs,
    opts: &collect::CollectOptions,
    thresholds: portdoctor::analysis::Thresholds,
) -> anyhow::Result<ExitCode> {
    use portdoctor::collect::linux::namespaces::{collect_all, Discovery};
    use portdoctor::report::namespaces;

    let mut discovery = Discovery::default();
    if let Some(dir) = &args.scope.pods_dir {
        discovery.pods_dir.clone_from(dir);
    }
    let found = collect_all(opts, &discovery)?;
    let mut analyses: Vec<_> = found.each().map(|(_, s)| analyze(s, thresholds)).collect();
    portdoctor::analysis::snat::attribute(&mut analyses, found.each());
    let all = namespaces::inspect(found.each(), &analyses);
    let Some(own) = all.iter().find(|n| n.identity.own) else {
        anyhow::bail!("could not read this process's own network namespace");
    };
    let top = top_pools(args);
    let rendered = if args.json {
        namespaces::render_json(own, &all, &found.notes, top)
    } else {
        let color = use_color(args.output.color);
        namespaces::render_text(&all, &found.notes, &text::TextOptions { color, top })
    };
    write_stdout(rendered.as_bytes())?;
    Ok(exit_for(namespaces::worst(&all)))
}

#[cfg(not(target_os = "linux"))]
#[allow(clippy::unnecessary_wraps)]
fn all_namespaces(
    _args: &CheckArgs,
    _opts: &collect::CollectOptions,
    _thresholds: portdoctor::analysis::Thresholds,
) -> anyhow::Result<ExitCode> {
    Ok(usage(format!(
        "--all-namespaces reads Linux network namespaces; on {} leave it out",
        std::env::consts::OS
    )))
}
