//! SNAT pools (issue 16) on a real NAT: a "pod" namespace behind a "node" namespace that
//! masquerades toward a "remote" namespace with a server. The pod opens connections until the
//! node's NAT range is full; `check --netns node` must see what `conntrack -L` sees.
//!
//! Needs root, nftables, iptables (nft backend) and conntrack (the conntrack-tools package).
//! Addresses: 10.N.1.0/24 (pod–node) and 10.N.2.0/24 (node–remote), N = 231, 233–235 by
//! test, inside the test's own namespaces only.
#![cfg(target_os = "linux")]

mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use common::{finding_codes, pools, require_root, run_ok, Background, Netns};
use serde_json::Value;

const SERVER: &str = r"
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(4096)
open(sys.argv[3] + '.tmp', 'w').close()
import os; os.rename(sys.argv[3] + '.tmp', sys.argv[3])
time.sleep(120)
";

/// Opens N non-blocking connects, waits until all are answered or WAIT seconds passed, writes
/// `{"ok": .., "pending": ..}` and holds the connections (at most 120 s; killed on drop).
const CLIENT: &str = r"
import json, os, selectors, socket, sys, time
host, port, n, wait, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
socks = []
for _ in range(n):
    s = socket.socket(); s.setblocking(False)
    try: s.connect((host, port))
    except BlockingIOError: pass
    socks.append(s)
sel = selectors.DefaultSelector()
for s in socks: sel.register(s, selectors.EVENT_WRITE)
ok = failed = 0; pending = n; end = time.time() + wait
while pending and time.time() < end:
    for k, _ in sel.select(timeout=max(0, end - time.time())):
        sel.unregister(k.fileobj); pending -= 1
        if k.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0: ok += 1
        else: failed += 1
with open(out + '.tmp', 'w') as f: json.dump({'ok': ok, 'failed': failed, 'pending': pending}, f)
os.rename(out + '.tmp', out)
time.sleep(120)
";

/// pod → veth → node (forwarding, NAT rules added by the test) → veth → remote.
struct NatLab {
    /// 10.NET.1.0/24 pod–node, 10.NET.2.0/24 node–remote: each test its own NET, so that
    /// `-A` (which sees every test's namespaces) finds each pod address once.
    net: u8,
    pod: Netns,
    node: Netns,
    remote: Netns,
    held: Vec<Background>,
}

impl NatLab {
    fn new(tag: &str, net: u8) -> NatLab {
        let lab = NatLab {
            net,
            pod: Netns::new(&format!("nat{tag}-pod")),
            node: Netns::new(&format!("nat{tag}-node")),
            remote: Netns::new(&format!("nat{tag}-rem")),
            held: Vec::new(),
        };
        let (pod, node, remote) = (&lab.pod, &lab.node, &lab.remote);
        node.ip(&[
            "link", "add", "n0", "type", "veth", "peer", "name", "p0", "netns", &pod.name,
        ]);
        node.ip(&[
            "link",
            "add",
            "n1",
            "type",
            "veth",
            "peer",
            "name",
            "r0",
            "netns",
            &remote.name,
        ]);
        for (ns, dev, addr) in [
            (pod, "p0", format!("10.{net}.1.2/24")),
            (node, "n0", format!("10.{net}.1.1/24")),
            (node, "n1", format!("10.{net}.2.1/24")),
            (remote, "r0", format!("10.{net}.2.2/24")),
        ] {
            ns.ip(&["addr", "add", &addr, "dev", dev]);
            ns.ip(&["link", "set", dev, "up"]);
        }
        pod.ip(&["route", "add", "default", "via", &format!("10.{net}.1.1")]);
        node.sysctl("net.ipv4.ip_forward", "1");
        lab
    }

    fn remote_ip(&self) -> String {
        format!("10.{}.2.2", self.net)
    }

    /// `nft ARGS` in the node.
    fn nft(&self, args: &[&str]) {
        run_ok(self.node.exec("nft").args(args));
    }

    /// A table `pdnat` with a postrouting NAT chain and one rule (`RULE`, nft syntax).
    fn nft_nat(&self, rule: &str) {
        self.nft(&["add", "table", "ip", "pdnat"]);
        self.nft(&[
            "add chain ip pdnat post { type nat hook postrouting priority srcnat; policy accept; }",
        ]);
        self.nft(&[&format!("add rule ip pdnat post oifname n1 {rule}")]);
    }

