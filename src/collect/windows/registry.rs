//! Registry reads (REG_DWORD, REG_SZ) through `RegOpenKeyExW` + `RegGetValueW`.

use std::ptr;

use windows_sys::Win32::Foundation::{ERROR_FILE_NOT_FOUND, ERROR_MORE_DATA};
use windows_sys::Win32::System::Registry::{
    RegCloseKey, RegGetValueW, RegOpenKeyExW, HKEY, HKEY_CURRENT_USER, HKEY_LOCAL_MACHINE,
    KEY_READ, RRF_RT_REG_DWORD, RRF_RT_REG_SZ,
};

use crate::collect::windows_text::RegistryRoot;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegError {
    /// The key itself does not exist (or cannot be opened).
    KeyMissing,
    /// Any other Windows error (wrong type, access denied on the value, …).
    Other(u32),
}

/// A NUL-terminated UTF-16 copy of `s`.
pub fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(std::iter::once(0)).collect()
}

/// An open key, closed on drop.
struct Key(HKEY);

impl Drop for Key {
    fn drop(&mut self) {
        // SAFETY: self.0 was returned by a successful RegOpenKeyExW and is closed only here.
        unsafe {
            RegCloseKey(self.0);
        }
    }
}

fn open(root: RegistryRoot, subkey: &str) -> Result<Key, RegError> {
    let root = match root {
        RegistryRoot::LocalMachine => HKEY_LOCAL_MACHINE,
        RegistryRoot::CurrentUser => HKEY_CURRENT_USER,
    };
    let subkey = wide(subkey);
    let mut key: HKEY = ptr::null_mut();
    // SAFETY: root is a predefined key, subkey a NUL-terminated UTF-16 string that outlives the
    // call, and `key` a valid out pointer.
    let rc = unsafe { RegOpenKeyExW(root, subkey.as_ptr(), 0, KEY_READ, &raw mut key) };
    if rc == 0 {
        Ok(Key(key))
    } else {
        Err(RegError::KeyMissing)
    }
}

/// A REG_DWORD value: `Ok(None)` when the value is absent (the key exists).
pub fn read_dword(root: RegistryRoot, subkey: &str, name: &str) -> Result<Option<u32>, RegError> {
    let key = open(root, subkey)?;
    let name = wide(name);
    let mut data: u32 = 0;
    let mut size = std::mem::size_of::<u32>() as u32;
    // SAFETY: key.0 is open for reading; name is NUL-terminated; data/size point to a u32 and its
    // size in bytes, which is what RRF_RT_REG_DWORD writes at most.
    let rc = unsafe {
        RegGetValueW(
            key.0,
            ptr::null(),
            name.as_ptr(),
            RRF_RT_REG_DWORD,
            ptr::null_mut(),
            (&raw mut data).cast(),
            &raw mut size,
        )
    };
    match rc {
        0 => Ok(Some(data)),
        ERROR_FILE_NOT_FOUND => Ok(None),
        other => Err(RegError::Other(other)),
    }
}

/// A REG_SZ value, `None` when absent or unreadable.
pub fn read_string(root: RegistryRoot, subkey: &str, name: &str) -> Option<String> {
    let key = open(root, subkey).ok()?;
    let name = wide(name);
    let mut buf: Vec<u16> = vec![0; 64];
    for _ in 0..4 {
        let mut size = (buf.len() * 2) as u32;
        // SAFETY: buf holds `size` bytes; name is NUL-terminated; key.0 is open for reading.
        let rc = unsafe {
            RegGetValueW(
                key.0,
                ptr::null(),
                name.as_ptr(),
                RRF_RT_REG_SZ,
                ptr::null_mut(),
                buf.as_mut_ptr().cast(),
                &raw mut size,
            )
        };
        match rc {
            0 => {
                let chars = (size as usize / 2).min(buf.len());
                let s = String::from_utf16_lossy(&buf[..chars]);
                return Some(s.trim_end_matches('\0').to_string());
            }
            ERROR_MORE_DATA => buf = vec![0; size as usize / 2 + 1],
            _ => return None,
        }
    }
    None
}
