//! Pure parsers for the Linux text files portdoctor reads: /proc/net/tcp{,6}, sysctls,
//! /proc/net/{snmp,netstat,sockstat}, and /proc/PID/fd link targets. Each takes the text and
//! returns data, so the tests below run on files captured from a real kernel
//! (tests/fixtures/linux/proc/, made by tests/fixtures/linux/capture.sh).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::snapshot::{normalize_ip, PortRange, Socket, TcpState, UdpSocket};

/// Parses one `/proc/net/tcp` or `/proc/net/tcp6` table. Lines that do not parse are skipped and
/// counted, so a kernel that adds a column does not break the tool.
/// `ms_per_tick` converts the `tm->when` column (clock ticks, USER_HZ) to milliseconds.
pub fn parse_proc_net_tcp(text: &str, ms_per_tick: u32, out: &mut Vec<Socket>) -> usize {
    let mut skipped = 0;
    for line in text.lines().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        match parse_tcp_line(line, ms_per_tick) {
            Some(s) => out.push(s),
            None => skipped += 1,
        }
    }
    skipped
}

fn parse_tcp_line(line: &str, ms_per_tick: u32) -> Option<Socket> {
    let mut f = line.split_whitespace();
    let _sl = f.next()?;
    let (local_ip, local_port) = parse_hex_endpoint(f.next()?)?;
    let (remote_ip, remote_port) = parse_hex_endpoint(f.next()?)?;
    let state = TcpState::from_kernel(u8::from_str_radix(f.next()?, 16).ok()?)?;
    let _queues = f.next()?;
    let (timer, when) = f.next()?.split_once(':')?;
    let _retrnsmt = f.next()?;
    let uid: u32 = f.next()?.parse().ok()?;
    let _timeout = f.next()?;
    let inode: u64 = f.next()?.parse().ok()?;
    let time_wait_left_ms = if timer == "03" {
        let ticks = u32::from_str_radix(when, 16).ok()?;
        Some(ticks.saturating_mul(ms_per_tick))
    } else {
        None
    };
    Some(Socket {
        state,
        local_ip,
        local_port,
        remote_ip,
        remote_port,
        time_wait_left_ms,
        inode,
        uid: Some(uid),
        pid: None,
    })
}

/// A row of `/proc/net/udp{,6}` (same columns as the TCP tables; state 07 unconnected, 01
/// connected) as a UDP socket. The text tables do not show `IPV6_V6ONLY`.
pub fn udp_of(s: &Socket, ipv6_socket: bool) -> UdpSocket {
    UdpSocket {
        local_ip: s.local_ip,
        local_port: s.local_port,
        remote_ip: s.remote_ip,
        remote_port: s.remote_port,
        ipv6_socket,
        v6only: None,
        inode: s.inode,
        uid: s.uid,
        pid: None,
    }
}

/// `0100007F:4E20` → 127.0.0.1:20000. The kernel prints each 32-bit word of the address as a
/// native-endian integer, so the bytes come back with `to_ne_bytes`.
fn parse_hex_endpoint(s: &str) -> Option<(IpAddr, u16)> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(addr, 16).ok()?.to_ne_bytes(),
        )),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
                let word = u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok()?;
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
            normalize_ip(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => return None,
    };
    Some((ip, port))
}

/// `ip_local_port_range`: two numbers separated by whitespace.
pub fn parse_port_range(text: &str) -> Option<PortRange> {
    let mut it = text.split_whitespace();
    let low = it.next()?.parse().ok()?;
    let high = it.next()?.parse().ok()?;
    if it.next().is_some() {
        return None;
    }
    PortRange::new(low, high)
}

/// `ip_local_reserved_ports`: comma-separated ports and ranges (`8080,40000-40010`), possibly
/// empty. Returns merged, sorted ranges, or `None` when any element is malformed.
pub fn parse_port_list(text: &str) -> Option<Vec<PortRange>> {
    let mut ranges = Vec::new();
    for item in text
        .trim()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let r = if let Some((a, b)) = item.split_once('-') {
            PortRange::new(a.trim().parse().ok()?, b.trim().parse().ok()?)?
        } else {
            let p = item.parse().ok()?;
            PortRange { low: p, high: p }
        };
        ranges.push(r);
    }
    Some(PortRange::merge_all(ranges))
}

