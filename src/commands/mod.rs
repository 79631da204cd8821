//! One module per command: each turns parsed arguments into calls to the library and an
//! exit code. Shared plumbing (stdout, exit codes, colour) lives here.

pub mod capacity;
pub mod check;
pub mod lab;
#[cfg(feature = "serve")]
pub mod serve;
#[cfg(feature = "top")]
pub mod top;
pub mod tune;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::ColorArg;

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

/// A usage error: the message on stderr, exit 4.
pub fn usage(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("portdoctor: error: {msg}");
    ExitCode::from(EXIT_USAGE)
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
