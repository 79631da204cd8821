//! Entering another network namespace with setns(2).
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use crate::collect::{CollectError, Namespace};

/// Moves the calling thread into `ns`. Call before opening netlink sockets (bound to the
/// namespace at creation) and before other threads start (they inherit it). The collector
/// reads /proc/thread-self/net, which follows this thread; /proc/net follows the main thread.
pub fn enter(ns: &Namespace) -> Result<(), CollectError> {
    let (path, label) = match ns {
        Namespace::Current => return Ok(()),
        Namespace::Named(name) => {
            if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                return Err(CollectError::NamespaceNotFound {
                    name: name.clone(),
                    path: PathBuf::from("/run/netns").join(name),
                });
            }
            (PathBuf::from("/run/netns").join(name), name.clone())
        }
        Namespace::Pid(pid) => (
            PathBuf::from(format!("/proc/{pid}/ns/net")),
            format!("of pid {pid}"),
        ),
    };
    let file = File::open(&path).map_err(|e| match (ns, e.kind()) {
        (Namespace::Named(name), std::io::ErrorKind::NotFound) => CollectError::NamespaceNotFound {
            name: name.clone(),
            path: path.clone(),
        },
        (Namespace::Pid(pid), std::io::ErrorKind::NotFound) => {
            CollectError::ProcessNotFound { pid: *pid }
        }
        _ => CollectError::NamespaceEnter {
            name: label.clone(),
            source: e,
        },
    })?;
    // SAFETY: the descriptor is valid for the duration of the call (file is alive).
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(CollectError::NamespaceEnter {
            name: label,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}
