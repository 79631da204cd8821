//! Windows plans: the exact reg.exe / netsh / PowerShell commands (pure; tested on Linux with
//! fixture snapshots). Applying them to the registry is not implemented yet.

use super::plan::{capacity_point, Goal, Plan, WantedValue};
use crate::snapshot::Snapshot;

/// Plans Windows changes (filled in after the Linux backend).
pub fn plan(
    snapshot: &Snapshot,
    goal: &Goal,
    wanted: &[WantedValue],
    lifetime: f64,
    notes: Vec<String>,
) -> Plan {
    let cap = capacity_point(snapshot, &snapshot.settings, lifetime);
    let _ = wanted;
    Plan {
        schema: "portdoctor.tune-plan/v1",
        os: snapshot.os,
        netns: None,
        hostname: snapshot.host.hostname.clone(),
        os_version: snapshot.host.os_version.clone(),
        goal: goal.clone(),
        changes: Vec::new(),
        unchanged: Vec::new(),
        capacity_before: cap,
        capacity_after: cap,
        refusals: vec!["Windows plans are not implemented yet".into()],
        warnings: Vec::new(),
        notes,
        commands: Vec::new(),
        dropin: None,
        windows_steps: Vec::new(),
    }
}
