//! Windows system tools by their full path. `Command::new("netsh")` searches the program's own
//! folder before System32 (CreateProcess search order), so a `netsh.exe` dropped beside
//! `portdoctor.exe` ran instead of the real one, and users are told to run portdoctor as
//! Administrator. Every tool is started as `GetSystemDirectoryW()\NAME.exe`.

use std::ffi::OsString;
use std::os::windows::ffi::OsStringExt;
use std::path::PathBuf;

use windows_sys::Win32::System::SystemInformation::GetSystemDirectoryW;

/// Test builds only (the `fixture` feature, on for `cargo test` through the dev-dependency):
/// a folder of stand-ins used instead of System32, so the Wine tests can run a fake `netsh.exe`.
/// Release builds have no such override.
#[cfg(feature = "fixture")]
pub const TEST_SYSTEM_DIR_ENV: &str = "PORTDOCTOR_TEST_SYSTEM_DIR";

/// The System32 folder (`C:\Windows\System32`), from `GetSystemDirectoryW`; `None` if it fails.
pub fn system_directory() -> Option<PathBuf> {
    #[cfg(feature = "fixture")]
    if let Some(dir) = std::env::var_os(TEST_SYSTEM_DIR_ENV).filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    let mut buf = vec![0u16; 261];
    loop {
        let len = u32::try_from(buf.len()).ok()?;
        // SAFETY: `buf` is a live buffer of `len` UTF-16 units; the call writes at most `len`
        // of them and returns how many it wrote (without the NUL), or the size it needs
        // (with the NUL) when `len` is too small, or 0 on failure.
        let n = unsafe { GetSystemDirectoryW(buf.as_mut_ptr(), len) } as usize;
        if n == 0 {
            return None;
        }
        if n < buf.len() {
            buf.truncate(n);
            return Some(PathBuf::from(OsString::from_wide(&buf)));
        }
        buf.resize(n + 1, 0);
    }
}

/// `System32\EXE` (e.g. `netsh.exe`), or `None` when the folder is unknown: then the tool is not
/// run at all rather than searched for.
pub fn system_tool(exe: &str) -> Option<PathBuf> {
    system_directory().map(|d| d.join(exe))
}

/// Windows PowerShell 5.1 by its full path (`System32\WindowsPowerShell\v1.0\powershell.exe`).
pub fn powershell() -> Option<PathBuf> {
    system_tool(r"WindowsPowerShell\v1.0\powershell.exe")
}
