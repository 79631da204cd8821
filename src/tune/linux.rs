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
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::backup::{self, value_path, Record};
pub use super::backup::{Backup, SavedDropIn, SavedValue, Unreadable, BACKUP_SCHEMA};
use super::netns_id::NetnsIdentity;
use super::plan::Plan;
use crate::knobs;

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
    /// A bad `--id` (a usage error).
    #[error("{0}")]
    BadId(String),
    #[error("no backup {0:?} in {1}; list them with `portdoctor tune history`")]
    NoSuchBackup(String, PathBuf),
    #[error("no backup to roll back in {0} (every backup there is already rolled back, or there is none)")]
    NothingToRollBack(PathBuf),
    #[error("another `portdoctor tune` (pid {pid}) is changing settings right now (it holds the lock on {path}); wait for it to finish and run this again; nothing was changed")]
    Busy { pid: u32, path: PathBuf },
}

impl TuneError {
    /// A usage error (exit 4) rather than a failure to act (exit 3).
    pub fn is_usage(&self) -> bool {
        matches!(self, TuneError::BadId(_))
    }
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
    /// Temp files of interrupted runs removed once the lock was held.
    cleaned: Vec<PathBuf>,
}

impl StateLock {
    /// Creates the state dir (0700) if needed, refuses an unsafe one, locks it and removes
    /// the temp files interrupted runs left (every writer of the state dir holds this lock, so
    /// none of them is in use).
    fn acquire(state_dir: &Path) -> Result<Self, TuneError> {
        let created_dir = (!state_dir.exists()).then(|| state_dir.to_path_buf());
        if created_dir.is_some() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(state_dir)
                .and_then(|()| fs::set_permissions(state_dir, fs::Permissions::from_mode(0o700)))
                .map_err(io("cannot create", state_dir))?;
        }
        check_state_dir(state_dir)?;
        let path = state_dir.join("lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
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
        let cleaned = clean_temp_files(
            state_dir,
            |n| Path::new(n).extension().is_some_and(|x| x == "json"),
            false,
        );
        Ok(Self {
            _file: file,
            path,
            created_dir,
            cleaned,
        })
    }
}

/// The state dir must be a directory owned by whoever runs this (root) and not writable by
/// everyone: a backup planted there would be written into the kernel by the next rollback.
pub fn check_state_dir(dir: &Path) -> Result<(), TuneError> {
    let m = fs::metadata(dir).map_err(io("cannot stat the state dir", dir))?;
    if !m.is_dir() {
        return Err(TuneError::Other(format!(
            "state dir {} is not a directory; nothing was changed",
            dir.display()
        )));
    }
    let me = euid();
    if Some(m.uid()) != me {
        return Err(TuneError::Other(format!(
            "state dir {} is owned by uid {}, not by uid {} that runs this: a backup there could have been written by someone else, and rollback writes backups into the kernel; use a directory of your own (`--state-dir`) or `chown {} {}`; nothing was changed",
            dir.display(),
            m.uid(),
            me.map_or_else(|| "?".to_string(), |u| u.to_string()),
            me.map_or_else(|| "root".to_string(), |u| u.to_string()),
            dir.display()
        )));
    }
    if m.mode() & 0o002 != 0 {
        return Err(TuneError::Other(format!(
            "state dir {} is writable by everyone (mode {:04o}): anyone could plant a backup that a rollback would write into the kernel; run `chmod 0700 {}` or use another --state-dir; nothing was changed",
            dir.display(),
            m.mode() & 0o7777,
            dir.display()
        )));
    }
    Ok(())
}

