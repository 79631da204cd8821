//! One module per command: each turns parsed arguments into calls to the library and an
//! exit code. Shared plumbing (stdout, exit codes, colour) lives here.

pub mod capacity;
pub mod check;
pub mod lab;
pub mod serve;
pub mod top;
pub mod tune;

use std::io::{IsTerminal, Write};

use anyhow::Context;

use portdoctor::collect::{CollectOptions, Namespace, SourcePreference};

use crate::cli::{ColorArg, SourceArg};

/// Could not collect or apply: namespace missing, permission denied, kernel refused.
pub const EXIT_COLLECT: u8 = 3;
/// Bad command line: unknown flag, invalid value.
pub const EXIT_USAGE: u8 = 4;

pub fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        // `portdoctor check | head` is fine.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to stdout"),
    }
}

/// What `--netns`, `--pid` and `--source` ask to collect from (clap keeps the first two
/// exclusive).
pub fn collect_options(
    netns: Option<&String>,
    pid: Option<u32>,
    source: SourceArg,
    owners: bool,
) -> CollectOptions {
    CollectOptions {
        source: match source {
            SourceArg::Auto => SourcePreference::Auto,
            SourceArg::Netlink => SourcePreference::Netlink,
            SourceArg::Procfs => SourcePreference::Procfs,
        },
        owners,
        namespace: match (netns, pid) {
            (Some(name), _) => Namespace::Named(name.clone()),
            (None, Some(pid)) => Namespace::Pid(pid),
            (None, None) => Namespace::Current,
        },
    }
}

/// Whether to colour output: only on a terminal, never with NO_COLOR set (no-color.org).
pub fn use_color(choice: ColorArg) -> bool {
    match choice {
        ColorArg::Always => true,
        ColorArg::Never => false,
        ColorArg::Auto => {
            std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        }
    }
}
