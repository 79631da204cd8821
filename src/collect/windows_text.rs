//! Pure parsers for what the Windows collector reads as text: `netsh` output (any display
//! language) and event XML. Not cfg-gated, so they are unit- and property-tested on Linux too;
//! the fixtures in `tests/fixtures/windows/` say where each format comes from.
//!
//! netsh prints localized labels ("Start Port", "Startport", "Port de démarrage", …) in the
//! console code page, so these parsers never look at words: they read numbers by position.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::snapshot::{
    normalize_ip, DynamicPorts, EventStat, ExcludedRange, PortRange, Settings, Socket, TcpState,
    TcpipEvents, UdpSocket, ValueSource, WindowsSettings,
};

/// The PowerShell that lists every `MSFT_NetTCPSetting` (CIM, root/StandardCimv2) as one
/// comma-separated line each: name, dynamic range start and count, auto-reuse range start and
/// count (empty where the OS has no such property). Numbers with `{0}` carry no separators in
/// any culture.
pub const NET_TCP_SETTING_SCRIPT: &str = "Get-NetTCPSetting | ForEach-Object { '{0},{1},{2},{3},{4}' -f $_.SettingName,$_.DynamicPortRangeStartPort,$_.DynamicPortRangeNumberOfPorts,$_.AutoReusePortRangeStartPort,$_.AutoReusePortRangeNumberOfPorts }";

/// Follows connections through TIME_WAIT across consecutive snapshots to measure how long
/// TIME_WAIT really lasts (Windows tables carry no timers). A connection counts only when it
/// was seen *entering* TIME_WAIT (not in TIME_WAIT, or absent, at the snapshot before) and then
/// *leaving* it; each end is placed in the middle of its gap between two snapshots.
#[derive(Debug, Default)]
pub struct TimeWaitTracker {
    last_ms: Option<u64>,
    /// TIME_WAIT identities now: the estimated entry time, `None` when already in TIME_WAIT at
    /// the first snapshot (entry unknown).
    in_tw: std::collections::HashMap<(IpAddr, u16, IpAddr, u16), Option<u64>>,
    lifetimes_ms: Vec<u64>,
    max_gap_ms: u64,
}

/// Lifetimes kept for the median (the newest).
const TW_SAMPLES_KEPT: usize = 10_000;

impl TimeWaitTracker {
    /// Takes the snapshot at `now_ms` and returns the measurement so far.
    pub fn observe(
        &mut self,
        now_ms: u64,
        sockets: &[Socket],
    ) -> Option<crate::snapshot::TimeWaitMeasured> {
        let entry = self.last_ms.map(|last| {
            self.max_gap_ms = self.max_gap_ms.max(now_ms.saturating_sub(last));
            last + now_ms.saturating_sub(last) / 2
        });
        let mut now_tw = std::collections::HashMap::new();
        for s in sockets.iter().filter(|s| s.state == TcpState::TimeWait) {
            let id = (s.local_ip, s.local_port, s.remote_ip, s.remote_port);
            let since = match self.in_tw.get(&id) {
                Some(known) => *known,
                None => entry,
            };
            now_tw.insert(id, since);
        }
        if let Some(exit) = entry {
            for (id, since) in &self.in_tw {
                if let (false, Some(start)) = (now_tw.contains_key(id), since) {
                    self.lifetimes_ms.push(exit.saturating_sub(*start));
                }
            }
            if self.lifetimes_ms.len() > TW_SAMPLES_KEPT {
                let extra = self.lifetimes_ms.len() - TW_SAMPLES_KEPT;
                self.lifetimes_ms.drain(..extra);
            }
        }
        self.in_tw = now_tw;
        self.last_ms = Some(now_ms);
        if self.lifetimes_ms.is_empty() {
            return None;
        }
        let mut sorted = self.lifetimes_ms.clone();
        sorted.sort_unstable();
        Some(crate::snapshot::TimeWaitMeasured {
            seconds: sorted[sorted.len() / 2] as f64 / 1000.0,
            samples: sorted.len() as u64,
            resolution_seconds: self.max_gap_ms as f64 / 1000.0,
        })
    }
}

/// The PowerShell that lists the BOUND sockets (bound, neither listening nor connected) from
/// `MSFT_NetTCPConnection` (CIM, root/StandardCimv2) as `address,port,pid` lines: the entries
/// Microsoft's port exhaustion guide starts from (`netstat -anobq`), which `GetExtendedTcpTable`
/// does not list.
/// The last line, `portdoctor:end`, tells a complete answer (possibly no socket) from a shell
/// that printed nothing.
pub const BOUND_SCRIPT: &str = "Get-NetTCPConnection -State Bound -ErrorAction SilentlyContinue | ForEach-Object { '{0},{1},{2}' -f $_.LocalAddress,$_.LocalPort,$_.OwningProcess }; 'portdoctor:end'";

