//! Applying a Linux plan: backup first (fsync'd JSON in the state dir), then /proc/sys and the
//! sysctl.d drop-in, verify by re-reading, roll back on any failure; `rollback` restores the
//! exact prior bytes; `history` lists backups.
//!
//! Every write goes through [`Writer`], which counts it. Debug builds (what `cargo test` runs)
//! honour `PORTDOCTOR_FAULT_AFTER_WRITES=N`: the process aborts right after its N-th write, so
//! the crash-safety test can stop an apply between every pair of writes. Release builds compile
//! the hook out (`cfg(debug_assertions)`). `PORTDOCTOR_FAULT_FAIL_WRITE=N` (also debug only)
//! makes the N-th write fail with an I/O error instead, to exercise the roll-back-on-failure path.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::plan::Plan;
use crate::knobs;

/// Schema of a backup file.
pub const BACKUP_SCHEMA: &str = "portdoctor.tune-backup/v1";

#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    #[error(
        "`tune {0}` changes kernel settings and needs root (run it with sudo); nothing was changed"
    )]
    NotRoot(&'static str),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
    #[error("no backup {0:?} in {1}; list them with `portdoctor tune history`")]
    NoSuchBackup(String, PathBuf),
    #[error("no backup to roll back in {0} (every backup there is already rolled back, or there is none)")]
    NothingToRollBack(PathBuf),
    #[error("another `portdoctor tune` (pid {pid}) is changing settings right now (it holds the lock on {path}); wait for it to finish and run this again; nothing was changed")]
    Busy { pid: u32, path: PathBuf },
}

/// Held while apply or rollback runs. Two applies at once would each read "prior" values the
/// other is changing, and neither backup could restore the original state. An advisory
/// `flock` on `STATE_DIR/lock` (never deleted): the kernel drops it when the holder exits,
/// crashes or the machine reboots, so there is no stale lock to guess about. The file holds
/// the holder's pid, for the message only.
struct StateLock {
    _file: File,
    path: PathBuf,
    /// The state dir did not exist before: removed again on drop if nothing else is in it.
    created_dir: Option<PathBuf>,
}

impl StateLock {
    fn acquire(state_dir: &Path) -> Result<Self, TuneError> {
        let created_dir = (!state_dir.exists()).then(|| state_dir.to_path_buf());
        fs::create_dir_all(state_dir).map_err(io("cannot create", state_dir))?;
        let path = state_dir.join("lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io("cannot open", &path))?;
        if !try_flock(&file).map_err(io("cannot lock", &path))? {
            let pid = fs::read_to_string(&path)
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(0);
            return Err(TuneError::Busy { pid, path });
        }
        file.set_len(0)
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .map_err(io("cannot write", &path))?;
        Ok(Self {
            _file: file,
            path,
            created_dir,
        })
    }
}

/// `flock(LOCK_EX | LOCK_NB)`: Ok(false) when another process holds it.
#[allow(unsafe_code)] // flock(2): File::try_lock needs Rust 1.89; the MSRV is 1.85.
fn try_flock(file: &File) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is open and owned by `file` for the duration of the call.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        // The lock goes with the descriptor; the file stays (deleting it would let a waiter
        // lock an unlinked inode). Only a state dir this run created, and left otherwise
        // empty, is removed again.
        if let Some(dir) = &self.created_dir {
            if fs::read_dir(dir)
                .is_ok_and(|mut e| e.all(|f| f.is_ok_and(|f| f.path() == self.path)))
            {
                let _ = fs::remove_file(&self.path);
                let _ = fs::remove_dir(dir);
            }
        }
    }
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TuneError {
    let path = path.to_path_buf();
    move |source| TuneError::Io { what, path, source }
}

/// One value as it was before apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedValue {
    pub knob: String,
    pub path: PathBuf,
    /// The exact bytes the kernel printed before (UTF-8; sysctl text is ASCII).
    pub prior: String,
    /// What apply writes.
    pub new: String,
}

/// The drop-in as it was before apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedDropIn {
    pub path: PathBuf,
    /// `None` = the file did not exist.
    pub prior: Option<String>,
    pub new: String,
}

