//! `portdoctor lab`: a bounded reproducer that makes a pool run out on purpose, in a network
//! namespace it creates and always removes, and puts the observed onset of failures beside the
//! capacity model's prediction.
//!
//! Shape: [`LabConfig`] (validated against hard [`limits`]) → [`prediction`] (pure, from
//! [`crate::capacity`]) → [`run::run`] (Linux: namespace, server, paced client, sampler that
//! calls the same collect + analyze as `check`) → [`LabReport`] (text, JSON, SVG chart).

pub mod chart;
pub mod report;
#[cfg(target_os = "linux")]
pub mod run;
#[cfg(target_os = "linux")]
pub mod sys;
#[cfg(target_os = "linux")]
pub mod udp;

use serde::Serialize;

use crate::capacity::{self, Scenario};
use crate::snapshot::{Os, PortRange};

/// Hard limits: the lab is a reproducer, not a load generator. Enforced by [`LabConfig::validate`]
/// before anything is created, and at run time for open sockets.
pub mod limits {
    /// New connections (or requests) per second, at any point of a ramp.
    pub const MAX_RATE: f64 = 2000.0;
    /// Seconds of traffic.
    pub const MAX_DURATION_S: f64 = 60.0;
    /// Ports in the lab's ephemeral range.
    pub const MAX_RANGE_PORTS: u32 = 4096;
    /// Server ports (destinations).
    pub const MAX_DESTINATIONS: u32 = 16;
    /// Connection lifetime (how long the client holds each connection open).
    pub const MAX_LIFETIME_S: f64 = 5.0;
    /// Connection attempts in one run (rate × duration).
    pub const MAX_ATTEMPTS: u64 = 60_000;
    /// Sockets the client may hold open at once (rate × lifetime); the run stops past it.
    pub const MAX_OPEN_SOCKETS: usize = 2048;
}

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("{0}")]
    Limit(String),
    #[error("{0}")]
    Namespace(String),
    #[error("{what}: {source}")]
    Os {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("portdoctor lab runs on Linux only (it needs network namespaces)")]
    Unsupported,
}

/// One lab run's settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabConfig {
    /// New connections per second (requests per second with keep-alive), at the start.
    pub rate_per_s: f64,
    /// Ramp linearly from `rate_per_s` to this by the end of the run.
    pub ramp_to_per_s: Option<f64>,
    pub duration_s: f64,
    /// The lab namespace's ip_local_port_range.
    pub range: PortRange,
    /// Server ports the client spreads over, round-robin (each one a connect() pool).
    pub destinations: u32,
    /// How long the client holds each connection before closing.
    pub lifetime_s: f64,
    /// Reuse connections: one per destination, a request/response per tick.
    pub keepalive: bool,
    /// The lab namespace's tcp_tw_reuse.
    pub tw_reuse: u8,
    pub server_closes_first: bool,
    /// bind(127.0.0.1:0) before connect().
    pub bind_before_connect: bool,
}

impl Default for LabConfig {
    fn default() -> Self {
        Self {
            rate_per_s: 100.0,
            ramp_to_per_s: None,
            duration_s: 4.0,
            range: PortRange {
                low: 40000,
                high: 40199,
            },
            destinations: 1,
            lifetime_s: 0.0,
            keepalive: false,
            tw_reuse: 0,
            server_closes_first: false,
            bind_before_connect: false,
        }
    }
}

