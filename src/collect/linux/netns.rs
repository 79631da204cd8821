//! Network namespaces: the one place that opens a namespace file and calls setns(2).
//!
//! A [`NetnsHandle`] opens the namespace file once and keeps the descriptor, so a long `top` or
//! `serve --pid` keeps reading the namespace after the process that led to it exits (the
//! descriptor keeps the namespace alive), and a name that is re-created later cannot swap the
//! namespace under a running command.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::collect::CollectError;
use crate::snapshot::{NetnsId, Target};

/// Where `ip netns add` keeps its namespace files.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// `NS_GET_NSTYPE` (`_IO(0xb7, 0x3)`, linux/nsfs.h, Linux 4.11): the namespace type of an
/// nsfs descriptor; any other file answers ENOTTY.
// `libc::Ioctl`: the request is `c_ulong` in glibc but `c_int` in musl (the static build).
const NS_GET_NSTYPE: libc::Ioctl = 0xb703;

/// An open network namespace, entered on demand.
#[derive(Debug)]
pub struct NetnsHandle {
    file: File,
    target: Target,
    id: NetnsId,
}

impl NetnsHandle {
    /// Opens the namespace `target` names; `None` for [`Target::Host`] (nothing to enter).
    pub fn open(target: &Target) -> Result<Option<Self>, CollectError> {
        let path = match target {
            Target::Host => return Ok(None),
            Target::Netns(name) => {
                Target::check_netns_name(name).map_err(CollectError::InvalidTarget)?;
                Path::new(NETNS_RUN_DIR).join(name)
            }
            Target::Process(pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
        };
        Self::open_path(&path, target).map(Some)
    }

    /// Opens the namespace file at `path` (any nsfs file: a bind mount under /run/netns, a
    /// process's `ns/net`); `target` is what the snapshot will say it inspected.
    pub fn open_path(path: &Path, target: &Target) -> Result<Self, CollectError> {
        let path = path.to_path_buf();
        // O_NONBLOCK: a FIFO planted under /run/netns must not hang the open.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| match (target, e.kind()) {
                (Target::Netns(name), std::io::ErrorKind::NotFound) => {
                    CollectError::NamespaceNotFound {
                        name: name.clone(),
                        path: path.clone(),
                    }
                }
                (Target::Process(pid), std::io::ErrorKind::NotFound) => {
                    CollectError::ProcessNotFound { pid: *pid }
                }
                _ => CollectError::NamespaceEnter {
                    place: target.to_string(),
                    source: e,
                },
            })?;
        // SAFETY: the descriptor is valid while `file` lives; the ioctl takes no argument.
        let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) };
        if kind != libc::CLONE_NEWNET {
            return Err(CollectError::NotANamespace { path });
        }
        let meta = file.metadata().map_err(|source| CollectError::Read {
            path: path.clone(),
            source,
        })?;
        Ok(Self {
            file,
            target: target.clone(),
            id: NetnsId {
                dev: meta.dev(),
                ino: meta.ino(),
            },
        })
    }

    /// Moves the calling thread into the namespace. setns(2) is per thread: netlink sockets
    /// opened afterwards and /proc/thread-self/net belong to it; /proc/net follows the main
    /// thread, so readers use /proc/thread-self/net.
    pub fn enter(&self) -> Result<(), CollectError> {
        // SAFETY: the descriptor is valid for the duration of the call (`self.file` is alive).
        let rc = unsafe { libc::setns(self.file.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(CollectError::NamespaceEnter {
                place: self.target.to_string(),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    pub fn id(&self) -> NetnsId {
        self.id
    }

    /// For `--pid`: a note once the process has left the namespace (exited, or moved), while
    /// this handle keeps reading the namespace it opened.
    pub fn departed_note(&self) -> Option<String> {
        let Target::Process(pid) = self.target else {
            return None;
        };
        let now = id_of(Path::new(&format!("/proc/{pid}/ns/net")));
        (now != Some(self.id)).then(|| {
            format!(
                "process {pid} has exited (or left the namespace): still reading its network namespace (inode {}), kept open by portdoctor; restart with a live --pid to follow a new one",
                self.id.ino
            )
        })
    }
}

/// Enters `target` on the calling thread and returns the handle that keeps it open
/// (`None` for the host).
pub fn enter(target: &Target) -> Result<Option<NetnsHandle>, CollectError> {
    let handle = NetnsHandle::open(target)?;
    if let Some(h) = &handle {
        h.enter()?;
    }
    Ok(handle)
}

/// The namespace identity of an nsfs file (stat follows the `ns/net` magic link).
pub fn id_of(path: &Path) -> Option<NetnsId> {
    let meta = std::fs::metadata(path).ok()?;
    Some(NetnsId {
        dev: meta.dev(),
        ino: meta.ino(),
    })
}

/// The namespace the calling thread is in now.
pub fn current_id() -> Option<NetnsId> {
    id_of(Path::new("/proc/thread-self/ns/net"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_target_opens_nothing() {
        assert!(NetnsHandle::open(&Target::Host).unwrap().is_none());
    }

    #[test]
    fn own_process_namespace_is_the_current_one() {
        let me = std::process::id();
        let h = NetnsHandle::open(&Target::Process(me)).unwrap().unwrap();
        assert_eq!(Some(h.id()), id_of(Path::new("/proc/self/ns/net")));
        assert!(h.departed_note().is_none());
    }
}
