//! `portdoctor capacity`: the what-if model. Inputs from flags, an OS preset, or the current
//! snapshot (`--from-host`) or a saved one (`--from-snapshot`); flags given explicitly override
//! what the host says.

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use portdoctor::analysis::{analyze, Thresholds};
use portdoctor::capacity::report::{render_json, render_text, CapacityReport};
use portdoctor::capacity::{Preset, Scenario};
use portdoctor::collect;
use portdoctor::snapshot::{file, Os, PortRange, Snapshot};

use super::{write_stdout, EXIT_USAGE};

const CAPACITY_EXAMPLES: &str = "\
Examples:
  portdoctor capacity --rate 3000 --lifetime 50ms          3,000/s to one API, no keep-alive
  portdoctor capacity --os windows-2019 --rate 200         the same question for Windows defaults
  portdoctor capacity --rate 3000 --keepalive 90% --destinations 4
  portdoctor capacity --from-host --rate 5000              this host's range, reuse, listeners
  portdoctor capacity --from-host --netns lab1 --json      inputs from a network namespace
  portdoctor capacity --from-snapshot db1.snap.json --rate 5000   inputs from `check --save`

Model: a port is held for the connection's lifetime plus TIME_WAIT (plus tcp_tw_reuse_delay
instead of TIME_WAIT where reuse applies; nothing when the server closes first), so one pool
sustains usable/(lifetime + TIME_WAIT) new connections per second (Little's law).

Exit codes:
  0  fits with headroom (or no --rate given)
  1  fits, but the pools would be more than 70% full
  2  does not fit: the pools run out (see time to exhaustion and the changes)
  3  could not read the host (--from-host) or the snapshot file (--from-snapshot)
  4  bad command line";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OsPresetArg {
    /// range 32768-60999, TIME_WAIT 60 s, tcp_tw_reuse 2
    LinuxDefault,
    /// dynamic range 49152-65535, TcpTimedWaitDelay 120 s, pools per local address
    #[value(name = "windows-2019")]
    Windows2019,
    /// as windows-2019 with the 240 s TIME_WAIT of older documents
    WindowsLegacy,
    /// dynamic range 32768-65535, TcpTimedWaitDelay 30 s
    WindowsTuned,
}

impl OsPresetArg {
    fn preset(self) -> Preset {
        match self {
            OsPresetArg::LinuxDefault => Preset::LinuxDefault,
            OsPresetArg::Windows2019 => Preset::Windows2019,
            OsPresetArg::WindowsLegacy => Preset::WindowsLegacy,
            OsPresetArg::WindowsTuned => Preset::WindowsTuned,
        }
    }
}

#[derive(Debug, Args)]
#[command(after_help = CAPACITY_EXAMPLES)]
pub struct CapacityArgs {
    /// OS defaults to start from [default: linux-default, or the host with --from-host]
    #[arg(long = "os", value_enum, value_name = "PRESET")]
    pub os: Option<OsPresetArg>,
    /// Take range, reserved ports, listeners, TIME_WAIT, tcp_tw_reuse and the current rate from
    /// this host's snapshot
    #[arg(long)]
    pub from_host: bool,
    /// With --from-host: read the network namespace /run/netns/NAME
    #[arg(long, value_name = "NAME", requires = "from_host")]
    pub netns: Option<String>,
    /// As --from-host, from a snapshot saved with `portdoctor check --save FILE` (any OS)
    #[arg(long, value_name = "FILE", conflicts_with = "from_host")]
    pub from_snapshot: Option<std::path::PathBuf>,
    /// Requests per second offered, all destinations together
    #[arg(long, value_name = "PER_S", value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Mean connection lifetime, connect to close (e.g. 50ms, 2s)
    #[arg(long, value_name = "DURATION", value_parser = crate::units_parse_duration)]
    pub lifetime: Option<f64>,
    /// TIME_WAIT length (Linux: 60 s, fixed; Windows: TcpTimedWaitDelay)
    #[arg(long, value_name = "DURATION", value_parser = crate::units_parse_duration)]
    pub time_wait: Option<f64>,
    /// Ephemeral (dynamic) port range, inclusive
    #[arg(long, num_args = 2, value_names = ["LO", "HI"])]
    pub range: Option<Vec<u16>>,
    /// Reserved/excluded ports inside the range: PORT or LO-HI, repeatable or comma-separated
    #[arg(long, value_name = "PORTS", value_delimiter = ',', value_parser = parse_port_range)]
    pub reserved: Vec<PortRange>,
    /// Ports in the range held by listeners or explicit binds
    #[arg(long, value_name = "N")]
    pub bound: Option<u32>,
    /// Distinct destinations (remote IP:port) the traffic spreads over
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub destinations: Option<u32>,
    /// Source IPs the traffic spreads over
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub source_ips: Option<u32>,
    /// Share of requests served on reused connections (keep-alive, pools), e.g. 0.9 or 90%
    #[arg(long, value_name = "SHARE", value_parser = parse_share)]
    pub keepalive: Option<f64>,
    /// Linux net.ipv4.tcp_tw_reuse: 0 off, 1 on, 2 loopback only
    #[arg(long, value_name = "0|1|2", value_parser = clap::value_parser!(u8).range(0..=2))]
    pub tw_reuse: Option<u8>,
    /// Linux net.ipv4.tcp_tw_reuse_delay (e.g. 1000ms)
    #[arg(long, value_name = "DURATION", value_parser = crate::units_parse_duration)]
    pub tw_reuse_delay: Option<f64>,
    /// Linux: TCP timestamps are off (tcp_tw_reuse then does nothing)
    #[arg(long)]
    pub no_timestamps: bool,
    /// The destinations are loopback addresses (tcp_tw_reuse=2 applies)
    #[arg(long)]
    pub loopback: bool,
    /// The application binds before connect(): ports become unique per source IP
    #[arg(long)]
    pub bind_before_connect: bool,
    /// The server closes first (TIME_WAIT lands on its listening port)
    #[arg(long)]
    pub server_closes_first: bool,
    /// Print JSON (schema portdoctor.capacity/v1)
    #[arg(long)]
    pub json: bool,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().trim_end_matches("/s").parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a rate: use connections per second, e.g. 3000"
        )),
    }
}

