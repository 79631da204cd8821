//! UDP pools against the kernel (docs/udp.md): each measured rule, and the issue's main case.
//! Every test holds real UDP sockets in a namespace it makes, reads `check --json`, and then
//! asks the kernel how many more UDP sockets really get a port: the model's free ports must be
//! exactly that number, and the next one must fail with EAGAIN. Needs root (`ip netns add`).
#![cfg(target_os = "linux")]

mod common;

use std::fs;
use std::time::Duration;

use common::{finding_codes, findings, pools, python, Background, Netns};
use serde_json::Value;

macro_rules! require_root {
    ($name:literal) => {
        if !common::require_root($name) {
            return;
        }
    };
}

/// Makes the UDP (and TCP) sockets named by the action arguments, writes OUT (atomically) with
/// its pid, then waits for OUT.probe: a comma-separated list of socket kinds; for each it opens
/// sockets of that kind until one fails (at most 300) and writes the counts and the error to
/// OUT.result. Holds everything until HOLD seconds have passed.
/// Actions: conn4:N (connect to 127.0.0.1:7000), send4:N (sendto from an unbound socket),
/// bind4:ADDR:N (bind(ADDR, 0)), fixed4:ADDR:PORT, reuse4:PORT:N (SO_REUSEPORT group on
/// 0.0.0.0:PORT), conn6:N (dual-stack, to ::1), conn6only:N (IPV6_V6ONLY), tcp:N (TCP
/// connections to a listener on 127.0.0.1:7100, outside the range).
const UDP_PY: &str = r"
import errno, json, os, socket, sys, time
out, hold, actions = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
held = []
def udp4():
    return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
def udp6(only):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1 if only else 0)
    return s
def make(kind, arg=None):
    if kind == 'conn4':
        s = udp4(); s.connect(('127.0.0.1', 7000))
    elif kind == 'send4':
        s = udp4(); s.sendto(b'x', ('127.0.0.1', 7000))
    elif kind == 'bind4':
        s = udp4(); s.bind((arg, 0))
    elif kind == 'conn6':
        s = udp6(False); s.connect(('::1', 7000))
    elif kind == 'conn6only':
        s = udp6(True); s.connect(('::1', 7000))
    elif kind == 'send6only':
        s = udp6(True); s.sendto(b'x', ('::1', 7000))
    else:
        raise SystemExit('unknown kind ' + kind)
    return s
lst = None
for a in actions:
    f = a.split(':')
    if f[0] == 'fixed4':
        s = udp4(); s.bind((f[1], int(f[2]))); held.append(s)
    elif f[0] == 'reuse4':
        for _ in range(int(f[2])):
            s = udp4(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind(('0.0.0.0', int(f[1]))); held.append(s)
    elif f[0] == 'tcp':
        if lst is None:
            lst = socket.socket(); lst.bind(('127.0.0.1', 7100)); lst.listen(128)
        for _ in range(int(f[1])):
            c = socket.create_connection(('127.0.0.1', 7100)); a2, _ = lst.accept()
            held += [c, a2]
    elif f[0] == 'bind4':
        for _ in range(int(f[2])):
            held.append(make('bind4', f[1]))
    else:
        for _ in range(int(f[1])):
            held.append(make(f[0]))
def publish(path, obj):
    with open(path + '.tmp', 'w') as fh:
        json.dump(obj, fh)
    os.rename(path + '.tmp', path)
publish(out, {'pid': os.getpid(), 'held': len(held)})
deadline = time.time() + hold
while time.time() < deadline and not os.path.exists(out + '.probe'):
    time.sleep(0.02)
if os.path.exists(out + '.probe'):
    result = []
    for kind in open(out + '.probe').read().strip().split(','):
        n, err = 0, None
        while n < 300:
            try:
                held.append(make(kind)); n += 1
            except OSError as e:
                err = errno.errorcode.get(e.errno, str(e.errno)); break
        result.append({'kind': kind, 'more': n, 'error': err})
    publish(out + '.result', result)
while time.time() < deadline:
    time.sleep(0.2)
";

/// The helper process holding the sockets.
struct Holder {
    proc: Background,
    out: std::path::PathBuf,
    pid: u64,
}

impl Holder {
    fn start(ns: &Netns, actions: &[&str]) -> Holder {
        let out = ns.path("udp-holder.json");
        let mut cmd = ns.exec(python());
        cmd.args(["-c", UDP_PY]).arg(&out).arg("60").args(actions);
        let mut proc = ns.spawn("udp-holder", cmd);
        let text = proc.wait_for_file(&out, Duration::from_secs(20));
        let v: Value = serde_json::from_str(&text).expect("holder output is JSON");
        let pid = v["pid"].as_u64().expect("holder pid");
        Holder { proc, out, pid }
    }

    /// How many more sockets of each kind the kernel gave, and the error that ended each run.
    fn probe(&mut self, kinds: &[&str]) -> Vec<(u64, String)> {
        let probe = with_suffix(&self.out, ".probe");
        fs::write(&probe, kinds.join(",")).expect("writing the probe request");
        let result = with_suffix(&self.out, ".result");
        let text = self.proc.wait_for_file(&result, Duration::from_secs(20));
        let v: Value = serde_json::from_str(&text).expect("probe result is JSON");
        v.as_array()
            .expect("probe result is an array")
            .iter()
            .map(|r| {
                (
                    r["more"].as_u64().expect("count"),
                    r["error"].as_str().unwrap_or("none").to_string(),
                )
            })
            .collect()
    }
}

fn with_suffix(path: &std::path::Path, suffix: &str) -> std::path::PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    s.into()
}