/// Removes `.NAME.tmp-PID` files in `dir` (left by a run killed between creating and renaming
/// them) whose NAME passes `name_ok`; with `only_dead`, only those whose PID is gone (another
/// writer may be using its own). Best effort: returns what was removed.
fn clean_temp_files(dir: &Path, name_ok: impl Fn(&str) -> bool, only_dead: bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    let me = std::process::id();
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let Some((name, pid)) = n
            .strip_prefix('.')
            .and_then(|r| r.rsplit_once(".tmp-"))
            .and_then(|(name, pid)| Some((name, pid.parse::<u32>().ok()?)))
        else {
            continue;
        };
        if !name_ok(name) || pid == me {
            continue;
        }
        if only_dead && Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if e.file_type().is_ok_and(|t| t.is_file()) && fs::remove_file(e.path()).is_ok() {
            out.push(e.path());
        }
    }
    if !out.is_empty() {
        let _ = sync_dir(dir);
    }
    out
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
    /// Writes that fail (`PORTDOCTOR_FAULT_FAIL_WRITE=N[,M...]`).
    fail_at: Vec<u32>,
}

impl Writer {
    fn new() -> Self {
        #[cfg(debug_assertions)]
        let env = |k: &str| std::env::var(k).ok();
        #[cfg(not(debug_assertions))]
        let env = |_: &str| None::<String>;
        Writer {
            count: 0,
            fault_after: env("PORTDOCTOR_FAULT_AFTER_WRITES").and_then(|v| v.parse().ok()),
            fail_at: env("PORTDOCTOR_FAULT_FAIL_WRITE")
                .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
                .unwrap_or_default(),
        }
    }

    /// No fault injection (rollback).
    fn plain() -> Self {
        Writer {
            count: 0,
            fault_after: None,
            fail_at: Vec::new(),
        }
    }

    /// The injected failure, when the next write is the one to fail.
    fn injected(&mut self, path: &Path) -> Result<(), TuneError> {
        if self.fail_at.contains(&(self.count + 1)) {
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

    /// Replaces a file atomically: temp file (created new, `mode`), fsync, rename, fsync the
    /// directory. A failure removes the temp file again; one a kill leaves behind is removed
    /// by the next run (`clean_temp_files`).
    fn file(&mut self, path: &Path, content: &str, mode: u32) -> Result<(), TuneError> {
        self.injected(path)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(io("cannot create directory", dir))?;
        let tmp = dir.join(format!(
            ".{}.tmp-{}",
            path.file_name().map_or("f".into(), |n| n.to_string_lossy()),
            std::process::id()
        ));
        let _ = fs::remove_file(&tmp);
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io("cannot create", &tmp))
            .and_then(|mut f| {
                f.write_all(content.as_bytes())
                    .and_then(|()| f.sync_all())
                    .map_err(io("cannot write", &tmp))
            })
            .and_then(|()| fs::rename(&tmp, path).map_err(io("cannot rename into place", path)));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
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
    euid() == Some(0)
}

/// The effective uid, from /proc/self/status.
fn euid() -> Option<u32> {
    fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        let line = s.lines().find(|l| l.starts_with("Uid:"))?.to_string();
        line.split_whitespace().nth(2)?.parse::<u32>().ok()
    })
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

pub use super::record::utc_string;

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
    /// Temp files of interrupted runs that were removed.
    pub cleaned: Vec<PathBuf>,
    /// The command that undoes this apply ([`rollback_command`]).
    pub undo: Option<String>,
}

fn backup_path(state_dir: &Path, id: &str) -> PathBuf {
    state_dir.join(format!("{id}.json"))
}

/// Writes the backup with a fresh checksum. The file name comes from the id, which is checked
/// first (it is generated, but never trusted blindly).
fn write_backup(w: &mut Writer, state_dir: &Path, b: &Backup) -> Result<PathBuf, TuneError> {
    backup::check_id(&b.id).map_err(TuneError::Other)?;
    let path = backup_path(state_dir, &b.id);
    w.file(&path, &b.sealed_text(), 0o600)?;
    Ok(path)
}

