//! What was observed: plain data, no behaviour beyond small helpers.
//!
//! A `Snapshot` is the only thing the analysis sees, so everything a finding needs (settings,
//! sockets, counters, owners) must be captured here. Unknown values are `None`, never guessed.

use std::net::IpAddr;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

pub mod conntrack;
pub mod file;

/// An inclusive range of ports, e.g. `ip_local_port_range` or one reserved block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "file::PortRangeFields")]
pub struct PortRange {
    pub low: u16,
    pub high: u16,
}

impl PortRange {
    /// Builds a range; `None` when `low > high`.
    pub fn new(low: u16, high: u16) -> Option<Self> {
        (low <= high).then_some(Self { low, high })
    }

    /// Number of ports in the range (`high - low + 1`); never zero.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(self) -> u32 {
        u32::from(self.high) - u32::from(self.low) + 1
    }

    pub fn contains(self, port: u16) -> bool {
        (self.low..=self.high).contains(&port)
    }

    /// Sorts ranges and merges overlapping or adjacent ones (reserved/excluded port lists).
    pub fn merge_all(mut ranges: Vec<PortRange>) -> Vec<PortRange> {
        ranges.sort_by_key(|r| (r.low, r.high));
        let mut merged: Vec<PortRange> = Vec::with_capacity(ranges.len());
        for r in ranges {
            match merged.last_mut() {
                Some(last) if u32::from(r.low) <= u32::from(last.high) + 1 => {
                    last.high = last.high.max(r.high);
                }
                _ => merged.push(r),
            }
        }
        merged
    }

    /// The part of `self` that lies inside `other`.
    pub fn intersect(self, other: PortRange) -> Option<PortRange> {
        PortRange::new(self.low.max(other.low), self.high.min(other.high))
    }
}

/// As reports show it: `32768–60999` (en dash), one port alone as `8080`. Commands and sysctl
/// values use their own syntax (`32768 60999`, `9000-9010`; see `knobs::KnobValue::text`).
impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.low == self.high {
            write!(f, "{}", self.low)
        } else {
            write!(f, "{}–{}", self.low, self.high)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Os {
    Linux,
    Windows,
}

/// Where the socket list came from; the text fallback sees fewer details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SocketSource {
    Netlink,
    Procfs,
    Iphelper,
    Fixture,
}

/// TCP states with the kernel's numbering (`include/net/tcp_states.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum TcpState {
    Established = 1,
    SynSent = 2,
    SynRecv = 3,
    FinWait1 = 4,
    FinWait2 = 5,
    TimeWait = 6,
    /// Closed; in an inet_diag dump of bound-inactive sockets this is a socket that holds a port
    /// via `bind()` but neither listens nor is connected (Windows calls it BOUND).
    Close = 7,
    CloseWait = 8,
    LastAck = 9,
    Listen = 10,
    Closing = 11,
    NewSynRecv = 12,
}

impl TcpState {
    pub const ALL: [TcpState; 12] = [
        TcpState::Established,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::FinWait1,
        TcpState::FinWait2,
        TcpState::TimeWait,
        TcpState::Close,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::Listen,
        TcpState::Closing,
        TcpState::NewSynRecv,
    ];

    pub fn from_kernel(v: u8) -> Option<Self> {
        Self::ALL.get(usize::from(v).checked_sub(1)?).copied()
    }

    /// Listeners and bound-only sockets own a port through bind(): the kernel skips such ports
    /// in every connect pool of the namespace.
    pub fn holds_bind_port(self) -> bool {
        matches!(self, TcpState::Listen | TcpState::Close)
    }

    /// Name as `ss` and the JSON contract spell it.
    pub fn name(self) -> &'static str {
        match self {
            TcpState::Established => "ESTABLISHED",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv | TcpState::NewSynRecv => "SYN_RECV",
            TcpState::FinWait1 => "FIN_WAIT1",
            TcpState::FinWait2 => "FIN_WAIT2",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "BOUND",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::Listen => "LISTEN",
            TcpState::Closing => "CLOSING",
        }
    }
}

