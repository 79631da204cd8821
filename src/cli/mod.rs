//! Command-line definitions, one file per command, and the option groups every command that
//! inspects a host shares ([`TargetArgs`], [`ThresholdArgs`], [`OutputArgs`]). Help texts carry
//! examples; the man page and completions are generated from these same definitions. Nothing
//! here runs a command: `commands/` turns these into calls to the library.

pub mod capacity;
pub mod check;
pub mod lab;
#[cfg(feature = "serve")]
pub mod serve;
#[cfg(feature = "serve")]
pub mod service;
#[cfg(feature = "top")]
pub mod top;
pub mod tune;

use clap::{Args, Parser, Subcommand, ValueEnum};

use portdoctor::analysis::Thresholds;
use portdoctor::collect::{CollectOptions, SourcePreference, Target};
use portdoctor::rules;

pub use capacity::CapacityArgs;
pub use check::CheckArgs;
pub use lab::LabArgs;
#[cfg(feature = "serve")]
pub use serve::ServeArgs;
#[cfg(feature = "serve")]
pub use service::{ServiceAction, ServiceArgs};
#[cfg(feature = "top")]
pub use top::TopArgs;
pub use tune::TuneArgs;

pub const EXIT_CODES: &str = "\
Exit codes:
  0  ok: every pool has room
  1  warning: a pool is filling (>= --warn), or another warning finding
  2  critical: a pool is full or nearly full (>= --crit), or fills within --eta
  3  could not collect (namespace or process not found, permission denied, kernel refused),
     or could not read or write a snapshot file (--load, --save)
  4  bad command line (unknown flag, invalid value)";

#[derive(Debug, Parser)]
#[command(
    name = "portdoctor",
    // Not argv[0]: on Windows that is `portdoctor.exe`, and usage lines should read the same.
    bin_name = "portdoctor",
    // VERSION (commit HASH, TARGET triple), from build.rs.
    version = env!("PORTDOCTOR_VERSION_LINE"),
    about = "Find, explain, predict and fix TCP ephemeral-port exhaustion",
    long_about = "portdoctor groups outbound TCP sockets into the pools the kernel allocates ports \
from (per local IP, remote IP and remote port on Linux), compares each with the configured \
ephemeral range, forecasts when it runs out, and says what to change. UDP sockets (one pool \
per namespace and IP version) and, on NAT hosts, conntrack's source-NATed flows (SNAT pools) \
are reported the same way.",
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
    #[command(after_help = format!("{}\n\n{EXIT_CODES}", check::CHECK_EXAMPLES))]
    Check(CheckArgs),
    /// What-if model: sustainable connection rate, headroom, time to exhaustion, what fixes it
    Capacity(CapacityArgs),
    /// Reproduce exhaustion in a throwaway network namespace and compare with the model
    Lab(LabArgs),
    #[cfg(feature = "top")]
    /// Live view of every port pool: fill, rates, owners, findings (q quits)
    Top(TopArgs),
    /// Plan, apply and roll back kernel settings safely (backup first, verified rollback)
    Tune(TuneArgs),
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
        after_help = "Examples:\n  portdoctor man > /usr/local/share/man/man1/portdoctor.1\n  portdoctor man check > /usr/local/share/man/man1/portdoctor-check.1\n  portdoctor man tune apply > /usr/local/share/man/man1/portdoctor-tune-apply.1"
    )]
    Man {
        /// A command whose page to print (e.g. check, or tune apply)
        command: Vec<String>,
    },
    #[cfg(feature = "serve")]
    /// Prometheus exporter (/metrics) or node_exporter textfile writer for the pool model
    Serve(ServeArgs),
    #[cfg(feature = "serve")]
    /// Install or uninstall `serve` as a Windows service (Service Control Manager; no NSSM)
    Service(ServiceArgs),
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

/// Where to look: the options of every command that inspects a host.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// Inspect the network namespace /run/netns/NAME (Linux)
    #[arg(long, value_name = "NAME", conflicts_with = "pid", value_parser = parse_netns_name)]
    pub netns: Option<String>,
    /// Inspect the network namespace of process PID, e.g. a container (Linux)
    #[arg(long, value_name = "PID", value_parser = clap::value_parser!(u32).range(1..))]
    pub pid: Option<u32>,
    /// Where to read sockets from (Linux; Windows always reads the IP Helper tables)
    #[arg(long, value_enum, default_value_t = SourceArg::Auto)]
    pub source: SourceArg,
    /// Skip the /proc/*/fd scan that finds owning processes (faster, no privileges)
    #[arg(long)]
    pub no_owners: bool,
}

impl TargetArgs {
    pub fn target(&self) -> Target {
        match (&self.netns, self.pid) {
            (Some(name), _) => Target::Netns(name.clone()),
            (None, Some(pid)) => Target::Process(pid),
            (None, None) => Target::Host,
        }
    }

    /// What to collect, or why these options cannot work on this OS (a usage error).
    pub fn collect_options(&self) -> Result<CollectOptions, String> {
        if !cfg!(target_os = "linux") {
            if self.netns.is_some() || self.pid.is_some() {
                return Err(format!(
                    "--netns and --pid select Linux network namespaces; on {} leave them out",
                    std::env::consts::OS
                ));
            }
            if self.source != SourceArg::Auto {
                return Err(format!(
                    "--source netlink|procfs is Linux-only; on {} leave it out",
                    std::env::consts::OS
                ));
            }
        }
        Ok(CollectOptions {
            source: match self.source {
                SourceArg::Auto => SourcePreference::Auto,
                SourceArg::Netlink => SourcePreference::Netlink,
                SourceArg::Procfs => SourcePreference::Procfs,
            },
            owners: !self.no_owners,
            target: self.target(),
        })
    }
}

