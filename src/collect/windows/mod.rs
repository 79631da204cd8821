//! Windows: sockets from IP Helper (`GetExtendedTcpTable`, TCP_TABLE_OWNER_PID_ALL, IPv4 and
//! IPv6), owners from a toolhelp snapshot, settings from `netsh` and the Tcpip registry key,
//! counters from `GetTcpStatisticsEx`, Tcpip events 4227/4231 from the System log (`EvtQuery`).
//!
//! Win32 calls need `unsafe`, which the crate denies except in modules that allow it and say
//! why (the OS layers): here each block carries a `// SAFETY:` note. Text is parsed by the pure
//! functions in [`super::windows_text`].
//!
//! Environment: `PORTDOCTOR_TCPIP_PARAMS_KEY` (e.g. `HKCU\Software\portdoctor-test\Parameters`)
//! reads the Tcpip values from another key instead of
//! `HKLM\SYSTEM\CurrentControlSet\Services\Tcpip\Parameters` — for tests and for looking at an
//! exported copy; documented in docs/windows.md.
#![allow(unsafe_code)]

mod events;
mod owner_tables;
mod process;
mod registry;
mod stats;
pub mod system;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustc_hash::FxHashSet;

use super::windows_text::{self, parse_dynamic_port, parse_excluded_ranges, RegistryRoot};
use super::{CollectError, CollectOptions, Collector, Target};
use crate::snapshot::{
    Counters, DynamicPorts, ExcludedRange, HostInfo, Os, Owners, PreviousSample, Snapshot, Socket,
    SocketSource, TcpipRegistry, WindowsSettings,
};

/// The env var that overrides the Tcpip parameters key.
pub const PARAMS_KEY_ENV: &str = "PORTDOCTOR_TCPIP_PARAMS_KEY";
const PARAMS_KEY: &str = r"HKLM\SYSTEM\CurrentControlSet\Services\Tcpip\Parameters";
const EVENT_WINDOW_HOURS: u32 = 24;

pub struct WindowsCollector {
    opts: CollectOptions,
    /// The previous snapshot's sockets: rates and forecasts on Windows come from two snapshots.
    previous: Mutex<Option<PreviousSample>>,
    /// Connections followed through TIME_WAIT to measure its real length.
    time_wait: Mutex<windows_text::TimeWaitTracker>,
}

impl WindowsCollector {
    pub fn new(opts: CollectOptions) -> Self {
        Self {
            opts,
            previous: Mutex::new(None),
            time_wait: Mutex::new(windows_text::TimeWaitTracker::default()),
        }
    }
}

