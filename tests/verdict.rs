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

/// Fills the pool to HOST:PORT with sockets that never finish: MODE `close_wait` listens on
/// HOST:PORT, connects until connect() fails (at most MAX), the server side closes each at
/// once and the client never calls close(); MODE `syn_sent` connects without blocking to
/// HOST:PORT, which never answers. Writes OUT as JSON (`held`, `failed` with the errno of the
/// first failure) and holds HOLD seconds.
const STUCK_PY: &str = r"
import errno, json, os, socket, sys, time
mode, host, port, limit, out, hold = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], float(sys.argv[6])
held, servers, failed, err = [], [], 0, None
if mode == 'close_wait':
    lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind((host, port))
    lst.listen(512)
for i in range(limit):
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if mode == 'close_wait':
            c.connect((host, port))
            s, _ = lst.accept()
            s.close()
        else:
            c.setblocking(False)
            rc = c.connect_ex((host, port))
            if rc != errno.EINPROGRESS:
                raise OSError(rc, os.strerror(rc))
        held.append(c)
    except OSError as e:
        failed += 1
        err = err or errno.errorcode.get(e.errno, str(e.errno))
        c.close()
with open(out + '.tmp', 'w') as f:
    json.dump({'held': len(held), 'failed': failed, 'errno': err}, f)
os.rename(out + '.tmp', out)
time.sleep(hold)
";

/// Runs the stuck-socket helper; returns it and its record.
fn stuck(ns: &Netns, mode: &str, host: &str, port: u16, limit: u32) -> (Background, Value) {
    let out = ns.path("stuck");
    let mut cmd = ns.exec(python());
    cmd.args([
        "-c",
        STUCK_PY,
        mode,
        host,
        &port.to_string(),
        &limit.to_string(),
    ])
    .arg(&out)
    .arg(HOLD_SECONDS);
    let mut proc = ns.spawn("stuck", cmd);
    let text = proc.wait_for_file(&out, READY);
    let truth: Value = serde_json::from_str(&text).expect("the helper writes JSON");
    (proc, truth)
}

fn finding<'a>(report: &'a Value, code: &str) -> &'a Value {
    let found = common::findings(report, code);
    assert_eq!(
        found.len(),
        1,
        "want one {code}: {:?}",
        finding_codes(report)
    );
    found[0]
}

/// Item 2: 100 client sockets left in CLOSE_WAIT fill a 100-port pool; the report says so,
/// names the process, and does not advise a pool size or a wider range.
#[test]
fn close_wait_filling_a_pool_is_a_leak() {
    require_root!("close_wait_filling_a_pool_is_a_leak");
    let ns = Netns::new("cwleak");
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 40099");
    let (mut proc, truth) = stuck(&ns, "close_wait", "127.0.0.1", 7200, 103);
    assert_eq!(truth["held"], 100, "{truth}");
    assert_eq!(truth["failed"], 3, "{truth}");
    assert_eq!(truth["errno"], "EADDRNOTAVAIL", "{truth}");
    assert_eq!(ns.ss().count("CLOSE_WAIT"), 100, "{}", ns.ss_raw());

    let run = portdoctor(&["check", "--netns", &ns.name, "--json"]);
    let report = run.json();
    assert_eq!(run.code, 2, "critical");
    let p = pool_to(&report, 7200);
    assert_eq!(p["in_use"], 100, "{p}");
    assert_eq!(p["states"]["CLOSE_WAIT"], 100, "{p}");
    assert_eq!(
        p["states"].as_object().map(serde_json::Map::len),
        Some(1),
        "{p}"
    );
    let f = finding(&report, "close_wait_leak");
    assert_eq!(f["severity"], "critical", "{f}");
    assert_eq!(f["evidence"]["sockets"], 100, "{f}");
    assert_eq!(f["evidence"]["processes"][0]["pid"], proc.pid, "{f}");
    assert_eq!(f["evidence"]["processes"][0]["sockets"], 100, "{f}");
    let fix = finding(&report, "pool_exhausted")["fix"]
        .as_str()
        .expect("a fix")
        .to_string();
    assert!(fix.contains("CLOSE_WAIT"), "{fix}");
    assert!(!fix.contains("open connection"), "{fix}");
    assert!(!fix.contains("ip_local_port_range"), "{fix}");
    proc.stop();
}

