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
