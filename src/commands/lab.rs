//! `portdoctor lab`: reproduce port exhaustion in a throwaway network namespace and compare the
//! observed onset of failures with the capacity model.

use std::process::ExitCode;

use portdoctor::lab::{LabConfig, LabError};
use portdoctor::snapshot::PortRange;

use crate::cli::LabArgs;

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
    #[cfg(target_os = "linux")]
    if args.udp {
        return run_udp(args);
    }
    let cfg = match args.config() {
        Ok(c) => c,
        Err(m) => return Ok(super::usage(m)),
    };
    if let Err(e) = cfg.validate() {
        return Ok(super::usage(format!(
            "{e} (limits: see `portdoctor lab --help`)"
        )));
    }
    #[cfg(target_os = "linux")]
    {
        run_linux(args, &cfg)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (args, cfg);
        Ok(super::usage(LabError::Unsupported))
    }
}

/// `lab --udp`: fill the UDP pool of a lab namespace until EAGAIN (docs/udp.md).
#[cfg(target_os = "linux")]
fn run_udp(args: &LabArgs) -> anyhow::Result<ExitCode> {
    use portdoctor::lab::udp;
    let range = match args.config() {
        Ok(c) => c.range,
        Err(m) => return Ok(super::usage(m)),
    };
    let report = match udp::run(range) {
        Ok(r) => r,
        Err(e @ LabError::Limit(_)) => return Ok(super::usage(e)),
        Err(e) => return Ok(super::failed(e)),
    };
    let text = if args.json {
        udp::render_json(&report)
    } else {
        udp::render_text(&report)
    };
    super::write_stdout(text.as_bytes())?;
    Ok(ExitCode::from(u8::from(
        !(report.agrees && report.namespace_removed),
    )))
}

#[cfg(target_os = "linux")]
fn run_linux(args: &LabArgs, cfg: &LabConfig) -> anyhow::Result<ExitCode> {
    use portdoctor::lab::report::{render_json, render_text, second_line, SECOND_HEADER};

    use super::write_stdout;
    // A chart that cannot be written must not cost a whole lab run: check the path first.
    let chart_existed = args.chart.as_ref().is_some_and(|p| p.exists());
    if let Some(path) = &args.chart {
        if let Err(e) = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
        {
            return Ok(super::failed(format!(
                "cannot write the chart to {}: {e}",
                path.display()
            )));
        }
    }
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
        Err(e) => {
            // The empty file made by the check above is no chart.
            if let (Some(path), false) = (&args.chart, chart_existed) {
                let _ = std::fs::remove_file(path);
            }
            return Ok(match e {
                LabError::Limit(_) => super::usage(e),
                _ => super::failed(e),
            });
        }
    };
    let mut chart_error = None;
    if let Some(path) = &args.chart {
        let svg = portdoctor::lab::chart::svg(&report);
        match std::fs::write(path, svg) {
            Ok(()) => report.chart = Some(path.display().to_string()),
            Err(e) => chart_error = Some(format!("writing the chart to {}: {e}", path.display())),
        }
    }
    let text = if args.json {
        render_json(&report)
    } else {
        render_text(&report)
    };
    // The results first, always: a lost chart does not lose the run.
    write_stdout(text.as_bytes())?;
    if let Some(e) = chart_error {
        return Ok(super::failed(e));
    }
    let ok = report.comparison.agrees && report.observed.completed && report.namespace_removed;
    Ok(ExitCode::from(u8::from(!ok)))
}
