//! `check --observe`: failed connect() (EADDRNOTAVAIL) and bind() (EADDRINUSE) calls counted by
//! the tracepoint tracer, against real sockets in namespaces these tests create. Each client
//! reports what its own calls returned, and the counts must match exactly.
#![cfg(target_os = "linux")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{findings, python, require_root, run_program, Background, Netns};
use serde_json::Value;

/// The client: listens where asked, then (after `delay` seconds, so the tracer is running)
/// runs its steps and writes the errno counts of each step to OUT; then holds its sockets for
/// `hold` seconds and exits.
const CLIENT: &str = r#"
import errno, json, os, socket, sys, time
plan = json.loads(sys.argv[1]); out = sys.argv[2]
keep = []
for ip, port in plan.get("listen", []):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ip, port)); s.listen(4096); keep.append(s)
time.sleep(plan.get("delay", 1.5))
results = []
for step in plan["steps"]:
    kind, n = step[0], step[-1]
    errs = {}
    for _ in range(n):
        s = socket.socket()
        try:
            if kind == "connect":
                s.settimeout(step[3] if len(step) > 4 else None)
                s.connect((step[1], step[2]))
            elif kind == "bind_connect":
                s.bind((step[1], 0)); s.connect((step[2], step[3]))
            keep.append(s); key = "ok"
        except socket.timeout:
            s.close(); key = "timeout"
        except OSError as e:
            s.close(); key = errno.errorcode.get(e.errno, str(e.errno))
        errs[key] = errs.get(key, 0) + 1
    results.append(errs)
tmp = out + ".tmp"
with open(tmp, "w") as f:
    json.dump({"pid": os.getpid(), "results": results}, f)
os.rename(tmp, out)
time.sleep(plan.get("hold", 20))
"#;

const WINDOW: &str = "5s";

struct Client {
    bg: Background,
    out: PathBuf,
}

impl Client {
    fn start(ns: &Netns, plan: &Value) -> Client {
        let script = ns.path("client.py");
        std::fs::write(&script, CLIENT).expect("writing the client");
        let out = ns.path("client.json");
        let mut cmd = ns.exec(python());
        cmd.arg(&script).arg(plan.to_string()).arg(&out);
        Client {
            bg: ns.spawn("client", cmd),
            out,
        }
    }

    /// (pid, per-step errno counts) once the client has run its steps.
    fn results(&mut self) -> (u64, Vec<Value>) {
        let text = self.bg.wait_for_file(&self.out, Duration::from_secs(30));
        let v: Value = serde_json::from_str(&text).expect("client output is JSON");
        (
            v["pid"].as_u64().expect("pid"),
            v["results"].as_array().expect("results").clone(),
        )
    }
}

/// A namespace whose ephemeral range is 40000–40009 (10 ports per pool).
fn small_range_ns(tag: &str) -> Netns {
    let ns = Netns::new(tag);
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 40009");
    ns
}

/// A running `check --netns NS --observe WINDOW --json`, its stdout going to a file.
struct Observer {
    child: std::process::Child,
    out: PathBuf,
}

/// Perf event descriptors the process holds (the tracer is up once it has them).
fn perf_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| {
        d.flatten()
            .filter(|e| {
                std::fs::read_link(e.path())
                    .is_ok_and(|l| l.to_string_lossy().contains("perf_event"))
            })
            .count()
    })
}

/// Starts `check --observe` on NS and returns once its tracer is running (so a client started
/// next is seen from its first system call, its setns included).
fn observe(ns: &Netns) -> Observer {
    observe_with(ns, &[])
}

/// `observe` with more arguments for check.
fn observe_with(ns: &Netns, more: &[&str]) -> Observer {
    let out = ns.path("check.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_portdoctor"))
        .args(["check", "--netns", &ns.name, "--observe", WINDOW, "--json"])
        .args(more)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .spawn()
        .expect("starting portdoctor check --observe");
    let pid = child.id();
    let up = common::wait_until(Duration::from_secs(20), || {
        (perf_fds(pid) > 0).then_some(())
    });
    if up.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("check --observe did not open its tracepoints within 20 s");
    }
    Observer { child, out }
}

