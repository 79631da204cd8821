//! Harness for the network-namespace integration tests (`tests/netns.rs`).
//!
//! Every test gets its own namespace (`pdt-<pid>-<n>-<tag>`), guarded by [`Netns`], whose `Drop`
//! kills every process left inside it and deletes it, also when the test panics. Socket
//! populations come from `../shared/tools/sockpop` (built once per test process) or from a small
//! Python helper; every external command runs with a time bound.
// Each test file that includes this module uses only a part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub const PORTDOCTOR: &str = env!("CARGO_BIN_EXE_portdoctor");

/// Upper bound for one short command (ip, ss, sysctl, portdoctor).
pub const CMD_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for a population to become ready (its ground-truth file to appear).
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a population helper holds its sockets at most; tests finish well before.
pub const HOLD_SECONDS: &str = "60";

/// Whether this test may go on. Not root: fails with a clear message, unless
/// `PORTDOCTOR_SKIP_NETNS=1` asks to skip (then prints a skip line and returns `false`).
pub fn require_root(test: &str) -> bool {
    if effective_uid() == Some(0) {
        return true;
    }
    if std::env::var("PORTDOCTOR_SKIP_NETNS").is_ok_and(|v| v == "1") {
        println!("SKIP {test}: needs root for network namespaces (PORTDOCTOR_SKIP_NETNS=1)");
        return false;
    }
    panic!(
        "{test} needs root: it creates network namespaces (`ip netns add`) and sets sysctls \
         inside them (euid is {:?}). Run the tests as root, or set PORTDOCTOR_SKIP_NETNS=1 to \
         skip them on purpose.",
        effective_uid()
    );
}

/// The effective uid from /proc/self/status (no unsafe code needed).
fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// Running commands with a time bound
// ---------------------------------------------------------------------------------------------

/// Runs `cmd` to completion with stdin closed and output captured; panics when it cannot be
/// started or does not finish within `timeout` (after killing it).
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Output {
    let desc = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {desc}: {e}"));
    let mut out = child.stdout.take().expect("stdout is piped");
    let mut err = child.stderr.take().expect("stderr is piped");
    let t_out = thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        b
    });
    let t_err = thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        b
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{desc} did not finish within {timeout:?}; killed it");
            }
            Err(e) => panic!("waiting for {desc}: {e}"),
        }
    };
    Output {
        status,
        stdout: t_out.join().expect("stdout reader"),
        stderr: t_err.join().expect("stderr reader"),
    }
}

/// Runs `cmd` (bounded) and panics with its output unless it exits 0; returns stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let desc = format!("{cmd:?}");
    let out = run_bounded(cmd, CMD_TIMEOUT);
    assert!(
        out.status.success(),
        "{desc} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn kill_signal(signal: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .args(pids.iter().map(u32::to_string))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

// ---------------------------------------------------------------------------------------------
// Helper tools
// ---------------------------------------------------------------------------------------------

/// `../shared/tools` relative to the project root.
pub fn shared_tools_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools")
}

/// The sockpop binary, built once per test process into target/tmp.
pub fn sockpop_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("shared-tools");
        let build = shared_tools_dir().join("build");
        let out = run_bounded(
            Command::new(&build).arg(&dir).arg("sockpop"),
            Duration::from_secs(180),
        );
        assert!(
            out.status.success(),
            "{} {} sockpop failed ({}): {}",
            build.display(),
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let path = stdout
            .lines()
            .map(str::trim)
            .find(|l| l.ends_with("/sockpop"))
            .unwrap_or_else(|| panic!("build printed no sockpop path: {stdout:?}"));
        let path = PathBuf::from(path);
        assert!(path.exists(), "{} does not exist", path.display());
        path
    })
    .as_path()
}

/// The real Python 3 interpreter (not a version-manager shim, so startup stays fast).
pub fn python() -> &'static str {
    static PY: OnceLock<String> = OnceLock::new();
    PY.get_or_init(|| {
        let out = run_ok(Command::new("python3").args(["-c", "import sys; print(sys.executable)"]));
        let exe = out.trim();
        if exe.is_empty() {
            "python3".to_string()
        } else {
            exe.to_string()
        }
    })
}

