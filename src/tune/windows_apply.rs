//! `tune apply | rollback | history` on Windows, with the guarantees of the Linux backend:
//! elevation checked first; a plan whose prior values cannot all be read is refused; a backup
//! (each Tcpip REG_DWORD present with its data or absent, each netsh dynamic range) is written
//! before anything changes, in `%ProgramData%\portdoctor\backups` whose DACL grants
//! Administrators and SYSTEM only; one run at a time (an exclusively opened lock file, the
//! counterpart of flock); registry values are written through the registry API and read back at
//! once, netsh ranges are set and read back at once; registry changes are "pending reboot"
//! until the boot time changes; rollback restores from the backup, deleting values that were
//! absent. A failure after the backup restores what changed.
//!
//! The auto-reuse range (`Set-NetTCPSetting`) is not applied here yet: a plan with it is
//! refused by `apply` and its PowerShell command is printed instead.
#![allow(unsafe_code)]

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::os::windows::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::ptr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use windows_sys::Win32::Foundation::{CloseHandle, LocalFree, ERROR_FILE_NOT_FOUND, HANDLE};
use windows_sys::Win32::Security::Authorization::{
    ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
};
use windows_sys::Win32::Security::{
    GetTokenInformation, SetFileSecurityW, TokenElevation, DACL_SECURITY_INFORMATION,
    PROTECTED_DACL_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR, SECURITY_ATTRIBUTES,
    TOKEN_ELEVATION, TOKEN_QUERY,
};
use windows_sys::Win32::Storage::FileSystem::CreateDirectoryW;
use windows_sys::Win32::System::Registry::{
    RegCloseKey, RegDeleteValueW, RegOpenKeyExW, RegSetValueExW, HKEY, HKEY_CURRENT_USER,
    HKEY_LOCAL_MACHINE, KEY_QUERY_VALUE, KEY_SET_VALUE, REG_DWORD,
};
use windows_sys::Win32::System::SystemInformation::GetTickCount64;
use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};

use super::plan::Plan;
use super::record::{self, needs_rollback};
use super::windows_backup::{SavedRange, SavedRegistryValue, WinBackup, WIN_BACKUP_SCHEMA};
use crate::collect::windows::system::system_tool;
use crate::collect::windows_text::{parse_dynamic_port, parse_registry_path, RegistryRoot};
use crate::snapshot::DynamicPorts;

/// Administrators and SYSTEM, full control, inherited by files, nothing inherited from above.
const STATE_DIR_SDDL: &str = "D:P(A;OICI;FA;;;BA)(A;OICI;FA;;;SY)";

/// Why apply, rollback or history stopped.
#[derive(Debug)]
pub enum WinTuneError {
    NotElevated(&'static str),
    /// Another apply or rollback holds the lock.
    Locked(PathBuf),
    /// A bad `--id` or nothing to roll back (exit 4).
    Usage(String),
    Other(String),
}

impl WinTuneError {
    pub fn is_usage(&self) -> bool {
        matches!(self, WinTuneError::Usage(_))
    }
}

impl fmt::Display for WinTuneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WinTuneError::NotElevated(what) => write!(
                f,
                "`tune {what}` changes system settings: run it from an elevated prompt (Run as administrator); nothing was changed"
            ),
            WinTuneError::Locked(p) => write!(
                f,
                "another `portdoctor tune apply` or `rollback` is running (lock {} is held); nothing was changed",
                p.display()
            ),
            WinTuneError::Usage(m) | WinTuneError::Other(m) => f.write_str(m),
        }
    }
}

/// The state dir: `%ProgramData%\portdoctor\backups` unless `--state-dir` named another.
pub fn state_dir(given: &Path) -> PathBuf {
    if given == Path::new(super::DEFAULT_STATE_DIR) {
        let base = std::env::var_os("ProgramData")
            .filter(|p| !p.is_empty())
            .map_or_else(|| PathBuf::from(r"C:\ProgramData"), PathBuf::from);
        base.join("portdoctor").join("backups")
    } else {
        given.to_path_buf()
    }
}

