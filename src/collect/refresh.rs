//! Repeated collection for `top`: skip the costly parts when the kernel says nothing changed.
//!
//! At 100k sockets one sock_diag dump costs ~100 ms of kernel time and the /proc/*/fd owner scan
//! ~400 ms; refreshing both every second would make the watcher a load of its own. Two rules,
//! both pure functions below, keep a refresh cheap without making the picture wrong:
//!
//! - **Dump only when the table can have changed.** The kernel counts every connection-state
//!   change we model: opens (`ActiveOpens`, `PassiveOpens`), failures and resets, `CurrEstab`
//!   (leaving or entering ESTABLISHED), hashed sockets (`tcp.inuse`: listeners and
//!   connections) and TIME_WAIT buckets (`tcp.tw` falls when one expires), all per namespace.
//!   When all of them equal the values seen at the last dump, that dump is reused, with its
//!   TIME_WAIT timers aged by the time since. What no counter sees (`bind()` without
//!   listen/connect and the close of such a socket; FIN_WAIT1 → FIN_WAIT2 and CLOSE_WAIT →
//!   LAST_ACK, which hold the same port either way) is caught by a full dump at least every
//!   [`Policy::max_reuse`]; a dump holding sockets in states that change without any counter
//!   (SYN_RECV, FIN_WAIT1/2, CLOSING) is not reused at all, and the listening table (small) is
//!   compared each time, since a restart (close + listen) cancels out in `tcp.inuse`. Left out
//!   on purpose: traffic counters (they move on every packet,
//!   and packets alone do not take or free ports), `sockets: used` (it includes our own netlink
//!   socket until RCU frees it, and every UDP and unix socket) and the host-wide `orphan` and
//!   `alloc` (they move with other namespaces).
//! - **Find bound-only sockets only in the full dump.** They are found by walking the whole
//!   bind hash table (about a quarter of a dump), and no counter sees them come or go anyway;
//!   between full dumps they are carried over from the last one (unless the same socket, by
//!   inode, has since connected or listened).
//! - **Scan owners only for sockets whose owner is unknown**, and no more than a budgeted share
//!   of the time: after a scan that took `t`, the next waits at least `t / owner_budget`.
//!   Sockets that appear in between show no owner until then; the age of the scan is reported.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{hidden_owners_note, CollectError, Collector};
use crate::snapshot::{Counters, Owners, Snapshot, Socket, TcpState, UdpSocket};

/// Counters that change whenever a socket is created, closed, or enters or leaves a state the
/// pool model distinguishes (see the module comment). Keys as `Counters` stores them.
const TCP_KEYS: [&str; 5] = [
    "ActiveOpens",
    "PassiveOpens",
    "AttemptFails",
    "EstabResets",
    "CurrEstab",
];
const TCP_EXT_KEYS: [&str; 10] = [
    "TW",
    "TWRecycled",
    "TWKilled",
    "TCPTimeWaitOverflow",
    "TCPAbortOnClose",
    "TCPAbortOnData",
    "TCPAbortOnLinger",
    "TCPAbortOnMemory",
    "TCPAbortOnTimeout",
    "TCPAbortFailed",
];
const SOCKSTAT_KEYS: [&str; 3] = ["tcp.inuse", "tcp.tw", "tcp6.inuse"];

/// The values of the state-change counters, or `None` when the OS does not provide the
/// essential ones (Windows; a /proc without sockstat), in which case every refresh dumps.
pub fn state_fingerprint(c: &Counters) -> Option<Vec<i64>> {
    let essential = [
        c.tcp.get("ActiveOpens"),
        c.tcp.get("CurrEstab"),
        c.sockstat.get("tcp.tw"),
        c.sockstat.get("tcp.inuse"),
    ];
    if essential.iter().any(Option::is_none) {
        return None;
    }
    let values = TCP_KEYS
        .iter()
        .map(|k| c.tcp.get(*k))
        .chain(TCP_EXT_KEYS.iter().map(|k| c.tcp_ext.get(*k)))
        .chain(SOCKSTAT_KEYS.iter().map(|k| c.sockstat.get(*k)))
        // An absent counter is absent both times; -1 keeps the positions aligned.
        .map(|v| v.copied().unwrap_or(-1))
        .collect();
    Some(values)
}

