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

Privileges: any user sees every socket and setting of the namespace; owners of other users'
sockets need root (or CAP_SYS_PTRACE + CAP_DAC_READ_SEARCH); --netns/--pid need root or
CAP_SYS_ADMIN.";

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
}