fn range_ns(tag: &str, low: u16, high: u16) -> Netns {
    let ns = Netns::new(tag);
    ns.sysctl("net.ipv4.ip_local_port_range", &format!("{low} {high}"));
    ns
}

/// The UDP pool of VERSION in the report (`None` when the report has none).
fn udp_pool<'a>(report: &'a Value, version: &str) -> Option<&'a Value> {
    let found: Vec<&Value> = pools(report)
        .iter()
        .filter(|p| p["protocol"] == "udp" && p["ip_version"] == version)
        .collect();
    assert!(found.len() <= 1, "two UDP {version} pools: {report}");
    found.first().copied()
}

fn num(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

fn free(p: &Value) -> u64 {
    num(p, "capacity") - num(p, "in_use")
}

/// The issue's main case: range 40000–40099, one process holds 95 connected UDP sockets and 10
/// TCP connections.
#[test]
fn udp_pool_95_of_100_is_critical_and_exactly_5_more_connects_succeed() {
    require_root!("udp_pool_95_of_100_is_critical_and_exactly_5_more_connects_succeed");
    let ns = range_ns("udp95", 40000, 40099);
    let mut h = Holder::start(&ns, &["conn4:95", "tcp:10"]);
    let (report, code) = ns.check_json(&[]);
    let udp = udp_pool(&report, "ipv4").unwrap_or_else(|| panic!("no UDP pool: {report}"));
    assert_eq!(num(udp, "in_use"), 95, "{udp}");
    assert_eq!(num(udp, "connected"), 95, "{udp}");
    assert_eq!(num(udp, "capacity"), 100, "{udp}");
    assert_eq!(udp["scope"], "namespace");
    assert_eq!(udp["level"], "critical", "{udp}");
    assert_eq!(udp["processes"][0]["pid"].as_u64(), Some(h.pid), "{udp}");
    assert_eq!(num(&udp["processes"][0], "ports"), 95, "{udp}");
    assert!(
        udp_pool(&report, "ipv6").is_none(),
        "no IPv6 socket, no IPv6 pool"
    );
    assert_eq!(code, 2, "critical: exit 2");
    assert_eq!(report["verdict"]["level"], "critical");
    let near = findings(&report, "udp_pool_near_exhaustion");
    assert_eq!(near.len(), 1, "{:?}", finding_codes(&report));
    let msg = near[0]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(&format!("({}) holds 95 of 100 UDP ports", h.pid)),
        "{msg}"
    );
    assert!(near[0]["fix"]
        .as_str()
        .unwrap_or_default()
        .contains("shared with TCP"));
    assert_eq!(findings(&report, "udp_socket_leak").len(), 1);
    // The TCP pool is unaffected: its own 10 connections, the whole range.
    let tcp: Vec<&Value> = pools(&report)
        .iter()
        .filter(|p| p["protocol"] == "tcp")
        .collect();
    assert_eq!(tcp.len(), 1, "{report}");
    assert_eq!(num(tcp[0], "in_use"), 10, "{}", tcp[0]);
    assert_eq!(num(tcp[0], "capacity"), 100, "{}", tcp[0]);
    assert_eq!(tcp[0]["level"], "ok");
    // The kernel agrees: exactly 5 more, then EAGAIN.
    assert_eq!(h.probe(&["conn4"]), vec![(5, "EAGAIN".to_string())]);
}

