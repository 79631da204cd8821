//! Backup records: what they hold, their checksum, and the checks that make a backup data, not
//! instructions. Every path rollback touches is derived from the knob name (values) or checked
//! against the one place a drop-in can be (`DIR/90-portdoctor.conf`, absolute, no `..`); ids
//! are the generated charset only and must match the file name; the checksum (SHA-256 of the
//! record without it) catches truncation and corruption. Records that fail any check are
//! [`Unreadable`], with the reason, and stop a rollback that would otherwise skip them.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::netns_id::NetnsIdentity;
use crate::knobs;

/// Schema of a backup file. v2 added the namespace identity and the checksum.
pub const BACKUP_SCHEMA: &str = "portdoctor.tune-backup/v2";
/// The largest backup file read (a real one is a few kilobytes).
const MAX_BACKUP_BYTES: u64 = 1 << 20;
/// The largest value text accepted (the kernel prints at most a page).
const MAX_VALUE_BYTES: usize = 4096;

pub use super::record::{check_id, id_order, needs_rollback, STATUSES};

/// One value as it was before apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedValue {
    pub knob: String,
    /// For readers only: rollback derives the path from `knob` and refuses a backup where
    /// this differs.
    pub path: PathBuf,
    /// The exact bytes the kernel printed before (UTF-8; sysctl text is ASCII).
    pub prior: String,
    /// What apply writes.
    pub new: String,
}

/// The drop-in as it was before apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedDropIn {
    pub path: PathBuf,
    /// `None` = the file did not exist.
    pub prior: Option<String>,
    pub new: String,
}

/// A backup file in the state dir: everything rollback needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backup {
    pub schema: String,
    pub id: String,
    pub created_unix_ms: u64,
    /// UTC, `2026-11-28T04:45:10Z`.
    pub created: String,
    /// The `--netns` name apply entered (rollback enters it too); `None`: apply ran in the
    /// namespace it was started in.
    pub netns: Option<String>,
    /// The namespace the values belong to; rollback runs only there.
    pub namespace: NetnsIdentity,
    pub hostname: Option<String>,
    pub kernel: Option<String>,
    /// One of [`STATUSES`].
    pub status: String,
    #[serde(default)]
    pub status_detail: Option<String>,
    pub values: Vec<SavedValue>,
    pub dropin: Option<SavedDropIn>,
    /// `sha256:HEX` of this record as compact JSON with this field empty.
    #[serde(default)]
    pub checksum: String,
}

impl Backup {
    /// The checksum of the record's content (everything but the checksum itself).
    pub fn content_checksum(&self) -> String {
        let mut c = self.clone();
        c.checksum = String::new();
        super::record::checksum(&c)
    }

    /// The file text: pretty JSON with a fresh checksum.
    pub fn sealed_text(&self) -> String {
        let mut c = self.clone();
        c.checksum = self.content_checksum();
        serde_json::to_string_pretty(&c).unwrap_or_default() + "\n"
    }

    /// Every check a record read from `file` must pass before rollback may act on it;
    /// `proc_sys` is where value paths must point (`/proc/sys`).
    pub fn check(&self, file: &Path, proc_sys: &Path) -> Result<(), String> {
        super::record::check_envelope(
            file,
            (&self.schema, BACKUP_SCHEMA),
            (&self.checksum, &self.content_checksum()),
            &self.id,
            &self.status,
        )?;
        if let Some(n) = &self.netns {
            check_netns_name(n)?;
            if self.namespace.name.as_deref() != Some(n.as_str()) {
                return Err(format!(
                    "it names namespace {n:?} but records the identity of {}",
                    self.namespace
                ));
            }
        }
        let mut seen = Vec::new();
        for v in &self.values {
            let want = value_path(proc_sys, &v.knob)?;
            if v.path != want {
                return Err(format!(
                    "the path for {} is {}, not {}: paths do not match",
                    v.knob,
                    v.path.display(),
                    want.display()
                ));
            }
            if seen.contains(&v.knob) {
                return Err(format!("{} is listed twice", v.knob));
            }
            seen.push(v.knob.clone());
            for (what, t) in [("prior", &v.prior), ("new", &v.new)] {
                if t.len() > MAX_VALUE_BYTES
                    || !t
                        .chars()
                        .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '\t' | '\n' | ',' | '-'))
                {
                    return Err(format!(
                        "the {what} value of {} is not sysctl text (digits, spaces, commas, dashes)",
                        v.knob
                    ));
                }
            }
        }
        if let Some(d) = &self.dropin {
            check_dropin_path(&d.path)?;
        }
        Ok(())
    }
}

