//! `portdoctor tune plan | apply | rollback | history`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;
use portdoctor::collect::{self, Collector};
use portdoctor::rules::SYSCTL_DROPIN_NAME;
use portdoctor::snapshot::{NetnsId, Target};
use portdoctor::tune::{plan, render, Goal, Plan, Profile};

use super::{failed, usage, write_stdout, EXIT_USAGE};
use crate::cli::tune::{
    ApplyArgs, GoalArgs, HistoryArgs, ProfileArg, RollbackArgs, TuneArgs, TuneCommand,
};

pub fn run(args: &TuneArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        TuneCommand::Plan(g) => run_plan(g),
        TuneCommand::Apply(a) => run_apply(a),
        TuneCommand::Rollback(r) => run_rollback(r),
        TuneCommand::History(h) => run_history(h),
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

/// The plan for `g` on the collector's target, with the identity of the namespace it was
/// planned in; `Err(code)` when it must stop.
fn make_plan(
    g: &GoalArgs,
    collector: &dyn Collector,
    sysctl_dir: Option<&PathBuf>,
) -> Result<(Plan, Option<NetnsId>), ExitCode> {
    let goal = goal_of(g).map_err(usage)?;
    let snap = collector.snapshot().map_err(failed)?;
    let mut p = plan::plan(&snap, &goal).map_err(usage)?;
    if let Some(d) = p.dropin.as_mut() {
        match sysctl_dir {
            Some(dir) => d.path = dir.join(SYSCTL_DROPIN_NAME).display().to_string(),
            None if !g.target.target().is_host() => p.dropin = None,
            None => {}
        }
    }
    Ok((p, snap.host.netns_id))
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
    let p = match collector_for(g).and_then(|c| make_plan(g, c.as_ref(), None)) {
        Ok((p, _)) => p,
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
    let sysctl_dir = if a.no_persist {
        None
    } else {
        match &a.sysctl_dir {
            Some(d) => Some(d.clone()),
            // /etc/sysctl.d configures the host's own namespace at boot, no other.
            None if !g.target.target().is_host() => None,
            None => Some(PathBuf::from(portdoctor::rules::SYSCTL_DIR)),
        }
    };
    let collector = match collector_for(g) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let (p, planned_in) = match make_plan(g, collector.as_ref(), sysctl_dir.as_ref()) {
        Ok(p) => p,
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
    match linux::apply(&p, &paths) {
        Ok(outcome) => {
            if g.json {
                let v = serde_json::json!({
                    "schema": "portdoctor.tune-apply/v1",
                    "plan": p,
                    "outcome": outcome,
                });
                write_stdout((serde_json::to_string_pretty(&v)? + "\n").as_bytes())?;
            } else {
                write_stdout(apply_text(&p, &outcome, &g.target.target()).as_bytes())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Ok(failed(e)),
    }
}

#[cfg(target_os = "linux")]
fn apply_text(p: &Plan, o: &portdoctor::tune::linux::ApplyOutcome, target: &Target) -> String {
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
    let _ = writeln!(
        s,
        "undo     portdoctor tune rollback --id {}{}",
        o.backup_id.as_deref().unwrap_or("?"),
        match target {
            Target::Netns(n) => format!(" --netns {n}"),
            _ => String::new(),
        }
    );
    s
}

#[cfg(target_os = "linux")]
fn run_rollback(r: &RollbackArgs) -> anyhow::Result<ExitCode> {
    use portdoctor::collect::linux::netns;
    use portdoctor::tune::linux;

    let b = match linux::pick_backup(&r.state_dir, r.id.as_deref(), r.netns.as_deref()) {
        Ok(b) => b,
        Err(e) => return Ok(failed(e)),
    };
    if let (Some(want), Some(id)) = (&r.netns, &r.id) {
        if b.netns.as_deref() != Some(want.as_str()) {
            return Ok(usage(format!(
                "backup {id} was taken in namespace {}, not {want}",
                b.netns.as_deref().unwrap_or("default (the host's own)")
            )));
        }
    }
    // The backup says where its values live: enter that namespace before opening /proc/sys.
    let _entered = match netns::enter(&Target::from_label(b.netns.as_deref())) {
        Ok(h) => h,
        Err(e) => return Ok(failed(e)),
    };
    match linux::rollback(&b, &r.state_dir) {
        Ok(o) => {
            if r.json {
                write_stdout((serde_json::to_string_pretty(&o)? + "\n").as_bytes())?;
            } else {
                let mut s = format!(
                    "rolled back {} (netns {})\n",
                    o.id,
                    b.netns.as_deref().unwrap_or("default")
                );
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
        Err(e) => Ok(failed(e)),
    }
}

#[cfg(target_os = "linux")]
fn run_history(h: &HistoryArgs) -> anyhow::Result<ExitCode> {
    use portdoctor::tune::linux;

    let (all, notes) = match linux::history(&h.state_dir) {
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
    for b in &all {
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
        let _ = writeln!(
            s,
            "{:<24} {:<20} {:<16} {:<26} {}",
            b.id,
            b.created,
            b.netns.as_deref().unwrap_or("default"),
            b.status,
            changes.join("; ")
        );
    }
    for n in notes {
        let _ = writeln!(s, "note: {n}");
    }
    write_stdout(s.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(not(target_os = "linux"))]
#[allow(clippy::unnecessary_wraps)] // the same signature as the Linux version
fn run_apply(a: &ApplyArgs) -> anyhow::Result<ExitCode> {
    let _ = a;
    Ok(failed("`tune apply` is implemented for Linux only so far; on Windows run the commands `tune plan` prints"))
}

#[cfg(not(target_os = "linux"))]
#[allow(clippy::unnecessary_wraps)] // the same signature as the Linux version
fn run_rollback(r: &RollbackArgs) -> anyhow::Result<ExitCode> {
    let _ = r;
    Ok(failed(
        "`tune rollback` is implemented for Linux only so far",
    ))
}

#[cfg(not(target_os = "linux"))]
#[allow(clippy::unnecessary_wraps)] // the same signature as the Linux version
fn run_history(h: &HistoryArgs) -> anyhow::Result<ExitCode> {
    let _ = h;
    Ok(failed(
        "`tune history` is implemented for Linux only so far",
    ))
}