/// One TCP socket as the OS reported it. Addresses are normalised: IPv4-mapped IPv6 addresses
/// become IPv4, because the kernel gives such connections IPv4 4-tuples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Socket {
    pub state: TcpState,
    pub local_ip: IpAddr,
    pub local_port: u16,
    pub remote_ip: IpAddr,
    pub remote_port: u16,
    /// For TIME_WAIT: milliseconds left before the kernel frees it. `None` when unknown.
    pub time_wait_left_ms: Option<u32>,
    /// Socket inode (0 for TIME_WAIT and request sockets, which have no file).
    pub inode: u64,
    pub uid: Option<u32>,
    /// Owning process id when the OS reports it directly (Windows tables do).
    pub pid: Option<u32>,
}

/// One UDP socket as the OS reported it (docs/udp.md). A UDP socket has no TCP-like states:
/// it holds its local port from `bind()` (explicit, or implicit on the first `connect()` or
/// `sendto()`) until it is closed, connected or not. Addresses are normalised like [`Socket`]'s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpSocket {
    pub local_ip: IpAddr,
    pub local_port: u16,
    /// The peer of a connected socket; the unspecified address and port 0 when unconnected.
    pub remote_ip: IpAddr,
    pub remote_port: u16,
    /// An `AF_INET6` socket (its addresses may still be IPv4 after normalisation).
    pub ipv6_socket: bool,
    /// `IPV6_V6ONLY` of an `AF_INET6` socket (`None`: unknown or IPv4). A dual-stack IPv6
    /// socket holds its port in the IPv4 space too (docs/udp.md, measured on 6.18).
    pub v6only: Option<bool>,
    pub inode: u64,
    pub uid: Option<u32>,
    /// Owning process id when the OS reports it directly (Windows tables do).
    pub pid: Option<u32>,
}

impl UdpSocket {
    pub fn connected(&self) -> bool {
        self.remote_port != 0
    }
}

/// A process that owns sockets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Process {
    pub pid: u32,
    pub name: String,
}

/// Socket owners, when they were looked up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owners {
    /// Process names by pid.
    pub processes: FxHashMap<u32, String>,
    /// Owning pid by socket inode (the first process found; sockets can be shared after fork).
    pub by_inode: FxHashMap<u64, u32>,
    /// Processes whose descriptors could not be read (permissions).
    pub hidden_processes: u32,
    /// A few of them, with the error that hid each: what the note names.
    pub hidden_examples: Vec<HiddenProcess>,
    /// The scan ran as root (euid 0): "run as root" would be no advice.
    pub scanned_as_root: bool,
}

/// A process whose descriptors could not be read, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HiddenProcess {
    pub pid: u32,
    /// Its name (`comm`), `?` when that could not be read either.
    pub name: String,
    /// The OS error, as the OS words it.
    pub error: String,
}

/// Where a setting's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueSource {
    /// Read from the OS.
    Read,
    /// Not present on this OS version; the documented built-in default applies.
    Default,
}

/// Settings that govern the ephemeral pools. `None` = could not be read. Serialized as the
/// `settings` object of the `portdoctor.check/v1` contract, and in the same shape in snapshot
/// files ([`file`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Settings {
    pub ephemeral_ports: Option<PortRange>,
    /// Reserved (Linux) or excluded (Windows) port ranges, merged and sorted; `[[low, high]]`
    /// in JSON.
    #[serde(
        serialize_with = "ranges_as_pairs",
        deserialize_with = "file::ranges_from_pairs",
        default
    )]
    pub reserved_ports: Vec<PortRange>,
    pub time_wait_seconds: Option<u32>,
    pub time_wait_source: Option<ValueSource>,
    pub tw_reuse: Option<u8>,
    pub tw_reuse_delay_ms: Option<u32>,
    pub tw_reuse_delay_source: Option<ValueSource>,
    pub max_tw_buckets: Option<u64>,
    pub tcp_timestamps: Option<u8>,
    pub fin_timeout_seconds: Option<u32>,
}

fn ranges_as_pairs<S: serde::Serializer>(ranges: &[PortRange], ser: S) -> Result<S::Ok, S::Error> {
    ser.collect_seq(ranges.iter().map(|r| [r.low, r.high]))
}

