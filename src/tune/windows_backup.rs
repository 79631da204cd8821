//! The Windows backup record (pure, so it is unit-tested on Linux too): each Tcpip registry
//! value as it was (present with its REG_DWORD data, or absent), each netsh dynamic range as it
//! was, and the boot time at apply (a registry change is "pending reboot" until the boot time
//! changes). Ids, statuses and the checksum are the shared ones of [`super::record`]; a record
//! that fails [`WinBackup::check`] is never acted on.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::record;
use crate::snapshot::DynamicPorts;

/// Schema of a Windows backup file.
pub const WIN_BACKUP_SCHEMA: &str = "portdoctor.tune-backup-windows/v1";

/// Boot times closer than this (ms) are the same boot (the clock and the tick count drift).
pub const SAME_BOOT_TOLERANCE_MS: u64 = 120_000;

/// One Tcpip REG_DWORD value as it was before apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedRegistryValue {
    /// The value name (`TcpTimedWaitDelay`), one of the Tcpip knobs.
    pub name: String,
    /// `REG_DWORD`, or `None` when the value was absent (rollback deletes it).
    pub prior_type: Option<String>,
    pub prior: Option<u32>,
    pub new: u32,
}

/// One netsh dynamic range as it was before apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedRange {
    /// `ipv4` or `ipv6`.
    pub ip_version: String,
    /// `tcp` or `udp` (`netsh int ipv4 set dynamicport udp …`); files written before UDP
    /// ranges could be applied hold TCP ranges only.
    #[serde(default = "tcp")]
    pub protocol: String,
    pub prior: DynamicPorts,
    pub new: DynamicPorts,
}

fn tcp() -> String {
    "tcp".into()
}

impl SavedRange {
    /// The knob this range is (`netsh.ipv4.dynamicport.udp`).
    pub fn knob(&self) -> String {
        format!("netsh.{}.dynamicport.{}", self.ip_version, self.protocol)
    }
}

/// A Windows backup file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WinBackup {
    pub schema: String,
    pub id: String,
    pub created_unix_ms: u64,
    pub created: String,
    pub hostname: Option<String>,
    pub os_version: Option<String>,
    /// When the host booted, at apply (Unix ms): registry changes wait for the next boot.
    pub boot_unix_ms: u64,
    /// The key the values live in (`HKLM\…\Tcpip\Parameters`, or the test override).
    pub registry_key: String,
    pub status: String,
    #[serde(default)]
    pub status_detail: Option<String>,
    pub registry: Vec<SavedRegistryValue>,
    pub ranges: Vec<SavedRange>,
    #[serde(default)]
    pub checksum: String,
}

impl WinBackup {
    pub fn content_checksum(&self) -> String {
        let mut c = self.clone();
        c.checksum = String::new();
        record::checksum(&c)
    }

    /// The file text: pretty JSON with a fresh checksum.
    pub fn sealed_text(&self) -> String {
        let mut c = self.clone();
        c.checksum = self.content_checksum();
        serde_json::to_string_pretty(&c).unwrap_or_default() + "\n"
    }

    /// Whether the registry changes of this record already apply: the host booted after it.
    pub fn registry_pending_reboot(&self, boot_now_ms: u64) -> bool {
        !self.registry.is_empty()
            && boot_now_ms.abs_diff(self.boot_unix_ms) <= SAME_BOOT_TOLERANCE_MS
    }

    /// Every check a record read from `file` must pass before rollback acts on it.
    pub fn check(&self, file: &Path, key: &str) -> Result<(), String> {
        super::record::check_envelope(
            file,
            (&self.schema, WIN_BACKUP_SCHEMA),
            (&self.checksum, &self.content_checksum()),
            &self.id,
            &self.status,
        )?;
        if !self.registry_key.eq_ignore_ascii_case(key) {
            return Err(format!(
                "it names the registry key {:?}, not {key:?} that this run writes",
                self.registry_key
            ));
        }
        let mut seen: Vec<&str> = Vec::new();
        for v in &self.registry {
            if crate::knobs::knob(&format!("tcpip.{}", v.name)).is_none() {
                return Err(format!(
                    "{:?} is not a Tcpip value portdoctor tunes",
                    v.name
                ));
            }
            let shape_ok = match (&v.prior_type, v.prior) {
                (None, None) => true,
                (Some(t), Some(_)) => t == "REG_DWORD",
                _ => false,
            };
            if !shape_ok || seen.contains(&v.name.as_str()) {
                return Err(format!(
                    "the saved value {} is malformed or listed twice",
                    v.name
                ));
            }
            seen.push(&v.name);
        }
        let mut seen_ranges: Vec<String> = Vec::new();
        for r in &self.ranges {
            if !matches!(r.ip_version.as_str(), "ipv4" | "ipv6")
                || !matches!(r.protocol.as_str(), "tcp" | "udp")
                || r.prior.range().is_none()
                || r.new.range().is_none()
                || seen_ranges.contains(&r.knob())
            {
                return Err(format!(
                    "the saved range {:?} is malformed or listed twice",
                    r.knob()
                ));
            }
            seen_ranges.push(r.knob());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> WinBackup {
        WinBackup {
            schema: WIN_BACKUP_SCHEMA.into(),
            id: "20261203T154500.000Z".into(),
            created_unix_ms: 1_796_312_700_000,
            created: "2026-12-03T15:45:00Z".into(),
            hostname: Some("win".into()),
            os_version: None,
            boot_unix_ms: 1_796_300_000_000,
            registry_key: r"HKCU\Software\portdoctor-test\Parameters".into(),
            status: "applied".into(),
            status_detail: None,
            registry: vec![SavedRegistryValue {
                name: "TcpTimedWaitDelay".into(),
                prior_type: None,
                prior: None,
                new: 30,
            }],
            ranges: vec![SavedRange {
                ip_version: "ipv4".into(),
                protocol: "udp".into(),
                prior: DynamicPorts {
                    start: 49152,
                    count: 16384,
                },
                new: DynamicPorts {
                    start: 32768,
                    count: 32768,
                },
            }],
            checksum: String::new(),
        }
    }

    #[test]
    fn records_are_checked_before_use() {
        let b = sample();
        let text = b.sealed_text();
        let read: WinBackup = serde_json::from_str(&text).unwrap();
        let file = Path::new("20261203T154500.000Z.json");
        let key = r"HKCU\Software\portdoctor-test\Parameters";
        assert_eq!(read.check(file, key), Ok(()));
        // Tampered data, another key, an unknown value name, a wrong file name: refused.
        let tampered: WinBackup =
            serde_json::from_str(&text.replace("\"new\": 30", "\"new\": 31")).unwrap();
        assert!(tampered.check(file, key).unwrap_err().contains("checksum"));
        assert!(read
            .check(file, r"HKLM\x")
            .unwrap_err()
            .contains("registry key"));
        assert!(read.check(Path::new("other.json"), key).is_err());
        let mut odd = sample();
        odd.registry[0].name = "Start".into();
        let odd: WinBackup = serde_json::from_str(&odd.sealed_text()).unwrap();
        assert!(odd.check(file, key).is_err());
        // Pending reboot until the boot time changes.
        assert!(read.registry_pending_reboot(1_796_300_000_500));
        assert!(!read.registry_pending_reboot(1_796_400_000_000));
    }
}
