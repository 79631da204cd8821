//! The conntrack table of the namespace: one ctnetlink dump (NETLINK_NETFILTER,
//! IPCTNL_MSG_CT_GET with NLM_F_DUMP) decoded by hand over the sock_diag dump's netlink code,
//! the table's size and limit, the per-CPU statistics, the TCP timeouts, and — only when there
//! are source-NATed flows — the NAT rules' port ranges from the ruleset.
//!
//! Where `nf_conntrack` is not loaded nothing is read and nothing is said (`None`, no note):
//! a host without conntrack has no SNAT pools. The dump needs CAP_NET_ADMIN; without it the
//! entries are `None` with a note, never 0.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};

use serde_json::Value;

use super::netlink::{
    dump_messages, open_protocol, MAX_DUMP_ATTEMPTS, NLM_F_DUMP, NLM_F_REQUEST, RECV_BUF,
};
use super::proc_net;
use crate::collect::CollectError;
use crate::snapshot::conntrack::{
    Conntrack, ConntrackStats, CtTcpState, NatEntry, NatKind, NatRule,
};
use crate::snapshot::{normalize_ip, PortRange};

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const NFGENMSG_LEN: usize = 4;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_STATUS: u16 = 3;
const CTA_PROTOINFO: u16 = 4;
const CTA_TIMEOUT: u16 = 7;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_PROTOINFO_TCP: u16 = 1;
const CTA_PROTOINFO_TCP_STATE: u16 = 1;
/// `IPS_SRC_NAT`: the original tuple's source was rewritten.
const IPS_SRC_NAT: u32 = 1 << 4;
const NLA_TYPE_MASK: u16 = 0x3fff;

const NETFILTER_SYS: &str = "/proc/sys/net/netfilter";

/// Reads the namespace's conntrack picture; `None` (and no note) where conntrack is not loaded.
pub fn collect(notes: &mut Vec<String>) -> Option<Conntrack> {
    let count = sys_u64("nf_conntrack_count");
    count?;
    let mut ct = Conntrack {
        count,
        max: sys_u64("nf_conntrack_max"),
        stats: fs::read_to_string(proc_net("stat/nf_conntrack"))
            .ok()
            .and_then(|t| parse_stat(&t)),
        tcp_timeout_time_wait_s: sys_u64("nf_conntrack_tcp_timeout_time_wait")
            .and_then(|v| u32::try_from(v).ok()),
        tcp_timeout_established_s: sys_u64("nf_conntrack_tcp_timeout_established")
            .and_then(|v| u32::try_from(v).ok()),
        ..Conntrack::default()
    };
    match dump() {
        Ok(d) => {
            if d.interrupted {
                notes.push(format!(
                    "the conntrack table changed during all {} dump attempts; SNAT counts may be off by the churn",
                    d.attempts
                ));
            }
            ct.dumped = Some(d.total);
            if !d.snat.is_empty() {
                let (rules, source) = cached_rules(notes);
                ct.rules = rules;
                ct.rules_source = source;
            }
            ct.snat = Some(d.snat);
        }
        // An empty table (the count is readable by anyone) has nothing to dump.
        Err(_) if count == Some(0) => {
            ct.dumped = Some(0);
            ct.snat = Some(Vec::new());
        }
        Err(e) => {
            // The dump shares the sock_diag netlink code; say which dump failed.
            let why = match e {
                CollectError::Netlink(io) => format!("ctnetlink: {io}"),
                e => e.to_string(),
            };
            notes.push(format!(
                "the conntrack table could not be dumped ({why}): SNAT pools are unknown; ctnetlink needs CAP_NET_ADMIN in the namespace (run as root)"
            ));
        }
    }
    Some(ct)
}

