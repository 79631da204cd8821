//! The OS rules and defaults portdoctor relies on, each stated once with why it holds.
//!
//! `analysis`, `capacity`, `tune`, the fixes in `knobs` and the command line all read them from
//! here, so a rule that changes (a kernel release, a Windows build, a tuned default) changes in
//! one place. Pure: constants and small functions, no I/O.

use std::borrow::Cow;

use crate::snapshot::PortRange;

// ---------------------------------------------------------------------------------------------
// Linux

/// `net.ipv4.ip_local_port_range` when nobody set it: 32768–60999, 28,232 ports (set per network
/// namespace by the kernel's `inet_init_net`).
pub const LINUX_DEFAULT_RANGE: PortRange = PortRange {
    low: 32768,
    high: 60999,
};

/// The range portdoctor's fixes and the conservative tuning profile suggest: 50,001 ports, while
/// ports below 15000 (registered services) and above 65000 stay free.
pub const LINUX_SUGGESTED_RANGE: PortRange = PortRange {
    low: 15000,
    high: 65000,
};

/// How long a closed connection stays in TIME_WAIT on Linux: `TCP_TIMEWAIT_LEN`, compiled into
/// the kernel; no sysctl changes it (`tcp_fin_timeout` is FIN_WAIT2, not TIME_WAIT).
pub const LINUX_TIME_WAIT_SECONDS: u32 = 60;

/// How old a TIME_WAIT socket must be before connect() may take over its port under
/// `tcp_tw_reuse`: 1000 ms, fixed before Linux 6.14 and the default of `tcp_tw_reuse_delay`
/// since.
pub const TW_REUSE_DELAY_MS: u32 = 1000;

/// Whether connect() may take over the port of a TIME_WAIT socket (kernel `tcp_twsk_unique`):
/// `tcp_tw_reuse` 1 = always, 2 = only when either end is loopback (the default), 0 = never;
/// and only with TCP timestamps on, because they are what tells the new connection's segments
/// from the old one's. Unknown values count as "no reuse", the conservative answer.
///
/// This is the connect() rule only: ports that bind() took stay owned through TIME_WAIT and are
/// never taken over (bind-before-connect), which callers decide.
pub fn tw_reuse_applies(tw_reuse: Option<u8>, tcp_timestamps: Option<u8>, loopback: bool) -> bool {
    tcp_timestamps.is_some_and(|t| t != 0)
        && match tw_reuse {
            Some(1) => true,
            Some(2) => loopback,
            _ => false,
        }
}

// UDP (docs/udp.md has each measurement and its commands; tests/udp.rs repeats them)

/// The IP version of a UDP port space. UDP ports are not shared per destination as TCP's are:
/// an implicit bind (the first `connect()` or `sendto()` of an unbound socket) binds the wildcard
/// address, so its port must be free on every address of the namespace, and it fails with
/// `EAGAIN` when no port of `ip_local_port_range` is. The range is the TCP one (one sysctl for
/// both), but the port tables are separate: UDP sockets do not take ports from TCP pools, nor
/// the other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum IpVersion {
    #[serde(rename = "ipv4")]
    V4,
    #[serde(rename = "ipv6")]
    V6,
}

impl IpVersion {
    pub fn name(self) -> &'static str {
        match self {
            IpVersion::V4 => "ipv4",
            IpVersion::V6 => "ipv6",
        }
    }
}

/// Whether a UDP socket's port is taken from the UDP space of `space` (Linux, measured on 6.18):
/// - an IPv4 socket holds its port in the IPv4 space;
/// - a dual-stack IPv6 socket (`IPV6_V6ONLY` off, the default with `net.ipv6.bindv6only=0`)
///   holds it in both: with every port held by one, neither an IPv4 nor a v6-only socket got one;
/// - a v6-only socket holds it in the IPv6 space only: v4 and v6-only sockets each got all ten
///   ports of a ten-port range.
///
/// The IPv6 space is what a new *dual-stack* IPv6 socket can get, so every socket counts there.
/// Unknown `v6only` (the /proc text tables) counts as dual-stack: the default, and the
/// conservative answer.
pub fn udp_port_held_in(ipv6_socket: bool, v6only: Option<bool>, space: IpVersion) -> bool {
    match space {
        IpVersion::V4 => !ipv6_socket || v6only != Some(true),
        IpVersion::V6 => true,
    }
}

