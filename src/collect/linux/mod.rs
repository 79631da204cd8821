//! Linux: sockets from NETLINK_SOCK_DIAG (or /proc/net/tcp{,6}), settings from /proc/sys and
//! counters from /proc/net, all read inside the chosen namespace; owners from /proc/*/fd, which
//! lists every process of the host whatever the namespace (matched to sockets by inode).

pub mod conntrack;
pub mod failures;
pub mod namespaces;
pub mod netlink;
pub mod netns;
pub mod owners;
pub mod procfs;

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustc_hash::FxHashSet;

use super::{
    hidden_owners_note, CollectError, CollectOptions, Collector, PartialCollector, SourcePreference,
};
use crate::snapshot::{
    Counters, HostInfo, Os, Owners, Settings, Snapshot, Socket, SocketSource, UdpSocket,
    ValueSource,
};

/// Linux has no sysctl for it: TCP_TIMEWAIT_LEN is compiled into the kernel.
pub const TIME_WAIT_SECONDS: u32 = 60;
/// `tcp_tw_reuse_delay` before it became a sysctl (6.14): fixed at one second.
pub const DEFAULT_TW_REUSE_DELAY_MS: u32 = 1000;

pub struct LinuxCollector {
    opts: CollectOptions,
    /// The target's namespace, opened once (`None`: the caller's own).
    netns: Option<netns::NetnsHandle>,
}

impl LinuxCollector {
    /// Opens the target's namespace now, so a missing namespace or process is reported before
    /// any work starts and the namespace stays readable for the collector's lifetime.
    pub fn new(opts: CollectOptions) -> Result<Self, CollectError> {
        let netns = netns::NetnsHandle::open(&opts.target)?;
        Ok(Self { opts, netns })
    }

    /// A collector of a namespace already opened (`None`: where the calling thread stands).
    pub fn with_handle(opts: CollectOptions, netns: Option<netns::NetnsHandle>) -> Self {
        Self { opts, netns }
    }

    /// A collector of the calling thread's own namespace (nothing to open, cannot fail).
    pub fn here(source: SourcePreference, owners: bool) -> Self {
        Self {
            opts: CollectOptions {
                source,
                owners,
                target: crate::snapshot::Target::Host,
            },
            netns: None,
        }
    }

    /// Moves the calling thread into the target's namespace (each call: the collecting thread
    /// may differ from the one that built the collector).
    fn enter(&self) -> Result<(), CollectError> {
        self.netns
            .as_ref()
            .map_or(Ok(()), netns::NetnsHandle::enter)
    }
}

impl Collector for LinuxCollector {
    fn snapshot(&self) -> Result<Snapshot, CollectError> {
        self.collect(Some(netlink::ALL_STATES), self.opts.owners)
    }

    fn parts(&self) -> Option<&dyn PartialCollector> {
        Some(self)
    }
}

impl PartialCollector for LinuxCollector {
    fn without_sockets(&self) -> Result<Snapshot, CollectError> {
        self.collect(None, false)
    }

    fn without_owners(&self) -> Result<Snapshot, CollectError> {
        self.collect(Some(netlink::ALL_STATES), false)
    }

    fn connections_only(&self) -> Result<Snapshot, CollectError> {
        self.collect(Some(netlink::CONNECTION_STATES), false)
    }

    fn listeners(&self) -> Result<Vec<Socket>, CollectError> {
        self.enter()?;
        let mut notes = Vec::new();
        let (sockets, _) = collect_sockets(self.opts.source, netlink::LISTEN_STATE, &mut notes)?;
        // The procfs fallback cannot filter by state.
        Ok(sockets
            .into_iter()
            .filter(|s| s.state == crate::snapshot::TcpState::Listen)
            .collect())
    }

    fn scan_owners(&self, sockets: &[Socket]) -> Owners {
        netns_independent_owner_scan(sockets, &[])
    }

    fn scan_owners_with_udp(&self, sockets: &[Socket], udp: &[UdpSocket]) -> Owners {
        netns_independent_owner_scan(sockets, udp)
    }
}

/// Owners come from /proc/*/fd, which shows every process of the host whatever the namespace.
/// One scan serves the TCP and the UDP sockets.
fn netns_independent_owner_scan(sockets: &[Socket], udp: &[UdpSocket]) -> Owners {
    let wanted: FxHashSet<u64> = sockets
        .iter()
        .map(|s| s.inode)
        .chain(udp.iter().map(|s| s.inode))
        .filter(|&i| i != 0)
        .collect();
    owners::scan(&wanted)
}

