//! `portdoctor capacity`: the what-if model. Inputs from flags, an OS preset, or the current
//! snapshot (`--from-host`) or a saved one (`--from-snapshot`); flags given explicitly override
//! what the host says.

use std::process::ExitCode;

use portdoctor::analysis::{analyze, Thresholds};
use portdoctor::capacity::report::{render_json, render_text, CapacityReport};
use portdoctor::capacity::{Preset, Scenario};
use portdoctor::collect::{self, CollectOptions};
use portdoctor::snapshot::{file, Os, PortRange, Snapshot};

use super::{usage, write_stdout};
use crate::cli::capacity::{CapacityArgs, OsPresetArg};
use crate::cli::SourceArg;

/// The scenario of this host (`--from-host`, in its target) or of a saved snapshot
/// (`--from-snapshot`), with notes on what it could not tell and a label for the report.
fn from_observation(
    args: &CapacityArgs,
    opts: CollectOptions,
) -> anyhow::Result<(Scenario, Vec<String>, String)> {
    let (snap, source) = if let Some(path) = &args.from_snapshot {
        (file::load(path)?, format!("snapshot:{}", path.display()))
    } else {
        let source = opts
            .target
            .label()
            .map_or_else(|| "host".to_string(), |n| format!("netns:{n}"));
        (collect::native(opts)?.snapshot()?, source)
    };
    let (s, notes) = from_snapshot(&snap, args.udp);
    Ok((s, notes, source))
}

/// The scenario a snapshot describes, and notes on what it could not tell. `udp`: the UDP
/// question, where the UDP ports held now are the concurrency already there.
fn from_snapshot(snap: &Snapshot, udp: bool) -> (Scenario, Vec<String>) {
    let (mut s, mut notes) = from_snapshot_tcp(snap);
    if udp {
        let analysis = analyze(snap, Thresholds::default());
        let held = analysis.udp_pools.first();
        s.udp = true;
        s.bound_ports = held.map_or(0, |p| u32::try_from(p.in_use).unwrap_or(u32::MAX));
        s.rate_per_s = None;
        notes.retain(|n| !n.starts_with("current connect rate"));
        notes.push(held.map_or_else(
            || "no UDP socket holds a port of the range now".to_string(),
            |p| {
                format!(
                    "{} UDP ports held now by {} sockets (concurrency: each open UDP socket holds its port) count as taken",
                    p.in_use, p.sockets
                )
            },
        ));
    }
    (s, notes)
}

fn from_snapshot_tcp(snap: &Snapshot) -> (Scenario, Vec<String>) {
    let analysis = analyze(snap, Thresholds::default());
    let mut notes = Vec::new();
    let mut s = match snap.os {
        Os::Linux => Preset::LinuxDefault.scenario(),
        Os::Windows => Preset::Windows2019.scenario(),
    };
    let set = &snap.settings;
    if let Some(r) = set.ephemeral_ports {
        s.range = r;
    } else {
        notes.push("the host's port range could not be read: the OS default is assumed".into());
    }
    s.reserved.clone_from(&set.reserved_ports);
    s.listening_ports = snap.listen_ports();
    s.target = snap.host.target.clone();
    if let Some(c) = &analysis.capacity {
        s.bound_ports = c.bound_in_range.len() as u32;
    }
    if let Some(t) = set.time_wait_seconds {
        s.time_wait_s = f64::from(t);
    }
    if let Some(r) = set.tw_reuse {
        s.tw_reuse = r;
    }
    if let Some(d) = set.tw_reuse_delay_ms {
        s.tw_reuse_delay_s = f64::from(d) / 1000.0;
    }
    if let Some(t) = set.tcp_timestamps {
        s.timestamps = t != 0;
    }
    // The current picture: destination pools seen and their connect rates.
    let dest_pools: Vec<_> = analysis
        .pools
        .iter()
        .filter(|p| p.scope == portdoctor::analysis::Scope::Destination)
        .collect();
    if !dest_pools.is_empty() {
        // Counted as check counts them: distinct local addresses, distinct remote ip:port.
        let sources: std::collections::BTreeSet<_> =
            dest_pools.iter().map(|p| p.key.local_ip).collect();
        let destinations: std::collections::BTreeSet<_> = dest_pools
            .iter()
            .map(|p| (p.key.remote_ip, p.key.remote_port))
            .collect();
        s.source_ips = sources.len() as u32;
        s.destinations = destinations.len().max(1) as u32;
        s.observed_pools = Some(dest_pools.len() as u32);
        s.loopback = dest_pools.iter().all(|p| {
            p.key.local_ip.is_loopback() || p.key.remote_ip.is_some_and(|r| r.is_loopback())
        });
        let rate: f64 = dest_pools.iter().filter_map(|p| p.connect_rate_per_s).sum();
        if rate > 0.0 {
            s.rate_per_s = Some(rate);
            notes.push(format!(
                "current connect rate {rate:.1}/s from the TIME_WAIT timers of {} pools; pass --rate to ask about another",
                dest_pools.len()
            ));
        }
    }
    if !analysis.bind_before_connect.is_empty() {
        s.bind_before_connect = true;
        notes.push("the host's sockets show the bind-before-connect pattern".into());
    }
    notes.push(
        "connection lifetime is not visible in a snapshot: 0 s unless --lifetime is given".into(),
    );
    (s, notes)
}