/// Item 2: 100 connects to an address that never answers (a tun device drops the SYNs)
/// fill a 100-port pool in SYN_SENT.
#[test]
fn syn_sent_filling_a_pool_is_reported() {
    require_root!("syn_sent_filling_a_pool_is_reported");
    let ns = Netns::new("synsent");
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 40099");
    // A tun device nobody reads: packets routed to it vanish without an answer or an error.
    ns.ip(&["tuntap", "add", "pd0", "mode", "tun"]);
    ns.ip(&["addr", "add", "10.99.0.1/24", "dev", "pd0"]);
    ns.ip(&["link", "set", "pd0", "up"]);
    let (mut proc, truth) = stuck(&ns, "syn_sent", "10.99.0.2", 7300, 103);
    assert_eq!(truth["held"], 100, "{truth}");
    assert_eq!(truth["errno"], "EADDRNOTAVAIL", "{truth}");
    assert_eq!(ns.ss().count("SYN_SENT"), 100, "{}", ns.ss_raw());

    let run = portdoctor(&["check", "--netns", &ns.name, "--json"]);
    let report = run.json();
    assert_eq!(run.code, 2, "critical");
    let p = pool_to(&report, 7300);
    assert_eq!(p["states"]["SYN_SENT"], 100, "{p}");
    let f = finding(&report, "syn_sent_stuck");
    assert_eq!(f["evidence"]["sockets"], 100, "{f}");
    assert_eq!(f["evidence"]["processes"][0]["pid"], proc.pid, "{f}");
    assert!(
        f["message"]
            .as_str()
            .is_some_and(|m| m.contains("does not answer")),
        "{f}"
    );
    let fix = finding(&report, "pool_exhausted")["fix"]
        .as_str()
        .expect("a fix")
        .to_string();
    assert!(fix.contains("SYN_SENT"), "{fix}");
    let human = portdoctor(&["check", "--netns", &ns.name, "--color", "never"]);
    assert!(human.stdout.contains("syn_sent_stuck"), "{}", human.stdout);
    assert!(!human.stdout.contains("holds 0 open"), "{}", human.stdout);
    proc.stop();
}

/// Listens on DST ports P1..PN and PLAIN; opens BOUND connections from bind((SRC, 0)) spread
/// over P1..PN, then plain connect()s (no bind) to DST:PLAIN until one fails (at most MAX).
/// Writes OUT as JSON (`bound`, `plain`, `plain_local_ip`, `errno`) and holds HOLD seconds.
const BIND_HELD_PY: &str = r"
import errno, json, os, socket, sys, time
src, dst, ports, plain_port, bound_n, limit, out, hold = sys.argv[1], sys.argv[2], [int(p) for p in sys.argv[3].split(',')], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), sys.argv[7], float(sys.argv[8])
listeners = []
for p in ports + [plain_port]:
    l = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((dst, p))
    l.listen(256)
    listeners.append(l)
held, accepted = [], []
for i in range(bound_n):
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.bind((src, 0))
    c.connect((dst, ports[i % len(ports)]))
    held.append(c)
    accepted.append(listeners[i % len(ports)].accept()[0])
plain, err, local = [], None, None
for i in range(limit):
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        c.connect((dst, plain_port))
    except OSError as e:
        err = errno.errorcode.get(e.errno, str(e.errno))
        c.close()
        break
    local = c.getsockname()[0]
    plain.append(c)
    accepted.append(listeners[-1].accept()[0])
with open(out + '.tmp', 'w') as f:
    json.dump({'bound': len(held), 'plain': len(plain), 'plain_local_ip': local, 'errno': err}, f)
os.rename(out + '.tmp', out)
time.sleep(hold)
";