/// `/proc/sys/net/ipv4/...` of a knob tune writes: derived from the name, never read from a
/// backup.
pub fn value_path(proc_sys: &Path, knob: &str) -> Result<PathBuf, String> {
    let k = knobs::knob(knob).ok_or_else(|| format!("{knob:?} is not a knob portdoctor tunes"))?;
    let rel = k
        .proc_sys_path()
        .ok_or_else(|| format!("{knob} is not a Linux sysctl"))?;
    Ok(proc_sys.join(rel))
}

/// A drop-in path must be `DIR/90-portdoctor.conf` with DIR absolute and free of `.`/`..`.
pub fn check_dropin_path(p: &Path) -> Result<(), String> {
    let ok = p.is_absolute()
        && p.file_name().and_then(|n| n.to_str()) == Some(crate::rules::SYSCTL_DROPIN_NAME)
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the drop-in path {} is not an absolute DIR/{} without `..`: paths do not match",
            p.display(),
            crate::rules::SYSCTL_DROPIN_NAME
        ))
    }
}

/// A namespace name as `ip netns` makes them: one path component.
pub fn check_netns_name(n: &str) -> Result<(), String> {
    if n.is_empty() || n.contains('/') || n == "." || n == ".." || n.len() > 255 {
        Err(format!("{n:?} is not a namespace name"))
    } else {
        Ok(())
    }
}

/// A backup file that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unreadable {
    pub file: PathBuf,
    /// The id its file name gives, when that is a valid id.
    pub id: Option<String>,
    /// Always `unreadable` (so scripts reading `history --json` statuses see it).
    pub status: &'static str,
    pub reason: String,
}

/// One `*.json` file of the state dir.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Record {
    Backup(Box<Backup>),
    Unreadable(Unreadable),
}

impl Record {
    /// The time order: by id (from the file name for unreadable ones; one without a valid id
    /// sorts last, as if newest).
    pub fn order(&self) -> (String, u32) {
        match self {
            Record::Backup(b) => id_order(&b.id),
            Record::Unreadable(u) => {
                u.id.as_deref()
                    .map_or_else(|| ("~".to_string(), 0), id_order)
            }
        }
    }
}

/// Every `*.json` record in `state_dir`, oldest first (a missing dir has none).
pub fn scan(state_dir: &Path, proc_sys: &Path) -> std::io::Result<Vec<Record>> {
    let entries = match fs::read_dir(state_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let stem = name.trim_end_matches(".json");
        let id = check_id(stem).is_ok().then(|| stem.to_string());
        out.push(match load(&p, proc_sys) {
            Ok(b) => Record::Backup(Box::new(b)),
            Err(reason) => Record::Unreadable(Unreadable {
                file: p,
                id,
                status: "unreadable",
                reason,
            }),
        });
    }
    out.sort_by_key(Record::order);
    Ok(out)
}

