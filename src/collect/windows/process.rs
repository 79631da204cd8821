//! Process names by pid from a toolhelp snapshot (needs no rights on other processes; the
//! name is the executable's file name, e.g. `w3wp.exe`).

use rustc_hash::FxHashMap;
use windows_sys::Win32::Foundation::{CloseHandle, INVALID_HANDLE_VALUE};
use windows_sys::Win32::System::Diagnostics::ToolHelp::{
    CreateToolhelp32Snapshot, Process32FirstW, Process32NextW, PROCESSENTRY32W, TH32CS_SNAPPROCESS,
};

pub fn names() -> FxHashMap<u32, String> {
    let mut out = FxHashMap::default();
    // SAFETY: plain call with valid flags; 0 = all processes.
    let snap = unsafe { CreateToolhelp32Snapshot(TH32CS_SNAPPROCESS, 0) };
    if snap == INVALID_HANDLE_VALUE || snap.is_null() {
        return out;
    }
    let mut entry = PROCESSENTRY32W {
        dwSize: std::mem::size_of::<PROCESSENTRY32W>() as u32,
        ..PROCESSENTRY32W::default()
    };
    // SAFETY: `snap` is a valid snapshot handle and `entry.dwSize` is set as the API requires.
    let mut ok = unsafe { Process32FirstW(snap, &raw mut entry) };
    while ok != 0 {
        let len = entry
            .szExeFile
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(entry.szExeFile.len());
        let name = crate::units::printable(&String::from_utf16_lossy(&entry.szExeFile[..len]));
        if !name.is_empty() {
            out.insert(entry.th32ProcessID, name);
        }
        // SAFETY: as for Process32FirstW; `entry` keeps its dwSize.
        ok = unsafe { Process32NextW(snap, &raw mut entry) };
    }
    // SAFETY: `snap` is a valid handle owned here and closed once.
    unsafe {
        CloseHandle(snap);
    }
    out
}
