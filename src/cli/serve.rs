//! `portdoctor serve` options.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use super::{parse_duration, ScopeArgs, TargetArgs, ThresholdArgs};

/// The default address. The port: free: free in the Prometheus default port allocations wiki at the time of
/// writing (9951 is not listed).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9951";

const SERVE_EXAMPLES: &str = "\
Examples:
  portdoctor serve                                 http://127.0.0.1:9951/metrics
  portdoctor serve --listen 0.0.0.0:9951 --web-config /etc/portdoctor/web.yml
  portdoctor serve --netns lab1 --min-interval 10s --max-pools 100
  portdoctor serve -A --listen 0.0.0.0:9951        every namespace: pods and containers
  portdoctor serve --cloud-nat azure-lb:1024       also portdoctor_cloud_nat_* (a model)
  portdoctor serve --textfile /var/lib/node_exporter/textfile            one shot
  portdoctor serve --textfile /var/lib/node_exporter/textfile --loop 30s

Scrapes within --min-interval share one collection. With --netns/--pid the listener stays in
the caller's namespace; only collections run in the target's. With -A each collection finds
every namespace anew and --max-pools counts the pools of all of them together. Paths:
/metrics, /healthz, / (index).
Metrics, alert rules, the Grafana dashboard and the systemd unit: docs/serve.md and deploy/.
Windows service (no NSSM): portdoctor service install -- --listen 0.0.0.0:9951 (docs/windows.md).

Exit codes: 0 stopped by SIGTERM/Ctrl-C (or textfile written), 3 cannot listen (port taken) or
collect, 4 bad command line or web config.";

#[derive(Debug, Clone, Args)]
#[command(after_help = SERVE_EXAMPLES)]
pub struct ServeArgs {
    /// Address to listen on (loopback by default; use 0.0.0.0:9951 or [::]:9951 for others)
    #[arg(long, value_name = "ADDR:PORT", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Scrapes within this time of the last collection get its cached result (e.g. 5s, 1m)
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub min_interval: f64,
    /// Pools with their own series, highest utilization first; the rest are summed into one
    /// `other` series (bounds cardinality)
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub max_pools: usize,
    /// Exporter-toolkit style web config (YAML): basic_auth_users (bcrypt) and tls_server_config
    #[arg(long, value_name = "FILE")]
    pub web_config: Option<PathBuf>,
    /// Write DIR/portdoctor.prom (atomically) for node_exporter's textfile collector instead of
    /// serving HTTP; once, or every --loop
    #[arg(long, value_name = "DIR")]
    pub textfile: Option<PathBuf>,
    /// With --textfile: rewrite the file at this interval until SIGTERM/Ctrl-C (a failed round
    /// is logged and retried at the next; the file then says portdoctor_collection_success 0)
    #[arg(long = "loop", value_name = "DURATION", requires = "textfile", value_parser = parse_duration)]
    pub loop_interval: Option<f64>,
    /// Most connections open at once; at the limit a new connection closes the least recently
    /// active idle ones (lowered to what the open-file limit allows, with a warning)
    #[arg(long, value_name = "N", default_value_t = 2048)]
    pub max_connections: usize,
    /// Time a client has to send a request's headers (also the keep-alive idle limit)
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: f64,
    /// Time to answer one request, collection included (then 503)
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: f64,
    /// Run under the Windows Service Control Manager (what `portdoctor service install`
    /// registers; Windows only). SERVICE_CONTROL_STOP/SHUTDOWN stop it as Ctrl-C does
    #[arg(long)]
    pub service: bool,
    #[command(flatten)]
    pub thresholds: ThresholdArgs,
    /// (serve never scans owners: metrics carry no process names, so --no-owners changes
    /// nothing)
    #[command(flatten)]
    pub target: TargetArgs,
    /// With -A every series gains the labels netns, pod_namespace, pod and container
    #[command(flatten)]
    pub scope: ScopeArgs,
}
