//! `portdoctor top` end to end in tmux (root): a detached session runs `top --netns` while a
//! bounded Python loop churns loopback connections inside a test namespace; capture-pane shows
//! the pool appear and its count rise; keys sort, filter, pause and quit; afterwards the pane is
//! back at the shell prompt with the same `stty -a` as before. The session is killed on drop.
#![cfg(target_os = "linux")]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{python, require_root, wait_until, Netns, PORTDOCTOR};

/// A detached tmux session on its own server socket; killed (server and all) on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new(tag: &str, width: u16, height: u16) -> Tmux {
        let t = Tmux {
            socket: format!("pdt-top-{}-{tag}", std::process::id()),
        };
        let ok = t
            .cmd()
            .args(["new-session", "-d", "-s", "top", "-x"])
            .arg(width.to_string())
            .arg("-y")
            .arg(height.to_string())
            .args([
                "env",
                "PS1=READY$ ",
                "TERM=xterm-256color",
                "bash",
                "--norc",
                "--noprofile",
            ])
            .status()
            .expect("tmux must be installed (test.sh installs it)");
        assert!(ok.success(), "tmux new-session failed");
        t
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    fn capture(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", "top"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let ok = self
            .cmd()
            .args(["send-keys", "-t", "top"])
            .args(keys)
            .status()
            .expect("tmux send-keys");
        assert!(ok.success());
    }

    /// Resizes the window as a terminal emulator would (top gets SIGWINCH).
    fn resize(&self, width: u16, height: u16) {
        let ok = self
            .cmd()
            .args(["resize-window", "-t", "top", "-x"])
            .arg(width.to_string())
            .arg("-y")
            .arg(height.to_string())
            .status()
            .expect("tmux resize-window");
        assert!(ok.success(), "tmux resize-window failed");
    }

    fn wait_for(&self, what: &str, timeout: Duration, f: impl Fn(&str) -> bool) -> String {
        wait_until(timeout, || {
            let screen = self.capture();
            f(&screen).then_some(screen)
        })
        .unwrap_or_else(|| panic!("timed out waiting for {what}; screen:\n{}", self.capture()))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").status();
    }
}

const POOL: &str = "127.0.0.1 → 127.0.0.1:47010";

/// IN USE of the test pool on this screen.
fn in_use(screen: &str) -> Option<u64> {
    let line = screen.lines().find(|l| l.starts_with(POOL))?;
    line.split_whitespace()
        .nth(3)?
        .replace(',', "")
        .parse()
        .ok()
}

/// Server accepts and closes; the client connects and closes first (client-side TIME_WAIT),
/// about 100 connections/s, for at most 25 s.
const LOAD: &str = r"
import socket, threading, time
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(('127.0.0.1', 47010)); srv.listen(256); srv.settimeout(0.5)
end = time.time() + 25
def accept():
    while time.time() < end + 1:
        try:
            c, _ = srv.accept(); c.close()
        except OSError:
            pass
threading.Thread(target=accept, daemon=True).start()
while time.time() < end:
    for _ in range(10):
        s = socket.socket(); s.connect(('127.0.0.1', 47010)); s.close()
    time.sleep(0.1)
";

/// The table's header row.
fn table_header(screen: &str) -> Option<&str> {
    screen.lines().find(|l| l.starts_with("POOL "))
}

/// `stty -a` inside the pane, written to `path` and read back, without the first line (speed,
/// rows and columns: the window size is the test's to change).
fn stty(tmux: &Tmux, path: &std::path::Path) -> String {
    tmux.keys(&[&format!("stty -a > {}", path.display()), "Enter"]);
    let text = wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(path)
            .ok()
            .filter(|t| t.lines().count() > 1)
    })
    .expect("stty -a");
    text.lines().skip(1).collect::<Vec<_>>().join("\n")
}

/// A panic inside top (injected after two samples; debug builds only) still leaves raw mode
/// and the alternate screen: the shell comes back with the same terminal modes, and the panic
/// message is readable on the normal screen.
#[test]
fn top_restores_the_terminal_after_a_panic() {
    if !require_root("top_restores_the_terminal_after_a_panic") {
        return;
    }
    let ns = Netns::new("toppanic");
    let tmux = Tmux::new("panic", 100, 30);
    tmux.wait_for("the shell prompt", Duration::from_secs(10), |s| {
        s.contains("READY$")
    });
    let before = stty(&tmux, &ns.path("stty-before"));
    tmux.keys(&[
        &format!(
            "PORTDOCTOR_FAULT_TOP_PANIC_AFTER_SAMPLES=2 {PORTDOCTOR} top --netns {} --interval 200ms; echo EXIT=$?",
            ns.name
        ),
        "Enter",
    ]);
    let after_panic = tmux.wait_for("the shell after the panic", Duration::from_secs(15), |s| {
        s.contains("EXIT=101")
    });
    assert!(
        after_panic.contains("fault injection"),
        "panic message not shown:\n{after_panic}"
    );
    assert!(
        !after_panic.contains("POOL local"),
        "still on top's screen:\n{after_panic}"
    );
    let after = stty(&tmux, &ns.path("stty-after"));
    assert_eq!(before, after, "the panic left the terminal modes changed");
}

