//! What `top`'s header says about NAT (issue 16): the conntrack table against its limit, its
//! drop counters, the fullest SNAT pool and the `--cloud-nat` model's busiest destination.
//! Nothing where conntrack is not loaded, and nothing but the table where there is no SNAT.

use super::state::Current;
use crate::analysis::Analysis;
use crate::report::snat::pool_label;
use crate::snapshot::Snapshot;
use crate::units::group;

/// conntrack drops per second between two samples of the same namespace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DropRates {
    pub insert_failed_per_s: f64,
    pub drop_per_s: f64,
}

/// The drop rates from PREV to NEXT (own namespace); `None` without stats in both, without
/// time between them, or when the counters went back (another namespace, a reset).
pub fn drop_rates(prev: &Current, next: &Current) -> Option<DropRates> {
    let a = prev.snapshot.conntrack.as_ref()?.stats?;
    let b = next.snapshot.conntrack.as_ref()?.stats?;
    let dt = next.at.checked_duration_since(prev.at)?.as_secs_f64();
    if dt <= 0.0 || prev.snapshot.host.netns_id != next.snapshot.host.netns_id {
        return None;
    }
    let per_s = |x: u64, y: u64| y.checked_sub(x).map(|d| d as f64 / dt);
    Some(DropRates {
        insert_failed_per_s: per_s(a.insert_failed, b.insert_failed)?,
        drop_per_s: per_s(a.drop, b.drop)?,
    })
}

/// (priority, text) parts for the header's settings line: lower priorities stay longer.
pub fn header_parts(snap: &Snapshot, a: &Analysis, rates: Option<DropRates>) -> Vec<(u8, String)> {
    let mut parts = Vec::new();
    let (Some(ct), Some(s)) = (&snap.conntrack, &a.snat) else {
        return parts;
    };
    if let Some(p) = s.pools.first() {
        parts.push((
            0,
            format!(
                "SNAT {} {}/{} ({:.0}%){}",
                pool_label(p),
                group(p.in_use),
                group(u64::from(p.capacity)),
                p.utilization * 100.0,
                match s.pools.len() {
                    1 => String::new(),
                    2 => " +1 pool".to_string(),
                    n => format!(" +{} pools", n - 1),
                }
            ),
        ));
    }
    let table = match (ct.count, ct.max) {
        (Some(c), Some(m)) => Some(format!("conntrack {} of {}", group(c), group(m))),
        (Some(c), None) => Some(format!("conntrack {}", group(c))),
        _ => None,
    };
    // The table alone is noise on a host without NAT unless it is filling.
    let filling = s.table_fill.is_some_and(|f| f >= a.thresholds.warn);
    if let Some(t) = table.filter(|_| !s.pools.is_empty() || filling) {
        parts.push((if filling { 0 } else { 3 }, t));
    }
    if let Some(st) = ct.stats.filter(|st| st.insert_failed > 0 || st.drop > 0) {
        let (now, prio) = match rates {
            Some(r) if r.insert_failed_per_s > 0.0 || r.drop_per_s > 0.0 => (
                format!(
                    " (now {:.1}/s, {:.1}/s)",
                    r.insert_failed_per_s, r.drop_per_s
                ),
                0,
            ),
            // Past drops only: the first to go when the line is full.
            _ => (String::new(), 5),
        };
        parts.push((
            prio,
            format!(
                "insert_failed {} drop {}{now}",
                group(st.insert_failed),
                group(st.drop)
            ),
        ));
    }
    if let (Some(model), Some(c)) = (a.thresholds.cloud_nat, s.cloud.first()) {
        parts.push((
            if c.level > crate::analysis::Level::Ok {
                0
            } else {
                4
            },
            format!(
                "{} model {}/{} to {}:{}",
                model.name(),
                group(c.flows),
                group(u64::from(c.quota)),
                c.remote_ip,
                c.remote_port
            ),
        ));
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{analyze, Thresholds};
    use crate::snapshot::conntrack::{Conntrack, ConntrackStats, CtTcpState, NatEntry};

    #[test]
    fn drop_rates_come_from_consecutive_samples() {
        let at = std::time::Instant::now();
        let sample = |secs: u64, failed: u64| {
            let mut s = crate::fixture::SnapshotBuilder::linux().build();
            s.conntrack = Some(Conntrack {
                stats: Some(ConntrackStats {
                    insert_failed: failed,
                    drop: failed,
                    ..ConntrackStats::default()
                }),
                ..Conntrack::default()
            });
            let analysis = analyze(&s, Thresholds::default());
            Current {
                snapshot: s,
                analysis,
                at: at + std::time::Duration::from_secs(secs),
                own: None,
                others: Vec::new(),
            }
        };
        let r = drop_rates(&sample(0, 10), &sample(2, 30)).unwrap();
        assert!((r.insert_failed_per_s - 10.0).abs() < 1e-9);
        assert!(
            drop_rates(&sample(2, 30), &sample(4, 5)).is_none(),
            "counters went back"
        );
    }

    #[test]
    fn header_shows_the_fullest_snat_pool_and_drops_only_where_there_is_nat() {
        let mut s = crate::fixture::SnapshotBuilder::linux().build();
        s.conntrack = Some(Conntrack {
            count: Some(5),
            max: Some(262_144),
            stats: Some(ConntrackStats::default()),
            snat: Some(Vec::new()),
            dumped: Some(5),
            ..Conntrack::default()
        });
        let a = analyze(&s, Thresholds::default());
        assert!(header_parts(&s, &a, None).is_empty(), "no SNAT, no noise");

        let entries = (0..20u16)
            .map(|i| NatEntry {
                proto: 6,
                tcp_state: Some(CtTcpState::Established),
                src_ip: "10.9.1.2".parse().unwrap(),
                src_port: 30_000 + i,
                remote_ip: "10.9.2.2".parse().unwrap(),
                remote_port: 8080,
                nat_ip: "10.9.2.1".parse().unwrap(),
                nat_port: 40_000 + i,
                timeout_s: None,
            })
            .collect();
        if let Some(ct) = s.conntrack.as_mut() {
            ct.snat = Some(entries);
            ct.stats = Some(ConntrackStats {
                insert_failed: 6,
                drop: 6,
                ..ConntrackStats::default()
            });
        }
        let a = analyze(&s, Thresholds::default());
        let rates = DropRates {
            insert_failed_per_s: 2.0,
            drop_per_s: 2.5,
        };
        let text: Vec<String> = header_parts(&s, &a, Some(rates))
            .into_iter()
            .map(|p| p.1)
            .collect();
        assert_eq!(
            text,
            [
                "SNAT 10.9.2.1 → 10.9.2.2:8080 tcp 20/64,512 (0%)",
                "conntrack 5 of 262,144",
                "insert_failed 6 drop 6 (now 2.0/s, 2.5/s)"
            ]
        );
    }
}
