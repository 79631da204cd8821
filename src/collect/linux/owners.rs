//! Socket inode → owning process, by walking /proc/*/fd (what `ss -p` and `lsof` do).
//!
//! The walk is the most expensive part of a collection (a readlink per open descriptor on the
//! host), so each link is read with `readlinkat` relative to the open fd directory into a stack
//! buffer: one path component for the kernel to resolve instead of four.
#![allow(unsafe_code)] // readlinkat(2): std has no *at() calls.

use std::ffi::CStr;
use std::fs::{self, File};
use std::os::fd::AsRawFd;

use rustc_hash::{FxHashMap, FxHashSet};

use super::procfs::socket_inode;
use crate::snapshot::{HiddenProcess, Owners};
use crate::units::printable;

/// Finds the owners of `wanted` inodes. Processes whose descriptors cannot be read (other
/// users' processes without root, or without both CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE) are
/// counted in `hidden_processes`.
pub fn scan(wanted: &FxHashSet<u64>) -> Owners {
    let mut owners = Owners::default();
    if wanted.is_empty() {
        return owners;
    }
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    owners.scanned_as_root = unsafe { libc::geteuid() } == 0;
    let Ok(proc_dir) = fs::read_dir("/proc") else {
        return owners;
    };
    let mut found: FxHashMap<u64, u32> = FxHashMap::default();
    for entry in proc_dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let path = format!("/proc/{pid}/fd");
        let (fds, dir) = match (fs::read_dir(&path), File::open(&path)) {
            (Ok(fds), Ok(dir)) => (fds, dir),
            (Err(e), _) | (_, Err(e)) => {
                // Gone already, or not ours to read.
                if fs::metadata(&path).is_ok() {
                    note_hidden(&mut owners, pid, &e);
                }
                continue;
            }
        };
        let mut owns_any = false;
        let mut denied = None;
        for fd in fds.flatten() {
            let mut link = [0u8; 64];
            let target = match read_link_at(&dir, fd.file_name().as_encoded_bytes(), &mut link) {
                Ok(t) => t,
                // Listing needs CAP_DAC_READ_SEARCH, reading the links CAP_SYS_PTRACE.
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    denied = Some(e);
                    break;
                }
                Err(_) => continue,
            };
            let Some(inode) = socket_inode(target) else {
                continue;
            };
            if wanted.contains(&inode) {
                found.entry(inode).or_insert(pid);
                owns_any = true;
            }
        }
        if let Some(e) = denied {
            note_hidden(&mut owners, pid, &e);
        }
        if owns_any {
            // Any process can name itself anything (prctl): escape before it reaches a terminal.
            let comm = fs::read(format!("/proc/{pid}/comm")).map_or_else(
                |_| "?".to_string(),
                |b| printable(String::from_utf8_lossy(&b).trim_end_matches('\n')),
            );
            owners.processes.insert(pid, comm);
        }
    }
    owners.by_inode = found;
    owners
}

/// Processes the note names at most.
const HIDDEN_EXAMPLES: usize = 3;

fn note_hidden(owners: &mut Owners, pid: u32, e: &std::io::Error) {
    owners.hidden_processes += 1;
    if owners.hidden_examples.len() < HIDDEN_EXAMPLES {
        let name = fs::read(format!("/proc/{pid}/comm")).map_or_else(
            |_| "?".to_string(),
            |b| printable(String::from_utf8_lossy(&b).trim_end_matches('\n')),
        );
        owners.hidden_examples.push(HiddenProcess {
            pid,
            name,
            error: e.to_string(),
        });
    }
}

/// `readlinkat(dir, name)` into `buf`. Socket links (`socket:[4026531993]`) fit in 64 bytes;
/// a longer target (a file path) comes back truncated, which is fine: it is not a socket.
fn read_link_at<'b>(dir: &File, name: &[u8], buf: &'b mut [u8; 64]) -> std::io::Result<&'b [u8]> {
    // Descriptor names are decimal numbers; anything else is not a descriptor.
    let mut c_name = [0u8; 16];
    if name.is_empty() || name.len() >= c_name.len() || !name.iter().all(u8::is_ascii_digit) {
        return Err(std::io::ErrorKind::InvalidInput.into());
    }
    c_name[..name.len()].copy_from_slice(name);
    let name = CStr::from_bytes_until_nul(&c_name).map_err(std::io::Error::other)?;
    // SAFETY: `name` is NUL-terminated, `buf` is writable for its length, and the kernel
    // writes at most that many bytes; the returned length is checked before slicing.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = usize::try_from(n).map_err(|_| std::io::Error::last_os_error())?;
    Ok(&buf[..n.min(buf.len())])
}