    /// A server on REMOTE:PORT, ready when this returns.
    fn server(&mut self, port: u16) {
        let ready = self.remote.path("server-ready");
        let mut cmd = self.remote.exec("python3");
        cmd.args(["-c", SERVER, &self.remote_ip(), &port.to_string()])
            .arg(&ready);
        let mut bg = self.remote.spawn("server", cmd);
        bg.wait_for_file(&ready, Duration::from_secs(30));
        self.held.push(bg);
    }

    /// N connects from the pod to REMOTE:PORT; the outcome after at most WAIT seconds. The
    /// connections stay open while the lab lives.
    fn connect(&mut self, port: u16, n: u32, wait: f64) -> Value {
        let out = self.pod.path("client");
        let mut cmd = self.pod.exec("python3");
        cmd.args([
            "-c",
            CLIENT,
            &self.remote_ip(),
            &port.to_string(),
            &n.to_string(),
            &wait.to_string(),
        ])
        .arg(&out);
        let mut bg = self.pod.spawn("client", cmd);
        let text = bg.wait_for_file(&out, Duration::from_secs(60));
        self.held.push(bg);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("client result {text:?}: {e}"))
    }

    /// `conntrack -L` lines of the node for original destination port PORT.
    fn conntrack_count(&self, port: u16) -> u64 {
        let text = run_ok(self.node.exec("conntrack").args([
            "-L",
            "-p",
            "tcp",
            "--dport",
            &port.to_string(),
        ]));
        text.lines().filter(|l| l.starts_with("tcp")).count() as u64
    }
}

/// One scrape of `portdoctor serve --netns NS` (listening on host loopback), checked by
/// promtool.
fn scrape_serve(ns: &Netns) -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port");
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = Command::new(common::PORTDOCTOR);
    cmd.args(["serve", "--netns", &ns.name, "--listen", &listen]);
    let _serve = ns.spawn("serve", cmd);
    let body = common::wait_until(Duration::from_secs(30), || {
        let mut s = std::net::TcpStream::connect(&listen).ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then(|| body.to_string())
    })
    .expect("serve answered /metrics within 30 s");
    let mut check = Command::new("promtool");
    check
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Ok(mut child) = check.spawn() {
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(body.as_bytes());
        }
        let out = child.wait_with_output().expect("promtool ran");
        assert!(
            out.status.success(),
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    body
}

fn snat_pools(report: &Value) -> Vec<&Value> {
    pools(report)
        .iter()
        .filter(|p| p["scope"] == "snat")
        .collect()
}

fn snat_pool(report: &Value, port: u16) -> &Value {
    snat_pools(report)
        .into_iter()
        .find(|p| p["remote_port"] == port)
        .unwrap_or_else(|| panic!("no SNAT pool for port {port}: {report}"))
}

#[test]
fn nft_masquerade_range_full_is_an_exhausted_snat_pool() {
    if !require_root("nft_masquerade_range_full_is_an_exhausted_snat_pool") {
        return;
    }
    let mut lab = NatLab::new("full", 231);
    lab.nft_nat("meta l4proto tcp masquerade to :40000-40099");
    lab.server(8080);
    lab.server(8081);
    // 110 flows for a 100-port range: 100 get a NAT port, 10 SYNs are dropped (timeouts).
    let r = lab.connect(8080, 110, 5.0);
    assert_eq!(
        (r["ok"].as_u64(), r["pending"].as_u64()),
        (Some(100), Some(10)),
        "{r}"
    );
    // Another remote port is a pool of its own: these succeed.
    let r2 = lab.connect(8081, 3, 10.0);
    assert_eq!(r2["ok"], 3, "{r2}");

    let truth = lab.conntrack_count(8080);
    let (report, code) = lab.node.check_json(&[]);
    assert_eq!(code, 2, "critical: {report}");
    let p = snat_pool(&report, 8080);
    assert_eq!(
        p["in_use"].as_u64(),
        Some(truth),
        "conntrack -L says {truth}: {p}"
    );
    assert_eq!(truth, 100);
    assert_eq!(p["capacity"], 100);
    assert_eq!(p["level"], "critical");
    assert_eq!(p["local_ip"], "10.231.2.1", "the NAT address: {p}");
    assert_eq!(p["protocol"], "tcp");
    assert_eq!(p["nat_range"], serde_json::json!([40000, 40099]));
    assert_eq!(p["range_source"]["origin"], "nftables");
    assert_eq!(p["fully_random"], false);
    assert_eq!(p["sources"][0]["ip"], "10.231.1.2");
    let other = snat_pool(&report, 8081);
    assert_eq!(other["in_use"], 3, "{other}");
    assert_eq!(other["level"], "ok");
    let codes = finding_codes(&report);
    assert!(
        codes.contains(&"snat_pool_exhausted".to_string()),
        "{codes:?}"
    );
    assert!(
        codes.contains(&"conntrack_insert_failed".to_string()),
        "{codes:?}"
    );
    let stats = &report["conntrack"]["stats"];
    assert!(stats["insert_failed"].as_u64() > Some(0), "{stats}");
    assert!(stats["drop"].as_u64() > Some(0), "{stats}");
    assert_eq!(report["conntrack"]["dumped"].as_u64(), Some(103));

    // serve exports the same pool and the conntrack counters.
    let metrics = scrape_serve(&lab.node);
    let series = "portdoctor_snat_pool_in_use{nat_ip=\"10.231.2.1\",remote_ip=\"10.231.2.2\",remote_port=\"8080\",protocol=\"tcp\"} ";
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with(series) && l.ends_with(" 100") || l == format!("{series}100.0")),
        "{series} missing or not 100:\n{metrics}"
    );
    let failed = metrics
        .lines()
        .find_map(|l| l.strip_prefix("portdoctor_conntrack_insert_failed_total "))
        .and_then(|v| v.parse::<f64>().ok());
    assert!(
        failed > Some(0.0),
        "insert_failed counter: {failed:?}\n{metrics}"
    );
    assert!(
        metrics.contains("portdoctor_conntrack_entries_max "),
        "{metrics}"
    );

    // The text report shows the SNAT table.
    let text = common::portdoctor(&["check", "--netns", &lab.node.name]);
    assert!(
        text.stdout.contains("10.231.2.1 → 10.231.2.2:8080 tcp"),
        "{}",
        text.stdout
    );
}