fn sys_u64(name: &str) -> Option<u64> {
    fs::read_to_string(format!("{NETFILTER_SYS}/{name}"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// One dump of the table.
pub struct CtDump {
    pub total: u64,
    pub snat: Vec<NatEntry>,
    pub interrupted: bool,
    pub attempts: u32,
}

/// Dumps every conntrack entry of this thread's namespace, keeping the source-NATed ones.
pub fn dump() -> Result<CtDump, CollectError> {
    let sock = open_protocol(NETLINK_NETFILTER)?;
    let mut buf = vec![0u8; RECV_BUF];
    let mut attempts = 0;
    loop {
        attempts += 1;
        let seq = attempts;
        let mut total = 0u64;
        let mut snat = Vec::new();
        let interrupted = dump_messages(&sock, &request(seq), seq, &mut buf, &mut |kind, p| {
            if kind == (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW {
                total += 1;
                if let Some(e) = decode_entry(p) {
                    snat.push(e);
                }
            }
        })?;
        if !interrupted || attempts >= MAX_DUMP_ATTEMPTS {
            return Ok(CtDump {
                total,
                snat,
                interrupted,
                attempts,
            });
        }
    }
}

/// nlmsghdr + nfgenmsg (AF_UNSPEC: every family, NFNETLINK_V0, res_id 0).
fn request(seq: u32) -> [u8; 20] {
    let mut req = [0u8; 20];
    req[0..4].copy_from_slice(&20u32.to_ne_bytes());
    req[4..6].copy_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET).to_ne_bytes());
    req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req[8..12].copy_from_slice(&seq.to_ne_bytes());
    req
}

/// The attributes of a netlink attribute stream: (type without flags, payload).
fn attrs(mut data: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if data.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([data[0], data[1]]));
        let kind = u16::from_ne_bytes([data[2], data[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > data.len() {
            return None;
        }
        let payload = &data[4..len];
        data = data.get((len + 3) & !3..).unwrap_or(&[]);
        Some((kind, payload))
    })
}

fn be32(p: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(p.get(0..4)?.try_into().ok()?))
}

fn be16(p: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(p.get(0..2)?.try_into().ok()?))
}

struct Tuple {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    sport: u16,
    dport: u16,
}

