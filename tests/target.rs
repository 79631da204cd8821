//! The inspection target (`--netns`, `--pid`): one set of options for every command, a
//! namespace opened once and kept, and hostile entries under /run/netns refused quickly.

#![cfg(target_os = "linux")]

mod common;

use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use portdoctor::collect::linux::LinuxCollector;
use portdoctor::collect::{CollectOptions, Collector, SourcePreference, Target};

use common::{portdoctor, require_root, run_bounded, Netns};

macro_rules! require_root {
    ($name:expr) => {
        if !require_root($name) {
            return;
        }
    };
}

/// Whether this build has COMMAND (`top` and `serve` are optional features).
fn built(command: &str) -> bool {
    let optional = [
        ("top", cfg!(feature = "top")),
        ("serve", cfg!(feature = "serve")),
    ];
    optional
        .iter()
        .find(|(name, _)| *name == command)
        .is_none_or(|(_, on)| *on)
}

/// A file planted under /run/netns, removed when dropped.
struct Planted(PathBuf);

impl Drop for Planted {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A FIFO or a plain file under /run/netns is no namespace: every command says so at once
/// (the FIFO hung `check` forever when it was opened blocking), exit 3, without the
/// privileges hint that would send the user the wrong way.
#[test]
fn hostile_entries_under_run_netns_fail_fast() {
    require_root!("hostile_entries_under_run_netns_fail_fast");
    // `ip netns add` creates /run/netns; make sure it exists without depending on that.
    let _ns = Netns::new("hostile");
    let fifo = Planted(PathBuf::from(format!(
        "/run/netns/pdt-{}-fifo",
        std::process::id()
    )));
    let plain = Planted(PathBuf::from(format!(
        "/run/netns/pdt-{}-plain",
        std::process::id()
    )));
    let status = Command::new("mkfifo")
        .arg(&fifo.0)
        .status()
        .expect("running mkfifo");
    assert!(status.success());
    assert!(std::fs::metadata(&fifo.0).unwrap().file_type().is_fifo());
    std::fs::write(&plain.0, b"not a namespace\n").unwrap();

    let bin = env!("CARGO_BIN_EXE_portdoctor");
    for entry in [&fifo, &plain] {
        let name = entry.0.file_name().unwrap().to_str().unwrap().to_string();
        let textfile = tempfile::tempdir().unwrap();
        let textfile = textfile.path().to_str().unwrap().to_string();
        for args in [
            vec!["check", "--netns", &name],
            vec!["top", "--once", "--netns", &name],
            vec![
                "tune",
                "plan",
                "--set",
                "net.ipv4.tcp_tw_reuse=1",
                "--netns",
                &name,
            ],
            vec!["capacity", "--from-host", "--netns", &name],
            vec!["serve", "--textfile", &textfile, "--netns", &name],
        ] {
            if !built(args[0]) {
                continue;
            }
            let t0 = Instant::now();
            let out = run_bounded(Command::new(bin).args(&args), Duration::from_secs(20));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                t0.elapsed() < Duration::from_secs(15),
                "{args:?} took {:?}",
                t0.elapsed()
            );
            assert_eq!(out.status.code(), Some(3), "{args:?}: {stderr}");
            assert!(
                stderr.contains("is not a network namespace"),
                "{args:?}: {stderr}"
            );
            assert!(!stderr.contains("CAP_SYS_ADMIN"), "{args:?}: {stderr}");
        }
    }
}

/// A process that only sleeps inside NS (the one `--pid` will name), once it is inside.
fn sleeper_in(ns: &Netns) -> common::Background {
    let mut cmd = ns.exec("sleep");
    cmd.arg("60");
    let sleeper = ns.spawn("sleeper", cmd);
    // `ip netns exec` enters the namespace, then execs: wait until the process is inside.
    let pid = sleeper.pid;
    common::wait_until(Duration::from_secs(10), || {
        ns.pids().contains(&pid).then_some(())
    })
    .expect("the sleeper enters the namespace");
    sleeper
}