impl LabConfig {
    /// Checks every hard limit; the message says which and what to pass instead.
    pub fn validate(&self) -> Result<(), LabError> {
        use limits::{
            MAX_ATTEMPTS, MAX_DESTINATIONS, MAX_DURATION_S, MAX_LIFETIME_S, MAX_OPEN_SOCKETS,
            MAX_RANGE_PORTS, MAX_RATE,
        };
        let peak = self.rate_per_s.max(self.ramp_to_per_s.unwrap_or(0.0));
        let fail = |m: String| Err(LabError::Limit(m));
        if self.rate_per_s.is_nan() || self.rate_per_s <= 0.0 || !peak.is_finite() {
            return fail(format!("--rate must be above 0 (got {})", self.rate_per_s));
        }
        if self.ramp_to_per_s.is_some_and(|r| r.is_nan() || r <= 0.0) {
            return fail("--ramp must be above 0".into());
        }
        if peak > MAX_RATE {
            return fail(format!("rate {peak}/s is above the lab's limit of {MAX_RATE}/s: the lab reproduces exhaustion with a small range, it needs no more"));
        }
        if self.duration_s.is_nan() || self.duration_s <= 0.0 || self.duration_s > MAX_DURATION_S {
            return fail(format!(
                "--duration {} s is outside (0, {MAX_DURATION_S}] s",
                self.duration_s
            ));
        }
        if self.range.low < 1024 || self.range.len() < 2 || self.range.len() > MAX_RANGE_PORTS {
            return fail(format!(
                "--range {} {} must lie in 1024-65535 and hold 2 to {MAX_RANGE_PORTS} ports",
                self.range.low, self.range.high
            ));
        }
        if self.destinations == 0 || self.destinations > MAX_DESTINATIONS {
            return fail(format!(
                "--destinations must be 1 to {MAX_DESTINATIONS} (got {})",
                self.destinations
            ));
        }
        if self.lifetime_s.is_nan() || self.lifetime_s < 0.0 || self.lifetime_s > MAX_LIFETIME_S {
            return fail(format!(
                "--lifetime {} s is outside [0, {MAX_LIFETIME_S}] s",
                self.lifetime_s
            ));
        }
        if self.tw_reuse > 2 {
            return fail("--tw-reuse must be 0, 1 or 2".into());
        }
        let attempts = self.attempts_planned();
        if attempts > MAX_ATTEMPTS {
            return fail(format!("{attempts} connection attempts planned (rate x duration) is above the limit of {MAX_ATTEMPTS}: lower --rate, --ramp or --duration"));
        }
        let held = (peak * self.lifetime_s).ceil() as usize;
        if held > MAX_OPEN_SOCKETS {
            return fail(format!("rate x lifetime = {held} sockets held at once is above the limit of {MAX_OPEN_SOCKETS}: lower --rate or --lifetime"));
        }
        if self.keepalive && self.bind_before_connect {
            return fail(
                "--keepalive and --bind-before-connect do not combine: pick one scenario".into(),
            );
        }
        Ok(())
    }

    /// Offered rate at `t` seconds (linear ramp when asked).
    pub fn rate_at(&self, t: f64) -> f64 {
        match self.ramp_to_per_s {
            Some(to) => {
                self.rate_per_s + (to - self.rate_per_s) * (t / self.duration_s).clamp(0.0, 1.0)
            }
            None => self.rate_per_s,
        }
    }

    /// When the `i`-th attempt (from 0) is due: the inverse of the cumulative rate.
    pub fn due_at(&self, i: u64) -> f64 {
        let n = i as f64;
        let r0 = self.rate_per_s;
        match self.ramp_to_per_s {
            Some(to) if (to - r0).abs() > f64::EPSILON => {
                let k = (to - r0) / self.duration_s;
                // r0 t + k t² / 2 = n
                let disc = (r0 * r0 + 2.0 * k * n).max(0.0);
                (disc.sqrt() - r0) / k
            }
            _ => n / r0,
        }
    }

    pub fn attempts_planned(&self) -> u64 {
        let end = self.ramp_to_per_s.unwrap_or(self.rate_per_s);
        (f64::midpoint(self.rate_per_s, end) * self.duration_s).ceil() as u64
    }

    /// The capacity model's scenario for this lab (loopback, timestamps on, no reserved ports,
    /// server ports outside the range).
    pub fn scenario(&self, tw_reuse_delay_s: f64) -> Scenario {
        let mut s = capacity::Preset::LinuxDefault.scenario();
        s.os = Os::Linux;
        s.range = self.range;
        s.lifetime_s = self.lifetime_s;
        s.rate_per_s = Some(self.rate_per_s.max(self.ramp_to_per_s.unwrap_or(0.0)));
        s.destinations = self.destinations;
        s.keepalive_share = if self.keepalive { 1.0 } else { 0.0 };
        s.tw_reuse = self.tw_reuse;
        s.tw_reuse_delay_s = tw_reuse_delay_s;
        s.loopback = true;
        s.bind_before_connect = self.bind_before_connect;
        s.server_closes_first = self.server_closes_first;
        s
    }
}

/// What the model says will happen in this lab.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    pub usable_ports: u32,
    pub pools: u64,
    pub hold_s: f64,
    pub hold_reason: capacity::HoldReason,
    pub per_pool_per_s: Option<f64>,
    pub total_per_s: Option<f64>,
    /// Seconds from the start until the first connect (or bind) fails; `None` = no failures
    /// within the run.
    pub onset_s: Option<f64>,
}

