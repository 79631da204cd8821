//! The state of `portdoctor top`, pure: fed successive `(Instant, Snapshot)` samples and keys,
//! it keeps per-pool rates from consecutive snapshots, bounded history for sparklines, sorting,
//! filter, pause, selection and the refresh interval. No terminal, no clock, no OS here: the
//! shell (`commands/top.rs`) passes time in, which is what makes it testable.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::analysis::udp::udp_pool_name;
use crate::analysis::{analyze, Analysis, Finding, Pool, PoolKey, Scope, Thresholds};
use crate::collect::refresh::RefreshInfo;
use crate::snapshot::{NamespaceIdentity, Snapshot};

/// Refresh intervals offered by `+`/`-`.
pub const INTERVALS: [Duration; 7] = [
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(30),
    Duration::from_secs(60),
];

/// How far back the history of each pool reaches.
pub const HISTORY_WINDOW: Duration = Duration::from_secs(600);
/// Upper bound on points per pool whatever the interval (memory stays bounded at 0.5 s).
pub const HISTORY_MAX_POINTS: usize = 600;

/// A pool's identity across snapshots: its namespace (the inode; 0 for the own namespace, the
/// only one without `-A`), scope and key.
pub type PoolId = (u64, Scope, PoolKey);

/// The id of a pool of the own namespace.
pub fn pool_id(p: &Pool) -> PoolId {
    (0, p.scope, p.key)
}

/// Another namespace of an `-A` sample, analysed.
pub struct Namespace {
    pub identity: NamespaceIdentity,
    pub snapshot: Snapshot,
    pub analysis: Analysis,
}

/// A pool as top shows it: the pool and the namespace it is in (`None`: the own namespace).
#[derive(Clone, Copy)]
pub struct Row<'a> {
    pub pool: &'a Pool,
    pub namespace: Option<&'a Namespace>,
}

impl Row<'_> {
    pub fn id(&self) -> PoolId {
        (
            self.namespace.map_or(0, |n| n.identity.id.ino),
            self.pool.scope,
            self.pool.key,
        )
    }
}

impl std::ops::Deref for Row<'_> {
    type Target = Pool;
    fn deref(&self) -> &Pool {
        self.pool
    }
}

/// How the NAMESPACE/POD column and the filter name a namespace: the pod (`namespace/name`,
/// or its UID), else the `/run/netns` name, else the container, else the inode.
pub fn namespace_label(id: &NamespaceIdentity) -> String {
    if id.own {
        return "own".into();
    }
    if let Some(p) = &id.pod {
        return if p.name.is_empty() {
            format!("pod {}", p.uid)
        } else {
            format!("{}/{}", p.namespace, p.name)
        };
    }
    if let Some(name) = &id.name {
        return name.clone();
    }
    if let Some(c) = &id.container {
        return format!("{} {}", c.runtime, &c.id[..c.id.len().min(12)]);
    }
    format!("inode {}", id.id.ino)
}

/// One point of a pool's history: 24 bytes (f32 with NaN for unknown), since top keeps up to
/// `HISTORY_MAX_POINTS` of them for every pool.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub at: Instant,
    utilization: f32,
    connect_per_s: f32,
}

impl Point {
    pub fn new(at: Instant, utilization: Option<f64>, connect_per_s: Option<f64>) -> Self {
        let pack = |v: Option<f64>| v.map_or(f32::NAN, |x| x as f32);
        Self {
            at,
            utilization: pack(utilization),
            connect_per_s: pack(connect_per_s),
        }
    }

    pub fn utilization(&self) -> Option<f64> {
        Some(f64::from(self.utilization)).filter(|v| !v.is_nan())
    }

    pub fn connect_per_s(&self) -> Option<f64> {
        Some(f64::from(self.connect_per_s)).filter(|v| !v.is_nan())
    }
}

/// What top knows about one pool beyond the latest snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolStats {
    /// Ports no new connection can take, at the last sample.
    pub used: u64,
    pub in_use: u64,
    pub last_seen: Instant,
    /// Net change of used ports per second between the last two samples (exact; signed).
    pub growth_per_s: Option<f64>,
    /// New connections per second: from TIME_WAIT ages where the OS gives them (Linux), else
    /// from the rise of in_use between the last two samples (a lower bound).
    pub connect_per_s: Option<f64>,
    /// `connect_per_s` is the lower bound (no TIME_WAIT timers: Windows).
    pub connect_is_lower_bound: bool,
    /// Seconds until full: the analysis' TIME_WAIT-based forecast (the one `check` prints),
    /// else at the growth between the last two samples.
    pub eta_seconds: Option<f64>,
    pub history: VecDeque<Point>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    Utilization,
    InUse,
    Rate,
    Eta,
    Name,
}

