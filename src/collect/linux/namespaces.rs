//! Every network namespace of the host (`--all-namespaces`): found under the directories that
//! name namespaces and through every process's `ns/net`, deduplicated by inode, each collected
//! from one worker thread that enters them in turn (no process per namespace), owners found by
//! one /proc scan for all of them, and identified by container and pod from files only.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustc_hash::FxHashSet;

use super::netns::{self, NetnsHandle};
use super::{owners, LinuxCollector};
use crate::collect::identity;
use crate::collect::{hidden_owners_note, CollectError, CollectOptions, Collector};
use crate::snapshot::{NamespaceIdentity, NetnsId, Pod, Snapshot, Target};

/// Directories whose entries are namespace files: `ip netns` (and CNI plugins, `cni-…`), and
/// Docker's own.
pub const NAME_DIRS: &[&str] = &["/run/netns", "/var/run/netns", "/run/docker/netns"];
/// Where the kubelet keeps one directory per pod: `<namespace>_<name>_<uid>`.
pub const PODS_DIR: &str = "/var/log/pods";

/// Where to look (overridable for tests).
#[derive(Debug, Clone)]
pub struct Discovery {
    pub name_dirs: Vec<PathBuf>,
    pub pods_dir: PathBuf,
    pub proc_dir: PathBuf,
}

impl Default for Discovery {
    fn default() -> Self {
        Self {
            name_dirs: NAME_DIRS.iter().map(PathBuf::from).collect(),
            pods_dir: PathBuf::from(PODS_DIR),
            proc_dir: PathBuf::from("/proc"),
        }
    }
}

/// One namespace and what its collection gave.
#[derive(Debug)]
pub struct NamespaceSnapshot {
    pub identity: NamespaceIdentity,
    pub snapshot: Snapshot,
}

impl AllNamespaces {
    /// (identity, snapshot) of each namespace, in order.
    pub fn each(&self) -> impl Iterator<Item = (&NamespaceIdentity, &Snapshot)> {
        self.namespaces.iter().map(|n| (&n.identity, &n.snapshot))
    }
}

/// Everything `--all-namespaces` found.
#[derive(Debug, Default)]
pub struct AllNamespaces {
    /// Sorted: the caller's own namespace first, then by name, then by inode.
    pub namespaces: Vec<NamespaceSnapshot>,
    /// What could not be inspected, and why (vanished, unreadable, held only by a file).
    pub notes: Vec<String>,
    /// Namespaces found but not collected (could not be entered, vanished, refused).
    pub skipped: usize,
}

/// A namespace as discovery found it.
#[derive(Debug, Default)]
struct Found {
    name: Option<String>,
    /// Namespace files outside /run/netns, openable without a pid.
    files: Vec<PathBuf>,
    places: Vec<String>,
    pids: Vec<u32>,
}

fn discover(d: &Discovery, notes: &mut Vec<String>) -> BTreeMap<NetnsId, Found> {
    let mut found: BTreeMap<NetnsId, Found> = BTreeMap::new();
    for dir in &d.name_dirs {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        let is_ip_netns = dir.ends_with("netns") && !dir.starts_with("/run/docker");
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(id) = netns::id_of(&path) else {
                continue;
            };
            let f = found.entry(id).or_default();
            let shown = path.display().to_string();
            if f.places.contains(&shown) {
                continue;
            }
            f.places.push(shown);
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_ip_netns && f.name.is_none() && Target::check_netns_name(&name).is_ok() {
                f.name = Some(name);
            } else {
                f.files.push(path);
            }
        }
    }
    let mut hidden = 0u32;
    if let Ok(entries) = fs::read_dir(&d.proc_dir) {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            // Threads share their process's namespace unless they setns: one look per process.
            match netns::id_of(&entry.path().join("ns/net")) {
                Some(id) => found.entry(id).or_default().pids.push(pid),
                None => hidden += u32::from(entry.path().exists()),
            }
        }
    }
    if hidden > 0 {
        notes.push(format!(
            "{} namespace{} could not be read{}",
            if hidden == 1 {
                "1 process's".to_string()
            } else {
                format!("{hidden} processes'")
            },
            if hidden == 1 { "" } else { "s" },
            if crate::tune::linux::is_root() {
                " even as root (the kernel refused /proc/PID/ns/net)"
            } else {
                " (run as root to see every namespace)"
            }
        ));
    }
    for f in found.values_mut() {
        f.pids.sort_unstable();
        if let Some(pid) = f.pids.first() {
            f.places.push(format!("/proc/{pid}/ns/net"));
        }
    }
    found
}

/// The pods the kubelet has directories for, by UID.
fn pods_by_uid(dir: &Path) -> BTreeMap<String, Pod> {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| identity::pod_from_log_dir(&e.file_name().to_string_lossy()))
                .map(|p| (p.uid.clone(), p))
                .collect()
        })
        .unwrap_or_default()
}

fn identify(
    id: NetnsId,
    f: &Found,
    own: Option<NetnsId>,
    proc_dir: &Path,
    pods: &BTreeMap<String, Pod>,
) -> NamespaceIdentity {
    let mut container = None;
    let mut pod_uid = None;
    for pid in &f.pids {
        let Ok(text) = fs::read_to_string(proc_dir.join(format!("{pid}/cgroup"))) else {
            continue;
        };
        let (c, p) = identity::from_cgroup(&text);
        container = container.or(c);
        pod_uid = pod_uid.or(p);
        if container.is_some() && pod_uid.is_some() {
            break;
        }
    }
    let pod = pod_uid.map(|uid| {
        pods.get(&uid).cloned().unwrap_or(Pod {
            namespace: String::new(),
            name: String::new(),
            uid,
        })
    });
    NamespaceIdentity {
        id,
        name: f.name.clone(),
        found_in: f
            .places
            .iter()
            .map(|s| crate::units::printable(s))
            .collect(),
        pids: f.pids.clone(),
        container,
        pod,
        own: Some(id) == own,
    }
}