fn wide(s: &std::ffi::OsStr) -> Vec<u16> {
    use std::os::windows::ffi::OsStrExt;
    s.encode_wide().chain(std::iter::once(0)).collect()
}

/// Whether this process runs elevated (its token's `TokenElevation`).
pub fn is_elevated() -> bool {
    let mut token: HANDLE = ptr::null_mut();
    // SAFETY: GetCurrentProcess returns a pseudo handle; `token` is a valid out pointer.
    if unsafe { OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &raw mut token) } == 0 {
        return false;
    }
    let mut elevation = TOKEN_ELEVATION { TokenIsElevated: 0 };
    let mut len = 0u32;
    // SAFETY: token is open for query; the buffer is a TOKEN_ELEVATION of the size given.
    let ok = unsafe {
        GetTokenInformation(
            token,
            TokenElevation,
            (&raw mut elevation).cast(),
            std::mem::size_of::<TOKEN_ELEVATION>() as u32,
            &raw mut len,
        )
    };
    // SAFETY: token was opened above and is closed once.
    unsafe { CloseHandle(token) };
    ok != 0 && elevation.TokenIsElevated != 0
}

/// When the host booted (Unix ms): now − `GetTickCount64`.
pub fn boot_unix_ms() -> u64 {
    // SAFETY: no arguments, no state.
    let up = unsafe { GetTickCount64() };
    now_ms().saturating_sub(up)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Creates `dir` (and its parents) and sets its DACL to Administrators and SYSTEM only,
/// protected from inheritance, also when it existed.
fn secure_state_dir(dir: &Path) -> Result<(), WinTuneError> {
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent).map_err(|e| {
            WinTuneError::Other(format!(
                "cannot create {}: {e}; nothing was changed",
                parent.display()
            ))
        })?;
    }
    let sddl = wide(std::ffi::OsStr::new(STATE_DIR_SDDL));
    let mut sd: PSECURITY_DESCRIPTOR = ptr::null_mut();
    // SAFETY: sddl is NUL-terminated UTF-16; `sd` receives a LocalAlloc'd descriptor freed below.
    let ok = unsafe {
        ConvertStringSecurityDescriptorToSecurityDescriptorW(
            sddl.as_ptr(),
            SDDL_REVISION_1,
            &raw mut sd,
            ptr::null_mut(),
        )
    };
    if ok == 0 {
        return Err(WinTuneError::Other(format!(
            "cannot build the security descriptor for {}: Windows error {}; nothing was changed",
            dir.display(),
            std::io::Error::last_os_error()
        )));
    }
    let path = wide(dir.as_os_str());
    let attrs = SECURITY_ATTRIBUTES {
        nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
        lpSecurityDescriptor: sd,
        bInheritHandle: 0,
    };
    // SAFETY: path is NUL-terminated; attrs points to a valid descriptor for the call.
    let created = unsafe { CreateDirectoryW(path.as_ptr(), &raw const attrs) } != 0;
    // SAFETY: as above; re-applies the DACL to a directory that already existed.
    let secured = created
        || unsafe {
            SetFileSecurityW(
                path.as_ptr(),
                DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION,
                sd,
            )
        } != 0;
    let err = std::io::Error::last_os_error();
    // SAFETY: sd was allocated by ConvertStringSecurityDescriptor… and is freed once.
    unsafe { LocalFree(sd.cast()) };
    if secured && dir.is_dir() {
        Ok(())
    } else {
        Err(WinTuneError::Other(format!(
            "cannot create or secure {} (Administrators and SYSTEM only): {err}; nothing was changed",
            dir.display()
        )))
    }
}

