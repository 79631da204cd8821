//! Windows plans: the exact netsh / reg.exe / PowerShell commands, their undo commands, and
//! what needs a reboot (pure; tested on Linux with fixture snapshots). Applying them to the
//! registry from portdoctor itself is not implemented yet: the plan prints what to run.
//!
//! netsh takes `start=S num=N` with the last port `S + N - 1`: `start=32768 num=32768` is
//! 32768–65535, while the common advice `start=32767 num=32768` ends at 65534.

use super::plan::{capacity_point, CapacityPoint, Change, Goal, Plan, Profile, WantedValue};
use crate::collect::windows_text::derive_settings;
use crate::knobs::{self, tcpip_value_range, Activation, Confidence, KnobValue};
use crate::rules;
use crate::snapshot::{DynamicPorts, PortRange, Snapshot, WindowsSettings};

/// Lowest start an automatic Windows plan uses (as on Linux: below 10000 live services).
pub const AUTO_START_FLOOR: u16 = 10_000;
/// TcpTimedWaitDelay an automatic plan goes down to (the documented minimum before 8.1).
pub const AUTO_TIME_WAIT: u32 = 30;

fn dynamic(w: &WindowsSettings, id: &str) -> Option<DynamicPorts> {
    match id {
        "netsh.ipv4.dynamicport.tcp" => w.dynamic_ports_v4,
        "netsh.ipv6.dynamicport.tcp" => w.dynamic_ports_v6,
        "netsh.ipv4.dynamicport.udp" => w.udp_dynamic_ports_v4,
        "netsh.ipv6.dynamicport.udp" => w.udp_dynamic_ports_v6,
        _ => None,
    }
}

fn registry_value(w: &WindowsSettings, name: &str) -> Option<u32> {
    let r = w.registry.as_ref()?;
    match name {
        "TcpTimedWaitDelay" => r.tcp_timed_wait_delay,
        "MaxUserPort" => r.max_user_port,
        "StrictTimeWaitSeqCheck" => r.strict_time_wait_seq_check,
        "TcpNumConnections" => r.tcp_num_connections,
        "MaxFreeTcbs" => r.max_free_tcbs,
        "MaxHashTableSize" => r.max_hash_table_size,
        _ => None,
    }
}

fn set_registry(w: &mut WindowsSettings, name: &str, v: u32) {
    let r = w.registry.get_or_insert_with(Default::default);
    let slot = match name {
        "TcpTimedWaitDelay" => &mut r.tcp_timed_wait_delay,
        "MaxUserPort" => &mut r.max_user_port,
        "StrictTimeWaitSeqCheck" => &mut r.strict_time_wait_seq_check,
        "TcpNumConnections" => &mut r.tcp_num_connections,
        "MaxFreeTcbs" => &mut r.max_free_tcbs,
        "MaxHashTableSize" => &mut r.max_hash_table_size,
        _ => return,
    };
    *slot = Some(v);
}

/// The value a Windows knob has in the snapshot, as text (`None` = not read).
fn current_text(w: &WindowsSettings, id: &str) -> Option<String> {
    if let Some(d) = dynamic(w, id) {
        return Some(start_num_text(d));
    }
    if id == "NetTCPSetting.AutoReusePortRange" {
        return w.auto_reuse_ports.map(start_num_text);
    }
    let name = id.strip_prefix("tcpip.")?;
    w.registry.as_ref()?;
    Some(registry_value(w, name).map_or_else(|| "(absent: OS default)".into(), |v| v.to_string()))
}

/// The pasteable command that sets the auto-reuse range of the `InternetCustom` TCP setting
/// (cmd or PowerShell; Windows Server 2016 and later). 0 ports turns it off.
fn auto_reuse_command(start: u16, num: u32) -> String {
    format!(
        "powershell -NoProfile -NonInteractive -Command \"Set-NetTCPSetting -SettingName InternetCustom -AutoReusePortRangeStartPort {start} -AutoReusePortRangeNumberOfPorts {num}\""
    )
}

fn start_num_text(d: DynamicPorts) -> String {
    match d.range() {
        Some(r) => format!("start={} num={} ({}-{})", d.start, d.count, r.low, r.high),
        None => format!("start={} num={}", d.start, d.count),
    }
}

