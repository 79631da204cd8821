//! Tcpip events 4227 and 4231 of the last hours from the System log via `EvtQuery`. Under Wine
//! `EvtQuery` returns NULL: the caller then notes "event log unreadable" (never a made-up 0).

use std::ptr;

use windows_sys::Win32::Foundation::{
    GetLastError, ERROR_INSUFFICIENT_BUFFER, ERROR_NO_MORE_ITEMS,
};
use windows_sys::Win32::System::EventLog::{
    EvtClose, EvtNext, EvtQuery, EvtQueryChannelPath, EvtQueryReverseDirection, EvtRender,
    EvtRenderEventXml, EVT_HANDLE,
};

use super::registry::wide;
use crate::collect::windows_text::{parse_event_xml, summarize_events, EventRecord};
use crate::snapshot::TcpipEvents;

/// Enough to show "it happened, a lot"; the count saturates here.
const MAX_EVENTS: usize = 100_000;

struct Handle(EVT_HANDLE);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: self.0 is a non-null handle from EvtQuery/EvtNext, closed only here.
        unsafe {
            EvtClose(self.0);
        }
    }
}

pub fn read(now_unix_ms: u64, window_hours: u32) -> Result<TcpipEvents, String> {
    let path = wide("System");
    let query = wide(&format!(
        "*[System[Provider[@Name='Tcpip'] and (EventID=4227 or EventID=4231 or EventID=4266) and TimeCreated[timediff(@SystemTime) <= {}]]]",
        u64::from(window_hours) * 3_600_000
    ));
    // SAFETY: both strings are NUL-terminated UTF-16 that outlive the call; session 0 = local.
    let h = unsafe {
        EvtQuery(
            0,
            path.as_ptr(),
            query.as_ptr(),
            EvtQueryChannelPath | EvtQueryReverseDirection,
        )
    };
    if h == 0 {
        // SAFETY: no arguments; reads this thread's last error.
        let code = unsafe { GetLastError() };
        return Err(format!("EvtQuery failed with Windows error {code}"));
    }
    let results = Handle(h);
    let mut records: Vec<EventRecord> = Vec::new();
    while records.len() < MAX_EVENTS {
        let mut batch = [0 as EVT_HANDLE; 64];
        let mut returned: u32 = 0;
        // SAFETY: `batch` has room for the 64 handles asked for; `returned` is a valid out
        // pointer; results.0 is a live query handle.
        let ok = unsafe {
            EvtNext(
                results.0,
                batch.len() as u32,
                batch.as_mut_ptr(),
                5000,
                0,
                &raw mut returned,
            )
        };
        if ok == 0 {
            // SAFETY: no arguments.
            let code = unsafe { GetLastError() };
            if code == ERROR_NO_MORE_ITEMS {
                break;
            }
            return Err(format!("EvtNext failed with Windows error {code}"));
        }
        for &ev in batch.iter().take(returned as usize) {
            let ev = Handle(ev);
            if let Some(r) = render(ev.0).as_deref().and_then(parse_event_xml) {
                records.push(r);
            }
        }
    }
    Ok(summarize_events(&records, now_unix_ms, window_hours))
}

/// The event as XML (`EvtRenderEventXml`), or `None` when it cannot be rendered.
fn render(ev: EVT_HANDLE) -> Option<String> {
    let mut used: u32 = 0;
    let mut props: u32 = 0;
    // SAFETY: a size probe: buffer null with size 0; `used`/`props` are valid out pointers.
    let ok = unsafe {
        EvtRender(
            0,
            ev,
            EvtRenderEventXml,
            0,
            ptr::null_mut(),
            &raw mut used,
            &raw mut props,
        )
    };
    // SAFETY: no arguments.
    if ok == 0 && unsafe { GetLastError() } != ERROR_INSUFFICIENT_BUFFER {
        return None;
    }
    let mut buf: Vec<u16> = vec![0; used as usize / 2 + 1];
    // SAFETY: `buf` holds buf.len() * 2 bytes, the size passed; the other pointers are valid.
    let ok = unsafe {
        EvtRender(
            0,
            ev,
            EvtRenderEventXml,
            (buf.len() * 2) as u32,
            buf.as_mut_ptr().cast(),
            &raw mut used,
            &raw mut props,
        )
    };
    if ok == 0 {
        return None;
    }
    let chars = (used as usize / 2).min(buf.len());
    Some(
        String::from_utf16_lossy(&buf[..chars])
            .trim_end_matches('\0')
            .to_string(),
    )
}
