//! Failed connect() and bind() calls, counted from kernel tracepoints: the pure half. The
//! tracer in `linux::failures` reads raw tracepoint samples from perf ring buffers; this module
//! parses the tracefs `format` files, decodes the samples, pairs each socket event with the
//! errno its syscall returned, and adds the failures up per (process, namespace, pool, error).
//!
//! The signature (issue 14, measured on Linux 6.18): a connect() that finds no free port moves
//! its socket from SYN_SENT to CLOSE with source port 0, firing `sock:inet_sock_set_state`
//! (`sport == 0 && newstate == 7`) in the calling task; the same thread's
//! `syscalls:sys_exit_connect` then returns -99 (EADDRNOTAVAIL). The pair is counted; either
//! half alone is not. bind() failures are `syscalls:sys_exit_bind` with -98 (EADDRINUSE).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rustc_hash::FxHashMap;

use crate::snapshot::{ConnectFailures, FailureCount, FailureError, NetnsId};

/// `TCP_CLOSE` in `inet_sock_set_state`'s `newstate`.
pub const TCP_CLOSE: i64 = 7;
pub const EADDRNOTAVAIL: i64 = 99;
pub const EADDRINUSE: i64 = 98;
const AF_INET: u64 = 2;
const AF_INET6: u64 = 10;
const IPPROTO_TCP: u64 = 6;

/// A socket event and its syscall's exit are paired only this close in time (ns).
const PAIR_WINDOW_NS: u64 = 1_000_000_000;

/// One field of a tracepoint record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub offset: usize,
    pub size: usize,
    pub signed: bool,
}

/// A tracefs `events/<group>/<name>/format` file: the tracepoint id and where each field is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pub id: u64,
    pub fields: BTreeMap<String, Field>,
}

/// Why a `format` file could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("no `ID:` line")]
    NoId,
    #[error("field `{0}` is missing")]
    MissingField(&'static str),
}

/// Parses a tracefs `format` file (its `ID:` and `field:` lines).
pub fn parse_format(text: &str) -> Result<Format, FormatError> {
    let mut id = None;
    let mut fields = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix("ID:") {
            id = v.trim().parse().ok();
            continue;
        }
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let mut decl = None;
        let (mut offset, mut size, mut signed) = (None, None, false);
        for (i, part) in rest.split(';').map(str::trim).enumerate() {
            if i == 0 {
                decl = Some(part);
            } else if let Some(v) = part.strip_prefix("offset:") {
                offset = v.parse().ok();
            } else if let Some(v) = part.strip_prefix("size:") {
                size = v.parse().ok();
            } else if let Some(v) = part.strip_prefix("signed:") {
                signed = v == "1";
            }
        }
        let (Some(decl), Some(offset), Some(size)) = (decl, offset, size) else {
            continue;
        };
        // "const void * skaddr", "__u8 saddr[4]", "char comm[16]": the last word, no [..].
        let Some(name) = decl.rsplit([' ', '*']).next() else {
            continue;
        };
        let name = name.split('[').next().unwrap_or(name);
        fields.insert(
            name.to_string(),
            Field {
                offset,
                size,
                signed,
            },
        );
    }
    Ok(Format {
        id: id.ok_or(FormatError::NoId)?,
        fields,
    })
}

impl Format {
    fn field(&self, name: &'static str) -> Result<Field, FormatError> {
        self.fields
            .get(name)
            .copied()
            .ok_or(FormatError::MissingField(name))
    }
}

impl Field {
    fn bytes<'a>(&self, data: &'a [u8]) -> Option<&'a [u8]> {
        data.get(self.offset..self.offset.checked_add(self.size)?)
    }

    /// The field as an integer (little- or big-endian as the host, sign-extended if signed).
    fn int(&self, data: &[u8]) -> Option<i64> {
        let b = self.bytes(data)?;
        Some(match (self.size, self.signed) {
            (1, false) => i64::from(b[0]),
            (1, true) => i64::from(b[0] as i8),
            (2, false) => i64::from(u16::from_ne_bytes(b.try_into().ok()?)),
            (2, true) => i64::from(i16::from_ne_bytes(b.try_into().ok()?)),
            (4, false) => i64::from(u32::from_ne_bytes(b.try_into().ok()?)),
            (4, true) => i64::from(i32::from_ne_bytes(b.try_into().ok()?)),
            (8, _) => i64::from_ne_bytes(b.try_into().ok()?),
            _ => return None,
        })
    }
}