impl Collector for WindowsCollector {
    fn snapshot(&self) -> Result<Snapshot, CollectError> {
        if self.opts.target != Target::Host {
            return Err(CollectError::Unsupported(
                "--netns/--pid (Linux network namespaces)",
            ));
        }
        let mut notes = Vec::new();
        let mut sockets = owner_tables::read(false)?;
        sockets.extend(owner_tables::read(true)?);
        let udp_sockets = owner_tables::read_udp_both(&mut notes);
        match bound_sockets() {
            Some(b) => sockets.extend(b),
            None => notes.push("`Get-NetTCPConnection -State Bound` (Windows PowerShell, MSFT_NetTCPConnection) gave nothing (Wine has none): BOUND sockets, which GetExtendedTcpTable does not list, are not counted".into()),
        }

        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut windows = read_settings(now_ms, &mut notes);
        let settings = windows_text::derive_settings(&windows);
        if settings.ephemeral_ports.is_none() {
            notes.push("the TCP dynamic port range could not be read (`netsh int ipv4 show dynamicport tcp` printed no range; Wine's netsh is a stub): capacities are unknown".into());
        }
        let counters = read_counters();
        let owners = self.opts.owners.then(|| {
            let pids: FxHashSet<u32> = sockets
                .iter()
                .filter_map(|s| s.pid)
                .chain(udp_sockets.iter().filter_map(|s| s.pid))
                .collect();
            let names = process::names();
            let mut owners = Owners::default();
            for pid in pids {
                match names.get(&pid) {
                    Some(n) => {
                        owners.processes.insert(pid, n.clone());
                    }
                    None => owners.hidden_processes += 1,
                }
            }
            owners
        });
        if let Some(o) = &owners {
            if o.hidden_processes > 0 {
                notes.push(format!(
                    "{} owning processes have no name (exited, or not visible to this user)",
                    o.hidden_processes
                ));
            }
        }
        let version = registry::read_string(
            RegistryRoot::LocalMachine,
            r"SOFTWARE\Microsoft\Windows NT\CurrentVersion",
            "CurrentBuildNumber",
        );
        let major = registry::read_dword(
            RegistryRoot::LocalMachine,
            r"SOFTWARE\Microsoft\Windows NT\CurrentVersion",
            "CurrentMajorVersionNumber",
        )
        .ok()
        .flatten();
        let minor = registry::read_dword(
            RegistryRoot::LocalMachine,
            r"SOFTWARE\Microsoft\Windows NT\CurrentVersion",
            "CurrentMinorVersionNumber",
        )
        .ok()
        .flatten();
        let os_version = match (major, minor, windows.build) {
            (Some(a), Some(b), Some(build)) => Some(format!("{a}.{b}.{build}")),
            (_, _, Some(build)) => Some(format!("build {build}")),
            _ => version,
        };
        windows.time_wait_measured = self
            .time_wait
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .observe(now_ms, &sockets);
        if let (Some(m), Some(t)) = (windows.time_wait_measured, settings.time_wait_seconds) {
            notes.push(format!(
                "TIME_WAIT measured from consecutive snapshots: median {:.0} s over {} connections seen entering and leaving it (each end ±{:.0} s); the model uses {t} s",
                m.seconds, m.samples, m.resolution_seconds
            ));
        }
        let sockets = Arc::new(sockets);
        {
            let mut prev = self
                .previous
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            windows.previous = prev.replace(PreviousSample {
                taken_at_unix_ms: now_ms,
                sockets: Arc::clone(&sockets),
            });
        }
        Ok(Snapshot {
            os: Os::Windows,
            host: HostInfo {
                hostname: std::env::var("COMPUTERNAME").ok().filter(|h| !h.is_empty()),
                os_version,
                target: Target::Host,
                netns_id: None,
            },
            source: SocketSource::Iphelper,
            taken_at_unix_ms: now_ms,
            settings,
            sockets,
            udp_sockets: Arc::new(udp_sockets),
            counters,
            owners: owners.map(Arc::new),
            notes,
            windows: Some(windows),
            connect_failures: None,
            conntrack: None,
        })
    }
}

