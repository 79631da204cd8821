//! insta snapshots of the Windows human report and JSON, rendered from a fixture snapshot (so
//! they run on Linux too): same shape as Linux, `"os": "windows"`, plus the Windows block.

use portdoctor::analysis::{analyze, Thresholds};
use portdoctor::fixture::{hosts, SnapshotBuilder};
use portdoctor::report::{json, text};

#[test]
fn windows_human_report() {
    let s = hosts::iis();
    let a = analyze(&s, Thresholds::default());
    insta::assert_snapshot!(text::render(
        &s,
        &a,
        &text::TextOptions {
            color: false,
            top: Some(20)
        }
    ));
}

#[test]
fn windows_human_report_defaults_unreadable_log() {
    let s = SnapshotBuilder::windows()
        .windows_settings(|w| w.events = None)
        .pool("10.0.0.5", "10.0.0.9", 443, 10, 20, (0, 100_000))
        .build();
    let a = analyze(&s, Thresholds::default());
    let out = text::render(
        &s,
        &a,
        &text::TextOptions {
            color: false,
            top: Some(20),
        },
    );
    assert!(out.contains("event log unreadable"), "{out}");
    assert!(
        out.contains(
            "TIME_WAIT 240 s (TcpTimedWaitDelay not set: Microsoft documents 120 s and 240 s"
        ),
        "{out}"
    );
    insta::assert_snapshot!(out);
}

#[test]
fn windows_json_contract() {
    let s = hosts::iis();
    let a = analyze(&s, Thresholds::default());
    let out = json::render(&s, &a, None);
    let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
    assert_eq!(v["schema"], "portdoctor.check/v1");
    assert_eq!(v["os"], "windows");
    // Same top-level shape as Linux.
    for key in [
        "tool",
        "host",
        "settings",
        "capacity",
        "states",
        "sockets",
        "counters",
        "owners",
        "pools",
        "verdict",
        "thresholds",
        "notes",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    // One host-wide pool per IP version, split per local address.
    assert_eq!(v["pools"][0]["scope"], "host");
    assert_eq!(v["pools"][0]["local_ip"], "0.0.0.0");
    assert!(v["pools"][0]["remote_ip"].is_null());
    assert_eq!(v["pools"][0]["by_local_address"][0]["local_ip"], "10.0.0.5");
    assert_eq!(v["pools"][0]["by_local_address"][1]["local_ip"], "10.0.0.6");
    assert!(v["pools"][0]["connect_rate_per_s"].is_null());
    let w = &v["settings"]["windows"];
    assert_eq!(w["dynamic_ports_v4"]["start"], 49152);
    assert_eq!(w["registry"]["MaxUserPort"], 65534);
    assert!(w["registry"]["TcpTimedWaitDelay"].is_null());
    assert_eq!(w["events"]["4231"]["count"], 12);
    assert_eq!(v["settings"]["time_wait_source"], "default");
    assert_eq!(v["verdict"]["level"], "critical");
    insta::assert_snapshot!(out);
}