#[test]
fn top_in_tmux_shows_a_rising_pool_and_restores_the_terminal() {
    if !require_root("top_in_tmux_shows_a_rising_pool_and_restores_the_terminal") {
        return;
    }
    let ns = Netns::new("top");
    let tmux = Tmux::new("rise", 100, 30);
    tmux.wait_for("the shell prompt", Duration::from_secs(10), |s| {
        s.contains("READY$")
    });
    let stty_before = stty(&tmux, &ns.path("stty-before"));
    let after = ns.path("stty-after");
    tmux.keys(&[
        &format!("{PORTDOCTOR} top --netns {} --interval 500ms", ns.name),
        "Enter",
    ]);
    tmux.wait_for("top's first frame", Duration::from_secs(15), |s| {
        s.contains("portdoctor top ·") && s.contains(&format!("netns {}", ns.name))
    });

    let mut load = ns.exec(python());
    load.args(["-c", LOAD]);
    let _load = ns.spawn("load", load);

    let first = tmux.wait_for("the pool to appear", Duration::from_secs(15), |s| {
        in_use(s).is_some()
    });
    let n0 = in_use(&first).unwrap_or(0);
    let rising = tmux.wait_for("its count to rise", Duration::from_secs(15), |s| {
        in_use(s).is_some_and(|n| n >= n0 + 100)
    });
    assert!(rising.contains("NEW/s"), "{rising}");

    // Sort by in use, then filter by the port.
    tmux.keys(&["i"]);
    tmux.wait_for("sort by in use", Duration::from_secs(5), |s| {
        s.contains("sort in use")
    });
    tmux.keys(&["/", "47010", "Enter"]);
    tmux.wait_for("the filter", Duration::from_secs(5), |s| {
        s.contains("filter \"47010\" 1/1")
    });

    // Pause: the count stops moving.
    tmux.keys(&["Space"]);
    let paused = tmux.wait_for("PAUSED", Duration::from_secs(5), |s| s.contains("PAUSED"));
    let frozen = in_use(&paused);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(in_use(&tmux.capture()), frozen, "counts moved while paused");
    tmux.keys(&["Space"]);
    tmux.wait_for("running again", Duration::from_secs(5), |s| {
        s.contains("every 500 ms")
    });

    // Resize: 80 columns drop the TIME_WAIT column, 120 add CAPACITY and TREND.
    tmux.resize(80, 24);
    tmux.wait_for("the 80-column layout", Duration::from_secs(5), |s| {
        table_header(s).is_some_and(|h| !h.contains("TIME_WAIT"))
            && s.lines().all(|l| l.chars().count() <= 80)
    });
    tmux.resize(120, 30);
    tmux.wait_for("the 120-column layout", Duration::from_secs(5), |s| {
        table_header(s).is_some_and(|h| h.contains("CAPACITY") && h.contains("TREND"))
    });

    tmux.keys(&["q"]);
    tmux.wait_for("the shell after quit", Duration::from_secs(10), |s| {
        !s.contains("portdoctor top ·") && s.contains("READY$")
    });
    let stty_after = stty(&tmux, &after);
    assert_eq!(
        stty_before, stty_after,
        "top left the terminal modes changed"
    );
}