/// The lock: `DIR\.lock` opened with no sharing, so a second run cannot open it; released when
/// the process ends, however it ends.
struct Lock(#[allow(dead_code)] File);

fn lock(dir: &Path) -> Result<Lock, WinTuneError> {
    let path = dir.join(".lock");
    match OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .share_mode(0)
        .open(&path)
    {
        Ok(f) => Ok(Lock(f)),
        // ERROR_SHARING_VIOLATION
        Err(e) if e.raw_os_error() == Some(32) => Err(WinTuneError::Locked(path)),
        Err(e) => Err(WinTuneError::Other(format!(
            "cannot open the lock {}: {e}; nothing was changed",
            path.display()
        ))),
    }
}

/// An open registry key, closed on drop.
struct Key(HKEY);

impl Drop for Key {
    fn drop(&mut self) {
        // SAFETY: opened by RegOpenKeyExW, closed only here.
        unsafe { RegCloseKey(self.0) };
    }
}

fn open_key(key: &str) -> Result<Key, String> {
    let (root, sub) =
        parse_registry_path(key).ok_or_else(|| format!("{key:?} is not HKLM\\… or HKCU\\…"))?;
    let root = match root {
        RegistryRoot::LocalMachine => HKEY_LOCAL_MACHINE,
        RegistryRoot::CurrentUser => HKEY_CURRENT_USER,
    };
    let sub = wide(std::ffi::OsStr::new(&sub));
    let mut h: HKEY = ptr::null_mut();
    // SAFETY: root is predefined, sub NUL-terminated, h a valid out pointer.
    let rc = unsafe {
        RegOpenKeyExW(
            root,
            sub.as_ptr(),
            0,
            KEY_SET_VALUE | KEY_QUERY_VALUE,
            &raw mut h,
        )
    };
    if rc == 0 {
        Ok(Key(h))
    } else {
        Err(format!("cannot open {key} for writing: Windows error {rc}"))
    }
}

/// The value as it is: `Ok(None)` absent; an error when the key cannot be read or the value is
/// not a REG_DWORD (its prior could not be restored exactly).
fn read_value(key: &str, name: &str) -> Result<Option<u32>, String> {
    let (root, sub) =
        parse_registry_path(key).ok_or_else(|| format!("{key:?} is not HKLM\\… or HKCU\\…"))?;
    crate::collect::windows::read_dword_raw(root, &sub, name).map_err(|e| {
        format!("{key}\\{name} cannot be read as a REG_DWORD ({e}): its prior value is unknown")
    })
}

fn write_value(key: &str, name: &str, value: Option<u32>) -> Result<(), String> {
    let k = open_key(key)?;
    let n = wide(std::ffi::OsStr::new(name));
    let rc = match value {
        Some(v) => {
            let data = v.to_le_bytes();
            // SAFETY: k is open for KEY_SET_VALUE; n is NUL-terminated; data is 4 bytes.
            unsafe { RegSetValueExW(k.0, n.as_ptr(), 0, REG_DWORD, data.as_ptr(), 4) }
        }
        // SAFETY: k is open for KEY_SET_VALUE; n is NUL-terminated.
        None => match unsafe { RegDeleteValueW(k.0, n.as_ptr()) } {
            ERROR_FILE_NOT_FOUND => 0,
            rc => rc,
        },
    };
    if rc != 0 {
        return Err(format!("writing {key}\\{name} failed: Windows error {rc}"));
    }
    match read_value(key, name)? {
        got if got == value => Ok(()),
        got => Err(format!(
            "{key}\\{name} reads back as {} after writing {}",
            shown(got),
            shown(value)
        )),
    }
}

fn shown(v: Option<u32>) -> String {
    v.map_or_else(|| "(absent)".into(), |v| v.to_string())
}

fn netsh(args: &[&str]) -> Result<String, String> {
    let exe = system_tool("netsh.exe").ok_or("the System32 folder is unknown: netsh not run")?;
    let out = Command::new(exe)
        .args(args)
        .output()
        .map_err(|e| format!("netsh {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "netsh {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout).trim()
        ))
    }
}

/// `v`: `ipv4`/`ipv6`; `proto`: `tcp`/`udp`.
fn read_range(v: &str, proto: &str) -> Result<DynamicPorts, String> {
    netsh(&["int", v, "show", "dynamicport", proto])
        .ok()
        .as_deref()
        .and_then(parse_dynamic_port)
        .ok_or_else(|| format!("the {v} {proto} dynamic range cannot be read (netsh int {v} show dynamicport {proto}): its prior value is unknown"))
}