/// Every namespace at once (`check -A`).
#[derive(Debug, Clone, Args)]
pub struct ScopeArgs {
    /// Inspect every network namespace of the host (ip netns, CNI, Docker, and those only a
    /// process holds), each with its own settings, named by container and pod; the verdict is
    /// the worst (Linux; root sees them all)
    #[arg(short = 'A', long, conflicts_with_all = ["netns", "pid"])]
    pub all_namespaces: bool,
    /// With -A: the kubelet's pod log directory, whose <namespace>_<name>_<uid> entries name
    /// pods [default: /var/log/pods]
    #[arg(long, value_name = "DIR", requires = "all_namespaces")]
    pub pods_dir: Option<std::path::PathBuf>,
}

/// When a pool counts as filling or full.
#[derive(Debug, Clone, Copy, Args)]
pub struct ThresholdArgs {
    /// Utilization at which a pool is a warning (fraction or percent)
    #[arg(long, value_name = "RATIO", default_value_t = rules::WARN_UTILIZATION, value_parser = parse_ratio)]
    pub warn: f64,
    /// Utilization at which a pool is critical (fraction or percent)
    #[arg(long, value_name = "RATIO", default_value_t = rules::CRIT_UTILIZATION, value_parser = parse_ratio)]
    pub crit: f64,
    /// A growing pool that fills within this time is critical (e.g. 60s, 5m)
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub eta: f64,
    /// The cloud NAT in front of this host, to model its quota of concurrent flows per
    /// destination: azure-lb:PORTS, app-service, aws-natgw[:IPS] or gcp[:PORTS] (docs/nat.md)
    #[arg(long, value_name = "MODEL", value_parser = portdoctor::analysis::snat::CloudNat::parse)]
    pub cloud_nat: Option<portdoctor::analysis::snat::CloudNat>,
}

impl ThresholdArgs {
    /// The thresholds, or why they contradict each other (a usage error).
    pub fn thresholds(&self) -> Result<Thresholds, String> {
        if self.warn > self.crit {
            return Err(format!(
                "--warn ({}) must not be above --crit ({})",
                self.warn, self.crit
            ));
        }
        Ok(Thresholds {
            warn: self.warn,
            crit: self.crit,
            eta_seconds: self.eta,
            cloud_nat: self.cloud_nat,
        })
    }
}

/// How human output looks.
#[derive(Debug, Clone, Copy, Args)]
pub struct OutputArgs {
    /// When to use colour (auto: only on a terminal, and never with NO_COLOR set)
    #[arg(long, value_enum, default_value_t = ColorArg::Auto, value_name = "WHEN")]
    pub color: ColorArg,
}

pub fn parse_ratio(s: &str) -> Result<f64, String> {
    portdoctor::units::parse_ratio(s)
}

pub fn parse_duration(s: &str) -> Result<f64, String> {
    portdoctor::units::parse_duration_seconds(s)
}

fn parse_netns_name(s: &str) -> Result<String, String> {
    Target::check_netns_name(s).map(|()| s.to_string())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Cli, Command};
    use portdoctor::analysis::Thresholds;

    /// The defaults of --warn, --crit and --eta are the library's (portdoctor::rules).
    #[test]
    fn threshold_defaults_are_the_rules() {
        let cli = Cli::try_parse_from(["portdoctor", "check"]).expect("check parses");
        let Command::Check(args) = cli.command else {
            panic!("not check");
        };
        assert_eq!(args.thresholds.thresholds(), Ok(Thresholds::default()));
    }

    /// Words as a shell splits them: whitespace outside double quotes, quotes removed.
    fn shell_words(line: &str) -> Vec<String> {
        let (mut words, mut cur, mut quoted, mut any) = (Vec::new(), String::new(), false, false);
        for c in line.chars() {
            match c {
                '"' => (quoted, any) = (!quoted, true),
                c if c.is_whitespace() && !quoted => {
                    if any {
                        words.push(std::mem::take(&mut cur));
                    }
                    any = false;
                }
                c => {
                    cur.push(c);
                    any = true;
                }
            }
        }
        if any {
            words.push(cur);
        }
        words
    }

    /// Every example line of every command's help parses, and each command that takes
    /// --cloud-nat or --udp shows it in an example.
    #[test]
    fn examples_parse_and_show_the_new_flags() {
        use clap::CommandFactory;
        let mut root = Cli::command();
        root.build();
        for sub in root.get_subcommands() {
            let name = sub.get_name().to_string();
            let help = sub.clone().render_long_help().to_string();
            let examples: Vec<Vec<String>> = help
                .lines()
                .filter_map(|l| l.strip_prefix("  portdoctor "))
                // The command ends at its comment (two spaces), a pipe or a redirection.
                .map(|l| l.split("  ").next().unwrap_or(l))
                .map(|l| l.split(['|', '>']).next().unwrap_or(l))
                .map(|l| {
                    std::iter::once("portdoctor".to_string())
                        .chain(shell_words(l))
                        .collect()
                })
                .collect();
            for args in &examples {
                if let Err(e) = Cli::try_parse_from(args) {
                    panic!("{name}: example `{}` does not parse: {e}", args.join(" "));
                }
            }
            for flag in ["cloud-nat", "udp"] {
                let takes = sub.get_arguments().any(|a| a.get_long() == Some(flag));
                let shown = examples
                    .iter()
                    .any(|a| a.iter().any(|w| *w == format!("--{flag}")));
                assert!(
                    !takes || shown,
                    "{name} --help has no example with --{flag}"
                );
            }
        }
    }
}