/// Parses the lines of [`BOUND_SCRIPT`] into BOUND sockets (state `Close`, spelled `BOUND`);
/// malformed lines are skipped; `None` without the end line (the script did not run).
pub fn parse_bound_connections(text: &str) -> Option<Vec<Socket>> {
    if !text.lines().any(|l| l.trim() == "portdoctor:end") {
        return None;
    }
    let sockets = text
        .lines()
        .filter_map(|line| {
            let (rest, pid) = line.trim().rsplit_once(',')?;
            let (addr, port) = rest.rsplit_once(',')?;
            let ip: IpAddr = addr
                .trim()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .split('%')
                .next()?
                .parse()
                .ok()?;
            let ip = normalize_ip(ip);
            let pid: u32 = pid.trim().parse().ok()?;
            Some(Socket {
                state: TcpState::Close,
                local_ip: ip,
                local_port: port.trim().parse().ok()?,
                remote_ip: if ip.is_ipv4() {
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                } else {
                    IpAddr::V6(Ipv6Addr::UNSPECIFIED)
                },
                remote_port: 0,
                time_wait_left_ms: None,
                inode: 0,
                uid: None,
                pid: (pid != 0).then_some(pid),
            })
        })
        .collect();
    Some(sockets)
}

/// One `MSFT_NetTCPSetting` as [`NET_TCP_SETTING_SCRIPT`] prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetTcpSetting {
    pub name: String,
    pub dynamic: Option<DynamicPorts>,
    /// `None` when the property is missing (before Server 2016); a count of 0 = off.
    pub auto_reuse: Option<DynamicPorts>,
}

/// Parses the lines of [`NET_TCP_SETTING_SCRIPT`]; lines that are not five fields are skipped.
pub fn parse_net_tcp_settings(text: &str) -> Vec<NetTcpSetting> {
    let pair = |start: &str, count: &str| {
        Some(DynamicPorts {
            start: start.trim().parse().ok()?,
            count: count.trim().parse().ok()?,
        })
    };
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.trim().split(',').collect();
            let [name, ds, dn, rs, rn] = f.as_slice() else {
                return None;
            };
            let name = name.trim();
            if name.is_empty() {
                return None;
            }
            Some(NetTcpSetting {
                name: name.to_string(),
                dynamic: pair(ds, dn),
                auto_reuse: pair(rs, rn),
            })
        })
        .collect()
}

/// The setting that governs ordinary connections and that `Set-NetTCPSetting -SettingName
/// InternetCustom` changes: `InternetCustom`, else `DatacenterCustom`, else the first.
pub fn governing_tcp_setting(settings: &[NetTcpSetting]) -> Option<&NetTcpSetting> {
    ["InternetCustom", "DatacenterCustom"]
        .iter()
        .find_map(|n| settings.iter().find(|s| s.name.eq_ignore_ascii_case(n)))
        .or_else(|| settings.first())
}

/// The generic settings the model reads, derived from what the Windows collector found: the
/// IPv4 dynamic range, the IPv4 excluded ranges (merged), and the TIME_WAIT length from
/// `TcpTimedWaitDelay` (`read`), or — when it is absent, or outside its documented range (what
/// Windows then does is not documented; `time_wait_delay_out_of_range` says so) — the longer of
/// the two documented defaults, 240 s (`default`). Linux-only knobs stay `None`.
pub fn derive_settings(w: &WindowsSettings) -> Settings {
    let reserved: Vec<PortRange> = w.excluded_ports_v4.iter().map(|e| e.range()).collect();
    let reserved = PortRange::merge_all(reserved);
    let delay = w
        .registry
        .as_ref()
        .and_then(|r| r.tcp_timed_wait_delay)
        .filter(|&d| {
            crate::knobs::tcpip_value_range("TcpTimedWaitDelay", w.build)
                .is_none_or(|(lo, hi)| (lo..=hi).contains(&d))
        });
    Settings {
        ephemeral_ports: w.dynamic_ports_v4.and_then(DynamicPorts::range),
        reserved_ports: reserved,
        time_wait_seconds: Some(delay.unwrap_or(crate::rules::WINDOWS_TIME_WAIT_SECONDS_LONG)),
        time_wait_source: Some(if delay.is_some() {
            ValueSource::Read
        } else {
            ValueSource::Default
        }),
        ..Settings::default()
    }
}

/// The integer after the last `:` of a line, if that is all that follows it.
fn value_after_colon(line: &str) -> Option<u32> {
    let (_, value) = line.rsplit_once(':')?;
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// `netsh int ipv4|ipv6 show dynamicport tcp`: the first two `label : number` lines are the start
/// port and the number of ports, whatever the language of the labels. `None` when the output
/// holds no such pair (e.g. Wine's netsh stub prints nothing) or the pair is impossible.
pub fn parse_dynamic_port(text: &str) -> Option<DynamicPorts> {
    let mut values = text.lines().filter_map(value_after_colon);
    let start = u16::try_from(values.next()?).ok()?;
    let count = values.next()?;
    let ports = DynamicPorts { start, count };
    // count 0 or a range past 65535 is not something netsh can hold: do not trust it.
    ports.range().map(|_| ports)
}

/// `netsh int ipv4|ipv6 show excludedportrange protocol=tcp`: every line that is two port numbers,
/// optionally followed by `*` (an administered exclusion). Headers, dashes and the
/// "* - Administered port exclusions." footer are skipped in any language. Sorted by start.
pub fn parse_excluded_ranges(text: &str) -> Vec<ExcludedRange> {
    let mut out: Vec<ExcludedRange> = text
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let low: u16 = words.next()?.parse().ok()?;
            let high: u16 = words.next()?.parse().ok()?;
            let administered = match (words.next(), words.next()) {
                (None, _) => false,
                (Some("*"), None) => true,
                _ => return None,
            };
            (low <= high).then_some(ExcludedRange {
                low,
                high,
                administered,
            })
        })
        .collect();
    out.sort_by_key(|r| (r.low, r.high));
    out
}