/// States a socket leaves without moving any counter of the fingerprint: SYN_RECV request
/// sockets (counted only once the handshake completes), FIN_WAIT1 → FIN_WAIT2, and a FIN_WAIT2
/// timewait entry turning TIME_WAIT when the peer's FIN arrives (its timer restarts). A dump
/// holding any of them is not reused. (CLOSE_WAIT is left out: it can last for ever in a
/// leaky application, and CLOSE_WAIT → LAST_ACK holds the same port.)
pub fn has_uncounted_transitions(sockets: &[Socket]) -> bool {
    sockets.iter().any(|s| {
        matches!(
            s.state,
            TcpState::SynRecv
                | TcpState::NewSynRecv
                | TcpState::FinWait1
                | TcpState::FinWait2
                | TcpState::Closing
        )
    })
}

/// Listeners as (address, port, inode), sorted: a restarted service (close + listen: −1 +1 on
/// `tcp.inuse`) cancels out in the counters but not here.
pub fn listener_keys(sockets: &[Socket]) -> Vec<(std::net::IpAddr, u16, u64)> {
    let mut v: Vec<_> = sockets
        .iter()
        .filter(|s| s.state == TcpState::Listen)
        .map(|s| (s.local_ip, s.local_port, s.inode))
        .collect();
    v.sort_unstable();
    v
}

/// How eagerly to refresh.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Longest a dump is reused while the counters stand still.
    pub max_reuse: Duration,
    /// Share of wall time the owner scan may take (0.05: at most 5 %).
    pub owner_budget: f64,
    /// Shortest gap between two owner scans, however cheap.
    pub owner_min_gap: Duration,
    /// How often a full dump re-checks owners already known (a fork, a passed socket or a
    /// restart keep the inode but change the process).
    pub owner_recheck: Duration,
    /// Largest share of wall time refreshing may take: a refresh that took `t` is followed
    /// by the next no sooner than `t / max_duty` after it, whatever the interval asked.
    pub max_duty: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_reuse: Duration::from_secs(10),
            owner_budget: 0.05,
            owner_min_gap: Duration::from_secs(2),
            owner_recheck: Duration::from_secs(60),
            max_duty: 0.25,
        }
    }
}

/// When the next refresh may start, as a wait after the end of one that took `took`: the
/// interval asked for, stretched so that refreshing stays under `max_duty` of the time (a
/// huge table on a slow host must not turn the watcher into the load).
pub fn next_wait(interval: Duration, took: Duration, policy: &Policy) -> Duration {
    let duty = policy.max_duty.clamp(0.01, 1.0);
    let cycle = took.div_f64(duty).max(interval);
    cycle
        .saturating_sub(took)
        .max(interval.saturating_sub(took))
}

/// Whether this refresh needs a new socket dump: no earlier dump, the counters moved (or
/// cannot be compared), or the last dump is older than `max_reuse`.
pub fn needs_dump(
    at_dump: Option<&[i64]>,
    now: Option<&[i64]>,
    since_dump: Duration,
    policy: &Policy,
) -> bool {
    match (at_dump, now) {
        (Some(a), Some(b)) => a != b || since_dump >= policy.max_reuse,
        _ => true,
    }
}

/// The last owner scan: when, and what it cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnerScan {
    pub at: Instant,
    pub took: Duration,
}

/// Whether to scan owners now: some sockets have an unknown owner, and the last scan is
/// longer ago than its own cost allows under the budget (and than the minimum gap).
pub fn owner_scan_due(
    unattributed: usize,
    last: Option<OwnerScan>,
    now: Instant,
    policy: &Policy,
) -> bool {
    if unattributed == 0 {
        return false;
    }
    let Some(last) = last else { return true };
    let budget = policy.owner_budget.clamp(0.001, 1.0);
    let gap = last.took.div_f64(budget).max(policy.owner_min_gap);
    now.saturating_duration_since(last.at) >= gap
}

/// Sockets with a file (an inode) whose owner the scan did not find.
pub fn unattributed(sockets: &[Socket], owners: Option<&Owners>) -> usize {
    let known = |inode: u64| owners.is_some_and(|o| o.by_inode.contains_key(&inode));
    sockets
        .iter()
        .filter(|s| s.inode != 0 && !known(s.inode))
        .count()
}