pub fn run(args: &CapacityArgs) -> anyhow::Result<ExitCode> {
    let mut opts = match args.target.collect_options() {
        Ok(o) => o,
        Err(e) => return Ok(usage(e)),
    };
    // Owners play no part in the model.
    opts.owners = false;
    if !args.from_host && (!opts.target.is_host() || args.target.source != SourceArg::Auto) {
        return Ok(usage(
            "--netns, --pid and --source say where to read the host: add --from-host",
        ));
    }
    let observed = args.from_host || args.from_snapshot.is_some();
    let preset = args
        .os
        .map(OsPresetArg::preset)
        .or((!observed).then_some(Preset::LinuxDefault));
    let (mut s, notes, source) = if observed {
        let (mut s, notes, source) = from_observation(args, opts)?;
        if let Some(p) = args.os {
            // An explicit preset replaces what the host said.
            s = p.preset().scenario();
        }
        (s, notes, source)
    } else {
        (
            preset.unwrap_or(Preset::LinuxDefault).scenario(),
            Vec::new(),
            "flags".to_string(),
        )
    };
    if let Some(r) = &args.range {
        let Some(range) = PortRange::new(r[0], r[1]) else {
            return Ok(usage(format!(
                "--range {} {}: LO must not be above HI",
                r[0], r[1]
            )));
        };
        s.range = range;
    }
    if !args.reserved.is_empty() {
        s.reserved.clone_from(&args.reserved);
    }
    if let Some(v) = args.bound {
        s.bound_ports = v;
    }
    if let Some(v) = args.rate {
        s.rate_per_s = Some(v);
    }
    if let Some(v) = args.lifetime {
        s.lifetime_s = v;
    }
    if let Some(v) = args.time_wait {
        s.time_wait_s = v;
    }
    if let Some(v) = args.destinations {
        s.destinations = v;
        s.observed_pools = None;
    }
    if let Some(v) = args.source_ips {
        s.source_ips = v;
        s.observed_pools = None;
    }
    if let Some(v) = args.keepalive {
        s.keepalive_share = v;
    }
    if let Some(v) = args.tw_reuse {
        s.tw_reuse = v;
    }
    if let Some(v) = args.tw_reuse_delay {
        s.tw_reuse_delay_s = v;
    }
    if args.no_timestamps {
        s.timestamps = false;
    }
    s.loopback |= args.loopback;
    s.bind_before_connect |= args.bind_before_connect;
    s.server_closes_first |= args.server_closes_first;
    s.port_scalability |= args.port_scalability;
    s.udp |= args.udp;
    if let Some(problem) = impossible(&s, args) {
        return Ok(usage(problem));
    }

    let mut report = CapacityReport::new(preset, source, s, notes);
    let cloud = cloud_nat(&mut report, args);
    let text = if args.json {
        render_json(&report)
    } else {
        render_text(&report)
    };
    write_stdout(text.as_bytes())?;
    let warn = portdoctor::rules::WARN_UTILIZATION;
    let code = match &report.outcome.demand {
        _ if cloud.as_ref().is_some_and(|c| !c.fits) => 2,
        Some(d) if !d.fits => 2,
        Some(d) if d.utilization > warn => 1,
        // The cloud NAT quota is judged like a pool: over 70 % of it is a warning.
        _ if cloud.as_ref().is_some_and(|c| c.utilization > warn) => 1,
        _ => 0,
    };
    Ok(ExitCode::from(code))
}

/// `--cloud-nat` with a rate: the modelled quota as a note (text) and a field (JSON); the
/// demand against it. `None` without the model or a rate.
fn cloud_nat(
    report: &mut CapacityReport,
    args: &CapacityArgs,
) -> Option<portdoctor::analysis::snat::CloudNatDemand> {
    let model = args.cloud_nat?;
    let s = &report.scenario;
    let Some(rate) = s.rate_per_s else {
        report.notes.push(format!(
            "--cloud-nat {}: give --rate (and --lifetime) to compare the load with its quota of {} flows per destination",
            model.name(),
            model.quota()
        ));
        return None;
    };
    let new_rate = rate * (1.0 - s.keepalive_share.clamp(0.0, 1.0));
    let d =
        portdoctor::analysis::snat::cloud_nat_demand(model, new_rate, s.lifetime_s, s.destinations);
    report.notes.push(format!(
        "cloud NAT model ({}, not a measurement): {:.1} open flows per destination against its quota of {} ({:.0}%){}; the NAT's own hold after close is not counted (docs/nat.md)",
        model.name(),
        d.flows_per_destination,
        d.quota,
        d.utilization * 100.0,
        if d.fits { "" } else { ": does not fit" }
    ));
    report.cloud_nat = Some(d.clone());
    Some(d)
}

/// Inputs no host can have: a question about them has no meaningful answer.
fn impossible(s: &portdoctor::capacity::Scenario, args: &CapacityArgs) -> Option<String> {
    if s.range.low == 0 {
        return Some(format!(
            "--range {} {}: port 0 is not a port a connection can use",
            s.range.low, s.range.high
        ));
    }
    if args.reserved.iter().any(|r| r.low == 0) {
        return Some("--reserved: port 0 is not a port".into());
    }
    if u64::from(s.bound_ports) > u64::from(s.range.len()) {
        return Some(format!(
            "--bound {}: more than the {} ports of the range {}-{}",
            s.bound_ports,
            s.range.len(),
            s.range.low,
            s.range.high
        ));
    }
    if s.os == portdoctor::snapshot::Os::Linux && args.port_scalability {
        return Some("--port-scalability: SO_PORT_SCALABILITY is a Windows socket option (use --os windows-2019 or a Windows snapshot)".into());
    }
    if s.os == portdoctor::snapshot::Os::Linux && args.time_wait.is_some_and(|t| t <= 0.0) {
        return Some(format!(
            "--time-wait 0s: Linux holds TIME_WAIT for a fixed {} s (TCP_TIMEWAIT_LEN, not a sysctl); tcp_tw_reuse is the Linux way to shorten what blocks a port (--tw-reuse 1)",
            portdoctor::rules::LINUX_TIME_WAIT_SECONDS
        ));
    }
    None
}
