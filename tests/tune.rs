//! `portdoctor tune`: the real binary against real per-namespace sysctls in namespaces each test
//! creates (root needed, like tests/netns.rs), plus pure tests of the planner: property tests
//! (invalid values name the knob and its range; every emitted plan passes validation) and an
//! insta snapshot of the human plan.
//!
//! The host's own namespace is never written: every apply/rollback runs with `--netns`, state
//! and sysctl.d directories are temporary.
#![cfg(target_os = "linux")]

mod common;

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};

use common::{portdoctor, portdoctor_raw, run_ok, str_at, u64_at, Netns};
use portdoctor::fixture::SnapshotBuilder;
use portdoctor::knobs::{Check, KNOBS};
use portdoctor::snapshot::{Os, Snapshot};
use portdoctor::tune::plan::{plan, validate, Goal, Profile};
use portdoctor::tune::render;
use proptest::prelude::*;

macro_rules! require_root {
    ($name:literal) => {
        if !common::require_root($name) {
            return;
        }
    };
}

/// The Linux knobs tune can write, relative to /proc/sys.
const LINUX_KNOBS: [&str; 7] = [
    "net/ipv4/ip_local_port_range",
    "net/ipv4/ip_local_reserved_ports",
    "net/ipv4/tcp_tw_reuse",
    "net/ipv4/tcp_tw_reuse_delay",
    "net/ipv4/tcp_max_tw_buckets",
    "net/ipv4/tcp_fin_timeout",
    "net/ipv4/tcp_timestamps",
];

/// Exact /proc/sys text of every tune knob in the namespace.
fn proc_state(ns: &Netns) -> Vec<(String, String)> {
    LINUX_KNOBS
        .iter()
        .map(|k| ((*k).to_string(), ns.proc_sys_text(k)))
        .collect()
}

struct Dirs {
    state: PathBuf,
    sysctl: PathBuf,
}

impl Dirs {
    fn new(ns: &Netns) -> Dirs {
        let d = Dirs {
            state: ns.path("state"),
            sysctl: ns.path("sysctl.d"),
        };
        fs::create_dir_all(&d.sysctl).expect("sysctl dir");
        d
    }

    fn dropin(&self) -> PathBuf {
        self.sysctl.join("90-portdoctor.conf")
    }

    fn dropin_text(&self) -> Option<String> {
        fs::read_to_string(self.dropin()).ok()
    }

    fn args<'a>(&'a self, ns: &'a Netns) -> Vec<&'a str> {
        vec![
            "--netns",
            &ns.name,
            "--state-dir",
            self.state.to_str().expect("utf-8 path"),
            "--sysctl-dir",
            self.sysctl.to_str().expect("utf-8 path"),
        ]
    }
}

/// Backup files in the state dir (it also holds the lock file).
fn backup_count(d: &Dirs) -> usize {
    fs::read_dir(&d.state)
        .expect("state dir")
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .count()
}

fn out_text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A plan that touches three knobs and the drop-in.
const SETS: [&str; 6] = [
    "--set",
    "net.ipv4.ip_local_port_range=10000 65000",
    "--set",
    "net.ipv4.tcp_tw_reuse=1",
    "--set",
    "net.ipv4.tcp_max_tw_buckets=5000",
];

fn apply(ns: &Netns, d: &Dirs, env: &[(&str, &str)]) -> Output {
    let mut args = vec!["tune", "apply", "--yes"];
    args.extend(SETS);
    args.extend(d.args(ns));
    portdoctor_raw(&args, env)
}

fn rollback(d: &Dirs, extra: &[&str]) -> Output {
    let mut args = vec![
        "tune",
        "rollback",
        "--state-dir",
        d.state.to_str().expect("utf-8 path"),
    ];
    args.extend(extra);
    portdoctor_raw(&args, &[])
}

/// Non-default prior values (tabs and all, as the kernel prints them) and a prior drop-in.
fn prepare(ns: &Netns, d: &Dirs) {
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 40999");
    ns.sysctl("net.ipv4.ip_local_reserved_ports", "40100,40200-40210");
    ns.sysctl("net.ipv4.tcp_max_tw_buckets", "4096");
    fs::write(
        d.dropin(),
        "# kept by the admin\nnet.core.somaxconn = 4096\nnet.ipv4.tcp_tw_reuse = 0\n",
    )
    .expect("prior drop-in");
}

