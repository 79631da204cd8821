//! `portdoctor serve` against the real world: a real Prometheus (Debian package `prometheus`)
//! scraping a real exporter that collects inside a test namespace full of sockpop sockets, with
//! the values checked against `check --json` of the same namespace; promtool on the rules, their
//! unit tests and a real scrape; the Grafana dashboard's queries against a real scrape; load and
//! abuse on loopback (bounded in count and time). Needs root (namespaces), like tests/netns.rs.
#![cfg(target_os = "linux")]

mod common;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{pools, run_bounded, u64_at, wait_until, Netns, PORTDOCTOR};
use serde_json::Value;

macro_rules! require_root {
    ($name:literal) => {
        if !common::require_root($name) {
            return;
        }
    };
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A child process stopped (and reaped) on drop; `timeout` bounds its life even if we die.
struct Proc {
    child: Child,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proc {
    fn start(what: &str, max_seconds: u32, program: &str, args: &[&str]) -> Proc {
        let dir = tempfile::tempdir().expect("temp dir");
        let stderr = dir.path().join(format!("{what}.stderr"));
        let child = Command::new("timeout")
            .arg(max_seconds.to_string())
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Proc {
            child,
            stderr,
            _dir: dir,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM to `timeout` is passed on to the program; a SIGKILL would leave the program
        // running as an orphan.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(7);
        while Instant::now() < deadline && self.alive() {
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `portdoctor serve --listen 127.0.0.1:PORT ARGS` (with a raised fd limit) and waits
/// until /healthz answers.
fn serve(args: &[&str]) -> (Proc, SocketAddr) {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let listen = addr.to_string();
    let mut all = vec![
        "-c",
        "ulimit -n 8192; exec \"$0\" \"$@\"",
        PORTDOCTOR,
        "serve",
        "--listen",
        &listen,
    ];
    all.extend_from_slice(args);
    let mut p = Proc::start("serve", 120, "sh", &all);
    let up = wait_until(Duration::from_secs(10), || {
        http_get(addr, "/healthz", &[]).ok().filter(|r| r.0 == 200)
    });
    assert!(
        up.is_some(),
        "serve did not come up (alive {}): {}",
        p.alive(),
        p.stderr()
    );
    (p, addr)
}

/// Sends raw bytes, returns (status, headers, body) of the answer (the server closes or we do
/// after `Connection: close`).
fn http_raw(addr: SocketAddr, request: &[u8]) -> std::io::Result<(u16, String, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(request)?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, head.to_string(), body.to_string()))
}

fn http_get(
    addr: SocketAddr,
    path: &str,
    headers: &[&str],
) -> std::io::Result<(u16, String, String)> {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    http_raw(addr, req.as_bytes())
}

fn scrape(addr: SocketAddr) -> String {
    let (status, head, body) = http_get(addr, "/metrics", &[]).expect("scrape");
    assert_eq!(status, 200, "{head}\n{body}");
    body
}

/// The value of the first sample line `name{labels} v` (or `name v`) starting with `prefix`.
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Runs promtool with ARGS (stdin from `input` if given) and asserts success.
fn promtool(args: &[&str], input: Option<&str>, dir: &Path) {
    let mut cmd = Command::new("promtool");
    cmd.args(args).current_dir(dir);
    let out = if let Some(text) = input {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool is installed (Debian package prometheus; test.sh installs it)");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("writing to promtool");
        child.wait_with_output().expect("promtool output")
    } else {
        run_bounded(&mut cmd, Duration::from_secs(60))
    };
    assert!(
        out.status.success(),
        "promtool {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A real Prometheus (Debian package) on a free loopback port, storing in DIR, scraping TARGET
/// every second (scrape timeout 1 s).
fn prometheus(target: SocketAddr, dir: &Path) -> (Proc, SocketAddr) {
    let cfg = dir.join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: portdoctor\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .expect("prometheus config");
    let prom_port = free_port();
    let prom_addr: SocketAddr = format!("127.0.0.1:{prom_port}").parse().expect("addr");
    let prom = Proc::start(
        "prometheus",
        120,
        "prometheus",
        &[
            &format!("--config.file={}", cfg.display()),
            &format!("--storage.tsdb.path={}", dir.join("data").display()),
            &format!("--web.listen-address={prom_addr}"),
            "--storage.tsdb.retention.time=1h",
        ],
    );
    (prom, prom_addr)
}

/// An instant query to Prometheus's HTTP API (QUERY already URL-safe).
fn prom_query(prom: SocketAddr, query: &str) -> Option<Value> {
    let path = format!("/api/v1/query?query={query}");
    let (status, _, body) = http_get(prom, &path, &[]).ok()?;
    (status == 200).then(|| serde_json::from_str(&body).ok())?
}

/// A sockpop population in a fresh namespace: IPv4 and IPv6 pools with ESTABLISHED and
/// TIME_WAIT sockets (all TIME_WAIT blocks: the harness sets tcp_tw_reuse=0).
fn populated(tag: &str) -> (Netns, common::Sockpop) {
    let ns = Netns::new(tag);
    let pop = ns.sockpop(&[
        "--ports",
        "20000-20002",
        "--dst",
        "127.0.0.1",
        "--dst",
        "::1",
        "--established",
        "60",
        "--time-wait",
        "40",
    ]);
    (ns, pop)
}

// ---------------------------------------------------------------------------------------------

#[test]
fn prometheus_scrapes_serve_in_netns_and_values_match_check_json() {
    require_root!("prometheus_scrapes_serve_in_netns_and_values_match_check_json");
    let ns = Netns::new("prom");
    // A small range, so the model has findings (range_small) and the findings family exists.
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 40999");
    let _pop = ns.sockpop(&[
        "--ports",
        "20000-20002",
        "--dst",
        "127.0.0.1",
        "--dst",
        "::1",
        "--established",
        "60",
        "--time-wait",
        "40",
    ]);
    let (mut exporter, addr) = serve(&["--netns", &ns.name, "--min-interval", "1s"]);

    // promtool check metrics on a real scrape (classic text, as promtool reads it).
    let text = scrape(addr);
    assert_eq!(sample(&text, "portdoctor_collection_success "), Some(1.0));
    promtool(&["check", "metrics"], Some(&text), &repo());

    // The dashboard parses and every metric it queries exists in a real scrape, except the three
    // that exist only sometimes (docs/serve.md): the ETA while a pool grows, the Windows events
    // on Windows, the failure counter once a failure was traced (its panel is checked against
    // Prometheus in prometheus_sees_connect_failures_per_namespace_and_pod).
    let dash = dashboard();
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            exprs.push(t["expr"].as_str().expect("expr").to_string());
        }
    }
    exprs.push(
        dash["templating"]["list"][0]["definition"]
            .as_str()
            .expect("variable query")
            .to_string(),
    );
    let mut names = BTreeSet::new();
    for e in &exprs {
        let mut rest = e.as_str();
        while let Some(i) = rest.find("portdoctor_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    assert!(names.len() >= 12, "dashboard queries: {names:?}");
    assert!(
        names.contains("portdoctor_connect_failures_total"),
        "{names:?}"
    );
    for n in &names {
        // Also only sometimes: failures (traced ones), conntrack (loaded), SNAT pools (a NAT;
        // tests/nat.rs scrapes them).
        if n == "portdoctor_windows_tcpip_events"
            || n == "portdoctor_pool_eta_seconds"
            || n == "portdoctor_connect_failures_total"
            || n.starts_with("portdoctor_conntrack_")
            || n.starts_with("portdoctor_snat_pool_")
        {
            continue;
        }
        assert!(
            text.contains(&format!("# HELP {n} ")),
            "dashboard uses {n}, which a real scrape lacks"
        );
    }

    // A real Prometheus scraping every second.
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut prom, prom_addr) = prometheus(addr, dir.path());

    let (report, _) = ns.check_json(&["--no-owners"]);
    let want: Vec<&Value> = pools(&report)
        .iter()
        .filter(|p| p["scope"] == "destination")
        .collect();
    assert_eq!(want.len(), 6, "3 ports × 2 families");
    let query = |q: &str| prom_query(prom_addr, q);
    let metrics = [
        ("portdoctor_pool_in_use", "in_use"),
        ("portdoctor_pool_time_wait", "time_wait"),
        ("portdoctor_pool_blocking_time_wait", "blocking_time_wait"),
        ("portdoctor_pool_capacity", "capacity"),
        ("portdoctor_pool_utilization_ratio", "utilization"),
    ];
    let mut last = String::new();
    let matched = wait_until(Duration::from_secs(40), || {
        for (metric, field) in metrics {
            let v = query(metric)?;
            let series = v["data"]["result"].as_array()?;
            if series.len() != want.len() {
                last = format!("{metric}: {} series, want {}", series.len(), want.len());
                return None;
            }
            for p in &want {
                let got = pool_series_value(series, p)?;
                let expect = p[field].as_f64()?;
                if (got - expect).abs() > 1e-9 {
                    last = format!("{metric} {p}: prometheus {got}, check {expect}");
                    return None;
                }
            }
        }
        Some(())
    });
    assert!(
        matched.is_some(),
        "Prometheus never agreed with check --json: {last}\nprometheus: {}\nserve: {}",
        prom.stderr(),
        exporter.stderr()
    );
    // Host series too.
    let tw = query("portdoctor_time_wait_sockets").expect("query");
    let tw: f64 = tw["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("time_wait value");
    assert_eq!(tw as u64, u64_at(&report, "sockets.time_wait"));
    assert!(prom.alive() && exporter.alive());
}

/// The series of an instant query (PromQL `q`), if Prometheus answers.
fn prom_series(prom: SocketAddr, q: &str) -> Option<Vec<Value>> {
    let mut encoded = String::new();
    for b in q.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' {
            encoded.push(char::from(b));
        } else {
            let _ = write!(encoded, "%{b:02X}");
        }
    }
    // HTTP/1.0, so that a longer answer comes whole rather than chunked.
    let request = format!("GET /api/v1/query?query={encoded} HTTP/1.0\r\nHost: {prom}\r\n\r\n");
    let (status, _, body) = http_raw(prom, request.as_bytes()).ok()?;
    if status != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&body).ok()?;
    v["data"]["result"].as_array().cloned()
}

/// The value of the series (from a Prometheus query) of check's pool `p`, matched by local
/// address, remote address and remote port.
fn pool_series_value(series: &[Value], p: &Value) -> Option<f64> {
    let port = p["remote_port"].to_string();
    let s = series.iter().find(|s| {
        s["metric"]["local_ip"] == p["local_ip"]
            && s["metric"]["remote_ip"] == p["remote_ip"]
            && s["metric"]["remote_port"].as_str() == Some(port.as_str())
    })?;
    s["value"][1].as_str()?.parse().ok()
}

/// `serve -A`: a namespace whose process sits in a kubelet-style pod cgroup and one without,
/// scraped by a real Prometheus; every pool series carries the namespace and pod labels and the
/// values of `check -A --json` for the same namespaces.
#[test]
fn prometheus_scrapes_serve_all_namespaces_with_pod_labels() {
    const POD_UID: &str = "7c1e28ba-2fa1-11d2-883f-0016d3cca427";
    const CONTAINER: &str = "5e2a9c1b8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a";
    require_root!("prometheus_scrapes_serve_all_namespaces_with_pod_labels");
    let (in_pod, pop) = populated("apod");
    let plain = Netns::new("aplain");
    plain.sysctl("net.ipv4.ip_local_port_range", "40000 40199");
    let _pop2 = plain.sockpop(&[
        "--ports",
        "21000-21001",
        "--dst",
        "127.0.0.1",
        "--established",
        "150",
        "--time-wait",
        "30",
    ]);
    let _cg = common::Cgroup::new(
        &format!(
            "pdt{}kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{CONTAINER}.scope",
            std::process::id(),
            POD_UID.replace('-', "_")
        ),
        pop.pid(),
    );
    let pods = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(pods.path().join(format!("shop_cart-5d8_{POD_UID}"))).expect("pod dir");
    let pods_dir = pods.path().to_str().expect("utf-8 path");

    let (mut exporter, addr) = serve(&[
        "-A",
        "--pods-dir",
        pods_dir,
        "--min-interval",
        "1s",
        "--max-pools",
        "10000",
    ]);
    let text = scrape(addr);
    assert!(
        text.contains(&format!(
            "portdoctor_verdict_level{{netns=\"{}\",pod_namespace=\"shop\",pod=\"cart-5d8\",container=\"containerd://{CONTAINER}\"}}",
            in_pod.name
        )),
        "{text}"
    );
    promtool(&["check", "metrics"], Some(&text), &repo());
    let data = tempfile::tempdir().expect("temp dir");
    let (mut prom, prom_addr) = prometheus(addr, data.path());

    // The populations were made in one burst: once no TIME_WAIT has arrived for a few seconds
    // no pool is forecast as filling, so check's verdict no longer depends on when it ran.
    std::thread::sleep(std::time::Duration::from_secs(4));
    let check = common::portdoctor(&[
        "check",
        "-A",
        "--json",
        "--no-owners",
        "--pods-dir",
        pods_dir,
    ]);
    let report = check.json();
    let namespace = |name: &str| -> Value {
        report["namespaces"]
            .as_array()
            .expect("namespaces")
            .iter()
            .find(|n| n["netns"]["name"] == name)
            .unwrap_or_else(|| panic!("check -A lacks {name}: {report}"))
            .clone()
    };
    let expected = [
        (namespace(&in_pod.name), Some(("shop", "cart-5d8"))),
        (namespace(&plain.name), None),
    ];
    assert_eq!(expected[0].0["pod"]["name"], "cart-5d8");
    let metrics = [
        ("portdoctor_pool_in_use", "in_use"),
        ("portdoctor_pool_time_wait", "time_wait"),
        ("portdoctor_pool_blocking_time_wait", "blocking_time_wait"),
        ("portdoctor_pool_capacity", "capacity"),
        ("portdoctor_pool_utilization_ratio", "utilization"),
    ];
    let mut last = String::new();
    let matched = wait_until(Duration::from_secs(40), || {
        for (ns, pod) in &expected {
            let name = ns["netns"]["name"].as_str()?;
            let want: Vec<&Value> = ns["pools"]
                .as_array()?
                .iter()
                .filter(|p| p["scope"] == "destination")
                .collect();
            for (metric, field) in metrics {
                let series = prom_series(prom_addr, &format!("{metric}{{netns=\"{name}\"}}"))?;
                if series.len() != want.len() {
                    last = format!(
                        "{metric}{{netns={name}}}: {} series, want {}",
                        series.len(),
                        want.len()
                    );
                    return None;
                }
                for s in &series {
                    let m = &s["metric"];
                    let labels = (m["pod_namespace"].as_str(), m["pod"].as_str());
                    let container = m["container"].as_str();
                    let ok = match pod {
                        Some((pns, pname)) => {
                            labels == (Some(*pns), Some(*pname))
                                && container == Some(format!("containerd://{CONTAINER}").as_str())
                        }
                        // Empty labels are absent in Prometheus.
                        None => labels == (None, None) && container.is_none(),
                    };
                    assert!(ok, "{metric} in {name}: labels {m}");
                }
                for p in &want {
                    let got = pool_series_value(&series, p)?;
                    let expect = p[field].as_f64()?;
                    if (got - expect).abs() > 1e-9 {
                        last = format!("{metric} {name} {p}: prometheus {got}, check {expect}");
                        return None;
                    }
                }
            }
            let verdict = prom_series(
                prom_addr,
                &format!("portdoctor_verdict_level{{netns=\"{name}\"}}"),
            )?;
            let level: f64 = verdict.first()?["value"][1].as_str()?.parse().ok()?;
            let want_level = match ns["verdict"]["level"].as_str()? {
                "ok" => 0.0,
                "warning" => 1.0,
                _ => 2.0,
            };
            if (level - want_level).abs() > 1e-9 {
                last = format!("verdict of {name}: prometheus {level}, check {want_level}");
                return None;
            }
        }
        Some(())
    });
    assert!(
        matched.is_some(),
        "Prometheus never agreed with check -A --json: {last}\nprometheus: {}\nserve: {}",
        prom.stderr(),
        exporter.stderr()
    );
    // The dashboard's pod variables select the pod's pools.
    let q = dashboard_query_for_pod(
        |e| e.starts_with("portdoctor_pool_in_use{"),
        "shop",
        "cart-5d8",
    );
    let series = prom_series(prom_addr, &q).expect("query");
    assert_eq!(series.len(), 6, "{q}: {series:?}");
    assert!(series.iter().all(|s| s["metric"]["pod"] == "cart-5d8"));
    let n = prom_series(prom_addr, "portdoctor_namespaces").expect("query");
    let n: f64 = n[0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("value");
    assert!(n >= 2.0, "portdoctor_namespaces {n}");
    assert!(prom.alive() && exporter.alive());
}

#[test]
fn promtool_checks_and_unit_tests_every_alert() {
    let dir = repo().join("deploy/prometheus");
    promtool(&["check", "rules", "portdoctor.rules.yml"], None, &dir);
    promtool(&["test", "rules", "portdoctor.rules.test.yml"], None, &dir);
    let rules = std::fs::read_to_string(dir.join("portdoctor.rules.yml")).expect("rules");
    let tests = std::fs::read_to_string(dir.join("portdoctor.rules.test.yml")).expect("tests");
    for alert in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        let fires = tests.matches(&format!("alertname: {alert}\n")).count();
        assert!(
            fires >= 2,
            "{alert}: want a firing and a silent case, found {fires}"
        );
    }
}

#[test]
fn fifty_concurrent_scrapes_share_one_collection() {
    require_root!("fifty_concurrent_scrapes_share_one_collection");
    let ns = Netns::new("load");
    // 50,000 connections over 10 pools = 100k sockets (both ends).
    let _pop = ns.sockpop(&["--ports", "20000-20009", "--established", "50000"]);
    let (_exporter, addr) = serve(&["--netns", &ns.name, "--min-interval", "60s"]);
    let t0 = Instant::now();
    let handles: Vec<_> = (0..50)
        .map(|_| thread::spawn(move || http_get(addr, "/metrics", &[])))
        .collect();
    let bodies: Vec<String> = handles
        .into_iter()
        .map(|h| {
            let (status, head, body) = h.join().expect("thread").expect("scrape");
            assert_eq!(status, 200, "{head}");
            body
        })
        .collect();
    let took = t0.elapsed();
    for b in &bodies {
        assert_eq!(sample(b, "portdoctor_collections_total "), Some(1.0));
        assert_eq!(
            sample(b, "portdoctor_sockets{state=\"ESTABLISHED\"} "),
            Some(100_000.0)
        );
    }
    assert!(took < Duration::from_secs(30), "50 scrapes took {took:?}");
    println!("50 concurrent scrapes at 100k sockets: {took:?}, 1 collection");
}

/// Holds N connections to ADDR, each with half a request sent, writes READY, holds HOLD s.
const SLOWLORIS_PY: &str = r"
import os, resource, socket, sys, time
host, port, n, ready, hold = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], float(sys.argv[5])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 256), hard))
held = []
for i in range(n):
    s = socket.create_connection((host, port), timeout=5)
    if i % 2:
        s.sendall(b'GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ')
    held.append(s)