/// Waits (at most 60 s) for the check to end: its report and exit code.
fn finish(mut o: Observer) -> (Value, i32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Ok(Some(st)) = o.child.try_wait() {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = o.child.kill();
            let _ = o.child.wait();
            panic!("check --observe did not end within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&o.out).expect("check output");
    let report: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("check --json output is not JSON ({e}): {text}"));
    (report, status.code().expect("check exited normally"))
}

fn pool_failures(report: &Value, remote_ip: &str, port: u64) -> Value {
    report["pools"]
        .as_array()
        .expect("pools")
        .iter()
        .find(|p| p["remote_ip"] == remote_ip && p["remote_port"] == port)
        .map_or(Value::Null, |p| p["connect_failures"].clone())
}

/// Sum of `events[].count` matching every (key, value) given.
fn events_count(report: &Value, filter: &[(&str, Value)]) -> u64 {
    report["connect_failures"]["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| filter.iter().all(|(k, v)| &e[*k] == v))
        .map(|e| e["count"].as_u64().expect("count"))
        .sum()
}

#[test]
fn counts_25_and_5_failures_by_pool_and_pid() {
    if !require_root("counts_25_and_5_failures_by_pool_and_pid") {
        return;
    }
    let ns = small_range_ns("fail25");
    let check = observe(&ns);
    let plan = serde_json::json!({
        "listen": [["127.0.0.3", 7001], ["127.0.0.4", 7002]],
        "steps": [
            ["connect", "127.0.0.3", 7001, 10], ["connect", "127.0.0.3", 7001, 25],
            ["connect", "127.0.0.4", 7002, 10], ["connect", "127.0.0.4", 7002, 5],
        ],
    });
    let mut client = Client::start(&ns, &plan);
    let (pid, results) = client.results();
    assert_eq!(results[0], serde_json::json!({"ok": 10}));
    assert_eq!(results[1], serde_json::json!({"EADDRNOTAVAIL": 25}));
    assert_eq!(results[3], serde_json::json!({"EADDRNOTAVAIL": 5}));
    let (report, code) = finish(check);
    let cf = &report["connect_failures"];
    assert_eq!(cf["total"], 30, "{cf}");
    assert_eq!(cf["by_error"]["EADDRNOTAVAIL"], 30, "{cf}");
    assert_eq!(cf["by_error"]["EADDRINUSE"], 0, "{cf}");
    assert_eq!(pool_failures(&report, "127.0.0.3", 7001), 25);
    assert_eq!(pool_failures(&report, "127.0.0.4", 7002), 5);
    let by = |ip: &str, port: u64| {
        events_count(
            &report,
            &[
                ("pid", pid.into()),
                ("remote_ip", ip.into()),
                ("remote_port", port.into()),
                ("local_ip", "127.0.0.1".into()),
                ("netns", ns.name.as_str().into()),
                ("exited", false.into()),
            ],
        )
    };
    assert_eq!(by("127.0.0.3", 7001), 25, "{cf}");
    assert_eq!(by("127.0.0.4", 7002), 5, "{cf}");
    let f = findings(&report, "connect_failures");
    assert_eq!(f.len(), 2, "one finding per pool: {f:?}");
    assert!(f.iter().all(|f| f["severity"] == "critical"));
    assert!(
        f.iter()
            .any(|f| f["pool"] == "127.0.0.1 → 127.0.0.3:7001" && f["evidence"]["failures"] == 25),
        "{f:?}"
    );
    assert_eq!(code, 2, "critical verdict");
}

#[test]
fn two_namespaces_each_count_their_own() {
    if !require_root("two_namespaces_each_count_their_own") {
        return;
    }
    let a = small_range_ns("failA");
    let b = small_range_ns("failB");
    let check_a = observe(&a);
    let check_b = observe(&b);
    let plan = |n: u32| {
        serde_json::json!({
            "listen": [["127.0.0.3", 7001]],
            "steps": [["connect", "127.0.0.3", 7001, 10], ["connect", "127.0.0.3", 7001, n]],
        })
    };
    let mut ca = Client::start(&a, &plan(7));
    let mut cb = Client::start(&b, &plan(4));
    assert_eq!(ca.results().1[1], serde_json::json!({"EADDRNOTAVAIL": 7}));
    assert_eq!(cb.results().1[1], serde_json::json!({"EADDRNOTAVAIL": 4}));
    let (ra, _) = finish(check_a);
    let (rb, _) = finish(check_b);
    assert_eq!(
        ra["connect_failures"]["total"], 7,
        "{}",
        ra["connect_failures"]
    );
    assert_eq!(
        rb["connect_failures"]["total"], 4,
        "{}",
        rb["connect_failures"]
    );
    assert_eq!(
        ra["connect_failures"]["other_namespaces"][&b.name], 4,
        "B's failures are attributed to B: {}",
        ra["connect_failures"]
    );
    assert_eq!(rb["connect_failures"]["other_namespaces"][&a.name], 7);
    assert_eq!(events_count(&ra, &[("netns", b.name.as_str().into())]), 0);
}

#[test]
fn refused_unreachable_and_timed_out_connects_are_not_counted() {
    if !require_root("refused_unreachable_and_timed_out_connects_are_not_counted") {
        return;
    }
    let ns = small_range_ns("failother");
    // 10.77.0.0/24 on a veth whose peer has no address: SYNs to .2 are never answered.
    ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
    ns.ip(&["addr", "add", "10.77.0.1/24", "dev", "v0"]);
    ns.ip(&["link", "set", "v0", "up"]);
    ns.ip(&["link", "set", "v1", "up"]);
    let check = observe(&ns);
    let plan = serde_json::json!({
        "listen": [["127.0.0.3", 7001]],
        "steps": [
            ["connect", "127.0.0.9", 7999, 5],
            ["connect", "192.0.2.1", 80, 5],
            ["connect", "10.77.0.2", 80, 0.5, 2],
            ["connect", "127.0.0.3", 7001, 10], ["connect", "127.0.0.3", 7001, 3],
        ],
    });
    let mut client = Client::start(&ns, &plan);
    let (_, results) = client.results();
    assert_eq!(results[0], serde_json::json!({"ECONNREFUSED": 5}));
    assert_eq!(results[1], serde_json::json!({"ENETUNREACH": 5}));
    assert_eq!(results[2], serde_json::json!({"timeout": 2}));
    assert_eq!(results[4], serde_json::json!({"EADDRNOTAVAIL": 3}));
    let (report, _) = finish(check);
    let cf = &report["connect_failures"];
    assert_eq!(cf["total"], 3, "only the 3 EADDRNOTAVAIL: {cf}");
    assert_eq!(
        events_count(&report, &[("remote_ip", "127.0.0.3".into())]),
        3
    );
}

#[test]
fn bind_before_connect_running_out_counts_bind_failures() {
    if !require_root("bind_before_connect_running_out_counts_bind_failures") {
        return;
    }
    let ns = small_range_ns("failbind");
    let check = observe(&ns);
    let plan = serde_json::json!({
        "listen": [["127.0.0.3", 7001]],
        "steps": [
            ["bind_connect", "127.0.0.1", "127.0.0.3", 7001, 10],
            ["bind_connect", "127.0.0.1", "127.0.0.3", 7001, 6],
        ],
    });
    let mut client = Client::start(&ns, &plan);
    let (pid, results) = client.results();
    assert_eq!(results[1], serde_json::json!({"EADDRINUSE": 6}));
    let (report, code) = finish(check);
    let cf = &report["connect_failures"];
    assert_eq!(cf["by_error"]["EADDRINUSE"], 6, "{cf}");
    assert_eq!(cf["by_error"]["EADDRNOTAVAIL"], 0, "{cf}");
    assert_eq!(
        events_count(
            &report,
            &[("pid", pid.into()), ("error", "EADDRINUSE".into())]
        ),
        6
    );
    let f = findings(&report, "bind_failures");
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(f[0]["fix"]
        .as_str()
        .is_some_and(|s| s.contains("IP_BIND_ADDRESS_NO_PORT")));
    assert!(findings(&report, "connect_failures").is_empty());
    assert_eq!(code, 2, "the pool is full (pool_exhausted)");
}

#[test]
fn a_process_that_exits_in_the_window_is_reported_as_exited() {
    if !require_root("a_process_that_exits_in_the_window_is_reported_as_exited") {
        return;
    }
    let ns = small_range_ns("failexit");
    let check = observe(&ns);
    let plan = serde_json::json!({
        "listen": [["127.0.0.3", 7001]],
        "steps": [["connect", "127.0.0.3", 7001, 10], ["connect", "127.0.0.3", 7001, 6]],
        // Exits well inside the window, but not within the tracer's first drains (a process
        // gone within ~20 ms of failing cannot be attributed: docs/failures.md); without this
        // margin the test failed under the loaded parallel suite.
        "hold": 0.5,
    });
    let mut client = Client::start(&ns, &plan);
    let (pid, results) = client.results();
    assert_eq!(results[1], serde_json::json!({"EADDRNOTAVAIL": 6}));
    let (report, code) = finish(check);
    let cf = &report["connect_failures"];
    assert_eq!(
        events_count(
            &report,
            &[
                ("pid", pid.into()),
                ("exited", true.into()),
                ("remote_port", 7001.into())
            ]
        ),
        6,
        "{cf}"
    );
    let ev = &cf["events"][0];
    assert!(
        ev["process"]
            .as_str()
            .is_some_and(|p| p.starts_with("python")),
        "{ev}"
    );
    assert_eq!(
        pool_failures(&report, "127.0.0.3", 7001),
        Value::Null,
        "the pool is gone with the process"
    );
    let f = findings(&report, "connect_failures");
    assert!(
        f.iter()
            .any(|f| f["message"].as_str().is_some_and(|m| m.contains("exited"))),
        "{f:?}"
    );
    assert_eq!(
        code, 2,
        "failures in the window are critical even when the pool looks empty"
    );
}

/// A copy of the binary that user nobody may run (the target dir may be private).
fn world_executable_copy() -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("pd-failures-")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let bin = dir.path().join("portdoctor");
    std::fs::copy(Path::new(env!("CARGO_BIN_EXE_portdoctor")), &bin).expect("copy");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    (dir, bin)
}

#[test]
fn unprivileged_observe_is_null_with_a_note() {
    if !require_root("unprivileged_observe_is_null_with_a_note") {
        return;
    }
    let ns = small_range_ns("failuser");
    let (_dir, bin) = world_executable_copy();
    let args = ["check", "--observe", "1s", "--json"];
    let mut cmd = ns.exec("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
    ])
    .arg(&bin)
    .args(args);
    let run = run_program(&mut cmd, &args);
    let report = run.json();
    assert!(
        report["connect_failures"].is_null(),
        "{}",
        report["connect_failures"]
    );
    assert!(report["pools"]
        .as_array()
        .expect("pools")
        .iter()
        .all(|p| p["connect_failures"].is_null()));
    let notes = report["notes"].to_string();
    assert!(
        notes.contains("failure tracing needs"),
        "a note says what is missing: {notes}"
    );
    assert_eq!(run.code, 0, "an idle namespace is ok: the verdict decides");
}

