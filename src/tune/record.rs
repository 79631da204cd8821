//! What every backup record shares, whatever the OS: ids (`YYYYMMDDTHHMMSS.mmmZ`), statuses,
//! the UTC time text and the checksum (SHA-256 of the record as compact JSON with its checksum
//! field empty). `backup` (Linux) and `windows_backup` build their records on these.

use std::path::Path;

use serde::Serialize;

/// Backup states. `applying`: written before the first change (a crash leaves it so);
/// `applied`; `apply_failed_rolled_back`: apply failed and restored everything;
/// `apply_failed_not_restored`: apply failed and the automatic restore failed too (roll it
/// back); `rolled_back`; `forgotten`: retired by `tune forget` (its namespace is gone, or its
/// values were restored by hand), never picked again.
pub const STATUSES: [&str; 6] = [
    "applying",
    "applied",
    "apply_failed_rolled_back",
    "apply_failed_not_restored",
    "rolled_back",
    "forgotten",
];

/// States whose changes may still be in place: rollback picks them.
pub fn needs_rollback(status: &str) -> bool {
    matches!(status, "applying" | "applied" | "apply_failed_not_restored")
}

/// Ids are generated as `YYYYMMDDTHHMMSS.mmmZ`, with `-N` when two share a millisecond; nothing
/// else is accepted (no `/`, no `..`), so an id always names a file inside the state dir.
pub fn check_id(id: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "{:?} is not a backup id (they look like 20261128T045012.210Z; see `portdoctor tune history`)",
            id.chars().take(80).collect::<String>()
        )
    };
    let (base, suffix) = match id.split_once('-') {
        Some((b, s)) => (b, Some(s)),
        None => (id, None),
    };
    let b = base.as_bytes();
    let shape_ok = b.len() == 20
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 => c == b'T',
            15 => c == b'.',
            19 => c == b'Z',
            _ => c.is_ascii_digit(),
        });
    let suffix_ok = suffix.is_none_or(|s| {
        (1..=6).contains(&s.len()) && s.bytes().all(|c| c.is_ascii_digit()) && !s.starts_with('0')
    });
    if shape_ok && suffix_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

/// The checks every record read from `file` must pass, whatever the OS: its schema, its
/// checksum (`actual`: the checksum of its content as read), its id and file name, its status.
pub fn check_envelope(
    file: &Path,
    (schema, expected_schema): (&str, &str),
    (checksum, actual): (&str, &str),
    id: &str,
    status: &str,
) -> Result<(), String> {
    if schema != expected_schema {
        return Err(format!(
            "schema {:?}, not {expected_schema}",
            schema.chars().take(60).collect::<String>()
        ));
    }
    if checksum != actual {
        return Err(
            "checksum mismatch: the file was changed or damaged after it was written".into(),
        );
    }
    check_id(id)?;
    if file.file_name().and_then(|n| n.to_str()) != Some(&format!("{id}.json")) {
        return Err(format!("its id {id:?} does not match its file name"));
    }
    if !STATUSES.contains(&status) {
        return Err(format!("unknown status {status:?}"));
    }
    Ok(())
}

/// Orders ids by time, then by their `-N` suffix (`-10` after `-9`).
pub fn id_order(id: &str) -> (String, u32) {
    match id.split_once('-') {
        Some((b, s)) => (b.to_string(), s.parse().unwrap_or(u32::MAX)),
        None => (id.to_string(), 1),
    }
}

/// `2026-11-28T04:45:10Z` from Unix milliseconds (civil-from-days, proleptic Gregorian).
pub fn utc_string(unix_ms: u64) -> String {
    let t = crate::units::UtcTime::from_unix_ms(unix_ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// A fresh id for a record written at `unix_ms` into `state_dir` (`ID.json`), with `-N` when
/// that millisecond is taken.
pub fn new_id(state_dir: &Path, unix_ms: u64) -> String {
    let t = utc_string(unix_ms).replace([':', '-'], "");
    let base = format!("{}.{:03}Z", t.trim_end_matches('Z'), unix_ms % 1000);
    let mut id = base.clone();
    let mut n = 2;
    while state_dir.join(format!("{id}.json")).exists() {
        id = format!("{base}-{n}");
        n += 1;
    }
    id
}

/// `sha256:HEX` of `record` as compact JSON (pass it with its checksum field emptied).
pub fn checksum<T: Serialize>(record: &T) -> String {
    let canonical = serde_json::to_string(record).unwrap_or_default();
    format!("sha256:{}", super::sha256::hex(canonical.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_times_and_checksums() {
        assert_eq!(utc_string(1_709_210_096_000), "2024-02-29T12:34:56Z");
        let dir = tempfile::tempdir().unwrap();
        let id = new_id(dir.path(), 1_709_210_096_123);
        assert_eq!(id, "20240229T123456.123Z");
        assert!(check_id(&id).is_ok());
        std::fs::write(dir.path().join(format!("{id}.json")), "{}").unwrap();
        assert_eq!(new_id(dir.path(), 1_709_210_096_123), format!("{id}-2"));
        assert!(check_id("../x").is_err());
        assert_eq!(
            checksum(&1),
            format!("sha256:{}", crate::tune::sha256::hex(b"1"))
        );
    }
}