/// Where the fields the tracer needs are, from the four `format` files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layouts {
    pub state: StateLayout,
    pub connect_exit: ExitLayout,
    pub bind_exit: ExitLayout,
    pub process_exit: ProcessExitLayout,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateLayout {
    pub id: u64,
    newstate: Field,
    sport: Field,
    dport: Field,
    family: Field,
    protocol: Field,
    saddr: Field,
    daddr: Field,
    saddr_v6: Field,
    daddr_v6: Field,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitLayout {
    pub id: u64,
    ret: Field,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessExitLayout {
    pub id: u64,
    comm: Field,
}

impl StateLayout {
    pub fn new(f: &Format) -> Result<Self, FormatError> {
        Ok(Self {
            id: f.id,
            newstate: f.field("newstate")?,
            sport: f.field("sport")?,
            dport: f.field("dport")?,
            family: f.field("family")?,
            protocol: f.field("protocol")?,
            saddr: f.field("saddr")?,
            daddr: f.field("daddr")?,
            saddr_v6: f.field("saddr_v6")?,
            daddr_v6: f.field("daddr_v6")?,
        })
    }
}

impl ExitLayout {
    pub fn new(f: &Format) -> Result<Self, FormatError> {
        Ok(Self {
            id: f.id,
            ret: f.field("ret")?,
        })
    }
}

impl ProcessExitLayout {
    pub fn new(f: &Format) -> Result<Self, FormatError> {
        Ok(Self {
            id: f.id,
            comm: f.field("comm")?,
        })
    }
}

/// The kernel-side filters (tracefs filter syntax), one per tracepoint: only the failures
/// reach the ring buffer.
pub const STATE_FILTER: &str = "sport == 0 && newstate == 7";
pub const CONNECT_EXIT_FILTER: &str = "ret == -99";
pub const BIND_EXIT_FILTER: &str = "ret == -98";
pub const PROCESS_EXIT_FILTER: &str = "group_dead == 1";

/// A sample as the ring buffer holds it (`PERF_SAMPLE_TID | PERF_SAMPLE_TIME | PERF_SAMPLE_RAW`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawSample {
    pub pid: u32,
    pub tid: u32,
    pub time_ns: u64,
    pub data: Vec<u8>,
}

/// A decoded sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A TCP socket closed from a connect with no source port (a failed port search).
    PortlessClose {
        pid: u32,
        tid: u32,
        time_ns: u64,
        local_ip: Option<IpAddr>,
        remote_ip: IpAddr,
        remote_port: u16,
    },
    /// connect() or bind() returned `error`.
    SyscallFailed {
        pid: u32,
        tid: u32,
        time_ns: u64,
        error: FailureError,
    },
    /// A process (its last thread) exited.
    ProcessExit { pid: u32, comm: String },
}

impl Layouts {
    /// Decodes one sample; `None` for samples of other tracepoints or that do not match the
    /// signature (the kernel filters already, this is the second check).
    pub fn decode(&self, s: &RawSample) -> Option<Event> {
        let common_type = u16::from_ne_bytes(s.data.get(0..2)?.try_into().ok()?);
        let id = u64::from(common_type);
        if id == self.state.id {
            let l = &self.state;
            if l.newstate.int(&s.data)? != TCP_CLOSE
                || l.sport.int(&s.data)? != 0
                || l.protocol.int(&s.data)? as u64 != IPPROTO_TCP
            {
                return None;
            }
            let (local, remote) = match l.family.int(&s.data)? as u64 {
                AF_INET => (
                    IpAddr::V4(Ipv4Addr::from(
                        <[u8; 4]>::try_from(l.saddr.bytes(&s.data)?).ok()?,
                    )),
                    IpAddr::V4(Ipv4Addr::from(
                        <[u8; 4]>::try_from(l.daddr.bytes(&s.data)?).ok()?,
                    )),
                ),
                AF_INET6 => (
                    IpAddr::V6(Ipv6Addr::from(
                        <[u8; 16]>::try_from(l.saddr_v6.bytes(&s.data)?).ok()?,
                    )),
                    IpAddr::V6(Ipv6Addr::from(
                        <[u8; 16]>::try_from(l.daddr_v6.bytes(&s.data)?).ok()?,
                    )),
                ),
                _ => return None,
            };
            return Some(Event::PortlessClose {
                pid: s.pid,
                tid: s.tid,
                time_ns: s.time_ns,
                local_ip: (!local.is_unspecified()).then_some(local),
                remote_ip: remote,
                remote_port: u16::try_from(l.dport.int(&s.data)?).ok()?,
            });
        }
        for (layout, errno, error) in [
            (
                &self.connect_exit,
                EADDRNOTAVAIL,
                FailureError::AddrNotAvail,
            ),
            (&self.bind_exit, EADDRINUSE, FailureError::AddrInUse),
        ] {
            if id == layout.id {
                return (layout.ret.int(&s.data)? == -errno).then_some(Event::SyscallFailed {
                    pid: s.pid,
                    tid: s.tid,
                    time_ns: s.time_ns,
                    error,
                });
            }
        }
        if id == self.process_exit.id {
            let comm = self.process_exit.comm.bytes(&s.data)?;
            let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
            return Some(Event::ProcessExit {
                pid: s.pid,
                comm: String::from_utf8_lossy(&comm[..end]).into_owned(),
            });
        }
        None
    }
}

