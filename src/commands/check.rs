//! `portdoctor check`: collect one snapshot (or load a saved one), analyze it, render text or
//! JSON, exit by verdict.

use std::process::ExitCode;

use portdoctor::analysis::{analyze, Level, Thresholds};
use portdoctor::collect;
use portdoctor::report::{json, text};
use portdoctor::snapshot::{file, Snapshot};

use super::{collect_options, use_color, write_stdout, EXIT_USAGE};
use crate::cli::{CheckArgs, SourceArg};

/// The snapshot to analyse: loaded from `--load FILE`, or collected (and written to `--save
/// FILE` when asked, before anything is printed, so a failed save fails the command).
fn snapshot_for(args: &CheckArgs) -> anyhow::Result<Snapshot> {
    if let Some(path) = &args.load {
        return Ok(file::load(path)?);
    }
    let opts = collect_options(args.netns.as_ref(), args.pid, args.source, !args.no_owners);
    let snapshot = collect::native(opts)?.snapshot()?;
    if let Some(path) = &args.save {
        file::save(&snapshot, path)?;
    }
    Ok(snapshot)
}

pub fn run(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    if args.warn > args.crit {
        eprintln!(
            "portdoctor: error: --warn ({}) must not be above --crit ({})",
            args.warn, args.crit
        );
        return Ok(ExitCode::from(EXIT_USAGE));
    }
    if cfg!(windows) && (args.netns.is_some() || args.pid.is_some()) {
        eprintln!("portdoctor: error: --netns and --pid inspect Linux network namespaces; on Windows run `portdoctor check` without them");
        return Ok(ExitCode::from(EXIT_USAGE));
    }
    if cfg!(windows) && args.source != SourceArg::Auto {
        eprintln!("portdoctor: error: --source netlink|procfs is Linux-only; Windows always reads the IP Helper tables");
        return Ok(ExitCode::from(EXIT_USAGE));
    }
    let snapshot = snapshot_for(args)?;
    let thresholds = Thresholds {
        warn: args.warn,
        crit: args.crit,
        eta_seconds: args.eta,
    };
    let analysis = analyze(&snapshot, thresholds);
    let top = match args.top {
        Some(0) => None,
        Some(n) => Some(n),
        None if args.json => None,
        None => Some(20),
    };
    let rendered = if args.json {
        json::render(&snapshot, &analysis, top)
    } else {
        let color = use_color(args.color);
        text::render(&snapshot, &analysis, &text::TextOptions { color, top })
    };
    write_stdout(rendered.as_bytes())?;
    Ok(ExitCode::from(match analysis.verdict.level {
        Level::Ok => 0,
        Level::Warning => 1,
        Level::Critical => 2,
    }))
}
