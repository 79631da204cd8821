//! `portdoctor service` options (Windows Service Control Manager).

use clap::{Args, Subcommand};

/// The service name `install` and `uninstall` use unless told otherwise.
pub const DEFAULT_SERVICE_NAME: &str = "portdoctor";

const SERVICE_EXAMPLES: &str = "\
Examples (an elevated prompt: Run as administrator):
  portdoctor service install                                   serve on 127.0.0.1:9951
  portdoctor service install -- --listen 0.0.0.0:9951 --web-config C:\\ProgramData\\portdoctor\\web.yml
  sc.exe start portdoctor
  sc.exe stop portdoctor
  portdoctor service uninstall

install registers this portdoctor.exe (its full path, quoted) with `serve --service` and the
arguments after `--` as an automatic-start service running as LocalSystem; uninstall stops it
if it runs and deletes it. Windows only; on Linux use the systemd unit in deploy/.

Exit codes: 0 done, 3 the Service Control Manager refused (not elevated, the name is taken or
unknown), 4 bad command line (including serve arguments serve would refuse).";

#[derive(Debug, Args)]
#[command(after_help = SERVICE_EXAMPLES)]
pub struct ServiceArgs {
    #[command(subcommand)]
    pub action: ServiceAction,
}

#[derive(Debug, Subcommand)]
pub enum ServiceAction {
    /// Register `portdoctor serve --service [SERVE ARGS]` as an automatic-start service
    Install {
        /// Service name (also the Event Log source)
        #[arg(long, value_name = "NAME", default_value = DEFAULT_SERVICE_NAME)]
        name: String,
        /// Arguments for `serve`, after `--` (e.g. -- --listen 0.0.0.0:9951)
        #[arg(last = true, value_name = "SERVE ARGS")]
        serve_args: Vec<String>,
    },
    /// Stop the service if it runs, then delete it
    Uninstall {
        /// Service name
        #[arg(long, value_name = "NAME", default_value = DEFAULT_SERVICE_NAME)]
        name: String,
    },
}
