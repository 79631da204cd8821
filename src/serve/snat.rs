//! The conntrack and SNAT series (issue 16): table size and limit, the per-CPU drop counters,
//! the SNAT pools (their own families, labelled by NAT address and protocol, so they never
//! clash with a socket pool of the same addresses) and the `--cloud-nat` model. Registered only
//! where conntrack was read: a host without conntrack exports none of them.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::analysis::snat::SnatPool;
use crate::analysis::Analysis;
use crate::snapshot::conntrack::ConntrackStats;
use crate::snapshot::Snapshot;

type F64Gauge = Gauge<f64, AtomicU64>;
type Labels = Vec<(&'static str, String)>;
type GaugeFamily = Family<Labels, F64Gauge>;
/// A counter's name, help, and where its value is in the statistics.
type StatCounter = (&'static str, &'static str, fn(&ConntrackStats) -> u64);

/// One namespace: its labels (empty without `-A`), snapshot and analysis.
pub(super) struct Unit3<'a> {
    pub labels: &'a Labels,
    pub snap: &'a Snapshot,
    pub analysis: &'a Analysis,
}

fn with(ns: &Labels, more: Labels) -> Labels {
    let mut l = ns.clone();
    l.extend(more);
    l
}

/// Registers the conntrack and SNAT families; `max_pools` caps the SNAT pool series (highest
/// utilization first, of all namespaces together, as for the socket pools).
pub(super) fn register(reg: &mut Registry, units: &[Unit3<'_>], max_pools: usize) {
    let entries = GaugeFamily::default();
    let max = GaugeFamily::default();
    let mut any = false;
    let counters: [StatCounter; 3] = [
        (
            "conntrack_insert_failed",
            "New conntrack entries that could not be inserted (a clash, or no free NAT tuple): their packets were dropped; summed over CPUs",
            |s| s.insert_failed,
        ),
        (
            "conntrack_drop",
            "Packets conntrack dropped (insert failed, or the table was full); summed over CPUs",
            |s| s.drop,
        ),
        (
            "conntrack_early_drop",
            "Conntrack entries evicted to make room in a full table; summed over CPUs",
            |s| s.early_drop,
        ),
    ];
    let counter_families: Vec<Family<Labels, Counter>> =
        counters.iter().map(|_| Family::default()).collect();
    let in_use = GaugeFamily::default();
    let capacity = GaugeFamily::default();
    let utilization = GaugeFamily::default();
    let cloud_flows = GaugeFamily::default();
    let cloud_util = GaugeFamily::default();
    let mut any_pool = false;
    let mut any_cloud = false;
    // The cap is for the series of all namespaces together (with -A as without).
    let mut ranked: Vec<(usize, &SnatPool)> = units
        .iter()
        .enumerate()
        .flat_map(|(i, u)| {
            u.analysis
                .snat
                .iter()
                .flat_map(move |s| s.pools.iter().map(move |p| (i, p)))
        })
        .collect();
    ranked.sort_by(|(_, a), (_, b)| {
        b.utilization
            .total_cmp(&a.utilization)
            .then(b.in_use.cmp(&a.in_use))
    });
    ranked.truncate(max_pools);
    for (i, p) in ranked {
        any_pool = true;
        let l = with(
            units[i].labels,
            vec![
                ("nat_ip", p.nat_ip.to_string()),
                ("remote_ip", p.remote_ip.to_string()),
                ("remote_port", p.remote_port.to_string()),
                ("protocol", p.protocol.clone()),
            ],
        );
        in_use.get_or_create(&l).set(p.in_use as f64);
        capacity.get_or_create(&l).set(f64::from(p.capacity));
        utilization.get_or_create(&l).set(p.utilization);
    }
    for u in units {
        let Some(ct) = &u.snap.conntrack else {
            continue;
        };
        any = true;
        if let Some(c) = ct.count {
            entries.get_or_create(u.labels).set(c as f64);
        }
        if let Some(m) = ct.max {
            max.get_or_create(u.labels).set(m as f64);
        }
        if let Some(s) = &ct.stats {
            for ((_, _, f), fam) in counters.iter().zip(&counter_families) {
                fam.get_or_create(u.labels).inc_by(f(s));
            }
        }
        let Some(s) = &u.analysis.snat else {
            continue;
        };
        if let Some(model) = u.analysis.thresholds.cloud_nat {
            for c in &s.cloud {
                any_cloud = true;
                let l = with(
                    u.labels,
                    vec![
                        ("provider", model.name().to_string()),
                        ("remote_ip", c.remote_ip.to_string()),
                        ("remote_port", c.remote_port.to_string()),
                        ("protocol", c.protocol.clone()),
                    ],
                );
                cloud_flows.get_or_create(&l).set(c.flows as f64);
                cloud_util.get_or_create(&l).set(c.utilization);
            }
        }
    }
    if !any {
        return;
    }
    // Without -A the series carry no labels: plain metrics, as the other host series are.
    let plain = units.iter().all(|u| u.labels.is_empty());
    let entries_help =
        "Entries in the conntrack table of the namespace (net.netfilter.nf_conntrack_count)";
    let max_help = "net.netfilter.nf_conntrack_max: past it new flows are dropped (one limit for the host, counted per namespace)";
    if plain {
        let single = |fam: &GaugeFamily| fam.get_or_create(&Vec::new()).get();
        let one = |v: f64| {
            let g = F64Gauge::default();
            g.set(v);
            g
        };
        if units
            .iter()
            .any(|u| u.snap.conntrack.as_ref().is_some_and(|c| c.count.is_some()))
        {
            reg.register("conntrack_entries", entries_help, one(single(&entries)));
        }
        if units
            .iter()
            .any(|u| u.snap.conntrack.as_ref().is_some_and(|c| c.max.is_some()))
        {
            reg.register("conntrack_entries_max", max_help, one(single(&max)));
        }
        if units
            .iter()
            .any(|u| u.snap.conntrack.as_ref().is_some_and(|c| c.stats.is_some()))
        {
            for ((name, help, _), fam) in counters.iter().zip(counter_families) {
                let c = Counter::<u64>::default();
                c.inc_by(fam.get_or_create(&Vec::new()).get());
                reg.register(*name, *help, c);
            }
        }
    } else {
        reg.register("conntrack_entries", entries_help, entries);
        reg.register("conntrack_entries_max", max_help, max);
        for ((name, help, _), fam) in counters.iter().zip(counter_families) {
            reg.register(*name, *help, fam);
        }
    }
    if any_pool {
        reg.register(
            "snat_pool_in_use",
            "Conntrack entries holding a NAT port of the SNAT pool (NAT address, remote address, remote port, protocol)",
            in_use,
        );
        reg.register(
            "snat_pool_capacity",
            "NAT ports of the range the SNAT pool's ports come from (the rule's `to :A-B`, else the kernel's 1024-65535)",
            capacity,
        );
        reg.register_with_unit(
            "snat_pool_utilization",
            "SNAT pool in_use / capacity",
            Unit::Other("ratio".into()),
            utilization,
        );
    }
    if any_cloud {
        reg.register(
            "cloud_nat_flows",
            "Model (--cloud-nat): concurrent flows from this host to one destination (SNAT entries plus own TCP sockets)",
            cloud_flows,
        );
        reg.register_with_unit(
            "cloud_nat_utilization",
            "Model (--cloud-nat): flows to one destination / the cloud NAT's documented quota per destination",
            Unit::Other("ratio".into()),
            cloud_util,
        );
    }
}