fn decode_tuple(p: &[u8]) -> Option<Tuple> {
    let (mut src, mut dst, mut proto, mut sport, mut dport) = (None, None, None, 0, 0);
    for (kind, v) in attrs(p) {
        match kind {
            CTA_TUPLE_IP => {
                for (k, a) in attrs(v) {
                    let ip = match k {
                        CTA_IP_V4_SRC | CTA_IP_V4_DST => {
                            let o: [u8; 4] = a.get(0..4)?.try_into().ok()?;
                            IpAddr::V4(Ipv4Addr::from(o))
                        }
                        CTA_IP_V6_SRC | CTA_IP_V6_DST => {
                            let o: [u8; 16] = a.get(0..16)?.try_into().ok()?;
                            normalize_ip(IpAddr::V6(Ipv6Addr::from(o)))
                        }
                        _ => continue,
                    };
                    if matches!(k, CTA_IP_V4_SRC | CTA_IP_V6_SRC) {
                        src = Some(ip);
                    } else {
                        dst = Some(ip);
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for (k, a) in attrs(v) {
                    match k {
                        CTA_PROTO_NUM => proto = a.first().copied(),
                        CTA_PROTO_SRC_PORT => sport = be16(a)?,
                        CTA_PROTO_DST_PORT => dport = be16(a)?,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(Tuple {
        src: src?,
        dst: dst?,
        proto: proto?,
        sport,
        dport,
    })
}

/// Decodes one IPCTNL_MSG_CT_NEW payload (nfgenmsg + attributes) when its status has
/// IPS_SRC_NAT; `None` for other entries and malformed ones.
pub fn decode_entry(p: &[u8]) -> Option<NatEntry> {
    let body = p.get(NFGENMSG_LEN..)?;
    let (mut orig, mut reply, mut status, mut info, mut timeout) = (None, None, None, None, None);
    for (kind, v) in attrs(body) {
        match kind {
            CTA_TUPLE_ORIG => orig = Some(v),
            CTA_TUPLE_REPLY => reply = Some(v),
            CTA_STATUS => status = be32(v),
            CTA_PROTOINFO => info = Some(v),
            CTA_TIMEOUT => timeout = be32(v),
            _ => {}
        }
    }
    if status? & IPS_SRC_NAT == 0 {
        return None;
    }
    let o = decode_tuple(orig?)?;
    let r = decode_tuple(reply?)?;
    let tcp_state = info.and_then(|i| {
        let tcp = attrs(i).find(|&(k, _)| k == CTA_PROTOINFO_TCP)?.1;
        let state = attrs(tcp).find(|&(k, _)| k == CTA_PROTOINFO_TCP_STATE)?.1;
        CtTcpState::from_kernel(*state.first()?)
    });
    Some(NatEntry {
        proto: o.proto,
        tcp_state,
        src_ip: o.src,
        src_port: o.sport,
        // The tuple the NAT keeps unique is the reply tuple: the remote that answers (after any
        // DNAT, e.g. a Service VIP to its pod, this is the real endpoint) and the NAT address
        // and port it answers to.
        remote_ip: r.src,
        remote_port: r.sport,
        nat_ip: r.dst,
        nat_port: r.dport,
        timeout_s: timeout,
    })
}

/// Parses /proc/net/stat/nf_conntrack (a header of names, then one line of hex values per
/// CPU) into the sums. `None` when the text has no header or no CPU line.
pub fn parse_stat(text: &str) -> Option<ConntrackStats> {
    let mut lines = text.lines();
    let names: Vec<&str> = lines.next()?.split_whitespace().collect();
    let mut s = ConntrackStats::default();
    let mut cpus = 0;
    for line in lines {
        let values: Vec<&str> = line.split_whitespace().collect();
        if values.len() != names.len() {
            continue;
        }
        cpus += 1;
        for (name, v) in names.iter().zip(values) {
            let Ok(v) = u64::from_str_radix(v, 16) else {
                continue;
            };
            let slot = match *name {
                "found" => &mut s.found,
                "invalid" => &mut s.invalid,
                "insert" => &mut s.insert,
                "insert_failed" => &mut s.insert_failed,
                "drop" => &mut s.drop,
                "early_drop" => &mut s.early_drop,
                "search_restart" => &mut s.search_restart,
                "clashres" => &mut s.clash_resolve,
                _ => continue,
            };
            *slot += v;
        }
    }
    (cpus > 0).then_some(s)
}

/// How long a namespace's NAT rules are reused: `top` and `serve` collect every second or
/// scrape, and a large ruleset (kube-proxy's) takes long to list, while NAT rules change rarely.
const RULES_TTL: std::time::Duration = std::time::Duration::from_secs(30);

type RulesCache = Option<
    rustc_hash::FxHashMap<
        crate::snapshot::NetnsId,
        (std::time::Instant, Vec<NatRule>, Option<String>),
    >,
>;
static RULES: std::sync::Mutex<RulesCache> = std::sync::Mutex::new(None);

/// [`read_rules`], reused for [`RULES_TTL`] per namespace (`serve -A` visits many); notes only
/// when read.
fn cached_rules(notes: &mut Vec<String>) -> (Vec<NatRule>, Option<String>) {
    let Some(here) = super::netns::current_id() else {
        return read_rules(notes);
    };
    let lock = || {
        RULES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    if let Some((at, rules, source)) = lock().as_ref().and_then(|c| c.get(&here)) {
        if at.elapsed() < RULES_TTL {
            return (rules.clone(), source.clone());
        }
    }
    // Not under the lock: listing a ruleset runs a program.
    let (rules, source) = read_rules(notes);
    let mut guard = lock();
    let cache = guard.get_or_insert_with(rustc_hash::FxHashMap::default);
    cache.retain(|_, (at, _, _)| at.elapsed() < RULES_TTL);
    cache.insert(
        here,
        (std::time::Instant::now(), rules.clone(), source.clone()),
    );
    (rules, source)
}

/// The NAT rules: nftables' JSON first; iptables-save for rules that nft shows only as `xt`
/// targets (iptables-nft) or when nft is absent or shows no NAT rule.
fn read_rules(notes: &mut Vec<String>) -> (Vec<NatRule>, Option<String>) {
    let mut sources = Vec::new();
    let mut rules = Vec::new();
    let mut want_iptables = true;
    if let Some(text) = run(&["nft", "-j", "list", "ruleset"]) {
        match parse_nft_json(&text) {
            Some((r, xt)) => {
                want_iptables = xt || r.is_empty();
                rules = r;
                sources.push("nft -j list ruleset");
            }
            None => notes.push(
                "`nft -j list ruleset` printed no JSON ruleset; NAT ranges from iptables-save only"
                    .into(),
            ),
        }
    }
    if want_iptables {
        if let Some(text) = run(&["iptables-save", "-t", "nat"]) {
            rules.extend(parse_iptables_save(&text, "iptables"));
            sources.push("iptables-save -t nat");
        }
    }
    let source = (!sources.is_empty()).then(|| sources.join(" + "));
    if source.is_none() {
        notes.push("neither `nft` nor `iptables-save` could be run: the NAT port range is the kernel's default, not read from the rules".into());
    }
    (rules, source)
}

/// Runs a ruleset listing in this thread's namespace (the child inherits it); `None` when it
/// cannot run or fails.
fn run(argv: &[&str]) -> Option<String> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn proto_number(name: &str) -> Option<u8> {
    match name {
        "tcp" | "6" => Some(6),
        "udp" | "17" => Some(17),
        "sctp" | "132" => Some(132),
        "icmp" | "1" => Some(1),
        _ => None,
    }
}

fn port_range_json(v: &Value) -> Option<PortRange> {
    if let Some(p) = v.as_u64() {
        let p = u16::try_from(p).ok()?;
        return PortRange::new(p, p);
    }
    let r = v.get("range")?.as_array()?;
    let lo = u16::try_from(r.first()?.as_u64()?).ok()?;
    let hi = u16::try_from(r.get(1)?.as_u64()?).ok()?;
    PortRange::new(lo, hi)
}

fn flags_json(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|f| f.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// Source-NAT rules in `nft -j list ruleset` output, and whether some rule uses an iptables
/// `xt` MASQUERADE/SNAT target (whose options nft does not show). `None`: not nft JSON.
pub fn parse_nft_json(text: &str) -> Option<(Vec<NatRule>, bool)> {
    let doc: Value = serde_json::from_str(text).ok()?;
    let items = doc.get("nftables")?.as_array()?;
    let mut rules = Vec::new();
    let mut xt = false;
    for rule in items.iter().filter_map(|i| i.get("rule")) {
        let Some(exprs) = rule.get("expr").and_then(Value::as_array) else {
            continue;
        };
        let mut proto = None;
        for e in exprs {
            if let Some(m) = e.get("match") {
                let left = m.get("left");
                let is_l4 = left
                    .and_then(|l| l.get("meta"))
                    .and_then(|m| m.get("key"))
                    .and_then(Value::as_str)
                    == Some("l4proto")
                    || left
                        .and_then(|l| l.get("payload"))
                        .and_then(|p| p.get("field"))
                        .and_then(Value::as_str)
                        .is_some_and(|f| f == "protocol" || f == "nexthdr");
                if is_l4 && m.get("op").and_then(Value::as_str) == Some("==") {
                    proto = m
                        .get("right")
                        .and_then(|r| {
                            r.as_str()
                                .map(str::to_string)
                                .or(r.as_u64().map(|n| n.to_string()))
                        })
                        .and_then(|r| proto_number(&r));
                }
            }
            if let Some(x) = e.get("xt") {
                if matches!(
                    x.get("name").and_then(Value::as_str),
                    Some("MASQUERADE" | "SNAT")
                ) {
                    xt = true;
                }
            }
            let (kind, body) = if let Some(b) = e.get("masquerade") {
                (NatKind::Masquerade, b)
            } else if let Some(b) = e.get("snat") {
                (NatKind::Snat, b)
            } else {
                continue;
            };
            let flags = flags_json(body.get("flags"));
            rules.push(NatRule {
                kind,
                proto,
                ports: body.get("port").and_then(port_range_json),
                addr: body.get("addr").map(|a| match a {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                }),
                random: flags.iter().any(|f| f == "random"),
                fully_random: flags.iter().any(|f| f == "fully-random"),
                origin: "nftables".into(),
            });
        }
    }
    Some((rules, xt))
}

fn parse_ports(text: &str) -> Option<PortRange> {
    let (lo, hi) = text.split_once('-').unwrap_or((text, text));
    PortRange::new(lo.parse().ok()?, hi.parse().ok()?)
}

/// MASQUERADE and SNAT rules in `iptables-save -t nat` output.
pub fn parse_iptables_save(text: &str, origin: &str) -> Vec<NatRule> {
    let mut rules = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("-A ")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let arg = |flag: &str| {
            words
                .iter()
                .position(|w| *w == flag)
                .and_then(|i| words.get(i + 1).copied())
        };
        let kind = match arg("-j") {
            Some("MASQUERADE") => NatKind::Masquerade,
            Some("SNAT") => NatKind::Snat,
            _ => continue,
        };
        let (addr, ports) = match kind {
            NatKind::Masquerade => (None, arg("--to-ports").and_then(parse_ports)),
            NatKind::Snat => {
                let to = arg("--to-source").unwrap_or("");
                // ADDR[-ADDR][:PORT[-PORT]]; IPv6 as [ADDR]:PORT.
                let (a, p) = if let Some(rest) = to.strip_prefix('[') {
                    let (a, tail) = rest.split_once(']').unwrap_or((rest, ""));
                    (a, tail.strip_prefix(':'))
                } else if to.matches(':').count() == 1 {
                    to.split_once(':').map_or((to, None), |(a, p)| (a, Some(p)))
                } else {
                    (to, None)
                };
                (
                    (!a.is_empty()).then(|| a.to_string()),
                    p.and_then(parse_ports),
                )
            }
        };
        rules.push(NatRule {
            kind,
            proto: arg("-p").and_then(proto_number),
            ports,
            addr,
            random: words.contains(&"--random"),
            fully_random: words.contains(&"--random-fully"),
            origin: origin.to_string(),
        });
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nla(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(payload);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    fn tuple(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut ip = nla(CTA_IP_V4_SRC, &src);
        ip.extend(nla(CTA_IP_V4_DST, &dst));
        let mut proto = nla(CTA_PROTO_NUM, &[6]);
        proto.extend(nla(CTA_PROTO_SRC_PORT, &sport.to_be_bytes()));
        proto.extend(nla(CTA_PROTO_DST_PORT, &dport.to_be_bytes()));
        let mut t = nla(CTA_TUPLE_IP | 0x8000, &ip);
        t.extend(nla(CTA_TUPLE_PROTO | 0x8000, &proto));
        t
    }

    fn entry(status: u32) -> Vec<u8> {
        entry_to(status, [10, 9, 2, 2], 8080)
    }

    /// An entry whose client dialled DST:DPORT (a Service VIP when it differs from the
    /// endpoint 10.9.2.2:8080 that answers).
    fn entry_to(status: u32, dst: [u8; 4], dport: u16) -> Vec<u8> {
        let mut p = vec![2, 0, 0, 0];
        p.extend(nla(
            CTA_TUPLE_ORIG | 0x8000,
            &tuple([10, 9, 1, 2], dst, 36898, dport),
        ));
        p.extend(nla(
            CTA_TUPLE_REPLY | 0x8000,
            &tuple([10, 9, 2, 2], [10, 9, 2, 1], 8080, 40015),
        ));
        p.extend(nla(CTA_STATUS, &status.to_be_bytes()));
        p.extend(nla(CTA_TIMEOUT, &431_996u32.to_be_bytes()));
        let tcp = nla(
            CTA_PROTOINFO_TCP | 0x8000,
            &nla(CTA_PROTOINFO_TCP_STATE, &[3]),
        );
        p.extend(nla(CTA_PROTOINFO | 0x8000, &tcp));
        p
    }

    #[test]
    fn decodes_a_source_nated_entry() {
        let e = decode_entry(&entry(0x19e)).unwrap();
        assert_eq!(e.proto, 6);
        assert_eq!(e.tcp_state, Some(CtTcpState::Established));
        assert_eq!(e.src_ip, "10.9.1.2".parse::<IpAddr>().unwrap());
        assert_eq!(
            (e.remote_ip.to_string(), e.remote_port),
            ("10.9.2.2".into(), 8080)
        );
        assert_eq!(
            (e.nat_ip.to_string(), e.nat_port),
            ("10.9.2.1".into(), 40015)
        );
        assert_eq!(e.timeout_s, Some(431_996));
    }

    #[test]
    fn decodes_ipv6_tuples() {
        let v6 = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap().octets();
        let t = |src: &str, dst: &str, sport: u16, dport: u16| {
            let mut ip = nla(CTA_IP_V6_SRC, &v6(src));
            ip.extend(nla(CTA_IP_V6_DST, &v6(dst)));
            let mut proto = nla(CTA_PROTO_NUM, &[17]);
            proto.extend(nla(CTA_PROTO_SRC_PORT, &sport.to_be_bytes()));
            proto.extend(nla(CTA_PROTO_DST_PORT, &dport.to_be_bytes()));
            let mut t = nla(CTA_TUPLE_IP | 0x8000, &ip);
            t.extend(nla(CTA_TUPLE_PROTO | 0x8000, &proto));
            t
        };
        let mut p = vec![10, 0, 0, 0];
        p.extend(nla(
            CTA_TUPLE_ORIG | 0x8000,
            &t("fd00::2", "2001:db8::9", 5353, 53),
        ));
        p.extend(nla(
            CTA_TUPLE_REPLY | 0x8000,
            &t("2001:db8::9", "2001:db8::1", 53, 61000),
        ));
        p.extend(nla(CTA_STATUS, &(IPS_SRC_NAT | 0x8).to_be_bytes()));
        let e = decode_entry(&p).unwrap();
        assert_eq!((e.proto, e.tcp_state, e.timeout_s), (17, None, None));
        assert_eq!(e.src_ip.to_string(), "fd00::2");
        assert_eq!(
            (e.remote_ip.to_string(), e.remote_port),
            ("2001:db8::9".into(), 53)
        );
        assert_eq!(
            (e.nat_ip.to_string(), e.nat_port),
            ("2001:db8::1".into(), 61000)
        );
    }

    #[test]
    fn after_dnat_the_pool_is_the_endpoint_that_answers() {
        // kube-proxy: the client dialled 10.96.0.10:443; DNAT sent it to 10.9.2.2:8080, SNAT
        // gave it 10.9.2.1:40015. The NAT keeps (10.9.2.1:40015, 10.9.2.2:8080) unique.
        let e = decode_entry(&entry_to(0x1be, [10, 96, 0, 10], 443)).unwrap();
        assert_eq!(
            (e.remote_ip.to_string(), e.remote_port),
            ("10.9.2.2".into(), 8080)
        );
    }

    #[test]
    fn skips_entries_without_source_nat_and_truncated_ones() {
        assert!(decode_entry(&entry(0x0e)).is_none());
        assert!(decode_entry(&[2, 0]).is_none());
        let mut cut = entry(0x19e);
        cut.truncate(30);
        assert!(decode_entry(&cut).is_none());
    }

    #[test]
    fn stat_file_is_summed_over_cpus() {
        let text = "entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart\n\
00000014  00000001 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000014 00000014 00000000 00000000  00000000 00000000 00000000 00000002\n\
00000014  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 0000000a 0000000b 00000003 00000000  00000000 00000000 00000000 00000000\n";
        let s = parse_stat(text).unwrap();
        assert_eq!(s.insert_failed, 30);
        assert_eq!(s.drop, 31);
        assert_eq!(s.early_drop, 3);
        assert_eq!(s.clash_resolve, 1);
        assert_eq!(s.search_restart, 2);
        assert!(parse_stat("").is_none());
    }

    #[test]
    fn nft_masquerade_and_snat_ranges() {
        let text = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
 {"rule": {"family": "ip", "table": "t", "chain": "post", "handle": 2, "expr": [
   {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}},
   {"masquerade": {"port": {"range": [40000, 40099]}}}]}},
 {"rule": {"family": "ip", "table": "t", "chain": "post", "handle": 3, "expr": [
   {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "protocol"}}, "right": "udp"}},
   {"snat": {"addr": "192.0.2.1", "port": {"range": [1024, 2047]}, "flags": ["random", "fully-random"]}}]}},
 {"rule": {"family": "ip", "table": "t", "chain": "post", "handle": 4, "expr": [
   {"masquerade": {"flags": "fully-random"}}]}},
 {"rule": {"family": "ip", "table": "nat", "chain": "POSTROUTING", "handle": 5, "expr": [
   {"counter": {"packets": 0, "bytes": 0}}, {"xt": {"type": "target", "name": "MASQUERADE"}}]}}]}"#;
        let (rules, xt) = parse_nft_json(text).unwrap();
        assert!(xt);
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[0].kind, NatKind::Masquerade);
        assert_eq!(rules[0].proto, Some(6));
        assert_eq!(rules[0].ports, PortRange::new(40000, 40099));
        assert!(!rules[0].fully_random);
        assert_eq!(rules[1].kind, NatKind::Snat);
        assert_eq!(rules[1].proto, Some(17));
        assert_eq!(rules[1].addr.as_deref(), Some("192.0.2.1"));
        assert!(rules[1].random && rules[1].fully_random);
        assert_eq!(rules[2].ports, None);
        assert!(rules[2].fully_random && !rules[2].random);
        assert!(parse_nft_json("not json").is_none());
    }

    #[test]
    fn iptables_save_masquerade_and_snat() {
        let text = "*nat\n:POSTROUTING ACCEPT [0:0]\n\
-A POSTROUTING -o eth0 -p tcp -j MASQUERADE --to-ports 41000-41099 --random-fully\n\
-A POSTROUTING -s 10.0.0.0/8 -j SNAT --to-source 192.0.2.7:2000-2999 --random\n\
-A POSTROUTING -j SNAT --to-source 192.0.2.8\n\
-A POSTROUTING -j ACCEPT\nCOMMIT\n";
        let rules = parse_iptables_save(text, "iptables");
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[0].ports, PortRange::new(41000, 41099));
        assert_eq!(rules[0].proto, Some(6));
        assert!(rules[0].fully_random);
        assert_eq!(rules[1].addr.as_deref(), Some("192.0.2.7"));
        assert_eq!(rules[1].ports, PortRange::new(2000, 2999));
        assert!(rules[1].random && !rules[1].fully_random);
        assert_eq!(rules[2].addr.as_deref(), Some("192.0.2.8"));
        assert_eq!(rules[2].ports, None);
    }
}
