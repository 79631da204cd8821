//! A test stand-in for Windows' `netsh.exe` (the Wine tests put it where a tool must not be
//! found, or point test builds at it with `PORTDOCTOR_TEST_SYSTEM_DIR`). It appends its
//! arguments to the file named by `PORTDOCTOR_STAND_IN_LOG`; `int ipv4|ipv6 set dynamicport
//! tcp|udp start=S num=N` stores the range in the file named by `PORTDOCTOR_STAND_IN_STATE`
//! (lines `ipv4 tcp S N`), and `show dynamicport tcp|udp` prints the stored range, or one no
//! real host has (start 1111, 2222 ports), so a run of it is visible in portdoctor's output.
//!
//! Copied as `powershell.exe` it answers portdoctor's two one-liners instead: `Get-NetTCPSetting`
//! with `InternetCustom,1111,2222,0,0`, and `Get-NetTCPConnection -State Bound` with the BOUND
//! sockets `PORTDOCTOR_STAND_IN_BOUND=N:PID:FIRST_PORT` describes (on 127.0.0.1), then the end
//! line.

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
    let me = std::env::current_exe().ok();
    let name = me
        .as_ref()
        .and_then(|p| p.file_stem())
        .map(|n| n.to_string_lossy().to_ascii_lowercase());
    if name.as_deref() == Some("powershell") {
        let script = args.join(" ");
        if script.contains("Get-NetTCPSetting") {
            println!("InternetCustom,1111,2222,0,0");
        } else if script.contains("Get-NetTCPConnection") {
            let spec = std::env::var("PORTDOCTOR_STAND_IN_BOUND").unwrap_or_default();
            let f: Vec<u32> = spec.split(':').filter_map(|x| x.parse().ok()).collect();
            if let [n, pid, first] = f[..] {
                for i in 0..n {
                    println!("127.0.0.1,{},{pid}", first + i);
                }
            }
            println!("portdoctor:end");
        }
        return;
    }
    let version = args
        .iter()
        .find(|a| a.eq_ignore_ascii_case("ipv4") || a.eq_ignore_ascii_case("ipv6"))
        .map_or("ipv4".to_string(), |v| v.to_ascii_lowercase());
    let protocol = if args.iter().any(|a| a.eq_ignore_ascii_case("udp")) {
        "udp"
    } else {
        "tcp"
    };
    let state = std::env::var_os("PORTDOCTOR_STAND_IN_STATE");
    let stored = |v: &str| -> Option<(u32, u32)> {
        let text = std::fs::read_to_string(state.as_ref()?).ok()?;
        text.lines().rev().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 4 && f[0] == v && f[1] == protocol)
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
        })
    };
    let dynamicport = args.iter().any(|a| a.eq_ignore_ascii_case("dynamicport"));
    if dynamicport && args.iter().any(|a| a.eq_ignore_ascii_case("set")) {
        let value = |k: &str| {
            args.iter()
                .find_map(|a| a.strip_prefix(k))
                .and_then(|v| v.parse::<u32>().ok())
        };
        let (Some(start), Some(num), Some(path)) = (value("start="), value("num="), &state) else {
            std::process::exit(1);
        };
        let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        else {
            std::process::exit(1);
        };
        let _ = writeln!(f, "{version} {protocol} {start} {num}");
        println!("Ok.");
    } else if dynamicport {
        let (start, num) = stored(&version).unwrap_or((1111, 2222));
        println!("\nProtocol {protocol} Dynamic Port Range\n---------------------------------\nStart Port      : {start}\nNumber of Ports : {num}\n");
    }
}
