//! `portdoctor.exe top --once` under Wine: one plain-text frame of this (Linux) namespace's
//! sockets as the IP Helper table shows them, and Linux-only flags refused with exit 4.
#![cfg(windows)]

use std::process::Command;

const PORTDOCTOR: &str = env!("CARGO_BIN_EXE_portdoctor");

#[test]
fn top_once_prints_one_frame() {
    // Something of ours to see: a loopback listener and a connection to it.
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let _c = std::net::TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
    let out = Command::new(PORTDOCTOR)
        .args(["top", "--once", "--no-owners"])
        .env("NO_COLOR", "1")
        .output()
        .expect("run portdoctor.exe");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}: {text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let first = text.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("portdoctor top ·") && first.contains("windows"),
        "{text}"
    );
    assert!(
        text.contains("range 49152–65535") || text.contains("range unknown"),
        "{text}"
    );
    assert!(text.contains("q quit"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "no escape codes in --once: {text:?}"
    );
    assert!(text.lines().all(|l| l.chars().count() <= 100), "{text}");
}

#[test]
fn top_netns_is_linux_only() {
    let out = Command::new(PORTDOCTOR)
        .args(["top", "--once", "--netns", "x"])
        .output()
        .expect("run portdoctor.exe");
    assert_eq!(out.status.code(), Some(4));
}