/// Listens on HOST:PORT, connects N times, closes every client socket first (so TIME_WAIT lands
/// on the client side), then the server sockets, writes OUT (atomically) and holds HOLD seconds.
const TIME_WAIT_PY: &str = r"
import json, os, socket, sys, time
host, port, n, out, hold = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], float(sys.argv[5])
fam = socket.AF_INET6 if ':' in host else socket.AF_INET
lst = socket.socket(fam, socket.SOCK_STREAM)
lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
lst.bind((host, port))
lst.listen(n + 16)
pairs = []
for _ in range(n):
    c = socket.socket(fam, socket.SOCK_STREAM)
    c.connect((host, port))
    s, _ = lst.accept()
    pairs.append((c, s))
local = pairs[0][0].getsockname()[0] if pairs else None
for c, s in pairs:
    c.close()
for c, s in pairs:
    s.recv(1)
    s.close()
with open(out + '.tmp', 'w') as f:
    json.dump({'local_ip': local, 'remote_ip': host, 'remote_port': port, 'time_wait': n}, f)
os.rename(out + '.tmp', out)
time.sleep(hold)
";

/// Binds TCP sockets to the ADDR PORT pairs given without listening or connecting (they hold
/// their ports: the BOUND state), writes OUT and holds HOLD seconds.
const BIND_PY: &str = r"
import os, socket, sys, time
out, hold, pairs = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
held = []
for i in range(0, len(pairs), 2):
    host, port = pairs[i], int(pairs[i + 1])
    s = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET, socket.SOCK_STREAM)
    s.bind((host, port))
    held.append(s)
with open(out + '.tmp', 'w') as f:
    f.write(str(len(held)))
os.rename(out + '.tmp', out)
time.sleep(hold)
";

// ---------------------------------------------------------------------------------------------
// Network namespace guard
// ---------------------------------------------------------------------------------------------

static NS_COUNTER: AtomicU32 = AtomicU32::new(0);
/// `ip netns add` mounts /run/netns the first time; serialize adds so parallel tests do not race
/// on that mount.
static NS_ADD_LOCK: Mutex<()> = Mutex::new(());

/// A network namespace owned by one test. Dropping it kills every process inside and deletes it.
pub struct Netns {
    pub name: String,
    dir: tempfile::TempDir,
    files: AtomicU32,
}

impl Netns {
    /// Creates `pdt-<pid>-<n>-<tag>` with lo up and `tcp_tw_reuse=0` (the kernel default 2 would
    /// recycle loopback TIME_WAIT ports while populations are made, so counts would fall short).
    pub fn new(tag: &str) -> Netns {
        let n = NS_COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("pdt-{}-{n}-{tag}", std::process::id());
        let dir = tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .tempdir()
            .expect("creating a temporary directory");
        {
            let _guard = NS_ADD_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
            run_ok(Command::new("ip").args(["netns", "add", &name]));
        }
        // From here on the guard exists, so a failure below still deletes the namespace.
        let ns = Netns {
            name,
            dir,
            files: AtomicU32::new(0),
        };
        ns.ip(&["link", "set", "lo", "up"]);
        ns.sysctl("net.ipv4.tcp_tw_reuse", "0");
        ns
    }