#[test]
fn iptables_nft_masquerade_to_ports_random_fully_is_read() {
    if !require_root("iptables_nft_masquerade_to_ports_random_fully_is_read") {
        return;
    }
    let mut lab = NatLab::new("ipt", 233);
    run_ok(lab.node.exec("iptables").args([
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-o",
        "n1",
        "-p",
        "tcp",
        "-j",
        "MASQUERADE",
        "--to-ports",
        "41000-41099",
        "--random-fully",
    ]));
    lab.server(8080);
    let r = lab.connect(8080, 80, 10.0);
    assert_eq!(r["ok"], 80, "{r}");
    let truth = lab.conntrack_count(8080);
    let (report, code) = lab.node.check_json(&[]);
    let p = snat_pool(&report, 8080);
    assert_eq!(p["in_use"].as_u64(), Some(truth), "{p}");
    assert_eq!(truth, 80);
    assert_eq!(p["capacity"], 100);
    assert_eq!(p["nat_range"], serde_json::json!([41000, 41099]));
    assert_eq!(p["range_source"]["origin"], "iptables", "{p}");
    assert_eq!(p["fully_random"], true, "{p}");
    assert_eq!(p["level"], "warning", "80 % of 100: {p}");
    assert_eq!(code, 1, "{report}");
    assert!(finding_codes(&report).contains(&"snat_pool_near_exhaustion".to_string()));
}

#[test]
fn cloud_nat_quota_of_64_with_80_flows_to_one_destination() {
    if !require_root("cloud_nat_quota_of_64_with_80_flows_to_one_destination") {
        return;
    }
    let mut lab = NatLab::new("cloud", 234);
    // No port range in the rule: the kernel's default range, said so.
    lab.nft_nat("meta l4proto tcp masquerade");
    lab.server(443);
    let r = lab.connect(443, 80, 10.0);
    assert_eq!(r["ok"], 80, "{r}");
    let (plain, _) = lab.node.check_json(&[]);
    let p = snat_pool(&plain, 443);
    assert_eq!(p["range_source"]["origin"], "kernel_default", "{p}");
    assert_eq!(p["capacity"], 64_512);
    assert!(!finding_codes(&plain).contains(&"cloud_nat_quota".to_string()));

    let (report, code) = lab.node.check_json(&["--cloud-nat", "azure-lb:64"]);
    assert_eq!(code, 2, "{report}");
    let f = common::findings(&report, "cloud_nat_quota");
    assert_eq!(f.len(), 1, "{report}");
    assert_eq!(f[0]["evidence"]["flows"], 80);
    assert_eq!(f[0]["evidence"]["quota"], 64);
    assert!(
        f[0]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("model, not a measurement")),
        "{}",
        f[0]["message"]
    );
    assert_eq!(report["thresholds"]["cloud_nat"]["provider"], "azure-lb");

    // -A names the pod behind the SNAT source address (its sockets use it).
    let all = common::portdoctor(&["check", "-A", "--json", "--no-owners"]).json();
    let node = all["namespaces"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|n| n["netns"]["name"] == lab.node.name.as_str())
        })
        .unwrap_or_else(|| panic!("node namespace in -A: {all}"));
    let p = snat_pool(node, 443);
    assert_eq!(p["sources"][0]["ip"], "10.234.1.2");
    assert_eq!(p["sources"][0]["owner"], lab.pod.name.as_str(), "{p}");

    // The conntrack data survives --save / --load (an additive field of snapshot/v1).
    let file = lab.node.path("snap.json");
    let file = file.to_str().expect("utf-8 path");
    common::portdoctor(&["check", "--netns", &lab.node.name, "--save", file]);
    let loaded = common::portdoctor(&["check", "--load", file, "--json"]).json();
    assert_eq!(snat_pool(&loaded, 443)["in_use"], 80, "{loaded}");
}

