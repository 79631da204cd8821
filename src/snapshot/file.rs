//! Snapshot files, schema `portdoctor.snapshot/v1`: the raw observation of one collection as
//! JSON, so a snapshot taken on one host (`check --save FILE`) can be analysed on any other
//! (`check --load FILE`, `capacity --from-snapshot FILE`) and attached to a ticket.
//!
//! ```text
//! {"schema":"portdoctor.snapshot/v1",
//! "tool":{"name":"portdoctor","version":"0.1.0"},
//! "snapshot":{
//!  "os":"linux",
//!  "host":{"hostname":"db1","os_version":"6.18.0","netns":null},
//!  "source":"netlink",
//!  "taken_at_unix_ms":1795814043512,
//!  "settings":{…the `settings` object of a portdoctor.check/v1 report…},
//!  "counters":{"tcp":{…},"tcp_ext":{…},"sockstat":{…}},
//!  "owners":{"processes":{"1234":"api-server"},"inodes_by_pid":{"1234":[81234,81240]},"hidden_processes":0},
//!  "notes":[],
//!  "windows":null,
//!  "connect_failures":{"source":"…","window_seconds":10.0,"events":[{"pid":42,"process":"client",
//!    "exited":false,"netns":{"dev":4,"ino":4026531840},"netns_name":null,"local_ip":"10.0.0.5",
//!    "remote_ip":"10.0.0.9","remote_port":5432,"error":"EADDRNOTAVAIL","count":25}],
//!    "other_namespaces":{},"lost":0},   (only after `check --observe`; added within v1)
//!  "socket_fields":[
//!   "state",
//!   …
//!   "pid"],
//!  "sockets":[
//!   [1,"10.0.0.5",32768,"10.0.0.9",5432,null,81234,1000,null],
//!   [6,"10.0.0.5",33068,"10.0.0.9",5432,59000,0,0,null],
//!   …]}}
//! ```
//!
//! One socket is one line: an array in the order of `socket_fields` (state as the kernel
//! numbers it in `include/net/tcp_states.h`: 1 ESTABLISHED … 6 TIME_WAIT, 7 bound-only,
//! 10 LISTEN, 12 NEW_SYN_RECV), e.g. 55 bytes with the newline for
//! `  [6,"10.0.0.5",33068,"10.0.0.9",5432,59000,0,0,null],`. Measured: 56.0 bytes per socket for the bench/save.sh population (300k,
//! loopback IPv4 and IPv6, 90 % TIME_WAIT, no owners: 16.0 MiB), 61.0 for the synthetic one of
//! benches/model.rs (10.x addresses, owners). Owners list the inodes under each pid (8 bytes or
//! so per owned socket) instead of repeating the pid on every socket.
//! UDP sockets (added within v1) follow as `udp_sockets`, one array per socket in the order of
//! `udp_socket_fields`; both are absent when there are none, and a file without them loads with
//! no UDP sockets.
//! The `settings` and `windows` objects have the shape of the `portdoctor.check/v1` report, so
//! they are one fact written one way; `tests/fixtures/snapshot` keeps a v1 file that must keep
//! loading.
//!
//! Versioning: fields may be added within v1 (readers ignore fields they do not know, and
//! default missing optional ones); a change to the meaning or shape of a field is v2. A reader
//! refuses a newer version, a different schema, and truncated or damaged files with a
//! [`SnapshotFileError`] that names the file, says what is wrong and what to do; it never
//! panics, whatever the bytes.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::ser::Formatter;

use super::conntrack::Conntrack;
use super::{
    ConnectFailures, Counters, HiddenProcess, HostInfo, NetnsId, Os, Owners, PortRange, Settings,
    Snapshot, Socket, SocketSource, Target, TcpState, UdpSocket, WindowsSettings,
};

/// The schema this build writes and reads.
pub const SCHEMA: &str = "portdoctor.snapshot/v1";
/// Schemas of this family: `portdoctor.snapshot/vN`.
const SCHEMA_FAMILY: &str = "portdoctor.snapshot/v";
/// The order of the values in one socket's array.
pub const SOCKET_FIELDS: [&str; 9] = [
    "state",
    "local_ip",
    "local_port",
    "remote_ip",
    "remote_port",
    "time_wait_left_ms",
    "inode",
    "uid",
    "pid",
];

