//! `portdoctor lab --udp` (docs/udp.md): in a namespace of its own with a small range, this
//! process opens connected UDP sockets and holds them until the kernel refuses one (EAGAIN),
//! then looks at the namespace exactly as `check` does. The capacity model's usable ports, the
//! number of sockets the kernel gave, and check's UDP pool must all agree.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::sys::{self, LabNamespace};
use super::{limits, LabError};
use crate::analysis::{analyze, Level, Thresholds};
use crate::capacity::{self, Preset};
use crate::collect::linux::LinuxCollector;
use crate::collect::{Collector, SourcePreference};
use crate::snapshot::PortRange;

pub const SCHEMA: &str = "portdoctor.lab-udp/v1";

/// How long the filling loop may run at most.
const MAX_FILL: Duration = Duration::from_secs(20);

/// What `check` saw while the sockets were held.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckedPool {
    pub in_use: u64,
    pub capacity: u32,
    pub level: Level,
    /// The holder named first is this lab process.
    pub owner_is_lab: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UdpLabReport {
    pub schema: &'static str,
    pub namespace: String,
    pub namespace_removed: bool,
    pub range: PortRange,
    /// The capacity model (`capacity --udp`): ports a UDP pool of this namespace can hold.
    pub model_usable_ports: u32,
    /// Connected UDP sockets the kernel gave before it refused one.
    pub observed_sockets: u64,
    /// How the next one failed (`EAGAIN` expected), `null` if none failed within the bound.
    pub observed_error: Option<String>,
    /// `check`'s UDP pool while the sockets were held (`null`: none reported).
    pub check: Option<CheckedPool>,
    /// Model, kernel and check agree: observed = usable = in_use = capacity, and the pool is
    /// critical.
    pub agrees: bool,
}

/// Validates the range: 1024–65535, at most as many ports as the lab may hold sockets.
pub fn validate(range: PortRange) -> Result<(), LabError> {
    if range.low < 1024 || range.len() < 2 || range.len() > limits::MAX_OPEN_SOCKETS as u32 {
        return Err(LabError::Limit(format!(
            "--range {} {} must lie in 1024-65535 and hold 2 to {} ports with --udp (one socket per port is held)",
            range.low,
            range.high,
            limits::MAX_OPEN_SOCKETS
        )));
    }
    Ok(())
}

/// Runs the UDP lab: creates the namespace, fills its UDP pool, checks, removes it.
pub fn run(range: PortRange) -> Result<UdpLabReport, LabError> {
    validate(range)?;
    sys::install_signal_handlers()?;
    let mut ns = LabNamespace::create()?;
    let result = experiment(&ns, range);
    let removed = ns.remove();
    let mut report = result?;
    report.namespace_removed = removed;
    Ok(report)
}

fn experiment(ns: &LabNamespace, range: PortRange) -> Result<UdpLabReport, LabError> {
    ns.sysctl(
        "net.ipv4.ip_local_port_range",
        &format!("{} {}", range.low, range.high),
    )?;
    let mut scenario = Preset::LinuxDefault.scenario();
    scenario.udp = true;
    scenario.range = range;
    let model = capacity::evaluate(&scenario).usable_ports;

    // Fill: connected sockets to the discard port (nothing needs to listen), one more than
    // the range at most, within MAX_FILL.
    let dst = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9);
    let started = Instant::now();
    let mut held: Vec<UdpSocket> = Vec::new();
    let mut error = None;
    while held.len() <= range.len() as usize && started.elapsed() < MAX_FILL {
        if sys::stop_requested() {
            return Err(LabError::Namespace("stopped by a signal".into()));
        }
        ns.verify()?;
        match sys::udp_connect(dst) {
            Ok(s) => held.push(s),
            Err(e) => {
                error = Some(errno_name(&e));
                break;
            }
        }
    }
    let snapshot = LinuxCollector::here(SourcePreference::Auto, true)
        .snapshot()
        .map_err(|e| LabError::Namespace(format!("collecting the lab namespace: {e}")))?;
    let analysis = analyze(&snapshot, Thresholds::default());
    let me = std::process::id();
    let check = analysis.udp_pools.first().map(|p| CheckedPool {
        in_use: p.in_use,
        capacity: p.capacity,
        level: p.level,
        owner_is_lab: p.processes.first().is_some_and(|h| h.pid == me),
    });
    let observed = held.len() as u64;
    let agrees = error.as_deref() == Some("EAGAIN")
        && observed == u64::from(model)
        && check.as_ref().is_some_and(|c| {
            c.in_use == observed && c.capacity == model && c.level == Level::Critical
        });
    drop(held);
    Ok(UdpLabReport {
        schema: SCHEMA,
        namespace: ns.name.clone(),
        namespace_removed: false,
        range,
        model_usable_ports: model,
        observed_sockets: observed,
        observed_error: error,
        check,
        agrees,
    })
}

fn errno_name(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EAGAIN) => "EAGAIN".into(),
        Some(libc::EADDRINUSE) => "EADDRINUSE".into(),
        Some(libc::EMFILE) => "EMFILE".into(),
        _ => e.to_string(),
    }
}

/// The report as text.
pub fn render_text(r: &UdpLabReport) -> String {
    let check = r.check.as_ref().map_or_else(
        || "no UDP pool reported".to_string(),
        |c| {
            format!(
                "{} of {} ports in use, {}{}",
                c.in_use,
                c.capacity,
                c.level.name(),
                if c.owner_is_lab {
                    ", held by this lab process"
                } else {
                    ""
                }
            )
        },
    );
    format!(
        "portdoctor lab --udp · namespace {} (removed: {})\n\
         range {} ({} ports)\n\
         model     {} usable UDP ports (capacity --udp: range − reserved; one pool per namespace)\n\
         observed  {} connected UDP sockets, then {}\n\
         check     {check}\n\
         {}\n",
        r.namespace,
        if r.namespace_removed { "yes" } else { "NO" },
        r.range,
        r.range.len(),
        r.model_usable_ports,
        r.observed_sockets,
        r.observed_error
            .as_deref()
            .unwrap_or("no failure within the bound"),
        if r.agrees {
            "AGREES: the model's capacity is what the kernel gave, and check saw the pool full"
        } else {
            "DISAGREES: see the numbers above"
        }
    )
}

pub fn render_json(r: &UdpLabReport) -> String {
    let mut s =
        serde_json::to_string_pretty(r).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    s.push('\n');
    s
}