open(ready, 'w').write(str(len(held)))
time.sleep(hold)
";

#[test]
fn thousand_idle_connections_do_not_block_scrapes() {
    require_root!("thousand_idle_connections_do_not_block_scrapes");
    let (ns, _pop) = populated("loris");
    let (mut exporter, addr) = serve(&["--netns", &ns.name, "--min-interval", "1s"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let ready = dir.path().join("ready");
    let _loris = Proc::start(
        "slowloris",
        60,
        common::python(),
        &[
            "-c",
            SLOWLORIS_PY,
            "127.0.0.1",
            &addr.port().to_string(),
            "1000",
            &ready.display().to_string(),
            "30",
        ],
    );
    let held = wait_until(Duration::from_secs(20), || {
        std::fs::read_to_string(&ready).ok()
    });
    assert_eq!(held.as_deref(), Some("1000"), "slowloris helper not ready");
    for _ in 0..5 {
        let t0 = Instant::now();
        let body = scrape(addr);
        let took = t0.elapsed();
        assert!(took < Duration::from_secs(1), "scrape took {took:?}");
        assert!(body.contains("portdoctor_pool_in_use{"));
        thread::sleep(Duration::from_millis(300));
    }
    assert!(exporter.alive(), "{}", exporter.stderr());
}

/// Holds N idle connections to HOST:PORT (never sends a byte) and reopens each one the server
/// closes, at most RATE a second, for HOLD s (so the limit stays flooded however the server
/// frees slots). Writes READY with N once all N are connected, and DONE with "opened closed" at
/// the end.
const FLOOD_PY: &str = r"
import resource, selectors, socket, sys, time
host, port, n, rate, hold, ready, done = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), sys.argv[6], sys.argv[7]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 256), hard))
sel = selectors.DefaultSelector()
opened = closed = reopened = 0
def open_one(blocking):
    global opened
    if blocking:
        s = socket.create_connection((host, port), timeout=5)
        s.setblocking(False)
    else:
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect((host, port))
        except BlockingIOError:
            pass
    sel.register(s, selectors.EVENT_READ)
    opened += 1