    /// `ip -n NAME ARGS...`
    pub fn ip(&self, args: &[&str]) -> String {
        run_ok(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// A command that runs PROGRAM inside the namespace (`ip netns exec NAME PROGRAM`). The
    /// spawned process *is* PROGRAM (ip execs it), so its pid is the program's.
    pub fn exec(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Sets a per-namespace sysctl.
    pub fn sysctl(&self, key: &str, value: &str) {
        run_ok(
            self.exec("sysctl")
                .args(["-q", "-w", &format!("{key}={value}")]),
        );
    }

    /// Reads a sysctl inside the namespace.
    pub fn read_sysctl(&self, key: &str) -> String {
        run_ok(self.exec("sysctl").args(["-n", key]))
            .trim()
            .to_string()
    }

    /// `net.ipv4.ip_local_port_range` as the kernel of this namespace has it.
    pub fn port_range(&self) -> (u16, u16) {
        let text = self.read_sysctl("net.ipv4.ip_local_port_range");
        let mut it = text.split_whitespace().map(|w| {
            w.parse::<u16>()
                .unwrap_or_else(|e| panic!("port range {text:?}: {e}"))
        });
        let low = it.next().expect("range low");
        let high = it.next().expect("range high");
        (low, high)
    }

    /// A fresh path in this test's temporary directory.
    pub fn path(&self, stem: &str) -> PathBuf {
        let n = self.files.fetch_add(1, Ordering::SeqCst);
        self.dir.path().join(format!("{stem}-{n}"))
    }

    /// Pids of the processes inside the namespace.
    pub fn pids(&self) -> Vec<u32> {
        Command::new("ip")
            .args(["netns", "pids", &self.name])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|w| w.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Starts `cmd` in the background; its stderr goes to a file for failure messages.
    pub fn spawn(&self, what: &str, mut cmd: Command) -> Background {
        let stderr_path = self.path(&format!("{what}.stderr"));
        let stderr = fs::File::create(&stderr_path).expect("creating a stderr file");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what} ({cmd:?}): {e}"));
        Background {
            pid: child.id(),
            child,
            what: what.to_string(),
            stderr_path,
        }
    }

    /// Runs sockpop with ARGS inside the namespace, waits (bounded) until its population is
    /// ready and returns it with its ground truth. It holds the sockets for up to a minute.
    pub fn sockpop(&self, args: &[&str]) -> Sockpop {
        let out = self.path("sockpop-truth.json");
        let mut cmd = self.exec(sockpop_bin());
        cmd.args(args)
            .args(["--hold", HOLD_SECONDS, "--out"])
            .arg(&out);
        let mut proc = self.spawn("sockpop", cmd);
        let text = proc.wait_for_file(&out, READY_TIMEOUT);
        let truth: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("sockpop truth is not JSON ({e}): {text}"));
        assert_eq!(truth["tool"], "sockpop", "unexpected truth: {truth}");
        Sockpop { proc, truth }
    }

    /// Makes N client-side TIME_WAIT sockets from HOST to HOST:PORT with the Python helper
    /// (HOST may be any address of the namespace, unlike sockpop's loopback-only destinations);
    /// waits until `ss` shows them all. Returns the helper (holding the listener) and its record.
    pub fn python_time_wait(&self, host: &str, port: u16, n: u32) -> (Background, Value) {
        let out = self.path("py-truth.json");
        let mut cmd = self.exec(python());
        cmd.args(["-c", TIME_WAIT_PY, host, &port.to_string(), &n.to_string()])
            .arg(&out)
            .arg(HOLD_SECONDS);
        let mut proc = self.spawn("python-time-wait", cmd);
        let text = proc.wait_for_file(&out, READY_TIMEOUT);
        let truth: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("helper output is not JSON ({e}): {text}"));
        let want = u64::from(n);
        let ok = wait_until(Duration::from_secs(5), || {
            let ss = self.ss();
            let tw = ss
                .sockets
                .iter()
                .filter(|s| s.state == "TIME_WAIT" && s.peer.1 == port)
                .count() as u64;
            (tw == want).then_some(())
        });
        assert!(
            ok.is_some(),
            "ss never showed {n} TIME_WAIT sockets to port {port}:\n{}",
            self.ss_raw()
        );
        (proc, truth)
    }

    /// Holds bound-only sockets (no listen, no connect) on each (address, port) with the Python
    /// helper until the returned process ends.
    pub fn python_bound(&self, endpoints: &[(&str, u16)]) -> Background {
        let out = self.path("py-bound");
        let mut cmd = self.exec(python());
        cmd.args(["-c", BIND_PY]).arg(&out).arg(HOLD_SECONDS);
        for (host, port) in endpoints {
            cmd.arg(host).arg(port.to_string());
        }
        let mut proc = self.spawn("python-bound", cmd);
        let text = proc.wait_for_file(&out, READY_TIMEOUT);
        assert_eq!(
            text.trim(),
            endpoints.len().to_string(),
            "bound sockets held"
        );
        proc
    }

    /// `ss -Htan` inside the namespace, raw.
    pub fn ss_raw(&self) -> String {
        run_ok(self.exec("ss").arg("-Htan"))
    }

    /// `ss -Htan` inside the namespace, parsed.
    pub fn ss(&self) -> Ss {
        Ss::parse(&self.ss_raw())
    }

    /// `portdoctor check --netns NAME --json EXTRA...`: asserts the schema and an exit code of
    /// 0, 1 or 2 and returns the report and the code.
    pub fn check_json(&self, extra: &[&str]) -> (Value, i32) {
        let run = portdoctor(&[&["check", "--netns", &self.name, "--json"][..], extra].concat());
        let report = run.json();
        assert_eq!(report["host"]["netns"], self.name.as_str(), "{report}");
        (report, run.code)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Everything still running in the namespace was started by this test.
        for _ in 0..100 {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            kill_signal("KILL", &pids);
            thread::sleep(Duration::from_millis(20));
        }
        for _ in 0..20 {
            let deleted = Command::new("ip")
                .args(["netns", "del", &self.name])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if deleted || !Path::new("/run/netns").join(&self.name).exists() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        eprintln!("warning: could not delete network namespace {}", self.name);
    }
}

/// Polls `f` every 20 ms until it returns `Some`, at most `timeout`.
pub fn wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A background process of a test; killed (and reaped) when dropped.
pub struct Background {
    child: Child,
    pub pid: u32,
    what: String,
    stderr_path: PathBuf,
}

impl Background {
    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Waits (bounded) for PATH to appear and returns its content; panics with the process's
    /// stderr when it exits first or the time runs out.
    pub fn wait_for_file(&mut self, path: &Path, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(text) = fs::read_to_string(path) {
                return text;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before writing {}:\n{}",
                    self.what,
                    path.display(),
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not write {} within {timeout:?}:\n{}",
                self.what,
                path.display(),
                self.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asks the process to stop (SIGTERM), waits up to 10 s (then SIGKILL) and returns its exit
    /// status.
    pub fn stop(&mut self) -> ExitStatus {
        if let Ok(Some(status)) = self.child.try_wait() {
            return status;
        }
        kill_signal("TERM", &[self.pid]);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                _ => {
                    let _ = self.child.kill();
                    return self.child.wait().expect("reaping a killed child");
                }
            }
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A running sockpop and the ground truth it printed.
pub struct Sockpop {
    pub proc: Background,
    pub truth: Value,
}

impl Sockpop {
    pub fn pid(&self) -> u32 {
        self.proc.pid
    }

    /// Ends the hold early (SIGTERM) and returns sockpop's exit code (0 as asked, 3 ports ran
    /// out, 1 error).
    pub fn stop(&mut self) -> Option<i32> {
        self.proc.stop().code()
    }
}

// ---------------------------------------------------------------------------------------------
// portdoctor
// ---------------------------------------------------------------------------------------------

/// One run of the binary.
pub struct PdRun {
    pub args: Vec<String>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl PdRun {
    /// The stdout as a `portdoctor.check/v1` report; panics with the whole run otherwise.
    pub fn json(&self) -> Value {
        assert!(
            (0..=2).contains(&self.code),
            "portdoctor {:?} exited {} (want 0, 1 or 2):\nstderr: {}\nstdout: {}",
            self.args,
            self.code,
            self.stderr,
            self.stdout
        );
        let v: Value = serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "portdoctor {:?}: stdout is not JSON ({e}):\n{}\nstderr: {}",
                self.args, self.stdout, self.stderr
            )
        });
        assert_eq!(v["schema"], "portdoctor.check/v1", "{v}");
        v
    }
}

/// Runs the portdoctor binary with ARGS (bounded).
pub fn portdoctor(args: &[&str]) -> PdRun {
    run_program(Command::new(PORTDOCTOR).args(args), args)
}

/// Runs a prepared command that ends in a portdoctor invocation; ARGS label the run in messages.
pub fn run_program(cmd: &mut Command, args: &[&str]) -> PdRun {
    cmd.env_remove("NO_COLOR");
    let out = run_bounded(cmd, CMD_TIMEOUT);
    PdRun {
        args: args.iter().map(ToString::to_string).collect(),
        code: out
            .status
            .code()
            .unwrap_or_else(|| panic!("portdoctor {args:?} was killed: {}", out.status)),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// ss
// ---------------------------------------------------------------------------------------------

/// A local or remote endpoint.
pub type Endpoint = (IpAddr, u16);

/// One line of `ss -Htan`, with the state spelled as portdoctor spells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsSocket {
    pub state: String,
    pub local: Endpoint,
    pub peer: Endpoint,
}

/// What `ss -Htan` showed.
#[derive(Debug, Clone)]
pub struct Ss {
    pub sockets: Vec<SsSocket>,
}

/// `ESTAB` → `ESTABLISHED` etc. (ss spelling → `portdoctor.check/v1` spelling).
fn ss_state(s: &str) -> String {
    match s {
        "ESTAB" => "ESTABLISHED",
        "SYN-SENT" => "SYN_SENT",
        "SYN-RECV" => "SYN_RECV",
        "FIN-WAIT-1" => "FIN_WAIT1",
        "FIN-WAIT-2" => "FIN_WAIT2",
        "TIME-WAIT" => "TIME_WAIT",
        "UNCONN" => "BOUND",
        "CLOSE-WAIT" => "CLOSE_WAIT",
        "LAST-ACK" => "LAST_ACK",
        other => return other.to_string(),
    }
    .to_string()
}

/// `127.0.0.1:80`, `[::1]:80`, `[::ffff:127.0.0.1]:80`, `*:80`, `127.0.0.1%lo:80`.
fn parse_endpoint(s: &str) -> Endpoint {
    let (host, port) = s
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("ss endpoint without a port: {s:?}"));
    let port: u16 = if port == "*" {
        0
    } else {
        port.parse()
            .unwrap_or_else(|e| panic!("ss endpoint {s:?}: {e}"))
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = host.split('%').next().unwrap_or(host);
    let ip: IpAddr = if host == "*" {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        host.parse()
            .unwrap_or_else(|e| panic!("ss endpoint {s:?}: {e}"))
    };
    (normalize(ip), port)
}

/// IPv4-mapped IPv6 → IPv4, as portdoctor reports them.
pub fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// A destination pool: (local IP, remote IP, remote port).
pub type PoolKey = (IpAddr, IpAddr, u16);

/// Counts of one pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub in_use: u64,
    pub established: u64,
    pub time_wait: u64,
}

impl Ss {
    pub fn parse(text: &str) -> Ss {
        let sockets = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                assert!(f.len() >= 5, "unexpected ss line: {line:?}");
                SsSocket {
                    state: ss_state(f[0]),
                    local: parse_endpoint(f[3]),
                    peer: parse_endpoint(f[4]),
                }
            })
            .collect();
        Ss { sockets }
    }

    /// Sockets per state.
    pub fn states(&self) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for s in &self.sockets {
            *m.entry(s.state.clone()).or_default() += 1;
        }
        m
    }