/// Opens the namespace, preferring its name, then a file, then one of its processes; checks
/// that what was opened is still the namespace discovery saw (names and pids can be reused).
fn open(id: NetnsId, f: &Found) -> Result<(Target, NetnsHandle), String> {
    let mut last = String::from("no way to open it");
    let mut tries: Vec<(Target, PathBuf)> = Vec::new();
    if let Some(name) = &f.name {
        tries.push((
            Target::Netns(name.clone()),
            Path::new(netns::NETNS_RUN_DIR).join(name),
        ));
    }
    for pid in f.pids.iter().take(3) {
        tries.push((
            Target::Process(*pid),
            PathBuf::from(format!("/proc/{pid}/ns/net")),
        ));
    }
    for (target, path) in tries {
        match NetnsHandle::open_path(&path, &target) {
            Ok(h) if h.id() == id => return Ok((target, h)),
            Ok(_) => last = format!("{} now leads to another namespace", path.display()),
            Err(e) => last = e.to_string(),
        }
    }
    if f.name.is_none() && f.pids.is_empty() {
        last = format!(
            "held only by {} (no process inside and no /run/netns name, so no target to act on)",
            f.files
                .first()
                .map_or_else(|| "a file".to_string(), |p| p.display().to_string())
        );
    }
    Err(last)
}

/// The identity of namespace `id` from one process in it (its cgroup gives container and pod;
/// /run/netns the name): how `serve -A` labels a failure the tracer attributed through
/// /proc/PID/ns/net. A process already gone gives the name or inode alone.
pub fn identify_process(pid: u32, id: NetnsId, d: &Discovery) -> NamespaceIdentity {
    let f = Found {
        name: super::failures::netns_names().remove(&id),
        pids: vec![pid],
        ..Found::default()
    };
    identify(
        id,
        &f,
        netns::current_id(),
        &d.proc_dir,
        &pods_by_uid(&d.pods_dir),
    )
}

/// Discovers and collects every network namespace. Runs its collections on a thread of its
/// own, so the calling thread stays where it is.
pub fn collect_all(opts: &CollectOptions, d: &Discovery) -> Result<AllNamespaces, CollectError> {
    let opts = opts.clone();
    let d = d.clone();
    std::thread::Builder::new()
        .name("portdoctor-netns".into())
        .spawn(move || collect_all_here(&opts, &d))
        .map_err(|e| CollectError::NamespaceEnter {
            place: "a thread for the namespaces".into(),
            source: e,
        })?
        .join()
        .map_err(|_| CollectError::Unsupported("a collection thread that panicked"))
}

fn collect_all_here(opts: &CollectOptions, d: &Discovery) -> AllNamespaces {
    let mut notes = Vec::new();
    let own = netns::current_id();
    let found = discover(d, &mut notes);
    let pods = pods_by_uid(&d.pods_dir);
    let mut out = AllNamespaces::default();
    // The caller's own namespace first, while this thread still stands in it.
    let mut order: Vec<(&NetnsId, &Found)> = found.iter().collect();
    order.sort_by_key(|(id, _)| Some(**id) != own);
    for (id, f) in order {
        let identity = identify(*id, f, own, &d.proc_dir, &pods);
        let label = identity
            .name
            .clone()
            .unwrap_or_else(|| format!("inode {}", id.ino));
        let (target, handle) = if identity.own {
            (Target::Host, None)
        } else {
            match open(*id, f) {
                Ok((t, h)) => (t, Some(h)),
                Err(why) => {
                    notes.push(format!("namespace {label} skipped: {why}"));
                    out.skipped += 1;
                    continue;
                }
            }
        };
        let collector = LinuxCollector::with_handle(
            CollectOptions {
                source: opts.source,
                owners: false,
                target,
            },
            handle,
        );
        match collector.snapshot() {
            Ok(snapshot) => out
                .namespaces
                .push(NamespaceSnapshot { identity, snapshot }),
            // Vanished between discovery and collection, or refused: say so, go on.
            Err(e) => {
                notes.push(format!("namespace {label} skipped: {e}"));
                out.skipped += 1;
            }
        }
    }
    // Socket inodes are unique host-wide: one /proc scan finds the owners of every namespace.
    if opts.owners {
        let wanted: FxHashSet<u64> = out
            .namespaces
            .iter()
            .flat_map(|n| n.snapshot.sockets.iter().map(|s| s.inode))
            .filter(|&i| i != 0)
            .collect();
        let scanned = Arc::new(owners::scan(&wanted));
        if let Some(note) = hidden_owners_note(&scanned) {
            notes.push(note);
        }
        for n in &mut out.namespaces {
            n.snapshot.owners = Some(Arc::clone(&scanned));
        }
    }
    out.namespaces.sort_by(|a, b| {
        (
            !a.identity.own,
            a.identity.name.is_none(),
            &a.identity.name,
            a.identity.id.ino,
        )
            .cmp(&(
                !b.identity.own,
                b.identity.name.is_none(),
                &b.identity.name,
                b.identity.id.ino,
            ))
    });
    out.notes = notes;
    out
}
