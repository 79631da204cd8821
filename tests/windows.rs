//! Windows integration tests, run under Wine in CI (../shared/ci/windows): real sockets opened
//! here must show up in the collector's table, registry values written to a scratch HKCU key
//! must be read back, statistics must be numbers, and the built `portdoctor.exe check --json`
//! must honour the contract.
//!
//! Under Wine the socket table is the Linux kernel's (every socket of the network namespace),
//! so the tests filter on their own ports; PIDs are only "0 (unknown) or ours" there.
#![cfg(windows)]

use std::io::Read;
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use portdoctor::collect::windows::read_tcpip_registry;
use portdoctor::collect::{self, CollectOptions};
use portdoctor::snapshot::{Snapshot, Socket, TcpState};
use serde_json::Value;

fn collect_now() -> Snapshot {
    collect::native(CollectOptions {
        owners: true,
        ..CollectOptions::default()
    })
    .expect("a Windows collector")
    .snapshot()
    .expect("a snapshot")
}

fn find(snap: &Snapshot, f: impl Fn(&Socket) -> bool) -> Vec<&Socket> {
    snap.sockets.iter().filter(|s| f(s)).collect()
}

/// A listener and two connections to it on `ip`; checks all five rows.
fn listener_and_connections(ip: &str) {
    let listener = TcpListener::bind((ip, 0)).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let clients: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    let servers: Vec<TcpStream> = (0..2)
        .map(|_| listener.accept().expect("accept").0)
        .collect();
    let snap = collect_now();
    let ip: IpAddr = ip.parse().expect("ip");
    let listen = find(&snap, |s| {
        s.state == TcpState::Listen && s.local_port == addr.port() && s.local_ip == ip
    });
    assert_eq!(listen.len(), 1, "listener {addr} not in the table");
    let me = std::process::id();
    for c in &clients {
        let cport = c.local_addr().expect("client addr").port();
        let client_rows = find(&snap, |s| {
            s.state == TcpState::Established
                && s.local_port == cport
                && s.remote_port == addr.port()
                && s.local_ip == ip
                && s.remote_ip == ip
        });
        assert_eq!(client_rows.len(), 1, "client side of {cport} → {addr}");
        let server_rows = find(&snap, |s| {
            s.state == TcpState::Established
                && s.local_port == addr.port()
                && s.remote_port == cport
        });
        assert_eq!(server_rows.len(), 1, "server side of {cport} → {addr}");
        for s in client_rows.iter().chain(&server_rows).chain(&listen) {
            assert!(
                s.pid.is_none() || s.pid == Some(me),
                "pid {:?} is neither unknown nor ours ({me})",
                s.pid
            );
        }
    }
    drop(servers);
}

#[test]
fn socket_table_lists_our_ipv4_listener_and_connections() {
    listener_and_connections("127.0.0.1");
}

#[test]
fn socket_table_lists_our_ipv6_listener_and_connections() {
    if TcpListener::bind("[::1]:0").is_err() {
        println!("SKIP: no IPv6 loopback here");
        return;
    }
    listener_and_connections("::1");
}

