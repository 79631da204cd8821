//! The network namespace guard: every test gets its own namespace (`pdt-<pid>-<n>-<tag>`), and
//! [`Netns`]'s `Drop` kills every process left inside it and deletes it, also when the test
//! panics. Creating namespaces needs root ([`require_root`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use super::process::{kill_signal, run_ok, Background};

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
        Background::new(child, what, stderr_path)
    }
}

impl Netns {
    /// The exact text of /proc/sys/REL (e.g. `net/ipv4/tcp_tw_reuse`) inside the namespace.
    pub fn proc_sys_text(&self, rel: &str) -> String {
        run_ok(self.exec("cat").arg(Path::new("/proc/sys").join(rel)))
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