/// `GET /metrics` over plain HTTP/1.1; the body.
#[cfg(feature = "serve")]
fn scrape(addr: std::net::SocketAddr) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// The value of the sample line starting with `prefix`.
#[cfg(feature = "serve")]
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[cfg(feature = "serve")]
#[test]
fn serve_counter_rises_by_exactly_the_failures_between_two_scrapes() {
    if !require_root("serve_counter_rises_by_exactly_the_failures_between_two_scrapes") {
        return;
    }
    let ns = small_range_ns("failserve");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    // Spawned directly (not under timeout(1)): dropping the handle kills serve itself; a
    // SIGKILL to a timeout wrapper left serve running after the test.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portdoctor"));
    cmd.args(["serve", "--netns", &ns.name]).args([
        "--listen",
        &addr.to_string(),
        "--min-interval",
        "0",
    ]);
    let _serve = ns.spawn("serve", cmd);
    let first =
        common::wait_until(Duration::from_secs(10), || scrape(addr)).expect("serve answers");
    assert_eq!(
        sample(&first, "portdoctor_connect_failure_tracing "),
        Some(1.0),
        "{first}"
    );
    let series = "portdoctor_connect_failures_total{local_ip=\"127.0.0.1\",remote_ip=\"127.0.0.3\",remote_port=\"7001\",error=\"EADDRNOTAVAIL\"}";
    assert_eq!(sample(&first, series), None, "no failures yet: {first}");

    // Failures in another namespace at the same time must not be counted.
    let other = small_range_ns("failserveB");
    let plan = |n: u32| {
        serde_json::json!({
            "listen": [["127.0.0.3", 7001]], "delay": 0.2,
            "steps": [["connect", "127.0.0.3", 7001, 10], ["connect", "127.0.0.3", 7001, n]],
        })
    };
    let mut noise = Client::start(&other, &plan(9));
    let mut client = Client::start(&ns, &plan(8));
    assert_eq!(
        client.results().1[1],
        serde_json::json!({"EADDRNOTAVAIL": 8})
    );
    assert_eq!(
        noise.results().1[1],
        serde_json::json!({"EADDRNOTAVAIL": 9})
    );
    let seen = common::wait_until(Duration::from_secs(5), || {
        scrape(addr)
            .and_then(|t| sample(&t, series))
            .filter(|v| *v >= 8.0)
    });
    assert_eq!(seen, Some(8.0));
    std::thread::sleep(Duration::from_millis(300));
    let second = scrape(addr).expect("second scrape");
    assert_eq!(
        sample(&second, series),
        Some(8.0),
        "exactly 8, not B's 9 too: {second}"
    );
}

