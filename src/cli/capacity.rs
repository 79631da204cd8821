//! `portdoctor capacity` options.

use clap::{Args, ValueEnum};

use portdoctor::capacity::Preset;
use portdoctor::snapshot::PortRange;

use super::{parse_duration, TargetArgs};

const CAPACITY_EXAMPLES: &str = "\
Examples:
  portdoctor capacity --rate 3000 --lifetime 50ms          3,000/s to one API, no keep-alive
  portdoctor capacity --os windows-2019 --rate 200         the same question for Windows defaults
  portdoctor capacity --rate 3000 --keepalive 90% --destinations 4
  portdoctor capacity --from-host --rate 5000              this host's range, reuse, listeners
  portdoctor capacity --from-host --netns lab1 --json      inputs from a network namespace
  portdoctor capacity --from-snapshot db1.snap.json --rate 5000   inputs from `check --save`
  portdoctor capacity --udp --rate 2000 --lifetime 5s      DNS-style UDP: a socket per query
  portdoctor capacity --cloud-nat gcp:64 --rate 50 --lifetime 2s --destinations 2

Model: a port is held for the connection's lifetime plus TIME_WAIT (plus tcp_tw_reuse_delay
instead of TIME_WAIT where reuse applies; nothing when the server closes first), so one pool
sustains usable/(lifetime + TIME_WAIT) new connections per second (Little's law).

Exit codes:
  0  fits with headroom (or no --rate given)
  1  fits, but the pools (or the --cloud-nat quota) would be more than 70% full
  2  does not fit: the pools run out (see time to exhaustion and the changes)
  3  could not read the host (--from-host) or the snapshot file (--from-snapshot)
  4  bad command line";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OsPresetArg {
    /// range 32768-60999, TIME_WAIT 60 s, tcp_tw_reuse 2
    LinuxDefault,
    /// dynamic range 49152-65535, TcpTimedWaitDelay 120 s, one host-wide pool
    #[value(name = "windows-2019")]
    Windows2019,
    /// as windows-2019 with the 240 s TIME_WAIT of older documents
    WindowsLegacy,
    /// dynamic range 32768-65535, TcpTimedWaitDelay 30 s
    WindowsTuned,
}

impl OsPresetArg {
    pub fn preset(self) -> Preset {
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
    /// As --from-host, from a snapshot saved with `portdoctor check --save FILE` (any OS)
    #[arg(long, value_name = "FILE", conflicts_with = "from_host")]
    pub from_snapshot: Option<std::path::PathBuf>,
    /// With --from-host: where to read the host (--netns, --pid)
    #[command(flatten)]
    pub target: TargetArgs,
    /// The cloud NAT in front of the host, modelled: azure-lb:PORTS, app-service, aws-natgw[:IPS]
    /// or gcp[:PORTS]; compares the open flows per destination with its quota (docs/nat.md)
    #[arg(long, value_name = "MODEL", value_parser = portdoctor::analysis::snat::CloudNat::parse)]
    pub cloud_nat: Option<portdoctor::analysis::snat::CloudNat>,
    /// Requests per second offered, all destinations together
    #[arg(long, value_name = "PER_S", value_parser = portdoctor::units::parse_rate)]
    pub rate: Option<f64>,
    /// Mean connection lifetime, connect to close (e.g. 50ms, 2s)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub lifetime: Option<f64>,
    /// TIME_WAIT length (Linux: 60 s, fixed; Windows: TcpTimedWaitDelay)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
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
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
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
    /// Windows: the application sets SO_PORT_SCALABILITY (each source IP gets its own range;
    /// without it the dynamic range is shared by all addresses)
    #[arg(long)]
    pub port_scalability: bool,
    /// UDP clients: a socket holds its port while open (no TIME_WAIT), one pool for the whole
    /// namespace; with --from-host the UDP ports held now count as taken
    #[arg(long)]
    pub udp: bool,
    /// Print JSON (schema portdoctor.capacity/v1)
    #[arg(long)]
    pub json: bool,
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