impl SortBy {
    pub fn next(self) -> Self {
        match self {
            SortBy::Utilization => SortBy::InUse,
            SortBy::InUse => SortBy::Rate,
            SortBy::Rate => SortBy::Eta,
            SortBy::Eta => SortBy::Name,
            SortBy::Name => SortBy::Utilization,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SortBy::Utilization => "use",
            SortBy::InUse => "in use",
            SortBy::Rate => "rate",
            SortBy::Eta => "full in",
            SortBy::Name => "name",
        }
    }
}

/// Keys top understands, independent of the terminal library.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Char(char),
    Enter,
    Esc,
    Backspace,
    Up,
    Down,
    PageUp,
    PageDown,
    Home,
    End,
    CtrlC,
}

/// What the shell should do after a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    None,
    Redraw,
    /// The interval changed: reschedule the next collection.
    Reschedule,
    /// Collect now (`r`).
    Refresh,
    Quit,
}

/// The latest sample, analysed.
pub struct Current {
    /// The own namespace (the only one without `-A`).
    pub snapshot: Snapshot,
    pub analysis: Analysis,
    pub at: Instant,
    /// With `-A`: the own namespace's identity.
    pub own: Option<NamespaceIdentity>,
    /// With `-A`: every other namespace.
    pub others: Vec<Namespace>,
}

impl Current {
    /// Every pool: the own namespace's, then the others' in order.
    pub fn rows(&self) -> impl Iterator<Item = Row<'_>> {
        let own = self.analysis.pools.iter().map(|pool| Row {
            pool,
            namespace: None,
        });
        let others = self.others.iter().flat_map(|n| {
            n.analysis.pools.iter().map(move |pool| Row {
                pool,
                namespace: Some(n),
            })
        });
        own.chain(others)
    }

    /// The snapshot a row's pool comes from.
    pub fn snapshot_of<'a>(&'a self, row: &Row<'a>) -> &'a Snapshot {
        row.namespace.map_or(&self.snapshot, |n| &n.snapshot)
    }

    /// Whether this is an `-A` sample.
    pub fn all_namespaces(&self) -> bool {
        self.own.is_some()
    }
}

pub struct App {
    pub thresholds: Thresholds,
    pub interval: Duration,
    pub current: Option<Current>,
    pub stats: FxHashMap<PoolId, PoolStats>,
    pub sort: SortBy,
    pub filter: String,
    /// Typing into the filter (after `/`).
    pub editing_filter: bool,
    pub paused: bool,
    pub detail: bool,
    pub selected: Option<PoolId>,
    pub samples: u64,
    /// The last collection error, shown in the footer until the next good sample.
    pub error: Option<String>,
    /// What the last refresh did (dump reused or taken, owner scan age).
    pub refresh: Option<RefreshInfo>,
    /// Time from the start of one refresh to the start of the next: the interval, or longer
    /// when refreshing is slow (collect::refresh::next_wait).
    pub cycle: Option<Duration>,
    /// Showing one saved snapshot (`top --load`): paused for good; space, r and +/- do nothing.
    pub loaded: bool,
    /// Failed connect() calls while the tracer runs (`None`: not traced, FAIL/s not shown).
    pub failures: Option<super::failures::Failures>,
    /// Why failures are not traced (no privilege, no tracepoint), shown in the header.
    pub failure_note: Option<String>,
    /// Without `-A`: the inode of the inspected namespace, whose failures the pools show.
    pub failure_netns: u64,
    /// conntrack insert_failed and drop per second between the last two samples (NAT hosts).
    pub nat_drops: Option<super::snat::DropRates>,
}

impl App {
    pub fn new(interval: Duration, thresholds: Thresholds) -> Self {
        Self {
            thresholds,
            interval,
            current: None,
            stats: FxHashMap::default(),
            sort: SortBy::Utilization,
            filter: String::new(),
            editing_filter: false,
            paused: false,
            detail: false,
            selected: None,
            samples: 0,
            error: None,
            refresh: None,
            cycle: None,
            loaded: false,
            failures: None,
            failure_note: None,
            failure_netns: 0,
            nat_drops: None,
        }
    }