/// Why a snapshot file could not be read or written. Every message names the file, says what
/// is wrong and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    #[error("cannot read snapshot file {}: {error}", path.display())]
    Read { path: PathBuf, error: io::Error },
    #[error("cannot write snapshot file {}: {error}", path.display())]
    Write { path: PathBuf, error: io::Error },
    #[error("snapshot file {} is empty: it was not written completely; save it again with `portdoctor check --save FILE`", path.display())]
    Empty { path: PathBuf },
    #[error("snapshot file {} is truncated ({detail}): it was cut off while being written or copied; copy the whole file again", path.display())]
    Truncated { path: PathBuf, detail: String },
    #[error("{} is not a portdoctor snapshot: {what}; give a file written by `portdoctor check --save FILE`", path.display())]
    NotASnapshot { path: PathBuf, what: String },
    #[error("snapshot file {} has schema {found}, written by a newer portdoctor; this portdoctor ({}) reads {SCHEMA} only: upgrade portdoctor to read it", path.display(), env!("CARGO_PKG_VERSION"))]
    Newer { path: PathBuf, found: String },
    #[error("snapshot file {} is damaged: {detail}; ask for the file again, or save a new one with `portdoctor check --save FILE`", path.display())]
    Damaged { path: PathBuf, detail: String },
}

// ---------------------------------------------------------------------------------------------
// Reading and writing files
// ---------------------------------------------------------------------------------------------

/// Files larger than this are refused before they are parsed: a snapshot of a million sockets
/// is about 60 MB (this allows some 9 million), and `--load /dev/zero` must not fill the memory.
const MAX_FILE_BYTES: u64 = 512 << 20;

/// Reads a snapshot file.
pub fn load(path: &Path) -> Result<Snapshot, SnapshotFileError> {
    let bytes = read_limited(path, MAX_FILE_BYTES)?;
    from_slice(&bytes, path)
}

/// The file's bytes, refused when there are more than `limit`.
fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, SnapshotFileError> {
    let failed = |error| SnapshotFileError::Read {
        path: path.to_path_buf(),
        error,
    };
    let f = fs::File::open(path).map_err(failed)?;
    let hint = f.metadata().map_or(0, |m| m.len().min(limit));
    let mut bytes = Vec::with_capacity(usize::try_from(hint).unwrap_or(0));
    f.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(failed)?;
    if bytes.len() as u64 > limit {
        return Err(SnapshotFileError::NotASnapshot {
            path: path.to_path_buf(),
            what: format!(
                "it is larger than {} MiB, and snapshots are far smaller (about 60 MB for a million sockets)",
                limit >> 20
            ),
        });
    }
    Ok(bytes)
}

/// Writes `snapshot` to `path`. A regular file is replaced atomically (written next to it under
/// a temporary name, then renamed), so a reader never sees half a snapshot and a failed save
/// leaves any earlier file alone; anything else (a FIFO, `/dev/stdout`) is written in place.
pub fn save(snapshot: &Snapshot, path: &Path) -> Result<(), SnapshotFileError> {
    let failed = |error| SnapshotFileError::Write {
        path: path.to_path_buf(),
        error,
    };
    if fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        let f = fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(failed)?;
        return write(snapshot, f).map_err(failed);
    }
    let Some(name) = path.file_name() else {
        return Err(failed(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a file name",
        )));
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = fs::File::create_new(&tmp)
        .and_then(|f| write(snapshot, f))
        .and_then(|()| fs::rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(failed)
}

/// Writes `snapshot` as a snapshot file to `w` (buffered here).
pub fn write(snapshot: &Snapshot, w: impl Write) -> io::Result<()> {
    let mut w = BufWriter::with_capacity(256 * 1024, w);
    // The envelope by hand, so that the layout below applies to the snapshot alone.
    w.write_all(b"{\"schema\":")?;
    serde_json::to_writer(&mut w, SCHEMA)?;
    w.write_all(b",\n\"tool\":")?;
    serde_json::to_writer(
        &mut w,
        &ToolOut {
            name: "portdoctor",
            version: env!("CARGO_PKG_VERSION"),
        },
    )?;
    w.write_all(b",\n\"snapshot\":")?;
    snapshot.serialize(&mut serde_json::Serializer::with_formatter(
        &mut w,
        LineFormatter::default(),
    ))?;
    w.write_all(b"}\n")?;
    w.flush()
}

/// The snapshot file as bytes.
pub fn to_vec(snapshot: &Snapshot) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing to memory fails only if serialization does, and nothing in a snapshot can fail
    // to serialize (all map keys are strings or integers).
    write(snapshot, &mut out).expect("a snapshot serializes to memory");
    out
}