/// Sockets that hold a port with `bind()` alone (dumped as TCP_BOUND_INACTIVE, shown as CLOSE).
pub fn bound_only(sockets: &[Socket]) -> Vec<Socket> {
    sockets
        .iter()
        .filter(|s| s.state == TcpState::Close)
        .cloned()
        .collect()
}

/// UDP sockets with a file whose owner is unknown.
fn unattributed_udp(udp: &[UdpSocket], owners: Option<&Owners>) -> usize {
    udp.iter()
        .filter(|s| s.inode != 0 && s.pid.is_none())
        .filter(|s| !owners.is_some_and(|o| o.by_inode.contains_key(&s.inode)))
        .count()
}

/// Adds the bound-only sockets of the last full dump to a dump without them, except those
/// that have since connected or listened (the same socket, by inode, is in `sockets` now).
pub fn merge_bound_only(sockets: &mut Vec<Socket>, carried: &[Socket]) {
    if carried.is_empty() {
        return;
    }
    let present: rustc_hash::FxHashSet<u64> = sockets
        .iter()
        .map(|s| s.inode)
        .filter(|&i| i != 0)
        .collect();
    sockets.extend(
        carried
            .iter()
            .filter(|s| !present.contains(&s.inode))
            .cloned(),
    );
}

/// A reused dump as it would look `by` later: TIME_WAIT timers run down (the counters prove
/// none has expired yet; one that would have is kept at 0 until the next dump).
pub fn age_sockets(sockets: &mut [Socket], by: Duration) {
    let ms = u32::try_from(by.as_millis()).unwrap_or(u32::MAX);
    for s in sockets.iter_mut().filter(|s| s.state == TcpState::TimeWait) {
        if let Some(left) = s.time_wait_left_ms.as_mut() {
            *left = left.saturating_sub(ms);
        }
    }
}

/// What one refresh did, for the status line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshInfo {
    /// A new socket dump was taken (else the last one was reused, aged).
    pub dumped: bool,
    /// The owner scan ran in this refresh.
    pub owners_scanned: bool,
    /// Age of the owner information shown (None: owners not collected).
    pub owners_age: Option<Duration>,
    /// Wall time of this refresh.
    pub took: Duration,
}

struct LastDump {
    snapshot: Snapshot,
    fingerprint: Option<Vec<i64>>,
    at: Instant,
    /// The last dump that included bound-only sockets, and those sockets.
    full_at: Instant,
    bound_only: Vec<Socket>,
    listeners: Vec<(std::net::IpAddr, u16, u64)>,
}

/// Collects repeatedly, skipping what has not changed (see the module comment).
pub struct Refresher {
    collector: Box<dyn Collector>,
    owners: bool,
    policy: Policy,
    last_dump: Option<LastDump>,
    last_owner_scan: Option<OwnerScan>,
}

impl Refresher {
    /// `owners`: whether to find owning processes at all (`--no-owners` turns it off).
    pub fn new(collector: Box<dyn Collector>, owners: bool, policy: Policy) -> Self {
        Self {
            collector,
            owners,
            policy,
            last_dump: None,
            last_owner_scan: None,
        }
    }

