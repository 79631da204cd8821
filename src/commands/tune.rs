//! `portdoctor tune plan | apply | rollback | history`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;
use portdoctor::collect::{self, Collector};
use portdoctor::rules::SYSCTL_DROPIN_NAME;
use portdoctor::snapshot::NetnsId;
use portdoctor::tune::{self, plan, render, Goal, Plan, Profile};

use super::{failed, usage, write_stdout, EXIT_USAGE};
use crate::cli::tune::{
    ApplyArgs, ForgetArgs, GoalArgs, HistoryArgs, ProfileArg, RollbackArgs, TuneArgs, TuneCommand,
};

pub fn run(args: &TuneArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        TuneCommand::Plan(g) => run_plan(g),
        TuneCommand::Apply(a) => run_apply(a),
        TuneCommand::Rollback(r) => run_rollback(r),
        TuneCommand::History(h) => run_history(h),
        TuneCommand::Forget(f) => run_forget(f),
    }
}

fn goal_of(g: &GoalArgs) -> Result<Goal, plan::PlanError> {
    let sets = g
        .set
        .iter()
        .map(|s| plan::parse_set(s))
        .collect::<Result<Vec<_>, _>>()?;
    let target_rate_per_s = g.target_rate.as_deref().map(plan::parse_rate).transpose()?;
    let goal = Goal {
        sets,
        profile: g.profile.map(|p| match p {
            ProfileArg::ClientHeavy => Profile::ClientHeavy,
            ProfileArg::Proxy => Profile::Proxy,
            ProfileArg::Conservative => Profile::Conservative,
        }),
        target_rate_per_s,
        lifetime_seconds: g.lifetime,
    };
    if goal.is_empty() {
        return Err(plan::PlanError::NoGoal);
    }
    Ok(goal)
}

/// The collector for `g`'s target (opens a namespace once); `Err(code)` when it must stop.
fn collector_for(g: &GoalArgs) -> Result<Box<dyn Collector>, ExitCode> {
    let mut opts = g.target.collect_options().map_err(usage)?;
    opts.owners = false;
    collect::native(opts).map_err(failed)
}

/// The plan for `g` on the collector's target, where it persists (see
/// [`tune::persist_dir`]) and the identity of the namespace it was planned in; `Err(code)`
/// when it must stop.
fn make_plan(
    g: &GoalArgs,
    collector: &dyn Collector,
    sysctl_dir: Option<&PathBuf>,
    no_persist: bool,
) -> Result<(Plan, Option<PathBuf>, Option<NetnsId>), ExitCode> {
    let goal = goal_of(g).map_err(usage)?;
    let snap = collector.snapshot().map_err(failed)?;
    let mut p = plan::plan(&snap, &goal).map_err(usage)?;
    // After the snapshot: the collector left this thread in the target's namespace.
    let (dir, note) = tune::persist_dir(
        sysctl_dir.map(PathBuf::as_path),
        no_persist,
        !g.target.target().is_host(),
    );
    match (&dir, p.dropin.as_mut()) {
        (Some(dir), Some(d)) => d.path = dir.join(SYSCTL_DROPIN_NAME).display().to_string(),
        (None, _) => p.dropin = None,
        (Some(_), None) => {}
    }
    p.notes.extend(note);
    Ok((p, dir, snap.host.netns_id))
}

fn apply_hint(g: &GoalArgs) -> String {
    let mut s = String::from("portdoctor tune apply");
    for set in &g.set {
        let (k, v) = set.split_once('=').unwrap_or((set, ""));
        if v.contains(' ') {
            let _ = write!(s, " --set {k}=\"{v}\"");
        } else {
            let _ = write!(s, " --set {set}");
        }
    }
    if let Some(p) = g.profile {
        let _ = write!(
            s,
            " --profile {}",
            p.to_possible_value()
                .map_or(String::new(), |v| v.get_name().to_string())
        );
    }
    if let Some(r) = &g.target_rate {
        let _ = write!(s, " --target-rate {r}");
    }
    if g.lifetime > 0.0 {
        let _ = write!(s, " --lifetime {}s", g.lifetime);
    }
    s.push_str(&g.target.target().cli_args());
    s.push_str(" --yes");
    s
}

