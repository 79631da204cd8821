//! The lab's OS layer: its own network namespace (created, entered, verified, always removed),
//! SIGINT/SIGTERM handling, per-namespace sysctls, and client sockets that may bind() before
//! connect(). Linux only.
#![allow(unsafe_code)]

use std::fs;
use std::io;
use std::net::{SocketAddrV4, TcpStream};
use std::os::fd::FromRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::collect::linux::netns;
use crate::snapshot::Target;

use super::LabError;

/// Set by SIGINT/SIGTERM: every loop of the lab checks it and winds down, so the namespace
/// guard's Drop still runs.
static STOP: AtomicBool = AtomicBool::new(false);

/// The lab namespace's name while it exists, for the panic hook: release builds abort on
/// panic, so Drop would not run.
static LIVE_NAME: Mutex<Option<String>> = Mutex::new(None);

fn ip_netns_del(name: &str) {
    let _ = Command::new("ip")
        .args(["netns", "del", name])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Chains a panic hook that removes the live lab namespace before the process dies.
fn install_panic_cleanup() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let name = LIVE_NAME
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(name) = name {
                ip_netns_del(&name);
            }
            previous(info);
        }));
    });
}

pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

extern "C" fn on_signal(_sig: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, Ordering::Relaxed);
}

/// Routes SIGINT and SIGTERM to the stop flag (instead of killing the process before the
/// namespace is removed).
pub fn install_signal_handlers() -> Result<(), LabError> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction is a valid starting point; the handler only stores to an
        // atomic, which is async-signal-safe; pointers passed are valid for the call.
        let rc = unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&raw mut act.sa_mask);
            act.sa_flags = libc::SA_RESTART;
            libc::sigaction(sig, &raw const act, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(LabError::Os {
                what: "installing the SIGINT/SIGTERM handler".into(),
                source: io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}

fn ns_inode(path: &str) -> io::Result<u64> {
    fs::metadata(path).map(|m| m.ino())
}

fn ip(args: &[&str]) -> Result<(), LabError> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| LabError::Os {
            what: format!("running `ip {}` (is iproute2 installed?)", args.join(" ")),
            source: e,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(LabError::Namespace(format!(
            "`ip {}` failed: {}; the lab needs root (or CAP_SYS_ADMIN) to create a network namespace",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// A network namespace this process created and lives in. Dropping it removes the name
/// (`ip netns del`); the namespace itself ends when this process exits, taking every socket of
/// the lab with it.
pub struct LabNamespace {
    pub name: String,
    host_inode: u64,
    inode: u64,
    removed: bool,
}

impl LabNamespace {
    /// Creates `portdoctor-lab-<pid>-<nanos>`, brings lo up and moves this process into it. Call
    /// on the main thread before any other thread exists: setns(2) moves only the calling
    /// thread, threads spawned later inherit it, and /proc/self/net follows the main thread.
    pub fn create() -> Result<Self, LabError> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("portdoctor-lab-{}-{nanos:x}", std::process::id());
        let host_inode = ns_inode("/proc/self/ns/net").map_err(|e| LabError::Os {
            what: "reading /proc/self/ns/net".into(),
            source: e,
        })?;
        install_panic_cleanup();
        ip(&["netns", "add", &name])?;
        *LIVE_NAME.lock().unwrap_or_else(PoisonError::into_inner) = Some(name.clone());
        // From here on the guard exists, so any error below still removes the namespace.
        let mut ns = LabNamespace {
            name,
            host_inode,
            inode: 0,
            removed: false,
        };
        ns.inode = ns_inode(&format!("/run/netns/{}", ns.name)).map_err(|e| LabError::Os {
            what: format!("reading /run/netns/{}", ns.name),
            source: e,
        })?;
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        // The handle may close: this thread stays in the namespace it entered.
        netns::enter(&Target::Netns(ns.name.clone()))
            .map_err(|e| LabError::Namespace(e.to_string()))?;
        ns.verify()?;
        Ok(ns)
    }

    /// Refuses to go on unless the calling thread is inside this namespace and it is not the
    /// namespace the process started in.
    pub fn verify(&self) -> Result<(), LabError> {
        let now = ns_inode("/proc/thread-self/ns/net").map_err(|e| LabError::Os {
            what: "reading /proc/thread-self/ns/net".into(),
            source: e,
        })?;
        let leader = ns_inode("/proc/self/ns/net").unwrap_or(0);
        if now != self.inode || leader != self.inode || now == self.host_inode {
            return Err(LabError::Namespace(format!(
                "refusing to run: this thread is not inside the lab's own network namespace {} (thread {now}, process {leader}, lab {}, host {})",
                self.name, self.inode, self.host_inode
            )));
        }
        Ok(())
    }

    /// Writes a sysctl of the lab's namespace (and only there: it verifies first).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), LabError> {
        self.verify()?;
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        fs::write(&path, value).map_err(|e| LabError::Os {
            what: format!("writing {value:?} to {}", path.display()),
            source: e,
        })
    }

    /// Reads a sysctl of the lab's namespace.
    pub fn read_sysctl(&self, key: &str) -> Option<String> {
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        fs::read_to_string(path).ok().map(|s| s.trim().to_string())
    }

    /// Removes the name now (also done on Drop); returns whether it is gone.
    pub fn remove(&mut self) -> bool {
        if !self.removed {
            for _ in 0..20 {
                ip_netns_del(&self.name);
                if !PathBuf::from("/run/netns").join(&self.name).exists() {
                    self.removed = true;
                    *LIVE_NAME.lock().unwrap_or_else(PoisonError::into_inner) = None;
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
        self.removed
    }
}

impl Drop for LabNamespace {
    fn drop(&mut self) {
        if !self.remove() {
            eprintln!(
                "portdoctor: warning: could not remove network namespace {}: run `ip netns del {}`",
                self.name, self.name
            );
        }
    }
}

/// An IPv4 TCP connection to `dst`, optionally after bind(src, port 0). The error keeps the
/// errno: EADDRNOTAVAIL from connect(), EADDRINUSE from bind().
pub fn connect(dst: SocketAddrV4, bind_from: Option<SocketAddrV4>) -> io::Result<TcpStream> {
    let Some(src) = bind_from else {
        return TcpStream::connect(dst);
    };
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, owned descriptor; the stream closes it from now on.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let sin = |a: SocketAddrV4| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let local = sin(src);
    // SAFETY: the address is a valid sockaddr_in of `len` bytes for the call.
    if unsafe { libc::bind(fd, (&raw const local).cast(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let remote = sin(dst);
    // SAFETY: as above; blocking connect on a loopback address.
    if unsafe { libc::connect(fd, (&raw const remote).cast(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stream)
}

/// An IPv4 UDP socket that was never bound, connected to `dst`: its port comes from the
/// implicit bind of connect() (`inet_autobind`), which fails with EAGAIN when the range is
/// full (docs/udp.md). std's `UdpSocket` always binds first, which fails otherwise.
pub fn udp_connect(dst: SocketAddrV4) -> io::Result<std::net::UdpSocket> {
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, owned descriptor; the socket closes it from now on.
    let sock = unsafe { std::net::UdpSocket::from_raw_fd(fd) };
    let remote = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: dst.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*dst.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: the address is a valid sockaddr_in of `len` bytes for the call.
    if unsafe { libc::connect(fd, (&raw const remote).cast(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sock)
}
