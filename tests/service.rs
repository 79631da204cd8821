//! `portdoctor service` and `serve --service` are Windows-only: elsewhere a clear usage error
//! (exit 4) that points at the systemd unit, and nothing is started. The Windows side runs
//! under Wine in tests/windows_service.rs.
#![cfg(not(windows))]

use std::process::Command;

const PORTDOCTOR: &str = env!("CARGO_BIN_EXE_portdoctor");

fn usage_error(args: &[&str]) -> String {
    let out = Command::new(PORTDOCTOR)
        .args(args)
        .output()
        .expect("running portdoctor");
    assert_eq!(out.status.code(), Some(4), "{args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn service_commands_are_a_usage_error_off_windows() {
    let e = usage_error(&["service", "install", "--", "--listen", "127.0.0.1:0"]);
    assert!(
        e.contains("Windows service") && e.contains("deploy/"),
        "{e}"
    );
    let e = usage_error(&["service", "uninstall"]);
    assert!(e.contains("Windows service"), "{e}");
    // Before anything listens: a --listen that would bind is never reached.
    let e = usage_error(&["serve", "--service", "--listen", "127.0.0.1:0"]);
    assert!(e.contains("Service Control Manager"), "{e}");
}

#[test]
fn install_checks_serve_arguments_first() {
    let e = usage_error(&["service", "install", "--", "--lisen", "x"]);
    assert!(e.contains("--lisen"), "{e}");
    let e = usage_error(&["service", "install", "--name", "a\\b"]);
    assert!(e.contains("service name"), "{e}");
}
