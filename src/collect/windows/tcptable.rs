//! `GetExtendedTcpTable(TCP_TABLE_OWNER_PID_ALL)` for AF_INET and AF_INET6, with the size probe
//! and a retry loop for tables that grow between the two calls.

use std::ptr;

use windows_sys::Win32::Foundation::{ERROR_INSUFFICIENT_BUFFER, ERROR_OUTOFMEMORY, NO_ERROR};
use windows_sys::Win32::NetworkManagement::IpHelper::{
    GetExtendedTcpTable, TCP_TABLE_OWNER_PID_ALL,
};
use windows_sys::Win32::Networking::WinSock::{AF_INET, AF_INET6};

use crate::collect::windows_text::parse_tcp_table;
use crate::collect::CollectError;
use crate::snapshot::Socket;

/// Attempts before giving up on a table that keeps growing.
const ATTEMPTS: usize = 8;

pub fn read(ipv6: bool) -> Result<Vec<Socket>, CollectError> {
    let af = u32::from(if ipv6 { AF_INET6 } else { AF_INET });
    let call = if ipv6 {
        "GetExtendedTcpTable(AF_INET6)"
    } else {
        "GetExtendedTcpTable(AF_INET)"
    };
    // u32 words: the table is DWORD-aligned.
    let mut buf: Vec<u32> = Vec::new();
    let mut size: u32 = 0;
    for attempt in 0..ATTEMPTS {
        let ptr = if buf.is_empty() {
            ptr::null_mut()
        } else {
            buf.as_mut_ptr().cast()
        };
        // SAFETY: `ptr` is null with `size` 0 (the size probe) or points to `buf`, whose length
        // in bytes is exactly `size`; the API writes at most `size` bytes and stores the size it
        // needs in `size`.
        let rc =
            unsafe { GetExtendedTcpTable(ptr, &raw mut size, 0, af, TCP_TABLE_OWNER_PID_ALL, 0) };
        match rc {
            NO_ERROR if buf.is_empty() => return Ok(Vec::new()),
            NO_ERROR => {
                let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_ne_bytes()).collect();
                return parse_tcp_table(&bytes, ipv6).ok_or(CollectError::WinApi {
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
