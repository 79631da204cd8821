//! One NETLINK_SOCK_DIAG dump per address family, decoded by hand.
//!
//! Hand decoding (instead of netlink-packet-sock-diag) keeps the hot loop allocation-free: each
//! `inet_diag_msg` is a fixed 72-byte struct that becomes one `Socket` directly. At 300k sockets
//! the kernel's table walk is ~89 % of the time; user space ~10 % (bench/results.md).
#![allow(unsafe_code)]

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::collect::CollectError;
use crate::snapshot::{normalize_ip, Socket, TcpState, UdpSocket};

const NETLINK_SOCK_DIAG: libc::c_int = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// The pre-sock_diag request type; replies carry the same type.
const TCPDIAG_GETSOCK: u16 = 18;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
pub(super) const NLM_F_REQUEST: u16 = 0x1;
pub(super) const NLM_F_DUMP: u16 = 0x300;
const NLM_F_DUMP_INTR: u16 = 0x10;
const NLMSG_HDRLEN: usize = 16;
const INET_DIAG_MSG_LEN: usize = 72;
/// Every TCP state (bits 1..=12) plus TCP_BOUND_INACTIVE (13, Linux 6.5+): sockets that hold a
/// port with `bind()` but do not listen. Older kernels ignore the extra bit.
pub const ALL_STATES: u32 = 0x3ffe;
/// Every TCP state without TCP_BOUND_INACTIVE: finding bound-only sockets walks the whole bind
/// hash table, about a quarter of a dump's cost (bench/results.md), so repeated collections
/// (`top`) ask for them less often.
pub const CONNECTION_STATES: u32 = 0x1ffe;
/// TCP_LISTEN only: the kernel then walks the listening hash alone.
pub const LISTEN_STATE: u32 = 1 << 10;
/// The kernel fills at most about 32 KiB per recv for dumps; a bit more avoids MSG_TRUNC.
pub(super) const RECV_BUF: usize = 64 * 1024;
/// How often an interrupted dump (NLM_F_DUMP_INTR: the tables changed under the walk) is retried.
pub(super) const MAX_DUMP_ATTEMPTS: u32 = 4;

/// Result of dumping both families.
pub struct Dump {
    pub sockets: Vec<Socket>,
    /// The last attempt was still interrupted; counts may be slightly off.
    pub interrupted: bool,
    pub attempts: u32,
}

/// Dumps all TCP sockets (IPv4 and IPv6) of the current network namespace.
///
/// The legacy TCPDIAG_GETSOCK request is dumped by the kernel for both families in one walk of
/// each hash table; two SOCK_DIAG_BY_FAMILY requests walk everything twice (measured: −31 %
/// wall time at 300k sockets, bench/results.md). Kernels that refuse the legacy request get the
/// per-family pair, as `ss` does the other way round.
pub fn dump_tcp() -> Result<Dump, CollectError> {
    dump_tcp_with(true, ALL_STATES)
}

/// Like [`dump_tcp`], for the sockets in `states` only (a bit mask, 1 << TCP state).
pub fn dump_tcp_states(states: u32) -> Result<Dump, CollectError> {
    dump_tcp_with(true, states)
}

/// Only the two SOCK_DIAG_BY_FAMILY requests (the fallback path), for tests and comparisons.
pub fn dump_tcp_per_family() -> Result<Dump, CollectError> {
    dump_tcp_with(false, ALL_STATES)
}

fn dump_tcp_with(legacy_first: bool, states: u32) -> Result<Dump, CollectError> {
    let sock = open()?;
    let mut buf = vec![0u8; RECV_BUF];
    let mut attempts = 0;
    let mut legacy = legacy_first;
    loop {
        attempts += 1;
        let mut sockets = Vec::with_capacity(1024);
        let seq = attempts * 4;
        let interrupted = if legacy {
            match dump_one(
                &sock,
                &legacy_request(seq, states),
                seq,
                &mut buf,
                &mut sockets,
            ) {
                Ok(intr) => intr,
                Err(CollectError::Netlink(e)) if legacy_unsupported(&e) => {
                    legacy = false;
                    sockets.clear();
                    dump_by_family(&sock, seq, states, &mut buf, &mut sockets)?
                }
                Err(e) => return Err(e),
            }
        } else {
            dump_by_family(&sock, seq, states, &mut buf, &mut sockets)?
        };
        if !interrupted || attempts >= MAX_DUMP_ATTEMPTS {
            return Ok(Dump {
                sockets,
                interrupted,
                attempts,
            });
        }
    }
}

