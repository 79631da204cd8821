//! Container cgroups the tests build (kubelet-, docker- and cgroupfs-style paths) so that the
//! identity code finds a pod and a container for a test's process.

use std::path::PathBuf;

/// The cgroup v2 mount point (/sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid hosts).
pub fn cgroup2_root() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/mounts").expect("reading /proc/mounts");
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && f[2] == "cgroup2").then(|| PathBuf::from(f[1]))
        })
        .expect("a cgroup2 mount (the test builds container cgroup paths in it)")
}

/// A cgroup the test made, holding one process; the process goes back to the root and the
/// directories the path created are removed on drop.
pub struct Cgroup {
    root: PathBuf,
    rel: PathBuf,
    pid: u32,
}

impl Cgroup {
    /// Creates REL (relative to the cgroup2 root) and moves PID into it.
    pub fn new(rel: &str, pid: u32) -> Cgroup {
        let root = cgroup2_root();
        let dir = root.join(rel);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        std::fs::write(dir.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", dir.display()));
        Cgroup {
            root,
            rel: PathBuf::from(rel),
            pid,
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.root.join("cgroup.procs"), self.pid.to_string());
        // Leaf first, then the parents this test created.
        let mut rel = self.rel.clone();
        loop {
            let _ = std::fs::remove_dir(self.root.join(&rel));
            if !rel.pop() || rel.as_os_str().is_empty() {
                break;
            }
        }
    }
}
