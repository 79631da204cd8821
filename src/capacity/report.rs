//! Text and JSON (`portdoctor.capacity/v1`) rendering of a capacity answer.

use std::fmt::Write as _;

use serde::Serialize;

use super::{Change, HoldReason, Outcome, Preset, Scenario};
use crate::analysis::Scope;
use crate::snapshot::Os;
use crate::units::{group, human_duration};

pub const SCHEMA: &str = "portdoctor.capacity/v1";

/// Everything `portdoctor capacity` prints.
#[derive(Debug, Clone, Serialize)]
pub struct CapacityReport {
    pub schema: &'static str,
    pub preset: Option<Preset>,
    /// Where the inputs came from: `flags`, `host`, `netns:NAME` or `snapshot:FILE`.
    pub source: String,
    pub scenario: Scenario,
    pub outcome: Outcome,
    /// Best first; empty when the demand fits or none was given.
    pub changes: Vec<Change>,
    /// Id of the first change (best first) that makes the demand fit alone.
    pub recommended: Option<String>,
    pub notes: Vec<String>,
    /// `--cloud-nat`: the modelled cloud NAT quota against the offered load (issue 16).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud_nat: Option<crate::analysis::snat::CloudNatDemand>,
}

impl CapacityReport {
    pub fn new(
        preset: Option<Preset>,
        source: String,
        scenario: Scenario,
        mut notes: Vec<String>,
    ) -> Self {
        let outcome = super::evaluate(&scenario);
        let changes = super::changes(&scenario);
        let recommended = changes.iter().find(|c| c.fits).map(|c| c.id.clone());
        if scenario.os == Os::Windows {
            notes.push(if scenario.port_scalability {
                "Windows with SO_PORT_SCALABILITY: one dynamic range per local address".into()
            } else {
                "Windows: one host-wide pool per IP version; by default a port of the dynamic range is taken \"no matter the number of IP addresses\" (SO_PORT_SCALABILITY page), so more source IPs help only with SO_PORT_SCALABILITY (--port-scalability); ports are shared across destinations only inside a configured auto-reuse range (sockets with SO_REUSE_UNICASTPORT, or connect() without bind())".into()
            });
        }
        if scenario.rate_per_s.is_some() && scenario.destinations > 1 {
            notes.push("traffic is assumed to spread evenly over destinations and source IPs; an uneven spread fills the busiest pool first".into());
        }
        Self {
            schema: SCHEMA,
            preset,
            source,
            scenario,
            outcome,
            changes,
            recommended,
            notes,
            cloud_nat: None,
        }
    }
}

pub fn render_json(r: &CapacityReport) -> String {
    let mut s =
        serde_json::to_string_pretty(r).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    s.push('\n');
    s
}

/// A rate as "470/s" (whole numbers from 10 up, one decimal below).
pub fn rate(r: f64) -> String {
    if !r.is_finite() {
        "unlimited".into()
    } else if r.abs() >= 10.0 {
        let g = group(r.abs().round() as u64);
        if r < 0.0 {
            format!("-{g}/s")
        } else {
            format!("{g}/s")
        }
    } else if r.abs() >= 0.1 || r == 0.0 {
        format!("{r:.1}/s")
    } else {
        // Two significant digits: 0.017/s (one a minute), not 0.0/s.
        let decimals = ((-r.abs().log10()).ceil() as usize + 1).min(9);
        format!("{r:.decimals$}/s")
    }
}

fn opt_rate(r: Option<f64>) -> String {
    r.map_or_else(|| "unlimited (ports are not held)".into(), rate)
}

fn secs(s: f64) -> String {
    if (s - s.round()).abs() < 1e-9 {
        format!("{s:.0} s")
    } else {
        format!("{s:.2} s")
    }
}

/// A count per second without the unit: "3,000", "2.5".
fn per_s(r: f64) -> String {
    rate(r).trim_end_matches("/s").to_string()
}

