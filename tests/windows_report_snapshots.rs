//! insta snapshots of the Windows human report and JSON, rendered from a fixture snapshot (so
//! they run on Linux too): same shape as Linux, `"os": "windows"`, plus the Windows block.

use portdoctor::analysis::{analyze, Thresholds};
use portdoctor::fixture::SnapshotBuilder;
use portdoctor::report::{json, text};
use portdoctor::snapshot::{EventStat, ExcludedRange, Snapshot};

fn ex(low: u16, high: u16, administered: bool) -> ExcludedRange {
    ExcludedRange {
        low,
        high,
        administered,
    }
}

/// An IIS host that opens a connection per request to SQL Server and an API, on a Hyper-V
/// machine (exclusions inside the range), with 4231 events in the log.
fn iis_host() -> Snapshot {
    SnapshotBuilder::windows()
        .windows_settings(|w| {
            let hyperv = vec![
                ex(5357, 5357, false),
                ex(49671, 49770, false),
                ex(49871, 49970, false),
                ex(50000, 50059, true),
                ex(61117, 61216, false),
            ];
            w.excluded_ports_v4.clone_from(&hyperv);
            w.excluded_ports_v6 = hyperv;
            let r = w.registry.as_mut().expect("registry");
            r.max_user_port = Some(65534);
            let e = w.events.as_mut().expect("events");
            e.ports_exhausted_4231 = EventStat {
                count: 12,
                last_unix_ms: Some(1_795_814_043_512),
            };
        })
        .pool("10.0.0.5", "10.0.0.9", 1433, 200, 13_000, (0, 100_000))
        .pool("10.0.0.5", "10.0.0.12", 443, 40, 1_500, (0, 100_000))
        .restart_ports()
        .pool("10.0.0.6", "10.0.0.12", 443, 20, 300, (0, 100_000))
        .restart_ports()
        .pool("2001:db8::5", "2001:db8::9", 443, 8, 40, (0, 100_000))
        .listen("0.0.0.0", 80)
        .listen("0.0.0.0", 443)
        .listen("10.0.0.5", 65000)
        .owned_by(4242, "w3wp.exe")
        .build()
}

#[test]
fn windows_human_report() {
    let s = iis_host();
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
    assert!(out.contains("TIME_WAIT 120 s (default"), "{out}");
    insta::assert_snapshot!(out);
}

#[test]
fn windows_json_contract() {
    let s = iis_host();
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
    assert_eq!(v["pools"][0]["scope"], "local_address");
    assert!(v["pools"][0]["remote_ip"].is_null());
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