fn parse_share(s: &str) -> Result<f64, String> {
    if s.trim() == "0" || s.trim() == "0%" {
        return Ok(0.0);
    }
    portdoctor::units::parse_ratio(s)
        .map_err(|_| format!("{s:?} is not a share: use 0..1 or a percentage, e.g. 0.9 or 90%"))
}

fn parse_port_range(s: &str) -> Result<PortRange, String> {
    let err =
        || format!("{s:?} is not a port or range: use PORT or LO-HI, e.g. 8080 or 40000-40010");
    let (lo, hi) = s.split_once('-').unwrap_or((s, s));
    let lo: u16 = lo.trim().parse().map_err(|_| err())?;
    let hi: u16 = hi.trim().parse().map_err(|_| err())?;
    PortRange::new(lo, hi).ok_or_else(err)
}

/// The scenario of this host (`--from-host`, optionally in a namespace) or of a saved snapshot
/// (`--from-snapshot`), with notes on what it could not tell and a label for the report.
fn from_observation(args: &CapacityArgs) -> anyhow::Result<(Scenario, Vec<String>, String)> {
    let (snap, source) = if let Some(path) = &args.from_snapshot {
        (file::load(path)?, format!("snapshot:{}", path.display()))
    } else {
        let opts = super::collect_options(
            args.netns.as_ref(),
            None,
            crate::cli::SourceArg::Auto,
            false,
        );
        let source = args
            .netns
            .as_ref()
            .map_or_else(|| "host".to_string(), |n| format!("netns:{n}"));
        (collect::native(opts)?.snapshot()?, source)
    };
    let (s, notes) = from_snapshot(&snap);
    Ok((s, notes, source))
}

/// The scenario a snapshot describes, and notes on what it could not tell.
fn from_snapshot(snap: &Snapshot) -> (Scenario, Vec<String>) {
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
        let sources: std::collections::BTreeSet<_> =
            dest_pools.iter().map(|p| p.key.local_ip).collect();
        s.source_ips = sources.len() as u32;
        s.destinations = (dest_pools.len() / sources.len().max(1)).max(1) as u32;
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
    if args.from_host && cfg!(windows) && args.netns.is_some() {
        eprintln!("portdoctor: error: --netns is Linux-only");
        return Ok(ExitCode::from(EXIT_USAGE));
    }
    let observed = args.from_host || args.from_snapshot.is_some();
    let preset = args
        .os
        .map(OsPresetArg::preset)
        .or((!observed).then_some(Preset::LinuxDefault));
    let (mut s, notes, source) = if observed {
        let (mut s, notes, source) = from_observation(args)?;
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
            eprintln!(
                "portdoctor: error: --range {} {}: LO must not be above HI",
                r[0], r[1]
            );
            return Ok(ExitCode::from(EXIT_USAGE));
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
    }
    if let Some(v) = args.source_ips {
        s.source_ips = v;
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

    let report = CapacityReport::new(preset, source, s, notes);
    let text = if args.json {
        render_json(&report)
    } else {
        render_text(&report)
    };
    write_stdout(text.as_bytes())?;
    let code = match &report.outcome.demand {
        Some(d) if !d.fits => 2,
        Some(d) if d.utilization > 0.7 => 1,
        _ => 0,
    };
    Ok(ExitCode::from(code))
}
