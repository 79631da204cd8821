//! `portdoctor service install|uninstall` and the `serve --service` dispatcher: `serve` as a
//! native Windows service through the Service Control Manager (no NSSM). The command line the
//! service runs is built by [`binary_path`], a pure function; the SCM calls live in `windows`.

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::{Cli, ServiceAction, ServiceArgs};

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::dispatch;

#[cfg_attr(not(windows), allow(dead_code))] // used by the Windows SCM calls
/// The service's description in services.msc.
pub const DESCRIPTION: &str =
    "Prometheus exporter for TCP/UDP ephemeral-port exhaustion (portdoctor serve)";

#[cfg_attr(not(windows), allow(dead_code))] // used by the Windows SCM calls
/// One argument quoted the way `CommandLineToArgvW` and the Microsoft C runtime split a command
/// line: bare when it has no blank or quote; else in quotes, with a quote escaped as `\"` and
/// the backslashes right before a quote (or the closing quote) doubled.
pub fn quote_arg(arg: &str) -> String {
    if !arg.is_empty() && !arg.contains([' ', '\t', '\n', '\u{b}', '"']) {
        return arg.to_string();
    }
    let mut out = String::with_capacity(arg.len() + 2);
    out.push('"');
    let mut backslashes = 0usize;
    for c in arg.chars() {
        match c {
            '\\' => backslashes += 1,
            '"' => {
                out.extend(std::iter::repeat_n('\\', backslashes * 2 + 1));
                out.push('"');
                backslashes = 0;
            }
            _ => {
                out.extend(std::iter::repeat_n('\\', backslashes));
                backslashes = 0;
                out.push(c);
            }
        }
    }
    out.extend(std::iter::repeat_n('\\', backslashes * 2));
    out.push('"');
    out
}

#[cfg_attr(not(windows), allow(dead_code))] // used by the Windows SCM calls
/// The service's `lpBinaryPathName`: the executable's full path, always in quotes (an unquoted
/// path with a blank is the classic "unquoted service path" hole: `C:\Program.exe` would run),
/// then `serve --service` and the serve arguments, each quoted as needed.
pub fn binary_path(exe: &str, serve_args: &[String]) -> Result<String, String> {
    // The program name is split on quotes alone (no escapes), so it cannot hold one; Windows
    // paths never do.
    if exe.contains('"') {
        return Err(format!("the executable path {exe:?} contains a quote"));
    }
    let mut line = format!("\"{exe}\" serve --service");
    for a in serve_args {
        let _ = write!(line, " {}", quote_arg(a));
    }
    Ok(line)
}

/// Checks the serve arguments as `serve` itself will parse them, so a typo fails now and not
/// at the service's first start.
fn check_serve_args(serve_args: &[String]) -> Result<(), String> {
    let argv = ["portdoctor", "serve", "--service"]
        .into_iter()
        .map(String::from)
        .chain(serve_args.iter().cloned());
    match Cli::try_parse_from(argv) {
        Ok(_) => Ok(()),
        Err(e) => {
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("bad serve arguments");
            Err(format!(
                "the serve arguments after -- are refused: {}",
                first.trim_start_matches("error: ")
            ))
        }
    }
}

/// A service name the SCM accepts: 1..=256 characters, no `/` or `\`.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.chars().count() > 256 || name.contains(['/', '\\']) {
        return Err(format!(
            "service name {name:?}: 1 to 256 characters, no / or \\"
        ));
    }
    Ok(())
}

pub fn run(args: &ServiceArgs) -> anyhow::Result<ExitCode> {
    let name = match &args.action {
        ServiceAction::Install { name, .. } | ServiceAction::Uninstall { name } => name,
    };
    if let Err(e) = check_name(name) {
        return Ok(super::usage(e));
    }
    if let ServiceAction::Install { serve_args, .. } = &args.action {
        if let Err(e) = check_serve_args(serve_args) {
            return Ok(super::usage(e));
        }
    }
    run_os(&args.action)
}

#[cfg(windows)]
#[allow(clippy::unnecessary_wraps)] // the same signature as elsewhere
fn run_os(action: &ServiceAction) -> anyhow::Result<ExitCode> {
    Ok(windows::run(action))
}