/// One counted failure, before its process is looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub pid: u32,
    pub time_ns: u64,
    pub error: FailureError,
    pub local_ip: Option<IpAddr>,
    pub remote_ip: Option<IpAddr>,
    pub remote_port: Option<u16>,
}

/// Pairs each port-less close with its thread's connect() exit (either may be read first:
/// they can sit in different CPUs' buffers). Feed events in time order per drain.
#[derive(Debug, Default)]
pub struct Correlator {
    closes: FxHashMap<u32, (u64, Option<IpAddr>, IpAddr, u16)>,
    exits: FxHashMap<u32, (u32, u64)>,
    /// Processes that exited, with their command name, since the last `take_exits`.
    exited: Vec<(u32, String)>,
}

impl Correlator {
    /// Takes one event; returns the failure it completes, if any.
    pub fn push(&mut self, e: Event) -> Option<Failure> {
        match e {
            Event::PortlessClose {
                pid: _,
                tid,
                time_ns,
                local_ip,
                remote_ip,
                remote_port,
            } => {
                if let Some((epid, t)) = self.exits.remove(&tid) {
                    if t >= time_ns && t - time_ns <= PAIR_WINDOW_NS {
                        return Some(Failure {
                            pid: epid,
                            time_ns: t,
                            error: FailureError::AddrNotAvail,
                            local_ip,
                            remote_ip: Some(remote_ip),
                            remote_port: Some(remote_port),
                        });
                    }
                }
                self.closes
                    .insert(tid, (time_ns, local_ip, remote_ip, remote_port));
                None
            }
            Event::SyscallFailed {
                pid,
                tid,
                time_ns,
                error: FailureError::AddrNotAvail,
            } => {
                if let Some((t, local_ip, remote_ip, remote_port)) = self.closes.remove(&tid) {
                    if time_ns >= t && time_ns - t <= PAIR_WINDOW_NS {
                        return Some(Failure {
                            pid,
                            time_ns,
                            error: FailureError::AddrNotAvail,
                            local_ip,
                            remote_ip: Some(remote_ip),
                            remote_port: Some(remote_port),
                        });
                    }
                }
                // EADDRNOTAVAIL without a port-less close (yet): wait for it.
                self.exits.insert(tid, (pid, time_ns));
                None
            }
            Event::SyscallFailed {
                pid,
                time_ns,
                error: FailureError::AddrInUse,
                ..
            } => Some(Failure {
                pid,
                time_ns,
                error: FailureError::AddrInUse,
                local_ip: None,
                remote_ip: None,
                remote_port: None,
            }),
            Event::ProcessExit { pid, comm } => {
                self.exited.push((pid, comm));
                None
            }
        }
    }

    /// Forgets unpaired halves older than the pairing window before `now_ns`.
    pub fn expire(&mut self, now_ns: u64) {
        let keep = |t: u64| now_ns.saturating_sub(t) <= PAIR_WINDOW_NS;
        self.closes.retain(|_, v| keep(v.0));
        self.exits.retain(|_, v| keep(v.1));
    }

    /// Processes seen exiting since the last call.
    pub fn take_exits(&mut self) -> Vec<(u32, String)> {
        std::mem::take(&mut self.exited)
    }
}

/// What is known of a failing process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    pub name: Option<String>,
    pub netns: Option<NetnsId>,
    pub exited: bool,
}