/// Windows: a UDP socket holds its port in the dynamic range of its own IP version (`netsh int
/// ipv4|ipv6 … dynamicport udp`, each with its own excluded ranges). *Unverified* on real
/// Windows (this project has none): whether dual-stack IPv6 sockets also hold the IPv4 port,
/// as on Linux.
pub fn windows_udp_port_held_in(ipv6_socket: bool, space: IpVersion) -> bool {
    ipv6_socket == (space == IpVersion::V6)
}

/// `ip_local_reserved_ports` applies to UDP's implicit binds as to TCP's connects: with
/// 40000–40004 reserved in 40000–40009, UDP connects got 40005–40009 only.
pub const UDP_RESERVED_PORTS_APPLY: bool = true;

/// Sockets that share one port (`SO_REUSEADDR` / `SO_REUSEPORT` groups, which also share
/// implicitly bound ports among themselves: 40 such sockets used the 10 ports of the range)
/// hold that port once; a port held by any UDP socket of the namespace, whatever its address
/// (a server bound to 127.0.0.5:40005, a client bound to 127.0.0.2), connected or not, is no
/// longer available to an implicit bind. So a UDP pool's use is the number of *distinct*
/// ports of the range held, and one pool per IP version serves the whole namespace.
pub const UDP_POOL_IS_PER_NAMESPACE: bool = true;

/// Where persistent sysctls live: `systemd-sysctl` and `sysctl --system` read it at boot, for
/// the host's own network namespace only.
pub const SYSCTL_DIR: &str = "/etc/sysctl.d";

/// The drop-in `tune apply` writes and the fixes append to. `90-` sorts after the
/// distribution's files (lower numbers), so its values win.
pub const SYSCTL_DROPIN_NAME: &str = "90-portdoctor.conf";

/// `/etc/sysctl.d/90-portdoctor.conf`.
pub fn sysctl_dropin_path() -> String {
    format!("{SYSCTL_DIR}/{SYSCTL_DROPIN_NAME}")
}

/// A sysctl value as one shell word for `sysctl -w KEY=VALUE`: values with blanks
/// (`15000 65000`) and the empty value (clearing a list) go in double quotes; sysctl values
/// never contain quotes or `$`, so nothing else needs escaping.
pub fn sysctl_shell_value(value: &str) -> Cow<'_, str> {
    if value.is_empty() || value.contains(char::is_whitespace) {
        Cow::Owned(format!("\"{value}\""))
    } else {
        Cow::Borrowed(value)
    }
}

// ---------------------------------------------------------------------------------------------
// Windows

/// The TCP dynamic port range of Vista / Server 2008 and later when nobody set it:
/// `start=49152 num=16384` = 49152–65535 (IANA's dynamic range).
pub const WINDOWS_DEFAULT_RANGE: PortRange = PortRange {
    low: 49152,
    high: 65535,
};

/// TIME_WAIT length when `TcpTimedWaitDelay` is absent: documented as 120 s for Vista and later
/// (older documents say 240 s); reported with source `default`.
pub const WINDOWS_TIME_WAIT_SECONDS: u32 = 120;

/// The other documented default: "4 minutes (default)" in Microsoft's current port exhaustion
/// troubleshooting guide (120 s in the BizTalk tuning page and the Server 2003 reference). The
/// documents disagree, so `check` computes with this, the conservative one, and says both.
pub const WINDOWS_TIME_WAIT_SECONDS_LONG: u32 = 240;

/// The wider range portdoctor suggests on Windows: `start=32768 num=32768` = 32768–65535, twice
/// the default; the widely copied `start=32767 num=32768` ends at 65534 (high = start + num − 1).
pub const WINDOWS_WIDE_RANGE: PortRange = PortRange {
    low: 32768,
    high: 65535,
};

// ---------------------------------------------------------------------------------------------
// When a pool counts as filling or full (the defaults of --warn, --crit and --eta)