/// Applies one wanted value to the Windows settings.
fn put(w: &mut WindowsSettings, id: &str, v: &KnobValue) {
    match (id, v) {
        ("netsh.ipv4.dynamicport.tcp", KnobValue::StartNum { start, num }) => {
            w.dynamic_ports_v4 = Some(DynamicPorts {
                start: *start,
                count: *num,
            });
        }
        ("netsh.ipv6.dynamicport.tcp", KnobValue::StartNum { start, num }) => {
            w.dynamic_ports_v6 = Some(DynamicPorts {
                start: *start,
                count: *num,
            });
        }
        (id, KnobValue::Int(i)) if id.starts_with("tcpip.") => {
            set_registry(w, &id["tcpip.".len()..], *i as u32);
        }
        (id, KnobValue::StartNum { start, num }) if id.ends_with(".dynamicport.udp") => {
            let d = Some(DynamicPorts {
                start: *start,
                count: *num,
            });
            if id.contains("ipv4") {
                w.udp_dynamic_ports_v4 = d;
            } else {
                w.udp_dynamic_ports_v6 = d;
            }
        }
        ("NetTCPSetting.AutoReusePortRange", KnobValue::StartNum { start, num }) => {
            w.auto_reuse_ports = Some(DynamicPorts {
                start: *start,
                count: *num,
            });
        }
        _ => {}
    }
}

/// The plan lines of a UDP dynamic range (docs/udp.md): the netsh command, its undo from the
/// range read, and refusals for UDP excluded ranges the new range would newly cover.
fn udp_dynamic_lines(
    w0: &WindowsSettings,
    id: &str,
    start: u16,
    num: u32,
    commands: &mut Vec<String>,
    undo: &mut Vec<String>,
    refusals: &mut Vec<String>,
) {
    let v = if id.contains("ipv4") { "ipv4" } else { "ipv6" };
    let new = PortRange {
        low: start,
        high: (u32::from(start) + num.max(1) - 1).min(65_535) as u16,
    };
    let old = dynamic(w0, id).and_then(DynamicPorts::range);
    let excluded = if v == "ipv4" {
        &w0.udp_excluded_ports_v4
    } else {
        &w0.udp_excluded_ports_v6
    };
    for r in excluded.iter().map(|e| e.range()) {
        if r.intersect(new).is_some() && old.is_none_or(|o| o.intersect(r).is_none()) {
            refusals.push(format!(
                "{id}: the new range {}-{} overlaps the excluded UDP port range {}-{}; choose a range without it, or remove the exclusion first (netsh int {v} delete excludedportrange protocol=udp startport={} numberofports={})",
                new.low, new.high, r.low, r.high, r.low, r.len()
            ));
        }
    }
    commands.push(format!(
        "netsh int {v} set dynamicport udp start={start} num={num}"
    ));
    undo.push(match dynamic(w0, id) {
        Some(d) => format!(
            "netsh int {v} set dynamicport udp start={} num={}",
            d.start, d.count
        ),
        None => format!(
            "netsh int {v} show dynamicport udp  (portdoctor could not read the prior range: note it before applying)"
        ),
    });
}

fn start_num(start: u16, high: u16) -> KnobValue {
    KnobValue::StartNum {
        start,
        num: u32::from(high) - u32::from(start) + 1,
    }
}

fn point(snapshot: &Snapshot, w: &WindowsSettings, lifetime: f64) -> CapacityPoint {
    capacity_point(snapshot, &derive_settings(w), lifetime)
}

