//! `portdoctor tune`: plans (pure, over a [`Snapshot`](crate::snapshot::Snapshot) and a goal),
//! and the OS backends that apply them with a backup first and roll them back byte for byte.
//!
//! - [`plan`]: goal → changes, capacity each buys, commands, risks, refusals (no I/O).
//! - [`render`]: the plan, apply and history as text (JSON is the serde form of the same types).
//! - [`linux`]: /proc/sys + sysctl.d apply, verify, rollback, history, backups.
//! - [`windows`]: reg.exe / netsh / PowerShell commands for a Windows plan (pure).

#[cfg(target_os = "linux")]
pub mod linux;
pub mod plan;
pub mod render;
pub mod windows;

pub use plan::{plan, Change, Goal, Plan, PlanError, Profile};

/// Where backups go unless `--state-dir` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/portdoctor/backups";
// The drop-in's name and directory are in [`crate::rules`] (the fixes of `check` name them too).