fn set_range(v: &str, proto: &str, d: DynamicPorts) -> Result<(), String> {
    netsh(&[
        "int",
        v,
        "set",
        "dynamicport",
        proto,
        &format!("start={}", d.start),
        &format!("num={}", d.count),
    ])?;
    let got = read_range(v, proto)?;
    if got == d {
        Ok(())
    } else {
        Err(format!(
            "the {v} {proto} dynamic range reads back as start={} num={} after setting start={} num={}",
            got.start, got.count, d.start, d.count
        ))
    }
}

/// Test builds only: exit after this many writes (`PORTDOCTOR_TEST_ABORT_AFTER_WRITES`), as a
/// crash or a power cut would, so the Wine tests prove rollback restores any half-done apply.
fn test_abort_point(done: usize) {
    #[cfg(feature = "fixture")]
    if std::env::var("PORTDOCTOR_TEST_ABORT_AFTER_WRITES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        == Some(done)
    {
        std::process::exit(86);
    }
    let _ = done;
}

fn backup_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.json"))
}

/// Writes the record durably: a temp file, flushed, renamed over the old one.
fn write_backup(dir: &Path, b: &WinBackup) -> Result<PathBuf, String> {
    record::check_id(&b.id)?;
    let path = backup_path(dir, &b.id);
    let tmp = dir.join(format!(".{}.tmp", b.id));
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        std::io::Write::write_all(&mut f, b.sealed_text().as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, &path)
    };
    write().map_err(|e| format!("cannot write the backup {}: {e}", path.display()))?;
    Ok(path)
}

/// What apply did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WinApplyOutcome {
    pub backup_id: Option<String>,
    pub backup_path: Option<PathBuf>,
    /// `knob: prior → new` for each value written.
    pub changed: Vec<String>,
    pub already: Vec<String>,
    /// Registry values written that take effect at the next boot.
    pub pending_reboot: Vec<String>,
    pub undo: Option<String>,
}

fn rollback_command(id: &str, dir: &Path, given: &Path) -> String {
    let d = if dir == state_dir(Path::new(super::DEFAULT_STATE_DIR))
        && given == Path::new(super::DEFAULT_STATE_DIR)
    {
        String::new()
    } else {
        format!(" --state-dir \"{}\"", dir.display())
    };
    format!("portdoctor tune rollback --id {id}{d}")
}