/// Automatic wants for a profile or a target rate (explicit `--set` values come on top).
fn auto_wants(
    snapshot: &Snapshot,
    w: &WindowsSettings,
    goal: &Goal,
    lifetime: f64,
    out: &mut Vec<(String, KnobValue, String)>,
    refusals: &mut Vec<String>,
    notes: &mut Vec<String>,
) {
    let cur = w
        .dynamic_ports_v4
        .and_then(DynamicPorts::range)
        .unwrap_or(rules::WINDOWS_DEFAULT_RANGE);
    let range_both = |out: &mut Vec<(String, KnobValue, String)>, r: PortRange, why: &str| {
        for id in ["netsh.ipv4.dynamicport.tcp", "netsh.ipv6.dynamicport.tcp"] {
            out.push((id.into(), start_num(r.low, r.high), why.into()));
        }
    };
    if let Some(p) = goal.profile {
        let (low, why) = match p {
            Profile::Conservative => (
                rules::WINDOWS_WIDE_RANGE.low,
                "profile conservative: 32768-65535 for IPv4 and IPv6 (start=32768 num=32768, not the off-by-one start=32767)",
            ),
            Profile::ClientHeavy | Profile::Proxy => (
                AUTO_START_FLOOR,
                "profile: the widest range that keeps ports below 10000 free for services",
            ),
        };
        let r = PortRange {
            low: cur.low.min(low),
            high: 65_535,
        };
        range_both(
            out,
            r,
            &why.replace("profile:", &format!("profile {}:", p.name())),
        );
        if p != Profile::Conservative
            && registry_value(w, "TcpTimedWaitDelay").is_none_or(|v| v > AUTO_TIME_WAIT)
        {
            out.push((
                "tcpip.TcpTimedWaitDelay".into(),
                KnobValue::Int(AUTO_TIME_WAIT.into()),
                format!(
                    "profile {}: a closed connection holds its port {AUTO_TIME_WAIT} s instead of the default {} s",
                    p.name(),
                    rules::WINDOWS_TIME_WAIT_SECONDS_LONG
                ),
            ));
        }
    }
    if let Some(rate) = goal.target_rate_per_s {
        let mut ws = w.clone();
        for (id, v, _) in out.iter() {
            put(&mut ws, id, v);
        }
        let have = point(snapshot, &ws, lifetime);
        if have.rate_per_pool_per_s.is_some_and(|r| r >= rate) {
            notes.push(format!(
                "--target-rate {rate}/s: the settings already sustain {:.0}/s host-wide",
                have.rate_per_pool_per_s.unwrap_or(0.0)
            ));
            return;
        }
        // Lower the start (keep 65535 as the end) until the rate fits; then shorten TIME_WAIT.
        let fits = |ws: &WindowsSettings| {
            point(snapshot, ws, lifetime)
                .rate_per_pool_per_s
                .is_some_and(|r| r >= rate)
        };
        let with_start = |ws: &WindowsSettings, start: u16| {
            let mut t = ws.clone();
            let v = start_num(start, 65_535);
            put(&mut t, "netsh.ipv4.dynamicport.tcp", &v);
            put(&mut t, "netsh.ipv6.dynamicport.tcp", &v);
            t
        };
        for delay in [None, Some(AUTO_TIME_WAIT)] {
            let mut base = ws.clone();
            if let Some(d) = delay {
                set_registry(&mut base, "TcpTimedWaitDelay", d);
            }
            if fits(&base) {
                out.push((
                    "tcpip.TcpTimedWaitDelay".into(),
                    KnobValue::Int(AUTO_TIME_WAIT.into()),
                    format!("--target-rate {rate}/s: no dynamic range holds enough ports for {} s of TIME_WAIT; {AUTO_TIME_WAIT} s does", rules::WINDOWS_TIME_WAIT_SECONDS_LONG),
                ));
                return;
            }
            let floor = AUTO_START_FLOOR.min(cur.low);
            if !fits(&with_start(&base, floor)) {
                continue;
            }
            // Highest start that still fits.
            let (mut lo, mut hi) = (floor, cur.low);
            while lo < hi {
                let mid = lo + (hi - lo).div_ceil(2);
                if fits(&with_start(&base, mid)) {
                    lo = mid;
                } else {
                    hi = mid - 1;
                }
            }
            range_both(
                out,
                PortRange {
                    low: lo,
                    high: 65_535,
                },
                &format!(
                    "--target-rate {rate}/s: the smallest wider range that sustains it host-wide"
                ),
            );
            if let Some(d) = delay {
                out.push((
                    "tcpip.TcpTimedWaitDelay".into(),
                    KnobValue::Int(d.into()),
                    format!(
                        "--target-rate {rate}/s: the range alone cannot hold {} s of TIME_WAIT",
                        rules::WINDOWS_TIME_WAIT_SECONDS_LONG
                    ),
                ));
            }
            return;
        }
        refusals.push(format!(
            "--target-rate {rate}/s cannot be reached with settings alone on Windows (range {AUTO_START_FLOOR}-65535, TcpTimedWaitDelay {AUTO_TIME_WAIT}): reuse connections (one shared HttpClient, keep-alive, pools), or an auto-reuse port range (Server 2016+; used by sockets with SO_REUSE_UNICASTPORT and by connect() without bind()); more local addresses help only with SO_PORT_SCALABILITY"
        ));
    }
}