/// The model's prediction for `cfg` (pure).
pub fn prediction(cfg: &LabConfig, tw_reuse_delay_s: f64) -> Prediction {
    let s = cfg.scenario(tw_reuse_delay_s);
    let o = capacity::evaluate(&s);
    let onset_s = if cfg.keepalive {
        // One connection per destination, opened at the start.
        (u64::from(cfg.destinations) > u64::from(o.usable_ports) * o.pools).then_some(0.0)
    } else {
        capacity::onset_seconds(
            |t| cfg.rate_at(t),
            o.hold_s,
            o.usable_ports,
            o.pools,
            cfg.duration_s,
        )
    };
    Prediction {
        usable_ports: o.usable_ports,
        pools: o.pools,
        hold_s: o.hold_s,
        hold_reason: o.hold_reason,
        per_pool_per_s: o.per_pool_per_s,
        total_per_s: o.total_per_s,
        onset_s,
    }
}

/// Latency percentiles of one second, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Latency {
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl Latency {
    pub fn of(samples: &mut [u64]) -> Option<Latency> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        Some(Latency {
            p50_us: at(0.5),
            p90_us: at(0.9),
            p99_us: at(0.99),
            max_us: samples[samples.len() - 1],
        })
    }
}

/// The lab's pools as `check` sees them (collect + analyze inside the namespace).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolSample {
    /// Seconds since the start.
    pub t: f64,
    /// Outbound sockets to the lab's server ports (all states).
    pub in_use: u64,
    pub time_wait: u64,
    /// Ports no new connection can take, in the fullest pool (check's `used`).
    pub used: u64,
    /// Capacity of that pool.
    pub capacity: Option<u32>,
    /// Its utilization, and the pool's scope (`destination`, or `local_address` when check
    /// recognised bind-before-connect).
    pub utilization: Option<f64>,
    pub scope: Option<crate::analysis::Scope>,
    pub pools: usize,
}

/// One second of the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Second {
    pub t: u32,
    /// Rate the schedule asked for in this second.
    pub target_rate: f64,
    pub attempts: u64,
    /// New connections that succeeded.
    pub connects: u64,
    /// Requests over reused connections (keep-alive).
    pub requests: u64,
    /// connect() failed with EADDRNOTAVAIL (the pool is full).
    pub eaddrnotavail: u64,
    /// bind() failed with EADDRINUSE (bind-before-connect: the range is full).
    pub eaddrinuse: u64,
    pub other_errors: u64,
    /// Time spent in connect() (bind() + connect()) calls this second, failed ones included:
    /// the kernel scans the range under locks before it gives up.
    pub connect_latency: Option<Latency>,
    /// The last pool sample of this second.
    pub pool: Option<PoolSample>,
}

impl Second {
    pub fn failures(&self) -> u64 {
        self.eaddrnotavail + self.eaddrinuse
    }
}

/// What the run observed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Observed {
    /// Seconds from the start to the first EADDRNOTAVAIL/EADDRINUSE.
    pub onset_s: Option<f64>,
    /// The errno of that failure, as text.
    pub first_failure: Option<String>,
    pub attempts: u64,
    pub connects: u64,
    pub failures: u64,
    pub other_errors: u64,
    /// Ran to the end (false: stopped by SIGINT/SIGTERM or a limit).
    pub completed: bool,
    pub stop_reason: Option<String>,
    /// An example of an unexpected error, if any.
    pub other_error_example: Option<String>,
    /// The same failures (EADDRNOTAVAIL + EADDRINUSE of this process) as the kernel
    /// tracepoints counted them (docs/failures.md); `None` when tracing was unavailable.
    pub traced_failures: Option<u64>,
    /// Why `traced_failures` is `None`.
    pub tracing_note: Option<String>,
}

/// How far apart the model and the run are.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// observed − predicted onset, seconds (both known).
    pub difference_s: Option<f64>,
    /// difference / predicted.
    pub relative: Option<f64>,
    /// Both say "no failures", or the onsets are within [`AGREEMENT`] of each other.
    pub agrees: bool,
}

/// Relative onset difference within which model and run agree.
pub const AGREEMENT: f64 = 0.10;

pub fn compare(predicted: Option<f64>, observed: Option<f64>) -> Comparison {
    match (predicted, observed) {
        (Some(p), Some(o)) => {
            let d = o - p;
            let rel = if p > 0.0 { d / p } else { d };
            Comparison {
                difference_s: Some(d),
                relative: Some(rel),
                agrees: rel.abs() <= AGREEMENT,
            }
        }
        (None, None) => Comparison {
            difference_s: None,
            relative: None,
            agrees: true,
        },
        _ => Comparison {
            difference_s: None,
            relative: None,
            agrees: false,
        },
    }
}

/// Everything one lab run produced.
#[derive(Debug, Clone, Serialize)]
pub struct LabReport {
    pub schema: &'static str,
    pub namespace: String,
    /// The namespace's name was gone after the run (its sockets die with the process).
    pub namespace_removed: bool,
    pub kernel: Option<String>,
    pub config: LabConfig,
    pub server_ports: Vec<u16>,
    pub tw_reuse_delay_ms: u32,
    pub model: Prediction,
    pub observed: Observed,
    pub comparison: Comparison,
    pub seconds: Vec<Second>,
    pub pool_samples: Vec<PoolSample>,
    pub chart: Option<String>,
}

