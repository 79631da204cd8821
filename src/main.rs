//! Thin shell: parse the command line, run one command, map the outcome to an exit code.

mod cli;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser};

use cli::{CheckArgs, Cli, ColorArg, Command, SourceArg};
use portdoctor::analysis::{analyze, Level, Thresholds};
use portdoctor::collect::{self, CollectOptions, Namespace, SourcePreference};
use portdoctor::report::{json, text};

const EXIT_COLLECT: u8 = 3;
const EXIT_USAGE: u8 = 4;

fn units_parse_ratio(s: &str) -> Result<f64, String> {
    portdoctor::units::parse_ratio(s)
}

fn units_parse_duration(s: &str) -> Result<f64, String> {
    portdoctor::units::parse_duration_seconds(s)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("portdoctor: error: {e:#}");
            ExitCode::from(EXIT_COLLECT)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check(args) => check(&args),
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "portdoctor", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { command } => {
            let root = Cli::command();
            let page = match command.as_deref() {
                None => root,
                Some(name) => {
                    let Some(sub) = root.find_subcommand(name) else {
                        eprintln!("portdoctor: error: no command {name:?}; try `portdoctor man` for the list");
                        return Ok(ExitCode::from(EXIT_USAGE));
                    };
                    // Leak is fine: one short-lived page per process, and clap wants 'static.
                    let full: &'static str =
                        Box::leak(format!("portdoctor-{name}").into_boxed_str());
                    sub.clone().name(full)
                }
            };
            let mut out = Vec::new();
            clap_mangen::Man::new(page).render(&mut out)?;
            write_stdout(&out)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        // `portdoctor check | head` is fine.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to stdout"),
    }
}

fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
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
    let namespace = match (&args.netns, args.pid) {
        (Some(name), _) => Namespace::Named(name.clone()),
        (None, Some(pid)) => Namespace::Pid(pid),
        (None, None) => Namespace::Current,
    };
    let opts = CollectOptions {
        source: match args.source {
            SourceArg::Auto => SourcePreference::Auto,
            SourceArg::Netlink => SourcePreference::Netlink,
            SourceArg::Procfs => SourcePreference::Procfs,
        },
        owners: !args.no_owners,
        namespace,
    };
    let snapshot = collect::native(opts)?.snapshot()?;
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
        let color = match args.color {
            ColorArg::Always => true,
            ColorArg::Never => false,
            ColorArg::Auto => {
                std::io::stdout().is_terminal()
                    && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            }
        };
        text::render(&snapshot, &analysis, &text::TextOptions { color, top })
    };
    write_stdout(rendered.as_bytes())?;
    Ok(ExitCode::from(match analysis.verdict.level {
        Level::Ok => 0,
        Level::Warning => 1,
        Level::Critical => 2,
    }))
}
