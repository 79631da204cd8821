//! insta snapshots of what users read: the human report, the JSON contract and `--help`.
//! Reports are rendered from fixture snapshots, so they are the same on every machine.

use std::process::Command;

use portdoctor::analysis::{analyze, Thresholds};
use portdoctor::fixture::{hosts, SnapshotBuilder};
use portdoctor::report::{json, text};
use portdoctor::snapshot::Snapshot;

fn human(s: &Snapshot, top: Option<usize>) -> String {
    let a = analyze(s, Thresholds::default());
    text::render(s, &a, &text::TextOptions { color: false, top })
}

#[test]
fn human_report_empty_host() {
    insta::assert_snapshot!(human(&SnapshotBuilder::linux().build(), Some(20)));
}

#[test]
fn human_report_critical_host() {
    insta::assert_snapshot!(human(&hosts::critical_linux(), Some(20)));
}

#[test]
fn human_report_top_limits_pools() {
    let mut b = SnapshotBuilder::linux();
    for i in 0..30u16 {
        b = b.restart_ports().pool(
            "10.0.0.5",
            "10.0.0.9",
            10_000 + i,
            u32::from(i) * 10,
            0,
            (0, 0),
        );
    }
    insta::assert_snapshot!(human(&b.build(), Some(3)));
}

#[test]
fn human_report_bind_before_connect() {
    insta::assert_snapshot!(human(&hosts::bind_before_connect(), Some(20)));
}

#[test]
fn json_contract_shape() {
    let s = hosts::critical_linux();
    let a = analyze(&s, Thresholds::default());
    let out = json::render(&s, &a, None);
    let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
    assert_eq!(v["schema"], "portdoctor.check/v1");
    // The fields model.md promises, by name and type.
    for key in ["os", "settings", "states", "pools", "verdict"] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    let pool = &v["pools"][0];
    for key in [
        "scope",
        "local_ip",
        "remote_ip",
        "remote_port",
        "in_use",
        "time_wait",
        "blocking_time_wait",
        "capacity",
        "utilization",
        "connect_rate_per_s",
        "eta_seconds",
        "processes",
    ] {
        assert!(pool.get(key).is_some(), "pool lacks {key}");
    }
    for f in v["verdict"]["findings"].as_array().expect("findings array") {
        for key in ["code", "message", "evidence", "fix"] {
            assert!(f.get(key).is_some(), "finding lacks {key}");
        }
    }
    insta::assert_snapshot!(out);
}

#[test]
fn json_unknowns_are_null() {
    let s = SnapshotBuilder::linux()
        .settings(|st| {
            st.ephemeral_ports = None;
            st.max_tw_buckets = None;
        })
        .pool("10.0.0.5", "10.0.0.9", 443, 2, 0, (0, 0))
        .build();
    let a = analyze(&s, Thresholds::default());
    let v: serde_json::Value = serde_json::from_str(&json::render(&s, &a, None)).expect("JSON");
    assert!(v["settings"]["ephemeral_ports"].is_null());
    assert!(v["settings"]["max_tw_buckets"].is_null());
    assert!(v["capacity"].is_null());
    assert!(v["pools"][0]["capacity"].is_null());
    assert!(v["pools"][0]["utilization"].is_null());
    // Owners were not scanned: processes unknown, not empty.
    assert!(v["pools"][0]["processes"].is_null());
    assert_eq!(v["owners"]["scanned"], false);
}

fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_portdoctor"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run portdoctor");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_texts() {
    let (code, top, _) = cli(&["--help"]);
    assert_eq!(code, 0);
    // The command list is the default build's (top and serve are optional features).
    if cfg!(all(feature = "top", feature = "serve")) {
        insta::assert_snapshot!("help", top);
    }
    let (code, check, _) = cli(&["check", "--help"]);
    assert_eq!(code, 0);
    insta::assert_snapshot!("check_help", check);
}

#[test]
fn usage_errors_exit_4_with_a_reason() {
    let (code, _, err) = cli(&["check", "--warn", "2"]);
    assert_eq!(code, 4);
    assert!(err.contains("utilization threshold"), "{err}");
    let (code, _, err) = cli(&["check", "--warn", "0.9", "--crit", "0.8"]);
    assert_eq!(code, 4);
    assert!(err.contains("--warn"), "{err}");
    let (code, _, err) = cli(&["check", "--bogus"]);
    assert_eq!(code, 4);
    assert!(err.contains("--bogus"), "{err}");
    let (code, _, err) = cli(&["man", "nope"]);
    assert_eq!(code, 4);
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn man_page_and_completions_are_generated() {
    let (code, man, _) = cli(&["man"]);
    assert_eq!(code, 0);
    assert!(
        man.contains(".TH portdoctor"),
        "{}",
        &man[..80.min(man.len())]
    );
    let (code, man, _) = cli(&["man", "check"]);
    assert_eq!(code, 0);
    assert!(
        man.contains("portdoctor\\-check") && man.contains("\\-\\-netns"),
        "{man}"
    );
    // Nested commands have their own page (packaging/build.sh installs one per command).
    let (code, man, _) = cli(&["man", "tune", "apply"]);
    assert_eq!(code, 0);
    assert!(
        man.contains("portdoctor\\-tune\\-apply") && man.contains("\\-\\-sysctl\\-dir"),
        "{man}"
    );
    let (code, _, err) = cli(&["man", "tune", "nope"]);
    assert_eq!(code, 4);
    assert!(err.contains("tune nope"), "{err}");
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let (code, out, _) = cli(&["completions", shell]);
        assert_eq!(code, 0, "{shell}");
        assert!(
            out.contains("netns"),
            "{shell} completion lacks check's flags"
        );
    }
}