    pub fn count(&self, state: &str) -> u64 {
        self.sockets.iter().filter(|s| s.state == state).count() as u64
    }

    /// Whether `local` is a listening endpoint (exactly, or on the wildcard of either family).
    pub fn is_listener_port(&self, local: Endpoint) -> bool {
        self.sockets.iter().any(|s| {
            s.state == "LISTEN"
                && s.local.1 == local.1
                && (s.local.0 == local.0 || s.local.0.is_unspecified())
        })
    }

    /// Non-listening sockets whose local port is a listener's (the accepted side).
    pub fn inbound(&self) -> u64 {
        self.sockets
            .iter()
            .filter(|s| s.state != "LISTEN" && self.is_listener_port(s.local))
            .count() as u64
    }

    /// The destination pools an independent reading of `ss` gives: every non-listening socket
    /// with a local port inside `range` that is no listener's, by (local IP, remote IP, port).
    pub fn pools(&self, range: (u16, u16)) -> BTreeMap<PoolKey, Counts> {
        let mut pools: BTreeMap<PoolKey, Counts> = BTreeMap::new();
        for s in &self.sockets {
            if s.state == "LISTEN" || s.state == "BOUND" || self.is_listener_port(s.local) {
                continue;
            }
            if !(range.0..=range.1).contains(&s.local.1) {
                continue;
            }
            let c = pools.entry((s.local.0, s.peer.0, s.peer.1)).or_default();
            c.in_use += 1;
            match s.state.as_str() {
                "ESTABLISHED" => c.established += 1,
                "TIME_WAIT" => c.time_wait += 1,
                _ => {}
            }
        }
        pools
    }
}

