//! `portdoctor lab` end to end, as root: each scenario's observed onset of EADDRNOTAVAIL (or
//! EADDRINUSE from bind) against the capacity model's prediction, no failures where the model
//! says none, bind-before-connect failing earlier, the chart's series, the namespace gone after
//! every run (also after SIGTERM), and the hard limits. Small ranges keep the whole file at a
//! few seconds per test.
#![cfg(target_os = "linux")]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{portdoctor, require_root, run_bounded, PORTDOCTOR};
use serde_json::Value;

/// Upper bound for one lab run (the longest asks for 5 s of traffic).
const LAB_TIMEOUT: Duration = Duration::from_secs(30);

fn lab(args: &[&str]) -> (Value, i32) {
    let out = run_bounded(
        Command::new(PORTDOCTOR).args(["lab", "--json"]).args(args),
        LAB_TIMEOUT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "lab {args:?}: not JSON ({e}), exit {:?}:\n{stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(v["schema"], "portdoctor.lab/v1");
    assert_namespace_gone(&v);
    // Every scenario: the kernel tracepoints counted exactly the lab's own port failures.
    let o = &v["observed"];
    assert_eq!(
        o["traced_failures"], o["failures"],
        "lab {args:?}: tracer vs the lab's own count ({})",
        o["tracing_note"]
    );
    (v, out.status.code().unwrap_or(-1))
}

fn assert_namespace_gone(v: &Value) {
    let name = v["namespace"].as_str().expect("namespace name");
    assert!(name.starts_with("portdoctor-lab-"), "{name}");
    assert_eq!(v["namespace_removed"], true, "{name}");
    assert!(
        !Path::new("/run/netns").join(name).exists(),
        "{name} left behind"
    );
    let list = common::run_ok(Command::new("ip").args(["netns", "list"]));
    assert!(!list.contains(name), "{name} still listed:\n{list}");
}

fn onset(v: &Value, side: &str) -> Option<f64> {
    let key = if side == "model" { "model" } else { "observed" };
    v[key]["onset_s"].as_f64()
}

/// Observed onset within 10 % of the model's, and the lab itself says it agrees.
fn assert_onset_agrees(v: &Value, code: i32) -> f64 {
    let p = onset(v, "model").unwrap_or_else(|| panic!("model predicts no failure: {v}"));
    let o = onset(v, "observed").unwrap_or_else(|| panic!("no failure observed: {v}"));
    assert!(
        (o - p).abs() <= 0.10 * p,
        "observed onset {o:.3} s vs model {p:.3} s: more than 10% apart\n{}",
        v["seconds"]
    );
    assert_eq!(v["comparison"]["agrees"], true);
    assert_eq!(code, 0, "agreeing run exits 0");
    assert_eq!(v["observed"]["other_errors"], 0, "{}", v["observed"]);
    o
}

fn assert_no_failures(v: &Value, code: i32) {
    assert_eq!(onset(v, "model"), None, "model: {}", v["model"]);
    assert_eq!(v["observed"]["failures"], 0, "{}", v["seconds"]);
    assert_eq!(v["observed"]["other_errors"], 0, "{}", v["observed"]);
    assert!(v["observed"]["attempts"].as_u64().expect("attempts") > 0);
    assert_eq!(code, 0);
}

/// `data-values="t:v t:v …"` of the polyline with `data-series="NAME"`.
fn series(svg: &str, name: &str) -> Vec<(f64, f64)> {
    let tag = format!("data-series=\"{name}\"");
    let at = svg
        .find(&tag)
        .unwrap_or_else(|| panic!("series {name} missing"));
    let rest = &svg[at..];
    let vals = rest
        .split("data-values=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("series {name} has no values"));
    vals.split_whitespace()
        .map(|p| {
            let (t, v) = p.split_once(':').expect("t:v");
            (t.parse().expect("t"), v.parse().expect("v"))
        })
        .collect()
}

#[test]
fn baseline_fails_when_the_model_says_and_draws_the_chart() {
    if !require_root("baseline_fails_when_the_model_says_and_draws_the_chart") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let chart = dir.path().join("lab.svg");
    let (v, code) = lab(&["--chart", chart.to_str().expect("utf-8 path")]);
    // 200 ports, 100/s, TIME_WAIT 60 s: full after 2 s.
    assert!((onset(&v, "model").unwrap() - 2.0).abs() < 0.01);
    assert_onset_agrees(&v, code);
    assert_eq!(
        v["observed"]["first_failure"].as_str().unwrap()[..13].to_string(),
        "EADDRNOTAVAIL"
    );
    // check's view of the pool: full at the end.
    let last = v["pool_samples"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["capacity"], 200, "{last}");
    assert_eq!(last["used"], 200, "{last}");
    assert_eq!(last["scope"], "destination");
    // Latency percentiles recorded per second.
    assert!(v["seconds"][0]["connect_latency"]["p99_us"]
        .as_u64()
        .is_some());

    let svg = std::fs::read_to_string(&chart).expect("chart written");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<svg").count(), 1);
    let used = series(&svg, "pool_used");
    assert!(used.len() >= 10, "{used:?}");
    assert!((used.iter().map(|p| p.1).fold(0.0, f64::max) - 200.0).abs() < 0.5);
    assert!((series(&svg, "capacity")[0].1 - 200.0).abs() < 1e-9);
    let connects = series(&svg, "connects_per_s");
    assert!(
        connects.iter().any(|p| (p.1 - 100.0).abs() < 1.0),
        "{connects:?}"
    );
    let failures = series(&svg, "failures_per_s");
    assert!(failures.iter().any(|p| p.1 >= 90.0), "{failures:?}");
    assert!(svg.contains("data-marker=\"predicted_onset\""));
    assert!(svg.contains("data-marker=\"observed_onset\""));
    assert_eq!(v["chart"], chart.to_str().unwrap());
}

#[test]
fn tw_reuse_1_and_2_on_loopback_show_no_failures() {
    if !require_root("tw_reuse_1_and_2_on_loopback_show_no_failures") {
        return;
    }
    for reuse in ["1", "2"] {
        let (v, code) = lab(&["--tw-reuse", reuse, "--duration", "3s"]);
        assert_eq!(v["model"]["hold_reason"], "tw_reuse");
        assert_no_failures(&v, code);
    }
}

#[test]
fn tw_reuse_past_its_rate_fails_when_the_model_says() {
    if !require_root("tw_reuse_past_its_rate_fails_when_the_model_says") {
        return;
    }
    // 200 ports reusable after 1 s sustain 200/s; 300/s fills them after 0.67 s.
    let (v, code) = lab(&["--tw-reuse", "1", "--rate", "300", "--duration", "2s"]);
    assert_onset_agrees(&v, code);
}

#[test]
fn keepalive_shows_no_failures() {
    if !require_root("keepalive_shows_no_failures") {
        return;
    }
    let (v, code) = lab(&["--keepalive", "--duration", "3s"]);
    assert_no_failures(&v, code);
    assert_eq!(v["observed"]["connects"], 1);
}

#[test]
fn server_closes_first_shows_no_failures() {
    if !require_root("server_closes_first_shows_no_failures") {
        return;
    }
    let (v, code) = lab(&["--server-closes-first", "--duration", "3s"]);
    assert_eq!(v["model"]["hold_reason"], "server_closes_first");
    assert_no_failures(&v, code);
}

#[test]
fn bind_before_connect_fails_earlier_as_predicted() {
    if !require_root("bind_before_connect_fails_earlier_as_predicted") {
        return;
    }
    // Two destinations: connect() has two pools of 200 (full at 4 s), bind() one (full at 2 s).
    let (c, c_code) = lab(&["--destinations", "2", "--duration", "5s"]);
    let (b, b_code) = lab(&[
        "--destinations",
        "2",
        "--duration",
        "3s",
        "--bind-before-connect",
    ]);
    let connect_onset = assert_onset_agrees(&c, c_code);
    let bind_onset = assert_onset_agrees(&b, b_code);
    assert!(
        onset(&b, "model").unwrap() < onset(&c, "model").unwrap(),
        "model: bind earlier"
    );
    assert!(
        bind_onset < 0.6 * connect_onset,
        "bind {bind_onset} vs connect {connect_onset}"
    );
    // check's own model recognises the pattern: one pool per local address, full.
    let last = b["pool_samples"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["scope"], "local_address", "{last}");
    assert_eq!(last["used"], 200, "{last}");
    let last = c["pool_samples"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["scope"], "destination", "{last}");
    assert_eq!(last["used"], 200, "{last}");
    assert_eq!(last["time_wait"], 400, "two full destination pools: {last}");
    assert!(b["observed"]["first_failure"]
        .as_str()
        .unwrap()
        .starts_with("EADDRINUSE from bind()"));
}

#[test]
fn ramp_and_a_smaller_range_fail_when_the_model_says() {
    if !require_root("ramp_and_a_smaller_range_fail_when_the_model_says") {
        return;
    }
    // 20 → 200/s over 4 s: 20 t + 22.5 t² = 200 at t ≈ 2.57 s.
    let (v, code) = lab(&["--rate", "20", "--ramp", "200", "--duration", "4s"]);
    assert!((onset(&v, "model").unwrap() - 2.57).abs() < 0.01);
    assert_onset_agrees(&v, code);
    let (v, code) = lab(&["--range", "40000", "40099", "--duration", "2s"]);
    assert_eq!(v["model"]["usable_ports"], 100);
    assert_onset_agrees(&v, code);
}

#[test]
fn sigterm_stops_the_lab_and_removes_its_namespace() {
    if !require_root("sigterm_stops_the_lab_and_removes_its_namespace") {
        return;
    }
    let mut child = Command::new(PORTDOCTOR)
        .args(["lab", "--json", "--duration", "20s", "--tw-reuse", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the lab");
    let prefix = format!("portdoctor-lab-{}-", child.id());
    let found = common::wait_until(Duration::from_secs(10), || {
        std::fs::read_dir("/run/netns").ok()?.find_map(|e| {
            let name = e.ok()?.file_name().to_string_lossy().into_owned();
            name.starts_with(&prefix).then_some(name)
        })
    });
    let Some(name) = found else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the lab never created {prefix}*");
    };
    thread::sleep(Duration::from_millis(500));
    common::run_ok(Command::new("kill").args(["-TERM", &child.id().to_string()]));
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the lab did not stop within 10 s of SIGTERM");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut stdout)
        .expect("reading stdout");
    assert_eq!(status.code(), Some(1), "interrupted run exits 1");
    assert!(!Path::new("/run/netns").join(&name).exists(), "{name} left");
    let v: Value = serde_json::from_str(&stdout).expect("partial report as JSON");
    assert_eq!(v["observed"]["completed"], false);
    assert!(v["observed"]["stop_reason"]
        .as_str()
        .unwrap()
        .contains("SIGTERM"));
    assert_namespace_gone(&v);
}

#[test]
fn hard_limits_refuse_to_start() {
    for args in [
        &["lab", "--rate", "5000"][..],
        &["lab", "--duration", "2m"],
        &["lab", "--range", "20000", "30000"],
        &["lab", "--destinations", "64"],
        &["lab", "--rate", "2000", "--lifetime", "5s"],
        &["lab", "--rate", "10", "--ramp", "3000"],
        &["lab", "--range", "41000", "40000"],
    ] {
        let run = portdoctor(args);
        assert_eq!(run.code, 4, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains("limit") || run.stderr.contains("--"),
            "{}",
            run.stderr
        );
    }
}

#[test]
fn without_privileges_it_says_what_is_needed() {
    if !require_root("without_privileges_it_says_what_is_needed") {
        return;
    }
    // As nobody: `ip netns add` is refused, nothing is left behind, exit 3.
    let out = run_bounded(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(PORTDOCTOR)
            .args(["lab", "--duration", "1s"]),
        LAB_TIMEOUT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("needs root"), "{stderr}");
}
