//! `portdoctor check` options.

use clap::Args;

use super::{OutputArgs, ScopeArgs, TargetArgs, ThresholdArgs};

pub const CHECK_EXAMPLES: &str = "\
Examples:
  portdoctor check                          diagnose this host
  portdoctor check --json | jq .verdict     machine-readable (schema portdoctor.check/v1)
  portdoctor check --netns lab1             inside the network namespace /run/netns/lab1
  portdoctor check --pid 4242               inside a container, via one of its processes
  portdoctor check -A                       every namespace of the host: containers, pods
  portdoctor check --warn 60% --crit 80% --eta 5m
  portdoctor check --top 0 --no-owners      all pools, skip the /proc owner scan
  portdoctor check --save db1.snap.json     report, and keep the snapshot (e.g. for a ticket)
  portdoctor check --load db1.snap.json     analyse a saved snapshot, here or on another OS
  portdoctor check --observe 10s            also count failed connect()/bind() calls for 10 s
  portdoctor check --cloud-nat aws-natgw:2  also flows per destination against a cloud NAT quota

Pools: TCP (per destination), UDP (per namespace and IP version, docs/udp.md) and, on NAT
hosts, SNAT pools from conntrack (docs/nat.md).

Privileges: any user sees every socket and setting of the namespace; owners of other users'
sockets need root (or CAP_SYS_PTRACE + CAP_DAC_READ_SEARCH); --netns/--pid need root or
CAP_SYS_ADMIN; --observe needs root (or CAP_PERFMON and read access to tracefs); SNAT pools
(the conntrack table) need root or CAP_NET_ADMIN in the namespace.";

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Print the report as JSON (schema portdoctor.check/v1)
    #[arg(long)]
    pub json: bool,
    /// Show at most N pools, highest utilization first (0 = all) [default: 20; JSON: all]
    #[arg(long, value_name = "N")]
    pub top: Option<usize>,
    #[command(flatten)]
    pub thresholds: ThresholdArgs,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub scope: ScopeArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Also write the snapshot that was analysed to FILE (schema portdoctor.snapshot/v1), e.g.
    /// to attach to a ticket or analyse elsewhere with --load
    #[arg(long, value_name = "FILE", conflicts_with_all = ["load", "all_namespaces"])]
    pub save: Option<std::path::PathBuf>,
    /// Analyse a snapshot saved with --save instead of collecting one (any OS; nothing is read
    /// from this host)
    #[arg(long, value_name = "FILE", conflicts_with_all = ["netns", "pid", "source", "no_owners", "all_namespaces"])]
    pub load: Option<std::path::PathBuf>,
    /// Linux: trace for DURATION before reporting and count the connect() calls that found no
    /// free port (EADDRNOTAVAIL) and the bind() calls that failed (EADDRINUSE), per process
    /// and pool (kernel tracepoints; see docs/failures.md)
    #[arg(long, value_name = "DURATION", value_parser = parse_observe, conflicts_with_all = ["load", "all_namespaces"])]
    pub observe: Option<std::time::Duration>,
}

fn parse_observe(s: &str) -> Result<std::time::Duration, String> {
    let secs = portdoctor::units::parse_duration_seconds(s)?;
    if secs <= 0.0 {
        return Err(format!("{s:?}: the window must be longer than 0"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}
