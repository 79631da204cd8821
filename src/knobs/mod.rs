//! The knob knowledge base: one source of truth for every OS setting portdoctor reads, explains
//! or recommends. `check` quotes it in the fixes of findings, `capacity` in the changes that make
//! a demand fit, and `tune` plans and applies from it.

use std::fmt::Write as _;

use serde::Serialize;

use crate::rules;
use crate::snapshot::{Os, Target};

/// How sure we are that a knob does what the entry says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    /// Measured on this project's machines.
    Verified,
    /// Documented by the vendor, not measured here.
    Documented,
    /// Folklore or contradictory documentation.
    Unverified,
}

/// What it takes for a change to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Immediate,
    NewConnections,
    Reboot,
}

#[derive(Debug, Clone, Serialize)]
pub struct Knob {
    /// Stable id, e.g. `net.ipv4.tcp_tw_reuse`.
    pub id: &'static str,
    pub os: Os,
    /// Where it lives (a /proc/sys path, a registry value, a netsh setting).
    pub location: &'static str,
    /// Valid values in words (kept beside the machine checks that `tune` will enforce).
    pub valid: &'static str,
    pub default: &'static str,
    pub applies_to: &'static str,
    pub activation: Activation,
    /// What it buys and what it costs.
    pub tradeoff: &'static str,
    pub confidence: Confidence,
}