/// Each case: the held sockets, the expected (in_use, capacity) of the IPv4 pool and of the IPv6
/// pool (`None`: no pool), and the probes whose counts must equal the model's free ports.
struct Rule {
    tag: &'static str,
    reserved: Option<&'static str>,
    actions: &'static [&'static str],
    v4: (u64, u64),
    v6: Option<(u64, u64)>,
    /// (socket kind, which pool's free ports it must get: "ipv4"/"ipv6", or a fixed count)
    probes: &'static [(&'static str, Expect)],
}

#[derive(Clone, Copy)]
enum Expect {
    Free(&'static str),
    Exactly(u64),
}

fn check_rule(r: &Rule) {
    let ns = range_ns(r.tag, 40000, 40019);
    if let Some(res) = r.reserved {
        ns.sysctl("net.ipv4.ip_local_reserved_ports", res);
    }
    let mut h = Holder::start(&ns, r.actions);
    let (report, _) = ns.check_json(&[]);
    let v4 =
        udp_pool(&report, "ipv4").unwrap_or_else(|| panic!("{}: no UDP pool: {report}", r.tag));
    assert_eq!(
        (num(v4, "in_use"), num(v4, "capacity")),
        r.v4,
        "{}: {v4}",
        r.tag
    );
    let v6 = udp_pool(&report, "ipv6");
    assert_eq!(
        v6.map(|p| (num(p, "in_use"), num(p, "capacity"))),
        r.v6,
        "{}: {v6:?}",
        r.tag
    );
    let kinds: Vec<&str> = r.probes.iter().map(|(k, _)| *k).collect();
    let got = h.probe(&kinds);
    for ((kind, want), (more, err)) in r.probes.iter().zip(&got) {
        let want = match want {
            Expect::Free("ipv4") => free(v4),
            Expect::Free(_) => free(v6.expect("an IPv6 pool")),
            Expect::Exactly(n) => *n,
        };
        assert_eq!(
            *more, want,
            "{}: {kind} got {more} more ports ({err}); the model says {want}: {report}",
            r.tag
        );
        assert_eq!(err, "EAGAIN", "{}: {kind} ended with {err}", r.tag);
    }
}

#[test]
fn udp_rule_reserved_ports_leave_the_pool() {
    require_root!("udp_rule_reserved_ports_leave_the_pool");
    check_rule(&Rule {
        tag: "udpres",
        reserved: Some("40000-40004"),
        actions: &["conn4:5"],
        v4: (5, 15),
        v6: None,
        probes: &[("conn4", Expect::Free("ipv4"))],
    });
}

#[test]
fn udp_rule_a_server_bound_inside_the_range_takes_its_port() {
    require_root!("udp_rule_a_server_bound_inside_the_range_takes_its_port");
    check_rule(&Rule {
        tag: "udpsrv",
        reserved: None,
        actions: &["fixed4:127.0.0.5:40005", "conn4:5"],
        v4: (6, 20),
        v6: None,
        probes: &[("conn4", Expect::Free("ipv4"))],
    });
}

#[test]
fn udp_rule_unconnected_and_address_bound_sockets_hold_ports_namespace_wide() {
    require_root!("udp_rule_unconnected_and_address_bound_sockets_hold_ports_namespace_wide");
    check_rule(&Rule {
        tag: "udpunc",
        reserved: None,
        actions: &["send4:4", "bind4:127.0.0.2:5"],
        v4: (9, 20),
        v6: None,
        probes: &[
            ("conn4", Expect::Free("ipv4")),
            ("send4", Expect::Exactly(0)),
        ],
    });
}

#[test]
fn udp_rule_a_reuseport_group_holds_its_port_once() {
    require_root!("udp_rule_a_reuseport_group_holds_its_port_once");
    check_rule(&Rule {
        tag: "udpgrp",
        reserved: None,
        actions: &["reuse4:40003:5"],
        v4: (1, 20),
        v6: None,
        probes: &[("conn4", Expect::Free("ipv4"))],
    });
}

#[test]
fn udp_rule_ipv4_full_blocks_dual_stack_ipv6_but_not_v6only() {
    require_root!("udp_rule_ipv4_full_blocks_dual_stack_ipv6_but_not_v6only");
    // IPv4 full: a dual-stack IPv6 socket gets nothing, a v6-only one gets the whole range.
    check_rule(&Rule {
        tag: "udp4full",
        reserved: None,
        actions: &["conn4:20"],
        v4: (20, 20),
        v6: None,
        probes: &[
            ("conn6", Expect::Exactly(0)),
            ("conn6only", Expect::Exactly(20)),
        ],
    });
}

/// Unconnected v6-only sockets: sock_diag reports `IPV6_V6ONLY` only for sockets in state
/// CLOSE (unconnected) or LISTEN, so connected ones count as dual-stack (docs/udp.md).
#[test]
fn udp_rule_v6only_sockets_leave_the_ipv4_pool_alone() {
    require_root!("udp_rule_v6only_sockets_leave_the_ipv4_pool_alone");
    check_rule(&Rule {
        tag: "udp6only",
        reserved: None,
        actions: &["send6only:12"],
        v4: (0, 20),
        v6: Some((12, 20)),
        probes: &[("conn4", Expect::Free("ipv4"))],
    });
}

#[test]
fn udp_rule_dual_stack_ipv6_sockets_hold_ports_in_both_pools() {
    require_root!("udp_rule_dual_stack_ipv6_sockets_hold_ports_in_both_pools");
    check_rule(&Rule {
        tag: "udpdual",
        reserved: None,
        actions: &["conn6:8", "conn4:4"],
        v4: (12, 20),
        v6: Some((12, 20)),
        probes: &[("conn6", Expect::Free("ipv6"))],
    });
}

/// `top --once` lists the UDP pool as a row with its owner.
#[test]
fn top_shows_the_udp_pool_with_its_owner() {
    require_root!("top_shows_the_udp_pool_with_its_owner");
    let ns = range_ns("udptop", 40000, 40099);
    let h = Holder::start(&ns, &["conn4:90"]);
    let run = common::portdoctor(&["top", "--once", "--netns", &ns.name]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let row = run
        .stdout
        .lines()
        .find(|l| l.starts_with("UDP ipv4 (all addresses)"))
        .unwrap_or_else(|| panic!("no UDP row:\n{}", run.stdout));
    assert!(row.contains(" 90 ") && row.contains("90%"), "{row}");
    assert!(row.contains(&format!("({})", h.pid)), "{row}");
}

/// `capacity --from-host --udp`: the UDP ports held now are concurrency already there, so a
/// demand that needs more than the rest of the range does not fit (exit 2), and the hold time
/// is the socket lifetime (no TIME_WAIT).
#[test]
fn capacity_counts_held_udp_sockets_as_concurrency() {
    require_root!("capacity_counts_held_udp_sockets_as_concurrency");
    let ns = range_ns("udpcap", 40000, 40099);
    let _h = Holder::start(&ns, &["conn4:95"]);
    let ask = |rate: &str| {
        common::portdoctor(&[
            "capacity",
            "--from-host",
            "--netns",
            &ns.name,
            "--udp",
            "--rate",
            rate,
            "--lifetime",
            "1s",
            "--json",
        ])
    };
    let fits = ask("4");
    assert_eq!(
        fits.code, 1,
        "4/s × 1 s = 4 of the 5 free ports: fits, over 70 %: {}",
        fits.stdout
    );
    let v: Value = serde_json::from_str(&fits.stdout).expect("capacity JSON");
    let o = &v["outcome"];
    assert_eq!(o["usable_ports"], 5, "{v}");
    assert_eq!(o["hold_reason"], "udp_socket_lifetime", "{v}");
    assert_eq!(o["scope"], "udp", "{v}");
    let over = ask("10");
    assert_eq!(over.code, 2, "10 ports needed, 5 free: {}", over.stdout);
}

/// `lab --udp`: the lab's process holds connected UDP sockets until EAGAIN; the model's
/// capacity, the kernel's count and check's pool agree, and the namespace is gone afterwards.
#[test]
fn lab_udp_fills_the_pool_until_eagain_as_the_model_says() {
    require_root!("lab_udp_fills_the_pool_until_eagain_as_the_model_says");
    let run = common::portdoctor(&["lab", "--udp", "--range", "40000", "40149", "--json"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let v: Value = serde_json::from_str(&run.stdout).expect("lab JSON");
    assert_eq!(v["schema"], "portdoctor.lab-udp/v1");
    assert_eq!(v["model_usable_ports"], 150, "{v}");
    assert_eq!(v["observed_sockets"], 150, "{v}");
    assert_eq!(v["observed_error"], "EAGAIN", "{v}");
    assert_eq!(v["check"]["in_use"], 150, "{v}");
    assert_eq!(v["check"]["level"], "critical", "{v}");
    assert_eq!(v["check"]["owner_is_lab"], true, "{v}");
    assert_eq!(v["agrees"], true, "{v}");
    assert_eq!(v["namespace_removed"], true, "{v}");
    let name = v["namespace"].as_str().expect("namespace name");
    assert!(!std::path::Path::new("/run/netns").join(name).exists());
}

/// The /proc/net/udp{,6} fallback sees the same UDP pool as sock_diag (v6-only aside, which
/// the text tables do not show).
#[test]
fn procfs_fallback_sees_the_same_udp_pool() {
    require_root!("procfs_fallback_sees_the_same_udp_pool");
    let ns = range_ns("udpproc", 40000, 40099);
    let _h = Holder::start(&ns, &["conn4:30", "send4:5", "conn6:3"]);
    let (netlink, _) = ns.check_json(&["--source", "netlink"]);
    let (procfs, _) = ns.check_json(&["--source", "procfs"]);
    for version in ["ipv4", "ipv6"] {
        let a = udp_pool(&netlink, version).expect("netlink UDP pool");
        let b = udp_pool(&procfs, version).expect("procfs UDP pool");
        for key in ["in_use", "sockets", "connected", "capacity"] {
            assert_eq!(a[key], b[key], "{version} {key}: netlink {a} procfs {b}");
        }
    }
    assert_eq!(num(udp_pool(&netlink, "ipv4").expect("pool"), "in_use"), 38);
    assert_eq!(
        num(udp_pool(&netlink, "ipv4").expect("pool"), "connected"),
        33
    );
}

/// The JSON contract of a UDP pool (no root needed): exactly these keys, TCP pools gain only
/// `protocol`, and the pools stay sorted by utilization across protocols.
#[test]
fn json_udp_pool_shape_and_order() {
    use portdoctor::analysis::{analyze, Thresholds};
    use portdoctor::fixture::SnapshotBuilder;
    use portdoctor::report::json;
    use portdoctor::snapshot::UdpSocket;
    let mut s = SnapshotBuilder::linux()
        .range(40000, 40099)
        .pool("10.0.0.5", "10.0.0.9", 5432, 10, 0, (0, 0))
        .build();
    s.udp_sockets = std::sync::Arc::new(
        (0..50u16)
            .map(|i| UdpSocket {
                local_ip: "0.0.0.0".parse().expect("ip"),
                local_port: 40050 + i,
                remote_ip: "0.0.0.0".parse().expect("ip"),
                remote_port: 0,
                ipv6_socket: false,
                v6only: None,
                inode: 0,
                uid: None,
                pid: None,
            })
            .collect(),
    );
    let a = analyze(&s, Thresholds::default());
    let v: Value = serde_json::from_str(&json::render(&s, &a, None)).expect("JSON");
    let pools = pools(&v);
    assert_eq!(pools.len(), 2);
    assert_eq!(pools[0]["protocol"], "udp", "50 % before 10 %: {v}");
    assert_eq!(pools[1]["protocol"], "tcp");
    let keys: Vec<&str> = pools[0]
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    let mut want = vec![
        "capacity",
        "connected",
        "in_use",
        "ip_version",
        "level",
        "local_ip",
        "processes",
        "protocol",
        "remote_ip",
        "remote_port",
        "reserved_in_range",
        "scope",
        "sockets",
        "utilization",
    ];
    let mut got = keys.clone();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want);
    assert_eq!(pools[0]["utilization"], 0.5);
    assert_eq!(
        pools[0]["processes"],
        Value::Null,
        "owners not scanned: null"
    );
    assert_eq!(v["verdict"]["pools"]["ok"], 2);
}
