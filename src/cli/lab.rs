//! `portdoctor lab` options.

use clap::Args;

use super::parse_duration;

const LAB_HELP: &str = "\
Examples:
  portdoctor lab                               200 ports, 100 connects/s: fails after ~2 s
  portdoctor lab --tw-reuse 1                  the same with TIME_WAIT reuse: no failures
  portdoctor lab --keepalive                   one reused connection: no failures
  portdoctor lab --destinations 2 --bind-before-connect   fails twice as early as without
  portdoctor lab --rate 20 --ramp 200 --chart lab.svg     ramp, and an SVG chart
  portdoctor lab --udp                         UDP sockets until EAGAIN, beside the model

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
    #[arg(long, value_name = "DURATION", default_value = "4s", value_parser = parse_duration)]
    pub duration: f64,
    /// The lab's ephemeral port range (small, so it runs out in seconds)
    #[arg(long, num_args = 2, value_names = ["LO", "HI"])]
    pub range: Option<Vec<u16>>,
    /// Server ports the client spreads over, each one its own connect() pool
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub destinations: u32,
    /// How long the client holds each connection open (e.g. 100ms)
    #[arg(long, value_name = "DURATION", default_value = "0", value_parser = parse_duration)]
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
    /// UDP instead: hold connected UDP sockets until the kernel refuses one (EAGAIN) and
    /// compare the count with the model's capacity and check's UDP pool (only --range and
    /// --json apply; schema portdoctor.lab-udp/v1)
    #[arg(long, conflicts_with_all = ["ramp", "keepalive", "server_closes_first", "bind_before_connect", "chart"])]
    pub udp: bool,
    /// Print the result as JSON (schema portdoctor.lab/v1)
    #[arg(long)]
    pub json: bool,
    /// Write an SVG chart of pool use, rate and failures over time
    #[arg(long, value_name = "FILE")]
    pub chart: Option<std::path::PathBuf>,
}