pub const KNOBS: &[Knob] = &[
    Knob {
        id: "net.ipv4.ip_local_port_range",
        os: Os::Linux,
        location: "/proc/sys/net/ipv4/ip_local_port_range (per network namespace; also governs IPv6)",
        valid: "two ports LOW HIGH, 1024 <= LOW <= HIGH <= 65535; keep listeners out of it",
        default: "32768 60999",
        applies_to: "all kernels",
        activation: Activation::NewConnections,
        tradeoff: "more ports per pool; the range must not cover ports that services listen on",
        confidence: Confidence::Verified,
    },
    Knob {
        id: "net.ipv4.ip_local_reserved_ports",
        os: Os::Linux,
        location: "/proc/sys/net/ipv4/ip_local_reserved_ports",
        valid: "comma-separated ports and ranges, e.g. 8080,9000-9010",
        default: "(empty)",
        applies_to: "all kernels",
        activation: Activation::NewConnections,
        tradeoff: "keeps listener ports free of outbound connections; each reserved port lowers every pool's capacity by one",
        confidence: Confidence::Verified,
    },
    Knob {
        id: "net.ipv4.tcp_tw_reuse",
        os: Os::Linux,
        location: "/proc/sys/net/ipv4/tcp_tw_reuse",
        valid: "0 off, 1 on, 2 loopback only",
        default: "2",
        applies_to: "all kernels (2 since 5.1)",
        activation: Activation::NewConnections,
        tradeoff: "outbound connections may take over TIME_WAIT 4-tuples older than tcp_tw_reuse_delay (needs tcp_timestamps); safe for clients, does nothing for inbound traffic",
        confidence: Confidence::Verified,
    },
    Knob {
        id: "net.ipv4.tcp_tw_reuse_delay",
        os: Os::Linux,
        location: "/proc/sys/net/ipv4/tcp_tw_reuse_delay",
        valid: "1..60000 ms",
        default: "1000",
        applies_to: "Linux 6.14+ (fixed at 1000 ms before)",
        activation: Activation::NewConnections,
        tradeoff: "lower frees TIME_WAIT ports sooner for reuse; very low values risk confusing late segments",
        confidence: Confidence::Documented,
    },
    Knob {
        id: "net.ipv4.tcp_max_tw_buckets",
        os: Os::Linux,
        location: "/proc/sys/net/ipv4/tcp_max_tw_buckets (per network namespace)",
        valid: "0..2^31-1",
        default: "depends on memory (often 131072 or 262144)",
        applies_to: "all kernels",
        activation: Activation::Immediate,
        tradeoff: "past the cap new TIME_WAIT sockets are dropped at once (TCPTimeWaitOverflow): ports free sooner but the TIME_WAIT protection against stray segments is lost",
        confidence: Confidence::Documented,
    },
    Knob {
        id: "net.ipv4.tcp_fin_timeout",
        os: Os::Linux,
        location: "/proc/sys/net/ipv4/tcp_fin_timeout",
        valid: "seconds, > 0",
        default: "60",
        applies_to: "all kernels",
        activation: Activation::NewConnections,
        tradeoff: "limits orphaned FIN_WAIT2 only; it does NOT shorten TIME_WAIT (fixed at 60 s)",
        confidence: Confidence::Documented,
    },
    Knob {
        id: "net.ipv4.tcp_timestamps",
        os: Os::Linux,
        location: "/proc/sys/net/ipv4/tcp_timestamps",
        valid: "0 off, 1 on, 2 on without random offset",
        default: "1",
        applies_to: "all kernels",
        activation: Activation::NewConnections,
        tradeoff: "required for tcp_tw_reuse; turning it off disables TIME_WAIT reuse",
        confidence: Confidence::Documented,
    },
    Knob {
        id: "netsh.ipv4.dynamicport.tcp",
        os: Os::Windows,
        location: "netsh int ipv4 show|set dynamicport tcp (or Get-/Set-NetTCPSetting -DynamicPortRangeStartPort/-DynamicPortRangeNumberOfPorts)",
        valid: "start >= 1025, num >= 255, start + num <= 65536 (high = start + num - 1)",
        default: "start=49152 num=16384 (49152-65535); 1025-5000 before Vista",
        applies_to: "Vista / Server 2008 and later",
        activation: Activation::Immediate,
        tradeoff: "more ports per local address; keep listeners and Hyper-V/WinNAT exclusions out of it. start=32767 num=32768 (common advice) gives 32767-65534; start=32768 num=32768 gives 32768-65535",
        confidence: Confidence::Documented,
    },
    Knob {
        id: "netsh.ipv6.dynamicport.tcp",
        os: Os::Windows,
        location: "netsh int ipv6 show|set dynamicport tcp",
        valid: "start >= 1025, num >= 255, start + num <= 65536",
        default: "start=49152 num=16384 (49152-65535)",
        applies_to: "Vista / Server 2008 and later",
        activation: Activation::Immediate,
        tradeoff: "set separately from IPv4: widen both",
        confidence: Confidence::Documented,
    },
    Knob {
        id: "netsh.ipv4.dynamicport.udp",
        os: Os::Windows,
        location: "netsh int ipv4 show|set dynamicport udp",
        valid: "start >= 1025, num >= 255, start + num <= 65536 (high = start + num - 1)",
        default: "start=49152 num=16384 (49152-65535)",
        applies_to: "Vista / Server 2008 and later",
        activation: Activation::Immediate,
        tradeoff: "more ports for UDP clients (DNS, metrics, QUIC) of the whole host; separate from the TCP range; keep UDP listeners and excluded UDP ranges out of it",
        confidence: Confidence::Documented,
    },
    Knob {
        id: "netsh.ipv6.dynamicport.udp",
        os: Os::Windows,
        location: "netsh int ipv6 show|set dynamicport udp",
        valid: "start >= 1025, num >= 255, start + num <= 65536",
        default: "start=49152 num=16384 (49152-65535)",
        applies_to: "Vista / Server 2008 and later",
        activation: Activation::Immediate,
        tradeoff: "set separately from IPv4: widen both",
        confidence: Confidence::Documented,
    },
    Knob {
        id: "tcpip.TcpTimedWaitDelay",
        os: Os::Windows,
        location: r"HKLM\SYSTEM\CurrentControlSet\Services\Tcpip\Parameters\TcpTimedWaitDelay (REG_DWORD, seconds)",
        valid: "30-300 s; 2-300 s on Windows 8.1 / Server 2012 R2 (build 9600) and later",
        default: "absent: built-in default, documented as 120 s (older documents say 240 s)",
        applies_to: "all versions",
        activation: Activation::Reboot,
        tradeoff: "shorter TIME_WAIT frees ports sooner; below 30 s late segments of an old connection may reach a new one",
        confidence: Confidence::Documented,
    },
    Knob {
        id: "tcpip.MaxUserPort",
        os: Os::Windows,
        location: r"HKLM\SYSTEM\CurrentControlSet\Services\Tcpip\Parameters\MaxUserPort (REG_DWORD)",
        valid: "5000-65534",
        default: "absent; pre-Vista range 1024-5000",
        applies_to: "pre-Vista; on Vista and later the netsh dynamic range is what counts (unverified whether MaxUserPort still has any effect)",
        activation: Activation::Reboot,
        tradeoff: "legacy knob: set the netsh dynamic range instead",
        confidence: Confidence::Unverified,
    },
    Knob {
        id: "tcpip.StrictTimeWaitSeqCheck",
        os: Os::Windows,
        location: r"HKLM\SYSTEM\CurrentControlSet\Services\Tcpip\Parameters\StrictTimeWaitSeqCheck (REG_DWORD)",
        valid: "0 or 1",
        default: "absent (0)",
        applies_to: "said to make TcpTimedWaitDelay take effect on some older versions; unverified on current Windows",
        activation: Activation::Reboot,
        tradeoff: "unverified: measure before relying on it",
        confidence: Confidence::Unverified,
    },
    Knob {
        id: "tcpip.TcpNumConnections",
        os: Os::Windows,
        location: r"HKLM\SYSTEM\CurrentControlSet\Services\Tcpip\Parameters\TcpNumConnections (REG_DWORD)",
        valid: "0-0xFFFFFE",
        default: "absent (0xFFFFFE)",
        applies_to: "connection table limit on old versions (Server 2003 era)",
        activation: Activation::Reboot,
        tradeoff: "a low value caps all TCP connections of the host",
        confidence: Confidence::Documented,
    },
    Knob {
        id: "tcpip.MaxFreeTcbs",
        os: Os::Windows,
        location: r"HKLM\SYSTEM\CurrentControlSet\Services\Tcpip\Parameters\MaxFreeTcbs (REG_DWORD)",
        valid: "a positive count",
        default: "absent (depends on memory)",
        applies_to: "pre-Vista TCB cache (incl. TIME_WAIT)",
        activation: Activation::Reboot,
        tradeoff: "legacy: no documented effect on Vista and later",
        confidence: Confidence::Unverified,
    },
    Knob {
        id: "tcpip.MaxHashTableSize",
        os: Os::Windows,
        location: r"HKLM\SYSTEM\CurrentControlSet\Services\Tcpip\Parameters\MaxHashTableSize (REG_DWORD)",
        valid: "64-65536, a power of 2",
        default: "absent (512, or more with more processors)",
        applies_to: "pre-Vista TCB hash table",
        activation: Activation::Reboot,
        tradeoff: "legacy: no documented effect on Vista and later",
        confidence: Confidence::Unverified,
    },
    Knob {
        id: "NetTCPSetting.AutoReusePortRange",
        os: Os::Windows,
        location: "Set-NetTCPSetting -AutoReusePortRangeStartPort S -AutoReusePortRangeNumberOfPorts N (PowerShell)",
        valid: "a strict subset of the dynamic range (the feature authors' advice, .NET 6 networking post); 0 ports = off",
        default: "off (0 ports)",
        applies_to: "Windows Server 2016 and later (8.1 / Server 2012 R2 with the update); sockets with SO_REUSE_UNICASTPORT",
        activation: Activation::Reboot,
        tradeoff: "ports of this range are shared across destinations (by 4-tuple), like Linux connect(), for sockets that set SO_REUSE_UNICASTPORT or connect() without bind() (Get-/Set-NetTCPSetting docs); with 0 ports they come from the dynamic range even if SO_REUSE_UNICASTPORT is set",
        confidence: Confidence::Documented,
    },
];

