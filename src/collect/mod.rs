//! Observing the OS: one collector per OS behind [`Collector`], so the analysis and the
//! renderers never know where a snapshot came from. A collector owns its [`Target`]: it opens
//! the namespace once and enters it on whichever thread collects.
//!
//! - `linux`: sockets (sock_diag, or /proc/net/tcp{,6}), settings, counters and owners; its
//!   `netns` is the only code that opens a namespace and calls setns(2) (`lab` and
//!   `tune rollback` enter their namespaces through it too); its `namespaces` finds and
//!   collects every namespace of the host (`--all-namespaces`).
//! - [`identity`]: who lives in a namespace (container, pod), pure parsers of the files
//!   `linux::namespaces` reads.
//! - `windows` (Windows builds only): the same through IP Helper, the registry, netsh and the
//!   event log; [`windows_text`] holds its text parsers, pure and compiled everywhere.
//! - [`refresh`]: repeated collection for `top`, skipping the costly parts while the kernel's
//!   counters say nothing changed.
//!
//! The OS is also reached outside this module, for other jobs: `tune::linux` writes settings
//! (/proc/sys, sysctl.d) and its backups; `lab::sys` and `lab::run` create the lab's own
//! namespace, its sysctls and its sockets; the binary's commands own the terminal (`top`), the
//! HTTP server (`serve`) and output files.

pub mod failures;
pub mod identity;
#[cfg(target_os = "linux")]
pub mod linux;
pub mod refresh;
#[cfg(windows)]
pub mod windows;
pub mod windows_text;

use std::path::PathBuf;

pub use crate::snapshot::Target;
use crate::snapshot::{Owners, Snapshot, Socket, UdpSocket};

/// Produces one snapshot of the OS state. `Send + Sync`: `top` and `serve` build one collector
/// (opening the target once) and collect from worker threads.
pub trait Collector: Send + Sync {
    fn snapshot(&self) -> Result<Snapshot, CollectError>;

    /// The parts of a snapshot one at a time, for collectors where the socket dump or the
    /// owner scan is costly enough that a [`refresh::Refresher`] should skip them when nothing
    /// changed. `None` (the default): every refresh takes a full snapshot.
    fn parts(&self) -> Option<&dyn PartialCollector> {
        None
    }
}

/// A snapshot in parts (see [`Collector::parts`]).
pub trait PartialCollector {
    /// Settings and counters only: `sockets` empty, `owners` `None`. A few small reads (and
    /// the UDP sockets where the collector has them: no counter tells when those change).
    fn without_sockets(&self) -> Result<Snapshot, CollectError>;
    /// Everything but the owner scan.
    fn without_owners(&self) -> Result<Snapshot, CollectError>;
    /// Everything but the owner scan and bound-only sockets (`bind()` without listen or
    /// connect), which are the costly part of a dump to find and change rarely.
    fn connections_only(&self) -> Result<Snapshot, CollectError>;
    /// Listening sockets only (the listening hash: small and cheap to dump).
    fn listeners(&self) -> Result<Vec<Socket>, CollectError>;
    /// The owners of these sockets.
    fn scan_owners(&self, sockets: &[Socket]) -> Owners;
    /// The owners of these TCP and UDP sockets (in one scan where the collector can).
    fn scan_owners_with_udp(&self, sockets: &[Socket], udp: &[UdpSocket]) -> Owners {
        let _ = udp;
        self.scan_owners(sockets)
    }
}

/// The note a snapshot carries when some processes could not be inspected for owners.
pub fn hidden_owners_note(owners: &Owners) -> Option<String> {
    let n = owners.hidden_processes;
    (n > 0).then(|| {
        let count = if n == 1 {
            "1 process".to_string()
        } else {
            format!("{n} processes")
        };
        let named: Vec<String> = owners
            .hidden_examples
            .iter()
            .map(|h| format!("pid {} {}: {}", h.pid, h.name, h.error))
            .collect();
        let more = (n as usize).saturating_sub(named.len());
        let which = if named.is_empty() {
            String::new()
        } else if more > 0 {
            format!(" ({}; and {more} more)", named.join("; "))
        } else {
            format!(" ({})", named.join("; "))
        };
        if owners.scanned_as_root {
            format!(
                "{count} could not be inspected for socket owners even as root{which}: the kernel refuses {} descriptors (another user namespace, or a security module), so {} sockets show no owner",
                if n == 1 { "its" } else { "their" },
                if n == 1 { "its" } else { "their" }
            )
        } else {
            format!(
                "{count} could not be inspected for socket owners{which} (run as root, or with CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH, to see them)"
            )
        }
    })
}

/// Which socket source to use on Linux.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SourcePreference {
    /// Netlink, falling back to procfs (with a note) when netlink is unavailable.
    #[default]
    Auto,
    Netlink,
    Procfs,
}

#[derive(Debug, Clone, Default)]
pub struct CollectOptions {
    pub source: SourcePreference,
    pub owners: bool,
    pub target: Target,
}

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("network namespace {name:?} not found at {path}: list them with `ip netns list`")]
    NamespaceNotFound { name: String, path: PathBuf },
    #[error("{0}")]
    InvalidTarget(String),
    #[error("{path} is not a network namespace (a file under /run/netns that `ip netns add` did not create?): check `ip netns list`")]
    NotANamespace { path: PathBuf },
    #[error("process {pid} not found (or its network namespace is not visible): check the pid")]
    ProcessNotFound { pid: u32 },
    /// `place`: the target as it reads in a sentence ("network namespace web").
    #[error("cannot enter {place}: {source}; entering a namespace needs root or CAP_SYS_ADMIN")]
    NamespaceEnter {
        place: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("netlink sock_diag failed: {0}")]
    Netlink(#[source] std::io::Error),
    #[error("netlink sock_diag sent something unexpected: {0}")]
    NetlinkProtocol(String),
    #[error("{0} is not supported on this operating system")]
    Unsupported(&'static str),
    #[error("{call} failed with Windows error {code}")]
    WinApi { call: &'static str, code: u32 },
}

/// The collector for the OS this binary was built for.
pub fn native(opts: CollectOptions) -> Result<Box<dyn Collector>, CollectError> {
    #[cfg(target_os = "linux")]
    {
        Ok(Box::new(linux::LinuxCollector::new(opts)?))
    }
    #[cfg(windows)]
    {
        Ok(Box::new(windows::WindowsCollector::new(opts)))
    }
    #[cfg(not(any(target_os = "linux", windows)))]
    {
        let _ = opts;
        Err(CollectError::Unsupported("collecting sockets"))
    }
}
