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
    let snapshot = collect::native(opts)?.snapshot()?;
    if let Some(path) = &args.save {
        file::save(&snapshot, path)?;
    }
    Ok(snapshot)
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
    use portdoctor::report::namespaces::{self, Inspected};

    let mut discovery = Discovery::default();
    if let Some(dir) = &args.scope.pods_dir {
        discovery.pods_dir.clone_from(dir);
    }
    let found = collect_all(opts, &discovery)?;
    let analyses: Vec<_> = found
        .namespaces
        .iter()
        .map(|n| analyze(&n.snapshot, thresholds))
        .collect();
    let all: Vec<Inspected<'_>> = found
        .namespaces
        .iter()
        .zip(&analyses)
        .map(|(n, a)| Inspected {
            identity: &n.identity,
            snapshot: &n.snapshot,
            analysis: a,
        })
        .collect();
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