/// `top -A`: a pod's namespace (its process in a kubelet-style cgroup, a pods directory) shows
/// its pools under NAMESPACE/POD, the filter finds them by the pod's name, and the detail pane
/// names pod and container.
#[test]
fn top_all_namespaces_names_pods_and_filters_by_them() {
    const UID: &str = "4a1e28ba-2fa1-11d2-883f-0016d3cca427";
    const ID: &str = "6e2a9c1b8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a";
    if !require_root("top_all_namespaces_names_pods_and_filters_by_them") {
        return;
    }
    let ns = Netns::new("topall");
    let pop = ns.sockpop(&[
        "--ports",
        "20000",
        "--dst",
        "127.0.0.1",
        "--established",
        "40",
    ]);
    let _cg = common::Cgroup::new(
        &format!(
            "pdt{}top/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope",
            std::process::id(),
            UID.replace('-', "_")
        ),
        pop.pid(),
    );
    let pods = ns.path("pods");
    std::fs::create_dir_all(pods.join(format!("shop_cart-5d8_{UID}"))).expect("pods dir");

    let tmux = Tmux::new("all", 140, 40);
    tmux.wait_for("the shell prompt", Duration::from_secs(10), |s| {
        s.contains("READY$")
    });
    tmux.keys(&[
        &format!(
            "{PORTDOCTOR} top -A --no-owners --pods-dir {} --interval 500ms",
            pods.display()
        ),
        "Enter",
    ]);
    let row = |s: &str| -> Option<String> {
        s.lines()
            .find(|l| l.starts_with("shop/cart-5d8") && l.contains("127.0.0.1 → 127.0.0.1:2"))
            .map(str::to_string)
    };
    tmux.wait_for("top's first frame", Duration::from_secs(60), |s| {
        s.contains("NAMESPACE/POD")
    });
    // Filter by the pod's name: only its namespace's pools stay (whatever else the host runs).
    tmux.keys(&["/", "cart-5d8", "Enter"]);
    let filtered = tmux.wait_for("the pod's pool, filtered", Duration::from_secs(60), |s| {
        s.contains("filter \"cart-5d8\"") && row(s).is_some()
    });
    let line = row(&filtered).unwrap_or_default();
    assert!(
        line.split_whitespace().any(|w| w == "40"),
        "40 connections in use: {line}"
    );
    let table: Vec<&str> = filtered
        .lines()
        .skip_while(|l| !l.starts_with("NAMESPACE/POD"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .collect();
    assert!(
        !table.is_empty() && table.iter().all(|l| l.starts_with("shop/cart-5d8")),
        "{filtered}"
    );
    // The detail pane names pod and container.
    tmux.keys(&["Enter"]);
    tmux.wait_for(
        "the identity in the detail pane",
        Duration::from_secs(5),
        |s| s.contains(&format!("pod shop/cart-5d8 · containerd {}", &ID[..12])),
    );
    tmux.keys(&["q"]);
    tmux.wait_for("the shell after quit", Duration::from_secs(10), |s| {
        !s.contains("portdoctor top ·") && s.contains("READY$")
    });
}

/// Range 40000–40009 held full, then failing connects (EADDRNOTAVAIL), about 50/s, at most 25 s.
const FAILING: &str = r"
import socket, time
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(('127.0.0.3', 7001)); srv.listen(64)
held = [socket.create_connection(('127.0.0.3', 7001)) for _ in range(10)]
end = time.time() + 25
while time.time() < end:
    s = socket.socket()
    try:
        s.connect(('127.0.0.3', 7001)); raise SystemExit('connect succeeded')
    except OSError:
        pass
    s.close(); time.sleep(0.02)
";

const FAIL_POOL: &str = "127.0.0.1 → 127.0.0.3:7001";

/// `top` traces failed connects while it runs: the pool shows FAIL/s, and the detail pane the
/// last failures with time, process and pool.
#[test]
fn top_in_tmux_shows_failed_connects_per_pool() {
    if !require_root("top_in_tmux_shows_failed_connects_per_pool") {
        return;
    }
    let ns = Netns::new("topfail");
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 40009");
    let tmux = Tmux::new("fail", 120, 30);
    tmux.wait_for("the shell prompt", Duration::from_secs(10), |s| {
        s.contains("READY$")
    });
    tmux.keys(&[
        &format!("{PORTDOCTOR} top --netns {} --interval 500ms", ns.name),
        "Enter",
    ]);
    // The header counts failures once the tracer runs (no table yet: no pool).
    tmux.wait_for("the tracer", Duration::from_secs(15), |s| {
        s.contains("failed connects 0")
    });
    let mut load = ns.exec(python());
    load.args(["-c", FAILING]);
    let load = ns.spawn("failing", load);
    // The row's text under the header's FAIL/s (a 6-wide column; characters, not bytes).
    let fail_rate = |s: &str| -> Option<f64> {
        let header: Vec<char> = table_header(s)?.chars().collect();
        let at =
            (0..header.len()).find(|&i| header[i..].starts_with(&['F', 'A', 'I', 'L', '/']))?;
        let row: Vec<char> = s
            .lines()
            .find(|l| l.starts_with(FAIL_POOL))?
            .chars()
            .collect();
        let cell: String = row.get(at..at + 6)?.iter().collect();
        cell.trim().replace(',', "").parse().ok()
    };
    let screen = tmux.wait_for("failures in the pool", Duration::from_secs(20), |s| {
        fail_rate(s).is_some_and(|r| r >= 5.0)
    });
    tmux.keys(&["/", "7001", "Enter"]);
    tmux.wait_for("the filter", Duration::from_secs(5), |s| {
        s.contains("filter \"7001\" 1/1")
    });
    tmux.keys(&["Enter"]);
    let pid = load.pid;
    let detail = tmux.wait_for("the last failures", Duration::from_secs(10), |s| {
        s.lines().any(|l| {
            l.starts_with("failed ")
                && l.contains(&format!("(pid {pid})"))
                && l.contains(&format!("{FAIL_POOL} EADDRNOTAVAIL"))
        })
    });
    assert!(
        detail.contains("UTC python3"),
        "time and process name: {detail}\nbefore: {screen}"
    );
    tmux.keys(&["q"]);
    tmux.wait_for("the shell after quit", Duration::from_secs(10), |s| {
        !s.contains("portdoctor top ·") && s.contains("READY$")
    });
}
