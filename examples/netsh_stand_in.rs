//! A test stand-in for Windows' `netsh.exe` (tests/windows.rs copies it where a tool must not be
//! found, or points portdoctor at it on purpose): it appends its arguments to the file named by
//! `PORTDOCTOR_STAND_IN_LOG` and answers `show dynamicport` with a range no real host has
//! (start 1111, 2222 ports), so a run of it is visible in portdoctor's output too.

use std::io::Write;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(log) = std::env::var_os("PORTDOCTOR_STAND_IN_LOG") {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            let _ = writeln!(f, "{}", args.join(" "));
        }
    }
    if args.iter().any(|a| a.eq_ignore_ascii_case("dynamicport")) {
        println!("\nProtocol tcp Dynamic Port Range\n---------------------------------\nStart Port      : 1111\nNumber of Ports : 2222\n");
    }
}