/// Utilization at which a pool is a warning: at 70 % a burst or a slow peer can still be
/// absorbed, but the trend deserves a look.
pub const WARN_UTILIZATION: f64 = 0.7;

/// Utilization at which a pool is critical: at 90 % a burst of new connections fails
/// (EADDRNOTAVAIL / WSAENOBUFS) before anyone can react.
pub const CRIT_UTILIZATION: f64 = 0.9;

/// A growing pool that fills within this many seconds is critical whatever its utilization:
/// less than a minute leaves no time for a human.
pub const CRIT_ETA_SECONDS: f64 = 60.0;

// Checked when compiling: a warning comes before critical, both are shares of a pool.
const _: () = assert!(
    0.0 < WARN_UTILIZATION
        && WARN_UTILIZATION < CRIT_UTILIZATION
        && CRIT_UTILIZATION <= 1.0
        && CRIT_ETA_SECONDS > 0.0
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ranges_have_the_documented_sizes() {
        assert_eq!(LINUX_DEFAULT_RANGE.len(), 28_232);
        assert_eq!(LINUX_SUGGESTED_RANGE.len(), 50_001);
        assert_eq!(WINDOWS_DEFAULT_RANGE.len(), 16_384);
        assert_eq!(WINDOWS_WIDE_RANGE.len(), 32_768);
        assert_eq!(WINDOWS_WIDE_RANGE.high, 65535);
    }

    #[test]
    fn tw_reuse_follows_tcp_twsk_unique() {
        // (tw_reuse, timestamps, loopback) → applies
        let cases = [
            (Some(1), Some(1), false, true),
            (Some(1), Some(1), true, true),
            (Some(2), Some(1), true, true),
            (Some(2), Some(1), false, false),
            (Some(0), Some(1), true, false),
            // Reuse needs timestamps.
            (Some(1), Some(0), false, false),
            (Some(2), Some(0), true, false),
            // Unknown: the conservative answer.
            (None, Some(1), true, false),
            (Some(1), None, false, false),
            (Some(3), Some(1), true, false),
        ];
        for (reuse, ts, lo, want) in cases {
            assert_eq!(
                tw_reuse_applies(reuse, ts, lo),
                want,
                "tw_reuse {reuse:?}, timestamps {ts:?}, loopback {lo}"
            );
        }
    }

    #[test]
    fn udp_spaces_follow_the_measured_sharing() {
        use IpVersion::{V4, V6};
        // (ipv6 socket, v6only, space) → holds a port there
        let cases = [
            (false, None, V4, true),
            (false, None, V6, true),
            (true, Some(false), V4, true),
            (true, Some(false), V6, true),
            (true, Some(true), V4, false),
            (true, Some(true), V6, true),
            (true, None, V4, true),
        ];
        for (v6, only, space, want) in cases {
            assert_eq!(
                udp_port_held_in(v6, only, space),
                want,
                "{v6} {only:?} {space:?}"
            );
        }
    }

    #[test]
    fn sysctl_values_are_quoted_only_when_the_shell_needs_it() {
        assert_eq!(sysctl_shell_value("1"), "1");
        assert_eq!(sysctl_shell_value("8080,9000-9010"), "8080,9000-9010");
        assert_eq!(sysctl_shell_value("15000 65000"), "\"15000 65000\"");
        assert_eq!(sysctl_shell_value("15000\t65000"), "\"15000\t65000\"");
        assert_eq!(sysctl_shell_value(""), "\"\"");
        assert_eq!(sysctl_dropin_path(), "/etc/sysctl.d/90-portdoctor.conf");
    }

    #[test]
    fn the_knob_base_quotes_the_same_defaults() {
        let linux = crate::knobs::knob("net.ipv4.ip_local_port_range").unwrap();
        let r = LINUX_DEFAULT_RANGE;
        assert_eq!(linux.default, format!("{} {}", r.low, r.high));
        let windows = crate::knobs::knob("netsh.ipv4.dynamicport.tcp").unwrap();
        let r = WINDOWS_DEFAULT_RANGE;
        assert!(
            windows.default.starts_with(&format!(
                "start={} num={} ({}-{})",
                r.low,
                r.len(),
                r.low,
                r.high
            )),
            "{}",
            windows.default
        );
    }
}
