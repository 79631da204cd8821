//! The changes that make a demand fit: each application change and each knob of the knowledge
//! base ([`crate::knobs`]) that governs the pools, at the smallest setting that fits (or at its
//! limit when even that does not), with the capacity it buys. Best first, as domain.md orders
//! fixes: reuse connections, spread over more pools, then OS knobs, then who closes first.

use serde::Serialize;

use super::{evaluate, hold_time, pools, tw_reuse_applies, Outcome, Scenario};
use crate::knobs::{
    knob, netsh_dynamicport_fix, reg_add_fix, tcpip_value_range, tune_fix, tune_fix_all,
};
use crate::snapshot::{Os, PortRange};

/// Application/infrastructure change, or an OS knob from the knowledge base.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    App,
    Knob,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// Stable id: a knob id from the knowledge base (`net.ipv4.tcp_tw_reuse`) or `app.*`.
    pub id: String,
    pub kind: ChangeKind,
    /// What to change, with the value.
    pub what: String,
    /// The setting this change proposes (a value, a count or a share), as text.
    pub setting: String,
    /// Sustainable new connections per second in total after the change (`None`: unlimited).
    pub total_per_s_after: Option<f64>,
    /// Ports each pool needs after the change (Little's law) and what it has.
    pub ports_needed_per_pool: f64,
    pub usable_ports: u32,
    /// Whether this change alone makes the demand fit.
    pub fits: bool,
    /// A pasteable command or the code change.
    pub how: String,
    /// What it costs (the knowledge base's trade-off for knobs).
    pub tradeoff: String,
}

fn knob_tradeoff(id: &str) -> String {
    knob(id).map_or_else(String::new, |k| k.tradeoff.to_string())
}

fn make(
    id: &str,
    kind: ChangeKind,
    what: String,
    setting: String,
    after: &Scenario,
    how: String,
    tradeoff: String,
) -> Change {
    let o = evaluate(after);
    let d = o.demand.as_ref();
    Change {
        id: id.to_string(),
        kind,
        what,
        setting,
        total_per_s_after: o.total_per_s,
        ports_needed_per_pool: d.map_or(0.0, |d| d.ports_needed_per_pool),
        usable_ports: o.usable_ports,
        fits: d.is_some_and(|d| d.fits),
        how,
        tradeoff,
    }
}

/// Ports a pool must hold for `s`'s demand (ceil of Little's law).
fn ports_required(s: &Scenario) -> Option<u64> {
    let o = evaluate(s);
    o.demand.map(|d| d.ports_needed_per_pool.ceil() as u64)
}

/// UDP (docs/udp.md): shorter-lived or shared sockets, or a wider range (shared with TCP).
fn udp_changes(s: &Scenario, base: &Outcome, new_per_s: f64) -> Vec<Change> {
    let usable = f64::from(base.usable_ports);
    let mut out = Vec::new();
    if new_per_s > 0.0 {
        // Lifetime that fits: usable / rate (Little's law), in whole milliseconds.
        let lifetime = ((usable / new_per_s) * 1000.0).floor() / 1000.0;
        let mut after = s.clone();
        after.lifetime_s = lifetime;
        out.push(make(
            "app.udp_socket_lifetime",
            ChangeKind::App,
            format!(
                "close each UDP socket within {} (or reuse sockets: one per destination)",
                crate::units::human_duration(lifetime)
            ),
            format!("{lifetime:.3} s"),
            &after,
            "statsd-style metrics clients: one long-lived socket per destination; DNS: a resolver that reuses its sockets; QUIC: multiplex streams over fewer connections".into(),
            "none on the port side".into(),
        ));
    }
    let required = ports_required(s).unwrap_or(0) + u64::from(s.bound_ports);
    let excluded = u64::from(base.reserved_in_range);
    if s.os == Os::Linux {
        let id = "net.ipv4.ip_local_port_range";
        let floor = u64::from(crate::rules::LINUX_SUGGESTED_RANGE.low);
        let size = (required + excluded).min(65535 - floor + 1);
        let range = PortRange::new((65536 - size.max(1)) as u16, 65535).unwrap_or(s.range);
        let mut after = s.clone();
        after.range = range;
        let value = format!("{} {}", range.low, range.high);
        out.push(make(
            id,
            ChangeKind::Knob,
            format!("widen the ephemeral range to {value}: the range is shared with TCP, whose pools grow too"),
            value.clone(),
            &after,
            tune_fix_all(
                &crate::tune::plan::linux_range_sets(&s.listening_ports, &s.reserved, range),
                &s.target,
            ),
            knob_tradeoff(id),
        ));
    }
    out
}