/// Looks a knob up by id; the ids are compile-time constants, so a miss is a programming error
/// caught by the unit test below.
pub fn knob(id: &str) -> Option<&'static Knob> {
    KNOBS.iter().find(|k| k.id == id)
}

/// The pasteable Linux commands that set `id` to `value` now and after a reboot.
pub fn sysctl_fix(id: &str, value: &str) -> String {
    let quoted = rules::sysctl_shell_value(value);
    let dropin = rules::sysctl_dropin_path();
    // Idempotent: any earlier line for the knob is replaced, not followed by another.
    let pattern = id.replace('.', "\\.");
    format!(
        "sysctl -w {id}={quoted} && {{ grep -sv '^{pattern} *=' {dropin}; echo '{id} = {value}'; }} > {dropin}.new && mv {dropin}.new {dropin}"
    )
}

/// The fix as a `portdoctor tune` command (plan, backup, verify, rollback), with the manual
/// commands on a second line. `target`: where the snapshot came from, so the fix acts there.
pub fn tune_fix(id: &str, value: &str, target: &Target) -> String {
    let quoted = rules::sysctl_shell_value(value);
    let ns = target.cli_args();
    // Inside a namespace the sysctl must run there, and /etc/sysctl.d does not reach it: it is
    // set again by whatever creates the namespace.
    let by_hand = if target.is_host() {
        sysctl_fix(id, value)
    } else {
        format!(
            "{}sysctl -w {id}={quoted}  (not persisted: set it where {target} is created)",
            target.exec_prefix()
        )
    };
    format!(
        "portdoctor tune apply{ns} --set {id}={quoted} --yes  (backup first; undo: portdoctor tune rollback{})\nby hand: {by_hand}",
        rollback_args(target)
    )
}