/// Kernel counters since boot (of the namespace). Names follow `/proc/net/{snmp,netstat}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Counters {
    /// `Tcp:` line of /proc/net/snmp (ActiveOpens, PassiveOpens, CurrEstab, …).
    pub tcp: std::collections::BTreeMap<String, i64>,
    /// `TcpExt:` line of /proc/net/netstat (TW, TWKilled, TWRecycled, TCPTimeWaitOverflow, …).
    pub tcp_ext: std::collections::BTreeMap<String, i64>,
    /// /proc/net/sockstat{,6}: "TCP inuse", "TCP tw", … keyed as `tcp.inuse`, `tcp6.inuse`.
    pub sockstat: std::collections::BTreeMap<String, i64>,
}

impl Counters {
    pub fn tcp_ext(&self, key: &str) -> Option<i64> {
        self.tcp_ext.get(key).copied()
    }
}

/// What to inspect: the caller's own network namespace, a named one, or a process's. Every
/// command that inspects a host takes one (`--netns NAME`, `--pid PID`); snapshots carry it so
/// findings and plans act on the same place.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Target {
    /// The caller's own namespace (on Windows: the host).
    #[default]
    Host,
    /// A named namespace, `/run/netns/NAME` (`ip netns add NAME`).
    Netns(String),
    /// The namespace of a process, `/proc/PID/ns/net` (a container).
    Process(u32),
}

impl Target {
    /// The `host.netns` value of the JSON contract: the name, `pid:N`, or `None` for the host.
    pub fn label(&self) -> Option<String> {
        match self {
            Target::Host => None,
            Target::Netns(name) => Some(name.clone()),
            Target::Process(pid) => Some(format!("pid:{pid}")),
        }
    }

    /// The inverse of [`Target::label`] (backups and saved files store the label).
    pub fn from_label(label: Option<&str>) -> Self {
        match label {
            None => Target::Host,
            Some(l) => match l.strip_prefix("pid:").and_then(|p| p.parse().ok()) {
                Some(pid) => Target::Process(pid),
                None => Target::Netns(l.to_string()),
            },
        }
    }

    /// The portdoctor options that select this target again, with a leading space
    /// (` --netns lab1`, ` --pid 42`), empty for the host.
    pub fn cli_args(&self) -> String {
        match self {
            Target::Host => String::new(),
            Target::Netns(name) => format!(" --netns {name}"),
            Target::Process(pid) => format!(" --pid {pid}"),
        }
    }

    /// The shell prefix that runs a command inside this target's namespace (with a trailing
    /// space), empty for the host.
    pub fn exec_prefix(&self) -> String {
        match self {
            Target::Host => String::new(),
            Target::Netns(name) => format!("ip netns exec {name} "),
            Target::Process(pid) => format!("nsenter --target {pid} --net "),
        }
    }

    pub fn is_host(&self) -> bool {
        *self == Target::Host
    }

    /// Why a namespace name is refused before anything is opened: it would leave /run/netns.
    pub fn check_netns_name(name: &str) -> Result<(), String> {
        if name.is_empty() {
            return Err(
                "the namespace name is empty: give a name as `ip netns list` prints it".into(),
            );
        }
        if name.contains('/') || name == "." || name == ".." || name.chars().any(char::is_control) {
            return Err(format!(
                "{name:?} is not a namespace name: give a name under /run/netns as `ip netns list` prints it (no '/', '.' or '..')"
            ));
        }
        Ok(())
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Host => f.write_str("the host's own network namespace"),
            Target::Netns(name) => write!(f, "network namespace {name}"),
            Target::Process(pid) => write!(f, "the network namespace of process {pid}"),
        }
    }
}

/// The identity of a network namespace: device and inode of its nsfs file (what `ls -L -i
/// /proc/PID/ns/net` and `lsns -t net` show). Stable while the namespace lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NetnsId {
    pub dev: u64,
    pub ino: u64,
}

/// A container runtime and id (from the cgroup path of a process in the namespace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Container {
    /// `docker`, `containerd`, `cri-o`, `podman`, or `kubernetes` (cgroupfs driver).
    pub runtime: String,
    pub id: String,
}

