//! The IP Helper owner tables: `GetExtendedTcpTable(TCP_TABLE_OWNER_PID_ALL)` and
//! `GetExtendedUdpTable(UDP_TABLE_OWNER_PID)` for AF_INET and AF_INET6, with one size probe and
//! retry loop for tables that grow between the two calls.

use std::ptr;

use windows_sys::Win32::Foundation::{ERROR_INSUFFICIENT_BUFFER, ERROR_OUTOFMEMORY, NO_ERROR};
use windows_sys::Win32::NetworkManagement::IpHelper::{
    GetExtendedTcpTable, GetExtendedUdpTable, TCP_TABLE_OWNER_PID_ALL, UDP_TABLE_OWNER_PID,
};
use windows_sys::Win32::Networking::WinSock::{AF_INET, AF_INET6};

use crate::collect::windows_text::{parse_tcp_table, parse_udp_table};
use crate::collect::CollectError;
use crate::snapshot::{Socket, UdpSocket};

/// Attempts before giving up on a table that keeps growing.
const ATTEMPTS: usize = 8;

fn family(ipv6: bool) -> u32 {
    u32::from(if ipv6 { AF_INET6 } else { AF_INET })
}

/// Calls `api(buffer, &mut size)` the IP Helper way (a size probe, then the table, again while
/// it grows) and hands the table's bytes to `parse`. `call` names the API in errors.
fn read_table<T>(
    call: &'static str,
    api: impl Fn(*mut std::ffi::c_void, &mut u32) -> u32,
    parse: impl Fn(&[u8]) -> Option<Vec<T>>,
) -> Result<Vec<T>, CollectError> {
    // u32 words: the table is DWORD-aligned.
    let mut buf: Vec<u32> = Vec::new();
    let mut size: u32 = 0;
    for attempt in 0..ATTEMPTS {
        let ptr = if buf.is_empty() {
            ptr::null_mut()
        } else {
            buf.as_mut_ptr().cast()
        };
        match api(ptr, &mut size) {
            NO_ERROR if buf.is_empty() => return Ok(Vec::new()),
            NO_ERROR => {
                let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_ne_bytes()).collect();
                return parse(&bytes).ok_or(CollectError::WinApi {
                    call,
                    code: u32::MAX,
                });
            }
            ERROR_INSUFFICIENT_BUFFER => {
                // Room for the reported size plus some growth before the next call.
                let words = (size as usize).div_ceil(4) + size as usize / 32 + 64;
                buf = vec![0; words];
                size = (words * 4) as u32;
            }
            // Wine answers ERROR_OUTOFMEMORY while connections come and go during the call
            // (seen with a client opening ~100 connections a second): wait a little (at most
            // 0.7 s over all attempts) and probe again.
            ERROR_OUTOFMEMORY => {
                buf = Vec::new();
                size = 0;
                std::thread::sleep(std::time::Duration::from_millis(20 * (attempt as u64 + 1)));
            }
            code => return Err(CollectError::WinApi { call, code }),
        }
    }
    Err(CollectError::WinApi {
        call,
        code: ERROR_INSUFFICIENT_BUFFER,
    })
}

pub fn read(ipv6: bool) -> Result<Vec<Socket>, CollectError> {
    let call = if ipv6 {
        "GetExtendedTcpTable(AF_INET6)"
    } else {
        "GetExtendedTcpTable(AF_INET)"
    };
    read_table(
        call,
        // SAFETY: `ptr` is null with `size` 0 (the size probe) or points to a buffer of exactly
        // `size` bytes; the API writes at most `size` bytes and stores the size it needs.
        |ptr, size| unsafe {
            GetExtendedTcpTable(ptr, size, 0, family(ipv6), TCP_TABLE_OWNER_PID_ALL, 0)
        },
        |bytes| parse_tcp_table(bytes, ipv6),
    )
}

pub fn read_udp(ipv6: bool) -> Result<Vec<UdpSocket>, CollectError> {
    let call = if ipv6 {
        "GetExtendedUdpTable(AF_INET6)"
    } else {
        "GetExtendedUdpTable(AF_INET)"
    };
    read_table(
        call,
        // SAFETY: as in `read`.
        |ptr, size| unsafe {
            GetExtendedUdpTable(ptr, size, 0, family(ipv6), UDP_TABLE_OWNER_PID, 0)
        },
        |bytes| parse_udp_table(bytes, ipv6),
    )
}

/// Both families' UDP sockets; a failure leaves a note and no UDP sockets of that family (UDP
/// pools are then not shown) rather than failing the TCP collection.
pub fn read_udp_both(notes: &mut Vec<String>) -> Vec<UdpSocket> {
    let mut out = Vec::new();
    for v6 in [false, true] {
        match read_udp(v6) {
            Ok(s) => out.extend(s),
            Err(e) => notes.push(format!("UDP sockets not listed: {e}")),
        }
    }
    out
}