/// `tune rollback`'s arguments that find the backup of an apply in TARGET: rollback picks
/// backups by namespace name (`--netns`); a `--pid` target's backups carry its namespace.
fn rollback_args(target: &Target) -> String {
    match target {
        Target::Netns(name) => format!(" --netns {name}"),
        Target::Host | Target::Process(_) => String::new(),
    }
}

/// [`tune_fix`] for several knobs set together, in the order given (one `tune apply` with a
/// `--set` each; by hand, one `sysctl -w` after the other).
pub fn tune_fix_all(sets: &[(&str, String)], target: &Target) -> String {
    if let [(id, value)] = sets {
        return tune_fix(id, value, target);
    }
    let ns = target.cli_args();
    let args = sets.iter().fold(String::new(), |mut out, (id, value)| {
        let _ = write!(out, " --set {id}={}", rules::sysctl_shell_value(value));
        out
    });
    let by_hand: Vec<String> = sets
        .iter()
        .map(|(id, value)| {
            if target.is_host() {
                sysctl_fix(id, value)
            } else {
                format!(
                    "{}sysctl -w {id}={}",
                    target.exec_prefix(),
                    rules::sysctl_shell_value(value)
                )
            }
        })
        .collect();
    let persist = if target.is_host() {
        String::new()
    } else {
        format!("  (not persisted: set them where {target} is created)")
    };
    format!(
        "portdoctor tune apply{ns}{args} --yes  (backup first; undo: portdoctor tune rollback{})\nby hand: {}{persist}",
        rollback_args(target),
        by_hand.join(" && ")
    )
}

/// Where the Tcpip registry values live.
pub const TCPIP_PARAMETERS_KEY: &str = r"HKLM\SYSTEM\CurrentControlSet\Services\Tcpip\Parameters";

/// The line after a registry command: on its own, so the command above pastes as it is.
pub const REBOOT_NOTE: &str = "then reboot: Tcpip registry values take effect only after a restart";

/// The pasteable Windows command that sets a Tcpip REG_DWORD (cmd or PowerShell), and on the
/// next line the reboot it needs.
pub fn reg_add_fix(value: &str, data: u32) -> String {
    format!(
        "reg add \"{TCPIP_PARAMETERS_KEY}\" /v {value} /t REG_DWORD /d {data} /f\n{REBOOT_NOTE}"
    )
}

/// How to turn on port sharing across destinations (one line, no command to paste: the range
/// must be chosen inside the dynamic range).
pub const AUTO_REUSE_FIX: &str = "Set-NetTCPSetting -SettingName InternetCustom -AutoReusePortRangeStartPort S -AutoReusePortRangeNumberOfPorts N, S..S+N-1 a strict subset of the dynamic range, then reboot";

