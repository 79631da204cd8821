//! Which network namespace this thread is in: the nsfs device and inode of
//! `/proc/thread-self/ns/net` (the same pair `ip netns identify` compares), its name under
//! /run/netns when it has one, and whether it is the initial namespace (that of pid 1).
//!
//! A backup records this identity; a rollback compares it with the namespace it runs in, so a
//! backup taken in one namespace is never written into another one (same name re-created
//! counts as another namespace: a new inode).

use std::fmt;
use std::fs;

use crate::collect::linux::netns;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The identity of a network namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetnsIdentity {
    /// `st_dev` of the nsfs inode.
    pub dev: u64,
    /// `st_ino` of the nsfs inode (`net:[INODE]` in `readlink /proc/self/ns/net`).
    pub ino: u64,
    /// Its name under /run/netns, when it has one (the `--netns` name, or found by inode).
    pub name: Option<String>,
    /// It is the namespace of pid 1 (the host's own, whose /etc/sysctl.d is applied at boot).
    pub initial: bool,
}

impl NetnsIdentity {
    /// The namespace the calling thread is in now. `entered` is the `--netns` name it entered,
    /// if any; otherwise the name is looked up in /run/netns by inode (stat only: a FIFO or any
    /// other file there is never opened).
    pub fn current(entered: Option<&str>) -> std::io::Result<Self> {
        let (dev, ino) = thread_netns()?;
        let initial = is_initial(dev, ino) == Some(true);
        let name = match entered {
            Some(n) => Some(n.to_string()),
            None if initial => None,
            None => name_by_inode(Path::new("/run/netns"), dev, ino),
        };
        Ok(Self {
            dev,
            ino,
            name,
            initial,
        })
    }

    /// Same namespace (names are labels; the inode is the namespace).
    pub fn same_namespace(&self, other: &Self) -> bool {
        self.dev == other.dev && self.ino == other.ino
    }
}

impl fmt::Display for NetnsIdentity {
    /// `lab1 (net:[4026532890])`, `the host's own namespace (net:[4026531833])`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.name, self.initial) {
            (Some(n), _) => write!(f, "{n} (net:[{}])", self.ino),
            (None, true) => write!(f, "the host's own namespace (net:[{}])", self.ino),
            (None, false) => write!(f, "an unnamed namespace (net:[{}])", self.ino),
        }
    }
}

/// (dev, ino) of the calling thread's network namespace (`collect::linux::netns` owns how
/// a namespace is identified).
pub fn thread_netns() -> std::io::Result<(u64, u64)> {
    netns::current_id()
        .map(|id| (id.dev, id.ino))
        .ok_or_else(|| std::io::Error::other("/proc/thread-self/ns/net cannot be read"))
}

/// (dev, ino) of the initial network namespace: that of pid 1. Needs root (ptrace access to
/// pid 1); an error means "unknown".
pub fn initial_netns() -> std::io::Result<(u64, u64)> {
    netns::id_of(std::path::Path::new("/proc/1/ns/net"))
        .map(|id| (id.dev, id.ino))
        .ok_or_else(|| std::io::Error::other("/proc/1/ns/net cannot be read"))
}

/// The inode Linux 6.18 and later give the initial network namespace (`NET_NS_INIT_INO`,
/// include/uapi/linux/nsfs.h). Dynamically allocated nsfs inodes start at 0xF0000000, so no
/// other namespace ever has it; older kernels allocate the initial one dynamically too.
const NET_NS_INIT_INO: u64 = 0xEFFF_FFF9;

/// Whether namespace (dev, ino) is the initial one: compared with pid 1's, or, where pid 1's
/// cannot be looked at (no root; some sandboxes deny it even to root), by the fixed inode
/// (definitive from Linux 6.18 on; on older kernels only a match counts). `None` when it
/// cannot be told.
fn is_initial(dev: u64, ino: u64) -> Option<bool> {
    match initial_netns() {
        Ok(i) => Some(i == (dev, ino)),
        Err(_) if ino == NET_NS_INIT_INO => Some(true),
        Err(_) if fixed_init_inode() => Some(false),
        Err(_) => None,
    }
}

/// The kernel is 6.18 or later (from /proc/sys/kernel/osrelease, e.g. `6.18.44-…`).
fn fixed_init_inode() -> bool {
    let Ok(rel) = fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let mut it = rel
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    (major, minor) >= (6, 18)
}

/// Whether the calling thread is in the initial namespace; `None` when that cannot be told.
pub fn in_initial_netns() -> Option<bool> {
    let (dev, ino) = thread_netns().ok()?;
    is_initial(dev, ino)
}

/// The entry of `dir` (/run/netns) bound to namespace (dev, ino), by stat only.
fn name_by_inode(dir: &Path, dev: u64, ino: u64) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let mut names: Vec<String> = fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| fs::metadata(e.path()).is_ok_and(|m| m.dev() == dev && m.ino() == ino))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_namespace_has_an_identity_and_describes_itself() {
        let id = NetnsIdentity::current(None).expect("stat of our own namespace");
        assert!(id.ino > 0);
        assert!(id.same_namespace(&id.clone()));
        let other = NetnsIdentity {
            ino: id.ino + 1,
            ..id.clone()
        };
        assert!(!id.same_namespace(&other));
        let named = NetnsIdentity {
            name: Some("lab1".into()),
            ..id.clone()
        };
        assert_eq!(named.to_string(), format!("lab1 (net:[{}])", id.ino));
    }
}