/// Parses the bytes of a snapshot file; `path` names it in errors.
pub fn from_slice(bytes: &[u8], path: &Path) -> Result<Snapshot, SnapshotFileError> {
    let first = match serde_json::from_slice::<FileIn>(bytes) {
        Ok(f) if f.schema == SCHEMA => return Ok(f.snapshot),
        Ok(f) => return Err(schema_error(path, &f.schema)),
        Err(e) => e,
    };
    Err(explain(bytes, path, &first))
}

/// Turns the first parse error into what the user needs to know: a newer or different schema
/// first (a v2 file fails to parse as v1), then emptiness, truncation, not JSON, damage.
fn explain(bytes: &[u8], path: &Path, first: &serde_json::Error) -> SnapshotFileError {
    let path_buf = path.to_path_buf();
    match serde_json::from_slice::<Probe>(bytes) {
        Ok(Probe {
            schema: Some(serde_json::Value::String(s)),
        }) if s != SCHEMA => return schema_error(path, &s),
        Ok(Probe {
            schema: Some(serde_json::Value::String(_)),
        }) => {
            return SnapshotFileError::Damaged {
                path: path_buf,
                detail: first.to_string(),
            }
        }
        Ok(_) => {
            return SnapshotFileError::NotASnapshot {
                path: path_buf,
                what: "it is JSON without a \"schema\" naming portdoctor.snapshot/v1".into(),
            }
        }
        Err(_) => {}
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return SnapshotFileError::Empty { path: path_buf };
    }
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return SnapshotFileError::NotASnapshot {
            path: path_buf,
            what: "it is not a JSON object".into(),
        };
    }
    // The JSON ends early: an EOF error, or an error at the very end (a map key cut in two is
    // reported as a bad key).
    if first.classify() == serde_json::error::Category::Eof
        || error_offset(bytes, first) + 1 >= bytes.len()
    {
        SnapshotFileError::Truncated {
            path: path_buf,
            detail: format!("it ends after {} bytes, inside the JSON", bytes.len()),
        }
    } else {
        SnapshotFileError::Damaged {
            path: path_buf,
            detail: first.to_string(),
        }
    }
}

/// The byte offset of a parse error (serde_json counts lines from 1 and bytes in a line).
fn error_offset(bytes: &[u8], e: &serde_json::Error) -> usize {
    let line_start = if e.line() <= 1 {
        0
    } else {
        bytes
            .iter()
            .enumerate()
            .filter(|&(_, &b)| b == b'\n')
            .nth(e.line() - 2)
            .map_or(bytes.len(), |(i, _)| i + 1)
    };
    line_start.saturating_add(e.column())
}