for i in range(n):
    open_one(True)
open(ready, 'w').write(str(n))
start = time.time()
pending = 0
while time.time() - start < hold:
    for key, _ in sel.select(timeout=0.02):
        s = key.fileobj
        try:
            data = s.recv(4096)
        except OSError:
            data = b''
        if not data:
            sel.unregister(s)
            s.close()
            closed += 1
            pending += 1
    while pending and reopened < rate * (time.time() - start):
        open_one(False)
        reopened += 1
        pending -= 1
open(done, 'w').write('%d %d' % (opened, closed))
";

/// Issue 21 item 8: with the connection limit flooded by idle connections (200 held against
/// --max-connections 50, each one closed reopened at once, up to 300/s), every scrape on a new
/// connection succeeds, each within 3 s (they take milliseconds; the bound allows one lost SYN).
/// Before, the limit was a semaphore: new connections were closed at once until idle ones timed
/// out (10 s): 0 of 20. And a real Prometheus, whose idle keep-alive connection may now be the
/// one closed to make room, misses no scrape: it reconnects (before, its connection kept its
/// slot, so this part guards against the fix costing keep-alive scrapers).
#[test]
fn scrapes_succeed_while_idle_connections_flood_the_limit() {
    // serve collects its own namespace: no root needed.
    let (mut exporter, addr) = serve(&["--max-connections", "50", "--min-interval", "1s"]);
    let dir = tempfile::tempdir().expect("temp dir");
    // A real Prometheus scrapes every second (timeout 1 s) before and during the flood.
    let (prom, prom_addr) = prometheus(addr, dir.path());
    let up = wait_until(Duration::from_secs(30), || {
        let v = prom_query(prom_addr, "up")?;
        (v["data"]["result"][0]["value"][1] == "1").then_some(())
    });
    assert!(up.is_some(), "Prometheus never scraped: {}", prom.stderr());
    let (ready, done) = (dir.path().join("ready"), dir.path().join("done"));
    let _flood = Proc::start(
        "flood",
        60,
        common::python(),
        &[
            "-c",
            FLOOD_PY,
            "127.0.0.1",
            &addr.port().to_string(),
            "200",
            "300",
            "10",
            &ready.display().to_string(),
            &done.display().to_string(),
        ],
    );
    let held = wait_until(Duration::from_secs(20), || {
        std::fs::read_to_string(&ready).ok()
    });
    assert_eq!(held.as_deref(), Some("200"), "flood helper not ready");
    let flood_start = unix_now();
    let mut failures = Vec::new();
    let mut slowest = Duration::ZERO;
    let scrapes = 20;
    for i in 0..scrapes {
        let t0 = Instant::now();
        let got = http_get(addr, "/metrics", &[]);
        let took = t0.elapsed();
        slowest = slowest.max(took);
        match got {
            Ok((200, _, body))
                if took < Duration::from_secs(3) && body.contains("portdoctor_build_info") => {}
            Ok((status, head, _)) => {
                failures.push(format!("#{i}: {status} after {took:?}: {head}"));
            }
            Err(e) => failures.push(format!("#{i}: {e} after {took:?}")),
        }
        thread::sleep(Duration::from_millis(250));
    }
    // The helper ends its 10 s flood by itself; on a loaded machine closing its hundreds of
    // sockets and writing the stats can take a while longer.
    let stats = wait_until(Duration::from_secs(60), || {
        std::fs::read_to_string(&done).ok()
    })
    .expect("flood helper finished");
    let (opened, closed) = stats
        .split_once(' ')
        .and_then(|(o, c)| Some((o.parse::<u32>().ok()?, c.parse::<u32>().ok()?)))
        .expect("flood stats");
    println!(
        "flood: {opened} connections opened, {closed} closed by serve; {} of {scrapes} scrapes ok, slowest {slowest:?}",
        scrapes - failures.len()
    );
    // Prometheus's scrapes in the 8 s from 1.5 s into the flood to 0.5 s before its end.
    let at = flood_start + 9.5;
    let over = |f: &str| -> Option<f64> {
        let v = prom_query(prom_addr, &format!("{f}(up%5B8s%5D)&time={at:.3}"))?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    };
    let (count, ok) = (over("count_over_time"), over("sum_over_time"));
    println!("Prometheus during the flood: {ok:?} of {count:?} scrapes up");
    assert!(
        count.is_some_and(|c| c >= 6.0) && ok == count,
        "Prometheus during the flood: {ok:?} of {count:?} scrapes up\nserve: {}",
        exporter.stderr()
    );
    assert!(
        failures.is_empty(),
        "scrapes failed during the flood:\n{}\nserve: {}",
        failures.join("\n"),
        exporter.stderr()
    );
    // The flood was real: the server had to close idle connections, and they came back.
    assert!(
        closed >= 150 && opened >= 350,
        "flood too weak: opened {opened}, closed {closed}"
    );
    assert!(
        exporter
            .stderr()
            .contains("connection limit (50) reached: closed"),
        "{}",
        exporter.stderr()
    );
    assert!(exporter.alive(), "{}", exporter.stderr());
}

