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
}