/// A Kubernetes pod: the UID from the cgroup path; namespace and name from the kubelet's pod
/// log directory (empty when that was not found).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// What is known about one network namespace of the host (`--all-namespaces`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamespaceIdentity {
    pub id: NetnsId,
    /// Its name under /run/netns, if it has one.
    pub name: Option<String>,
    /// Where it was found: `/run/netns/NAME`, `/run/docker/netns/ID`, `/proc/PID/ns/net`.
    pub found_in: Vec<String>,
    /// Processes inside it (sorted; empty for a namespace only a file holds).
    pub pids: Vec<u32>,
    pub container: Option<Container>,
    pub pod: Option<Pod>,
    /// The namespace this portdoctor runs in.
    pub own: bool,
}

/// Who and where the snapshot was taken.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct HostInfo {
    pub hostname: Option<String>,
    pub os_version: Option<String>,
    /// What was inspected; `netns` in JSON: the name, `pid:N`, or null for the caller's own.
    #[serde(rename = "netns", serialize_with = "target_label")]
    pub target: Target,
    /// The inode of the namespace that was read (Linux; `None` when unknown or on Windows).
    #[serde(rename = "netns_inode", serialize_with = "netns_inode")]
    pub netns_id: Option<NetnsId>,
}

fn target_label<S: serde::Serializer>(t: &Target, ser: S) -> Result<S::Ok, S::Error> {
    t.label().serialize(ser)
}

#[allow(clippy::ref_option)] // serde hands `serialize_with` a reference to the field
fn netns_inode<S: serde::Serializer>(id: &Option<NetnsId>, ser: S) -> Result<S::Ok, S::Error> {
    id.map(|i| i.ino).serialize(ser)
}

/// Everything one collection observed. Saved and loaded as a `portdoctor.snapshot/v1` file by
/// [`file`] (its `Serialize`/`Deserialize` impls live there).
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub os: Os,
    pub host: HostInfo,
    pub source: SocketSource,
    /// Unix time of the collection in milliseconds.
    pub taken_at_unix_ms: u64,
    pub settings: Settings,
    /// Shared: `top` hands the same dump to consecutive samples while nothing changed
    /// (collect::refresh) instead of copying 7 MiB per 100k sockets each second.
    pub sockets: Arc<Vec<Socket>>,
    /// UDP sockets, kept apart from the TCP list so the TCP paths stay as they were (empty when
    /// none were collected: `--no-udp`, an old snapshot file, or a host with none).
    pub udp_sockets: Arc<Vec<UdpSocket>>,
    pub counters: Counters,
    /// `None` when the owner scan was skipped (`--no-owners`). Shared like `sockets`.
    pub owners: Option<Arc<Owners>>,
    /// Things the user should know about the collection itself (fallbacks, hidden data).
    pub notes: Vec<String>,
    /// Windows-only settings and observations (`None` on Linux).
    pub windows: Option<WindowsSettings>,
    /// Failed connect()/bind() calls counted by the tracer over a window (`check --observe`);
    /// `None` when not observed (no window asked, no privilege, no tracepoint): never a 0.
    pub connect_failures: Option<ConnectFailures>,
    /// The conntrack table (Linux, where nf_conntrack is loaded); `None`: not loaded or not
    /// readable (a note says which).
    pub conntrack: Option<conntrack::Conntrack>,
}

/// Why a connect() or bind() failed, as counted by the failure tracer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FailureError {
    /// connect() found no free port for its (local IP, remote IP, remote port).
    #[serde(rename = "EADDRNOTAVAIL")]
    AddrNotAvail,
    /// bind() found its port (or, with port 0, every port of the range) taken.
    #[serde(rename = "EADDRINUSE")]
    AddrInUse,
}

impl FailureError {
    pub fn name(self) -> &'static str {
        match self {
            FailureError::AddrNotAvail => "EADDRNOTAVAIL",
            FailureError::AddrInUse => "EADDRINUSE",
        }
    }
}