/// The pasteable Windows command that removes a Tcpip registry value.
pub fn reg_delete_fix(value: &str) -> String {
    format!("reg delete \"{TCPIP_PARAMETERS_KEY}\" /v {value} /f")
}

/// The pasteable Windows commands that set the TCP dynamic port range of both IP versions: one
/// a line, no `&&` (Windows PowerShell 5.1 has none), so they paste into cmd and PowerShell.
pub fn netsh_dynamicport_fix(start: u16, num: u32) -> String {
    format!(
        "netsh int ipv4 set dynamicport tcp start={start} num={num}\nnetsh int ipv6 set dynamicport tcp start={start} num={num}"
    )
}

/// Documented valid range of a Tcpip REG_DWORD on `build` (unknown build: the widest
/// documented range, so nothing is flagged that might be valid). `None` = no documented range.
pub fn tcpip_value_range(value: &str, build: Option<u32>) -> Option<(u32, u32)> {
    match value {
        // 8.1 / Server 2012 R2 (build 9600) and later accept 2..300.
        "TcpTimedWaitDelay" => Some(if build.is_some_and(|b| b < 9600) {
            (30, 300)
        } else {
            (2, 300)
        }),
        "MaxUserPort" => Some((5000, 65534)),
        "StrictTimeWaitSeqCheck" => Some((0, 1)),
        "TcpNumConnections" => Some((0, 0x00FF_FFFE)),
        "MaxHashTableSize" => Some((64, 65536)),
        _ => None,
    }
}

/// The machine check behind a knob's `valid` text: what `tune` accepts for `--set`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// `LOW HIGH` (whitespace-separated), `min <= LOW <= HIGH <= max`.
    PortRange { min: u16, max: u16 },
    /// Comma-separated ports and `A-B` ranges, possibly empty (`ip_local_reserved_ports`).
    PortList,
    /// A decimal integer in `min..=max`.
    Int { min: u64, max: u64 },
    /// A REG_DWORD in `min..=max`, a power of two when `pow2`.
    Dword { min: u32, max: u32, pow2: bool },
    /// `start=S num=N` (or `S N`): `S >= min_start`, `N >= min_num`, `S + N <= 65536`.
    StartNum { min_start: u16, min_num: u32 },
}

/// A value that passed a knob's [`Check`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum KnobValue {
    Range(crate::snapshot::PortRange),
    List(Vec<crate::snapshot::PortRange>),
    Int(u64),
    StartNum { start: u16, num: u32 },
}

impl KnobValue {
    /// The text as `sysctl` prints it and as /proc/sys and sysctl.d accept it
    /// (`10000 65000`, `8080,9000-9010`, `1`); `start=S num=N` for netsh ranges.
    pub fn text(&self) -> String {
        match self {
            KnobValue::Range(r) => format!("{} {}", r.low, r.high),
            KnobValue::List(l) => l
                .iter()
                .map(|r| {
                    if r.low == r.high {
                        r.low.to_string()
                    } else {
                        format!("{}-{}", r.low, r.high)
                    }
                })
                .collect::<Vec<_>>()
                .join(","),
            KnobValue::Int(v) => v.to_string(),
            KnobValue::StartNum { start, num } => format!("start={start} num={num}"),
        }
    }
}

impl std::fmt::Display for KnobValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text())
    }
}

/// A value a knob does not accept, with the knob and its valid range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value {value:?} for {knob}: {problem}; valid: {valid}")]
pub struct KnobError {
    pub knob: String,
    pub value: String,
    pub problem: String,
    /// The machine range and the knowledge-base words, e.g. `0..=2 (0 off, 1 on, 2 loopback only)`.
    pub valid: String,
}

