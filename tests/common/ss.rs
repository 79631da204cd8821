//! An independent reading of a namespace's sockets: `ss -Htan`, parsed into the states and
//! destination pools portdoctor should report.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};

use super::netns::Netns;
use super::process::run_ok;

/// A local or remote endpoint.
pub type Endpoint = (IpAddr, u16);

/// One line of `ss -Htan`, with the state spelled as portdoctor spells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsSocket {
    pub state: String,
    pub local: Endpoint,
    pub peer: Endpoint,
}

/// What `ss -Htan` showed.
#[derive(Debug, Clone)]
pub struct Ss {
    pub sockets: Vec<SsSocket>,
}

/// `ESTAB` → `ESTABLISHED` etc. (ss spelling → `portdoctor.check/v1` spelling).
fn ss_state(s: &str) -> String {
    match s {
        "ESTAB" => "ESTABLISHED",
        "SYN-SENT" => "SYN_SENT",
        "SYN-RECV" => "SYN_RECV",
        "FIN-WAIT-1" => "FIN_WAIT1",
        "FIN-WAIT-2" => "FIN_WAIT2",
        "TIME-WAIT" => "TIME_WAIT",
        "UNCONN" => "BOUND",
        "CLOSE-WAIT" => "CLOSE_WAIT",
        "LAST-ACK" => "LAST_ACK",
        other => return other.to_string(),
    }
    .to_string()
}

/// `127.0.0.1:80`, `[::1]:80`, `[::ffff:127.0.0.1]:80`, `*:80`, `127.0.0.1%lo:80`.
fn parse_endpoint(s: &str) -> Endpoint {
    let (host, port) = s
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("ss endpoint without a port: {s:?}"));
    let port: u16 = if port == "*" {
        0
    } else {
        port.parse()
            .unwrap_or_else(|e| panic!("ss endpoint {s:?}: {e}"))
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = host.split('%').next().unwrap_or(host);
    let ip: IpAddr = if host == "*" {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        host.parse()
            .unwrap_or_else(|e| panic!("ss endpoint {s:?}: {e}"))
    };
    (normalize(ip), port)
}

/// IPv4-mapped IPv6 → IPv4, as portdoctor reports them.
pub fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// A destination pool: (local IP, remote IP, remote port).
pub type PoolKey = (IpAddr, IpAddr, u16);

/// Counts of one pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub in_use: u64,
    pub established: u64,
    pub time_wait: u64,
}

impl Ss {
    pub fn parse(text: &str) -> Ss {
        let sockets = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                assert!(f.len() >= 5, "unexpected ss line: {line:?}");
                SsSocket {
                    state: ss_state(f[0]),
                    local: parse_endpoint(f[3]),
                    peer: parse_endpoint(f[4]),
                }
            })
            .collect();
        Ss { sockets }
    }

    /// Sockets per state.
    pub fn states(&self) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for s in &self.sockets {
            *m.entry(s.state.clone()).or_default() += 1;
        }
        m
    }

    pub fn count(&self, state: &str) -> u64 {
        self.sockets.iter().filter(|s| s.state == state).count() as u64
    }

    /// Whether `local` is a listening endpoint (exactly, or on the wildcard of either family).
    pub fn is_listener_port(&self, local: Endpoint) -> bool {
        self.sockets.iter().any(|s| {
            s.state == "LISTEN"
                && s.local.1 == local.1
                && (s.local.0 == local.0 || s.local.0.is_unspecified())
        })
    }

    /// Non-listening sockets whose local port is a listener's (the accepted side).
    pub fn inbound(&self) -> u64 {
        self.sockets
            .iter()
            .filter(|s| s.state != "LISTEN" && self.is_listener_port(s.local))
            .count() as u64
    }

    /// The destination pools an independent reading of `ss` gives: every non-listening socket
    /// with a local port inside `range` that is no listener's, by (local IP, remote IP, port).
    pub fn pools(&self, range: (u16, u16)) -> BTreeMap<PoolKey, Counts> {
        let mut pools: BTreeMap<PoolKey, Counts> = BTreeMap::new();
        for s in &self.sockets {
            if s.state == "LISTEN" || s.state == "BOUND" || self.is_listener_port(s.local) {
                continue;
            }
            if !(range.0..=range.1).contains(&s.local.1) {
                continue;
            }
            let c = pools.entry((s.local.0, s.peer.0, s.peer.1)).or_default();
            c.in_use += 1;
            match s.state.as_str() {
                "ESTABLISHED" => c.established += 1,
                "TIME_WAIT" => c.time_wait += 1,
                _ => {}
            }
        }
        pools
    }
}

impl Netns {
    /// `ss -Htan` inside the namespace, raw.
    pub fn ss_raw(&self) -> String {
        run_ok(self.exec("ss").arg("-Htan"))
    }

    /// `ss -Htan` inside the namespace, parsed.
    pub fn ss(&self) -> Ss {
        Ss::parse(&self.ss_raw())
    }
}