/// Item 3: 40 sockets bind(127.0.0.2, 0) + connect to 127.0.0.3:7001-7004 in range
/// 40000-40099 leave plain connects from 127.0.0.1 to 127.0.0.3:7005 only 60 ports; the
/// report's capacity for that pool is 60, says why, and names IP_BIND_ADDRESS_NO_PORT.
#[test]
fn bind_held_ports_leave_every_connect_pool() {
    require_root!("bind_held_ports_leave_every_connect_pool");
    let ns = Netns::new("bindheld");
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 40099");
    let out = ns.path("bind-held");
    let mut cmd = ns.exec(python());
    cmd.args([
        "-c",
        BIND_HELD_PY,
        "127.0.0.2",
        "127.0.0.3",
        "7001,7002,7003,7004",
        "7005",
        "40",
        "150",
    ])
    .arg(&out)
    .arg(HOLD_SECONDS);
    let mut proc = ns.spawn("bind-held", cmd);
    let truth: Value =
        serde_json::from_str(&proc.wait_for_file(&out, READY)).expect("the helper writes JSON");
    assert_eq!(truth["bound"], 40, "{truth}");
    assert_eq!(truth["plain_local_ip"], "127.0.0.1", "{truth}");
    assert_eq!(truth["errno"], "EADDRNOTAVAIL", "{truth}");
    // The kernel fact this test rests on: the 40 bind()-held ports are gone for plain connects.
    assert_eq!(truth["plain"], 60, "{truth}");

    let run = portdoctor(&["check", "--netns", &ns.name, "--json"]);
    let report = run.json();
    let p = pool_to(&report, 7005);
    assert_eq!(p["local_ip"], "127.0.0.1", "{p}");
    assert_eq!(p["in_use"], 60, "{p}");
    assert_eq!(p["capacity"], 60, "the kernel gave 60: {p}");
    assert_eq!(p["bind_held_ports"], 40, "{p}");
    assert_eq!(p["level"], "critical", "{p}");
    assert_eq!(run.code, 2);
    let exhausted: Vec<&Value> = common::findings(&report, "pool_exhausted")
        .into_iter()
        .filter(|f| f["evidence"]["bind_held_ports"] == 40)
        .collect();
    assert_eq!(
        exhausted.len(),
        1,
        "{:#?}",
        common::findings(&report, "pool_exhausted")
    );
    assert!(
        exhausted[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("40 ports of the range are held by sockets that bind()")),
        "{}",
        exhausted[0]
    );
    let b = finding(&report, "bind_before_connect_suspected");
    assert_eq!(b["evidence"]["local_ip"], "127.0.0.2", "{b}");
    assert!(
        b["fix"]
            .as_str()
            .is_some_and(|f| f.contains("IP_BIND_ADDRESS_NO_PORT")),
        "{b}"
    );
    proc.stop();
}

/// Item 5: with the range unreadable (a bind mount over the namespace's sysctl file, made from
/// inside it in the private mount namespace `ip netns exec` gives this run only) the verdict is a `capacity_unknown` warning, exit 1, and
/// the report never says "every pool has room".
#[test]
fn unknown_capacity_is_not_ok() {
    require_root!("unknown_capacity_is_not_ok");
    let ns = Netns::new("unknown");
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 44999");
    let (mut proc, _, done) = churn(&ns, "127.0.0.1", 7400, 0.0, 20);
    assert_eq!(churn_done(&mut proc, &done), 20);
    let garbage = ns.path("not-a-range");
    std::fs::write(&garbage, "not a range\n").expect("writing a temporary file");
    let run = |json: bool| {
        let script = format!(
            "mount --bind {} /proc/sys/net/ipv4/ip_local_port_range && exec {} check --netns {} {}",
            garbage.display(),
            common::PORTDOCTOR,
            ns.name,
            if json { "--json" } else { "--color never" }
        );
        common::run_program(
            ns.exec("sh").args(["-c", &script]),
            &["check (range unreadable)"],
        )
    };
    let r = run(true);
    let report = r.json();
    assert_eq!(
        report["settings"]["ephemeral_ports"],
        Value::Null,
        "{report:#}"
    );
    assert_eq!(r.code, 1, "warning: {:?}", finding_codes(&report));
    assert_eq!(report["verdict"]["level"], "warning");
    let f = finding(&report, "capacity_unknown");
    assert_eq!(f["severity"], "warning", "{f}");
    let p = pool_to(&report, 7400);
    assert_eq!(p["capacity"], Value::Null, "{p}");
    let human = run(false);
    assert_eq!(human.code, 1, "{}", human.stderr);
    assert!(
        human.stdout.contains("capacity_unknown"),
        "{}",
        human.stdout
    );
    assert!(
        !human.stdout.contains("every pool has room"),
        "{}",
        human.stdout
    );
    proc.stop();
}