    /// An app showing one saved snapshot, paused (`top --load`).
    pub fn loaded(
        snapshot: Snapshot,
        at: Instant,
        interval: Duration,
        thresholds: Thresholds,
    ) -> Self {
        let mut app = Self::new(interval, thresholds);
        app.ingest(at, snapshot);
        app.paused = true;
        app.loaded = true;
        app
    }

    /// Feeds one sample. Ignored while paused (the shell does not collect then either).
    pub fn ingest(&mut self, at: Instant, snapshot: Snapshot) {
        if self.paused {
            return;
        }
        let analysis = analyze_with_udp_rows(&snapshot, self.thresholds);
        self.ingest_current(Current {
            snapshot,
            analysis,
            at,
            own: None,
            others: Vec::new(),
        });
    }

    /// Feeds one `-A` sample: every namespace with its identity, the own one among them
    /// (without it, the sample is dropped with an error shown).
    pub fn ingest_namespaces(&mut self, at: Instant, all: Vec<(NamespaceIdentity, Snapshot)>) {
        if self.paused {
            return;
        }
        let mut own = None;
        let mut others = Vec::new();
        for (identity, snapshot) in all {
            if identity.own && own.is_none() {
                own = Some((identity, snapshot));
                continue;
            }
            let analysis = analyze_with_udp_rows(&snapshot, self.thresholds);
            others.push(Namespace {
                identity,
                snapshot,
                analysis,
            });
        }
        let Some((identity, snapshot)) = own else {
            self.error = Some("could not read this process's own network namespace".into());
            return;
        };
        let analysis = analyze_with_udp_rows(&snapshot, self.thresholds);
        self.ingest_current(Current {
            snapshot,
            analysis,
            at,
            own: Some(identity),
            others,
        });
    }

    fn ingest_current(&mut self, current: Current) {
        let at = current.at;
        if let Some(f) = &mut self.failures {
            f.sample(at);
        }
        let prev_at = self.current.as_ref().map(|c| c.at);
        self.nat_drops = self
            .current
            .as_ref()
            .and_then(|prev| super::snat::drop_rates(prev, &current));
        for row in current.rows() {
            let p = row.pool;
            let used = p.used();
            let entry = self.stats.entry(row.id());
            let stats = entry.or_insert_with(|| PoolStats {
                used,
                in_use: p.in_use,
                last_seen: at,
                growth_per_s: None,
                connect_per_s: None,
                connect_is_lower_bound: false,
                eta_seconds: None,
                // Full size at once: growing by doubling would overshoot to 1,024 points.
                history: VecDeque::with_capacity(HISTORY_MAX_POINTS + 1),
            });
            // A pool absent from the previous sample had 0 ports then.
            let (before_used, before_in_use) = if prev_at == Some(stats.last_seen) {
                (stats.used, stats.in_use)
            } else {
                (0, 0)
            };
            let elapsed = prev_at
                .map(|t| at.saturating_duration_since(t).as_secs_f64())
                .filter(|e| *e > 0.0);
            let growth = elapsed.map(|e| (used as f64 - before_used as f64) / e);
            stats.growth_per_s = growth;
            stats.connect_is_lower_bound = p.connect_rate_per_s.is_none();
            stats.connect_per_s = p
                .connect_rate_per_s
                .or_else(|| elapsed.map(|e| (p.in_use.saturating_sub(before_in_use)) as f64 / e));
            // The analysis' forecast first, so the table and the finding in the detail pane
            // say the same; the change between samples only where it has none (no TIME_WAIT
            // timers, or ports held by connections that stay open).
            stats.eta_seconds = p.eta_seconds.or_else(|| {
                growth
                    .zip(p.free())
                    .and_then(|(g, free)| crate::analysis::eta_seconds(free, g))
            });
            stats.used = used;
            stats.in_use = p.in_use;
            stats.last_seen = at;
            stats
                .history
                .push_back(Point::new(at, p.utilization, stats.connect_per_s));
            trim_history(&mut stats.history, at);
        }
        // Pools gone from the snapshot: keep their history for the window (they may come
        // back), record that they are empty now, then forget them.
        let present: rustc_hash::FxHashSet<PoolId> = current.rows().map(|r| r.id()).collect();
        self.stats.retain(|id, s| {
            if present.contains(id) {
                return true;
            }
            if s.last_seen + HISTORY_WINDOW < at {
                return false;
            }
            if s.used > 0 || s.in_use > 0 {
                s.growth_per_s = prev_at
                    .map(|t| at.saturating_duration_since(t).as_secs_f64())
                    .filter(|e| *e > 0.0)
                    .map(|e| -(s.used as f64) / e);
            }
            s.used = 0;
            s.in_use = 0;
            true
        });
        self.current = Some(current);
        self.samples += 1;
        self.error = None;
        self.fix_selection();
    }

