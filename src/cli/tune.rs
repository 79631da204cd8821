//! `portdoctor tune` options.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use portdoctor::tune;

use super::{parse_duration, TargetArgs};

pub const TUNE_EXAMPLES: &str = "\
Examples:
  portdoctor tune plan --set net.ipv4.ip_local_port_range=\"10000 65000\"
  portdoctor tune plan --profile client-heavy
  portdoctor tune plan --target-rate 2000/s --lifetime 200ms
  portdoctor tune apply --profile conservative            dry run: prints the plan
  portdoctor tune apply --profile conservative --yes      backup, apply, verify
  portdoctor tune history
  portdoctor tune rollback                                 undo the latest apply
  portdoctor tune forget ID                                retire a backup whose namespace is gone

Exit codes:
  0  done (or nothing to change)
  3  could not collect, apply or roll back (not root, kernel refused; what changed was restored)
  4  bad command line, invalid value, or a refused (unsafe) plan";

#[derive(Debug, Args)]
#[command(after_help = TUNE_EXAMPLES)]
pub struct TuneArgs {
    #[command(subcommand)]
    pub command: TuneCommand,
}

#[derive(Debug, Subcommand)]
pub enum TuneCommand {
    /// Show what would change, what it buys, the exact commands and the risks (changes nothing)
    #[command(after_help = TUNE_EXAMPLES)]
    Plan(GoalArgs),
    /// Apply a plan: dry run unless --yes; backup first, verify, roll back on failure
    #[command(after_help = TUNE_EXAMPLES)]
    Apply(ApplyArgs),
    /// Restore the exact prior values from a backup (default: the latest not rolled back)
    #[command(after_help = TUNE_EXAMPLES)]
    Rollback(RollbackArgs),
    /// List backups: id, time, namespace, status, changes
    History(HistoryArgs),
    /// Retire a backup no rollback can use (its namespace is gone, or you restored its values by
    /// hand): it is never picked again; no setting changes
    Forget(ForgetArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProfileArg {
    /// Many short outbound connections: range 10000-65535, tcp_tw_reuse=1
    ClientHeavy,
    /// Inbound and outbound: as client-heavy, tcp_max_tw_buckets >= 262144
    Proxy,
    /// Only a wider range (15000-65000)
    Conservative,
}

#[derive(Debug, Args)]
pub struct GoalArgs {
    /// Set KNOB to VALUE (repeatable); KNOB as in `sysctl`, e.g. net.ipv4.tcp_tw_reuse=1
    #[arg(long = "set", value_name = "KNOB=VALUE")]
    pub set: Vec<String>,
    /// A ready-made set of changes
    #[arg(long, value_enum)]
    pub profile: Option<ProfileArg>,
    /// New outbound connections per second one pool must sustain, e.g. 2000/s
    #[arg(long, value_name = "N/s")]
    pub target_rate: Option<String>,
    /// How long connections stay open before they close (for --target-rate)
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    pub lifetime: f64,
    /// Where to tune (--netns, --pid; --source and --no-owners change nothing here)
    #[command(flatten)]
    pub target: TargetArgs,
    /// Print JSON (schema portdoctor.tune-plan/v1)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub goal: GoalArgs,
    /// Really apply (without it: a dry run that prints the plan)
    #[arg(long)]
    pub yes: bool,
    /// Where backups are written
    #[arg(long, value_name = "DIR", default_value = tune::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Where the persistent drop-in 90-portdoctor.conf goes [default: /etc/sysctl.d; with
    /// --netns: none, runtime only]
    #[arg(long, value_name = "DIR")]
    pub sysctl_dir: Option<PathBuf>,
    /// Change the runtime values only; write no drop-in
    #[arg(long, conflicts_with = "sysctl_dir")]
    pub no_persist: bool,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The backup to restore (see `tune history`) [default: the latest not rolled back]
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    /// Only consider backups taken in the network namespace NAME
    #[arg(long, value_name = "NAME")]
    pub netns: Option<String>,
    #[arg(long, value_name = "DIR", default_value = tune::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// The backup to retire (see `tune history`)
    #[arg(value_name = "ID")]
    pub id: String,
    #[arg(long, value_name = "DIR", default_value = tune::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[arg(long, value_name = "DIR", default_value = tune::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Print JSON (the backup records)
    #[arg(long)]
    pub json: bool,
}