fn run_plan(g: &GoalArgs) -> anyhow::Result<ExitCode> {
    let p = match collector_for(g).and_then(|c| make_plan(g, c.as_ref(), None, false)) {
        Ok((p, _, _)) => p,
        Err(code) => return Ok(code),
    };
    if g.json {
        write_stdout((serde_json::to_string_pretty(&p)? + "\n").as_bytes())?;
    } else {
        write_stdout(render::plan_text(&p, Some(&apply_hint(g))).as_bytes())?;
    }
    Ok(ExitCode::from(if p.is_refused() { EXIT_USAGE } else { 0 }))
}

#[cfg(target_os = "linux")]
fn run_apply(a: &ApplyArgs) -> anyhow::Result<ExitCode> {
    use portdoctor::tune::linux;

    let g = &a.goal;
    let collector = match collector_for(g) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let (p, sysctl_dir, planned_in) =
        match make_plan(g, collector.as_ref(), a.sysctl_dir.as_ref(), a.no_persist) {
            Ok(x) => x,
            Err(code) => return Ok(code),
        };
    if p.is_refused() {
        if g.json {
            write_stdout((serde_json::to_string_pretty(&p)? + "\n").as_bytes())?;
        } else {
            write_stdout(render::plan_text(&p, None).as_bytes())?;
        }
        eprintln!(
            "portdoctor: error: the plan is refused (see REFUSED above); nothing was changed"
        );
        return Ok(ExitCode::from(EXIT_USAGE));
    }
    if !a.yes {
        if g.json {
            write_stdout((serde_json::to_string_pretty(&p)? + "\n").as_bytes())?;
        } else {
            let mut out = render::plan_text(&p, Some(&apply_hint(g)));
            out.push_str("\ndry run: nothing was changed; add --yes to apply\n");
            write_stdout(out.as_bytes())?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    // The values live in the target's namespace: /proc/sys/net follows the namespace of the
    // thread that opens it, and the collector left this thread there (checked, not assumed).
    let here = portdoctor::collect::linux::netns::current_id();
    if here.is_none() || here != planned_in {
        return Ok(failed(format!(
            "refusing to apply: this thread is not inside {} that was planned for",
            g.target.target()
        )));
    }
    let paths = linux::Paths {
        state_dir: a.state_dir.clone(),
        sysctl_dir: sysctl_dir.filter(|_| p.dropin.is_some()),
        proc_sys: PathBuf::from("/proc/sys"),
    };
    match linux::apply(&p, &paths, g.target.netns.as_deref()) {
        Ok(outcome) => {
            if g.json {
                let v = serde_json::json!({
                    "schema": "portdoctor.tune-apply/v1",
                    "plan": p,
                    "outcome": outcome,
                });
                write_stdout((serde_json::to_string_pretty(&v)? + "\n").as_bytes())?;
            } else {
                write_stdout(apply_text(&p, &outcome).as_bytes())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Ok(failed(e)),
    }
}

#[cfg(target_os = "linux")]
fn apply_text(p: &Plan, o: &portdoctor::tune::linux::ApplyOutcome) -> String {
    let mut s = String::new();
    if o.backup_id.is_none() {
        s.push_str("nothing to change: every value is already as planned (no backup written)\n");
        for a in &o.already {
            let _ = writeln!(s, "same     {a}");
        }
        for u in &p.unchanged {
            let _ = writeln!(s, "same     {u}");
        }
        return s;
    }
    for c in &o.cleaned {
        let _ = writeln!(s, "cleaned  {} (left by an interrupted run)", c.display());
    }
    if let (Some(id), Some(path)) = (&o.backup_id, &o.backup_path) {
        let _ = writeln!(s, "backup   {id}  ({})", path.display());
    }
    for c in &o.changed {
        let knob = c.split(':').next().unwrap_or("");
        let when = p
            .changes
            .iter()
            .find(|x| x.knob == knob)
            .map_or("", |x| x.takes_effect);
        let _ = writeln!(s, "changed  {c}  ({when})");
    }
    for a in &o.already {
        let _ = writeln!(s, "same     {a}");
    }
    match (&o.dropin, o.dropin_changed) {
        (Some(d), true) => {
            let _ = writeln!(s, "persist  {} written", d.display());
        }
        (Some(d), false) => {
            let _ = writeln!(s, "persist  {} already up to date", d.display());
        }
        (None, _) => {
            let _ = writeln!(
                s,
                "persist  none: runtime values only (lost at reboot or when the namespace goes)"
            );
        }
    }
    let _ = writeln!(s, "verified every value reads back as written");
    let _ = writeln!(
        s,
        "capacity {}",
        render::capacity_line(&p.capacity_after, p.os)
    );
    let _ = writeln!(s, "undo     {}", o.undo.as_deref().unwrap_or("?"));
    s
}

#[cfg(target_os = "linux")]
fn run_rollback(r: &RollbackArgs) -> anyhow::Result<ExitCode> {
    use portdoctor::collect::linux::netns;
    use portdoctor::tune::linux;

    let req = linux::RollbackRequest {
        state_dir: &r.state_dir,
        proc_sys: std::path::Path::new("/proc/sys"),
        id: r.id.as_deref(),
        netns: r.netns.as_deref(),
    };
    let mut enter = |n: &str| {
        netns::enter(&portdoctor::snapshot::Target::Netns(n.to_string()))
            .map(drop)
            .map_err(|e| e.to_string())
    };
    match linux::rollback(&req, &mut enter) {
        Ok(o) => {
            if r.json {
                write_stdout((serde_json::to_string_pretty(&o)? + "\n").as_bytes())?;
            } else {
                let mut s = String::new();
                for c in &o.cleaned {
                    let _ = writeln!(s, "cleaned  {} (left by an interrupted run)", c.display());
                }
                let _ = writeln!(s, "rolled back {} (netns {})", o.id, o.namespace);
                for v in &o.restored {
                    let _ = writeln!(s, "restored {v}");
                }
                if let Some(d) = &o.dropin {
                    let _ = writeln!(s, "persist  {d}");
                }
                s.push_str("verified every value reads back byte for byte as before\n");
                write_stdout(s.as_bytes())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if e.is_usage() => Ok(usage(e)),
        Err(e) => Ok(failed(e)),
    }
}

#[cfg(target_os = "linux")]
fn run_forget(f: &ForgetArgs) -> anyhow::Result<ExitCode> {
    match portdoctor::tune::linux::forget(&f.state_dir, std::path::Path::new("/proc/sys"), &f.id) {
        Ok(b) => {
            write_stdout(
                format!(
                    "forgot {} (netns {}): no rollback will pick it; no setting was changed\n",
                    b.id, b.namespace
                )
                .as_bytes(),
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if e.is_usage() => Ok(usage(e)),
        Err(e) => Ok(failed(e)),
    }
}

#[cfg(not(target_os = "linux"))]
#[allow(clippy::unnecessary_wraps)] // the same signature as the Linux version
fn run_forget(f: &ForgetArgs) -> anyhow::Result<ExitCode> {
    let _ = f;
    Ok(failed("`tune forget` is implemented for Linux only so far"))
}

#[cfg(target_os = "linux")]
fn run_history(h: &HistoryArgs) -> anyhow::Result<ExitCode> {
    use portdoctor::tune::backup::Record;
    use portdoctor::tune::linux;

    let all = match linux::history(&h.state_dir) {
        Ok(x) => x,
        Err(e) => return Ok(failed(e)),
    };
    if h.json {
        write_stdout((serde_json::to_string_pretty(&all)? + "\n").as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut s = String::new();
    if all.is_empty() {
        let _ = writeln!(s, "no backups in {}", h.state_dir.display());
    } else {
        let _ = writeln!(
            s,
            "{:<24} {:<20} {:<16} {:<26} CHANGES",
            "ID", "CREATED", "NETNS", "STATUS"
        );
    }
    for r in &all {
        let b = match r {
            Record::Backup(b) => b,
            Record::Unreadable(u) => {
                let _ = writeln!(
                    s,
                    "{:<24} {:<20} {:<16} {:<26} {}: {}",
                    u.id.as_deref().unwrap_or("?"),
                    "?",
                    "?",
                    "unreadable",
                    u.file.display(),
                    u.reason
                );
                continue;
            }
        };
        let changes: Vec<String> = b
            .values
            .iter()
            .map(|v| {
                format!(
                    "{}: {} → {}",
                    v.knob,
                    linux::shown(&v.prior),
                    linux::shown(&v.new)
                )
            })
            .chain(b.dropin.as_ref().map(|d| format!("{}", d.path.display())))
            .collect();
        let ns = match (&b.namespace.name, b.namespace.initial) {
            (Some(n), _) => n.clone(),
            (None, true) => "default".to_string(),
            (None, false) => format!("net:[{}]", b.namespace.ino),
        };
        let _ = writeln!(
            s,
            "{:<24} {:<20} {:<16} {:<26} {}",
            b.id,
            b.created,
            ns,
            b.status,
            changes.join("; ")
        );
    }
    write_stdout(s.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(windows)]
fn run_apply(a: &ApplyArgs) -> anyhow::Result<ExitCode> {
    use portdoctor::tune::windows_apply as win;

    let g = &a.goal;
    let collector = match collector_for(g) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let (p, _, _) = match make_plan(g, collector.as_ref(), None, true) {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    if p.is_refused() || !a.yes {
        if g.json {
            write_stdout((serde_json::to_string_pretty(&p)? + "\n").as_bytes())?;
        } else {
            let mut out = render::plan_text(&p, Some(&apply_hint(g)));
            if !p.is_refused() {
                out.push_str("\ndry run: nothing was changed; add --yes to apply\n");
            }
            write_stdout(out.as_bytes())?;
        }
        if p.is_refused() {
            eprintln!(
                "portdoctor: error: the plan is refused (see REFUSED above); nothing was changed"
            );
            return Ok(ExitCode::from(EXIT_USAGE));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let key = portdoctor::collect::windows::tcpip_params_key();
    match win::apply(&p, &a.state_dir, &key) {
        Ok(outcome) => {
            if g.json {
                let v = serde_json::json!({
                    "schema": "portdoctor.tune-apply/v1",
                    "plan": p,
                    "outcome": outcome,
                });
                write_stdout((serde_json::to_string_pretty(&v)? + "\n").as_bytes())?;
            } else {
                let mut text = String::new();
                if outcome.backup_id.is_none() {
                    text.push_str("nothing to change: every value is already as planned (no backup written)\n");
                }
                if let (Some(id), Some(path)) = (&outcome.backup_id, &outcome.backup_path) {
                    let _ = writeln!(text, "backup   {id}  ({})", path.display());
                }
                for c in &outcome.changed {
                    let _ = writeln!(text, "changed  {c}");
                }
                for c in &outcome.already {
                    let _ = writeln!(text, "same     {c}");
                }
                if outcome.backup_id.is_some() {
                    text.push_str("verified every value reads back as written\n");
                }
                if !outcome.pending_reboot.is_empty() {
                    let _ = writeln!(
                        text,
                        "pending  {}: registry values take effect after a reboot",
                        outcome.pending_reboot.join(", ")
                    );
                }
                if let Some(u) = &outcome.undo {
                    let _ = writeln!(text, "undo     {u}");
                }
                write_stdout(text.as_bytes())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if e.is_usage() => Ok(usage(e)),
        Err(e) => Ok(failed(e)),
    }
}

#[cfg(windows)]
fn run_rollback(r: &RollbackArgs) -> anyhow::Result<ExitCode> {
    use portdoctor::tune::windows_apply as win;

    if r.netns.is_some() {
        return Ok(usage("--netns is Linux-only"));
    }
    let key = portdoctor::collect::windows::tcpip_params_key();
    match win::rollback(&r.state_dir, &key, r.id.as_deref()) {
        Ok(o) => {
            if r.json {
                write_stdout((serde_json::to_string_pretty(&o)? + "\n").as_bytes())?;
            } else {
                let mut s = format!("rolled back {}\n", o.id);
                for v in &o.restored {
                    let _ = writeln!(s, "restored {v}");
                }
                s.push_str("verified every value reads back as before (absent values deleted)\n");
                write_stdout(s.as_bytes())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if e.is_usage() => Ok(usage(e)),
        Err(e) => Ok(failed(e)),
    }
}

#[cfg(windows)]
fn run_history(h: &HistoryArgs) -> anyhow::Result<ExitCode> {
    use portdoctor::tune::windows_apply::{self as win, WinRecord};

    let key = portdoctor::collect::windows::tcpip_params_key();
    let all = match win::history(&h.state_dir, &key) {
        Ok(x) => x,
        Err(e) => return Ok(failed(e)),
    };
    if h.json {
        write_stdout((serde_json::to_string_pretty(&all)? + "\n").as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut s = String::new();
    if all.is_empty() {
        let _ = writeln!(
            s,
            "no backups in {}",
            win::state_dir(&h.state_dir).display()
        );
    } else {
        let _ = writeln!(s, "{:<24} {:<20} {:<26} CHANGES", "ID", "CREATED", "STATUS");
    }
    for r in &all {
        match r {
            WinRecord::Backup {
                backup: b,
                pending_reboot,
            } => {
                let status = if *pending_reboot {
                    format!("{} (pending reboot)", b.status)
                } else {
                    b.status.clone()
                };
                let changes: Vec<String> = b
                    .registry
                    .iter()
                    .map(|v| {
                        format!(
                            "tcpip.{}: {} → {}",
                            v.name,
                            v.prior
                                .map_or_else(|| "(absent)".to_string(), |p| p.to_string()),
                            v.new
                        )
                    })
                    .chain(b.ranges.iter().map(|v| {
                        format!(
                            "{}: {}+{} → {}+{}",
                            v.knob(),
                            v.prior.start,
                            v.prior.count,
                            v.new.start,
                            v.new.count
                        )
                    }))
                    .collect();
                let _ = writeln!(
                    s,
                    "{:<24} {:<20} {:<26} {}",
                    b.id,
                    b.created,
                    status,
                    changes.join("; ")
                );
            }
            WinRecord::Unreadable { file, reason, .. } => {
                let _ = writeln!(
                    s,
                    "{:<24} {:<20} {:<26} {}: {reason}",
                    "?",
                    "?",
                    "unreadable",
                    file.display()
                );
            }
        }
    }
    write_stdout(s.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(not(any(target_os = "linux", windows)))]
#[allow(clippy::unnecessary_wraps)] // the same signature as the Linux version
fn run_apply(a: &ApplyArgs) -> anyhow::Result<ExitCode> {
    let _ = a;
    Ok(failed(
        "`tune apply` is implemented for Linux and Windows only",
    ))
}

#[cfg(not(any(target_os = "linux", windows)))]
#[allow(clippy::unnecessary_wraps)] // the same signature as the Linux version
fn run_rollback(r: &RollbackArgs) -> anyhow::Result<ExitCode> {
    let _ = r;
    Ok(failed(
        "`tune rollback` is implemented for Linux and Windows only",
    ))
}

#[cfg(not(any(target_os = "linux", windows)))]
#[allow(clippy::unnecessary_wraps)] // the same signature as the Linux version
fn run_history(h: &HistoryArgs) -> anyhow::Result<ExitCode> {
    let _ = h;
    Ok(failed(
        "`tune history` is implemented for Linux and Windows only",
    ))
}