/// The changes that make `s`'s demand fit, best first; empty without a demand or when it
/// already fits.
pub fn changes(s: &Scenario) -> Vec<Change> {
    let base: Outcome = evaluate(s);
    let Some(demand) = base.demand.as_ref() else {
        return Vec::new();
    };
    if demand.fits {
        return Vec::new();
    }
    let usable = f64::from(base.usable_ports);
    if s.udp {
        return udp_changes(s, &base, demand.new_connections_per_s);
    }
    let mut out = Vec::new();

    // 1. Reuse connections in the application.
    if let Some(total) = base.total_per_s {
        if demand.offered_per_s > 0.0 {
            let need = (1.0 - total / demand.offered_per_s).clamp(0.0, 1.0);
            // Round up to a whole percent so the proposal fits.
            let share = ((need * 100.0).ceil() / 100.0).min(1.0);
            let mut after = s.clone();
            after.keepalive_share = share.max(s.keepalive_share);
            out.push(make(
                "app.keepalive",
                ChangeKind::App,
                format!("reuse connections (HTTP keep-alive, a connection pool) for at least {:.0}% of requests", share * 100.0),
                format!("{:.0}%", share * 100.0),
                &after,
                "Go: raise http.Transport.MaxIdleConnsPerHost; .NET: one shared HttpClient (SocketsHttpHandler.PooledConnectionLifetime); Java/Node/Python: a keep-alive agent; databases: a connection pool".into(),
                "none on the port side; idle pooled connections hold a socket each".into(),
            ));
        }
    }

    // 2. Spread over more pools.
    let (pool_count, _) = pools(s);
    let (hold, _) = hold_time(s);
    let needed_pools = (demand.new_connections_per_s * hold / usable.max(1.0)).ceil() as u64;
    if s.bind_before_connect && s.os == Os::Linux {
        let mut after = s.clone();
        after.bind_before_connect = false;
        out.push(make(
            "app.ip_bind_address_no_port",
            ChangeKind::App,
            "set IP_BIND_ADDRESS_NO_PORT before bind() (or do not bind before connect): ports are shared across destinations again".into(),
            "IP_BIND_ADDRESS_NO_PORT=1".into(),
            &after,
            "setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &1, sizeof(int)) before bind(); nginx proxy_bind, HAProxy `source` and Envoy upstream_bind_config do this bind".into(),
            "none (Linux 4.2+)".into(),
        ));
    }
    let per_source_pools = pool_count / u64::from(s.source_ips.max(1));
    if s.os == Os::Linux && !s.bind_before_connect {
        let dests = needed_pools.div_ceil(u64::from(s.source_ips.max(1))).max(1);
        let mut after = s.clone();
        after.destinations = u32::try_from(dests).unwrap_or(u32::MAX);
        out.push(make(
            "app.destinations",
            ChangeKind::App,
            format!("spread the traffic evenly over {dests} destinations (remote IP:port pairs: more backend IPs or listening ports)"),
            dests.to_string(),
            &after,
            "add backend addresses or ports to the client's target list / load balancer pool".into(),
            "more backends to run; each destination is its own pool".into(),
        ));
    }
    // On Windows more source IPs add pools only with SO_PORT_SCALABILITY.
    if s.os == Os::Linux || s.port_scalability {
        let sources = needed_pools.div_ceil(per_source_pools.max(1)).max(1);
        let mut after = s.clone();
        after.source_ips = u32::try_from(sources).unwrap_or(u32::MAX);
        out.push(make(
            "app.source_ips",
            ChangeKind::App,
            format!("spread the traffic evenly over {sources} source IPs"),
            sources.to_string(),
            &after,
            if s.os == Os::Linux {
                "add addresses (ip addr add …) and have the client bind to them with IP_BIND_ADDRESS_NO_PORT, or SNAT over several addresses".into()
            } else {
                "add addresses to the interface and bind clients to them round-robin".into()
            },
            "more addresses to manage".into(),
        ));
    }
    if s.os == Os::Windows && s.destinations > 1 {
        let id = "NetTCPSetting.AutoReusePortRange";
        let mut after = s.clone();
        // Ports of an auto-reuse range are shared by 4-tuple: pools become per destination.
        after.os = Os::Linux;
        after.tw_reuse = 0;
        after.destinations = s.destinations.max(1);
        let mut ch = make(
            id,
            ChangeKind::Knob,
            format!(
                "an auto-reuse port range (Server 2019+): its ports are shared across the {} destinations",
                s.destinations.max(1)
            ),
            format!("{} ports", base.usable_ports),
            &after,
            format!(
                "Set-NetTCPSetting -SettingName InternetCustom -AutoReusePortRangeStartPort S -AutoReusePortRangeNumberOfPorts {}",
                base.usable_ports
            ),
            knob_tradeoff(id),
        );
        ch.usable_ports = base.usable_ports;
        out.push(ch);
    }

    // 3. OS knobs.
    let required = ports_required(s).unwrap_or(0);
    let excluded = u64::from(base.reserved_in_range) + u64::from(s.bound_ports);
    match s.os {
        Os::Linux => {
            let id = "net.ipv4.ip_local_port_range";
            let size = required + excluded;
            let high =
                u64::from(s.range.high).max(u64::from(crate::rules::LINUX_DEFAULT_RANGE.high));
            // Never below the suggested range's start: 1024-15000 holds many services' ports.
            let floor = u64::from(crate::rules::LINUX_SUGGESTED_RANGE.low);
            let (low, high) = if size <= high.saturating_sub(floor) + 1 {
                (high + 1 - size, high)
            } else if size <= 65535 - floor + 1 {
                (65536 - size, 65535)
            } else {
                (floor, 65535)
            };
            let range = PortRange::new(low as u16, high as u16).unwrap_or(s.range);
            let mut after = s.clone();
            after.range = range;
            let value = format!("{} {}", range.low, range.high);
            out.push(make(
                id,
                ChangeKind::Knob,
                format!(
                    "widen the ephemeral range to {} ({} ports)",
                    value,
                    crate::units::group(u64::from(range.len()))
                ),
                value.clone(),
                &after,
                // The one range planner: listeners the new range covers are reserved with it.
                tune_fix_all(
                    &crate::tune::plan::linux_range_sets(&s.listening_ports, &s.reserved, range),
                    &s.target,
                ),
                knob_tradeoff(id),
            ));
            if !s.bind_before_connect && !s.server_closes_first {
                if !tw_reuse_applies(s) {
                    let id = "net.ipv4.tcp_tw_reuse";
                    let mut after = s.clone();
                    after.tw_reuse = 1;
                    after.timestamps = true;
                    let how = if s.timestamps {
                        tune_fix(id, "1", &s.target)
                    } else {
                        tune_fix_all(
                            &[("net.ipv4.tcp_timestamps", "1".into()), (id, "1".into())],
                            &s.target,
                        )
                    };
                    out.push(make(
                        id,
                        ChangeKind::Knob,
                        format!(
                            "tcp_tw_reuse=1{}: TIME_WAIT ports are reused after {:.0} ms",
                            if s.timestamps {
                                ""
                            } else {
                                " (and tcp_timestamps=1)"
                            },
                            s.tw_reuse_delay_s * 1000.0
                        ),
                        "1".into(),
                        &after,
                        how,
                        knob_tradeoff(id),
                    ));
                }
                // The largest delay that still fits (with reuse on).
                let id = "net.ipv4.tcp_tw_reuse_delay";
                let per_pool = demand.per_pool_per_s;
                if per_pool > 0.0 {
                    let max_delay_ms = ((usable / per_pool - s.lifetime_s.max(0.0)) * 1000.0)
                        .floor()
                        .clamp(1.0, 60000.0);
                    if max_delay_ms < s.tw_reuse_delay_s * 1000.0 {
                        let mut after = s.clone();
                        if !tw_reuse_applies(&after) {
                            after.tw_reuse = 1;
                            after.timestamps = true;
                        }
                        after.tw_reuse_delay_s = max_delay_ms / 1000.0;
                        let value = format!("{max_delay_ms:.0}");
                        let mut sets = Vec::new();
                        if !tw_reuse_applies(s) {
                            sets.push(("net.ipv4.tcp_tw_reuse", "1".to_string()));
                        }
                        sets.push((id, value.clone()));
                        let how = tune_fix_all(&sets, &s.target);
                        out.push(make(
                            id,
                            ChangeKind::Knob,
                            format!(
                                "tcp_tw_reuse_delay={value} ms (Linux 6.14+){}",
                                if tw_reuse_applies(s) {
                                    ""
                                } else {
                                    " with tcp_tw_reuse=1"
                                }
                            ),
                            value,
                            &after,
                            how,
                            knob_tradeoff(id),
                        ));
                    }
                }
            }
        }
        Os::Windows => {
            let id = "netsh.ipv4.dynamicport.tcp";
            let num = (required + excluded).clamp(255, 65536 - 1025);
            let start = (65536 - num) as u16;
            let mut after = s.clone();
            after.range = PortRange::new(start, 65535).unwrap_or(s.range);
            out.push(make(
                id,
                ChangeKind::Knob,
                format!("widen the dynamic port range to start={start} num={num} ({start}-65535)"),
                format!("start={start} num={num}"),
                &after,
                netsh_dynamicport_fix(start, num as u32),
                knob_tradeoff(id),
            ));
            let id = "tcpip.TcpTimedWaitDelay";
            let per_pool = demand.per_pool_per_s;
            if per_pool > 0.0 {
                let (min, max) = tcpip_value_range("TcpTimedWaitDelay", None).unwrap_or((30, 300));
                let t = (usable / per_pool - s.lifetime_s.max(0.0))
                    .floor()
                    .clamp(f64::from(min), f64::from(max));
                if t < s.time_wait_s {
                    let mut after = s.clone();
                    after.time_wait_s = t;
                    let value = format!("{t:.0}");
                    out.push(make(
                        id,
                        ChangeKind::Knob,
                        format!("TcpTimedWaitDelay={value} s"),
                        value,
                        &after,
                        reg_add_fix("TcpTimedWaitDelay", t as u32),
                        knob_tradeoff(id),
                    ));
                }
            }
        }
    }

    // 4. Let the server close first.
    if !s.server_closes_first {
        let mut after = s.clone();
        after.server_closes_first = true;
        out.push(make(
            "app.server_closes_first",
            ChangeKind::App,
            "let the server close first (where the protocol allows): TIME_WAIT lands on its listening port".into(),
            "server closes".into(),
            &after,
            "e.g. HTTP: the server sends `Connection: close` and closes; the client reads to EOF before closing".into(),
            "moves TIME_WAIT to the server (no ephemeral ports there)".into(),
        ));
    }
    out
}