/// Runs `System32\netsh.exe ARGS` (never a `netsh.exe` found elsewhere) and returns its
/// stdout (lossy: the console code page is not UTF-8).
fn netsh(args: &[&str]) -> Option<String> {
    let out = Command::new(system::system_tool("netsh.exe")?)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What `netsh` and `Get-NetTCPSetting` report. Starting them costs far more than the rest of a
/// snapshot (PowerShell alone takes about a second) and they change rarely, so `top` refreshes
/// and `serve` scrapes reuse one reading for [`TOOL_SETTINGS_TTL`].
#[derive(Debug, Clone, Default)]
struct ToolSettings {
    dynamic_v4: Option<DynamicPorts>,
    dynamic_v6: Option<DynamicPorts>,
    excluded_v4: Vec<ExcludedRange>,
    excluded_v6: Vec<ExcludedRange>,
    auto_reuse: Option<DynamicPorts>,
    /// The UDP dynamic and excluded ranges (docs/udp.md): the TCP commands with `udp`, parsed
    /// by the same functions. Unknown stays `None` / empty.
    udp_dynamic_v4: Option<DynamicPorts>,
    udp_dynamic_v6: Option<DynamicPorts>,
    udp_excluded_v4: Vec<ExcludedRange>,
    udp_excluded_v6: Vec<ExcludedRange>,
    notes: Vec<String>,
}

/// How long a reading of the system tools is reused.
const TOOL_SETTINGS_TTL: Duration = Duration::from_secs(30);

static TOOL_SETTINGS: Mutex<Option<(Instant, ToolSettings)>> = Mutex::new(None);

fn tool_settings() -> ToolSettings {
    let mut cache = TOOL_SETTINGS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((at, t)) = cache.as_ref() {
        if at.elapsed() < TOOL_SETTINGS_TTL {
            return t.clone();
        }
    }
    let t = read_tool_settings();
    *cache = Some((Instant::now(), t.clone()));
    t
}

/// BOUND sockets from `Get-NetTCPConnection -State Bound`; `None` when PowerShell gave no
/// answer. Reused for [`TOOL_SETTINGS_TTL`] like the settings (PowerShell takes about a second to
/// start), so in `top` and `serve` they may be that old.
fn bound_sockets() -> Option<Vec<Socket>> {
    static BOUND: Mutex<Option<(Instant, Option<Vec<Socket>>)>> = Mutex::new(None);
    let mut cache = BOUND
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((at, b)) = cache.as_ref() {
        if at.elapsed() < TOOL_SETTINGS_TTL {
            return b.clone();
        }
    }
    let b = powershell(windows_text::BOUND_SCRIPT)
        .and_then(|out| windows_text::parse_bound_connections(&out));
    *cache = Some((Instant::now(), b.clone()));
    b
}

/// Runs Windows PowerShell (full path, `-NoProfile -NonInteractive`) with `script`; its stdout.
fn powershell(script: &str) -> Option<String> {
    let out = Command::new(system::powershell()?)
        .args(["-NoProfile", "-NonInteractive", "-Command", script])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn read_tool_settings() -> ToolSettings {
    let mut notes = Vec::new();
    let dynamic = |v: &str| {
        netsh(&["int", v, "show", "dynamicport", "tcp"])
            .as_deref()
            .and_then(parse_dynamic_port)
    };
    let excluded = |v: &str| {
        netsh(&["int", v, "show", "excludedportrange", "protocol=tcp"])
            .filter(|out| !out.trim().is_empty())
            .as_deref()
            .map(parse_excluded_ranges)
    };
    let excluded_v4 = excluded("ipv4");
    let excluded_v6 = excluded("ipv6");
    if excluded_v4.is_none() {
        notes.push(
            "`netsh int ipv4 show excludedportrange protocol=tcp` failed or printed nothing (Wine's netsh is a stub): excluded ranges unknown, taken as none"
                .into(),
        );
    }
    // MSFT_NetTCPSetting (CIM, root/StandardCimv2) through Get-NetTCPSetting: the auto-reuse
    // range, and the dynamic range as a cross-check of netsh or its fallback.
    let tcp = powershell(windows_text::NET_TCP_SETTING_SCRIPT)
        .map(|out| windows_text::parse_net_tcp_settings(&out))
        .unwrap_or_default();
    let governing = windows_text::governing_tcp_setting(&tcp);
    if governing.is_none() {
        notes.push("`Get-NetTCPSetting` (Windows PowerShell, MSFT_NetTCPSetting) gave no setting (Wine has none): the auto-reuse port range is unknown".into());
    }
    let cim_dynamic = governing.and_then(|g| g.dynamic);
    let mut dynamic_v4 = dynamic("ipv4");
    let mut dynamic_v6 = dynamic("ipv6");
    match (dynamic_v4, cim_dynamic, governing) {
        (None, Some(d), Some(g)) => {
            notes.push(format!("netsh printed no IPv4 dynamic range: taken from Get-NetTCPSetting {} (start {}, {} ports)", g.name, d.start, d.count));
            dynamic_v4 = Some(d);
        }
        (Some(n), Some(d), Some(g)) if n != d => notes.push(format!(
            "netsh's IPv4 dynamic range (start {}, {} ports) differs from Get-NetTCPSetting {} (start {}, {} ports): netsh's is used",
            n.start, n.count, g.name, d.start, d.count
        )),
        _ => {}
    }
    if dynamic_v6.is_none() {
        dynamic_v6 = cim_dynamic;
    }
    ToolSettings {
        dynamic_v4,
        dynamic_v6,
        excluded_v4: excluded_v4.unwrap_or_default(),
        excluded_v6: excluded_v6.unwrap_or_default(),
        auto_reuse: governing.and_then(|g| g.auto_reuse),
        udp_dynamic_v4: udp_dynamic("ipv4"),
        udp_dynamic_v6: udp_dynamic("ipv6"),
        udp_excluded_v4: udp_excluded("ipv4"),
        udp_excluded_v6: udp_excluded("ipv6"),
        notes,
    }
}

fn udp_dynamic(version: &str) -> Option<DynamicPorts> {
    netsh(&["int", version, "show", "dynamicport", "udp"])
        .as_deref()
        .and_then(parse_dynamic_port)
}

fn udp_excluded(version: &str) -> Vec<ExcludedRange> {
    netsh(&["int", version, "show", "excludedportrange", "protocol=udp"])
        .as_deref()
        .map(parse_excluded_ranges)
        .unwrap_or_default()
}

fn read_settings(now_ms: u64, notes: &mut Vec<String>) -> WindowsSettings {
    let tools = tool_settings();
    notes.extend(tools.notes.iter().cloned());
    let build = registry::read_string(
        RegistryRoot::LocalMachine,
        r"SOFTWARE\Microsoft\Windows NT\CurrentVersion",
        "CurrentBuildNumber",
    )
    .as_deref()
    .and_then(windows_text::parse_build_number);
    let events = match events::read(now_ms, EVENT_WINDOW_HOURS) {
        Ok(e) => Some(e),
        Err(why) => {
            notes.push(format!(
                "event log unreadable ({why}): Tcpip events 4227/4231 were not counted; on Windows run as Administrator to read the System log"
            ));
            None
        }
    };
    WindowsSettings {
        build,
        dynamic_ports_v4: tools.dynamic_v4,
        dynamic_ports_v6: tools.dynamic_v6,
        excluded_ports_v4: tools.excluded_v4,
        excluded_ports_v6: tools.excluded_v6,
        registry: read_tcpip_registry(&tcpip_params_key(), notes),
        events,
        auto_reuse_ports: tools.auto_reuse,
        udp_dynamic_ports_v4: tools.udp_dynamic_v4,
        udp_dynamic_ports_v6: tools.udp_dynamic_v6,
        udp_excluded_ports_v4: tools.udp_excluded_v4,
        udp_excluded_ports_v6: tools.udp_excluded_v6,
        previous: None,
        time_wait_measured: None,
    }
}

/// One REG_DWORD value: `Ok(None)` when absent; an error text when the key cannot be opened or
/// the value is not a readable REG_DWORD (for `tune`, which must know the prior exactly).
pub fn read_dword_raw(root: RegistryRoot, subkey: &str, name: &str) -> Result<Option<u32>, String> {
    registry::read_dword(root, subkey, name).map_err(|e| match e {
        registry::RegError::KeyMissing => "the key cannot be opened".to_string(),
        registry::RegError::Other(code) => format!("Windows error {code}"),
    })
}

/// The Tcpip key to read: `PORTDOCTOR_TCPIP_PARAMS_KEY` when set, else the real one.
pub fn tcpip_params_key() -> String {
    std::env::var(PARAMS_KEY_ENV)
        .ok()
        .filter(|k| !k.trim().is_empty())
        .unwrap_or_else(|| PARAMS_KEY.to_string())
}

/// Reads the Tcpip REG_DWORD values from `key` (`HKLM\…` or `HKCU\…`). Absent values are
/// `None` (OS default); `None` overall when the key cannot be read (with a note why).
pub fn read_tcpip_registry(key: &str, notes: &mut Vec<String>) -> Option<TcpipRegistry> {
    let key = key.to_string();
    let Some((root, subkey)) = windows_text::parse_registry_path(&key) else {
        notes.push(format!(
            "{PARAMS_KEY_ENV}={key:?} is not a HKLM\\… or HKCU\\… key: Tcpip registry values not read"
        ));
        return None;
    };
    let mut reg = TcpipRegistry {
        key: key.clone(),
        ..TcpipRegistry::default()
    };
    let slots: [(&str, &mut Option<u32>); 6] = [
        ("TcpTimedWaitDelay", &mut reg.tcp_timed_wait_delay),
        ("MaxUserPort", &mut reg.max_user_port),
        (
            "StrictTimeWaitSeqCheck",
            &mut reg.strict_time_wait_seq_check,
        ),
        ("TcpNumConnections", &mut reg.tcp_num_connections),
        ("MaxFreeTcbs", &mut reg.max_free_tcbs),
        ("MaxHashTableSize", &mut reg.max_hash_table_size),
    ];
    for (name, slot) in slots {
        match registry::read_dword(root, &subkey, name) {
            Ok(v) => *slot = v,
            Err(registry::RegError::KeyMissing) => {
                notes.push(format!(
                    "registry key {key} not found: Tcpip values unknown"
                ));
                return None;
            }
            Err(registry::RegError::Other(code)) => notes.push(format!(
                "registry value {key}\\{name} could not be read as a REG_DWORD (Windows error {code}); taken as absent"
            )),
        }
    }
    Some(reg)
}

fn read_counters() -> Counters {
    let mut c = Counters::default();
    for (prefix, v6) in [("", false), ("ipv6.", true)] {
        if let Some(st) = stats::read(v6) {
            for (name, v) in st {
                c.tcp.insert(format!("{prefix}{name}"), v);
            }
        }
    }
    c
}