    /// One refresh at `now` (the caller's clock, so tests can drive it).
    pub fn refresh(&mut self, now: Instant) -> Result<(Snapshot, RefreshInfo), CollectError> {
        let started = Instant::now();
        let Some(parts) = self.collector.parts() else {
            let snapshot = self.collector.snapshot()?;
            let info = RefreshInfo {
                dumped: true,
                owners_scanned: snapshot.owners.is_some(),
                owners_age: snapshot.owners.as_ref().map(|_| Duration::ZERO),
                took: started.elapsed(),
            };
            return Ok((snapshot, info));
        };

        let light = parts.without_sockets()?;
        let fingerprint = state_fingerprint(&light.counters);
        let counters_still = self.last_dump.as_ref().filter(|d| {
            !needs_dump(
                d.fingerprint.as_deref(),
                fingerprint.as_deref(),
                // What no counter sees is caught by the full dump, so that is what ages.
                now.saturating_duration_since(d.full_at),
                &self.policy,
            ) && !has_uncounted_transitions(&d.snapshot.sockets)
        });
        // Listeners can be replaced with the counters back where they were: compare them
        // (a dump of the listening table alone, which is small).
        let reuse = match counters_still {
            Some(d) => {
                let now_listening = parts.listeners()?;
                (listener_keys(&now_listening) == d.listeners).then_some(d)
            }
            None => None,
        };
        // (snapshot, dumped, full: the dump included bound-only sockets)
        let (mut snapshot, dumped, full) = if let Some(d) = reuse {
            let mut s = light;
            // Shared, not copied; only TIME_WAIT timers need a copy to run down.
            s.sockets = Arc::clone(&d.snapshot.sockets);
            s.source = d.snapshot.source;
            s.owners.clone_from(&d.snapshot.owners);
            // Notes about the dump itself (e.g. interrupted) still describe these sockets.
            s.notes.extend(d.snapshot.notes.iter().cloned());
            let timed = |x: &Socket| x.state == TcpState::TimeWait && x.time_wait_left_ms.is_some();
            if s.sockets.iter().any(timed) {
                let by = now.saturating_duration_since(d.at);
                age_sockets(Arc::make_mut(&mut s.sockets).as_mut_slice(), by);
            }
            (s, false, false)
        } else {
            // Bound-only sockets are the costly part of a dump and no counter sees them
            // change: between full dumps they are carried over from the last one.
            let carried = self
                .last_dump
                .as_ref()
                .filter(|d| now.saturating_duration_since(d.full_at) < self.policy.max_reuse);
            let mut s = match carried {
                Some(d) => {
                    let mut s = parts.connections_only()?;
                    merge_bound_only(Arc::make_mut(&mut s.sockets), &d.bound_only);
                    s
                }
                None => parts.without_owners()?,
            };
            s.owners = self
                .last_dump
                .as_ref()
                .and_then(|d| d.snapshot.owners.clone());
            (s, true, carried.is_none())
        };
        dedup_notes(&mut snapshot.notes);

        let mut owners_scanned = false;
        if self.owners && dumped {
            // A full dump also re-checks known owners now and then (Policy::owner_recheck).
            let recheck = full
                && self.last_owner_scan.is_some_and(|l| {
                    now.saturating_duration_since(l.at) >= self.policy.owner_recheck
                });
            let missing = (unattributed(&snapshot.sockets, snapshot.owners.as_deref())
                + unattributed_udp(&snapshot.udp_sockets, snapshot.owners.as_deref()))
            .max(usize::from(recheck));
            if snapshot.owners.is_none()
                || owner_scan_due(missing, self.last_owner_scan, now, &self.policy)
            {
                let scan_started = Instant::now();
                let found = parts.scan_owners_with_udp(&snapshot.sockets, &snapshot.udp_sockets);
                self.last_owner_scan = Some(OwnerScan {
                    at: now,
                    took: scan_started.elapsed(),
                });
                snapshot.owners = Some(Arc::new(found));
                owners_scanned = true;
            }
        }
        if !self.owners {
            snapshot.owners = None;
        }
        if let Some(note) = snapshot.owners.as_deref().and_then(hidden_owners_note) {
            if !snapshot.notes.contains(&note) {
                snapshot.notes.push(note);
            }
        }
        if dumped {
            let (full_at, bound_only) = match self.last_dump.take() {
                Some(d) if !full => (d.full_at, d.bound_only),
                _ => (now, bound_only(&snapshot.sockets)),
            };
            self.last_dump = Some(LastDump {
                listeners: listener_keys(&snapshot.sockets),
                snapshot: snapshot.clone(),
                fingerprint,
                at: now,
                full_at,
                bound_only,
            });
        }
        let info = RefreshInfo {
            dumped,
            owners_scanned,
            owners_age: self
                .owners
                .then(|| {
                    self.last_owner_scan
                        .map(|s| now.saturating_duration_since(s.at))
                })
                .flatten(),
            took: started.elapsed(),
        };
        Ok((snapshot, info))
    }
}