/// One event as `EvtRender(EvtRenderEventXml)` gives it: the fields portdoctor needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    pub provider: String,
    pub event_id: u32,
    /// `TimeCreated/@SystemTime` as Unix milliseconds; `None` if missing or unreadable.
    pub time_unix_ms: Option<u64>,
}

/// The value of attribute `name` in the first `<tag …>` element (either quote style).
fn attribute<'a>(xml: &'a str, tag: &str, name: &str) -> Option<&'a str> {
    let open = format!("<{tag}");
    let mut rest = xml;
    loop {
        let at = rest.find(&open)?;
        let after = &rest[at + open.len()..];
        // `<EventIDX` is another tag: need whitespace, `>` or `/` after the name.
        if after.starts_with(|c: char| c.is_whitespace() || c == '>' || c == '/') {
            let element = &after[..after.find('>')?];
            let key = format!("{name}=");
            let pos = element.find(&key)?;
            let value = &element[pos + key.len()..];
            let quote = value.chars().next().filter(|c| *c == '\'' || *c == '"')?;
            let value = &value[1..];
            return value.find(quote).map(|end| &value[..end]);
        }
        rest = after;
    }
}

/// The text inside the first `<tag …>…</tag>`.
fn element_text<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}");
    let mut rest = xml;
    loop {
        let at = rest.find(&open)?;
        let after = &rest[at + open.len()..];
        if after.starts_with(|c: char| c.is_whitespace() || c == '>') {
            let body = &after[after.find('>')? + 1..];
            let end = body.find(&format!("</{tag}>"))?;
            return Some(&body[..end]);
        }
        rest = after;
    }
}

/// Parses one rendered event. `None` when it has no numeric EventID.
pub fn parse_event_xml(xml: &str) -> Option<EventRecord> {
    let event_id = element_text(xml, "EventID")?.trim().parse().ok()?;
    let provider = attribute(xml, "Provider", "Name").unwrap_or("").to_string();
    let time_unix_ms = attribute(xml, "TimeCreated", "SystemTime").and_then(parse_system_time);
    Some(EventRecord {
        provider,
        event_id,
        time_unix_ms,
    })
}

/// `2026-11-27T21:14:03.5120462Z` (UTC, the form event XML uses) → Unix milliseconds.
pub fn parse_system_time(s: &str) -> Option<u64> {
    let s = s.trim().strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut ymd = date.split('-');
    let year: i64 = ymd.next()?.parse().ok()?;
    let month: u32 = ymd.next()?.parse().ok()?;
    let day: u32 = ymd.next()?.parse().ok()?;
    if ymd.next().is_some() || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut parts = hms.split(':');
    let hour: u64 = parts.next()?.parse().ok()?;
    let min: u64 = parts.next()?.parse().ok()?;
    let sec: u64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ms: u64 = format!("{frac:0<3}")[..3].parse().ok()?;
    let days = days_from_civil(year, month, day);
    let secs = days.checked_mul(86_400)? + (hour * 3600 + min * 60 + sec) as i64;
    u64::try_from(secs).ok()?.checked_mul(1000)?.checked_add(ms)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Counts Tcpip 4227, 4231 and 4266 events newer than `now - window_hours`. Events of other
/// providers or ids are ignored; events without a time count (the query already limited the
/// window) but do not set `last_unix_ms`.
pub fn summarize_events(
    records: &[EventRecord],
    now_unix_ms: u64,
    window_hours: u32,
) -> TcpipEvents {
    let since = now_unix_ms.saturating_sub(u64::from(window_hours) * 3_600_000);
    let mut out = TcpipEvents {
        window_hours,
        ..TcpipEvents::default()
    };
    for r in records {
        if !r.provider.eq_ignore_ascii_case("tcpip") {
            continue;
        }
        if r.time_unix_ms.is_some_and(|t| t < since) {
            continue;
        }
        let stat: &mut EventStat = match r.event_id {
            4227 => &mut out.reuse_failed_4227,
            4231 => &mut out.ports_exhausted_4231,
            4266 => &mut out.udp_ports_exhausted_4266,
            _ => continue,
        };
        stat.count += 1;
        stat.last_unix_ms = stat.last_unix_ms.max(r.time_unix_ms);
    }
    out
}

/// Windows build number from `CurrentBuildNumber` ("20348"); `None` if not a number.
pub fn parse_build_number(s: &str) -> Option<u32> {
    s.trim().trim_end_matches('\0').parse().ok()
}

/// A registry root portdoctor reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryRoot {
    LocalMachine,
    CurrentUser,
}

