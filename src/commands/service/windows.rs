//! The Service Control Manager calls behind `portdoctor service` and `serve --service`.
//!
//! `serve --service`: [`dispatch`] connects the main thread to the SCM
//! (`StartServiceCtrlDispatcherW`, which blocks until the service stops); the SCM calls
//! `service_main` on a thread of its own, which registers `control_handler`, reports
//! SERVICE_RUNNING and runs serve. STOP/SHUTDOWN report SERVICE_STOP_PENDING and stop serve
//! as Ctrl-C does (`serve::request_stop`); serve's exit code becomes the service's
//! (ERROR_SERVICE_SPECIFIC_ERROR + the code when not 0) and, when not 0, an Event Log entry.

#![allow(unsafe_code)] // Win32 service API calls, each with its SAFETY note

use std::ffi::c_void;
use std::process::ExitCode;
use std::ptr::{null, null_mut};
use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use windows_sys::core::{PCWSTR, PWSTR};
use windows_sys::Win32::Foundation::{
    GetLastError, ERROR_ACCESS_DENIED, ERROR_CALL_NOT_IMPLEMENTED,
    ERROR_FAILED_SERVICE_CONTROLLER_CONNECT, ERROR_SERVICE_DOES_NOT_EXIST, ERROR_SERVICE_EXISTS,
    ERROR_SERVICE_MARKED_FOR_DELETE, ERROR_SERVICE_SPECIFIC_ERROR, NO_ERROR,
};
use windows_sys::Win32::System::EventLog::{
    DeregisterEventSource, RegisterEventSourceW, ReportEventW, EVENTLOG_ERROR_TYPE,
};
use windows_sys::Win32::System::Services::{
    ChangeServiceConfig2W, CloseServiceHandle, ControlService, CreateServiceW, DeleteService,
    OpenSCManagerW, OpenServiceW, QueryServiceStatus, RegisterServiceCtrlHandlerExW,
    SetServiceStatus, StartServiceCtrlDispatcherW, SC_HANDLE, SC_MANAGER_CONNECT,
    SC_MANAGER_CREATE_SERVICE, SERVICE_ACCEPT_SHUTDOWN, SERVICE_ACCEPT_STOP, SERVICE_ALL_ACCESS,
    SERVICE_AUTO_START, SERVICE_CONFIG_DESCRIPTION, SERVICE_CONTROL_INTERROGATE,
    SERVICE_CONTROL_SHUTDOWN, SERVICE_CONTROL_STOP, SERVICE_DESCRIPTIONW, SERVICE_ERROR_NORMAL,
    SERVICE_QUERY_STATUS, SERVICE_RUNNING, SERVICE_STATUS, SERVICE_STATUS_CURRENT_STATE,
    SERVICE_STOP, SERVICE_STOPPED, SERVICE_STOP_PENDING, SERVICE_TABLE_ENTRYW,
    SERVICE_WIN32_OWN_PROCESS,
};

use super::{binary_path, DESCRIPTION};
use crate::cli::ServiceAction;
use crate::commands::serve::request_stop;

/// The standard DELETE access right (winnt.h).
const DELETE: u32 = 0x0001_0000;

fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(std::iter::once(0)).collect()
}

/// A service or SCM handle, closed on drop.
struct Handle(SC_HANDLE);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: a handle OpenSCManagerW/OpenServiceW/CreateServiceW returned, closed once.
        unsafe { CloseServiceHandle(self.0) };
    }
}

fn last_error() -> u32 {
    // SAFETY: no preconditions.
    unsafe { GetLastError() }
}

fn os_error(code: u32) -> std::io::Error {
    #[allow(clippy::cast_possible_wrap)] // Win32 error codes are stored as i32 by std
    std::io::Error::from_raw_os_error(code as i32)
}

fn open_scm(access: u32) -> Result<Handle, String> {
    // SAFETY: null machine and database mean the local, active database.
    let h = unsafe { OpenSCManagerW(null(), null(), access) };
    if h.is_null() {
        let code = last_error();
        return Err(if code == ERROR_ACCESS_DENIED {
            "the Service Control Manager refused access: installing or removing a service needs an elevated prompt (Run as administrator)".to_string()
        } else {
            format!("opening the Service Control Manager: {}", os_error(code))
        });
    }
    Ok(Handle(h))
}