impl LinuxCollector {
    /// `states`: which sockets to dump (netlink state mask), `None` for none at all.
    fn collect(&self, states: Option<u32>, with_owners: bool) -> Result<Snapshot, CollectError> {
        self.enter()?;
        let mut notes = Vec::new();
        if let Some(note) = self
            .netns
            .as_ref()
            .and_then(netns::NetnsHandle::departed_note)
        {
            notes.push(note);
        }
        let (sockets, source) = if let Some(states) = states {
            collect_sockets(self.opts.source, states, &mut notes)?
        } else {
            (Vec::new(), SocketSource::Netlink)
        };
        // Also without TCP sockets (`top`'s light probe): no counter says when UDP sockets change.
        let udp_sockets = collect_udp_sockets(source, &mut notes);
        let settings = read_settings(&mut notes);
        let counters = read_counters();
        let conntrack = conntrack::collect(&mut notes);
        let owners = with_owners.then(|| netns_independent_owner_scan(&sockets, &udp_sockets));
        if let Some(note) = owners.as_ref().and_then(hidden_owners_note) {
            notes.push(note);
        }
        let taken_at_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Ok(Snapshot {
            os: Os::Linux,
            host: HostInfo {
                hostname: read_trimmed("/proc/sys/kernel/hostname"),
                os_version: read_trimmed("/proc/sys/kernel/osrelease"),
                target: self.opts.target.clone(),
                netns_id: self
                    .netns
                    .as_ref()
                    .map(netns::NetnsHandle::id)
                    .or_else(netns::current_id),
            },
            source,
            taken_at_unix_ms,
            settings,
            sockets: Arc::new(sockets),
            udp_sockets: Arc::new(udp_sockets),
            counters,
            owners: owners.map(Arc::new),
            notes,
            windows: None,
            connect_failures: None,
            conntrack,
        })
    }
}

/// What `/proc/net/tcp{,6}` cannot show, and what that does to the capacities.
const PROCFS_CAVEAT: &str = "/proc/net/tcp{,6} lists no bound-only sockets (bind() without listen() or connect()): their ports are not subtracted, so capacities may be too high (the netlink source sees them)";

fn collect_sockets(
    pref: SourcePreference,
    states: u32,
    notes: &mut Vec<String>,
) -> Result<(Vec<Socket>, SocketSource), CollectError> {
    match pref {
        SourcePreference::Procfs => {
            notes.push(PROCFS_CAVEAT.into());
            Ok((read_procfs_sockets(notes)?, SocketSource::Procfs))
        }
        SourcePreference::Netlink => Ok((netlink_sockets(states, notes)?, SocketSource::Netlink)),
        SourcePreference::Auto => match netlink_sockets(states, notes) {
            Ok(s) => Ok((s, SocketSource::Netlink)),
            Err(e) => {
                notes.push(format!(
                    "netlink sock_diag unavailable ({e}); fell back to /proc/net/tcp{{,6}}, which is slower"
                ));
                notes.push(PROCFS_CAVEAT.into());
                Ok((read_procfs_sockets(notes)?, SocketSource::Procfs))
            }
        },
    }
}

fn netlink_sockets(states: u32, notes: &mut Vec<String>) -> Result<Vec<Socket>, CollectError> {
    let dump = netlink::dump_tcp_states(states)?;
    if dump.interrupted {
        notes.push(format!(
            "the socket tables changed during all {} dump attempts; counts may be off by the churn",
            dump.attempts
        ));
    }
    Ok(dump.sockets)
}