impl Check {
    /// The accepted values in one line, e.g. `1024 <= LOW <= HIGH <= 65535`.
    pub fn describe(self) -> String {
        match self {
            Check::PortRange { min, max } => {
                format!("\"LOW HIGH\" with {min} <= LOW <= HIGH <= {max}")
            }
            Check::PortList => {
                "comma-separated ports 1-65535 and ranges A-B (A <= B), or empty".into()
            }
            Check::Int { min, max } => format!("an integer {min}..={max}"),
            Check::Dword { min, max, pow2 } => format!(
                "an integer {min}..={max}{}",
                if pow2 { ", a power of 2" } else { "" }
            ),
            Check::StartNum { min_start, min_num } => {
                format!("\"start=S num=N\" with S >= {min_start}, N >= {min_num}, S + N <= 65536")
            }
        }
    }

    /// Parses and checks `text`; the error says what is wrong (without the knob name).
    pub fn parse(self, text: &str) -> Result<KnobValue, String> {
        use crate::snapshot::PortRange;
        let t = text.trim();
        match self {
            Check::PortRange { min, max } => {
                let words: Vec<&str> = t.split_whitespace().collect();
                let [lo, hi] = words[..] else {
                    return Err("want two ports LOW HIGH".into());
                };
                let port = |w: &str| {
                    w.parse::<u16>()
                        .map_err(|_| format!("{w:?} is not a port number 0-65535"))
                };
                let (lo, hi) = (port(lo)?, port(hi)?);
                if lo > hi {
                    return Err(format!("LOW {lo} is above HIGH {hi}"));
                }
                if lo < min {
                    return Err(format!("LOW {lo} is below {min}"));
                }
                if hi > max {
                    return Err(format!("HIGH {hi} is above {max}"));
                }
                Ok(KnobValue::Range(PortRange { low: lo, high: hi }))
            }
            Check::PortList => {
                let mut out = Vec::new();
                for item in t.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let port = |w: &str| match w.trim().parse::<u16>() {
                        Ok(p) if p > 0 => Ok(p),
                        _ => Err(format!("{w:?} is not a port number 1-65535")),
                    };
                    let r = if let Some((a, b)) = item.split_once('-') {
                        let (a, b) = (port(a)?, port(b)?);
                        PortRange::new(a, b)
                            .ok_or_else(|| format!("range {item:?} runs backwards"))?
                    } else {
                        let p = port(item)?;
                        PortRange { low: p, high: p }
                    };
                    out.push(r);
                }
                Ok(KnobValue::List(crate::snapshot::PortRange::merge_all(out)))
            }
            Check::Int { min, max } => match t.parse::<u64>() {
                Ok(v) if (min..=max).contains(&v) => Ok(KnobValue::Int(v)),
                Ok(v) => Err(format!("{v} is outside {min}..={max}")),
                Err(_) => Err(format!("{t:?} is not a non-negative integer")),
            },
            Check::Dword { min, max, pow2 } => match t.parse::<u32>() {
                Ok(v) if !(min..=max).contains(&v) => Err(format!("{v} is outside {min}..={max}")),
                Ok(v) if pow2 && !v.is_power_of_two() => Err(format!("{v} is not a power of 2")),
                Ok(v) => Ok(KnobValue::Int(u64::from(v))),
                Err(_) => Err(format!("{t:?} is not an integer 0..=4294967295")),
            },
            Check::StartNum { min_start, min_num } => {
                let mut start = None;
                let mut num = None;
                let words: Vec<&str> = t.split_whitespace().collect();
                for (i, &w) in words.iter().enumerate() {
                    let (key, val) = match w.split_once('=') {
                        Some((k, v)) => (k.to_ascii_lowercase(), v),
                        None if words.len() == 2 => {
                            ((if i == 0 { "start" } else { "num" }).to_string(), w)
                        }
                        None => return Err("want start=S num=N".into()),
                    };
                    let n: u32 = val
                        .parse()
                        .map_err(|_| format!("{val:?} is not a non-negative integer"))?;
                    match key.as_str() {
                        "start" => start = Some(n),
                        "num" => num = Some(n),
                        _ => return Err(format!("unknown field {key:?}; want start=S num=N")),
                    }
                }
                let (Some(start), Some(num)) = (start, num) else {
                    return Err("want start=S num=N".into());
                };
                if start < u32::from(min_start) || start > 65535 {
                    return Err(format!("start {start} is outside {min_start}..=65535"));
                }
                if num < min_num {
                    return Err(format!("num {num} is below {min_num}"));
                }
                if start + num > 65536 {
                    return Err(format!(
                        "start + num = {} is above 65536 (the last port would be {})",
                        start + num,
                        start + num - 1
                    ));
                }
                Ok(KnobValue::StartNum {
                    start: start as u16,
                    num,
                })
            }
        }
    }
}