/// A backup file in the state dir: everything rollback needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Backup {
    pub schema: String,
    pub id: String,
    pub created_unix_ms: u64,
    /// UTC, `2026-11-28T04:45:10Z`.
    pub created: String,
    pub netns: Option<String>,
    pub hostname: Option<String>,
    pub kernel: Option<String>,
    /// `applying` (written before the first change; a crash leaves it so), `applied`,
    /// `apply_failed_rolled_back`, `rolled_back`.
    pub status: String,
    #[serde(default)]
    pub status_detail: Option<String>,
    pub values: Vec<SavedValue>,
    pub dropin: Option<SavedDropIn>,
}

/// Where things live; tests point all of them at temporary directories.
#[derive(Debug, Clone)]
pub struct Paths {
    pub state_dir: PathBuf,
    /// `None` = do not persist (runtime only).
    pub sysctl_dir: Option<PathBuf>,
    pub proc_sys: PathBuf,
}

/// Counts writes; the fault-injection hook lives here.
struct Writer {
    count: u32,
    fault_after: Option<u32>,
    fail_at: Option<u32>,
}

impl Writer {
    fn new() -> Self {
        #[cfg(debug_assertions)]
        let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse().ok());
        #[cfg(not(debug_assertions))]
        let env = |_: &str| None;
        Writer {
            count: 0,
            fault_after: env("PORTDOCTOR_FAULT_AFTER_WRITES"),
            fail_at: env("PORTDOCTOR_FAULT_FAIL_WRITE"),
        }
    }

    /// The injected failure, when the next write is the one to fail.
    fn injected(&mut self, path: &Path) -> Result<(), TuneError> {
        if self.fail_at == Some(self.count + 1) {
            self.count += 1;
            return Err(io("fault injection: failed to write", path)(
                std::io::Error::other("injected"),
            ));
        }
        Ok(())
    }

    fn wrote(&mut self) {
        self.count += 1;
        if self.fault_after == Some(self.count) {
            eprintln!(
                "portdoctor: fault injection: aborting after write {}",
                self.count
            );
            std::process::abort();
        }
    }

    /// Writes a /proc/sys value in one write(2), as sysctl(8) does.
    fn sysctl(&mut self, path: &Path, value: &str) -> Result<(), TuneError> {
        self.injected(path)?;
        let mut f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io("cannot open for writing", path))?;
        let res = f
            .write_all(value.as_bytes())
            .map_err(io("the kernel refused the value for", path));
        // A failed write may still have changed something; count it either way.
        self.wrote();
        res
    }

    /// Replaces a file atomically: temp file, fsync, rename, fsync the directory.
    fn file(&mut self, path: &Path, content: &str) -> Result<(), TuneError> {
        self.injected(path)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(io("cannot create directory", dir))?;
        let tmp = dir.join(format!(
            ".{}.tmp-{}",
            path.file_name().map_or("f".into(), |n| n.to_string_lossy()),
            std::process::id()
        ));
        {
            let mut f = File::create(&tmp).map_err(io("cannot create", &tmp))?;
            f.write_all(content.as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(io("cannot write", &tmp))?;
        }
        fs::rename(&tmp, path).map_err(io("cannot rename into place", path))?;
        sync_dir(dir)?;
        self.wrote();
        Ok(())
    }

    fn remove(&mut self, path: &Path) -> Result<(), TuneError> {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io("cannot remove", path)(e)),
        }
        sync_dir(path.parent().unwrap_or(Path::new(".")))?;
        self.wrote();
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> Result<(), TuneError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("cannot fsync directory", dir))
}

/// A sysctl value for people: whitespace runs as one space, `(empty)` for nothing.
pub fn shown(v: &str) -> String {
    let t = v.split_whitespace().collect::<Vec<_>>().join(" ");
    if t.is_empty() {
        "(empty)".into()
    } else {
        t
    }
}

/// Effective uid 0 (from /proc/self/status, no unsafe needed).
pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        let line = s.lines().find(|l| l.starts_with("Uid:"))?.to_string();
        line.split_whitespace().nth(2)?.parse::<u32>().ok()
    }) == Some(0)
}

fn read(path: &Path) -> Result<String, TuneError> {
    fs::read_to_string(path).map_err(io("cannot read", path))
}

fn read_optional(path: &Path) -> Result<Option<String>, TuneError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("cannot read", path)(e)),
    }
}