/// Adds failures up per (pid, process, exited, netns, local IP, remote IP, remote port, error).
/// `names` labels namespaces (`/run/netns` names).
pub fn aggregate(
    failures: &[Failure],
    processes: &FxHashMap<u32, ProcessInfo>,
    names: &FxHashMap<NetnsId, String>,
) -> Vec<FailureCount> {
    let mut counts: BTreeMap<FailureCount, u64> = BTreeMap::new();
    for f in failures {
        let info = processes.get(&f.pid).cloned().unwrap_or_default();
        let key = FailureCount {
            pid: Some(f.pid),
            process: info.name,
            exited: info.exited,
            netns: info.netns,
            netns_name: info.netns.and_then(|id| names.get(&id).cloned()),
            local_ip: f.local_ip,
            remote_ip: f.remote_ip,
            remote_port: f.remote_port,
            error: f.error,
            count: 0,
        };
        *counts.entry(key).or_default() += 1;
    }
    let mut out: Vec<FailureCount> = counts
        .into_iter()
        .map(|(mut k, n)| {
            k.count = n;
            k
        })
        .collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.cmp(b)));
    out
}

/// Keeps the failures of namespace `target` (all of them when it is unknown); the rest is
/// summed per namespace in `other_namespaces`, failures whose namespace could not be read
/// (the process exited first) under `unknown`.
pub fn narrow(
    all: Vec<FailureCount>,
    target: Option<NetnsId>,
) -> (Vec<FailureCount>, BTreeMap<String, u64>) {
    let mut others = BTreeMap::new();
    let Some(target) = target else {
        return (all, others);
    };
    let mut kept = Vec::new();
    for c in all {
        if c.netns == Some(target) {
            kept.push(c);
        } else {
            let label = c.netns_label().unwrap_or_else(|| "unknown".to_string());
            *others.entry(label).or_default() += c.count;
        }
    }
    (kept, others)
}

