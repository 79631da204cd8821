//! What `top` shows of failed connect() calls (docs/failures.md): the shell's tracer thread
//! hands each drained failure in; per pool, the FAIL/s column is the count since the previous
//! sample over the time between them, and the detail pane lists the last failures (time,
//! process, pool), repeats of the same process and pool folded into one line.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::Instant;

use rustc_hash::FxHashMap;

use crate::analysis::failures::failure_in_pool;
use crate::analysis::Pool;
use crate::snapshot::FailureError;

/// Lines kept for the detail panes (all pools together).
pub const RECENT_MAX: usize = 64;

/// One failure as the tracer saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracedFailure {
    /// Wall clock when it was read (within the tracer's 20 ms drain).
    pub unix_ms: u64,
    pub pid: u32,
    pub process: Option<String>,
    /// Inode of the process's network namespace (`None`: it exited before it was read).
    pub netns: Option<u64>,
    pub local_ip: Option<IpAddr>,
    pub remote_ip: Option<IpAddr>,
    pub remote_port: Option<u16>,
    pub error: FailureError,
}

/// A line of the detail pane: the latest of `count` failures in a row from one process toward
/// one pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentFailure {
    pub last: TracedFailure,
    pub count: u64,
}

type Key = (
    Option<u64>,
    Option<IpAddr>,
    Option<IpAddr>,
    Option<u16>,
    FailureError,
);

/// Failures while `top` runs with the tracer on.
#[derive(Debug)]
pub struct Failures {
    /// Counted since the last sample, per (namespace, addresses, error).
    pending: FxHashMap<Key, u64>,
    since: Instant,
    /// Per (namespace, addresses, error): failures per second between the last two samples.
    rates: FxHashMap<Key, f64>,
    pub recent: VecDeque<RecentFailure>,
    pub total: u64,
}

impl Failures {
    pub fn new(now: Instant) -> Self {
        Self {
            pending: FxHashMap::default(),
            since: now,
            rates: FxHashMap::default(),
            recent: VecDeque::with_capacity(RECENT_MAX + 1),
            total: 0,
        }
    }

    pub fn add(&mut self, f: TracedFailure) {
        let key = (f.netns, f.local_ip, f.remote_ip, f.remote_port, f.error);
        *self.pending.entry(key).or_default() += 1;
        self.total += 1;
        if let Some(back) = self.recent.back_mut() {
            let same = |a: &TracedFailure| {
                (
                    a.pid,
                    a.netns,
                    a.local_ip,
                    a.remote_ip,
                    a.remote_port,
                    a.error,
                ) == (
                    f.pid,
                    f.netns,
                    f.local_ip,
                    f.remote_ip,
                    f.remote_port,
                    f.error,
                )
            };
            if same(&back.last) {
                back.count += 1;
                back.last = f;
                return;
            }
        }
        self.recent.push_back(RecentFailure { last: f, count: 1 });
        while self.recent.len() > RECENT_MAX {
            self.recent.pop_front();
        }
    }

    /// A sample was taken at `at`: the failures since the previous one become the rates.
    pub fn sample(&mut self, at: Instant) {
        let elapsed = at.saturating_duration_since(self.since).as_secs_f64();
        if elapsed <= 0.0 {
            return;
        }
        self.rates = self
            .pending
            .drain()
            .map(|(k, n)| (k, n as f64 / elapsed))
            .collect();
        self.since = at;
    }

    /// Failures per second in `pool` of namespace `netns` between the last two samples.
    pub fn rate(&self, netns: u64, pool: &Pool) -> f64 {
        self.rates
            .iter()
            .filter(|((ns, local, remote, port, error), _)| {
                *ns == Some(netns) && failure_in_pool(*error, *local, *remote, *port, pool)
            })
            .map(|(_, r)| r)
            .sum()
    }

    /// The last failures in `pool` of namespace `netns`, newest first.
    pub fn recent_in<'a>(
        &'a self,
        netns: u64,
        pool: &'a Pool,
    ) -> impl Iterator<Item = &'a RecentFailure> + 'a {
        self.recent.iter().rev().filter(move |r| {
            let f = &r.last;
            f.netns == Some(netns)
                && failure_in_pool(f.error, f.local_ip, f.remote_ip, f.remote_port, pool)
        })
    }
}