#[test]
fn without_cap_net_admin_the_table_is_unknown_not_empty() {
    if !require_root("without_cap_net_admin_the_table_is_unknown_not_empty") {
        return;
    }
    let mut lab = NatLab::new("priv", 235);
    lab.nft_nat("meta l4proto tcp masquerade to :40000-40099");
    lab.server(8080);
    assert_eq!(lab.connect(8080, 5, 10.0)["ok"], 5);
    // As nobody, inside the node: nf_conntrack_count is readable, the ctnetlink dump is not.
    let mut cmd = lab.node.exec("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
    ])
    .arg(common::PORTDOCTOR)
    .args(["check", "--json", "--no-owners"]);
    let run = common::run_program(&mut cmd, &["check", "--json", "(as nobody)"]);
    let report = run.json();
    let ct = &report["conntrack"];
    assert_eq!(ct["count"], 5, "{ct}");
    assert!(ct["dumped"].is_null(), "unknown, not 0: {ct}");
    assert!(ct["snat_entries"].is_null(), "unknown, not 0: {ct}");
    assert!(snat_pools(&report).is_empty());
    let notes = report["notes"].to_string();
    assert!(notes.contains("CAP_NET_ADMIN"), "{notes}");
    assert!(
        !notes.contains("sock_diag"),
        "ctnetlink is no sock_diag dump: {notes}"
    );
}

/// An empty table (nf_conntrack_count 0, readable by anyone) needs no dump: as nobody it is
/// 0 entries, 0 SNAT entries, and no note asking for CAP_NET_ADMIN on every unprivileged run.
#[test]
fn without_cap_net_admin_an_empty_table_is_empty() {
    if !require_root("without_cap_net_admin_an_empty_table_is_empty") {
        return;
    }
    let ns = Netns::new("nat-empty");
    let mut cmd = ns.exec("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
    ])
    .arg(common::PORTDOCTOR)
    .args(["check", "--json", "--no-owners"]);
    let run = common::run_program(&mut cmd, &["check", "--json", "(as nobody)"]);
    let report = run.json();
    let Some(ct) = report.get("conntrack").filter(|c| !c.is_null()) else {
        return; // nf_conntrack not loaded: nothing to say
    };
    assert_eq!(ct["count"], 0, "{ct}");
    assert_eq!(ct["dumped"], 0, "{ct}");
    assert_eq!(ct["snat_entries"], 0, "{ct}");
    let notes = report["notes"].to_string();
    assert!(!notes.contains("conntrack"), "{notes}");
}

#[test]
fn no_nat_rules_and_idle_conntrack_say_nothing() {
    if !require_root("no_nat_rules_and_idle_conntrack_say_nothing") {
        return;
    }
    let ns = Netns::new("nat-none");
    // Conntrack active in the namespace (a stateful rule), no NAT.
    run_ok(ns.exec("nft").args(["add", "table", "ip", "pdct"]));
    run_ok(
        ns.exec("nft")
            .args(["add chain ip pdct out { type filter hook output priority 0; policy accept; }"]),
    );
    run_ok(
        ns.exec("nft")
            .args(["add rule ip pdct out ct state established accept"]),
    );
    let (report, code) = ns.check_json(&[]);
    assert_eq!(code, 0, "{report}");
    assert!(snat_pools(&report).is_empty(), "{report}");
    assert!(finding_codes(&report).is_empty(), "{report}");
    let text = common::portdoctor(&["check", "--netns", &ns.name]);
    assert!(!text.stdout.contains("SNAT"), "{}", text.stdout);
    // Where nf_conntrack is loaded the table was dumped (as root): zero SNAT entries, read.
    if let Some(ct) = report.get("conntrack") {
        assert_eq!(ct["snat_entries"], 0, "{ct}");
    }
}