pub fn run(action: &ServiceAction) -> ExitCode {
    let result = match action {
        ServiceAction::Install { name, serve_args } => install(name, serve_args),
        ServiceAction::Uninstall { name } => uninstall(name),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => crate::commands::failed(e),
    }
}

fn install(name: &str, serve_args: &[String]) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding this program's path: {e}"))?;
    let exe = exe
        .to_str()
        .ok_or_else(|| format!("this program's path {} is not Unicode", exe.display()))?;
    let command = binary_path(exe, serve_args)?;
    let scm = open_scm(SC_MANAGER_CREATE_SERVICE)?;
    let (wname, wdisplay, wcommand) = (wide(name), wide(&display_name(name)), wide(&command));
    // SAFETY: every string is NUL-terminated and outlives the call; null account = LocalSystem.
    let h = unsafe {
        CreateServiceW(
            scm.0,
            wname.as_ptr(),
            wdisplay.as_ptr(),
            SERVICE_ALL_ACCESS,
            SERVICE_WIN32_OWN_PROCESS,
            SERVICE_AUTO_START,
            SERVICE_ERROR_NORMAL,
            wcommand.as_ptr(),
            null(),
            null_mut(),
            null(),
            null(),
            null(),
        )
    };
    if h.is_null() {
        let code = last_error();
        return Err(match code {
            ERROR_ACCESS_DENIED => "the Service Control Manager refused to create the service: run from an elevated prompt (Run as administrator)".to_string(),
            ERROR_SERVICE_EXISTS => format!("a service named {name:?} exists already; `portdoctor service uninstall --name {name}` first, or pick another --name"),
            ERROR_SERVICE_MARKED_FOR_DELETE => format!("the service {name:?} is marked for deletion; close services.msc (and anything holding it open) and try again"),
            _ => format!("creating the service {name:?}: {}", os_error(code)),
        });
    }
    let service = Handle(h);
    let mut desc = wide(DESCRIPTION);
    let info = SERVICE_DESCRIPTIONW {
        lpDescription: desc.as_mut_ptr(),
    };
    // SAFETY: `info` points at a NUL-terminated string that outlives the call.
    let ok = unsafe {
        ChangeServiceConfig2W(
            service.0,
            SERVICE_CONFIG_DESCRIPTION,
            (&raw const info).cast::<c_void>(),
        )
    };
    if ok == 0 {
        eprintln!(
            "portdoctor: warning: setting the service description: {}",
            os_error(last_error())
        );
    }
    println!("installed service {name:?}: {command}");
    println!("start it with `sc.exe start {name}` (it also starts at boot)");
    Ok(())
}

fn display_name(name: &str) -> String {
    if name == crate::cli::service::DEFAULT_SERVICE_NAME {
        "portdoctor exporter".to_string()
    } else {
        format!("portdoctor exporter ({name})")
    }
}

fn query_state(service: &Handle) -> Option<SERVICE_STATUS_CURRENT_STATE> {
    let mut status = empty_status();
    // SAFETY: a valid handle with SERVICE_QUERY_STATUS and a status to fill.
    (unsafe { QueryServiceStatus(service.0, &raw mut status) } != 0)
        .then_some(status.dwCurrentState)
}

