//! `check --all-namespaces`: every network namespace of the host at once, named ones and those
//! only a process holds, each with its own range and pools, identified by container and pod
//! from cgroup paths and a kubelet-like pods directory that the test lays out.

#![cfg(target_os = "linux")]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use common::{portdoctor, python, require_root, run_ok, Netns};

macro_rules! require_root {
    ($name:expr) => {
        if !require_root($name) {
            return;
        }
    };
}

/// Listens on 127.0.0.1:PORT, holds N connections to it, writes READY, sleeps SECONDS.
const HOLD_PY: &str = r#"
import socket, sys, time
ready, port, n, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
srv = socket.socket(); srv.bind(("127.0.0.1", port)); srv.listen(128)
held = []
for _ in range(n):
    c = socket.create_connection(("127.0.0.1", port)); a, _ = srv.accept(); held += [c, a]
open(ready, "w").write("ready")
time.sleep(secs)
"#;

const CONTAINER_ID: &str = "3f2a9c1b8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a";
const DOCKER_ID: &str = "aaaa9c1b8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1b";
const POD_UID: &str = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";
const POD_UID2: &str = "2c5f39cb-3ab2-22e3-994a-1127e4ddb538";

/// A process holding a namespace of its own; killed when dropped.
struct Held {
    child: std::process::Child,
    pid: u32,
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A namespace no name points to: `unshare -n`, lo up, its own range, N connections held.
fn unnamed(dir: &Path, tag: &str, range: &str, port: u16, n: u32) -> Held {
    let ready = dir.join(format!("{tag}.ready"));
    let script = format!(
        "ip link set lo up && sysctl -qw net.ipv4.ip_local_port_range='{range}' && exec {} -c \"$0\" {} {port} {n} 60",
        python(),
        ready.display()
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["-n", "sh", "-c", &script, HOLD_PY]);
    let stderr_path = dir.join(format!("{tag}.stderr"));
    let stderr = std::fs::File::create(&stderr_path).expect("creating a stderr file");
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("unshare -n");
    // `unshare` execs sh, which execs python: the pid stays the same.
    let mut held = Held {
        pid: child.id(),
        child,
    };
    let found = common::wait_until(Duration::from_secs(20), || {
        if let Ok(Some(status)) = held.child.try_wait() {
            panic!(
                "{tag} exited ({status}): {}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        ready.exists().then_some(())
    });
    assert!(found.is_some(), "{tag} did not get ready");
    held
}

fn established_to(ss: &str, port: u16) -> u64 {
    ss.lines()
        .filter(|l| l.starts_with("ESTAB"))
        .filter(|l| {
            l.split_whitespace()
                .nth(4)
                .is_some_and(|peer| peer.ends_with(&format!(":{port}")))
        })
        .count() as u64
}

fn pool_in_use(ns: &Value, port: u16) -> u64 {
    ns["pools"]
        .as_array()
        .expect("pools")
        .iter()
        .find(|p| p["remote_port"] == port)
        .map_or(0, |p| p["in_use"].as_u64().unwrap_or(0))
}

#[test]
fn every_namespace_with_its_own_pools_and_identity() {
    require_root!("every_namespace_with_its_own_pools_and_identity");
    let dir = tempfile::tempdir().unwrap();
    // Named namespaces, one exhausted (9 of 10 ports).
    let mut named = Vec::new();
    for (i, (range, n)) in [
        ("40000 40009", 9_u32),
        ("40000 40099", 20),
        ("41000 41999", 30),
        ("42000 42499", 5),
    ]
    .into_iter()
    .enumerate()
    {
        let ns = Netns::new(&format!("all{i}"));
        ns.sysctl("net.ipv4.ip_local_port_range", range);
        let port = 7000 + i as u16;
        let ready = ns.path("hold.ready");
        let mut cmd = ns.exec(python());
        cmd.args(["-c", HOLD_PY])
            .arg(&ready)
            .args([port.to_string(), n.to_string(), "60".into()]);
        let mut hold = ns.spawn("hold", cmd);
        hold.wait_for_file(&ready, Duration::from_secs(20));
        named.push((ns, hold, port, n));
    }
    // Namespaces only a process holds, named by cgroup path as three runtimes lay them out.
    let k8s = unnamed(dir.path(), "k8s", "43000 43099", 7100, 12);
    let docker = unnamed(dir.path(), "docker", "44000 44099", 7101, 7);
    let cgroupfs = unnamed(dir.path(), "cgroupfs", "45000 45099", 7102, 3);
    let tag = std::process::id();
    let _cg1 = common::Cgroup::new(
        &format!(
            "pdt{tag}kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{CONTAINER_ID}.scope",
            POD_UID.replace('-', "_")
        ),
        k8s.pid,
    );
    let _cg2 = common::Cgroup::new(
        &format!("pdt{tag}system.slice/docker-{DOCKER_ID}.scope"),
        docker.pid,
    );
    let _cg3 = common::Cgroup::new(
        &format!("pdt{tag}/kubepods/burstable/pod{POD_UID2}/{CONTAINER_ID}"),
        cgroupfs.pid,
    );
    let pods = dir.path().join("pods");
    std::fs::create_dir_all(pods.join(format!("default_web-1_{POD_UID}"))).unwrap();
    std::fs::create_dir_all(pods.join(format!("payments_api-7f9_{POD_UID2}"))).unwrap();
    let pods = pods.to_str().unwrap().to_string();

    let run = portdoctor(&["check", "-A", "--json", "--no-owners", "--pods-dir", &pods]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(report["verdict"]["level"], "critical");
    let all = report["namespaces"].as_array().expect("namespaces");
    assert!(all.iter().any(|n| n["own"] == true), "own namespace listed");

    for (ns, _hold, port, n) in &named {
        let entry = all
            .iter()
            .find(|e| e["netns"]["name"] == ns.name.as_str())
            .unwrap_or_else(|| panic!("{} missing from {all:?}", ns.name));
        let truth = established_to(&ns.ss_raw(), *port);
        assert_eq!(truth, u64::from(*n), "ss in {}", ns.name);
        assert_eq!(pool_in_use(entry, *port), truth, "{}: {entry}", ns.name);
        assert_eq!(entry["target"], ns.name.as_str());
    }
    let exhausted = all
        .iter()
        .find(|e| e["netns"]["name"] == named[0].0.name.as_str())
        .unwrap();
    assert_eq!(exhausted["verdict"]["level"], "critical", "{exhausted}");
    assert_eq!(
        all.iter()
            .find(|e| e["netns"]["name"] == named[1].0.name.as_str())
            .unwrap()["verdict"]["level"],
        "ok"
    );

    for (proc, port, n) in [(&k8s, 7100, 12), (&docker, 7101, 7), (&cgroupfs, 7102, 3)] {
        let entry = all
            .iter()
            .find(|e| {
                e["pids"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|x| x == proc.pid))
            })
            .unwrap_or_else(|| panic!("the namespace of {} missing", proc.pid));
        assert!(entry["netns"]["name"].is_null());
        let pid = proc.pid.to_string();
        let ss = run_ok(Command::new("nsenter").args(["-t", &pid, "-n", "ss", "-Htan"]));
        assert_eq!(established_to(&ss, port), n);
        assert_eq!(pool_in_use(entry, port), n, "{entry}");
        assert_eq!(entry["target"], format!("pid:{}", proc.pid));
        let range_low = entry["settings"]["ephemeral_ports"]["low"].as_u64();
        assert!(range_low.is_some_and(|l| l >= 43000), "{entry}");
    }
    let by_pid = |pid: u32| {
        all.iter()
            .find(|e| {
                e["pids"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|x| x == pid))
            })
            .unwrap()
    };
    let e = by_pid(k8s.pid);
    assert_eq!(e["container"]["runtime"], "containerd", "{e}");
    assert_eq!(e["container"]["id"], CONTAINER_ID);
    assert_eq!(e["pod"]["uid"], POD_UID);
    assert_eq!(e["pod"]["namespace"], "default");
    assert_eq!(e["pod"]["name"], "web-1");
    let e = by_pid(docker.pid);
    assert_eq!(e["container"]["runtime"], "docker", "{e}");
    assert!(e["pod"].is_null());
    let e = by_pid(cgroupfs.pid);
    assert_eq!(e["pod"]["name"], "api-7f9", "{e}");
    assert_eq!(e["container"]["id"], CONTAINER_ID);

    // Text: the exhausted namespace expanded first, identities on their lines.
    let text = portdoctor(&[
        "check",
        "-A",
        "--color",
        "never",
        "--no-owners",
        "--pods-dir",
        &pods,
    ]);
    assert_eq!(text.code, 2);
    assert!(
        text.stdout
            .contains(&format!("CRITICAL  netns {}", named[0].0.name)),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout
            .contains("pod default/web-1 · containerd 3f2a9c1b8d7e"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("pod payments/api-7f9"),
        "{}",
        text.stdout
    );
    drop((k8s, docker, cgroupfs));
}

/// A user who cannot enter other namespaces gets the own one, notes on what was skipped, and
/// the exit code of the verdict.
#[test]
fn unprivileged_all_namespaces_reports_its_own() {
    require_root!("unprivileged_all_namespaces_reports_its_own");
    let ns = Netns::new("allpriv");
    let bin = env!("CARGO_BIN_EXE_portdoctor");
    let out = common::run_bounded(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin)
            .args(["check", "-A", "--json", "--no-owners"]),
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let code = out.status.code();
    assert!(
        matches!(code, Some(0..=2)),
        "{code:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).expect("JSON");
    let own: Vec<_> = report["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["own"] == true)
        .collect();
    assert_eq!(own.len(), 1);
    let notes = report["namespace_notes"].to_string();
    assert!(
        notes.contains(&ns.name),
        "the test namespace is named as skipped: {notes}"
    );
}

/// The capabilities deploy/kubernetes/daemonset.yaml adds (its `add:` list).
fn daemonset_capabilities() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/daemonset.yaml");
    let text = std::fs::read_to_string(&path).expect("deploy/kubernetes/daemonset.yaml");
    let mut lines = text.lines().skip_while(|l| l.trim() != "add:").skip(1);
    let mut caps = Vec::new();
    while let Some(cap) = lines.next().and_then(|l| l.trim().strip_prefix("- ")) {
        caps.push(cap.to_string());
    }
    caps
}

/// The DaemonSet's capabilities, by experiment: root with exactly those (as a container that
/// drops ALL and adds them) finds a named namespace and one only a pod's process holds, and
/// names the pod; without SYS_PTRACE the process-held one is not seen, without SYS_ADMIN no
/// other namespace can be entered.
#[test]
fn daemonset_capabilities_are_the_least_that_work() {
    const UID: &str = "9d6a4ce1-5b3c-44e5-a6b7-1227f5eec649";
    require_root!("daemonset_capabilities_are_the_least_that_work");
    let caps = daemonset_capabilities();
    assert_eq!(
        caps,
        ["SYS_ADMIN", "SYS_PTRACE"],
        "the DaemonSet's capabilities"
    );
    let dir = tempfile::tempdir().unwrap();
    let named = Netns::new("capn");
    let held = unnamed(dir.path(), "caps", "46000 46099", 7200, 4);
    let _cg = common::Cgroup::new(
        &format!(
            "pdt{}caps/kubepods.slice/kubepods-pod{}.slice/cri-containerd-{DOCKER_ID}.scope",
            std::process::id(),
            UID.replace('-', "_")
        ),
        held.pid,
    );
    let pods = dir.path().join("pods");
    std::fs::create_dir_all(pods.join(format!("kube-system_coredns-1_{UID}"))).unwrap();
    let pods = pods.to_str().unwrap().to_string();
    let bin = env!("CARGO_BIN_EXE_portdoctor");
    let run = |caps: &[&str]| -> Value {
        let mut bounding = String::from("-all");
        for c in caps {
            bounding.push_str(",+");
            bounding.push_str(&c.to_lowercase());
        }
        let out = common::run_bounded(
            Command::new("setpriv")
                .arg(format!("--bounding-set={bounding}"))
                .args(["--inh-caps=-all", "--no-new-privs"])
                .arg(bin)
                .args(["check", "-A", "--json", "--no-owners", "--pods-dir", &pods]),
            Duration::from_secs(60),
        );
        assert!(
            matches!(out.status.code(), Some(0..=2)),
            "{caps:?}: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON")
    };
    let has_named = |r: &Value| {
        r["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["netns"]["name"] == named.name.as_str())
    };
    let held_entry = |r: &Value| {
        r["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| {
                n["pids"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|x| x == held.pid))
            })
            .cloned()
    };

    let caps: Vec<&str> = caps.iter().map(String::as_str).collect();
    let full = run(&caps);
    assert!(has_named(&full), "{caps:?}: {}", full["namespace_notes"]);
    let e = held_entry(&full)
        .unwrap_or_else(|| panic!("{caps:?}: the pod's namespace: {}", full["namespace_notes"]));
    assert_eq!(e["pod"]["name"], "coredns-1", "{e}");
    assert_eq!(pool_in_use(&e, 7200), 4, "{e}");

    let no_ptrace = run(&["SYS_ADMIN"]);
    assert!(has_named(&no_ptrace));
    assert!(
        held_entry(&no_ptrace).is_none(),
        "without SYS_PTRACE a namespace only a process holds is invisible"
    );

    let no_admin = run(&["SYS_PTRACE"]);
    assert!(!has_named(&no_admin) && held_entry(&no_admin).is_none());
    let notes = no_admin["namespace_notes"].to_string();
    assert!(
        notes.contains(&named.name) && notes.contains("CAP_SYS_ADMIN"),
        "{notes}"
    );
    drop(held);
}