fn schema_error(path: &Path, found: &str) -> SnapshotFileError {
    let path = path.to_path_buf();
    let version = found
        .strip_prefix(SCHEMA_FAMILY)
        .and_then(|v| v.parse::<u32>().ok());
    match version {
        Some(v) if v > 1 => SnapshotFileError::Newer {
            path,
            found: found.to_string(),
        },
        _ if found.starts_with("portdoctor.check/") => SnapshotFileError::NotASnapshot {
            path,
            what: format!(
                "it is a check report ({found}), which holds results, not the sockets and settings they came from"
            ),
        },
        _ => SnapshotFileError::NotASnapshot {
            path,
            what: format!("its schema is {found:?}, not {SCHEMA}"),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// The file's shape
// ---------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct ToolOut {
    name: &'static str,
    version: &'static str,
}

#[derive(Deserialize)]
struct FileIn {
    schema: String,
    snapshot: Snapshot,
}

/// Only the schema, to explain why a file did not parse.
#[derive(Deserialize)]
struct Probe {
    schema: Option<serde_json::Value>,
}

/// `HostInfo` as the file has it.
#[derive(Serialize, Deserialize)]
struct HostFile {
    hostname: Option<String>,
    os_version: Option<String>,
    /// The inspected namespace: its name, `pid:N`, or null for the collector's own.
    netns: Option<String>,
    /// The inode of the namespace that was read (added within v1: absent in older files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    netns_id: Option<NetnsId>,
}

#[derive(Serialize)]
struct SnapshotOut<'a> {
    os: Os,
    host: HostFile,
    source: SocketSource,
    taken_at_unix_ms: u64,
    settings: &'a Settings,
    counters: &'a Counters,
    owners: Option<OwnersFile>,
    notes: &'a [String],
    windows: Option<&'a WindowsSettings>,
    /// Added within v1: absent in older files and where conntrack is not loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    conntrack: Option<&'a Conntrack>,
    /// Failed connect()/bind() calls traced over the window (`check --observe --save`; added
    /// within v1: absent when nothing was observed, and in older files).
    #[serde(skip_serializing_if = "Option::is_none")]
    connect_failures: Option<&'a ConnectFailures>,
    socket_fields: [&'static str; 9],
    sockets: SocketsOut<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    udp_socket_fields: Option<[&'static str; 9]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    udp_sockets: Option<UdpSocketsOut<'a>>,
}

#[derive(Deserialize)]
struct SnapshotIn {
    os: Os,
    host: HostFile,
    source: SocketSource,
    taken_at_unix_ms: u64,
    settings: Settings,
    #[serde(default)]
    counters: Counters,
    #[serde(default)]
    owners: Option<OwnersFile>,
    #[serde(default)]
    notes: Vec<String>,
    #[serde(default)]
    windows: Option<WindowsSettings>,
    #[serde(default)]
    conntrack: Option<Conntrack>,
    connect_failures: Option<ConnectFailures>,
    #[serde(default)]
    socket_fields: Option<Vec<String>>,
    sockets: Vec<SocketIn>,
    #[serde(default)]
    udp_socket_fields: Option<Vec<String>>,
    #[serde(default)]
    udp_sockets: Vec<UdpSocketRow>,
}

/// `Owners` as the file has it: the inodes under each pid, ascending.
#[derive(Serialize, Deserialize)]
struct OwnersFile {
    processes: BTreeMap<u32, String>,
    inodes_by_pid: BTreeMap<u32, Vec<u64>>,
    hidden_processes: u32,
    /// (pid, name, OS error) of a few hidden processes; absent when none were named.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    hidden_examples: Vec<(u32, String, String)>,
    /// The owner scan ran as root; absent when it did not.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    scanned_as_root: bool,
}

impl OwnersFile {
    fn new(o: &Owners) -> Self {
        let mut inodes_by_pid: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
        for (&inode, &pid) in &o.by_inode {
            inodes_by_pid.entry(pid).or_default().push(inode);
        }
        for inodes in inodes_by_pid.values_mut() {
            inodes.sort_unstable();
        }
        OwnersFile {
            processes: o
                .processes
                .iter()
                .map(|(&pid, name)| (pid, name.clone()))
                .collect(),
            inodes_by_pid,
            hidden_processes: o.hidden_processes,
            hidden_examples: o
                .hidden_examples
                .iter()
                .map(|h| (h.pid, h.name.clone(), h.error.clone()))
                .collect(),
            scanned_as_root: o.scanned_as_root,
        }
    }

    fn into_owners(self) -> Result<Owners, String> {
        let mut by_inode: FxHashMap<u64, u32> = FxHashMap::default();
        by_inode.reserve(self.inodes_by_pid.values().map(Vec::len).sum());
        for (pid, inodes) in self.inodes_by_pid {
            for inode in inodes {
                if let Some(other) = by_inode.insert(inode, pid) {
                    return Err(format!(
                        "owners: socket inode {inode} is listed under pid {other} and pid {pid}"
                    ));
                }
            }
        }
        Ok(Owners {
            processes: self.processes.into_iter().collect(),
            by_inode,
            hidden_processes: self.hidden_processes,
            hidden_examples: self
                .hidden_examples
                .into_iter()
                .map(|(pid, name, error)| HiddenProcess { pid, name, error })
                .collect(),
            scanned_as_root: self.scanned_as_root,
        })
    }
}

/// One socket as an array in the order of [`SOCKET_FIELDS`].
type SocketRow = (
    u8,
    IpAddr,
    u16,
    IpAddr,
    u16,
    Option<u32>,
    u64,
    Option<u32>,
    Option<u32>,
);

struct SocketsOut<'a>(&'a [Socket]);

impl Serialize for SocketsOut<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_seq(self.0.iter().map(|s| -> SocketRow {
            (
                s.state as u8,
                s.local_ip,
                s.local_port,
                s.remote_ip,
                s.remote_port,
                s.time_wait_left_ms,
                s.inode,
                s.uid,
                s.pid,
            )
        }))
    }
}

struct SocketIn(Socket);