/// Failures with the same (pid, process, exited, netns, local IP, remote IP, remote port,
/// error), counted. bind() failures carry no addresses (the syscall's result is all the tracer
/// sees), so their `local_ip`, `remote_ip` and `remote_port` are `None`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FailureCount {
    pub pid: Option<u32>,
    pub process: Option<String>,
    /// The process had exited when the window ended.
    pub exited: bool,
    /// The namespace of the process at the failure (`None`: it exited before it was read).
    pub netns: Option<NetnsId>,
    /// How to name that namespace: its `/run/netns` name when it has one.
    pub netns_name: Option<String>,
    pub local_ip: Option<IpAddr>,
    pub remote_ip: Option<IpAddr>,
    pub remote_port: Option<u16>,
    pub error: FailureError,
    pub count: u64,
}

impl FailureCount {
    /// How the namespace is named in reports: its `/run/netns` name, else its inode.
    pub fn netns_label(&self) -> Option<String> {
        self.netns_name
            .clone()
            .or_else(|| self.netns.map(|id| id.ino.to_string()))
    }
}

/// What the failure tracer counted over one window, already narrowed to the inspected namespace
/// (plus failures whose namespace could not be read, `netns: None`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ConnectFailures {
    /// What was used, e.g. `tracepoint:sock/inet_sock_set_state+syscalls/sys_exit_connect`.
    pub source: String,
    pub window_seconds: f64,
    pub events: Vec<FailureCount>,
    /// Failures seen in other namespaces of the host (not counted here), by namespace label.
    pub other_namespaces: std::collections::BTreeMap<String, u64>,
    /// Samples the kernel dropped because the ring buffer was full (counts may be low).
    pub lost: u64,
}

impl ConnectFailures {
    pub fn total(&self) -> u64 {
        self.events.iter().map(|e| e.count).sum()
    }

    pub fn by_error(&self, error: FailureError) -> u64 {
        self.events
            .iter()
            .filter(|e| e.error == error)
            .map(|e| e.count)
            .sum()
    }
}

impl Snapshot {
    /// Ports with a listener on any address, sorted and unique.
    pub fn listen_ports(&self) -> Vec<u16> {
        let mut v: Vec<u16> = self
            .sockets
            .iter()
            .filter(|s| s.state == TcpState::Listen)
            .map(|s| s.local_port)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// An empty Linux snapshot with default settings; a starting point for fixtures.
    pub fn empty(os: Os) -> Self {
        Snapshot {
            os,
            host: HostInfo::default(),
            source: SocketSource::Fixture,
            taken_at_unix_ms: 0,
            settings: Settings::default(),
            sockets: Arc::default(),
            udp_sockets: Arc::default(),
            counters: Counters::default(),
            owners: None,
            notes: Vec::new(),
            windows: None,
            connect_failures: None,
            conntrack: None,
        }
    }
}

/// A TCP dynamic port range as netsh reports it (`start`, `number of ports`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DynamicPorts {
    pub start: u16,
    pub count: u32,
}

impl DynamicPorts {
    /// `start .. start + count - 1`; `None` when the pair is impossible (count 0, past 65535).
    pub fn range(self) -> Option<PortRange> {
        let high = u32::from(self.start).checked_add(self.count.checked_sub(1)?)?;
        PortRange::new(self.start, u16::try_from(high).ok()?)
    }
}

/// One line of `netsh int ipv4|ipv6 show excludedportrange protocol=tcp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExcludedRange {
    pub low: u16,
    pub high: u16,
    /// Marked `*` by netsh: added by an administrator (`netsh … add excludedportrange`), not
    /// reserved on the fly by a service such as Hyper-V, WSL, Docker or WinNAT.
    pub administered: bool,
}

impl ExcludedRange {
    pub fn range(self) -> PortRange {
        PortRange {
            low: self.low.min(self.high),
            high: self.high.max(self.low),
        }
    }
}