/// `check --observe --save FILE` keeps the failures in the snapshot file, and `check --load FILE`
/// reports them as the observing run did: the same counts, finding and exit code.
#[test]
fn saved_failures_come_back_with_load() {
    if !require_root("saved_failures_come_back_with_load") {
        return;
    }
    let ns = small_range_ns("failsave");
    let file = ns.path("snap.json");
    let file_arg = file.to_str().expect("utf-8 path").to_string();
    let check = observe_with(&ns, &["--save", &file_arg]);
    let plan = serde_json::json!({
        "listen": [["127.0.0.3", 7001]],
        "steps": [["connect", "127.0.0.3", 7001, 10], ["connect", "127.0.0.3", 7001, 12]],
    });
    let mut client = Client::start(&ns, &plan);
    assert_eq!(
        client.results().1[1],
        serde_json::json!({"EADDRNOTAVAIL": 12})
    );
    let (observed, code) = finish(check);
    assert_eq!(observed["connect_failures"]["total"], 12, "{observed}");
    let loaded = common::portdoctor(&["check", "--load", &file_arg, "--json"]);
    let report: Value = serde_json::from_str(&loaded.stdout).expect("check --load --json");
    assert_eq!(report["connect_failures"], observed["connect_failures"]);
    assert_eq!(pool_failures(&report, "127.0.0.3", 7001), 12);
    assert_eq!(findings(&report, "connect_failures").len(), 1, "{report}");
    assert_eq!((loaded.code, code), (2, 2), "critical both times");
    let text = common::portdoctor(&["check", "--load", &file_arg]);
    let line = text
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("12 EADDRNOTAVAIL"))
        .unwrap_or_else(|| panic!("a line per failing process and pool:\n{}", text.stdout));
    assert!(
        line.contains("127.0.0.1 → 127.0.0.3:7001") && line.contains("python3"),
        "{line}"
    );
    assert!(
        text.stdout.contains("connect() EADDRNOTAVAIL"),
        "{}",
        text.stdout
    );
}