fn new_id(state_dir: &Path, unix_ms: u64) -> String {
    super::record::new_id(state_dir, unix_ms)
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

/// The drop-in must be a regular file or absent: it is replaced by rename, which would turn a
/// symbolic link into a file (and leave the file it pointed to as it was).
fn check_dropin_file(path: &Path) -> Result<(), TuneError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(TuneError::Other(format!(
            "{} is a symbolic link (to {}): portdoctor replaces the drop-in atomically by rename, which would turn the link into a regular file and leave the file it points to unchanged; give --sysctl-dir the directory of the real file, or replace the link by a copy; nothing was changed",
            path.display(),
            fs::read_link(path).map_or_else(|_| "?".into(), |t| t.display().to_string())
        ))),
        Ok(m) if !m.is_file() => Err(TuneError::Other(format!(
            "{} is not a regular file; nothing was changed",
            path.display()
        ))),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("cannot stat", path)(e)),
    }
}

/// `portdoctor tune rollback --id ID [--state-dir DIR]`, prefixed with `ip netns exec NAME`
/// when the backup belongs to a named namespace that apply did not enter itself.
pub fn rollback_command(b: &Backup, state_dir: &Path) -> String {
    let prefix = match (&b.netns, b.namespace.initial, &b.namespace.name) {
        (None, false, Some(n)) => format!("ip netns exec {} ", shell_word(n)),
        _ => String::new(),
    };
    let dir = state_dir_arg(state_dir);
    format!("{prefix}portdoctor tune rollback --id {}{dir}", b.id)
}

/// A word for a shell command line: as is when plain, else single-quoted.
fn shell_word(w: &str) -> String {
    if !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c))
    {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

/// Applies `plan` (already checked: no refusals) in the current namespace; `entered` is the
/// `--netns` name the caller entered (recorded, so rollback enters it too).
pub fn apply(plan: &Plan, paths: &Paths, entered: Option<&str>) -> Result<ApplyOutcome, TuneError> {
    if plan.is_refused() {
        return Err(TuneError::Other(format!(
            "the plan is refused: {}",
            plan.refusals.join("; ")
        )));
    }
    // Before the prior values are read (without root nothing can change; that error comes
    // below, after "already set" has had its say).
    let lock = if is_root() {
        Some(StateLock::acquire(&paths.state_dir)?)
    } else {
        None
    };
    let mut cleaned = lock.as_ref().map(|l| l.cleaned.clone()).unwrap_or_default();
    let mut values = Vec::new();
    let mut already = Vec::new();
    for c in &plan.changes {
        let path = value_path(&paths.proc_sys, c.knob).map_err(TuneError::Other)?;
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
        (Some(dir), Some(_)) if !plan.changes.is_empty() => {
            let path = dir.join(crate::rules::SYSCTL_DROPIN_NAME);
            backup::check_dropin_path(&path).map_err(TuneError::Other)?;
            check_dropin_file(&path)?;
            if lock.is_some() {
                cleaned.extend(clean_temp_files(
                    dir,
                    |n| n == crate::rules::SYSCTL_DROPIN_NAME,
                    true,
                ));
            }
            let prior = read_optional(&path)?;
            let lines: Vec<(String, String)> = plan
                .changes
                .iter()
                .map(|c| (c.knob.to_string(), c.proposed.clone()))
                .collect();
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
            cleaned,
            undo: None,
        });
    }
    if !is_root() {
        return Err(TuneError::NotRoot("apply"));
    }
    let namespace = NetnsIdentity::current(entered).map_err(io(
        "cannot identify the network namespace",
        Path::new("/proc/thread-self/ns/net"),
    ))?;
    let created_unix_ms = now_ms();
    let mut backup = Backup {
        schema: BACKUP_SCHEMA.into(),
        id: new_id(&paths.state_dir, created_unix_ms),
        created_unix_ms,
        created: utc_string(created_unix_ms),
        netns: entered.map(str::to_string),
        namespace,
        hostname: plan.hostname.clone(),
        kernel: plan.os_version.clone(),
        status: "applying".into(),
        status_detail: None,
        values,
        dropin,
        checksum: String::new(),
    };
    let mut w = Writer::new();
    // 1. The backup, durable before anything changes.
    let bpath = match write_backup(&mut w, &paths.state_dir, &backup) {
        Ok(p) => p,
        Err(e) => return Err(TuneError::Other(format!("{e}; nothing was changed"))),
    };
    // 2. Runtime values, then the drop-in; 3. verify; 4. the status. A failure at any of these
    // puts back what changed: exit 3 always means the prior state.
    let result = write_all(&mut w, &backup, &paths.proc_sys)
        .and_then(|()| verify_new(&backup, &paths.proc_sys))
        .and_then(|()| {
            let mut done = backup.clone();
            done.status = "applied".into();
            write_backup(&mut w, &paths.state_dir, &done).map(|_| done)
        });
    match result {
        Ok(done) => Ok(ApplyOutcome {
            backup_id: Some(done.id.clone()),
            backup_path: Some(bpath),
            changed: done
                .values
                .iter()
                .map(|v| format!("{}: {} → {}", v.knob, shown(&v.prior), shown(&v.new)))
                .collect(),
            already,
            dropin: done.dropin.as_ref().map(|d| d.path.clone()),
            dropin_changed: done.dropin.is_some(),
            cleaned,
            undo: Some(rollback_command(&done, &paths.state_dir)),
        }),
        Err(e) => Err(undo_failed_apply(&mut w, &mut backup, &bpath, paths, &e)),
    }
}