impl Knob {
    /// The machine check of [`Knob::valid`]. For Tcpip values it is the widest documented
    /// range (any build); `tune` narrows by build where it knows it.
    pub fn check(&self) -> Check {
        match self.id {
            "net.ipv4.ip_local_port_range" => Check::PortRange {
                min: 1024,
                max: 65535,
            },
            "net.ipv4.ip_local_reserved_ports" => Check::PortList,
            "net.ipv4.tcp_tw_reuse" | "net.ipv4.tcp_timestamps" => Check::Int { min: 0, max: 2 },
            "net.ipv4.tcp_tw_reuse_delay" => Check::Int {
                min: 1,
                max: 60_000,
            },
            "net.ipv4.tcp_max_tw_buckets" => Check::Int {
                min: 0,
                max: i32::MAX as u64,
            },
            // proc_dointvec_jiffies refuses more than INT_MAX / HZ; HZ is at most 1000.
            "net.ipv4.tcp_fin_timeout" => Check::Int {
                min: 1,
                max: 2_147_483,
            },
            "netsh.ipv4.dynamicport.tcp"
            | "netsh.ipv6.dynamicport.tcp"
            | "netsh.ipv4.dynamicport.udp"
            | "netsh.ipv6.dynamicport.udp" => Check::StartNum {
                min_start: 1025,
                min_num: 255,
            },
            "NetTCPSetting.AutoReusePortRange" => Check::StartNum {
                min_start: 1025,
                min_num: 0,
            },
            "tcpip.MaxHashTableSize" => Check::Dword {
                min: 64,
                max: 65536,
                pow2: true,
            },
            "tcpip.MaxFreeTcbs" => Check::Dword {
                min: 1,
                max: u32::MAX,
                pow2: false,
            },
            other => {
                let name = other.trim_start_matches("tcpip.");
                let (min, max) = tcpip_value_range(name, None).unwrap_or((0, u32::MAX));
                Check::Dword {
                    min,
                    max,
                    pow2: false,
                }
            }
        }
    }

    /// Parses and checks a value for this knob; the error names the knob and its valid range.
    pub fn validate(&self, value: &str) -> Result<KnobValue, KnobError> {
        let check = self.check();
        check.parse(value).map_err(|problem| KnobError {
            knob: self.id.to_string(),
            value: value.to_string(),
            problem,
            valid: format!("{} ({})", check.describe(), self.valid),
        })
    }

    /// `/proc/sys/...` of a Linux sysctl (`net.ipv4.tcp_tw_reuse` → `net/ipv4/tcp_tw_reuse`,
    /// relative to /proc/sys); `None` for other OSes.
    pub fn proc_sys_path(&self) -> Option<String> {
        (self.os == Os::Linux).then(|| self.id.replace('.', "/"))
    }
}