fn uninstall(name: &str) -> Result<(), String> {
    let scm = open_scm(SC_MANAGER_CONNECT)?;
    let wname = wide(name);
    // SAFETY: a valid SCM handle and a NUL-terminated name.
    let h = unsafe {
        OpenServiceW(
            scm.0,
            wname.as_ptr(),
            DELETE | SERVICE_STOP | SERVICE_QUERY_STATUS,
        )
    };
    if h.is_null() {
        let code = last_error();
        return Err(match code {
            ERROR_SERVICE_DOES_NOT_EXIST => format!("no service named {name:?}"),
            ERROR_ACCESS_DENIED => "the Service Control Manager refused access: removing a service needs an elevated prompt (Run as administrator)".to_string(),
            _ => format!("opening the service {name:?}: {}", os_error(code)),
        });
    }
    let service = Handle(h);
    if query_state(&service).is_some_and(|s| s != SERVICE_STOPPED) {
        let mut status = empty_status();
        // SAFETY: a valid handle with SERVICE_STOP.
        unsafe { ControlService(service.0, SERVICE_CONTROL_STOP, &raw mut status) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while query_state(&service).is_some_and(|s| s != SERVICE_STOPPED) {
            if Instant::now() > deadline {
                eprintln!("portdoctor: warning: the service did not stop within 30 s; it is deleted once it does");
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // SAFETY: a valid handle with DELETE.
    if unsafe { DeleteService(service.0) } == 0 {
        let code = last_error();
        return Err(match code {
            ERROR_SERVICE_MARKED_FOR_DELETE => {
                format!("the service {name:?} is already marked for deletion")
            }
            _ => format!("deleting the service {name:?}: {}", os_error(code)),
        });
    }
    println!("uninstalled service {name:?}");
    Ok(())
}

// --- serve --service ---------------------------------------------------------------------

type Body = Box<dyn FnOnce() -> ExitCode + Send>;

/// What `service_main` runs (serve with the same options); taken once.
static BODY: Mutex<Option<Body>> = Mutex::new(None);
/// The status handle `RegisterServiceCtrlHandlerExW` returned.
static STATUS_HANDLE: AtomicPtr<c_void> = AtomicPtr::new(null_mut());
/// The exit code serve returned, for the process exit code after the dispatcher returns.
static EXIT: AtomicU32 = AtomicU32::new(0);
/// The service's name as the SCM passed it (argv[0] of ServiceMain), for the Event Log.
static NAME: Mutex<String> = Mutex::new(String::new());

fn empty_status() -> SERVICE_STATUS {
    SERVICE_STATUS {
        dwServiceType: SERVICE_WIN32_OWN_PROCESS,
        dwCurrentState: SERVICE_STOPPED,
        dwControlsAccepted: 0,
        dwWin32ExitCode: NO_ERROR,
        dwServiceSpecificExitCode: 0,
        dwCheckPoint: 0,
        dwWaitHint: 0,
    }
}

fn report(state: SERVICE_STATUS_CURRENT_STATE, exit: u32) {
    let h = STATUS_HANDLE.load(Ordering::Acquire);
    if h.is_null() {
        return;
    }
    let mut status = empty_status();
    status.dwCurrentState = state;
    status.dwControlsAccepted = if state == SERVICE_RUNNING {
        SERVICE_ACCEPT_STOP | SERVICE_ACCEPT_SHUTDOWN
    } else {
        0
    };
    if exit != 0 {
        status.dwWin32ExitCode = ERROR_SERVICE_SPECIFIC_ERROR;
        status.dwServiceSpecificExitCode = exit;
    }
    if state == SERVICE_STOP_PENDING {
        // serve drains open connections for at most 5 s.
        status.dwCheckPoint = 1;
        status.dwWaitHint = 10_000;
    }
    // SAFETY: the handle came from RegisterServiceCtrlHandlerExW; `status` is initialized.
    unsafe { SetServiceStatus(h, &raw const status) };
}

unsafe extern "system" fn control_handler(
    control: u32,
    _event_type: u32,
    _event_data: *mut c_void,
    _context: *mut c_void,
) -> u32 {
    match control {
        SERVICE_CONTROL_STOP | SERVICE_CONTROL_SHUTDOWN => {
            report(SERVICE_STOP_PENDING, 0);
            request_stop();
            NO_ERROR
        }
        SERVICE_CONTROL_INTERROGATE => NO_ERROR,
        _ => ERROR_CALL_NOT_IMPLEMENTED,
    }
}

/// The numeric value of an exit code (std keeps it opaque).
fn exit_number(code: ExitCode) -> u32 {
    (0..=u8::MAX)
        .find(|n| ExitCode::from(*n) == code)
        .map_or(1, u32::from)
}

/// An error entry in the Application log, source = the service name (no message file is
/// registered, so Event Viewer shows the text as the event's insertion string).
fn event_log_error(text: &str) {
    let name = NAME.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let wsource = wide(if name.is_empty() { "portdoctor" } else { &name });
    // SAFETY: a NUL-terminated source name; null server = this machine.
    let h = unsafe { RegisterEventSourceW(null(), wsource.as_ptr()) };
    if h.is_null() {
        return;
    }
    let wtext = wide(text);
    let strings: [PCWSTR; 1] = [wtext.as_ptr()];
    // SAFETY: one NUL-terminated string, no raw data; the handle is deregistered after.
    unsafe {
        ReportEventW(
            h,
            EVENTLOG_ERROR_TYPE,
            0,
            1,
            null_mut(),
            1,
            0,
            strings.as_ptr(),
            null(),
        );
        DeregisterEventSource(h);
    }
}

unsafe extern "system" fn service_main(argc: u32, argv: *mut PWSTR) {
    // argv[0] is the service name; for an own-process service the SCM does not check it.
    let name_ptr: PCWSTR = if argc > 0 && !argv.is_null() {
        // SAFETY: the SCM passes argc valid pointers.
        unsafe { *argv }
    } else {
        null()
    };
    let empty = [0u16];
    let name_ptr = if name_ptr.is_null() {
        empty.as_ptr()
    } else {
        name_ptr
    };
    // SAFETY: NUL-terminated (from the SCM, or `empty`); service names have at most 256
    // characters, so the scan stops there too.
    let len = (0..=256)
        .take_while(|&i| unsafe { *name_ptr.add(i) } != 0)
        .count();
    // SAFETY: `len` u16s before the NUL.
    let name = String::from_utf16_lossy(unsafe { std::slice::from_raw_parts(name_ptr, len) });
    *NAME.lock().unwrap_or_else(PoisonError::into_inner) = name;
    // SAFETY: a NUL-terminated name and a handler with the documented signature.
    let h = unsafe { RegisterServiceCtrlHandlerExW(name_ptr, Some(control_handler), null()) };
    if h.is_null() {
        eprintln!(
            "portdoctor: error: registering the service control handler: {}",
            os_error(last_error())
        );
        EXIT.store(3, Ordering::Release);
        return;
    }
    STATUS_HANDLE.store(h, Ordering::Release);
    let body = BODY.lock().unwrap_or_else(PoisonError::into_inner).take();
    // Running once serve starts: a failure to listen or collect then stops it with a code.
    report(SERVICE_RUNNING, 0);
    let code = body.map_or(1, |b| exit_number(b()));
    EXIT.store(code, Ordering::Release);
    if code != 0 {
        event_log_error(&format!(
            "portdoctor serve stopped with exit code {code} (3: cannot listen or collect, 4: bad arguments); run the service's command line in a console to see the message"
        ));
    }
    report(SERVICE_STOPPED, code);
}

/// `serve --service`: connects to the SCM and runs `body` as the service; returns when the
/// service has stopped, with serve's exit code.
pub fn dispatch(body: Body) -> ExitCode {
    *BODY.lock().unwrap_or_else(PoisonError::into_inner) = Some(body);
    // Own-process service: the name in the table is ignored but must not be null.
    let empty = [0u16];
    let table = [
        SERVICE_TABLE_ENTRYW {
            lpServiceName: empty.as_ptr().cast_mut(),
            lpServiceProc: Some(service_main),
        },
        SERVICE_TABLE_ENTRYW {
            lpServiceName: null_mut(),
            lpServiceProc: None,
        },
    ];
    // SAFETY: a table ending with a null entry, alive until the call returns.
    if unsafe { StartServiceCtrlDispatcherW(table.as_ptr()) } == 0 {
        let code = last_error();
        return crate::commands::usage(if code == ERROR_FAILED_SERVICE_CONTROLLER_CONNECT {
            "serve --service is started by the Service Control Manager: install it with `portdoctor service install`, or run `portdoctor serve` in a console".to_string()
        } else {
            format!(
                "connecting to the Service Control Manager: {}",
                os_error(code)
            )
        });
    }
    let code = EXIT.load(Ordering::Acquire);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