/// Apply failed after the backup was written: restore, and record what really happened.
fn undo_failed_apply(
    w: &mut Writer,
    backup: &mut Backup,
    bpath: &Path,
    paths: &Paths,
    e: &TuneError,
) -> TuneError {
    let undo = restore(w, backup, &paths.proc_sys);
    match undo {
        Ok(()) => {
            backup.status = "apply_failed_rolled_back".into();
            backup.status_detail = Some(e.to_string());
            let record = match write_backup(w, &paths.state_dir, backup) {
                Ok(_) => format!(
                    "backup {} in {} is marked apply_failed_rolled_back",
                    backup.id,
                    paths.state_dir.display()
                ),
                // The state dir may be full: the backup still says `applying`, which is not
                // true any more. Everything is restored, so the record is dropped rather than
                // left claiming changes that are not there.
                Err(we) => match fs::remove_file(bpath).and_then(|()| {
                    File::open(&paths.state_dir).and_then(|d| d.sync_all())
                }) {
                    Ok(()) => format!("its status could not be recorded ({we}), so backup {} was removed: there is nothing to roll back", backup.id),
                    Err(re) => format!("its status could not be recorded ({we}) nor the backup removed ({re}): backup {} still says `applying`, and rolling it back would change nothing", backup.id),
                },
            };
            TuneError::Other(format!(
                "{e}. Everything this run changed was restored to the prior values and verified; {record}"
            ))
        }
        Err(u) => {
            backup.status = "apply_failed_not_restored".into();
            backup.status_detail = Some(format!("{e}; the automatic restore failed: {u}"));
            let record = match write_backup(w, &paths.state_dir, backup) {
                Ok(_) => "marked apply_failed_not_restored".to_string(),
                Err(we) => format!("still marked applying (its status could not be updated: {we})"),
            };
            TuneError::Other(format!(
                "{e}. Restoring the prior values failed too ({u}); backup {} is {record}. Run `{}` to restore them",
                backup.id,
                rollback_command(backup, &paths.state_dir)
            ))
        }
    }
}

fn write_all(w: &mut Writer, b: &Backup, proc_sys: &Path) -> Result<(), TuneError> {
    for v in &b.values {
        let path = value_path(proc_sys, &v.knob).map_err(TuneError::Other)?;
        w.sysctl(&path, &v.new)?;
    }
    if let Some(d) = &b.dropin {
        check_dropin_file(&d.path)?;
        w.file(&d.path, &d.new, 0o644)?;
    }
    Ok(())
}