// ---------------------------------------------------------------------------------------------
// Reading reports and ground truth
// ---------------------------------------------------------------------------------------------

/// The value at a dotted PATH (`verdict.level`); panics naming the path when absent.
pub fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    let mut cur = v;
    for key in path.split('.') {
        cur = match cur {
            Value::Object(m) => m
                .get(key)
                .unwrap_or_else(|| panic!("report has no {path:?} (missing {key:?}): {v}")),
            Value::Array(a) => key
                .parse::<usize>()
                .ok()
                .and_then(|i| a.get(i))
                .unwrap_or_else(|| panic!("report has no {path:?} (index {key:?})")),
            _ => panic!("report has no {path:?}: {key:?} of a non-object in {v}"),
        };
    }
    cur
}

pub fn u64_at(v: &Value, path: &str) -> u64 {
    at(v, path)
        .as_u64()
        .unwrap_or_else(|| panic!("{path:?} is not an unsigned integer: {}", at(v, path)))
}

pub fn str_at<'a>(v: &'a Value, path: &str) -> &'a str {
    at(v, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path:?} is not a string: {}", at(v, path)))
}

pub fn array_at<'a>(v: &'a Value, path: &str) -> &'a Vec<Value> {
    at(v, path)
        .as_array()
        .unwrap_or_else(|| panic!("{path:?} is not an array: {}", at(v, path)))
}