#[test]
fn malformed_huge_and_unauthorized_requests_get_clean_4xx() {
    require_root!("malformed_huge_and_unauthorized_requests_get_clean_4xx");
    let (ns, _pop) = populated("abuse");
    let dir = tempfile::tempdir().expect("temp dir");
    let web = dir.path().join("web.yml");
    let hash = bcrypt::hash("s3cret", 4).expect("bcrypt");
    std::fs::write(&web, format!("basic_auth_users:\n  prom: {hash}\n")).expect("web config");
    let web = web.display().to_string();
    let (mut exporter, addr) = serve(&["--netns", &ns.name, "--web-config", &web]);
    // prom:s3cret, prom:wrong
    let good = "Authorization: Basic cHJvbTpzM2NyZXQ=";
    let bad = "Authorization: Basic cHJvbTp3cm9uZw==";

    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "garbage request line",
            b"HELLO THERE\r\n\r\n".to_vec(),
            400,
        ),
        ("binary", vec![0, 1, 2, 255, 13, 10, 13, 10], 400),
        (
            "huge header",
            format!(
                "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                "a".repeat(64 * 1024)
            )
            .into_bytes(),
            431,
        ),
        (
            "no auth",
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            401,
        ),
        (
            "wrong password",
            format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{bad}\r\nConnection: close\r\n\r\n")
                .into_bytes(),
            401,
        ),
        (
            "bad auth header",
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Basic !!!\r\nConnection: close\r\n\r\n".to_vec(),
            401,
        ),
        (
            "POST",
            format!("POST /metrics HTTP/1.1\r\nHost: x\r\n{good}\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc")
                .into_bytes(),
            405,
        ),
        (
            "unknown path",
            format!("GET /nope HTTP/1.1\r\nHost: x\r\n{good}\r\nConnection: close\r\n\r\n")
                .into_bytes(),
            404,
        ),
    ];
    for (what, req, want) in &cases {
        let (status, head, _) = http_raw(addr, req).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(status, *want, "{what}: {head}");
    }
    let (status, _, body) = http_get(addr, "/metrics", &[good]).expect("scrape");
    assert_eq!(status, 200);
    assert!(body.contains("portdoctor_pool_in_use{"));
    let (status, _, body) = http_get(addr, "/", &[good]).expect("index");
    assert_eq!(status, 200);
    assert!(body.contains("metrics"));
    assert!(exporter.alive(), "{}", exporter.stderr());
}