fn dedup_notes(notes: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    notes.retain(|n| seen.insert(n.clone()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::SnapshotBuilder;

    fn counters(active_opens: i64, tw: i64) -> Counters {
        let mut c = Counters::default();
        c.tcp.insert("ActiveOpens".into(), active_opens);
        c.tcp.insert("CurrEstab".into(), 3);
        c.sockstat.insert("tcp.tw".into(), tw);
        c.sockstat.insert("tcp.inuse".into(), 40);
        c
    }

    #[test]
    fn fingerprint_needs_the_essential_counters() {
        assert!(state_fingerprint(&Counters::default()).is_none());
        let mut c = counters(1, 1);
        c.sockstat.remove("tcp.tw");
        assert!(state_fingerprint(&c).is_none());
        assert!(state_fingerprint(&counters(1, 1)).is_some());
    }

    /// Every counter the fingerprint watches exists, under that name, in the files of a real
    /// kernel (captured by tests/fixtures/linux/capture.sh): an absent one would read as -1.
    #[cfg(target_os = "linux")]
    #[test]
    fn fingerprint_counters_exist_in_real_proc_files() {
        use crate::collect::linux::procfs;
        macro_rules! proc_net {
            ($name:literal) => {
                include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/fixtures/linux/proc/net/",
                    $name
                ))
            };
        }
        let mut c = Counters {
            tcp: procfs::parse_counter_section(proc_net!("snmp"), "Tcp"),
            tcp_ext: procfs::parse_counter_section(proc_net!("netstat"), "TcpExt"),
            ..Counters::default()
        };
        procfs::parse_sockstat(proc_net!("sockstat"), &mut c.sockstat);
        procfs::parse_sockstat(proc_net!("sockstat6"), &mut c.sockstat);
        let fingerprint = state_fingerprint(&c).expect("the essential counters are there");
        assert_eq!(
            fingerprint.len(),
            TCP_KEYS.len() + TCP_EXT_KEYS.len() + SOCKSTAT_KEYS.len()
        );
        assert!(!fingerprint.contains(&-1), "{fingerprint:?}");
    }

    #[test]
    fn traffic_counters_do_not_move_the_fingerprint_but_state_counters_do() {
        let a = counters(10, 5);
        let mut b = a.clone();
        b.tcp.insert("InSegs".into(), 999_999);
        b.tcp.insert("OutSegs".into(), 999_999);
        b.sockstat.insert("tcp.mem".into(), 77);
        b.sockstat.insert("sockets.used".into(), 12);
        b.sockstat.insert("tcp.orphan".into(), 3);
        assert_eq!(state_fingerprint(&a), state_fingerprint(&b));
        assert_ne!(state_fingerprint(&a), state_fingerprint(&counters(11, 5)));
        assert_ne!(state_fingerprint(&a), state_fingerprint(&counters(10, 4)));
        let mut c = a.clone();
        c.tcp_ext.insert("TWKilled".into(), 1);
        assert_ne!(state_fingerprint(&a), state_fingerprint(&c));
    }

    #[test]
    fn dump_when_counters_move_are_unknown_or_the_dump_is_old() {
        let p = Policy::default();
        let a = [1, 2, 3];
        let s = Duration::from_secs(1);
        assert!(!needs_dump(Some(&a), Some(&a), s, &p));
        assert!(needs_dump(Some(&a), Some(&[1, 2, 4]), s, &p));
        assert!(needs_dump(None, Some(&a), s, &p));
        assert!(needs_dump(Some(&a), None, s, &p));
        assert!(needs_dump(Some(&a), Some(&a), p.max_reuse, &p));
    }

    #[test]
    fn owner_scans_are_paced_by_their_own_cost() {
        let p = Policy::default();
        let t0 = Instant::now();
        assert!(!owner_scan_due(0, None, t0, &p), "nothing unknown");
        assert!(owner_scan_due(1, None, t0, &p), "never scanned");
        // A 400 ms scan under a 5 % budget: not again for 8 s.
        let last = Some(OwnerScan {
            at: t0,
            took: Duration::from_millis(400),
        });
        assert!(!owner_scan_due(5, last, t0 + Duration::from_secs(7), &p));
        assert!(owner_scan_due(5, last, t0 + Duration::from_secs(8), &p));
        // A cheap scan still waits the minimum gap.
        let cheap = Some(OwnerScan {
            at: t0,
            took: Duration::from_millis(1),
        });
        assert!(!owner_scan_due(5, cheap, t0 + Duration::from_secs(1), &p));
        assert!(owner_scan_due(5, cheap, t0 + p.owner_min_gap, &p));
    }

    #[test]
    fn slow_refreshes_stretch_the_interval_to_the_duty_cap() {
        let p = Policy::default();
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        // Cheap: the interval as asked, counted from the start of the refresh.
        assert_eq!(next_wait(s(1), ms(60), &p), ms(940));
        // 25 %: a 400 ms refresh cycles every 1.6 s.
        assert_eq!(next_wait(s(1), ms(400), &p), ms(1200));
        // Slower than the interval itself.
        assert_eq!(next_wait(ms(500), s(2), &p), s(6));
        // A long interval is never shortened.
        assert_eq!(next_wait(s(30), s(2), &p), s(28));
    }

    #[test]
    fn unattributed_counts_sockets_with_files_and_no_known_owner() {
        let snap = SnapshotBuilder::linux()
            .established("10.0.0.1", 40000, "10.0.0.2", 80)
            .established("10.0.0.1", 40001, "10.0.0.2", 80)
            .time_wait("10.0.0.1", 40002, "10.0.0.2", 80, 30_000)
            .build();
        let mut sockets = snap.sockets.to_vec();
        sockets[0].inode = 11;
        sockets[1].inode = 12;
        assert_eq!(unattributed(&sockets, None), 2);
        let mut o = Owners::default();
        o.by_inode.insert(11, 100);
        assert_eq!(unattributed(&sockets, Some(&o)), 1);
    }

    #[test]
    fn bound_only_sockets_are_carried_unless_they_connected() {
        let snap = SnapshotBuilder::linux()
            .bound("10.0.0.1", 40100)
            .bound("10.0.0.1", 40101)
            .established("10.0.0.1", 40000, "10.0.0.2", 80)
            .build();
        let mut full = snap.sockets.to_vec();
        full[0].inode = 21;
        full[1].inode = 22;
        let carried = bound_only(&full);
        assert_eq!(carried.len(), 2);
        // 40101 has connected since: the partial dump has it (same inode) as ESTABLISHED.
        let mut connected = full[1].clone();
        connected.state = TcpState::Established;
        let mut partial = vec![full[2].clone(), connected];
        merge_bound_only(&mut partial, &carried);
        assert_eq!(partial.len(), 3);
        assert_eq!(
            partial
                .iter()
                .filter(|s| s.state == TcpState::Close)
                .count(),
            1
        );
        assert!(partial
            .iter()
            .any(|s| s.inode == 21 && s.state == TcpState::Close));
    }

    #[test]
    fn transient_states_and_replaced_listeners_are_noticed() {
        let quiet = SnapshotBuilder::linux()
            .listen("127.0.0.1", 80)
            .established("10.0.0.1", 40000, "10.0.0.2", 80)
            .time_wait("10.0.0.1", 40001, "10.0.0.2", 80, 30_000)
            .build();
        assert!(!has_uncounted_transitions(&quiet.sockets));
        let mut closing = quiet.sockets.to_vec();
        closing[1].state = TcpState::FinWait2;
        assert!(has_uncounted_transitions(&closing));
        let mut restarted = quiet.sockets.to_vec();
        restarted[0].inode += 1;
        assert_ne!(listener_keys(&quiet.sockets), listener_keys(&restarted));
        assert_eq!(listener_keys(&quiet.sockets).len(), 1);
    }

    #[test]
    fn ageing_runs_time_wait_timers_down_and_stops_at_zero() {
        let snap = SnapshotBuilder::linux()
            .time_wait("10.0.0.1", 40002, "10.0.0.2", 80, 30_000)
            .time_wait("10.0.0.1", 40003, "10.0.0.2", 80, 500)
            .established("10.0.0.1", 40000, "10.0.0.2", 80)
            .build();
        let mut sockets = snap.sockets.to_vec();
        age_sockets(&mut sockets, Duration::from_millis(1500));
        let left: Vec<_> = sockets.iter().map(|s| s.time_wait_left_ms).collect();
        assert_eq!(left[0], Some(28_500));
        assert_eq!(left[1], Some(0));
        assert_eq!(left[2], snap.sockets[2].time_wait_left_ms);
    }
}
