//! One module per command: each turns parsed arguments into calls to the library and an
//! exit code. Shared plumbing (stdout, exit codes, colour) lives here.

pub mod capacity;
pub mod check;
pub mod lab;
#[cfg(feature = "serve")]
pub mod serve;
#[cfg(feature = "serve")]
pub mod service;
#[cfg(feature = "top")]
pub mod top;
pub mod tune;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

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

/// Set once by `main` when the command line asks for `--json`: errors then also print one JSON
/// object on stdout, so a script reading stdout sees what went wrong.
static JSON_ERRORS: AtomicBool = AtomicBool::new(false);

/// Schema of the error object printed with `--json`.
pub const ERROR_SCHEMA: &str = "portdoctor.error/v1";

pub fn set_json_errors(on: bool) {
    JSON_ERRORS.store(on, Ordering::Relaxed);
}

/// Reports an error that ends the command with `code`: a line on stderr and, with `--json`,
/// `{"schema": "portdoctor.error/v1", "error": {"kind", "exit_code", "message"}}` on stdout.
/// An error and its causes in one line, each cause once: our errors often name their OS
/// error in their own text and also return it as their source, and `{:#}` would print it twice.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

pub fn report_error(code: u8, msg: impl std::fmt::Display) -> ExitCode {
    let message = msg.to_string();
    eprintln!("portdoctor: error: {message}");
    json_error(code, &message)
}

/// The JSON half of [`report_error`] (for errors whose text is already on stderr).
pub fn json_error(code: u8, message: &str) -> ExitCode {
    if JSON_ERRORS.load(Ordering::Relaxed) {
        let kind = if code == EXIT_USAGE {
            "usage"
        } else {
            "failed"
        };
        let v = serde_json::json!({
            "schema": ERROR_SCHEMA,
            "error": { "kind": kind, "exit_code": code, "message": message },
        });
        // Best effort: stdout may be the very thing that failed.
        let _ = write_stdout(format!("{v}\n").as_bytes());
    }
    ExitCode::from(code)
}

/// A usage error (bad value, contradicting options, a refused plan): exit 4.
pub fn usage(msg: impl std::fmt::Display) -> ExitCode {
    report_error(EXIT_USAGE, msg)
}

/// Could not collect, apply or roll back: exit 3.
pub fn failed(msg: impl std::fmt::Display) -> ExitCode {
    report_error(EXIT_COLLECT, msg)
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