/// Item 5: `--source procfs` cannot see bound-only sockets, and says so.
#[test]
fn procfs_source_says_its_capacity_may_be_too_high() {
    require_root!("procfs_source_says_its_capacity_may_be_too_high");
    let ns = Netns::new("procfsnote");
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 40099");
    let mut bound = ns.python_bound(&[("127.0.0.1", 40050)]);
    let (netlink, _) = ns.check_json(&[]);
    let (procfs, _) = ns.check_json(&["--source", "procfs"]);
    // The kernel's view (netlink) subtracts the bound port; procfs cannot.
    assert_eq!(netlink["capacity"]["usable_per_pool"], 99, "{netlink:#}");
    assert_eq!(procfs["capacity"]["usable_per_pool"], 100, "{procfs:#}");
    let notes = procfs["notes"].as_array().expect("notes");
    assert!(
        notes.iter().any(|n| n
            .as_str()
            .is_some_and(|n| n.contains("capacities may be too high"))),
        "{notes:?}"
    );
    bound.stop();
}

/// Item 4: with a listener on port 20000 (inside the wider range check suggests), every
/// `portdoctor tune apply` line check and `capacity --from-host` print is accepted by `tune plan`
/// exactly as printed (the shell parses it), and the by-hand lines leave the listener's port
/// reserved.
#[test]
fn range_fixes_reserve_listeners_and_tune_accepts_them_as_printed() {
    require_root!("range_fixes_reserve_listeners_and_tune_accepts_them_as_printed");
    let ns = Netns::new("fixes");
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 40099");
    // The churn's own listener is on 20000; 80 TIME_WAIT fill 80 % of the 100-port pool.
    let (mut proc, _, done) = churn(&ns, "127.0.0.1", 20000, 0.0, 80);
    assert_eq!(churn_done(&mut proc, &done), 80);
    let (report, _) = ns.check_json(&[]);
    // capacity reads the same namespace and must plan its range change the same way.
    let cap = common::portdoctor(&[
        "capacity",
        "--from-host",
        "--netns",
        &ns.name,
        "--rate",
        "5000",
        "--json",
    ]);
    let cap: serde_json::Value = serde_json::from_str(&cap.stdout).expect("capacity JSON");
    let fixes = report["verdict"]["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| (f["code"].clone(), f["fix"].as_str().expect("a fix")))
        .chain(
            cap["changes"]
                .as_array()
                .expect("capacity changes")
                .iter()
                .map(|c| (c["id"].clone(), c["how"].as_str().expect("a how"))),
        );
    let mut planned = Vec::new();
    let mut by_hand = Vec::new();
    for (code, fix) in fixes {
        for line in fix.lines() {
            if line.contains("portdoctor tune apply") {
                // The undo finds the backup of this namespace.
                let undo = format!("undo: portdoctor tune rollback --netns {})", ns.name);
                assert!(line.ends_with(&undo), "{line}");
            }
            let cut = |s: &str| s[..s.find("  (").unwrap_or(s.len())].to_string();
            if let Some(cmd) = line.strip_prefix("by hand: ") {
                by_hand.push(cut(cmd));
            } else if let Some(at) = line.find("portdoctor tune apply") {
                planned.push((code.clone(), cut(&line[at..])));
            }
        }
    }
    let range_fixes: Vec<&String> = planned
        .iter()
        .map(|(_, c)| c)
        .filter(|c| c.contains("ip_local_port_range"))
        .collect();
    assert!(
        range_fixes.len() >= 2,
        "check and capacity: {report:#}\n{cap:#}"
    );
    for c in &range_fixes {
        assert!(
            c.contains("--set net.ipv4.ip_local_reserved_ports=20000"),
            "the listener is reserved: {c}"
        );
    }
    for (code, cmd) in &planned {
        let plan = cmd
            .replacen(
                "portdoctor tune apply",
                &format!("{} tune plan", common::PORTDOCTOR),
                1,
            )
            .replace(" --yes", "");
        let p = common::run_program(
            std::process::Command::new("sh").args(["-c", &plan]),
            &[plan.as_str()],
        );
        assert_eq!(p.code, 0, "{code}: {plan}\n{}\n{}", p.stdout, p.stderr);
    }
    // The by-hand lines as printed (they run inside the namespace): the range grows and
    // 20000 stays out of it.
    for cmd in by_hand.iter().filter(|c| c.contains("ip_local_port_range")) {
        assert!(
            cmd.starts_with(&format!("ip netns exec {} ", ns.name)),
            "{cmd}"
        );
        let out = common::run_bounded(
            std::process::Command::new("sh").args(["-c", cmd]),
            Duration::from_secs(30),
        );
        assert!(out.status.success(), "{cmd}: {out:?}");
    }
    // check widens to 15000-65000, capacity (whose by-hand line ran last) to 15000-65535.
    assert_eq!(
        ns.read_sysctl("net.ipv4.ip_local_port_range"),
        "15000\t65535"
    );
    assert_eq!(ns.read_sysctl("net.ipv4.ip_local_reserved_ports"), "20000");
    proc.stop();
}

/// Item 4: `capacity` refuses inputs no host can have (exit 4), prints rates below 1/s as
/// such, never suggests a range down to 1024, and writes the sysctl.d file idempotently.
#[test]
fn capacity_refuses_the_impossible_and_prints_what_it_means() {
    for args in [
        &["capacity", "--range", "0", "100"][..],
        &["capacity", "--range", "40000", "40099", "--bound", "200"],
        &["capacity", "--rate", "10", "--time-wait", "0s"],
        &["capacity", "--range", "40100", "40000"],
        &["capacity", "--reserved", "0-10"],
    ] {
        let r = portdoctor(args);
        assert_eq!(r.code, 4, "{args:?}: {}\n{}", r.stdout, r.stderr);
        assert!(r.stderr.contains("error"), "{args:?}: {}", r.stderr);
    }
    // One port held 60 s: 1/60 = 0.017 connections/s.
    let r = portdoctor(&["capacity", "--range", "40000", "40000", "--rate", "0.01"]);
    assert!(r.stdout.contains("0.017/s"), "{}", r.stdout);
    assert!(!r.stdout.contains(" 0.0/s"), "{}", r.stdout);
    let r = portdoctor(&["capacity", "--rate", "200000", "--lifetime", "1s"]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert!(!r.stdout.contains("1024 65535"), "{}", r.stdout);
    assert!(r.stdout.contains("15000 65535"), "{}", r.stdout);
    // The how-to replaces the knob's line in the drop-in instead of appending another: run the
    // printed pipeline twice against a scratch file.
    let how = r
        .stdout
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("how: by hand: sysctl -w net.ipv4.ip_local_port_range=")
        })
        .expect("a range how-to");
    let persist = how
        .split_once(" && ")
        .map(|(_, p)| p)
        .expect("a persisting part");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("90-portdoctor.conf");
    std::fs::write(
        &file,
        "net.ipv4.tcp_tw_reuse = 1\nnet.ipv4.ip_local_port_range = 1 2\n",
    )
    .expect("writing the scratch drop-in");
    let script = persist.replace(
        "/etc/sysctl.d/90-portdoctor.conf",
        &file.display().to_string(),
    );
    for _ in 0..2 {
        let out = common::run_bounded(
            std::process::Command::new("sh").args(["-c", &script]),
            Duration::from_secs(10),
        );
        assert!(out.status.success(), "{script}: {out:?}");
    }
    let text = std::fs::read_to_string(&file).expect("the drop-in");
    assert_eq!(
        text, "net.ipv4.tcp_tw_reuse = 1\nnet.ipv4.ip_local_port_range = 15000 65535\n",
        "{script}"
    );
}