/// Reads and checks one backup file. Opened without following a symlink and without blocking
/// (a FIFO planted there is refused, not waited on).
pub fn load(path: &Path, proc_sys: &Path) -> Result<Backup, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f: File = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("cannot open: {e}"))?;
    let meta = f.metadata().map_err(|e| format!("cannot stat: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_BACKUP_BYTES {
        return Err(format!("{} bytes: too large for a backup", meta.len()));
    }
    let mut text = String::new();
    f.read_to_string(&mut text)
        .map_err(|e| format!("cannot read: {e}"))?;
    let b: Backup = serde_json::from_str(&text).map_err(|e| {
        if text.contains("portdoctor.tune-backup/v1") {
            format!("a v1 backup (before namespace identities and checksums) cannot be verified: restore its values by hand ({e})")
        } else {
            format!("not a valid backup: {e}")
        }
    })?;
    b.check(path, proc_sys)?;
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Backup {
        Backup {
            schema: BACKUP_SCHEMA.into(),
            id: "20261128T045012.210Z".into(),
            created_unix_ms: 1_795_841_412_210,
            created: "2026-11-28T04:50:12Z".into(),
            netns: Some("lab1".into()),
            namespace: NetnsIdentity {
                dev: 4,
                ino: 4_026_532_890,
                name: Some("lab1".into()),
                initial: false,
            },
            hostname: None,
            kernel: None,
            status: "applied".into(),
            status_detail: None,
            values: vec![SavedValue {
                knob: "net.ipv4.ip_local_port_range".into(),
                path: "/proc/sys/net/ipv4/ip_local_port_range".into(),
                prior: "40000\t40099\n".into(),
                new: "10000 65000".into(),
            }],
            dropin: Some(SavedDropIn {
                path: "/etc/sysctl.d/90-portdoctor.conf".into(),
                prior: None,
                new: "x".into(),
            }),
            checksum: String::new(),
        }
    }

    fn checked(b: &Backup) -> Result<(), String> {
        let sealed: Backup = serde_json::from_str(&b.sealed_text()).expect("round trip");
        sealed.check(
            Path::new("/state/20261128T045012.210Z.json"),
            Path::new("/proc/sys"),
        )
    }

    #[test]
    fn a_sealed_backup_passes_and_any_change_breaks_the_checksum() {
        let b = sample();
        checked(&b).expect("valid");
        let text = b.sealed_text();
        let mut tampered: Backup = serde_json::from_str(&text).expect("parse");
        tampered.values[0].prior = "1024\t65535\n".into();
        let e = tampered
            .check(
                Path::new("/state/20261128T045012.210Z.json"),
                Path::new("/proc/sys"),
            )
            .expect_err("changed content");
        assert!(e.contains("checksum"), "{e}");
    }

    #[test]
    fn forged_paths_ids_and_values_are_refused_even_with_a_valid_checksum() {
        let mut b = sample();
        b.values[0].path = "/tmp/victim/target.txt".into();
        assert!(checked(&b)
            .expect_err("path")
            .contains("paths do not match"));
        let mut b = sample();
        b.dropin = Some(SavedDropIn {
            path: "/etc/sysctl.d/../../tmp/90-portdoctor.conf".into(),
            prior: None,
            new: String::new(),
        });
        assert!(checked(&b).expect_err("..").contains("paths do not match"));
        let mut b = sample();
        b.dropin = Some(SavedDropIn {
            path: "/tmp/victim/target.txt".into(),
            prior: None,
            new: String::new(),
        });
        assert!(checked(&b)
            .expect_err("name")
            .contains("paths do not match"));
        let mut b = sample();
        b.id = "/tmp/victim/evil".into();
        assert!(checked(&b).expect_err("id").contains("not a backup id"));
        let mut b = sample();
        b.id = "20261128T045012.211Z".into();
        assert!(checked(&b).expect_err("file").contains("file name"));
        let mut b = sample();
        b.values[0].prior = "1; rm -rf /".into();
        assert!(checked(&b).expect_err("value").contains("not sysctl text"));
        let mut b = sample();
        b.values[0].knob = "kernel.core_pattern".into();
        b.values[0].path = "/proc/sys/kernel/core_pattern".into();
        assert!(checked(&b).expect_err("knob").contains("not a knob"));
        let mut b = sample();
        b.netns = Some("../x".into());
        assert!(checked(&b).is_err());
    }

    #[test]
    fn ids() {
        for ok in [
            "20261128T045012.210Z",
            "20261128T045012.210Z-2",
            "20261128T045012.210Z-10",
        ] {
            check_id(ok).expect(ok);
        }
        for bad in [
            "",
            "/tmp/victim/evil",
            "..",
            "../20261128T045012.210Z",
            "20261128T045012.210Z/..",
            "20261128T045012.210Z-0",
            "20261128T045012.210Z-",
            "20261128T045012.210",
            "2026112aT045012.210Z",
            "20261128T045012.210Z-2-3",
        ] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
        assert!(id_order("20261128T045012.210Z-10") > id_order("20261128T045012.210Z-9"));
        assert!(id_order("20261128T045012.210Z-2") > id_order("20261128T045012.210Z"));
        assert!(id_order("20261128T045012.211Z") > id_order("20261128T045012.210Z-9"));
    }
}