/// Applies `plan` (no refusals) to the Tcpip values under `key` and the netsh ranges.
pub fn apply(plan: &Plan, given_dir: &Path, key: &str) -> Result<WinApplyOutcome, WinTuneError> {
    if plan.is_refused() {
        return Err(WinTuneError::Other(format!(
            "the plan is refused: {}",
            plan.refusals.join("; ")
        )));
    }
    if !is_elevated() {
        return Err(WinTuneError::NotElevated("apply"));
    }
    if plan
        .changes
        .iter()
        .any(|c| c.knob == "NetTCPSetting.AutoReusePortRange")
    {
        return Err(WinTuneError::Other("`tune apply` does not set the auto-reuse range yet: run the Set-NetTCPSetting command `tune plan` prints in an elevated PowerShell (then reboot); nothing was changed".into()));
    }
    let dir = state_dir(given_dir);
    secure_state_dir(&dir)?;
    let _lock = lock(&dir)?;
    let mut registry = Vec::new();
    let mut ranges = Vec::new();
    let mut already = Vec::new();
    let unknown =
        |m: String| WinTuneError::Other(format!("{m}; refusing to apply, nothing was changed"));
    for c in &plan.changes {
        if let Some(name) = c.knob.strip_prefix("tcpip.") {
            let crate::knobs::KnobValue::Int(new) = c.value else {
                continue;
            };
            let new = u32::try_from(new)
                .map_err(|_| unknown(format!("{} = {new} is not a DWORD", c.knob)))?;
            let prior = read_value(key, name).map_err(unknown)?;
            if prior == Some(new) {
                already.push(format!("{} is already {new}", c.knob));
                continue;
            }
            registry.push(SavedRegistryValue {
                name: name.to_string(),
                prior_type: prior.map(|_| "REG_DWORD".to_string()),
                prior,
                new,
            });
        } else if let Some((v, proto)) = c
            .knob
            .strip_prefix("netsh.")
            .and_then(|r| r.split_once(".dynamicport."))
        {
            let crate::knobs::KnobValue::StartNum { start, num } = c.value else {
                continue;
            };
            let new = DynamicPorts { start, count: num };
            let prior = read_range(v, proto).map_err(unknown)?;
            if prior == new {
                already.push(format!("{} is already start={start} num={num}", c.knob));
                continue;
            }
            ranges.push(SavedRange {
                ip_version: v.to_string(),
                protocol: proto.to_string(),
                prior,
                new,
            });
        } else {
            // Never report success for a change that was not made.
            return Err(unknown(format!(
                "`tune apply` on Windows cannot set {}",
                c.knob
            )));
        }
    }
    if registry.is_empty() && ranges.is_empty() {
        return Ok(WinApplyOutcome {
            backup_id: None,
            backup_path: None,
            changed: Vec::new(),
            already,
            pending_reboot: Vec::new(),
            undo: None,
        });
    }
    let created_unix_ms = now_ms();
    let mut backup = WinBackup {
        schema: WIN_BACKUP_SCHEMA.into(),
        id: record::new_id(&dir, created_unix_ms),
        created_unix_ms,
        created: record::utc_string(created_unix_ms),
        hostname: plan.hostname.clone(),
        os_version: plan.os_version.clone(),
        boot_unix_ms: boot_unix_ms(),
        registry_key: key.to_string(),
        status: "applying".into(),
        status_detail: None,
        registry,
        ranges,
        checksum: String::new(),
    };
    let bpath = write_backup(&dir, &backup)
        .map_err(|e| WinTuneError::Other(format!("{e}; nothing was changed")))?;
    let result = write_all(&backup, key).and_then(|()| {
        let mut done = backup.clone();
        done.status = "applied".into();
        write_backup(&dir, &done).map(|_| done)
    });
    match result {
        Ok(done) => Ok(WinApplyOutcome {
            backup_id: Some(done.id.clone()),
            backup_path: Some(bpath),
            changed: changed_lines(&done),
            already,
            pending_reboot: done
                .registry
                .iter()
                .map(|r| format!("tcpip.{}", r.name))
                .collect(),
            undo: Some(rollback_command(&done.id, &dir, given_dir)),
        }),
        Err(e) => {
            let restored = restore(&backup, key);
            backup.status = if restored.is_ok() {
                "apply_failed_rolled_back"
            } else {
                "apply_failed_not_restored"
            }
            .into();
            backup.status_detail = Some(e.clone());
            let saved = write_backup(&dir, &backup);
            Err(WinTuneError::Other(match (restored, saved) {
                (Ok(()), _) => format!(
                    "{e}; every value was put back as it was (backup {})",
                    backup.id
                ),
                (Err(r), _) => format!(
                    "{e}; restoring failed too ({r}): run {}",
                    rollback_command(&backup.id, &dir, given_dir)
                ),
            }))
        }
    }
}

fn changed_lines(b: &WinBackup) -> Vec<String> {
    b.registry
        .iter()
        .map(|r| format!("tcpip.{}: {} → {}", r.name, shown(r.prior), r.new))
        .chain(b.ranges.iter().map(|r| {
            format!(
                "{}: start={} num={} → start={} num={}",
                r.knob(),
                r.prior.start,
                r.prior.count,
                r.new.start,
                r.new.count
            )
        }))
        .collect()
}

/// Registry values first (they wait for a reboot anyway), then the ranges; each read back.
fn write_all(b: &WinBackup, key: &str) -> Result<(), String> {
    let mut done = 0;
    for r in &b.registry {
        write_value(key, &r.name, Some(r.new))?;
        done += 1;
        test_abort_point(done);
    }
    for r in &b.ranges {
        set_range(&r.ip_version, &r.protocol, r.new)?;
        done += 1;
        test_abort_point(done);
    }
    Ok(())
}