impl<'de> Deserialize<'de> for SocketIn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (
            state,
            local_ip,
            local_port,
            remote_ip,
            remote_port,
            time_wait_left_ms,
            inode,
            uid,
            pid,
        ): SocketRow = Deserialize::deserialize(d)?;
        let state = TcpState::from_kernel(state).ok_or_else(|| {
            D::Error::custom(format_args!(
                "socket state {state} is not a TCP state (1 to 12)"
            ))
        })?;
        Ok(SocketIn(Socket {
            state,
            local_ip,
            local_port,
            remote_ip,
            remote_port,
            time_wait_left_ms,
            inode,
            uid,
            pid,
        }))
    }
}

/// The order of a UDP socket's array in the file (`ipv6_socket`: 0 or 1; `v6only`: null, 0, 1).
pub const UDP_SOCKET_FIELDS: [&str; 9] = [
    "local_ip",
    "local_port",
    "remote_ip",
    "remote_port",
    "ipv6_socket",
    "v6only",
    "inode",
    "uid",
    "pid",
];

type UdpSocketRow = (
    IpAddr,
    u16,
    IpAddr,
    u16,
    u8,
    Option<u8>,
    u64,
    Option<u32>,
    Option<u32>,
);

struct UdpSocketsOut<'a>(&'a [UdpSocket]);

impl Serialize for UdpSocketsOut<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_seq(self.0.iter().map(|s| -> UdpSocketRow {
            (
                s.local_ip,
                s.local_port,
                s.remote_ip,
                s.remote_port,
                u8::from(s.ipv6_socket),
                s.v6only.map(u8::from),
                s.inode,
                s.uid,
                s.pid,
            )
        }))
    }
}

fn udp_socket_of(r: UdpSocketRow) -> UdpSocket {
    let (local_ip, local_port, remote_ip, remote_port, v6, v6only, inode, uid, pid) = r;
    UdpSocket {
        local_ip,
        local_port,
        remote_ip,
        remote_port,
        ipv6_socket: v6 != 0,
        v6only: v6only.map(|v| v != 0),
        inode,
        uid,
        pid,
    }
}

impl Serialize for Snapshot {
    /// The `snapshot` object of a `portdoctor.snapshot/v1` file (see the module docs).
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        SnapshotOut {
            os: self.os,
            host: HostFile {
                hostname: self.host.hostname.clone(),
                os_version: self.host.os_version.clone(),
                netns: self.host.target.label(),
                netns_id: self.host.netns_id,
            },
            source: self.source,
            taken_at_unix_ms: self.taken_at_unix_ms,
            settings: &self.settings,
            counters: &self.counters,
            owners: self.owners.as_deref().map(OwnersFile::new),
            notes: &self.notes,
            windows: self.windows.as_ref(),
            conntrack: self.conntrack.as_ref(),
            connect_failures: self.connect_failures.as_ref(),
            socket_fields: SOCKET_FIELDS,
            sockets: SocketsOut(&self.sockets),
            udp_socket_fields: (!self.udp_sockets.is_empty()).then_some(UDP_SOCKET_FIELDS),
            udp_sockets: (!self.udp_sockets.is_empty()).then(|| UdpSocketsOut(&self.udp_sockets)),
        }
        .serialize(ser)
    }
}

impl<'de> Deserialize<'de> for Snapshot {
    /// The `snapshot` object of a `portdoctor.snapshot/v1` file (see the module docs).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = SnapshotIn::deserialize(d)?;
        if let Some(fields) = &s.socket_fields {
            if fields.iter().map(String::as_str).ne(SOCKET_FIELDS) {
                return Err(D::Error::custom(format_args!(
                    "socket_fields is {fields:?}; this portdoctor reads sockets as {SOCKET_FIELDS:?}"
                )));
            }
        }
        if let Some(fields) = &s.udp_socket_fields {
            if fields.iter().map(String::as_str).ne(UDP_SOCKET_FIELDS) {
                return Err(D::Error::custom(format_args!(
                    "udp_socket_fields is {fields:?}; this portdoctor reads UDP sockets as {UDP_SOCKET_FIELDS:?}"
                )));
            }
        }
        let owners = match s.owners {
            Some(o) => Some(Arc::new(o.into_owners().map_err(D::Error::custom)?)),
            None => None,
        };
        Ok(Snapshot {
            os: s.os,
            host: HostInfo {
                hostname: s.host.hostname,
                os_version: s.host.os_version,
                target: Target::from_label(s.host.netns.as_deref()),
                netns_id: s.host.netns_id,
            },
            source: s.source,
            taken_at_unix_ms: s.taken_at_unix_ms,
            settings: s.settings,
            sockets: Arc::new(s.sockets.into_iter().map(|r| r.0).collect()),
            udp_sockets: Arc::new(s.udp_sockets.into_iter().map(udp_socket_of).collect()),
            counters: s.counters,
            owners,
            notes: s.notes,
            windows: s.windows,
            connect_failures: s.connect_failures,
            conntrack: s.conntrack,
        })
    }
}