pub const SCHEMA: &str = "portdoctor.lab/v1";

/// Server ports outside the lab's range.
pub fn server_ports(cfg: &LabConfig) -> Vec<u16> {
    let n = cfg.destinations as u16;
    let base = if cfg.range.contains(10000) || cfg.range.contains(10000 + n) {
        2000
    } else {
        10000
    };
    (0..n).map(|i| base + i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_within_limits_and_predict_onset_at_two_seconds() {
        let c = LabConfig::default();
        c.validate().unwrap();
        let p = prediction(&c, 1.0);
        assert_eq!(p.usable_ports, 200);
        assert!((p.onset_s.unwrap() - 2.0).abs() < 0.01);
    }

    #[test]
    fn scenarios_predict_as_the_model_says() {
        let base = LabConfig::default();
        let reuse = LabConfig {
            tw_reuse: 1,
            ..base.clone()
        };
        assert_eq!(prediction(&reuse, 1.0).onset_s, None);
        let reuse2 = LabConfig {
            tw_reuse: 2,
            ..base.clone()
        };
        assert_eq!(prediction(&reuse2, 1.0).onset_s, None, "loopback");
        let keep = LabConfig {
            keepalive: true,
            ..base.clone()
        };
        assert_eq!(prediction(&keep, 1.0).onset_s, None);
        let scf = LabConfig {
            server_closes_first: true,
            ..base.clone()
        };
        assert_eq!(prediction(&scf, 1.0).onset_s, None);
        let two = LabConfig {
            destinations: 2,
            duration_s: 6.0,
            ..base.clone()
        };
        let bind = LabConfig {
            bind_before_connect: true,
            ..two.clone()
        };
        let (c, b) = (
            prediction(&two, 1.0).onset_s.unwrap(),
            prediction(&bind, 1.0).onset_s.unwrap(),
        );
        assert!((c - 4.0).abs() < 0.01 && (b - 2.0).abs() < 0.01, "{c} {b}");
    }

    #[test]
    fn ramp_schedule_inverts_the_cumulative_rate() {
        let c = LabConfig {
            rate_per_s: 20.0,
            ramp_to_per_s: Some(200.0),
            duration_s: 4.0,
            ..LabConfig::default()
        };
        // 20 t + 22.5 t² at t = 2: 40 + 90 = 130 attempts.
        assert!((c.due_at(130) - 2.0).abs() < 1e-9);
        assert_eq!(c.attempts_planned(), 440);
        let p = prediction(&c, 1.0).onset_s.unwrap();
        assert!((p - 2.570).abs() < 0.003, "{p}");
    }

    #[test]
    fn limits_are_enforced_with_clear_messages() {
        let bad = [
            LabConfig {
                rate_per_s: 5000.0,
                ..LabConfig::default()
            },
            LabConfig {
                duration_s: 120.0,
                ..LabConfig::default()
            },
            LabConfig {
                range: PortRange::new(20000, 30000).unwrap(),
                ..LabConfig::default()
            },
            LabConfig {
                destinations: 100,
                ..LabConfig::default()
            },
            LabConfig {
                rate_per_s: 2000.0,
                lifetime_s: 5.0,
                ..LabConfig::default()
            },
            LabConfig {
                ramp_to_per_s: Some(1e9),
                ..LabConfig::default()
            },
        ];
        for c in bad {
            let e = c.validate().unwrap_err();
            assert!(matches!(e, LabError::Limit(_)), "{e}");
        }
    }

    #[test]
    fn comparison_within_ten_percent() {
        assert!(compare(Some(2.0), Some(2.15)).agrees);
        assert!(!compare(Some(2.0), Some(2.5)).agrees);
        assert!(compare(None, None).agrees);
        assert!(!compare(None, Some(1.0)).agrees);
        assert_eq!(Latency::of(&mut []), None);
        let l = Latency::of(&mut [5, 1, 3, 2, 4]).unwrap();
        assert_eq!((l.p50_us, l.max_us), (3, 5));
    }

    #[test]
    fn server_ports_stay_out_of_the_range() {
        let c = LabConfig {
            range: PortRange::new(9000, 12000).unwrap(),
            destinations: 4,
            ..LabConfig::default()
        };
        assert!(server_ports(&c).iter().all(|&p| !c.range.contains(p)));
        assert_eq!(server_ports(&LabConfig::default()), vec![10000]);
    }
}