#[cfg(not(windows))]
#[allow(clippy::unnecessary_wraps)] // the same signature as on Windows
fn run_os(_action: &ServiceAction) -> anyhow::Result<ExitCode> {
    Ok(super::usage(format!(
        "`portdoctor service` installs a Windows service; on {} run `portdoctor serve` under your service manager (systemd unit: deploy/)",
        std::env::consts::OS
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_arguments_stay_bare() {
        assert_eq!(quote_arg("--listen"), "--listen");
        assert_eq!(quote_arg("0.0.0.0:9951"), "0.0.0.0:9951");
        assert_eq!(quote_arg(r"C:\dir\web.yml"), r"C:\dir\web.yml");
    }

    #[test]
    fn blanks_quotes_and_trailing_backslashes_are_quoted() {
        assert_eq!(quote_arg(""), "\"\"");
        assert_eq!(
            quote_arg(r"C:\Program Files\pd\web.yml"),
            r#""C:\Program Files\pd\web.yml""#
        );
        // A trailing backslash before the closing quote is doubled, else it escapes it.
        assert_eq!(quote_arg(r"C:\my dir\"), r#""C:\my dir\\""#);
        assert_eq!(quote_arg(r#"a"b"#), r#""a\"b""#);
        assert_eq!(quote_arg(r#"a\"b"#), r#""a\\\"b""#);
        // Backslashes not before a quote are literal.
        assert_eq!(quote_arg(r"a b\c"), r#""a b\c""#);
    }

    #[test]
    fn binary_path_quotes_the_exe_always() {
        assert_eq!(
            binary_path(r"C:\Program Files\portdoctor\portdoctor.exe", &[]).as_deref(),
            Ok(r#""C:\Program Files\portdoctor\portdoctor.exe" serve --service"#)
        );
        assert_eq!(
            binary_path(
                r"C:\pd\portdoctor.exe",
                &[
                    "--listen".into(),
                    "0.0.0.0:9951".into(),
                    "--web-config".into(),
                    r"C:\Program Data\pd\web.yml".into()
                ]
            )
            .as_deref(),
            Ok(
                r#""C:\pd\portdoctor.exe" serve --service --listen 0.0.0.0:9951 --web-config "C:\Program Data\pd\web.yml""#
            )
        );
        assert!(binary_path("C:\\a\"b.exe", &[]).is_err());
    }

    /// Splits a command line by the documented `CommandLineToArgvW` rules (arguments after the
    /// program name), to check that quoting round-trips.
    fn split(line: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut chars = line.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
                chars.next();
            }
            if chars.peek().is_none() {
                return out;
            }
            let mut arg = String::new();
            let mut quoted = false;
            let mut backslashes = 0usize;
            while let Some(&c) = chars.peek() {
                if !quoted && (c == ' ' || c == '\t') {
                    break;
                }
                chars.next();
                match c {
                    '\\' => backslashes += 1,
                    '"' => {
                        arg.extend(std::iter::repeat_n('\\', backslashes / 2));
                        if backslashes % 2 == 1 {
                            arg.push('"');
                        } else {
                            quoted = !quoted;
                        }
                        backslashes = 0;
                    }
                    _ => {
                        arg.extend(std::iter::repeat_n('\\', backslashes));
                        backslashes = 0;
                        arg.push(c);
                    }
                }
            }
            arg.extend(std::iter::repeat_n('\\', backslashes));
            out.push(arg);
        }
    }

    #[test]
    fn quoting_round_trips_through_the_windows_splitting_rules() {
        let args: Vec<String> = [
            "",
            "plain",
            "with space",
            r"C:\my dir\",
            r#"say "hi""#,
            r#"\\"\"#,
            "tab\there",
            r"\\server\share\x y",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        let line: Vec<String> = args.iter().map(|a| quote_arg(a)).collect();
        assert_eq!(split(&line.join(" ")), args);
    }

    #[test]
    fn serve_arguments_are_checked_before_install() {
        assert!(check_serve_args(&[]).is_ok());
        assert!(check_serve_args(&["--listen".into(), "0.0.0.0:9951".into()]).is_ok());
        let e = check_serve_args(&["--lisen".into(), "x".into()]).unwrap_err();
        assert!(e.contains("--lisen"), "{e}");
        assert!(check_serve_args(&["--listen".into(), "nope".into()]).is_err());
    }

    #[test]
    fn service_names_are_checked() {
        assert!(check_name("portdoctor").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name(r"a\b").is_err());
    }
}