/// A collector built for `--pid` keeps reading the namespace after that process exits (it
/// holds the namespace open) and says so in a note; before, every later collection failed
/// with "process not found" although the namespace and its sockets were still there.
#[test]
fn pid_target_outlives_its_process() {
    require_root!("pid_target_outlives_its_process");
    let ns = Netns::new("outlive");
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 40999");
    let mut pop = ns.sockpop(&["--ports", "20000", "--established", "25"]);
    let mut sleeper = sleeper_in(&ns);
    let pid = sleeper.pid;

    // setns moves only the calling thread: collect on a thread of its own.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let collecting = thread::spawn(move || {
        let collector = LinuxCollector::new(CollectOptions {
            source: SourcePreference::Netlink,
            owners: false,
            target: Target::Process(pid),
        })
        .expect("opening the namespace of a live process");
        let before = collector.snapshot().expect("first snapshot");
        rx.recv().expect("waiting for the process to exit");
        let after = collector
            .snapshot()
            .expect("snapshot after the process exited");
        (before, after)
    });
    // Let the first snapshot happen, then end the process that led to the namespace.
    thread::sleep(Duration::from_millis(300));
    sleeper.stop();
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the process is gone"
    );
    tx.send(()).unwrap();
    let (before, after) = collecting.join().expect("collector thread");

    let established = |s: &portdoctor::snapshot::Snapshot| {
        s.sockets
            .iter()
            .filter(|s| {
                s.state == portdoctor::snapshot::TcpState::Established && s.remote_port == 20000
            })
            .count()
    };
    assert_eq!(established(&before), 25);
    assert_eq!(established(&after), 25, "still the namespace's sockets");
    assert_eq!(before.host.netns_id, after.host.netns_id);
    assert_eq!(before.host.target, Target::Process(pid));
    assert!(
        !before.notes.iter().any(|n| n.contains("has exited")),
        "{:?}",
        before.notes
    );
    assert!(
        after
            .notes
            .iter()
            .any(|n| n.contains(&format!("process {pid} has exited"))),
        "{:?}",
        after.notes
    );
    assert_eq!(pop.stop(), Some(0));
}

/// `serve --pid` (textfile loop) keeps exporting the namespace after the process exits.
#[cfg(feature = "serve")]
#[test]
fn serve_pid_keeps_exporting_after_the_process_exits() {
    require_root!("serve_pid_keeps_exporting_after_the_process_exits");
    let ns = Netns::new("servepid");
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 40999");
    let mut pop = ns.sockpop(&["--ports", "20001", "--established", "30"]);
    let mut sleeper = sleeper_in(&ns);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("portdoctor.prom");
    let mut serve = Command::new(env!("CARGO_BIN_EXE_portdoctor"));
    serve
        .args([
            "serve",
            "--loop",
            "200ms",
            "--pid",
            &sleeper.pid.to_string(),
        ])
        .arg("--textfile")
        .arg(dir.path());
    // Started in the host namespace: only its collections enter the target.
    let mut serve = ns.spawn("serve", serve);
    let first = serve.wait_for_file(&file, Duration::from_secs(20));
    assert!(first.contains("portdoctor_collection_success 1"), "{first}");
    sleeper.stop();
    // Wait for a file written after the exit (the loop rewrites it every 200 ms).
    let exited_at = std::time::SystemTime::now();
    let text = common::wait_until(Duration::from_secs(10), || {
        let modified = std::fs::metadata(&file).ok()?.modified().ok()?;
        (modified > exited_at + Duration::from_millis(500))
            .then(|| std::fs::read_to_string(&file).ok())
            .flatten()
    })
    .expect("serve kept writing the textfile");
    assert!(
        text.contains("portdoctor_collection_success 1"),
        "collections fail after the process exited:\n{text}\n{}",
        serve.stderr()
    );
    assert!(text.contains("remote_port=\"20001\""), "{text}");
    serve.stop();
    assert_eq!(pop.stop(), Some(0));
}

/// Every command that inspects a host takes the same target options with the same checks.
#[test]
fn every_inspecting_command_takes_the_same_target_options() {
    for cmd in [
        &["check"][..],
        &["top"][..],
        &["serve"][..],
        &["capacity"][..],
        &["tune", "plan"][..],
        &["tune", "apply"][..],
    ] {
        if !built(cmd[0]) {
            continue;
        }
        let mut args = cmd.to_vec();
        args.push("--help");
        let run = portdoctor(&args);
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        for opt in [
            "--netns <NAME>",
            "--pid <PID>",
            "--source <SOURCE>",
            "--no-owners",
        ] {
            assert!(
                run.stdout.contains(opt),
                "{args:?} lacks {opt}:\n{}",
                run.stdout
            );
        }
        // The same validation everywhere: both at once is refused by clap, pid 0 too.
        let mut both = cmd.to_vec();
        both.extend(["--netns", "a", "--pid", "1"]);
        assert_eq!(portdoctor(&both).code, 4, "{both:?}");
        let mut zero = cmd.to_vec();
        zero.extend(["--pid", "0"]);
        assert_eq!(portdoctor(&zero).code, 4, "{zero:?}");
    }
    for cmd in [&["check"][..], &["top"][..], &["serve"][..]] {
        if !built(cmd[0]) {
            continue;
        }
        let mut args = cmd.to_vec();
        args.push("--help");
        let run = portdoctor(&args);
        for opt in ["--warn <RATIO>", "--crit <RATIO>", "--eta <DURATION>"] {
            assert!(run.stdout.contains(opt), "{args:?} lacks {opt}");
        }
        let mut bad = cmd.to_vec();
        bad.extend(["--warn", "0.95", "--crit", "0.9"]);
        if cmd == ["top"] {
            bad.push("--once");
        }
        if cmd == ["serve"] {
            bad.extend(["--textfile", "/nonexistent-dir"]);
        }
        let run = portdoctor(&bad);
        assert_eq!(run.code, 4, "{bad:?}: {}", run.stderr);
        assert!(run.stderr.contains("--warn"), "{bad:?}: {}", run.stderr);
    }
}