/// `HKLM\SYSTEM\…` / `HKEY_CURRENT_USER\Software\…` → root and subkey. Used for the
/// `PORTDOCTOR_TCPIP_PARAMS_KEY` override (tests point it at a scratch HKCU key).
pub fn parse_registry_path(path: &str) -> Option<(RegistryRoot, String)> {
    let path = path.trim().trim_matches('\\');
    let (root, rest) = path.split_once('\\').unwrap_or((path, ""));
    let root = match root.to_ascii_uppercase().as_str() {
        "HKLM" | "HKEY_LOCAL_MACHINE" => RegistryRoot::LocalMachine,
        "HKCU" | "HKEY_CURRENT_USER" => RegistryRoot::CurrentUser,
        _ => return None,
    };
    let rest = rest.trim_matches('\\');
    (!rest.is_empty()).then(|| (root, rest.to_string()))
}

/// MIB_TCP_STATE (1 CLOSED … 12 DELETE_TCB) → our states. CLOSED rows are skipped: they are
/// not the BOUND sockets of `netstat -anobq` / `Get-NetTCPConnection -State Bound`, which
/// `GetExtendedTcpTable` does not list (those come from [`parse_bound_connections`]);
/// DELETE_TCB still holds its port, shown as CLOSING.
pub fn tcp_state_from_mib(state: u32) -> Option<TcpState> {
    Some(match state {
        2 => TcpState::Listen,
        3 => TcpState::SynSent,
        4 => TcpState::SynRecv,
        5 => TcpState::Established,
        6 => TcpState::FinWait1,
        7 => TcpState::FinWait2,
        8 => TcpState::CloseWait,
        9 | 12 => TcpState::Closing,
        10 => TcpState::LastAck,
        11 => TcpState::TimeWait,
        _ => return None,
    })
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// A port as IP Helper stores it: network byte order in the low 16 bits of a DWORD, i.e. the
/// first two bytes in memory.
fn port_at(b: &[u8], at: usize) -> Option<u16> {
    let p = b.get(at..at + 2)?;
    Some(u16::from_be_bytes([p[0], p[1]]))
}

/// Size of `MIB_TCPROW_OWNER_PID` (6 DWORDs) and `MIB_TCP6ROW_OWNER_PID`.
pub const ROW_V4_BYTES: usize = 24;
pub const ROW_V6_BYTES: usize = 56;

/// Decodes the buffer `GetExtendedTcpTable(TCP_TABLE_OWNER_PID_ALL)` filled: a DWORD count, then
/// rows (DWORD-aligned, so they start at byte 4). `None` when the count does not fit the buffer.
/// PIDs of 0 (TIME_WAIT, System Idle, unknown) become `None`.
pub fn parse_tcp_table(bytes: &[u8], ipv6: bool) -> Option<Vec<Socket>> {
    let n = u32_at(bytes, 0)? as usize;
    let row = if ipv6 { ROW_V6_BYTES } else { ROW_V4_BYTES };
    if n.checked_mul(row)?.checked_add(4)? > bytes.len() {
        return None;
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let r = &bytes[4 + i * row..4 + (i + 1) * row];
        let (state, lip, lport, rip, rport, pid) = if ipv6 {
            // ucLocalAddr[16], dwLocalScopeId, dwLocalPort, ucRemoteAddr[16], dwRemoteScopeId,
            // dwRemotePort, dwState, dwOwningPid
            let l: [u8; 16] = r[0..16].try_into().ok()?;
            let rm: [u8; 16] = r[24..40].try_into().ok()?;
            (
                u32_at(r, 48)?,
                IpAddr::V6(Ipv6Addr::from(l)),
                port_at(r, 20)?,
                IpAddr::V6(Ipv6Addr::from(rm)),
                port_at(r, 44)?,
                u32_at(r, 52)?,
            )
        } else {
            // dwState, dwLocalAddr, dwLocalPort, dwRemoteAddr, dwRemotePort, dwOwningPid
            (
                u32_at(r, 0)?,
                IpAddr::V4(Ipv4Addr::new(r[4], r[5], r[6], r[7])),
                port_at(r, 8)?,
                IpAddr::V4(Ipv4Addr::new(r[12], r[13], r[14], r[15])),
                port_at(r, 16)?,
                u32_at(r, 20)?,
            )
        };
        let Some(state) = tcp_state_from_mib(state) else {
            continue;
        };
        out.push(Socket {
            state,
            local_ip: normalize_ip(lip),
            local_port: lport,
            remote_ip: normalize_ip(rip),
            remote_port: rport,
            time_wait_left_ms: None,
            inode: 0,
            uid: None,
            pid: (pid != 0).then_some(pid),
        });
    }
    Some(out)
}

/// Size of `MIB_UDPROW_OWNER_PID` (3 DWORDs) and `MIB_UDP6ROW_OWNER_PID`.
pub const UDP_ROW_V4_BYTES: usize = 12;
pub const UDP_ROW_V6_BYTES: usize = 28;

/// Decodes the buffer `GetExtendedUdpTable(UDP_TABLE_OWNER_PID)` filled: a DWORD count, then
/// rows. UDP rows have no remote end (the table does not say whether a socket is connected):
/// the remote is the unspecified address, port 0. `None` when the count does not fit.
pub fn parse_udp_table(bytes: &[u8], ipv6: bool) -> Option<Vec<UdpSocket>> {
    let n = u32_at(bytes, 0)? as usize;
    let row = if ipv6 {
        UDP_ROW_V6_BYTES
    } else {
        UDP_ROW_V4_BYTES
    };
    if n.checked_mul(row)?.checked_add(4)? > bytes.len() {
        return None;
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let r = &bytes[4 + i * row..4 + (i + 1) * row];
        let (ip, port, pid) = if ipv6 {
            // ucLocalAddr[16], dwLocalScopeId, dwLocalPort, dwOwningPid
            let l: [u8; 16] = r[0..16].try_into().ok()?;
            (
                IpAddr::V6(Ipv6Addr::from(l)),
                port_at(r, 20)?,
                u32_at(r, 24)?,
            )
        } else {
            // dwLocalAddr, dwLocalPort, dwOwningPid
            (
                IpAddr::V4(Ipv4Addr::new(r[0], r[1], r[2], r[3])),
                port_at(r, 4)?,
                u32_at(r, 8)?,
            )
        };
        out.push(UdpSocket {
            local_ip: normalize_ip(ip),
            local_port: port,
            remote_ip: if ipv6 {
                IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            } else {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            },
            remote_port: 0,
            ipv6_socket: ipv6,
            v6only: None,
            inode: 0,
            uid: None,
            pid: (pid != 0).then_some(pid),
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_wait_lifetime_is_measured_across_snapshots() {
        let tw = |port: u16| Socket {
            state: TcpState::TimeWait,
            local_ip: "10.0.0.5".parse().unwrap(),
            local_port: port,
            remote_ip: "10.0.0.9".parse().unwrap(),
            remote_port: 443,
            time_wait_left_ms: None,
            inode: 0,
            uid: None,
            pid: None,
        };
        let mut t = TimeWaitTracker::default();
        // Port 1 is in TIME_WAIT from the start: its entry is unknown, never a sample.
        assert_eq!(t.observe(0, &[tw(1)]), None);
        // Port 2 enters between 0 and 10 s (taken as 5 s).
        assert_eq!(t.observe(10_000, &[tw(1), tw(2)]), None);
        let mut at = 10_000;
        while at < 240_000 {
            at += 10_000;
            assert_eq!(t.observe(at, &[tw(2)]), None, "{at}");
        }
        // Port 2 leaves between 240 s and 250 s (taken as 245 s): 240 s in TIME_WAIT.
        let m = t.observe(250_000, &[]).unwrap();
        assert_eq!(
            (m.seconds, m.samples, m.resolution_seconds),
            (240.0, 1, 10.0)
        );
    }

    #[test]
    fn bound_connections_parse() {
        let text = include_str!("../../tests/fixtures/windows/get_nettcpconnection_bound.txt");
        let b = parse_bound_connections(text).unwrap();
        assert_eq!(b.len(), 4, "{b:?}");
        assert_eq!(parse_bound_connections(""), None);
        assert_eq!(
            parse_bound_connections("portdoctor:end\r\n"),
            Some(Vec::new())
        );
        assert!(b
            .iter()
            .all(|s| s.state == TcpState::Close && s.state.name() == "BOUND"));
        assert_eq!(
            (b[0].local_ip, b[0].local_port, b[0].pid),
            ("10.0.0.5".parse().unwrap(), 50123, Some(4242))
        );
        assert_eq!(b[3].local_ip, "fe80::1".parse::<IpAddr>().unwrap());
        assert_eq!(b[3].remote_ip, IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        // CLOSED table rows are not BOUND sockets.
        assert_eq!(tcp_state_from_mib(1), None);
    }

    #[test]
    fn net_tcp_settings_parse_and_pick_internet_custom() {
        let text = include_str!("../../tests/fixtures/windows/get_nettcpsetting_2019.txt");
        let all = parse_net_tcp_settings(text);
        assert_eq!(all.len(), 6, "{all:?}");
        let g = governing_tcp_setting(&all).unwrap();
        assert_eq!(g.name, "InternetCustom");
        assert_eq!(
            g.dynamic,
            Some(DynamicPorts {
                start: 49152,
                count: 16384
            })
        );
        assert_eq!(g.auto_reuse, Some(DynamicPorts { start: 0, count: 0 }));
        // Before Server 2016 there is no auto-reuse property: empty fields.
        let old = parse_net_tcp_settings("InternetCustom,49152,16384,,\r\n\r\ngarbage\n");
        assert_eq!(old.len(), 1);
        assert_eq!(old[0].auto_reuse, None);
        assert!(governing_tcp_setting(&[]).is_none());
    }
    use proptest::prelude::*;

    #[test]
    fn udp_netsh_outputs_parse_like_tcp_ones() {
        let d = parse_dynamic_port(&fixture("dynamicport_ipv4_udp_en_default.txt")).unwrap();
        assert_eq!((d.start, d.count), (49152, 16384));
        let x = parse_excluded_ranges(&fixture("excludedportrange_ipv4_udp_hyperv.txt"));
        assert_eq!(
            x.iter()
                .map(|e| (e.low, e.high, e.administered))
                .collect::<Vec<_>>(),
            [
                (5353, 5353, false),
                (50100, 50199, false),
                (53000, 53099, true)
            ]
        );
        let e = parse_event_xml(&fixture("event_tcpip_4266.xml")).unwrap();
        assert_eq!(e.event_id, 4266);
        let now = e.time_unix_ms.unwrap() + 1000;
        let s = summarize_events(&[e], now, 24);
        assert_eq!(s.udp_ports_exhausted_4266.count, 1);
        assert_eq!(s.ports_exhausted_4231.count, 0);
    }

    #[test]
    fn udp_table_rows_v4_and_v6() {
        let mut b = 2u32.to_ne_bytes().to_vec();
        for (ip, port, pid) in [([127, 0, 0, 1], 50001u16, 4242u32), ([0, 0, 0, 0], 53, 0)] {
            b.extend_from_slice(&ip);
            b.extend_from_slice(&port.to_be_bytes());
            b.extend_from_slice(&[0, 0]);
            b.extend_from_slice(&pid.to_ne_bytes());
        }
        let v = parse_udp_table(&b, false).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!((v[0].local_port, v[0].pid), (50001, Some(4242)));
        assert_eq!(v[0].local_ip, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(v[1].pid, None);
        assert!(!v[0].connected() && !v[0].ipv6_socket);
        let mut b6 = 1u32.to_ne_bytes().to_vec();
        b6.extend_from_slice(&"::1".parse::<Ipv6Addr>().unwrap().octets());
        b6.extend_from_slice(&0u32.to_ne_bytes());
        b6.extend_from_slice(&50002u16.to_be_bytes());
        b6.extend_from_slice(&[0, 0]);
        b6.extend_from_slice(&7u32.to_ne_bytes());
        let v6 = parse_udp_table(&b6, true).unwrap();
        assert_eq!(
            (v6[0].local_port, v6[0].pid, v6[0].ipv6_socket),
            (50002, Some(7), true)
        );
        // A count the buffer cannot hold is refused.
        assert!(parse_udp_table(&[9, 0, 0, 0, 1, 2], false).is_none());
    }

    proptest! {
        #[test]
        fn udp_table_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300), v6 in any::<bool>()) {
            let _ = parse_udp_table(&bytes, v6);
        }
    }

    fn fixture(name: &str) -> String {
        let path = format!(
            "{}/tests/fixtures/windows/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn dynamic_port_english_default() {
        let p = parse_dynamic_port(&fixture("dynamicport_ipv4_tcp_en_default.txt")).unwrap();
        assert_eq!(
            p,
            DynamicPorts {
                start: 49152,
                count: 16384
            }
        );
        let r = p.range().unwrap();
        assert_eq!((r.low, r.high), (49152, 65535));
    }

    #[test]
    fn dynamic_port_off_by_one_advice() {
        let p = parse_dynamic_port(&fixture("dynamicport_ipv4_tcp_en_offbyone.txt")).unwrap();
        let r = p.range().unwrap();
        assert_eq!((r.low, r.high), (32767, 65534));
    }

    #[test]
    fn dynamic_port_localized_by_position() {
        let de = parse_dynamic_port(&fixture("dynamicport_ipv6_tcp_de.txt")).unwrap();
        assert_eq!(
            de,
            DynamicPorts {
                start: 10000,
                count: 55535
            }
        );
        let fr = parse_dynamic_port(&fixture("dynamicport_ipv4_tcp_fr_cp1252.txt")).unwrap();
        assert_eq!(
            fr,
            DynamicPorts {
                start: 49152,
                count: 16384
            }
        );
    }

    #[test]
    fn dynamic_port_rejects_empty_and_impossible() {
        // Wine's netsh is a stub that prints nothing.
        assert_eq!(parse_dynamic_port(""), None);
        assert_eq!(
            parse_dynamic_port("Start Port : 60000\nNumber of Ports : 10000\n"),
            None
        );
        assert_eq!(
            parse_dynamic_port("Start Port : 60000\nNumber of Ports : 0\n"),
            None
        );
        assert_eq!(
            parse_dynamic_port("Start Port : 70000\nNumber of Ports : 10\n"),
            None
        );
        assert_eq!(parse_dynamic_port("Start Port : 49152\n"), None);
    }

    #[test]
    fn excluded_ranges_hyperv_with_administered_block() {
        let r = parse_excluded_ranges(&fixture("excludedportrange_ipv4_tcp_hyperv.txt"));
        assert_eq!(r.len(), 9);
        assert_eq!(
            r[5],
            ExcludedRange {
                low: 50000,
                high: 50059,
                administered: true
            }
        );
        assert_eq!(r.iter().filter(|x| x.administered).count(), 1);
        assert_eq!((r[3].low, r[3].high), (49671, 49770));
        assert_eq!((r[0].low, r[0].high), (5357, 5357));
    }

    #[test]
    fn excluded_ranges_wsl_docker_none_and_german() {
        let r = parse_excluded_ranges(&fixture("excludedportrange_ipv4_tcp_wsl_docker.txt"));
        assert_eq!(r.len(), 15);
        assert_eq!((r[0].low, r[0].high), (1031, 1130));
        assert!(r
            .iter()
            .any(|x| x.low == 50000 && x.high == 50099 && x.administered));
        assert!(parse_excluded_ranges(&fixture("excludedportrange_ipv4_tcp_none.txt")).is_empty());
        let de = parse_excluded_ranges(&fixture("excludedportrange_ipv6_tcp_de.txt"));
        assert_eq!(de.len(), 4);
        assert_eq!(
            de[3],
            ExcludedRange {
                low: 52315,
                high: 52315,
                administered: true
            }
        );
    }

    #[test]
    fn excluded_ranges_skip_odd_lines() {
        let text = "  10 5\n 1 2 3\n 7 8 x\n65536 65537\n 100 200 *\n";
        assert_eq!(
            parse_excluded_ranges(text),
            vec![ExcludedRange {
                low: 100,
                high: 200,
                administered: true
            }]
        );
    }

    #[test]
    fn event_xml_fixtures() {
        let e = parse_event_xml(&fixture("event_tcpip_4231.xml")).unwrap();
        assert_eq!(e.provider, "Tcpip");
        assert_eq!(e.event_id, 4231);
        // 2026-11-27T21:14:03.512Z
        assert_eq!(e.time_unix_ms, Some(1_795_814_043_512));
        let w = parse_event_xml(&fixture("event_tcpip_4227.xml")).unwrap();
        assert_eq!(w.event_id, 4227);
        assert_eq!(w.time_unix_ms, Some(1_795_814_038_007));
        // Double quotes work too; EventIDX is not EventID.
        let e2 = parse_event_xml(
            "<Event><System><Provider Name=\"Tcpip\"/><EventIDX>1</EventIDX><EventID>4227</EventID><TimeCreated SystemTime=\"1970-01-01T00:00:01Z\"/></System></Event>",
        )
        .unwrap();
        assert_eq!((e2.event_id, e2.time_unix_ms), (4227, Some(1000)));
        assert_eq!(parse_event_xml("<Event/>"), None);
    }

    #[test]
    fn system_time_parsing() {
        assert_eq!(parse_system_time("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_system_time("2000-03-01T00:00:00.5Z"),
            Some(951_868_800_500)
        );
        assert_eq!(
            parse_system_time("2024-02-29T12:00:00.0000000Z"),
            Some(1_709_208_000_000)
        );
        assert_eq!(parse_system_time("2024-13-01T00:00:00Z"), None);
        assert_eq!(parse_system_time("2024-01-01T00:00:00"), None);
        assert_eq!(parse_system_time("1969-12-31T23:59:59Z"), None);
    }

    #[test]
    fn events_are_counted_in_the_window() {
        let now = parse_system_time("2026-11-28T04:00:00Z").unwrap();
        let mut recs: Vec<EventRecord> = ["event_tcpip_4231.xml", "event_tcpip_4227.xml"]
            .iter()
            .map(|f| parse_event_xml(&fixture(f)).unwrap())
            .collect();
        recs.push(EventRecord {
            provider: "Tcpip".into(),
            event_id: 4231,
            time_unix_ms: Some(now - 25 * 3_600_000),
        });
        recs.push(EventRecord {
            provider: "Other".into(),
            event_id: 4231,
            time_unix_ms: Some(now),
        });
        let s = summarize_events(&recs, now, 24);
        assert_eq!(s.window_hours, 24);
        assert_eq!(s.ports_exhausted_4231.count, 1);
        assert_eq!(s.ports_exhausted_4231.last_unix_ms, Some(1_795_814_043_512));
        assert_eq!(s.reuse_failed_4227.count, 1);
    }

    #[test]
    fn build_numbers() {
        assert_eq!(parse_build_number("20348"), Some(20348));
        assert_eq!(parse_build_number(" 19045\0"), Some(19045));
        assert_eq!(parse_build_number("x"), None);
    }

    #[test]
    fn registry_paths() {
        assert_eq!(
            parse_registry_path(r"HKCU\Software\portdoctor-test\Parameters"),
            Some((
                RegistryRoot::CurrentUser,
                r"Software\portdoctor-test\Parameters".into()
            ))
        );
        assert_eq!(
            parse_registry_path(r"HKEY_LOCAL_MACHINE\SYSTEM\X\"),
            Some((RegistryRoot::LocalMachine, "SYSTEM\\X".into()))
        );
        assert_eq!(parse_registry_path("HKCR\\x"), None);
        assert_eq!(parse_registry_path("HKLM"), None);
    }

    fn row_v4(state: u32, l: [u8; 4], lport: u16, r: [u8; 4], rport: u16, pid: u32) -> Vec<u8> {
        let mut v = state.to_ne_bytes().to_vec();
        v.extend(l);
        v.extend(lport.to_be_bytes());
        v.extend([0, 0]);
        v.extend(r);
        v.extend(rport.to_be_bytes());
        v.extend([0, 0]);
        v.extend(pid.to_ne_bytes());
        v
    }

    #[test]
    fn tcp_table_v4_rows() {
        let mut buf = 3u32.to_ne_bytes().to_vec();
        buf.extend(row_v4(2, [0, 0, 0, 0], 80, [0, 0, 0, 0], 0, 4));
        buf.extend(row_v4(5, [10, 0, 0, 5], 50123, [10, 0, 0, 9], 1433, 4242));
        buf.extend(row_v4(11, [10, 0, 0, 5], 50124, [10, 0, 0, 9], 1433, 0));
        buf.extend([0xAA; 8]); // slack after the rows, as a too-big buffer has
        let t = parse_tcp_table(&buf, false).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(
            (t[0].state, t[0].local_port, t[0].pid),
            (TcpState::Listen, 80, Some(4))
        );
        assert_eq!(t[1].local_ip, "10.0.0.5".parse::<IpAddr>().unwrap());
        assert_eq!(
            (t[1].local_port, t[1].remote_port, t[1].pid),
            (50123, 1433, Some(4242))
        );
        assert_eq!((t[2].state, t[2].pid), (TcpState::TimeWait, None));
        // A count larger than the buffer is rejected, not read past.
        let mut bad = 9u32.to_ne_bytes().to_vec();
        bad.extend(row_v4(5, [1, 2, 3, 4], 1, [1, 2, 3, 4], 2, 0));
        assert_eq!(parse_tcp_table(&bad, false), None);
        assert_eq!(parse_tcp_table(&[1, 2], false), None);
        assert_eq!(parse_tcp_table(&0u32.to_ne_bytes(), true), Some(vec![]));
    }

    #[test]
    fn tcp_table_v6_rows_and_mapped_addresses() {
        let mut row = Vec::new();
        let local: Ipv6Addr = "::ffff:127.0.0.1".parse().unwrap();
        let remote: Ipv6Addr = "::1".parse().unwrap();
        row.extend(local.octets());
        row.extend(0u32.to_ne_bytes());
        row.extend(50000u16.to_be_bytes());
        row.extend([0, 0]);
        row.extend(remote.octets());
        row.extend(0u32.to_ne_bytes());
        row.extend(443u16.to_be_bytes());
        row.extend([0, 0]);
        row.extend(5u32.to_ne_bytes());
        row.extend(77u32.to_ne_bytes());
        assert_eq!(row.len(), ROW_V6_BYTES);
        let mut buf = 1u32.to_ne_bytes().to_vec();
        buf.extend(row);
        let t = parse_tcp_table(&buf, true).unwrap();
        assert_eq!(t[0].local_ip, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(t[0].remote_ip, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(
            (t[0].state, t[0].local_port, t[0].remote_port),
            (TcpState::Established, 50000, 443)
        );
        assert_eq!(t[0].pid, Some(77));
    }

    proptest! {
        #[test]
        fn tcp_table_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400), v6 in any::<bool>()) {
            let _ = parse_tcp_table(&bytes, v6);
            let _ = parse_registry_path(&String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn parsers_never_panic_on_arbitrary_text(s in "\\PC*") {
            let _ = parse_dynamic_port(&s);
            let _ = parse_excluded_ranges(&s);
            let _ = parse_event_xml(&s);
            let _ = parse_system_time(&s);
            let _ = parse_build_number(&s);
        }

        #[test]
        fn parsers_never_panic_on_netsh_like_text(
            lines in proptest::collection::vec("[ a-zA-Z:*\\-0-9äöü<>='/]{0,40}", 0..20)
        ) {
            let s = lines.join("\r\n");
            if let Some(p) = parse_dynamic_port(&s) {
                let r = p.range().unwrap();
                prop_assert!(r.low <= r.high);
            }
            for r in parse_excluded_ranges(&s) {
                prop_assert!(r.low <= r.high);
            }
            let _ = parse_event_xml(&s);
        }

        #[test]
        fn dynamic_port_round_trip(start in 1u16..=65535, count in 1u32..=65535, lang in 0usize..3) {
            let (a, b) = [("Start Port", "Number of Ports"), ("Startport", "Anzahl der Ports"), ("Port de démarrage", "Nombre de ports")][lang];
            let text = format!("\r\nProtocol tcp X\r\n-----\r\n{a} : {start}\r\n{b} : {count}\r\n");
            let parsed = parse_dynamic_port(&text);
            if u32::from(start) + count - 1 <= 65535 {
                prop_assert_eq!(parsed, Some(DynamicPorts { start, count }));
            } else {
                prop_assert_eq!(parsed, None);
            }
        }
    }
}
