//! Command-line definitions. Help texts carry examples; the man page and completions are
//! generated from these same definitions.

use clap::{Args, Parser, Subcommand, ValueEnum};

pub const EXIT_CODES: &str = "\
Exit codes:
  0  ok: every pool has room
  1  warning: a pool is filling (>= --warn), or another warning finding
  2  critical: a pool is full or nearly full (>= --crit), or fills within --eta
  3  could not collect (namespace or process not found, permission denied, kernel refused),
     or could not read or write a snapshot file (--load, --save)
  4  bad command line (unknown flag, invalid value)";

const CHECK_EXAMPLES: &str = "\
Examples:
  portdoctor check                          diagnose this host
  portdoctor check --json | jq .verdict     machine-readable (schema portdoctor.check/v1)
  portdoctor check --netns lab1             inside the network namespace /run/netns/lab1
  portdoctor check --pid 4242               inside a container, via one of its processes
  portdoctor check --warn 60% --crit 80% --eta 5m
  portdoctor check --top 0 --no-owners      all pools, skip the /proc owner scan
  portdoctor check --save db1.snap.json     report, and keep the snapshot (e.g. for a ticket)
  portdoctor check --load db1.snap.json     analyse a saved snapshot, here or on another OS

Privileges: any user sees every socket and setting of the namespace; owners of other users'
sockets need root (or CAP_SYS_PTRACE + CAP_DAC_READ_SEARCH); --netns/--pid need root or
CAP_SYS_ADMIN.";

#[derive(Debug, Parser)]
#[command(
    name = "portdoctor",
    // Not argv[0]: on Windows that is `portdoctor.exe`, and usage lines should read the same.
    bin_name = "portdoctor",
    version,
    about = "Find, explain, predict and fix TCP ephemeral-port exhaustion",
    long_about = "portdoctor groups outbound TCP sockets into the pools the kernel allocates ports \
from (per local IP, remote IP and remote port on Linux), compares each with the configured \
ephemeral range, forecasts when it runs out, and says what to change.",
    after_help = EXIT_CODES,
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// One-shot diagnosis: verdict, pools, findings with fixes
    #[command(after_help = format!("{CHECK_EXAMPLES}\n\n{EXIT_CODES}"))]
    Check(CheckArgs),
    /// What-if model: sustainable connection rate, headroom, time to exhaustion, what fixes it
    Capacity(crate::commands::capacity::CapacityArgs),
    /// Reproduce exhaustion in a throwaway network namespace and compare with the model
    Lab(crate::commands::lab::LabArgs),
    /// Live view of every port pool: fill, rates, owners, findings (q quits)
    Top(crate::commands::top::TopArgs),
    /// Plan, apply and roll back kernel settings safely (backup first, verified rollback)
    Tune(crate::commands::tune::TuneArgs),
    /// Print shell completions to stdout
    #[command(
        after_help = "Example:\n  portdoctor completions bash > /etc/bash_completion.d/portdoctor"
    )]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print a man page (roff) to stdout: portdoctor(1), or portdoctor-COMMAND(1)
    #[command(
        after_help = "Examples:\n  portdoctor man > /usr/local/share/man/man1/portdoctor.1\n  portdoctor man check > /usr/local/share/man/man1/portdoctor-check.1"
    )]
    Man {
        /// A command whose page to print (e.g. check)
        command: Option<String>,
    },
    /// Prometheus exporter (/metrics) or node_exporter textfile writer for the pool model
    Serve(crate::commands::serve::ServeArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SourceArg {
    /// netlink, falling back to procfs with a note
    Auto,
    /// NETLINK_SOCK_DIAG only
    Netlink,
    /// /proc/net/tcp and tcp6 (slower; no bound-only sockets)
    Procfs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorArg {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Print the report as JSON (schema portdoctor.check/v1)
    #[arg(long)]
    pub json: bool,
    /// Show at most N pools, highest utilization first (0 = all) [default: 20; JSON: all]
    #[arg(long, value_name = "N")]
    pub top: Option<usize>,
    /// Utilization at which a pool is a warning (fraction or percent)
    #[arg(long, value_name = "RATIO", default_value = "0.7", value_parser = crate::units_parse_ratio)]
    pub warn: f64,
    /// Utilization at which a pool is critical (fraction or percent)
    #[arg(long, value_name = "RATIO", default_value = "0.9", value_parser = crate::units_parse_ratio)]
    pub crit: f64,
    /// A growing pool that fills within this time is critical (e.g. 60s, 5m)
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = crate::units_parse_duration)]
    pub eta: f64,
    /// Where to read sockets from
    #[arg(long, value_enum, default_value_t = SourceArg::Auto)]
    pub source: SourceArg,
    /// Skip the /proc/*/fd scan that finds owning processes (faster)
    #[arg(long)]
    pub no_owners: bool,
    /// Inspect the network namespace /run/netns/NAME
    #[arg(long, value_name = "NAME", conflicts_with = "pid")]
    pub netns: Option<String>,
    /// Inspect the network namespace of process PID (e.g. a container)
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
    /// When to use colour (auto: only on a terminal, and never with NO_COLOR set)
    #[arg(long, value_enum, default_value_t = ColorArg::Auto, value_name = "WHEN")]
    pub color: ColorArg,
    /// Also write the snapshot that was analysed to FILE (schema portdoctor.snapshot/v1), e.g.
    /// to attach to a ticket or analyse elsewhere with --load
    #[arg(long, value_name = "FILE", conflicts_with = "load")]
    pub save: Option<std::path::PathBuf>,
    /// Analyse a snapshot saved with --save instead of collecting one (any OS; nothing is read
    /// from this host)
    #[arg(long, value_name = "FILE", conflicts_with_all = ["netns", "pid", "source", "no_owners"])]
    pub load: Option<std::path::PathBuf>,
}