/// `{"low": L, "high": H}`, refused when it ends below its start (a [`PortRange`] never does).
#[derive(Deserialize)]
pub(super) struct PortRangeFields {
    low: u16,
    high: u16,
}

impl TryFrom<PortRangeFields> for PortRange {
    type Error = String;

    fn try_from(r: PortRangeFields) -> Result<Self, String> {
        PortRange::new(r.low, r.high)
            .ok_or_else(|| format!("port range {}-{} ends below its start", r.low, r.high))
    }
}

/// `[[low, high], …]` (the shape `reserved_ports` has in reports), merged and sorted as the
/// collectors leave them.
pub(super) fn ranges_from_pairs<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<PortRange>, D::Error> {
    let pairs = Vec::<[u16; 2]>::deserialize(d)?;
    let ranges = pairs
        .into_iter()
        .map(|[low, high]| {
            PortRange::new(low, high).ok_or_else(|| {
                D::Error::custom(format_args!(
                    "reserved port range {low}-{high} ends below its start"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(PortRange::merge_all(ranges))
}

// ---------------------------------------------------------------------------------------------
// Layout
// ---------------------------------------------------------------------------------------------

/// Compact JSON with a line break before each member of the snapshot object and each element of
/// the arrays right in it (one socket per line), so files can be read, grepped and diffed.
#[derive(Default)]
struct LineFormatter {
    depth: usize,
}

impl LineFormatter {
    fn newline<W: ?Sized + Write>(&self, w: &mut W) -> io::Result<()> {
        w.write_all(b"\n")?;
        for _ in 0..self.depth {
            w.write_all(b" ")?;
        }
        Ok(())
    }
}

impl Formatter for LineFormatter {
    fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.depth += 1;
        w.write_all(b"{")
    }

    fn end_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.depth = self.depth.saturating_sub(1);
        w.write_all(b"}")
    }

    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if !first {
            w.write_all(b",")?;
        }
        if self.depth == 1 {
            self.newline(w)?;
        }
        Ok(())
    }

    fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.depth += 1;
        w.write_all(b"[")
    }

    fn end_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.depth = self.depth.saturating_sub(1);
        w.write_all(b"]")
    }

    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if !first {
            w.write_all(b",")?;
        }
        if self.depth == 2 {
            self.newline(w)?;
        }
        Ok(())
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn udp_sockets_round_trip_and_are_absent_when_there_are_none() {
        use crate::snapshot::UdpSocket;
        let mut snap = Snapshot::empty(Os::Linux);
        let none = String::from_utf8(to_vec(&snap)).unwrap();
        assert!(!none.contains("udp_socket"), "{none}");
        snap.udp_sockets = Arc::new(vec![UdpSocket {
            local_ip: "::".parse().unwrap(),
            local_port: 40001,
            remote_ip: "::".parse().unwrap(),
            remote_port: 0,
            ipv6_socket: true,
            v6only: Some(true),
            inode: 9,
            uid: Some(0),
            pid: None,
        }]);
        let bytes = to_vec(&snap);
        let back = from_slice(&bytes, Path::new("x.json")).expect("loads");
        assert_eq!(back.udp_sockets, snap.udp_sockets);
        // An older file (no udp_sockets) loads with none.
        let old = from_slice(none.as_bytes(), Path::new("old.json")).expect("loads");
        assert!(old.udp_sockets.is_empty());
    }

    #[test]
    fn endless_files_are_refused_at_the_limit() {
        let e = read_limited(Path::new("/dev/zero"), 1 << 20).expect_err("endless");
        let m = e.to_string();
        assert!(
            m.contains("/dev/zero") && m.contains("larger than 1 MiB"),
            "{m}"
        );
        let f = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(f.path(), [b'x'; 100]).expect("write");
        assert_eq!(
            read_limited(f.path(), 100).expect("at the limit").len(),
            100
        );
        assert!(read_limited(f.path(), 99).is_err());
    }
}