fn legacy_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::ENOENT | libc::EOPNOTSUPP | libc::EPROTONOSUPPORT)
    )
}

fn dump_by_family(
    sock: &OwnedFd,
    seq: u32,
    states: u32,
    buf: &mut [u8],
    out: &mut Vec<Socket>,
) -> Result<bool, CollectError> {
    let mut interrupted = false;
    for (i, family) in [libc::AF_INET as u8, libc::AF_INET6 as u8]
        .into_iter()
        .enumerate()
    {
        let seq = seq + 1 + i as u32;
        interrupted |= dump_one(sock, &request(family, seq, states), seq, buf, out)?;
    }
    Ok(interrupted)
}

fn open() -> Result<OwnedFd, CollectError> {
    open_protocol(NETLINK_SOCK_DIAG)
}

/// A netlink socket of `protocol` (NETLINK_SOCK_DIAG, NETLINK_NETFILTER) in this thread's
/// network namespace.
pub(super) fn open_protocol(protocol: libc::c_int) -> Result<OwnedFd, CollectError> {
    // SAFETY: plain socket(2) call; the returned descriptor is checked and owned right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            protocol,
        )
    };
    if fd < 0 {
        return Err(CollectError::Netlink(io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Builds the 72-byte request: nlmsghdr + inet_diag_req_v2 with a zero socket id.
fn request(family: u8, seq: u32, states: u32) -> [u8; 72] {
    request_for(family, libc::IPPROTO_TCP as u8, seq, states)
}

fn request_for(family: u8, protocol: u8, seq: u32, states: u32) -> [u8; 72] {
    let mut req = [0u8; 72];
    req[0..4].copy_from_slice(&72u32.to_ne_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req[8..12].copy_from_slice(&seq.to_ne_bytes());
    // inet_diag_req_v2: family, protocol, ext, pad, states, then inet_diag_sockid (zeros).
    req[16] = family;
    req[17] = protocol;
    req[20..24].copy_from_slice(&states.to_ne_bytes());
    req
}

/// Builds the 76-byte legacy request: nlmsghdr (type TCPDIAG_GETSOCK) + `struct inet_diag_req`
/// (family, src_len, dst_len, ext, a zero socket id, states, dbs). The kernel dumps it with
/// family AF_UNSPEC, i.e. IPv4 and IPv6 together.
fn legacy_request(seq: u32, states: u32) -> [u8; 76] {
    let mut req = [0u8; 76];
    req[0..4].copy_from_slice(&76u32.to_ne_bytes());
    req[4..6].copy_from_slice(&TCPDIAG_GETSOCK.to_ne_bytes());
    req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req[8..12].copy_from_slice(&seq.to_ne_bytes());
    req[16] = libc::AF_INET as u8;
    req[68..72].copy_from_slice(&states.to_ne_bytes());
    req
}

/// Sends one dump request and decodes replies until NLMSG_DONE. Returns whether the kernel
/// flagged the dump as interrupted.
fn dump_one(
    sock: &OwnedFd,
    req: &[u8],
    seq: u32,
    buf: &mut [u8],
    out: &mut Vec<Socket>,
) -> Result<bool, CollectError> {
    dump_messages(sock, req, seq, buf, &mut |kind, payload| {
        if matches!(kind, SOCK_DIAG_BY_FAMILY | TCPDIAG_GETSOCK) {
            if let Some(s) = decode_inet_diag_msg(payload) {
                out.push(s);
            }
        }
    })
}

/// Sends one dump request and hands each reply message of this `seq` (type, payload) to
/// `on_msg` until NLMSG_DONE. Returns whether the kernel flagged the dump as interrupted
/// (NLM_F_DUMP_INTR). Shared by the sock_diag and the conntrack dumps.
pub(super) fn dump_messages(
    sock: &OwnedFd,
    req: &[u8],
    seq: u32,
    buf: &mut [u8],
    on_msg: &mut dyn FnMut(u16, &[u8]),
) -> Result<bool, CollectError> {
    // SAFETY: req is a live buffer of req.len() bytes; a null address sends to the kernel.
    let sent = unsafe { libc::send(sock.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
    if sent < 0 {
        return Err(CollectError::Netlink(io::Error::last_os_error()));
    }
    let mut interrupted = false;
    loop {
        // SAFETY: buf is a live, writable buffer of buf.len() bytes.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(CollectError::Netlink(err));
        }
        let n = n as usize;
        if n == 0 {
            return Err(CollectError::NetlinkProtocol(
                "dump ended without NLMSG_DONE".into(),
            ));
        }
        match decode_batch(&buf[..n], seq, on_msg)? {
            Batch::More { intr } => interrupted |= intr,
            Batch::Done { intr } => return Ok(interrupted | intr),
        }
    }
}

enum Batch {
    More { intr: bool },
    Done { intr: bool },
}

/// Decodes one recv()'d datagram holding one or more netlink messages.
fn decode_batch(
    mut data: &[u8],
    seq: u32,
    on_msg: &mut dyn FnMut(u16, &[u8]),
) -> Result<Batch, CollectError> {
    let mut intr = false;
    while data.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
        let kind = u16::from_ne_bytes([data[4], data[5]]);
        let flags = u16::from_ne_bytes([data[6], data[7]]);
        let msg_seq = u32::from_ne_bytes([data[8], data[9], data[10], data[11]]);
        if len < NLMSG_HDRLEN || len > data.len() {
            return Err(CollectError::NetlinkProtocol(format!(
                "bad message length {len} with {} bytes left",
                data.len()
            )));
        }
        intr |= flags & NLM_F_DUMP_INTR != 0;
        let payload = &data[NLMSG_HDRLEN..len];
        if msg_seq == seq {
            match kind {
                NLMSG_DONE => return Ok(Batch::Done { intr }),
                NLMSG_ERROR => {
                    let code = payload
                        .get(0..4)
                        .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                    if code != 0 {
                        return Err(CollectError::Netlink(io::Error::from_raw_os_error(-code)));
                    }
                }
                _ => on_msg(kind, payload),
            }
        }
        // Messages are 4-byte aligned.
        let step = (len + 3) & !3;
        data = data.get(step..).unwrap_or(&[]);
    }
    Ok(Batch::More { intr })
}

/// Decodes `struct inet_diag_msg`. Returns `None` for a truncated message or an unknown state.
pub fn decode_inet_diag_msg(p: &[u8]) -> Option<Socket> {
    if p.len() < INET_DIAG_MSG_LEN {
        return None;
    }
    let family = p[0];
    let state = TcpState::from_kernel(p[1])?;
    let timer = p[2];
    let local_port = u16::from_be_bytes([p[4], p[5]]);
    let remote_port = u16::from_be_bytes([p[6], p[7]]);
    let (local_ip, remote_ip) = if family == libc::AF_INET as u8 {
        (
            IpAddr::V4(Ipv4Addr::new(p[8], p[9], p[10], p[11])),
            IpAddr::V4(Ipv4Addr::new(p[24], p[25], p[26], p[27])),
        )
    } else {
        let mut src = [0u8; 16];
        let mut dst = [0u8; 16];
        src.copy_from_slice(&p[8..24]);
        dst.copy_from_slice(&p[24..40]);
        (
            normalize_ip(IpAddr::V6(Ipv6Addr::from(src))),
            normalize_ip(IpAddr::V6(Ipv6Addr::from(dst))),
        )
    };
    // 40..44 ifindex, 44..52 cookie, then expires, rqueue, wqueue, uid, inode.
    let expires = u32::from_ne_bytes([p[52], p[53], p[54], p[55]]);
    let uid = u32::from_ne_bytes([p[64], p[65], p[66], p[67]]);
    let inode = u32::from_ne_bytes([p[68], p[69], p[70], p[71]]);
    // Timer 3 is the TIME_WAIT timer; FIN_WAIT2 mini-sockets also carry it.
    let time_wait_left_ms = (timer == 3).then_some(expires);
    Some(Socket {
        state,
        local_ip,
        local_port,
        remote_ip,
        remote_port,
        time_wait_left_ms,
        inode: u64::from(inode),
        uid: Some(uid),
        pid: None,
    })
}

// ---------------------------------------------------------------------------------------------
// UDP

/// `INET_DIAG_SKV6ONLY`: a u8 attribute the kernel adds to every AF_INET6 socket's reply.
const INET_DIAG_SKV6ONLY: u16 = 11;

/// UDP sockets of the current network namespace, both families.
pub struct UdpDump {
    pub sockets: Vec<UdpSocket>,
    pub interrupted: bool,
}

/// Dumps every UDP socket (IPv4 and IPv6) with two SOCK_DIAG_BY_FAMILY requests for
/// IPPROTO_UDP (all states: 7 unconnected, 1 connected). UDP has no legacy request, and the
/// TCP dump is left as it was: a host without UDP sockets pays two empty dumps.
pub fn dump_udp() -> Result<UdpDump, CollectError> {
    let sock = open()?;
    let mut buf = vec![0u8; RECV_BUF];
    let mut attempts = 0;
    loop {
        attempts += 1;
        let mut sockets = Vec::new();
        let mut interrupted = false;
        for (i, family) in [libc::AF_INET as u8, libc::AF_INET6 as u8]
            .into_iter()
            .enumerate()
        {
            let seq = attempts * 4 + i as u32;
            let req = request_for(family, libc::IPPROTO_UDP as u8, seq, u32::MAX);
            interrupted |= dump_messages(&sock, &req, seq, &mut buf, &mut |kind, p| {
                if kind == SOCK_DIAG_BY_FAMILY {
                    sockets.extend(decode_udp_msg(p));
                }
            })?;
        }
        if !interrupted || attempts >= MAX_DUMP_ATTEMPTS {
            return Ok(UdpDump {
                sockets,
                interrupted,
            });
        }
    }
}

/// Decodes one UDP `inet_diag_msg` and its `INET_DIAG_SKV6ONLY` attribute.
pub fn decode_udp_msg(p: &[u8]) -> Option<UdpSocket> {
    let s = decode_inet_diag_msg(p)?;
    let ipv6_socket = p[0] == libc::AF_INET6 as u8;
    let mut v6only = None;
    let mut attrs = p.get(INET_DIAG_MSG_LEN..).unwrap_or(&[]);
    while attrs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]);
        if len < 4 || len > attrs.len() {
            break;
        }
        if kind == INET_DIAG_SKV6ONLY && len >= 5 {
            v6only = Some(attrs[4] != 0);
        }
        attrs = attrs.get((len + 3) & !3..).unwrap_or(&[]);
    }
    Some(UdpSocket {
        local_ip: s.local_ip,
        local_port: s.local_port,
        remote_ip: s.remote_ip,
        remote_port: s.remote_port,
        ipv6_socket,
        v6only: if ipv6_socket { v6only } else { None },
        inode: s.inode,
        uid: s.uid,
        pid: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(family: u8, state: u8, timer: u8, expires: u32) -> Vec<u8> {
        let mut p = vec![0u8; INET_DIAG_MSG_LEN];
        p[0] = family;
        p[1] = state;
        p[2] = timer;
        p[4..6].copy_from_slice(&40001u16.to_be_bytes());
        p[6..8].copy_from_slice(&5432u16.to_be_bytes());
        if family == libc::AF_INET as u8 {
            p[8..12].copy_from_slice(&[10, 0, 0, 5]);
            p[24..28].copy_from_slice(&[10, 0, 0, 9]);
        } else {
            p[8..24].copy_from_slice(&"::ffff:10.0.0.5".parse::<Ipv6Addr>().unwrap().octets());
            p[24..40].copy_from_slice(&"2001:db8::9".parse::<Ipv6Addr>().unwrap().octets());
        }
        p[52..56].copy_from_slice(&expires.to_ne_bytes());
        p[64..68].copy_from_slice(&1000u32.to_ne_bytes());
        p[68..72].copy_from_slice(&77u32.to_ne_bytes());
        p
    }

    fn nl(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDRLEN + payload.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(payload);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    #[test]
    fn decodes_ipv4_time_wait() {
        let s = decode_inet_diag_msg(&msg(libc::AF_INET as u8, 6, 3, 42_000)).unwrap();
        assert_eq!(s.state, TcpState::TimeWait);
        assert_eq!(s.local_ip, "10.0.0.5".parse::<IpAddr>().unwrap());
        assert_eq!(s.remote_port, 5432);
        assert_eq!(s.local_port, 40001);
        assert_eq!(s.time_wait_left_ms, Some(42_000));
        assert_eq!(s.inode, 77);
        assert_eq!(s.uid, Some(1000));
    }

    #[test]
    fn decodes_ipv6_and_unmaps_v4_mapped() {
        let s = decode_inet_diag_msg(&msg(libc::AF_INET6 as u8, 1, 0, 0)).unwrap();
        assert_eq!(s.local_ip, "10.0.0.5".parse::<IpAddr>().unwrap());
        assert_eq!(s.remote_ip, "2001:db8::9".parse::<IpAddr>().unwrap());
        assert_eq!(s.time_wait_left_ms, None);
    }

    #[test]
    fn rejects_truncated_and_unknown_state() {
        assert!(decode_inet_diag_msg(&[0u8; 10]).is_none());
        assert!(decode_inet_diag_msg(&msg(2, 99, 0, 0)).is_none());
    }

    fn sockets(data: &[u8], seq: u32, out: &mut Vec<Socket>) -> Result<Batch, CollectError> {
        decode_batch(data, seq, &mut |kind, payload| {
            if kind == SOCK_DIAG_BY_FAMILY {
                out.extend(decode_inet_diag_msg(payload));
            }
        })
    }

    #[test]
    fn batch_handles_multipart_done_intr_and_errors() {
        let mut data = nl(SOCK_DIAG_BY_FAMILY, 0x2, 7, &msg(2, 1, 0, 0));
        data.extend(nl(
            SOCK_DIAG_BY_FAMILY,
            0x2 | NLM_F_DUMP_INTR,
            7,
            &msg(2, 6, 3, 5),
        ));
        let mut out = Vec::new();
        assert!(matches!(
            sockets(&data, 7, &mut out),
            Ok(Batch::More { intr: true })
        ));
        assert_eq!(out.len(), 2);

        let done = nl(NLMSG_DONE, 0x2, 7, &0i32.to_ne_bytes());
        assert!(matches!(
            sockets(&done, 7, &mut out),
            Ok(Batch::Done { intr: false })
        ));

        let err = nl(NLMSG_ERROR, 0, 7, &(-libc::EPERM).to_ne_bytes());
        let e = sockets(&err, 7, &mut out).err().unwrap();
        assert!(e.to_string().contains("not permitted"), "{e}");

        let bad = vec![200u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(sockets(&bad, 7, &mut out).is_err());
    }

    #[test]
    fn decodes_udp_with_the_v6only_attribute() {
        let mut p = msg(libc::AF_INET6 as u8, 7, 0, 0);
        // struct nlattr { u16 len = 5, u16 type = INET_DIAG_SKV6ONLY } + 1 byte, padded to 8.
        p.extend_from_slice(&5u16.to_ne_bytes());
        p.extend_from_slice(&INET_DIAG_SKV6ONLY.to_ne_bytes());
        p.extend_from_slice(&[1, 0, 0, 0]);
        let s = decode_udp_msg(&p).unwrap();
        assert!(s.ipv6_socket);
        assert_eq!(s.v6only, Some(true));
        assert_eq!(s.local_port, 40001);
        assert_eq!(s.inode, 77);
        let v4 = decode_udp_msg(&msg(libc::AF_INET as u8, 1, 0, 0)).unwrap();
        assert!(!v4.ipv6_socket && v4.v6only.is_none() && v4.connected());
        // A damaged attribute is ignored, not trusted.
        let mut bad = msg(libc::AF_INET6 as u8, 7, 0, 0);
        bad.extend_from_slice(&[200, 0, 11, 0, 1]);
        assert_eq!(decode_udp_msg(&bad).unwrap().v6only, None);
    }

    #[test]
    fn stale_sequence_numbers_are_ignored() {
        let data = nl(SOCK_DIAG_BY_FAMILY, 0x2, 6, &msg(2, 1, 0, 0));
        let mut out = Vec::new();
        assert!(sockets(&data, 7, &mut out).is_ok());
        assert!(out.is_empty());
    }
}