    /// Pools shown, in display order: filtered, then sorted.
    pub fn visible(&self) -> Vec<Row<'_>> {
        let Some(cur) = &self.current else {
            return Vec::new();
        };
        let needle = self.filter.to_lowercase();
        let mut rows: Vec<Row<'_>> = cur
            .rows()
            .filter(|r| needle.is_empty() || matches_filter(r, &needle))
            .collect();
        let stat = |r: &Row<'_>| self.stats.get(&r.id());
        match self.sort {
            // One namespace's analysis order already is utilization, then size, then key.
            SortBy::Utilization if cur.others.is_empty() => {}
            SortBy::Utilization => rows.sort_by(|a, b| {
                let ua = a.utilization.unwrap_or(-1.0);
                let ub = b.utilization.unwrap_or(-1.0);
                ub.total_cmp(&ua).then(b.in_use.cmp(&a.in_use))
            }),
            SortBy::InUse => rows.sort_by_key(|p| std::cmp::Reverse(p.in_use)),
            SortBy::Rate => rows.sort_by(|a, b| {
                let ra = stat(a).and_then(|s| s.connect_per_s).unwrap_or(-1.0);
                let rb = stat(b).and_then(|s| s.connect_per_s).unwrap_or(-1.0);
                rb.total_cmp(&ra)
            }),
            SortBy::Eta => rows.sort_by(|a, b| {
                let ea = stat(a).and_then(|s| s.eta_seconds).unwrap_or(f64::INFINITY);
                let eb = stat(b).and_then(|s| s.eta_seconds).unwrap_or(f64::INFINITY);
                ea.total_cmp(&eb)
            }),
            SortBy::Name => rows.sort_by(|a, b| {
                let ns = |r: &Row<'_>| r.namespace.map(|n| namespace_label(&n.identity));
                ns(a)
                    .cmp(&ns(b))
                    .then(a.key.cmp(&b.key))
                    .then(a.scope.cmp(&b.scope))
            }),
        }
        rows
    }

    /// The namespace inode a row's failures are counted in.
    pub fn netns_of(&self, row: &Row<'_>) -> u64 {
        row.namespace
            .map(|n| n.identity.id.ino)
            .or_else(|| self.current.as_ref()?.own.as_ref().map(|o| o.id.ino))
            .unwrap_or(self.failure_netns)
    }

    /// Failures per second in a row's pool between the last two samples (`None`: not traced).
    pub fn fail_rate(&self, row: &Row<'_>) -> Option<f64> {
        Some(self.failures.as_ref()?.rate(self.netns_of(row), row.pool))
    }

    pub fn selected_pool(&self) -> Option<Row<'_>> {
        let id = self.selected?;
        self.current.as_ref()?.rows().find(|r| r.id() == id)
    }

    /// The finding about a pool (of its own namespace), most severe first.
    pub fn findings_for<'a>(&'a self, p: &Row<'a>) -> Vec<&'a Finding> {
        let name = if p.scope == Scope::Udp {
            udp_pool_name(p.key.local_ip).to_string()
        } else {
            p.key.to_string()
        };
        let Some(cur) = &self.current else {
            return Vec::new();
        };
        let analysis = p.namespace.map_or(&cur.analysis, |n| &n.analysis);
        let mut out: Vec<&Finding> = analysis
            .verdict
            .findings
            .iter()
            .filter(|f| f.pool.as_deref() == Some(name.as_str()))
            .collect();
        out.sort_by_key(|f| std::cmp::Reverse(f.severity));
        out
    }

    /// Keeps the selection on the same pool across refreshes, or on the first row.
    fn fix_selection(&mut self) {
        let rows: Vec<PoolId> = self.visible().iter().map(Row::id).collect();
        if self.selected.is_none_or(|s| !rows.contains(&s)) {
            self.selected = rows.first().copied();
        }
    }

    fn move_selection(&mut self, delta: isize) {
        let rows: Vec<PoolId> = self.visible().iter().map(Row::id).collect();
        if rows.is_empty() {
            self.selected = None;
            return;
        }
        let at = self
            .selected
            .and_then(|s| rows.iter().position(|r| *r == s))
            .unwrap_or(0);
        let last = rows.len() as isize - 1;
        let to = (at as isize + delta).clamp(0, last) as usize;
        self.selected = Some(rows[to]);
    }

    pub fn handle_key(&mut self, key: Key) -> Action {
        if key == Key::CtrlC {
            return Action::Quit;
        }
        if self.editing_filter {
            match key {
                Key::Char(c) => self.filter.push(c),
                Key::Backspace => {
                    self.filter.pop();
                }
                Key::Enter => self.editing_filter = false,
                Key::Esc => {
                    self.filter.clear();
                    self.editing_filter = false;
                }
                _ => return Action::None,
            }
            self.fix_selection();
            return Action::Redraw;
        }
        match key {
            Key::Char('q') => return Action::Quit,
            // Nothing to collect: a loaded snapshot stays as it is.
            Key::Char(' ' | 'p' | 'r' | '+' | '=' | '-') if self.loaded => return Action::None,
            Key::Esc if !self.filter.is_empty() => self.filter.clear(),
            Key::Esc if self.detail => self.detail = false,
            Key::Char('/') => self.editing_filter = true,
            Key::Char('s') => self.sort = self.sort.next(),
            Key::Char('u') => self.sort = SortBy::Utilization,
            Key::Char('i') => self.sort = SortBy::InUse,
            Key::Char('n') => self.sort = SortBy::Rate,
            Key::Char('e') => self.sort = SortBy::Eta,
            Key::Char('a') => self.sort = SortBy::Name,
            Key::Char(' ' | 'p') => self.paused = !self.paused,
            Key::Char('r') => return Action::Refresh,
            Key::Enter | Key::Char('d') => self.detail = !self.detail,
            Key::Char('+' | '=') => return self.step_interval(1),
            Key::Char('-') => return self.step_interval(-1),
            Key::Up | Key::Char('k') => self.move_selection(-1),
            Key::Down | Key::Char('j') => self.move_selection(1),
            Key::PageUp => self.move_selection(-10),
            Key::PageDown => self.move_selection(10),
            Key::Home => self.move_selection(isize::MIN / 2),
            Key::End => self.move_selection(isize::MAX / 2),
            _ => return Action::None,
        }
        self.fix_selection();
        Action::Redraw
    }

    fn step_interval(&mut self, dir: isize) -> Action {
        let at = INTERVALS
            .iter()
            .position(|i| *i >= self.interval)
            .unwrap_or(INTERVALS.len() - 1) as isize;
        let to = (at + dir).clamp(0, INTERVALS.len() as isize - 1) as usize;
        if INTERVALS[to] == self.interval {
            return Action::None;
        }
        self.interval = INTERVALS[to];
        Action::Reschedule
    }
}