fn ip_of(v: &Value, path: &str) -> IpAddr {
    let s = str_at(v, path);
    s.parse()
        .unwrap_or_else(|e| panic!("{path:?} = {s:?} is not an IP address: {e}"))
}

/// All pools of the report (any scope).
pub fn pools(report: &Value) -> &Vec<Value> {
    array_at(report, "pools")
}

/// The report's destination pools by key; panics on a duplicate key.
pub fn report_pools(report: &Value) -> BTreeMap<PoolKey, Counts> {
    let mut m = BTreeMap::new();
    for p in pools(report).iter().filter(|p| p["scope"] == "destination") {
        let key = (
            ip_of(p, "local_ip"),
            ip_of(p, "remote_ip"),
            u16::try_from(u64_at(p, "remote_port")).expect("remote_port fits u16"),
        );
        let counts = Counts {
            in_use: u64_at(p, "in_use"),
            established: u64_at(p, "established"),
            time_wait: u64_at(p, "time_wait"),
        };
        assert!(
            m.insert(key, counts).is_none(),
            "pool {key:?} appears twice in {report}"
        );
    }
    m
}

/// sockpop's (or the Python helper's) ground truth by pool: client-side established + TIME_WAIT.
pub fn truth_pools(truth: &Value) -> BTreeMap<PoolKey, Counts> {
    let list: Vec<Value> = match truth.get("pools") {
        Some(Value::Array(a)) => a.clone(),
        _ => vec![truth.clone()],
    };
    let mut m = BTreeMap::new();
    for p in &list {
        let established = p.get("established").and_then(Value::as_u64).unwrap_or(0);
        let time_wait = u64_at(p, "time_wait");
        if established + time_wait == 0 {
            continue;
        }
        let key = (
            normalize(ip_of(p, "local_ip")),
            normalize(ip_of(p, "remote_ip")),
            u16::try_from(u64_at(p, "remote_port")).expect("remote_port fits u16"),
        );
        let c: &mut Counts = m.entry(key).or_default();
        c.established += established;
        c.time_wait += time_wait;
        c.in_use += established + time_wait;
    }
    m
}