/// REG_DWORD values under `…\Services\Tcpip\Parameters`. `None` = the value is absent, so the
/// OS built-in default applies.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TcpipRegistry {
    /// The key that was read (HKLM\SYSTEM\CurrentControlSet\Services\Tcpip\Parameters, or
    /// the override in `PORTDOCTOR_TCPIP_PARAMS_KEY`).
    pub key: String,
    #[serde(rename = "TcpTimedWaitDelay")]
    pub tcp_timed_wait_delay: Option<u32>,
    #[serde(rename = "MaxUserPort")]
    pub max_user_port: Option<u32>,
    #[serde(rename = "StrictTimeWaitSeqCheck")]
    pub strict_time_wait_seq_check: Option<u32>,
    #[serde(rename = "TcpNumConnections")]
    pub tcp_num_connections: Option<u32>,
    #[serde(rename = "MaxFreeTcbs")]
    pub max_free_tcbs: Option<u32>,
    #[serde(rename = "MaxHashTableSize")]
    pub max_hash_table_size: Option<u32>,
}

/// Count and newest time of one event id in the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EventStat {
    pub count: u64,
    pub last_unix_ms: Option<u64>,
}

/// Tcpip events 4227 (TIME_WAIT reuse failed), 4231 (ephemeral port allocation failed) and
/// 4266 (UDP ephemeral port allocation failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TcpipEvents {
    pub window_hours: u32,
    #[serde(rename = "4227")]
    pub reuse_failed_4227: EventStat,
    #[serde(rename = "4231")]
    pub ports_exhausted_4231: EventStat,
    /// Added within v1 (absent in older snapshot files: 0).
    #[serde(rename = "4266", default)]
    pub udp_ports_exhausted_4266: EventStat,
}

/// What only Windows has. The generic [`Settings`] carry the IPv4 dynamic range
/// (`ephemeral_ports`), the IPv4 excluded ranges (`reserved_ports`) and the TIME_WAIT length.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WindowsSettings {
    /// Windows build number (e.g. 20348 = Server 2022).
    pub build: Option<u32>,
    pub dynamic_ports_v4: Option<DynamicPorts>,
    pub dynamic_ports_v6: Option<DynamicPorts>,
    pub excluded_ports_v4: Vec<ExcludedRange>,
    pub excluded_ports_v6: Vec<ExcludedRange>,
    /// `None` = the key could not be read at all.
    pub registry: Option<TcpipRegistry>,
    /// `None` = the System event log could not be read (never a made-up zero).
    pub events: Option<TcpipEvents>,
    /// The auto-reuse port range of the `InternetCustom` TCP setting (`Get-NetTCPSetting`
    /// `AutoReusePortRangeStartPort`/`NumberOfPorts`; Server 2016 and later): inside it ports
    /// are shared per 4-tuple by outbound sockets with `SO_REUSE_UNICASTPORT` or that connect()
    /// without bind() (Get-/Set-NetTCPSetting docs). `None` = not read;
    /// a count of 0 = not configured. One setting for both IP versions.
    #[serde(default)]
    pub auto_reuse_ports: Option<DynamicPorts>,
    /// UDP dynamic ranges (`netsh int ipv4|ipv6 show dynamicport udp`); absent = unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp_dynamic_ports_v4: Option<DynamicPorts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp_dynamic_ports_v6: Option<DynamicPorts>,
    /// UDP excluded ranges (`… show excludedportrange protocol=udp`); absent = none known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub udp_excluded_ports_v4: Vec<ExcludedRange>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub udp_excluded_ports_v6: Vec<ExcludedRange>,
    /// The socket table of the collector's previous snapshot (`top`, `serve`, `check
    /// --observe`): Windows tables have no TIME_WAIT timers, so rates and the forecast come from
    /// two snapshots. Not part of the JSON or the snapshot file.
    #[serde(skip)]
    pub previous: Option<PreviousSample>,
    /// TIME_WAIT lifetime measured from consecutive snapshots (`top`, `serve`): absent until a
    /// connection was seen entering and leaving TIME_WAIT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_wait_measured: Option<TimeWaitMeasured>,
}

/// How long connections really stayed in TIME_WAIT, seen from consecutive snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TimeWaitMeasured {
    /// Median lifetime (s) of the connections seen entering and leaving TIME_WAIT.
    pub seconds: f64,
    pub samples: u64,
    /// Each end is known to within the gap between two snapshots (the largest such gap, s).
    pub resolution_seconds: f64,
}

