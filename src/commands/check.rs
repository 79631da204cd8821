//! `portdoctor check`: collect one snapshot, analyze it, render text or JSON, exit by verdict.

use std::process::ExitCode;

use portdoctor::analysis::{analyze, Level};
use portdoctor::collect;
use portdoctor::report::{json, text};

use super::{usage, use_color, write_stdout};
use crate::cli::CheckArgs;

pub fn run(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let thresholds = match args.thresholds.thresholds() {
        Ok(t) => t,
        Err(e) => return Ok(usage(e)),
    };
    let opts = match args.target.collect_options() {
        Ok(o) => o,
        Err(e) => return Ok(usage(e)),
    };
    let snapshot = collect::native(opts)?.snapshot()?;
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
        let color = use_color(args.output.color);
        text::render(&snapshot, &analysis, &text::TextOptions { color, top })
    };
    write_stdout(rendered.as_bytes())?;
    Ok(ExitCode::from(match analysis.verdict.level {
        Level::Ok => 0,
        Level::Warning => 1,
        Level::Critical => 2,
    }))
}