/// Puts every saved value back (absent ones deleted), in reverse order; all are tried.
fn restore(b: &WinBackup, key: &str) -> Result<(), String> {
    let mut errors = Vec::new();
    for r in b.ranges.iter().rev() {
        if let Err(e) = set_range(&r.ip_version, &r.protocol, r.prior) {
            errors.push(e);
        }
    }
    for r in b.registry.iter().rev() {
        if let Err(e) = write_value(key, &r.name, r.prior) {
            errors.push(e);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// A backup file, or why it cannot be used.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum WinRecord {
    Backup {
        #[serde(flatten)]
        backup: Box<WinBackup>,
        /// Registry values written by it wait for a reboot (the host has not booted since).
        pending_reboot: bool,
    },
    Unreadable {
        file: PathBuf,
        status: &'static str,
        reason: String,
    },
}

fn load(path: &Path, key: &str) -> Result<WinBackup, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
    if text.len() > 1 << 20 {
        return Err("larger than 1 MiB".into());
    }
    let b: WinBackup =
        serde_json::from_str(&text).map_err(|e| format!("not a backup record: {e}"))?;
    b.check(path, key)?;
    Ok(b)
}

/// Every record in the state dir, oldest first.
pub fn history(given_dir: &Path, key: &str) -> Result<Vec<WinRecord>, WinTuneError> {
    let dir = state_dir(given_dir);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(WinTuneError::Other(format!(
                "cannot list {}: {e}",
                dir.display()
            )))
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort_by_key(|p| {
        record::id_order(
            &p.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
        )
    });
    let boot = boot_unix_ms();
    Ok(files
        .into_iter()
        .map(|f| match load(&f, key) {
            Ok(b) => WinRecord::Backup {
                pending_reboot: b.status == "applied" && b.registry_pending_reboot(boot),
                backup: Box::new(b),
            },
            Err(reason) => WinRecord::Unreadable {
                file: f,
                status: "unreadable",
                reason,
            },
        })
        .collect())
}

/// What rollback did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WinRollbackOutcome {
    pub id: String,
    pub restored: Vec<String>,
}

/// Restores the backup `id`, or the newest that may still be in effect.
pub fn rollback(
    given_dir: &Path,
    key: &str,
    id: Option<&str>,
) -> Result<WinRollbackOutcome, WinTuneError> {
    if let Some(id) = id {
        record::check_id(id).map_err(WinTuneError::Usage)?;
    }
    if !is_elevated() {
        return Err(WinTuneError::NotElevated("rollback"));
    }
    let dir = state_dir(given_dir);
    let _lock = lock(&dir)?;
    let mut b = if let Some(id) = id {
        load(&backup_path(&dir, id), key)
            .map_err(|e| WinTuneError::Usage(format!("backup {id}: {e}")))?
    } else {
        {
            let all = history(given_dir, key)?;
            if let Some(WinRecord::Unreadable { file, reason, .. }) = all
                .iter()
                .find(|r| matches!(r, WinRecord::Unreadable { .. }))
            {
                return Err(WinTuneError::Other(format!(
                    "{} cannot be used ({reason}): give --id to roll back another one",
                    file.display()
                )));
            }
            all.into_iter()
                .rev()
                .find_map(|r| match r {
                    WinRecord::Backup { backup, .. } if needs_rollback(&backup.status) => {
                        Some(*backup)
                    }
                    _ => None,
                })
                .ok_or_else(|| {
                    WinTuneError::Usage(format!("nothing to roll back in {}", dir.display()))
                })?
        }
    };
    if !needs_rollback(&b.status) {
        return Err(WinTuneError::Usage(format!(
            "backup {} is {}: nothing to roll back",
            b.id, b.status
        )));
    }
    restore(&b, key).map_err(|e| {
        WinTuneError::Other(format!("rollback of {} failed: {e}; run it again", b.id))
    })?;
    let restored = b
        .registry
        .iter()
        .map(|r| format!("tcpip.{} = {}", r.name, shown(r.prior)))
        .chain(b.ranges.iter().map(|r| {
            format!(
                "{} = start={} num={}",
                r.knob(),
                r.prior.start,
                r.prior.count
            )
        }))
        .collect();
    b.status = "rolled_back".into();
    b.status_detail = Some(format!("rolled back at {}", record::utc_string(now_ms())));
    write_backup(&dir, &b).map_err(WinTuneError::Other)?;
    Ok(WinRollbackOutcome { id: b.id, restored })
}
