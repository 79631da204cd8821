//! Under Wine (CI): `portdoctor service install` registers `serve --service` with the Service
//! Control Manager (Wine's services.exe), the service starts, answers /metrics, stops on
//! SERVICE_CONTROL_STOP with exit code 0, and `service uninstall` deletes it. The executable
//! is copied into a folder whose name has blanks, so the quoted binary path is exercised.
#![cfg(windows)]
#![allow(unsafe_code)] // the test drives the SCM itself (start, query, stop)

#[path = "common/http.rs"]
mod http;

use http::get;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::ptr::null;
use std::thread;
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation::{GetLastError, ERROR_SERVICE_DOES_NOT_EXIST};
use windows_sys::Win32::System::Services::{
    CloseServiceHandle, ControlService, OpenSCManagerW, OpenServiceW, QueryServiceStatus,
    StartServiceW, SC_HANDLE, SC_MANAGER_CONNECT, SERVICE_CONTROL_STOP, SERVICE_QUERY_STATUS,
    SERVICE_RUNNING, SERVICE_START, SERVICE_STATUS, SERVICE_STOP, SERVICE_STOPPED,
};

const PORTDOCTOR: &str = env!("CARGO_BIN_EXE_portdoctor");

fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(std::iter::once(0)).collect()
}

struct Sc(SC_HANDLE);

impl Drop for Sc {
    fn drop(&mut self) {
        // SAFETY: an open SCM handle, closed once.
        unsafe { CloseServiceHandle(self.0) };
    }
}

/// Opens the service, or the Win32 error.
fn open_service(name: &str, access: u32) -> Result<(Sc, Sc), u32> {
    // SAFETY: local SCM; connect access only.
    let scm = unsafe { OpenSCManagerW(null(), null(), SC_MANAGER_CONNECT) };
    assert!(!scm.is_null(), "OpenSCManagerW failed");
    let scm = Sc(scm);
    let w = wide(name);
    // SAFETY: a valid SCM handle and a NUL-terminated name.
    let h = unsafe { OpenServiceW(scm.0, w.as_ptr(), access) };
    if h.is_null() {
        // SAFETY: no preconditions.
        return Err(unsafe { GetLastError() });
    }
    Ok((scm, Sc(h)))
}

fn status(service: &Sc) -> SERVICE_STATUS {
    // SAFETY: SERVICE_STATUS is plain data; zero is a valid value.
    let mut s: SERVICE_STATUS = unsafe { std::mem::zeroed() };
    // SAFETY: a handle with SERVICE_QUERY_STATUS and a status to fill.
    let ok = unsafe { QueryServiceStatus(service.0, &raw mut s) };
    assert!(ok != 0, "QueryServiceStatus failed");
    s
}

fn wait_state(service: &Sc, state: u32, what: &str) -> SERVICE_STATUS {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = status(service);
        if s.dwCurrentState == state {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "the service did not reach {what} within 60 s (state {})",
            s.dwCurrentState
        );
        thread::sleep(Duration::from_millis(100));
    }
}

fn run(exe: &Path, args: &[&str]) -> Output {
    Command::new(exe)
        .args(args)
        .output()
        .expect("running portdoctor.exe")
}

/// The Rust-std shim Wine needs (bcryptprimitives.dll), from `WINE_SHIM_DIR` (a Unix path,
/// drive Z: under Wine) or WINEPATH: a process services.exe starts does not inherit the test's
/// WINEPATH, so the DLL goes next to the copied executable (the application folder is searched
/// first). On real Windows neither is set and nothing is needed.
fn shim_dll() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Ok(unix) = std::env::var("WINE_SHIM_DIR") {
        dirs.push(PathBuf::from(format!("Z:{}", unix.replace('/', "\\"))));
    }
    if let Ok(path) = std::env::var("WINEPATH") {
        dirs.extend(path.split(';').map(PathBuf::from));
    }
    dirs.into_iter()
        .map(|d| d.join("bcryptprimitives.dll"))
        .find(|p| p.is_file())
}

/// Uninstalls on drop, so a failed assertion leaves no service behind in the Wine prefix.
struct Installed<'a> {
    exe: &'a Path,
    name: &'a str,
}

impl Drop for Installed<'_> {
    fn drop(&mut self) {
        let _ = run(self.exe, &["service", "uninstall", "--name", self.name]);
    }
}

