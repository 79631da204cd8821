//! Under Wine (CI): `portdoctor.exe serve` starts on loopback and answers /metrics and /healthz.
#![cfg(windows)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
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

fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, text))
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
