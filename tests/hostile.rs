//! Hostile input: names other processes choose, and extreme values on the command line.

#![cfg(target_os = "linux")]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{portdoctor, python, require_root, run_bounded, Netns};

macro_rules! require_root {
    ($name:expr) => {
        if !require_root($name) {
            return;
        }
    };
}

/// Names itself with terminal escape sequences (prctl PR_SET_NAME), holds 12 connections to a
/// listener of its own and writes OUT when ready.
const EVIL_NAME_PY: &str = r#"
import ctypes, socket, sys, time
libc = ctypes.CDLL(None)
libc.prctl(15, b"\x1b]0;PWNED\x07\x1b[2J\xe2\x80\xae", 0, 0, 0)
srv = socket.socket(); srv.bind(("127.0.0.1", 20077)); srv.listen(64)
held = []
for _ in range(12):
    c = socket.create_connection(("127.0.0.1", 20077)); a, _ = srv.accept(); held += [c, a]
open(sys.argv[1], "w").write("ready")
time.sleep(float(sys.argv[2]))
"#;

/// A process that names itself with escape sequences shows up escaped in every human output,
/// and raw bytes never reach the terminal (before: `check --color never` printed them raw).
#[test]
fn hostile_process_names_are_escaped_in_human_output() {
    require_root!("hostile_process_names_are_escaped_in_human_output");
    let ns = Netns::new("evilname");
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 40019");
    let ready = ns.path("evil-ready");
    let mut cmd = ns.exec(python());
    cmd.args(["-c", EVIL_NAME_PY]).arg(&ready).arg("30");
    let mut evil = ns.spawn("evil", cmd);
    evil.wait_for_file(&ready, Duration::from_secs(20));

    let mut outputs = vec![(
        "check",
        portdoctor(&[
            "check", "--netns", &ns.name, "--color", "never", "--top", "0",
        ]),
    )];
    if cfg!(feature = "top") {
        outputs.push(("top", portdoctor(&["top", "--once", "--netns", &ns.name])));
    }
    for (what, run) in outputs {
        assert!(run.code <= 2, "{what}: {}", run.stderr);
        assert!(
            !run.stdout.contains('\u{1b}') && !run.stdout.contains('\u{7}'),
            "{what} printed raw control characters:\n{:?}",
            run.stdout
        );
        assert!(!run.stdout.contains('\u{202e}'), "{what}: bidi override");
        assert!(
            run.stdout.contains(r"\x1b]0;PWNE"),
            "{what} should show the name escaped:\n{}",
            run.stdout
        );
    }
    // JSON carries the same (escaped) name.
    let (report, _) = ns.check_json(&[]);
    assert!(report.to_string().contains(r"\\x1b]0;PWNED"), "{report}");
    evil.stop();
}