pub fn render_text(r: &CapacityReport) -> String {
    let s = &r.scenario;
    let o = &r.outcome;
    let mut out = String::new();
    let preset = r
        .preset
        .map_or_else(String::new, |p| format!(", preset {}", p.name()));
    let _ = writeln!(
        out,
        "Capacity model ({}{preset}; inputs from {})",
        match s.os {
            Os::Linux => "Linux",
            Os::Windows => "Windows",
        },
        r.source
    );
    let _ = writeln!(
        out,
        "  usable ports per pool  {}  (range {}-{}: {}, {} reserved/excluded, {} bound)",
        group(u64::from(o.usable_ports)),
        s.range.low,
        s.range.high,
        crate::units::count(u64::from(o.range_ports), "port", "ports"),
        group(u64::from(o.reserved_in_range)),
        group(u64::from(s.bound_ports))
    );
    let why = match o.hold_reason {
        HoldReason::TimeWait => format!(
            "lifetime {} + TIME_WAIT {}{}",
            secs(s.lifetime_s),
            secs(s.time_wait_s),
            if s.os == Os::Linux && s.tw_reuse != 0 && !s.bind_before_connect {
                if s.timestamps {
                    " (tcp_tw_reuse does not apply to these destinations)"
                } else {
                    " (tcp_tw_reuse needs tcp_timestamps)"
                }
            } else if s.bind_before_connect {
                " (bind() owns the ports through TIME_WAIT: no reuse)"
            } else {
                ""
            }
        ),
        HoldReason::TwReuse => format!(
            "lifetime {} + tcp_tw_reuse_delay {} (TIME_WAIT ports are reused)",
            secs(s.lifetime_s),
            secs(s.tw_reuse_delay_s)
        ),
        HoldReason::ServerClosesFirst => format!(
            "lifetime {} (the server closes first: TIME_WAIT is on its side)",
            secs(s.lifetime_s)
        ),
        HoldReason::UdpSocketLifetime => format!(
            "UDP socket lifetime {}: no TIME_WAIT, the port is free when the socket closes",
            secs(s.lifetime_s)
        ),
    };
    let _ = writeln!(out, "  hold time per port     {}  ({why})", secs(o.hold_s));
    let _ = writeln!(
        out,
        "  pools                  {}  ({})",
        group(o.pools),
        match o.scope {
            Scope::Destination if s.observed_pools.is_some() => format!(
                "as seen on the host: {} source IP(s), {} destination(s); connect() ports are unique per destination",
                s.source_ips.max(1),
                s.destinations.max(1)
            ),
            Scope::Destination => format!(
                "{} source IP(s) x {} destination(s): connect() ports are unique per destination",
                s.source_ips.max(1),
                s.destinations.max(1)
            ),
            Scope::Udp => "UDP: one pool for the whole namespace (host), every destination and address; held UDP sockets count as bound".into(),
            _ if s.bind_before_connect && s.os == Os::Linux => format!(
                "{} source IP(s): bind() before connect() makes ports unique per source IP",
                s.source_ips.max(1)
            ),
            Scope::Host => "one host-wide pool: without SO_PORT_SCALABILITY every local address shares the dynamic range".into(),
            Scope::LocalAddress => format!("{} local address(es)", s.source_ips.max(1)),
            // The capacity model is about the host's own connect() ports, never NAT's.
            Scope::Snat => "SNAT pools (the NAT's source ports)".into(),
        }
    );
    let _ = writeln!(
        out,
        "  sustainable rate       {} per pool, {} in total",
        opt_rate(o.per_pool_per_s),
        opt_rate(o.total_per_s)
    );
    if let Some(d) = &o.demand {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Demand: {} requests/s offered, {:.0}% on reused connections -> {} new connections/s ({} per pool)",
            per_s(d.offered_per_s),
            s.keepalive_share * 100.0,
            per_s(d.new_connections_per_s),
            rate(d.per_pool_per_s)
        );
        let _ = writeln!(
            out,
            "  ports needed per pool  {} of {} ({:.0}%; Little's law: rate x hold time)",
            group(d.ports_needed_per_pool.ceil() as u64),
            group(u64::from(o.usable_ports)),
            d.utilization * 100.0
        );
        if let Some(h) = d.headroom_per_s {
            let _ = writeln!(
                out,
                "  headroom               {}{}",
                rate(h),
                if d.fits {
                    format!(
                        " ({:.0}% of the sustainable rate is free)",
                        (1.0 - d.utilization).max(0.0) * 100.0
                    )
                } else {
                    " (short: the demand does NOT fit)".into()
                }
            );
        }
        match d.time_to_exhaustion_s {
            Some(t) => {
                let _ = writeln!(
                    out,
                    "  time to exhaustion     {} from an empty pool ({:.1} s); then connect() fails with EADDRNOTAVAIL",
                    human_duration(t),
                    t
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "  time to exhaustion     never: the pools settle below their capacity"
                );
            }
        }
    }
    if !r.changes.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Changes that make it fit (best first; + fits alone, - does not){}:",
            r.recommended
                .as_deref()
                .map_or_else(String::new, |id| format!("; smallest: {id}"))
        );
        for c in &r.changes {
            let _ = writeln!(
                out,
                "  {} {}  [{}]",
                if c.fits { "+" } else { "-" },
                c.what,
                c.id
            );
            let _ = writeln!(
                out,
                "      capacity then {} in total; ports needed per pool {} of {}",
                opt_rate(c.total_per_s_after),
                group(c.ports_needed_per_pool.ceil() as u64),
                group(u64::from(c.usable_ports))
            );
            for line in c.how.lines() {
                let _ = writeln!(out, "      how: {line}");
            }
            if !c.tradeoff.is_empty() {
                let _ = writeln!(out, "      cost: {}", c.tradeoff);
            }
        }
    }
    for n in &r.notes {
        let _ = writeln!(out, "note: {n}");
    }
    out
}