#[test]
fn apply_verify_idempotent_rollback_byte_identical() {
    require_root!("apply_verify_idempotent_rollback_byte_identical");
    let ns = Netns::new("tune-apply");
    let d = Dirs::new(&ns);
    prepare(&ns, &d);
    let before = proc_state(&ns);
    let dropin_before = d.dropin_text();

    // Dry run changes nothing.
    let mut dry = vec!["tune", "apply"];
    dry.extend(SETS);
    dry.extend(d.args(&ns));
    let o = portdoctor_raw(&dry, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", out_text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("dry run"));
    assert_eq!(proc_state(&ns), before);
    assert!(!d.state.exists(), "a dry run writes no backup");

    let o = apply(&ns, &d, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", out_text(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("verified"), "{text}");
    assert!(text.contains("at once, for new connections"), "{text}");
    assert_eq!(
        ns.read_sysctl("net.ipv4.ip_local_port_range"),
        "10000\t65000"
    );
    assert_eq!(ns.read_sysctl("net.ipv4.tcp_tw_reuse"), "1");
    assert_eq!(ns.read_sysctl("net.ipv4.tcp_max_tw_buckets"), "5000");
    let dropin = d.dropin_text().expect("drop-in written");
    assert_eq!(
        dropin,
        "# kept by the admin\nnet.core.somaxconn = 4096\nnet.ipv4.ip_local_port_range = 10000 65000\nnet.ipv4.tcp_tw_reuse = 1\nnet.ipv4.tcp_max_tw_buckets = 5000\n"
    );
    // One backup (the state dir also holds the lock file).
    assert_eq!(backup_count(&d), 1);

    // The same plan again: nothing to do, no new backup.
    let o = apply(&ns, &d, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", out_text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("nothing to change"),
        "{}",
        out_text(&o)
    );
    assert_eq!(backup_count(&d), 1);

    // History shows it.
    let h = portdoctor(&[
        "tune",
        "history",
        "--state-dir",
        d.state.to_str().expect("utf-8"),
    ]);
    assert_eq!(h.code, 0, "{}", h.stderr);
    assert!(
        h.stdout.contains(&ns.name) && h.stdout.contains("applied"),
        "{}",
        h.stdout
    );
    assert!(
        h.stdout.contains("net.ipv4.tcp_tw_reuse: 0 → 1"),
        "{}",
        h.stdout
    );

    let o = rollback(&d, &["--netns", &ns.name]);
    assert_eq!(o.status.code(), Some(0), "{}", out_text(&o));
    assert_eq!(proc_state(&ns), before, "byte-identical prior values");
    assert_eq!(d.dropin_text(), dropin_before, "prior drop-in restored");
    let h = portdoctor(&[
        "tune",
        "history",
        "--json",
        "--state-dir",
        d.state.to_str().expect("utf-8"),
    ]);
    let v: serde_json::Value = serde_json::from_str(&h.stdout).expect("history JSON");
    assert_eq!(str_at(&v, "0.status"), "rolled_back", "{v}");
    // Nothing left to roll back.
    let o = rollback(&d, &[]);
    assert_eq!(o.status.code(), Some(3), "{}", out_text(&o));
}

/// Kill the apply right after each of its writes (backup, every /proc/sys value, drop-in, status);
/// `tune rollback` must restore the exact prior state every time.
#[test]
fn crash_after_every_write_then_rollback_restores() {
    require_root!("crash_after_every_write_then_rollback_restores");
    let ns = Netns::new("tune-crash");
    for (killed, n) in (1..=20u32).enumerate() {
        let d = Dirs::new(&ns);
        prepare(&ns, &d);
        let before = proc_state(&ns);
        let dropin_before = d.dropin_text();
        let o = apply(
            &ns,
            &d,
            &[("PORTDOCTOR_FAULT_AFTER_WRITES", &n.to_string())],
        );
        if o.status.code() == Some(0) {
            // Past the last write: the apply completed. Every step before was covered.
            assert!(
                killed == 6,
                "backup + 3 values + drop-in + status = 6 writes, killed {killed}"
            );
            let r = rollback(&d, &["--netns", &ns.name]);
            assert_eq!(r.status.code(), Some(0), "{}", out_text(&r));
            assert_eq!(proc_state(&ns), before);
            return;
        }
        assert_eq!(
            o.status.code(),
            None,
            "aborted by a signal after write {n}: {}",
            out_text(&o)
        );
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(&format!("after write {n}")),
            "{}",
            out_text(&o)
        );
        let r = rollback(&d, &[]);
        assert_eq!(
            r.status.code(),
            Some(0),
            "rollback after crash at write {n}: {}",
            out_text(&r)
        );
        assert_eq!(proc_state(&ns), before, "crash after write {n}");
        assert_eq!(
            d.dropin_text(),
            dropin_before,
            "drop-in after crash at write {n}"
        );
    }
    panic!("apply never completed within 20 writes");
}

/// Real SIGKILLs at moments spread over a whole apply (collection, backup, values, drop-in,
/// status), not only between writes: after each, `tune rollback` restores the exact prior state
/// (or there was no backup yet and nothing had changed), and no `.tmp-PID` file is left in the
/// state dir or next to the drop-in (issue 21: 28 of 150 such kills used to leave one).
#[test]
fn sigkill_at_any_moment_then_rollback_restores_and_cleans() {
    const TRIALS: u32 = 40;
    require_root!("sigkill_at_any_moment_then_rollback_restores_and_cleans");
    let ns = Netns::new("tune-kill");
    let d = Dirs::new(&ns);
    prepare(&ns, &d);
    let started = std::time::Instant::now();
    let o = apply(&ns, &d, &[]);
    let full = started.elapsed();
    assert_eq!(o.status.code(), Some(0), "{}", out_text(&o));
    let o = rollback(&d, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", out_text(&o));
    let mut rolled_back = 0;
    for i in 0..TRIALS {
        let d = Dirs::new(&ns);
        prepare(&ns, &d);
        let before = proc_state(&ns);
        let dropin_before = d.dropin_text();
        let mut args = vec!["tune", "apply", "--yes"];
        args.extend(SETS);
        args.extend(d.args(&ns));
        let mut child = Command::new(common::PORTDOCTOR)
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("portdoctor");
        std::thread::sleep(full * (2 * i + 1) / (2 * TRIALS));
        let _ = child.kill();
        let _ = child.wait();
        let r = rollback(&d, &[]);
        let err = stderr_of(&r);
        match r.status.code() {
            Some(0) => rolled_back += 1,
            Some(3) if err.contains("no backup to roll back") => {}
            _ => panic!("trial {i}: {}", out_text(&r)),
        }
        assert_eq!(proc_state(&ns), before, "trial {i}");
        assert_eq!(d.dropin_text(), dropin_before, "trial {i}");
        for dir in [&d.state, &d.sysctl] {
            let left: Vec<String> = fs::read_dir(dir)
                .map(|e| {
                    e.flatten()
                        .map(|f| f.file_name().to_string_lossy().into_owned())
                        .filter(|n| n.contains(".tmp-"))
                        .collect()
                })
                .unwrap_or_default();
            assert!(
                left.is_empty(),
                "trial {i}: {left:?} left in {}",
                dir.display()
            );
        }
    }
    eprintln!("{TRIALS} kills over {full:?}: {rolled_back} left a backup to roll back");
}

/// A second `tune apply` or `rollback` while another holds the state lock is refused (exit 3,
/// nothing changed, the holder's pid named); the lock goes with its holder, even one that was
/// killed mid-apply, so the next command runs.
#[test]
fn concurrent_tune_is_refused_and_a_dead_holder_frees_the_lock() {
    require_root!("concurrent_tune_is_refused_and_a_dead_holder_frees_the_lock");
    let ns = Netns::new("tune-lock");
    let d = Dirs::new(&ns);
    prepare(&ns, &d);
    let before = proc_state(&ns);
    let lock = d.state.join("lock");
    // An applied backup, so a rollback has something to do.
    let o = apply(&ns, &d, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", out_text(&o));
    let applied = proc_state(&ns);
    assert_ne!(applied, before);
    // A live holder: flock(1) -o holds the lock itself while `sleep` runs.
    fs::write(&lock, "4242\n").expect("lock file");
    let mut holder = Command::new("flock")
        .arg("-o")
        .arg(&lock)
        .args(["sleep", "30"])
        .spawn()
        .expect("flock(1) from util-linux");
    // Wait until the holder really holds the lock (a rollback before that would succeed and
    // roll back: the race made this test flaky on a loaded machine).
    let locked = common::wait_until(std::time::Duration::from_secs(20), || {
        let free = Command::new("flock")
            .args(["-n"])
            .arg(&lock)
            .arg("true")
            .status()
            .is_ok_and(|s| s.success());
        (!free).then_some(())
    });
    assert!(locked.is_some(), "flock(1) never took the lock");
    let refused = |o: &Output| {
        let err = String::from_utf8_lossy(&o.stderr);
        o.status.code() == Some(3)
            && err.contains("(pid 4242)")
            && err.contains("nothing was changed")
    };
    let held = common::wait_until(std::time::Duration::from_secs(5), || {
        let o = rollback(&d, &[]);
        refused(&o).then_some(o)
    });
    assert!(
        held.is_some(),
        "rollback was never refused while the lock was held"
    );
    let mut args = vec!["tune", "apply", "--yes", "--set", "net.ipv4.tcp_tw_reuse=2"];
    args.extend(d.args(&ns));
    let o = portdoctor_raw(&args, &[]);
    assert!(refused(&o), "{}", out_text(&o));
    assert_eq!(proc_state(&ns), applied, "changed while locked");
    let _ = holder.kill();
    let _ = holder.wait();
    let o = rollback(&d, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", out_text(&o));
    assert_eq!(proc_state(&ns), before);

    // Killed mid-apply (abort after its second write): its lock died with it.
    let o = apply(&ns, &d, &[("PORTDOCTOR_FAULT_AFTER_WRITES", "2")]);
    assert_ne!(o.status.code(), Some(0), "{}", out_text(&o));
    let o = rollback(&d, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", out_text(&o));
    assert_eq!(proc_state(&ns), before);
    // The lock file stays (deleting it would race) and names the last holder.
    assert!(lock.exists());
}

/// The kernel refuses a value our check accepts (range below ip_unprivileged_port_start): clear
/// error, exit 3, nothing changed.
#[test]
fn kernel_refusal_changes_nothing() {
    require_root!("kernel_refusal_changes_nothing");
    let ns = Netns::new("tune-refuse");
    let d = Dirs::new(&ns);
    ns.sysctl("net.ipv4.ip_unprivileged_port_start", "2000");
    let before = proc_state(&ns);
    let mut args = vec![
        "tune",
        "apply",
        "--yes",
        "--set",
        "net.ipv4.ip_local_port_range=1500 65000",
        "--set",
        "net.ipv4.tcp_tw_reuse=1",
    ];
    args.extend(d.args(&ns));
    let o = portdoctor_raw(&args, &[]);
    assert_eq!(o.status.code(), Some(3), "{}", out_text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("refused") && err.contains("ip_local_port_range") && err.contains("restored"),
        "{err}"
    );
    assert_eq!(proc_state(&ns), before);
    assert_eq!(d.dropin_text(), None);
}

/// A write that fails after others succeeded (every position: each /proc/sys value and the
/// drop-in): what was already written is put back before exiting non-zero.
#[test]
fn failed_write_rolls_back_what_changed() {
    require_root!("failed_write_rolls_back_what_changed");
    let ns = Netns::new("tune-fail");
    // Write 1 is the backup; 2-4 the three values; 5 the drop-in.
    for n in 2..=5u32 {
        let d = Dirs::new(&ns);
        prepare(&ns, &d);
        let before = proc_state(&ns);
        let dropin_before = d.dropin_text();
        let o = apply(&ns, &d, &[("PORTDOCTOR_FAULT_FAIL_WRITE", &n.to_string())]);
        assert_eq!(o.status.code(), Some(3), "write {n}: {}", out_text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("restored to the prior values"),
            "write {n}: {}",
            out_text(&o)
        );
        assert_eq!(proc_state(&ns), before, "nothing half-changed (write {n})");
        assert_eq!(d.dropin_text(), dropin_before, "drop-in (write {n})");
        let h = portdoctor(&[
            "tune",
            "history",
            "--state-dir",
            d.state.to_str().expect("utf-8"),
        ]);
        assert!(
            h.stdout.contains("apply_failed_rolled_back"),
            "{}",
            h.stdout
        );
    }
}

/// Unsafe plans are refused before anything is written; a missing knob says so.
#[test]
fn unsafe_plan_is_refused_in_a_namespace() {
    require_root!("unsafe_plan_is_refused_in_a_namespace");
    let ns = Netns::new("tune-unsafe");
    let d = Dirs::new(&ns);
    let (_tw, _) = ns.python_time_wait("127.0.0.1", 20_000, 1);
    let before = proc_state(&ns);
    let mut args = vec![
        "tune",
        "apply",
        "--yes",
        "--set",
        "net.ipv4.ip_local_port_range=10000 65000",
    ];
    args.extend(d.args(&ns));
    let o = portdoctor_raw(&args, &[]);
    assert_eq!(o.status.code(), Some(4), "{}", out_text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("REFUSED") && stdout.contains("20000"),
        "{stdout}"
    );
    assert_eq!(proc_state(&ns), before);
    assert!(!d.state.exists());
}

#[test]
fn apply_needs_root_and_changes_nothing() {
    require_root!("apply_needs_root_and_changes_nothing");
    // As nobody, in the caller's namespace (read-only for nobody anyway): refused before any write.
    let state = tempfile::tempdir().expect("tempdir");
    let host = fs::read_to_string("/proc/sys/net/ipv4/tcp_tw_reuse").expect("tcp_tw_reuse");
    let other = (host.trim().parse::<u8>().unwrap_or(0) + 1) % 3;
    let set = format!("net.ipv4.tcp_tw_reuse={other}");
    let sdir = state.path().join("s");
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(common::PORTDOCTOR)
        .args([
            "tune",
            "apply",
            "--yes",
            "--no-persist",
            "--set",
            &set,
            "--state-dir",
        ])
        .arg(&sdir);
    let o = common::run_bounded(&mut cmd, common::CMD_TIMEOUT);
    assert_eq!(o.status.code(), Some(3), "{}", out_text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("needs root"),
        "{}",
        out_text(&o)
    );
    assert_eq!(
        fs::read_to_string("/proc/sys/net/ipv4/tcp_tw_reuse").expect("read"),
        host
    );
    assert!(!sdir.exists());
}

/// The README story: `check` says critical → `tune plan` → `tune apply --yes` → `check` shows
/// the new capacity → `tune rollback` restores.
#[test]
fn story_check_plan_apply_check_rollback() {
    require_root!("story_check_plan_apply_check_rollback");
    let ns = Netns::new("tune-story");
    let d = Dirs::new(&ns);
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 40099");
    let before = proc_state(&ns);
    let _pop = ns.sockpop(&[
        "--ports",
        "5000",
        "--dst",
        "127.0.0.1",
        "--time-wait",
        "150",
    ]);

    let (report, code) = ns.check_json(&[]);
    assert_eq!(code, 2, "critical first");
    assert_eq!(str_at(&report, "verdict.level"), "critical");
    assert_eq!(u64_at(&report, "capacity.usable_per_pool"), 100);

    let set = ["--set", "net.ipv4.ip_local_port_range=10000 65000"];
    let p = portdoctor(&[&["tune", "plan", "--netns", &ns.name][..], &set].concat());
    assert_eq!(p.code, 0, "{}\n{}", p.stdout, p.stderr);
    assert!(
        p.stdout.contains("40000 40099 → 10000 65000"),
        "{}",
        p.stdout
    );
    assert!(
        p.stdout.contains("100 → 55,001 ports per pool"),
        "{}",
        p.stdout
    );

    let mut args = vec!["tune", "apply", "--yes"];
    args.extend(set);
    args.extend(d.args(&ns));
    let o = portdoctor_raw(&args, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", out_text(&o));

    let (report, code) = ns.check_json(&[]);
    assert_eq!(
        u64_at(&report, "capacity.usable_per_pool"),
        55_001,
        "{report}"
    );
    assert_ne!(str_at(&report, "verdict.level"), "critical", "{report}");
    assert!(code < 2);

    let o = rollback(&d, &["--netns", &ns.name]);
    assert_eq!(o.status.code(), Some(0), "{}", out_text(&o));
    assert_eq!(proc_state(&ns), before);
    let (report, _) = ns.check_json(&[]);
    assert_eq!(u64_at(&report, "capacity.usable_per_pool"), 100);
    assert_eq!(
        d.dropin_text(),
        None,
        "drop-in removed: it did not exist before"
    );
}

/// Every `portdoctor tune apply …` fix that `check` prints for a namespace is a plan that
/// `tune plan` accepts for that same namespace (the fix text is not just prose).
#[test]
fn check_fixes_are_plans_tune_accepts() {
    require_root!("check_fixes_are_plans_tune_accepts");
    let ns = Netns::new("tune-fixes");
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 40099");
    ns.sysctl("net.ipv4.tcp_max_tw_buckets", "50");
    let _pop = ns.sockpop(&[
        "--ports",
        "5000",
        "--dst",
        "127.0.0.1",
        "--time-wait",
        "150",
    ]);
    let (report, _) = ns.check_json(&[]);
    let mut tried = 0;
    let mut by_hand = 0;
    for f in report["verdict"]["findings"].as_array().expect("findings") {
        let fix = f["fix"].as_str().expect("fix text");
        for line in fix.lines() {
            // The by-hand line runs inside the namespace, as printed, and takes effect there.
            if let Some(cmd) = line.strip_prefix("by hand: ") {
                let cmd = &cmd[..cmd.find("  (").unwrap_or(cmd.len())];
                assert!(
                    cmd.starts_with(&format!("ip netns exec {} sysctl -w ", ns.name)),
                    "{cmd}"
                );
                run_ok(Command::new("sh").args(["-c", cmd]));
                let (knob, value) = cmd
                    .rsplit_once(" sysctl -w ")
                    .and_then(|(_, kv)| kv.split_once('='))
                    .expect("sysctl -w KNOB=VALUE");
                let want = value
                    .replace('"', "")
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                let got = ns
                    .read_sysctl(knob)
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                assert_eq!(got, want, "{cmd}");
                by_hand += 1;
                continue;
            }
            let Some(at) = line.find("portdoctor tune apply") else {
                continue;
            };
            let cmd = &line[at..];
            let cmd = &cmd[..cmd.find("  (").unwrap_or(cmd.len())];
            assert!(cmd.contains(&format!("--netns {}", ns.name)), "{cmd}");
            // `--set KNOB=VALUE` with VALUE maybe quoted ("15000 65000").
            let set = cmd
                .split_once("--set ")
                .map(|(_, rest)| rest.trim_end_matches(" --yes").replace('"', ""))
                .expect("a --set in the fix");
            let p = portdoctor(&["tune", "plan", "--netns", &ns.name, "--set", &set]);
            assert_eq!(p.code, 0, "{}: {}\n{}", f["code"], p.stdout, p.stderr);
            tried += 1;
        }
    }
    // range_small, tw_reuse_off, tw_bucket_overflow and the pool's host-wide knob at least.
    assert!(tried >= 3, "only {tried} tune fixes in {report}");
    assert_eq!(
        by_hand, tried,
        "every tune fix has a by-hand line: {report}"
    );
}

// ---------------------------------------------------------------------------------------------
// Nothing lost, nothing forged (issue 21): backups bound to their namespace, verified, data only
// ---------------------------------------------------------------------------------------------

/// `portdoctor ARGS` started inside the namespace (`ip netns exec NAME portdoctor …`), as a user
/// would run it there: without `--netns`.
fn in_ns(ns: &Netns, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = ns.exec(common::PORTDOCTOR);
    cmd.args(args).env_remove("NO_COLOR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    common::run_bounded(&mut cmd, common::CMD_TIMEOUT)
}

/// The id from apply's `backup   ID  (PATH)` line.
fn backup_id(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("backup   "))
        .and_then(|l| l.split_whitespace().next())
        .map_or_else(|| panic!("no backup line: {}", out_text(o)), str::to_string)
}

fn stderr_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn history_json(state: &std::path::Path) -> serde_json::Value {
    let h = portdoctor(&[
        "tune",
        "history",
        "--json",
        "--state-dir",
        state.to_str().expect("utf-8"),
    ]);
    assert_eq!(h.code, 0, "{}", h.stderr);
    serde_json::from_str(&h.stdout).expect("history JSON")
}

/// A mode-0700 state dir made by the test (apply creates it so too when it is missing).
fn make_state_dir(d: &Dirs) {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(&d.state).expect("state dir");
    fs::set_permissions(&d.state, fs::Permissions::from_mode(0o700)).expect("chmod");
}

/// Issue 21 item 1. A backup taken in namespace A (by a user inside it, without `--netns`) is
/// recorded as A's, by inode; rolling it back from B or from the host is refused, naming both,
/// and nothing changes in either; from A it restores A. A namespace re-created under the same
/// name is another namespace.
#[test]
fn a_backup_belongs_to_its_namespace() {
    require_root!("a_backup_belongs_to_its_namespace");
    let ns_a = Netns::new("tune-own-a");
    let ns_b = Netns::new("tune-own-b");
    let state = ns_a.path("state");
    let st = state.to_str().expect("utf-8");
    let a_before = proc_state(&ns_a);
    let b_before = proc_state(&ns_b);
    let o = in_ns(
        &ns_a,
        &[
            "tune",
            "apply",
            "--yes",
            "--no-persist",
            "--set",
            "net.ipv4.ip_local_port_range=10000 65000",
            "--set",
            "net.ipv4.tcp_tw_reuse=1",
            "--state-dir",
            st,
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", out_text(&o));
    let id = backup_id(&o);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!(
            "undo     ip netns exec {} portdoctor tune rollback --id {id} --state-dir {st}",
            ns_a.name
        )),
        "{}",
        out_text(&o)
    );
    let a_applied = proc_state(&ns_a);
    assert_ne!(a_applied, a_before);
    let h = history_json(&state);
    assert_eq!(str_at(&h, "0.namespace.name"), ns_a.name, "{h}");
    assert_eq!(h[0]["namespace"]["initial"], false, "{h}");

    // From B (inside it, as the issue's reproduction did) and from the host: refused.
    let o = in_ns(&ns_b, &["tune", "rollback", "--state-dir", st], &[]);
    assert_eq!(o.status.code(), Some(3), "{}", out_text(&o));
    let err = stderr_of(&o);
    assert!(
        err.contains(&ns_a.name) && err.contains(&ns_b.name) && err.contains("nothing was changed"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "ip netns exec {} portdoctor tune rollback --id {id}",
            ns_a.name
        )),
        "the way out: {err}"
    );
    let o = portdoctor_raw(&["tune", "rollback", "--state-dir", st], &[]);
    assert_eq!(o.status.code(), Some(3), "{}", out_text(&o));
    assert!(
        stderr_of(&o).contains(&ns_a.name) && stderr_of(&o).contains("the host's own namespace"),
        "{}",
        out_text(&o)
    );
    let o = portdoctor_raw(
        &[
            "tune",
            "rollback",
            "--state-dir",
            st,
            "--id",
            &id,
            "--netns",
            &ns_b.name,
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(3), "{}", out_text(&o));
    assert!(
        stderr_of(&o).contains(&ns_a.name) && stderr_of(&o).contains(&ns_b.name),
        "{}",
        out_text(&o)
    );
    assert_eq!(proc_state(&ns_b), b_before, "B untouched");
    assert_eq!(proc_state(&ns_a), a_applied, "A still changed");

    // From A itself it works (`--netns A` from the host would too: same inode).
    let o = in_ns(&ns_a, &["tune", "rollback", "--state-dir", st], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", out_text(&o));
    assert_eq!(proc_state(&ns_a), a_before);

    // Applied with --netns C, then C deleted and re-created: the new C is another namespace.
    let ns_c = Netns::new("tune-own-c");
    let o = portdoctor_raw(
        &[
            "tune",
            "apply",
            "--yes",
            "--no-persist",
            "--set",
            "net.ipv4.tcp_tw_reuse=1",
            "--netns",
            &ns_c.name,
            "--state-dir",
            st,
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", out_text(&o));
    run_ok(Command::new("ip").args(["netns", "del", &ns_c.name]));
    run_ok(Command::new("ip").args(["netns", "add", &ns_c.name]));
    let fresh = ns_c.read_sysctl("net.ipv4.tcp_tw_reuse");
    let o = portdoctor_raw(&["tune", "rollback", "--state-dir", st], &[]);
    assert_eq!(o.status.code(), Some(3), "{}", out_text(&o));
    assert!(
        stderr_of(&o).contains("another namespace"),
        "{}",
        out_text(&o)
    );
    assert_eq!(ns_c.read_sysctl("net.ipv4.tcp_tw_reuse"), fresh);
}

/// Issue 21 item 1. A plan made inside a namespace other than the host's proposes no drop-in,
/// and an apply there (no `--sysctl-dir`) writes none: /etc/sysctl.d is the host's, applied to
/// the host at boot. Tested with /etc/sysctl.d masked by an empty tmpfs in a private mount
/// namespace, so the host's directory is never at risk. On the host a plan still proposes it.
/// A backup whose namespace is gone: rollback names the backup and the way out, `tune forget`
/// retires it (no setting changes), and no later rollback picks it (issue 21 item 9).
#[test]
fn a_backup_of_a_vanished_namespace_names_the_way_out() {
    require_root!("a_backup_of_a_vanished_namespace_names_the_way_out");
    let ns = Netns::new("tune-gone");
    let state = tempfile::tempdir().expect("tempdir");
    let st = state.path().join("state");
    let st = st.to_str().expect("utf-8").to_string();
    let o = portdoctor_raw(
        &[
            "tune",
            "apply",
            "--yes",
            "--netns",
            &ns.name,
            "--set",
            "net.ipv4.tcp_tw_reuse=1",
            "--state-dir",
            &st,
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", out_text(&o));
    let id = backup_id(&o);
    let name = ns.name.clone();
    drop(ns); // deletes the namespace, and its settings with it
    let o = portdoctor_raw(&["tune", "rollback", "--state-dir", &st], &[]);
    assert_eq!(o.status.code(), Some(3), "{}", out_text(&o));
    let err = stderr_of(&o);
    assert!(
        err.contains(&id)
            && err.contains(&name)
            && err.contains(&format!("portdoctor tune forget {id} --state-dir {st}")),
        "{err}"
    );
    let o = portdoctor_raw(&["tune", "forget", &id, "--state-dir", &st], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", out_text(&o));
    let h = history_json(std::path::Path::new(&st));
    assert_eq!(h[0]["status"], "forgotten", "{h}");
    let o = portdoctor_raw(&["tune", "rollback", "--state-dir", &st], &[]);
    assert_eq!(o.status.code(), Some(3), "{}", out_text(&o));
    assert!(
        stderr_of(&o).contains("no backup to roll back"),
        "{}",
        out_text(&o)
    );
    // Forgetting twice, or an id that is not one: refused.
    let o = portdoctor_raw(&["tune", "forget", &id, "--state-dir", &st], &[]);
    assert_eq!(o.status.code(), Some(3), "{}", out_text(&o));
    let o = portdoctor_raw(&["tune", "forget", "../evil", "--state-dir", &st], &[]);
    assert_eq!(o.status.code(), Some(4), "{}", out_text(&o));
}

#[test]
fn a_namespace_never_persists_to_the_hosts_sysctl_d() {
    require_root!("a_namespace_never_persists_to_the_hosts_sysctl_d");
    let a = Netns::new("tune-persist");
    let o = in_ns(
        &a,
        &["tune", "plan", "--json", "--set", "net.ipv4.tcp_tw_reuse=1"],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", out_text(&o));
    let p: serde_json::Value = serde_json::from_slice(&o.stdout).expect("plan JSON");
    assert!(p["dropin"].is_null(), "{p}");
    assert!(
        p["notes"]
            .to_string()
            .contains("not the host's own network namespace"),
        "{p}"
    );
    let o = in_ns(
        &a,
        &["tune", "plan", "--set", "net.ipv4.tcp_tw_reuse=1"],
        &[],
    );
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("90-portdoctor.conf"),
        "{}",
        out_text(&o)
    );

    let state = a.path("state");
    let script = r#"mount -t tmpfs -o size=64k tmpfs /etc/sysctl.d || exit 90
ip netns exec "$1" "$2" tune apply --yes --set net.ipv4.tcp_tw_reuse=1 --state-dir "$3" || exit 91
echo "listing:$(ls -A /etc/sysctl.d)""#;
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(&a.name)
        .arg(common::PORTDOCTOR)
        .arg(&state);
    let o = common::run_bounded(&mut cmd, common::CMD_TIMEOUT);
    assert_eq!(o.status.code(), Some(0), "{}", out_text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("persist  none"), "{out}");
    assert!(
        out.contains("listing:\n") || out.trim_end().ends_with("listing:"),
        "{out}"
    );
    assert_eq!(a.read_sysctl("net.ipv4.tcp_tw_reuse"), "1");

    // The host's own namespace: the default drop-in is still proposed.
    let host = fs::read_to_string("/proc/sys/net/ipv4/tcp_tw_reuse").expect("tcp_tw_reuse");
    let other = (host.trim().parse::<u8>().unwrap_or(0) + 1) % 3;
    let p = portdoctor(&[
        "tune",
        "plan",
        "--json",
        "--set",
        &format!("net.ipv4.tcp_tw_reuse={other}"),
    ]);
    assert_eq!(p.code, 0, "{}", p.stderr);
    let v: serde_json::Value = serde_json::from_str(&p.stdout).expect("plan JSON");
    assert_eq!(
        v["dropin"]["path"], "/etc/sysctl.d/90-portdoctor.conf",
        "{v}"
    );
}

/// Issue 21 item 2. Two applies, the newer backup truncated: rollback refuses (it would leave
/// the newer change applied), names the file and the ways out; `history --json` lists the
/// record as unreadable with the reason. A changed byte in a backup fails its checksum. `--id`
/// of the older one still works.
#[test]
fn an_unreadable_newer_backup_stops_rollback() {
    require_root!("an_unreadable_newer_backup_stops_rollback");
    let ns = Netns::new("tune-unread");
    let d = Dirs::new(&ns);
    prepare(&ns, &d);
    let before = proc_state(&ns);
    let run = |set: &str| {
        let mut args = vec!["tune", "apply", "--yes", "--set", set];
        args.extend(d.args(&ns));
        let o = portdoctor_raw(&args, &[]);
        assert_eq!(o.status.code(), Some(0), "{}", out_text(&o));
        backup_id(&o)
    };
    let older = run("net.ipv4.tcp_tw_reuse=1");
    let newer = run("net.ipv4.ip_local_port_range=10000 65000");
    let applied = proc_state(&ns);
    let newer_file = d.state.join(format!("{newer}.json"));
    let text = fs::read(&newer_file).expect("newer backup");
    fs::write(&newer_file, &text[..text.len() / 2]).expect("truncate");

    let o = rollback(&d, &[]);
    assert_eq!(o.status.code(), Some(3), "{}", out_text(&o));
    let err = stderr_of(&o);
    assert!(
        err.contains(newer_file.to_str().expect("utf-8"))
            && err.contains(&format!("--id {older}"))
            && err.contains("move the unreadable file")
            && err.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!(proc_state(&ns), applied, "nothing restored");

    let h = history_json(&d.state);
    let unread: Vec<&serde_json::Value> = h
        .as_array()
        .expect("array")
        .iter()
        .filter(|r| r["status"] == "unreadable")
        .collect();
    assert_eq!(unread.len(), 1, "{h}");
    assert_eq!(
        unread[0]["file"],
        newer_file.to_str().expect("utf-8"),
        "{h}"
    );
    assert_eq!(unread[0]["id"], newer.as_str(), "{h}");
    assert!(
        unread[0]["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{h}"
    );

    // One changed value in the older backup (still valid JSON): the checksum refuses it.
    let older_file = d.state.join(format!("{older}.json"));
    let good = fs::read_to_string(&older_file).expect("older backup");
    let tampered = good.replace("\"prior\": \"0\\n\"", "\"prior\": \"2\\n\"");
    assert_ne!(
        tampered, good,
        "the prior tcp_tw_reuse value is in the backup"
    );
    fs::write(&older_file, &tampered).expect("tamper");
    let o = rollback(&d, &["--id", &older]);
    assert_eq!(o.status.code(), Some(3), "{}", out_text(&o));
    assert!(stderr_of(&o).contains("checksum"), "{}", out_text(&o));
    assert_eq!(proc_state(&ns), applied);

    // The way out: `--id` of the intact older backup.
    fs::write(&older_file, &good).expect("restore the file");
    let o = rollback(&d, &["--id", &older]);
    assert_eq!(o.status.code(), Some(0), "{}", out_text(&o));
    assert_eq!(ns.read_sysctl("net.ipv4.tcp_tw_reuse"), "0");
    assert_eq!(
        ns.read_sysctl("net.ipv4.ip_local_port_range"),
        "10000\t65000",
        "the newer change is the user's to undo by hand now"
    );
    assert_ne!(proc_state(&ns), before);
}

/// Issue 21 item 3. The state dir runs out of inodes (a 1 MiB tmpfs with 3, mounted in a
/// private mount namespace) after the backup is written, so the status update fails with
/// ENOSPC: apply exits 3 and every one of the 7 values and the drop-in are back as they were.
#[test]
fn a_full_state_dir_leaves_the_prior_state() {
    require_root!("a_full_state_dir_leaves_the_prior_state");
    let ns = Netns::new("tune-full");
    let d = Dirs::new(&ns);
    prepare(&ns, &d);
    ns.sysctl("net.ipv4.tcp_timestamps", "0");
    let before = proc_state(&ns);
    let dropin_before = d.dropin_text();
    make_state_dir(&d);
    let script = r#"mount -t tmpfs -o size=1M,nr_inodes=3,mode=0700 tmpfs "$1" || exit 90
dir=$1; shift
"$@"; rc=$?
echo "left:$(ls -A "$dir" | tr '\n' ' ')"
exit $rc"#;
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(&d.state)
        .arg(common::PORTDOCTOR)
        .args(["tune", "apply", "--yes"])
        .args([
            "--set",
            "net.ipv4.ip_local_port_range=10000 65000",
            "--set",
            "net.ipv4.ip_local_reserved_ports=40100",
            "--set",
            "net.ipv4.tcp_tw_reuse=1",
            "--set",
            "net.ipv4.tcp_tw_reuse_delay=500",
            "--set",
            "net.ipv4.tcp_max_tw_buckets=5000",
            "--set",
            "net.ipv4.tcp_fin_timeout=30",
            "--set",
            "net.ipv4.tcp_timestamps=1",
        ])
        .args(d.args(&ns));
    let o = common::run_bounded(&mut cmd, common::CMD_TIMEOUT);
    assert_eq!(o.status.code(), Some(3), "{}", out_text(&o));
    let err = stderr_of(&o);
    assert!(
        err.contains("No space left on device") && err.contains("restored to the prior values"),
        "{}",
        out_text(&o)
    );
    assert_eq!(proc_state(&ns), before, "all 7 values restored");
    assert_eq!(d.dropin_text(), dropin_before, "drop-in restored");
    // The stale `applying` record is gone (everything is restored; its status could not be
    // written), and no temp file is left.
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("left:lock "),
        "{}",
        out_text(&o)
    );
}

/// Issue 21 item 3. The automatic restore fails too (fault injection: the drop-in write fails,
/// then the first restore write): the backup records `apply_failed_not_restored`, and the
/// command apply prints (`tune rollback --id …`) restores everything.
#[test]
fn a_failed_restore_is_recorded_and_the_printed_command_works() {
    require_root!("a_failed_restore_is_recorded_and_the_printed_command_works");
    let ns = Netns::new("tune-restore");
    let d = Dirs::new(&ns);
    prepare(&ns, &d);
    let before = proc_state(&ns);
    let dropin_before = d.dropin_text();
    // Writes: 1 backup, 2-4 values, 5 drop-in (fails), 6 restore of the first value (fails).
    let o = apply(&ns, &d, &[("PORTDOCTOR_FAULT_FAIL_WRITE", "5,6")]);
    assert_eq!(o.status.code(), Some(3), "{}", out_text(&o));
    let err = stderr_of(&o);
    assert_ne!(
        proc_state(&ns),
        before,
        "the first value stays changed: {err}"
    );
    let h = history_json(&d.state);
    assert_eq!(str_at(&h, "0.status"), "apply_failed_not_restored", "{h}");
    let cmd = err
        .split_once("Run `")
        .and_then(|(_, r)| r.split_once('`'))
        .map_or_else(
            || panic!("no recovery command: {err}"),
            |(c, _)| c.to_string(),
        );
    let words: Vec<&str> = cmd.split_whitespace().collect();
    assert_eq!(&words[..3], ["portdoctor", "tune", "rollback"], "{cmd}");
    let o = portdoctor_raw(&words[1..], &[]);
    assert_eq!(o.status.code(), Some(0), "`{cmd}`: {}", out_text(&o));
    assert_eq!(proc_state(&ns), before);
    assert_eq!(d.dropin_text(), dropin_before);
    let h = history_json(&d.state);
    assert_eq!(str_at(&h, "0.status"), "rolled_back", "{h}");
}

/// Issue 21 item 3. Temp files a killed run left (`.NAME.tmp-PID`, in the state dir and next to
/// the drop-in) are removed by the next apply; a drop-in that is a symbolic link is refused
/// (replacing it by rename would turn it into a file), nothing changed, the link kept.
#[test]
fn leftover_temp_files_are_cleaned_and_a_symlinked_dropin_is_refused() {
    require_root!("leftover_temp_files_are_cleaned_and_a_symlinked_dropin_is_refused");
    let ns = Netns::new("tune-tmp");
    let d = Dirs::new(&ns);
    prepare(&ns, &d);
    let before = proc_state(&ns);
    let mut gone = Command::new("true").spawn().expect("true");
    let dead = gone.id();
    let _ = gone.wait();
    make_state_dir(&d);
    let stale = [
        d.state
            .join(format!(".20261128T045012.210Z.json.tmp-{dead}")),
        d.sysctl.join(format!(".90-portdoctor.conf.tmp-{dead}")),
    ];
    for f in &stale {
        fs::write(f, "{\"half\": ").expect("stale temp file");
    }
    let o = apply(&ns, &d, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", out_text(&o));
    for f in &stale {
        assert!(!f.exists(), "{} left: {}", f.display(), out_text(&o));
    }
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("cleaned"),
        "{}",
        out_text(&o)
    );
    let o = rollback(&d, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", out_text(&o));
    assert_eq!(proc_state(&ns), before);

    let real = ns.path("real.conf");
    fs::write(&real, "net.core.somaxconn = 4096\n").expect("real drop-in");
    fs::remove_file(d.dropin()).expect("remove the prior drop-in");
    std::os::unix::fs::symlink(&real, d.dropin()).expect("symlink");
    let o = apply(&ns, &d, &[]);
    assert_eq!(o.status.code(), Some(3), "{}", out_text(&o));
    assert!(
        stderr_of(&o).contains("symbolic link") && stderr_of(&o).contains("nothing was changed"),
        "{}",
        out_text(&o)
    );
    assert_eq!(proc_state(&ns), before);
    assert!(fs::symlink_metadata(d.dropin())
        .expect("link")
        .file_type()
        .is_symlink());
    assert_eq!(
        fs::read_to_string(&real).expect("real"),
        "net.core.somaxconn = 4096\n"
    );
}

/// Rewrites a backup file through `edit` and seals it again with a valid checksum, as a forger
/// who can write the state dir would: the checks below the checksum must still hold.
fn forge(file: &std::path::Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(file).expect("backup")).expect("backup JSON");
    edit(&mut v);
    let b: portdoctor::tune::backup::Backup = serde_json::from_value(v).expect("still a backup");
    fs::write(file, b.sealed_text()).expect("forged backup");
}

/// Issue 21 item 4. A backup is data: a stored `path` that is not the knob's /proc/sys file, or
/// a drop-in path outside `DIR/90-portdoctor.conf`, or an id that is not the generated kind,
/// is refused even with a valid checksum, and nothing outside is written; `--id ../x` is a
/// usage error. The state dir is created 0700; a world-writable or foreign-owned one is
/// refused.
#[test]
fn forged_backups_and_unsafe_state_dirs_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    require_root!("forged_backups_and_unsafe_state_dirs_are_refused");
    let ns = Netns::new("tune-forge");
    let d = Dirs::new(&ns);
    prepare(&ns, &d);
    let victim = ns.path("victim");
    fs::create_dir_all(&victim).expect("victim dir");
    let target = victim.join("target.txt");
    fs::write(&target, "precious\n").expect("victim file");
    let o = apply(&ns, &d, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", out_text(&o));
    assert_eq!(
        fs::metadata(&d.state)
            .expect("state dir")
            .permissions()
            .mode()
            & 0o7777,
        0o700,
        "state dir created 0700"
    );
    let id = backup_id(&o);
    let file = d.state.join(format!("{id}.json"));
    let good = fs::read_to_string(&file).expect("backup");
    let applied = proc_state(&ns);
    let refused = |o: &Output, what: &str| {
        assert_eq!(o.status.code(), Some(3), "{what}: {}", out_text(o));
        assert_eq!(proc_state(&ns), applied, "{what}: nothing restored");
        assert_eq!(
            fs::read_to_string(&target).expect("victim"),
            "precious\n",
            "{what}"
        );
    };

    let t = target.to_str().expect("utf-8").to_string();
    forge(&file, |v| v["values"][0]["path"] = t.clone().into());
    let o = rollback(&d, &[]);
    refused(&o, "value path");
    assert!(
        stderr_of(&o).contains("paths do not match"),
        "{}",
        out_text(&o)
    );

    fs::write(&file, &good).expect("put back");
    let escape = format!(
        "{}/../{}/90-portdoctor.conf",
        d.sysctl.display(),
        victim.display()
    );
    forge(&file, |v| v["dropin"]["path"] = escape.clone().into());
    let o = rollback(&d, &[]);
    refused(&o, "drop-in path");
    assert!(
        stderr_of(&o).contains("paths do not match"),
        "{}",
        out_text(&o)
    );

    fs::write(&file, &good).expect("put back");
    let evil = format!("{}/evil", victim.display());
    forge(&file, |v| v["id"] = evil.clone().into());
    let o = rollback(&d, &[]);
    refused(&o, "id");
    assert!(!victim.join("evil.json").exists());
    let o = rollback(&d, &["--id", &format!("../{}", victim.display())]);
    assert_eq!(o.status.code(), Some(4), "{}", out_text(&o));
    assert!(
        stderr_of(&o).contains("not a backup id"),
        "{}",
        out_text(&o)
    );

    // Unsafe state dirs: refused by apply and rollback alike, nothing changed.
    fs::write(&file, &good).expect("put back");
    fs::set_permissions(&d.state, fs::Permissions::from_mode(0o777)).expect("chmod 777");
    let o = rollback(&d, &[]);
    refused(&o, "world-writable");
    assert!(
        stderr_of(&o).contains("writable by everyone"),
        "{}",
        out_text(&o)
    );
    let mut args = vec!["tune", "apply", "--yes", "--set", "net.ipv4.tcp_tw_reuse=2"];
    args.extend(d.args(&ns));
    let o = portdoctor_raw(&args, &[]);
    refused(&o, "world-writable apply");
    fs::set_permissions(&d.state, fs::Permissions::from_mode(0o700)).expect("chmod 700");
    std::os::unix::fs::chown(&d.state, Some(65534), None).expect("chown");
    let o = rollback(&d, &[]);
    refused(&o, "foreign-owned");
    assert!(
        stderr_of(&o).contains("owned by uid 65534"),
        "{}",
        out_text(&o)
    );
    std::os::unix::fs::chown(&d.state, Some(0), None).expect("chown back");
    let o = rollback(&d, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", out_text(&o));
}

// ---------------------------------------------------------------------------------------------
// Pure: property tests and the plan snapshot (no root needed)
// ---------------------------------------------------------------------------------------------

/// Values a check must reject.
fn invalid_values(check: Check) -> BoxedStrategy<String> {
    let garbage = prop_oneof![
        Just(String::new()),
        "[a-z]{1,6}".prop_map(|s| s),
        Just("-1".to_string()),
        Just("1.5".to_string()),
    ];
    match check {
        Check::Int { min, max } => {
            let mut s = vec![garbage.boxed()];
            if max < u64::MAX {
                s.push(
                    ((max + 1)..=max.saturating_add(1_000_000))
                        .prop_map(|v| v.to_string())
                        .boxed(),
                );
            }
            if min > 0 {
                s.push((0..min).prop_map(|v| v.to_string()).boxed());
            }
            proptest::strategy::Union::new(s).boxed()
        }
        Check::Dword { min, max, pow2 } => {
            let mut s = vec![garbage.boxed(), Just("4294967296".to_string()).boxed()];
            if max < u32::MAX {
                s.push(((max + 1)..=u32::MAX).prop_map(|v| v.to_string()).boxed());
            }
            if min > 0 {
                s.push((0..min).prop_map(|v| v.to_string()).boxed());
            }
            if pow2 {
                s.push(
                    (min..=max)
                        .prop_filter("not a power of 2", |v| !v.is_power_of_two())
                        .prop_map(|v| v.to_string())
                        .boxed(),
                );
            }
            proptest::strategy::Union::new(s).boxed()
        }
        Check::PortRange { min, max } => prop_oneof![
            garbage,
            (0..min).prop_map(move |lo| format!("{lo} {max}")),
            (min..=max, min..=max)
                .prop_filter("low > high", |(a, b)| a > b)
                .prop_map(|(a, b)| format!("{a} {b}")),
            (65_536u32..100_000).prop_map(move |hi| format!("{min} {hi}")),
            (min..=max).prop_map(|p| p.to_string()),
            (min..=max).prop_map(|p| format!("{p} {p} {p}")),
        ]
        .boxed(),
        Check::PortList => prop_oneof![
            "[a-z]{1,6}".prop_map(|s| s),
            (65_536u32..100_000).prop_map(|p| p.to_string()),
            Just("0".to_string()),
            (2u16..=65_535)
                .prop_flat_map(|b| (b..=65_535, Just(b)))
                .prop_filter("backwards", |(a, b)| a > b)
                .prop_map(|(a, b)| format!("{a}-{b}")),
        ]
        .boxed(),
        Check::StartNum { min_start, min_num } => {
            let mut s = vec![
                garbage.boxed(),
                (0..min_start)
                    .prop_map(move |st| format!("start={st} num={}", min_num.max(255)))
                    .boxed(),
                (min_start..=65_535)
                    .prop_map(|st| format!("start={st} num={}", 65_537 - u32::from(st)))
                    .boxed(),
            ];
            if min_num > 0 {
                s.push(
                    (0..min_num)
                        .prop_map(move |n| format!("start={min_start} num={n}"))
                        .boxed(),
                );
            }
            proptest::strategy::Union::new(s).boxed()
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every knob rejects invalid values with an error naming the knob and its valid range,
    /// directly and through `tune plan`'s --set.
    #[test]
    fn invalid_set_values_name_the_knob_and_range(
        (i, v) in (0..KNOBS.len()).prop_flat_map(|i| (Just(i), invalid_values(KNOBS[i].check())))
    ) {
        let k = &KNOBS[i];
        let e = k.validate(&v);
        prop_assert!(e.is_err(), "{} accepted {v:?}", k.id);
        let msg = e.err().map(|e| e.to_string()).unwrap_or_default();
        prop_assert!(msg.contains(k.id), "{msg}");
        prop_assert!(msg.contains(&k.check().describe()), "{msg}");
        prop_assert!(msg.contains(k.valid), "{msg}");
        let snap = match k.os {
            Os::Linux => SnapshotBuilder::linux().build(),
            Os::Windows => SnapshotBuilder::windows().build(),
        };
        let goal = Goal { sets: vec![(k.id.to_string(), v.clone())], ..Goal::default() };
        let pe = plan(&snap, &goal).err().map(|e| e.to_string()).unwrap_or_default();
        prop_assert!(pe.contains(k.id) && pe.contains(&k.check().describe()), "{pe}");
    }

    /// Every Linux plan that `plan` emits without refusals passes validation again, its values
    /// round-trip through the knob checks, and a target rate it accepts is met.
    #[test]
    fn every_emitted_plan_passes_validation(
        snap in fixture_snapshot(),
        profile in proptest::option::of(prop_oneof![
            Just(Profile::ClientHeavy), Just(Profile::Proxy), Just(Profile::Conservative)
        ]),
        rate in proptest::option::of(1.0f64..5000.0),
        lifetime in prop_oneof![Just(0.0), 0.0f64..5.0],
    ) {
        let goal = Goal { sets: Vec::new(), profile, target_rate_per_s: rate, lifetime_seconds: lifetime };
        prop_assume!(!goal.is_empty());
        let p = plan(&snap, &goal).expect("profiles and rates always plan");
        if profile.is_some() && rate.is_none() {
            prop_assert!(!p.is_refused(), "profile plans are never refused: {:?}", p.refusals);
        }
        if !p.is_refused() {
            let (refusals, _) = validate(&snap, &p.changes);
            prop_assert!(refusals.is_empty(), "{refusals:?} for {:#?}", p.changes);
            for c in &p.changes {
                let k = portdoctor::knobs::knob(c.knob).expect("known knob");
                prop_assert_eq!(k.validate(&c.proposed).ok(), Some(c.value.clone()));
            }
            if let Some(r) = rate {
                let got = p.capacity_after.rate_per_pool_per_s.unwrap_or(0.0);
                prop_assert!(got + 1e-9 >= r, "target {r}/s, plan gives {got}/s");
            }
        }
    }
}

/// Linux fixtures: random range, listeners (some inside the range), reuse and timestamps.
fn fixture_snapshot() -> impl Strategy<Value = Snapshot> {
    (
        (1024u16..40_000).prop_flat_map(|lo| (Just(lo), lo..=65_535)),
        proptest::collection::vec(1u16..=65_535, 0..6),
        0u8..=2,
        0u8..=2,
        proptest::option::of((1024u16..65_535).prop_map(|p| (p, p.saturating_add(5)))),
    )
        .prop_map(|((lo, hi), listeners, reuse, ts, reserved)| {
            let mut b = SnapshotBuilder::linux()
                .range(lo, hi)
                .tw_reuse(reuse)
                .timestamps(ts);
            if let Some((a, z)) = reserved {
                b = b.reserved(a, z);
            }
            for p in listeners {
                b = b.listen("0.0.0.0", p);
            }
            b.build()
        })
}

#[test]
fn plan_human_output_snapshot() {
    let snap = SnapshotBuilder::linux()
        .tw_reuse(0)
        .pool("10.0.0.5", "10.0.0.9", 5432, 300, 27_110, (0, 59_000))
        .listen("0.0.0.0", 8080)
        .listen("127.0.0.1", 45000)
        .build();
    let goal = Goal {
        sets: vec![("net.ipv4.tcp_fin_timeout".into(), "30".into())],
        profile: Some(Profile::ClientHeavy),
        ..Goal::default()
    };
    let p = plan(&snap, &goal).expect("plans");
    insta::assert_snapshot!(render::plan_text(
        &p,
        Some(
            "portdoctor tune apply --profile client-heavy --set net.ipv4.tcp_fin_timeout=30 --yes"
        )
    ));
}

#[test]
fn plan_json_has_the_schema_and_commands() {
    let snap = SnapshotBuilder::linux().build();
    let goal = Goal {
        sets: vec![("net.ipv4.ip_local_port_range".into(), "10000 65000".into())],
        ..Goal::default()
    };
    let p = plan(&snap, &goal).expect("plans");
    let v = serde_json::to_value(&p).expect("JSON");
    assert_eq!(v["schema"], "portdoctor.tune-plan/v1");
    assert_eq!(v["changes"][0]["current"], "32768 60999");
    assert_eq!(v["changes"][0]["capacity_after"]["usable_ports"], 55_001);
    assert_eq!(
        v["dropin"]["lines"][0],
        "net.ipv4.ip_local_port_range = 10000 65000"
    );
}

/// Windows plan on a Hyper-V host (exclusions inside the range): exact netsh / reg.exe commands,
/// undo commands, reboot note. Rendered from a fixture, so it runs on Linux.
#[test]
fn windows_plan_human_output_snapshot() {
    use portdoctor::snapshot::ExcludedRange;
    let snap = SnapshotBuilder::windows()
        .windows_settings(|w| {
            w.excluded_ports_v4 = vec![ExcludedRange {
                low: 49671,
                high: 49770,
                administered: false,
            }];
        })
        .listen("0.0.0.0", 443)
        .build();
    let goal = Goal {
        profile: Some(Profile::Conservative),
        sets: vec![("tcpip.TcpTimedWaitDelay".into(), "30".into())],
        ..Goal::default()
    };
    let p = plan(&snap, &goal).expect("plans");
    assert!(!p.is_refused(), "{:?}", p.refusals);
    insta::assert_snapshot!(render::plan_text(&p, None));
}

/// The binary's contract for plans: usage errors exit 4 naming the knob and range; `--json`
/// carries the schema. Reads the caller's namespace only (a plan never writes).
#[test]
fn plan_cli_usage_errors_and_json() {
    let bad = portdoctor(&["tune", "plan", "--set", "net.ipv4.tcp_tw_reuse=7"]);
    assert_eq!(bad.code, 4, "{}", bad.stderr);
    assert!(
        bad.stderr.contains("net.ipv4.tcp_tw_reuse") && bad.stderr.contains("0..=2"),
        "{}",
        bad.stderr
    );
    let none = portdoctor(&["tune", "plan"]);
    assert_eq!(none.code, 4, "{}", none.stderr);
    let unknown = portdoctor(&["tune", "plan", "--set", "net.ipv4.tcp_tw_recycle=1"]);
    assert_eq!(unknown.code, 4);
    assert!(
        unknown.stderr.contains("unknown knob"),
        "{}",
        unknown.stderr
    );
    let twice = portdoctor(&[
        "tune",
        "plan",
        "--set",
        "tcp_tw_reuse=1",
        "--set",
        "net.ipv4.tcp_tw_reuse=0",
    ]);
    assert_eq!(twice.code, 4);
    let ok = portdoctor(&["tune", "plan", "--json", "--profile", "conservative"]);
    assert!(ok.code == 0 || ok.code == 4, "{}", ok.stderr);
    let v: serde_json::Value = serde_json::from_str(&ok.stdout).expect("plan JSON");
    assert_eq!(v["schema"], "portdoctor.tune-plan/v1");
    assert_eq!(v["os"], "linux");
    assert!(v["capacity_before"]["usable_ports"].is_u64(), "{v}");
}