/// Extreme values for every numeric and duration option: never a panic, never an exit code
/// outside 0–4, and out-of-range values are usage errors (exit 4) that name the option.
#[test]
fn extreme_option_values_never_panic() {
    const EXTREMES: &[&str] = &[
        "0",
        "-1",
        "1e308",
        "1e308h",
        "1e20",
        "inf",
        "NaN",
        "18446744073709551616",
        "4294967296",
        "1e-320",
        "",
        "99999999999999999999ms",
    ];
    let textfile = tempfile::tempdir().unwrap();
    let textfile = textfile.path().to_str().unwrap().to_string();
    // (command, extra arguments that keep the run short, options under test)
    let mut table: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["check", "--no-owners"],
            vec!["--warn", "--crit", "--eta", "--top", "--pid"],
        ),
        (
            vec!["capacity"],
            vec![
                "--rate",
                "--lifetime",
                "--time-wait",
                "--bound",
                "--destinations",
                "--source-ips",
                "--keepalive",
                "--tw-reuse",
                "--tw-reuse-delay",
            ],
        ),
        (
            vec!["tune", "plan", "--target-rate", "1000/s"],
            vec!["--lifetime"],
        ),
        (
            vec!["tune", "plan", "--lifetime", "10ms"],
            vec!["--target-rate"],
        ),
    ];
    if cfg!(feature = "serve") {
        table.push((
            vec!["serve", "--textfile", &textfile],
            vec![
                "--min-interval",
                "--header-timeout",
                "--request-timeout",
                "--max-pools",
                "--max-connections",
                "--warn",
                "--crit",
                "--eta",
            ],
        ));
    }
    if cfg!(feature = "top") {
        table.push((vec!["top", "--once", "--no-owners"], vec!["--interval"]));
    }
    for (prefix, options) in &table {
        for opt in options {
            for value in EXTREMES {
                let mut args = prefix.clone();
                let arg = format!("{opt}={value}");
                args.push(&arg);
                let out = run_bounded(
                    Command::new(env!("CARGO_BIN_EXE_portdoctor")).args(&args),
                    Duration::from_secs(30),
                );
                let stderr = String::from_utf8_lossy(&out.stderr);
                let code = out.status.code();
                assert!(
                    matches!(code, Some(0..=4)),
                    "{args:?}: exit {:?}\n{stderr}",
                    out.status
                );
                assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
                if code == Some(4) {
                    assert!(
                        stderr.contains(opt.trim_start_matches('-')),
                        "{args:?}: the error should name the option: {stderr}"
                    );
                }
            }
        }
    }
    // Values that used to slip through as infinity or absurd answers are refused.
    for args in [
        &["capacity", "--rate", "3000", "--lifetime", "1e308h"][..],
        &[
            "tune",
            "plan",
            "--target-rate",
            "1000/s",
            "--lifetime",
            "1e308h",
        ][..],
        &["capacity", "--rate", "1e308"][..],
    ] {
        let run = portdoctor(args);
        assert_eq!(run.code, 4, "{args:?}: {}\n{}", run.stdout, run.stderr);
    }
    if cfg!(feature = "serve") {
        for opt in ["--min-interval", "--header-timeout", "--request-timeout"] {
            let run = portdoctor(&["serve", "--textfile", &textfile, opt, "1e20"]);
            assert_eq!(run.code, 4, "{opt}: {}", run.stderr);
        }
    }
}

/// Writing to a full device is an error message and exit 3, not a panic.
#[test]
fn full_stdout_is_an_error_not_a_panic() {
    for args in [
        &["completions", "bash"][..],
        &["man"][..],
        &["capacity", "--rate", "100"][..],
        &["check", "--no-owners"][..],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_portdoctor"))
            .args(args)
            .stdout(std::fs::File::create("/dev/full").unwrap())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(stderr.contains("stdout"), "{args:?}: {stderr}");
    }
}

/// With `--json`, exits 3 and 4 also print one JSON error object on stdout, so scripts that
/// parse stdout learn what went wrong.
#[test]
fn json_errors_on_stdout() {
    let missing = format!("pdt-{}-no-such-namespace", std::process::id());
    let mut cases = vec![
        (vec!["check", "--json", "--warn", "2"], 4, "usage"),
        (vec!["check", "--json", "--bogus"], 4, "usage"),
        (vec!["check", "--json", "--netns", &missing], 3, "failed"),
        (vec!["capacity", "--json", "--range", "5", "4"], 4, "usage"),
        (vec!["tune", "plan", "--json"], 4, "usage"),
        (vec!["capacity", "--json", "--rate", "1e308"], 4, "usage"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web.yml");
    std::fs::write(
        &web,
        "tls_server_config:\n  cert_file: /nonexistent/cert.pem\n  key_file: /nonexistent/key.pem\n",
    )
    .unwrap();
    let web = web.to_str().unwrap().to_string();
    if cfg!(feature = "serve") {
        // A web config that names unreadable files is a configuration error: exit 4.
        cases.push((
            vec!["serve", "--listen", "127.0.0.1:0", "--web-config", &web],
            4,
            "",
        ));
    }
    for (args, code, kind) in cases {
        let run = portdoctor(&args);
        assert_eq!(run.code, code, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains("error"), "{args:?}: {}", run.stderr);
        if kind.is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "{args:?}: stdout is not one JSON object ({e}): {}",
                run.stdout
            )
        });
        assert_eq!(v["schema"], "portdoctor.error/v1", "{args:?}");
        assert_eq!(v["error"]["kind"], kind, "{args:?}");
        assert_eq!(v["error"]["exit_code"], code, "{args:?}");
        assert!(
            !v["error"]["message"].as_str().unwrap_or("").is_empty(),
            "{args:?}: {v}"
        );
    }
    // Without --json, stdout stays empty on errors.
    let run = portdoctor(&["check", "--warn", "2"]);
    assert_eq!(run.code, 4);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}