/// `curl` with a CA file and basic auth; returns (exit code, HTTP status or 0, body).
fn curl(args: &[&str]) -> (i32, u16, String) {
    let out = common::run_bounded(
        Command::new("curl")
            .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
            .args(args),
        Duration::from_secs(20),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (
        out.status.code().unwrap_or(-1),
        code.trim().parse().unwrap_or(0),
        body.to_string(),
    )
}

/// `--web-config` with `tls_server_config` and basic auth: HTTPS scrapes with the right CA and
/// password get metrics; no password is 401; an untrusted certificate and plain HTTP get
/// nothing. The certificate is a throwaway self-signed one made with openssl.
#[test]
fn tls_web_config_serves_https_only() {
    require_root!("tls_web_config_serves_https_only");
    let (ns, _pop) = populated("tls");
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    common::run_ok(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "2", "-subj", "/CN=portdoctor-test"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    );
    let web = dir.path().join("web.yml");
    let hash = bcrypt::hash("s3cret", 4).expect("bcrypt");
    // Relative paths resolve against the config file's directory.
    std::fs::write(
        &web,
        format!("tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\nbasic_auth_users:\n  prom: {hash}\n"),
    )
    .expect("web config");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let web_arg = web.display().to_string();
    let mut exporter = Proc::start(
        "serve-tls",
        120,
        PORTDOCTOR,
        &[
            "serve",
            "--listen",
            &listen,
            "--netns",
            &ns.name,
            "--web-config",
            &web_arg,
        ],
    );
    let base = format!("https://127.0.0.1:{port}");
    let ca = cert.display().to_string();
    let up = wait_until(Duration::from_secs(10), || {
        let (code, status, _) = curl(&["--cacert", &ca, &format!("{base}/healthz")]);
        (code == 0 && status == 200).then_some(())
    });
    assert!(
        up.is_some(),
        "serve over TLS did not come up: {}",
        exporter.stderr()
    );

    let (code, status, body) = curl(&[
        "--cacert",
        &ca,
        "-u",
        "prom:s3cret",
        &format!("{base}/metrics"),
    ]);
    assert_eq!((code, status), (0, 200), "{body}");
    assert!(body.contains("portdoctor_pool_in_use{"), "{body}");
    let (_, status, _) = curl(&["--cacert", &ca, &format!("{base}/metrics")]);
    assert_eq!(status, 401, "no password");
    // Without the CA the certificate is not trusted: curl fails the handshake (exit 60).
    let (code, status, _) = curl(&["-u", "prom:s3cret", &format!("{base}/metrics")]);
    assert_eq!((code, status), (60, 0));
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = http_get(
        format!("127.0.0.1:{port}").parse().expect("address"),
        "/metrics",
        &["Authorization: Basic cHJvbTpzM2NyZXQ="],
    );
    assert!(
        plain.as_ref().map_or(true, |(status, _, _)| *status != 200),
        "plain HTTP was answered: {plain:?}"
    );
    assert!(exporter.alive(), "{}", exporter.stderr());
}

#[test]
fn port_taken_exits_3_and_textfile_is_written_atomically() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = run_bounded(
        Command::new(PORTDOCTOR).args(["serve", "--listen", &addr]),
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("port is taken"), "{err}");

    let dir = tempfile::tempdir().expect("temp dir");
    let out = run_bounded(
        Command::new(PORTDOCTOR)
            .args(["serve", "--textfile"])
            .arg(dir.path()),
        Duration::from_secs(60),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec!["portdoctor.prom".to_string()],
        "no temp file left"
    );
    let text = std::fs::read_to_string(dir.path().join("portdoctor.prom")).expect("textfile");
    assert!(
        !text.contains("# EOF"),
        "classic text format for node_exporter"
    );
    assert_eq!(sample(&text, "portdoctor_collection_success "), Some(1.0));
    promtool(&["check", "metrics"], Some(&text), &repo());

    // Wrong usage exits 4.
    let out = run_bounded(
        Command::new(PORTDOCTOR).args(["serve", "--loop", "5s"]),
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(4));
}

