//! Socket inode → owning process, by walking /proc/*/fd (what `ss -p` and `lsof` do).

use std::fs;

use rustc_hash::{FxHashMap, FxHashSet};

use super::procfs::socket_inode;
use crate::snapshot::Owners;

/// Finds the owners of `wanted` inodes. Processes whose descriptors cannot be read (other
/// users' processes without root, or without both CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE) are
/// counted in `hidden_processes`.
pub fn scan(wanted: &FxHashSet<u64>) -> Owners {
    let mut owners = Owners::default();
    if wanted.is_empty() {
        return owners;
    }
    let Ok(proc_dir) = fs::read_dir("/proc") else {
        return owners;
    };
    let mut found: FxHashMap<u64, u32> = FxHashMap::default();
    let mut path = String::with_capacity(64);
    for entry in proc_dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        path.clear();
        path.push_str("/proc/");
        path.push_str(&pid.to_string());
        path.push_str("/fd");
        let Ok(fds) = fs::read_dir(&path) else {
            // Gone already, or not ours to read.
            if fs::metadata(&path).is_ok() {
                owners.hidden_processes += 1;
            }
            continue;
        };
        let mut owns_any = false;
        let mut denied = false;
        for fd in fds.flatten() {
            let target = match fs::read_link(fd.path()) {
                Ok(t) => t,
                // Listing needs CAP_DAC_READ_SEARCH, reading the links CAP_SYS_PTRACE.
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    denied = true;
                    break;
                }
                Err(_) => continue,
            };
            let Some(inode) = socket_inode(target.as_os_str().as_encoded_bytes()) else {
                continue;
            };
            if wanted.contains(&inode) {
                found.entry(inode).or_insert(pid);
                owns_any = true;
            }
        }
        if denied {
            owners.hidden_processes += 1;
        }
        if owns_any {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm"))
                .map_or_else(|_| "?".to_string(), |s| s.trim_end().to_string());
            owners.processes.insert(pid, comm);
        }
    }
    owners.by_inode = found;
    owners
}
