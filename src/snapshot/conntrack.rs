//! What the conntrack table of a namespace showed (Linux, `nf_conntrack`): its size and limit,
//! the per-CPU statistics summed, the source-NATed flows, and the NAT rules' port ranges.
//! Plain data; `None` is unknown (never 0).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::PortRange;

/// The conntrack picture of one namespace. Present only where `nf_conntrack` is loaded.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Conntrack {
    /// `net.netfilter.nf_conntrack_count` (this namespace's entries).
    pub count: Option<u64>,
    /// `net.netfilter.nf_conntrack_max` (one limit for the host; each namespace counts its own).
    pub max: Option<u64>,
    /// The per-CPU statistics of /proc/net/stat/nf_conntrack, summed over CPUs, since the
    /// namespace was made.
    pub stats: Option<ConntrackStats>,
    /// `net.netfilter.nf_conntrack_tcp_timeout_time_wait` (s).
    pub tcp_timeout_time_wait_s: Option<u32>,
    /// `net.netfilter.nf_conntrack_tcp_timeout_established` (s).
    pub tcp_timeout_established_s: Option<u32>,
    /// Entries the ctnetlink dump returned; `None` when the table could not be dumped (no
    /// CAP_NET_ADMIN): then `snat` is `None` too.
    pub dumped: Option<u64>,
    /// The source-NATed entries (status bit IPS_SRC_NAT), `None` when the table was not dumped.
    pub snat: Option<Vec<NatEntry>>,
    /// NAT rules with their port ranges, as the ruleset says; read only when there are SNAT
    /// entries.
    pub rules: Vec<NatRule>,
    /// How the rules were read (`nft -j list ruleset`, `iptables-save -t nat`), `None` when not
    /// read.
    pub rules_source: Option<String>,
    /// `check --observe`: how much the statistics moved over the observed window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<StatsWindow>,
}

/// The statistics' increase over a window of `seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct StatsWindow {
    pub seconds: f64,
    pub delta: ConntrackStats,
}

impl ConntrackStats {
    /// `self − earlier`, `None` when a counter went back (another namespace, a reset).
    pub fn since(&self, earlier: &ConntrackStats) -> Option<ConntrackStats> {
        Some(ConntrackStats {
            found: self.found.checked_sub(earlier.found)?,
            invalid: self.invalid.checked_sub(earlier.invalid)?,
            insert: self.insert.checked_sub(earlier.insert)?,
            insert_failed: self.insert_failed.checked_sub(earlier.insert_failed)?,
            drop: self.drop.checked_sub(earlier.drop)?,
            early_drop: self.early_drop.checked_sub(earlier.early_drop)?,
            search_restart: self.search_restart.checked_sub(earlier.search_restart)?,
            clash_resolve: self.clash_resolve.checked_sub(earlier.clash_resolve)?,
        })
    }
}

/// Per-CPU conntrack statistics, summed (`conntrack -S` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ConntrackStats {
    pub found: u64,
    pub invalid: u64,
    pub insert: u64,
    /// A new entry clashed with an existing one at confirmation (the SNAT port race, or no
    /// free NAT tuple): its packet was dropped.
    pub insert_failed: u64,
    pub drop: u64,
    /// Entries evicted to make room in a full table.
    pub early_drop: u64,
    pub search_restart: u64,
    pub clash_resolve: u64,
}

/// One source-NATed flow: the client (original source), the remote that answers and the NAT
/// address and port it answers to (the reply tuple: after DNAT the real endpoint, not the
/// address the client dialled).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatEntry {
    /// IP protocol number (6 TCP, 17 UDP, …).
    pub proto: u8,
    /// TCP conntrack state (`ESTABLISHED`, `TIME_WAIT`, …), `None` for other protocols.
    pub tcp_state: Option<CtTcpState>,
    pub src_ip: IpAddr,
    pub src_port: u16,
    pub remote_ip: IpAddr,
    pub remote_port: u16,
    pub nat_ip: IpAddr,
    pub nat_port: u16,
    /// Seconds until the entry expires.
    pub timeout_s: Option<u32>,
}

/// TCP conntrack states (`enum tcp_conntrack`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CtTcpState {
    None,
    SynSent,
    SynRecv,
    Established,
    FinWait,
    CloseWait,
    LastAck,
    TimeWait,
    Close,
    SynSent2,
}

impl CtTcpState {
    pub fn from_kernel(v: u8) -> Option<Self> {
        use CtTcpState::{
            Close, CloseWait, Established, FinWait, LastAck, None, SynRecv, SynSent, SynSent2,
            TimeWait,
        };
        [
            None,
            SynSent,
            SynRecv,
            Established,
            FinWait,
            CloseWait,
            LastAck,
            TimeWait,
            Close,
            SynSent2,
        ]
        .get(usize::from(v))
        .copied()
    }

    /// As `conntrack -L` prints it.
    pub fn name(self) -> &'static str {
        match self {
            CtTcpState::None => "NONE",
            CtTcpState::SynSent => "SYN_SENT",
            CtTcpState::SynRecv => "SYN_RECV",
            CtTcpState::Established => "ESTABLISHED",
            CtTcpState::FinWait => "FIN_WAIT",
            CtTcpState::CloseWait => "CLOSE_WAIT",
            CtTcpState::LastAck => "LAST_ACK",
            CtTcpState::TimeWait => "TIME_WAIT",
            CtTcpState::Close => "CLOSE",
            CtTcpState::SynSent2 => "SYN_SENT2",
        }
    }
}

/// What kind of source NAT a rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NatKind {
    Masquerade,
    Snat,
}

/// One source-NAT rule of the ruleset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatRule {
    pub kind: NatKind,
    /// The protocol the rule matches (`meta l4proto`, `-p`), `None` for any.
    pub proto: Option<u8>,
    /// `to :A-B` / `--to-ports A-B`; `None`: no range in the rule (the kernel's default).
    pub ports: Option<PortRange>,
    /// `snat to ADDR` / `--to-source ADDR`, as written.
    pub addr: Option<String>,
    /// `random`: the first port tried is random (a hash of the tuple otherwise).
    pub random: bool,
    /// `fully-random` / `--random-fully`: every port tried is random (avoids the clash race).
    pub fully_random: bool,
    /// `nftables` or `iptables-nft`/`iptables-legacy`.
    pub origin: String,
}