/// A single integer sysctl value.
pub fn parse_int<T: std::str::FromStr>(text: &str) -> Option<T> {
    text.trim().parse().ok()
}

/// `/proc/net/snmp` and `/proc/net/netstat` hold pairs of lines: `Prefix: Name1 Name2 …` then
/// `Prefix: v1 v2 …`. Returns the values of the section named `prefix` (e.g. `Tcp`, `TcpExt`).
pub fn parse_counter_section(text: &str, prefix: &str) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    let mut lines = text.lines();
    while let Some(header) = lines.next() {
        let Some((p, names)) = header.split_once(':') else {
            continue;
        };
        let Some(values_line) = lines.next() else {
            break;
        };
        if p != prefix {
            continue;
        }
        let Some((_, values)) = values_line.split_once(':') else {
            continue;
        };
        for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
            if let Ok(v) = value.parse() {
                out.insert(name.to_string(), v);
            }
        }
    }
    out
}

/// `/proc/net/sockstat{,6}`: `TCP: inuse 5 orphan 0 tw 2 alloc 7 mem 1`. Keys become
/// `tcp.inuse`, `tcp6.inuse`, … (only the TCP lines are kept).
pub fn parse_sockstat(text: &str, out: &mut BTreeMap<String, i64>) {
    for line in text.lines() {
        let Some((proto, rest)) = line.split_once(':') else {
            continue;
        };
        if !proto.eq_ignore_ascii_case("tcp") && !proto.eq_ignore_ascii_case("tcp6") {
            continue;
        }
        let words: Vec<&str> = rest.split_whitespace().collect();
        for pair in words.chunks_exact(2) {
            if let Ok(v) = pair[1].parse() {
                out.insert(format!("{}.{}", proto.to_ascii_lowercase(), pair[0]), v);
            }
        }
    }
}

