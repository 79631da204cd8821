//! `GetExtendedUdpTable(UDP_TABLE_OWNER_PID)` for AF_INET and AF_INET6: the size probe and
//! retry loop of `tcptable.rs` for the UDP table (rows: local address, port, owning PID).

use std::ptr;

use windows_sys::Win32::Foundation::{ERROR_INSUFFICIENT_BUFFER, NO_ERROR};
use windows_sys::Win32::NetworkManagement::IpHelper::{GetExtendedUdpTable, UDP_TABLE_OWNER_PID};
use windows_sys::Win32::Networking::WinSock::{AF_INET, AF_INET6};

use crate::collect::windows_text::parse_udp_table;
use crate::collect::CollectError;
use crate::snapshot::UdpSocket;

/// Attempts before giving up on a table that keeps growing.
const ATTEMPTS: usize = 8;

pub fn read(ipv6: bool) -> Result<Vec<UdpSocket>, CollectError> {
    let af = u32::from(if ipv6 { AF_INET6 } else { AF_INET });
    let call = if ipv6 {
        "GetExtendedUdpTable(AF_INET6)"
    } else {
        "GetExtendedUdpTable(AF_INET)"
    };
    // u32 words: the table is DWORD-aligned.
    let mut buf: Vec<u32> = Vec::new();
    let mut size: u32 = 0;
    for _ in 0..ATTEMPTS {
        let ptr = if buf.is_empty() {
            ptr::null_mut()
        } else {
            buf.as_mut_ptr().cast()
        };
        // SAFETY: `ptr` is null with `size` 0 (the size probe) or points to `buf`, whose length
        // in bytes is exactly `size`; the API writes at most `size` bytes and stores the size it
        // needs in `size`.
        let rc = unsafe { GetExtendedUdpTable(ptr, &raw mut size, 0, af, UDP_TABLE_OWNER_PID, 0) };
        match rc {
            NO_ERROR if buf.is_empty() => return Ok(Vec::new()),
            NO_ERROR => {
                let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_ne_bytes()).collect();
                return parse_udp_table(&bytes, ipv6).ok_or(CollectError::WinApi {
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
            code => return Err(CollectError::WinApi { call, code }),
        }
    }
    Err(CollectError::WinApi {
        call,
        code: ERROR_INSUFFICIENT_BUFFER,
    })
}

/// Both families; a failure leaves a note and no UDP sockets of that family (UDP pools are
/// then not shown) rather than failing the TCP collection.
pub fn read_both(notes: &mut Vec<String>) -> Vec<UdpSocket> {
    let mut out = Vec::new();
    for v6 in [false, true] {
        match read(v6) {
            Ok(s) => out.extend(s),
            Err(e) => notes.push(format!("UDP sockets not listed: {e}")),
        }
    }
    out
}