#[test]
fn service_installs_starts_serves_stops_and_uninstalls() {
    let dir = std::env::temp_dir().join(format!("portdoctor svc test {}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp folder");
    let exe = dir.join("portdoctor.exe");
    std::fs::copy(PORTDOCTOR, &exe).expect("copying portdoctor.exe");
    match shim_dll() {
        Some(dll) => {
            std::fs::copy(&dll, dir.join("bcryptprimitives.dll")).expect("copying the shim DLL");
        }
        None => assert!(
            std::env::var_os("WINE_SHIM_DIR").is_none(),
            "under Wine, but bcryptprimitives.dll is not in WINE_SHIM_DIR"
        ),
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let name = format!("portdoctor-test-{}", std::process::id());
    let listen = addr.to_string();

    let out = run(
        &exe,
        &[
            "service",
            "install",
            "--name",
            &name,
            "--",
            "--listen",
            &listen,
            "--min-interval",
            "1s",
        ],
    );
    let installed = Installed {
        exe: &exe,
        name: &name,
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "install failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The binary path: the executable quoted (its folder has blanks), then the serve arguments.
    let expected = format!(
        "\"{}\" serve --service --listen {listen} --min-interval 1s",
        exe.display()
    );
    assert!(stdout.contains(&expected), "{stdout}\nwanted {expected}");

    // A second install under the same name is refused (exit 3) with a hint.
    let again = run(&exe, &["service", "install", "--name", &name]);
    assert_eq!(again.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("exists already"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    let (_scm, service) = open_service(&name, SERVICE_START | SERVICE_STOP | SERVICE_QUERY_STATUS)
        .expect("opening the installed service");
    assert_eq!(status(&service).dwCurrentState, SERVICE_STOPPED);
    // SAFETY: a handle with SERVICE_START; no arguments.
    let started = unsafe { StartServiceW(service.0, 0, null()) };
    assert!(started != 0, "StartServiceW failed");
    wait_state(&service, SERVICE_RUNNING, "RUNNING");

    let deadline = Instant::now() + Duration::from_secs(60);
    let metrics = loop {
        if let Ok((200, text)) = get(addr, "/metrics") {
            break text;
        }
        let s = status(&service);
        assert_eq!(
            s.dwCurrentState, SERVICE_RUNNING,
            "the service stopped early (exit {} / {})",
            s.dwWin32ExitCode, s.dwServiceSpecificExitCode
        );
        assert!(
            Instant::now() < deadline,
            "no /metrics from the service within 60 s"
        );
        thread::sleep(Duration::from_millis(200));
    };
    assert!(
        metrics.contains("portdoctor_build_info{version=") && metrics.contains("os=\"windows\""),
        "{metrics}"
    );

    // SERVICE_CONTROL_STOP: serve stops as on Ctrl-C and the service reports exit code 0.
    // SAFETY: SERVICE_STATUS is plain data.
    let mut st: SERVICE_STATUS = unsafe { std::mem::zeroed() };
    // SAFETY: a handle with SERVICE_STOP and a status to fill.
    let sent = unsafe { ControlService(service.0, SERVICE_CONTROL_STOP, &raw mut st) };
    assert!(sent != 0, "ControlService(STOP) failed");
    let stopped = wait_state(&service, SERVICE_STOPPED, "STOPPED");
    assert_eq!(
        (stopped.dwWin32ExitCode, stopped.dwServiceSpecificExitCode),
        (0, 0),
        "the service stopped with an error"
    );
    // The listener is gone.
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "still listening 30 s after the stop"
        );
        thread::sleep(Duration::from_millis(200));
    }
    drop(service);

    std::mem::forget(installed);
    let out = run(&exe, &["service", "uninstall", "--name", &name]);
    assert!(
        out.status.success(),
        "uninstall failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        open_service(&name, SERVICE_QUERY_STATUS).err(),
        Some(ERROR_SERVICE_DOES_NOT_EXIST),
        "the service is still registered after uninstall"
    );
    let again = run(&exe, &["service", "uninstall", "--name", &name]);
    assert_eq!(again.status.code(), Some(3));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn serve_service_outside_the_scm_is_a_usage_error() {
    let out = Command::new(PORTDOCTOR)
        .args(["serve", "--service", "--listen", "127.0.0.1:0"])
        .output()
        .expect("running portdoctor.exe");
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Service Control Manager"), "{err}");
}

#[test]
fn install_refuses_serve_arguments_serve_would_refuse() {
    let out = Command::new(PORTDOCTOR)
        .args([
            "service",
            "install",
            "--name",
            "portdoctor-never",
            "--",
            "--lisen",
            "x",
        ])
        .output()
        .expect("running portdoctor.exe");
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--lisen"), "{err}");
    assert_eq!(
        open_service("portdoctor-never", SERVICE_QUERY_STATUS).err(),
        Some(ERROR_SERVICE_DOES_NOT_EXIST)
    );
}