/// `socket:[12345]` (a /proc/PID/fd link target) → 12345.
pub fn socket_inode(link: &[u8]) -> Option<u64> {
    let inner = link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(inner).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured by tests/fixtures/linux/capture.sh from a namespace it made, which also lists the
    /// socket population behind these tables.
    macro_rules! proc_fixture {
        ($path:literal) => {
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/linux/proc/",
                $path
            ))
        };
    }
    const TCP4: &str = proc_fixture!("net/tcp");
    const TCP6: &str = proc_fixture!("net/tcp6");
    const SNMP: &str = proc_fixture!("net/snmp");
    const NETSTAT: &str = proc_fixture!("net/netstat");
    const SOCKSTAT: &str = proc_fixture!("net/sockstat");
    const SOCKSTAT6: &str = proc_fixture!("net/sockstat6");
    const PORT_RANGE: &str = proc_fixture!("sys/net/ipv4/ip_local_port_range");
    const RESERVED_PORTS: &str = proc_fixture!("sys/net/ipv4/ip_local_reserved_ports");

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The one socket of TABLE with this local port and state.
    fn one(table: &[Socket], local_port: u16, state: TcpState) -> &Socket {
        let found: Vec<&Socket> = table
            .iter()
            .filter(|s| s.local_port == local_port && s.state == state)
            .collect();
        assert_eq!(found.len(), 1, "{state:?} on port {local_port}: {table:?}");
        found[0]
    }

    #[test]
    fn parses_ipv4_table_with_time_wait_timer() {
        let mut out = Vec::new();
        assert_eq!(parse_proc_net_tcp(TCP4, 10, &mut out), 0);
        assert_eq!(out.len(), 7);
        let listener = one(&out, 20000, TcpState::Listen);
        assert_eq!(listener.local_ip, ip("127.0.0.1"));
        assert_eq!(listener.inode, 429_734);
        // A TIME_WAIT entry: timer 3, 0x1759 = 5977 ticks of 10 ms left; no uid or inode.
        let tw = one(&out, 40001, TcpState::TimeWait);
        assert_eq!(tw.time_wait_left_ms, Some(59_770));
        assert_eq!(tw.remote_ip, ip("127.0.0.1"));
        assert_eq!(tw.remote_port, 20000);
        assert_eq!(tw.inode, 0);
        let client = one(&out, 40003, TcpState::Established);
        assert_eq!(client.uid, Some(1000));
        assert_eq!(client.inode, 429_738);
        assert_eq!(client.time_wait_left_ms, None);
        // The accepted sides: one for 40003, one for the IPv6 socket to the IPv4 listener.
        let mut accepted: Vec<u16> = out
            .iter()
            .filter(|s| s.local_port == 20000 && s.state == TcpState::Established)
            .map(|s| s.remote_port)
            .collect();
        accepted.sort_unstable();
        assert_eq!(accepted, [40003, 40005]);
    }

    #[test]
    fn ipv4_table_shows_half_closed_pairs_and_not_bound_only_sockets() {
        let mut out = Vec::new();
        parse_proc_net_tcp(TCP4, 10, &mut out);
        // The client closed and the server did not: the orphaned client is a timewait entry in
        // FIN_WAIT2 (with the TIME_WAIT timer), the server side a full socket in CLOSE_WAIT.
        let fin_wait = one(&out, 40009, TcpState::FinWait2);
        assert_eq!(fin_wait.time_wait_left_ms, Some(59_770));
        assert_eq!(one(&out, 20000, TcpState::CloseWait).remote_port, 40009);
        // Bound without listen or connect: /proc/net/tcp does not list it (netlink does).
        assert!(out.iter().all(|s| s.local_port != 40011), "{out:?}");
    }

    #[test]
    fn parses_ipv6_table_and_unmaps() {
        let mut out = Vec::new();
        assert_eq!(parse_proc_net_tcp(TCP6, 10, &mut out), 0);
        assert_eq!(out.len(), 5);
        assert_eq!(one(&out, 20000, TcpState::Listen).local_ip, ip("::1"));
        let mapped = one(&out, 40005, TcpState::Established);
        assert_eq!(mapped.local_ip, ip("127.0.0.1"));
        assert_eq!(mapped.remote_ip, ip("127.0.0.1"));
        let tw = one(&out, 40007, TcpState::TimeWait);
        assert_eq!(tw.local_ip, ip("::1"));
        assert_eq!(tw.time_wait_left_ms, Some(59_760));
        assert_eq!(one(&out, 40013, TcpState::Established).remote_port, 20000);
    }

    #[test]
    fn garbage_lines_are_counted_not_fatal() {
        let mut out = Vec::new();
        assert_eq!(
            parse_proc_net_tcp("header\nnot a socket line\n", 10, &mut out),
            1
        );
        assert!(out.is_empty());
    }

    #[test]
    fn port_range_and_list() {
        assert_eq!(parse_port_range(PORT_RANGE), PortRange::new(32768, 60999));
        assert_eq!(parse_port_range("5 4"), None);
        assert_eq!(parse_port_range("1"), None);
        assert_eq!(parse_port_list("\n"), Some(vec![]));
        assert_eq!(
            parse_port_list(RESERVED_PORTS),
            Some(vec![
                PortRange::new(8080, 8080).unwrap(),
                PortRange::new(50000, 50009).unwrap()
            ])
        );
        assert_eq!(
            parse_port_list("40005,40000-40003,40004,50000\n"),
            Some(vec![
                PortRange::new(40000, 40005).unwrap(),
                PortRange::new(50000, 50000).unwrap()
            ])
        );
        assert_eq!(parse_port_list("1-x"), None);
    }

    #[test]
    fn counter_sections() {
        let netstat = "TcpExt: SyncookiesSent TW TWKilled TCPTimeWaitOverflow\nTcpExt: 0 12 3 7\nIpExt: InNoRoutes\nIpExt: 0\n";
        let m = parse_counter_section(netstat, "TcpExt");
        assert_eq!(m.get("TW"), Some(&12));
        assert_eq!(m.get("TCPTimeWaitOverflow"), Some(&7));
        assert!(parse_counter_section(netstat, "Tcp").is_empty());
        let snmp = "Tcp: RtoAlgorithm ActiveOpens MaxConn\nTcp: 1 500 -1\n";
        assert_eq!(parse_counter_section(snmp, "Tcp").get("MaxConn"), Some(&-1));
    }

    #[test]
    fn counter_sections_of_real_files() {
        // Six connects and accepts; ESTABLISHED and CLOSE_WAIT sockets count in CurrEstab.
        let tcp = parse_counter_section(SNMP, "Tcp");
        assert_eq!(tcp.len(), 15);
        assert_eq!(tcp.get("ActiveOpens"), Some(&6));
        assert_eq!(tcp.get("PassiveOpens"), Some(&6));
        assert_eq!(tcp.get("CurrEstab"), Some(&7));
        assert_eq!(tcp.get("MaxConn"), Some(&-1));
        for section in ["Ip", "Icmp", "Udp", "UdpLite"] {
            assert!(
                !parse_counter_section(SNMP, section).is_empty(),
                "{section}"
            );
        }
        let ext = parse_counter_section(NETSTAT, "TcpExt");
        assert_eq!(ext.len(), 135);
        assert_eq!(ext.get("TW"), Some(&3));
        assert_eq!(ext.get("TCPTimeWaitOverflow"), Some(&0));
        assert_eq!(parse_counter_section(NETSTAT, "IpExt").len(), 18);
        assert_eq!(parse_counter_section(NETSTAT, "MPTcpExt").len(), 76);
    }

    #[test]
    fn sockstat_lines() {
        let mut m = BTreeMap::new();
        parse_sockstat(
            "sockets: used 9\nTCP: inuse 5 orphan 0 tw 2 alloc 7 mem 1\nUDP: inuse 1\n",
            &mut m,
        );
        parse_sockstat("TCP6: inuse 3\nUDP6: inuse 0\n", &mut m);
        assert_eq!(m.get("tcp.tw"), Some(&2));
        assert_eq!(m.get("tcp6.inuse"), Some(&3));
        assert_eq!(m.len(), 6);
    }

    #[test]
    fn sockstat_of_real_files() {
        let mut m = BTreeMap::new();
        parse_sockstat(SOCKSTAT, &mut m);
        parse_sockstat(SOCKSTAT6, &mut m);
        // Hashed sockets per family (listeners and connections; not TIME_WAIT, not bound-only).
        assert_eq!(m.get("tcp.inuse"), Some(&5));
        assert_eq!(m.get("tcp.tw"), Some(&3));
        assert_eq!(m.get("tcp6.inuse"), Some(&4));
        let keys: Vec<&str> = m.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "tcp.alloc",
                "tcp.inuse",
                "tcp.mem",
                "tcp.orphan",
                "tcp.tw",
                "tcp6.inuse"
            ]
        );
    }

    #[test]
    fn socket_links() {
        assert_eq!(socket_inode(b"socket:[12345]"), Some(12345));
        assert_eq!(socket_inode(b"pipe:[12345]"), None);
        assert_eq!(socket_inode(b"socket:[x]"), None);
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(s in ".{0,400}") {
            let mut out = Vec::new();
            parse_proc_net_tcp(&s, 10, &mut out);
            let _ = parse_port_range(&s);
            let _ = parse_port_list(&s);
            let _ = parse_counter_section(&s, "TcpExt");
            let mut m = BTreeMap::new();
            parse_sockstat(&s, &mut m);
        }

        #[test]
        fn merged_ranges_are_disjoint_and_sorted(v in proptest::collection::vec((0u16..2000, 0u16..50), 0..20)) {
            let ranges: Vec<PortRange> = v.iter().map(|&(a, l)| PortRange::new(a, a.saturating_add(l)).unwrap()).collect();
            let merged = PortRange::merge_all(ranges.clone());
            for w in merged.windows(2) {
                proptest::prop_assert!(u32::from(w[0].high) + 1 < u32::from(w[1].low));
            }
            for r in &ranges {
                proptest::prop_assert!(merged.iter().any(|m| m.low <= r.low && r.high <= m.high));
            }
        }
    }
}
