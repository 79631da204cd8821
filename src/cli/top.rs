//! `portdoctor top` options.

use clap::Args;

use super::{parse_duration, OutputArgs, ScopeArgs, TargetArgs, ThresholdArgs};

const TOP_EXAMPLES: &str = "\
Keys: q/Ctrl-C quit · s sort (u use, i in use, n rate, e full in, a name) · / filter (tcp, udp) ·
space pause · +/- interval · ↑↓ select · Enter detail · r refresh now

Examples:
  portdoctor top                       watch this host, refresh every second
  portdoctor top --netns lab1          inside the network namespace /run/netns/lab1
  portdoctor top --pid 4242            inside a container, via one of its processes
  portdoctor top -A                    every namespace: a NAMESPACE/POD column, / filters pods
  portdoctor top --interval 5s --no-owners --warn 50%
  portdoctor top --once | head         one frame as plain text, for scripts
  portdoctor top --cloud-nat gcp:1024  also the busiest destination against a cloud NAT quota
  portdoctor top --load db1.snap.json  a snapshot saved with `check --save`, paused";

#[derive(Debug, Args)]
#[command(after_help = TOP_EXAMPLES)]
pub struct TopArgs {
    /// How often to collect (e.g. 500ms, 1s, 5s); + and - change it while running
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub interval: f64,
    /// Print one frame as plain text to stdout and exit (no raw mode; width of the terminal,
    /// or 100 columns)
    #[arg(long)]
    pub once: bool,
    #[command(flatten)]
    pub thresholds: ThresholdArgs,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub scope: ScopeArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Show a snapshot saved with `portdoctor check --save FILE`, paused (any OS; nothing is
    /// collected)
    #[arg(long, value_name = "FILE", conflicts_with_all = ["netns", "pid", "no_owners", "all_namespaces"])]
    pub load: Option<std::path::PathBuf>,
}