fn trim_history(h: &mut VecDeque<Point>, now: Instant) {
    while h
        .front()
        .is_some_and(|p| p.at + HISTORY_WINDOW < now || h.len() > HISTORY_MAX_POINTS)
    {
        h.pop_front();
    }
}

/// The analysis with its UDP pools appended to `pools` as [`Scope::Udp`] rows, where their
/// utilization puts them (top shows both protocols in one table).
fn analyze_with_udp_rows(snapshot: &Snapshot, thresholds: Thresholds) -> Analysis {
    let mut a = analyze(snapshot, thresholds);
    for u in &a.udp_pools {
        let row = u.as_pool();
        let at = a
            .pools
            .iter()
            .position(|p| p.utilization.unwrap_or(0.0) < row.utilization.unwrap_or(0.0))
            .unwrap_or(a.pools.len());
        a.pools.insert(at, row);
    }
    a
}

/// The filter matches `tcp` or `udp` (the protocol), the pool key, an owner's name or pid, and with `-A` the namespace: pod
/// namespace and name, `/run/netns` name, container id.
fn matches_filter(r: &Row<'_>, needle: &str) -> bool {
    let p = r.pool;
    let ns = r.namespace.is_some_and(|n| {
        let id = &n.identity;
        namespace_label(id).to_lowercase().contains(needle)
            || id
                .name
                .as_ref()
                .is_some_and(|s| s.to_lowercase().contains(needle))
            || id
                .container
                .as_ref()
                .is_some_and(|c| c.id.starts_with(needle))
    });
    // `tcp` and `udp` filter by protocol.
    match needle {
        "udp" => return p.scope == Scope::Udp,
        "tcp" => return p.scope != Scope::Udp,
        _ => {}
    }
    ns || p.key.to_string().to_lowercase().contains(needle)
        || p.processes
            .iter()
            .any(|o| o.name.to_lowercase().contains(needle) || o.pid.to_string() == needle)
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