/// The report of one window.
pub fn report(
    source: &str,
    window_seconds: f64,
    all: Vec<FailureCount>,
    target: Option<NetnsId>,
    lost: u64,
) -> ConnectFailures {
    let (events, other_namespaces) = narrow(all, target);
    ConnectFailures {
        source: source.to_string(),
        window_seconds,
        events,
        other_namespaces,
        lost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATE_FORMAT: &str =
        include_str!("../../tests/fixtures/tracefs/inet_sock_set_state.format");
    const EXIT_FORMAT: &str = include_str!("../../tests/fixtures/tracefs/sys_exit_connect.format");
    const PEXIT_FORMAT: &str =
        include_str!("../../tests/fixtures/tracefs/sched_process_exit.format");

    fn layouts() -> Layouts {
        let exit = parse_format(EXIT_FORMAT).unwrap();
        let mut bind = exit.clone();
        bind.id = 2237;
        Layouts {
            state: StateLayout::new(&parse_format(STATE_FORMAT).unwrap()).unwrap(),
            connect_exit: ExitLayout::new(&exit).unwrap(),
            bind_exit: ExitLayout::new(&bind).unwrap(),
            process_exit: ProcessExitLayout::new(&parse_format(PEXIT_FORMAT).unwrap()).unwrap(),
        }
    }

    fn state_sample(tid: u32, t: u64, sport: u16, newstate: i32) -> RawSample {
        let mut d = vec![0u8; 72];
        d[0..2].copy_from_slice(&2287u16.to_ne_bytes());
        d[16..20].copy_from_slice(&2i32.to_ne_bytes());
        d[20..24].copy_from_slice(&newstate.to_ne_bytes());
        d[24..26].copy_from_slice(&sport.to_ne_bytes());
        d[26..28].copy_from_slice(&7001u16.to_ne_bytes());
        d[28..30].copy_from_slice(&2u16.to_ne_bytes());
        d[30..32].copy_from_slice(&6u16.to_ne_bytes());
        d[32..36].copy_from_slice(&[127, 0, 0, 1]);
        d[36..40].copy_from_slice(&[127, 0, 0, 3]);
        RawSample {
            pid: 100,
            tid,
            time_ns: t,
            data: d,
        }
    }

    fn exit_sample(id: u16, tid: u32, t: u64, ret: i64) -> RawSample {
        let mut d = vec![0u8; 24];
        d[0..2].copy_from_slice(&id.to_ne_bytes());
        d[16..24].copy_from_slice(&ret.to_ne_bytes());
        RawSample {
            pid: 100,
            tid,
            time_ns: t,
            data: d,
        }
    }

    #[test]
    fn parses_the_kernel_format_files() {
        let f = parse_format(STATE_FORMAT).unwrap();
        assert_eq!(f.id, 2287);
        assert_eq!(
            f.fields["saddr_v6"],
            Field {
                offset: 40,
                size: 16,
                signed: false
            }
        );
        assert_eq!(f.fields["skaddr"].offset, 8);
        let e = parse_format(EXIT_FORMAT).unwrap();
        assert!(e.fields["ret"].signed);
        assert_eq!(parse_format("field:int x;\n"), Err(FormatError::NoId));
        assert_eq!(
            StateLayout::new(&e).unwrap_err(),
            FormatError::MissingField("newstate")
        );
    }

    #[test]
    fn decodes_a_portless_close_and_ignores_other_states() {
        let l = layouts();
        assert_eq!(
            l.decode(&state_sample(5, 10, 0, 7)),
            Some(Event::PortlessClose {
                pid: 100,
                tid: 5,
                time_ns: 10,
                local_ip: Some("127.0.0.1".parse().unwrap()),
                remote_ip: "127.0.0.3".parse().unwrap(),
                remote_port: 7001,
            })
        );
        assert_eq!(l.decode(&state_sample(5, 10, 40000, 7)), None);
        assert_eq!(l.decode(&state_sample(5, 10, 0, 1)), None);
        assert_eq!(l.decode(&exit_sample(2229, 5, 11, -111)), None);
        let mut short = state_sample(5, 10, 0, 7);
        short.data.truncate(30);
        assert_eq!(l.decode(&short), None);
    }

    #[test]
    fn pairs_close_and_exit_in_either_order_and_only_on_the_same_thread() {
        let l = layouts();
        let mut c = Correlator::default();
        let ev = |s: RawSample| l.decode(&s).unwrap();
        // close then exit
        assert!(c.push(ev(state_sample(5, 10, 0, 7))).is_none());
        let f = c.push(ev(exit_sample(2229, 5, 12, -99))).unwrap();
        assert_eq!(f.error, FailureError::AddrNotAvail);
        assert_eq!(f.remote_port, Some(7001));
        // exit read first (other CPU's buffer), then the close
        assert!(c.push(ev(exit_sample(2229, 6, 22, -99))).is_none());
        assert!(c.push(ev(state_sample(6, 20, 0, 7))).is_some());
        // a close whose syscall did not return EADDRNOTAVAIL is never counted
        assert!(c.push(ev(state_sample(7, 30, 0, 7))).is_none());
        assert!(c.push(ev(exit_sample(2229, 8, 31, -99))).is_none());
        c.expire(30 + 2 * PAIR_WINDOW_NS);
        assert!(c.closes.is_empty() && c.exits.is_empty());
        // bind failures count alone
        let b = c.push(ev(exit_sample(2237, 9, 40, -98))).unwrap();
        assert_eq!(b.error, FailureError::AddrInUse);
        assert_eq!(b.remote_ip, None);
    }

    #[test]
    fn aggregates_per_process_and_pool_and_narrows_to_the_namespace() {
        let a = NetnsId { dev: 4, ino: 1 };
        let b = NetnsId { dev: 4, ino: 2 };
        let f = |pid, port| Failure {
            pid,
            time_ns: 0,
            error: FailureError::AddrNotAvail,
            local_ip: None,
            remote_ip: Some("127.0.0.3".parse().unwrap()),
            remote_port: Some(port),
        };
        let mut fails = vec![f(1, 7001); 25];
        fails.extend(vec![f(1, 7002); 5]);
        fails.extend(vec![f(2, 7001); 3]);
        let mut procs = FxHashMap::default();
        procs.insert(
            1,
            ProcessInfo {
                name: Some("client".into()),
                netns: Some(a),
                exited: false,
            },
        );
        procs.insert(
            2,
            ProcessInfo {
                name: Some("other".into()),
                netns: Some(b),
                exited: true,
            },
        );
        let mut names = FxHashMap::default();
        names.insert(b, "B".to_string());
        let all = aggregate(&fails, &procs, &names);
        assert_eq!(
            all.iter().map(|c| c.count).collect::<Vec<_>>(),
            vec![25, 5, 3]
        );
        let r = report("t", 1.0, all.clone(), Some(a), 0);
        assert_eq!(r.total(), 30);
        assert_eq!(r.other_namespaces["B"], 3);
        let r = report("t", 1.0, all, None, 0);
        assert_eq!(r.total(), 33);
        assert!(r
            .events
            .iter()
            .any(|c| c.exited && c.netns_name.as_deref() == Some("B")));
    }
}