/// UDP sockets from the same source as the TCP ones: sock_diag, or /proc/net/udp{,6} when the
/// TCP list came from procfs or the UDP dump fails. Never fails the collection: without them
/// the UDP pools are not shown, and a note says why.
fn collect_udp_sockets(tcp_source: SocketSource, notes: &mut Vec<String>) -> Vec<UdpSocket> {
    if tcp_source == SocketSource::Netlink {
        match netlink::dump_udp() {
            Ok(dump) => {
                if dump.interrupted {
                    notes.push(
                        "the UDP socket table changed during every dump attempt; UDP counts may be off by the churn".into(),
                    );
                }
                return dump.sockets;
            }
            Err(e) => notes.push(format!(
                "netlink sock_diag for UDP unavailable ({e}); read /proc/net/udp{{,6}} instead"
            )),
        }
    }
    let mut out = Vec::new();
    for (name, ipv6_socket) in [("udp", false), ("udp6", true)] {
        let path = proc_net(name);
        match fs::read_to_string(&path) {
            Ok(text) => {
                let mut rows = Vec::new();
                let skipped = procfs::parse_proc_net_tcp(&text, 10, &mut rows);
                if skipped > 0 {
                    notes.push(format!(
                        "{skipped} lines of {} could not be parsed and were skipped",
                        path.display()
                    ));
                }
                out.extend(rows.iter().map(|s| procfs::udp_of(s, ipv6_socket)));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && ipv6_socket => {}
            Err(e) => notes.push(format!(
                "{} could not be read ({e}); UDP pools are not shown",
                path.display()
            )),
        }
    }
    out
}

fn read_procfs_sockets(notes: &mut Vec<String>) -> Result<Vec<Socket>, CollectError> {
    // tm->when is in USER_HZ ticks, which is 100 on every mainstream architecture.
    let ms_per_tick = 10;
    let mut sockets = Vec::new();
    let mut skipped = 0;
    for name in ["tcp", "tcp6"] {
        let path = proc_net(name);
        match fs::read_to_string(&path) {
            Ok(text) => skipped += procfs::parse_proc_net_tcp(&text, ms_per_tick, &mut sockets),
            // No IPv6 in this kernel: nothing to count there.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && name.ends_with('6') => {}
            Err(source) => return Err(CollectError::Read { path, source }),
        }
    }
    if skipped > 0 {
        notes.push(format!(
            "{skipped} lines of /proc/net/tcp{{,6}} could not be parsed and were skipped"
        ));
    }
    Ok(sockets)
}

/// A file of this thread's network namespace. `/proc/net` follows the namespace of the
/// process' main thread, so a collector running on a thread that entered another namespace
/// must read `/proc/thread-self/net` (Linux 3.17+; `/proc/net` before that).
pub(super) fn proc_net(name: &str) -> std::path::PathBuf {
    let thread_self = Path::new("/proc/thread-self/net");
    let dir = if thread_self.is_dir() {
        thread_self
    } else {
        Path::new("/proc/net")
    };
    dir.join(name)
}

/// A trimmed text file (host name, kernel release), escaped for printing: a container's root
/// can set the host name to anything.
fn read_trimmed(path: impl AsRef<Path>) -> Option<String> {
    fs::read_to_string(path)
        .ok()
        .map(|s| crate::units::printable(s.trim()))
}

fn sysctl(name: &str) -> Option<String> {
    fs::read_to_string(format!("/proc/sys/net/ipv4/{name}")).ok()
}

fn read_settings(notes: &mut Vec<String>) -> Settings {
    let ephemeral_ports = sysctl("ip_local_port_range").and_then(|t| procfs::parse_port_range(&t));
    if ephemeral_ports.is_none() {
        notes.push("net.ipv4.ip_local_port_range could not be read; capacities are unknown".into());
    }
    let reserved_ports = if let Some(t) = sysctl("ip_local_reserved_ports") {
        procfs::parse_port_list(&t).unwrap_or_else(|| {
            notes.push(format!(
                "net.ipv4.ip_local_reserved_ports has an unexpected value {:?}; ignored",
                t.trim()
            ));
            Vec::new()
        })
    } else {
        Vec::new()
    };
    let (tw_reuse_delay_ms, tw_reuse_delay_source) = if let Some(v) =
        sysctl("tcp_tw_reuse_delay").and_then(|t| procfs::parse_int(&t))
    {
        (Some(v), Some(ValueSource::Read))
    } else {
        notes.push(format!(
                "net.ipv4.tcp_tw_reuse_delay is absent (kernel before 6.14): TIME_WAIT becomes reusable after the built-in {DEFAULT_TW_REUSE_DELAY_MS} ms"
            ));
        (Some(DEFAULT_TW_REUSE_DELAY_MS), Some(ValueSource::Default))
    };
    Settings {
        ephemeral_ports,
        reserved_ports,
        time_wait_seconds: Some(TIME_WAIT_SECONDS),
        time_wait_source: Some(ValueSource::Default),
        tw_reuse: sysctl("tcp_tw_reuse").and_then(|t| procfs::parse_int(&t)),
        tw_reuse_delay_ms,
        tw_reuse_delay_source,
        max_tw_buckets: sysctl("tcp_max_tw_buckets").and_then(|t| procfs::parse_int(&t)),
        tcp_timestamps: sysctl("tcp_timestamps").and_then(|t| procfs::parse_int(&t)),
        fin_timeout_seconds: sysctl("tcp_fin_timeout").and_then(|t| procfs::parse_int(&t)),
    }
}

fn read_counters() -> Counters {
    let mut c = Counters::default();
    if let Ok(t) = fs::read_to_string(proc_net("snmp")) {
        c.tcp = procfs::parse_counter_section(&t, "Tcp");
    }
    if let Ok(t) = fs::read_to_string(proc_net("netstat")) {
        c.tcp_ext = procfs::parse_counter_section(&t, "TcpExt");
    }
    for name in ["sockstat", "sockstat6"] {
        if let Ok(t) = fs::read_to_string(proc_net(name)) {
            procfs::parse_sockstat(&t, &mut c.sockstat);
        }
    }
    c
}
