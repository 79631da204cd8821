//! `GetTcpStatisticsEx` per IP version (not `GetTcpStatisticsEx2`: a Wine 8 stub that aborts
//! the process, and the 32-bit counters are enough for a snapshot).

use windows_sys::Win32::NetworkManagement::IpHelper::{GetTcpStatisticsEx, MIB_TCPSTATS_LH};
use windows_sys::Win32::Networking::WinSock::{AF_INET, AF_INET6};

/// Counters named as in Linux's `/proc/net/snmp` Tcp line, so the report shows them alike.
pub fn read(ipv6: bool) -> Option<Vec<(&'static str, i64)>> {
    let af = u32::from(if ipv6 { AF_INET6 } else { AF_INET });
    let mut st = MIB_TCPSTATS_LH::default();
    // SAFETY: `st` is a valid, writable MIB_TCPSTATS_LH that the call fills in.
    let rc = unsafe { GetTcpStatisticsEx(&raw mut st, af) };
    if rc != 0 {
        return None;
    }
    // SAFETY: the union holds one DWORD either way (dwRtoAlgorithm / RtoAlgorithm).
    let rto_algorithm = unsafe { st.Anonymous.dwRtoAlgorithm };
    Some(vec![
        ("RtoAlgorithm", i64::from(rto_algorithm)),
        ("RtoMin", i64::from(st.dwRtoMin)),
        ("RtoMax", i64::from(st.dwRtoMax)),
        // -1 = dynamic, as on Linux.
        ("MaxConn", i64::from(st.dwMaxConn as i32)),
        ("ActiveOpens", i64::from(st.dwActiveOpens)),
        ("PassiveOpens", i64::from(st.dwPassiveOpens)),
        ("AttemptFails", i64::from(st.dwAttemptFails)),
        ("EstabResets", i64::from(st.dwEstabResets)),
        ("CurrEstab", i64::from(st.dwCurrEstab)),
        ("InSegs", i64::from(st.dwInSegs)),
        ("OutSegs", i64::from(st.dwOutSegs)),
        ("RetransSegs", i64::from(st.dwRetransSegs)),
        ("InErrs", i64::from(st.dwInErrs)),
        ("OutRsts", i64::from(st.dwOutRsts)),
        ("NumConns", i64::from(st.dwNumConns)),
    ])
}
