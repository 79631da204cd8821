//! `check --all-namespaces`: the caller's own namespace reported as usual, every namespace of
//! the host listed with its identity, pools and verdict; the overall verdict is the worst.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use super::json::{check_report, PoolEntry, VerdictOut};
use super::text::{self, TextOptions};
use crate::analysis::{Analysis, Level};
use crate::snapshot::{Container, NamespaceIdentity, Pod, Snapshot};

/// One namespace, analysed.
pub struct Inspected<'a> {
    pub identity: &'a NamespaceIdentity,
    pub snapshot: &'a Snapshot,
    pub analysis: &'a Analysis,
}

/// Each namespace beside its analysis (`analyses[i]` of `identities[i]`).
pub fn inspect<'a>(
    namespaces: impl IntoIterator<Item = (&'a NamespaceIdentity, &'a Snapshot)>,
    analyses: &'a [Analysis],
) -> Vec<Inspected<'a>> {
    namespaces
        .into_iter()
        .zip(analyses)
        .map(|((identity, snapshot), analysis)| Inspected {
            identity,
            snapshot,
            analysis,
        })
        .collect()
}

/// The worst verdict of all.
pub fn worst(all: &[Inspected<'_>]) -> Level {
    all.iter()
        .map(|n| n.analysis.verdict.level)
        .max()
        .unwrap_or(Level::Ok)
}

#[derive(Serialize)]
struct NetnsOut<'a> {
    inode: u64,
    name: Option<&'a str>,
}

#[derive(Serialize)]
struct NamespaceOut<'a> {
    netns: NetnsOut<'a>,
    own: bool,
    found_in: &'a [String],
    pod: Option<&'a Pod>,
    container: Option<&'a Container>,
    pids: &'a [u32],
    /// How `check`, `tune` and `top` select this namespace again.
    target: Option<String>,
    settings: Value,
    sockets: u64,
    pools: Vec<PoolEntry<'a>>,
    verdict: VerdictOut<'a>,
    notes: &'a [String],
}

/// `portdoctor.check/v1` of the caller's own namespace, with `verdict.level` the worst of all,
/// `namespaces` (every namespace, own included) and `namespace_notes` added.
pub fn render_json(
    own: &Inspected<'_>,
    all: &[Inspected<'_>],
    notes: &[String],
    top: Option<usize>,
) -> String {
    let mut report =
        serde_json::to_value(check_report(own.snapshot, own.analysis, top)).unwrap_or(Value::Null);
    let namespaces: Vec<NamespaceOut<'_>> = all
        .iter()
        .map(|n| {
            let r = check_report(n.snapshot, n.analysis, top);
            NamespaceOut {
                netns: NetnsOut {
                    inode: n.identity.id.ino,
                    name: n.identity.name.as_deref(),
                },
                own: n.identity.own,
                found_in: &n.identity.found_in,
                pod: n.identity.pod.as_ref(),
                container: n.identity.container.as_ref(),
                pids: &n.identity.pids,
                target: n.snapshot.host.target.label(),
                settings: serde_json::to_value(&r.settings).unwrap_or(Value::Null),
                sockets: n.snapshot.sockets.len() as u64,
                pools: r.pools,
                verdict: r.verdict,
                notes: &n.snapshot.notes,
            }
        })
        .collect();
    if let Value::Object(map) = &mut report {
        if let Some(Value::Object(v)) = map.get_mut("verdict") {
            v.insert("level".into(), Value::from(worst(all).name()));
            v.insert(
                "level_own".into(),
                Value::from(own.analysis.verdict.level.name()),
            );
        }
        map.insert(
            "namespaces".into(),
            serde_json::to_value(namespaces).unwrap_or(Value::Null),
        );
        map.insert(
            "namespace_notes".into(),
            serde_json::to_value(notes).unwrap_or(Value::Null),
        );
    }
    let mut out = serde_json::to_string_pretty(&report).unwrap_or_else(|e| e.to_string());
    out.push('\n');
    out
}

/// One line naming a namespace: name or inode, pod, container, processes.
pub fn identity_line(id: &NamespaceIdentity) -> String {
    let mut s = match &id.name {
        Some(name) => format!("netns {name}"),
        None => format!("netns inode {}", id.id.ino),
    };
    if id.own {
        s.push_str(" (own)");
    }
    if let Some(p) = &id.pod {
        if p.name.is_empty() {
            let _ = write!(s, " · pod uid {}", p.uid);
        } else {
            let _ = write!(s, " · pod {}/{}", p.namespace, p.name);
        }
    }
    if let Some(c) = &id.container {
        let _ = write!(s, " · {} {}", c.runtime, &c.id[..c.id.len().min(12)]);
    }
    match id.pids.as_slice() {
        [] => s.push_str(" · no processes"),
        [one] => {
            let _ = write!(s, " · pid {one}");
        }
        [first, rest @ ..] => {
            let _ = write!(s, " · pids {first} +{}", rest.len());
        }
    }
    s
}

/// The own namespace's full report, then every namespace: pressured ones in full, quiet ones
/// on one line each.
pub fn render_text(all: &[Inspected<'_>], notes: &[String], opts: &TextOptions) -> String {
    let mut out = String::new();
    let worst = worst(all);
    let count = |l: Level| all.iter().filter(|n| n.analysis.verdict.level == l).count();
    let _ = writeln!(
        out,
        "{} network namespaces · {} critical, {} warning, {} ok · overall {}",
        all.len(),
        count(Level::Critical),
        count(Level::Warning),
        count(Level::Ok),
        worst.name().to_uppercase()
    );
    out.push('\n');
    // Pressured first, so the one about to run out is at the top.
    let mut order: Vec<&Inspected<'_>> = all.iter().collect();
    order.sort_by_key(|n| std::cmp::Reverse(n.analysis.verdict.level));
    for n in &order {
        let level = n.analysis.verdict.level;
        if level == Level::Ok {
            // Pools of every kind, as the `pools:` line of the full report counts them.
            let a = n.analysis;
            let busiest = a
                .pools
                .iter()
                .filter_map(|p| p.utilization)
                .chain(a.udp_pools.iter().filter_map(|p| p.utilization))
                .chain(
                    a.snat
                        .iter()
                        .flat_map(|s| s.pools.iter().map(|p| p.utilization)),
                )
                .fold(0.0_f64, f64::max);
            let pools = a.pool_levels().count();
            let _ = writeln!(
                out,
                "OK        {} · {} sockets · {} pool{} · busiest {:.0}%",
                identity_line(n.identity),
                n.snapshot.sockets.len(),
                pools,
                if pools == 1 { "" } else { "s" },
                busiest * 100.0
            );
        } else {
            let _ = writeln!(
                out,
                "{:<9} {}",
                level.name().to_uppercase(),
                identity_line(n.identity)
            );
            for line in text::render(n.snapshot, n.analysis, opts).lines() {
                let _ = writeln!(out, "  {line}");
            }
        }
    }
    for note in notes {
        let _ = writeln!(out, "note: {note}");
    }
    out
}