impl Eq for TimeWaitMeasured {}

/// An earlier snapshot's sockets and when they were taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousSample {
    pub taken_at_unix_ms: u64,
    pub sockets: Arc<Vec<Socket>>,
}

impl WindowsSettings {
    /// The dynamic range that applies to sockets of `ip`'s family.
    pub fn dynamic_range_for(&self, ip: IpAddr) -> Option<PortRange> {
        match ip {
            IpAddr::V4(_) => self.dynamic_ports_v4,
            IpAddr::V6(_) => self.dynamic_ports_v6,
        }
        .and_then(DynamicPorts::range)
    }

    /// The configured auto-reuse range (`None` when not read or 0 ports).
    pub fn auto_reuse_range(&self) -> Option<PortRange> {
        self.auto_reuse_ports.and_then(DynamicPorts::range)
    }

    /// The excluded ranges of `ip`'s family.
    pub fn excluded_for(&self, ip: IpAddr) -> &[ExcludedRange] {
        match ip {
            IpAddr::V4(_) => &self.excluded_ports_v4,
            IpAddr::V6(_) => &self.excluded_ports_v6,
        }
    }
}

/// Turns an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) into IPv4; leaves the rest alone.
pub fn normalize_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_range_len_and_intersection() {
        let r = PortRange::new(32768, 60999).unwrap();
        assert_eq!(r.len(), 28232);
        assert_eq!(PortRange::new(0, 65535).unwrap().len(), 65536);
        assert_eq!(
            r.intersect(PortRange::new(60000, 65535).unwrap()),
            PortRange::new(60000, 60999)
        );
        assert_eq!(r.intersect(PortRange::new(1, 100).unwrap()), None);
        assert!(PortRange::new(5, 4).is_none());
    }

    #[test]
    fn port_range_display() {
        assert_eq!(
            PortRange::new(32768, 60999).unwrap().to_string(),
            "32768–60999"
        );
        assert_eq!(PortRange::new(8080, 8080).unwrap().to_string(), "8080");
    }

    #[test]
    fn merging_ranges() {
        let r = |a, b| PortRange::new(a, b).unwrap();
        let v = vec![r(10, 20), r(5, 9), r(30, 40), r(35, 50), r(65535, 65535)];
        assert_eq!(
            PortRange::merge_all(v),
            vec![r(5, 20), r(30, 50), r(65535, 65535)]
        );
    }

    #[test]
    fn mapped_addresses_become_ipv4() {
        let m: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(normalize_ip(m), "127.0.0.1".parse::<IpAddr>().unwrap());
        let v6: IpAddr = "::1".parse().unwrap();
        assert_eq!(normalize_ip(v6), v6);
    }

    #[test]
    fn names_that_leave_run_netns_are_refused() {
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "/etc/passwd",
            "a/b",
            "a\0b",
            "x\u{1b}[2J",
        ] {
            assert!(Target::check_netns_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["lab1", "cni-1234-abcd", "a.b", "..x"] {
            assert!(Target::check_netns_name(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn targets_say_how_to_reach_them_again() {
        let ns = Target::Netns("lab1".into());
        assert_eq!(ns.label().as_deref(), Some("lab1"));
        assert_eq!(ns.cli_args(), " --netns lab1");
        assert_eq!(ns.exec_prefix(), "ip netns exec lab1 ");
        let p = Target::Process(42);
        assert_eq!(p.label().as_deref(), Some("pid:42"));
        assert_eq!(p.cli_args(), " --pid 42");
        assert_eq!(Target::Host.label(), None);
        assert_eq!(Target::Host.cli_args(), "");
        assert_eq!(Target::Host.exec_prefix(), "");
        for t in [Target::Host, ns, p] {
            assert_eq!(Target::from_label(t.label().as_deref()), t);
        }
    }

    #[test]
    fn states_round_trip_kernel_numbers() {
        for s in TcpState::ALL {
            assert_eq!(TcpState::from_kernel(s as u8), Some(s));
        }
        assert_eq!(TcpState::from_kernel(0), None);
        assert_eq!(TcpState::from_kernel(13), None);
    }
}
