//! Under Wine (CI): `portdoctor.exe serve` starts on loopback and answers /metrics and /healthz.
#![cfg(windows)]

#[path = "common/http.rs"]
mod http;

use http::get;
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const PORTDOCTOR: &str = env!("CARGO_BIN_EXE_portdoctor");

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_answers_metrics_on_loopback() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let child = Command::new(PORTDOCTOR)
        .args([
            "serve",
            "--listen",
            &addr.to_string(),
            "--min-interval",
            "1s",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting portdoctor.exe serve");
    let mut child = Killed(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        if let Ok((200, text)) = get(addr, "/metrics") {
            break text;
        }
        assert!(
            matches!(child.0.try_wait(), Ok(None)),
            "serve exited early: {:?}",
            child.0.try_wait()
        );
        assert!(
            Instant::now() < deadline,
            "no answer from serve within 30 s"
        );
        thread::sleep(Duration::from_millis(200));
    };
    assert!(
        metrics.contains("portdoctor_build_info{version=") && metrics.contains("os=\"windows\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("portdoctor_collection_success 1"),
        "{metrics}"
    );
    // Our own connection to the exporter is a pool of its local address.
    assert!(metrics.contains("portdoctor_pool_in_use{"), "{metrics}");
    let (status, body) = get(addr, "/healthz").expect("healthz");
    assert_eq!(status, 200, "{body}");
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Issue 17 item 3: netsh (and PowerShell) are started once per settings cache period, not
/// four times per scrape. A stand-in netsh.exe (test builds read system tools from
/// `PORTDOCTOR_TEST_SYSTEM_DIR`) logs every run; three collections cost one reading.
#[test]
fn serve_reads_netsh_once_across_scrapes() {
    let stand_in = std::path::Path::new(PORTDOCTOR)
        .parent()
        .expect("target dir")
        .join("examples")
        .join("netsh_stand_in.exe");
    assert!(stand_in.is_file(), "{} not built", stand_in.display());
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(&stand_in, dir.path().join("netsh.exe")).expect("copy the stand-in");
    let log = dir.path().join("netsh.log");
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let child = Command::new(PORTDOCTOR)
        .args([
            "serve",
            "--listen",
            &addr.to_string(),
            "--min-interval",
            "1s",
        ])
        .env("PORTDOCTOR_TEST_SYSTEM_DIR", dir.path())
        .env("PORTDOCTOR_STAND_IN_LOG", &log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting portdoctor.exe serve");
    let mut child = Killed(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    loop {
        if let Ok((200, text)) = get(addr, "/metrics") {
            if metric(&text, "portdoctor_collections_total").is_some_and(|n| n >= 3.0) {
                last = text;
                break;
            }
        }
        assert!(matches!(child.0.try_wait(), Ok(None)), "serve exited early");
        assert!(
            Instant::now() < deadline,
            "3 collections not seen in 60 s: {last}"
        );
        // Past --min-interval, so the next scrape collects again.
        thread::sleep(Duration::from_millis(1100));
    }
    // The stand-in's range was used: it was run, from the folder given.
    assert_eq!(
        metric(&last, "portdoctor_ephemeral_port_range_low"),
        Some(1111.0),
        "{last}"
    );
    let runs = std::fs::read_to_string(&log).expect("the stand-in's log");
    assert_eq!(
        runs.lines().count(),
        8,
        "netsh runs over 3 collections (dynamicport and excludedportrange, ipv4 and ipv6, TCP and UDP, once): {runs}"
    );
}
