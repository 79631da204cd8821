//! Socket populations inside a test namespace, with their ground truth: sockpop from
//! `../shared/tools` (built once per test process) and two small Python helpers (client-side
//! TIME_WAIT to any address of the namespace; bound-only sockets).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use super::netns::Netns;
use super::process::{run_bounded, run_ok, wait_until, Background};
use super::report::{ip_of, u64_at};
use super::ss::{normalize, Counts, PoolKey};

/// Upper bound for a population to become ready (its ground-truth file to appear).
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a population helper holds its sockets at most; tests finish well before.
pub const HOLD_SECONDS: &str = "60";

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

impl Netns {
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