/// `serve -A` without the privilege to enter other namespaces still exports its own, counts
/// what it skipped (`portdoctor_namespaces_skipped`, for an alert that the DaemonSet lacks a
/// capability) and says why on stderr.
#[test]
fn unprivileged_serve_all_namespaces_counts_what_it_skipped() {
    use std::os::unix::fs::PermissionsExt as _;
    require_root!("unprivileged_serve_all_namespaces_counts_what_it_skipped");
    let ns = Netns::new("askip");
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let out = run_bounded(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(PORTDOCTOR)
            .args(["serve", "-A", "--textfile"])
            .arg(dir.path()),
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?} {stderr}", out.status);
    let text = std::fs::read_to_string(dir.path().join("portdoctor.prom")).expect("textfile");
    assert_eq!(sample(&text, "portdoctor_collection_success "), Some(1.0));
    assert!(
        sample(&text, "portdoctor_namespaces ").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        sample(&text, "portdoctor_namespaces_skipped ").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        stderr.contains(&format!("namespace {} skipped", ns.name))
            && stderr.contains("CAP_SYS_ADMIN"),
        "{stderr}"
    );
}

/// A tmpfs mounted for one test, lazily unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).expect("mount point");
        common::run_ok(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755")])
                .arg("portdoctor-test")
                .arg(at),
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Appends zeros to PATH until the file system is full (bounded: 16 MiB).
fn fill(path: &Path) {
    let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    else {
        return;
    };
    let chunk = [0u8; 4096];
    for _ in 0..4096 {
        if f.write_all(&chunk).is_err() {
            break;
        }
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// Issue 21 item 8: `--textfile D --loop` on a file system that fills up keeps looping, and the
/// file stops claiming fresh numbers: it says `portdoctor_collection_success 0` with the time of
/// the failed round (written in place, which a full disk still allows) instead of keeping the
/// last good round's pools; once there is room again, full files with success 1 return. Before,
/// the first failed write ended the loop and the stale file kept saying success 1.
#[test]
fn textfile_loop_survives_a_full_disk_without_claiming_freshness() {
    require_root!("textfile_loop_survives_a_full_disk_without_claiming_freshness");
    let (ns, _pop) = populated("tfull");
    let dir = tempfile::tempdir().expect("temp dir");
    let mnt = dir.path().join("textfile");
    let _tmpfs = Tmpfs::mount(&mnt, "64k");
    let mnt_arg = mnt.display().to_string();
    let mut writer = Proc::start(
        "textfile",
        90,
        PORTDOCTOR,
        &[
            "serve",
            "--textfile",
            &mnt_arg,
            "--loop",
            "0.2s",
            "--netns",
            &ns.name,
        ],
    );
    let prom = mnt.join("portdoctor.prom");
    // (collection_success is 1, collection timestamp, has pool series)
    let state = || -> Option<(bool, f64, bool)> {
        let text = std::fs::read_to_string(&prom).ok()?;
        Some((
            sample(&text, "portdoctor_collection_success ")? > 0.5,
            sample(&text, "portdoctor_collection_timestamp_seconds ")?,
            text.contains("portdoctor_pool_in_use{"),
        ))
    };
    let first = wait_until(Duration::from_secs(15), || state().filter(|s| s.0 && s.2));
    assert!(first.is_some(), "no good file: {}", writer.stderr());

    // Full disk. Keep it full: the writer's failed temp file frees its pages again.
    let filler = mnt.join("filler");
    let filled_at = unix_now();
    fill(&filler);
    let mut seen = Vec::new();
    let failed = wait_until(Duration::from_secs(15), || {
        fill(&filler);
        let s = state();
        seen.push(s);
        s.filter(|&(success, at, pools)| !success && at >= filled_at && !pools)
    });
    assert!(
        failed.is_some(),
        "the file never said success 0 on the full disk (alive {}): last states {:?}\n{}",
        writer.alive(),
        &seen[seen.len().saturating_sub(5)..],
        writer.stderr()
    );
    // From now on never the old numbers presented as current: the file is absent, says
    // success 0, or comes from a round after the fill (one that did fit).
    for _ in 0..8 {
        thread::sleep(Duration::from_millis(100));
        fill(&filler);
        if let Some((success, at, _)) = state() {
            assert!(
                !success || at >= filled_at,
                "stale file claims success: collected at {at}, disk full since {filled_at}"
            );
        }
    }
    assert!(writer.alive(), "the loop ended: {}", writer.stderr());
    let err = writer.stderr();
    assert!(
        err.contains("No space left on device") && err.contains("retrying in 0.2 s"),
        "{err}"
    );

    // Room again: full files return.
    std::fs::remove_file(&filler).expect("remove filler");
    let freed_at = unix_now();
    let back = wait_until(Duration::from_secs(15), || {
        state().filter(|&(success, at, pools)| success && at > freed_at && pools)
    });
    assert!(back.is_some(), "no recovery: {}", writer.stderr());
    let names: Vec<String> = std::fs::read_dir(&mnt)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec!["portdoctor.prom".to_string()],
        "temp files left"
    );
    assert!(writer.alive(), "{}", writer.stderr());
}

/// Range 40000–40009 held full; then, each time the test writes DIR/goN (a count), that many
/// connect() calls that fail, and DIR/doneN with how many did not fail with EADDRNOTAVAIL.
/// Bounded: 90 s.
const FAILING_CLIENT: &str = r"
import errno, os, socket, sys, time
d = sys.argv[1]
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(('127.0.0.3', 7001)); srv.listen(64)
held = [socket.create_connection(('127.0.0.3', 7001)) for _ in range(10)]
open(d + '/ready', 'w').close()
end = time.time() + 90
step = 1
while time.time() < end:
    go = '%s/go%d' % (d, step)
    if os.path.exists(go):
        bad = 0
        for _ in range(int(open(go).read())):
            s = socket.socket()
            try:
                s.connect(('127.0.0.3', 7001)); bad += 1
            except OSError as e:
                bad += e.errno != errno.EADDRNOTAVAIL
            s.close()
        with open('%s/done%d.tmp' % (d, step), 'w') as f:
            f.write(str(bad))
        os.rename('%s/done%d.tmp' % (d, step), '%s/done%d' % (d, step))
        step += 1
    time.sleep(0.02)
";

/// A failing client in NS (see `FAILING_CLIENT`), its files in DIR.
struct Failing {
    bg: common::Background,
    dir: tempfile::TempDir,
}

impl Failing {
    fn start(ns: &Netns) -> Failing {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cmd = ns.exec(common::python());
        cmd.args(["-c", FAILING_CLIENT]).arg(dir.path());
        let mut bg = ns.spawn("failing", cmd);
        bg.wait_for_file(&dir.path().join("ready"), Duration::from_secs(20));
        Failing { bg, dir }
    }

    /// Makes `n` failing connects (step `step`) and waits until they are done.
    fn fail(&mut self, step: u32, n: u32) {
        std::fs::write(self.dir.path().join(format!("go{step}")), n.to_string()).expect("go");
        let done = self.bg.wait_for_file(
            &self.dir.path().join(format!("done{step}")),
            Duration::from_secs(20),
        );
        assert_eq!(done, "0", "every connect failed with EADDRNOTAVAIL");
    }
}

/// The Grafana dashboard shipped in deploy/.
fn dashboard() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(repo().join("deploy/grafana/portdoctor.json")).expect("dashboard"),
    )
    .expect("dashboard JSON parses")
}