/// The findings with CODE.
pub fn findings<'a>(report: &'a Value, code: &str) -> Vec<&'a Value> {
    array_at(report, "verdict.findings")
        .iter()
        .filter(|f| f["code"] == code)
        .collect()
}

/// Every finding code of the report (for messages).
pub fn finding_codes(report: &Value) -> Vec<String> {
    array_at(report, "verdict.findings")
        .iter()
        .map(|f| f["code"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// Pools reduced to what two runs over the same population must agree on.
pub fn pool_summary(report: &Value) -> Vec<String> {
    let mut v: Vec<String> = pools(report)
        .iter()
        .map(|p| {
            format!(
                "{} {} {} {} in_use={} est={} tw={} blocking={} reuse={} cap={}",
                p["scope"],
                p["local_ip"],
                p["remote_ip"],
                p["remote_port"],
                p["in_use"],
                p["established"],
                p["time_wait"],
                p["blocking_time_wait"],
                p["tw_reuse_applies"],
                p["capacity"]
            )
        })
        .collect();
    v.sort();
    v
}

/// Checks a report against an independent `ss` reading of the same namespace and, when given,
/// against the population's ground truth: the range, every destination pool (key, in use,
/// established, TIME_WAIT), the state counts, the outbound total and each pool's capacity.
/// Returns the `ss` reading for further checks.
pub fn assert_agrees(ns: &Netns, report: &Value, truth: Option<&Value>) -> Ss {
    let range = ns.port_range();
    assert_eq!(
        (
            u64_at(report, "settings.ephemeral_ports.low"),
            u64_at(report, "settings.ephemeral_ports.high")
        ),
        (u64::from(range.0), u64::from(range.1)),
        "ephemeral range differs from the namespace's sysctl"
    );
    let ss = ns.ss();
    let got = report_pools(report);
    let from_ss = ss.pools(range);
    assert_eq!(
        got,
        from_ss,
        "portdoctor's pools differ from ss's\nss -Htan:\n{}",
        ns.ss_raw()
    );
    if let Some(truth) = truth {
        assert_eq!(
            got,
            truth_pools(truth),
            "portdoctor's pools differ from the ground truth {truth}"
        );
    }
    // ss 6.1 cannot list bound-only sockets (BOUND); tests that make them check them apart.
    let states: BTreeMap<String, u64> = at(report, "states")
        .as_object()
        .expect("states is an object")
        .iter()
        .filter(|(k, _)| k.as_str() != "BOUND")
        .map(|(k, v)| (k.clone(), v.as_u64().expect("state count")))
        .collect();
    assert_eq!(states, ss.states(), "state counts differ from ss");
    let sum: u64 = got.values().map(|c| c.in_use).sum();
    assert_eq!(
        u64_at(report, "sockets.outbound"),
        sum,
        "sockets.outbound != sum of pools' in_use"
    );
    assert_eq!(u64_at(report, "sockets.time_wait"), ss.count("TIME_WAIT"));
    assert_eq!(
        u64_at(report, "sockets.inbound"),
        ss.inbound(),
        "inbound differs from ss"
    );
    let usable = u64_at(report, "capacity.usable_per_pool");
    for p in pools(report) {
        assert_eq!(
            u64_at(p, "capacity"),
            usable,
            "pool capacity != usable_per_pool: {p}"
        );
    }
    // Contract: pools sorted by utilization, highest first; verdict.pools counts their levels.
    let utilization: Vec<f64> = pools(report)
        .iter()
        .map(|p| p["utilization"].as_f64().unwrap_or(-1.0))
        .collect();
    assert!(
        utilization.windows(2).all(|w| w[0] >= w[1]),
        "pools not sorted by utilization: {utilization:?}"
    );
    for level in ["critical", "warning", "ok"] {
        let n = pools(report).iter().filter(|p| p["level"] == level).count() as u64;
        assert_eq!(
            u64_at(report, &format!("verdict.pools.{level}")),
            n,
            "{level} pools"
        );
    }
    ss
}

/// The same namespace read through /proc/net/tcp{,6} (`--source procfs`) gives the same pools
/// (including blocking TIME_WAIT and capacity) and states as REPORT (netlink). With
/// `compare_rates`, also the same connect rates: only while the population's TIME_WAIT is well
/// inside the 10 s rate window, so that the two runs cannot straddle its edge.
pub fn assert_procfs_agrees(ns: &Netns, report: &Value, compare_rates: bool) {
    let (procfs, _) = ns.check_json(&["--source", "procfs"]);
    assert_eq!(str_at(&procfs, "source"), "procfs");
    assert_eq!(
        pool_summary(&procfs),
        pool_summary(report),
        "procfs vs netlink pools"
    );
    // The TIME_WAIT timers (ms in netlink, clock ticks in procfs) give the same rates.
    let rates = |r: &Value| -> Vec<String> {
        let mut v: Vec<String> = pools(r)
            .iter()
            .map(|p| {
                format!(
                    "{} {} {} {} rate={}",
                    p["scope"],
                    p["local_ip"],
                    p["remote_ip"],
                    p["remote_port"],
                    p["connect_rate_per_s"]
                )
            })
            .collect();
        v.sort();
        v
    };
    if compare_rates {
        assert_eq!(
            rates(&procfs),
            rates(report),
            "procfs vs netlink connect rates"
        );
    }
    assert_eq!(
        at(&procfs, "states"),
        at(report, "states"),
        "procfs vs netlink states"
    );
    assert_eq!(
        at(&procfs, "sockets"),
        at(report, "sockets"),
        "procfs vs netlink sockets"
    );
}

// ---------------------------------------------------------------------------------------------
// tune (tests/tune.rs)
// ---------------------------------------------------------------------------------------------

impl Netns {
    /// The exact text of /proc/sys/REL (e.g. `net/ipv4/tcp_tw_reuse`) inside the namespace.
    pub fn proc_sys_text(&self, rel: &str) -> String {
        run_ok(self.exec("cat").arg(Path::new("/proc/sys").join(rel)))
    }
}

/// Runs the binary with ARGS and extra environment (bounded); unlike [`portdoctor`] the process
/// may end by a signal (fault injection aborts it), so the raw output comes back.
pub fn portdoctor_raw(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(PORTDOCTOR);
    cmd.args(args).env_remove("NO_COLOR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_bounded(&mut cmd, CMD_TIMEOUT)
}

/// A socket's identity and state, for comparing two dumps of the same table.
pub type SocketKey = (u8, std::net::IpAddr, u16, std::net::IpAddr, u16, u64);

pub fn socket_key(s: &portdoctor::snapshot::Socket) -> SocketKey {
    (
        s.state as u8,
        s.local_ip,
        s.local_port,
        s.remote_ip,
        s.remote_port,
        s.inode,
    )
}

/// The sorted keys of a dump.
pub fn socket_table(sockets: &[portdoctor::snapshot::Socket]) -> Vec<SocketKey> {
    let mut v: Vec<SocketKey> = sockets.iter().map(socket_key).collect();
    v.sort_unstable();
    v
}
