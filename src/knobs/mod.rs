//! The knob knowledge base: one source of truth for every OS setting portdoctor reads, explains
//! or recommends. `check` quotes it in fixes; `tune`, the man page and the README table reuse it.

use serde::Serialize;

use crate::snapshot::Os;

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
        valid: "a range outside the dynamic range; 0 ports = off",
        default: "off",
        applies_to: "Windows Server 2019 and later",
        activation: Activation::Reboot,
        tradeoff: "ports of this range are shared across destinations (by 4-tuple), like Linux connect(); portdoctor does not read it yet",
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
    let quoted = if value.contains(' ') {
        format!("\"{value}\"")
    } else {
        value.to_string()
    };
    format!("sysctl -w {id}={quoted} && echo '{id} = {value}' >> /etc/sysctl.d/90-portdoctor.conf")
}

/// Where the Tcpip registry values live.
pub const TCPIP_PARAMETERS_KEY: &str = r"HKLM\SYSTEM\CurrentControlSet\Services\Tcpip\Parameters";

/// The pasteable Windows command that sets a Tcpip REG_DWORD (takes effect after a reboot).
pub fn reg_add_fix(value: &str, data: u32) -> String {
    format!(
        "reg add \"{TCPIP_PARAMETERS_KEY}\" /v {value} /t REG_DWORD /d {data} /f  (then reboot)"
    )
}

/// The pasteable Windows command that removes a Tcpip registry value.
pub fn reg_delete_fix(value: &str) -> String {
    format!("reg delete \"{TCPIP_PARAMETERS_KEY}\" /v {value} /f")
}

/// The pasteable Windows commands that set the TCP dynamic port range of both IP versions.
pub fn netsh_dynamicport_fix(start: u16, num: u32) -> String {
    format!(
        "netsh int ipv4 set dynamicport tcp start={start} num={num} && netsh int ipv6 set dynamicport tcp start={start} num={num}"
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

#[cfg(test)]
mod tests {
    use super::*;

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
            "sysctl -w net.ipv4.ip_local_port_range=\"15000 65000\" && echo 'net.ipv4.ip_local_port_range = 15000 65000' >> /etc/sysctl.d/90-portdoctor.conf"
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
            r#"reg add "HKLM\SYSTEM\CurrentControlSet\Services\Tcpip\Parameters" /v TcpTimedWaitDelay /t REG_DWORD /d 30 /f  (then reboot)"#
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
