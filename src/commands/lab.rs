//! `portdoctor lab`: reproduce port exhaustion in a throwaway network namespace and compare the
//! observed onset of failures with the capacity model.

use std::process::ExitCode;

use clap::Args;
use portdoctor::lab::{LabConfig, LabError};
use portdoctor::snapshot::PortRange;

use super::EXIT_USAGE;

const LAB_HELP: &str = "\
Examples:
  portdoctor lab                               200 ports, 100 connects/s: fails after ~2 s
  portdoctor lab --tw-reuse 1                  the same with TIME_WAIT reuse: no failures
  portdoctor lab --keepalive                   one reused connection: no failures
  portdoctor lab --destinations 2 --bind-before-connect   fails twice as early as without
  portdoctor lab --rate 20 --ramp 200 --chart lab.svg     ramp, and an SVG chart

What it does: creates its own network namespace (portdoctor-lab-PID-N), moves into it, sets
ip_local_port_range and tcp_tw_reuse there (never on the host), runs a loopback server and a
paced client, samples the pools with the same collector and model as `check`, and removes the
namespace at the end, also on SIGINT/SIGTERM. Needs root (or CAP_SYS_ADMIN).

Hard limits: rate <= 2000/s (also the ramp's end), duration <= 60 s, range <= 4096 ports,
destinations <= 16, lifetime <= 5 s, attempts (rate x duration) <= 60,000, sockets held at once
(rate x lifetime) <= 2048. Past a limit the lab refuses to start (exit 4).

Exit codes:
  0  ran; the observed onset agrees with the model (within 10%, or both: no failures)
  1  ran; model and observation disagree (or the run was interrupted)
  3  could not set up (not root, no iproute2, namespace refused)
  4  bad command line or a hard limit exceeded";

#[derive(Debug, Args)]
#[command(after_help = LAB_HELP)]
pub struct LabArgs {
    /// New connections per second (requests per second with --keepalive)
    #[arg(long, value_name = "PER_S", default_value_t = 100.0)]
    pub rate: f64,
    /// Ramp linearly from --rate to this rate over the run
    #[arg(long, value_name = "PER_S")]
    pub ramp: Option<f64>,
    /// How long to generate traffic (e.g. 4s)
    #[arg(long, value_name = "DURATION", default_value = "4s", value_parser = crate::units_parse_duration)]
    pub duration: f64,
    /// The lab's ephemeral port range (small, so it runs out in seconds)
    #[arg(long, num_args = 2, value_names = ["LO", "HI"])]
    pub range: Option<Vec<u16>>,
    /// Server ports the client spreads over, each one its own connect() pool
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub destinations: u32,
    /// How long the client holds each connection open (e.g. 100ms)
    #[arg(long, value_name = "DURATION", default_value = "0", value_parser = crate::units_parse_duration)]
    pub lifetime: f64,
    /// Reuse one connection per destination (a request/response per tick)
    #[arg(long)]
    pub keepalive: bool,
    /// net.ipv4.tcp_tw_reuse inside the lab namespace
    #[arg(long, value_name = "0|1|2", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub tw_reuse: u8,
    /// The server closes first (TIME_WAIT lands on its side)
    #[arg(long)]
    pub server_closes_first: bool,
    /// bind(127.0.0.1:0) before connect(): ports unique per source address
    #[arg(long)]
    pub bind_before_connect: bool,
    /// Print the result as JSON (schema portdoctor.lab/v1)
    #[arg(long)]
    pub json: bool,
    /// Write an SVG chart of pool use, rate and failures over time
    #[arg(long, value_name = "FILE")]
    pub chart: Option<std::path::PathBuf>,
}

impl LabArgs {
    fn config(&self) -> Result<LabConfig, String> {
        let range = match &self.range {
            Some(r) => PortRange::new(r[0], r[1])
                .ok_or_else(|| format!("--range {} {}: LO must not be above HI", r[0], r[1]))?,
            None => LabConfig::default().range,
        };
        Ok(LabConfig {
            rate_per_s: self.rate,
            ramp_to_per_s: self.ramp,
            duration_s: self.duration,
            range,
            destinations: self.destinations,
            lifetime_s: self.lifetime,
            keepalive: self.keepalive,
            tw_reuse: self.tw_reuse,
            server_closes_first: self.server_closes_first,
            bind_before_connect: self.bind_before_connect,
        })
    }
}

// Off Linux it only refuses; the signature stays the same for main.rs.
#[cfg_attr(not(target_os = "linux"), allow(clippy::unnecessary_wraps))]
pub fn run(args: &LabArgs) -> anyhow::Result<ExitCode> {
    let cfg = match args.config() {
        Ok(c) => c,
        Err(m) => {
            eprintln!("portdoctor: error: {m}");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    if let Err(e) = cfg.validate() {
        eprintln!("portdoctor: error: {e} (limits: see `portdoctor lab --help`)");
        return Ok(ExitCode::from(EXIT_USAGE));
    }
    #[cfg(target_os = "linux")]
    {
        run_linux(args, &cfg)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (args, cfg);
        eprintln!("portdoctor: error: {}", LabError::Unsupported);
        Ok(ExitCode::from(EXIT_USAGE))
    }
}

#[cfg(target_os = "linux")]
fn run_linux(args: &LabArgs, cfg: &LabConfig) -> anyhow::Result<ExitCode> {
    use portdoctor::lab::report::{render_json, render_text, second_line, SECOND_HEADER};

    use super::{write_stdout, EXIT_COLLECT};
    // Live lines only for a person watching; the final table repeats them on stdout.
    let live = !args.json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    if live {
        eprintln!("{SECOND_HEADER}");
    }
    let result = portdoctor::lab::run::run(cfg, |s| {
        if live {
            eprintln!("{}", second_line(s));
        }
    });
    let mut report = match result {
        Ok(r) => r,
        Err(e @ LabError::Limit(_)) => {
            eprintln!("portdoctor: error: {e}");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
        Err(e) => {
            eprintln!("portdoctor: error: {e}");
            return Ok(ExitCode::from(EXIT_COLLECT));
        }
    };
    if let Some(path) = &args.chart {
        let svg = portdoctor::lab::chart::svg(&report);
        if let Err(e) = std::fs::write(path, svg) {
            eprintln!(
                "portdoctor: error: writing the chart to {}: {e}",
                path.display()
            );
            return Ok(ExitCode::from(EXIT_COLLECT));
        }
        report.chart = Some(path.display().to_string());
    }
    let text = if args.json {
        render_json(&report)
    } else {
        render_text(&report)
    };
    write_stdout(text.as_bytes())?;
    let ok = report.comparison.agrees && report.observed.completed && report.namespace_removed;
    Ok(ExitCode::from(u8::from(!ok)))
}