#[test]
fn active_close_leaves_client_ports_in_time_wait() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut ports = Vec::new();
    for _ in 0..3 {
        let c = TcpStream::connect(addr).expect("connect");
        let (mut s, _) = listener.accept().expect("accept");
        ports.push(c.local_addr().expect("addr").port());
        // The client closes first, so TIME_WAIT lands on its side.
        c.shutdown(Shutdown::Both).expect("shutdown");
        drop(c);
        let mut buf = [0u8; 8];
        let _ = s.read(&mut buf);
        drop(s);
    }
    // Ground truth: under Wine the table is the Linux kernel's, readable at Z:\proc\net\tcp.
    // A loaded machine occasionally lets one of the closes race into another state, so the
    // expectation is the kernel's own TIME_WAIT rows for our ports (at least one), not a 3.
    let kernel_time_wait = || -> usize {
        let text = std::fs::read_to_string(r"Z:\proc\net\tcp").unwrap_or_default();
        text.lines()
            .skip(1)
            .filter(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let port = |e: &str| {
                    e.split_once(':')
                        .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                };
                f.len() > 3
                    && f[3] == "06"
                    && port(f[1]).is_some_and(|p| ports.contains(&p))
                    && port(f[2]) == Some(addr.port())
            })
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let snap = collect_now();
        let tw = find(&snap, |s| {
            s.state == TcpState::TimeWait
                && ports.contains(&s.local_port)
                && s.remote_port == addr.port()
        });
        let truth = kernel_time_wait();
        if truth > 0 && tw.len() == truth {
            // Windows tables carry no TIME_WAIT timers and no owner.
            assert!(tw
                .iter()
                .all(|s| s.time_wait_left_ms.is_none() && s.pid.is_none()));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "TIME_WAIT rows for {ports:?}: {} reported, {truth} in the kernel",
            tw.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn tcp_statistics_are_numbers() {
    let snap = collect_now();
    for key in [
        "ActiveOpens",
        "PassiveOpens",
        "CurrEstab",
        "ipv6.ActiveOpens",
    ] {
        let v = snap.counters.tcp.get(key).copied();
        assert!(v.is_some_and(|v| v >= 0), "{key}: {v:?}");
    }
}

/// A scratch key under HKCU, created with Windows' own `reg.exe` and deleted on drop.
struct ScratchKey {
    root: String,
    params: String,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

fn reg(args: &[&str]) {
    let out = Command::new("reg")
        .args(args)
        .output()
        .expect("run reg.exe");
    assert!(
        out.status.success(),
        "reg {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl ScratchKey {
    fn new(values: &[(&str, u32)]) -> Self {
        let root = format!(
            r"HKCU\Software\portdoctor-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let params = format!(r"{root}\Parameters");
        reg(&["add", &params, "/f"]);
        for (name, v) in values {
            reg(&[
                "add",
                &params,
                "/v",
                name,
                "/t",
                "REG_DWORD",
                "/d",
                &v.to_string(),
                "/f",
            ]);
        }
        Self { root, params }
    }
}

impl Drop for ScratchKey {
    fn drop(&mut self) {
        let _ = Command::new("reg")
            .args(["delete", &self.root, "/f"])
            .output();
    }
}

#[test]
fn registry_values_come_from_the_scratch_key() {
    let key = ScratchKey::new(&[
        ("TcpTimedWaitDelay", 30),
        ("MaxUserPort", 65534),
        ("StrictTimeWaitSeqCheck", 1),
    ]);
    let mut notes = Vec::new();
    let r = read_tcpip_registry(&key.params, &mut notes).expect("key readable");
    assert_eq!(r.tcp_timed_wait_delay, Some(30));
    assert_eq!(r.max_user_port, Some(65534));
    assert_eq!(r.strict_time_wait_seq_check, Some(1));
    // Absent values are the OS default, not zero.
    assert_eq!(r.tcp_num_connections, None);
    assert_eq!(r.max_hash_table_size, None);
    assert!(notes.is_empty(), "{notes:?}");
    // A missing key is unknown, with a note.
    let root = key.root.clone();
    drop(key);
    let mut notes = Vec::new();
    assert_eq!(
        read_tcpip_registry(&format!(r"{root}\Parameters"), &mut notes),
        None
    );
    assert!(notes[0].contains("not found"), "{notes:?}");
    // The real key is readable (under Wine it holds none of these values).
    let mut notes = Vec::new();
    assert!(read_tcpip_registry(
        r"HKLM\SYSTEM\CurrentControlSet\Services\Tcpip\Parameters",
        &mut notes
    )
    .is_some());
}

fn portdoctor(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_portdoctor"))
        .args(args)
        .envs(env.iter().copied())
        .env("NO_COLOR", "1")
        .output()
        .expect("run portdoctor.exe");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_json_reports_a_real_table_and_registry() {
    let key = ScratchKey::new(&[("TcpTimedWaitDelay", 45), ("MaxUserPort", 5000)]);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (code, out, err) = portdoctor(
        &["check", "--json"],
        &[("PORTDOCTOR_TCPIP_PARAMS_KEY", key.params.as_str())],
    );
    assert!((0..=2).contains(&code), "exit {code}: {err}");
    let v: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["schema"], "portdoctor.check/v1");
    assert_eq!(v["os"], "windows");
    assert_eq!(v["source"], "iphelper");
    assert!(
        v["states"]["LISTEN"].as_u64().is_some_and(|n| n >= 1),
        "{}",
        v["states"]
    );
    let w = &v["settings"]["windows"];
    assert_eq!(w["registry"]["TcpTimedWaitDelay"], 45);
    assert_eq!(w["registry"]["MaxUserPort"], 5000);
    assert!(w["registry"]["TcpNumConnections"].is_null());
    assert_eq!(v["settings"]["time_wait_seconds"], 45);
    assert_eq!(v["settings"]["time_wait_source"], "read");
    assert!(v["counters"]["tcp"]["ActiveOpens"].is_i64());
    // An unreadable event log is said, never counted as zero.
    if w["events"].is_null() {
        let notes = v["notes"].as_array().expect("notes");
        assert!(
            notes.iter().any(|n| n
                .as_str()
                .is_some_and(|n| n.contains("event log unreadable"))),
            "{notes:?}"
        );
    }
    drop(listener);
    let _ = port;
}

#[test]
fn check_human_report_runs() {
    let (code, out, err) = portdoctor(&["check", "--top", "5"], &[]);
    assert!((0..=2).contains(&code), "exit {code}: {err}");
    assert!(out.starts_with("portdoctor check · "), "{out}");
    assert!(out.contains("windows"), "{out}");
    assert!(out.contains("TIME_WAIT"), "{out}");
}

#[test]
fn linux_only_flags_are_usage_errors() {
    for args in [
        &["check", "--netns", "x"][..],
        &["check", "--pid", "1"],
        &["check", "--source", "procfs"],
    ] {
        let (code, _, err) = portdoctor(args, &[]);
        assert_eq!(code, 4, "{args:?}: {err}");
        assert!(err.contains("Linux"), "{err}");
    }
}

#[test]
fn collector_sees_a_bound_address_we_choose() {
    // The table's addresses and ports are decoded in the right byte order: a listener on
    // 127.0.0.2 (Linux routes all of 127/8 to loopback) shows exactly that address.
    let Ok(listener) = TcpListener::bind("127.0.0.2:0") else {
        println!("SKIP: cannot bind 127.0.0.2");
        return;
    };
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let snap = collect_now();
    assert_eq!(
        find(&snap, |s| s.state == TcpState::Listen
            && s.local_port == addr.port()
            && s.local_ip == addr.ip())
        .len(),
        1
    );
}

/// Issue 17 item 1: outbound sockets on two local addresses fill one host-wide IPv4 pool (the
/// dynamic range is shared "no matter the number of IP addresses"), split per address, in the
/// model and in `portdoctor.exe check --json`.
#[test]
fn outbound_sockets_on_two_addresses_share_one_host_wide_pool() {
    use portdoctor::analysis::{analyze, Scope, Thresholds};
    use socket2::{Domain, Protocol, SockAddr, Socket as RawSocket, Type};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let first = TcpStream::connect(addr).expect("connect from 127.0.0.1");
    let raw = RawSocket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
    let from: SocketAddr = "127.0.0.2:0".parse().expect("addr");
    if raw.bind(&SockAddr::from(from)).is_err() {
        println!("SKIP: cannot bind 127.0.0.2");
        return;
    }
    raw.connect(&SockAddr::from(addr))
        .expect("connect from 127.0.0.2");
    let second: TcpStream = raw.into();
    let _servers: Vec<TcpStream> = (0..2)
        .map(|_| listener.accept().expect("accept").0)
        .collect();
    let ports = [
        first.local_addr().expect("addr").port(),
        second.local_addr().expect("addr").port(),
    ];
    let snap = collect_now();
    let a = analyze(&snap, Thresholds::default());
    assert!(
        a.pools.iter().all(|p| p.scope != Scope::LocalAddress),
        "{:?}",
        a.pools.iter().map(|p| (p.scope, p.key)).collect::<Vec<_>>()
    );
    let host: Vec<_> = a
        .pools
        .iter()
        .filter(|p| p.scope == Scope::Host && p.key.local_ip.is_ipv4())
        .collect();
    assert_eq!(host.len(), 1, "one IPv4 host-wide pool");
    let split = &host[0].by_local_address;
    for ip in ["127.0.0.1", "127.0.0.2"] {
        let ip: IpAddr = ip.parse().expect("ip");
        assert!(
            split.iter().any(|b| b.local_ip == ip && b.sockets >= 1),
            "{ip} missing from {split:?}"
        );
    }
    let (code, out, err) = portdoctor(&["check", "--json", "--top", "0"], &[]);
    assert!((0..=2).contains(&code), "exit {code}: {err}");
    let v: Value = serde_json::from_str(&out).expect("JSON");
    let pools = v["pools"].as_array().expect("pools");
    let v4 = pools
        .iter()
        .find(|p| p["scope"] == "host" && p["local_ip"] == "0.0.0.0")
        .expect("an IPv4 host pool");
    let by = v4["by_local_address"].as_array().expect("by_local_address");
    assert!(by.iter().any(|b| b["local_ip"] == "127.0.0.2"), "{by:?}");
    drop((first, second));
    let _ = ports;
}

/// `GetExtendedUdpTable`: our own UDP sockets (IPv4 bound, IPv4 connected, IPv6 bound) are
/// listed with their ports and, where the table gives one, our PID (docs/udp.md).
#[test]
fn udp_table_lists_our_udp_sockets_with_their_owner() {
    use std::net::UdpSocket;
    let a = UdpSocket::bind("127.0.0.1:0").expect("bind v4");
    let b = UdpSocket::bind("0.0.0.0:0").expect("bind v4 wildcard");
    b.connect(a.local_addr().expect("addr")).expect("connect");
    let c = UdpSocket::bind("[::1]:0").ok();
    let snap = collect_now();
    let me = std::process::id();
    let mut ours = vec![
        a.local_addr().expect("addr").port(),
        b.local_addr().expect("addr").port(),
    ];
    if let Some(c) = &c {
        ours.push(c.local_addr().expect("addr").port());
    }
    for port in ours {
        let rows: Vec<_> = snap
            .udp_sockets
            .iter()
            .filter(|s| s.local_port == port)
            .collect();
        assert_eq!(rows.len(), 1, "UDP port {port}: {rows:?}");
        assert!(
            rows[0].pid.is_none() || rows[0].pid == Some(me),
            "pid {:?} is neither unknown nor ours ({me})",
            rows[0].pid
        );
    }
    if let Some(c) = &c {
        let port = c.local_addr().expect("addr").port();
        assert!(snap
            .udp_sockets
            .iter()
            .any(|s| s.local_port == port && s.ipv6_socket));
    }
}

/// The examples folder of this build (`…/debug/examples`), where `cargo test` puts the stand-ins.
fn example_exe(name: &str) -> std::path::PathBuf {
    let bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_portdoctor"));
    bin.parent()
        .expect("target dir")
        .join("examples")
        .join(format!("{name}.exe"))
}

/// Issue 17 item 3: `Command::new("netsh")` searched the program's own folder first, so a
/// `netsh.exe` placed beside `portdoctor.exe` ran instead of the system one. System tools are
/// now called by their System32 path.
#[test]
fn a_netsh_beside_portdoctor_is_not_run() {
    let stand_in = example_exe("netsh_stand_in");
    assert!(stand_in.is_file(), "{} not built", stand_in.display());
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("ran.log");
    // The control: the stand-in does leave its mark when it runs.
    let out = Command::new(&stand_in)
        .args(["int", "ipv4", "show", "dynamicport", "tcp"])
        .env("PORTDOCTOR_STAND_IN_LOG", &log)
        .output()
        .expect("run the stand-in");
    assert!(String::from_utf8_lossy(&out.stdout).contains("1111"));
    assert!(std::fs::read_to_string(&log).is_ok_and(|l| l.contains("dynamicport")));
    std::fs::remove_file(&log).expect("reset the log");
    // portdoctor.exe with a netsh.exe beside it.
    let exe = dir.path().join("portdoctor.exe");
    std::fs::copy(env!("CARGO_BIN_EXE_portdoctor"), &exe).expect("copy portdoctor.exe");
    std::fs::copy(&stand_in, dir.path().join("netsh.exe")).expect("copy the stand-in");
    let out = Command::new(&exe)
        .args(["check", "--json"])
        .current_dir(dir.path())
        .env("PORTDOCTOR_STAND_IN_LOG", &log)
        .output()
        .expect("run the copied portdoctor.exe");
    let code = out.status.code().unwrap_or(-1);
    assert!(
        (0..=2).contains(&code),
        "exit {code}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_ne!(
        v["settings"]["windows"]["dynamic_ports_v4"]["start"], 1111,
        "the netsh.exe beside portdoctor.exe was run"
    );
    assert!(
        !log.exists(),
        "the netsh.exe beside portdoctor.exe was run: {:?}",
        std::fs::read_to_string(&log)
    );
}

/// A scratch registry key, a stand-in netsh with its own state and a state dir: what
/// `tune apply`/`rollback` under Wine write to instead of the machine's settings.
struct TuneBench {
    key: ScratchKey,
    dir: tempfile::TempDir,
}

impl TuneBench {
    fn new() -> Self {
        let key = ScratchKey::new(&[("MaxUserPort", 5000)]);
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::copy(example_exe("netsh_stand_in"), dir.path().join("netsh.exe"))
            .expect("copy the stand-in");
        std::fs::create_dir(dir.path().join("state")).expect("state dir");
        Self { key, dir }
    }

    fn run(&self, args: &[&str], extra: &[(&str, &str)]) -> (i32, String, String) {
        let state_dir = self.dir.path().join("state");
        let sys = self.dir.path().display().to_string();
        let ranges = self.dir.path().join("ranges.txt").display().to_string();
        let mut all: Vec<&str> = args.to_vec();
        let sd = state_dir.display().to_string();
        all.extend(["--state-dir", &sd]);
        let mut env = vec![
            ("PORTDOCTOR_TCPIP_PARAMS_KEY", self.key.params.as_str()),
            ("PORTDOCTOR_TEST_SYSTEM_DIR", sys.as_str()),
            ("PORTDOCTOR_STAND_IN_STATE", ranges.as_str()),
        ];
        env.extend_from_slice(extra);
        portdoctor(&all, &env)
    }

    fn registry(&self) -> (Option<u32>, Option<u32>) {
        let mut notes = Vec::new();
        let r = read_tcpip_registry(&self.key.params, &mut notes).expect("scratch key");
        (r.tcp_timed_wait_delay, r.max_user_port)
    }

    /// The stand-in's current IPv4 TCP range (start, count).
    fn range(&self) -> (u32, u32) {
        self.range_of("tcp")
    }

    /// The stand-in's current IPv4 range of `protocol` (start, count).
    fn range_of(&self, protocol: &str) -> (u32, u32) {
        let text = std::fs::read_to_string(self.dir.path().join("ranges.txt")).unwrap_or_default();
        text.lines()
            .rev()
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let n: Vec<u32> = f.iter().skip(2).filter_map(|x| x.parse().ok()).collect();
                (f.len() == 4 && f[0] == "ipv4" && f[1] == protocol && n.len() == 2)
                    .then(|| (n[0], n[1]))
            })
            .unwrap_or((1111, 2222))
    }
}

const TUNE_SETS: [&str; 7] = [
    "tune",
    "apply",
    "--set",
    "tcpip.TcpTimedWaitDelay=30",
    "--set",
    "tcpip.MaxUserPort=6000",
    "--yes",
];

/// Issue 17 item 5: apply writes the registry values through the registry API and the range
/// through netsh, each read back; history shows the registry part pending a reboot; rollback
/// restores exactly, deleting the value that was absent.
#[test]
fn tune_apply_history_rollback_restore_exactly() {
    let bench = TuneBench::new();
    assert_eq!(bench.registry(), (None, Some(5000)));
    let mut args = TUNE_SETS.to_vec();
    args.extend(["--set", "netsh.ipv4.dynamicport.tcp=start=2000 num=1000"]);
    let (code, out, err) = bench.run(&args, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("verified every value reads back"), "{out}");
    assert!(
        out.contains("pending  tcpip.TcpTimedWaitDelay, tcpip.MaxUserPort"),
        "{out}"
    );
    assert_eq!(bench.registry(), (Some(30), Some(6000)));
    assert_eq!(bench.range(), (2000, 1000));
    let (code, out, err) = bench.run(&["tune", "history"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("applied (pending reboot)"), "{out}");
    // Applying the same again changes nothing and writes no backup.
    let (code, out, _) = bench.run(&args, &[]);
    assert_eq!(code, 0);
    assert!(out.contains("nothing to change"), "{out}");
    let (code, out, err) = bench.run(&["tune", "rollback"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(bench.registry(), (None, Some(5000)), "{out}");
    assert_eq!(bench.range(), (1111, 2222));
    let (_, out, _) = bench.run(&["tune", "history", "--json"], &[]);
    let v: Value = serde_json::from_str(&out).expect("history JSON");
    assert_eq!(v[0]["status"], "rolled_back", "{out}");
    assert_eq!(v[0]["registry"][0]["prior"], Value::Null);
    // Nothing left to roll back: a usage error.
    let (code, _, err) = bench.run(&["tune", "rollback"], &[]);
    assert_eq!(code, 4, "{err}");
}

/// Issue 20: the UDP dynamic range is applied and rolled back beside the TCP one, each through
/// its own `netsh … dynamicport udp|tcp` and read back; neither touches the other.
#[test]
fn tune_apply_and_rollback_the_udp_range_beside_tcp() {
    let bench = TuneBench::new();
    let args = [
        "tune",
        "apply",
        "--set",
        "netsh.ipv4.dynamicport.udp=start=3000 num=500",
        "--set",
        "netsh.ipv4.dynamicport.tcp=start=2000 num=1000",
        "--yes",
    ];
    let (code, out, err) = bench.run(&args, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("netsh.ipv4.dynamicport.udp"), "{out}");
    assert_eq!(bench.range_of("udp"), (3000, 500));
    assert_eq!(bench.range_of("tcp"), (2000, 1000));
    // The collector reads the UDP range through the same (stand-in) netsh: `check` reports it.
    let sys = bench.dir.path().display().to_string();
    let ranges = bench.dir.path().join("ranges.txt").display().to_string();
    let (code, out, err) = portdoctor(
        &["check", "--json", "--no-owners"],
        &[
            ("PORTDOCTOR_TEST_SYSTEM_DIR", sys.as_str()),
            ("PORTDOCTOR_STAND_IN_STATE", ranges.as_str()),
        ],
    );
    assert!((0..=2).contains(&code), "exit {code}: {err}");
    let v: Value = serde_json::from_str(&out).expect("check JSON");
    let w = &v["settings"]["windows"];
    assert_eq!(
        (
            &w["udp_dynamic_ports_v4"]["start"],
            &w["dynamic_ports_v4"]["start"]
        ),
        (&Value::from(3000), &Value::from(2000)),
        "{w}"
    );
    let (_, out, _) = bench.run(&["tune", "history", "--json"], &[]);
    let v: Value = serde_json::from_str(&out).expect("history JSON");
    let mut protocols: Vec<&str> = v[0]["ranges"]
        .as_array()
        .expect("ranges")
        .iter()
        .filter_map(|r| r["protocol"].as_str())
        .collect();
    protocols.sort_unstable();
    assert_eq!(protocols, ["tcp", "udp"], "{out}");
    let (code, out, err) = bench.run(&["tune", "rollback"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(bench.range_of("udp"), (1111, 2222), "{out}");
    assert_eq!(bench.range_of("tcp"), (1111, 2222), "{out}");
}

/// An apply killed after each of its writes (a crash, a power cut) is undone exactly by
/// rollback: the backup is written before the first change.
#[test]
fn tune_rollback_restores_an_apply_aborted_after_any_write() {
    for after in 1..=3 {
        let bench = TuneBench::new();
        let mut args = TUNE_SETS.to_vec();
        args.extend(["--set", "netsh.ipv4.dynamicport.tcp=start=2000 num=1000"]);
        let n = after.to_string();
        let (code, out, err) =
            bench.run(&args, &[("PORTDOCTOR_TEST_ABORT_AFTER_WRITES", n.as_str())]);
        assert_eq!(code, 86, "abort after {after}: {out}{err}");
        assert_ne!(
            (bench.registry(), bench.range()),
            ((None, Some(5000)), (1111, 2222)),
            "abort after {after}: nothing was written"
        );
        let (code, out, err) = bench.run(&["tune", "rollback"], &[]);
        assert_eq!(code, 0, "abort after {after}: {out}{err}");
        assert_eq!(bench.registry(), (None, Some(5000)), "abort after {after}");
        assert_eq!(bench.range(), (1111, 2222), "abort after {after}");
    }
}

/// A second apply while one holds the lock is refused and changes nothing.
#[test]
fn tune_apply_is_refused_while_another_runs() {
    use std::os::windows::fs::OpenOptionsExt;
    let bench = TuneBench::new();
    let held = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .share_mode(0)
        .open(bench.dir.path().join("state").join(".lock"))
        .expect("hold the lock");
    let (code, out, err) = bench.run(&TUNE_SETS, &[]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(err.contains("another `portdoctor tune apply`"), "{err}");
    assert_eq!(bench.registry(), (None, Some(5000)));
    drop(held);
    let (code, out, err) = bench.run(&TUNE_SETS, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(bench.registry(), (Some(30), Some(6000)));
}

/// Issue 17 items 2 and 3: BOUND sockets come from `Get-NetTCPConnection -State Bound` and the
/// auto-reuse range from `Get-NetTCPSetting`, both through PowerShell by its System32 path (here
/// a stand-in, as Wine's PowerShell runs no cmdlet); the BOUND ports leave the host pool and a
/// process holding 150 of them is a `bound_port_leak`.
#[test]
fn bound_sockets_from_cim_leave_the_pool_and_a_leak_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stand_in = example_exe("netsh_stand_in");
    std::fs::copy(&stand_in, dir.path().join("netsh.exe")).expect("copy netsh");
    let ps_dir = dir.path().join("WindowsPowerShell").join("v1.0");
    std::fs::create_dir_all(&ps_dir).expect("powershell dir");
    std::fs::copy(&stand_in, ps_dir.join("powershell.exe")).expect("copy powershell");
    let sys = dir.path().display().to_string();
    let (code, out, err) = portdoctor(
        &["check", "--json", "--top", "0"],
        &[
            ("PORTDOCTOR_TEST_SYSTEM_DIR", sys.as_str()),
            ("PORTDOCTOR_STAND_IN_BOUND", "150:4242:2000"),
        ],
    );
    assert!((0..=2).contains(&code), "exit {code}: {err}");
    let v: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["states"]["BOUND"], 150, "{}", v["states"]);
    assert_eq!(v["settings"]["windows"]["auto_reuse_ports"]["count"], 0);
    assert_eq!(
        v["settings"]["ephemeral_ports"]["low"], 1111,
        "{}",
        v["settings"]
    );
    let usable = v["capacity"]["usable_per_pool"].as_u64().expect("usable");
    assert!(usable <= 2222 - 150, "{usable}");
    let findings = v["verdict"]["findings"].as_array().expect("findings");
    let leak = findings
        .iter()
        .find(|f| f["code"] == "bound_port_leak")
        .expect("bound_port_leak");
    assert_eq!(leak["evidence"]["pid"], 4242);
    assert_eq!(leak["evidence"]["bound_ports"], 150);
}

/// Issue 17 item 4: `check --observe` on Windows takes two snapshots the window apart and
/// gives the host pool a real connect rate (Windows tables have no TIME_WAIT timers). A client
/// opens and closes connections for as long as portdoctor runs (bounded in count and time).
#[test]
fn check_observe_gives_a_rate_from_two_snapshots() {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let done = Arc::new(AtomicBool::new(false));
    let server = std::thread::spawn(move || {
        for s in listener.incoming().take(4000) {
            drop(s);
        }
    });
    let stop = Arc::clone(&done);
    let client = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut n = 0u32;
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && n < 3000 {
            if let Ok(c) = TcpStream::connect(addr) {
                drop(c);
                n += 1;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        n
    });
    let (code, out, err) = portdoctor(&["check", "--observe", "2s", "--json", "--top", "0"], &[]);
    done.store(true, Ordering::Relaxed);
    let opened = client.join().expect("client");
    // Unblock the server thread.
    let _ = TcpStream::connect(addr);
    drop(server);
    assert!((0..=2).contains(&code), "exit {code}: {err}");
    assert!(opened > 0, "the client opened nothing");
    let v: Value = serde_json::from_str(&out).expect("JSON");
    let pool = v["pools"]
        .as_array()
        .expect("pools")
        .iter()
        .find(|p| p["scope"] == "host" && p["local_ip"] == "0.0.0.0")
        .expect("the IPv4 host pool");
    let rate = pool["connect_rate_per_s"]
        .as_f64()
        .expect("a rate, not null");
    assert!(rate > 0.0, "{pool}");
    // The gap between the two snapshots: the window, plus a collection's time (seconds under
    // a loaded Wine).
    let window = pool["rate_window_seconds"].as_f64().expect("window");
    assert!((1.9..60.0).contains(&window), "{window}");
    assert!(
        v["notes"]
            .as_array()
            .expect("notes")
            .iter()
            .any(|n| n.as_str().is_some_and(|n| n.contains("two snapshots"))),
        "{}",
        v["notes"]
    );
}

/// Issue 17 item 4: the TIME_WAIT lifetime measured from consecutive snapshots. Under Wine the
/// table is the Linux kernel's, whose TIME_WAIT lasts 60 s: connections closed by this client
/// are followed through TIME_WAIT in real tables taken every half second (bounded to 150 s) by
/// the collector's tracker, fed only this test's sockets (the table is the whole host's, where
/// other TIME_WAIT may end early through tcp_tw_reuse), and the median must come out near 60 s.
#[test]
fn time_wait_lifetime_is_measured_from_snapshots() {
    use portdoctor::collect::windows_text::TimeWaitTracker;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut tracker = TimeWaitTracker::default();
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    };
    let mine = |snap: &Snapshot| -> Vec<Socket> {
        snap.sockets
            .iter()
            .filter(|s| s.remote_port == addr.port() && s.remote_ip == addr.ip())
            .cloned()
            .collect()
    };
    // A first table before the connections exist, so their entry into TIME_WAIT is seen.
    let t0 = now_ms();
    tracker.observe(t0, &mine(&collect_now()));
    for _ in 0..5 {
        let c = TcpStream::connect(addr).expect("connect");
        let (s, _) = listener.accept().expect("accept");
        c.shutdown(Shutdown::Both).expect("shutdown");
        drop(c); // the client closes first: TIME_WAIT on its side
        let mut buf = [0u8; 1];
        let _ = (&s).read(&mut buf);
        drop(s);
    }
    let deadline = Instant::now() + Duration::from_secs(150);
    let measured = loop {
        std::thread::sleep(Duration::from_millis(500));
        let t = now_ms();
        let sockets = mine(&collect_now());
        let m = tracker.observe(t, &sockets);
        let gone = !sockets.iter().any(|s| s.state == TcpState::TimeWait);
        if let (true, Some(m)) = (gone, m) {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "no TIME_WAIT measurement in 150 s"
        );
    };
    assert_eq!(measured.samples, 5, "{measured:?}");
    let slack = measured.resolution_seconds + 2.0;
    assert!(
        (measured.seconds - 60.0).abs() <= slack,
        "Linux TIME_WAIT is 60 s, measured {measured:?}"
    );
}