/// Plans Windows changes: explicit `wanted` values (already checked against the knob base)
/// plus profile / target-rate values.
pub fn plan(
    snapshot: &Snapshot,
    goal: &Goal,
    wanted: &[WantedValue],
    lifetime: f64,
    mut notes: Vec<String>,
) -> Plan {
    let w0 = snapshot.windows.clone().unwrap_or_default();
    let build = w0.build;
    let mut refusals = Vec::new();
    let mut warnings = Vec::new();
    let mut list: Vec<(String, KnobValue, String)> = Vec::new();
    auto_wants(
        snapshot,
        &w0,
        goal,
        lifetime,
        &mut list,
        &mut refusals,
        &mut notes,
    );
    for wv in wanted {
        list.retain(|(id, _, _)| id != wv.knob.id);
        list.push((wv.knob.id.to_string(), wv.value.clone(), wv.reason.clone()));
    }
    list.sort_by_key(|(id, _, _)| knobs::KNOBS.iter().position(|k| k.id == id));

    let key = w0
        .registry
        .as_ref()
        .map_or(knobs::TCPIP_PARAMETERS_KEY.to_string(), |r| r.key.clone());
    let capacity_before = point(snapshot, &w0, lifetime);
    let mut w = w0.clone();
    let mut changes = Vec::new();
    let mut unchanged = Vec::new();
    let mut commands = Vec::new();
    let mut undo = Vec::new();
    let mut reboot = Vec::new();
    for (id, value, reason) in list {
        let Some(knob) = knobs::knob(&id) else {
            continue;
        };
        if knob.os != snapshot.os {
            refusals.push(format!("{id} is a Linux setting; this host runs Windows"));
            continue;
        }
        let current = current_text(&w0, &id);
        let same = match (&value, dynamic(&w0, &id)) {
            (KnobValue::StartNum { start, num }, Some(d)) => d.start == *start && d.count == *num,
            (KnobValue::Int(v), None) => id
                .strip_prefix("tcpip.")
                .and_then(|n| registry_value(&w0, n))
                .is_some_and(|c| u64::from(c) == *v),
            _ => false,
        };
        if same {
            unchanged.push(format!("{id} is already {value}"));
            continue;
        }
        let mut risks = vec![knob.tradeoff.to_string()];
        if knob.confidence == Confidence::Unverified {
            risks.push("unverified: measure before relying on it".into());
        }
        match (&id[..], &value) {
            (
                ipver @ ("netsh.ipv4.dynamicport.tcp" | "netsh.ipv6.dynamicport.tcp"),
                KnobValue::StartNum { start, num },
            ) => {
                let v = if ipver.contains("ipv4") {
                    "ipv4"
                } else {
                    "ipv6"
                };
                let high = u32::from(*start) + num - 1;
                let new = PortRange {
                    low: *start,
                    high: high as u16,
                };
                if high == 65_534 {
                    warnings.push(format!(
                        "{id}: start={start} num={num} ends at 65534, not 65535 (the common off-by-one); for a range up to 65535 use start={start} num={}",
                        num + 1
                    ));
                }
                let old = dynamic(&w0, &id).and_then(DynamicPorts::range);
                let excluded = if v == "ipv4" {
                    &w0.excluded_ports_v4
                } else {
                    &w0.excluded_ports_v6
                };
                for e in excluded {
                    let r = e.range();
                    let Some(part) = r.intersect(new) else {
                        continue;
                    };
                    let already = old.is_some_and(|o| o.intersect(r).is_some());
                    if already {
                        warnings.push(format!(
                            "{id}: excluded range {}-{}{} stays inside the dynamic range and keeps {} ports out of it",
                            r.low, r.high, if e.administered { " (administered)" } else { "" }, part.len()
                        ));
                    } else {
                        refusals.push(format!(
                            "{id}: the new range {}-{} overlaps the excluded port range {}-{}{}: those ports are reserved ({}). Choose a range without them, or remove the exclusion first (netsh int {v} delete excludedportrange protocol=tcp startport={} numberofports={})",
                            new.low, new.high, r.low, r.high,
                            if e.administered { " (administered)" } else { "" },
                            if e.administered { "by an administrator" } else { "by Hyper-V, WSL, Docker or WinNAT" },
                            r.low, r.len()
                        ));
                    }
                }
                let newly: Vec<u16> = snapshot
                    .listen_ports()
                    .into_iter()
                    .filter(|&p| new.contains(p) && !old.is_some_and(|o| o.contains(p)))
                    .filter(|&p| !excluded.iter().any(|e| e.range().contains(p)))
                    .collect();
                if !newly.is_empty() {
                    refusals.push(format!(
                        "{id}: the new range {}-{} covers port(s) {} that services listen on; exclude them first (netsh int {v} add excludedportrange protocol=tcp startport=P numberofports=1) or choose another range",
                        new.low, new.high,
                        newly.iter().take(10).map(u16::to_string).collect::<Vec<_>>().join(", ")
                    ));
                }
                commands.push(format!(
                    "netsh int {v} set dynamicport tcp start={start} num={num}"
                ));
                match dynamic(&w0, &id) {
                    Some(d) => undo.push(format!(
                        "netsh int {v} set dynamicport tcp start={} num={}",
                        d.start, d.count
                    )),
                    // No change without its undo line.
                    None => refusals.push(format!(
                        "{id}: the current {v} dynamic range could not be read (netsh int {v} show dynamicport tcp), so there would be no undo: read it first"
                    )),
                }
            }
            (tcpip, KnobValue::Int(i)) if tcpip.starts_with("tcpip.") => {
                let name = &tcpip["tcpip.".len()..];
                if let Some((lo, hi)) = tcpip_value_range(name, build) {
                    if !(u64::from(lo)..=u64::from(hi)).contains(i) {
                        refusals.push(format!(
                            "{id}={i} is outside {lo}..={hi} on this Windows build ({})",
                            build.map_or("unknown".into(), |b| b.to_string())
                        ));
                    }
                }
                commands.push(format!(
                    "reg add \"{key}\" /v {name} /t REG_DWORD /d {i} /f"
                ));
                if w0.registry.is_none() {
                    // Absent and unreadable differ: a `reg delete` undo only for a value known
                    // to be absent.
                    refusals.push(format!(
                        "{id}: the registry key {key} could not be read, so the prior value is unknown and there would be no correct undo"
                    ));
                } else {
                    undo.push(match registry_value(&w0, name) {
                        Some(old) => {
                            format!("reg add \"{key}\" /v {name} /t REG_DWORD /d {old} /f")
                        }
                        None => format!("reg delete \"{key}\" /v {name} /f"),
                    });
                }
            }
            (udp, KnobValue::StartNum { start, num }) if udp.ends_with(".dynamicport.udp") => {
                udp_dynamic_lines(
                    &w0,
                    udp,
                    *start,
                    *num,
                    &mut commands,
                    &mut undo,
                    &mut refusals,
                );
            }
            ("NetTCPSetting.AutoReusePortRange", KnobValue::StartNum { start, num }) => {
                commands.push(auto_reuse_command(*start, *num));
                // Undo: the prior range when it was read, else off (0 ports).
                match w0.auto_reuse_ports {
                    Some(p) if p.count > 0 => undo.push(auto_reuse_command(p.start, p.count)),
                    Some(_) => undo.push(auto_reuse_command(*start, 0)),
                    None => {
                        warnings.push(format!("{id}: the current auto-reuse range could not be read (Get-NetTCPSetting); the undo turns auto-reuse off (0 ports)"));
                        undo.push(auto_reuse_command(*start, 0));
                    }
                }
                if *num > 0 {
                    let new = PortRange {
                        low: *start,
                        high: (u32::from(*start) + *num - 1).min(65_535) as u16,
                    };
                    match w.dynamic_ports_v4.and_then(DynamicPorts::range) {
                        Some(d) if d.low <= new.low && new.high <= d.high && new != d => {}
                        Some(d) => refusals.push(format!(
                            "{id}: the auto-reuse range {}-{} must be a strict subset of the dynamic range {}-{} (the feature authors' advice, .NET 6 networking improvements post); plan the dynamic range first",
                            new.low, new.high, d.low, d.high
                        )),
                        None => refusals.push(format!(
                            "{id}: the dynamic range is unknown, so the auto-reuse range cannot be checked to lie strictly inside it"
                        )),
                    }
                }
            }
            _ => {}
        }
        if knob.activation == Activation::Reboot {
            reboot.push(id.clone());
        }
        put(&mut w, &id, &value);
        changes.push(Change {
            knob: knob.id,
            current,
            proposed: match value {
                KnobValue::StartNum { start, num } => {
                    start_num_text(DynamicPorts { start, count: num })
                }
                ref v => v.text(),
            },
            value,
            reason,
            activation: knob.activation,
            takes_effect: match knob.activation {
                Activation::Reboot => "after a reboot",
                Activation::Immediate => "at once, for new connections (no reboot)",
                Activation::NewConnections => "for new connections",
            },
            confidence: knob.confidence,
            capacity_after: point(snapshot, &w, lifetime),
            risks,
        });
    }
    let mut windows_steps = Vec::new();
    if !reboot.is_empty() {
        windows_steps.push(format!(
            "reboot Windows: {} take(s) effect only after a restart (no service restart is enough)",
            reboot.join(", ")
        ));
    }
    if changes.iter().any(|c| c.knob.starts_with("netsh.")) {
        windows_steps
            .push("netsh dynamicport changes apply at once to new connections; no reboot".into());
    }
    if !undo.is_empty() {
        windows_steps.push("to undo:".into());
        windows_steps.extend(undo.into_iter().map(|u| format!("  {u}")));
    }
    if changes.is_empty() && refusals.is_empty() {
        notes.push("nothing to change: every value is already as planned".into());
    }
    notes.push("`tune apply --yes` (elevated) applies the registry and netsh changes with a backup in %ProgramData%\\portdoctor\\backups and `tune rollback` undoes them; the auto-reuse range is not applied by portdoctor yet: run its command in an elevated PowerShell".into());
    Plan {
        schema: "portdoctor.tune-plan/v1",
        os: snapshot.os,
        netns: None,
        hostname: snapshot.host.hostname.clone(),
        os_version: snapshot.host.os_version.clone(),
        goal: goal.clone(),
        changes,
        unchanged,
        capacity_before,
        capacity_after: point(snapshot, &w, lifetime),
        refusals,
        warnings,
        notes,
        commands,
        dropin: None,
        windows_steps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::SnapshotBuilder;
    use crate::snapshot::ExcludedRange;
    use crate::tune::plan::plan as make_plan;

    fn set(k: &str, v: &str) -> Goal {
        Goal {
            sets: vec![(k.into(), v.into())],
            ..Goal::default()
        }
    }

    #[test]
    fn netsh_start_num_arithmetic_and_off_by_one() {
        let s = SnapshotBuilder::windows().build();
        let p = make_plan(
            &s,
            &set("netsh.ipv4.dynamicport.tcp", "start=32768 num=32768"),
        )
        .unwrap();
        assert!(!p.is_refused(), "{:?}", p.refusals);
        assert_eq!(
            p.commands,
            vec!["netsh int ipv4 set dynamicport tcp start=32768 num=32768"]
        );
        assert_eq!(p.changes[0].proposed, "start=32768 num=32768 (32768-65535)");
        assert_eq!(
            p.changes[0].current.as_deref(),
            Some("start=49152 num=16384 (49152-65535)")
        );
        assert_eq!(p.capacity_after.usable_ports, Some(32_768));
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        assert!(p
            .windows_steps
            .iter()
            .any(|s| s.contains("start=49152 num=16384")));
        let p = make_plan(
            &s,
            &set("netsh.ipv4.dynamicport.tcp", "start=32767 num=32768"),
        )
        .unwrap();
        assert!(
            p.warnings
                .iter()
                .any(|w| w.contains("65534") && w.contains("num=32769")),
            "{:?}",
            p.warnings
        );
        let e = make_plan(
            &s,
            &set("netsh.ipv4.dynamicport.tcp", "start=32768 num=32769"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("above 65536") && e.contains("netsh.ipv4.dynamicport.tcp"),
            "{e}"
        );
    }

    #[test]
    fn excluded_range_overlap_is_refused_unless_already_inside() {
        let s = SnapshotBuilder::windows()
            .windows_settings(|w| {
                w.excluded_ports_v4 = vec![
                    ExcludedRange {
                        low: 50000,
                        high: 50059,
                        administered: true,
                    },
                    ExcludedRange {
                        low: 20000,
                        high: 20099,
                        administered: false,
                    },
                ];
            })
            .build();
        let p = make_plan(
            &s,
            &set("netsh.ipv4.dynamicport.tcp", "start=10000 num=55536"),
        )
        .unwrap();
        assert!(p.is_refused());
        assert!(
            p.refusals
                .iter()
                .any(|r| r.contains("20000-20099") && r.contains("Hyper-V")),
            "{:?}",
            p.refusals
        );
        assert!(
            p.warnings.iter().any(|w| w.contains("50000-50059")),
            "{:?}",
            p.warnings
        );
        let p = make_plan(
            &s,
            &set("netsh.ipv4.dynamicport.tcp", "start=32768 num=32768"),
        )
        .unwrap();
        assert!(!p.is_refused(), "{:?}", p.refusals);
    }

    #[test]
    fn registry_commands_undo_and_reboot() {
        let s = SnapshotBuilder::windows().build();
        let p = make_plan(&s, &set("tcpip.TcpTimedWaitDelay", "30")).unwrap();
        assert_eq!(
            p.commands,
            vec![
                r#"reg add "HKLM\SYSTEM\CurrentControlSet\Services\Tcpip\Parameters" /v TcpTimedWaitDelay /t REG_DWORD /d 30 /f"#
            ]
        );
        assert!(p.windows_steps[0].starts_with("reboot Windows: tcpip.TcpTimedWaitDelay"));
        assert!(p.windows_steps.iter().any(|s| s.contains(r#"reg delete "HKLM\SYSTEM\CurrentControlSet\Services\Tcpip\Parameters" /v TcpTimedWaitDelay /f"#)));
        // 16,384 ports, 120 s → 30 s.
        // TcpTimedWaitDelay absent: the longer documented default, 240 s.
        assert!((p.capacity_before.port_hold_seconds - 240.0).abs() < 1e-9);
        assert!((p.capacity_after.port_hold_seconds - 30.0).abs() < 1e-9);
        // 2 s is fine on Server 2022, not on 2008 R2 (build 7601).
        let old = SnapshotBuilder::windows()
            .windows_settings(|w| w.build = Some(7601))
            .build();
        let p = make_plan(&old, &set("tcpip.TcpTimedWaitDelay", "5")).unwrap();
        assert!(
            p.refusals.iter().any(|r| r.contains("30..=300")),
            "{:?}",
            p.refusals
        );
        assert!(make_plan(&s, &set("net.ipv4.tcp_tw_reuse", "1"))
            .unwrap()
            .is_refused());
    }

    /// Issue 17 item 5, the plan: the auto-reuse range is a strict subset of the dynamic range,
    /// its command names -SettingName, its undo restores the prior range or sets 0 ports, and
    /// no change is planned whose prior value could not be read.
    #[test]
    fn auto_reuse_and_unknown_priors() {
        let s = SnapshotBuilder::windows()
            .windows_settings(|w| {
                w.auto_reuse_ports = Some(DynamicPorts { start: 0, count: 0 });
            })
            .build();
        let p = make_plan(
            &s,
            &set("NetTCPSetting.AutoReusePortRange", "start=60000 num=5536"),
        )
        .unwrap();
        assert!(!p.is_refused(), "{:?}", p.refusals);
        assert_eq!(
            p.commands,
            vec!["powershell -NoProfile -NonInteractive -Command \"Set-NetTCPSetting -SettingName InternetCustom -AutoReusePortRangeStartPort 60000 -AutoReusePortRangeNumberOfPorts 5536\""]
        );
        assert!(
            p.windows_steps
                .iter()
                .any(|l| l.contains("-AutoReusePortRangeNumberOfPorts 0\"")),
            "{:?}",
            p.windows_steps
        );
        // The whole dynamic range, or outside it: refused.
        for v in ["start=49152 num=16384", "start=20000 num=1000"] {
            let p = make_plan(&s, &set("NetTCPSetting.AutoReusePortRange", v)).unwrap();
            assert!(
                p.refusals.iter().any(|r| r.contains("strict subset")),
                "{v}: {:?}",
                p.refusals
            );
        }
        // A prior range is restored by the undo.
        let on = SnapshotBuilder::windows()
            .windows_settings(|w| {
                w.auto_reuse_ports = Some(DynamicPorts {
                    start: 64000,
                    count: 1000,
                });
            })
            .build();
        let p = make_plan(
            &on,
            &set("NetTCPSetting.AutoReusePortRange", "start=60000 num=5536"),
        )
        .unwrap();
        assert!(p.windows_steps.iter().any(|l| l
            .contains("-AutoReusePortRangeStartPort 64000 -AutoReusePortRangeNumberOfPorts 1000")));
        // Unreadable registry key: no `reg delete` undo, a refusal.
        let unreadable = SnapshotBuilder::windows()
            .windows_settings(|w| w.registry = None)
            .build();
        let p = make_plan(&unreadable, &set("tcpip.TcpTimedWaitDelay", "30")).unwrap();
        assert!(p.is_refused(), "{:?}", p.refusals);
        assert!(!p.windows_steps.iter().any(|l| l.contains("reg delete")));
        // Unknown dynamic range: no netsh change without its undo line.
        let no_range = SnapshotBuilder::windows()
            .windows_settings(|w| w.dynamic_ports_v6 = None)
            .build();
        let p = make_plan(
            &no_range,
            &set("netsh.ipv6.dynamicport.tcp", "start=32768 num=32768"),
        )
        .unwrap();
        assert!(
            p.refusals.iter().any(|r| r.contains("no undo")),
            "{:?}",
            p.refusals
        );
    }

    #[test]
    fn profiles_and_target_rate() {
        let s = SnapshotBuilder::windows().listen("0.0.0.0", 445).build();
        let p = make_plan(
            &s,
            &Goal {
                profile: Some(Profile::Conservative),
                ..Goal::default()
            },
        )
        .unwrap();
        assert!(!p.is_refused(), "{:?}", p.refusals);
        assert_eq!(
            p.commands,
            vec![
                "netsh int ipv4 set dynamicport tcp start=32768 num=32768",
                "netsh int ipv6 set dynamicport tcp start=32768 num=32768"
            ]
        );
        // Domain numbers: 32,768 ports held 30 s ≈ 1,092/s.
        let p = make_plan(
            &s,
            &Goal {
                target_rate_per_s: Some(1000.0),
                ..Goal::default()
            },
        )
        .unwrap();
        assert!(!p.is_refused(), "{:?}", p.refusals);
        assert!(p.capacity_after.rate_per_pool_per_s.unwrap() >= 1000.0);
        assert!(p
            .changes
            .iter()
            .any(|c| c.knob == "tcpip.TcpTimedWaitDelay"));
        let p = make_plan(
            &s,
            &Goal {
                target_rate_per_s: Some(1e6),
                ..Goal::default()
            },
        )
        .unwrap();
        assert!(p.is_refused());
    }

    /// The UDP dynamic range (docs/udp.md): its own netsh line with the undo from the range
    /// read, the TCP range untouched, a refusal for a newly covered excluded UDP range.
    #[test]
    fn udp_dynamic_range_plan_line_with_undo() {
        use crate::snapshot::ExcludedRange;
        let s = SnapshotBuilder::windows()
            .windows_settings(|w| {
                w.udp_dynamic_ports_v4 = Some(DynamicPorts {
                    start: 49152,
                    count: 16384,
                });
            })
            .build();
        let p = make_plan(
            &s,
            &set("netsh.ipv4.dynamicport.udp", "start=32768 num=32768"),
        )
        .unwrap();
        assert!(!p.is_refused(), "{:?}", p.refusals);
        assert_eq!(
            p.commands,
            vec!["netsh int ipv4 set dynamicport udp start=32768 num=32768"]
        );
        assert_eq!(
            p.changes[0].current.as_deref(),
            Some("start=49152 num=16384 (49152-65535)")
        );
        assert!(p
            .windows_steps
            .iter()
            .any(|l| l.contains("netsh int ipv4 set dynamicport udp start=49152 num=16384")));
        // The TCP pools' capacity does not move with the UDP range.
        assert_eq!(
            p.capacity_after.usable_ports,
            p.capacity_before.usable_ports
        );
        let s = SnapshotBuilder::windows()
            .windows_settings(|w| {
                w.udp_dynamic_ports_v4 = Some(DynamicPorts {
                    start: 49152,
                    count: 16384,
                });
                w.udp_excluded_ports_v4 = vec![ExcludedRange {
                    low: 40000,
                    high: 40099,
                    administered: false,
                }];
            })
            .build();
        let p = make_plan(
            &s,
            &set("netsh.ipv4.dynamicport.udp", "start=32768 num=32768"),
        )
        .unwrap();
        assert!(
            p.refusals
                .iter()
                .any(|r| r.contains("protocol=udp startport=40000")),
            "{:?}",
            p.refusals
        );
    }
}