/// The drop-in with `lines` merged in: other lines stay, lines for the same keys are replaced.
pub fn merge_dropin(prior: Option<&str>, lines: &[(String, String)]) -> String {
    let key_of = |l: &str| -> Option<String> {
        let t = l.trim().trim_start_matches('-');
        if t.starts_with('#') || t.starts_with(';') {
            return None;
        }
        let (k, _) = t.split_once('=')?;
        Some(k.trim().replace('/', "."))
    };
    let mut out = String::new();
    let mut had_header = false;
    for l in prior.unwrap_or("").lines() {
        if l.starts_with("# Written by portdoctor tune") {
            had_header = true;
        }
        if key_of(l).is_some_and(|k| lines.iter().any(|(lk, _)| *lk == k)) {
            continue;
        }
        out.push_str(l);
        out.push('\n');
    }
    if !had_header && prior.is_none() {
        out.insert_str(
            0,
            "# Written by portdoctor tune apply; undo with `portdoctor tune rollback`.\n",
        );
    }
    for (k, v) in lines {
        let _ = writeln!(out, "{k} = {v}");
    }
    out
}

use std::fmt::Write as _;

/// `2026-11-28T04:45:10Z` from Unix milliseconds (civil-from-days, proleptic Gregorian).
pub fn utc_string(unix_ms: u64) -> String {
    let t = crate::units::UtcTime::from_unix_ms(unix_ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What apply did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApplyOutcome {
    /// `None` when nothing needed changing (no backup written).
    pub backup_id: Option<String>,
    pub backup_path: Option<PathBuf>,
    /// `knob: prior → new` for each value written.
    pub changed: Vec<String>,
    /// Knobs of the plan that already had the value.
    pub already: Vec<String>,
    pub dropin: Option<PathBuf>,
    pub dropin_changed: bool,
}

fn backup_path(state_dir: &Path, id: &str) -> PathBuf {
    state_dir.join(format!("{id}.json"))
}

fn write_backup(w: &mut Writer, state_dir: &Path, b: &Backup) -> Result<PathBuf, TuneError> {
    let path = backup_path(state_dir, &b.id);
    let json = serde_json::to_string_pretty(b).map_err(|e| TuneError::Other(e.to_string()))?;
    w.file(&path, &(json + "\n"))?;
    Ok(path)
}

fn new_id(state_dir: &Path, unix_ms: u64) -> String {
    let t = utc_string(unix_ms).replace([':', '-'], "");
    let base = format!("{}.{:03}Z", t.trim_end_matches('Z'), unix_ms % 1000);
    let mut id = base.clone();
    let mut n = 2;
    while backup_path(state_dir, &id).exists() {
        id = format!("{base}-{n}");
        n += 1;
    }
    id
}

/// Parses a kernel value and the wanted one with the knob's syntax, so `32768\t60999` equals
/// `32768 60999`. Falls back to whitespace-insensitive text comparison.
fn same_value(knob_id: &str, current: &str, wanted: &str) -> bool {
    let norm = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    match knobs::knob(knob_id).map(knobs::Knob::check) {
        Some(c) => match (c.parse(current), c.parse(wanted)) {
            (Ok(a), Ok(b)) => a == b,
            _ => norm(current) == norm(wanted),
        },
        None => norm(current) == norm(wanted),
    }
}

/// Applies `plan` (already checked: no refusals) in the current namespace.
pub fn apply(plan: &Plan, paths: &Paths) -> Result<ApplyOutcome, TuneError> {
    if plan.is_refused() {
        return Err(TuneError::Other(format!(
            "the plan is refused: {}",
            plan.refusals.join("; ")
        )));
    }
    // Before the prior values are read (without root nothing can change; that error comes
    // below, after "already set" has had its say).
    let _lock = if is_root() {
        Some(StateLock::acquire(&paths.state_dir)?)
    } else {
        None
    };
    let mut values = Vec::new();
    let mut already = Vec::new();
    for c in &plan.changes {
        let knob = knobs::knob(c.knob).ok_or_else(|| TuneError::Other(c.knob.to_string()))?;
        let rel = knob
            .proc_sys_path()
            .ok_or_else(|| TuneError::Other(format!("{} is not a Linux sysctl", c.knob)))?;
        let path = paths.proc_sys.join(rel);
        let prior = match fs::read_to_string(&path) {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(TuneError::Other(format!(
                    "{} does not exist on this kernel ({}): it cannot be set here; nothing was changed",
                    c.knob,
                    path.display()
                )))
            }
            Err(e) => return Err(io("cannot read", &path)(e)),
        };
        if same_value(c.knob, &prior, &c.proposed) {
            already.push(format!("{} is already {}", c.knob, c.proposed));
            continue;
        }
        values.push(SavedValue {
            knob: c.knob.to_string(),
            path,
            prior,
            new: c.proposed.clone(),
        });
    }
    // Persistent part: every planned knob, so a value set at runtime by hand gets persisted too.
    let dropin = match (&paths.sysctl_dir, &plan.dropin) {
        (Some(dir), Some(d)) if !plan.changes.is_empty() => {
            let path = dir.join(crate::rules::SYSCTL_DROPIN_NAME);
            let prior = read_optional(&path)?;
            let lines: Vec<(String, String)> = plan
                .changes
                .iter()
                .map(|c| (c.knob.to_string(), c.proposed.clone()))
                .collect();
            let _ = d;
            let new = merge_dropin(prior.as_deref(), &lines);
            (prior.as_deref() != Some(new.as_str())).then_some(SavedDropIn { path, prior, new })
        }
        _ => None,
    };
    if values.is_empty() && dropin.is_none() {
        return Ok(ApplyOutcome {
            backup_id: None,
            backup_path: None,
            changed: Vec::new(),
            already,
            dropin: paths
                .sysctl_dir
                .as_ref()
                .map(|d| d.join(crate::rules::SYSCTL_DROPIN_NAME)),
            dropin_changed: false,
        });
    }
    if !is_root() {
        return Err(TuneError::NotRoot("apply"));
    }
    let created_unix_ms = now_ms();
    let mut backup = Backup {
        schema: BACKUP_SCHEMA.into(),
        id: new_id(&paths.state_dir, created_unix_ms),
        created_unix_ms,
        created: utc_string(created_unix_ms),
        netns: plan.netns.clone(),
        hostname: plan.hostname.clone(),
        kernel: plan.os_version.clone(),
        status: "applying".into(),
        status_detail: None,
        values,
        dropin,
    };
    let mut w = Writer::new();
    // 1. The backup, durable before anything changes.
    let bpath = write_backup(&mut w, &paths.state_dir, &backup)?;
    // 2. Runtime values, then the drop-in; 3. verify.
    let result = write_all(&mut w, &backup).and_then(|()| verify_new(&backup));
    match result {
        Ok(()) => {
            backup.status = "applied".into();
            write_backup(&mut w, &paths.state_dir, &backup)?;
            Ok(ApplyOutcome {
                backup_id: Some(backup.id.clone()),
                backup_path: Some(bpath),
                changed: backup
                    .values
                    .iter()
                    .map(|v| format!("{}: {} → {}", v.knob, shown(&v.prior), shown(&v.new)))
                    .collect(),
                already,
                dropin: backup.dropin.as_ref().map(|d| d.path.clone()),
                dropin_changed: backup.dropin.is_some(),
            })
        }
        Err(e) => {
            let undo = restore(&mut w, &backup);
            backup.status = "apply_failed_rolled_back".into();
            backup.status_detail = Some(match &undo {
                Ok(()) => format!("{e}"),
                Err(u) => format!("{e}; rollback also failed: {u}"),
            });
            let _ = write_backup(&mut w, &paths.state_dir, &backup);
            Err(match undo {
                Ok(()) => TuneError::Other(format!(
                    "{e}. Everything this run changed was restored to the prior values (backup {} in {})",
                    backup.id,
                    paths.state_dir.display()
                )),
                Err(u) => TuneError::Other(format!(
                    "{e}. Restoring the prior values failed too ({u}): run `portdoctor tune rollback --id {}`",
                    backup.id
                )),
            })
        }
    }
}

fn write_all(w: &mut Writer, b: &Backup) -> Result<(), TuneError> {
    for v in &b.values {
        w.sysctl(&v.path, &v.new)?;
    }
    if let Some(d) = &b.dropin {
        w.file(&d.path, &d.new)?;
    }
    Ok(())
}

fn verify_new(b: &Backup) -> Result<(), TuneError> {
    for v in &b.values {
        let now = read(&v.path)?;
        if !same_value(&v.knob, &now, &v.new) {
            return Err(TuneError::Other(format!(
                "{} reads {:?} after writing {:?}: the kernel did not take the value",
                v.knob,
                now.trim(),
                v.new
            )));
        }
    }
    if let Some(d) = &b.dropin {
        if read_optional(&d.path)?.as_deref() != Some(d.new.as_str()) {
            return Err(TuneError::Other(format!(
                "{} does not hold what was written",
                d.path.display()
            )));
        }
    }
    Ok(())
}

/// Writes every prior value back (only where it differs) and the prior drop-in, then checks
/// that each reads back byte for byte.
fn restore(w: &mut Writer, b: &Backup) -> Result<(), TuneError> {
    let mut errors = Vec::new();
    for v in &b.values {
        let now = read_optional(&v.path)?;
        if now.as_deref() != Some(v.prior.as_str()) {
            if let Err(e) = w.sysctl(&v.path, &v.prior) {
                errors.push(e.to_string());
            }
        }
    }
    if let Some(d) = &b.dropin {
        let now = read_optional(&d.path)?;
        if now != d.prior {
            let r = match &d.prior {
                Some(c) => w.file(&d.path, c),
                None => w.remove(&d.path),
            };
            if let Err(e) = r {
                errors.push(e.to_string());
            }
        }
    }
    for v in &b.values {
        let now = read_optional(&v.path)?;
        if now.as_deref() != Some(v.prior.as_str()) {
            errors.push(format!(
                "{} reads {:?}, not the prior {:?}",
                v.knob,
                now.unwrap_or_default(),
                v.prior
            ));
        }
    }
    if let Some(d) = &b.dropin {
        if read_optional(&d.path)? != d.prior {
            errors.push(format!(
                "{} differs from its prior content",
                d.path.display()
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(TuneError::Other(errors.join("; ")))
    }
}

/// Every backup in the state dir, oldest first. Unreadable files are skipped with a note.
pub fn history(state_dir: &Path) -> Result<(Vec<Backup>, Vec<String>), TuneError> {
    let mut out = Vec::new();
    let mut notes = Vec::new();
    let entries = match fs::read_dir(state_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((out, notes)),
        Err(e) => return Err(io("cannot list", state_dir)(e)),
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        match fs::read_to_string(&p)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str::<Backup>(&t).map_err(|e| e.to_string()))
        {
            Ok(b) if b.schema == BACKUP_SCHEMA => out.push(b),
            Ok(_) => notes.push(format!("{}: not a portdoctor backup", p.display())),
            Err(e) => notes.push(format!("{}: unreadable ({e})", p.display())),
        }
    }
    out.sort_by(|a, b| {
        a.created_unix_ms
            .cmp(&b.created_unix_ms)
            .then(a.id.cmp(&b.id))
    });
    Ok((out, notes))
}

/// Picks the backup to roll back: `id`, or the newest not yet rolled back (of `netns` when
/// given).
pub fn pick_backup(
    state_dir: &Path,
    id: Option<&str>,
    netns: Option<&str>,
) -> Result<Backup, TuneError> {
    let (all, _) = history(state_dir)?;
    if let Some(id) = id {
        return all
            .into_iter()
            .find(|b| b.id == id)
            .ok_or_else(|| TuneError::NoSuchBackup(id.to_string(), state_dir.to_path_buf()));
    }
    all.into_iter()
        .rev()
        .filter(|b| netns.is_none() || b.netns.as_deref() == netns)
        .find(|b| b.status == "applying" || b.status == "applied")
        .ok_or_else(|| TuneError::NothingToRollBack(state_dir.to_path_buf()))
}

/// What rollback did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RollbackOutcome {
    pub id: String,
    pub restored: Vec<String>,
    pub dropin: Option<String>,
}

/// Restores `b` in the current namespace (the caller enters `b.netns` first) and marks it.
pub fn rollback(b: &Backup, state_dir: &Path) -> Result<RollbackOutcome, TuneError> {
    if !is_root() {
        return Err(TuneError::NotRoot("rollback"));
    }
    let _lock = StateLock::acquire(state_dir)?;
    // Picked before the lock: another rollback may have restored it since.
    let (now, _) = history(state_dir)?;
    if let Some(cur) = now.iter().find(|c| c.id == b.id) {
        if cur.status != "applying" && cur.status != "applied" {
            return Err(TuneError::Other(format!(
                "backup {} is {} now (another rollback ran meanwhile); nothing was changed",
                b.id, cur.status
            )));
        }
    }
    let mut w = Writer {
        count: 0,
        fault_after: None,
        fail_at: None,
    };
    restore(&mut w, b)?;
    let mut done = b.clone();
    done.status = "rolled_back".into();
    done.status_detail = Some(format!("rolled back at {}", utc_string(now_ms())));
    write_backup(&mut w, state_dir, &done)?;
    Ok(RollbackOutcome {
        id: b.id.clone(),
        restored: b
            .values
            .iter()
            .map(|v| format!("{} = {}", v.knob, shown(&v.prior)))
            .collect(),
        dropin: b.dropin.as_ref().map(|d| match &d.prior {
            Some(_) => format!("{} restored", d.path.display()),
            None => format!("{} removed (it did not exist before)", d.path.display()),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kernel without tcp_tw_reuse_delay (before 6.14), faked with a /proc/sys directory that
    /// lacks it: clear error, no backup, nothing written.
    #[test]
    fn missing_sysctl_is_a_clear_error_and_changes_nothing() {
        use crate::fixture::SnapshotBuilder;
        use crate::tune::plan::{plan, Goal};
        let dir = tempfile::tempdir().expect("tempdir");
        let ipv4 = dir.path().join("proc/net/ipv4");
        fs::create_dir_all(&ipv4).expect("fake /proc/sys");
        fs::write(ipv4.join("tcp_tw_reuse"), "2\n").expect("fake value");
        let snap = SnapshotBuilder::linux().build();
        let goal = Goal {
            sets: vec![
                ("net.ipv4.tcp_tw_reuse".into(), "1".into()),
                ("net.ipv4.tcp_tw_reuse_delay".into(), "500".into()),
            ],
            ..Goal::default()
        };
        let p = plan(&snap, &goal).expect("plans");
        assert!(!p.is_refused(), "{:?}", p.refusals);
        let paths = Paths {
            state_dir: dir.path().join("state"),
            sysctl_dir: Some(dir.path().join("sysctl.d")),
            proc_sys: dir.path().join("proc"),
        };
        let e = apply(&p, &paths).expect_err("tcp_tw_reuse_delay is missing");
        let msg = e.to_string();
        assert!(
            msg.contains("net.ipv4.tcp_tw_reuse_delay does not exist on this kernel")
                && msg.contains("nothing was changed"),
            "{msg}"
        );
        assert_eq!(
            fs::read_to_string(ipv4.join("tcp_tw_reuse")).expect("read"),
            "2\n"
        );
        assert!(!paths.state_dir.exists() && !dir.path().join("sysctl.d").exists());
    }

    #[test]
    fn utc_strings() {
        assert_eq!(utc_string(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_string(1_709_210_096_000), "2024-02-29T12:34:56Z");
    }

    #[test]
    fn dropin_merge_replaces_own_keys_and_keeps_others() {
        let lines = vec![("net.ipv4.tcp_tw_reuse".to_string(), "1".to_string())];
        let fresh = merge_dropin(None, &lines);
        assert!(fresh.starts_with("# Written by portdoctor"));
        assert!(fresh.ends_with("net.ipv4.tcp_tw_reuse = 1\n"));
        let prior = "# mine\nnet.core.somaxconn = 4096\nnet/ipv4/tcp_tw_reuse=0\n";
        let merged = merge_dropin(Some(prior), &lines);
        assert_eq!(
            merged,
            "# mine\nnet.core.somaxconn = 4096\nnet.ipv4.tcp_tw_reuse = 1\n"
        );
        assert_eq!(merge_dropin(Some(&merged), &lines), merged);
    }

    #[test]
    fn same_value_ignores_kernel_whitespace() {
        assert!(same_value(
            "net.ipv4.ip_local_port_range",
            "32768\t60999\n",
            "32768 60999"
        ));
        assert!(same_value("net.ipv4.ip_local_reserved_ports", "\n", ""));
        assert!(!same_value("net.ipv4.tcp_tw_reuse", "2\n", "1"));
    }
}