/// The first dashboard query that `pick` selects, with its variables set as a user who picked
/// one pod would set them (any instance and namespace, a 5m rate interval).
fn dashboard_query_for_pod(pick: impl Fn(&str) -> bool, pod_namespace: &str, pod: &str) -> String {
    dashboard()["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .find_map(|t| t["expr"].as_str().filter(|e| pick(e)).map(str::to_string))
        .expect("a dashboard query of the metric")
        .replace("$instance", ".*")
        .replace("$pod_namespace", pod_namespace)
        .replace("$pod", pod)
        .replace("$netns", ".*")
        .replace("$__rate_interval", "5m")
}

/// Samples of a range query `q[5m]`: (unix time, value) of the one series it selects.
fn prom_samples(prom: SocketAddr, q: &str) -> Option<Vec<(f64, f64)>> {
    let series = prom_series(prom, &format!("{q}[5m]"))?;
    let [s] = series.as_slice() else {
        return None;
    };
    s["values"]
        .as_array()?
        .iter()
        .map(|v| Some((v[0].as_f64()?, v[1].as_str()?.parse().ok()?)))
        .collect()
}

/// `serve -A` traces failed connects: a real Prometheus scraping every second sees
/// `portdoctor_connect_failures_total` rise by exactly the failures made between two scrapes
/// (7, then 12 more: 19), each namespace's failures under its own `netns` label, a pod's with
/// its `pod_namespace`, `pod` and `container` (from the failing process's /proc/PID/ns/net and
/// cgroup, as the pool series have them).
#[test]
#[allow(clippy::float_cmp)] // counts: whole numbers, exact in f64
fn prometheus_sees_connect_failures_per_namespace_and_pod() {
    const POD_UID: &str = "8d1e28ba-2fa1-11d2-883f-0016d3cca427";
    const CONTAINER: &str = "7e2a9c1b8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a";
    require_root!("prometheus_sees_connect_failures_per_namespace_and_pod");
    let ns_a = Netns::new("pfailA");
    let ns_b = Netns::new("pfailB");
    for ns in [&ns_a, &ns_b] {
        ns.sysctl("net.ipv4.ip_local_port_range", "40000 40009");
    }
    let mut in_pod = Failing::start(&ns_a);
    let mut plain = Failing::start(&ns_b);
    let _cg = common::Cgroup::new(
        &format!(
            "pdt{}fail/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{CONTAINER}.scope",
            std::process::id(),
            POD_UID.replace('-', "_")
        ),
        in_pod.bg.pid,
    );
    let pods = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(pods.path().join(format!("shop_cart-5d8_{POD_UID}"))).expect("pod dir");
    let pods_dir = pods.path().to_str().expect("utf-8 path");
    let (mut exporter, addr) = serve(&[
        "-A",
        "--pods-dir",
        pods_dir,
        "--min-interval",
        "1s",
        "--max-pools",
        "10000",
    ]);
    assert_eq!(
        sample(&scrape(addr), "portdoctor_connect_failure_tracing "),
        Some(1.0)
    );
    let data = tempfile::tempdir().expect("temp dir");
    let (mut prom, prom_addr) = prometheus(addr, data.path());
    let qa = format!(
        "portdoctor_connect_failures_total{{netns=\"{}\"}}",
        ns_a.name
    );
    let qb = format!(
        "portdoctor_connect_failures_total{{netns=\"{}\"}}",
        ns_b.name
    );
    let value = |q: &str| -> Option<f64> {
        let s = prom_series(prom_addr, q)?;
        let [one] = s.as_slice() else { return None };
        one["value"][1].as_str()?.parse().ok()
    };

    in_pod.fail(1, 7);
    let first = wait_until(Duration::from_secs(30), || value(&qa).filter(|v| *v >= 7.0));
    assert_eq!(
        first,
        Some(7.0),
        "prometheus: {}\nserve: {}",
        prom.stderr(),
        exporter.stderr()
    );
    let series = prom_series(prom_addr, &qa).expect("query");
    let labels = &series[0]["metric"];
    for (k, v) in [
        ("pod_namespace", "shop"),
        ("pod", "cart-5d8"),
        ("local_ip", "127.0.0.1"),
        ("remote_ip", "127.0.0.3"),
        ("remote_port", "7001"),
        ("error", "EADDRNOTAVAIL"),
    ] {
        assert_eq!(labels[k], v, "{k}: {labels}");
    }
    assert_eq!(
        labels["container"],
        format!("containerd://{CONTAINER}"),
        "{labels}"
    );
    // At least one more scrape of the steady 7 before the next burst.
    let before = wait_until(Duration::from_secs(10), || {
        prom_samples(prom_addr, &qa).filter(|s| s.iter().filter(|x| x.1 == 7.0).count() >= 2)
    })
    .expect("two scrapes at 7");
    let go2 = unix_now();
    assert!(before.iter().all(|s| s.0 < go2));
    in_pod.fail(2, 12);
    plain.fail(1, 5);
    let done = unix_now();
    let after = wait_until(Duration::from_secs(30), || {
        prom_samples(prom_addr, &qa).filter(|s| s.iter().any(|x| x.0 > done + 1.0))
    })
    .expect("a scrape after the second burst");
    let at_go2 = after
        .iter()
        .rev()
        .find(|s| s.0 < go2)
        .expect("a sample before");
    let last = after.last().expect("a sample after");
    assert_eq!((at_go2.1, last.1), (7.0, 19.0), "{after:?}");
    assert!(
        after.windows(2).all(|w| w[0].1 <= w[1].1) && after.iter().all(|s| s.1 <= 19.0),
        "a counter that only rises, to exactly 19: {after:?}"
    );
    // The other namespace: its own series, no pod labels (empty labels are absent).
    let bs = wait_until(Duration::from_secs(10), || {
        prom_series(prom_addr, &qb).filter(|s| s.len() == 1 && value(&qb) == Some(5.0))
    })
    .expect("B's 5 failures under its own netns");
    assert!(bs[0]["metric"]["pod"].is_null(), "{}", bs[0]);

    // The dashboard's failure panel, its variables set to the pod, shows the pod's pool only.
    let q = dashboard_query_for_pod(
        |e| e.contains("portdoctor_connect_failures_total"),
        "shop",
        "cart-5d8",
    );
    let rates = prom_series(prom_addr, &q).expect("the panel's query runs");
    assert_eq!(rates.len(), 1, "{q}: {rates:?}");
    assert_eq!(rates[0]["metric"]["remote_port"], "7001", "{rates:?}");
    let rate: f64 = rates[0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("a rate");
    assert!(rate > 0.0, "{q}: {rates:?}");
    let tracing = prom_series(prom_addr, "portdoctor_connect_failure_tracing").expect("query");
    assert_eq!(tracing[0]["value"][1], "1", "{tracing:?}");
    assert!(prom.alive() && exporter.alive());
}

/// UDP pools (docs/udp.md) scraped by a real Prometheus: the `protocol="udp"` series hold the
/// numbers of `check --json`'s UDP pools, next to the TCP series of the same namespace.
#[test]
fn prometheus_udp_pool_series_match_check_json() {
    require_root!("prometheus_udp_pool_series_match_check_json");
    let ns = Netns::new("promudp");
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 40099");
    let ready = ns.path("udp-ready");
    // 80 connected IPv4 and 5 dual-stack IPv6 UDP sockets, held.
    let mut holder = ns.spawn(
        "udp-holder",
        {
            let mut cmd = ns.exec(common::python());
            cmd.args([
                "-c",
                "import os, socket, sys, time\n\
                 h = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(80)]\n\
                 [s.connect(('127.0.0.1', 7000)) for s in h]\n\
                 h6 = [socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) for _ in range(5)]\n\
                 [s.connect(('::1', 7000)) for s in h6]\n\
                 open(sys.argv[1] + '.tmp', 'w').write('ok'); os.rename(sys.argv[1] + '.tmp', sys.argv[1])\n\
                 time.sleep(90)",
            ])
            .arg(&ready);
            cmd
        },
    );
    holder.wait_for_file(&ready, Duration::from_secs(20));
    let _tcp = ns.sockpop(&["--established", "3"]);
    let (exporter, addr) = serve(&["--netns", &ns.name, "--min-interval", "1s"]);
    let text = scrape(addr);
    promtool(&["check", "metrics"], Some(&text), &repo());
    let dir = tempfile::tempdir().expect("temp dir");
    let (prom, prom_addr) = prometheus(addr, dir.path());

    let (report, _) = ns.check_json(&["--no-owners"]);
    let udp: Vec<&Value> = pools(&report)
        .iter()
        .filter(|p| p["protocol"] == "udp")
        .collect();
    assert_eq!(udp.len(), 2, "IPv4 and IPv6 UDP pools: {report}");
    assert_eq!(udp[0]["in_use"], 85, "{report}");
    let mut last = String::new();
    let matched = wait_until(Duration::from_secs(40), || {
        for (metric, field) in [
            ("portdoctor_pool_in_use", "in_use"),
            ("portdoctor_pool_capacity", "capacity"),
            ("portdoctor_pool_utilization_ratio", "utilization"),
        ] {
            let series = prom_series(prom_addr, &format!("{metric}{{protocol=\"udp\"}}"))?;
            if series.len() != udp.len() {
                last = format!("{metric}: {} UDP series, want {}", series.len(), udp.len());
                return None;
            }
            for p in &udp {
                let s = series
                    .iter()
                    .find(|s| s["metric"]["local_ip"] == p["local_ip"])?;
                let got: f64 = s["value"][1].as_str()?.parse().ok()?;
                if (got - p[field].as_f64()?).abs() > 1e-9 {
                    last = format!("{metric} {p}: prometheus {got}");
                    return None;
                }
            }
            // The TCP series are there too, without the protocol label.
            let tcp = prom_series(prom_addr, &format!("{metric}{{protocol=\"\"}}"))?;
            if tcp.is_empty() {
                last = format!("{metric}: no TCP series");
                return None;
            }
        }
        Some(())
    });
    assert!(
        matched.is_some(),
        "Prometheus never agreed with check --json on UDP pools: {last}\nprometheus: {}",
        prom.stderr()
    );
    drop(exporter);
}