/// Finds a knob by its id or, for Linux sysctls, by the name without `net.ipv4.`.
pub fn find_knob(name: &str) -> Option<&'static Knob> {
    let name = name.trim();
    knob(name).or_else(|| {
        KNOBS
            .iter()
            .find(|k| k.os == Os::Linux && k.id.strip_prefix("net.ipv4.") == Some(name))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixes_for_a_namespace_run_inside_it_and_say_they_do_not_persist() {
        let host = tune_fix("net.ipv4.ip_local_port_range", "15000 65000", &Target::Host);
        assert!(host.contains("tune apply --set net.ipv4.ip_local_port_range=\"15000 65000\""));
        assert!(
            host.contains("by hand: sysctl -w net.ipv4.ip_local_port_range=\"15000 65000\" && {")
        );
        let ns = tune_fix("net.ipv4.tcp_tw_reuse", "1", &Target::Netns("lab1".into()));
        assert!(
            ns.contains("tune apply --netns lab1 --set net.ipv4.tcp_tw_reuse=1"),
            "{ns}"
        );
        assert!(
            ns.contains(
                "by hand: ip netns exec lab1 sysctl -w net.ipv4.tcp_tw_reuse=1  (not persisted"
            ),
            "{ns}"
        );
        assert!(!ns.contains("/etc/sysctl.d"), "{ns}");
        let pid = tune_fix("net.ipv4.tcp_tw_reuse", "1", &Target::Process(42));
        assert!(
            pid.contains("tune apply --pid 42 --set net.ipv4.tcp_tw_reuse=1"),
            "{pid}"
        );
        assert!(
            pid.contains("by hand: nsenter --target 42 --net sysctl -w net.ipv4.tcp_tw_reuse=1"),
            "{pid}"
        );
    }

    #[test]
    fn ids_are_unique_and_linux_ones_have_proc_paths() {
        for (i, k) in KNOBS.iter().enumerate() {
            assert!(
                KNOBS[i + 1..].iter().all(|o| o.id != k.id),
                "duplicate {}",
                k.id
            );
            if k.os == Os::Linux {
                let tail = k.id.trim_start_matches("net.ipv4.");
                assert!(k.location.contains(tail), "{}", k.id);
            }
        }
    }

    #[test]
    fn fix_commands_quote_ranges() {
        assert_eq!(
            sysctl_fix("net.ipv4.ip_local_port_range", "15000 65000"),
            "sysctl -w net.ipv4.ip_local_port_range=\"15000 65000\" && { grep -sv '^net\\.ipv4\\.ip_local_port_range *=' /etc/sysctl.d/90-portdoctor.conf; echo 'net.ipv4.ip_local_port_range = 15000 65000'; } > /etc/sysctl.d/90-portdoctor.conf.new && mv /etc/sysctl.d/90-portdoctor.conf.new /etc/sysctl.d/90-portdoctor.conf"
        );
        assert!(knob("net.ipv4.tcp_tw_reuse").is_some());
    }

    #[test]
    fn windows_knobs_and_commands() {
        for id in [
            "netsh.ipv4.dynamicport.tcp",
            "netsh.ipv6.dynamicport.tcp",
            "tcpip.TcpTimedWaitDelay",
            "tcpip.MaxUserPort",
            "tcpip.StrictTimeWaitSeqCheck",
            "tcpip.TcpNumConnections",
            "tcpip.MaxFreeTcbs",
            "tcpip.MaxHashTableSize",
            "NetTCPSetting.AutoReusePortRange",
        ] {
            let k = knob(id).unwrap_or_else(|| panic!("{id}"));
            assert_eq!(k.os, Os::Windows);
            if let Some(name) = id.strip_prefix("tcpip.") {
                assert!(
                    k.location.ends_with(&format!("{name} (REG_DWORD)"))
                        || k.location.contains(&format!("{name} (REG_DWORD,")),
                    "{id}"
                );
            }
        }
        assert_eq!(
            reg_add_fix("TcpTimedWaitDelay", 30),
            "reg add \"HKLM\\SYSTEM\\CurrentControlSet\\Services\\Tcpip\\Parameters\" /v TcpTimedWaitDelay /t REG_DWORD /d 30 /f\nthen reboot: Tcpip registry values take effect only after a restart"
        );
        assert_eq!(
            tcpip_value_range("TcpTimedWaitDelay", Some(7601)),
            Some((30, 300))
        );
        assert_eq!(
            tcpip_value_range("TcpTimedWaitDelay", Some(20348)),
            Some((2, 300))
        );
        assert_eq!(tcpip_value_range("TcpTimedWaitDelay", None), Some((2, 300)));
        assert_eq!(tcpip_value_range("MaxFreeTcbs", None), None);
    }
}
