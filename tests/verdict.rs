//! Issue 13, "a verdict you can trust": the verdict and the advice in the situations that matter
//! most, each reproduced with real sockets in a network namespace the test makes (root).
//!
//! Expectations come from outside portdoctor: the rate the helper paced itself to, the number of
//! sockets it holds in each state (checked with `ss`), and the sysctls the test set.
#![cfg(target_os = "linux")]

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{finding_codes, pool_summary, pools, portdoctor, python, Background, Netns};
use serde_json::Value;

macro_rules! require_root {
    ($name:literal) => {
        if !common::require_root($name) {
            return;
        }
    };
}

/// How long a helper holds its sockets at most; tests finish well before.
const HOLD_SECONDS: &str = "60";
/// Upper bound for a helper to become ready.
const READY: Duration = Duration::from_secs(20);

/// Listens on HOST:PORT and makes COUNT connections to it at RATE per second (0: as fast as it
/// can), each closed by the client first (TIME_WAIT on the client's ephemeral port). Writes
/// OUT (`started`) after the first connection, OUT.done with the count made when finished, and
/// then holds HOLD seconds. Bounded by COUNT and by HOLD.
const CHURN_PY: &str = r"
import os, socket, sys, time
host, port, rate, count, out, hold = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5], float(sys.argv[6])
lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
lst.bind((host, port))
lst.listen(128)
def write(path, text):
    with open(path + '.tmp', 'w') as f:
        f.write(text)
    os.rename(path + '.tmp', path)
start = time.monotonic()
made = 0
for i in range(count):
    if rate > 0:
        due = start + i / rate
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
    if time.monotonic() - start > hold:
        break
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        c.connect((host, port))
    except OSError as e:
        sys.stderr.write('connect %d: %s\n' % (i, e))
        c.close()
        break
    s, _ = lst.accept()
    c.close()
    s.recv(1)
    s.close()
    made += 1
    if made == 1:
        write(out, 'started')
write(out + '.done', str(made))
time.sleep(hold)
";

/// Starts the churn helper in NS; returns it and the instant its first connection was made.
fn churn(
    ns: &Netns,
    host: &str,
    port: u16,
    rate: f64,
    count: u32,
) -> (Background, Instant, String) {
    let out = ns.path("churn");
    let mut cmd = ns.exec(python());
    cmd.args([
        "-c",
        CHURN_PY,
        host,
        &port.to_string(),
        &rate.to_string(),
        &count.to_string(),
    ])
    .arg(&out)
    .arg(HOLD_SECONDS);
    let mut proc = ns.spawn("churn", cmd);
    proc.wait_for_file(&out, READY);
    let started = Instant::now();
    let done = format!("{}.done", out.display());
    (proc, started, done)
}

/// Waits (bounded) for the churn helper to finish its COUNT and returns how many it made.
fn churn_done(proc: &mut Background, done: &str) -> u64 {
    let text = proc.wait_for_file(std::path::Path::new(done), READY);
    text.trim()
        .parse()
        .expect("the churn helper writes a count")
}

/// The one destination pool of the report to PORT.
fn pool_to(report: &Value, port: u64) -> &Value {
    let found: Vec<&Value> = pools(report)
        .iter()
        .filter(|p| p["scope"] == "destination" && p["remote_port"] == port)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "want one pool to port {port}: {:#?}",
        pool_summary(report)
    );
    found[0]
}

fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        thread::sleep(at - now);
    }
}

/// Item 1: 200 connections/s for 3 s into a 5,000-port range with reuse off fills it in ~25 s:
/// the rate is ~200/s (not 10 s worth of arrivals divided by 10 s) and the verdict critical.
#[test]
fn churn_started_three_seconds_ago_is_critical() {
    require_root!("churn_started_three_seconds_ago_is_critical");
    let ns = Netns::new("burst");
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 44999");
    // Bounded: at most 2,000 connections (10 s at 200/s), the test reads at 3 s.
    let (mut proc, started, _) = churn(&ns, "127.0.0.1", 7100, 200.0, 2_000);
    sleep_until(started + Duration::from_secs(3));
    let run = portdoctor(&["check", "--netns", &ns.name, "--json"]);
    let report = run.json();
    let p = pool_to(&report, 7100);
    let rate = p["connect_rate_per_s"].as_f64().expect("a rate");
    assert!(
        (160.0..=240.0).contains(&rate),
        "rate {rate}/s, want 200/s ± 20 %: {p}"
    );
    let window = p["rate_window_seconds"].as_f64().expect("a rate window");
    assert!(window < 6.0, "the rate covers the 3 s the churn ran: {p}");
    let eta = p["eta_seconds"].as_f64().expect("a forecast");
    assert!(eta < 60.0, "fills within a minute: {p}");
    assert_eq!(report["verdict"]["level"], "critical", "{report:#}");
    assert_eq!(run.code, 2);
    proc.stop();
}

/// Item 1: a one-off burst of 1,000 connections that ended 8 s ago does not fill the pool.
#[test]
fn a_burst_that_stopped_is_not_forecast() {
    require_root!("a_burst_that_stopped_is_not_forecast");
    let ns = Netns::new("stopped");
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 44999");
    let (mut proc, _, done) = churn(&ns, "127.0.0.1", 7101, 0.0, 1_000);
    assert_eq!(churn_done(&mut proc, &done), 1_000);
    thread::sleep(Duration::from_secs(8));
    let run = portdoctor(&["check", "--netns", &ns.name, "--json"]);
    let report = run.json();
    let p = pool_to(&report, 7101);
    assert_eq!(p["time_wait"], 1_000, "{p}");
    assert_eq!(p["eta_seconds"], Value::Null, "no forecast: {p}");
    assert_eq!(
        report["verdict"]["level"],
        "ok",
        "{:?}",
        finding_codes(&report)
    );
    let human = portdoctor(&["check", "--netns", &ns.name, "--color", "never"]);
    assert!(!human.stdout.contains("full in"), "{}", human.stdout);
    proc.stop();
}

/// Item 1: one TIME_WAIT is no rate: no forecast ("full in 3 d").
#[test]
fn one_socket_is_not_forecast() {
    require_root!("one_socket_is_not_forecast");
    let ns = Netns::new("one");
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 44999");
    let (mut proc, _, done) = churn(&ns, "127.0.0.1", 7102, 0.0, 1);
    assert_eq!(churn_done(&mut proc, &done), 1);
    let (report, code) = ns.check_json(&[]);
    let p = pool_to(&report, 7102);
    assert_eq!(p["time_wait"], 1, "{p}");
    assert_eq!(p["eta_seconds"], Value::Null, "no forecast: {p}");
    assert_eq!(code, 0, "{:?}", finding_codes(&report));
    proc.stop();
}