/// Connects from SRC to each DST:PORT (IP_BIND_ADDRESS_NO_PORT + bind((SRC, 0)): the source
/// address is chosen, the port is left to connect(), so pools stay per destination) and holds.
const SPREAD_PY: &str = r"
import os, socket, sys, time
out, hold, pairs = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
listeners, held = {}, []
for i in range(0, len(pairs), 3):
    src, dst, port = pairs[i], pairs[i + 1], int(pairs[i + 2])
    if (dst, port) not in listeners:
        l = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        l.bind((dst, port))
        l.listen(64)
        listeners[(dst, port)] = l
    for _ in range(3):
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.setsockopt(socket.SOL_IP, 24, 1)  # IP_BIND_ADDRESS_NO_PORT
        c.bind((src, 0))
        c.connect((dst, port))
        held.append(c)
        held.append(listeners[(dst, port)].accept()[0])
with open(out + '.tmp', 'w') as f:
    f.write(str(len(held) // 2))
os.rename(out + '.tmp', out)
time.sleep(hold)
";

/// Item 4: `capacity --from-host` counts pools and destinations as `check` does: 5 pools over
/// 4 destinations from 2 sources (it said "3 pools, 1 destination").
#[test]
fn capacity_from_host_counts_pools_as_check_does() {
    require_root!("capacity_from_host_counts_pools_as_check_does");
    let ns = Netns::new("capcount");
    let out = ns.path("spread");
    let mut cmd = ns.exec(python());
    cmd.args(["-c", SPREAD_PY]).arg(&out).arg(HOLD_SECONDS);
    for (src, dst, port) in [
        ("127.0.0.1", "127.0.0.2", "7001"),
        ("127.0.0.1", "127.0.0.2", "7002"),
        ("127.0.0.1", "127.0.0.2", "7003"),
        ("127.0.0.1", "127.0.0.3", "7001"),
        ("127.0.0.4", "127.0.0.2", "7001"),
    ] {
        cmd.args([src, dst, port]);
    }
    let mut proc = ns.spawn("spread", cmd);
    assert_eq!(proc.wait_for_file(&out, READY).trim(), "15");
    let (report, _) = ns.check_json(&[]);
    assert_eq!(pools(&report).len(), 5, "{:#?}", pool_summary(&report));
    let r = portdoctor(&["capacity", "--from-host", "--netns", &ns.name, "--json"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let cap: Value = serde_json::from_str(&r.stdout).expect("capacity JSON");
    let text = cap.to_string();
    assert!(text.contains("\"destinations\":4"), "{cap:#}");
    assert!(text.contains("\"source_ips\":2"), "{cap:#}");
    assert!(text.contains("\"pools\":5"), "{cap:#}");
    proc.stop();
}

/// Item 6: as root, processes whose descriptors the kernel still refuses (PID 1 on these
/// machines: the test reads the host) are named with the error, and root is not told to "run as root"; one is "1
/// process", not "1 processes".
#[test]
fn owner_note_names_the_processes_and_does_not_tell_root_to_be_root() {
    require_root!("owner_note_names_the_processes_and_does_not_tell_root_to_be_root");
    // The host (read only): a namespace of the test's own holds no such process, and the
    // owner scan of a namespace looks at its processes only.
    let report = portdoctor(&["check", "--json"]).json();
    let hidden = report["owners"]["hidden_processes"]
        .as_u64()
        .expect("a count");
    let notes: Vec<&str> = report["notes"]
        .as_array()
        .expect("notes")
        .iter()
        .filter_map(Value::as_str)
        .filter(|n| n.contains("socket owners"))
        .collect();
    if hidden == 0 {
        // Nothing hidden on this machine: then nothing may be said either.
        assert!(notes.is_empty(), "{notes:?}");
        return;
    }
    assert_eq!(notes.len(), 1, "{notes:?}");
    let note = notes[0];
    assert!(!note.contains("run as root"), "{note}");
    assert!(note.contains("even as root (pid "), "{note}");
    assert!(note.contains("os error"), "{note}");
    if hidden == 1 {
        assert!(note.starts_with("1 process could"), "{note}");
    }
}

/// Item 6: `lab --chart` to a path that cannot be written fails at once, before the lab runs
/// (it ran the whole lab and then lost the results).
#[test]
fn lab_checks_the_chart_path_first() {
    require_root!("lab_checks_the_chart_path_first");
    let started = Instant::now();
    let r = portdoctor(&[
        "lab",
        "--rate",
        "20",
        "--duration",
        "4s",
        "--chart",
        "/proc/portdoctor-no-such-dir/lab.svg",
    ]);
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("cannot write the chart"), "{}", r.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the 4 s lab ran first: {:?}",
        started.elapsed()
    );
}

/// Item 6: an OS error is printed once, and the place once ("cannot enter network namespace
/// X: Operation not permitted …", not the error twice and "network namespace network
/// namespace X" as before).
#[test]
fn an_os_error_is_printed_once() {
    require_root!("an_os_error_is_printed_once");
    let ns = Netns::new("oserr");
    let r = common::run_program(
        std::process::Command::new("setpriv").args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            common::PORTDOCTOR,
            "check",
            "--netns",
            &ns.name,
        ]),
        &["setpriv", "check", "--netns", &ns.name],
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    let line = r.stderr.trim();
    assert!(
        line.starts_with(&format!(
            "portdoctor: error: cannot enter network namespace {}: Operation not permitted",
            ns.name
        )),
        "{line}"
    );
    assert_eq!(line.matches("os error").count(), 1, "{line}");
    assert_eq!(line.lines().count(), 1, "{line}");
}