fn verify_new(b: &Backup, proc_sys: &Path) -> Result<(), TuneError> {
    for v in &b.values {
        let now = read(&value_path(proc_sys, &v.knob).map_err(TuneError::Other)?)?;
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
/// that each reads back byte for byte. Paths are derived from the knob names.
fn restore(w: &mut Writer, b: &Backup, proc_sys: &Path) -> Result<(), TuneError> {
    let mut errors = Vec::new();
    let mut value_paths = Vec::new();
    for v in &b.values {
        value_paths.push(value_path(proc_sys, &v.knob).map_err(TuneError::Other)?);
    }
    for (v, path) in b.values.iter().zip(&value_paths) {
        let now = read_optional(path)?;
        if now.as_deref() != Some(v.prior.as_str()) {
            if let Err(e) = w.sysctl(path, &v.prior) {
                errors.push(e.to_string());
            }
        }
    }
    if let Some(d) = &b.dropin {
        backup::check_dropin_path(&d.path).map_err(TuneError::Other)?;
        let now = read_optional(&d.path)?;
        if now != d.prior {
            let r = check_dropin_file(&d.path).and_then(|()| match &d.prior {
                Some(c) => w.file(&d.path, c, 0o644),
                None => w.remove(&d.path),
            });
            if let Err(e) = r {
                errors.push(e.to_string());
            }
        }
    }
    for (v, path) in b.values.iter().zip(&value_paths) {
        let now = read_optional(path)?;
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

/// Every record in the state dir, oldest first: backups and, with the reason, files that
/// cannot be used as one.
pub fn history(state_dir: &Path) -> Result<Vec<Record>, TuneError> {
    backup::scan(state_dir, Path::new("/proc/sys")).map_err(io("cannot list", state_dir))
}

/// What `tune rollback` is asked to do.
#[derive(Debug, Clone)]
pub struct RollbackRequest<'a> {
    pub state_dir: &'a Path,
    /// `/proc/sys` (tests: a temporary copy).
    pub proc_sys: &'a Path,
    /// `--id`: this backup, even if newer ones are unreadable.
    pub id: Option<&'a str>,
    /// `--netns`: enter it first; only its backups are candidates.
    pub netns: Option<&'a str>,
}

/// What rollback did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RollbackOutcome {
    pub id: String,
    /// Where the values were restored.
    pub namespace: String,
    pub restored: Vec<String>,
    pub dropin: Option<String>,
    /// Temp files of interrupted runs that were removed.
    pub cleaned: Vec<PathBuf>,
}

/// `tune rollback`: picks the backup (`--id`, or the newest whose changes may still be in
/// place), enters its namespace with `enter` (a `--netns` name apply entered), checks that the
/// namespace is the one the backup was taken in, restores byte for byte and marks it.
///
/// Refused (nothing changed): a bad id; a backup of another namespace (both named); without
/// `--id`, any unreadable record newer than the one picked (it may hold changes still applied).
pub fn rollback(
    req: &RollbackRequest<'_>,
    enter: &mut dyn FnMut(&str) -> Result<(), String>,
) -> Result<RollbackOutcome, TuneError> {
    if let Some(id) = req.id {
        backup::check_id(id).map_err(TuneError::BadId)?;
    }
    if !is_root() {
        return Err(TuneError::NotRoot("rollback"));
    }
    if let Some(n) = req.netns {
        enter(n).map_err(TuneError::Other)?;
    }
    if !req.state_dir.exists() {
        return Err(match req.id {
            Some(id) => TuneError::NoSuchBackup(id.to_string(), req.state_dir.to_path_buf()),
            None => TuneError::NothingToRollBack(req.state_dir.to_path_buf()),
        });
    }
    let lock = StateLock::acquire(req.state_dir)?;
    let mut cleaned = lock.cleaned.clone();
    let here_entered = NetnsIdentity::current(req.netns).map_err(io(
        "cannot identify the network namespace",
        Path::new("/proc/thread-self/ns/net"),
    ))?;
    let records =
        backup::scan(req.state_dir, req.proc_sys).map_err(io("cannot list", req.state_dir))?;
    let b = pick(&records, req, &here_entered)?;
    // The backup says where its values live: enter the namespace apply entered.
    if req.netns.is_none() {
        if let Some(n) = &b.netns {
            enter(n).map_err(|e| {
                TuneError::Other(format!(
                    "backup {} was taken in network namespace {n}, which cannot be entered now ({e}); nothing was changed. If the namespace is gone, its values went with it: retire the backup with `{}`, or roll back another one with --id (see `portdoctor tune history`)",
                    b.id,
                    forget_command(&b.id, req.state_dir)
                ))
            })?;
        }
    }
    let here = NetnsIdentity::current(req.netns.or(b.netns.as_deref())).map_err(io(
        "cannot identify the network namespace",
        Path::new("/proc/thread-self/ns/net"),
    ))?;
    if !here.same_namespace(&b.namespace) {
        let gone = b.netns.is_some() && here.name == b.namespace.name;
        return Err(TuneError::Other(format!(
            "backup {} belongs to network namespace {}, but this rollback runs in {}{}: its prior values would be written into the wrong namespace; nothing was changed{}",
            b.id,
            b.namespace,
            here,
            if gone { " (a namespace of the same name created later is another namespace; the one the backup belongs to is gone, and so are its values)" } else { "" },
            if gone { String::new() } else { format!(". Run it there: `{}`", rollback_command(&b, req.state_dir)) }
        )));
    }
    if let Some(d) = &b.dropin {
        if let Some(dir) = d.path.parent() {
            cleaned.extend(clean_temp_files(
                dir,
                |n| n == crate::rules::SYSCTL_DROPIN_NAME,
                true,
            ));
        }
    }
    let mut w = Writer::plain();
    restore(&mut w, &b, req.proc_sys)?;
    let mut done = b.clone();
    done.status = "rolled_back".into();
    done.status_detail = Some(format!("rolled back at {}", utc_string(now_ms())));
    if let Err(e) = write_backup(&mut w, req.state_dir, &done) {
        return Err(TuneError::Other(format!(
            "every prior value was restored and verified, but backup {} could not be marked rolled_back ({e}); running the rollback again changes nothing",
            b.id
        )));
    }
    Ok(RollbackOutcome {
        id: b.id.clone(),
        namespace: here.to_string(),
        restored: b
            .values
            .iter()
            .map(|v| format!("{} = {}", v.knob, shown(&v.prior)))
            .collect(),
        dropin: b.dropin.as_ref().map(|d| match &d.prior {
            Some(_) => format!("{} restored", d.path.display()),
            None => format!("{} removed (it did not exist before)", d.path.display()),
        }),
        cleaned,
    })
}

/// ` --state-dir DIR` for a command line, empty for the default state dir.
fn state_dir_arg(state_dir: &Path) -> String {
    if state_dir == Path::new(super::DEFAULT_STATE_DIR) {
        String::new()
    } else {
        format!(
            " --state-dir {}",
            shell_word(&state_dir.display().to_string())
        )
    }
}

/// The command that retires backup `id` of `state_dir`.
fn forget_command(id: &str, state_dir: &Path) -> String {
    let dir = state_dir_arg(state_dir);
    format!("portdoctor tune forget {id}{dir}")
}

/// `tune forget ID`: marks a backup `forgotten` so that no rollback picks it (its namespace is
/// gone, or its values were put back by hand). Changes no setting; under the state lock.
pub fn forget(state_dir: &Path, proc_sys: &Path, id: &str) -> Result<Backup, TuneError> {
    backup::check_id(id).map_err(TuneError::BadId)?;
    if !is_root() {
        return Err(TuneError::NotRoot("forget"));
    }
    if !state_dir.exists() {
        return Err(TuneError::NoSuchBackup(
            id.to_string(),
            state_dir.to_path_buf(),
        ));
    }
    let _lock = StateLock::acquire(state_dir)?;
    let records = backup::scan(state_dir, proc_sys).map_err(io("cannot list", state_dir))?;
    let b = records
        .iter()
        .find_map(|r| match r {
            Record::Backup(b) if b.id == id => Some(b),
            _ => None,
        })
        .ok_or_else(|| TuneError::NoSuchBackup(id.to_string(), state_dir.to_path_buf()))?;
    if !backup::needs_rollback(&b.status) {
        return Err(TuneError::Other(format!(
            "backup {id} is {} already: nothing to forget; nothing was changed",
            b.status
        )));
    }
    let mut done = (**b).clone();
    done.status = "forgotten".into();
    done.status_detail = Some(format!(
        "forgotten at {} (was {}); its values were not restored by portdoctor",
        utc_string(now_ms()),
        b.status
    ));
    write_backup(&mut Writer::plain(), state_dir, &done)?;
    Ok(done)
}

/// The backup a rollback acts on; see [`rollback`].
fn pick(
    records: &[Record],
    req: &RollbackRequest<'_>,
    here: &NetnsIdentity,
) -> Result<Backup, TuneError> {
    if let Some(id) = req.id {
        return match records.iter().find(|r| match r {
            Record::Backup(b) => b.id == id,
            Record::Unreadable(u) => u.id.as_deref() == Some(id),
        }) {
            Some(Record::Backup(b)) if backup::needs_rollback(&b.status) => Ok((**b).clone()),
            Some(Record::Backup(b)) => Err(TuneError::Other(format!(
                "backup {id} is {} already: nothing to roll back; nothing was changed",
                b.status
            ))),
            Some(Record::Unreadable(u)) => Err(TuneError::Other(format!(
                "backup {} cannot be used: {}; nothing was changed. Its prior values cannot be trusted: restore them by hand",
                u.file.display(),
                u.reason
            ))),
            None => Err(TuneError::NoSuchBackup(
                id.to_string(),
                req.state_dir.to_path_buf(),
            )),
        };
    }
    let chosen = records.iter().rev().find_map(|r| match r {
        Record::Backup(b)
            if backup::needs_rollback(&b.status)
                && (req.netns.is_none() || b.namespace.same_namespace(here)) =>
        {
            Some(b)
        }
        _ => None,
    });
    let floor = chosen.map(|b| backup::id_order(&b.id));
    let newer_unreadable: Vec<&Unreadable> = records
        .iter()
        .filter_map(|r| match r {
            Record::Unreadable(u) if floor.as_ref().is_none_or(|f| r.order() > *f) => Some(u),
            _ => None,
        })
        .collect();
    if !newer_unreadable.is_empty() {
        let files = newer_unreadable
            .iter()
            .map(|u| format!("{} ({})", u.file.display(), u.reason))
            .collect::<Vec<_>>()
            .join("; ");
        let way = match chosen {
            Some(b) => format!(
                "it may record changes that are still applied, which rolling back the older backup {} would leave in place. Check those values; then roll back the older one anyway with `portdoctor tune rollback --id {}`, or move the unreadable file out of {} and run this again",
                b.id,
                b.id,
                req.state_dir.display()
            ),
            None => format!(
                "it may be the latest apply, with changes still in place. Check the values by hand; then move the file out of {} (a specific backup can be rolled back with `--id ID`)",
                req.state_dir.display()
            ),
        };
        return Err(TuneError::Other(format!(
            "unreadable backup newer than any that can be rolled back: {files}; {way}; nothing was changed"
        )));
    }
    chosen
        .map(|b| (**b).clone())
        .ok_or_else(|| TuneError::NothingToRollBack(req.state_dir.to_path_buf()))
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
        let e = apply(&p, &paths, None).expect_err("tcp_tw_reuse_delay is missing");
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
