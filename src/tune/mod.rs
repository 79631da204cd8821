//! `portdoctor tune`: plans (pure, over a [`Snapshot`](crate::snapshot::Snapshot) and a goal),
//! and the OS backends that apply them with a backup first and roll them back byte for byte.
//!
//! - [`plan`]: goal → changes, capacity each buys, commands, risks, refusals (no I/O).
//! - [`render`]: the plan, apply and history as text (JSON is the serde form of the same types).
//! - [`linux`]: /proc/sys + sysctl.d apply, verify, rollback, history.
//! - [`backup`]: backup records, their checksum and the checks that make them data only.
//! - [`netns_id`]: the identity (nsfs inode) of the network namespace a backup belongs to.
//! - [`windows`]: reg.exe / netsh / PowerShell commands for a Windows plan (pure).

#[cfg(target_os = "linux")]
pub mod backup;
#[cfg(target_os = "linux")]
pub mod linux;
#[cfg(target_os = "linux")]
pub mod netns_id;
pub mod plan;
pub mod record;
pub mod render;
pub mod sha256;
pub mod windows;
#[cfg(windows)]
pub mod windows_apply;
pub mod windows_backup;

pub use plan::{plan, Change, Goal, Plan, PlanError, Profile};

/// Where backups go unless `--state-dir` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/portdoctor/backups";
use crate::rules::SYSCTL_DIR as DEFAULT_SYSCTL_DIR;

/// Where `tune apply` persists (the drop-in's directory), or `None` for runtime values only,
/// with a note when the default was withheld. An explicit `--sysctl-dir` always wins;
/// `--no-persist` writes none. Otherwise /etc/sysctl.d, but only in the host's own (initial)
/// network namespace: sysctl.d is applied to that namespace at boot, so persisting a value
/// planned for another namespace (`--netns`, or a caller already inside one, e.g. `ip netns
/// exec`) would change the host's settings at the next boot. Call it after entering the
/// namespace. When it cannot be told: without root (pid 1's namespace is not visible) a plan
/// shows the default, which `apply` (root) decides again; as root, nothing is persisted.
pub fn persist_dir(
    explicit: Option<&std::path::Path>,
    no_persist: bool,
    entered_netns: bool,
) -> (Option<std::path::PathBuf>, Option<String>) {
    if no_persist {
        return (None, None);
    }
    if let Some(d) = explicit {
        return (Some(d.to_path_buf()), None);
    }
    if entered_netns {
        return (None, None);
    }
    #[cfg(target_os = "linux")]
    {
        let here = || {
            netns_id::NetnsIdentity::current(None)
                .map_or_else(|_| "this namespace".to_string(), |i| i.to_string())
        };
        match netns_id::in_initial_netns() {
            Some(false) => return (
                None,
                Some(format!(
                    "this runs in {}, not the host's own network namespace: {DEFAULT_SYSCTL_DIR} is applied to the host's namespace at boot, so nothing is persisted (runtime values only); give --sysctl-dir DIR to persist into a directory this namespace's setup loads",
                    here()
                )),
            ),
            // Root can normally see pid 1's namespace; when even root cannot, do not guess.
            None if linux::is_root() => return (
                None,
                Some(format!(
                    "cannot tell whether {} is the host's own network namespace (/proc/1/ns/net cannot be read), so nothing is persisted (runtime values only); give --sysctl-dir {DEFAULT_SYSCTL_DIR} to persist there anyway",
                    here()
                )),
            ),
            _ => {}
        }
    }
    (Some(std::path::PathBuf::from(DEFAULT_SYSCTL_DIR)), None)
}
